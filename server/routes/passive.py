"""Passive sonar: a scene's bearing-time records and its bearings in the world and the cameras,
and the bearing tracks labelled on them.

- ``GET|PUT /v1/scenes/{id}/bearing-tracks`` (+ ``/history``): the bearing tracks (contacts on
  the bearing-time record: time, ego-frame azimuth, band, class) as one revisioned document
  (:mod:`server.doc_store`). GET: viewer (``?revision=`` for an older one); PUT: annotator,
  the whole document with the revision it was based on (412 when stale); history: viewer.
- ``GET /v1/scenes/{id}/passive``: each hydrophone array's stored bearing-time record
  (:mod:`formats.scene_store.passive`): name, azimuths, band, rows, time range (viewer; an
  empty list for a scene without hydrophones).
- ``GET /v1/scenes/{id}/frames/{i}/bearings``: the frame's bearings (:mod:`server.bearings`):
  per array the record row nearest the frame's time (azimuths, power in dB) and its peaks as
  rays, the bearing tracks existing then as rays, each ray with its origin, unit direction
  and the end of its segment at ``range_m`` (world frame, or ``frame=ego``), and every ray as
  pixel polylines in each of the frame's cameras (viewer). ``array=NAME`` keeps one array
  (404 for one the scene lacks). An array whose stored layer cannot be read is listed with an
  ``error`` (the server log has the cause) and the rest is answered.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request

from server.bearings import array_listing, bearing_tracks, frame_bearings
from server.config import Settings
from server.deps import SCENE_ID_PATTERN, Annotator, FrameDep, SceneDep, Viewer
from server.doc_store import DocumentStore, app_store
from server.document_schemas import BearingTracksDocument, BearingTracksWrite, DocumentRevision
from server.label_store import UnknownRevision
from server.responses import errors

KIND = "bearing_tracks"
router = APIRouter(prefix="/v1/scenes/{scene_id}/bearing-tracks", tags=["passive sonar"])
scene_router = APIRouter(prefix="/v1/scenes/{scene_id}", tags=["passive sonar"])
RevisionQuery = Annotated[int | None, Query(ge=0, le=2**62, description="the document at this revision")]


def install(app: FastAPI, settings: Settings) -> None:
    """Open the document store and add the routes."""
    app_store(app, settings.label_db_path)
    app.include_router(router, responses=errors(401))
    app.include_router(scene_router, responses=errors(401))


async def _store(request: Request) -> DocumentStore:
    return request.app.state.documents


Store = Annotated[DocumentStore, Depends(_store)]


@router.get("", response_model=BearingTracksDocument, responses=errors(404))
def get_bearing_tracks(_: Viewer, scene: SceneDep, store: Store, revision: RevisionQuery = None
                       ) -> BearingTracksDocument:
    """The scene's bearing tracks (revision 0 and no tracks before the first save)."""
    try:
        rev, body = store.get(scene.scene_id, KIND, revision)
    except UnknownRevision as exc:
        raise HTTPException(404, str(exc)) from None
    return BearingTracksDocument(scene_id=scene.scene_id, revision=rev, tracks=(body or {}).get("tracks", []))


@router.put("", response_model=BearingTracksDocument, responses=errors(404, 412, 413))
def put_bearing_tracks(who: Annotator, scene: SceneDep, store: Store, doc: BearingTracksWrite
                       ) -> BearingTracksDocument:
    """Replace the document; ``expected_revision`` must be the current revision."""
    body = {"tracks": [t.model_dump(mode="json") for t in doc.tracks]}
    rev = store.save(scene.scene_id, KIND, body, doc.expected_revision, who.name)
    return BearingTracksDocument(scene_id=scene.scene_id, revision=rev, tracks=doc.tracks)


@router.get("/history", response_model=list[DocumentRevision], responses=errors(404))
def bearing_track_history(_: Viewer, scene: SceneDep, store: Store,
                          limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[DocumentRevision]:
    """Who saved which revision when, newest first."""
    return [DocumentRevision(**r) for r in store.history(scene.scene_id, KIND, limit)]


@scene_router.get("/passive", responses=errors(404))
def list_passive(_: Viewer, scene: SceneDep) -> list[dict[str, Any]]:
    """The scene's hydrophone arrays and their bearing-time records."""
    return array_listing(scene)


@scene_router.get("/frames/{index}/bearings", responses=errors((404, "no such scene, frame or array")))
def get_bearings(
    _: Viewer, scene: SceneDep, entry: FrameDep, store: Store,
    frame: Annotated[Literal["world", "ego"], Query(description="world (scene origin) or the frame's ego")] = "world",
    range_m: Annotated[float, Query(ge=10, le=100_000, description="length of each ray's segment, m")] = 2000.0,
    peak_db: Annotated[float, Query(ge=0, le=60, description="peaks within this of the row's maximum, dB")] = 6.0,
    max_peaks: Annotated[int, Query(ge=1, le=32, description="peaks per array, strongest first")] = 4,
    array: Annotated[str | None, Query(pattern=SCENE_ID_PATTERN, description="only this array")] = None,
) -> dict[str, Any]:
    """The frame's bearings as rays and camera polylines (see the module docstring)."""
    if array is not None and all(p.array != array for p in scene.passive):
        raise HTTPException(404, f"scene {scene.scene_id!r} has no passive layer of array {array!r}")
    revision, body = store.get(scene.scene_id, KIND)
    out = frame_bearings(scene, entry, bearing_tracks(body), frame=frame, range_m=range_m, within_db=peak_db,
                         max_peaks=max_peaks, array=array)
    return dict(out, tracks_revision=revision)
