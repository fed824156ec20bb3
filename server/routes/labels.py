"""Labels: the whole document (GET, PUT) and per-track changes (PATCH).

A GET answers the document (tracks in the order they were created; a PUT adds its new tracks
in its order), its revision (ETag ``"r<revision>"``) and each track's revision
(``track_revisions``: the revision that last changed it); with ``?revision=k``, the document
as it was at revision k.

Every write must carry ``If-Match``: the ETag of a GET (the gzip variant ``"r<n>-gz"`` too),
refused with 412 once the document changed, or ``*`` (no document check); no ``If-Match`` →
428. A PATCH may name in ``base`` the revision of each track it changes: it succeeds while
those tracks are unchanged, whatever else changed (send ``If-Match: *``), and is refused with
412 naming each changed track with its revision and body now. Keyframe timestamps must lie
within the scene (first to last frame timestamp); when the scene has an ontology, categories
and attributes must be in it (422 naming them).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response

from server.deps import Annotator, SceneDep, State, Viewer
from server.errors import invalid
from server.label_http import IF_MATCH, check_times, document_json, etag, expected_revision, written
from server.label_store import Bodies, UnknownRevision
from server.ontology import OntologyCheck, checker
from server.payloads import Payload, respond
from server.responses import WRITE, errors
from server.schemas import LabelDocument, LabelPatch, LabelsResponse, TracksResponse

router = APIRouter(prefix="/v1", tags=["labels"])


@router.get("/scenes/{scene_id}/labels", response_model=LabelsResponse,
            responses=errors(304, (404, "no such scene, or no such revision in its history")))
def get_labels(
    _: Viewer, scene: SceneDep, state: State, request: Request,
    revision: Annotated[int | None, Query(ge=0, le=2**62, description="the document at this revision")] = None,
) -> Response:
    """The label document now, or at ``revision`` (back to the start of the scene's per-track
    history)."""
    try:
        current, rows = state.labels.document(scene.scene_id, revision)
    except UnknownRevision as exc:
        raise HTTPException(404, str(exc)) from None
    body = document_json(scene.scene_id, current, rows)
    return respond(request, Payload(body, "application/json", etag(current)), None, state.settings.gzip_level)


@router.put("/scenes/{scene_id}/labels", response_model=LabelsResponse, openapi_extra=IF_MATCH,
            responses=errors(403, 404, *WRITE))
def put_labels(who: Annotator, scene: SceneDep, state: State, document: LabelDocument, request: Request) -> Response:
    """Replace the whole label document; tracks whose body does not change keep their revision."""
    expected = expected_revision(request)
    check = checker(state.labels.ontology(scene.scene_id))
    for i, track in enumerate(document.tracks):
        check_times(scene, track.keyframes, ("body", "tracks", i, "keyframes"))
    new = document.model_dump(mode="json")
    if check is not None:
        for i, track in enumerate(new["tracks"]):
            check.check(track, ("body", "tracks", i))
    revision, _ = state.labels.write(scene.scene_id, expected, lambda _: new, op="put", author=who.name)
    _, rows = state.labels.document(scene.scene_id, revision)
    return Response(document_json(scene.scene_id, revision, rows), media_type="application/json",
                    headers={"ETag": etag(revision)})


@router.patch("/scenes/{scene_id}/labels", response_model=TracksResponse, openapi_extra=IF_MATCH,
              responses=errors(403, 404, *WRITE))
def patch_labels(who: Annotator, scene: SceneDep, state: State, patch: LabelPatch, request: Request) -> Response:
    """Per-track changes: ``upsert`` whole tracks, ``update`` fields of existing ones, ``delete``
    ids; ``base`` the track revisions they were based on. Unknown ids in ``update``/``delete``
    → 422. Answers the new revision and the tracks it named, as they are now."""
    expected = expected_revision(request)
    for i, track in enumerate(patch.upsert):
        check_times(scene, track.keyframes, ("body", "upsert", i, "keyframes"))
    for i, upd in enumerate(patch.update):
        if upd.keyframes is not None:
            check_times(scene, upd.keyframes, ("body", "update", i, "keyframes"))
    check = checker(state.labels.ontology(scene.scene_id))

    def change(current: Bodies) -> Bodies:
        new: Bodies = {}
        for i, upd in enumerate(patch.update):
            old = current[upd.id]
            if old is None:
                raise invalid(("body", "update", i, "id"), f"unknown track id {upd.id!r}", upd.id)
            new[upd.id] = {**old, **upd.model_dump(mode="json", exclude_unset=True, exclude_none=True)}
        for i, tid in enumerate(patch.delete):
            if current[tid] is None:
                raise invalid(("body", "delete", i), f"unknown track id {tid!r}", tid)
            new[tid] = None
        for t in patch.upsert:
            new[t.id] = t.model_dump(mode="json")
        if check is not None:
            _check_named(check, patch, new)
        return new

    revision, tracks = state.labels.patch(scene.scene_id, expected, patch.base, patch.ids(), change, op="patch",
                                          author=who.name)
    return written(scene.scene_id, revision, tracks)


def _check_named(check: OntologyCheck, patch: LabelPatch, new: Bodies) -> None:
    """The ontology check of the upserted and updated tracks, each named where it is in the patch."""
    for key, items in (("upsert", patch.upsert), ("update", patch.update)):
        for i, item in enumerate(items):
            check.check(new[item.id], ("body", key, i))
