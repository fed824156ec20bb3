"""Exports: the scene's current labels in a delivery format (SFS, nuScenes, KITTI tracking).

``GET /v1/scenes/{id}/export/{format}`` (viewer role). Boxes are in the scene frame (the
stored world frame: ENU minus ``origin.enu_offset_m``, see the scene detail), times in the
scene's nanoseconds converted by each format. The ``ETag`` is ``"r<revision>-<format>…"``: it
changes with every label write (``If-None-Match`` → 304).

- ``sfs``: a Scale Sensor Fusion Scene (``application/octet-stream``, ``<id>.sfs``) with the
  label tracks, a ``lidar`` sensor carrying the ego poses and, with ``points=true``
  (default), every frame's full-resolution points, and one ``radar`` sensor per radar
  (:mod:`formats.export_sfs`).
- ``nuscenes``: a zip of a nuScenes DATAROOT (:func:`formats.export_nuscenes_dataroot.nuscenes_scene_export`):
  ``NOTES.txt`` (what was exported, the category mapping, lens caveats), ``v1.0-fathom/*.json``
  tables with one sample per frame and a blank ``maps/`` mask. ``num_lidar_pts`` and
  ``visibility`` are estimated from each frame's points and the scene's cameras; ego poses at
  image times past the last frame are extrapolated linearly (the scene stores poses at frame
  times only). ``complete=true`` adds the ``samples/`` files (each LiDAR's points in its own
  frame as ``.pcd.bin``, the camera JPEGs as stored) and streams the zip as it is written
  (one frame in memory at a time; not cached, no ``ETag``); without it the zip holds the
  tables only. A camera whose lens nuScenes cannot describe (fisheye, distortion) is named
  in ``NOTES.txt`` and in the ``X-Export-Warnings`` header.
- ``kitti``: ``label_02`` text of one camera (``camera``, default the first; 404 without
  one), with ``occluded`` from the frame's points (:mod:`formats.export_kitti`).

Boxes between keyframes (the KITTI and nuScenes boxes at the frame times, and the SFS path of a
motion-aware track) follow each track's ``interpolation`` mode, as the cuboids route does
(:func:`server.boxes.interpolation_modes`).

Categories (``nuscenes``, ``kitti``) are mapped by :mod:`formats.categories`; a category with
no nuScenes / KITTI name is refused with 422 naming it unless ``unmapped=pass`` (write the
name as it is) or ``unmapped=drop`` (leave its tracks out).
"""

from __future__ import annotations

import zipfile
from typing import Annotated, Iterable, Iterator, Literal

import numpy as np
from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import StreamingResponse

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation
from formats.categories import Unmapped, UnmappedCategoryError
from formats.export_kitti import kitti_tracking_lines
from formats.export_nuscenes import lens_notes
from formats.export_nuscenes_dataroot import NuScenesSceneExport, ScenePoints, nuscenes_scene_export
from formats.export_sfs import encode_sfs, scene_radar_frames, scene_to_sfs
from formats.scene_store import Scene
from server.boxes import interpolation_modes, tracks_from_document
from server.deps import SceneDep, State, Viewer
from server.payloads import Payload, respond

router = APIRouter(prefix="/v1", tags=["exports"])

ExportFormat = Literal["sfs", "nuscenes", "kitti"]
NUSCENES_VERSION = "v1.0-fathom"


class _Chunks:
    """A write-only, unseekable file for :class:`zipfile.ZipFile` that keeps what is written
    until :meth:`take`."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


def _zip(files: Iterable[tuple[str, bytes]]) -> Iterator[bytes]:
    """A zip archive of ``(name, bytes)`` entries, yielded entry by entry as it is written
    (text deflated; point files and JPEGs stored)."""
    sink = _Chunks()
    with zipfile.ZipFile(sink, "w") as z:
        for name, data in files:
            z.writestr(name, data, zipfile.ZIP_DEFLATED if name.endswith((".json", ".txt")) else zipfile.ZIP_STORED)
            yield sink.take()
    yield sink.take()


def _sfs(scene: Scene, tracks: list[CuboidTrack], modes: list[Interpolation], points: bool) -> bytes:
    xyz = ScenePoints(scene)
    frames = [(f.timestamp_ns, xyz[i] if points else np.zeros((0, 3))) for i, f in enumerate(scene.frames)]
    return encode_sfs(scene_to_sfs(tracks, scene.world_from_ego(), frames, radars=scene_radar_frames(scene),
                                   interpolation=modes))


def _kitti(scene: Scene, tracks: list[CuboidTrack], modes: list[Interpolation], camera: str,
           unmapped: Unmapped) -> bytes:
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    lines = kitti_tracking_lines(tracks, times, scene.world_from_ego(), scene.cameras[camera],
                                 sweeps=ScenePoints(scene, "ego"), unmapped=unmapped, interpolation=modes)
    return "".join(line + "\n" for line in lines).encode()


def _unmapped_error(fmt: str, exc: UnmappedCategoryError) -> HTTPException:
    names = ", ".join(map(repr, exc.categories))
    return HTTPException(422, f"{fmt} export: {exc.dataset} has no category for {names}; relabel them, or "
                              "export with unmapped=pass (write the names as they are) or unmapped=drop "
                              "(leave those tracks out)")


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
    complete: Annotated[bool, Query(description="nuscenes: with the samples/ files (streamed)")] = False,
    unmapped: Annotated[Unmapped, Query(description="nuscenes, kitti: categories without a name there")] = "refuse",
) -> Response:
    """The current labels exported as ``fmt`` (see the module docstring)."""
    if fmt == "kitti":
        camera = camera if camera is not None else next(iter(scene.cameras), None)
        if camera not in scene.cameras:
            raise HTTPException(404, f"scene {scene.scene_id!r} has no camera {camera!r}")
    if not scene.frames:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no frames to export")
    revision, doc = state.labels.get(scene.scene_id)
    modes = interpolation_modes(doc)
    if fmt == "nuscenes" and complete:
        try:
            export = nuscenes_scene_export(scene, tracks_from_document(doc), version=NUSCENES_VERSION,
                                           unmapped=unmapped, complete=True, interpolation=modes)
        except UnmappedCategoryError as exc:
            raise _unmapped_error(fmt, exc) from None
        return StreamingResponse(_zip(export.files()), media_type="application/zip",
                                 headers=_nuscenes_headers(export, f"{scene.scene_id}-nuscenes-complete.zip"))
    variant = {"sfs": f"-points{int(points)}", "kitti": f"-{camera}-{unmapped}", "nuscenes": f"-{unmapped}"}[fmt]
    key = ("export", scene.scene_id, revision, fmt, variant)
    etag = f'"r{revision}-{fmt}{variant}"'

    def build() -> Payload:
        tracks = tracks_from_document(doc)
        try:
            if fmt == "sfs":
                return Payload(_sfs(scene, tracks, modes, points), "application/octet-stream", etag,
                               _attachment(f"{scene.scene_id}.sfs"))
            if fmt == "kitti":
                return Payload(_kitti(scene, tracks, modes, camera, unmapped), "text/plain", etag,
                               _attachment(f"{scene.scene_id}-{camera}.txt"))
            export = nuscenes_scene_export(scene, tracks, version=NUSCENES_VERSION, unmapped=unmapped, complete=False,
                                           interpolation=modes)
        except UnmappedCategoryError as exc:
            raise _unmapped_error(fmt, exc) from None
        return Payload(b"".join(_zip(export.files())), "application/zip", etag,
                       _nuscenes_headers(export, f"{scene.scene_id}-nuscenes.zip"), compressible=False)

    return respond(request, state.cache.get(key, build), state.cache, state.settings.gzip_level, key)


def _attachment(name: str) -> dict[str, str]:
    return {"Content-Disposition": f'attachment; filename="{name}"'}


def _nuscenes_headers(export: NuScenesSceneExport, name: str) -> dict[str, str]:
    """The attachment name and, for cameras nuScenes cannot describe, ``X-Export-Warnings``."""
    notes = lens_notes(export.sensors)
    return _attachment(name) | ({"X-Export-Warnings": " | ".join(notes)} if notes else {})
