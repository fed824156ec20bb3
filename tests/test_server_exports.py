"""Export endpoints against the app in-process: each file loads back with the format's own
software (scale_sensor_fusion_io, nuscenes-devkit) or our importer and equals the stored labels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.conventions import camera_boxes_from_kitti
from formats.scene_store import Scene
from server.boxes import tracks_from_document
from server.config import Settings
from server.main import create_app
from tests.server_scene import DT, T0, TOKENS, car_track, write_scene

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}

# a second, moving track with a turn, inside the scene's time range
VAN = {"id": "van-2", "category": "truck", "attributes": {}, "keyframes": [
    {"timestamp_ns": T0, "center": [14.0, 3.0, 1.0], "size": [5.0, 2.1, 2.0], "rotation": [1, 0, 0, 0]},
    {"timestamp_ns": T0 + 2 * DT, "center": [16.0, 3.5, 1.0], "size": [5.0, 2.1, 2.0],
     "rotation": [float(np.cos(0.1)), 0, 0, float(np.sin(0.1))]},
]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS)))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": "*"}, json={"tracks": [car_track(), VAN]})
        assert r.status_code == 200
        yield client, Scene.open(root / "demo")
    assert app.state.fathom.server_errors == 0


def _stored(client):
    doc = client.get("/v1/scenes/demo/labels", headers=V).json()
    return doc["revision"], tracks_from_document(doc)


def _angle_deg(q1, q2) -> np.ndarray:
    return np.degrees(2 * np.arccos(np.clip(np.abs(np.sum(np.asarray(q1) * q2, axis=-1)), 0, 1)))


def test_sfs_export_validates_and_imports_back(env, tmp_path):
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader
    from scale_sensor_fusion_io.validation import parse_and_validate_scene

    from formats.import_sfs import import_sfs
    from formats.raw_log import read_log

    client, scene = env
    revision, tracks = _stored(client)
    r = client.get("/v1/scenes/demo/export/sfs", headers=V)
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    assert r.headers["etag"].startswith(f'"r{revision}-sfs') and "demo.sfs" in r.headers["content-disposition"]
    path = tmp_path / "demo.sfs"
    path.write_bytes(r.content)
    assert parse_and_validate_scene(SFSLoader(str(path)).load_unsafe()).success
    loaded = SFSLoader(str(path)).load_as_sfs()
    assert sorted(a.id for a in loaded.annotations) == ["car-1", "van-2"]
    lidar = loaded.sensors[0]
    assert len(lidar.frames) == len(scene.frames)
    np.testing.assert_array_equal(lidar.frames[1].points.positions,
                                  np.column_stack([scene.points(1).column(c).to_numpy() for c in "xyz"]))
    # our importer: the same tracks (scene frame = imported frame + the importer's origin)
    log = read_log(import_sfs(path, tmp_path / "log"))
    offset = np.asarray(log.origin.enu_offset_m)
    back = {t.track_id: t for t in log.labels()}
    for t in tracks:
        b = back[t.track_id]
        np.testing.assert_array_equal(b.timestamps_ns, t.timestamps_ns)
        np.testing.assert_allclose(b.centers + offset, t.centers, atol=1e-9)
        np.testing.assert_allclose(b.sizes, t.sizes, atol=1e-12)
        assert _angle_deg(b.rotations, t.rotations).max() < 1e-6 and b.category == t.category
    np.testing.assert_allclose(log.world_from_ego().translation + offset, scene.world_from_ego().translation, atol=1e-9)


def test_sfs_without_points_validates(env, tmp_path):
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader
    from scale_sensor_fusion_io.validation import parse_and_validate_scene

    client, _ = env
    r = client.get("/v1/scenes/demo/export/sfs?points=false", headers=V)
    assert r.status_code == 200
    (tmp_path / "a.sfs").write_bytes(r.content)
    result = parse_and_validate_scene(SFSLoader(str(tmp_path / "a.sfs")).load_unsafe())
    assert result.success, getattr(result, "details", result)


_DEVKIT = r"""
import json, sys
from nuscenes.nuscenes import NuScenes
nusc = NuScenes(version=sys.argv[2], dataroot=sys.argv[1], verbose=False)
out = []
for ann in nusc.sample_annotation:
    box = nusc.get_box(ann["token"])
    sample = nusc.get("sample", ann["sample_token"])
    inst = nusc.get("instance", ann["instance_token"])
    out.append({"t": sample["timestamp"], "category": nusc.get("category", inst["category_token"])["name"],
                "corners": box.corners().T.tolist(), "num_lidar_pts": ann["num_lidar_pts"],
                "visibility": ann["visibility_token"]})
print(json.dumps(out))
"""


def test_nuscenes_export_loads_in_devkit(env, tmp_path):
    client, scene = env
    _, tracks = _stored(client)
    r = client.get("/v1/scenes/demo/export/nuscenes", headers=V)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        z.extractall(tmp_path)
        names = z.namelist()
    assert "v1.0-fathom/sample_annotation.json" in names
    run = subprocess.run([sys.executable, "-c", _DEVKIT, str(tmp_path), "v1.0-fathom"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    boxes = interpolate_tracks(tracks, times)
    assert len(out) == int(boxes.valid.sum()) == 6
    for ann in out:
        f = int(np.flatnonzero(times // 1000 == ann["t"])[0])
        n = next(n for n, t in enumerate(tracks)
                 if ann["category"] == {"car": "vehicle.car", "truck": "vehicle.truck"}[t.category]
                 and boxes.valid[f, n])
        ours = box_corners(boxes.centers[f, n], boxes.sizes[f, n], boxes.rotations[f, n])
        d = np.linalg.norm(ours[:, None] - np.array(ann["corners"])[None], axis=-1)
        assert d.min(axis=0).max() < 1e-9 and d.min(axis=1).max() < 1e-9
        # points in the box: a NumPy count on the stored frame
        xyz = np.column_stack([scene.points(f).column(c).to_numpy() for c in "xyz"]).astype(np.float64)
        r_box = _matrix(boxes.rotations[f, n])
        local = (xyz - boxes.centers[f, n]) @ r_box
        assert ann["num_lidar_pts"] == np.sum(np.all(np.abs(local) <= boxes.sizes[f, n] / 2, axis=1))
        assert ann["visibility"] in {"", "1", "2", "3", "4"}
    assert min(a["num_lidar_pts"] for a in out if a["category"] == "vehicle.car") >= 200  # the block of points


def _matrix(q) -> np.ndarray:
    w, x, y, z = q
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def test_kitti_export_boxes_equal_stored_labels(env):
    client, scene = env
    _, tracks = _stored(client)
    r = client.get("/v1/scenes/demo/export/kitti", headers=V)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    lines = [line.split() for line in r.text.splitlines()]
    cam = scene.cameras["CAM_FRONT"]
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    boxes = interpolate_tracks(tracks, times)
    ids = {0: "car-1", 1: "van-2"}  # ids are not decimal integers: numbered in stored order
    assert {(int(f[0]), ids[int(f[1])]) for f in lines} <= {(i, t.track_id) for i in range(3) for t in tracks}
    assert any(ids[int(f[1])] == "car-1" for f in lines)
    for f in lines:
        i, n = int(f[0]), [t.track_id for t in tracks].index(ids[int(f[1])])
        v = [float(x) for x in f[5:]]
        c, s, q = camera_boxes_from_kitti(*v[5:12])
        world_from_cam = scene.frames[i].world_from_ego @ cam.ego_from_camera
        ours = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
        theirs = world_from_cam.apply(box_corners(c[0], s[0], q[0]))
        d = np.linalg.norm(ours[:, None] - theirs[None], axis=-1)
        assert d.min(axis=0).max() < 1e-5 and d.min(axis=1).max() < 1e-5  # 6-decimal text
        assert 0.0 <= float(f[3]) <= 1.0 and int(f[4]) in (0, 1, 2, 3)
        assert f[2] == {"car": "Car", "truck": "Truck"}[tracks[n].category]


def test_etag_follows_the_label_revision(env):
    client, _ = env
    r = client.get("/v1/scenes/demo/export/kitti", headers=V)
    etag = r.headers["etag"]
    assert client.get("/v1/scenes/demo/export/kitti", headers={**V, "If-None-Match": etag}).status_code == 304
    rev = client.get("/v1/scenes/demo/labels", headers=V).json()["revision"]
    w = client.patch("/v1/scenes/demo/labels", headers={**A, "If-Match": f'"r{rev}"'},
                     json={"update": [{"id": "van-2", "category": "car"}]})
    assert w.status_code == 200
    again = client.get("/v1/scenes/demo/export/kitti", headers={**V, "If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    assert f'"r{rev + 1}-kitti' in again.headers["etag"]
    assert sum(line.split()[2] == "Car" for line in again.text.splitlines()) > sum(
        line.split()[2] == "Car" for line in r.text.splitlines())


@pytest.mark.parametrize("url, headers, status", [
    ("/v1/scenes/demo/export/sfs", {}, 401),
    ("/v1/scenes/demo/export/sfs", {"Authorization": "Bearer nope-nope-nope"}, 401),
    ("/v1/scenes/nope/export/sfs", V, 404),
    ("/v1/scenes/demo/export/kitti?camera=CAM_NOPE", V, 404),
    ("/v1/scenes/demo/export/waymo", V, 422),
])
def test_errors(env, url, headers, status):
    client, _ = env
    r = client.get(url, headers=headers)
    assert r.status_code == status, r.text
    assert "detail" in r.json()
