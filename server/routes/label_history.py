"""Label history: the revisions of a scene (admin), the changes of one track, and reverting
the document or some tracks to an earlier revision (a new revision, op ``revert``).

Every revision records its author (the name of the token that wrote it) and, per track it
changed, the track's body before and after: the document at any revision since the scene's
per-track history began is ``GET /v1/scenes/{id}/labels?revision=k``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi import Path as PathParam

from server.deps import Admin, Annotator, SceneDep, State, Viewer
from server.errors import invalid
from server.label_http import IF_MATCH, expected_revision, written
from server.label_store import Bodies, UnknownRevision
from server.ontology import checker
from server.responses import WRITE, errors
from server.schemas import (
    TRACK_ID_PATTERN,
    HistoryEntry,
    RevertRequest,
    TrackHistoryEntry,
    TracksResponse,
)

router = APIRouter(prefix="/v1", tags=["labels"])

After = Annotated[int, Query(ge=0, le=2**62, description="only revisions after this one")]
Limit = Annotated[int, Query(ge=1, le=1000)]
TrackIdParam = Annotated[str, PathParam(pattern=TRACK_ID_PATTERN, description="track id")]


@router.get("/scenes/{scene_id}/labels/history", response_model=list[HistoryEntry], tags=["admin"],
            responses=errors(403, 404))
def label_history(_: Admin, scene: SceneDep, state: State, after: After = 0, limit: Limit = 100) -> list[HistoryEntry]:
    """Revisions with revision > ``after``, oldest first: op, author, time, the tracks each changed."""
    return [HistoryEntry.model_validate(h) for h in state.labels.history(scene.scene_id, limit, after)]


@router.get("/scenes/{scene_id}/labels/tracks/{track_id}/history", response_model=list[TrackHistoryEntry],
            responses=errors((404, "no such scene, or a track it never had")))
def track_history(_: Viewer, scene: SceneDep, state: State, track_id: TrackIdParam, after: After = 0,
                  limit: Limit = 100) -> list[TrackHistoryEntry]:
    """Changes of one track with revision > ``after``, oldest first: op, author, time, its body
    before and after."""
    changes = state.labels.track_history(scene.scene_id, track_id, limit, after)
    if not changes and after == 0 and state.labels.revision(scene.scene_id, track_id) == 0:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no track {track_id!r} now or in its history")
    return [TrackHistoryEntry.model_validate(c) for c in changes]


@router.post("/scenes/{scene_id}/labels/revert", response_model=TracksResponse, openapi_extra=IF_MATCH,
             responses=errors(403, 404, *WRITE))
def revert(who: Annotator, scene: SceneDep, state: State, body: RevertRequest, request: Request) -> Response:
    """Make the document (or the tracks ``tracks``) what it was at ``revision``: a new revision,
    op ``revert``, changing only what differs. Answers the tracks it changed (or named)."""
    expected = expected_revision(request)
    check = checker(state.labels.ontology(scene.scene_id))

    def check_bodies(bodies: Bodies) -> None:
        if check is not None:
            for track in bodies.values():
                if track is not None:
                    check.check(track, ("body", "revision"))

    try:
        revision, tracks = state.labels.revert(scene.scene_id, expected, body.base, body.revision, body.tracks,
                                               check_bodies, author=who.name)
    except UnknownRevision as exc:
        raise invalid(("body", "revision"), str(exc), body.revision) from None
    return written(scene.scene_id, revision, tracks)
