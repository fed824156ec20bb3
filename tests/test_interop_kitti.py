"""KITTI tracking export/import: label lines checked with a NumPy copy of the devkit's box
geometry (``compute_box_3d``: bottom-centre location, ``roty(rotation_y)``), calibration and
oxts built from the synthetic drive in the real dataset layout, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import CuboidTrack, box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.export_kitti import kitti_track_ids, kitti_tracking_lines
from tests.naive import same_corner_set


def devkit_corners(h, w, l, x, y, z, ry) -> np.ndarray:
    """KITTI devkit ``compute_box_3d``: the 8 corners ``(8, 3)`` in the rectified camera."""
    c, s = np.cos(ry), np.sin(ry)
    r = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    xs = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
    ys = [0, 0, 0, 0, -h, -h, -h, -h]
    zs = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    return (r @ np.array([xs, ys, zs])).T + [x, y, z]


def parse(line: str) -> dict:
    f = line.split()
    v = [float(x) for x in f[5:]]
    return {"frame": int(f[0]), "id": int(f[1]), "type": f[2], "truncated": int(f[3]), "occluded": int(f[4]),
            "alpha": v[0], "bbox": v[1:5], "h": v[5], "w": v[6], "l": v[7], "xyz": v[8:11], "ry": v[11]}


def test_export_matches_devkit_geometry(drive):
    cam = drive.cameras[0]
    tracks = list(drive.actor_tracks)
    times = drive.frame_times_ns
    lines = kitti_tracking_lines(tracks, times, drive.gnss, cam)
    assert lines, "the front camera sees some actors"
    ids = kitti_track_ids(tracks)
    by_kitti = {ids[t.track_id]: n for n, t in enumerate(tracks)}
    assert all(t.track_id.isdigit() for t in tracks) and set(ids.values()) == {int(t.track_id) for t in tracks}
    boxes = interpolate_tracks(tracks, times).to_ego(drive.gnss)
    cam_from_ego = cam.ego_from_camera.inverse()
    k = cam.intrinsics.K
    seen, levels = set(), set()
    for line in lines:
        r = parse(line)
        n = by_kitti[r["id"]]
        seen.add((r["frame"], r["id"]))
        assert r["type"] == {"car": "Car", "pedestrian": "Pedestrian"}[tracks[n].category]
        f = r["frame"]
        ours = cam_from_ego.apply(box_corners(boxes.centers[f, n], boxes.sizes[f, n], boxes.rotations[f, n]))
        kitti = devkit_corners(r["h"], r["w"], r["l"], *r["xyz"], r["ry"])
        same_corner_set(ours, kitti, 2e-6)
        # KITTI: rotation_y = alpha + atan2(x, z)
        x, _, z = r["xyz"]
        assert np.isclose(np.angle(np.exp(1j * (r["alpha"] + np.arctan2(x, z) - r["ry"]))), 0, atol=2e-6)
        # the 2D box: pinhole projection of the corners, clipped to the image
        if np.all(kitti[:, 2] > cam.near_m):
            uv = (k @ kitti.T).T
            uv = uv[:, :2] / uv[:, 2:]
            lo = np.maximum(uv.min(0), -0.5)
            hi = np.minimum(uv.max(0), [cam.intrinsics.width - 0.5, cam.intrinsics.height - 0.5])
            np.testing.assert_allclose(r["bbox"], [*lo, *hi], atol=2e-5)
            # the footprint (corner rectangle) fraction outside the image
            frac = 1 - np.prod(np.clip(hi - lo, 0, None)) / np.prod(uv.max(0) - uv.min(0))
        else:
            frac = 1.0  # a corner behind the camera: the footprint is unbounded
        # truncated: the tracking readme's levels 0 (none), 1 (up to half), 2 (more)
        level = 0 if frac <= 1e-9 else 1 if frac <= 0.5 else 2
        assert r["truncated"] == level, (r, frac)
        levels.add(level)
        assert r["occluded"] == 3  # no sweeps given
    assert levels == {0, 1, 2}, levels  # every level is met, each checked against the footprint
    # every box with its centre well inside the view is written
    for f in range(len(times)):
        for n, t in enumerate(tracks):
            if not boxes.valid[f, n]:
                continue
            c = cam_from_ego.apply(boxes.centers[f, n][None])[0]
            uv = k @ c
            lens = cam.intrinsics
            if c[2] > 2 and 5 < uv[0] / uv[2] < lens.width - 5 and 5 < uv[1] / uv[2] < lens.height - 5:
                assert (f, int(t.track_id)) in seen
    frames = [parse(line)["frame"] for line in lines]
    assert frames == sorted(frames)


def test_track_ids_kept_or_numbered():
    def t(i):
        return CuboidTrack(i, "car", np.array([0]), np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]))

    assert kitti_track_ids([t("7"), t("3")]) == {"7": 7, "3": 3}
    assert kitti_track_ids([t("a"), t("7")]) == {"a": 0, "7": 1}
    assert kitti_track_ids([t("07"), t("7")]) == {"07": 0, "7": 1}


def test_export_empty(drive):
    assert kitti_tracking_lines([], drive.frame_times_ns, drive.gnss, drive.cameras[0]) == []
    assert kitti_tracking_lines(list(drive.actor_tracks), np.array([], np.int64), drive.gnss, drive.cameras[0]) == []


def test_rotation_y_convention():
    """A box facing camera +z (away from the camera) has rotation_y = -pi/2 in KITTI."""
    from formats.conventions import camera_boxes_from_kitti, kitti_from_camera_boxes

    c, s, q = camera_boxes_from_kitti(1.5, 1.8, 4.0, 1.0, 1.6, 10.0, -np.pi / 2)
    forward = quat.rotate(q, np.array([[1.0, 0, 0]]))
    np.testing.assert_allclose(forward, [[0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(quat.rotate(q, np.array([[0, 0, 1.0]])), [[0, -1, 0]], atol=1e-15)
    np.testing.assert_allclose(c, [[1.0, 1.6 - 0.75, 10.0]])
    back = kitti_from_camera_boxes(c, s, q)
    assert np.isclose(back["rotation_y"][0], -np.pi / 2) and np.isclose(back["y"][0], 1.6)
    same_corner_set(box_corners(c[0], s[0], q[0]), devkit_corners(1.5, 1.8, 4.0, 1.0, 1.6, 10.0, -np.pi / 2), 1e-12)


# ---------------------------------------------------------------- import: a KITTI tracking fixture

ORIGIN = (49.01, 8.43, 112.0)  # Karlsruhe, as KITTI
BASELINE = np.array([0.06, -0.002, 0.003])  # cam2 ← rectified cam0 translation, metres
R_RECT = quat.from_euler_zyx(0.004, -0.006, 0.01)


def _matrix34(pose) -> str:
    m = pose.as_matrix()[:3]
    return " ".join(f"{v:.17g}" for v in m.ravel())


def oxts_rows(drive, times) -> list[str]:
    """oxts lines (lat, lon, alt, roll, pitch, yaw, 24 zeros) of the drive's GNSS poses at ``times``,
    inverting engine.pose_sources' geodetic conversion with engine.geodesy."""
    from engine.geodesy import Origin, enu_rotation, enu_to_geodetic

    origin = Origin(*ORIGIN)
    poses = drive.gnss.interpolate(times)
    lat, lon, alt = enu_to_geodetic(poses.translation, origin)
    rows = []
    for i in range(len(times)):
        world_from_local = origin.enu_from_ecef @ enu_rotation(lat[i], lon[i]).T
        q_local = quat.multiply(quat.from_matrix(world_from_local.T), poses.rotation[i])
        roll, pitch, yaw = quat.to_euler_zyx(q_local)
        rows.append(" ".join(f"{v:.17g}" for v in [lat[i], lon[i], alt[i], roll, pitch, yaw] + [0.0] * 24))
    return rows


def write_kitti_tracking_fixture(drive, root, sequence=3, labels=True, images=True):
    """The drive as ``root/training/{velodyne,image_02,calib,oxts,label_02}`` of KITTI tracking.

    The front camera is the rectified camera 2; camera 0 sits BASELINE away and R_RECT
    rotates it (KITTI's rectification); the ego is the IMU. oxts come from the drive's GNSS
    poses by inverting the geodetic conversion with engine.geodesy.
    """
    from engine.se3 import SE3
    from formats.export_kitti import write_kitti_tracking
    from formats.kitti import write_kitti_bin

    base = root / "training"
    seq = f"{sequence:04d}"
    lidar, cam = drive.lidars[0], drive.cameras[0]
    times = drive.frame_times_ns
    k = cam.intrinsics.K
    ref_from_ego = SE3(np.array([1.0, 0, 0, 0]), -BASELINE) @ cam.ego_from_camera.inverse()
    cam0_from_ego = SE3(quat.conjugate(R_RECT), np.zeros(3)) @ ref_from_ego
    p2 = np.hstack([k, (k @ BASELINE)[:, None]])
    calib = [f"P{i}: " + " ".join(f"{v:.17g}" for v in (p2 if i == 2 else np.hstack([k, np.zeros((3, 1))])).ravel())
             for i in range(4)]
    calib += ["R_rect " + " ".join(f"{v:.17g}" for v in quat.to_matrix(R_RECT).ravel()),
              "Tr_velo_cam " + _matrix34(cam0_from_ego @ lidar.ego_from_lidar),
              "Tr_imu_velo " + _matrix34(lidar.ego_from_lidar.inverse())]
    (base / "calib").mkdir(parents=True)
    (base / "calib" / f"{seq}.txt").write_text("\n".join(calib) + "\n")
    rows = oxts_rows(drive, times)
    (base / "oxts").mkdir(parents=True)
    (base / "oxts" / f"{seq}.txt").write_text("\n".join(rows) + "\n")
    (base / "velodyne" / seq).mkdir(parents=True)
    for i, sweep in enumerate(drive.sweeps[lidar.name]):
        write_kitti_bin(base / "velodyne" / seq / f"{i:06d}.bin", sweep)
    if images:
        import cv2

        (base / "image_02" / seq).mkdir(parents=True)
        h, w = cam.intrinsics.height, cam.intrinsics.width
        for i in range(len(times)):
            img = np.zeros((h, w, 3), np.uint8)
            img[..., 0] = (np.arange(w) * 255 // w)[None]
            img[..., 1] = (np.arange(h) * 255 // h)[:, None]
            img[..., 2] = 20 * i
            cv2.imwrite(str(base / "image_02" / seq / f"{i:06d}.png"), img)
    if labels:
        (base / "label_02").mkdir(parents=True)
        # the labels at KITTI's 10 Hz frame times starting at 0; poses as the importer rebuilds them
        write_kitti_tracking(base / "label_02" / f"{seq}.txt", list(drive.actor_tracks), times, drive.gnss, cam,
                             ego_from_reference=ref_from_ego.inverse())
    return base


def test_calibration_and_poses_from_fixture(drive, tmp_path):
    from engine.pose_sources import from_kitti_oxts
    from formats.import_kitti import read_oxts, read_tracking_calib

    base = write_kitti_tracking_fixture(drive, tmp_path, labels=False, images=False)
    calib = read_tracking_calib(base / "calib" / "0003.txt")
    lidar, cam = drive.lidars[0], drive.cameras[0]
    assert calib.ego_from_lidar.allclose(lidar.ego_from_lidar, atol=1e-12)
    assert calib.ego_from_cam2.allclose(cam.ego_from_camera, atol=1e-12)
    k = cam.intrinsics
    assert (calib.fx, calib.fy, calib.cx, calib.cy) == (k.fx, k.fy, k.cx, k.cy)
    track, _ = from_kitti_oxts(read_oxts(base / "oxts" / "0003.txt"), drive.frame_times_ns)
    truth = drive.gnss.interpolate(drive.frame_times_ns)
    # relative motion is world-independent: ego_0 ← ego_i equal to 0.1 mm / 1e-6 rad
    rel = track.poses[0].inverse() @ track.poses
    rel_truth = truth[0].inverse() @ truth
    np.testing.assert_allclose(rel.translation, rel_truth.translation, atol=1e-4)
    assert np.max(quat.angle_between(rel.rotation, rel_truth.rotation)) < 1e-6


def _ego_boxes(tracks, times, world_from_ego):
    boxes = interpolate_tracks(tracks, times).to_ego(world_from_ego)
    return {t.track_id: n for n, t in enumerate(tracks)}, boxes


def test_import_tracking_then_prepare_export_import_round_trip(drive, tmp_path):
    import json

    from formats.export_kitti import write_kitti_tracking
    from formats.import_kitti import import_kitti_tracking, read_tracking_calib
    from formats.raw_log import read_log
    from server.prepare import prepare
    from server.schemas import LabelDocument

    base = write_kitti_tracking_fixture(drive, tmp_path / "kitti")
    log_dir = import_kitti_tracking(tmp_path / "kitti", 3, tmp_path / "log", start_ns=int(drive.start_ns))
    log = read_log(log_dir)
    LabelDocument.model_validate(json.loads(log.labels_path.read_text()))
    tracks = log.labels()
    assert tracks and {t.category for t in tracks} <= {"car", "pedestrian"}
    # boxes in the ego frame equal the drive's truth (1 mm / 0.01 deg)
    times = drive.frame_times_ns
    ids, ours = _ego_boxes(tracks, times, log.world_from_ego())
    tids, truth = _ego_boxes(list(drive.actor_tracks), times, drive.gnss)
    n_checked = 0
    for tid, n in ids.items():
        m = tids[tid]
        for f in np.flatnonzero(ours.valid[:, n]):
            if tracks[n].timestamps_ns.tolist().count(times[f]) == 0:
                continue
            np.testing.assert_allclose(ours.centers[f, n], truth.centers[f, m], atol=1e-3)
            np.testing.assert_allclose(ours.sizes[f, n], truth.sizes[f, m], atol=1e-5)
            assert np.degrees(quat.angle_between(ours.rotations[f, n], truth.rotations[f, m])) < 0.01
            n_checked += 1
    assert n_checked > 5
    summary = prepare(log_dir, tmp_path / "scene")
    assert summary.prepared == len(times) and not summary.failed
    # export from the raw log and import again: the same world boxes
    calib = read_tracking_calib(base / "calib" / "0003.txt")
    (tmp_path / "kitti2" / "training" / "label_02").mkdir(parents=True)
    for sub in ("calib", "oxts", "velodyne"):
        shutil_copy(base / sub, tmp_path / "kitti2" / "training" / sub)
    write_kitti_tracking(tmp_path / "kitti2" / "training" / "label_02" / "0003.txt", tracks,
                         [f.timestamp_ns for f in log.frames], log.world_from_ego(), log.cameras[0],
                         ego_from_reference=calib.ego_from_reference)
    again = read_log(import_kitti_tracking(tmp_path / "kitti2", 3, tmp_path / "log2", start_ns=int(drive.start_ns),
                                           images=False)).labels()
    assert [t.track_id for t in again] == [t.track_id for t in tracks]
    for a, b in zip(again, tracks):
        np.testing.assert_array_equal(a.timestamps_ns, b.timestamps_ns)
        np.testing.assert_allclose(a.centers, b.centers, atol=1e-3)
        np.testing.assert_allclose(a.sizes, b.sizes, atol=1e-5)
        assert np.degrees(quat.angle_between(a.rotations, b.rotations)).max() < 0.01
        assert a.category == b.category


def shutil_copy(src, dst):
    import shutil

    shutil.copytree(src, dst)


@pytest.mark.parametrize("name, text, match", [
    ("label", "0 1 Car 0 0 0.1 1 2 3\n", "17 fields"),
    ("label", "0 x Car 0 0 0 1 2 3 4 1 1 1 1 1 1 0\n", "integer frame"),
    ("label", "0 1 Car 0 0 0 1 2 3 4 1 -1 1 1 1 1 0\n", "non-negative"),
    ("label", "0 1 Car 0 0 0 1 2 3 4 1 1 1 1 1 nan 0\n", "finite"),
    ("oxts", "1 2 3\n", "30 oxts fields"),
    ("oxts", "", "at least one oxts row"),
    ("calib", "P2: 1 0 0 0 0 1 0 0 0 0 1 0\nR_rect 1 0 0 0 1 0 0 0 1\nTr_velo_cam 1 0 0 0 0 1 0 0 0 0 1 0\n",
     "Tr_imu_velo"),
    ("calib", "P2: 1 0 0 0 0 1 0 0 0 0 1 0\nR_rect 2 0 0 0 1 0 0 0 1\nTr_velo_cam 1 0 0 0 0 1 0 0 0 0 1 0\n"
              "Tr_imu_velo 1 0 0 0 0 1 0 0 0 0 1 0\n", "R_rect: a rotation"),
])
def test_bad_files_raise_format_error(tmp_path, name, text, match):
    from formats.errors import FormatError
    from formats.import_kitti import read_oxts, read_tracking_calib, read_tracking_labels

    path = tmp_path / f"{name}.txt"
    path.write_text(text)
    reader = {"label": read_tracking_labels, "oxts": read_oxts, "calib": read_tracking_calib}[name]
    with pytest.raises(FormatError, match=match) as err:
        reader(path)
    assert err.value.path == str(path)


def test_missing_sequence_raises_format_error(tmp_path):
    from formats.errors import FormatError
    from formats.import_kitti import import_kitti_tracking

    with pytest.raises(FormatError, match="readable file"):
        import_kitti_tracking(tmp_path, 0, tmp_path / "log")


def _stamp(t_ns: int) -> str:
    from datetime import datetime, timezone

    whole = datetime.fromtimestamp(t_ns // 1_000_000_000, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    return f"{whole}.{t_ns % 1_000_000_000:09d}"


def write_kitti_raw_fixture(drive, root):
    """The drive as a KITTI raw day: calib_*.txt and DATE_drive_0001_sync/{velodyne_points,oxts,image_02}."""
    import shutil

    base = write_kitti_tracking_fixture(drive, root / "tracking", labels=False)
    day = root / "2011_09_26"
    sync = day / "2011_09_26_drive_0001_sync"
    c = {line.split()[0].rstrip(":"): line.split()[1:]
         for line in (base / "calib" / "0003.txt").read_text().splitlines()}
    rt = lambda v: f"R: {' '.join(v[i] for i in (0, 1, 2, 4, 5, 6, 8, 9, 10))}\nT: {v[3]} {v[7]} {v[11]}\n"  # noqa: E731
    day.mkdir(parents=True)
    (day / "calib_velo_to_cam.txt").write_text(
        "calib_time: 15-Mar-2012 11:37:16\n" + rt(c["Tr_velo_cam"]) + "delta_f: 0 0\n")
    (day / "calib_imu_to_velo.txt").write_text("calib_time: 25-May-2012 16:47:16\n" + rt(c["Tr_imu_velo"]))
    (day / "calib_cam_to_cam.txt").write_text(
        "calib_time: 09-Jan-2012 13:57:47\ncorner_dist: 9.950000e-02\n"
        f"R_rect_00: {' '.join(c['R_rect'])}\nP_rect_00: {' '.join(c['P0'])}\nP_rect_02: {' '.join(c['P2'])}\n")
    times = drive.frame_times_ns
    for sub, ext, src in (("velodyne_points", "bin", base / "velodyne" / "0003"),
                          ("image_02", "png", base / "image_02" / "0003")):
        (sync / sub / "data").mkdir(parents=True)
        for i in range(len(times)):
            shutil.copyfile(src / f"{i:06d}.{ext}", sync / sub / "data" / f"{i:010d}.{ext}")
    (sync / "velodyne_points" / "timestamps.txt").write_text("".join(_stamp(int(t)) + "\n" for t in times))
    (sync / "image_02" / "timestamps.txt").write_text("".join(_stamp(int(t) + 50_000_000) + "\n" for t in times))
    oxts_times = drive.gnss.timestamps_ns  # 100 Hz, covering every sweep and image
    (sync / "oxts" / "data").mkdir(parents=True)
    for i, row in enumerate(oxts_rows(drive, oxts_times)):
        (sync / "oxts" / "data" / f"{i:010d}.txt").write_text(row + "\n")
    (sync / "oxts" / "timestamps.txt").write_text("".join(_stamp(int(t)) + "\n" for t in oxts_times))
    return day


def test_import_kitti_raw(drive, tmp_path):
    from formats.import_kitti import import_kitti_raw
    from formats.raw_log import read_log
    from server.prepare import prepare

    day = write_kitti_raw_fixture(drive, tmp_path)
    log = read_log(import_kitti_raw(day, "2011_09_26_drive_0001_sync", tmp_path / "log"))
    times = drive.frame_times_ns
    assert [f.timestamp_ns for f in log.frames] == times.tolist()
    assert [f.images["image_02"][1] for f in log.frames] == (times + 50_000_000).tolist()
    assert log.lidars[0].ego_from_sensor.allclose(drive.lidars[0].ego_from_lidar, atol=1e-12)
    assert log.cameras[0].ego_from_camera.allclose(drive.cameras[0].ego_from_camera, atol=1e-12)
    assert log.labels_path is None and log.labels() == []
    track = log.world_from_ego()
    assert len(track) == len(drive.gnss)
    truth = drive.gnss.interpolate(times)
    track = track.interpolate(times)
    rel = track[0].inverse() @ track
    rel_truth = truth[0].inverse() @ truth
    np.testing.assert_allclose(rel.translation, rel_truth.translation, atol=1e-4)
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == len(times) and not summary.failed


@pytest.mark.parametrize("text, match", [
    ("2011-09-26 13:02:25\n", "timestamp YYYY"),
    ("2011-09-26 13:02:25.1234567890\n", "timestamp YYYY"),
    ("26/09/2011 13:02:25.5\n", "timestamp YYYY"),
    ("", "at least one timestamp"),
])
def test_bad_timestamps_raise_format_error(tmp_path, text, match):
    from formats.errors import FormatError
    from formats.import_kitti import read_timestamps

    (tmp_path / "timestamps.txt").write_text(text)
    with pytest.raises(FormatError, match=match):
        read_timestamps(tmp_path / "timestamps.txt")


def test_timestamps_are_exact_nanoseconds(tmp_path):
    from formats.import_kitti import read_timestamps

    (tmp_path / "t.txt").write_text("2011-09-26 13:02:25.964389445\n1970-01-01 00:00:01.5\n")
    # 2011-09-26 is day 15243 of the UNIX epoch
    expect = (15243 * 86400 + 13 * 3600 + 2 * 60 + 25) * 10**9 + 964389445
    assert read_timestamps(tmp_path / "t.txt").tolist() == [expect, 1_500_000_000]


def test_export_maps_types(drive):
    """Categories become KITTI types through formats.categories: the rig's names, nuScenes' and
    KITTI's own spellings; unmapped ones are refused by name, passed or dropped; lines of the
    kept tracks do not change, nor do the ids."""
    import dataclasses

    from formats.categories import UnmappedCategoryError

    cam = drive.cameras[0]
    times = drive.frame_times_ns
    plain = list(drive.actor_tracks)
    baseline = {(p["frame"], p["id"]): line.split()[3:] for line in kitti_tracking_lines(plain, times, drive.gnss, cam)
                for p in [parse(line)]}
    seen = {i for _, i in baseline}
    ids = kitti_track_ids(plain)
    relabel = ["pole", "vehicle.truck", "Person_sitting", "building", "road sign", "wreck"]
    visible = [n for n, t in enumerate(plain) if ids[t.track_id] in seen]
    assert len(visible) >= len(relabel), "enough actors in view to relabel"
    tracks = list(plain)
    for n, category in zip(visible, relabel):
        tracks[n] = dataclasses.replace(plain[n], category=category)
    with pytest.raises(UnmappedCategoryError, match="KITTI has no category for 'road sign'"):
        kitti_tracking_lines(tracks, times, drive.gnss, cam)
    want = {"car": "Car", "pedestrian": "Pedestrian", "pole": "Misc", "vehicle.truck": "Truck",
            "Person_sitting": "Person_sitting", "building": None, "wreck": "Misc"}
    for option, sign in [({"types": {"Road Sign": "Misc"}}, "Misc"), ({"unmapped": "pass"}, "road_sign"),
                         ({"unmapped": "drop"}, None)]:
        lines = kitti_tracking_lines(tracks, times, drive.gnss, cam, **option)
        kind = {ids[t.track_id]: {**want, "road sign": sign}[t.category] for t in tracks}
        assert {(p["frame"], p["id"]) for p in map(parse, lines)} == {k for k in baseline if kind[k[1]]}
        for line in lines:
            p = parse(line)
            assert p["type"] == kind[p["id"]] and line.split()[3:] == baseline[p["frame"], p["id"]]
    with pytest.raises(ValueError, match="'car': 'Bus'.*values must be KITTI names"):
        kitti_tracking_lines(tracks, times, drive.gnss, cam, types={"car": "Bus"})
