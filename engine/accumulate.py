"""Accumulation of K sweeps in one frame, ego-vehicle point removal, ground segmentation.

:func:`accumulate` moves every point of K sensor-frame sweeps into the world frame (or the
ego/sensor frame at a reference time) through :func:`engine.motion.motion_compensate`,
either at its own firing time (deskewed) or at its sweep's timestamp (one pose per sweep,
as nuScenes' ``LidarPointCloud.from_file_multisweep`` does). Each output point carries
``extra["sweep_index"]`` (``int32``, position in the input list) and ``extra["time_lag_s"]``
(``float32`` seconds, reference time minus the pose time used for the point, nuScenes'
``times`` channel).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine._jit import jit
from engine.arrays import as_points
from engine.motion import OutFrame, motion_compensate
from engine.pose_track import Extrapolation, PoseTrack
from engine.quaternion import q_rotate
from engine.se3 import SE3
from engine.sweep import Sweep
from engine.voxel import voxelize


@jit
def _outside_box_kernel(xyz, q, t, lo, hi, out):
    for i in range(xyz.shape[0]):
        x, y, z = q_rotate(q[0], q[1], q[2], q[3], float(xyz[i, 0]), float(xyz[i, 1]), float(xyz[i, 2]))
        x += t[0]
        y += t[1]
        z += t[2]
        inside = lo[0] <= x <= hi[0] and lo[1] <= y <= hi[1] and lo[2] <= z <= hi[2]
        out[i] = not inside


@jit
def _grid_ground_kernel(z, cell, m, height, out):
    low = np.full(m, np.inf)
    for i in range(z.shape[0]):
        if z[i] < low[cell[i]]:
            low[cell[i]] = z[i]
    for i in range(z.shape[0]):
        out[i] = z[i] - low[cell[i]] <= height


def _check_box(ego_box) -> tuple[np.ndarray, np.ndarray]:
    try:
        lo, hi = (np.asarray(c, dtype=np.float64) for c in ego_box)
    except (TypeError, ValueError):
        raise ValueError("ego_box must be a pair (lower (3,), upper (3,)) of corners in the ego frame") from None
    if lo.shape != (3,) or hi.shape != (3,) or np.any(np.isnan(lo)) or np.any(np.isnan(hi)):
        raise ValueError(f"ego_box corners must be (3,) without NaN, got {lo.shape} and {hi.shape}")
    if np.any(lo > hi):
        raise ValueError(f"ego_box lower corner {lo.tolist()} exceeds upper corner {hi.tolist()}")
    return lo, hi


def outside_ego_box(xyz: np.ndarray, ego_from_sensor: SE3, ego_box) -> np.ndarray:
    """``(N,) bool``: True for sensor-frame points ``(N, 3)`` outside the ego vehicle's box.

    ``ego_box`` is ``(lower, upper)``, two ``(3,)`` corners of an axis-aligned box in the
    ego frame (metres; ``±inf`` for an unbounded axis); the box is inclusive.
    """
    lo, hi = _check_box(ego_box)
    p = as_points(xyz)
    if ego_from_sensor.shape != ():
        raise ValueError("ego_from_sensor must be a single SE3")
    out = np.empty(len(p), dtype=np.bool_)
    _outside_box_kernel(p, ego_from_sensor.rotation, ego_from_sensor.translation, lo, hi, out)
    return out


def accumulate(
    sweeps: Sequence[Sweep],
    world_from_ego: PoseTrack,
    ego_from_sensor: SE3 | Sequence[SE3],
    ref_time_ns: int | None = None,
    out_frame: OutFrame = "world",
    per_point_times: bool = True,
    ego_box=None,
    extrapolate: Extrapolation = "none",
) -> Sweep:
    """Stack K sensor-frame sweeps in one frame.

    Args:
        sweeps: sweeps in their sensor frame; ``timestamp_ns`` absolute, per-point
            ``time_offset_ns`` used when ``per_point_times`` (a sweep without them uses
            its timestamp for every point).
        world_from_ego: ego poses covering every time used.
        ego_from_sensor: one extrinsic for all sweeps or one per sweep (several sensors).
        ref_time_ns: the reference time for ``time_lag_s``, ``time_offset_ns`` and the
            ego/sensor output frames; defaults to the latest sweep timestamp.
        out_frame: ``"world"``, or ``"ego"``/``"sensor"`` at ``ref_time_ns`` (``"sensor"``
            needs a single extrinsic).
        per_point_times: deskew each point at its own time (True) or use one pose per
            sweep at its ``timestamp_ns`` (False, nuScenes' multisweep).
        ego_box: ``(lower, upper)`` ego-frame corners; points inside are dropped (see
            :func:`outside_ego_box`), tested in the ego frame at each sweep's own time.

    Returns:
        A ``Sweep`` in ``out_frame`` with ``timestamp_ns = ref_time_ns``, columns kept when
        every sweep has them, ``time_offset_ns`` re-based to the reference time and the
        extra columns ``sweep_index`` and ``time_lag_s``.
    """
    if not sweeps:
        raise ValueError("accumulate needs at least one sweep")
    if isinstance(ego_from_sensor, SE3) and ego_from_sensor.shape == ():
        extrinsics = [ego_from_sensor] * len(sweeps)
    else:
        extrinsics = list(ego_from_sensor) if not isinstance(ego_from_sensor, SE3) else [
            ego_from_sensor[i] for i in range(len(ego_from_sensor))
        ]
        if len(extrinsics) != len(sweeps):
            raise ValueError(f"{len(sweeps)} sweeps but {len(extrinsics)} extrinsics")
        if out_frame == "sensor":
            raise ValueError("out_frame='sensor' needs a single ego_from_sensor")
    if ego_box is not None:
        _check_box(ego_box)
    t_ref = max(s.timestamp_ns for s in sweeps) if ref_time_ns is None else int(ref_time_ns)
    parts = [s.with_xyz(s.xyz, frame=out_frame) for s in sweeps]  # shares the arrays
    counts = np.array([len(p) for p in parts])
    bounds = np.concatenate([[0], np.cumsum(counts)])
    times = np.empty(bounds[-1], dtype=np.int64)
    for k, part in enumerate(parts):
        seg = times[bounds[k] : bounds[k + 1]]
        seg[:] = part.timestamp_ns
        if per_point_times and part.time_offset_ns is not None:
            seg += part.time_offset_ns
    stacked = Sweep.concatenate(parts, timestamp_ns=t_ref)  # every common column, copied once
    single = all(ext is extrinsics[0] for ext in extrinsics)
    if single:
        xyz = motion_compensate(stacked.xyz, times, world_from_ego, extrinsics[0], t_ref, out_frame, extrapolate)
    else:
        xyz = np.empty((len(times), 3), dtype=np.float64 if out_frame == "world" else np.float32)
        for k, ext in enumerate(extrinsics):
            a, b = bounds[k], bounds[k + 1]
            xyz[a:b] = motion_compensate(stacked.xyz[a:b], times[a:b], world_from_ego, ext, t_ref, out_frame,
                                         extrapolate)
    keep = None
    if ego_box is not None:
        keep = np.empty(len(times), dtype=np.bool_)
        for k, ext in enumerate(extrinsics):
            a, b = bounds[k], bounds[k + 1]
            keep[a:b] = outside_ego_box(stacked.xyz[a:b], ext, ego_box)
    stacked.xyz = np.ascontiguousarray(xyz, dtype=np.float32)
    if stacked.time_offset_ns is not None:
        stacked.time_offset_ns = times - np.int64(t_ref)
    stacked.extra["sweep_index"] = np.repeat(np.arange(len(parts), dtype=np.int32), counts)
    stacked.extra["time_lag_s"] = ((np.int64(t_ref) - times) * 1e-9).astype(np.float32)
    if keep is not None and not keep.all():
        # ndarray.take is several times faster than fancy indexing for (N, 3) rows
        rows = np.flatnonzero(keep)
        for name, column in stacked.columns().items():
            if name in stacked.extra:
                stacked.extra[name] = column.take(rows, axis=0)
            else:
                setattr(stacked, name, column.take(rows, axis=0))
    return stacked


def ground_mask_grid(xyz: np.ndarray, cell_m: float = 1.0, height_m: float = 0.2) -> np.ndarray:
    """``(N,) bool`` ground points: within ``height_m`` above the lowest point of their cell.

    ``xyz`` ``(N, 3)`` in a z-up frame (world or ego); cells are ``cell_m`` squares on the
    grid of :func:`engine.voxel.voxelize` (origin 0, one layer in z).
    """
    if not (np.isfinite(cell_m) and cell_m > 0) or not (np.isfinite(height_m) and height_m >= 0):
        raise ValueError(f"need cell_m > 0 and height_m >= 0, got {cell_m} and {height_m}")
    vox = voxelize(xyz, np.array([cell_m, cell_m, np.inf]))
    z = np.ascontiguousarray(np.asarray(xyz, dtype=np.float64).reshape(-1, 3)[:, 2])
    out = np.empty(len(z), dtype=np.bool_)
    _grid_ground_kernel(z, vox.inverse, len(vox), float(height_m), out)
    return out


def ground_mask_ransac(
    xyz: np.ndarray,
    distance_m: float = 0.1,
    iterations: int = 1000,
    max_tilt_deg: float = 15.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Ground as the dominant plane (open3d RANSAC): ``(mask (N,) bool, plane (4,) a b c d)``.

    The plane ``a x + b y + c z + d = 0`` has a unit normal pointing up (``c > 0``). If the
    dominant plane tilts more than ``max_tilt_deg`` from horizontal (a wall), or there are
    fewer than 3 points, no point is ground and the plane is all NaN. Deterministic for a
    given ``seed``.
    """
    import open3d as o3d

    p = as_points(xyz, float64=True, finite=True)
    if not distance_m > 0 or iterations < 1:
        raise ValueError(f"need distance_m > 0 and iterations >= 1, got {distance_m}, {iterations}")
    mask = np.zeros(len(p), dtype=bool)
    if len(p) < 3:
        return mask, np.full(4, np.nan)
    o3d.utility.random.seed(seed)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    plane, inliers = cloud.segment_plane(distance_m, 3, iterations)
    plane = np.asarray(plane, dtype=np.float64)
    plane /= np.linalg.norm(plane[:3])
    if plane[2] < 0:
        plane = -plane
    if plane[2] < np.cos(np.radians(max_tilt_deg)):
        return mask, np.full(4, np.nan)
    mask[np.asarray(inliers, dtype=np.int64)] = True
    return mask, plane


def _warmup() -> None:
    xyz = np.zeros((2, 3), np.float32)
    outside_ego_box(xyz, SE3.identity(), (np.zeros(3), np.ones(3)))
    outside_ego_box(xyz.astype(np.float64), SE3.identity(), (np.zeros(3), np.ones(3)))
    ground_mask_grid(xyz)
