"""Labels: the whole document (GET/PUT), per-track changes (PATCH), the write history.

Every write must carry ``If-Match`` with the revision it was based on (the ``ETag`` of a
GET, ``"r<revision>"``; the gzip variant ``"r<revision>-gz"`` and ``*`` are accepted too):
a stale revision → 412 and nothing changes; no ``If-Match`` → 428. Keyframe timestamps must
lie within the scene (first to last frame timestamp).
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response

from formats.scene_store import Scene
from server.deps import Admin, Annotator, SceneDep, State, Viewer
from server.errors import invalid
from server.label_store import StaleRevision
from server.payloads import Payload, respond
from server.schemas import HistoryEntry, Keyframe, LabelDocument, LabelPatch, LabelsResponse

router = APIRouter(prefix="/v1", tags=["labels"])

IfMatch = Annotated[str | None, Header(description='"r<revision>" from the ETag of a GET, or *')]
_WRITE_RESPONSES: dict[int | str, dict[str, Any]] = {
    412: {"description": "stale revision: the document changed since"},
    428: {"description": "If-Match is required"},
}


def _etag(revision: int) -> str:
    return f'"r{revision}"'


def _expected_revision(if_match: str | None) -> int | None:
    if if_match is None:
        raise HTTPException(428, "If-Match with the document's ETag is required for writes")
    value = if_match.strip()
    if value == "*":
        return None
    m = re.fullmatch(r'(?:W/)?"?r?(\d{1,18})(?:-gz)?"?', value)
    if m is None:
        raise invalid(("header", "if-match"), 'expected "r<revision>" or *', if_match)
    return int(m.group(1))


def _check_times(scene: Scene, keyframes: list[Keyframe], loc: tuple[str | int, ...]) -> None:
    lo = scene.frames[0].timestamp_ns if scene.frames else None
    hi = scene.frames[-1].timestamp_ns if scene.frames else None
    for j, k in enumerate(keyframes):
        if lo is None or not lo <= k.timestamp_ns <= hi:
            raise invalid(loc + (j, "timestamp_ns"),
                          f"timestamp_ns {k.timestamp_ns} is outside the scene [{lo}, {hi}]", k.timestamp_ns)


def _response(scene_id: str, revision: int, doc: dict[str, Any]) -> Response:
    body = LabelsResponse.model_validate({"scene_id": scene_id, "revision": revision, **doc})
    return Response(body.model_dump_json(), media_type="application/json", headers={"ETag": _etag(revision)})


@router.get("/scenes/{scene_id}/labels", response_model=LabelsResponse,
            responses={304: {"description": "not modified (If-None-Match)"}})
def get_labels(_: Viewer, scene: SceneDep, state: State, request: Request) -> Response:
    revision, doc = state.labels.get(scene.scene_id)
    body = json.dumps({"scene_id": scene.scene_id, "revision": revision, **doc}, separators=(",", ":")).encode()
    return respond(request, Payload(body, "application/json", _etag(revision)), None, state.settings.gzip_level)


@router.put("/scenes/{scene_id}/labels", response_model=LabelsResponse, responses=_WRITE_RESPONSES)
def put_labels(who: Annotator, scene: SceneDep, state: State, document: LabelDocument,
               if_match: IfMatch = None) -> Response:
    """Replace the whole label document."""
    expected = _expected_revision(if_match)
    for i, track in enumerate(document.tracks):
        _check_times(scene, track.keyframes, ("body", "tracks", i, "keyframes"))
    new = document.model_dump(mode="json")
    try:
        revision, doc = state.labels.write(scene.scene_id, expected, lambda _: new, op="put", author=who.name, record=new)
    except StaleRevision as exc:
        raise HTTPException(412, f"revision {expected} is stale; current is {exc.current}",
                            headers={"ETag": _etag(exc.current)}) from None
    return _response(scene.scene_id, revision, doc)


@router.patch("/scenes/{scene_id}/labels", response_model=LabelsResponse, responses=_WRITE_RESPONSES)
def patch_labels(who: Annotator, scene: SceneDep, state: State, patch: LabelPatch,
                 if_match: IfMatch = None) -> Response:
    """Per-track changes: ``upsert`` whole tracks, ``update`` fields of existing ones, ``delete`` ids.
    Unknown ids in ``update``/``delete`` → 422."""
    expected = _expected_revision(if_match)
    for i, track in enumerate(patch.upsert):
        _check_times(scene, track.keyframes, ("body", "upsert", i, "keyframes"))
    for i, upd in enumerate(patch.update):
        if upd.keyframes is not None:
            _check_times(scene, upd.keyframes, ("body", "update", i, "keyframes"))

    def change(doc: dict[str, Any]) -> dict[str, Any]:
        tracks = {t["id"]: t for t in doc["tracks"]}
        for i, upd in enumerate(patch.update):
            if upd.id not in tracks:
                raise invalid(("body", "update", i, "id"), f"unknown track id {upd.id!r}", upd.id)
            tracks[upd.id] = {**tracks[upd.id], **upd.model_dump(mode="json", exclude_unset=True, exclude_none=True)}
        for i, tid in enumerate(patch.delete):
            if tracks.pop(tid, None) is None:
                raise invalid(("body", "delete", i), f"unknown track id {tid!r}", tid)
        for t in patch.upsert:
            tracks[t.id] = t.model_dump(mode="json")
        return {"tracks": list(tracks.values())}

    try:
        revision, doc = state.labels.write(scene.scene_id, expected, change, op="patch", author=who.name,
                                           record=patch.model_dump(mode="json", exclude_unset=True))
    except StaleRevision as exc:
        raise HTTPException(412, f"revision {expected} is stale; current is {exc.current}",
                            headers={"ETag": _etag(exc.current)}) from None
    return _response(scene.scene_id, revision, doc)


@router.get("/scenes/{scene_id}/labels/history", response_model=list[HistoryEntry], tags=["admin"])
def label_history(
    _: Admin, scene: SceneDep, state: State,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[HistoryEntry]:
    """Accepted writes with revision > ``after``, oldest first."""
    return [HistoryEntry.model_validate(h) for h in state.labels.history(scene.scene_id, limit, after)]
