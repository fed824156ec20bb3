"""Pre-labels: upload a detector's per-frame detections, read the tracks made of them, accept
one into the human labels or reject it (:mod:`server.prelabel_store`).

``POST /v1/scenes/{id}/prelabels`` takes the detections file as the request body
(``?format=nuscenes|kitti|sfs|table``, guessed when absent; KITTI boxes need ``camera``, the
scene camera whose frame is KITTI's reference camera; a nuScenes file's sample tokens must be
those of Fathom's export of the scene). It replaces the scene's pre-labels. Accepting writes
the pre-label as a new label track (its id, or the one given; 412 if a label track of that
id exists) in a new label revision, op ``patch``, note ``{"prelabel": id}``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from engine.tracker import TrackerParams
from formats.detections import FORMATS, SceneFrames, read_detections
from formats.errors import FormatError
from formats.scene_store import Scene
from server.deps import Annotator, SceneDep, State, Viewer
from server.errors import invalid
from server.label_http import check_times, written
from server.ontology import checker
from server.prelabel_store import PrelabelError, PrelabelStore, build_prelabels
from server.responses import errors
from server.schemas import TRACK_ID_PATTERN, Category, Track, TrackId, TracksResponse

router = APIRouter(prefix="/v1", tags=["prelabels"])
TrackIdParam = Annotated[str, PathParam(pattern=TRACK_ID_PATTERN, description="pre-label track id")]
_UPLOAD = {"requestBody": {"required": True, "description": "the detections file, as is", "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}


async def get_prelabels(request: Request) -> PrelabelStore:
    return request.app.state.prelabels


Prelabels = Annotated[PrelabelStore, Depends(get_prelabels)]


class PrelabelOut(BaseModel):
    track: Track
    score: float = Field(description="mean detection score")
    detections: int = Field(description="detections the track was made of")
    accepted_as: str | None = Field(description="the label track it became (null: pending)")
    accepted_revision: int | None = Field(description="the label revision that accepted it")


class PrelabelsResponse(BaseModel):
    scene_id: str
    source: str | None = Field(description="format and file of the detections (null: never uploaded)")
    at_ns: int | None
    detections: int = Field(description="detections read")
    tracked: bool = Field(description="true: the 3D tracker made the tracks; false: the detections' own track ids")
    prelabels: list[PrelabelOut]


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: TrackId | None = Field(None, description="the label track id (default: the pre-label's)")
    category: Category | None = Field(None, description="the label category (default: the pre-label's)")


def _answer(scene_id: str, store: PrelabelStore) -> PrelabelsResponse:
    found = store.get(scene_id)
    if found is None:
        return PrelabelsResponse(scene_id=scene_id, source=None, at_ns=None, detections=0, tracked=False, prelabels=[])
    return PrelabelsResponse(
        scene_id=scene_id, source=found.source, at_ns=found.at_ns, detections=found.detections, tracked=found.tracked,
        prelabels=[PrelabelOut(track=Track.model_validate(p.body), score=p.score, detections=p.detections,
                               accepted_as=p.accepted_as, accepted_revision=p.accepted_revision)
                   for p in found.prelabels])


@router.get("/scenes/{scene_id}/prelabels", response_model=PrelabelsResponse, responses=errors(404))
def get_scene_prelabels(_: Viewer, scene: SceneDep, store: Prelabels) -> PrelabelsResponse:
    """The scene's pre-labels (none before an upload)."""
    return _answer(scene.scene_id, store)


def _upload(scene: Scene, store: PrelabelStore, data: bytes, fmt: str | None, camera: str | None, coordinates: str,
            track: bool | None, min_score: float) -> PrelabelsResponse:
    """Read, track and store the detections ``data``; the scene's pre-labels after."""
    reference = None
    if camera is not None:
        if camera not in scene.cameras:
            raise invalid(("query", "camera"), f"scene {scene.scene_id!r} has no camera {camera!r}", camera)
        reference = scene.cameras[camera].ego_from_camera
    frames = SceneFrames.of(scene)
    try:
        detections = read_detections(data, frames, fmt, reference=reference, coordinates=coordinates)
        prelabels, tracked = build_prelabels(frames, detections, track, TrackerParams(min_score=min_score))
    except (FormatError, PrelabelError, ValueError) as exc:
        raise invalid(("body",), str(exc)) from None
    store.replace(scene.scene_id, prelabels, f"{fmt or 'guessed format'} upload ({len(data)} bytes)", len(detections),
                  tracked)
    return _answer(scene.scene_id, store)


@router.post("/scenes/{scene_id}/prelabels", response_model=PrelabelsResponse, openapi_extra=_UPLOAD,
             responses=errors(403, 404, 413))
async def upload_prelabels(
    _: Annotator, scene: SceneDep, store: Prelabels, request: Request,
    format: Annotated[Literal["nuscenes", "kitti", "sfs", "table"] | None, Query(
        description=f"one of {', '.join(FORMATS)} (default: guessed from the bytes)")] = None,
    camera: Annotated[str | None, Query(max_length=64, description="kitti: the scene camera that is KITTI's "
                                                                   "reference camera")] = None,
    coordinates: Annotated[Literal["world", "ego"], Query(description="table: boxes in the scene's world frame or "
                                                                      "each frame's ego frame")] = "world",
    track: Annotated[bool | None, Query(description="run the 3D tracker (default: unless every detection has a "
                                                    "track id)")] = None,
    min_score: Annotated[float, Query(ge=0.0, le=1e6, description="ignore detections scoring below")] = 0.0,
) -> PrelabelsResponse:
    """Replace the scene's pre-labels by the tracks made of the uploaded detections (422
    naming the row of a bad detection)."""
    data = await request.body()
    return await run_in_threadpool(_upload, scene, store, data, format, camera, coordinates, track, min_score)


@router.post("/scenes/{scene_id}/prelabels/{track_id}/accept", response_model=TracksResponse,
             responses=errors(403, (404, "no such scene or pre-label"), (409, "already accepted"), 412))
def accept_prelabel(
    who: Annotator, scene: SceneDep, state: State, store: Prelabels, track_id: TrackIdParam,
    change: Annotated[AcceptRequest | None, Body()] = None,
) -> Response:
    """Copy the pre-label into the labels as a new track (a new label revision)."""
    pre = store.prelabel(scene.scene_id, track_id)
    if pre is None:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no pre-label {track_id!r}")
    if pre.accepted_as is not None:
        raise HTTPException(409, f"pre-label {track_id!r} was accepted as {pre.accepted_as!r} at revision "
                                 f"{pre.accepted_revision}")
    req = change or AcceptRequest()
    try:
        track = Track.model_validate({**pre.body, "id": req.id or pre.body["id"],
                                      "category": req.category or pre.body["category"]})
    except ValidationError as exc:
        raise invalid(("body",), str(exc.errors()[0]["msg"])) from None
    check_times(scene, track.keyframes, ("body", "keyframes"))
    body = track.model_dump(mode="json")
    check = checker(state.labels.ontology(scene.scene_id))
    if check is not None:
        check.check(body, ("body",))
    revision, tracks = state.labels.patch(scene.scene_id, None, {track.id: 0}, [track.id], lambda _: {track.id: body},
                                          op="patch", author=who.name, note={"prelabel": track_id})
    store.mark_accepted(scene.scene_id, track_id, track.id, revision)
    return written(scene.scene_id, revision, tracks)


@router.delete("/scenes/{scene_id}/prelabels/{track_id}", status_code=204,
               responses=errors(403, (404, "no such scene or pre-label")))
def reject_prelabel(_: Annotator, scene: SceneDep, store: Prelabels, track_id: TrackIdParam) -> Response:
    """Drop one pre-label."""
    if not store.delete(scene.scene_id, track_id):
        raise HTTPException(404, f"scene {scene.scene_id!r} has no pre-label {track_id!r}")
    return Response(status_code=204)
