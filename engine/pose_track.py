"""Time-stamped ego poses, interpolated at arbitrary (per-point) times."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine import quaternion as quat
from engine._jit import inline, jit, pjit, prange
from engine.quaternion import _SLERP_LINEAR_BELOW
from engine.se3 import SE3
from engine.typing import Quaternions, TimesNs, Vectors3

Extrapolation = Literal["none", "hold", "linear"]
EXTRAPOLATION_CODES = {"none": 0, "hold": 1, "linear": 2}


class OutOfRangeError(ValueError):
    """A query time lies outside a track's time range and extrapolation was not asked for."""


@jit
def interval_table(q):
    """Per interval k: the far quaternion on the near hemisphere, its angle and 1/sin."""
    n = q.shape[0]
    q1 = np.empty((max(n - 1, 0), 4))
    theta = np.zeros(max(n - 1, 0))
    inv_sin = np.zeros(max(n - 1, 0))
    for k in range(n - 1):
        d = 0.0
        for c in range(4):
            d += q[k, c] * q[k + 1, c]
        s = -1.0 if d < 0.0 else 1.0
        for c in range(4):
            q1[k, c] = s * q[k + 1, c]
        d = min(abs(d), 1.0)
        th = math.acos(d)
        if th >= _SLERP_LINEAR_BELOW:
            theta[k] = th
            inv_sin[k] = 1.0 / math.sin(th)
    return q1, theta, inv_sin


@inline
def find_interval(ts, lo, hi, tq):
    """Index k in ``[lo, hi-1]`` with ``ts[k] <= tq < ts[k+1]`` (binary search; clamped at
    the ends, so a time outside ``ts[lo..hi]`` gets the first or last interval)."""
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if ts[mid] <= tq:
            lo = mid
        else:
            hi = mid
    return lo


@inline
def pose_at(ts, q, t, q1, theta, inv_sin, tq, mode):
    """Pose at time ``tq`` (int64 ns) as ``(w, x, y, z, tx, ty, tz)``.

    ``q1, theta, inv_sin`` come from :func:`interval_table`; ``mode`` 1 clamps to the
    end poses ("hold"), otherwise the end intervals extend linearly. Callers check range.
    """
    n = ts.shape[0]
    if n == 1:
        return q[0, 0], q[0, 1], q[0, 2], q[0, 3], t[0, 0], t[0, 1], t[0, 2]
    k = find_interval(ts, 0, n - 1, tq)
    # the fraction comes from an exact int64 difference
    u = float(tq - ts[k]) / float(ts[k + 1] - ts[k])
    if mode == 1:
        u = min(max(u, 0.0), 1.0)
    return interval_pose(q, t, q1, theta, inv_sin, k, u)


# odd Taylor coefficients of sin: x - x³/3! + x⁵/5! - ... (to x¹⁹)
_SIN_TAYLOR = tuple((-1.0) ** i / math.factorial(2 * i + 1) for i in range(10))


@inline
def sin_quadrant(x):
    """sin x for x in [0, π/2] by a fixed odd polynomial: Taylor to x¹⁹, summed by Estrin's
    scheme in y = x² (short dependency chains, so the two sines of a slerp and of
    neighbouring boxes overlap). The first omitted term is below 2.6e-16 on [0, π/2]; the
    result is within 4.5e-16 of ``math.sin`` (2 ulp of 1, relative 2 ulp near 0);
    branch-free, no range reduction. Outside [0, π/2] use ``math.sin``."""
    y = x * x
    y2 = y * y
    y4 = y2 * y2
    lo = (_SIN_TAYLOR[1] + _SIN_TAYLOR[2] * y) + (_SIN_TAYLOR[3] + _SIN_TAYLOR[4] * y) * y2
    hi = (_SIN_TAYLOR[5] + _SIN_TAYLOR[6] * y) + (_SIN_TAYLOR[7] + _SIN_TAYLOR[8] * y) * y2
    p = lo + (hi + _SIN_TAYLOR[9] * y4) * y4
    return x + x * y * p


@inline
def slerp_weights(theta, inv_sin, u):
    """Weights ``(s0, s1)`` of the near and far quaternion at fraction ``u`` of an interval
    of half-angle ``theta`` (``inv_sin`` = 1/sin θ; both from :func:`interval_table`).

    On the interval (0 ≤ u ≤ 1) both sine arguments lie in [0, θ] ⊂ [0, π/2] and go
    through :func:`sin_quadrant`; extrapolation (u outside) uses ``math.sin``. θ = 0
    (below the slerp threshold) gives the linear weights; :func:`slerp_combine` then
    normalises.
    """
    if 0.0 <= u <= 1.0:
        return slerp_weights_from_sines(
            theta, inv_sin, u, sin_quadrant((1.0 - u) * theta), sin_quadrant(u * theta)
        )
    return slerp_weights_from_sines(theta, inv_sin, u, math.sin((1.0 - u) * theta), math.sin(u * theta))


@inline
def slerp_weights_from_sines(theta, inv_sin, u, sin0, sin1):
    """:func:`slerp_weights` given ``sin0 = sin((1 − u)·θ)`` and ``sin1 = sin(u·θ)`` (for a
    caller that evaluates many sines in one vectorised loop)."""
    if theta == 0.0:
        return 1.0 - u, u
    return sin0 * inv_sin, sin1 * inv_sin


@inline
def slerp_combine(s0, s1, theta, aw, ax, ay, az, bw, bx, by, bz):
    """``s0·a + s1·b`` for the weights of :func:`slerp_weights` (``b`` on ``a``'s
    hemisphere), normalised when θ = 0 (the linear fallback), as ``(w, x, y, z)``."""
    w = s0 * aw + s1 * bw
    x = s0 * ax + s1 * bx
    y = s0 * ay + s1 * by
    z = s0 * az + s1 * bz
    if theta == 0.0:
        r = 1.0 / math.sqrt(w * w + x * x + y * y + z * z)
        w *= r
        x *= r
        y *= r
        z *= r
    return w, x, y, z


@inline
def interval_pose(q, t, q1, theta, inv_sin, k, u):
    """Pose at fraction ``u`` of interval ``k`` (slerp + lerp; ``u`` outside [0, 1]
    extrapolates) as ``(w, x, y, z, tx, ty, tz)``; tables from :func:`interval_table`."""
    s0, s1 = slerp_weights(theta[k], inv_sin[k], u)
    w, x, y, z = slerp_combine(
        s0, s1, theta[k], q[k, 0], q[k, 1], q[k, 2], q[k, 3], q1[k, 0], q1[k, 1], q1[k, 2], q1[k, 3]
    )
    return (
        w, x, y, z,
        t[k, 0] + u * (t[k + 1, 0] - t[k, 0]),
        t[k, 1] + u * (t[k + 1, 1] - t[k, 1]),
        t[k, 2] + u * (t[k + 1, 2] - t[k, 2]),
    )


@inline
def _store_pose(ts, q, t, q1, theta, inv_sin, query, mode, out_q, out_t, i):
    w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, query[i], mode)
    out_q[i, 0] = w
    out_q[i, 1] = x
    out_q[i, 2] = y
    out_q[i, 3] = z
    out_t[i, 0] = tx
    out_t[i, 1] = ty
    out_t[i, 2] = tz


@pjit
def _interpolate_kernel(ts, q, t, query, mode, out_q, out_t):
    q1, theta, inv_sin = interval_table(q)
    for i in prange(query.shape[0]):
        _store_pose(ts, q, t, q1, theta, inv_sin, query, mode, out_q, out_t, i)


@jit
def _interpolate_few_kernel(ts, q, t, query, mode, out_q, out_t):
    """:func:`_interpolate_kernel` on the calling thread: for a few queries, waking the
    parallel workers costs more than the work."""
    q1, theta, inv_sin = interval_table(q)
    for i in range(query.shape[0]):
        _store_pose(ts, q, t, q1, theta, inv_sin, query, mode, out_q, out_t, i)


_FEW = 1024  # queries below which the serial kernel runs


@dataclass(frozen=True, eq=False)
class PoseTrack:
    """Poses ``world_from_ego`` (or any ``dst_from_src``) sampled at increasing times.

    Attributes:
        timestamps_ns: ``(K,) int64`` strictly increasing.
        rotation: ``(K, 4) float64`` unit quaternions (w, x, y, z).
        translation: ``(K, 3) float64`` metres.

    Interpolation is linear in translation and slerp (shortest arc) in rotation.
    """

    timestamps_ns: TimesNs
    rotation: Quaternions
    translation: Vectors3

    def __post_init__(self) -> None:
        ts = np.ascontiguousarray(self.timestamps_ns)
        if ts.ndim != 1 or len(ts) == 0:
            raise ValueError(f"PoseTrack.timestamps_ns must be a non-empty (K,) array, got {ts.shape}")
        if not np.issubdtype(ts.dtype, np.integer):
            raise ValueError(f"PoseTrack.timestamps_ns must be integer nanoseconds, got {ts.dtype}")
        ts = ts.astype(np.int64)
        bad = np.flatnonzero(np.diff(ts) <= 0)
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"PoseTrack.timestamps_ns must be strictly increasing: [{i}]={ts[i]} >= [{i + 1}]={ts[i + 1]}"
            )
        pose = SE3(self.rotation, self.translation)  # validates shapes, finiteness, norms
        if pose.shape != ts.shape:
            raise ValueError(
                f"PoseTrack: {len(ts)} timestamps but rotation {pose.rotation.shape} "
                f"and translation {pose.translation.shape}"
            )
        for name, arr in (("timestamps_ns", ts), ("rotation", pose.rotation), ("translation", pose.translation)):
            frozen = np.ascontiguousarray(arr)
            frozen.setflags(write=False)
            object.__setattr__(self, name, frozen)

    @staticmethod
    def from_poses(timestamps_ns: TimesNs, poses: SE3) -> "PoseTrack":
        return PoseTrack(timestamps_ns, poses.rotation, poses.translation)

    def __len__(self) -> int:
        return len(self.timestamps_ns)

    @property
    def start_ns(self) -> int:
        return int(self.timestamps_ns[0])

    @property
    def end_ns(self) -> int:
        return int(self.timestamps_ns[-1])

    @property
    def poses(self) -> SE3:
        return SE3(self.rotation, self.translation)

    def interpolate(self, times_ns: TimesNs | int, extrapolate: Extrapolation = "none") -> SE3:
        """Poses at ``times_ns`` (``int64`` ns, scalar or ``(M,)``), as an ``SE3`` batch.

        ``extrapolate``: ``"none"`` raises :class:`OutOfRangeError` for any time outside
        ``[start_ns, end_ns]``; ``"hold"`` repeats the first/last pose; ``"linear"``
        continues the first/last interval at constant linear and angular velocity.
        """
        scalar = np.ndim(times_ns) == 0
        query = self.check_times(times_ns, extrapolate)
        out_q = np.empty((len(query), 4))
        out_t = np.empty((len(query), 3))
        kernel = _interpolate_few_kernel if len(query) < _FEW else _interpolate_kernel
        kernel(self.timestamps_ns, self.rotation, self.translation, query, EXTRAPOLATION_CODES[extrapolate],
               out_q, out_t)
        if scalar:
            return SE3._trusted(out_q[0], out_t[0])
        return SE3._trusted(out_q, out_t)

    def check_times(self, times_ns: TimesNs | int, extrapolate: Extrapolation) -> TimesNs:
        """Validate query times for ``extrapolate``; return them as ``(M,) int64``.

        Raises :class:`OutOfRangeError` for a time outside the track when ``extrapolate``
        is ``"none"``, ``ValueError`` for non-integer times or an unknown policy.
        """
        if extrapolate not in EXTRAPOLATION_CODES:
            raise ValueError(f"extrapolate must be one of {sorted(EXTRAPOLATION_CODES)}, got {extrapolate!r}")
        query = np.asarray(times_ns)
        if not np.issubdtype(query.dtype, np.integer):
            raise ValueError(f"times_ns must be integer nanoseconds, got {query.dtype}")
        query = np.ascontiguousarray(np.atleast_1d(query).astype(np.int64, copy=False))
        if query.ndim != 1:
            raise ValueError(f"times_ns must be a scalar or (M,), got shape {query.shape}")
        if extrapolate == "none" and len(query):
            lo, hi = int(query.min()), int(query.max())
            if lo < self.start_ns or hi > self.end_ns:
                bad = lo if lo < self.start_ns else hi
                by = bad - self.start_ns if bad < self.start_ns else bad - self.end_ns
                raise OutOfRangeError(
                    f"time {bad} ns is outside the pose track [{self.start_ns}, {self.end_ns}] ns "
                    f"(by {by} ns); pass extrapolate='hold' or 'linear' to allow it"
                )
        return query

    def at(self, time_ns: int, extrapolate: Extrapolation = "none") -> SE3:
        """The single pose at ``time_ns``."""
        return self.interpolate(int(time_ns), extrapolate)

    def transformed(self, left: SE3 | None = None, right: SE3 | None = None) -> "PoseTrack":
        """The track ``left @ pose(t) @ right`` (e.g. ``world_from_ego @ ego_from_lidar``).

        A ``left`` factor commutes with interpolation. A ``right`` factor with a lever arm
        does not: between samples the sensor origin moves on an arc, which the new track
        linearises. Per-point work (``engine.motion``) therefore interpolates the ego track
        and applies the extrinsic afterwards.
        """
        poses = self.poses
        if left is not None:
            poses = left @ poses
        if right is not None:
            poses = poses @ right
        return PoseTrack.from_poses(self.timestamps_ns, poses)

    def slice(self, start_ns: int, end_ns: int) -> "PoseTrack":
        """Samples in ``[start_ns, end_ns]`` plus one on either side, so that range stays covered."""
        i0 = max(int(np.searchsorted(self.timestamps_ns, start_ns, side="right")) - 1, 0)
        i1 = min(int(np.searchsorted(self.timestamps_ns, end_ns, side="left")) + 1, len(self))
        return PoseTrack(self.timestamps_ns[i0:i1], self.rotation[i0:i1], self.translation[i0:i1])


def unwrap_hemisphere(q: Quaternions) -> Quaternions:
    """Flip signs so consecutive quaternions ``(K, 4)`` have non-negative dot products."""
    q = quat.as_quaternions(q).copy()
    for i in range(1, len(q)):
        if np.dot(q[i - 1], q[i]) < 0:
            q[i] = -q[i]
    return q


def _warmup() -> None:
    track = PoseTrack(np.array([0, 1]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    for n in (2, _FEW):  # the serial and the parallel kernel
        track.interpolate(np.zeros(n, dtype=np.int64))
