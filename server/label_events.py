"""Live label updates: every accepted write announced to the scene's subscribers as server-sent
events (``GET /v1/scenes/{id}/labels/events``, see :mod:`server.routes.events`).

:class:`LabelEvents` is a :class:`~server.label_store.LabelStore` listener. Writes happen in
worker threads; announcements reach the subscribers on the event loop, in commit order.

Bounded: a subscriber holds at most ``max_pending`` announcements its connection has not
taken yet; one more and it is dropped (its stream sends what it holds, then ``event: reset``
and ends; the client reconnects with ``Last-Event-ID`` and catches up from the store), so a
client that does not read costs at most that much memory. On shutdown every stream ends with
``event: close``: uvicorn waits for open responses before it shuts the app down, so
:meth:`LabelEvents.start` chains a handler to the exit signals (SIGINT, SIGTERM) that ends
the streams first.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from typing import Any

from server.label_store import Commit

HEARTBEAT_S = 15.0  # a comment line this often: proxies keep the stream, a gone client is noticed


class Subscription:
    """One stream's queue: announcements not yet written, and why it ended (None: open)."""

    def __init__(self, scene_id: str, max_pending: int):
        self.scene_id = scene_id
        self.max_pending = max_pending
        self.pending: deque[Commit] = deque()
        self.wake = asyncio.Event()
        self.ended: str | None = None

    def offer(self, commit: Commit) -> bool:
        """Queue ``commit``; False (and ended "slow client") when the queue is full."""
        if len(self.pending) >= self.max_pending:
            self.end(f"slow client: more than {self.max_pending} announcements not taken")
            return False
        self.pending.append(commit)
        self.wake.set()
        return True

    def end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self.wake.set()


class LabelEvents:
    """Subscriptions per scene; :meth:`publish` from any thread, the rest on the event loop."""

    def __init__(self, max_pending: int = 256):
        self.max_pending = max_pending
        self.closed = False
        self._subs: dict[str, set[Subscription]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        """On the event loop at start-up: announcements go to this loop; exit signals end the streams."""
        loop = self._loop = asyncio.get_running_loop()
        self.closed = False
        _before_exit_signals(lambda: loop.call_soon_threadsafe(self.close))

    def publish(self, commit: Commit) -> None:
        """The store's listener (any thread): announce ``commit`` to the scene's subscribers."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._deliver, commit)

    def _deliver(self, commit: Commit) -> None:
        subs = self._subs.get(commit.scene_id, set())
        for sub in [s for s in subs if not s.offer(commit)]:
            subs.discard(sub)

    def subscribe(self, scene_id: str) -> Subscription:
        sub = Subscription(scene_id, self.max_pending)
        if self.closed:
            sub.end("shutdown")
        else:
            self._subs.setdefault(scene_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.scene_id)
        if subs is not None:
            subs.discard(sub)
            if not subs:
                del self._subs[sub.scene_id]

    def subscribers(self, scene_id: str) -> int:
        return len(self._subs.get(scene_id, ()))

    def close(self) -> None:
        """End every stream (shutdown); later subscriptions end at once."""
        self.closed = True
        for subs in self._subs.values():
            for sub in subs:
                sub.end("shutdown")
        self._subs.clear()


def _before_exit_signals(callback: Callable[[], None]) -> None:
    """Call ``callback`` before the handler of SIGINT/SIGTERM installed now, where a server
    installed one (uvicorn does, and restores its predecessors when it exits); from the main
    thread only, and not over Python's defaults."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if callable(previous) and previous is not signal.default_int_handler:
            def handler(signum: int, frame: Any, previous: Callable[..., Any] = previous) -> None:
                callback()
                previous(signum, frame)

            signal.signal(sig, handler)


def sse(event: str, data: dict[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event (UTF-8; ``data`` as one line of JSON)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def announcement(commit: Commit | dict[str, Any]) -> bytes:
    """``event: revision`` with ``{revision, op, author, at_ns, tracks}``; id: the revision."""
    d = asdict(commit) if isinstance(commit, Commit) else commit
    data = {k: d[k] for k in ("revision", "op", "author", "at_ns", "tracks")}
    return sse("revision", data, data["revision"])


async def stream(events: LabelEvents, sub: Subscription, backlog: list[dict[str, Any]], first: bytes,
                 after: int | None, heartbeat_s: float = HEARTBEAT_S) -> AsyncIterator[bytes]:
    """The event stream of ``sub``: ``first``, the ``backlog`` (history entries after ``after``),
    then each announcement with a revision above the last sent, a comment every
    ``heartbeat_s`` while idle, and a last ``reset`` or ``close`` event when it ends."""
    last = after if after is not None else -1
    try:
        yield first
        for entry in backlog:
            yield announcement(entry)
            last = entry["revision"]
        while True:
            if not sub.pending and sub.ended is None:
                try:
                    await asyncio.wait_for(sub.wake.wait(), heartbeat_s)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
            sub.wake.clear()
            while sub.pending:
                commit = sub.pending.popleft()
                if commit.revision > last:
                    yield announcement(commit)
                    last = commit.revision
            if sub.ended is not None:
                yield sse("close" if sub.ended == "shutdown" else "reset", {"reason": sub.ended})
                return
    finally:
        events.unsubscribe(sub)
