"""A frame's points and label boxes projected into one camera (engine calls only)."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.cuboid_projection import project_cuboids
from engine.projection import project_points
from formats.scene_store import FrameEntry, Scene, positions
from server.boxes import document_boxes
from server.store_errors import reading


def camera_projection(scene: Scene, entry: FrameEntry, camera: str, lod: int, doc: dict[str, Any]) -> dict[str, Any]:
    """Points of level ``lod`` that land in the image of ``camera`` at its exposure time
    (``u``, ``v`` pixels, ``depth`` m, ``index`` = row in the level's table) and the visible
    label boxes as polylines. The ego pose at the exposure time is interpolated from the
    scene's frame poses (held beyond the first / last frame). DamagedScene if the points
    cannot be read."""
    cam = scene.cameras[camera]
    t_cam = entry.image_timestamps_ns[camera]
    track = scene.world_from_ego()
    with reading(scene, entry, "points file" if lod == 0 else f"level-of-detail {lod} rows file"):
        xyz = positions(scene.stored_points(entry.index, lod))
    proj = project_points(xyz, [cam], world_from_ego=track, camera_times_ns=[t_cam], frame="world",
                          extrapolate="hold")
    keep = np.flatnonzero(proj.in_image[0])
    uv = proj.uv[0, keep]
    tracks, boxes = document_boxes(doc, np.array([t_cam], np.int64))
    valid = np.flatnonzero(boxes.valid[0])
    out_boxes = []
    if len(valid):
        cp = project_cuboids(boxes.centers[0, valid], boxes.sizes[0, valid], boxes.rotations[0, valid], [cam],
                             world_from_ego=track, camera_times_ns=[t_cam], extrapolate="hold")
        for m, j in enumerate(valid):
            if cp.visible[m, 0]:
                out_boxes.append({"track_id": tracks[j].track_id,
                                  "paths": [p.round(2).tolist() for p in cp.paths(m, 0)]})
    return {
        "camera": camera, "timestamp_ns": t_cam, "width": cam.intrinsics.width, "height": cam.intrinsics.height,
        "u": uv[:, 0].round(2).tolist(), "v": uv[:, 1].round(2).tolist(),
        "depth": proj.depth[0, keep].round(3).tolist(), "index": keep.tolist(), "boxes": out_boxes,
    }
