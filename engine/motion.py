"""Per-point motion compensation: each point moved by the ego pose at its own firing time.

For a point ``p_i`` in the sensor frame fired at ``t_i``::

    p_world = world_from_ego(t_i) · ego_from_sensor · p_i
    p_ref   = ego_from_sensor⁻¹ · world_from_ego(t_ref)⁻¹ · p_world      (sensor frame at t_ref)

This is the one implementation of that chain: deskewing a sweep, accumulating sweeps in
the world frame and projecting points into a camera at its exposure time all call it.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from engine.arrays import as_points
from engine._jit import jit
from engine.pose_track import EXTRAPOLATION_CODES, Extrapolation, PoseTrack, interval_table, pose_at
from engine.quaternion import q_mul, q_rotate, q_to_matrix
from engine.se3 import SE3
from engine.sweep import Sweep

OutFrame = Literal["sensor", "ego", "world"]
_OUT_FRAME = {"sensor": 0, "ego": 1, "world": 2}


@jit
def _compensate_kernel(xyz, times, ts, q, t, mode, ext_q, ext_t, ref_q, ref_t, out_frame, out):
    """out[i] = chosen frame of (ref⁻¹ ∘ pose(times[i]) ∘ ext) · xyz[i].

    ext: ego_from_sensor; ref: world_from_ego at the reference time (unused for world).
    Per distinct time the whole chain is composed once into a 3×3 matrix and a
    translation (spinning LiDARs fire a column of beams at one instant), leaving a
    matrix-vector product per point. Serial on purpose: that is a few ns per point,
    less than a parallel region's start and barrier cost on a busy machine.
    """
    q1, theta, inv_sin = interval_table(q)
    ew, ex, ey, ez = ext_q[0], ext_q[1], ext_q[2], ext_q[3]
    rw, rx, ry, rz = ref_q[0], -ref_q[1], -ref_q[2], -ref_q[3]  # inverse rotation of ref
    m = np.empty((3, 3))
    bx = by = bz = 0.0
    for i in range(xyz.shape[0]):
        if i == 0 or times[i] != times[i - 1]:
            w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, times[i], mode)
            # world_from_sensor(t_i): rotation pose ⊗ ext, translation pose · ext_t + t
            cw, cx, cy, cz = q_mul(w, x, y, z, ew, ex, ey, ez)
            bx, by, bz = q_rotate(w, x, y, z, ext_t[0], ext_t[1], ext_t[2])
            bx += tx
            by += ty
            bz += tz
            if out_frame != 2:
                # ego(t_ref) ← world
                cw, cx, cy, cz = q_mul(rw, rx, ry, rz, cw, cx, cy, cz)
                bx, by, bz = q_rotate(rw, rx, ry, rz, bx - ref_t[0], by - ref_t[1], bz - ref_t[2])
                if out_frame == 0:
                    # sensor ← ego
                    cw, cx, cy, cz = q_mul(ew, -ex, -ey, -ez, cw, cx, cy, cz)
                    bx, by, bz = q_rotate(ew, -ex, -ey, -ez, bx - ext_t[0], by - ext_t[1], bz - ext_t[2])
            q_to_matrix(cw, cx, cy, cz, m)
        px = float(xyz[i, 0])
        py = float(xyz[i, 1])
        pz = float(xyz[i, 2])
        out[i, 0] = m[0, 0] * px + m[0, 1] * py + m[0, 2] * pz + bx
        out[i, 1] = m[1, 0] * px + m[1, 1] * py + m[1, 2] * pz + by
        out[i, 2] = m[2, 0] * px + m[2, 1] * py + m[2, 2] * pz + bz


def motion_compensate(
    xyz: np.ndarray,
    times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    ego_from_sensor: SE3,
    ref_time_ns: int | None = None,
    out_frame: OutFrame = "ego",
    extrapolate: Extrapolation = "none",
    out: np.ndarray | None = None,
) -> np.ndarray:
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

    Returns:
        ``(N, 3) float64`` for ``"world"``, else ``(N, 3) float32`` (``out`` when given).
    """
    if out_frame not in _OUT_FRAME:
        raise ValueError(f"out_frame must be one of {sorted(_OUT_FRAME)}, got {out_frame!r}")
    p = as_points(xyz)
    times = world_from_ego.check_times(times_ns, extrapolate)
    if times.shape != (len(p),):
        raise ValueError(f"times_ns must have shape ({len(p)},), got {np.shape(times_ns)}")
    if ego_from_sensor.shape != ():
        raise ValueError("ego_from_sensor must be a single SE3")
    if out_frame == "world":
        ref = SE3.identity()
    else:
        if ref_time_ns is None:
            raise ValueError(f"out_frame={out_frame!r} needs ref_time_ns")
        ref = world_from_ego.interpolate(int(ref_time_ns), extrapolate)
    dtype = np.float64 if out_frame == "world" else np.float32
    if out is None:
        out = np.empty((len(p), 3), dtype=dtype)
    elif not (isinstance(out, np.ndarray) and out.shape == (len(p), 3) and out.dtype == dtype
              and out.flags.c_contiguous and out.flags.writeable):
        raise ValueError(f"out must be a writeable C-contiguous ({len(p)}, 3) {np.dtype(dtype).name} array, got "
                         f"{getattr(out, 'shape', None)} {getattr(out, 'dtype', None)}")
    _compensate_kernel(
        p, times, world_from_ego.timestamps_ns, world_from_ego.rotation, world_from_ego.translation,
        EXTRAPOLATION_CODES[extrapolate],
        ego_from_sensor.rotation, ego_from_sensor.translation, ref.rotation, ref.translation,
        _OUT_FRAME[out_frame], out,
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
