"""Label API in-process: bad input never stored or answered 5xx, per-track revisions, history
rebuilt from its diffs, revert, ontology, and migration of the one-document database."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from fastapi.testclient import TestClient

from server.config import Settings
from server.label_store import LabelStore
from server.main import create_app
from server.schemas import Track
from tests.server_scene import DT, T0, car_track, write_scene

TOKENS = [
    {"token": "viewer-token-1", "role": "viewer", "name": "vera"},
    {"token": "annotator-token-1", "role": "annotator", "name": "alice"},
    {"token": "annotator-token-2", "role": "annotator", "name": "bob"},
    {"token": "admin-token-1", "role": "admin", "name": "root"},
]
V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}
B = {"Authorization": "Bearer annotator-token-2"}
ADMIN = {"Authorization": "Bearer admin-token-1"}
URL = "/v1/scenes/demo/labels"


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, app
    assert app.state.fathom.server_errors == 0  # no request of this module reached the 500 handler


@pytest.fixture()
def client(env):
    """The module's client, the scene's labels emptied and its ontology removed."""
    c = env[0]
    assert c.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": []}).status_code == 200
    assert c.delete("/v1/scenes/demo/ontology", headers=ADMIN).status_code == 204
    return c


def track(tid: str, category: str = "car", x: float = 10.0) -> dict:
    return dict(car_track(), id=tid, category=category,
                keyframes=[dict(k, center=[x, 0.0, 0.7]) for k in car_track()["keyframes"]])


def patch(client, body: dict, headers: dict = A, if_match: str = "*"):
    return client.patch(URL, headers={**headers, "If-Match": if_match}, json=body)


def raw(client, method: str, url: str, content: bytes, headers: dict = A):
    return client.request(method, url, content=content,
                          headers={**headers, "If-Match": "*", "Content-Type": "application/json"})


# ---------------------------------------------------------------- bad input: 422, never stored-then-500


def _unit(q: list[float]) -> np.ndarray:
    q = np.asarray(q, np.float64)
    q = q / np.abs(q).max()  # the reference scales first too: |q|² of 1e200 overflows in float64
    return q / np.linalg.norm(q)


@pytest.mark.parametrize("q", [[1e200, 0, 0, 0], [0, -1e300, 0, 1e300], [1e-200, 0, 0, 1e-200],
                               [5e-324, 0, 0, 0], [0.5, 0.5, 0.5, 0.5]])
def test_any_non_zero_quaternion_is_stored_normalised_and_served(client, q):
    t = track("car-1")
    t["keyframes"][1]["rotation"] = q
    r = client.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": [t]})
    assert r.status_code == 200, r.text
    stored = client.get(URL, headers=V).json()["tracks"][0]["keyframes"][1]["rotation"]
    np.testing.assert_allclose(stored, _unit(q), rtol=0, atol=1e-15)
    assert abs(np.linalg.norm(stored) - 1) < 1e-15
    for url in ("/v1/scenes/demo/frames/2/cuboids", "/v1/scenes/demo/frames/1/projection/CAM_FRONT",
                "/v1/scenes/demo/export/kitti?unmapped=pass", "/v1/scenes/demo/export/sfs?points=false"):
        assert client.get(url, headers=V).status_code == 200, url


@pytest.mark.parametrize("field, value", [
    ("rotation", [0, 0, 0, 0]), ("rotation", [0.0, -0.0, 0, 0]), ("center", [1e8, 0, 0]),
    ("size", [4.0, 1e5, 1.5]), ("size", ["4.2", 1.9, 1.5]), ("center", [10, "0", 0.7]), ("size", [True, 1.9, 1.5]),
    ("timestamp_ns", float(T0)), ("timestamp_ns", "1700000000000000000"), ("timestamp_ns", 101074.5),
])
def test_bad_keyframe_values_are_refused_naming_the_field(client, field, value):
    rev = client.get(URL, headers=V).json()["revision"]
    t = track("car-1")
    t["keyframes"][0][field] = value
    r = client.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": [t]})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][:6] == ["body", "tracks", 0, "keyframes", 0, field]
    assert client.get(URL, headers=V).json()["revision"] == rev


def test_integral_numbers_written_as_floats_are_integers(client):
    """JSON Schema's integer includes 3.0: revisions (and timestamps up to 2^53) accept it."""
    rev = patch(client, {"upsert": [track("a")], "base": {"a": 0.0}}).json()["track_revisions"]["a"]
    r = patch(client, {"update": [{"id": "a", "category": "bus"}], "base": {"a": float(rev)}})
    assert r.status_code == 200 and r.json()["tracks"][0]["category"] == "bus"
    r = patch(client, {"update": [{"id": "a", "category": "van"}], "base": {"a": rev + 0.5}})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "base", "a"]
    # a timestamp of 101074.0 is an integer (then outside the scene), 2^60 as a float is refused as inexact
    for value, msg in ((101074.0, "outside the scene"), (float(2**60), "not exact")):
        t = track("a")
        t["keyframes"][0]["timestamp_ns"] = value
        r = patch(client, {"upsert": [t]})
        assert r.status_code == 422 and msg in r.json()["detail"][0]["msg"], r.text


@pytest.mark.parametrize("method, url, content", [
    ("PUT", URL, b'{"tracks":"\\udfff"}'),
    ("PUT", URL, b'{"\\udfff":1}'),
    ("PUT", URL, b'{"tracks":[{"id":"a","category":"\\ud800car","keyframes":[]}]}'),
    ("PATCH", URL, b'{"upsert":[],"base":{"\\udfff":1}}'),
    ("PATCH", URL, b'{"update":[{"id":"a","attributes":{"\\udc00":"x"}}]}'),
    ("PUT", "/v1/scenes/demo/ontology", b'{"classes":[{"name":"\\udfff"}]}'),
])
def test_a_lone_surrogate_anywhere_is_a_422(env, client, method, url, content):
    r = raw(client, method, url, content, headers=ADMIN)
    assert r.status_code == 422 and r.json()["detail"], r.text
    assert env[1].state.fathom.server_errors == 0


@pytest.mark.parametrize("body", [
    {"upsert": [track("a"), track("a", "bus")]},
    {"upsert": [track("a")], "update": [{"id": "a", "category": "bus"}]},
    {"update": [{"id": "a", "category": "bus"}, {"id": "a", "stationary": True}]},
    {"update": [{"id": "a", "category": "bus"}], "delete": ["a"]},
    {"delete": ["a", "a"]},
])
def test_a_track_named_twice_in_a_patch_is_refused(client, body):
    patch(client, {"upsert": [track("a")]})
    rev = client.get(URL, headers=V).json()["revision"]
    r = patch(client, body)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "duplicate_track", r.text
    assert "'a'" in r.json()["detail"][0]["msg"]
    assert client.get(URL, headers=V).json()["revision"] == rev


# ---------------------------------------------------------------- per-track revisions


def test_get_lists_tracks_in_creation_order_with_their_revisions(client):
    r = client.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": [track("b"), track("a")]})
    first = r.json()["revision"]
    assert [t["id"] for t in r.json()["tracks"]] == ["b", "a"]
    patch(client, {"upsert": [track("c")]})
    doc = client.get(URL, headers=V).json()
    assert doc["track_revisions"] == {"b": first, "a": first, "c": first + 1} and doc["revision"] == first + 1
    assert [t["id"] for t in doc["tracks"]] == ["b", "a", "c"]
    # a PUT that leaves a track's body as it is leaves its revision (and keeps the order of those it keeps)
    r = client.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": [track("a"), track("d"), track("b", "bus")]})
    assert [t["id"] for t in r.json()["tracks"]] == ["b", "a", "d"]
    assert r.json()["track_revisions"] == {"b": first + 2, "a": first, "d": first + 2}
    # a track deleted and created again goes last
    patch(client, {"delete": ["b"]})
    patch(client, {"upsert": [track("b")]})
    assert [t["id"] for t in client.get(URL, headers=V).json()["tracks"]] == ["a", "d", "b"]


def test_edits_of_other_tracks_do_not_conflict_but_edits_of_the_same_track_do(client):
    revs = patch(client, {"upsert": [track("a"), track("b")]}).json()["track_revisions"]
    # alice and bob, both from the same GET: different tracks, both succeed
    assert patch(client, {"update": [{"id": "a", "category": "bus"}], "base": {"a": revs["a"]}}).status_code == 200
    r = patch(client, {"update": [{"id": "b", "category": "van"}], "base": {"b": revs["b"]}}, headers=B)
    assert r.status_code == 200 and r.json()["track_revisions"] == {"b": r.json()["revision"]}
    # bob's edit of a from the old revision: 412 with a as it is now, nothing written
    doc = client.get(URL, headers=V).json()
    r = patch(client, {"update": [{"id": "a", "stationary": True}], "base": {"a": revs["a"]}}, headers=B)
    assert r.status_code == 412 and r.headers["etag"] == f'"r{doc["revision"]}"'
    now_a = next(t for t in doc["tracks"] if t["id"] == "a")
    assert r.json()["revision"] == doc["revision"]
    assert r.json()["conflicts"] == [{"id": "a", "base": revs["a"], "revision": doc["track_revisions"]["a"],
                                      "track": now_a}]
    assert client.get(URL, headers=V).json() == doc
    # retried on the track from the 412: accepted
    now_rev = r.json()["conflicts"][0]["revision"]
    r = patch(client, {"update": [{"id": "a", "stationary": True}], "base": {"a": now_rev}}, headers=B)
    assert r.status_code == 200 and r.json()["tracks"][0] == dict(now_a, stationary=True)


def test_base_zero_means_the_track_must_not_exist_and_deleted_tracks_conflict(client):
    assert patch(client, {"upsert": [track("a")], "base": {"a": 0}}).status_code == 200
    r = patch(client, {"upsert": [track("a", "bus")], "base": {"a": 0}}, headers=B)
    assert r.status_code == 412 and r.json()["conflicts"][0]["track"]["category"] == "car"
    rev = r.json()["conflicts"][0]["revision"]
    r = patch(client, {"delete": ["a"], "base": {"a": rev}})
    assert r.status_code == 200 and r.json()["deleted"] == ["a"] and r.json()["tracks"] == []
    r = patch(client, {"update": [{"id": "a", "category": "bus"}], "base": {"a": rev}}, headers=B)
    assert r.status_code == 412 and r.json()["conflicts"] == [{"id": "a", "base": rev, "revision": 0, "track": None}]


def test_base_must_name_every_changed_track_and_if_match_still_applies(client):
    revs = patch(client, {"upsert": [track("a"), track("b")]}).json()["track_revisions"]
    r = patch(client, {"update": [{"id": "a", "category": "bus"}], "delete": ["b"], "base": {"a": revs["a"]}})
    assert r.status_code == 422 and "'b'" in r.json()["detail"][0]["msg"]
    doc_rev = client.get(URL, headers=V).json()["revision"]
    r = patch(client, {"update": [{"id": "a", "category": "bus"}], "base": {"a": revs["a"]}},
              if_match=f'"r{doc_rev - 1}"')
    assert r.status_code == 412 and r.json()["conflicts"] == []
    assert client.patch(URL, headers=A, json={"upsert": [track("c")]}).status_code == 428
    assert patch(client, {"upsert": [track("c")]}, if_match="r-1").status_code == 422


# ---------------------------------------------------------------- history, rebuilt documents, revert


def test_every_revision_is_rebuilt_from_the_per_track_diffs(client):
    """A random run of writes: the document GET answered at each revision equals both the
    server's ``?revision=k`` and a replay of the per-track histories' ``after`` bodies."""
    rng = np.random.default_rng(7)
    start = client.get(URL, headers=V).json()
    seen = {start["revision"]: start}
    ids = [f"t{i}" for i in range(6)]
    for step in range(40):
        doc = client.get(URL, headers=V).json()
        have = [t["id"] for t in doc["tracks"]]
        kind = rng.choice(["put", "upsert", "update", "delete", "revert"]) if have else "upsert"
        if kind == "put":
            body = {"tracks": [track(i, x=float(rng.uniform(0, 20))) for i in rng.choice(ids, 3, replace=False)]}
            r = client.put(URL, headers={**A, "If-Match": "*"}, json=body)
        elif kind == "upsert":
            r = patch(client, {"upsert": [track(str(rng.choice(ids)), x=float(rng.uniform(0, 20)))]})
        elif kind == "update":
            r = patch(client, {"update": [{"id": str(rng.choice(have)), "category": f"c{step}"}]}, headers=B)
        elif kind == "delete":
            r = patch(client, {"delete": [str(rng.choice(have))]})
        else:
            r = client.post(URL + "/revert", headers={**A, "If-Match": "*"},
                            json={"revision": int(rng.integers(start["revision"], doc["revision"] + 1))})
        assert r.status_code == 200, (kind, r.text)
        now = client.get(URL, headers=V).json()
        seen[now["revision"]] = now
    touched = {tid for k in seen.values() for tid in k["track_revisions"]}
    histories = {tid: client.get(f"{URL}/tracks/{tid}/history?limit=1000", headers=V).json() for tid in touched}
    for k, want in seen.items():
        assert client.get(f"{URL}?revision={k}", headers=V).json() == want
        if k == start["revision"]:
            continue
        rebuilt, revisions = {}, {}
        for tid, changes in histories.items():
            last = [c for c in changes if c["revision"] <= k]
            if last and last[-1]["after"] is not None:
                rebuilt[tid], revisions[tid] = last[-1]["after"], last[-1]["revision"]
        assert rebuilt == {t["id"]: t for t in want["tracks"]} and revisions == want["track_revisions"]


def test_history_names_the_author_and_the_tracks_of_each_revision(client):
    rev = client.get(URL, headers=V).json()["revision"]
    patch(client, {"upsert": [track("a"), track("b")]})
    patch(client, {"update": [{"id": "b", "category": "bus"}]}, headers=B)
    hist = client.get(f"{URL}/history?after={rev}", headers=ADMIN).json()
    assert [(h["op"], h["author"], h["tracks"]) for h in hist] == [("patch", "alice", ["a", "b"]),
                                                                  ("patch", "bob", ["b"])]
    b = client.get(f"{URL}/tracks/b/history?after={rev}", headers=V).json()
    assert [(c["author"], c["before_revision"], c["before"] and c["before"]["category"], c["after"]["category"])
            for c in b] == [("alice", 0, None, "car"), ("bob", rev + 1, "car", "bus")]
    assert client.get(f"{URL}/history", headers=A).status_code == 403
    assert client.get(f"{URL}/tracks/never-was/history", headers=V).status_code == 404
    assert client.get(f"{URL}?revision={rev + 99}", headers=V).status_code == 404


def test_revert_a_track_or_the_document(client):
    r0 = patch(client, {"upsert": [track("a"), track("b")]}).json()["revision"]
    patch(client, {"update": [{"id": "a", "category": "bus"}], "delete": ["b"]})
    patch(client, {"upsert": [track("c")]}, headers=B)
    r = client.post(URL + "/revert", headers={**B, "If-Match": "*"}, json={"revision": r0, "tracks": ["a"]})
    assert r.status_code == 200 and [t["category"] for t in r.json()["tracks"]] == ["car"]
    doc = client.get(URL, headers=V).json()
    assert [t["id"] for t in doc["tracks"]] == ["a", "c"] and doc["track_revisions"]["a"] == r.json()["revision"]
    last = client.get(f"{URL}/history?after={doc['revision'] - 1}", headers=ADMIN).json()[0]
    assert (last["op"], last["author"], last["note"], last["tracks"]) == ("revert", "bob", {"revision": r0}, ["a"])
    r = client.post(URL + "/revert", headers={**A, "If-Match": f'"r{doc["revision"]}"'}, json={"revision": r0})
    assert r.status_code == 200 and r.json()["deleted"] == ["c"] and [t["id"] for t in r.json()["tracks"]] == ["b"]
    assert client.get(URL, headers=V).json()["tracks"] == client.get(f"{URL}?revision={r0}", headers=V).json()["tracks"]
    # refused: a revision not in the history, a stale base, no If-Match
    bad = client.post(URL + "/revert", headers={**A, "If-Match": "*"}, json={"revision": 10**6})
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["body", "revision"]
    stale = client.post(URL + "/revert", headers={**A, "If-Match": "*"},
                        json={"revision": r0, "tracks": ["a"], "base": {"a": 1}})
    assert stale.status_code == 412 and stale.json()["conflicts"][0]["id"] == "a"
    assert client.post(URL + "/revert", headers=A, json={"revision": r0}).status_code == 428


def test_history_of_a_scene_seeded_from_its_imported_labels(tmp_path):
    write_scene(tmp_path)
    store = LabelStore(tmp_path / "labels.sqlite3")
    store.write("demo", 0, lambda _: {"tracks": [track("a")]}, op="import", author="fathom",
                record={"imported_tracks": 1})
    store.close()
    with TestClient(create_app(Settings(scenes_dir=tmp_path, tokens=json.dumps(TOKENS), warmup=False))) as c:
        r = c.get(f"{URL}/history", headers=ADMIN)
        assert r.status_code == 200
        assert [(h["op"], h["author"], h["note"], h["tracks"]) for h in r.json()] == [
            ("import", "fathom", {"imported_tracks": 1}, ["a"])]
        assert c.get(f"{URL}/tracks/a/history", headers=V).json()[0]["after"] == Track.model_validate(
            track("a")).model_dump(mode="json")


def test_a_one_document_database_is_migrated_on_open(tmp_path):
    db = tmp_path / "labels.sqlite3"
    old = {"tracks": [track("b"), track("a")]}
    with sqlite3.connect(db) as conn:
        conn.executescript("""
            CREATE TABLE documents (scene_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, body TEXT NOT NULL,
                                    updated_ns INTEGER NOT NULL);
            CREATE TABLE history (id INTEGER PRIMARY KEY AUTOINCREMENT, scene_id TEXT NOT NULL,
                                  revision INTEGER NOT NULL, op TEXT NOT NULL, author TEXT NOT NULL,
                                  at_ns INTEGER NOT NULL, change TEXT NOT NULL);""")
        conn.execute("INSERT INTO documents VALUES ('demo', 2, ?, 5)", (json.dumps(old),))
        conn.executemany("INSERT INTO history (scene_id, revision, op, author, at_ns, change) "
                         "VALUES (?, ?, ?, ?, ?, ?)", [("demo", 1, "seed", "fathom", 3, '{"imported_tracks":2}'),
                          ("demo", 2, "patch", "alice", 4, '{"update":[{"id":"a","category":"car"}]}')])
    write_scene(tmp_path)
    with TestClient(create_app(Settings(scenes_dir=tmp_path, tokens=json.dumps(TOKENS), warmup=False))) as c:
        doc = c.get(URL, headers=V).json()
        assert doc == {"scene_id": "demo", "revision": 2, "tracks": [track("b"), track("a")],
                       "track_revisions": {"b": 2, "a": 2}}
        hist = c.get(f"{URL}/history", headers=ADMIN).json()
        assert [(h["revision"], h["op"], h["author"], h["note"]) for h in hist] == [
            (1, "seed", "fathom", {"imported_tracks": 2}), (2, "patch", "alice", {"update": [{"id": "a",
                                                                                              "category": "car"}]})]
        assert c.get(f"{URL}?revision=1", headers=V).status_code == 404  # before the per-track history
        r = patch(c, {"update": [{"id": "a", "category": "bus"}], "base": {"a": 2}})
        assert r.status_code == 200 and r.json()["revision"] == 3
        assert c.get(f"{URL}?revision=2", headers=V).json() == doc
    tables = {n for (n,) in sqlite3.connect(db).execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not tables & {"documents", "history"}
    assert LabelStore(db).get("demo")[0] == 3  # opening a migrated database again changes nothing


# ---------------------------------------------------------------- ontology


ONTOLOGY = {"classes": [
    {"name": "car", "attributes": [{"name": "color", "values": ["red", "blue"]}, {"name": "note"}],
     "keyframe_attributes": [{"name": "occluded", "values": [0, 1, 2]}]},
    {"name": "pedestrian"},
]}


def test_ontology_resource_and_roles(client):
    assert client.get("/v1/scenes/demo/ontology", headers=V).status_code == 404
    assert client.put("/v1/scenes/demo/ontology", headers=A, json=ONTOLOGY).status_code == 403
    r = client.put("/v1/scenes/demo/ontology", headers=ADMIN, json=ONTOLOGY)
    assert r.status_code == 200
    got = client.get("/v1/scenes/demo/ontology", headers=V).json()
    assert [c["name"] for c in got["classes"]] == ["car", "pedestrian"] and got["classes"][1]["attributes"] == []
    dup = {"classes": [{"name": "car"}, {"name": "car"}]}
    r = client.put("/v1/scenes/demo/ontology", headers=ADMIN, json=dup)
    assert r.status_code == 422 and "car" in r.json()["detail"][0]["msg"]
    assert client.get("/v1/scenes/demo/ontology", headers=V).json() == got


@pytest.mark.parametrize("change, loc, name", [
    ({"category": "truck"}, ["body", "upsert", 0, "category"], "'truck'"),
    ({"attributes": {"colour": "red"}}, ["body", "upsert", 0, "attributes", "colour"], "'colour'"),
    ({"attributes": {"color": "green"}}, ["body", "upsert", 0, "attributes", "color"], "'green'"),
    ({"attributes": {"color": True}}, ["body", "upsert", 0, "attributes", "color"], "True"),
])
def test_writes_outside_the_ontology_are_refused_naming_it(client, change, loc, name):
    client.put("/v1/scenes/demo/ontology", headers=ADMIN, json=ONTOLOGY)
    rev = client.get(URL, headers=V).json()["revision"]
    r = patch(client, {"upsert": [dict(track("a"), **change)]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc and name in r.json()["detail"][0]["msg"]
    t = dict(track("a"), **change)
    r = client.put(URL, headers={**A, "If-Match": "*"}, json={"tracks": [t]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tracks"] + loc[2:]
    assert client.get(URL, headers=V).json()["revision"] == rev


def test_ontology_checks_updates_and_keyframe_attributes_and_goes_away(client):
    client.put("/v1/scenes/demo/ontology", headers=ADMIN, json=ONTOLOGY)
    t = dict(track("a"), attributes={"color": "blue", "note": "anything"})
    t["keyframes"][0]["attributes"] = {"occluded": 1.0}  # 1.0 == 1 as JSON numbers
    assert patch(client, {"upsert": [t]}).status_code == 200
    r = patch(client, {"update": [{"id": "a", "category": "pedestrian"}]})  # a pedestrian has no color
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "update", 0, "attributes", "color"]
    kf = [dict(k, attributes={"occluded": 3}) for k in t["keyframes"]]
    r = patch(client, {"update": [{"id": "a", "keyframes": kf}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "update", 0, "keyframes", 0,
                                                                     "attributes", "occluded"]
    assert client.delete("/v1/scenes/demo/ontology", headers=ADMIN).status_code == 204
    assert patch(client, {"update": [{"id": "a", "category": "spaceship", "keyframes": kf}]}).status_code == 200


def test_label_writes_keep_keyframes_inside_the_scene(client):
    t = track("a")
    t["keyframes"][1]["timestamp_ns"] = T0 + 3 * DT
    r = patch(client, {"upsert": [t]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "upsert", 0, "keyframes", 1,
                                                                     "timestamp_ns"]
