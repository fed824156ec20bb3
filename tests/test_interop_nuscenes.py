"""nuScenes export: tables checked with a NumPy copy of the devkit's ``Box`` (wlh, wxyz,
global → ego → sensor moves of ``get_sample_data``), and with ``nuscenes-devkit`` itself
when a separate venv holds it (``/tmp/nusc_venv``; the devkit pins numpy<2, so it never
enters the project venv)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.export_nuscenes import NuScenesSensorFiles, nuscenes_tables, write_nuscenes

DEVKIT_PYTHON = Path("/tmp/nusc_venv/bin/python")
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


@pytest.mark.skipif(not DEVKIT_PYTHON.exists(), reason="no nuscenes-devkit venv at /tmp/nusc_venv")
def test_nuscenes_devkit_loads_and_places_boxes(drive, tmp_path):
    tables, tracks, sensors = _export(drive, tmp_path)
    for sd in tables["sample_data"]:  # the devkit reads image sizes from the tables, never the files
        (tmp_path / sd["filename"]).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / sd["filename"]).touch()
    run = subprocess.run([str(DEVKIT_PYTHON), "-c", _DEVKIT_SCRIPT, str(tmp_path), VERSION],
                         capture_output=True, text=True, timeout=120)
    if run.returncode and "No module named 'nuscenes'" in run.stderr:
        pytest.skip("the venv has no nuscenes-devkit")
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
