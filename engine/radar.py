"""Automotive radar: the sweep type, Doppler ego-motion compensation, multi-sweep accumulation.

A radar return is a point ``p`` in the radar (sensor) frame with a measured radial velocity
``v_r`` and a radar cross-section. Sign convention: ``v_r`` is the range rate, positive when
the target moves away from the sensor. With ``u = p / |p|`` the line of sight and
``v_s`` the sensor origin's velocity relative to the world (both in one frame)::

    measured     v_r      = (v_target - v_s) · u
    compensated  v_r_comp = v_r + v_s · u          = v_target · u

so a static target's compensated radial velocity is 0. ``v_s`` is the velocity of the
sensor origin, ``v_ego + ω × (R_world_from_ego · t_ego_from_sensor)``, taken from the pose
track as the central difference of the sensor origin's world position over
``[t - half_window_ns, t + half_window_ns]`` (:func:`sensor_velocity`; exact within one
interval of a linearly interpolated track, both intervals' mean at a sample).

:func:`radar_multisweep` is nuScenes' ``RadarPointCloud.from_file_multisweep`` on sweeps
already read: positions move to the reference sensor frame through the 4-transform chain
``ref_from_ego · ego_from_world(ref) · world_from_ego(k) · ego_from_sensor(k)``, points with
``|x| < d and |y| < d`` (sensor frame) are dropped first, every other column is kept as it is
(the devkit rotates neither velocities nor anything else).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from engine import quaternion as quat
from engine._jit import jit
from engine.arrays import as_points, coerce_columns
from engine.pose_track import PoseTrack
from engine.quaternion import q_mul, q_rotate
from engine.se3 import SE3
from engine.typing import Float32Array, Float64Array, Points3F64, TimesNs

HALF_WINDOW_NS = 10_000_000  # default half width of the sensor-velocity difference: 10 ms

_RADAR_COLUMNS = {name: (np.dtype(np.float32), ()) for name in ("radial_velocity_mps", "rcs_dbsm")}


@dataclass(eq=False)
class RadarSweep:
    """One radar sweep (scan) as a structure of arrays.

    Attributes:
        xyz: ``(N, 3) float32`` C-contiguous positions in metres, in ``frame``.
        radial_velocity_mps: ``(N,) float32`` range rate as measured (m/s, positive receding;
            not compensated for the ego's motion).
        rcs_dbsm: ``(N,) float32`` radar cross-section, dBsm.
        timestamp_ns: the sweep time (``int64`` ns); a radar reports its returns at one time.
        frame: name of the frame ``xyz`` is in (``"radar"``, ``"ego"``, ``"world"``).
        extra: further per-point columns (a nuScenes file's ``dyn_prop``, ``vx_comp``, ...),
            each with N rows.

    Columns are converted to their dtype once; a wrong shape raises ``ValueError`` naming it.
    """

    xyz: np.ndarray
    radial_velocity_mps: np.ndarray
    rcs_dbsm: np.ndarray
    timestamp_ns: int = 0
    frame: str = "radar"
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timestamp_ns = int(self.timestamp_ns)
        coerce_columns("RadarSweep", self, _RADAR_COLUMNS)

    @classmethod
    def unchecked(cls, xyz: np.ndarray, radial_velocity_mps: np.ndarray, rcs_dbsm: np.ndarray, timestamp_ns: int,
                  frame: str, extra: dict[str, np.ndarray]) -> "RadarSweep":
        """A sweep of columns that already are what ``__post_init__`` makes them (C-contiguous,
        of their dtypes, N rows each; ``timestamp_ns`` an int): a reader's or kernel's own
        outputs, taken without conversion or checks."""
        sweep = object.__new__(cls)
        sweep.xyz, sweep.radial_velocity_mps, sweep.rcs_dbsm = xyz, radial_velocity_mps, rcs_dbsm
        sweep.timestamp_ns, sweep.frame, sweep.extra = timestamp_ns, frame, extra
        return sweep

    def __len__(self) -> int:
        return len(self.xyz)


# ---------------------------------------------------------------- Doppler compensation


@jit
def _compensate_kernel(xyz, radial, v, out):
    """out[i] = radial[i] + v · xyz[i] / |xyz[i]| (NaN at range 0: no line of sight)."""
    for i in range(xyz.shape[0]):
        x, y, z = float(xyz[i, 0]), float(xyz[i, 1]), float(xyz[i, 2])
        r = math.sqrt(x * x + y * y + z * z)
        out[i] = radial[i] + (x * v[0] + y * v[1] + z * v[2]) / r if r > 0.0 else np.nan


def sensor_velocity(world_from_ego: PoseTrack, ego_from_sensor: SE3, times_ns: TimesNs | int,
                    half_window_ns: int = HALF_WINDOW_NS) -> Float64Array:
    """``(M, 3) float64`` world-frame velocity (m/s) of the sensor origin at ``times_ns``.

    The central difference of ``(world_from_ego(t) @ ego_from_sensor).translation`` over
    ``t ± half_window_ns`` (the track continued linearly past its ends); the times themselves
    must lie in the track (:class:`engine.pose_track.OutOfRangeError` otherwise).
    """
    h = int(half_window_ns)
    if h <= 0:
        raise ValueError(f"half_window_ns must be positive, got {half_window_ns}")
    if ego_from_sensor.shape != ():
        raise ValueError("ego_from_sensor must be a single SE3")
    t = world_from_ego.check_times(times_ns, "none")
    ends = world_from_ego.interpolate(np.concatenate([t - h, t + h]), "linear") @ ego_from_sensor
    origin = ends.translation
    return (origin[len(t):] - origin[:len(t)]) / (2 * h * 1e-9)


def compensate_radial_velocity(xyz: np.ndarray, radial_velocity_mps: np.ndarray,
                               sensor_velocity_mps: np.ndarray) -> Float32Array:
    """``(N,) float32`` ego-motion-compensated radial velocity ``v_r + v_s · p / |p|`` (m/s).

    Args:
        xyz: ``(N, 3)`` returns in the sensor frame (m).
        radial_velocity_mps: ``(N,)`` measured range rates (m/s, positive receding).
        sensor_velocity_mps: ``(3,)`` the sensor origin's velocity relative to the world,
            expressed in the sensor frame (m/s).
    A return at range 0 has no line of sight: NaN.
    """
    p = as_points(xyz)
    vr = np.ascontiguousarray(radial_velocity_mps, dtype=np.float32)
    v = np.ascontiguousarray(sensor_velocity_mps, dtype=np.float64)
    if vr.shape != (len(p),):
        raise ValueError(f"radial_velocity_mps must have shape ({len(p)},), got {vr.shape}")
    if v.shape != (3,) or not np.all(np.isfinite(v)):
        raise ValueError(f"sensor_velocity_mps must be 3 finite numbers, got {v!r}")
    out = np.empty(len(p), np.float32)
    _compensate_kernel(p, vr, v, out)
    return out


def radar_to_world(sweep: RadarSweep, world_from_ego: PoseTrack, ego_from_sensor: SE3,
                   half_window_ns: int = HALF_WINDOW_NS) -> tuple[Points3F64, Float32Array]:
    """A sensor-frame sweep in the world frame at its timestamp: ``(xyz (N, 3) float64,
    compensated radial velocity (N,) float32)`` (:func:`compensate_radial_velocity` with the
    :func:`sensor_velocity` at ``sweep.timestamp_ns`` rotated into the sensor frame)."""
    world_from_sensor = world_from_ego.at(sweep.timestamp_ns) @ ego_from_sensor
    v_world = sensor_velocity(world_from_ego, ego_from_sensor, sweep.timestamp_ns, half_window_ns)[0]
    v_sensor = quat.rotate(quat.conjugate(world_from_sensor.rotation), v_world[None])[0]
    return (world_from_sensor.apply(sweep.xyz),
            compensate_radial_velocity(sweep.xyz, sweep.radial_velocity_mps, v_sensor))


# ---------------------------------------------------------------- multi-sweep accumulation


@jit
def _multisweep_kernel(xyz, counts, lag_ns, q, t, eq, et, rq, rt, req, ret, min_distance, out, rows, sweep, lag):
    """Sweep k's points (``counts[k]`` rows of ``xyz`` each, in order) through ``(rq, rt) ∘
    (req, ret)`` inverted ∘ ``(q, t)[k]`` ∘ ``(eq, et)[k]`` (one extrinsic row: all sweeps),
    skipping those with |x| and |y| both below ``min_distance`` in the sensor frame; the kept
    ones go to ``out`` (float32) with their input row, sweep and time lag ``lag_ns[k]`` in
    seconds. Returns how many were kept."""
    # the reference sensor's pose in the world: its inverse is (rw, -rx, -ry, -rz) after -o
    rw, rx, ry, rz = q_mul(rq[0], rq[1], rq[2], rq[3], req[0], req[1], req[2], req[3])
    ox, oy, oz = q_rotate(rq[0], rq[1], rq[2], rq[3], ret[0], ret[1], ret[2])
    ox, oy, oz = ox + rt[0], oy + rt[1], oz + rt[2]
    i = m = 0
    for k in range(counts.shape[0]):
        e = 0 if eq.shape[0] == 1 else k
        sw, sx, sy, sz = q_mul(q[k, 0], q[k, 1], q[k, 2], q[k, 3], eq[e, 0], eq[e, 1], eq[e, 2], eq[e, 3])
        px, py, pz = q_rotate(q[k, 0], q[k, 1], q[k, 2], q[k, 3], et[e, 0], et[e, 1], et[e, 2])
        cw, cx, cy, cz = q_mul(rw, -rx, -ry, -rz, sw, sx, sy, sz)
        tx, ty, tz = q_rotate(rw, -rx, -ry, -rz, px + t[k, 0] - ox, py + t[k, 1] - oy, pz + t[k, 2] - oz)
        for _ in range(counts[k]):
            x, y, z = float(xyz[i, 0]), float(xyz[i, 1]), float(xyz[i, 2])
            if not (abs(x) < min_distance and abs(y) < min_distance):
                ax, ay, az = q_rotate(cw, cx, cy, cz, x, y, z)
                out[m, 0], out[m, 1], out[m, 2] = ax + tx, ay + ty, az + tz
                rows[m], sweep[m], lag[m] = i, k, lag_ns[k] * 1e-9
                m += 1
            i += 1
    return m


def _gather(arrays: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the C-contiguous ``arrays`` stacked. Arrays of one dtype and row
    shape go as raw bytes, which skips NumPy's field-by-field handling of structured ones
    (a nuScenes file's records: a few µs a call)."""
    a0 = arrays[0]
    if any(a.dtype != a0.dtype or a.shape[1:] != a0.shape[1:] for a in arrays):
        return np.concatenate(arrays).take(rows, axis=0)
    width = a0.dtype.itemsize * math.prod(a0.shape[1:])
    joined = b"".join(cast(list[bytes], arrays))  # ndarrays are buffers (``.data`` would cost µs)
    raw = np.frombuffer(joined, np.uint8).reshape(-1, width).take(rows, axis=0)
    return np.frombuffer(raw, a0.dtype).reshape(-1, *a0.shape[1:])


def radar_multisweep(
    sweeps: Sequence[RadarSweep],
    world_from_ego: SE3,
    ego_from_sensor: SE3,
    ref_world_from_ego: SE3,
    ref_ego_from_sensor: SE3,
    ref_time_ns: int,
    nsweeps: int = 5,
    min_distance_m: float = 1.0,
) -> RadarSweep:
    """nuScenes' ``RadarPointCloud.from_file_multisweep`` on sweeps already read.

    Args:
        sweeps: sensor-frame sweeps, the sample's own first and then each earlier one (the
            devkit's ``prev`` chain); the first ``nsweeps`` are used.
        world_from_ego: ``(K,)`` each sweep's ego pose (its ``ego_pose`` record).
        ego_from_sensor: ``(K,)`` or one: each sweep's extrinsic (``calibrated_sensor``).
        ref_world_from_ego, ref_ego_from_sensor, ref_time_ns: the reference sample_data's
            ego pose, extrinsic and timestamp (the devkit's ``ref_chan``).
        nsweeps: sweeps to use at most. min_distance_m: the devkit's ``remove_close`` radius.

    Returns:
        The stacked sweep in the reference sensor frame (``frame="reference"``, ``timestamp_ns
        = ref_time_ns``), rows in the devkit's order; every other column as read (the extra
        columns all sweeps have), plus ``extra["sweep_index"]`` (``int32``, position in
        ``sweeps``) and ``extra["time_lag_s"]`` (``float64``, reference time minus the sweep's:
        the devkit's ``times``).
    """
    if nsweeps < 1 or not sweeps:
        raise ValueError(f"need at least one sweep and nsweeps >= 1, got {len(sweeps)} sweeps, nsweeps={nsweeps}")
    if not (math.isfinite(min_distance_m) and min_distance_m >= 0):
        raise ValueError(f"min_distance_m must be finite and >= 0, got {min_distance_m}")
    used = list(sweeps[:nsweeps])
    k = len(used)
    q, t = world_from_ego.rotation.reshape(-1, 4), world_from_ego.translation.reshape(-1, 3)
    eq, et = ego_from_sensor.rotation.reshape(-1, 4), ego_from_sensor.translation.reshape(-1, 3)
    if len(q) < k or len(eq) not in (1, len(q)):
        raise ValueError(f"{k} sweeps need as many ego poses and one or as many extrinsics, got {len(q)} and {len(eq)}")
    for name, pose in (("ref_world_from_ego", ref_world_from_ego), ("ref_ego_from_sensor", ref_ego_from_sensor)):
        if pose.shape != ():
            raise ValueError(f"{name} must be a single SE3")
    counts = np.array([len(s.xyz) for s in used], np.int64)
    lag_ns = np.array([int(ref_time_ns) - s.timestamp_ns for s in used], np.int64)
    xyz = np.concatenate([s.xyz for s in used]) if k > 1 else used[0].xyz
    n = len(xyz)
    out, rows, sweep, lag = np.empty((n, 3), np.float32), np.empty(n, np.int64), np.empty(n, np.int32), np.empty(n)
    m = _multisweep_kernel(xyz, counts, lag_ns, np.ascontiguousarray(q[:k]), np.ascontiguousarray(t[:k]),
                           np.ascontiguousarray(eq[:k]), np.ascontiguousarray(et[:k]), ref_world_from_ego.rotation,
                           ref_world_from_ego.translation, ref_ego_from_sensor.rotation,
                           ref_ego_from_sensor.translation, float(min_distance_m), out, rows, sweep, lag)
    rows = rows[:m]
    extra = {n: _gather([s.extra[n] for s in used], rows) for n in used[0].extra if all(n in s.extra for s in used)}
    extra.update(sweep_index=sweep[:m], time_lag_s=lag[:m])
    return RadarSweep.unchecked(out[:m], _gather([s.radial_velocity_mps for s in used], rows),
                                _gather([s.rcs_dbsm for s in used], rows), int(ref_time_ns), "reference", extra)


def _warmup() -> None:
    xyz = np.array([[1.0, 2.0, 0.0]], np.float32)
    compensate_radial_velocity(xyz, np.zeros(1, np.float32), np.zeros(3))
    compensate_radial_velocity(xyz.astype(np.float64), np.zeros(1, np.float32), np.zeros(3))
    s = RadarSweep(xyz, np.zeros(1), np.zeros(1))
    radar_multisweep([s, s], SE3.identity(2), SE3.identity(), SE3.identity(), SE3.identity(), 0)
