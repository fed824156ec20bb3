"""Plain NumPy references the tests and the benchmarks' NumPy peers share.

Each function is the obvious, vectorised-but-unclever way to compute what an engine kernel
computes, written from the convention it implements (or from the peer library's source it
mirrors, named in its docstring) and not from engine code. Rotation interpolation uses
scipy's ``Slerp``; :func:`opencv_project` is OpenCV's own projection, the lenses' peer.
Conventions are the engine's: quaternions ``(w, x, y, z)`` Hamilton, ``dst_from_src``
transforms, camera frame x right / y down / z forward, pixel (0, 0) the centre of the
top-left pixel, box sizes ``(length along x, width along y, height along z)``.
"""

from __future__ import annotations

from functools import reduce

import cv2
import numpy as np
from scipy.spatial.transform import Rotation, Slerp

# ---------------------------------------------------------------- rotations and transforms


def quat_to_matrix(q) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` of quaternions ``(..., 4)`` (w, x, y, z), normalised
    first as pyquaternion's ``Quaternion(q).rotation_matrix`` does."""
    q = np.asarray(q, np.float64)
    w, x, y, z = np.moveaxis(q / np.linalg.norm(q, axis=-1, keepdims=True), -1, 0)
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def transform_matrix(translation, rotation, inverse: bool = False) -> np.ndarray:
    """Homogeneous ``(..., 4, 4)`` matrices of ``translation (..., 3)`` m and ``rotation
    (..., 4)`` wxyz, or of their inverses: ``nuscenes.utils.geometry_utils.transform_matrix``."""
    r = quat_to_matrix(rotation)
    t = np.asarray(translation, np.float64)
    m = np.zeros(r.shape[:-2] + (4, 4))
    m[..., 3, 3] = 1.0
    if inverse:
        r = np.swapaxes(r, -1, -2)
        t = (r @ -t[..., None])[..., 0]
    m[..., :3, :3] = r
    m[..., :3, 3] = t
    return m


def interpolate_poses(timestamps_ns, rotations, translations, times_ns) -> tuple[np.ndarray, np.ndarray]:
    """Poses of a track (``(K,) int64`` ns, ``(K, 4)`` wxyz, ``(K, 3)`` m) at ``times_ns``
    ``(T,) int64`` within it: scipy ``Slerp`` of the rotations and ``np.interp`` of each
    translation axis, in float64 seconds-scale offsets from the first sample. Returns
    ``(T, 4)`` wxyz and ``(T, 3)``."""
    ts = np.asarray(timestamps_ns, np.int64)
    rel = (ts - ts[0]).astype(np.float64)
    at = (np.atleast_1d(np.asarray(times_ns, np.int64)) - ts[0]).astype(np.float64)
    q = Slerp(rel, Rotation.from_quat(rotations, scalar_first=True))(at).as_quat(scalar_first=True)
    t = np.stack([np.interp(at, rel, np.asarray(translations)[:, c]) for c in range(3)], axis=1)
    return q, t


# ---------------------------------------------------------------- nuScenes multisweep


def nuscenes_multisweep(sample_datas, ref_index: int, nsweeps: int, min_distance: float):
    """``LidarPointCloud.from_file_multisweep``'s transform chain on in-memory sample_data.

    ``sample_datas``: list of dicts with ``points (4, N) float32`` (x, y, z, intensity; sensor
    frame), ``timestamp`` (µs), ``ego_pose`` and ``calibrated_sensor`` records (``translation``,
    ``rotation`` wxyz); the previous sweep of entry ``i`` is entry ``i - 1``. Walks back from
    ``ref_index``, newest first. Returns ``(points (4, M) float32`` in the reference sensor
    frame, ``times (1, M)`` seconds before the reference sweep).
    """
    points = np.zeros((4, 0), dtype=np.float32)
    all_times = np.zeros((1, 0))
    ref = sample_datas[ref_index]
    ref_time = 1e-6 * ref["timestamp"]
    ref_from_car = transform_matrix(ref["calibrated_sensor"]["translation"], ref["calibrated_sensor"]["rotation"], True)
    car_from_global = transform_matrix(ref["ego_pose"]["translation"], ref["ego_pose"]["rotation"], True)
    current = ref_index
    for _ in range(nsweeps):
        sd = sample_datas[current]
        pts = sd["points"].copy()
        # remove_close
        x_filt = np.abs(pts[0, :]) < min_distance
        y_filt = np.abs(pts[1, :]) < min_distance
        pts = pts[:, np.logical_not(np.logical_and(x_filt, y_filt))]
        global_from_car = transform_matrix(sd["ego_pose"]["translation"], sd["ego_pose"]["rotation"], False)
        car_from_current = transform_matrix(sd["calibrated_sensor"]["translation"], sd["calibrated_sensor"]["rotation"],
                                            False)
        trans_matrix = reduce(np.dot, [ref_from_car, car_from_global, global_from_car, car_from_current])
        # transform (float32 storage, float64 product)
        pts[:3, :] = trans_matrix.dot(np.vstack((pts[:3, :], np.ones(pts.shape[1]))))[:3, :]
        time_lag = ref_time - 1e-6 * sd["timestamp"]
        all_times = np.hstack((all_times, time_lag * np.ones((1, pts.shape[1]))))
        points = np.hstack((points, pts))
        if current == 0:
            break
        current -= 1
    return points, all_times


# ---------------------------------------------------------------- cameras


def brown_conrady(x, y, intrinsics) -> np.ndarray:
    """Pixels ``(..., 2)`` of normalised image coordinates ``x = X/Z``, ``y = Y/Z`` (camera
    frame) through OpenCV's Brown-Conrady lens (``k1, k2, p1, p2, k3``; fewer coefficients
    are zeros, a pinhole has none) and ``K`` with skew: ``u = fx·xd + skew·yd + cx``,
    ``v = fy·yd + cy``. The fold-back guard is the caller's."""
    d = tuple(intrinsics.distortion)
    if len(d) > 5:
        raise ValueError(f"the reference lens has k1, k2, p1, p2, k3; got {len(d)} coefficients")
    k1, k2, p1, p2, k3 = d + (0.0,) * (5 - len(d))
    r2 = x * x + y * y
    rad = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    xd = x * rad + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * rad + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    k = intrinsics
    return np.stack([k.fx * xd + k.skew * yd + k.cx, k.fy * yd + k.cy], axis=-1)


def opencv_project(points_cam, intrinsics) -> np.ndarray:
    """OpenCV's pixels ``(N, 2)`` of camera-frame points ``(N, 3)`` (identity extrinsic):
    ``cv2.projectPoints`` for pinhole / Brown-Conrady (8 coefficients, missing ones zero),
    ``cv2.fisheye.projectPoints`` with ``alpha = skew / fx`` for Kannala-Brandt."""
    obj = np.asarray(points_cam, np.float64).reshape(-1, 1, 3)
    zero = np.zeros(3)
    k = intrinsics
    if k.model == "kannala_brandt":
        d = np.zeros(4)
        d[: len(k.distortion)] = k.distortion
        uv, _ = cv2.fisheye.projectPoints(obj, zero, zero, k.K, d, alpha=k.skew / k.fx)
    else:
        d = np.zeros(8)
        d[: len(k.distortion)] = k.distortion
        uv, _ = cv2.projectPoints(obj, zero, zero, k.K, d)
    return uv.reshape(-1, 2)


def in_image(uv, width: int, height: int) -> np.ndarray:
    """``(...,) bool``: pixel ``(..., 2)`` inside ``[-0.5, width - 0.5) × [-0.5, height - 0.5)``."""
    u, v = uv[..., 0], uv[..., 1]
    return (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)


def zbuffer(uv, depth, inside, width: int, height: int, radius: int, tol_m: float, tol_rel: float):
    """Splatted depth image and nearest-surface visibility of one camera.

    ``uv (N, 2)`` pixels, ``depth (N,)`` m (compared in float32), ``inside (N,) bool`` the
    points in the image. Each inside point writes its depth into the pixels of the disc
    ``du² + dv² <= radius²`` around its rounded pixel (``np.minimum.at``); it is visible when
    ``depth - image[its pixel] <= tol_m + tol_rel · depth``. Returns ``(depth image (height,
    width) float32`` (inf where empty), ``visible (N,) bool`` (False outside the image)).
    """
    img = np.full(height * width, np.inf, np.float32)
    pu = np.round(uv[inside, 0]).astype(np.int64)
    pv = np.round(uv[inside, 1]).astype(np.int64)
    d = np.asarray(depth, np.float32)[inside]
    for dv in range(-radius, radius + 1):
        for du in range(-radius, radius + 1):
            if du * du + dv * dv > radius * radius:
                continue
            x, y = pu + du, pv + dv
            keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            np.minimum.at(img, y[keep] * width + x[keep], d[keep])
    visible = np.zeros(len(inside), bool)
    visible[inside] = d - img[pv * width + pu] <= tol_m + tol_rel * d
    return img.reshape(height, width), visible


# ---------------------------------------------------------------- boxes


def same_corner_set(a, b, atol: float) -> None:
    """Assert that point sets ``a (K, 3)`` and ``b (M, 3)`` (box corners in any order) are
    the same within ``atol``: every point of each has one of the other that close."""
    d = np.linalg.norm(np.asarray(a)[:, None, :] - np.asarray(b)[None, :, :], axis=-1)
    assert d.min(axis=1).max() < atol and d.min(axis=0).max() < atol, (d.min(axis=1), d.min(axis=0))


def points_in_box(xyz, center, size, rotation) -> np.ndarray:
    """``(N,) bool``: points ``(N, 3)`` inside one box (inclusive faces), in float64."""
    local = (np.asarray(xyz, np.float64) - center) @ quat_to_matrix(rotation)
    return np.all(np.abs(local) <= 0.5 * np.asarray(size), axis=1)


def points_in_boxes(xyz, centers, sizes, rotations, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``(labels (N,) int32, counts (B,) int64)`` of points ``(N, 3)`` among fixed boxes
    ``(B, 3)``, ``(B, 3)``, ``(B, 4)`` by the rules of :func:`boxes_at_times` (no moving box)."""
    none = np.zeros(0, np.int64)
    labels = boxes_at_times(xyz, np.zeros(len(xyz), np.int64), 1, centers, sizes, rotations, none, none,
                            np.zeros((0, 0, 3)), np.zeros((0, 0, 3)), np.zeros((0, 0, 4)), np.zeros((0, 0), bool),
                            margin)
    return labels, np.bincount(labels[labels >= 0], minlength=len(centers))


def boxes_at_times(xyz, time_offset_ns, step_ns, centers, sizes, rotations, moving, steps,
                   moving_centers, moving_sizes, moving_rotations, moving_valid, margin) -> np.ndarray:
    """``(N,) int32`` box of each point, every point against every box as it is at the point's
    own time step (no grid), as :func:`engine.moving_boxes.points_in_boxes_at_times`
    documents it: box b fixed unless ``b = moving[m]`` (then its values at the row of
    ``steps`` equal to the point's ``time_offset_ns // step_ns``, where valid), inflated by
    ``margin``, nearest centre wins, exact ties the lower index, non-finite points nowhere."""
    xyz = np.asarray(xyz, np.float64)
    n, t_n = len(xyz), len(steps)
    key = np.asarray(time_offset_ns, np.int64) // step_ns
    row = np.minimum(np.searchsorted(steps, key), max(t_n - 1, 0))
    has_step = (row < t_n) & (np.asarray(steps)[row] == key) if t_n else np.zeros(n, bool)
    out = np.full(n, -1, np.int32)
    best = np.full(n, np.inf)
    finite = np.all(np.isfinite(xyz), axis=1)
    for b in range(len(centers)):
        if b in list(moving):
            m = list(moving).index(b)
            live = finite & has_step
            live[live] = moving_valid[row[live], m]
            c = moving_centers[row[live], m]
            half = 0.5 * moving_sizes[row[live], m] + margin
            r = quat_to_matrix(moving_rotations[row[live], m])
        else:
            live = finite.copy()
            c = np.broadcast_to(centers[b], (live.sum(), 3))
            half = np.broadcast_to(0.5 * np.asarray(sizes[b]) + margin, (live.sum(), 3))
            r = np.broadcast_to(quat_to_matrix(rotations[b]), (live.sum(), 3, 3))
        idx = np.flatnonzero(live)
        d = xyz[idx] - c
        local = d[:, 0, None] * r[:, 0, :] + d[:, 1, None] * r[:, 1, :] + d[:, 2, None] * r[:, 2, :]  # Rᵀ d
        inside = np.all(np.abs(local) <= half, axis=1)
        d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
        take = inside & (d2 < best[idx])
        out[idx[take]] = b
        best[idx[take]] = d2[take]
    return out
