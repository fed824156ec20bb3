"""What the label routes share: revisions as ETags, ``If-Match``, the JSON bodies built from
stored tracks, the keyframe-time check, 412 answers.

Documents are answered by joining the stored JSON of the tracks (no parse and dump per
request), so a GET costs a read of the rows and a PATCH's answer only the tracks it names.
"""

from __future__ import annotations

import json
import re

from fastapi import HTTPException, Request, Response
from fastapi.responses import JSONResponse

from formats.scene_store import Scene
from server.errors import invalid
from server.label_store import StaleRevision, TrackConflict
from server.schemas import Keyframe

_IF_MATCH = re.compile(r'(?:W/)?"?r?(\d{1,18})(?:-gz)?"?')
IF_MATCH_PATTERN = r'^(\*|(W/)?"?r?[0-9]{1,18}(-gz)?"?)$'
IF_MATCH = {"parameters": [{
    "name": "If-Match", "in": "header", "required": True, "schema": {"type": "string", "pattern": IF_MATCH_PATTERN},
    "description": '"r<revision>" (the ETag of a GET): refused with 412 unless the document is still at that '
                   "revision; * : no document check (per-track checks with base). Absent: 428",
}]}


def etag(revision: int) -> str:
    return f'"r{revision}"'


def expected_revision(request: Request) -> int | None:
    """The document revision ``If-Match`` names (None for ``*``); 428 without it, 422 if malformed."""
    value = request.headers.get("if-match")
    if value is None:
        raise HTTPException(428, "If-Match with the document's ETag (or *) is required for writes")
    if value.strip() == "*":
        return None
    m = _IF_MATCH.fullmatch(value.strip())
    if m is None:
        raise invalid(("header", "if-match"), 'expected "r<revision>" or *', value)
    return int(m.group(1))


def tracks_json(rows: list[tuple[str, int, str | None]]) -> str:
    """``"tracks":[...],"track_revisions":{...}`` of stored rows (id, revision, body JSON; None
    bodies are left out)."""
    kept = [(tid, rev, body) for tid, rev, body in rows if body is not None]
    revisions = ",".join(f"{json.dumps(tid)}:{rev}" for tid, rev, _ in kept)
    return f'"tracks":[{",".join(body for _, _, body in kept)}],"track_revisions":{{{revisions}}}'


def document_json(scene_id: str, revision: int, rows: list[tuple[str, int, str]]) -> bytes:
    """A :class:`~server.schemas.LabelsResponse` body."""
    return f'{{"scene_id":{json.dumps(scene_id)},"revision":{revision},{tracks_json(rows)}}}'.encode()


def written(scene_id: str, revision: int, tracks: dict[str, tuple[int, str | None]]) -> Response:
    """The answer to a write (:class:`~server.schemas.TracksResponse`): the tracks it named, now."""
    rows = [(tid, rev, body) for tid, (rev, body) in sorted(tracks.items())]
    deleted = json.dumps([tid for tid, _, body in rows if body is None])
    body = f'{{"scene_id":{json.dumps(scene_id)},"revision":{revision},{tracks_json(rows)},"deleted":{deleted}}}'
    return Response(body.encode(), media_type="application/json", headers={"ETag": etag(revision)})


def check_times(scene: Scene, keyframes: list[Keyframe], loc: tuple[str | int, ...]) -> None:
    """422 unless each keyframe lies within the scene (first to last frame timestamp)."""
    lo = scene.frames[0].timestamp_ns if scene.frames else None
    hi = scene.frames[-1].timestamp_ns if scene.frames else None
    for j, k in enumerate(keyframes):
        if lo is None or not lo <= k.timestamp_ns <= hi:
            raise invalid(loc + (j, "timestamp_ns"),
                          f"timestamp_ns {k.timestamp_ns} is outside the scene [{lo}, {hi}]", k.timestamp_ns)


def stale(exc: StaleRevision) -> JSONResponse:
    """412 for a stale ``If-Match``: the current revision in the body and the ETag."""
    return JSONResponse({"detail": f"revision {exc.expected} is stale; current is {exc.current}",
                         "revision": exc.current, "conflicts": []}, 412, headers={"ETag": etag(exc.current)})


def conflict(exc: TrackConflict) -> JSONResponse:
    """412 for tracks changed since their base revisions: each with its revision and body now."""
    return JSONResponse({
        "detail": f"tracks {', '.join(c.track_id for c in exc.conflicts)} changed since the revisions in base",
        "revision": exc.current,
        "conflicts": [{"id": c.track_id, "base": c.base, "revision": c.revision, "track": c.track}
                      for c in exc.conflicts],
    }, 412, headers={"ETag": etag(exc.current)})
