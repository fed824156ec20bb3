"""Passive-sonar labels: a scene's bearing tracks (contacts on the bearing-time record: time,
ego-frame azimuth, band, class) as one revisioned document (:mod:`server.doc_store`). GET:
viewer (``?revision=`` for an older one); PUT: annotator, the whole document with the revision
it was based on (412 when stale); history: viewer."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request

from server.config import Settings
from server.deps import Annotator, SceneDep, Viewer
from server.doc_store import DocumentStore, app_store
from server.document_schemas import BearingTracksDocument, BearingTracksWrite, DocumentRevision
from server.label_store import UnknownRevision
from server.responses import errors

KIND = "bearing_tracks"
router = APIRouter(prefix="/v1/scenes/{scene_id}/bearing-tracks", tags=["passive sonar"])
RevisionQuery = Annotated[int | None, Query(ge=0, le=2**62, description="the document at this revision")]


def install(app: FastAPI, settings: Settings) -> None:
    """Open the document store and add the routes."""
    app_store(app, settings.label_db_path)
    app.include_router(router, responses=errors(401))


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
