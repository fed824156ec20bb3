"""Live label updates as server-sent events (``text/event-stream``), one stream per scene.

Events: ``hello`` (data ``{"revision"}``: the document's revision when the stream opened),
then one ``revision`` per accepted write (id: the revision; data ``{"revision", "op",
"author", "at_ns", "tracks"}``: the ids of the tracks it changed), a ``: ping`` comment every
15 s while idle; a last ``reset`` (the client fell behind: reconnect, GET the labels again if
it says so) or ``close`` (server shutdown) before the stream ends. With ``Last-Event-ID``
(what browsers send when they reconnect) or ``?after=``, the revisions after it are sent
first, from the history (up to 1,000; more → ``reset``: GET the labels again).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from server.deps import SceneDep, State, Viewer
from server.errors import invalid
from server.label_events import LabelEvents, sse, stream
from server.responses import errors

router = APIRouter(prefix="/v1", tags=["labels"])

REPLAY_LIMIT = 1000
_STREAM = {200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                 "description": "server-sent events (see the module docstring)"}}


@router.get("/scenes/{scene_id}/labels/events", response_class=StreamingResponse,
            responses=_STREAM | errors(404))
async def label_events(
    _: Viewer, scene: SceneDep, state: State, request: Request,
    after: Annotated[int | None, Query(ge=0, le=2**62, description="send the revisions after this one first")] = None,
    last_event_id: Annotated[str | None, Header(max_length=20, description="as after (sent by reconnecting "
                                                                           "browsers)")] = None,
) -> StreamingResponse:
    """Announcements of the scene's label writes as they happen (see the module docstring)."""
    if after is None and last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise invalid(("header", "last-event-id"), "expected a revision number", last_event_id)
        after = int(last_event_id.strip())
    events: LabelEvents = request.app.state.label_events
    sub = events.subscribe(scene.scene_id)  # before reading: no write falls between
    try:
        current = await run_in_threadpool(state.labels.revision, scene.scene_id)
        backlog = []
        if after is not None and after < current:
            backlog = await run_in_threadpool(state.labels.history, scene.scene_id, REPLAY_LIMIT + 1, after)
    except BaseException:
        events.unsubscribe(sub)
        raise
    first = sse("hello", {"revision": current})
    if len(backlog) > REPLAY_LIMIT:
        first += sse("reset", {"reason": f"more than {REPLAY_LIMIT} revisions since {after}: GET the labels again"})
        backlog = []
    body = stream(events, sub, backlog, first, current if not backlog else after)
    return StreamingResponse(body, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
