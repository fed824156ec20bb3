"""Export endpoints against the app in-process: each file loads back with the format's own
software (scale_sensor_fusion_io, nuscenes-devkit) or our importer and equals the stored labels."""

from __future__ import annotations

import io
import json
import shutil
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
from tests.naive import points_in_box
from tests.server_scene import DT, T0, TOKENS, car_track, write_scene

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}

# a second, moving track with a turn, inside the scene's time range
VAN = {"id": "van-2", "category": "truck", "attributes": {}, "keyframes": [
    {"timestamp_ns": T0, "center": [14.0, 3.0, 1.0], "size": [5.0, 2.1, 2.0], "rotation": [1, 0, 0, 0]},
    {"timestamp_ns": T0 + 2 * DT, "center": [16.0, 3.5, 1.0], "size": [5.0, 2.1, 2.0],
     "rotation": [float(np.cos(0.1)), 0, 0, float(np.sin(0.1))]},
]}


# categories nuScenes and KITTI have no name for (a sign) and a pole (mapped by the default table)
SIGN = {"id": "sign-3", "category": "Road Sign", "attributes": {}, "keyframes": [
    {"timestamp_ns": T0, "center": [12.0, -3.0, 2.0], "size": [0.2, 0.8, 0.8], "rotation": [1, 0, 0, 0]},
    {"timestamp_ns": T0 + 2 * DT, "center": [12.0, -3.0, 2.0], "size": [0.2, 0.8, 0.8], "rotation": [1, 0, 0, 0]}]}
POLE = {**SIGN, "id": "pole-4", "category": "pole",
        "keyframes": [dict(k, center=[12.0, 3.0, 2.5], size=[0.3, 0.3, 5.0]) for k in SIGN["keyframes"]]}


def write_fisheye_scene(root) -> None:
    """``root/fish``: the demo scene with its camera turned into a Kannala-Brandt fisheye."""
    shutil.copytree(root / "demo", root / "fish")
    doc = json.loads((root / "fish" / "scene.json").read_text())
    doc["scene_id"] = "fish"
    doc["sensors"]["cameras"][0].update(model="kannala_brandt", distortion=[0.02, -0.01, 0.0, 0.0])
    (root / "fish" / "scene.json").write_text(json.dumps(doc))


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root)
    write_fisheye_scene(root)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS)))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.put("/v1/scenes/demo/labels", headers={**A, "If-Match": "*"}, json={"tracks": [car_track(), VAN]})
        assert r.status_code == 200
        r = client.put("/v1/scenes/fish/labels", headers={**A, "If-Match": "*"},
                       json={"tracks": [car_track(), SIGN, POLE]})
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
        inside = points_in_box(xyz, boxes.centers[f, n], boxes.sizes[f, n], boxes.rotations[f, n])
        assert ann["num_lidar_pts"] == inside.sum()
        assert ann["visibility"] in {"", "1", "2", "3", "4"}
    assert min(a["num_lidar_pts"] for a in out if a["category"] == "vehicle.car") >= 200  # the block of points


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


@pytest.mark.parametrize("fmt", ["nuscenes", "kitti"])
def test_unmapped_category_is_refused_with_its_name(env, fmt):
    client, _ = env
    r = client.get(f"/v1/scenes/fish/export/{fmt}", headers=V)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert "no category for 'Road Sign'" in detail and "unmapped=drop" in detail and "pole" not in detail
    assert client.get(f"/v1/scenes/fish/export/{fmt}?unmapped=ignore", headers=V).status_code == 422


def _zip_tables(content: bytes) -> tuple[dict, list[str]]:
    with zipfile.ZipFile(io.BytesIO(content)) as z:
        tables = {n.split("/")[1][:-5]: json.loads(z.read(n)) for n in z.namelist() if n.startswith("v1.0-fathom/")}
        return tables, z.namelist()


@pytest.mark.filterwarnings("ignore::formats.export_nuscenes.LensWarning")  # the fisheye: tested below
@pytest.mark.parametrize("unmapped, sign", [("pass", "Road_Sign"), ("drop", None)])
def test_unmapped_option_passes_or_drops(env, unmapped, sign):
    client, _ = env
    r = client.get(f"/v1/scenes/fish/export/nuscenes?unmapped={unmapped}", headers=V)
    assert r.status_code == 200 and f"-{unmapped}" in r.headers["etag"]
    tables, _ = _zip_tables(r.content)
    cat = {c["token"]: c["name"] for c in tables["category"]}
    assert sorted(cat[i["category_token"]] for i in tables["instance"]) == sorted(
        n for n in ("vehicle.car", "static.manmade", sign) if n)
    k = client.get(f"/v1/scenes/fish/export/kitti?unmapped={unmapped}", headers=V)
    assert k.status_code == 200
    types = {line.split()[1]: line.split()[2] for line in k.text.splitlines()}
    assert set(types.values()) == {"Car", "Misc"} | ({sign} if sign else set())  # ids 0 car, 1 sign, 2 pole
    assert (types.get("1") == sign) if sign else "1" not in types


def test_fisheye_camera_is_named_in_header_and_notes(env):
    client, _ = env
    r = client.get("/v1/scenes/fish/export/nuscenes?unmapped=drop", headers=V)
    warning = r.headers["x-export-warnings"]
    assert warning.startswith("camera CAM_FRONT: kannala_brandt lens") and "3x3 matrix alone" in warning
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        notes = z.read("NOTES.txt").decode()
    assert warning in notes and "category 'Road Sign': dropped" in notes
    assert "x-export-warnings" not in client.get("/v1/scenes/demo/export/nuscenes", headers=V).headers


def test_complete_nuscenes_export_loads_and_renders(env, tmp_path):
    from tests.test_interop_nuscenes import check_complete_dataroot

    client, scene = env
    _, tracks = _stored(client)
    with client.stream("GET", "/v1/scenes/demo/export/nuscenes?complete=true", headers=V) as r:
        assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
        assert "demo-nuscenes-complete.zip" in r.headers["content-disposition"]
        chunks = list(r.iter_bytes())
    assert len(chunks) > 1  # streamed as it is written
    with zipfile.ZipFile(io.BytesIO(b"".join(chunks))) as z:
        z.extractall(tmp_path / "nusc")
        names = z.namelist()
    assert sum(n.startswith("samples/LIDAR_TOP/") for n in names) == len(scene.frames)
    (tmp_path / "renders").mkdir()
    check_complete_dataroot(tmp_path / "nusc", scene, tracks, {"car": "vehicle.car", "truck": "vehicle.truck"},
                            tmp_path / "renders")
    # the same files as the formats function writes
    from formats.export_nuscenes_dataroot import write_nuscenes_dataroot

    root = write_nuscenes_dataroot(tmp_path / "direct", scene, tracks)
    for n in names:
        assert (root / n).read_bytes() == (tmp_path / "nusc" / n).read_bytes(), n
