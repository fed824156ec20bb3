"""A real uvicorn process on 127.0.0.1: concurrent writers lose no update, kill -9 loses no
acknowledged write."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.live_server import LiveServer
from tests.server_scene import TOKENS, car_track, write_scene

ROOT = Path(__file__).resolve().parents[1]
A = {"Authorization": "Bearer annotator-token-1"}


@pytest.fixture()
def server(tmp_path):
    write_scene(tmp_path / "scenes")
    env = {"FATHOM_SCENES_DIR": str(tmp_path / "scenes"), "FATHOM_LABEL_DB": str(tmp_path / "labels.sqlite3"),
           "FATHOM_TOKENS": json.dumps(TOKENS), "FATHOM_WARMUP": "false"}
    srv = LiveServer(lambda port: ["-m", "uvicorn", "--factory", "server.main:app_from_env", "--host", "127.0.0.1",
                                   "--port", str(port), "--log-level", "warning"], env)
    yield srv
    srv.stop()


def _track(name: str) -> dict:
    return dict(car_track(), id=name)


def test_concurrent_read_modify_write_loses_no_update(server):
    url = server.start()
    n_threads, per_thread = 8, 4
    errors: list[str] = []
    conflicts = [0]

    def writer(k: int) -> None:
        with httpx.Client(base_url=url, headers=A, timeout=30) as c:
            for j in range(per_thread):
                while True:
                    r = c.get("/v1/scenes/demo/labels", headers={"Accept-Encoding": "identity"})
                    doc = r.json()
                    tracks = doc["tracks"] + [_track(f"w{k}-{j}")]
                    w = c.put("/v1/scenes/demo/labels", json={"tracks": tracks},
                              headers={"If-Match": r.headers["etag"]})
                    if w.status_code == 200:
                        break
                    if w.status_code != 412:
                        errors.append(f"{w.status_code} {w.text}")
                        return
                    conflicts[0] += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    doc = httpx.get(url + "/v1/scenes/demo/labels", headers=A).json()
    ids = sorted(t["id"] for t in doc["tracks"])
    assert ids == sorted(f"w{k}-{j}" for k in range(n_threads) for j in range(per_thread))
    assert doc["revision"] == n_threads * per_thread
    assert conflicts[0] > 0  # the writers did collide, and the revisions resolved it


def test_kill_9_loses_no_acknowledged_write(server):
    """Writers PATCH per track (``If-Match: *`` + base): each creates tracks (base 0) and moves
    its own counter track on from the revision it got back. After SIGKILL and a restart every
    acknowledged write is there and the history has no gap."""
    url = server.start()
    acked: list[tuple[int, str]] = []
    counters: dict[int, list[int]] = {}
    stop = threading.Event()

    def writer(k: int) -> None:
        counter, rev, done = f"w{k}", 0, counters.setdefault(k, [])
        with httpx.Client(base_url=url, headers={**A, "If-Match": "*"}, timeout=10) as c:
            i = 0
            while not stop.is_set():
                name = f"t{k}-{i}"
                body = ({"upsert": [_track(name)], "base": {name: 0}} if i % 2 else
                        {"upsert": [dict(_track(counter), attributes={"n": i})], "base": {counter: rev}})
                try:
                    r = c.patch("/v1/scenes/demo/labels", json=body)
                except httpx.TransportError:
                    return  # the server died mid-request: not acknowledged
                assert r.status_code == 200, r.text
                if i % 2:
                    acked.append((r.json()["revision"], name))
                else:
                    rev = r.json()["track_revisions"][counter]
                    done.append(i)
                i += 1

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acked) < 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()  # SIGKILL while the writers are still sending
    stop.set()
    for t in threads:
        t.join()
    assert len(acked) >= 30
    url = server.start()
    doc = httpx.get(url + "/v1/scenes/demo/labels", headers=A).json()
    present = {t["id"]: t for t in doc["tracks"]}
    assert {name for _, name in acked} <= present.keys()
    for k, done in counters.items():  # the last acknowledged value, or the one sent when the server died
        assert present[f"w{k}"]["attributes"]["n"] in (done[-1], done[-1] + 2)
    assert doc["revision"] >= max(rev for rev, _ in acked)
    history = httpx.get(url + "/v1/scenes/demo/labels/history?limit=1000",
                        headers={"Authorization": "Bearer admin-token-1"}).json()
    assert [h["revision"] for h in history] == list(range(1, doc["revision"] + 1))


def test_sigterm_ends_the_event_streams_and_the_server(server):
    """uvicorn waits for open responses before it stops: the label event stream must end."""
    url = server.start()
    with httpx.stream("GET", url + "/v1/scenes/demo/labels/events", headers=A, timeout=5) as r:
        lines = r.iter_lines()
        assert next(lines) == "event: hello"
        server.proc.send_signal(signal.SIGTERM)
        rest = list(lines)  # the stream ends (a stream left open raises ReadTimeout: nothing within 5 s)
    assert "event: close" in rest and 'data: {"reason":"shutdown"}' in rest
    assert server.proc.wait(10) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
