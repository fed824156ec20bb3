"""Pre-labels: detections read from every format give back the boxes written into it; bad rows
are named; the upload / read / accept / reject routes and ``fathom prelabel``; the track's
``interpolation`` field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from engine import quaternion as quat
from engine.cuboid import CuboidTrack
from engine.se3 import SE3
from formats.conventions import kitti_from_camera_boxes, nuscenes_wlh_from_lwh
from formats.detections import SceneFrames, read_detections
from formats.errors import FormatError
from formats.export_nuscenes import token
from formats.scene_store import Scene
from formats.sfs_cuboids import track_to_sfs
from server.cli import main as fathom
from server.config import Settings
from server.main import create_app
from server.prelabel_store import PrelabelStore
from server.schemas import Track
from tests.server_scene import T0, TOKENS, camera, ego_pose, write_scene

DT = 100_000_000
A = {"Authorization": "Bearer annotator-token-1"}
V = {"Authorization": "Bearer viewer-token-1"}
ADMIN = {"Authorization": "Bearer admin-token-1"}
N_FRAMES = 6


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory) -> Path:
    return write_scene(tmp_path_factory.mktemp("scenes"), n_frames=N_FRAMES)


@pytest.fixture(scope="module")
def frames(scene_dir) -> SceneFrames:
    return SceneFrames.of(Scene.open(scene_dir))


def truth():
    """Per frame a car ahead driving +x at 10 m/s and a pedestrian: ``frame (D,)``, centres,
    sizes, yaws, classes (world frame of the demo scene)."""
    f = np.repeat(np.arange(N_FRAMES), 2)
    t = f * 0.1
    centers = np.where(np.arange(len(f))[:, None] % 2 == 0,
                       np.column_stack([12 + 10 * t, np.full_like(t, 1.0), np.full_like(t, 0.8)]),
                       np.column_stack([15 + 0 * t, 1.4 * t - 4, np.full_like(t, 0.9)]))
    kind = np.where(np.arange(len(f)) % 2 == 0, "car", "pedestrian")
    sizes = np.where((kind == "car")[:, None], [4.5, 1.9, 1.6], [0.6, 0.6, 1.8])
    yaws = np.where(kind == "car", 0.0, np.pi / 2) + 0.01 * f
    return f, centers, sizes, yaws, list(kind)


def _check(det, scores=None, ids=None):
    f, c, s, y, k = truth()
    np.testing.assert_array_equal(det.frame, f)
    np.testing.assert_allclose(det.centers, c, atol=1e-6)
    np.testing.assert_allclose(det.sizes, s, atol=1e-6)
    assert np.all(quat.angle_between(det.rotations, quat.from_yaw(y)) < 1e-6)
    assert list(det.categories) == k
    if scores is not None:
        np.testing.assert_allclose(det.scores, scores)
    if ids is not None:
        assert det.source_ids == tuple(ids)


def table_bytes(coordinates="world", parquet=False, **replace) -> bytes:
    f, c, s, y, k = truth()
    if coordinates == "ego":
        for i in range(len(f)):
            ego_from_world = ego_pose(int(f[i])).inverse()
            c[i] = ego_from_world.apply(c[i][None])[0]
            y[i] -= 0.05 * f[i]  # the demo ego yaws 0.05 rad per frame
    cols = {"frame": f, "x": c[:, 0], "y": c[:, 1], "z": c[:, 2], "length": s[:, 0], "width": s[:, 1],
            "height": s[:, 2], "yaw": y, "category": k, "score": np.linspace(0.5, 1.0, len(f))}
    cols.update(replace)
    table = pa.table(cols)
    sink = io.BytesIO()
    if parquet:
        pq.write_table(table, sink)
        return sink.getvalue()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue()


@pytest.mark.parametrize("parquet", [False, True])
@pytest.mark.parametrize("coordinates", ["world", "ego"])
def test_table(frames, parquet, coordinates):
    det = read_detections(table_bytes(coordinates, parquet), frames, coordinates=coordinates)
    _check(det, scores=np.linspace(0.5, 1.0, 2 * N_FRAMES))
    assert det.source_ids is None


def _nuscenes(tokens, offset=np.zeros(3), tracking=False) -> bytes:
    f, c, s, y, k = truth()
    results: dict = {}
    for i in range(len(f)):
        box = {"sample_token": tokens[f[i]], "translation": (c[i] + offset).tolist(),
               "size": nuscenes_wlh_from_lwh(s[i]).tolist(), "rotation": quat.from_yaw(y[i]).tolist(),
               "velocity": [0.0, 0.0], "attribute_name": ""}
        box.update({"tracking_id": f"obj{i % 2}", "tracking_name": k[i], "tracking_score": 0.7} if tracking else
                   {"detection_name": k[i], "detection_score": 0.7})
        results.setdefault(tokens[f[i]], []).append(box)
    return json.dumps({"meta": {"use_lidar": True}, "results": results}).encode()


def test_nuscenes_tokens_of_fathoms_export_and_of_a_sample_table(frames, tmp_path):
    own = [token("sample", "demo", i) for i in range(N_FRAMES)]
    _check(read_detections(_nuscenes(own), frames), scores=np.full(2 * N_FRAMES, 0.7))
    _check(read_detections(_nuscenes(own, tracking=True), frames), ids=["obj0", "obj1"] * N_FRAMES)
    # the original dataset's tokens and global frame: the sample table gives the times
    theirs = [f"sample{i}" for i in range(N_FRAMES)]
    table = tmp_path / "sample.json"
    table.write_text(json.dumps([{"token": t, "timestamp": (T0 + i * DT) // 1000} for i, t in enumerate(theirs)]))
    offset = np.array([500_000.0, 4_000_000.0, 12.0])  # the demo scene's origin
    _check(read_detections(_nuscenes(theirs, offset), frames, samples=table))
    with pytest.raises(FormatError, match=r"results\['sample0'\]\[0\] \(sample token sample0\): a frame of scene"):
        read_detections(_nuscenes(theirs, offset), frames)


def _kitti_lines(tracking: bool) -> dict[int, list[str]]:
    """KITTI result lines per frame of the truth, in the demo camera's frame."""
    f, c, s, y, k = truth()
    cam = camera()
    out: dict[int, list[str]] = {}
    for i in range(len(f)):
        cam_from_world = (ego_pose(int(f[i])) @ cam.ego_from_camera).inverse()
        kb = kitti_from_camera_boxes(cam_from_world.apply(c[i][None]), s[i][None],
                                     quat.multiply(cam_from_world.rotation, quat.from_yaw(y[i]))[None])
        fields = [k[i].capitalize(), "0", "0", f"{kb['alpha'][0]:.9f}", "0", "0", "50", "50",
                  *(f"{kb[n][0]:.9f}" for n in ("h", "w", "l", "x", "y", "z", "rotation_y")), "0.9"]
        out.setdefault(int(f[i]), []).append(" ".join(([str(f[i]), str(i % 2)] if tracking else []) + fields))
    return out


def test_kitti_tracking_file_and_object_directory(frames, tmp_path):
    lines = _kitti_lines(tracking=True)
    data = ("\n".join(sum(lines.values(), [])) + "\n0 7 DontCare -1 -1 -10 0 0 1 1 -1 -1 -1 -1000 -1000 -1000 -10\n")
    reference = camera().ego_from_camera
    _check(read_detections(data.encode(), frames, "kitti", reference=reference), scores=np.full(2 * N_FRAMES, 0.9),
           ids=["0", "1"] * N_FRAMES)
    results = tmp_path / "results"
    results.mkdir()
    for frame, rows in _kitti_lines(tracking=False).items():
        (results / f"{frame:06d}.txt").write_text("\n".join(rows) + "\n")
    _check(read_detections(results, frames, reference=reference))
    with pytest.raises(ValueError, match="reference camera"):
        read_detections(results, frames)
    (results / "000009.txt").write_text(lines[0][0].split(" ", 2)[2] + "\n")
    with pytest.raises(FormatError, match=r"000009.txt @ byte 0: frame 9 line: a frame of scene 'demo' \(0..5\)"):
        read_detections(results, frames, reference=reference)


def test_sfs_annotations(frames):
    f, c, s, y, k = truth()
    times = T0 + f * DT
    anns = []
    for obj in (0, 1):
        rows = np.arange(obj, len(f), 2)
        track = CuboidTrack(f"obj{obj}", k[obj], times[rows], c[rows], s[rows], quat.from_yaw(y[rows]),
                            attributes={"score": 0.8})
        anns.append(track_to_sfs(track))
    det = read_detections(json.dumps(anns).encode(), frames)
    order = np.argsort(np.r_[np.arange(N_FRAMES) * 2, np.arange(N_FRAMES) * 2 + 1])  # annotation-major → by frame
    _check(det.select(order), scores=np.full(2 * N_FRAMES, 0.8), ids=["obj0", "obj1"] * N_FRAMES)


@pytest.mark.parametrize("column, value, message", [
    ("frame", np.r_[np.repeat(np.arange(6), 2)[:-1], 99], r"row 11: a frame of scene 'demo' \(0..5\), got 99"),
    ("x", np.r_[np.zeros(3), np.nan, np.zeros(8)], r"row 3: finite centers"),
    ("length", np.r_[np.ones(5), -1.0, np.ones(6)], r"row 5: non-negative sizes, got \[-1.0"),
    ("yaw", np.r_[np.zeros(7), np.inf, np.zeros(4)], r"row 7: finite rotations"),
])
def test_bad_rows_are_named(frames, column, value, message):
    with pytest.raises(FormatError, match=message):
        read_detections(table_bytes(**{column: value}), frames)


def test_bad_files(frames):
    with pytest.raises(FormatError, match="<bytes> @ byte 12: JSON"):
        read_detections(b'{"results": ', frames, "nuscenes")
    with pytest.raises(FormatError, match="detections in one of the formats"):
        read_detections(b"\x00\x01 nothing", frames)
    with pytest.raises(FormatError, match="detection columns; missing"):
        read_detections(table_bytes().replace(b"category", b"kategory"), frames, "table")
    with pytest.raises(FormatError, match="translation"):
        read_detections(json.dumps({"results": {"t": [{"detection_name": "car", "detection_score": 1,
                                                        "translation": [1, 2], "size": [1, 1, 1],
                                                        "rotation": [1, 0, 0, 0]}]}}).encode(), frames)
    with pytest.raises(FormatError, match="byte 0: KITTI tracking results .* got 3 fields"):
        read_detections(b"1 2 3\n", frames, "kitti", reference=SE3.identity())


# ---------------------------------------------------------------- routes and CLI


def _client(scenes: Path) -> TestClient:
    return TestClient(create_app(Settings(scenes_dir=scenes, tokens=json.dumps(TOKENS), warmup=False)),
                      raise_server_exceptions=False)


def test_upload_read_accept_reject(scene_dir):
    url = "/v1/scenes/demo/prelabels"
    with _client(scene_dir.parent) as client:
        assert client.get(url, headers=V).json() == {"scene_id": "demo", "source": None, "at_ns": None,
                                                     "detections": 0, "tracked": False, "prelabels": []}
        assert client.post(url, content=table_bytes(), headers=V).status_code == 403
        r = client.post(url + "?format=table", content=table_bytes(), headers=A)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["tracked"] and body["detections"] == 2 * N_FRAMES
        pre = {p["track"]["category"]: p for p in body["prelabels"]}
        assert sorted(pre) == ["car", "pedestrian"] and all(p["detections"] == N_FRAMES for p in pre.values())
        car = pre["car"]["track"]
        assert car["id"].startswith("pre-") and car["keyframes"][0]["timestamp_ns"] == T0
        np.testing.assert_allclose(car["keyframes"][-1]["center"], [12 + 10 * 0.5, 1.0, 0.8], atol=0.05)
        assert client.get("/v1/scenes/demo/labels", headers=V).json()["tracks"] == []  # never mixed in
        # accept: a new label track in a new revision
        r = client.post(f"{url}/{car['id']}/accept", json={"id": "car-7"}, headers=A)
        assert r.status_code == 200, r.text
        assert r.json()["revision"] == 1 and r.json()["tracks"][0]["id"] == "car-7"
        labels = client.get("/v1/scenes/demo/labels", headers=V).json()
        assert [t["id"] for t in labels["tracks"]] == ["car-7"]
        assert labels["tracks"][0]["keyframes"] == Track.model_validate({**car, "id": "car-7"}).model_dump(
            mode="json")["keyframes"]
        history = client.get("/v1/scenes/demo/labels/history", headers=ADMIN).json()
        assert history[-1]["op"] == "patch" and history[-1]["note"] == {"prelabel": car["id"]}
        got = client.get(url, headers=V).json()["prelabels"]
        assert [(p["accepted_as"], p["accepted_revision"]) for p in got if p["track"]["id"] == car["id"]] == \
            [("car-7", 1)]
        assert client.post(f"{url}/{car['id']}/accept", headers=A).status_code == 409
        ped = pre["pedestrian"]["track"]["id"]
        assert client.post(f"{url}/{ped}/accept", json={"id": "car-7"}, headers=A).status_code == 412  # taken
        assert client.post(f"{url}/{ped}/accept", json={"category": ""}, headers=A).status_code == 422
        assert client.delete(f"{url}/{ped}", headers=A).status_code == 204
        assert client.delete(f"{url}/{ped}", headers=A).status_code == 404
        assert client.post(f"{url}/{ped}/accept", headers=A).status_code == 404
        # a bad row: 422 naming it, the stored pre-labels unchanged
        r = client.post(url, content=table_bytes(frame=np.r_[np.repeat(np.arange(6), 2)[:-1], 99]), headers=A)
        assert r.status_code == 422 and "row 11" in r.text
        assert len(client.get(url, headers=V).json()["prelabels"]) == 1
        assert client.post(url + "?format=kitti", content=b"0 1 Car", headers=A).status_code == 422
        assert client.post(url + "?format=kitti&camera=NOPE", content=b"", headers=A).status_code == 422


def test_fathom_prelabel_command(scene_dir, tmp_path, capsys):
    dets = tmp_path / "dets.parquet"
    dets.write_bytes(table_bytes(parquet=True))
    db = tmp_path / "labels.sqlite3"
    assert fathom(["prelabel", str(scene_dir), str(dets), "--label-db", str(db)]) == 0
    assert "12 detections tracked into 2 pre-label tracks" in capsys.readouterr().out
    stored = PrelabelStore(db).get("demo")
    assert stored.tracked and [p.detections for p in stored.prelabels] == [N_FRAMES, N_FRAMES]
    kitti = tmp_path / "0000.txt"
    kitti.write_text("\n".join(sum(_kitti_lines(tracking=True).values(), [])) + "\n")
    assert fathom(["prelabel", str(scene_dir), str(kitti), "--camera", "CAM_FRONT", "--label-db", str(db)]) == 0
    stored = PrelabelStore(db).get("demo")
    assert not stored.tracked and [p.track_id for p in stored.prelabels] == ["pre-0", "pre-1"]
    assert fathom(["prelabel", str(scene_dir), str(kitti), "--camera", "CAM_FRONT", "--label-db", str(db),
                   "--min-score", "0.95"]) == 0  # every score is 0.9
    assert PrelabelStore(db).get("demo").prelabels == []
    bad = tmp_path / "bad.arrow"
    bad.write_bytes(table_bytes(length=np.r_[np.ones(5), -1.0, np.ones(6)]))
    assert fathom(["prelabel", str(scene_dir), str(bad), "--label-db", str(db)]) == 2
    assert "row 5: non-negative sizes" in capsys.readouterr().err


def test_track_interpolation_field():
    base = {"id": "a", "category": "car", "keyframes": [
        {"timestamp_ns": 0, "center": [0, 0, 0], "size": [1, 1, 1], "rotation": [1, 0, 0, 0]}]}
    assert "interpolation" not in Track.model_validate(base).model_dump(mode="json")  # linear: stored as before
    assert Track.model_validate({**base, "interpolation": "ctrv"}).model_dump(mode="json")["interpolation"] == "ctrv"
    with pytest.raises(ValidationError, match="interpolation"):
        Track.model_validate({**base, "interpolation": "spline"})
