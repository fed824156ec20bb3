"""Box propagation: carry an annotated box through neighbouring frames by registering the
object's LiDAR points, each at its firing time.

From a seed box the object's points (inside the box, above its bottom by
``ground_clearance_m``) become a model in the box's yaw-only frame (one point per ``voxel_m``
voxel), each with a normal: the PCA of the model within ``normal_radius_m`` where that is a
surface, else, for sparse scans, the box face within ``face_m`` (none near an edge). Then,
frame by frame away from the seed:

1. **predict** the box at the frame time with the motion prior: constant horizontal velocity
   and yaw rate; the height constant (it is often unobserved);
2. **crop** the frame's points to the predicted box grown by ``margin_m`` (the ground cut
   away) and move each to the frame time with the prior, ``p − v · (t_point − t_frame)``
   (the rotation during the sweep is neglected);
3. **register** them (at most ``max_icp_points``, evenly picked) to the model: point-to-plane
   ICP over the box pose (centre and yaw: four degrees of freedom, objects stay upright),
   Huber weights, the prediction as a Gaussian prior (``prior_m``, ``prior_z_m``,
   ``prior_rad``) so that directions the points leave free (a car seen only from the side)
   follow the motion;
4. **refit**: the box takes the registered centre and yaw (size and tilt kept: the object is
   rigid); its points join the model; the velocity and yaw rate are updated
   (``velocity_smoothing``);
5. **stop** when the box holds fewer than ``min_points`` points, the fit degrades (fitness
   below ``min_fitness``, RMSE above ``max_rmse_m``) or the pose leaves the prediction by
   more than ``max_jump_m`` / ``max_turn_rad``; the reason is reported.

The motion prior is the caller's (e.g. the track so far); without one, two seeds give their
mean speed along each seed's heading, and a lone seed is bootstrapped: one step each way with
a search of offsets along the heading, the step whose points pin the position along the
heading best giving the velocity. Between two seeds both are propagated towards the other,
each run's drift on arrival spread back over it, and the runs averaged by confidence and
nearness. Per frame a confidence in [0, 1]: ``fitness · (1 − rmse / max_rmse_m) · min(1,
points / (3 · min_points))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine import quaternion as quat
from engine.cuboid import Cuboid
from engine.cuboid_motion import heading
from engine.propagate_kernels import add_voxels, build_grid, icp, local_in_box, normals, object_points, search_offset

_HORIZONTAL = np.array([1.0, 1.0, 0.0])
_STILL = np.zeros(3)
_NO_OFFSETS = np.zeros(0, np.int64)


@dataclass(frozen=True, eq=False)
class FramePoints:
    """One frame's points: ``xyz (N, 3)`` world frame m, ``time_offset_ns (N,) int64``
    firing time minus ``timestamp_ns`` (None: all at ``timestamp_ns``)."""

    timestamp_ns: int
    xyz: np.ndarray
    time_offset_ns: np.ndarray | None = None


@dataclass(frozen=True)
class PropagateParams:
    """Propagation parameters (metres, radians, seconds); see the module docstring."""

    margin_m: float = 0.5
    ground_clearance_m: float = 0.2
    voxel_m: float = 0.1
    normal_radius_m: float = 0.5
    face_m: float = 0.15
    max_correspondence_m: float = 0.3
    max_iterations: int = 30
    max_icp_points: int = 300
    huber_m: float = 0.05
    prior_m: float = 0.3
    prior_z_m: float = 0.03
    prior_rad: float = 0.05
    max_speed_mps: float = 30.0
    min_points: int = 10
    min_fitness: float = 0.5
    max_rmse_m: float = 0.1
    max_jump_m: float = 1.0
    max_turn_rad: float = 0.3
    velocity_smoothing: float = 0.5

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"PropagateParams.{name} must be a finite number > 0, got {value!r}")
        if self.velocity_smoothing > 1 or self.min_fitness > 1:
            raise ValueError("velocity_smoothing and min_fitness must be at most 1")


@dataclass(frozen=True, eq=False)
class Propagation:
    """Boxes of the frames ``frames`` (ascending indices into the frame sequence).

    Attributes:
        centers ``(M, 3)``, sizes ``(M, 3)``, rotations ``(M, 4)``: world frame, NaN where
        ``valid`` is False (propagation stopped before). confidence: ``(M,)`` in [0, 1]
        (1 on a seed frame). points: ``(M,) int64`` object points in the box (−1: not
        reached). stopped: per direction (``"forward"``, ``"backward"``) why it stopped
        (``""``: it reached the end of the range).
    """

    frames: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    confidence: np.ndarray
    points: np.ndarray
    valid: np.ndarray
    stopped: dict[str, str]


@dataclass
class _State:
    center: np.ndarray  # (3,)
    yaw: float
    velocity: np.ndarray | None  # (3,) m/s
    yaw_rate: float


class _Model:
    """The object's points in the seed box's yaw-only frame, their normals and a grid."""

    def __init__(self, half: np.ndarray, prm: PropagateParams):
        self.prm = prm
        self.half = half
        self.lo = -(half + prm.margin_m + prm.max_correspondence_m)
        span = -2 * self.lo
        # a huge box gets coarser cells and voxels: at most ~1 M grid cells, ~2 M voxels
        self.cell = max(prm.max_correspondence_m, float(np.cbrt(np.prod(span) / 1e6)))
        self.dims = np.maximum(np.ceil(span / self.cell).astype(np.int64), 1)
        self.voxel = max(prm.voxel_m, float(np.cbrt(np.prod(span) / 2e6)))
        self.vdims = np.maximum(np.ceil(span / self.voxel).astype(np.int64), 1)
        self.occupied = np.zeros(int(np.prod(self.vdims)), np.bool_)
        self._points = np.zeros((0, 3))  # rows [:n] used, the rest room to grow
        self._normals = np.zeros((0, 3))
        self.n = 0
        self.refreshed = 0  # points when all normals were last estimated

    @property
    def points(self) -> np.ndarray:
        return self._points[: self.n]

    @property
    def normals(self) -> np.ndarray:
        return self._normals[: self.n]

    def add(self, local: np.ndarray) -> None:
        """Add local points, one per unoccupied voxel, with their normals; every normal again
        once the model has doubled."""
        if self.n + len(local) > len(self._points):
            room = max(2 * len(self._points), self.n + len(local), 256)
            self._points = np.concatenate([self.points, np.zeros((room - self.n, 3))])
            self._normals = np.concatenate([self.normals, np.zeros((room - self.n, 3))])
        n_old = self.n
        self.n = add_voxels(local, self.lo, self.voxel, self.vdims, self.occupied, self._points, n_old)
        self.start, self.items = build_grid(self.points, self.lo, self.cell, self.dims)
        refresh = self.n >= 2 * self.refreshed
        if refresh:
            self.refreshed = self.n
        rows = np.arange(0 if refresh else n_old, self.n)
        normals(self.points, rows, self.lo, self.cell, self.dims, self.start, self.items, self.prm.normal_radius_m,
                self.half, self.prm.face_m, self.normals)


def _object_points(frame: FramePoints, st: _State, half: np.ndarray, grow: float, clearance: float) -> np.ndarray:
    """World points ``(M, 3) float64`` of ``frame`` in the box ``st`` grown by ``grow`` (not
    below its bottom + ``clearance``) once moved to the frame time with the state's velocity."""
    offsets = _NO_OFFSETS if frame.time_offset_ns is None else frame.time_offset_ns
    v = _STILL if st.velocity is None else st.velocity
    return object_points(frame.xyz, offsets, v, st.center, st.yaw, half + grow, -half[2] + clearance)


def _leg(frames: Sequence[FramePoints], seed: int, stop: int, box: Cuboid, velocity: np.ndarray | None,
         yaw_rate: float, prm: PropagateParams, out: dict[int, tuple]) -> tuple[str, float]:
    """Propagate from frame ``seed`` towards ``stop`` (inclusive), writing ``out[frame] =
    (center, yaw, confidence, points)``. Returns why it stopped (``""``: it reached ``stop``)
    and the first step's ``along`` information (:func:`engine.propagate_kernels.icp`)."""
    half = 0.5 * box.size
    yaw0 = float(heading(box.rotation[None])[0])
    st = _State(box.center.copy(), yaw0, None if velocity is None else velocity * _HORIZONTAL, yaw_rate)
    model = _Model(half, prm)
    seed_pts = _object_points(frames[seed], st, half, prm.voxel_m, prm.ground_clearance_m)
    out[seed] = (st.center.copy(), st.yaw, 1.0, len(seed_pts))
    if len(seed_pts) < prm.min_points:
        return f"frame {seed}: {len(seed_pts)} points in the seed box < min_points {prm.min_points}", 0.0
    model.add(local_in_box(seed_pts, st.center, st.yaw, half + prm.voxel_m))
    step = 1 if stop >= seed else -1
    first_along = 0.0
    for j in range(seed + step, stop + step, step):
        dt = (frames[j].timestamp_ns - frames[j - step].timestamp_ns) * 1e-9
        pred = _State(st.center + (0.0 if st.velocity is None else dt * st.velocity), st.yaw + dt * st.yaw_rate,
                      st.velocity, st.yaw_rate)
        reach = prm.margin_m + (prm.max_speed_mps * abs(dt) if st.velocity is None else 0.0)
        target = _object_points(frames[j], pred, half, reach, prm.ground_clearance_m)
        if st.velocity is None and len(target) >= prm.min_points:
            # no motion prior: the best offset along the heading, then the usual crop
            s = search_offset(target, pred.center, pred.yaw, model.points, model.lo, model.cell, model.dims,
                              model.start, model.items, prm.max_speed_mps * abs(dt), 2 * prm.voxel_m,
                              prm.max_correspondence_m)
            pred.center = pred.center + s * np.array([math.cos(pred.yaw), math.sin(pred.yaw), 0.0])
            target = _object_points(frames[j], pred, half, prm.margin_m, prm.ground_clearance_m)
        if len(target) < prm.min_points:
            return f"frame {j}: {len(target)} points near the predicted box < min_points {prm.min_points}", first_along
        pose = np.array([*pred.center, pred.yaw])
        sample = target[::-(-len(target) // prm.max_icp_points)]  # every k-th point, at most max_icp_points
        fitness, rmse, along = icp(sample, pose, pose.copy(), prm.prior_m, prm.prior_z_m, prm.prior_rad, model.points,
                                   model.normals, model.lo, model.cell, model.dims, model.start, model.items,
                                   prm.max_correspondence_m, prm.max_iterations, prm.huber_m)
        first_along = along if j == seed + step else first_along
        jump = float(np.linalg.norm(pose[:3] - pred.center))
        turn = abs(pose[3] - pred.yaw)
        new = _State(pose[:3].copy(), float(pose[3]), st.velocity, st.yaw_rate)
        inside = local_in_box(target, new.center, new.yaw, half + prm.voxel_m)
        n_in = len(inside)
        reason = (f"{n_in} points in the box < min_points {prm.min_points}" if n_in < prm.min_points else
                  f"fitness {fitness:.2f} < {prm.min_fitness}" if fitness < prm.min_fitness else
                  f"RMSE {rmse:.3f} m > {prm.max_rmse_m} m" if rmse > prm.max_rmse_m else
                  f"moved {jump:.2f} m from the prediction > {prm.max_jump_m} m" if jump > prm.max_jump_m else
                  f"turned {turn:.3f} rad from the prediction > {prm.max_turn_rad} rad" if turn > prm.max_turn_rad
                  else "")
        if reason:
            return f"frame {j}: {reason}", first_along
        a = prm.velocity_smoothing
        v = (new.center - st.center) / dt * _HORIZONTAL
        w = (new.yaw - st.yaw) / dt
        new.velocity = v if st.velocity is None else a * v + (1 - a) * st.velocity
        new.yaw_rate = w if st.velocity is None else a * w + (1 - a) * st.yaw_rate
        conf = fitness * (1.0 - rmse / prm.max_rmse_m) * min(1.0, n_in / (3.0 * prm.min_points))
        out[j] = (new.center.copy(), new.yaw, conf, n_in)
        model.add(inside)
        st = new
    return "", first_along


def _bootstrap(frames: Sequence[FramePoints], seed: int, first: int, last: int, box: Cuboid,
               prm: PropagateParams) -> tuple[np.ndarray | None, float]:
    """A motion prior for a lone seed: one step each way without one (the seed's points are
    then at their firing times); the velocity and yaw rate of the step whose points pin the
    position along the heading best. ``(None, 0)`` when neither step succeeds."""
    best: tuple[float, np.ndarray | None, float] = (-1.0, None, 0.0)
    for nxt in (seed - 1, seed + 1):
        if not first <= nxt <= last:
            continue
        res: dict[int, tuple] = {}
        why, along = _leg(frames, seed, nxt, box, None, 0.0, prm, res)
        if why or along <= best[0]:
            continue
        dt = (frames[nxt].timestamp_ns - frames[seed].timestamp_ns) * 1e-9
        best = (along, (res[nxt][0] - box.center) / dt, (res[nxt][1] - res[seed][1]) / dt)
    return best[1], best[2]


def _check_range(frames: Sequence[FramePoints], first: int, last: int, seeds: Sequence[int]) -> None:
    if not 0 <= first <= last < len(frames):
        raise ValueError(f"need 0 <= first <= last < {len(frames)} frames, got first {first}, last {last}")
    if not 1 <= len(seeds) <= 2 or len(set(seeds)) != len(seeds):
        raise ValueError(f"need one or two seed boxes on different frames, got frames {list(seeds)}")
    for f in seeds:
        if not first <= f <= last:
            raise ValueError(f"seed frame {f} is outside the range [{first}, {last}]")


def propagate_track(
    frames: Sequence[FramePoints],
    seeds: Sequence[tuple[int, Cuboid]],
    first: int,
    last: int,
    velocity_mps: np.ndarray | None = None,
    yaw_rate_radps: float = 0.0,
    params: PropagateParams | None = None,
) -> Propagation:
    """Boxes of one object on frames ``first..last`` (indices into ``frames``, whose
    timestamps increase) from one or two seed boxes ``(frame index, Cuboid)`` (world frame).

    ``velocity_mps (3,)`` / ``yaw_rate_radps``: the motion prior (e.g. from the track so
    far; its vertical part is not used); without, two seeds give :func:`_seed_priors`, one
    :func:`_bootstrap`'s. Frames are read only as far as propagation
    reaches them (``frames`` may be a lazy sequence). See the module docstring.
    """
    prm = params or PropagateParams()
    seeds = sorted(seeds, key=lambda s: s[0])
    _check_range(frames, first, last, [f for f, _ in seeds])
    for _, box in seeds:
        if not isinstance(box, Cuboid):
            raise ValueError(f"seeds must be (frame, Cuboid) pairs, got {type(box).__name__}")
    velocity = None if velocity_mps is None else np.asarray(velocity_mps, np.float64).reshape(3)
    if velocity is not None and not np.all(np.isfinite(velocity)) or not math.isfinite(yaw_rate_radps):
        raise ValueError("velocity_mps and yaw_rate_radps must be finite")
    (a, box_a), (b, box_b) = seeds[0], seeds[-1]
    priors: dict[int, tuple[np.ndarray | None, float]]
    if velocity is not None:
        priors = {a: (velocity, yaw_rate_radps), b: (velocity, yaw_rate_radps)}
    elif b != a:
        priors = _seed_priors(frames, seeds)
    else:
        priors = {a: _bootstrap(frames, a, first, last, box_a, prm)}
    runs: list[tuple[int, int, dict[int, tuple]]] = []  # (seed, stop, results)
    stopped = {}
    legs = [("backward", a, first, box_a), ("forward", b, last, box_b)]
    if b != a:
        legs += [("between", a, b, box_a), ("between", b, a, box_b)]
    for name, seed, stop, box in legs:
        res: dict[int, tuple] = {}
        why, _ = _leg(frames, seed, stop, box, *priors[seed], prm, res)
        if name == "between":
            _close(res, seed, stop, seeds)
        else:
            stopped[name] = why
        runs.append((seed, stop, res))
    return _combine(seeds, runs, first, last, stopped)


def _seed_priors(frames: Sequence[FramePoints], seeds: list[tuple[int, Cuboid]]
                 ) -> dict[int, tuple[np.ndarray | None, float]]:
    """Two seeds' motion priors: their mean speed (the chord over the time between them)
    along each seed's heading (backwards where the chord points backwards), and their yaw
    rate."""
    (a, box_a), (b, box_b) = seeds
    span = (frames[b].timestamp_ns - frames[a].timestamp_ns) * 1e-9
    chord = (box_b.center - box_a.center) * _HORIZONTAL
    yaw = heading(np.stack([box_a.rotation, box_b.rotation]))
    rate = float(np.angle(np.exp(1j * (yaw[1] - yaw[0])))) / span
    out: dict[int, tuple[np.ndarray | None, float]] = {}
    for f, h in ((a, yaw[0]), (b, yaw[1])):
        unit = np.array([math.cos(h), math.sin(h), 0.0])
        out[f] = (math.copysign(float(np.linalg.norm(chord)), float(chord @ unit)) / span * unit, rate)
    return out


def _close(res: dict[int, tuple], seed: int, stop: int, seeds: list[tuple[int, Cuboid]]) -> None:
    """A leg from one seed that reached the other: its drift there (the other seed minus the
    leg's box) spread linearly back over the leg, in place."""
    if stop not in res:
        return
    target = dict(seeds)[stop]
    dc = target.center - res[stop][0]
    dyaw = float(np.angle(np.exp(1j * (heading(target.rotation[None])[0] - res[stop][1]))))
    for f, (c, yaw, conf, n) in res.items():
        u = (f - seed) / (stop - seed)
        res[f] = (c + u * dc, yaw + u * dyaw, conf, n)


def _combine(seeds: list[tuple[int, Cuboid]], runs: list[tuple[int, int, dict[int, tuple]]], first: int, last: int,
             stopped: dict[str, str]) -> Propagation:
    """One box per frame: between two seeds the runs from both ends weighted by confidence and
    nearness to their seed; each seed frame its own box."""
    idx = np.arange(first, last + 1)
    m = len(idx)
    acc = np.zeros((m, 4))  # Σw·x, Σw·y, Σw·z, and Σw
    ang = np.zeros(m, complex)
    conf = np.zeros(m)
    pts = np.full(m, -1, np.int64)
    for seed, stop, res in runs:
        span = abs(stop - seed)
        for f, (c, yaw, cf, n) in res.items():
            w = max(cf, 1e-9) * ((span - abs(f - seed) + 1) if len(seeds) == 2 and min(seed, stop) < f < max(seed, stop)
                                 else 1.0)
            i = f - first
            acc[i, :3] += w * c
            acc[i, 3] += w
            ang[i] += w * np.exp(1j * yaw)
            conf[i] += w * cf
            pts[i] = max(pts[i], n)
    valid = acc[:, 3] > 0
    for f, box in seeds:
        i = f - first
        acc[i] = [*box.center, 1.0]
        ang[i] = np.exp(1j * heading(box.rotation[None])[0])
        conf[i] = 1.0
        valid[i] = True
    w = np.where(valid, acc[:, 3], 1.0)
    centers = np.where(valid[:, None], acc[:, :3] / w[:, None], np.nan)
    yaw = np.angle(ang)
    # size and tilt of the nearest seed (the first of two as near); yaw from the propagation
    near = np.argmin(np.abs(idx[:, None] - np.array([f for f, _ in seeds])), axis=1)
    seed_rot = np.stack([b.rotation for _, b in seeds])
    tilt = quat.multiply(quat.from_yaw(-heading(seed_rot)), seed_rot)[near]
    sizes = np.where(valid[:, None], np.stack([b.size for _, b in seeds])[near], np.nan)
    rotations = np.where(valid[:, None], quat.multiply(quat.from_yaw(yaw), tilt), np.nan)
    return Propagation(idx, centers, sizes, rotations, np.where(valid, conf / w, 0.0), pts, valid, stopped)


def _warmup() -> None:
    rng = np.random.default_rng(0)
    face = np.column_stack([rng.uniform(-2, 2, 400), np.full(400, -1.0), rng.uniform(0.3, 1.5, 400)])
    top = np.column_stack([rng.uniform(-2, 2, 400), rng.uniform(-1, 1, 400), np.full(400, 1.5)])
    xyz = np.vstack([face, top])
    frames = [FramePoints(i * 10**8, xyz + [0.1 * i, 0, 0], np.zeros(len(xyz), np.int64)) for i in range(3)]
    propagate_track(frames, [(0, Cuboid(np.array([0.0, 0, 0.8]), np.array([4.0, 2, 1.6]), quat.from_yaw(0.0)))], 0, 2)
