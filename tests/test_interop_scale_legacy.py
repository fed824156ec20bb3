"""Scale legacy per-frame LiDAR JSON import: a frame directory and a callback-format cuboid
file laid out as Scale documents them (world-frame points and poses, ``{w, x, y, z}``
headings, ``dimensions.x`` = width, yaw 0 along world +y), built from the synthetic drive.
Checked against NumPy references of those conventions and through prepare and the SFS
exporter/importer."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.errors import FormatError
from formats.import_scale_legacy import import_scale_legacy
from formats.jpeg import encode_jpeg
from tests.naive import quat_to_matrix, same_corner_set

N_FRAMES = 4
SCALE = 2.0  # stored images at full size, intrinsics given for a 2× larger original


def _heading(q) -> dict:
    return {"w": float(q[0]), "x": float(q[1]), "y": float(q[2]), "z": float(q[3])}


def _vec(v) -> dict:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def write_scale_fixture(drive, root):
    """``root/frames/N.json`` + ``root/frames/images/...`` and ``root/annotations.json``."""
    frames_dir = root / "frames"
    (frames_dir / "images").mkdir(parents=True)
    times = drive.frame_times_ns[:N_FRAMES]
    top = drive.lidars[0]
    cam = drive.cameras[0]
    k = cam.intrinsics
    world = {}
    for i, t in enumerate(times):
        ego = drive.gnss.at(int(t))
        device = ego @ top.ego_from_lidar
        points, xyz_all = [], []
        for d, lidar in enumerate(drive.lidars):
            s = drive.sweeps[lidar.name][i]
            xyz = (ego @ lidar.ego_from_lidar).apply(s.xyz.astype(np.float64))
            xyz_all.append(xyz)
            points += [{"x": p[0], "y": p[1], "z": p[2], "i": float(v), "d": d}
                       for p, v in zip(xyz.tolist(), s.intensity)]
        world[int(t)] = np.vstack(xyz_all)
        (frames_dir / "images" / f"{i}.jpg").write_bytes(encode_jpeg(np.full((k.height, k.width, 3), 40 * i, np.uint8)))
        t_img = int(t) + (5_000_000 if i else 0)  # frame 0: no image timestamp (= the frame's)
        cam_pose = drive.gnss.at(t_img) @ cam.ego_from_camera  # the pose at the exposure
        doc = {"device_position": _vec(device.translation), "device_heading": _heading(device.rotation),
               "timestamp": int(t), "points": points, "radar_points": [],
               "images": [{"image_url": f"images/{i}.jpg", "position": _vec(cam_pose.translation),
                           "heading": _heading(cam_pose.rotation), "fx": k.fx * SCALE, "fy": k.fy * SCALE,
                           "cx": k.cx * SCALE, "cy": k.cy * SCALE, "skew": 0, "camera_model": "brown_conrady",
                           "k1": 0, "k2": 0, "p1": 0, "p2": 0, "k3": 0, "k4": 0,
                           "scale_factor": SCALE, **({"timestamp": t_img} if i else {})}]}
        (frames_dir / f"{i}.json").write_text(json.dumps(doc))
    tracks = list(drive.actor_tracks)
    boxes = interpolate_tracks(tracks, times)
    response = []
    for f in range(len(times)):
        cuboids = []
        for n, tr in enumerate(tracks):
            if not boxes.valid[f, n]:
                continue
            r = quat_to_matrix(boxes.rotations[f, n])
            yaw_front = np.arctan2(r[1, 0], r[0, 0])  # Fathom front = box +x
            l, w, h = boxes.sizes[f, n]
            cuboids.append({"uuid": tr.track_id, "label": tr.category, "position": _vec(boxes.centers[f, n]),
                            "dimensions": {"x": w, "y": l, "z": h}, "yaw": float(yaw_front - np.pi / 2),
                            "stationary": False, "attributes": {"frame": f}})
        response.append({"cuboids": cuboids})
    (root / "annotations.json").write_text(json.dumps(response))
    return frames_dir, root / "annotations.json", world, response


def scale_corners(c: dict) -> np.ndarray:
    """NumPy reference of a Scale cuboid's corners: width along box x, length along box y,
    rotated by ``yaw`` about world z (yaw 0: front along +y)."""
    d = c["dimensions"]
    half = 0.5 * np.array([[sx * d["x"], sy * d["y"], sz * d["z"]]
                           for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    cy, sy = np.cos(c["yaw"]), np.sin(c["yaw"])
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    return half @ rz.T + np.array([c["position"][k] for k in "xyz"])


def _angle_deg(q1: np.ndarray, q2: np.ndarray) -> np.ndarray:
    dot = np.clip(np.abs(np.sum(q1 * q2, axis=-1)), 0.0, 1.0)
    return np.degrees(2 * np.arccos(dot))


def test_import_scale_legacy(drive, tmp_path):
    from formats.raw_log import read_log
    from formats.registry import read_points
    from server.prepare import prepare

    frames_dir, ann, world, response = write_scale_fixture(drive, tmp_path)
    log = read_log(import_scale_legacy(frames_dir, tmp_path / "log", annotations=ann))
    times = drive.frame_times_ns[:N_FRAMES]
    offset = np.asarray(log.origin.enu_offset_m)
    assert [f.timestamp_ns for f in log.frames] == times.tolist()
    assert [lidar.name for lidar in log.lidars] == ["lidar0", "lidar1"]
    track = log.world_from_ego()
    for f, t in zip(log.frames, times):
        parts = [read_points(f.lidar[name], format="pcd") for name in ("lidar0", "lidar1")]
        assert not any(p.time_offset_ns.any() for p in parts)
        back = track.at(int(t)).apply(np.vstack([p.xyz for p in parts]).astype(np.float64)) + offset
        np.testing.assert_allclose(back, world[int(t)], atol=1e-4)  # float32 device-frame PCD
        assert f.images["camera0"][1] == int(t) + (5_000_000 if t != times[0] else 0)
    device = drive.gnss.at(int(times[1])) @ drive.lidars[0].ego_from_lidar
    np.testing.assert_allclose(track.at(int(times[1])).translation + offset, device.translation, atol=1e-9)
    # camera: intrinsics divided by scale_factor, rig extrinsic relative to the device
    cam, ref = log.cameras[0], drive.cameras[0]
    k = ref.intrinsics
    assert (cam.intrinsics.width, cam.intrinsics.height) == (k.width, k.height)
    np.testing.assert_allclose([cam.intrinsics.fx, cam.intrinsics.fy, cam.intrinsics.cx, cam.intrinsics.cy],
                               [k.fx, k.fy, k.cx, k.cy], rtol=1e-12)
    want = drive.lidars[0].ego_from_lidar.inverse() @ ref.ego_from_camera
    assert cam.ego_from_camera.allclose(want, atol=1e-9)  # from frame 0, where image and frame coincide
    # the camera poses add ego poses at the exposure times
    for t in times[1:]:
        np.testing.assert_allclose(track.at(int(t) + 5_000_000).translation + offset,
                                   (drive.gnss.at(int(t) + 5_000_000) @ drive.lidars[0].ego_from_lidar).translation,
                                   atol=1e-9)
    # boxes: the NumPy corners of the Scale fields, and the drive's own boxes
    tracks = {t.track_id: t for t in log.labels()}
    for f, entry in enumerate(response):
        for c in entry["cuboids"]:
            tr = tracks[c["uuid"]]
            kf = int(np.flatnonzero(tr.timestamps_ns == times[f])[0])
            same_corner_set(box_corners(tr.centers[kf] + offset, tr.sizes[kf], tr.rotations[kf]), scale_corners(c),
                            1e-9)
            assert tr.category == c["label"] and tr.keyframe_attributes[kf] == {"frame": f}
    boxes = interpolate_tracks(list(drive.actor_tracks), times)
    for n, t in enumerate(drive.actor_tracks):
        if not boxes.valid[:, n].any():
            continue
        tr = tracks[t.track_id]
        valid = np.flatnonzero(boxes.valid[:, n])
        np.testing.assert_allclose(tr.centers + offset, boxes.centers[valid, n], atol=1e-3)
        np.testing.assert_allclose(tr.sizes, boxes.sizes[valid, n], atol=1e-3)
        assert _angle_deg(tr.rotations, boxes.rotations[valid, n]).max() < 0.01
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == N_FRAMES and not summary.failed, summary.failed


def test_round_trip_through_sfs(drive, tmp_path):
    """import legacy → export SFS (validated by scale_sensor_fusion_io) → import SFS: same boxes."""
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader
    from scale_sensor_fusion_io.validation import parse_and_validate_scene

    from engine.cuboid import CuboidTrack
    from engine.pose_sources import from_pose_table
    from formats.export_sfs import write_sfs
    from formats.import_sfs import import_sfs
    from formats.raw_log import read_log

    frames_dir, ann, _, _ = write_scale_fixture(drive, tmp_path)
    log = read_log(import_scale_legacy(frames_dir, tmp_path / "log", annotations=ann))
    offset = np.asarray(log.origin.enu_offset_m)
    world_tracks = [CuboidTrack(t.track_id, t.category, t.timestamps_ns, t.centers + offset, t.sizes, t.rotations)
                    for t in log.labels()]
    poses = log.world_from_ego()
    poses = from_pose_table(poses.timestamps_ns, np.hstack([poses.translation + offset, poses.rotation]))
    t0 = int(poses.timestamps_ns[0])
    path = write_sfs(tmp_path / "scene.sfs", world_tracks, poses, [(t0, poses.translation[:1])])
    assert parse_and_validate_scene(SFSLoader(str(path)).load_unsafe()).success
    sfs = read_log(import_sfs(path, tmp_path / "log2"))
    again = {t.track_id: t for t in sfs.labels()}
    off2 = np.asarray(sfs.origin.enu_offset_m)
    for t in world_tracks:
        b = again[t.track_id]
        np.testing.assert_array_equal(b.timestamps_ns, t.timestamps_ns)
        np.testing.assert_allclose(b.centers + off2, t.centers, atol=1e-3)
        np.testing.assert_allclose(b.sizes, t.sizes, atol=1e-3)
        assert _angle_deg(b.rotations, t.rotations).max() < 0.01


def _edit(path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize("target, change, match", [
    ("1.json", lambda d: d.pop("device_heading"), r"device_heading: a quaternion object"),
    ("1.json", lambda d: d["device_heading"].update(w=3.0), r"device_heading: a unit quaternion"),
    ("2.json", lambda d: d["points"][3].update(x="far"), r"points\[3\]: a LidarPoint"),
    ("2.json", lambda d: d["points"][5].update(d=-1), r"points\[5\]\.d: a device id"),
    ("2.json", lambda d: d.update(timestamp=0), r"timestamp: later than the previous frame"),
    ("0.json", lambda d: d["images"][0].update(camera_model="cylindrical"), r"images\[0\]\.camera_model"),
    ("0.json", lambda d: d["images"][0].update(image_url="images/missing.jpg"), r"images\[0\]\.image_url"),
    ("0.json", lambda d: d["images"][0].pop("fx"), r"images\[0\]\.fx: a finite number"),
    ("annotations.json", lambda d: d[1]["cuboids"][0]["dimensions"].update(y=-1.0),
     r"\[1\]\.cuboids\[0\]\.dimensions: positive"),
    ("annotations.json", lambda d: d[0]["cuboids"][0].pop("yaw"), r"\[0\]\.cuboids\[0\]\.yaw: a finite number"),
])
def test_bad_input_names_file_and_field(drive, tmp_path, target, change, match):
    frames_dir, ann, _, _ = write_scale_fixture(drive, tmp_path)
    path = ann if target == "annotations.json" else frames_dir / target
    _edit(path, change)
    with pytest.raises(FormatError, match=match) as err:
        import_scale_legacy(frames_dir, tmp_path / "log", annotations=ann)
    assert err.value.path == str(path)


def test_empty_or_broken_directory(tmp_path):
    with pytest.raises(FormatError, match="frame JSON files"):
        import_scale_legacy(tmp_path, tmp_path / "log")
    (tmp_path / "0.json").write_text("{nope")
    with pytest.raises(FormatError, match="valid JSON") as err:
        import_scale_legacy(tmp_path, tmp_path / "log")
    assert err.value.offset == 1
