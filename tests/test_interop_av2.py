"""Argoverse 2 import: a sensor log laid out as the dataset (feather tables, ego-frame sweeps
at the sweep time, city poses, annotations in the ego frame) built from the synthetic drive."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pytest

from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from engine.motion import motion_compensate
from engine.sweep import Sweep
from formats.av2 import read_av2_sweep, write_av2_sweep
from formats.errors import FormatError
from formats.import_av2 import import_av2_log
from tests.naive import quat_to_matrix

CITY = np.array([2500.3, -1200.7, 30.0])  # AV2 city coordinates are far from 0


def _pose_columns(q, t) -> dict:
    return {"qw": q[:, 0], "qx": q[:, 1], "qy": q[:, 2], "qz": q[:, 3],
            "tx_m": t[:, 0], "ty_m": t[:, 1], "tz_m": t[:, 2]}


def write_av2_fixture(drive, log):
    times = drive.frame_times_ns
    g = drive.gnss
    log.mkdir(parents=True)
    feather.write_feather(
        pa.table({"timestamp_ns": g.timestamps_ns, **_pose_columns(g.rotation, g.translation + CITY)}),
        log / "city_SE3_egovehicle.feather")
    (log / "calibration").mkdir()
    cam = drive.cameras[0]
    e = cam.ego_from_camera
    feather.write_feather(
        pa.table({"sensor_name": ["ring_front_center"], **_pose_columns(e.rotation[None], e.translation[None])}),
        log / "calibration" / "egovehicle_SE3_sensor.feather")
    k = cam.intrinsics
    feather.write_feather(pa.table({"sensor_name": ["ring_front_center"], "fx_px": [k.fx], "fy_px": [k.fy],
                                    "cx_px": [k.cx], "cy_px": [k.cy], "k1": [-0.1], "k2": [0.02], "k3": [0.004],
                                    "height_px": [k.height], "width_px": [k.width]}),
                          log / "calibration" / "intrinsics.feather")
    # sweeps: both LiDARs, every point moved to the ego frame at the sweep time (AV2 semantics)
    (log / "sensors" / "lidar").mkdir(parents=True)
    for i, t in enumerate(times):
        parts = []
        for lidar in drive.lidars:
            s = drive.sweeps[lidar.name][i]
            parts.append(motion_compensate(s.xyz, s.time_offset_ns + int(t), g, lidar.ego_from_lidar,
                                           ref_time_ns=int(t)))
        xyz = np.vstack(parts).astype(np.float32)
        n = len(xyz)
        write_av2_sweep(log / "sensors" / "lidar" / f"{int(t)}.feather",
                        Sweep(xyz, int(t), np.full(n, 7, np.float32), np.arange(n, dtype=np.int64),
                              np.zeros(n, np.uint16)))
    cdir = log / "sensors" / "cameras" / "ring_front_center"
    cdir.mkdir(parents=True)
    from formats.jpeg import encode_jpeg

    for t in times:  # 20 Hz, 10 ms after each sweep and halfway between
        for dt in (10_000_000, 60_000_000):
            (cdir / f"{int(t) + dt}.jpg").write_bytes(encode_jpeg(np.zeros((k.height, k.width, 3), np.uint8)))
    boxes = interpolate_tracks(list(drive.actor_tracks), times).to_ego(g)
    rows = {c: [] for c in ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m",
                            "qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m", "num_interior_pts")}
    for f, t in enumerate(times):
        for n, track in enumerate(drive.actor_tracks):
            if not boxes.valid[f, n]:
                continue
            q, c, s = boxes.rotations[f, n], boxes.centers[f, n], boxes.sizes[f, n]
            for key, v in zip(rows, (int(t), f"uuid-{track.track_id}", track.category.upper(), *s, *q, *c, 10)):
                rows[key].append(v)
    feather.write_feather(pa.table(rows), log / "annotations.feather")
    return rows


def test_import_av2_log(drive, tmp_path):
    from formats.raw_log import read_log
    from formats.registry import read_points
    from server.prepare import prepare

    rows = write_av2_fixture(drive, tmp_path / "log-id")
    log = read_log(import_av2_log(tmp_path / "log-id", tmp_path / "log"))
    times = drive.frame_times_ns
    offset = np.asarray(log.origin.enu_offset_m)
    assert [f.timestamp_ns for f in log.frames] == times.tolist()
    assert [f.images["ring_front_center"][1] for f in log.frames] == (times + 10_000_000).tolist()
    cam = log.cameras[0]
    assert cam.intrinsics.model == "pinhole" and cam.intrinsics.distortion == ()  # AV2 images are undistorted
    assert cam.ego_from_camera.allclose(drive.cameras[0].ego_from_camera, atol=1e-12)
    # sweeps: the AV2 ego-frame points unchanged, with zero time offsets
    for f, t in zip(log.frames, times):
        ours = read_points(f.lidar["lidar"], format="pcd")
        ref = read_av2_sweep(tmp_path / "log-id" / "sensors" / "lidar" / f"{int(t)}.feather")
        np.testing.assert_array_equal(ours.xyz, ref.xyz)
        assert not ours.time_offset_ns.any()
    np.testing.assert_allclose(log.world_from_ego().translation + offset, drive.gnss.translation + CITY, atol=1e-9)
    # boxes: city ← ego (written-out quaternion matrices) applied to the ego-frame rows
    tracks = {t.track_id: t for t in log.labels()}
    pose = {int(t): drive.gnss.at(int(t)) for t in times}
    for j in range(len(rows["timestamp_ns"])):
        t = tracks[rows["track_uuid"][j]]
        ts = rows["timestamp_ns"][j]
        k = int(np.flatnonzero(t.timestamps_ns == ts)[0])
        p = pose[ts]
        r_city = quat_to_matrix(p.rotation) @ quat_to_matrix([rows[c][j] for c in ("qw", "qx", "qy", "qz")])
        c_box = np.array([rows[c][j] for c in ("tx_m", "ty_m", "tz_m")])
        c_city = quat_to_matrix(p.rotation) @ c_box + p.translation + CITY
        lwh = np.array([rows[c][j] for c in ("length_m", "width_m", "height_m")])
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        ref = (r_city @ (0.5 * lwh * signs).T).T + c_city
        ours = box_corners(t.centers[k] + offset, t.sizes[k], t.rotations[k])
        d = np.linalg.norm(ours[:, None] - ref[None], axis=-1)
        assert d.min(axis=0).max() < 1e-6 and d.min(axis=1).max() < 1e-6
        assert t.category == rows["category"][j]
    assert sum(len(t) for t in tracks.values()) == len(rows["timestamp_ns"]) > 5
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == len(times) and not summary.failed


def test_bad_inputs_raise_format_error(drive, tmp_path):
    log = tmp_path / "log-id"
    with pytest.raises(FormatError, match="feather"):
        import_av2_log(log, tmp_path / "out")
    write_av2_fixture(drive, log)
    feather.write_feather(pa.table({"timestamp_ns": [1, 2]}), log / "city_SE3_egovehicle.feather")
    with pytest.raises(FormatError, match="missing") as err:
        import_av2_log(log, tmp_path / "out")
    assert err.value.path.endswith("city_SE3_egovehicle.feather")
    g = drive.gnss
    feather.write_feather(pa.table({"timestamp_ns": g.timestamps_ns, **_pose_columns(g.rotation, g.translation)}),
                          log / "city_SE3_egovehicle.feather")
    (log / "sensors" / "lidar" / "bad.feather").write_bytes(b"")
    with pytest.raises(FormatError, match="TIMESTAMP_NS"):
        import_av2_log(log, tmp_path / "out")


def test_import_agrees_with_av2_api(drive, tmp_path):
    """av2-api's own loader (``AV2SensorDataLoader``, ``read_lidar_sweep``, ``PinholeCamera``)
    and the imported raw log give the same poses, city-frame sweeps, cuboids and camera."""
    from av2.datasets.sensor.av2_sensor_dataloader import AV2SensorDataLoader
    from av2.utils.io import read_lidar_sweep

    from formats.raw_log import read_log
    from formats.registry import read_points

    write_av2_fixture(drive, tmp_path / "logs" / "log-id")
    log = read_log(import_av2_log(tmp_path / "logs" / "log-id", tmp_path / "log"))
    offset = np.asarray(log.origin.enu_offset_m)
    track = log.world_from_ego()
    tracks = log.labels()
    api = AV2SensorDataLoader(data_dir=tmp_path / "logs", labels_dir=tmp_path / "logs")
    stamps = api.get_ordered_log_lidar_timestamps("log-id")
    assert stamps == [f.timestamp_ns for f in log.frames]
    for f, t in zip(log.frames, stamps):
        city_SE3_ego = api.get_city_SE3_ego("log-id", t)
        pose = track.at(t)
        np.testing.assert_allclose(pose.translation + offset, city_SE3_ego.translation, atol=1e-9)
        np.testing.assert_allclose(quat_to_matrix(pose.rotation), city_SE3_ego.rotation, atol=1e-12)
        # the sweep in the city frame: av2-api's points and transform vs ours
        ref = city_SE3_ego.transform_point_cloud(read_lidar_sweep(api.get_lidar_fpath("log-id", t), "xyz"))
        ours = pose.apply(read_points(f.lidar["lidar"], format="pcd").xyz.astype(np.float64)) + offset
        np.testing.assert_allclose(ours, ref, atol=1e-6)
        # the cuboids of this sweep, in the city frame
        cuboids = api.get_labels_at_lidar_timestamp("log-id", t).transform(city_SE3_ego)
        ours_boxes = [box_corners(tr.centers[k] + offset, tr.sizes[k], tr.rotations[k])
                      for tr in tracks for k in np.flatnonzero(tr.timestamps_ns == t)]
        assert len(cuboids) == len(ours_boxes) > 0
        for cub in cuboids:
            ref_v = cub.vertices_m
            best = min(ours_boxes, key=lambda b: np.linalg.norm(b.mean(0) - ref_v.mean(0)))
            d = np.linalg.norm(best[:, None] - ref_v[None], axis=-1)
            assert d.min(axis=0).max() < 1e-6 and d.min(axis=1).max() < 1e-6
    cam = api.get_log_pinhole_camera("log-id", "ring_front_center")
    ours_cam = log.cameras[0]
    np.testing.assert_allclose(cam.intrinsics.K, ours_cam.intrinsics.K, atol=1e-12)
    np.testing.assert_allclose(cam.ego_SE3_cam.translation, ours_cam.ego_from_camera.translation, atol=1e-12)
    np.testing.assert_allclose(cam.ego_SE3_cam.rotation, quat_to_matrix(ours_cam.ego_from_camera.rotation), atol=1e-12)
    assert (cam.width_px, cam.height_px) == (ours_cam.intrinsics.width, ours_cam.intrinsics.height)


def test_camera_projects_as_av2_pinhole_camera(drive, tmp_path):
    """The imported camera projects ego-frame points to av2-api's pixels (``PinholeCamera.from_feather``,
    ``project_ego_to_img``) although the intrinsics table has non-zero k1..k3: AV2 images are
    already undistorted, the coefficients must not be applied again."""
    import dataclasses

    from av2.geometry.camera.pinhole_camera import PinholeCamera

    from engine.camera import Camera
    from engine.projection import project_points
    from formats.raw_log import read_log

    write_av2_fixture(drive, tmp_path / "log-id")
    ours = read_log(import_av2_log(tmp_path / "log-id", tmp_path / "log")).cameras[0]
    ref = PinholeCamera.from_feather(tmp_path / "log-id", "ring_front_center")
    # points over the image and 20 % beyond its edges, 0.5 to 80 m deep, moved to the ego frame
    rng = np.random.default_rng(0)
    k = ours.intrinsics
    n = 2000
    u = rng.uniform(-0.2 * k.width, 1.2 * k.width, n)
    v = rng.uniform(-0.2 * k.height, 1.2 * k.height, n)
    z = rng.uniform(0.5, 80.0, n)
    cam_xyz = np.stack([(u - k.cx) / k.fx * z, (v - k.cy) / k.fy * z, z], axis=1)
    ego_xyz = ours.ego_from_camera.apply(cam_xyz)
    uv_ref, _, _ = ref.project_ego_to_img(ego_xyz)
    uv = project_points(ego_xyz, [ours]).uv[0]
    np.testing.assert_allclose(uv, uv_ref, rtol=0, atol=1e-6)
    # the Brown-Conrady reading of the same table lands elsewhere: the check can tell them apart
    distorted = Camera(ours.name, dataclasses.replace(k, model="brown_conrady", distortion=(-0.1, 0.02, 0, 0, 0.004)),
                       ours.ego_from_camera)
    assert np.nanmax(np.abs(project_points(ego_xyz, [distorted]).uv[0] - uv_ref)) > 5.0
