"""LiDAR evidence of boxes: how many of their points lie in a camera image and are seen.

Per box: the points inside it (:func:`engine.points_in_boxes.points_in_boxes`, inclusive
faces), of those the ones that project into some camera's image
(:func:`engine.projection.project_points`) and the ones on the nearest surface of some
camera's z-buffer (:func:`engine.zbuffer.zbuffer`, its default splat and tolerances). The
KITTI ``occluded`` and nuScenes ``visibility`` estimates are ratios of these counts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine.camera import Camera
from engine.points_in_boxes import points_in_boxes
from engine.pose_track import Extrapolation, PoseTrack
from engine.projection import project_points
from engine.typing import Int64Array, Points3, Quaternions, TimesNs, Vectors3
from engine.zbuffer import zbuffer


def box_point_visibility(
    xyz: Points3,
    centers: Vectors3,
    sizes: Vectors3,
    rotations: Quaternions,
    cameras: Sequence[Camera],
    *,
    world_from_ego: PoseTrack | None = None,
    camera_times_ns: TimesNs | None = None,
    extrapolate: Extrapolation = "none",
) -> tuple[Int64Array, Int64Array, Int64Array]:
    """LiDAR evidence of ``B`` boxes: ``(inside, in_image, visible)``, each ``(B,) int64``.

    ``inside``: points in the box; ``in_image``: of those, points inside some camera's image;
    ``visible``: points on the nearest surface of some camera's z-buffer. Points ``(N, 3)``
    and boxes (``(B, 3)`` centres and sizes (l, w, h), ``(B, 4)`` wxyz rotations) are in the
    ego frame (static, ``world_from_ego`` None) or the world frame (cameras at
    ``camera_times_ns`` on ``world_from_ego``, beyond it by ``extrapolate``).
    """
    b = len(np.asarray(centers).reshape(-1, 3))
    labels, counts = points_in_boxes(xyz, centers, sizes, rotations)
    if not cameras:
        return counts, np.zeros(b, np.int64), np.zeros(b, np.int64)
    proj = project_points(xyz, cameras, world_from_ego=world_from_ego, camera_times_ns=camera_times_ns,
                          frame="sensor" if world_from_ego is None else "world", extrapolate=extrapolate)
    visible = zbuffer(proj).visible.any(axis=0)
    hit = labels >= 0
    return (counts, np.bincount(labels[hit & proj.in_image.any(axis=0)], minlength=b),
            np.bincount(labels[hit & visible], minlength=b))
