"""Cuboid track interpolation: all tracks at all frame times in one kernel call.

Keyframes live in the world frame (see :mod:`engine.cuboid`). Between two keyframes the
centre and the size are linear in time and the rotation is slerped along the shortest arc,
so a yaw going from 170° to −170° turns 20° through 180°, never 340° through 0°.

Outside a track's keyframe range the ``extrapolation`` policy of the call decides:

- ``"none"``: the object does not exist there. ``valid`` is False and the box values are
  NaN (a serving frame simply has no such box). Nothing raises.
- ``"hold"``: the first / last keyframe is repeated.
- ``"constant_velocity"``: the first / last keyframe interval continues at constant linear
  and angular velocity (position and full rotation, so the yaw rate too); the size is held.
  A one-keyframe track has no velocity and is held.

A ``stationary`` track holds its first keyframe's pose at every time and is always valid,
whatever the policy. A non-stationary one-keyframe track exists only at that instant under
``"none"``.

Each track has an interpolation mode: ``"linear"`` (the default, as above), or a
motion-aware ``"ctrv"`` / ``"hermite"`` for keyframes far apart on a curved path (see
:mod:`engine.cuboid_motion`; they change the boxes inside the keyframe range only).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from engine._jit import inline, pjit, prange
from engine.cuboid import CuboidTrack
from engine.cuboid_motion import INTERPOLATION, motion_store, motion_table, motion_turn, motion_turn_inputs
from engine.pose_track import Extrapolation as PoseExtrapolation
from engine.pose_track import (
    PoseTrack,
    find_interval,
    interval_table,
    sin_quadrant,
    slerp_combine,
    slerp_weights,
    slerp_weights_from_sines,
)
from engine.quaternion import q_mul, q_rotate
from engine.se3 import SE3

Extrapolation = Literal["none", "hold", "constant_velocity"]
_EXTRAPOLATION = {"none": 0, "hold": 1, "constant_velocity": 2}
Interpolation = Literal["linear", "ctrv", "hermite"]


# ---------------------------------------------------------------- kernels


# one work item: a block of consecutive (sorted) times × a block of consecutive tracks,
# written row by row (contiguous stores); each track's keyframe cursor is searched once per
# item and then walked forward (merge walk) as the times increase
_TIMES_PER_ITEM = 32
_TRACKS_PER_ITEM = 64


@inline
def _write_key(out_c, out_s, out_q, valid, box, centers, sizes, rots, key):
    """Copy keyframe ``key`` into output box ``box``."""
    valid[box] = True
    for c in range(3):
        out_c[box, c] = centers[key, c]
        out_s[box, c] = sizes[key, c]
    for c in range(4):
        out_q[box, c] = rots[key, c]


@inline
def _write_nan(out_c, out_s, out_q, valid, box):
    """Mark output box ``box`` as absent: ``valid`` False, values NaN."""
    valid[box] = False
    for c in range(3):
        out_c[box, c] = math.nan
        out_s[box, c] = math.nan
    for c in range(4):
        out_q[box, c] = math.nan


# columns of the per-interval table (row k: keyframe k → k+1 of the packed keyframes)
_TH, _INV_SIN, _INV_DT = 0, 1, 2  # slerp half-angle, 1/sin of it, 1/(t[k+1] − t[k]) in 1/ns
_C0, _DC = 3, 6  # centre at k, centre step (3 each)
_S0, _DS = 9, 12  # size at k, size step (3 each)
_Q0, _Q1 = 15, 19  # quaternion at k, quaternion at k+1 on its hemisphere (4 each)
_INTERVAL_COLS = 24  # 23 used, padded to three cache lines
_ALWAYS_CHECK = np.iinfo(np.int64).min  # no fast path: every time goes through _advance


@inline
def _store_size(iv, k, u, box, out_s, valid):
    """The size at fraction ``u`` of interval ``k`` (linear, held past the ends) into output
    box ``box``, marked valid."""
    valid[box] = True
    u = min(max(u, 0.0), 1.0)
    for c in range(3):
        out_s[box, c] = iv[k, _S0 + c] + u * iv[k, _DS + c]


@inline
def _store_box(iv, k, u, s0, s1, box, out_c, out_s, out_q, valid):
    """Fraction ``u`` of interval ``k`` into output box ``box`` given the slerp weights
    ``s0, s1``: centre linear, rotation slerped (both extended past the ends for constant
    velocity), size by :func:`_store_size`."""
    w, x, y, z = slerp_combine(
        s0, s1, iv[k, _TH], iv[k, _Q0], iv[k, _Q0 + 1], iv[k, _Q0 + 2], iv[k, _Q0 + 3],
        iv[k, _Q1], iv[k, _Q1 + 1], iv[k, _Q1 + 2], iv[k, _Q1 + 3],
    )
    out_q[box, 0] = w
    out_q[box, 1] = x
    out_q[box, 2] = y
    out_q[box, 3] = z
    for c in range(3):
        out_c[box, c] = iv[k, _C0 + c] + u * iv[k, _DC + c]
    _store_size(iv, k, u, box, out_s, valid)


@inline
def _advance(offsets, ts, iv, centers, sizes, rots, stationary, mode, n, k, tq, box, out_c, out_s, out_q, valid):
    """Track ``n`` at time ``tq``: its interval cursor ``k`` (at or before ``tq``'s interval)
    walked forward. Returns ``(k, last)``, ``last`` the last time up to which a later (larger)
    time stays inside interval ``k``'s range: the kernel's fast path writes the box. A box
    outside the keyframe range or of a stationary or one-keyframe track is written here
    instead, and ``last`` is ``_ALWAYS_CHECK``."""
    a = offsets[n]
    b = offsets[n + 1]
    if stationary[n] or b - a == 1:
        # a stationary track holds its first keyframe at every time; a one-keyframe track
        # too, except outside its instant under "none"
        if mode == 0 and not stationary[n] and tq != ts[a]:
            _write_nan(out_c, out_s, out_q, valid, box)
        else:
            _write_key(out_c, out_s, out_q, valid, box, centers, sizes, rots, a)
        return k, _ALWAYS_CHECK
    # interval k with ts[k] <= tq < ts[k+1], clamped to [a, b-2]
    while k < b - 2 and ts[k + 1] <= tq:
        k += 1
    if tq >= ts[a] and tq <= ts[b - 1]:
        return k, (ts[k + 1] - 1 if k < b - 2 else ts[b - 1])
    if mode == 0:
        _write_nan(out_c, out_s, out_q, valid, box)
    elif mode == 1:
        _write_key(out_c, out_s, out_q, valid, box, centers, sizes, rots, a if tq < ts[a] else b - 1)
    else:  # constant velocity: the first or last interval continued (u < 0 or u > 1)
        u = float(tq - ts[k]) * iv[k, _INV_DT]
        s0, s1 = slerp_weights(iv[k, _TH], iv[k, _INV_SIN], u)
        _store_box(iv, k, u, s0, s1, box, out_c, out_s, out_q, valid)
    return k, _ALWAYS_CHECK


@pjit
def _interpolate_kernel(offsets, ts, iv, mt, modes, centers, sizes, rots, stationary,
                        times, order, mode, out_c, out_s, out_q, valid):
    """Boxes of every track at every time into ``out_c (T·N, 3)``, ``out_s (T·N, 3)``,
    ``out_q (T·N, 4)``, ``valid (T·N,)`` (the ``(T, N, ...)`` outputs, flattened: box
    ``row · N + n``). ``iv`` is the interval table (:func:`_interval_table`). ``times``
    ascending; sorted time j goes to row ``order[j]``."""
    n_tracks = offsets.shape[0] - 1
    n_times = times.shape[0]
    track_blocks = (n_tracks + _TRACKS_PER_ITEM - 1) // _TRACKS_PER_ITEM
    time_blocks = (n_times + _TIMES_PER_ITEM - 1) // _TIMES_PER_ITEM
    for item in prange(time_blocks * track_blocks):
        # time-block-major: each thread fills its own consecutive rows
        j0 = (item // track_blocks) * _TIMES_PER_ITEM
        j1 = min(j0 + _TIMES_PER_ITEM, n_times)
        n0 = (item % track_blocks) * _TRACKS_PER_ITEM
        n1 = min(n0 + _TRACKS_PER_ITEM, n_tracks)
        m = n1 - n0
        # per track: interval cursor, and the last time the cursor's interval covers
        cursor = np.empty(m, np.int64)
        last = np.full(m, _ALWAYS_CHECK, np.int64)
        motion = False  # a motion-aware track in the block (engine.cuboid_motion)
        for n in range(n0, n1):
            cursor[n - n0] = find_interval(ts, offsets[n], offsets[n + 1] - 1, times[j0])
            motion = motion or modes[n] != 0
        # per track at the current time: fast path or not, fraction, slerp sine arguments
        fast = np.empty(m, np.bool_)
        frac = np.empty(m)
        arg0 = np.empty(m)
        arg1 = np.empty(m)
        sin0 = np.empty(m)
        sin1 = np.empty(m)
        # the motion-aware boxes' turns: engine.cuboid_motion.motion_turn's inputs and outputs
        t_x = np.zeros(m)
        t_rx = np.ones(m)
        t_ry = np.zeros(m)
        t_c = np.empty(m)
        t_s = np.empty(m)
        t_cz = np.empty(m)
        t_sz = np.empty(m)
        for j in range(j0, j1):
            tq = times[j]
            row = order[j] * n_tracks + n0
            # 1. a track inside the keyframe range takes the fast path (0 <= u <= 1), its
            # cursor walked forward where the time left its interval; any other box is
            # written by _advance now
            for i in range(m):
                if tq > last[i]:
                    cursor[i], last[i] = _advance(offsets, ts, iv, centers, sizes, rots, stationary, mode, n0 + i,
                                                  cursor[i], tq, row + i, out_c, out_s, out_q, valid)
                fast[i] = tq <= last[i]
                if fast[i]:
                    k = cursor[i]
                    u = float(tq - ts[k]) * iv[k, _INV_DT]
                    frac[i] = u
                    arg0[i] = (1.0 - u) * iv[k, _TH]
                    arg1[i] = u * iv[k, _TH]
                    if motion and modes[n0 + i] != 0:
                        t_x[i], t_rx[i], t_ry[i] = motion_turn_inputs(iv, mt, modes[n0 + i], k, u)
                else:
                    arg0[i] = 0.0
                    arg1[i] = 0.0
            # 2. the slerp sines of the row (and the motion-aware turns) in one branch-free
            # (vectorised) loop
            if motion:
                for i in range(m):
                    sin0[i] = sin_quadrant(arg0[i])
                    sin1[i] = sin_quadrant(arg1[i])
                    t_c[i], t_s[i], t_cz[i], t_sz[i] = motion_turn(t_x[i], t_rx[i], t_ry[i])
            else:
                for i in range(m):
                    sin0[i] = sin_quadrant(arg0[i])
                    sin1[i] = sin_quadrant(arg1[i])
            # 3. the fast-path boxes
            for i in range(m):
                if fast[i]:
                    k = cursor[i]
                    u = frac[i]
                    s0, s1 = slerp_weights_from_sines(iv[k, _TH], iv[k, _INV_SIN], u, sin0[i], sin1[i])
                    if motion and modes[n0 + i] != 0:
                        motion_store(iv, mt, modes[n0 + i], k, u, s0, s1, t_c[i], t_s[i], t_cz[i], t_sz[i], row + i,
                                     out_c, out_q)
                        _store_size(iv, k, u, row + i, out_s, valid)
                    else:
                        _store_box(iv, k, u, s0, s1, row + i, out_c, out_s, out_q, valid)


def _interval_table(ts: np.ndarray, centers: np.ndarray, sizes: np.ndarray, rots: np.ndarray) -> np.ndarray:
    """``(K-1, _INTERVAL_COLS) float64``: row k prepares keyframe interval k → k+1 once (the
    slerp angle, 1/sin and far quaternion of :func:`engine.pose_track.interval_table`,
    1/Δt, the starts and steps of centre and size) so a box reads one contiguous row.
    Rows that straddle two tracks are never read (1/Δt is 0 where Δt <= 0)."""
    k = max(len(ts) - 1, 0)
    iv = np.zeros((k, _INTERVAL_COLS))
    q1, theta, inv_sin = interval_table(rots)
    dt = np.diff(ts).astype(np.float64)
    iv[:, _TH] = theta
    iv[:, _INV_SIN] = inv_sin
    np.divide(1.0, dt, out=iv[:, _INV_DT], where=dt > 0)
    iv[:, _C0:_C0 + 3] = centers[:k]
    iv[:, _DC:_DC + 3] = centers[1:] - centers[:k]
    iv[:, _S0:_S0 + 3] = sizes[:k]
    iv[:, _DS:_DS + 3] = sizes[1:] - sizes[:k]
    iv[:, _Q0:_Q0 + 4] = rots[:k]
    iv[:, _Q1:_Q1 + 4] = q1
    return iv


@pjit
def _to_frame_kernel(pose_q, pose_t, centers, rots, out_c, out_q):
    """Boxes (T, N) into frame B given ``a_from_b`` (T,): c' = R⁻¹(c − t), q' = q_R* ⊗ q."""
    for i in prange(centers.shape[0]):
        w = pose_q[i, 0]
        x = -pose_q[i, 1]
        y = -pose_q[i, 2]
        z = -pose_q[i, 3]
        for n in range(centers.shape[1]):
            rx, ry, rz = q_rotate(
                w, x, y, z,
                centers[i, n, 0] - pose_t[i, 0],
                centers[i, n, 1] - pose_t[i, 1],
                centers[i, n, 2] - pose_t[i, 2],
            )
            out_c[i, n, 0] = rx
            out_c[i, n, 1] = ry
            out_c[i, n, 2] = rz
            qw, qx, qy, qz = q_mul(w, x, y, z, rots[i, n, 0], rots[i, n, 1], rots[i, n, 2], rots[i, n, 3])
            out_q[i, n, 0] = qw
            out_q[i, n, 1] = qx
            out_q[i, n, 2] = qy
            out_q[i, n, 3] = qz


# ---------------------------------------------------------------- types


@dataclass(frozen=True, eq=False)
class TrackTable:
    """Many cuboid tracks packed into flat arrays (build once per scene, interpolate often).

    Attributes:
        track_ids: N track ids, in order.
        offsets: ``(N + 1,) int64``; track n's keyframes are rows ``offsets[n]:offsets[n+1]``.
        timestamps_ns: ``(K,) int64``, strictly increasing within each track.
        centers: ``(K, 3) float64`` m, world frame. sizes: ``(K, 3) float64`` m (l, w, h).
        rotations: ``(K, 4) float64`` unit wxyz, box → world.
        stationary: ``(N,) bool``.
        interpolation: ``(N,) uint8`` mode codes (:data:`engine.cuboid_motion.INTERPOLATION`:
            0 linear, 1 ctrv, 2 hermite); None: all linear.
        intervals: ``(K-1, 24) float64``, per keyframe row k the interval k → k+1 prepared
            once for interpolation (slerp table, 1/Δt, centre and size steps; see
            :func:`_interval_table`). Computed at construction.
        motion: ``(K-1, 20) float64``, the motion-aware modes' interval table
            (:func:`engine.cuboid_motion.motion_table`; zero for linear tracks).
    """

    track_ids: tuple[str, ...]
    offsets: np.ndarray
    timestamps_ns: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    stationary: np.ndarray
    interpolation: np.ndarray | None = None
    intervals: np.ndarray = field(init=False, repr=False)
    motion: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        n = len(self.track_ids)
        modes = np.zeros(n, np.uint8) if self.interpolation is None else np.asarray(self.interpolation)
        if modes.shape != (n,) or not np.isin(modes, list(INTERPOLATION.values())).all():
            raise ValueError(f"interpolation must be ({n},) codes in {sorted(INTERPOLATION.values())}, got {modes!r}")
        modes = np.ascontiguousarray(modes, dtype=np.uint8)
        object.__setattr__(self, "interpolation", modes)
        object.__setattr__(
            self, "intervals", _interval_table(self.timestamps_ns, self.centers, self.sizes, self.rotations)
        )
        object.__setattr__(self, "motion", motion_table(self.timestamps_ns, self.centers, self.rotations,
                                                        self.offsets, modes))

    def select(self, index: np.ndarray) -> "TrackTable":
        """The tracks at rows ``index`` (``(M,)`` integers, in the order given) as a table of
        their own: interpolating it gives the columns ``index`` of interpolating this one."""
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        lengths = np.diff(self.offsets)[index]
        keys = np.concatenate([np.arange(self.offsets[n], self.offsets[n + 1]) for n in index]
                              + [np.zeros(0, np.int64)])
        return TrackTable(
            tuple(self.track_ids[n] for n in index), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            self.timestamps_ns[keys], self.centers[keys], self.sizes[keys], self.rotations[keys],
            self.stationary[index], None if self.interpolation is None else self.interpolation[index],
        )

    @staticmethod
    def from_tracks(
        tracks: Sequence[CuboidTrack], interpolation: Interpolation | Sequence[Interpolation] | None = None,
    ) -> "TrackTable":
        """Pack validated :class:`CuboidTrack` objects; duplicate ids raise ``ValueError``.

        ``interpolation``: one mode for every track, one per track, or None (linear)."""
        ids = tuple(t.track_id for t in tracks)
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"duplicate track_id {dup!r}")
        for t in tracks:
            if not isinstance(t, CuboidTrack):
                raise ValueError(f"expected CuboidTrack objects, got {type(t).__name__}")
        lengths = np.array([len(t) for t in tracks], dtype=np.int64)
        offsets = np.zeros(len(tracks) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])

        def cat(name: str, width: int, dtype) -> np.ndarray:
            if not tracks:
                return np.zeros((0, width) if width else (0,), dtype=dtype)
            return np.ascontiguousarray(np.concatenate([getattr(t, name) for t in tracks]), dtype=dtype)

        return TrackTable(
            track_ids=ids,
            offsets=offsets,
            timestamps_ns=cat("timestamps_ns", 0, np.int64),
            centers=cat("centers", 3, np.float64),
            sizes=cat("sizes", 3, np.float64),
            rotations=cat("rotations", 4, np.float64),
            stationary=np.array([bool(t.stationary) for t in tracks], dtype=np.bool_),
            interpolation=_mode_codes(interpolation, ids),
        )

    def __len__(self) -> int:
        return len(self.track_ids)


@dataclass(frozen=True, eq=False)
class BoxFrames:
    """Boxes of N tracks at T times.

    Attributes:
        times_ns: ``(T,) int64``.
        track_ids: the N track ids (column order).
        centers: ``(T, N, 3) float64`` m. sizes: ``(T, N, 3) float64`` m (l, w, h).
        rotations: ``(T, N, 4) float64`` unit wxyz, box → ``frame``.
        valid: ``(T, N) bool``; where False the box does not exist and its values are NaN.
        frame: the frame the boxes are in (``"world"`` or ``"ego"``).
    """

    times_ns: np.ndarray
    track_ids: tuple[str, ...]
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    valid: np.ndarray
    frame: str = "world"

    def to_ego(self, world_from_ego: PoseTrack | SE3, extrapolate: PoseExtrapolation = "none") -> "BoxFrames":
        """The boxes in each frame's ego frame: ``ego_box = inverse(world_from_ego(t)) ∘ world_box``.

        ``world_from_ego`` is a :class:`PoseTrack` (interpolated at ``times_ns`` with its
        ``extrapolate`` policy; out-of-range times raise its ``OutOfRangeError`` under
        ``"none"``) or an ``SE3`` batch of shape ``(T,)``, one pose per time.
        """
        if self.frame != "world":
            raise ValueError(f"to_ego needs world-frame boxes, these are in {self.frame!r}")
        if isinstance(world_from_ego, PoseTrack):
            poses = world_from_ego.interpolate(self.times_ns, extrapolate)
        elif isinstance(world_from_ego, SE3):
            poses = world_from_ego
            if poses.shape != self.times_ns.shape:
                raise ValueError(f"need {len(self.times_ns)} poses (T,), got SE3 of shape {poses.shape}")
        else:
            raise ValueError(f"world_from_ego must be a PoseTrack or SE3, got {type(world_from_ego).__name__}")
        out_c = np.empty_like(self.centers)
        out_q = np.empty_like(self.rotations)
        _to_frame_kernel(
            np.ascontiguousarray(poses.rotation.reshape(-1, 4)),
            np.ascontiguousarray(poses.translation.reshape(-1, 3)),
            self.centers, self.rotations, out_c, out_q,
        )
        return BoxFrames(self.times_ns, self.track_ids, out_c, self.sizes, out_q, self.valid, "ego")


# ---------------------------------------------------------------- public API


def _mode_codes(interpolation: str | Sequence[str] | None, ids: tuple[str, ...]) -> np.ndarray:
    """``(N,) uint8`` codes of one mode name for all tracks or one per track."""
    if interpolation is None or isinstance(interpolation, str):
        names = [interpolation or "linear"] * len(ids)
    else:
        names = list(interpolation)
    if len(names) != len(ids):
        raise ValueError(f"interpolation: one mode per track ({len(ids)}), got {len(names)}")
    for tid, name in zip(ids, names):
        if name not in INTERPOLATION:
            raise ValueError(f"track {tid}: interpolation must be one of {sorted(INTERPOLATION)}, got {name!r}")
    return np.array([INTERPOLATION[m] for m in names], np.uint8)


def _allocate_boxes(t: int, n: int, dtype: np.dtype) -> tuple[np.ndarray, ...]:
    """Uninitialised C-contiguous ``centers (t, n, 3)``, ``sizes (t, n, 3)``,
    ``rotations (t, n, 4)`` of ``dtype`` and ``valid (t, n) bool``: consecutive,
    non-overlapping views of one buffer.

    One block because glibc keeps a freed block for reuse only below its trim threshold
    (twice the largest block freed so far): three separate 4.8 MB arrays (1,000 boxes × 200
    times) went back to the OS after every call and cost ~5 ms of fresh page faults per
    call, more than the kernel; one 16 MB block is kept and reused.
    """
    m = t * n
    item = dtype.itemsize
    buf = np.empty(m * (10 * item + 1), np.uint8)
    split = np.cumsum([0, 3 * m * item, 3 * m * item, 4 * m * item])
    c, s, q = (buf[split[i]:split[i + 1]].view(dtype) for i in range(3))
    return c.reshape(t, n, 3), s.reshape(t, n, 3), q.reshape(t, n, 4), buf[split[3]:].view(np.bool_).reshape(t, n)


def interpolate_tracks(
    tracks: TrackTable | Sequence[CuboidTrack],
    times_ns: np.ndarray,
    extrapolation: Extrapolation = "none",
    dtype: type[np.floating] = np.float64,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> BoxFrames:
    """Boxes of every track at every time ``times_ns`` (``(T,)`` int64 ns, any order).

    Returns world-frame :class:`BoxFrames` with arrays ``(T, N, ...)`` and ``valid (T, N)``;
    see the module docstring for the extrapolation policies and stationary tracks. Pass a
    :class:`TrackTable` built once to interpolate the same tracks repeatedly (a sequence of
    tracks is packed on every call).

    ``dtype`` is the float type of the box arrays: ``float64`` (default) or ``float32``
    (half the output for serving; computed in float64 and rounded once on store, so fine for
    the local world frame around the scene origin and for ego-relative boxes, not for
    coordinates far from the origin).

    ``interpolation`` (for a sequence of tracks; a :class:`TrackTable` carries its own): one
    mode for all tracks or one per track, default linear.
    """
    if extrapolation not in _EXTRAPOLATION:
        raise ValueError(f"extrapolation must be one of {sorted(_EXTRAPOLATION)}, got {extrapolation!r}")
    out_dtype = np.dtype(dtype)
    if out_dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {out_dtype}")
    if isinstance(tracks, TrackTable):
        if interpolation is not None:
            raise ValueError("interpolation is set when packing the TrackTable (TrackTable.from_tracks)")
        table = tracks
    else:
        table = TrackTable.from_tracks(tracks, interpolation)
    times = np.asarray(times_ns)
    if times.ndim != 1 or not (np.issubdtype(times.dtype, np.integer) or times.size == 0):
        raise ValueError(f"times_ns must be a (T,) integer array of nanoseconds, got {times.dtype} {times.shape}")
    times = np.ascontiguousarray(times, dtype=np.int64)
    # the kernel walks ascending times; row order[j] receives the j-th smallest
    if np.all(times[1:] >= times[:-1]):
        sorted_times, order = times, np.arange(len(times), dtype=np.int64)
    else:
        order = np.argsort(times, kind="stable")
        sorted_times = np.ascontiguousarray(times[order])
    t, n = len(times), len(table)
    out_c, out_s, out_q, valid = _allocate_boxes(t, n, out_dtype)
    _interpolate_kernel(
        table.offsets, table.timestamps_ns, table.intervals, table.motion, table.interpolation,
        table.centers, table.sizes, table.rotations,
        table.stationary, sorted_times, order, _EXTRAPOLATION[extrapolation],
        out_c.reshape(-1, 3), out_s.reshape(-1, 3), out_q.reshape(-1, 4), valid.reshape(-1),
    )
    return BoxFrames(times, table.track_ids, out_c, out_s, out_q, valid, "world")


def _warmup() -> None:
    track = CuboidTrack(
        "w", "car", np.array([0, 10]), np.zeros((2, 3)), np.ones((2, 3)), np.array([[1.0, 0, 0, 0]] * 2)
    )
    for dtype in (np.float64, np.float32):
        interpolate_tracks([track], np.array([5], dtype=np.int64), dtype=dtype).to_ego(SE3.identity(1))
        for mode in ("ctrv", "hermite"):
            interpolate_tracks([track], np.array([5], dtype=np.int64), dtype=dtype, interpolation=mode)
