"""``fathom simulate`` / ``fathom demo``: simulated logs written as raw logs (labels, Velodyne
pcaps, KMALL) and prepared, against the simulators' ground truth; label seeding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.motion import motion_compensate
from engine.sim.road import simulate_drive
from engine.sim.vessel import HIT_SEABED, HIT_WRECK
from formats.raw_log import read_log
from formats.scene_store import Scene
from formats.velodyne import get_model
from server import frame_points
from server.label_store import LabelStore
from server.prepare import PrepareOptions, prepare
from server.simulate import (
    drive_labels,
    velodyne_pattern,
    velodyne_rig,
    write_drive_log,
    write_harbor_log,
)

NO_COLOR = PrepareOptions(colorize=False)


def _stored_xyz(table) -> np.ndarray:
    return np.stack([table[c].to_numpy() for c in "xyz"], axis=1).astype(np.float64)


# ---------------------------------------------------------------- labels


def _truth_at(track, times):
    k = np.searchsorted(track.timestamps_ns, times)
    assert np.array_equal(track.timestamps_ns[k], times)
    return track.centers[k], track.rotations[k]


def test_drive_log_writes_true_tracks_as_keyframed_labels(drive, tmp_path):
    log = read_log(write_drive_log(tmp_path, drive, cameras=False))
    tracks = {t.track_id: t for t in log.labels()}
    frames = drive.frame_times_ns
    truth = {t.track_id: t for t in (*drive.static_tracks, *drive.actor_tracks)}
    cats = {t.category for t in tracks.values()}
    assert {"car", "pedestrian"} <= cats and "building" not in cats
    assert len(tracks) == sum(t.category != "building" for t in truth.values())
    for tid, t in tracks.items():
        if t.stationary:
            np.testing.assert_array_equal(t.timestamps_ns, [frames[0]])
        else:  # 1 Hz from the first frame, plus the last frame (1 s drive: first and last)
            np.testing.assert_array_equal(t.timestamps_ns, [frames[0], frames[-1]])
        c, q = _truth_at(truth[tid], t.timestamps_ns)
        np.testing.assert_array_equal(t.centers, c)
        np.testing.assert_array_equal(t.rotations, q)
    # a shorter period: keyframes every 0.3 s and the last frame, each exact
    t0, t1 = int(frames[0]), int(frames[-1])
    for t in drive_labels(drive, period_ns=300_000_000):
        if not t.stationary:
            np.testing.assert_array_equal(t.timestamps_ns, [t0, t0 + 300_000_000, t0 + 600_000_000, t1])
            c, _ = _truth_at(truth[t.track_id], t.timestamps_ns)
            np.testing.assert_array_equal(t.centers, c)


def test_demo_seeds_labels_once(tmp_path, capsys):
    from server.cli import main

    args = ["demo", "--workdir", str(tmp_path), "--duration", "0.2", "--no-serve"]
    assert main(args) == 0
    db = tmp_path / "scenes" / "labels.sqlite3"
    store = LabelStore(db)
    rev, doc = store.get("road-0")
    assert rev == 1 and doc["tracks"]
    expect = json.loads((tmp_path / "log" / "labels.json").read_text())
    assert sorted(t["id"] for t in doc["tracks"]) == sorted(t["id"] for t in expect["tracks"])
    edited = {"tracks": doc["tracks"][1:]}
    store.write("road-0", 1, lambda d: edited, op="put", author="ann", record={})
    store.close()
    assert main(args) == 0
    assert LabelStore(db).get("road-0") == (2, edited)


# ---------------------------------------------------------------- Velodyne pcap


@pytest.fixture(scope="module")
def velodyne_drive():
    return simulate_drive(seed=3, duration_s=0.3, preset="test", lidars=velodyne_rig("test"))


@pytest.fixture(scope="module")
def pcd_and_pcap_scenes(velodyne_drive, tmp_path_factory):
    out = {}
    for fmt in ("pcd", "pcap"):
        root = tmp_path_factory.mktemp(fmt)
        log = write_drive_log(root / "log", velodyne_drive, cameras=False, lidar_format=fmt)
        summary = prepare(log, root / "scene", options=NO_COLOR)
        assert summary.prepared == 3 and not summary.failed
        out[fmt] = (log, Scene.open(root / "scene"))
    return out


def test_velodyne_patterns_follow_the_model_tables():
    for name in ("VLP-16", "HDL-32E"):
        mdl = get_model(name)
        pat = velodyne_pattern(name)
        # NumPy reference from the manuals: VLP-16 2.304 µs per firing, HDL-32E 1.152 µs
        step = {"VLP-16": 2304, "HDL-32E": 1152}[name]
        np.testing.assert_array_equal(pat.firing_offset_ns, np.arange(mdl.n_lasers) * step)
        assert pat.sequence_period_ns == round(mdl.sequence_period_us * 1000) and pat.clockwise
        np.testing.assert_allclose(np.degrees(pat.elevation_rad),
                                   mdl.default_calibration().vert_correction * 180 / np.pi)
    assert np.degrees(velodyne_pattern("VLP-16").elevation_rad)[:3] == pytest.approx([-15, 1, -13])


def test_pcap_log_is_one_file_per_lidar(velodyne_drive, pcd_and_pcap_scenes):
    log = read_log(pcd_and_pcap_scenes["pcap"][0])
    assert [(l.name, l.format, l.model) for l in log.lidars] == [("LIDAR_TOP", "velodyne_pcap", "HDL-32E"),
                                                                  ("LIDAR_FRONT", "velodyne_pcap", "VLP-16")]
    assert sorted(p.name for p in (log.root / "lidar").glob("*.pcap")) == ["LIDAR_FRONT.pcap", "LIDAR_TOP.pcap"]
    doc = json.loads((log.root / "log.json").read_text())
    assert doc["version"] == 2 and doc["lidars"][1]["path"] == "lidar/LIDAR_FRONT.pcap"
    for f, t in zip(log.frames, velodyne_drive.frame_times_ns):
        assert f.lidar["LIDAR_TOP"] == (t, t + 100_000_000)


def _laser_ids(log, table) -> np.ndarray:
    """Decoded rings (rank by elevation) back to laser ids, per sensor."""
    sensor, ring = table["sensor_id"].to_numpy(), table["ring"].to_numpy()
    out = np.empty(len(ring), np.int64)
    for lidar in log.lidars:
        rank = get_model(lidar.model).default_calibration().ring
        inv = np.argsort(rank)
        sel = sensor == lidar.sensor_id
        out[sel] = inv[ring[sel]]
    return out


def test_pcap_route_points_agree_with_pcd_route_and_truth(velodyne_drive, pcd_and_pcap_scenes):
    """Bound per point: range quantised to 2 mm (|Δr| ≤ 1 mm) plus the encoder azimuth written to
    0.01° (±0.005°) and interpolated within a block at the rate measured from two rounded
    azimuths 11 blocks apart (≤ 0.01°/11 more): |Δ| ≤ 1 mm + r·0.0059° + √3 mm storage (each scene
    stores its positions quantised to 1 mm, ±0.5 mm per axis) + 0.1 mm float32."""
    d = velodyne_drive
    pcd_log, pcd_scene = pcd_and_pcap_scenes["pcd"]
    pcap_log, pcap_scene = pcd_and_pcap_scenes["pcap"]
    log = read_log(pcap_log)
    for i in range(3):
        a, b = pcd_scene.points(i), pcap_scene.points(i)
        assert a.num_rows == b.num_rows > 50_000
        key_a = np.lexsort((a["ring"].to_numpy(), a["time_offset_ns"].to_numpy(), a["sensor_id"].to_numpy()))
        key_b = np.lexsort((_laser_ids(log, b), b["time_offset_ns"].to_numpy(), b["sensor_id"].to_numpy()))
        for col in ("sensor_id", "time_offset_ns"):
            np.testing.assert_array_equal(a[col].to_numpy()[key_a], b[col].to_numpy()[key_b])
        np.testing.assert_array_equal(np.rint(a["intensity"].to_numpy()[key_a]), b["intensity"].to_numpy()[key_b])
        pa, pb = _stored_xyz(a)[key_a], _stored_xyz(b)[key_b]
        # ranges from the sensor: the truth's own range_m column, in firing order
        sweeps = [d.sweeps[l.name][i] for l in d.lidars]
        r_truth = np.concatenate([s.extra["range_m"] for s in sweeps]).astype(np.float64)
        order = np.lexsort((np.concatenate([s.ring for s in sweeps]),
                            np.concatenate([s.time_offset_ns for s in sweeps]),
                            np.concatenate([s.sensor_id for s in sweeps])))
        r = r_truth[order]
        bound = 0.001 + r * math.radians(0.0059) + math.sqrt(3) * 1e-3 + 1e-4
        err = np.linalg.norm(pa - pb, axis=1)
        assert np.all(err <= bound), (err - bound).max()
        assert np.median(err) < 0.003
        # against the truth: the sweep's exact hits moved by the true 1 kHz trajectory (the log's
        # poses are the 100 Hz GNSS/INS, ≤ 5 mm off as in test_prepare)
        truth = np.concatenate([
            motion_compensate(s.xyz, s.time_offset_ns + np.int64(s.timestamp_ns), d.world_from_ego,
                              l.ego_from_lidar, out_frame="world") for s, l in zip(sweeps, d.lidars)])[order]
        assert np.all(np.linalg.norm(pb - truth, axis=1) <= bound + 0.005)


def test_pcap_frames_decode_only_their_packets(velodyne_drive, pcd_and_pcap_scenes):
    log = read_log(pcd_and_pcap_scenes["pcap"][0])
    track = log.world_from_ego()
    frame_points._pcap_index_cached.cache_clear()
    for i, f in enumerate(log.frames):
        cols = frame_points.world_points(log, track, i)
        # every point fired within the frame's sweep; nothing from its neighbours
        assert cols["time_offset_ns"].min() >= 0 and cols["time_offset_ns"].max() < 100_000_000
        assert len(cols["xyz"]) == sum(len(velodyne_drive.sweeps[l.name][i]) for l in velodyne_drive.lidars)
    info = frame_points._pcap_index_cached.cache_info()
    assert info.misses == 2 and info.hits == 2 * (len(log.frames) - 1)  # each pcap indexed once


def test_pcap_log_needs_velodyne_patterns(drive, tmp_path):
    with pytest.raises(ValueError, match="Velodyne beam pattern"):
        write_drive_log(tmp_path, drive, cameras=False, lidar_format="pcap")
    with pytest.raises(ValueError, match="lidar_format"):
        write_drive_log(tmp_path, drive, lidar_format="las")


# ---------------------------------------------------------------- harbor (KMALL)


@pytest.fixture(scope="module")
def harbor(tmp_path_factory):
    root = tmp_path_factory.mktemp("harbor")
    log_dir, run = write_harbor_log(root / "log", seed=2, duration_s=12.0, beams=96)
    summary = prepare(log_dir, root / "scene", options=NO_COLOR)
    assert not summary.failed and summary.prepared == len(read_log(log_dir).frames) == 12
    return log_dir, run, Scene.open(root / "scene")


def test_harbor_soundings_land_on_the_seabed_and_wreck(harbor):
    log_dir, run, scene = harbor
    beams = 96
    ping_ns = run.mrz["time_ns"]
    seen = np.zeros(len(run.truth_hit), bool)
    for i, f in enumerate(scene.frames):
        table = scene.points(i)
        t = table["time_offset_ns"].to_numpy().astype(np.int64) + f.timestamp_ns
        ping = np.searchsorted(ping_ns, t)
        np.testing.assert_array_equal(ping_ns[ping], t)
        assert np.all((t >= f.timestamp_ns) & (t < f.timestamp_ns + 1_000_000_000))
        idx = ping * beams + table["ring"].to_numpy().astype(np.int64)
        assert not seen[idx].any()
        seen[idx] = True
        xyz = _stored_xyz(table)
        assert np.linalg.norm(xyz - run.truth_hit[idx], axis=1).max() < 0.01
        bed = run.truth_object[idx] == HIT_SEABED
        assert np.abs(xyz[bed, 2] - run.seabed.height(xyz[bed, 0], xyz[bed, 1])).max() < 0.01
    # every valid sounding is in exactly one frame; rejected ones in none
    np.testing.assert_array_equal(seen, ~np.isnan(run.truth_hit[:, 0]))
    assert (run.truth_object[seen] == HIT_WRECK).sum() > 20


def test_pings_flagged_invalid_are_not_placed(harbor, tmp_path):
    """The echosounder flags ping 3's position sensor and ping 8's attitude sensor invalid: the
    prepared frames hold every other ping's soundings and none of theirs."""
    import shutil

    from formats.kmall import MrzPings, SkmSamples, write_kmall

    log_dir, run, scene = harbor
    log = tmp_path / "log"
    shutil.copytree(log_dir, log)
    mrz = dict(run.mrz)
    mrz["pos_sensor_status"] = np.zeros(len(mrz["time_ns"]), np.uint8)
    mrz["attitude_sensor_status"] = np.zeros(len(mrz["time_ns"]), np.uint8)
    mrz["pos_sensor_status"][3] = 1
    mrz["attitude_sensor_status"][8] = 1
    write_kmall(log / "sonar" / "MBES.kmall", MrzPings(**mrz), SkmSamples(**run.skm))
    prepare(log, tmp_path / "scene", options=NO_COLOR)
    flagged = Scene.open(tmp_path / "scene")
    bad = run.mrz["time_ns"][[3, 8]]
    for i, f in enumerate(flagged.frames):
        t = flagged.points(i)["time_offset_ns"].to_numpy().astype(np.int64) + f.timestamp_ns
        t_ref = scene.points(i)["time_offset_ns"].to_numpy().astype(np.int64) + f.timestamp_ns
        assert not np.isin(t, bad).any()
        np.testing.assert_array_equal(t, t_ref[~np.isin(t_ref, bad)])


def test_harbor_poses_come_from_skm(harbor):
    from engine import quaternion as quat

    log_dir, run, scene = harbor
    log = read_log(log_dir)
    assert log.poses_kind == "kmall_skm" and log.origin.geodetic == (run.origin.lat_deg, run.origin.lon_deg,
                                                                       run.origin.alt_m)
    poses = log.world_from_ego().interpolate(run.mrz["time_ns"])
    np.testing.assert_allclose(poses.translation, run.truth_translation, atol=1e-3)
    assert quat.angle_between(poses.rotation, run.truth_rotation).max() < 1e-5
    wreck = log.labels()[0]
    np.testing.assert_allclose(wreck.centers[0], run.wreck.centre)
    assert wreck.category == "wreck" and wreck.stationary


def test_simulate_cli_writes_both_scenarios(tmp_path):
    from server.cli import main

    assert main(["simulate", "--scenario", "harbor", "--out", str(tmp_path / "h"), "--duration", "2"]) == 0
    log = read_log(tmp_path / "h")
    assert [l.format for l in log.lidars] == ["kmall"] and len(log.frames) == 2
    assert main(["simulate", "--out", str(tmp_path / "r"), "--duration", "0.1", "--no-cameras",
                 "--lidar-format", "pcap"]) == 0
    assert [l.format for l in read_log(tmp_path / "r").lidars] == ["velodyne_pcap"] * 2
