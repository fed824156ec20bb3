"""Camera streams kept as video by ``prepare`` (``SCENE_DIR/videos/``, :mod:`formats.video_log`)
and the 2D tracks labelled on them.

- ``GET /v1/scenes/{id}/videos``: each video camera's frame count, time span, codec, size and
  the timestamp issues found while indexing (viewer).
- ``GET /v1/scenes/{id}/videos/{camera}/frame?time_ns=T``: the frame nearest ``T`` as JPEG,
  its index and sensor time in ``X-Frame-Index`` / ``X-Frame-Time-Ns`` (viewer). Readers (and
  their keyframe indexes) stay open per scene and camera, a few at a time.
- ``GET|PUT /v1/scenes/{id}/tracks2d`` (+ ``/history``): the 2D tracks (boxes, polygons,
  polylines) as one revisioned document (:mod:`server.doc_store`; PUT: annotator, 412 when
  stale); ``GET /v1/scenes/{id}/tracks2d/coco``: them as COCO over every indexed frame of the
  scene's videos (:mod:`formats.export_2d`).
- ``GET /v1/scenes/{id}/videos/{camera}/prelabels?time_ns=T``: pre-labels for the frame nearest
  ``T``: the scene's cuboid labels at the frame's time as 2D boxes through the camera's lens
  (:func:`engine.boxes2d.derive_boxes`: truncated at the border, occlusion by the other
  cuboids; ego poses interpolated from the frames', held beyond them).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi import Path as PathParam

from engine.boxes2d import derive_boxes
from formats.export_2d import coco_document
from formats.scene_store import Scene
from formats.video_log import VideoSource, scene_videos
from server.boxes import document_boxes
from server.config import Settings
from server.deps import Annotator, SceneDep, State, Viewer
from server.doc_store import DocumentStore, app_store
from server.document_schemas import DocumentRevision, Tracks2DDocument, Tracks2DWrite
from server.export_2d_files import KIND, tracks_of, video_frames
from server.label_store import UnknownRevision
from server.responses import errors

OPEN_READERS = 16
router = APIRouter(prefix="/v1/scenes/{scene_id}", tags=["video"])
CameraParam = Annotated[str, PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
RevisionQuery = Annotated[int | None, Query(ge=0, le=2**62, description="the document at this revision")]


class Sources:
    """Open :class:`VideoSource` per (scene, camera), the least recently used closed past
    :data:`OPEN_READERS`."""

    def __init__(self) -> None:
        self._open: OrderedDict[tuple[str, str], VideoSource] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, scene: Scene, camera: str) -> VideoSource:
        key = (str(scene.dir), camera)
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
        video = scene_videos(scene.dir).get(camera)
        if video is None:
            raise HTTPException(404, f"scene {scene.scene_id!r} has no video for camera {camera!r}")
        source = VideoSource(video)
        with self._lock:
            self._open[key] = source
            while len(self._open) > OPEN_READERS:
                self._open.popitem(last=False)
        return source


def install(app: FastAPI, settings: Settings) -> None:
    """Open the document store, the reader cache, and add the routes."""
    app_store(app, settings.label_db_path)
    app.state.video_sources = Sources()
    app.include_router(router, responses=errors(401))


async def _store(request: Request) -> DocumentStore:
    return request.app.state.documents


async def _sources(request: Request) -> Sources:
    return request.app.state.video_sources


Store = Annotated[DocumentStore, Depends(_store)]
SourcesDep = Annotated[Sources, Depends(_sources)]


@router.get("/videos", responses=errors(404))
def list_videos(_: Viewer, scene: SceneDep, sources: SourcesDep) -> list[dict[str, Any]]:
    """The scene's video cameras."""
    out = []
    for camera in scene_videos(scene.dir):
        index = sources.get(scene, camera).reader.index
        times = index.times_ns
        out.append({"camera": camera, "frames": len(index), "codec": index.codec,
                    "first_ns": int(times[0]) if len(times) else None,
                    "last_ns": int(times[-1]) if len(times) else None, "issues": list(index.issues)})
    return out


@router.get("/videos/{camera}/frame", response_class=Response, responses=errors(404))
def video_frame(_: Viewer, scene: SceneDep, camera: CameraParam, sources: SourcesDep,
                time_ns: Annotated[int, Query(ge=0, le=2**63 - 1, description="sensor time, ns")],
                quality: Annotated[int, Query(ge=10, le=100)] = 90) -> Response:
    """The frame nearest ``time_ns`` as JPEG."""
    found = sources.get(scene, camera).jpeg_near(time_ns, quality=quality)
    if found is None:
        raise HTTPException(404, f"the {camera!r} video has no frames with a time")
    data, t_ns, index = found
    return Response(data, media_type="image/jpeg",
                    headers={"X-Frame-Index": str(index), "X-Frame-Time-Ns": str(t_ns), "Cache-Control": "no-cache"})


@router.get("/videos/{camera}/prelabels", responses=errors(404))
def video_prelabels(_: Viewer, scene: SceneDep, camera: CameraParam, sources: SourcesDep, state: State,
                    time_ns: Annotated[int, Query(ge=0, le=2**63 - 1, description="sensor time, ns")]
                    ) -> dict[str, Any]:
    """The cuboid labels as 2D boxes in the frame nearest ``time_ns``."""
    index = sources.get(scene, camera).reader.index
    if camera not in scene.cameras or len(index) == 0:
        raise HTTPException(404, f"camera {camera!r} has no calibration or no frames in scene {scene.scene_id!r}")
    i = int(index.nearest(time_ns)[0])
    t = int(index.times_ns[i])
    tracks, at = document_boxes(state.labels.get(scene.scene_id)[1], np.array([t], np.int64))
    boxes: list[dict[str, Any]] = []
    if tracks:
        rows = np.flatnonzero(at.valid[0])
        d = derive_boxes(at.centers[0, rows], at.sizes[0, rows], at.rotations[0, rows], scene.cameras[camera],
                         world_from_ego=scene.world_from_ego(), camera_time_ns=t, extrapolate="hold")
        boxes = [{"track_id": tracks[r].track_id, "category": tracks[r].category,
                  "box": d.boxes[m].round(2).tolist(), "visible_box": d.visible_boxes[m].round(2).tolist(),
                  "truncation": round(float(d.truncation[m]), 4), "occlusion": round(float(d.occlusion[m]), 4)}
                 for m, r in enumerate(rows) if d.visible[m]]
    return {"camera": camera, "frame_index": i, "timestamp_ns": t, "boxes": boxes}


@router.get("/tracks2d", response_model=Tracks2DDocument, responses=errors(404))
def get_tracks2d(_: Viewer, scene: SceneDep, store: Store, revision: RevisionQuery = None) -> Tracks2DDocument:
    """The scene's 2D tracks (revision 0 and none before the first save)."""
    try:
        rev, body = store.get(scene.scene_id, KIND, revision)
    except UnknownRevision as exc:
        raise HTTPException(404, str(exc)) from None
    return Tracks2DDocument(scene_id=scene.scene_id, revision=rev, tracks=(body or {}).get("tracks", []))


@router.put("/tracks2d", response_model=Tracks2DDocument, responses=errors(404, 412, 413))
def put_tracks2d(who: Annotator, scene: SceneDep, store: Store, doc: Tracks2DWrite) -> Tracks2DDocument:
    """Replace the document; ``expected_revision`` must be the current revision."""
    body = {"tracks": [t.model_dump(mode="json") for t in doc.tracks]}
    rev = store.save(scene.scene_id, KIND, body, doc.expected_revision, who.name)
    return Tracks2DDocument(scene_id=scene.scene_id, revision=rev, tracks=doc.tracks)


@router.get("/tracks2d/history", response_model=list[DocumentRevision], responses=errors(404))
def tracks2d_history(_: Viewer, scene: SceneDep, store: Store,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DocumentRevision]:
    """Who saved which revision when, newest first."""
    return [DocumentRevision(**r) for r in store.history(scene.scene_id, KIND, limit)]


@router.get("/tracks2d/coco", responses=errors(404))
def tracks2d_coco(_: Viewer, scene: SceneDep, store: Store, sources: SourcesDep) -> dict[str, Any]:
    """The current 2D tracks as COCO, over every indexed frame of each video camera."""
    _, body = store.get(scene.scene_id, KIND)
    return coco_document(tracks_of(scene.scene_id, body),
                         video_frames(scene, lambda camera: sources.get(scene, camera).reader.index))
