"""Bearing tracks through the API: stored and revisioned as one document, stale saves refused,
bad bodies refused naming the field; the document store on its own."""

from __future__ import annotations

import json
import math
import threading

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.passive.bearings import BearingTrack
from server.config import Settings
from server.doc_store import DocumentStore
from server.label_store import StaleRevision, UnknownRevision
from server.main import create_app
from tests.server_scene import T0, write_scene

TOKENS = [{"token": "viewer-token", "role": "viewer", "name": "vera"},
          {"token": "annotator-token", "role": "annotator", "name": "alice"}]
V = {"Authorization": "Bearer viewer-token"}
A = {"Authorization": "Bearer annotator-token"}
URL = "/v1/scenes/demo/bearing-tracks"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    assert app.state.fathom.server_errors == 0


def contact(tid: str, az: tuple[float, ...] = (0.5, 0.7), band=(100.0, 500.0)) -> dict:
    return {"id": tid, "category": "merchant", "band_hz": list(band), "attributes": {"tonal_hz": 437.0},
            "keyframes": [{"timestamp_ns": T0 + i * 1_000_000_000, "azimuth_rad": a} for i, a in enumerate(az)]}


def test_save_read_back_and_older_revisions(client):
    first = client.get(URL, headers=V).json()
    assert first == {"scene_id": "demo", "revision": 0, "tracks": []}
    r1 = client.put(URL, headers=A, json={"expected_revision": 0, "tracks": [contact("c1")]})
    assert r1.status_code == 200 and r1.json()["revision"] == 1
    r2 = client.put(URL, headers=A, json={"expected_revision": 1, "tracks": [contact("c1", (0.5, 0.9)),
                                                                               contact("c2", (-3.0,))]})
    assert r2.json()["revision"] == 2
    now = client.get(URL, headers=V).json()
    assert [t["id"] for t in now["tracks"]] == ["c1", "c2"]
    assert now["tracks"][0]["keyframes"][1]["azimuth_rad"] == 0.9
    old = client.get(URL, headers=V, params={"revision": 1}).json()
    assert old["revision"] == 1 and old["tracks"] == [contact("c1")]
    assert client.get(URL, headers=V, params={"revision": 9}).status_code == 404
    history = client.get(f"{URL}/history", headers=V).json()
    assert [h["revision"] for h in history[:2]] == [2, 1] and history[0]["author"] == "alice"
    # the stored body is what the engine's BearingTrack takes
    t = now["tracks"][0]
    track = BearingTrack(t["id"], t["category"], np.array([k["timestamp_ns"] for k in t["keyframes"]]),
                         np.array([k["azimuth_rad"] for k in t["keyframes"]]), np.array(t["band_hz"]))
    assert track.at(np.array([T0 + 500_000_000]))[0][0] == pytest.approx(0.7)


def test_a_stale_save_is_412_and_changes_nothing(client):
    current = client.get(URL, headers=V).json()["revision"]
    r = client.put(URL, headers=A, json={"expected_revision": current - 1 if current else 5, "tracks": []})
    assert r.status_code == 412 and r.json()["revision"] == current
    assert client.get(URL, headers=V).json()["revision"] == current


def test_viewers_cannot_save(client):
    assert client.put(URL, headers=V, json={"expected_revision": 0, "tracks": []}).status_code == 403
    assert client.get(URL).status_code == 401
    assert client.get("/v1/scenes/nope/bearing-tracks", headers=V).status_code == 404


@pytest.mark.parametrize("change,field", [
    (dict(band_hz=[500.0, 100.0]), "band_hz"), (dict(band_hz=["1", 2.0]), "band_hz"),
    (dict(keyframes=[]), "keyframes"), (dict(id="bad id"), "id"), (dict(extra=1), "extra"),
    (dict(keyframes=[{"timestamp_ns": T0, "azimuth_rad": 7.0}]), "azimuth_rad"),
    (dict(keyframes=[{"timestamp_ns": T0, "azimuth_rad": 0.0}] * 2), "strictly increasing"),
])
def test_bad_tracks_are_refused_naming_the_field(client, change, field):
    current = client.get(URL, headers=V).json()["revision"]
    body = {"expected_revision": current, "tracks": [{**contact("x"), **change}]}
    r = client.put(URL, headers=A, json=body)
    assert r.status_code == 422 and field in json.dumps(r.json())
    twice = {"expected_revision": current, "tracks": [contact("y"), contact("y")]}
    assert "appears twice" in client.put(URL, headers=A, json=twice).text
    nan = json.dumps({"expected_revision": current, "tracks": [contact("z", (math.pi,))]}).replace("3.14159", "NaN")
    assert client.put(URL, headers={**A, "Content-Type": "application/json"}, content=nan).status_code == 422


def test_document_store_revisions_and_concurrent_savers(tmp_path):
    store = DocumentStore(tmp_path / "docs.sqlite3")
    assert store.get("s", "k") == (0, None)
    assert store.save("s", "k", {"a": 1}, 0, "x") == 1
    assert store.save("s", "other", {"b": 2}, 0, "x") == 1  # kinds are separate documents
    with pytest.raises(StaleRevision):
        store.save("s", "k", {"a": 2}, 0, "y")
    with pytest.raises(UnknownRevision):
        store.get("s", "k", 2)
    # eight savers race from revision 1: each revision is taken exactly once
    wins: list[int] = []

    def saver(i: int) -> None:
        rev = 1
        while True:
            try:
                wins.append(store.save("s", "k", {"a": i}, rev, f"w{i}"))
                return
            except StaleRevision as exc:
                rev = exc.current

    threads = [threading.Thread(target=saver, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == list(range(2, 10))
    assert store.get("s", "k")[0] == 9 and store.get("s", "k", 1) == (1, {"a": 1})
    store.close()
    reopened = DocumentStore(tmp_path / "docs.sqlite3")
    assert reopened.get("s", "other") == (1, {"b": 2}) and len(reopened.history("s", "k")) == 9
