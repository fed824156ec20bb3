"""Per-point motion compensation: each point moved by the ego pose at its own firing time.

For a point ``p_i`` in the sensor frame fired at ``t_i``::

    p_world = world_from_ego(t_i) · ego_from_sensor · p_i
    p_ref   = ego_from_sensor⁻¹ · world_from_ego(t_ref)⁻¹ · p_world      (sensor frame at t_ref)

This is the one implementation of that chain: deskewing a sweep, accumulating sweeps in
the world frame and projecting points into a camera at its exposure time all call it.

Two ways to get the chain at a point's time, chosen per call:

- exact: slerp + lerp of the track at every distinct time (a spinning LiDAR fires a column
  of beams at one instant, so that is one pose per column), composed into ``[R | b]``;
- tabulated: the chain ``[R | b]`` evaluated exactly on a grid of nodes over the points'
  time span, every track sample a node, and interpolated linearly between nodes. Used when
  it needs fewer nodes than there are distinct times (Velodyne/Hesai fire each laser at its
  own time: a distinct time per point), and only to the error bound below.

Error bound of the table. Between two track samples the exact chain maps a point ``p`` to
``f(τ) = A · R_k exp(τ ω̂) v + (linear in τ)`` with ``v = ego_from_sensor · p`` (the point's
lever arm from the ego origin, ``|v| ≤ r = max|p| + |ext.t|``), ``A`` a fixed rigid motion
and ``ω`` the interval's constant slerp rate (angle / duration); translation is linear, so
``|f''| ≤ ω² r``. The linear interpolant of ``f`` over a step ``h`` (and ``[R | b]`` is
interpolated entry-wise, which is the same thing for each ``p``) misses it by at most
``h² ω² r / 8``. Each span between track samples (or the points' first/last time) gets the
fewest equal steps with ``h ≤ sqrt(8 ε / (ω² r))``, ``ε = max_error_m`` (1 µm by default):
e.g. 1 rad/s at 200 m gives h = 200 µs, 500 nodes for a 100 ms sweep.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from engine._jit import inline, jit
from engine.arrays import as_points
from engine.cuda import Device, resolve
from engine.pose_track import (
    EXTRAPOLATION_CODES,
    Extrapolation,
    PoseTrack,
    find_interval,
    interval_pose,
    interval_table,
    pose_at,
)
from engine.quaternion import q_mul, q_rotate, q_to_matrix
from engine.se3 import SE3
from engine.sweep import Sweep
from engine.typing import FloatArray, Points3, TimesNs

OutFrame = Literal["sensor", "ego", "world"]
# default bound (m) on the distance between a tabulated and the exact chain's point
MAX_ERROR_M = 1e-6
_OUT_FRAME: dict[OutFrame, int] = {"sensor": 0, "ego": 1, "world": 2}


@inline
def _chain(w, x, y, z, tx, ty, tz, ext_q, ext_t, ref_q, ref_t, out_frame, m):
    """Write ``[R | b]`` of (ref⁻¹ ∘ pose ∘ ext) into the ``(3, 4)`` array ``m``.

    pose: world_from_ego ``(w, x, y, z, tx, ty, tz)``; ext: ego_from_sensor; ref:
    world_from_ego at the reference time (unused for the world frame, ``out_frame`` 2).
    """
    ew, ex, ey, ez = ext_q[0], ext_q[1], ext_q[2], ext_q[3]
    # world_from_sensor(t): rotation pose ⊗ ext, translation pose · ext_t + t
    cw, cx, cy, cz = q_mul(w, x, y, z, ew, ex, ey, ez)
    bx, by, bz = q_rotate(w, x, y, z, ext_t[0], ext_t[1], ext_t[2])
    bx += tx
    by += ty
    bz += tz
    if out_frame != 2:
        # ego(t_ref) ← world
        rw, rx, ry, rz = ref_q[0], -ref_q[1], -ref_q[2], -ref_q[3]
        cw, cx, cy, cz = q_mul(rw, rx, ry, rz, cw, cx, cy, cz)
        bx, by, bz = q_rotate(rw, rx, ry, rz, bx - ref_t[0], by - ref_t[1], bz - ref_t[2])
        if out_frame == 0:
            # sensor ← ego
            cw, cx, cy, cz = q_mul(ew, -ex, -ey, -ez, cw, cx, cy, cz)
            bx, by, bz = q_rotate(ew, -ex, -ey, -ez, bx - ext_t[0], by - ext_t[1], bz - ext_t[2])
    q_to_matrix(cw, cx, cy, cz, m)
    m[0, 3] = bx
    m[1, 3] = by
    m[2, 3] = bz


@jit
def _scan(p, times):
    """``(runs of equal times, earliest time, latest time, max |p|²)`` of non-empty points
    (``p`` the flat ``(3N,)`` coordinates). Points with a NaN coordinate are left out of
    the max (they stay NaN whatever the pose); an infinite one makes it infinite."""
    n = times.shape[0]
    runs = 1
    lo = hi = times[0]
    for i in range(n):
        runs += i > 0 and times[i] != times[i - 1]
        lo = min(lo, times[i])
        hi = max(hi, times[i])
    # squares are >= 0, so their float64 bit patterns order as they do (+inf next, NaNs
    # above): an integer max, which vectorises, unlike a float max without fast-math
    square = np.empty(1)
    bits = square.view(np.int64)
    square[0] = np.inf
    inf_bits = bits[0]
    best = 0
    for i in range(n):
        square[0] = float(p[3 * i]) ** 2 + float(p[3 * i + 1]) ** 2 + float(p[3 * i + 2]) ** 2
        b = bits[0]
        best = max(best, b if b <= inf_bits else 0)
    bits[0] = best
    return runs, lo, hi, square[0]


@jit
def _plan_table(ts, q, mode, lo, hi, lever_m, max_error_m, max_nodes):
    """Spans of the table over ``[lo, hi]`` and their step counts (module docstring), or
    empty arrays when the table would need ``max_nodes`` nodes or more.

    Returns ``bounds (S + 1,) int64`` (``lo``, the track samples strictly inside, ``hi``),
    ``steps (S,) int64`` and ``interval (S,) int64`` (the track interval each span lies in;
    the end intervals for extrapolated spans). ``mode`` 1 ("hold") has no motion outside
    the track.
    """
    n = ts.shape[0]
    j0 = np.searchsorted(ts, lo, side="right")
    spans = max(np.searchsorted(ts, hi, side="left") - j0, 0) + 1
    bounds = np.empty(spans + 1, np.int64)
    bounds[0] = lo
    bounds[1:spans] = ts[j0:j0 + spans - 1]
    bounds[spans] = hi
    steps = np.empty(spans, np.int64)
    interval = np.empty(spans, np.int64)
    scale = math.sqrt(lever_m / (8.0 * max_error_m))
    total = 1.0
    for s in range(spans):
        k = find_interval(ts, 0, n - 1, bounds[s])
        interval[s] = k
        # the interval's rotation angle, 4·atan2(|q1 − q0|, |q1 + q0|) on one hemisphere
        dot = 0.0
        for c in range(4):
            dot += q[k, c] * q[k + 1, c]
        sign = 1.0 if dot >= 0.0 else -1.0
        dm = ds = 0.0
        for c in range(4):
            dm += (sign * q[k + 1, c] - q[k, c]) ** 2
            ds += (sign * q[k + 1, c] + q[k, c]) ** 2
        angle = 4.0 * math.atan2(math.sqrt(dm), math.sqrt(ds))
        if mode == 1 and (bounds[s + 1] <= ts[0] or bounds[s] >= ts[n - 1]):
            angle = 0.0  # held pose outside the track
        need = max(math.ceil(float(bounds[s + 1] - bounds[s]) * angle / float(ts[k + 1] - ts[k]) * scale), 1.0)
        total += need
        if not total < max_nodes:
            return bounds[:0], steps[:0], interval[:0]
        steps[s] = int(need)
    return bounds, steps, interval


@jit
def _chain_table(ts, q, t, mode, q1, theta, inv_sin, bounds, steps, interval, ext_q, ext_t, ref_q, ref_t, out_frame):
    """Nodes ``(M + 1, 3, 4)`` of ``[R | b]`` at the spans' equal steps (``M = steps.sum()``)
    and their forward differences ``(M, 3, 4)``; ``q1, theta, inv_sin`` from
    :func:`interval_table`."""
    nodes = np.empty((int(steps.sum()) + 1, 3, 4))
    node = 0
    for s in range(steps.shape[0]):
        k = interval[s]
        duration = float(ts[k + 1] - ts[k])
        start = float(bounds[s] - ts[k])
        step = float(bounds[s + 1] - bounds[s]) / steps[s]
        last = steps[s] + 1 if s == steps.shape[0] - 1 else steps[s]
        for j in range(last):
            u = (start + j * step) / duration
            if mode == 1:
                u = min(max(u, 0.0), 1.0)
            w, x, y, z, tx, ty, tz = interval_pose(q, t, q1, theta, inv_sin, k, u)
            _chain(w, x, y, z, tx, ty, tz, ext_q, ext_t, ref_q, ref_t, out_frame, nodes[node])
            node += 1
    return nodes, np.ascontiguousarray(nodes[1:] - nodes[:-1])


@inline
def _apply_run(p, i, e, m, o):
    """``o[k] = R · p[k] + b`` for points ``i ≤ k < e`` of the flat ``(3N,)`` ``p`` and
    ``o``, ``m = [R | b]`` flattened ``(12,)``. Unsigned indices (no negative-index
    wrap-around) let the loop vectorise."""
    r00, r01, r02, r03, r10, r11, r12, r13, r20, r21, r22, r23 = (
        m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11])
    one = np.uint64(1)
    for kk in range(e - i):
        k = np.uint64(3 * (i + kk))
        px = float(p[k])
        py = float(p[k + one])
        pz = float(p[k + one + one])
        o[k] = r00 * px + r01 * py + r02 * pz + r03
        o[k + one] = r10 * px + r11 * py + r12 * pz + r13
        o[k + one + one] = r20 * px + r21 * py + r22 * pz + r23


@inline
def _apply_cell(p, times, i, e, t0, inv_step, j, m, d, o):
    """:func:`_apply_run` with ``[R | b]`` interpolated at each point's time: ``m + u·d``,
    ``u = (times[k] − t0)·inv_step − j`` (the fraction of table step ``j``)."""
    r00, r01, r02, r03, r10, r11, r12, r13, r20, r21, r22, r23 = (
        m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7], m[8], m[9], m[10], m[11])
    d00, d01, d02, d03, d10, d11, d12, d13, d20, d21, d22, d23 = (
        d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9], d[10], d[11])
    one = np.uint64(1)
    for kk in range(e - i):
        u = float(times[np.uint64(i + kk)] - t0) * inv_step - j
        k = np.uint64(3 * (i + kk))
        px = float(p[k])
        py = float(p[k + one])
        pz = float(p[k + one + one])
        o[k] = (r00 + u * d00) * px + (r01 + u * d01) * py + (r02 + u * d02) * pz + (r03 + u * d03)
        o[k + one] = (r10 + u * d10) * px + (r11 + u * d11) * py + (r12 + u * d12) * pz + (r13 + u * d13)
        o[k + one + one] = (r20 + u * d20) * px + (r21 + u * d21) * py + (r22 + u * d22) * pz + (r23 + u * d23)


@jit
def _compensate_table(p, times, nodes, deltas, bounds, steps, o):
    """Points in runs of one table step each (firing order makes them long), the chain
    interpolated per point."""
    nf = nodes.reshape(-1)
    df = deltas.reshape(-1)
    spans = steps.shape[0]
    first = np.zeros(spans, np.int64)  # node index of each span's first node
    first[1:] = np.cumsum(steps)[:-1]
    n = times.shape[0]
    s = 0
    i = 0
    while i < n:
        ti = times[i]
        if ti < bounds[s] or ti >= bounds[s + 1]:
            s = find_interval(bounds, 0, spans, ti)
        t0 = bounds[s]
        step = float(bounds[s + 1] - t0) / steps[s]
        inv_step = steps[s] / float(bounds[s + 1] - t0)
        j = min(int(float(ti - t0) * inv_step), steps[s] - 1)
        # the step's times [c0, c1): its points share node j (one off by rounding still
        # interpolates, u a hair outside [0, 1])
        c0 = min(t0 + math.ceil(j * step), ti)
        c1 = bounds[s + 1] + (s == spans - 1) if j == steps[s] - 1 else t0 + math.ceil((j + 1) * step)
        e = i + 1
        while e < n and c0 <= times[e] < c1:
            e += 1
        node = 12 * (first[s] + j)
        _apply_cell(p, times, i, e, t0, inv_step, j, nf[node:node + 12], df[node:node + 12], o)
        i = e


@jit
def _compensate_kernel(xyz, times, ts, q, t, mode, ext_q, ext_t, ref_time, out_frame, max_error_m, out):
    """out[i] = chosen frame of (ref⁻¹ ∘ pose(times[i]) ∘ ext) · xyz[i], ref the pose at
    ``ref_time`` (unused for the world frame).

    ``[R | b]`` comes from the table where that takes fewer nodes than there are runs of
    equal times, else exactly once per run (module docstring); then a matrix-vector
    product per point. Only the track samples around the points' time span are used.
    Serial on purpose: that is a few ns per point, less than a parallel region's start and
    barrier cost on a busy machine.
    """
    n = xyz.shape[0]
    if n == 0:
        return
    p = xyz.reshape(-1)
    o = out.reshape(-1)
    runs, lo, hi, r2 = _scan(p, times)
    k = ts.shape[0]
    if k > 1:  # the samples covering the times; a time outside them is outside the whole track
        first = min(lo, ref_time) if out_frame != 2 else lo
        last = max(hi, ref_time) if out_frame != 2 else hi
        i0 = min(max(np.searchsorted(ts, first, side="right") - 1, 0), k - 2)
        i1 = max(min(np.searchsorted(ts, last, side="left") + 1, k), i0 + 2)
        ts, q, t = ts[i0:i1], q[i0:i1], t[i0:i1]
    q1, theta, inv_sin = interval_table(q)
    ref_q = np.zeros(4)
    ref_t = np.zeros(3)
    if out_frame != 2:
        ref_q[0], ref_q[1], ref_q[2], ref_q[3], ref_t[0], ref_t[1], ref_t[2] = pose_at(
            ts, q, t, q1, theta, inv_sin, ref_time, mode)
    # the table needs a finite lever arm (an infinite point: exact path)
    lever = math.sqrt(r2) + math.sqrt(ext_t[0] ** 2 + ext_t[1] ** 2 + ext_t[2] ** 2)
    if max_error_m > 0.0 and k > 1 and runs > 2 and math.isfinite(lever):
        bounds, steps, interval = _plan_table(ts, q, mode, lo, hi, lever, max_error_m, runs)
        if steps.shape[0] > 0:
            nodes, deltas = _chain_table(ts, q, t, mode, q1, theta, inv_sin, bounds, steps, interval,
                                         ext_q, ext_t, ref_q, ref_t, out_frame)
            _compensate_table(p, times, nodes, deltas, bounds, steps, o)
            return
    m = np.empty((3, 4))
    i = 0
    while i < n:
        ti = times[i]
        e = i + 1
        while e < n and times[e] == ti:
            e += 1
        w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, ti, mode)
        _chain(w, x, y, z, tx, ty, tz, ext_q, ext_t, ref_q, ref_t, out_frame, m)
        _apply_run(p, i, e, m.reshape(-1), o)
        i = e


def motion_compensate(
    xyz: Points3,
    times_ns: TimesNs,
    world_from_ego: PoseTrack,
    ego_from_sensor: SE3,
    ref_time_ns: int | None = None,
    out_frame: OutFrame = "ego",
    extrapolate: Extrapolation = "none",
    out: FloatArray | None = None,
    max_error_m: float = MAX_ERROR_M,
    device: Device | None = None,
) -> FloatArray:
    """Move sensor-frame points fired at ``times_ns`` to one reference time.

    Args:
        xyz: ``(N, 3)`` points in the sensor frame, metres (float32 or float64).
        times_ns: ``(N,) int64`` absolute firing time of each point.
        world_from_ego: ego poses covering ``times_ns`` (and ``ref_time_ns``).
        ego_from_sensor: the sensor's mounting extrinsic.
        ref_time_ns: the reference time (sweep start/end, a camera exposure...); not used
            for ``out_frame="world"``.
        out_frame: ``"ego"`` or ``"sensor"`` frame at ``ref_time_ns``, or ``"world"``.
        extrapolate: policy for times outside the track (see :meth:`PoseTrack.interpolate`).
        out: optional C-contiguous ``(N, 3)`` array of the result's dtype to write into
            (e.g. this sensor's rows of a frame's preallocated points).
        max_error_m: largest distance, metres, a point may land from the exact slerp chain
            when the chain is tabulated (module docstring); ``0`` evaluates the exact slerp at
            every distinct time.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default: :func:`engine.cuda.get_device`);
            the GPU evaluates the exact slerp chain at every point (``max_error_m`` unused),
            within 1e-6 m of the CPU (:mod:`engine.cuda`).

    Returns:
        ``(N, 3) float64`` for ``"world"``, else ``(N, 3) float32`` (``out`` when given).
    """
    if out_frame not in _OUT_FRAME:
        raise ValueError(f"out_frame must be one of {sorted(_OUT_FRAME)}, got {out_frame!r}")
    p = as_points(xyz)
    times = world_from_ego.check_times(times_ns, extrapolate)
    if times.shape != (len(p),):
        raise ValueError(f"times_ns must have shape ({len(p)},), got {np.shape(times_ns)}")
    if not (np.isfinite(max_error_m) and max_error_m >= 0.0):
        raise ValueError(f"max_error_m must be a finite number >= 0, got {max_error_m!r}")
    if ego_from_sensor.shape != ():
        raise ValueError("ego_from_sensor must be a single SE3")
    if out_frame == "world":
        ref_time = 0
    else:
        if ref_time_ns is None:
            raise ValueError(f"out_frame={out_frame!r} needs ref_time_ns")
        ref_time = int(world_from_ego.check_times(int(ref_time_ns), extrapolate)[0])
    dtype = np.float64 if out_frame == "world" else np.float32
    if out is None:
        out = np.empty((len(p), 3), dtype=dtype)
    elif not (isinstance(out, np.ndarray) and out.shape == (len(p), 3) and out.dtype == dtype
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous ({len(p)}, 3) {np.dtype(dtype).name} array, got "
                         f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
    if resolve(device) == "cuda":
        from engine.cuda.motion import compensate

        return compensate(p, times, world_from_ego, EXTRAPOLATION_CODES[extrapolate], ego_from_sensor, ref_time,
                          _OUT_FRAME[out_frame], out)
    _compensate_kernel(
        p, times, world_from_ego.timestamps_ns, world_from_ego.rotation, world_from_ego.translation,
        EXTRAPOLATION_CODES[extrapolate],
        ego_from_sensor.rotation, ego_from_sensor.translation, ref_time,
        _OUT_FRAME[out_frame], float(max_error_m), out,
    )
    return out


def sweep_reference_time(sweep: Sweep, ref: Literal["start", "middle", "end"] | int) -> int:
    """Absolute time (int64 ns) of a named reference instant of ``sweep``.

    ``"start"``/``"end"`` are the earliest/latest point times, ``"middle"`` halfway; an int
    is returned as is (e.g. a camera's exposure time).
    """
    if isinstance(ref, (int, np.integer)):
        return int(ref)
    if ref not in ("start", "middle", "end"):
        raise ValueError(f"ref must be 'start', 'middle', 'end' or an int64 time, got {ref!r}")
    if sweep.time_offset_ns is None or len(sweep) == 0:
        return sweep.timestamp_ns
    lo = int(sweep.time_offset_ns.min())
    hi = int(sweep.time_offset_ns.max())
    offset = {"start": lo, "end": hi, "middle": lo + (hi - lo) // 2}[ref]
    return sweep.timestamp_ns + offset


def deskew(
    sweep: Sweep,
    world_from_ego: PoseTrack,
    ego_from_sensor: SE3,
    ref: Literal["start", "middle", "end"] | int = "end",
    out_frame: Literal["sensor", "ego"] = "sensor",
    extrapolate: Extrapolation = "none",
) -> Sweep:
    """Motion-compensate a sensor-frame sweep to one reference time.

    Every point moves from the ego pose at its own firing time (``sweep.timestamp_ns +
    time_offset_ns``) to the pose at ``ref``. The result keeps all columns; its
    ``timestamp_ns`` becomes the reference time and ``time_offset_ns`` is re-based to it.
    """
    if sweep.time_offset_ns is None:
        raise ValueError("deskew needs per-point times (Sweep.time_offset_ns)")
    t_ref = sweep_reference_time(sweep, ref)
    times = sweep.time_offset_ns + np.int64(sweep.timestamp_ns)
    xyz = motion_compensate(sweep.xyz, times, world_from_ego, ego_from_sensor, t_ref, out_frame, extrapolate)
    out = sweep.with_xyz(xyz, frame=out_frame)
    out.timestamp_ns = t_ref
    out.time_offset_ns = times - np.int64(t_ref)
    return out


def _warmup() -> None:
    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    for dtype in (np.float32, np.float64):
        for frame in _OUT_FRAME:
            motion_compensate(np.zeros((1, 3), dtype), np.array([5]), track, SE3.identity(), 5, frame)
