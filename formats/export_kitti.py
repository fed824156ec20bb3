"""Export cuboid tracks as KITTI tracking labels (``label_02/SSSS.txt``).

One line per object and frame, as the KITTI tracking devkit reads them::

    frame track_id type truncated occluded alpha left top right bottom h w l x y z rotation_y

Boxes are interpolated at the frame times (:mod:`engine.cuboid_interp`, no extrapolation),
moved to the ego frame with ``world_from_ego`` and to the rectified reference camera with
``ego_from_reference`` (KITTI: rectified camera 0; default the labelled camera itself), then
converted by :func:`formats.conventions.kitti_from_camera_boxes` (bottom centre,
``rotation_y``, ``alpha``). The 2D box is the exact pinhole projection into ``camera``
(:func:`engine.cuboid_projection.project_cuboids`), clipped to the image; only boxes visible
in ``camera`` are written, as in KITTI. ``truncated`` is 0 when the whole box projects inside
the image, else 1; ``occluded`` is 3 (unknown). Track ids are kept when all are decimal
integers, otherwise numbered 0.. in the given order (the mapping is returned).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import interpolate_tracks
from engine.cuboid_projection import project_cuboids
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.conventions import kitti_from_camera_boxes

KITTI_TYPES: dict[str, str] = {
    "car": "Car", "van": "Van", "truck": "Truck", "pedestrian": "Pedestrian",
    "person_sitting": "Person_sitting", "cyclist": "Cyclist", "tram": "Tram", "misc": "Misc",
}


def kitti_track_ids(tracks: Sequence[CuboidTrack]) -> dict[str, int]:
    """Fathom track id → KITTI integer id (kept when every id is a decimal integer)."""
    ids = [t.track_id for t in tracks]
    if all(i.isdigit() for i in ids) and len({int(i) for i in ids}) == len(ids):
        return {i: int(i) for i in ids}
    return {i: n for n, i in enumerate(ids)}


def kitti_tracking_lines(
    tracks: Sequence[CuboidTrack],
    frame_times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    camera: Camera,
    *,
    ego_from_reference: SE3 | None = None,
    types: Mapping[str, str] = KITTI_TYPES,
) -> list[str]:
    """The label lines (frame index = position in ``frame_times_ns``), frame-major, ids ascending."""
    times = np.asarray(frame_times_ns, dtype=np.int64)
    ids = kitti_track_ids(tracks)
    if not tracks or not len(times):
        return []
    ego = interpolate_tracks(tracks, times).to_ego(world_from_ego)
    ref_from_ego = (camera.ego_from_camera if ego_from_reference is None else ego_from_reference).inverse()
    width, height = camera.intrinsics.width, camera.intrinsics.height
    order = sorted(range(len(tracks)), key=lambda n: ids[tracks[n].track_id])
    lines: list[str] = []
    for f in range(len(times)):
        live = [n for n in order if ego.valid[f, n]]
        if not live:
            continue
        c, s, q = ego.centers[f, live], ego.sizes[f, live], ego.rotations[f, live]
        proj = project_cuboids(c, s, q, [camera], samples_per_edge=1)
        k = kitti_from_camera_boxes(ref_from_ego.apply(c), s,
                                    quat.multiply(np.broadcast_to(ref_from_ego.rotation, q.shape), q))
        for j, n in enumerate(live):
            if not proj.visible[j, 0]:
                continue
            corners = proj.corners_uv[j, 0]
            inside = np.all(np.isfinite(corners)) and np.all(
                (corners >= -0.5) & (corners <= [width - 0.5, height - 0.5]))
            track = tracks[n]
            kind = types.get(track.category, track.category.replace(" ", "_"))
            values = (k["alpha"][j], *proj.boxes[j, 0], k["h"][j], k["w"][j], k["l"][j],
                      k["x"][j], k["y"][j], k["z"][j], k["rotation_y"][j])
            lines.append(f"{f} {ids[track.track_id]} {kind} {0 if inside else 1} 3 "
                         + " ".join(f"{v:.6f}" for v in values))
    return lines


def write_kitti_tracking(
    path: str | os.PathLike,
    tracks: Sequence[CuboidTrack],
    frame_times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    camera: Camera,
    *,
    ego_from_reference: SE3 | None = None,
    types: Mapping[str, str] = KITTI_TYPES,
) -> Path:
    """Write ``label_02/SSSS.txt`` (see :func:`kitti_tracking_lines`); returns the path."""
    out = Path(path)
    lines = kitti_tracking_lines(tracks, frame_times_ns, world_from_ego, camera,
                                 ego_from_reference=ego_from_reference, types=types)
    out.write_text("".join(line + "\n" for line in lines))
    return out
