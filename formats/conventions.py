"""Dataset conventions converted at the import/export boundary (the one reference).

Fathom boxes: centre of the box middle, size ``(l, w, h)`` along the box's own x (forward),
y (left), z (up), rotation wxyz box → frame; poses ``dst_from_src``; int64 ns timestamps.

nuScenes
  - size: ``size = [w, l, h]``
  - centre / frame: middle of the box, global (map) frame in ``sample_annotation``; sweeps in the
    LiDAR frame (x right, y forward, z up on the roof LiDAR)
  - rotation: ``rotation`` wxyz box → global
  - time: ``timestamp`` µs
  - Fathom side: :func:`lwh_from_nuscenes_wlh` / :func:`nuscenes_wlh_from_lwh`; ``ego_from_lidar``
    from ``calibrated_sensor``

KITTI object/tracking
  - size: ``h w l``
  - centre / frame: ``x y z`` = **bottom** centre in the rectified reference camera (x right, y
    down, z forward)
  - rotation: ``rotation_y`` about camera y, 0 = box forward along camera +x;
    ``alpha = rotation_y − atan2(x, z)``
  - time: none (tracking: 10 Hz frame index; raw: ``timestamps.txt``)
  - Fathom side: :func:`kitti_from_camera_boxes` / :func:`camera_boxes_from_kitti`

KITTI raw
  - size: —
  - centre / frame: velodyne ``.bin`` in the LiDAR frame; ``calib_velo_to_cam`` (R, T),
    ``calib_imu_to_velo``, ``R_rect_00``; oxts = world ← IMU
  - rotation: oxts roll/pitch/yaw (ENU)
  - time: ``timestamps.txt``
  - Fathom side: :func:`engine.pose_sources.from_kitti_oxts`

Argoverse 2
  - size: ``length_m width_m height_m``
  - centre / frame: middle, **ego frame at the annotation time** (``annotations.feather``); sweeps
    in the ego frame, placed with the pose at the sweep time as av2-api does (``offset_ns`` unused)
  - rotation: ``qw qx qy qz`` ego ← box; poses ``city_SE3_egovehicle``
  - time: ``timestamp_ns``
  - Fathom side: :mod:`formats.import_av2`

PandaSet
  - size: ``dimensions.x`` = **width**, ``dimensions.y`` = **length** (swapped)
  - centre / frame: ``position`` middle, world frame; points are **world-frame**
  - rotation: ``yaw`` about world z, 0 = box forward along world +y
  - time: seconds (float)
  - Fathom side: :func:`lwh_from_pandaset_dimensions`, yaw + π/2

Scale SFS
  - size: ``[dx dy dz]`` = l w h
  - centre / frame: middle, world frame
  - rotation: Euler ``Rx(roll)·Ry(pitch)·Rz(yaw)`` (:mod:`formats.sfs_cuboids`); ``PosePath`` rows
    ``x y z qx qy qz qw`` (**scalar last**)
  - time: integer **µs** relative to ``time_offset`` (the validator wants the first stamp ≤ 100 s)
  - Fathom side: :func:`sfs_pose_row`, :func:`pose_from_sfs_row`

Scale legacy LidarFrame
  - size: ``dimensions.x`` = **width**, ``.y`` = **length**, ``.z`` = height (as PandaSet)
  - centre / frame: cuboid ``position`` middle, world frame; frame ``points``, ``device_position``
    and image ``position`` are **world-frame**
  - rotation: cuboid ``yaw`` about world z, 0 = front along world +y (CCW); ``device_heading`` /
    image ``heading`` ``{w, x, y, z}`` objects
  - time: frame ``timestamp`` ns
  - Fathom side: :func:`lwh_from_scale_dimensions`, :func:`rotation_from_scale_yaw`,
    :func:`quaternion_from_legacy_heading`; :mod:`formats.import_scale_legacy`

Sources: nuScenes devkit ``Box``; KITTI object devkit readme; av2-api ``SE3``/``Cuboid``;
pandaset-devkit ``geometry.center_box_to_corners``; ``scale_sensor_fusion_io``; Scale's
"Data Types and the Frame Objects" and "Callback Format" (docs.scale.com/reference).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from engine import quaternion as quat

# Rectified KITTI camera ← Fathom box at rotation_y = 0: box x (forward) → camera +x,
# box y (left) → camera +z, box z (up) → camera −y.
_Q_CAM_FROM_BOX0 = quat.from_matrix(np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]]))


def lwh_from_nuscenes_wlh(wlh: np.ndarray) -> np.ndarray:
    """nuScenes ``size = [w, l, h]`` → Fathom ``(l, w, h)`` (``(..., 3)``)."""
    s = np.asarray(wlh, dtype=np.float64)
    return s[..., [1, 0, 2]]


nuscenes_wlh_from_lwh = lwh_from_nuscenes_wlh  # the swap is its own inverse


def lwh_from_pandaset_dimensions(dim_x: np.ndarray, dim_y: np.ndarray, dim_z: np.ndarray) -> np.ndarray:
    """PandaSet ``dimensions.x`` (width), ``.y`` (length), ``.z`` (height) → ``(..., 3)`` (l, w, h)."""
    return np.stack([np.asarray(dim_y, float), np.asarray(dim_x, float), np.asarray(dim_z, float)], axis=-1)


lwh_from_scale_dimensions = lwh_from_pandaset_dimensions  # PandaSet is a Scale export: same order


def rotation_from_scale_yaw(yaw: np.ndarray) -> np.ndarray:
    """Scale/PandaSet cuboid ``yaw`` (rad about world z, 0 = front along world +y) → ``(..., 4)``
    wxyz box → world (Fathom box front = +x, so a yaw of ``yaw + π/2``)."""
    return quat.from_yaw(np.asarray(yaw, dtype=np.float64) + np.pi / 2)


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (np.asarray(angle) + np.pi) % (2 * np.pi) - np.pi


def kitti_from_camera_boxes(
    centers: np.ndarray, sizes: np.ndarray, rotations: np.ndarray
) -> dict[str, np.ndarray]:
    """KITTI box fields from boxes in the rectified camera frame.

    Args: ``centers (N, 3)`` box middles, ``sizes (N, 3)`` (l, w, h), ``rotations (N, 4)``
    wxyz box → camera. Returns ``h, w, l, x, y, z`` (bottom centre), ``rotation_y`` and
    ``alpha`` as ``(N,)`` float64. KITTI boxes turn about the camera's y axis only; the box
    forward axis is projected onto the camera x-z plane (exact for boxes upright in camera).
    """
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1, 3)
    q = quat.as_quaternions(rotations, "rotations").reshape(-1, 4)
    forward = quat.rotate(q, np.tile([1.0, 0.0, 0.0], (len(q), 1)))
    up = quat.rotate(q, np.tile([0.0, 0.0, 1.0], (len(q), 1)))
    ry = np.arctan2(-forward[:, 2], forward[:, 0])
    bottom = c - 0.5 * s[:, 2:3] * up
    return {
        "h": s[:, 2], "w": s[:, 1], "l": s[:, 0],
        "x": bottom[:, 0], "y": bottom[:, 1], "z": bottom[:, 2],
        "rotation_y": ry, "alpha": _wrap(ry - np.arctan2(bottom[:, 0], bottom[:, 2])),
    }


def camera_boxes_from_kitti(
    h: np.ndarray, w: np.ndarray, l: np.ndarray, x: np.ndarray, y: np.ndarray, z: np.ndarray,
    rotation_y: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centers (N, 3), sizes (N, 3) l w h, rotations (N, 4) wxyz box → camera)`` from
    KITTI fields (bottom centre ``x y z`` in the rectified camera, ``rotation_y`` rad)."""
    h, w, l, x, y, z, ry = (np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in (h, w, l, x, y, z, rotation_y))
    half = 0.5 * ry
    q_ry = np.stack([np.cos(half), np.zeros_like(half), np.sin(half), np.zeros_like(half)], axis=-1)
    q = quat.multiply(q_ry, np.broadcast_to(_Q_CAM_FROM_BOX0, q_ry.shape))
    centers = np.stack([x, y - 0.5 * h, z], axis=-1)  # camera y points down: the middle is h/2 above
    return centers, np.stack([l, w, h], axis=-1), q


def sfs_pose_row(translation: np.ndarray, rotation_wxyz: np.ndarray) -> np.ndarray:
    """SFS ``PosePath`` rows ``(K, 7)`` ``x y z qx qy qz qw`` from translations and wxyz quaternions."""
    t = np.asarray(translation, dtype=np.float64).reshape(-1, 3)
    q = np.asarray(rotation_wxyz, dtype=np.float64).reshape(-1, 4)
    return np.hstack([t, q[:, 1:], q[:, :1]])


def pose_from_sfs_row(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(translation (K, 3), rotation (K, 4) wxyz)`` from SFS rows ``x y z qx qy qz qw``."""
    v = np.asarray(values, dtype=np.float64).reshape(-1, 7)
    return v[:, :3].copy(), np.hstack([v[:, 6:7], v[:, 3:6]])


def quaternion_from_legacy_heading(heading: Mapping[str, Any] | float) -> np.ndarray:
    """Scale legacy ``heading``: a ``{w, x, y, z}`` quaternion object or a yaw in radians → ``(4,)`` wxyz."""
    if isinstance(heading, Mapping):
        return np.array([heading["w"], heading["x"], heading["y"], heading["z"]], dtype=np.float64)
    return quat.from_yaw(float(heading))
