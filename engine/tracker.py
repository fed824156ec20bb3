"""3D multi-object tracking of per-frame detections into cuboid tracks (pre-labels).

Model: each track is a Kalman filter with a constant-velocity model for its centre (x, y, z)
and a constant-turn-rate model for its heading (yaw and yaw rate), one two-state filter per
axis (independent white-acceleration process noise and measurement noise per axis make the
joint filter exactly these four). Frames are processed in time order:

1. **predict** every live track to the frame time;
2. **gate**: a detection may go to a track of its own class whose predicted centre is within
   ``gate_m + 2 σ`` (σ: the predicted horizontal position standard deviation, so a newborn
   track, whose velocity is still unknown, gates wider);
3. **assign** by minimum total 3D centre distance (``scipy.optimize.linear_sum_assignment``);
4. **update** assigned tracks (yaw innovations wrapped to (−π, π]);
5. **birth / death**: an unassigned detection starts a tentative track; a track is confirmed
   once it has ``min_hits`` detections; a tentative track ends at its first miss, a confirmed
   one after ``max_misses`` consecutive misses.

Confirmed tracks are then smoothed (Rauch-Tung-Striebel, the whole track's detections inform
every frame), cut to their first and last detection, and reduced to keyframes where the motion
changes: a frame becomes a keyframe when linear interpolation between the kept neighbours
would be off by more than ``keyframe_m`` or ``keyframe_rad`` (greedy, forward). Sizes are the
per-axis median of the track's detections; rotations are yaw-only (detections' pitch and roll
are dropped). Everything is deterministic: same input, same tracks and ids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from engine import quaternion as quat
from engine._jit import jit
from engine.cuboid import CuboidTrack
from engine.cuboid_motion import heading

_FORBIDDEN = 1e12  # cost of a pair outside the gate or across classes


@dataclass(frozen=True, eq=False)
class Detections:
    """Per-frame 3D detections in the world frame.

    Attributes:
        frame: ``(D,) int64`` index into the frame times the tracker is given.
        centers: ``(D, 3) float64`` m. sizes: ``(D, 3) float64`` m (l, w, h), non-negative.
        rotations: ``(D, 4) float64`` wxyz box → world.
        categories: D class names. scores: ``(D,) float64`` detector confidence.
        source_ids: D track ids from the source (KITTI tracking, SFS) or None each.
    """

    frame: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    categories: tuple[str, ...]
    scores: np.ndarray
    source_ids: tuple[str | None, ...] | None = None

    def __post_init__(self) -> None:
        d = len(self.categories)
        frame = np.asarray(self.frame)
        if frame.shape != (d,) or not (np.issubdtype(frame.dtype, np.integer) or d == 0):
            raise ValueError(f"frame must be a ({d},) integer array, got {frame.dtype} {frame.shape}")
        arrays = {"centers": (3,), "sizes": (3,), "rotations": (4,), "scores": ()}
        for name, tail in arrays.items():
            a = np.ascontiguousarray(getattr(self, name), dtype=np.float64)
            if a.shape != (d, *tail):
                raise ValueError(f"{name} must have shape {(d, *tail)}, got {a.shape}")
            bad = ~np.isfinite(a.reshape(d, max(1, int(np.prod(tail))))).all(axis=1)
            if bad.any():
                raise ValueError(f"detection {int(np.argmax(bad))}: {name} contains NaN or infinite values")
            object.__setattr__(self, name, a)
        if (self.sizes < 0).any():
            raise ValueError(f"detection {int(np.argmax((self.sizes < 0).any(axis=1)))}: sizes must be non-negative")
        norm = np.linalg.norm(self.rotations, axis=1)
        if (norm == 0).any():
            raise ValueError(f"detection {int(np.argmax(norm == 0))}: rotation is a zero quaternion")
        object.__setattr__(self, "rotations", self.rotations / norm[:, None])
        object.__setattr__(self, "frame", frame.astype(np.int64))
        object.__setattr__(self, "categories", tuple(self.categories))
        if self.source_ids is not None and len(self.source_ids) != d:
            raise ValueError(f"source_ids must have {d} entries, got {len(self.source_ids)}")

    def __len__(self) -> int:
        return len(self.categories)

    def select(self, index: np.ndarray) -> "Detections":
        """The detections at rows ``index`` (integer array or boolean mask)."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == np.bool_ else np.asarray(index, np.int64)
        return Detections(self.frame[idx], self.centers[idx], self.sizes[idx], self.rotations[idx],
                          tuple(self.categories[i] for i in idx), self.scores[idx],
                          None if self.source_ids is None else tuple(self.source_ids[i] for i in idx))


@dataclass(frozen=True)
class TrackerParams:
    """The tracker's parameters (metres, seconds, radians).

    Attributes:
        gate_m: base gate on the 3D distance between a predicted centre and a detection.
        min_hits: detections that confirm a track. max_misses: consecutive misses that end it.
        min_score: detections scoring below are ignored.
        sigma_m, sigma_z_m, sigma_yaw_rad: detection noise σ of the horizontal centre, height
            and yaw.
        accel_mps2, vertical_accel_mps2, yaw_accel_radps2: process noise σ (white
            acceleration) of the horizontal, vertical and yaw motion.
        birth_speed_mps, birth_yaw_rate_radps: σ of a newborn track's unknown velocity.
        keyframe_m, keyframe_rad: the keyframe tolerances of the output tracks.
    """

    gate_m: float = 2.0
    min_hits: int = 2
    max_misses: int = 3
    min_score: float = 0.0
    sigma_m: float = 0.2
    sigma_z_m: float = 0.1
    sigma_yaw_rad: float = 0.05
    accel_mps2: float = 4.0
    vertical_accel_mps2: float = 0.5
    yaw_accel_radps2: float = 1.0
    birth_speed_mps: float = 10.0
    birth_yaw_rate_radps: float = 0.5
    keyframe_m: float = 0.05
    keyframe_rad: float = 0.01

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"TrackerParams.{name} must be a finite number >= 0, got {value!r}")
        if self.min_hits < 1 or self.max_misses < 0 or int(self.min_hits) != self.min_hits:
            raise ValueError(f"need an integer min_hits >= 1 and max_misses >= 0, "
                             f"got {self.min_hits}, {self.max_misses}")
        for name in ("sigma_m", "sigma_z_m", "sigma_yaw_rad", "birth_speed_mps", "birth_yaw_rate_radps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"TrackerParams.{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True, eq=False)
class TrackingResult:
    """Confirmed tracks, in order of birth.

    Attributes:
        tracks: world-frame :class:`CuboidTrack` (ids ``f"{prefix}{n}"``), keyframes where the
            motion changes. scores: ``(N,)`` mean detection score per track.
        hits: ``(N,) int64`` detections per track.
        assignment: ``(D,) int64`` the track index of each input detection, −1 for none.
    """

    tracks: list[CuboidTrack]
    scores: np.ndarray
    hits: np.ndarray
    assignment: np.ndarray


# ---------------------------------------------------------------- kernels


@jit
def _smooth(xf, pf, xp, pp, dt, starts, xs):
    """Rauch-Tung-Striebel means ``xs (R, 4, 2)`` of the rows of each group ``starts[g]:
    starts[g+1]`` (consecutive frames of one track) from the filtered ``xf, pf`` and predicted
    ``xp, pp`` (row r's prediction from row r−1 over ``dt[r]``); covariances are ``[p00, p01, p11]``."""
    for g in range(starts.shape[0] - 1):
        a = starts[g]
        b = starts[g + 1]
        xs[b - 1] = xf[b - 1]
        for r in range(b - 2, a - 1, -1):
            h = dt[r + 1]
            for c in range(4):
                # C = Pf Fᵀ Pp⁻¹ with F = [[1, h], [0, 1]]
                m00 = pf[r, c, 0] + h * pf[r, c, 1]
                m01 = pf[r, c, 1]
                m10 = pf[r, c, 1] + h * pf[r, c, 2]
                m11 = pf[r, c, 2]
                a00, a01, a11 = pp[r + 1, c, 0], pp[r + 1, c, 1], pp[r + 1, c, 2]
                inv = 1.0 / (a00 * a11 - a01 * a01)
                c00 = (m00 * a11 - m01 * a01) * inv
                c01 = (m01 * a00 - m00 * a01) * inv
                c10 = (m10 * a11 - m11 * a01) * inv
                c11 = (m11 * a00 - m10 * a01) * inv
                e0 = xs[r + 1, c, 0] - xp[r + 1, c, 0]
                e1 = xs[r + 1, c, 1] - xp[r + 1, c, 1]
                xs[r, c, 0] = xf[r, c, 0] + c00 * e0 + c01 * e1
                xs[r, c, 1] = xf[r, c, 1] + c10 * e0 + c11 * e1


@jit
def _keyframes(t, c, yaw, starts, tol_m, tol_rad, keep):
    """Mark in ``keep`` the keyframes of each group (greedy: from each kept frame, the
    farthest frame such that linear interpolation to it stays within the tolerances)."""
    for g in range(starts.shape[0] - 1):
        a = starts[g]
        b = starts[g + 1]
        keep[a] = True
        keep[b - 1] = True
        i = a
        while i < b - 1:
            e = i + 1
            for cand in range(i + 2, b):
                ok = True
                for j in range(i + 1, cand):
                    u = (t[j] - t[i]) / (t[cand] - t[i])
                    d2 = 0.0
                    for k in range(3):
                        d = c[i, k] + u * (c[cand, k] - c[i, k]) - c[j, k]
                        d2 += d * d
                    dy = yaw[i] + u * (yaw[cand] - yaw[i]) - yaw[j]
                    if d2 > tol_m * tol_m or abs(dy) > tol_rad:
                        ok = False
                        break
                if not ok:
                    break
                e = cand
            keep[e] = True
            i = e


# ---------------------------------------------------------------- the filter


def _predict(x: np.ndarray, p: np.ndarray, h: float, q: np.ndarray) -> None:
    """In place: states ``x (A, 4, 2)``, covariances ``p (A, 4, 3)`` forward ``h`` s;
    ``q (4,)`` white-acceleration variances."""
    x[:, :, 0] += h * x[:, :, 1]
    p00, p01, p11 = p[:, :, 0].copy(), p[:, :, 1].copy(), p[:, :, 2].copy()
    p[:, :, 0] = p00 + 2 * h * p01 + h * h * p11 + q * h ** 4 / 4
    p[:, :, 1] = p01 + h * p11 + q * h ** 3 / 2
    p[:, :, 2] = p11 + q * h * h


def _update(x: np.ndarray, p: np.ndarray, z: np.ndarray, r: np.ndarray) -> None:
    """In place: the rows ``x (M, 4, 2)``, ``p (M, 4, 3)`` updated with measurements
    ``z (M, 4)`` (x, y, z, yaw) of variances ``r (4,)``."""
    y = z - x[:, :, 0]
    y[:, 3] = np.mod(y[:, 3] + np.pi, 2 * np.pi) - np.pi
    s = p[:, :, 0] + r
    k0, k1 = p[:, :, 0] / s, p[:, :, 1] / s
    x[:, :, 0] += k0 * y
    x[:, :, 1] += k1 * y
    p11 = p[:, :, 2] - k1 * p[:, :, 1]
    p[:, :, 0] *= r / s
    p[:, :, 1] *= r / s
    p[:, :, 2] = p11


def _measurements(det: Detections) -> np.ndarray:
    """``(D, 4)``: x, y, z, yaw of each detection."""
    return np.column_stack([det.centers, heading(det.rotations)])


def track_detections(detections: Detections, frame_times_ns: np.ndarray, params: TrackerParams | None = None,
                     id_prefix: str = "track-") -> TrackingResult:
    """Tracks of ``detections`` on the frames ``frame_times_ns (F,) int64`` (strictly
    increasing; ``detections.frame`` indexes them). See the module docstring."""
    prm = params or TrackerParams()
    times = np.asarray(frame_times_ns)
    if times.ndim != 1 or not (np.issubdtype(times.dtype, np.integer) or times.size == 0):
        raise ValueError(f"frame_times_ns must be a (F,) integer array, got {times.dtype} {times.shape}")
    if np.any(np.diff(times) <= 0):
        raise ValueError("frame_times_ns must be strictly increasing")
    bad = (detections.frame < 0) | (detections.frame >= len(times))
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"detection {i}: frame {detections.frame[i]} is not one of the {len(times)} frames")
    keep = np.flatnonzero(detections.scores >= prm.min_score)
    order = keep[np.argsort(detections.frame[keep], kind="stable")]
    z_all = _measurements(detections)
    names, cls_all = np.unique(np.array(detections.categories, dtype=object), return_inverse=True)
    bounds = np.searchsorted(detections.frame[order], np.arange(len(times) + 1))
    r = np.array([prm.sigma_m, prm.sigma_m, prm.sigma_z_m, prm.sigma_yaw_rad]) ** 2
    q = np.array([prm.accel_mps2, prm.accel_mps2, prm.vertical_accel_mps2, prm.yaw_accel_radps2]) ** 2
    birth_var = np.array([prm.birth_speed_mps, prm.birth_speed_mps, 1.0, prm.birth_yaw_rate_radps]) ** 2

    # live tracks: id, class, state, hits, misses
    uid = np.zeros(0, np.int64)
    cls = np.zeros(0, np.int64)
    x = np.zeros((0, 4, 2))
    p = np.zeros((0, 4, 3))
    hits = np.zeros(0, np.int64)
    misses = np.zeros(0, np.int64)
    next_uid = 0
    rows: list[tuple[np.ndarray, ...]] = []  # per frame: uid, frame, xf, pf, xp, pp, dt, detection
    confirmed: set[int] = set()
    prev = None
    for f in range(len(times)):
        h = 0.0 if prev is None else (times[f] - times[prev]) * 1e-9
        prev = f
        _predict(x, p, h, q)
        xp, pp = x.copy(), p.copy()
        dets = order[bounds[f]:bounds[f + 1]]
        assigned = np.full(len(uid), -1, np.int64)
        taken = np.zeros(len(dets), bool)
        if len(uid) and len(dets):
            dist = np.linalg.norm(x[:, None, :3, 0] - z_all[dets][None, :, :3], axis=2)
            gate = prm.gate_m + 2.0 * np.sqrt(np.maximum(p[:, 0, 0], p[:, 1, 0]))
            ok = (dist <= gate[:, None]) & (cls[:, None] == cls_all[dets][None, :])
            if ok.any():
                ti, di = linear_sum_assignment(np.where(ok, dist, _FORBIDDEN))
                good = ok[ti, di]
                ti, di = ti[good], di[good]
                _update_rows(x, p, ti, z_all[dets[di]], r)
                assigned[ti] = dets[di]
                taken[di] = True
        hit = assigned >= 0
        hits += hit
        misses = np.where(hit, 0, misses + 1)
        confirmed.update(uid[hits >= prm.min_hits].tolist())
        rows.append((uid, np.full(len(uid), f), x.copy(), p.copy(), xp, pp, np.full(len(uid), h), assigned))
        # deaths: tentative tracks at their first miss, confirmed ones after max_misses
        is_conf = hits >= prm.min_hits
        alive = np.where(is_conf, misses <= prm.max_misses, misses == 0)
        uid, cls, x, p, hits, misses = uid[alive], cls[alive], x[alive], p[alive], hits[alive], misses[alive]
        # births
        new = dets[~taken]
        if len(new):
            nb = len(new)
            uid = np.concatenate([uid, np.arange(next_uid, next_uid + nb)])
            next_uid += nb
            cls = np.concatenate([cls, cls_all[new]])
            xb = np.zeros((nb, 4, 2))
            xb[:, :, 0] = z_all[new]
            pb = np.zeros((nb, 4, 3))
            pb[:, :, 0] = r
            pb[:, :, 2] = birth_var
            x, p = np.concatenate([x, xb]), np.concatenate([p, pb])
            hits = np.concatenate([hits, np.ones(nb, np.int64)])
            misses = np.concatenate([misses, np.zeros(nb, np.int64)])
            rows.append((np.arange(next_uid - nb, next_uid), np.full(nb, f), xb, pb, xb, pb, np.zeros(nb), new))
    confirmed.update(uid[hits >= prm.min_hits].tolist())
    return _assemble(rows, confirmed, detections, names, cls_all, times, prm, id_prefix)


def _update_rows(x: np.ndarray, p: np.ndarray, rows: np.ndarray, z: np.ndarray, r: np.ndarray) -> None:
    xs, ps = x[rows], p[rows]
    _update(xs, ps, z, r)
    x[rows], p[rows] = xs, ps


def _assemble(rows: list[tuple[np.ndarray, ...]], confirmed: set[int], det: Detections, names: np.ndarray,
              cls_all: np.ndarray, times: np.ndarray, prm: TrackerParams, prefix: str) -> TrackingResult:
    """Smoothed, cut and keyframed :class:`CuboidTrack` of the confirmed tracks' rows."""
    assignment = np.full(len(det), -1, np.int64)
    if not rows or not confirmed:
        return TrackingResult([], np.zeros(0), np.zeros(0, np.int64), assignment)
    uid, frame, xf, pf, xp, pp, dt, hit = (np.concatenate(c) for c in zip(*rows))
    keep = np.isin(uid, np.fromiter(confirmed, np.int64))
    uid, frame, xf, pf, xp, pp, dt, hit = (a[keep] for a in (uid, frame, xf, pf, xp, pp, dt, hit))
    srt = np.lexsort((frame, uid))
    uid, frame, xf, pf, xp, pp, dt, hit = (a[srt] for a in (uid, frame, xf, pf, xp, pp, dt, hit))
    # cut each track after its last detection
    ids, first = np.unique(uid, return_index=True)
    last_hit = np.zeros(len(ids), np.int64)
    has = np.flatnonzero(hit >= 0)
    np.maximum.at(last_hit, np.searchsorted(ids, uid[has]), has)
    keep = np.arange(len(uid)) <= last_hit[np.searchsorted(ids, uid)]
    uid, frame, xf, pf, xp, pp, dt, hit = (a[keep] for a in (uid, frame, xf, pf, xp, pp, dt, hit))
    starts = np.concatenate([np.searchsorted(uid, ids), [len(uid)]]).astype(np.int64)
    xs = np.empty_like(xf)
    _smooth(xf, pf, xp, pp, dt, starts, xs)
    t_s = (times[frame] - times[0]) * 1e-9
    key = np.zeros(len(uid), np.bool_)
    _keyframes(t_s, np.ascontiguousarray(xs[:, :3, 0]), np.ascontiguousarray(xs[:, 3, 0]), starts,
               prm.keyframe_m, prm.keyframe_rad, key)
    tracks, scores, n_hits = [], [], []
    for n in range(len(ids)):
        a, b = starts[n], starts[n + 1]
        sel = np.arange(a, b)[key[a:b]]
        used = hit[a:b][hit[a:b] >= 0]
        assignment[used] = n
        size = np.median(det.sizes[used], axis=0)
        tracks.append(CuboidTrack(
            f"{prefix}{n}", str(names[cls_all[used[0]]]), times[frame[sel]], xs[sel, :3, 0],
            np.repeat(size[None], len(sel), axis=0), quat.from_yaw(xs[sel, 3, 0]),
        ))
        scores.append(float(det.scores[used].mean()))
        n_hits.append(len(used))
    return TrackingResult(tracks, np.array(scores), np.array(n_hits, np.int64), assignment)


def tracks_from_source_ids(detections: Detections, frame_times_ns: np.ndarray) -> TrackingResult:
    """Tracks grouped by ``detections.source_ids`` (detections that already carry track ids,
    e.g. KITTI tracking results): one keyframe per detection, in frame order; ids kept.
    A source id repeated within one frame raises ``ValueError``."""
    if detections.source_ids is None or any(s is None for s in detections.source_ids):
        raise ValueError("every detection needs a source track id")
    times = np.asarray(frame_times_ns, np.int64)
    ids = list(dict.fromkeys(detections.source_ids))
    index = {s: n for n, s in enumerate(ids)}
    assignment = np.array([index[s] for s in detections.source_ids], np.int64)
    tracks, scores, hits = [], [], []
    for n, tid in enumerate(ids):
        rows = np.flatnonzero(assignment == n)
        rows = rows[np.argsort(detections.frame[rows], kind="stable")]
        f = detections.frame[rows]
        if np.any(np.diff(f) == 0):
            raise ValueError(f"track {tid!r}: two detections in frame {int(f[np.argmax(np.diff(f) == 0)])}")
        tracks.append(CuboidTrack(str(tid), detections.categories[rows[0]], times[f], detections.centers[rows],
                                  detections.sizes[rows], detections.rotations[rows]))
        scores.append(float(detections.scores[rows].mean()))
        hits.append(len(rows))
    return TrackingResult(tracks, np.array(scores), np.array(hits, np.int64), assignment)


def _warmup() -> None:
    det = Detections(np.array([0, 1, 2]), np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]]), np.ones((3, 3)),
                     np.tile([1.0, 0, 0, 0], (3, 1)), ("car",) * 3, np.ones(3))
    track_detections(det, np.array([0, 10**8, 2 * 10**8]))

