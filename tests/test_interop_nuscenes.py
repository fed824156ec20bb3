"""nuScenes export: tables checked with a NumPy copy of the devkit's ``Box`` (wlh, wxyz,
global → ego → sensor moves of ``get_sample_data``), and with ``nuscenes-devkit`` itself
(installed by ``.ci/bootstrap test`` with ``--no-deps``: its metadata pins numpy<2, but the
modules used here run on numpy 2; run in a subprocess so matplotlib stays out of this one)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.export_nuscenes import NuScenesSensorFiles, nuscenes_tables, write_nuscenes

DEVKIT_PYTHON = sys.executable
VERSION = "v1.0-fathom"


def devkit_box_corners(translation, size_wlh, rotation_wxyz) -> np.ndarray:
    """``nuscenes.utils.data_classes.Box.corners()`` transposed: ``(8, 3)``."""
    w, l, h = size_wlh
    x = l / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
    y = w / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
    z = h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
    r = _matrix(rotation_wxyz)
    return (r @ np.vstack([x, y, z])).T + np.asarray(translation)


def _matrix(q) -> np.ndarray:
    """pyquaternion's rotation matrix of a wxyz quaternion (written out, not engine code)."""
    w, x, y, z = np.asarray(q, float) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def same_corner_set(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    assert d.min(axis=1).max() < atol and d.min(axis=0).max() < atol


def _export(drive, root: Path):
    lidar = drive.lidars[0]
    cam = drive.cameras[0]
    times = drive.frame_times_ns
    sensors = [
        NuScenesSensorFiles(lidar.name, lidar.ego_from_lidar,
                            [(f"samples/{lidar.name}/{i:06d}.pcd.bin", int(t)) for i, t in enumerate(times)]),
        NuScenesSensorFiles(cam.name, cam.ego_from_camera,
                            [(f"samples/{cam.name}/{i:06d}.jpg", int(t) + 50_000_000) for i, t in enumerate(times)],
                            camera=cam),
    ]
    tracks = list(drive.actor_tracks)
    tables = nuscenes_tables(tracks, times, drive.gnss, sensors)
    write_nuscenes(root, VERSION, tables)
    return tables, tracks, sensors


def test_tables_follow_devkit_box_conventions(drive, tmp_path):
    tables, tracks, sensors = _export(drive, tmp_path)
    times = drive.frame_times_ns
    boxes = interpolate_tracks(tracks, times)
    samples = {s["token"]: i for i, s in enumerate(tables["sample"])}
    inst = {r["token"]: r for r in tables["instance"]}
    cat = {r["token"]: r["name"] for r in tables["category"]}
    track_of = {_ann_token(t.track_id, i): n for n, t in enumerate(tracks) for i in range(len(times))}
    assert len(tables["sample_annotation"]) == int(boxes.valid.sum())
    lidar_sd = {r["sample_token"]: r for r in tables["sample_data"] if r["fileformat"] == "pcd"}
    poses = {r["token"]: r for r in tables["ego_pose"]}
    calib = {r["token"]: r for r in tables["calibrated_sensor"]}
    for ann in tables["sample_annotation"]:
        i = samples[ann["sample_token"]]
        n = track_of[ann["token"]]
        assert boxes.valid[i, n] and ann["instance_token"] == inst[ann["instance_token"]]["token"]
        assert cat[inst[ann["instance_token"]]["category_token"]] == {"car": "vehicle.car",
                                                                     "pedestrian": "human.pedestrian.adult"}[tracks[n].category]
        ours = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
        same_corner_set(devkit_box_corners(ann["translation"], ann["size"], ann["rotation"]), ours, 1e-9)
        # get_sample_data: global → ego (ego_pose) → sensor (calibrated_sensor)
        sd = lidar_sd[ann["sample_token"]]
        ep, cs = poses[sd["ego_pose_token"]], calib[sd["calibrated_sensor_token"]]
        kit = devkit_box_corners(ann["translation"], ann["size"], ann["rotation"])
        kit = (kit - ep["translation"]) @ _matrix(ep["rotation"])
        kit = (kit - cs["translation"]) @ _matrix(cs["rotation"])
        lidar_from_world = (drive.gnss.at(int(times[i])) @ sensors[0].ego_from_sensor).inverse()
        same_corner_set(kit, lidar_from_world.apply(ours), 1e-9)
    # linked lists and counts as the devkit's reverse index expects
    for r in tables["instance"]:
        chain, tok = [], r["first_annotation_token"]
        by_tok = {a["token"]: a for a in tables["sample_annotation"]}
        while tok:
            chain.append(tok)
            tok = by_tok[tok]["next"]
        assert len(chain) == r["nbr_annotations"] and chain[-1] == r["last_annotation_token"]
    assert tables["scene"][0]["nbr_samples"] == len(times)
    assert [s["timestamp"] for s in tables["sample"]] == [int(t) // 1000 for t in times]


def _ann_token(track_id: str, i: int) -> str:
    from formats.export_nuscenes import token

    return token("sample_annotation", "scene-0001", track_id, i)


def test_bad_arguments(drive):
    with pytest.raises(ValueError, match="strictly increasing"):
        nuscenes_tables([], np.array([5, 5]), drive.gnss, [])
    s = NuScenesSensorFiles("LIDAR_TOP", drive.lidars[0].ego_from_lidar, [None])
    with pytest.raises(ValueError, match="1 files for 2 samples"):
        nuscenes_tables([], drive.frame_times_ns[:2], drive.gnss, [s])
    with pytest.raises(ValueError, match="num_lidar_pts"):
        nuscenes_tables(list(drive.actor_tracks), drive.frame_times_ns[:1], drive.gnss, [], num_lidar_pts=np.zeros((2, 2)))


_DEVKIT_SCRIPT = r"""
import json, sys
import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.geometry_utils import view_points, BoxVisibility
nusc = NuScenes(version=sys.argv[2], dataroot=sys.argv[1], verbose=False)
out = {"global": {}, "lidar": {}, "camera": {}}
for ann in nusc.sample_annotation:
    out["global"][ann["token"]] = nusc.get_box(ann["token"]).corners().T.tolist()
for sample in nusc.sample:
    for channel, sd in sample["data"].items():
        _, boxes, k = nusc.get_sample_data(sd, box_vis_level=BoxVisibility.ANY)
        for b in boxes:
            if k is None:
                out["lidar"][b.token] = b.corners().T.tolist()
            else:
                out["camera"][b.token] = view_points(b.corners(), k, normalize=True)[:2].T.tolist()
print(json.dumps(out))
"""


def test_nuscenes_devkit_loads_and_places_boxes(drive, tmp_path):
    tables, tracks, sensors = _export(drive, tmp_path)
    for sd in tables["sample_data"]:  # the devkit reads image sizes from the tables, never the files
        (tmp_path / sd["filename"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / sd["filename"]).touch()
    run = subprocess.run([DEVKIT_PYTHON, "-c", _DEVKIT_SCRIPT, str(tmp_path), VERSION],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    times = drive.frame_times_ns
    boxes = interpolate_tracks(tracks, times)
    cam = drive.cameras[0]
    assert len(out["global"]) == len(tables["sample_annotation"])
    assert out["lidar"].keys() == out["global"].keys()
    for n, t in enumerate(tracks):
        for i in np.flatnonzero(boxes.valid[:, n]):
            tok = _ann_token(t.track_id, i)
            ours = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
            same_corner_set(np.array(out["global"][tok]), ours, 1e-9)
            lidar_from_world = (drive.gnss.at(int(times[i])) @ sensors[0].ego_from_sensor).inverse()
            same_corner_set(np.array(out["lidar"][tok]), lidar_from_world.apply(ours), 1e-6)
            if tok in out["camera"]:
                t_img = int(times[i]) + 50_000_000
                cam_pts = (drive.gnss.at(t_img) @ cam.ego_from_camera).inverse().apply(ours)
                uv = (cam.intrinsics.K @ cam_pts.T).T
                same_corner_set(np.hstack([np.array(out["camera"][tok]), np.zeros((8, 1))]),
                                np.hstack([uv[:, :2] / uv[:, 2:], np.zeros((8, 1))]), 1e-6)
    assert out["camera"], "some boxes are in view of the camera"


# ---------------------------------------------------------------- import: a nuScenes fixture with sweeps


def write_nuscenes_fixture(drive, root: Path) -> dict:
    """The drive as DATAROOT/{samples,sweeps}/... + VERSION/*.json: key frames every second
    frame, the frames between as LiDAR sweeps (is_key_frame false) with their own ego poses."""
    from formats.export_nuscenes import token
    from formats.jpeg import encode_jpeg
    from formats.nuscenes import write_nuscenes_pcd_bin

    lidar, cam = drive.lidars[0], drive.cameras[0]
    times = drive.frame_times_ns
    keys = times[::2]
    sensors = [
        NuScenesSensorFiles(lidar.name, lidar.ego_from_lidar,
                            [(f"samples/{lidar.name}/n{i}__{int(t) // 1000}.pcd.bin", int(t)) for i, t in enumerate(keys)]),
        NuScenesSensorFiles(cam.name, cam.ego_from_camera,
                            [(f"samples/{cam.name}/n{i}__{int(t) // 1000 + 50_000}.jpg", int(t) + 50_000_000)
                             for i, t in enumerate(keys)], camera=cam),
    ]
    tables = nuscenes_tables(list(drive.actor_tracks), keys, drive.gnss, sensors)
    lidar_sd = [r for r in tables["sample_data"] if r["fileformat"] == "pcd"]
    calib_token = lidar_sd[0]["calibrated_sensor_token"]
    for j, t in enumerate(times[1::2]):
        tok = token("sweep", j)
        pose = drive.gnss.at(int(t))
        tables["ego_pose"].append({"token": tok, "timestamp": int(t) // 1000, "rotation": pose.rotation.tolist(),
                                   "translation": pose.translation.tolist()})
        lidar_sd.append({"token": tok, "sample_token": tables["sample"][j]["token"], "ego_pose_token": tok,
                         "calibrated_sensor_token": calib_token, "timestamp": int(t) // 1000, "fileformat": "pcd",
                         "is_key_frame": False, "height": 0, "width": 0,
                         "filename": f"sweeps/{lidar.name}/s{j}__{int(t) // 1000}.pcd.bin"})
    lidar_sd.sort(key=lambda r: r["timestamp"])
    for i, r in enumerate(lidar_sd):
        r["prev"] = lidar_sd[i - 1]["token"] if i else ""
        r["next"] = lidar_sd[i + 1]["token"] if i + 1 < len(lidar_sd) else ""
    tables["sample_data"] = lidar_sd + [r for r in tables["sample_data"] if r["fileformat"] == "jpg"]
    write_nuscenes(root, VERSION, tables)
    for i, r in enumerate(lidar_sd):
        (root / r["filename"]).parent.mkdir(parents=True, exist_ok=True)
        write_nuscenes_pcd_bin(root / r["filename"], drive.sweeps[lidar.name][i])
    img = np.zeros((cam.intrinsics.height, cam.intrinsics.width, 3), np.uint8)
    for r in tables["sample_data"]:
        if r["fileformat"] == "jpg":
            (root / r["filename"]).parent.mkdir(parents=True, exist_ok=True)
            (root / r["filename"]).write_bytes(encode_jpeg(img))
    return tables


def test_import_nuscenes_scene_prepare_export_round_trip(drive, tmp_path):
    from engine.se3 import SE3
    from formats.import_nuscenes import import_nuscenes_scene
    from formats.raw_log import read_log
    from server.prepare import prepare
    from server.schemas import LabelDocument

    tables = write_nuscenes_fixture(drive, tmp_path / "nusc")
    log = read_log(import_nuscenes_scene(tmp_path / "nusc", VERSION, "scene-0001", tmp_path / "log"))
    LabelDocument.model_validate(json.loads(log.labels_path.read_text()))
    times = drive.frame_times_ns
    assert [f.timestamp_ns for f in log.frames] == [int(t) // 1000 * 1000 for t in times]
    assert [bool(f.images) for f in log.frames] == [i % 2 == 0 for i in range(len(times))]
    lidar, cam = drive.lidars[0], drive.cameras[0]
    assert log.lidars[0].ego_from_sensor.allclose(lidar.ego_from_lidar, atol=1e-12)
    assert log.cameras[0].ego_from_camera.allclose(cam.ego_from_camera, atol=1e-12)
    assert log.cameras[0].intrinsics == cam.intrinsics
    offset = np.asarray(log.origin.enu_offset_m)
    poses = log.world_from_ego().interpolate(np.array([f.timestamp_ns for f in log.frames]))
    truth = drive.gnss.interpolate(np.array([f.timestamp_ns for f in log.frames]))
    np.testing.assert_allclose(poses.translation + offset, truth.translation, atol=1e-9)
    # labels: the annotation table's boxes, shifted by the origin, size wlh -> lwh
    tracks = {t.track_id: t for t in log.labels()}
    for ann in tables["sample_annotation"]:
        t = tracks[ann["instance_token"]]
        i = list(t.timestamps_ns).index(next(s["timestamp"] for s in tables["sample"]
                                             if s["token"] == ann["sample_token"]) * 1000)
        np.testing.assert_allclose(t.centers[i] + offset, ann["translation"], atol=1e-9)
        np.testing.assert_array_equal(t.sizes[i], np.array(ann["size"])[[1, 0, 2]])
        same_corner_set(box_corners(t.centers[i] + offset, t.sizes[i], t.rotations[i]),
                        devkit_box_corners(ann["translation"], ann["size"], ann["rotation"]), 1e-9)
    assert len(tracks) == len(tables["instance"])
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == len(times) and not summary.failed
    # export from the raw log (back in the global frame) and compare the annotation tables
    shift = SE3(np.array([1.0, 0, 0, 0]), offset)
    back = [t.__class__(t.track_id, t.category, t.timestamps_ns, t.centers + offset, t.sizes, t.rotations)
            for t in log.labels()]
    keys = [f for f in log.frames if f.images]
    sensors = [NuScenesSensorFiles(lidar.name, log.lidars[0].ego_from_sensor,
                                   [(str(f.lidar[lidar.name].relative_to(log.root)), f.timestamp_ns) for f in keys])]
    again = nuscenes_tables(back, np.array([f.timestamp_ns for f in keys]),
                            log.world_from_ego().transformed(left=shift), sensors)
    from formats.export_nuscenes import token

    # the re-export's instance tokens hash the track ids (= the original instance tokens)
    old = {(token("instance", "scene-0001", a["instance_token"]), a["sample_token"]): a
           for a in tables["sample_annotation"]}
    new = {(a["instance_token"], a["sample_token"]): a for a in again["sample_annotation"]}
    assert old.keys() == new.keys()
    for k, a in old.items():
        b = new[k]
        np.testing.assert_allclose(b["translation"], a["translation"], atol=1e-3)
        np.testing.assert_allclose(b["size"], a["size"], atol=1e-6)
        assert np.degrees(quat.angle_between(np.array(b["rotation"]), np.array(a["rotation"]))) < 0.01


@pytest.mark.parametrize("table, text, match", [
    ("scene", "{", "valid JSON"),
    ("scene", "{}", "list of records"),
    ("sample", "[]", "a record with token"),
])
def test_bad_tables_raise_format_error(drive, tmp_path, table, text, match):
    from formats.errors import FormatError
    from formats.import_nuscenes import import_nuscenes_scene

    write_nuscenes_fixture(drive, tmp_path)
    (tmp_path / VERSION / f"{table}.json").write_text(text)
    with pytest.raises(FormatError, match=match) as err:
        import_nuscenes_scene(tmp_path, VERSION, "scene-0001", tmp_path / "log")
    assert err.value.path.endswith(f"{table}.json")


def test_unknown_scene_raises_format_error(drive, tmp_path):
    from formats.errors import FormatError
    from formats.import_nuscenes import import_nuscenes_scene

    write_nuscenes_fixture(drive, tmp_path)
    with pytest.raises(FormatError, match="a scene named 'nope'"):
        import_nuscenes_scene(tmp_path, VERSION, "nope", tmp_path / "log")


def test_import_fixture_loads_in_devkit(drive, tmp_path):
    """The fixture with sweeps is a valid nuScenes layout for the devkit itself."""
    tables = write_nuscenes_fixture(drive, tmp_path)
    run = subprocess.run([DEVKIT_PYTHON, "-c", _DEVKIT_SCRIPT, str(tmp_path), VERSION],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    assert out["lidar"].keys() == {a["token"] for a in tables["sample_annotation"]}
