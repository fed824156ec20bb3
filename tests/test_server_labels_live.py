"""Labels against a real uvicorn on 127.0.0.1 (in a thread): 16 annotators editing their own
tracks at once, the server-sent event stream with two clients, replay after a reconnect, and
the bound on what a client that does not read can hold."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from server.config import Settings
from server.label_events import LabelEvents, stream
from server.label_store import Commit
from server.main import create_app
from tests.server_scene import car_track, write_scene

N_ANNOTATORS, WRITES_EACH = 16, 12
TOKENS = [{"token": f"annotator-token-{k}", "role": "annotator", "name": f"ann{k}"} for k in range(N_ANNOTATORS)]
URL = "/v1/scenes/demo/labels"


def auth(k: int) -> dict[str, str]:
    return {"Authorization": f"Bearer annotator-token-{k}"}


@contextmanager
def live_server(app) -> Iterator[str]:
    """``app`` served by uvicorn in a thread on a port of 127.0.0.1 bound here."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS), warmup=False))
    with live_server(app) as url:
        yield url, app
    assert app.state.fathom.server_errors == 0


def track(tid: str, x: float) -> dict:
    return dict(car_track(), id=tid, keyframes=[dict(k, center=[x, 0.0, 0.7]) for k in car_track()["keyframes"]])


def events(response: httpx.Response) -> Iterator[dict]:
    """Server-sent events of a streamed response as ``{"event", "id", "data"}``, comments skipped."""
    event: dict = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            event[name] = json.loads(value) if name == "data" else value


def test_16_annotators_on_their_own_tracks_lose_nothing_and_rarely_retry(served):
    """Each annotator creates its track (base 0) and edits it from the revision it last got
    back (``If-Match: *`` + base): every write succeeds the first time, none is lost."""
    url, _ = served
    first_try, retried, final = [0] * N_ANNOTATORS, [0] * N_ANNOTATORS, {}
    barrier = threading.Barrier(N_ANNOTATORS)

    def annotator(k: int) -> None:
        tid, rev = f"ann{k}-car", 0
        with httpx.Client(base_url=url, headers={**auth(k), "If-Match": "*"}, timeout=30) as c:
            barrier.wait()
            for j in range(WRITES_EACH):
                body = {"upsert": [track(tid, float(j))], "base": {tid: rev}}
                while (r := c.patch(URL, json=body)).status_code == 412:  # retry on the track now
                    retried[k] += 1
                    body["base"][tid] = r.json()["conflicts"][0]["revision"]
                assert r.status_code == 200, r.text
                first_try[k] += 1 if body["base"][tid] == rev else 0
                rev = r.json()["track_revisions"][tid]
            final[tid] = rev

    threads = [threading.Thread(target=annotator, args=(k,)) for k in range(N_ANNOTATORS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    total = N_ANNOTATORS * WRITES_EACH
    assert sum(first_try) >= 0.99 * total and sum(retried) <= 0.01 * total
    doc = httpx.get(url + URL, headers=auth(0)).json()
    mine = {t["id"]: t for t in doc["tracks"] if t["id"].endswith("-car")}
    assert {tid: t["keyframes"][0]["center"][0] for tid, t in mine.items()} == {
        f"ann{k}-car": float(WRITES_EACH - 1) for k in range(N_ANNOTATORS)}  # every annotator's last write
    assert {tid: doc["track_revisions"][tid] for tid in mine} == final
    history = httpx.get(f"{url}{URL}/tracks/ann3-car/history?limit=1000", headers=auth(0)).json()
    assert len(history) == WRITES_EACH and {h["author"] for h in history} == {"ann3"}


def test_two_clients_see_each_write_with_its_tracks_and_author(served):
    url, app = served
    got: list[list[dict]] = [[], []]
    ready = threading.Barrier(3)

    def listen(i: int) -> None:
        with httpx.stream("GET", url + URL + "/events", headers=auth(i), timeout=20) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            for e in events(r):
                got[i].append(e)
                if e["event"] == "hello":
                    ready.wait()
                elif len(got[i]) == 4:
                    return

    listeners = [threading.Thread(target=listen, args=(i,)) for i in range(2)]
    for t in listeners:
        t.start()
    ready.wait(20)
    with httpx.Client(base_url=url, headers={"If-Match": "*"}) as c:
        revs = [c.patch(URL, headers=auth(5), json={"upsert": [track("ev-a", 1.0), track("ev-b", 2.0)]}),
                c.patch(URL, headers=auth(6), json={"update": [{"id": "ev-b", "category": "van"}]}),
                c.patch(URL, headers=auth(5), json={"delete": ["ev-a"]})]
    for t in listeners:
        t.join(20)
    want = [(str(r.json()["revision"]), r.json()["revision"], author, tracks) for r, author, tracks in
            zip(revs, ["ann5", "ann6", "ann5"], [["ev-a", "ev-b"], ["ev-b"], ["ev-a"]])]
    for seen in got:
        assert seen[0]["event"] == "hello" and seen[0]["data"]["revision"] == revs[0].json()["revision"] - 1
        assert [(e["id"], e["data"]["revision"], e["data"]["author"], e["data"]["tracks"]) for e in seen[1:]] == want
        assert {e["event"] for e in seen[1:]} == {"revision"} and all(e["data"]["op"] == "patch" for e in seen[1:])
    deadline = time.monotonic() + 10  # closed streams leave the broker
    while app.state.label_events.subscribers("demo") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app.state.label_events.subscribers("demo") == 0


def test_a_reconnecting_client_gets_what_it_missed(served):
    url, _ = served
    with httpx.Client(base_url=url, headers={**auth(1), "If-Match": "*"}) as c:
        start = c.get(URL).json()["revision"]
        for j in range(3):
            c.patch(URL, json={"upsert": [track("replay", float(j))]})
        with c.stream("GET", URL + "/events", headers={"Last-Event-ID": str(start + 1)}, timeout=20) as r:
            seen = []
            for e in events(r):
                seen.append(e)
                if len(seen) == 3:
                    break
    assert seen[0] == {"event": "hello", "data": {"revision": start + 3}}
    assert [e["data"]["revision"] for e in seen[1:]] == [start + 2, start + 3]
    assert httpx.get(url + URL + "/events", headers={**auth(1), "Last-Event-ID": "x"}).status_code == 422


def _commit(revision: int) -> Commit:
    return Commit("demo", revision, "patch", "ann0", 0, ("t",))


def test_a_subscriber_that_does_not_read_is_dropped_with_a_bounded_queue():
    async def run() -> tuple[list[bytes], int, int]:
        events_ = LabelEvents(max_pending=4)
        events_.start()
        sub = events_.subscribe("demo")
        for rev in range(1, 11):  # nobody reads: the fifth announcement drops the subscriber
            events_.publish(_commit(rev))
        await asyncio.sleep(0.05)
        held, subscribers = len(sub.pending), events_.subscribers("demo")
        chunks = [c async for c in stream(events_, sub, [], b"", 0, heartbeat_s=5)]
        return chunks, held, subscribers

    chunks, held, subscribers = asyncio.run(run())
    assert held == 4 and subscribers == 0
    assert [next(x for x in c.split(b"\n") if x.startswith(b"event:")) for c in chunks[1:]] == (
        [b"event: revision"] * 4 + [b"event: reset"])
    assert b"slow client" in chunks[-1]


def test_streams_end_when_the_events_close():
    async def run() -> list[bytes]:
        events_ = LabelEvents()
        events_.start()
        sub = events_.subscribe("demo")
        body = stream(events_, sub, [{"revision": 3, "op": "put", "author": "a", "at_ns": 1, "tracks": []}],
                      b"hello", 2, heartbeat_s=0.01)
        out = [await anext(body) for _ in range(3)]  # hello, the backlog, a heartbeat
        events_.publish(_commit(3))  # already sent from the backlog: skipped
        events_.publish(_commit(4))
        await asyncio.sleep(0.05)
        events_.close()
        out += [c async for c in body]
        assert events_.subscribe("demo").ended == "shutdown"
        return out

    out = asyncio.run(run())
    assert out[0] == b"hello" and out[1].startswith(b"id: 3\nevent: revision") and out[2] == b": ping\n\n"
    rest = [c for c in out[3:] if c != b": ping\n\n"]
    assert rest[0].startswith(b"id: 4\n") and rest[1].startswith(b"event: close") and len(rest) == 2
