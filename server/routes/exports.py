"""Exports: the scene's current labels in a delivery format (SFS, nuScenes tables, KITTI tracking).

``GET /v1/scenes/{id}/export/{format}`` (viewer role). Boxes are in the scene frame (the
stored world frame: ENU minus ``origin.enu_offset_m``, see the scene detail), times in the
scene's nanoseconds converted by each format. The ``ETag`` is ``"r<revision>-<format>…"``: it
changes with every label write (``If-None-Match`` → 304).

- ``sfs``: a Scale Sensor Fusion Scene (``application/octet-stream``, ``<id>.sfs``) with the
  label tracks and a ``lidar`` sensor carrying the ego poses and, with ``points=true``
  (default), every frame's full-resolution points (:mod:`formats.export_sfs`).
- ``nuscenes``: a zip of ``<version>/*.json`` tables (:mod:`formats.export_nuscenes`), one
  sample per frame; sample_data rows name ``samples/<sensor>/<frame>.pcd.bin`` / ``.jpg`` but
  the zip holds the tables only. ``num_lidar_pts`` and ``visibility`` are estimated from each
  frame's points and the scene's cameras; ego poses at image times past the last frame are
  extrapolated linearly (the scene stores poses at frame times only).
- ``kitti``: ``label_02`` text of one camera (``camera``, default the first; 404 without
  one), with ``occluded`` from the frame's points (:mod:`formats.export_kitti`).
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Annotated, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response

from engine.cuboid import CuboidTrack
from formats.export_kitti import kitti_tracking_lines
from formats.export_nuscenes import NuScenesSensorFiles, nuscenes_tables
from formats.export_sfs import encode_sfs, scene_to_sfs
from formats.scene_store import Scene
from server.boxes import tracks_from_document
from server.deps import SceneDep, State, Viewer
from server.payloads import Payload, respond

router = APIRouter(prefix="/v1", tags=["exports"])

ExportFormat = Literal["sfs", "nuscenes", "kitti"]
NUSCENES_VERSION = "v1.0-fathom"


def _xyz(scene: Scene, index: int) -> np.ndarray:
    table = scene.points(index)
    return np.column_stack([table.column(c).to_numpy() for c in "xyz"]).astype(np.float64)


def _sfs(scene: Scene, tracks: list[CuboidTrack], points: bool) -> bytes:
    track = scene.world_from_ego()
    frames = [(f.timestamp_ns, _xyz(scene, f.index) if points else np.zeros((0, 3))) for f in scene.frames]
    return encode_sfs(scene_to_sfs(tracks, track, frames))


def _nuscenes(scene: Scene, tracks: list[CuboidTrack]) -> bytes:
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    sensors = [NuScenesSensorFiles(l.name, l.ego_from_sensor,
                                   [(f"samples/{l.name}/{f.index:06d}.pcd.bin", f.timestamp_ns) for f in scene.frames])
               for l in scene.lidars]
    sensors += [NuScenesSensorFiles(name, cam.ego_from_camera,
                                    [(f"samples/{name}/{f.index:06d}.jpg", f.image_timestamps_ns[name])
                                     if name in f.images else None for f in scene.frames], camera=cam)
                for name, cam in scene.cameras.items()]
    tables = nuscenes_tables(tracks, times, scene.world_from_ego(), sensors, scene_name=scene.scene_id,
                             lidar_points=[_xyz(scene, f.index) for f in scene.frames], extrapolate="linear")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name, records in tables.items():
            z.writestr(f"{NUSCENES_VERSION}/{name}.json", json.dumps(records, allow_nan=False))
    return buf.getvalue()


def _kitti(scene: Scene, tracks: list[CuboidTrack], camera: str) -> bytes:
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    sweeps = [f.world_from_ego.inverse().apply(_xyz(scene, f.index)) for f in scene.frames]
    lines = kitti_tracking_lines(tracks, times, scene.world_from_ego(), scene.cameras[camera], sweeps=sweeps)
    return "".join(line + "\n" for line in lines).encode()


@router.get(
    "/scenes/{scene_id}/export/{fmt}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}, "application/zip": {}, "text/plain": {}}},
               304: {"description": "not modified (If-None-Match)"},
               404: {"description": "no such scene or camera"}},
)
def export_labels(
    _: Viewer, scene: SceneDep, state: State, request: Request, fmt: ExportFormat,
    camera: Annotated[str | None, Query(max_length=64, description="kitti: the labelled camera")] = None,
    points: Annotated[bool, Query(description="sfs: include every frame's points")] = True,
) -> Response:
    """The current labels exported as ``fmt`` (see the module docstring)."""
    if fmt == "kitti":
        camera = camera if camera is not None else next(iter(scene.cameras), None)
        if camera not in scene.cameras:
            raise HTTPException(404, f"scene {scene.scene_id!r} has no camera {camera!r}")
    if not scene.frames:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no frames to export")
    revision, doc = state.labels.get(scene.scene_id)
    variant = {"sfs": f"-points{int(points)}", "kitti": f"-{camera}", "nuscenes": ""}[fmt]
    key = ("export", scene.scene_id, revision, fmt, variant)

    def build() -> Payload:
        tracks = tracks_from_document(doc)
        if fmt == "sfs":
            body, media, name = _sfs(scene, tracks, points), "application/octet-stream", f"{scene.scene_id}.sfs"
        elif fmt == "nuscenes":
            body, media, name = _nuscenes(scene, tracks), "application/zip", f"{scene.scene_id}-nuscenes.zip"
        else:
            body, media, name = _kitti(scene, tracks, camera), "text/plain", f"{scene.scene_id}-{camera}.txt"
        return Payload(body, media, f'"r{revision}-{fmt}{variant}"',
                       {"Content-Disposition": f'attachment; filename="{name}"'}, compressible=fmt != "nuscenes")

    return respond(request, state.cache.get(key, build), state.cache, state.settings.gzip_level, key)
