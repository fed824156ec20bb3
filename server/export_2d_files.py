"""``fathom export kitti-2d|coco``: a prepared scene's 2D tracks on disk, from what the HTTP COCO
export (``GET /v1/scenes/{id}/tracks2d/coco``) reads: the current ``tracks2d`` document of the
server's document store (``documents.sqlite3`` beside the label database) over every indexed
frame of the scene's video cameras (``SCENE_DIR/videos/``), each camera at its calibrated image
size (the video's own without a calibration)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from engine.tracks2d import Track2D
from formats.export_2d import VideoFrames, coco_document, write_kitti_2d
from formats.scene_store import Scene
from formats.video import VideoIndex
from formats.video_log import open_video, scene_videos
from server.config import Settings
from server.doc_store import DocumentStore, documents_path
from server.document_schemas import Tracks2DDocument

KIND = "tracks2d"  # the 2D track document's kind in the document store (server.routes.video too)


def video_frames(scene: Scene, index_of: Callable[[str], VideoIndex] | None = None) -> list[VideoFrames]:
    """The frames each video camera of ``scene`` exports, each at its calibrated image size (the
    video's own without a calibration). ``index_of(camera)``: a camera's keyframe index (default:
    built now from its file)."""
    out = []
    for camera, video in scene_videos(scene.dir).items():
        index = index_of(camera) if index_of is not None else open_video(video).index
        cam = scene.cameras.get(camera)
        width, height = (cam.intrinsics.width, cam.intrinsics.height) if cam else (index.width, index.height)
        out.append(VideoFrames(camera, width, height, np.asarray(index.times_ns)))
    return out


def tracks_of(scene_id: str, body: dict[str, Any] | None) -> list[Track2D]:
    """The engine tracks of a stored 2D track document's ``body`` (None: never saved)."""
    doc = Tracks2DDocument.model_validate({"scene_id": scene_id, "revision": 0, **(body or {"tracks": []})})
    return [t.to_track() for t in doc.tracks]


def stored_tracks(label_db: Path, scene_id: str) -> tuple[int, list[Track2D]]:
    """``(revision, tracks)`` of the scene's current 2D track document in the document store
    beside ``label_db`` (:func:`server.doc_store.documents_path`); ``(0, [])`` without one."""
    documents = documents_path(label_db)
    revision, body = 0, None
    if documents.exists():
        store = DocumentStore(documents)
        try:
            revision, body = store.get(scene_id, KIND)
        finally:
            store.close()
    return revision, tracks_of(scene_id, body)


def export_2d(scene_dir: str | os.PathLike, fmt: Literal["kitti-2d", "coco"], out: str | os.PathLike,
              label_db: str | os.PathLike | None = None) -> str:
    """Write the scene's 2D tracks as KITTI 2D files ``OUT/CAMERA/NNNNNN.txt`` or as COCO JSON at
    ``OUT`` (the bytes the HTTP route answers: Starlette's JSON rendering); ``label_db`` defaults
    to the server's (``Settings``: ``FATHOM_LABEL_DB``, else ``labels.sqlite3`` beside the scene
    directory). Returns a line saying what was written."""
    scene_dir = Path(scene_dir)
    scene = Scene.open(scene_dir)
    db = Path(label_db) if label_db else Settings(scenes_dir=scene_dir.parent).label_db_path
    revision, tracks = stored_tracks(db, scene.scene_id)
    videos = video_frames(scene)
    path = Path(out)
    if fmt == "coco":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(json.dumps(coco_document(tracks, videos), ensure_ascii=False, allow_nan=False, indent=None,
                                    separators=(",", ":")).encode("utf-8"))
        what = "COCO"
    else:
        what = f"KITTI 2D, {len(write_kitti_2d(path, tracks, videos))} files"
    return (f"{scene.scene_id} (2D tracks revision {revision}, {len(tracks)} tracks, {len(videos)} video cameras) "
            f"→ {path} ({what})")
