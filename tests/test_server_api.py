"""HTTP layer against the app in-process (httpx via TestClient): data, caching, labels, auth, limits."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from fastapi.testclient import TestClient

from engine.quaternion import to_matrix
from formats.scene_store import Scene
from server.config import Settings
from server.main import create_app
from tests.server_scene import DT, T0, TOKENS, car_track, ego_pose, frame_xyz, jpeg, millimetres, write_scene

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}
ADMIN = {"Authorization": "Bearer admin-token-1"}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    (tmp_path_factory.getbasetemp() / "secret.txt").write_text("TOP SECRET")
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS), max_body_bytes=256 * 1024))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, Scene.open(root / "demo"), app
    assert app.state.fathom.server_errors == 0  # no request of this module reached the 500 handler


@pytest.fixture()
def client(env):
    return env[0]


def _arrow(content: bytes) -> pa.Table:
    return ipc.open_stream(pa.py_buffer(content)).read_all()


def _reset_labels(client) -> int:
    rev = client.get("/v1/scenes/demo/labels", headers=A).json()["revision"]
    r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json={"tracks": []})
    assert r.status_code == 200
    return r.json()["revision"]


# ---------------------------------------------------------------- scenes and frames


def test_scene_list_and_detail(client):
    assert client.get("/v1/scenes", headers=V).json() == [{
        "id": "demo", "n_frames": 3, "start_ns": T0, "end_ns": T0 + 2 * DT, "lidars": ["LIDAR_TOP"],
        "cameras": ["CAM_FRONT"],
    }]
    d = client.get("/v1/scenes/demo", headers=V).json()
    assert d["origin"] == {"enu_offset_m": [500_000.0, 4_000_000.0, 12.0],
                           "geodetic": {"lat_deg": 36.1, "lon_deg": -5.3, "alt_m": 12.0}}
    assert [f["index"] for f in d["frames"]] == [0, 1, 2]
    pose = ego_pose(2)
    np.testing.assert_allclose(d["frames"][2]["world_from_ego"], [*pose.rotation, *pose.translation])
    assert d["frames"][0]["lod_points"] == [len(frame_xyz(0)[::4])]
    assert d["cameras"][0]["fx"] == 40.0 and d["cameras"][0]["width"] == 64


def test_arrow_stream_is_exactly_the_stored_values(env):
    client, scene, _ = env
    r = client.get("/v1/scenes/demo/frames/1/points", headers=V)
    assert r.status_code == 200 and r.headers["content-type"] == "application/vnd.apache.arrow.stream"
    got = _arrow(r.content)
    stored = scene.stored_points(1)
    assert got.schema.names == ["x", "y", "z", *(n for n in stored.schema.names if n not in ("xq", "yq", "zq"))]
    # x y z: the float32 of the 1 mm quantisation of the positions written (float64)
    xyz = millimetres(frame_xyz(1))[1].astype(np.float32)
    for k, name in enumerate("xyz"):
        assert got.schema.field(name).type == pa.float32()
        np.testing.assert_array_equal(got.column(name).to_numpy(), xyz[:, k])
    for name in got.schema.names[3:]:  # the other columns as stored, in their stored (narrowest) types
        assert got.schema.field(name).type == stored.schema.field(name).type
        np.testing.assert_array_equal(got.column(name).to_numpy(), stored.column(name).to_numpy())
    assert got.schema.field("ring").type == pa.uint8() and got.schema.field("box_id").type == pa.int8()
    assert got.schema.metadata[b"fathom.frame"] == b"world"
    assert int(r.headers["x-point-count"]) == stored.num_rows


@pytest.mark.parametrize("codec", ["lz4", "zstd"])
def test_compressed_arrow_stream_decodes_to_the_uncompressed_one(env, codec):
    client, _, _ = env
    url = "/v1/scenes/demo/frames/1/points"
    for query in ("", "?lod=1", "?frame=ego&fields=x,y,z,intensity,box_id"):
        sep = "&" if query else "?"
        plain = client.get(url + query, headers={**V, "Accept-Encoding": "identity"})
        packed = client.get(f"{url}{query}{sep}compression={codec}", headers={**V, "Accept-Encoding": "gzip"})
        assert packed.status_code == 200 and "content-encoding" not in packed.headers  # not gzipped on top
        assert len(packed.content) < len(plain.content) and packed.headers["etag"] != plain.headers["etag"]
        assert _arrow(packed.content).equals(_arrow(plain.content))
        assert _arrow(packed.content).schema.metadata == _arrow(plain.content).schema.metadata
        again = client.get(f"{url}{query}{sep}compression={codec}",
                           headers={**V, "If-None-Match": packed.headers["etag"]})
        assert again.status_code == 304
    for bad in ("format=raw&compression=lz4", "compression=brotli"):
        r = client.get(f"{url}?{bad}", headers=V)
        assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "compression"


def test_fields_and_lod(env):
    client, scene, _ = env
    r = client.get("/v1/scenes/demo/frames/0/points?fields=x,y,z,xq,intensity&lod=1", headers=V)
    got = _arrow(r.content)
    assert got.schema.names == ["x", "y", "z", "xq", "intensity"]
    np.testing.assert_array_equal(got.column("xq").to_numpy(), scene.points(0, 1).column("xq").to_numpy())
    for bad, loc in (("fields=x,nope", "fields"), ("fields=x,x", "fields"), ("lod=2", "lod"),
                     ("frame=ego&fields=xq", "fields"), ("frame=moon", "frame"), ("format=png", "format")):
        r = client.get(f"/v1/scenes/demo/frames/0/points?{bad}", headers=V)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"][-1] == loc


def test_raw_float32_equals_stored_xyz(client):
    want = millimetres(frame_xyz(2))[1].astype("<f4").tobytes()
    assert client.get("/v1/scenes/demo/frames/2/points?format=raw", headers=V).content == want
    r = client.get("/v1/scenes/demo/frames/2/points", headers={**V, "Accept": "application/octet-stream"})
    assert r.headers["content-type"] == "application/octet-stream" and r.content == want


def test_ego_frame_matches_numpy_reference(env):
    client, scene, _ = env
    stored = scene.stored_points(1)
    world = millimetres(frame_xyz(1))[1]  # the stored positions (float64)
    pose = ego_pose(1)
    r = to_matrix(pose.rotation)
    ego_ref = (world - pose.translation) @ r  # Rᵀ (p − t), row vectors
    raw = client.get("/v1/scenes/demo/frames/1/points?format=raw&frame=ego", headers=V).content
    np.testing.assert_allclose(np.frombuffer(raw, "<f4").reshape(-1, 3), ego_ref, atol=2e-5)
    tbl = _arrow(client.get("/v1/scenes/demo/frames/1/points?frame=ego&fields=x,y,intensity", headers=V).content)
    np.testing.assert_allclose(tbl.column("y").to_numpy(), ego_ref[:, 1], atol=2e-5)
    np.testing.assert_array_equal(tbl.column("intensity").to_numpy(), stored.column("intensity").to_numpy())


def test_etag_304_and_gzip(client):
    url = "/v1/scenes/demo/frames/0/points"
    plain = client.get(url, headers={**V, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    etag = plain.headers["etag"]
    again = client.get(url, headers={**V, "Accept-Encoding": "identity", "If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert client.get(url, headers={**V, "Accept-Encoding": "identity", "If-None-Match": '"other"'}).status_code == 200
    zipped = client.get(url, headers={**V, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.headers["etag"] != etag
    assert zipped.content == plain.content  # httpx decodes; the wire body was gzip
    assert int(zipped.headers["content-length"]) < len(plain.content)
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content
    other_lod = client.get(url + "?lod=1", headers={**V, "Accept-Encoding": "identity"})
    assert other_lod.headers["etag"] != etag


def test_images(client):
    r = client.get("/v1/scenes/demo/frames/1/images/CAM_FRONT", headers=V)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg" and r.content == jpeg(1)
    assert int(r.headers["x-timestamp-ns"]) == T0 + DT + 5_000_000
    assert client.get("/v1/scenes/demo/frames/1/images/CAM_FRONT",
                      headers={**V, "If-None-Match": r.headers["etag"]}).status_code == 304
    assert client.get("/v1/scenes/demo/frames/1/images/CAM_BACK", headers=V).status_code == 404
    assert client.get("/v1/scenes/demo/frames/9/images/CAM_FRONT", headers=V).status_code == 404


def test_projection_points_are_in_the_image(client):
    p = client.get("/v1/scenes/demo/frames/1/projection/CAM_FRONT?lod=0", headers=V).json()
    u, v = np.array(p["u"]), np.array(p["v"])
    assert len(u) > 10 and np.all((u >= -0.5) & (u < 63.5) & (v >= -0.5) & (v < 47.5))
    assert np.all(np.array(p["depth"]) > 0)


# ---------------------------------------------------------------- labels


def test_labels_put_get_and_cuboids(env):
    client, scene, app = env
    rev = _reset_labels(client)
    r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json={"tracks": [car_track()]})
    assert r.status_code == 200 and r.headers["etag"] == f'"r{rev + 1}"'
    got = client.get("/v1/scenes/demo/labels", headers=V).json()
    assert got["revision"] == rev + 1 and got["tracks"][0]["id"] == "car-1"
    c = client.get("/v1/scenes/demo/frames/1/cuboids", headers=V).json()
    box = c["boxes"][0]
    assert box["center"] == [10.0, 0.0, 0.7] and c["revision"] == rev + 1
    # points-in-box reference: plain NumPy inclusive test on the stored points (axis-aligned box)
    xyz = millimetres(frame_xyz(1))[1]
    inside = np.all(np.abs(xyz - [10.0, 0.0, 0.7]) <= np.array([4.2, 1.9, 1.5]) / 2, axis=1)
    assert box["points_in_box"] == int(inside.sum()) >= 200
    ego = client.get("/v1/scenes/demo/frames/1/cuboids?frame=ego", headers=V).json()["boxes"][0]
    pose = ego_pose(1)
    np.testing.assert_allclose(ego["center"],
                               (np.array([10.0, 0.0, 0.7]) - pose.translation) @ to_matrix(pose.rotation), atol=1e-9)
    assert ego["points_in_box"] == box["points_in_box"]


def test_prepared_cuboids_come_from_the_boxes_file_whatever_the_label_store_holds(env):
    client, scene, app = env
    rev = _reset_labels(client)  # an empty label store: the prepared boxes must not depend on it
    for i in (0, 1):
        c = client.get(f"/v1/scenes/demo/frames/{i}/cuboids?source=prepared", headers=V).json()
        assert c["source"] == "prepared" and c["revision"] is None and len(c["boxes"]) == 1
        box = c["boxes"][0]
        assert box["track_id"] == "car-1" and box["center"] == [10.0, 0.0, 0.7]
        xyz = millimetres(frame_xyz(i))[1]
        inside = np.all(np.abs(xyz - [10.0, 0.0, 0.7]) <= np.array([4.2, 1.9, 1.5]) / 2, axis=1)
        assert box["points_in_box"] == int(inside.sum()) >= 200
        ego = client.get(f"/v1/scenes/demo/frames/{i}/cuboids?source=prepared&frame=ego", headers=V).json()["boxes"][0]
        pose = ego_pose(i)
        np.testing.assert_allclose(ego["center"], (np.array([10.0, 0.0, 0.7]) - pose.translation)
                                   @ to_matrix(pose.rotation), atol=1e-9)
        ego_from_world = pose.rotation * np.array([1.0, -1.0, -1.0, -1.0])  # box → world is the identity
        np.testing.assert_allclose(np.abs(np.dot(ego["rotation"], ego_from_world)), 1.0, atol=1e-12)
    live = client.get("/v1/scenes/demo/frames/0/cuboids", headers=V).json()
    assert live["source"] == "labels" and live["revision"] == rev and live["boxes"] == []
    r = client.get("/v1/scenes/demo/frames/2/cuboids?source=prepared", headers=V)
    assert r.status_code == 404 and "without labels" in r.json()["detail"]
    assert client.get("/v1/scenes/demo/frames/0/cuboids?source=moon", headers=V).status_code == 422


def test_stale_revision_412_changes_nothing(client):
    rev = _reset_labels(client)
    body = {"tracks": [car_track()]}
    assert client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json=body).status_code == 200
    r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json={"tracks": []})
    assert r.status_code == 412 and r.headers["etag"] == f'"r{rev + 1}"'
    r = client.patch("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json={"delete": ["car-1"]})
    assert r.status_code == 412
    assert client.put("/v1/scenes/demo/labels", headers=A, json=body).status_code == 428
    doc = client.get("/v1/scenes/demo/labels", headers=V).json()
    assert doc["revision"] == rev + 1 and [t["id"] for t in doc["tracks"]] == ["car-1"]


def test_patch_per_track_and_history(client):
    rev = _reset_labels(client)
    ped = dict(car_track(), id="ped-1", category="pedestrian")
    r = client.patch("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'},
                     json={"upsert": [car_track(), ped]})
    assert r.status_code == 200
    r = client.patch("/v1/scenes/demo/labels", headers={**A, "If-Match": r.headers["etag"]},
                     json={"update": [{"id": "car-1", "category": "truck"}], "delete": ["ped-1"]})
    assert r.status_code == 200
    doc = r.json()
    assert [(t["id"], t["category"]) for t in doc["tracks"]] == [("car-1", "truck")]
    stored = client.get("/v1/scenes/demo/labels", headers=V).json()
    assert doc["tracks"][0]["keyframes"] == stored["tracks"][0]["keyframes"]
    hist = client.get(f"/v1/scenes/demo/labels/history?after={rev}", headers=ADMIN).json()
    assert [(h["revision"], h["op"], h["author"]) for h in hist] == [
        (rev + 1, "patch", "annotator-" + hist[0]["author"].split("-")[1]), (rev + 2, "patch", hist[1]["author"])]
    assert hist[1]["tracks"] == ["car-1", "ped-1"] and hist[1]["note"] is None


def _kf(**over):
    k = {"timestamp_ns": T0, "center": [1.0, 2.0, 0.5], "size": [4.0, 2.0, 1.5], "rotation": [1, 0, 0, 0]}
    k.update(over)
    return k


@pytest.mark.parametrize(
    "body, loc",
    [
        ('{"tracks": [', ["body", 12]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(size=[4.0, -1.0, 1.5])]}]},
         ["body", "tracks", 0, "keyframes", 0, "size", 1]),
        ('{"tracks": [{"id": "a", "category": "car", "keyframes": [{"timestamp_ns": %d, "center": [1, 2, 3], '
         '"size": [NaN, 1, 1], "rotation": [1, 0, 0, 0]}]}]}' % T0, ["body", "tracks", 0, "keyframes", 0, "size", 0]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(center=[1, 2, float("inf")])]}]},
         ["body", "tracks", 0, "keyframes", 0, "center", 2]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(rotation=[0, 0, 0, 0])]}]},
         ["body", "tracks", 0, "keyframes", 0, "rotation"]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(timestamp_ns=T0 - 1)]}]},
         ["body", "tracks", 0, "keyframes", 0, "timestamp_ns"]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(), _kf(timestamp_ns=T0 + 3 * DT)]}]},
         ["body", "tracks", 0, "keyframes", 1, "timestamp_ns"]),
        ({"tracks": [{"id": "a", "category": "car", "keyframes": [_kf(timestamp_ns=T0 + 5), _kf()]}]},
         ["body", "tracks", 0, "keyframes"]),
        ({"tracks": [{"id": "../a", "category": "car", "keyframes": [_kf()]}]}, ["body", "tracks", 0, "id"]),
        ({"tracks": [dict(car_track()), dict(car_track())]}, ["body", "tracks"]),
        ({"tracks": [dict(car_track(), extra=1)]}, ["body", "tracks", 0, "extra"]),
        ({"tracks": [dict(car_track(), keyframes=[])]}, ["body", "tracks", 0, "keyframes"]),
    ],
)
def test_put_bad_input_422_names_the_field(client, body, loc):
    rev = client.get("/v1/scenes/demo/labels", headers=V).json()["revision"]
    headers = {**A, "If-Match": f'"r{rev}"', "Content-Type": "application/json"}
    content = body if isinstance(body, str) else json.dumps(body)
    r = client.put("/v1/scenes/demo/labels", headers=headers, content=content)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == loc, r.json()
    assert client.get("/v1/scenes/demo/labels", headers=V).json()["revision"] == rev


@pytest.mark.parametrize(
    "body, loc",
    [
        ({"update": [{"id": "ghost", "category": "car"}]}, ["body", "update", 0, "id"]),
        ({"delete": ["car-1", "ghost"]}, ["body", "delete", 1]),
        ({"upsert": [car_track()], "delete": ["car-1"]}, ["body"]),
        ({"update": [{"id": "car-1", "keyframes": [_kf(timestamp_ns=0)]}]},
         ["body", "update", 0, "keyframes", 0, "timestamp_ns"]),
    ],
)
def test_patch_bad_input_422(client, body, loc):
    rev = _reset_labels(client)
    rev = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'},
                     json={"tracks": [car_track()]}).json()["revision"]
    r = client.patch("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'}, json=body)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == loc, r.text
    assert client.get("/v1/scenes/demo/labels", headers=V).json()["revision"] == rev


def test_body_size_limit_413(client):
    big = json.dumps({"tracks": [], "pad": "x" * 300_000})
    r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": "*", "Content-Type": "application/json"},
                   content=big)
    assert r.status_code == 413

    def chunks():  # no Content-Length: counted as it arrives
        for _ in range(40):
            yield b" " * 10_000

    r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": "*", "Content-Type": "application/json"},
                   content=chunks())
    assert r.status_code == 413


# ---------------------------------------------------------------- security


ENDPOINTS = [
    ("GET", "/v1/scenes", "viewer"),
    ("GET", "/v1/scenes/demo", "viewer"),
    ("GET", "/v1/scenes/demo/frames/0/points", "viewer"),
    ("GET", "/v1/scenes/demo/frames/0/cuboids", "viewer"),
    ("GET", "/v1/scenes/demo/frames/0/images/CAM_FRONT", "viewer"),
    ("GET", "/v1/scenes/demo/frames/0/projection/CAM_FRONT", "viewer"),
    ("GET", "/v1/scenes/demo/labels", "viewer"),
    ("PATCH", "/v1/scenes/demo/labels", "annotator"),
    ("GET", "/v1/scenes/demo/labels/history", "admin"),
    ("POST", "/v1/admin/rescan", "admin"),
]
ROLE_HEADERS = {"viewer": V, "annotator": A, "admin": ADMIN}
RANK = ["viewer", "annotator", "admin"]


@pytest.mark.parametrize("method, url, needed", ENDPOINTS)
def test_auth_matrix(client, method, url, needed):
    kwargs = {"json": {}} if method == "PATCH" else {}
    for headers in ({}, {"Authorization": "Bearer wrong-token-123"}, {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer"}):
        assert client.request(method, url, headers=headers, **kwargs).status_code == 401
    for role, headers in ROLE_HEADERS.items():
        h = dict(headers, **({"If-Match": "*"} if method == "PATCH" else {}))
        status = client.request(method, url, headers=h, **kwargs).status_code
        if RANK.index(role) < RANK.index(needed):
            assert status == 403, (role, status)
        else:
            assert status == 200, (role, status)
    # unknown scenes are not revealed before authentication
    assert client.request(method, url.replace("demo", "nope"), **kwargs).status_code == 401


def test_health_and_viewer_need_no_token(client):
    assert client.get("/healthz").json() == {"status": "ok", "scenes": 1}
    r = client.get("/viewer/demo")
    assert r.status_code == 200 and "default-src 'self'" in r.headers["content-security-policy"]


@pytest.mark.parametrize(
    "path",
    [
        "/v1/scenes/%2e%2e", "/v1/scenes/%2e%2e/labels", "/v1/scenes/..%2f..%2fsecret.txt",
        "/v1/scenes/%2fetc%2fpasswd", "/v1/scenes/demo/frames/0/images/%2e%2e",
        "/v1/scenes/demo/frames/0/images/..%2f..%2fscene.json", "/v1/scenes/demo/frames/0/images/%2fetc%2fpasswd",
        "/viewer/%2e%2e", "/static/..%2f..%2fserver%2fmain.py", "/static/../main.py", "/v1/scenes/.hidden",
        "/v1/scenes/demo%00", "/v1/scenes/demo/frames/-1/points",
    ],
)
def test_path_traversal_never_serves_outside(client, path):
    r = client.get(path, headers=ADMIN)
    assert r.status_code in (404, 422), (path, r.status_code)
    assert b"SECRET" not in r.content and b"fathom-scene" not in r.content and b"import" not in r.content


def test_symlinked_scene_outside_the_root_is_not_served(tmp_path):
    root = tmp_path / "scenes"
    root.mkdir()
    elsewhere = write_scene(tmp_path / "elsewhere")
    (root / "demo").symlink_to(elsewhere, target_is_directory=True)
    write_scene(root, "inside")
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS)))
    with TestClient(app) as c:
        assert [s["id"] for s in c.get("/v1/scenes", headers=V).json()] == ["inside"]
        assert c.get("/v1/scenes/demo", headers=V).status_code == 404


def test_tokens_file_yaml(tmp_path):
    f = tmp_path / "tokens.yaml"
    f.write_text("tokens:\n  - token: yaml-viewer-token\n    role: viewer\n    name: alice\n")
    write_scene(tmp_path / "s")
    app = create_app(Settings(scenes_dir=tmp_path / "s", tokens_file=f))
    with TestClient(app) as c:
        assert c.get("/v1/scenes", headers={"Authorization": "Bearer yaml-viewer-token"}).status_code == 200
        assert c.patch("/v1/scenes/demo/labels", headers={"Authorization": "Bearer yaml-viewer-token"},
                       json={}).status_code == 403
    with pytest.raises(ValueError, match="role must be one of"):
        f.write_text("tokens:\n  - token: yaml-viewer-token\n    role: root\n")
        create_app(Settings(scenes_dir=tmp_path / "s", tokens_file=f))


def test_unexpected_errors_get_a_json_500(tmp_path, monkeypatch):
    write_scene(tmp_path)
    app = create_app(Settings(scenes_dir=tmp_path, tokens=json.dumps(TOKENS)))
    monkeypatch.setattr("server.routes.frames.frame_boxes", lambda *a: 1 / 0)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/v1/scenes/demo/frames/0/cuboids", headers=V)
    assert r.status_code == 500 and r.json() == {"detail": "internal server error"}
    assert app.state.fathom.server_errors == 1
