"""Passive sonar in a prepared scene: the harbor rig's hull array prepared into a bearing-time
record layer, served as world rays that pass through the simulator's ships, labelled bearing
tracks as rays, every ray projected into a camera; damaged layers and scenes without arrays."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
from fastapi.testclient import TestClient

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.passive.beamform import bearing_time_record
from engine.passive.bearings import BearingTrack, bearing_rays, distance_to_rays, ray_points
from engine.passive.peaks import bearing_peaks
from engine.se3 import SE3
from formats.errors import FormatError
from formats.hydrophone import ArrayMount, HydrophoneArray, write_hydrophone
from formats.jpeg import encode_jpeg
from formats.raw_log import read_log
from formats.rig import camera_to_json
from formats.scene_store import PassiveRecord, Scene, passive_table, read_passive
from server.bearings import ray_ranges
from server.config import Settings
from server.main import create_app
from server.prepare import prepare
from server.prepare_passive import MAX_ELEMENTS, PassiveOptions, array_record, azimuth_grid, passive_records
from tests import naive
from tests.server_scene import write_scene

TOKENS = [{"token": "viewer-token", "role": "viewer", "name": "vera"},
          {"token": "annotator-token", "role": "annotator", "name": "alice"}]
V = {"Authorization": "Bearer viewer-token"}
A = {"Authorization": "Bearer annotator-token"}
MAST_AZ = -0.65  # the mast camera looks at the ferry, on the starboard bow


def mast_camera() -> Camera:
    """A camera 8 m up the mast looking level along ego azimuth :data:`MAST_AZ`, a mild barrel lens."""
    fwd = np.array([math.cos(MAST_AZ), math.sin(MAST_AZ), 0.0])
    right = np.array([math.sin(MAST_AZ), -math.cos(MAST_AZ), 0.0])
    ego_from_cam = SE3(quat.from_matrix(np.stack([right, [0, 0, -1.0], fwd], axis=1)), np.array([0.0, 0.0, 8.0]))
    lens = CameraIntrinsics(1920, 1080, 1000.0, 1000.0, 960.0, 540.0, model="brown_conrady",
                            distortion=(-0.05, 0.01, 0.0, 0.0))
    return Camera("MAST", lens, ego_from_cam)


@pytest.fixture(scope="module")
def harbor(tmp_path_factory):
    """The harbor rig (6 s, hull array at 10 dB) with a mast camera, prepared; and a client."""
    from server.simulate import write_harbor_log

    root = tmp_path_factory.mktemp("passive-scene")
    log_dir, run = write_harbor_log(root / "log", seed=3, duration_s=6.0, beams=16, hydrophones=True)
    doc = json.loads((log_dir / "log.json").read_text())
    cam = mast_camera()
    doc["cameras"] = [camera_to_json(cam)]
    (log_dir / "camera").mkdir()
    (log_dir / "camera/black.jpg").write_bytes(encode_jpeg(np.zeros((1080, 1920, 3), np.uint8)))
    for f in doc["frames"]:
        f["images"] = {"MAST": {"path": "camera/black.jpg", "timestamp_ns": f["timestamp_ns"]}}
    (log_dir / "log.json").write_text(json.dumps(doc))
    summary = prepare(log_dir, root / "scenes" / "harbor")
    assert not summary.failed and not summary.notes, summary.lines()
    write_scene(root / "scenes")  # "demo": no hydrophones
    app = create_app(Settings(scenes_dir=root / "scenes", tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield read_log(log_dir), run, Scene.open(root / "scenes" / "harbor"), client
    assert app.state.fathom.server_errors == 0


def test_the_stored_record_is_the_engines_on_the_recording(harbor):
    log, _, scene, client = harbor
    (hull,) = log.hydrophones
    rec = hull.read()
    stored = scene.passive_record("HULL")
    positions = hull.mount.positions_ego()
    az = np.radians(np.arange(-180.0, 180.0, 1.0))
    btr = bearing_time_record(rec.samples, rec.sample_rate_hz, positions, az, [[500.0, 2500.0]],
                              start_ns=rec.start_ns, frame_s=1.0)  # the harbor's frame period
    np.testing.assert_array_equal(stored.times_ns, btr.times_ns)
    np.testing.assert_array_equal(stored.power, btr.power[:, 0].astype(np.float32))
    np.testing.assert_array_equal(stored.azimuth_rad, az)
    np.testing.assert_array_equal(stored.centre_ego_m, positions.mean(axis=0))
    assert stored.band_hz.tolist() == [500.0, 2500.0] and stored.frame_s == 1.0 and stored.method == "bartlett"
    listed = client.get("/v1/scenes/harbor/passive", headers=V).json()
    assert listed == [{"array": "HULL", "azimuth_rad": az.tolist(), "band_hz": [500.0, 2500.0], "rows": 6,
                       "first_ns": int(btr.times_ns[0]), "last_ns": int(btr.times_ns[-1]), "frame_s": 1.0,
                       "method": "bartlett", "nfft": 256, "sample_rate_hz": 8000.0,
                       "centre_ego_m": positions.mean(axis=0).tolist()}]


def test_peak_rays_pass_through_the_ships(harbor):
    _, run, scene, client = harbor
    record = scene.passive_record("HULL")
    for entry in scene.frames:
        body = client.get(f"/v1/scenes/harbor/frames/{entry.index}/bearings", headers=V).json()
        (hull,) = body["arrays"]
        row = record.nearest_row(entry.timestamp_ns)
        assert hull["time_ns"] == record.times_ns[row]
        power = record.power[row].astype(np.float64)
        np.testing.assert_allclose(hull["power_db"], 10 * np.log10(power), atol=0.006)
        az, level = bearing_peaks(power, record.azimuth_rad)
        assert [p["azimuth_rad"] for p in hull["peaks"]] == az.tolist()
        origins = np.array([p["origin"] for p in hull["peaks"]])
        directions = np.array([p["direction"] for p in hull["peaks"]])
        np.testing.assert_allclose(np.linalg.norm(directions, axis=1), 1.0, atol=1e-12)
        np.testing.assert_allclose(np.array([p["end"] for p in hull["peaks"]]), origins + 2000.0 * directions)
        for ship in run.passive.ships:
            truth = run.passive.truth(ship, np.array([hull["time_ns"]]))["position_m"]
            miss = distance_to_rays(np.repeat(truth, len(origins), 0), origins, directions)
            assert miss.min() < ship.length_m, (entry.index, ship.name, miss)


def _track(tid: str, az: tuple[float, float], t0: int, attributes: dict | None = None) -> dict:
    return {"id": tid, "category": "merchant", "band_hz": [400.0, 700.0], "attributes": attributes or {},
            "keyframes": [{"timestamp_ns": t0 + k * 2_000_000_000, "azimuth_rad": a} for k, a in enumerate(az)]}


def test_labelled_bearing_tracks_are_rays_and_camera_polylines(harbor):
    _, _, scene, client = harbor
    entry = scene.frames[2]
    t = entry.timestamp_ns
    tracks = [_track("ferry", (-0.70, -0.60), t - 1_000_000_000, {"array": "HULL"}),
              _track("port", (1.05, 0.95), t - 500_000_000),  # no array named: the scene's first
              _track("later", (0.0, 0.1), t + 1)]  # not yet existing
    r = client.put("/v1/scenes/harbor/bearing-tracks", headers=A, json={"expected_revision": 0, "tracks": tracks})
    assert r.status_code == 200
    body = client.get(f"/v1/scenes/harbor/frames/{entry.index}/bearings", headers=V).json()
    assert body["tracks_revision"] == 1 and [x["track_id"] for x in body["tracks"]] == ["ferry", "port"]
    centre = scene.passive_record("HULL").centre_ego_m
    for served, doc in zip(body["tracks"], tracks):
        bt = BearingTrack(doc["id"], doc["category"], np.array([k["timestamp_ns"] for k in doc["keyframes"]]),
                          np.array([k["azimuth_rad"] for k in doc["keyframes"]]), np.array(doc["band_hz"]))
        az, _ = bt.at(np.array([t]))
        o, d = bearing_rays(np.array([t]), az, scene.world_from_ego(), centre)
        assert served["array"] == "HULL" and served["azimuth_rad"] == az[0]
        np.testing.assert_allclose(served["origin"], o[0], rtol=0, atol=1e-9)
        np.testing.assert_allclose(served["direction"], d[0], rtol=0, atol=1e-12)
    # the same rays in the ego frame of the frame
    ego = client.get(f"/v1/scenes/harbor/frames/{entry.index}/bearings", headers=V, params={"frame": "ego"}).json()
    back = entry.world_from_ego.inverse()
    for w, e in zip(body["tracks"] + body["arrays"][0]["peaks"], ego["tracks"] + ego["arrays"][0]["peaks"]):
        np.testing.assert_allclose(e["origin"], back.apply(np.array([w["origin"]]))[0], atol=1e-9)
        np.testing.assert_allclose(e["end"], back.apply(np.array([w["end"]]))[0], atol=1e-6)
    _check_camera(scene, entry, body)


def _check_camera(scene: Scene, entry, body: dict) -> None:
    """The served polylines are the rays' samples projected with the NumPy/OpenCV camera: the
    runs of consecutive samples in front of the camera and inside the image."""
    (served,) = body["cameras"]
    cam = scene.cameras["MAST"]
    rays = body["arrays"][0]["peaks"] + body["tracks"]
    pts = ray_points(np.array([r["origin"] for r in rays]), np.array([r["direction"] for r in rays]),
                     ray_ranges(body["range_m"]))
    frames = scene.frames
    q, tr = naive.interpolate_poses([f.timestamp_ns for f in frames], [f.world_from_ego.rotation for f in frames],
                                    [f.world_from_ego.translation for f in frames], [served["timestamp_ns"]])
    world_from_cam = naive.transform_matrix(tr[0], q[0]) @ naive.transform_matrix(
        cam.ego_from_camera.translation, cam.ego_from_camera.rotation)
    p_cam = (np.linalg.inv(world_from_cam) @ np.c_[pts.reshape(-1, 3), np.ones(pts.size // 3)].T).T[:, :3]
    uv = naive.opencv_project(p_cam, cam.intrinsics).reshape(len(rays), -1, 2)
    keep = (p_cam[:, 2] > cam.near_m).reshape(len(rays), -1) & naive.in_image(uv, 1920, 1080)
    expected = {}
    for m, ray in enumerate(rays):
        edges = np.flatnonzero(np.diff(np.r_[0, keep[m].astype(int), 0]))
        paths = [uv[m, a:b] for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]
        if paths:
            expected[(ray["kind"], ray.get("peak"), ray.get("track_id"))] = paths
    got = {(r["kind"], r.get("peak"), r.get("track_id")): r["paths"] for r in served["rays"]}
    assert got.keys() == expected.keys() and ("track", None, "ferry") in got
    assert ("track", None, "port") not in got  # to port: outside the camera's view
    for key, paths in expected.items():
        assert [len(p) for p in got[key]] == [len(p) for p in paths]
        for a, b in zip(got[key], paths):
            np.testing.assert_allclose(a, b, atol=0.0051)
    assert any(len(p) < len(ray_ranges(2000.0)) for ps in got.values() for p in ps)  # samples were dropped


def test_errors_and_scenes_without_hydrophones(harbor):
    _, _, _, client = harbor
    url = "/v1/scenes/harbor/frames/0/bearings"
    assert client.get("/v1/scenes/demo/passive", headers=V).json() == []
    demo = client.get("/v1/scenes/demo/frames/0/bearings", headers=V).json()
    assert demo["arrays"] == [] and demo["tracks"] == [] and demo["cameras"][0]["rays"] == []
    assert client.get("/v1/scenes/nope/passive", headers=V).status_code == 404
    assert client.get("/v1/scenes/harbor/frames/99/bearings", headers=V).status_code == 404
    assert client.get(url, headers=V, params={"array": "TOWED"}).status_code == 404
    assert client.get(url, headers=V, params={"array": "HULL"}).status_code == 200
    for bad in ({"range_m": -1}, {"range_m": "nan"}, {"frame": "sensor"}, {"max_peaks": 0}, {"peak_db": 100},
                {"array": "../x"}):
        assert client.get(url, headers=V, params=bad).status_code == 422, bad
    assert client.get(url).status_code == 401


def test_a_damaged_layer_is_a_clear_error(harbor, tmp_path):
    _, _, scene, _ = harbor
    copy = tmp_path / "scenes" / "harbor"
    shutil.copytree(scene.dir, copy)
    path = copy / "passive" / "HULL.arrow"
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(FormatError, match="HULL.arrow.*bytes as the manifest records"):
        Scene.open(copy).passive_record("HULL")
    path.write_bytes(b"\0" * len(data))
    with pytest.raises(FormatError, match="HULL.arrow.*an Arrow IPC file"):
        Scene.open(copy).passive_record("HULL")
    with pytest.raises(KeyError):
        Scene.open(copy).passive_record("TOWED")
    app = create_app(Settings(scenes_dir=tmp_path / "scenes", tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as client:
        listed = client.get("/v1/scenes/harbor/passive", headers=V)
        assert listed.status_code == 200 and "damaged" in listed.json()[0]["error"]
        body = client.get("/v1/scenes/harbor/frames/0/bearings", headers=V)
        assert body.status_code == 200 and "damaged" in body.json()["arrays"][0]["error"]
    assert app.state.fathom.server_errors == 0


def _record(**change) -> PassiveRecord:
    base = dict(array="HULL", times_ns=np.array([10, 20], np.int64), power=np.ones((2, 4), np.float32),
                azimuth_rad=azimuth_grid(90.0), band_hz=np.array([1.0, 2.0]), centre_ego_m=np.zeros(3), frame_s=1.0,
                method="bartlett", nfft=256, sample_rate_hz=8000.0)
    return PassiveRecord(**(base | change))


def _write(path, table: pa.Table) -> None:
    with ipc.new_file(str(path), table.schema) as w:
        w.write_table(table)


def test_layer_files_round_trip_and_bad_ones_are_refused(tmp_path):
    path = tmp_path / "l.arrow"
    _write(path, passive_table(_record()))
    back = read_passive(path)
    np.testing.assert_array_equal(back.power, np.ones((2, 4), np.float32))
    assert back.nearest_row(14) == 0 and back.nearest_row(15) == 0 and back.nearest_row(16) == 1
    assert back.nearest_row(-10**9) is None and back.nearest_row(20 + 500_000_000) == 1
    good = passive_table(_record())
    meta = json.loads(good.schema.metadata[b"fathom.passive"])
    cases = {
        "azimuth_rad": good.replace_schema_metadata({b"fathom.passive": json.dumps(
            dict(meta, azimuth_rad=meta["azimuth_rad"][:3])).encode()}),
        "fathom.passive": good.replace_schema_metadata({}),
        "power: fixed_size_list": pa.table({"time_ns": pa.array([1], pa.int64()),
                                            "power": pa.array([[1.0, 2.0]], pa.list_(pa.float64()))}),
        "strictly increasing": passive_table(_record()).set_column(0, "time_ns", pa.array([20, 10], pa.int64())),
        "finite and >= 0": passive_table(_record(power=np.full((2, 4), np.float32(1.0))))
        .set_column(1, "power", pa.FixedSizeListArray.from_arrays(pa.array(np.r_[-1.0, np.ones(7)], pa.float32()), 4)),
    }
    for match, table in cases.items():
        _write(path, table)
        with pytest.raises(FormatError, match=f"l.arrow.*{match}"):
            read_passive(path)
    with pytest.raises(ValueError, match="power must be"):
        passive_table(_record(power=np.ones((3, 4))))


def test_reads_in_chunks_equal_one_call_and_the_bounds_hold(tmp_path):
    """A 4-element array recorded for 140 frames: read 64 frames at a time, the record is the
    engine's over the whole recording; too many elements leave the array out with a note."""
    fs, length = 4000.0, 256
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 140 * length + 100)).astype(np.float32) * 0.1
    write_hydrophone(tmp_path / "a.pcm", x, fs, start_ns=123)
    elements = np.array([[0.0, 0, 0], [0.3, 0, 0], [0, 0.3, 0], [0.3, 0.3, 0]])
    array = HydrophoneArray("A", tmp_path / "a.pcm", 123, fs, np.zeros(4), ArrayMount("hull", elements))
    options = PassiveOptions(band_hz=(200.0, 1200.0), nfft=64, azimuth_step_deg=5.0)
    record = array_record(array, length / fs, options)
    rec = array.read()
    btr = bearing_time_record(rec.samples, fs, array.mount.positions_ego(), azimuth_grid(5.0), [[200.0, 1200.0]],
                              start_ns=123, frame_s=length / fs, nfft=64)
    assert len(record.times_ns) == 140
    np.testing.assert_array_equal(record.times_ns, btr.times_ns)
    np.testing.assert_array_equal(record.power, btr.power[:, 0].astype(np.float32))
    big = HydrophoneArray("B", tmp_path / "a.pcm", 123, fs, np.zeros(MAX_ELEMENTS + 1),
                          ArrayMount("hull", np.zeros((MAX_ELEMENTS + 1, 3))))
    log = SimpleNamespace(hydrophones=(array, big), frames=())
    records, notes = passive_records(log, options)
    assert [r.array for r in records] == ["A"] and len(notes) == 1 and "'B' LEFT OUT" in notes[0], notes
    assert passive_records(log, PassiveOptions(enabled=False)) == ([], [])


def _peaks_loop(p: np.ndarray, az: np.ndarray, within_db: float, max_peaks: int, circle: bool):
    """Plain-loop reference of ``bearing_peaks``."""
    found = []
    b = len(p)
    for k in range(b):
        left = p[(k - 1) % b] if circle or k > 0 else None
        right = p[(k + 1) % b] if circle or k < b - 1 else None
        strong = p[k] >= p.max() * 10 ** (-within_db / 10)
        if (left is None or p[k] > left) and (right is None or p[k] >= right) and strong:
            shift = 0.0
            if left is not None and right is not None and left - 2 * p[k] + right < 0:
                shift = 0.5 * (left - right) / (left - 2 * p[k] + right)
            a = az[k] + shift * (az[1] - az[0])
            found.append((-p[k], k, math.atan2(math.sin(a), math.cos(a)), 10 * math.log10(p[k])))
    found.sort()
    return [f[2] for f in found[:max_peaks]], [f[3] for f in found[:max_peaks]]


def test_bearing_peaks_against_a_loop():
    rng = np.random.default_rng(2)
    circle = azimuth_grid(5.0)
    sector = np.radians(np.arange(-60.0, 61.0, 2.0))
    for az, is_circle in ((circle, True), (sector, False)):
        for _ in range(50):
            p = rng.gamma(2.0, size=len(az))
            p[rng.integers(len(az))] *= 6
            for within_db, max_peaks in ((3.0, 4), (20.0, 50), (0.0, 1)):
                got = bearing_peaks(p, az, within_db=within_db, max_peaks=max_peaks)
                want = _peaks_loop(p, az, within_db, max_peaks, is_circle)
                np.testing.assert_allclose(got[0], want[0], atol=1e-12)
                np.testing.assert_allclose(got[1], want[1], atol=1e-12)
    edge = np.r_[5.0, np.ones(len(sector) - 1)]  # a sector's end beam can be a peak (no refinement)
    np.testing.assert_array_equal(bearing_peaks(edge, sector)[0], [sector[0]])
    assert bearing_peaks(np.zeros(len(circle)), circle)[0].size == 0
    with pytest.raises(ValueError, match="power"):
        bearing_peaks(-np.ones(len(circle)), circle)
