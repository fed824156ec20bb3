"""ICP refinement of per-sweep ego poses (open3d, point-to-plane, voxelised).

Each sweep (ego frame, deskewed to its ``timestamp_ns``) is placed in the world with its
given pose, then registered against a target: the map of the sweeps refined so far
(``target="map"``) or the latest accepted sweep (``target="previous"``). The first sweep
anchors the world frame and keeps its pose. Registration runs coarse to fine (voxel sizes
``2v, v, v`` with correspondence distances ``d, d/2, d/4``).

A correction is accepted only if the final fitness and inlier RMSE pass their limits, the
fitness did not drop against the uncorrected pose, and the correction stays within the
plausible translation/rotation limits. Otherwise the sweep keeps its original pose (and
stays out of the map) and its report says why. Nothing is silently made worse.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.spatial import cKDTree

from engine import quaternion as quat
from engine.pose_track import Extrapolation, PoseTrack
from engine.se3 import SE3
from engine.sweep import Sweep
from engine.voxel import voxel_downsample


@dataclass(frozen=True)
class IcpReport:
    """Outcome of refining one sweep's pose.

    Attributes:
        index: the sweep's position in the input.
        accepted: whether the corrected pose replaced the given one.
        reason: ``""`` when accepted; ``"anchor"`` for the first sweep; otherwise why not.
        fitness: fraction of the sweep's (voxelised) points with a target point within the
            final correspondence distance, after refinement; ``initial_fitness`` before.
        rmse_m: RMS point-to-plane distance of those pairs after; ``initial_rmse_m`` before.
        correction_m / correction_deg: size of the correction ICP proposed.
    """

    index: int
    accepted: bool
    reason: str
    fitness: float = float("nan")
    rmse_m: float = float("nan")
    initial_fitness: float = float("nan")
    initial_rmse_m: float = float("nan")
    correction_m: float = 0.0
    correction_deg: float = 0.0


def _cloud(points: np.ndarray, normal_radius_m: float | None = None):
    import open3d as o3d

    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, dtype=np.float64)))
    if normal_radius_m is not None:
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=normal_radius_m, max_nn=50))
    return cloud


def _score(src: np.ndarray, tree, tgt: np.ndarray, normals: np.ndarray, distance: float) -> tuple[float, float]:
    """(fitness, point-to-plane RMSE) of ``src (N, 3)`` against the target's nearest points.

    Fitness is the fraction of source points with a target point within ``distance``; the
    RMSE is over those pairs, of the distance along the target normal (sparse scans never
    put a target point under a source point, but both lie on the same surfaces).
    """
    d, j = tree.query(src, distance_upper_bound=distance)
    hit = np.isfinite(d)
    if not hit.any():
        return 0.0, float("inf")
    r = np.einsum("ij,ij->i", src[hit] - tgt[j[hit]], normals[j[hit]])
    return float(hit.mean()), float(np.sqrt(np.mean(r * r)))


def refine_poses(
    sweeps: Sequence[Sweep],
    world_from_ego: PoseTrack,
    target: Literal["map", "previous"] = "map",
    voxel_m: float = 0.2,
    max_correspondence_m: float = 1.0,
    max_iterations: int = 50,
    normal_radius_m: float = 1.5,
    min_fitness: float = 0.3,
    max_rmse_m: float = 0.05,
    max_translation_m: float = 1.0,
    max_rotation_deg: float = 5.0,
    extrapolate: Extrapolation = "none",
) -> tuple[PoseTrack, list[IcpReport]]:
    """Correct the pose of each sweep by registering it against the ones before it.

    Args:
        sweeps: ego-frame sweeps in increasing ``timestamp_ns`` order, each deskewed to its
            own ``timestamp_ns`` (e.g. ``deskew(..., out_frame="ego")``).
        world_from_ego: the given (noisy) poses, interpolated at the sweep timestamps.
        target: ``"map"`` (sweep-to-map) or ``"previous"`` (sweep-to-sweep).
        voxel_m: finest voxel size for registration. max_correspondence_m: coarsest
            correspondence distance. max_iterations: per stage.
        normal_radius_m: neighbourhood for target normals; it must span several scan
            lines of a sparse LiDAR, or the normals of single rings are arbitrary and bias
            the solution (1.5 m suits 16-64 beam automotive sensors).
        min_fitness, max_rmse_m: acceptance limits on the final registration.
        max_translation_m, max_rotation_deg: the largest plausible correction.

    Returns:
        ``(track, reports)``: one pose per sweep at its ``timestamp_ns`` (corrected where
        accepted, given otherwise) and one :class:`IcpReport` per sweep.
    """
    import open3d as o3d

    if not sweeps:
        raise ValueError("refine_poses needs at least one sweep")
    if target not in ("map", "previous"):
        raise ValueError(f"target must be 'map' or 'previous', got {target!r}")
    if not (voxel_m > 0 and max_correspondence_m > 0 and normal_radius_m > 0 and max_iterations >= 1):
        raise ValueError(
            f"need voxel_m > 0, max_correspondence_m > 0, normal_radius_m > 0, max_iterations >= 1; "
            f"got {voxel_m}, {max_correspondence_m}, {normal_radius_m}, {max_iterations}"
        )
    ts = np.array([s.timestamp_ns for s in sweeps], dtype=np.int64)
    if np.any(np.diff(ts) <= 0):
        raise ValueError("sweeps must be in strictly increasing timestamp_ns order")
    frames = {s.frame for s in sweeps}
    if frames != {"ego"}:
        raise ValueError(f"sweeps must be in the ego frame (deskewed), got frames {sorted(frames)}")

    given = world_from_ego.interpolate(ts, extrapolate)
    rotation = given.rotation.copy()
    translation = given.translation.copy()
    reg = o3d.pipelines.registration
    estimation = reg.TransformationEstimationPointToPlane()
    stages = [(2.0 * voxel_m, max_correspondence_m), (voxel_m, max_correspondence_m / 2),
              (voxel_m, max_correspondence_m / 4)]
    final_distance = stages[-1][1]

    def world_points(k: int, voxel: float) -> np.ndarray:
        pts, _ = voxel_downsample(sweeps[k].xyz.astype(np.float64), voxel)
        return SE3(rotation[k], translation[k]).apply(pts)

    reports = [IcpReport(0, True, "anchor")]
    map_points = [world_points(0, voxel_m)]
    for k in range(1, len(sweeps)):
        ref = np.concatenate(map_points) if target == "map" else map_points[-1]
        correction = np.eye(4)
        targets = {}  # voxel size -> (target points, target cloud with normals)
        for voxel, distance in stages:
            if voxel not in targets:
                pts, _ = voxel_downsample(ref, voxel)
                targets[voxel] = (pts, _cloud(pts, normal_radius_m))
            tgt_pts, tgt = targets[voxel]
            src_pts = world_points(k, voxel)
            result = reg.registration_icp(
                _cloud(src_pts), tgt, distance, correction, estimation,
                reg.ICPConvergenceCriteria(max_iteration=max_iterations),
            )
            correction = np.asarray(result.transformation)
        # scores against the finest target, before and after the correction
        tree = cKDTree(tgt_pts)
        normals = np.asarray(tgt.normals)
        initial = _score(src_pts, tree, tgt_pts, normals, final_distance)
        moved = src_pts @ correction[:3, :3].T + correction[:3, 3]
        fitness, rmse = _score(moved, tree, tgt_pts, normals, final_distance)
        c = SE3.from_matrix(correction)
        move_m = float(np.linalg.norm(c.translation))
        move_deg = float(np.degrees(quat.angle_between(np.array([1.0, 0, 0, 0]), c.rotation)))
        reason = ""
        if fitness < min_fitness:
            reason = f"fitness {fitness:.3f} < {min_fitness}"
        elif rmse > max_rmse_m:
            reason = f"point-to-plane RMSE {rmse:.4f} m > {max_rmse_m} m"
        elif fitness < initial[0] - 0.01:
            reason = f"fitness dropped from {initial[0]:.3f} to {fitness:.3f}"
        elif rmse > initial[1] + 1e-3 and fitness <= initial[0] + 0.01:
            reason = f"point-to-plane RMSE rose from {initial[1]:.4f} m to {rmse:.4f} m"
        elif move_m > max_translation_m:
            reason = f"correction {move_m:.3f} m > {max_translation_m} m"
        elif move_deg > max_rotation_deg:
            reason = f"correction {move_deg:.3f} deg > {max_rotation_deg} deg"
        accepted = reason == ""
        if accepted:
            corrected = c @ SE3(rotation[k], translation[k])
            rotation[k] = corrected.rotation
            translation[k] = corrected.translation
            map_points.append(world_points(k, voxel_m))
        reports.append(IcpReport(k, accepted, reason, fitness, rmse, initial[0], initial[1], move_m, move_deg))
    return PoseTrack(ts, rotation, translation), reports
