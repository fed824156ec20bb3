"""Radar: the nuScenes radar PCD reader and writer against nuscenes-devkit's RadarPointCloud,
the generic radar PCD, bad input, Doppler ego-motion compensation against NumPy and the
simulator's truth, multi-sweep accumulation against the devkit's from_file_multisweep, and
the whole path: raw log → prepare → scene → server route → nuScenes and SFS exports."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from fastapi.testclient import TestClient

from engine.radar import (
    RadarSweep,
    compensate_radial_velocity,
    radar_multisweep,
    radar_to_world,
    sensor_velocity,
)
from engine.se3 import SE3
from formats.errors import FormatError
from formats.export_nuscenes import us_from_ns
from formats.radar import (
    nuscenes_radar_bytes,
    read_nuscenes_radar,
    read_nuscenes_radar_sweeps,
    read_radar_pcd,
    write_nuscenes_radar,
    write_radar_pcd,
)
from formats.raw_log import read_log
from formats.scene_store import Lidar, Scene, SceneWriter, points_table, radar_table
from tests.naive import interpolate_poses, points_in_box, quat_to_matrix, transform_matrix
from tests.radar_nuscenes import (
    FIELDS,
    VERSION,
    chain_inputs,
    devkit_pcd,
    random_records,
    write_radar_dataroot,
)

devkit = pytest.importorskip("nuscenes.utils.data_classes")
RadarPointCloud = devkit.RadarPointCloud


def channels(sweep: RadarSweep) -> np.ndarray:
    """The devkit's ``(18, N)`` float64 points of a sweep: its positions, then the records' fields."""
    rec = sweep.extra["nuscenes"]
    return np.vstack([sweep.xyz.T.astype(np.float64)] + [rec[f].astype(np.float64) for f in FIELDS[3:]])


# ---------------------------------------------------------------- readers and writers


@pytest.mark.parametrize("filters", [{}, {"dynprop_states": [0, 2, 6], "invalid_states": list(range(18)),
                                          "ambig_states": list(range(5))}])
def test_reader_matches_devkit(tmp_path, filters):
    rec = random_records(125, 1)
    path = devkit_pcd(tmp_path / "s__1532402927664178.pcd", rec)
    ref = RadarPointCloud.from_file(str(path), **filters)
    ours = read_nuscenes_radar(path, **filters)
    assert 0 < len(ours) < 125 and ours.timestamp_ns == 1532402927664178000
    np.testing.assert_array_equal(channels(ours), ref.points)
    x, y = ref.points[0], ref.points[1]
    np.testing.assert_allclose(ours.radial_velocity_mps, (ref.points[6] * x + ref.points[7] * y) / np.hypot(x, y),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(ours.rcs_dbsm, ref.points[5].astype(np.float32))
    # our writer: the devkit reads the same sweep back; several files decoded together = one by one
    back = RadarPointCloud.from_file(str(write_path(tmp_path / "w.pcd", ours)), **filters)
    np.testing.assert_array_equal(back.points, ref.points)
    both = read_nuscenes_radar_sweeps([path, path.read_bytes()], timestamps_ns=[None, 5], **filters)
    assert [len(s) for s in both] == [len(ours)] * 2 and both[1].timestamp_ns == 5
    np.testing.assert_array_equal(channels(both[1]), ref.points)


def write_path(path: Path, sweep: RadarSweep) -> Path:
    write_nuscenes_radar(path, sweep)
    return path


def test_empty_sweep_and_written_defaults(tmp_path):
    marker = random_records(3, 2)
    marker["vx_comp"][0] = np.nan  # the devkit's empty-sweep marker: a NaN in the first point
    path = devkit_pcd(tmp_path / "e.pcd", marker)
    assert RadarPointCloud.from_file(str(path)).points.shape == (18, 0) and len(read_nuscenes_radar(path)) == 0
    empty = RadarSweep(np.zeros((0, 3)), np.zeros(0), np.zeros(0))
    assert RadarPointCloud.from_file(str(write_path(tmp_path / "e2.pcd", empty))).nbr_points() == 0
    # a sweep without records: vx vy / vx_comp vy_comp from the radial velocities along (x, y)
    xyz = np.array([[10.0, 0.0, 0.0], [3.0, -4.0, 0.5], [0.0, 7.0, 0.0]])
    sweep = RadarSweep(xyz, [-2.0, 5.0, 1.0], [3.0, 4.0, 5.0])
    write_nuscenes_radar(tmp_path / "d.pcd", sweep, np.array([0.5, -1.0, 2.0]))
    pc = RadarPointCloud.from_file(str(tmp_path / "d.pcd"))
    unit = xyz[:, :2] / np.linalg.norm(xyz[:, :2], axis=1, keepdims=True)
    np.testing.assert_allclose(pc.points[6:8].T, unit * np.array([[-2.0], [5.0], [1.0]]), atol=1e-6)
    np.testing.assert_allclose(pc.points[8:10].T, unit * np.array([[0.5], [-1.0], [2.0]]), atol=1e-6)
    np.testing.assert_array_equal(pc.points[[3, 4, 11, 14]].T, [[4, k, 3, 0] for k in range(3)])
    np.testing.assert_allclose(read_nuscenes_radar(tmp_path / "d.pcd").radial_velocity_mps, [-2.0, 5.0, 1.0], atol=1e-6)
    with pytest.raises(ValueError, match="compensated_mps"):
        nuscenes_radar_bytes(sweep)


@pytest.mark.parametrize("encoding", ["ascii", "binary", "binary_compressed"])
def test_generic_radar_pcd_round_trip(tmp_path, encoding):
    rng = np.random.default_rng(3)
    sweep = RadarSweep(rng.normal(0, 30, (50, 3)), rng.normal(0, 5, 50), rng.normal(0, 9, 50), 7,
                       extra={"snr_db": rng.uniform(0, 30, 50).astype(np.float32)})
    write_radar_pcd(tmp_path / "g.pcd", sweep, encoding)
    back = read_radar_pcd(tmp_path / "g.pcd", timestamp_ns=7)
    for name in ("xyz", "radial_velocity_mps", "rcs_dbsm"):
        np.testing.assert_array_equal(getattr(back, name), getattr(sweep, name))
    np.testing.assert_array_equal(back.extra["snr_db"], sweep.extra["snr_db"])


def test_bad_input(tmp_path):
    rec = random_records(10, 4)
    good = devkit_pcd(tmp_path / "good.pcd", rec).read_bytes()
    cases = {
        "fields.pcd": good.replace(b"FIELDS x y z dyn_prop", b"FIELDS x y q dyn_prop"),
        "type.pcd": good.replace(b"TYPE F F F I I", b"TYPE F F F U I"),
        "ascii.pcd": good.replace(b"DATA binary", b"DATA ascii"),
        "short.pcd": good[:-60],
        "lidar.pcd": b"VERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nWIDTH 1\nPOINTS 1\nDATA binary\n" + bytes(12),
    }
    messages = {"fields.pcd": "'z'", "type.pcd": "TYPE I", "ascii.pcd": "DATA binary", "short.pcd": "43 bytes",
                "lidar.pcd": "18 nuScenes radar fields"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FormatError, match=messages[name]) as err:
            read_nuscenes_radar(tmp_path / name)
        assert err.value.path == str(tmp_path / name)
    nan = rec.copy()
    nan["x"][4] = np.inf
    nan["invalid_state"][4], nan["ambig_state"][4], nan["dyn_prop"][4] = 0, 3, 0  # kept by the filters
    with pytest.raises(FormatError, match=r"finite x y z \(point 4\)") as err:
        read_nuscenes_radar(devkit_pcd(tmp_path / "inf.pcd", nan))
    assert err.value.offset == len(good) - 1 - 10 * 43 + 4 * 43
    with pytest.raises(FormatError, match="readable"):
        read_nuscenes_radar(tmp_path / "missing.pcd")
    write_radar_pcd(tmp_path / "g.pcd", RadarSweep(np.ones((2, 3)), np.zeros(2), np.zeros(2)))
    (tmp_path / "nov.pcd").write_bytes((tmp_path / "g.pcd").read_bytes().replace(b"radial_velocity", b"speed"))
    with pytest.raises(FormatError, match="radial_velocity"):
        read_radar_pcd(tmp_path / "nov.pcd")


# ---------------------------------------------------------------- compensation


def test_compensation_matches_numpy():
    rng = np.random.default_rng(5)
    xyz = rng.normal(0, 40, (500, 3)).astype(np.float32)
    xyz[0] = 0.0
    vr, v = rng.normal(0, 10, 500).astype(np.float32), rng.normal(0, 10, 3)
    out = compensate_radial_velocity(xyz, vr, v)
    p = xyz.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = vr + p @ v / np.linalg.norm(p, axis=1)
    assert np.isnan(out[0]) and out.dtype == np.float32
    np.testing.assert_allclose(out[1:], ref[1:], rtol=1e-6, atol=1e-5)
    with pytest.raises(ValueError, match="sensor_velocity_mps"):
        compensate_radial_velocity(xyz, vr, [1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match=r"radial_velocity_mps must have shape \(500,\)"):
        compensate_radial_velocity(xyz, vr[:3], v)


def test_sensor_velocity_matches_numpy(drive):
    track, ext = drive.gnss, drive.radars[0].ego_from_radar
    times = drive.frame_times_ns + 37_500_000
    h = 10_000_000
    q, t = interpolate_poses(track.timestamps_ns, track.rotation, track.translation,
                             np.concatenate([times - h, times + h]))
    origin = t + np.einsum("nij,j->ni", quat_to_matrix(q), ext.translation)
    ref = (origin[len(times):] - origin[:len(times)]) / (2 * h * 1e-9)
    np.testing.assert_allclose(sensor_velocity(track, ext, times), ref, atol=1e-9)


def test_compensation_recovers_the_simulated_truth(drive):
    """The true track's central difference over ±10 ms is off the true velocity by at most
    ``a h / 2`` where the acceleration jumps by ``a`` (2.5 m/s² here): 12.5 mm/s."""
    radar = drive.radars[0]
    moving = static = 0
    for scan in drive.radar_sweeps[radar.name]:
        v = sensor_velocity(drive.world_from_ego, radar.ego_from_radar, scan.timestamp_ns)[0]
        np.testing.assert_allclose(v, scan.extra["sensor_velocity_mps"][0], atol=0.0125)
        xyz, comp = radar_to_world(scan, drive.world_from_ego, radar.ego_from_radar)
        truth = scan.extra["target_radial_velocity_mps"]
        np.testing.assert_allclose(comp, truth, atol=0.0125)
        assert np.abs(scan.radial_velocity_mps - truth).max() > 5.0  # the ego's motion was in the measurement
        actor = scan.extra["object_id"] > drive.world.n_static
        moving += int(np.sum(np.abs(truth[actor]) > 0.5))
        static += int(np.sum(~actor))
        np.testing.assert_allclose(comp[~actor], 0.0, atol=0.0125)
        pose = drive.world_from_ego.at(scan.timestamp_ns) @ radar.ego_from_radar
        np.testing.assert_allclose(xyz, pose.apply(scan.xyz), atol=1e-9)
    assert moving > 10 and static > 100


# ---------------------------------------------------------------- multi-sweep accumulation


@pytest.fixture(scope="module")
def radar_dataroot(tmp_path_factory):
    """8 samples of 125 radar clusters (tests.radar_nuscenes) and the devkit loaded on them."""
    from nuscenes import NuScenes

    root = write_radar_dataroot(tmp_path_factory.mktemp("nusc"), 8, 125)
    return root, NuScenes(VERSION, str(root), verbose=False)


@pytest.mark.parametrize("sample, nsweeps, min_distance", [(7, 5, 1.0), (2, 5, 1.0), (5, 3, 0.0)])
def test_multisweep_matches_devkit(radar_dataroot, sample, nsweeps, min_distance):
    root, nusc = radar_dataroot
    rec = nusc.sample[sample]
    ref_pc, ref_times = RadarPointCloud.from_file_multisweep(nusc, rec, "RADAR_FRONT", "LIDAR_TOP", nsweeps,
                                                             min_distance)
    files, poses, extr, ref_pose, ref_ext, ref_ns = chain_inputs(nusc, rec, "RADAR_FRONT", "LIDAR_TOP")
    sweeps = read_nuscenes_radar_sweeps([root / f for f in files])
    out = radar_multisweep(sweeps, poses, extr, ref_pose, ref_ext, ref_ns, nsweeps, min_distance)
    assert len(out) == ref_pc.nbr_points() > 0 and out.frame == "reference"
    assert np.abs(out.xyz - ref_pc.points[:3].T).max() <= 1e-5
    np.testing.assert_array_equal(channels(out)[3:], ref_pc.points[3:])
    np.testing.assert_allclose(out.extra["time_lag_s"], ref_times[0], atol=1e-6)
    assert set(out.extra["sweep_index"]) == set(range(min(nsweeps, sample + 1)))


def test_multisweep_gathers_extra_columns_of_any_dtype_and_shape():
    """Kept rows of every column in sweep order: extra columns of one dtype and row shape
    (stacked as raw bytes) and of differing dtypes (stacked by NumPy) alike; the column only
    one sweep has is dropped."""
    xyz = [np.array([[5.0, 0, 0], [0.5, 0.5, 0], [0, 7, 0]]), np.array([[3.0, 1, 0], [0.2, 0.1, 0]])]
    extra = [{"pair": np.arange(6, dtype=np.int16).reshape(3, 2), "mixed": np.arange(3, dtype=np.float32),
              "own": np.zeros(3)},
             {"pair": np.arange(6, 10, dtype=np.int16).reshape(2, 2), "mixed": np.arange(3, 5, dtype=np.float64)}]
    sweeps = [RadarSweep(p, np.arange(len(p)) + 10.0 * k, -np.arange(len(p)) - 10.0 * k, 0, "radar", e)
              for k, (p, e) in enumerate(zip(xyz, extra))]
    out = radar_multisweep(sweeps, SE3.identity(2), SE3.identity(), SE3.identity(), SE3.identity(), 0)
    kept = [0, 2, 3]  # rows of the two sweeps stacked; (0.5, 0.5) and (0.2, 0.1) lie within 1 m
    np.testing.assert_array_equal(out.radial_velocity_mps, np.array([0.0, 1, 2, 10, 11], np.float32)[kept])
    np.testing.assert_array_equal(out.rcs_dbsm, -np.array([0.0, 1, 2, 10, 11], np.float32)[kept])
    np.testing.assert_array_equal(out.extra["pair"], np.arange(10, dtype=np.int16).reshape(5, 2)[kept])
    assert out.extra["pair"].dtype == np.int16 and out.extra["mixed"].dtype == np.float64
    np.testing.assert_array_equal(out.extra["mixed"], np.arange(5.0)[kept])
    assert "own" not in out.extra and list(out.extra["sweep_index"]) == [0, 0, 1]


def test_multisweep_bad_input():
    s = RadarSweep(np.ones((2, 3)), np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match="nsweeps"):
        radar_multisweep([s], SE3.identity(1), SE3.identity(), SE3.identity(), SE3.identity(), 0, nsweeps=0)
    with pytest.raises(ValueError, match="ego poses"):
        radar_multisweep([s, s], SE3.identity(1), SE3.identity(), SE3.identity(), SE3.identity(), 0)
    with pytest.raises(ValueError, match="ref_world_from_ego"):
        radar_multisweep([s], SE3.identity(1), SE3.identity(), SE3.identity(2), SE3.identity(), 0)


# ---------------------------------------------------------------- raw log → prepare → scene → server → exports


@pytest.fixture(scope="module")
def radar_scene(drive, tmp_path_factory) -> Path:
    """The test drive (its front radar included) as a raw log without cameras, prepared."""
    from server.prepare import prepare
    from server.simulate import write_drive_log

    root = tmp_path_factory.mktemp("radar")
    log = write_drive_log(root / "log", drive, cameras=False)
    summary = prepare(log, root / "scenes" / "road-radar")
    assert summary.prepared == len(drive.frame_times_ns) and not summary.failed
    return root / "scenes" / "road-radar"


def test_prepared_radar_layer(drive, radar_scene):
    scene = Scene.open(radar_scene)
    radar = drive.radars[0]
    assert [r.name for r in scene.radars] == [radar.name]
    assert scene.radars[0].ego_from_sensor.allclose(radar.ego_from_radar)
    for entry, scan in zip(scene.frames, drive.radar_sweeps[radar.name]):
        assert entry.radar.file == f"frames/{entry.index:06d}.radar.arrow" and entry.radar in entry.files()
        raw = (radar_scene / entry.radar.file).read_bytes()
        assert (len(raw), xxhash.xxh3_128(raw).hexdigest()) == (entry.radar.bytes, entry.radar.xxh3_128)
        lidar_returns = sum(len(drive.sweeps[l.name][entry.index]) for l in drive.lidars)
        assert entry.n_points == lidar_returns and entry.n_radar_points == len(scan)  # radar not in the points
        table = scene.radar(entry.index)
        world = (drive.gnss.at(scan.timestamp_ns) @ radar.ego_from_radar).apply(scan.xyz)
        xyz = np.column_stack([table.column(c).to_numpy() for c in "xyz"])
        assert np.abs(xyz - world).max() <= 0.5e-3 + 1e-4  # the 1 mm quantisation
        np.testing.assert_allclose(table.column("radial_velocity_mps").to_numpy(), scan.radial_velocity_mps, atol=1e-5)
        np.testing.assert_allclose(table.column("radial_velocity_comp_mps").to_numpy(),
                                   scan.extra["target_radial_velocity_mps"], atol=0.0125)
        np.testing.assert_array_equal(table.column("rcs_dbsm").to_numpy(), scan.rcs_dbsm)
        assert set(table.column("sensor_id").to_numpy()) == {0}
        assert set(table.column("time_offset_ns").to_numpy()) == {scan.timestamp_ns - entry.timestamp_ns}


def radar_client(scenes_dir: Path) -> TestClient:
    """A client of the app serving ``scenes_dir``, sending a viewer's token."""
    from server.config import Settings
    from server.main import create_app

    app = create_app(Settings(scenes_dir=scenes_dir, tokens=json.dumps({"viewer-token-1": "viewer"})))
    return TestClient(app, raise_server_exceptions=False, headers={"Authorization": "Bearer viewer-token-1"})


def test_radar_route(radar_scene):
    scene = Scene.open(radar_scene)
    with radar_client(radar_scene.parent) as client:
        url = "/v1/scenes/road-radar/frames/3/radar"
        r = client.get(url)
        assert r.status_code == 200 and r.headers["x-point-count"] == str(scene.frames[3].n_radar_points)
        got = pa.ipc.open_stream(r.content).read_all()
        want = scene.radar(3)
        assert got.schema.names == [n for n in want.schema.names if n not in ("xq", "yq", "zq")]
        for name in got.schema.names:
            assert got.column(name).equals(want.column(name))
        assert client.get(url, headers={"If-None-Match": r.headers["etag"]}).status_code == 304
        ego = pa.ipc.open_stream(client.get(url + "?frame=ego").content).read_all()
        world = np.column_stack([want.column(c).to_numpy() for c in "xyz"]).astype(np.float64)
        pose = scene.frames[3].world_from_ego
        ref = (world - pose.translation) @ quat_to_matrix(pose.rotation)  # R^T (p - t), row vectors
        np.testing.assert_allclose(np.column_stack([ego.column(c).to_numpy() for c in "xyz"]), ref, atol=1e-5)
        assert client.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401
        assert client.get("/v1/scenes/road-radar/frames/99/radar").status_code == 404


def test_frame_without_radar_and_bad_tables(tmp_path):
    writer = SceneWriter(tmp_path / "s", scene_id="s", lidars=[Lidar("L", SE3.identity())],
                         radars=[Lidar("RADAR_FRONT", SE3.identity())])
    points = points_table(np.zeros((3, 3)))
    one = np.ones(2, np.float32)
    with pytest.raises(ValueError, match="sensor_id must be below the scene's 1 radars"):
        writer.write_frame(0, 0, SE3.identity(), points, radar=radar_table(np.ones((2, 3)), one, one, one,
                                                                           np.array([0, 1]), np.zeros(2)))
    with pytest.raises(ValueError, match="radar columns"):
        writer.write_frame(0, 0, SE3.identity(), points, radar=points)
    writer.write_frame(0, 0, SE3.identity(), points)
    writer.write_frame(1, 10, SE3.identity(), points, radar=radar_table(np.ones((2, 3)), one, one, one,
                                                                        np.zeros(2, np.uint8), np.zeros(2)))
    writer.finalize()
    scene = Scene.open(tmp_path / "s")
    assert scene.radar(0) is None and scene.frames[0].radar is None and scene.radar(1).num_rows == 2
    (tmp_path / "s" / scene.frames[1].radar.file).write_bytes(b"x" * scene.frames[1].radar.bytes)
    with pytest.raises(FormatError, match="Arrow IPC"):
        scene.radar(1)
    with radar_client(tmp_path) as client:  # no radar in frame 0: 404; a damaged radar file: 500 naming it
        assert client.get("/v1/scenes/s/frames/0/radar").status_code == 404
        r = client.get("/v1/scenes/s/frames/1/radar")
        assert r.status_code == 500 and "radar file" in r.json()["detail"] and str(tmp_path) not in r.text


def test_raw_log_radar_entries_checked(radar_scene, tmp_path):
    log_dir = radar_scene.parents[1] / "log"
    log = read_log(log_dir)
    assert [r.format for r in log.radars] == ["nuscenes_radar"] and all("RADAR_FRONT" in f.radar for f in log.frames)
    doc = json.loads((log_dir / "log.json").read_text())
    bad = {
        "format": dict(doc, radars=[dict(doc["radars"][0], format="ars408")]),
        "declared sensors": dict(doc, frames=[dict(doc["frames"][0], radar={"RADAR_BACK": "radar/x.pcd"})]),
        "timestamp_ns": dict(doc, frames=[dict(doc["frames"][0], radar={"RADAR_FRONT": {"path": "radar/x.pcd"}})]),
        "leaves it": dict(doc, frames=[dict(doc["frames"][0], radar={"RADAR_FRONT": "../x.pcd"})]),
    }
    (tmp_path / "poses.csv").write_bytes((log_dir / "poses.csv").read_bytes())
    for match, d in bad.items():
        (tmp_path / "log.json").write_text(json.dumps(d))
        with pytest.raises(FormatError, match=match):
            read_log(tmp_path)


def test_nuscenes_export_reads_back_with_the_devkit(drive, radar_scene, tmp_path):
    from nuscenes import NuScenes

    from formats.export_nuscenes_dataroot import write_nuscenes_dataroot
    from server.simulate import drive_labels

    scene = Scene.open(radar_scene)
    tracks = drive_labels(drive)
    root = write_nuscenes_dataroot(tmp_path / "nusc", scene, tracks, unmapped="pass")
    nusc = NuScenes("v1.0-fathom", str(root), verbose=False)
    sensor = next(s for s in nusc.sensor if s["channel"] == "RADAR_FRONT")
    assert sensor["modality"] == "radar"
    for i, sample in enumerate(nusc.sample):
        sd = nusc.get("sample_data", sample["data"]["RADAR_FRONT"])
        pc = RadarPointCloud.from_file(str(root / sd["filename"]))  # the devkit's default filters keep them all
        ego = nusc.get("ego_pose", sd["ego_pose_token"])
        cs = nusc.get("calibrated_sensor", sd["calibrated_sensor_token"])
        m = transform_matrix(ego["translation"], ego["rotation"]) @ transform_matrix(cs["translation"], cs["rotation"])
        world = (m[:3, :3] @ pc.points[:3] + m[:3, 3:]).T
        table = scene.radar(scene.frames[i].index)
        assert sd["timestamp"] == us_from_ns(scene.frames[i].timestamp_ns + table.column("time_offset_ns")[0].as_py())
        stored = np.column_stack([table.column(c).to_numpy() for c in "xyz"]).astype(np.float64)
        assert np.abs(world - stored).max() < 2e-5
        x, y = pc.points[0], pc.points[1]
        np.testing.assert_allclose((pc.points[8] * x + pc.points[9] * y) / np.hypot(x, y),
                                   table.column("radial_velocity_comp_mps").to_numpy(), atol=1e-5)
        boxes = [a for a in nusc.sample_annotation if a["sample_token"] == sample["token"]]
        for a in boxes:
            size = np.array(a["size"])[[1, 0, 2]]
            assert a["num_radar_pts"] == points_in_box(stored, np.array(a["translation"]), size,
                                                       np.array(a["rotation"])).sum()
    assert sum(a["num_radar_pts"] for a in nusc.sample_annotation) > 0
    pc, _ = RadarPointCloud.from_file_multisweep(nusc, nusc.sample[-1], "RADAR_FRONT", "RADAR_FRONT", 3)
    assert pc.nbr_points() == sum(f.n_radar_points for f in scene.frames[-3:])


def test_sfs_export_carries_the_radar(radar_scene, tmp_path):
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader
    from scale_sensor_fusion_io.validation import parse_and_validate_scene

    from formats.export_sfs import scene_radar_frames, write_sfs

    scene = Scene.open(radar_scene)
    path = write_sfs(tmp_path / "r.sfs", [], scene.world_from_ego(), radars=scene_radar_frames(scene))
    result = parse_and_validate_scene(SFSLoader(str(path)).load_unsafe())
    assert result.success, getattr(result, "details", result)
    sensor = next(s for s in SFSLoader(str(path)).load_as_sfs().sensors if s.id == "RADAR_FRONT")
    assert sensor.type == "radar" and len(sensor.frames) == len(scene.frames)
    for frame, entry in zip(sensor.frames, scene.frames):
        table = scene.radar(entry.index)
        xyz = np.column_stack([table.column(c).to_numpy() for c in "xyz"])
        np.testing.assert_array_equal(frame.points.positions, xyz)
        # the velocity vector: the compensated radial velocity along the line of sight from the radar
        pose = scene.world_from_ego().at(entry.timestamp_ns + table.column("time_offset_ns")[0].as_py(), "linear")
        sight = xyz - (pose @ scene.radars[0].ego_from_sensor).translation
        unit = sight / np.linalg.norm(sight, axis=1, keepdims=True)
        radial = table.column("radial_velocity_comp_mps").to_numpy()
        np.testing.assert_allclose(frame.points.directions, unit * radial[:, None], atol=1e-4)


def test_the_served_sfs_export_carries_the_radar(radar_scene, tmp_path):
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader

    from formats.export_sfs import scene_radar_frames, write_sfs

    scene = Scene.open(radar_scene)
    with radar_client(radar_scene.parent) as client:
        r = client.get("/v1/scenes/road-radar/export/sfs?points=false")
    assert r.status_code == 200
    (tmp_path / "served.sfs").write_bytes(r.content)
    write_sfs(tmp_path / "direct.sfs", [], scene.world_from_ego(), radars=scene_radar_frames(scene))
    served = {s.id: s for s in SFSLoader(str(tmp_path / "served.sfs")).load_as_sfs().sensors}
    direct = {s.id: s for s in SFSLoader(str(tmp_path / "direct.sfs")).load_as_sfs().sensors}
    assert served["RADAR_FRONT"].type == "radar"
    for a, b in zip(served["RADAR_FRONT"].frames, direct["RADAR_FRONT"].frames):
        np.testing.assert_array_equal(a.points.positions, b.points.positions)
        np.testing.assert_array_equal(a.points.directions, b.points.directions)
