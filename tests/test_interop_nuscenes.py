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
from tests.naive import quat_to_matrix, same_corner_set

DEVKIT_PYTHON = sys.executable
VERSION = "v1.0-fathom"


def devkit_box_corners(translation, size_wlh, rotation_wxyz) -> np.ndarray:
    """``nuscenes.utils.data_classes.Box.corners()`` transposed: ``(8, 3)``."""
    w, l, h = size_wlh
    x = l / 2 * np.array([1, 1, 1, 1, -1, -1, -1, -1])
    y = w / 2 * np.array([1, -1, -1, 1, 1, -1, -1, 1])
    z = h / 2 * np.array([1, 1, -1, -1, 1, 1, -1, -1])
    r = quat_to_matrix(rotation_wxyz)
    return (r @ np.vstack([x, y, z])).T + np.asarray(translation)


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
        expected = {"car": "vehicle.car", "pedestrian": "human.pedestrian.adult"}[tracks[n].category]
        assert cat[inst[ann["instance_token"]]["category_token"]] == expected
        ours = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
        same_corner_set(devkit_box_corners(ann["translation"], ann["size"], ann["rotation"]), ours, 1e-9)
        # get_sample_data: global → ego (ego_pose) → sensor (calibrated_sensor)
        sd = lidar_sd[ann["sample_token"]]
        ep, cs = poses[sd["ego_pose_token"]], calib[sd["calibrated_sensor_token"]]
        kit = devkit_box_corners(ann["translation"], ann["size"], ann["rotation"])
        kit = (kit - ep["translation"]) @ quat_to_matrix(ep["rotation"])
        kit = (kit - cs["translation"]) @ quat_to_matrix(cs["rotation"])
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
        nuscenes_tables(list(drive.actor_tracks), drive.frame_times_ns[:1], drive.gnss, [],
                        num_lidar_pts=np.zeros((2, 2)))


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
                            [(f"samples/{lidar.name}/n{i}__{int(t) // 1000}.pcd.bin", int(t))
                             for i, t in enumerate(keys)]),
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


# ---------------------------------------------------------------- categories and lenses


def _recategorised(drive, *categories: str) -> list:
    """The drive's actor tracks with the given categories in turn (the rest kept)."""
    import dataclasses

    tracks = list(drive.actor_tracks)
    return [dataclasses.replace(t, category=categories[n]) if n < len(categories) else t
            for n, t in enumerate(tracks)]


def _devkit_colormap() -> dict:
    """nuscenes-devkit's ``get_colormap()`` (its category names), loaded from the file: importing
    the package would import matplotlib here."""
    import importlib.util

    package = Path(importlib.util.find_spec("nuscenes").submodule_search_locations[0])
    spec = importlib.util.spec_from_file_location("devkit_color_map", package / "utils" / "color_map.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_colormap()


def test_category_tables_cover_the_devkit_and_the_rigs(drive):
    from formats.categories import NUSCENES
    from server.simulate import LABEL_CATEGORIES

    assert NUSCENES.names == set(_devkit_colormap())
    rig = {t.category for t in drive.static_tracks + drive.actor_tracks} | set(LABEL_CATEGORIES) | {"wreck"}
    assert rig == {"building", "pole", "car", "pedestrian", "wreck"}  # the harbor rig labels its wreck
    names = NUSCENES.resolve(rig)
    assert names == {"building": "static.manmade", "pole": "static.manmade", "car": "vehicle.car",
                     "pedestrian": "human.pedestrian.adult", "wreck": "static.other"}
    # nuScenes' own names map to themselves, any case and spacing of a key is the same key
    assert NUSCENES.resolve(["vehicle.bus.bendy", "Traffic Cone", "PICKUP-truck"]) == {
        "vehicle.bus.bendy": "vehicle.bus.bendy", "Traffic Cone": "movable_object.trafficcone",
        "PICKUP-truck": "vehicle.truck"}


def test_unmapped_categories_are_refused_by_name(drive):
    from formats.categories import UnmappedCategoryError

    times = drive.frame_times_ns
    tracks = _recategorised(drive, "sign", "car", "Road Sign", "sign")
    with pytest.raises(UnmappedCategoryError, match="nuScenes has no category for 'Road Sign', 'sign'") as err:
        nuscenes_tables(tracks, times, drive.gnss, [])
    assert err.value.categories == ("Road Sign", "sign")
    with pytest.raises(ValueError, match="'sign': 'pole'.*values must be nuScenes names"):
        nuscenes_tables(tracks, times, drive.gnss, [], categories={"sign": "pole"})
    with pytest.raises(ValueError, match="unmapped must be one of"):
        nuscenes_tables(tracks, times, drive.gnss, [], unmapped="ignore")


@pytest.mark.parametrize("option, want", [
    ({"categories": {"sign": "static.manmade", "road sign": None}}, {"sign": "static.manmade", "Road Sign": None}),
    ({"unmapped": "pass"}, {"sign": "sign", "Road Sign": "Road_Sign"}),
    ({"unmapped": "drop"}, {"sign": None, "Road Sign": None}),
])
def test_unmapped_categories_mapped_passed_or_dropped(drive, option, want):
    from formats.export_nuscenes import token

    times = drive.frame_times_ns
    tracks = _recategorised(drive, "sign", "car", "Road Sign", "building")
    counts = np.arange(len(times) * len(tracks)).reshape(len(times), len(tracks))
    tables = nuscenes_tables(tracks, times, drive.gnss, [], num_lidar_pts=counts, **option)
    cat = {r["token"]: r["name"] for r in tables["category"]}
    got = {r["token"]: cat[r["category_token"]] for r in tables["instance"]}
    default = {"car": "vehicle.car", "building": "static.manmade", "pedestrian": "human.pedestrian.adult"}
    boxes = interpolate_tracks(tracks, times)
    assert boxes.valid[:, :4].any(axis=0).all()
    for n, t in enumerate(tracks):
        expected = want[t.category] if t.category in want else default[t.category]
        assert got.get(token("instance", "scene-0001", t.track_id)) == expected, t.category
        for i in np.flatnonzero(boxes.valid[:, n]) if expected else []:  # the track's own column of counts
            ann = next(a for a in tables["sample_annotation"] if a["token"] == _ann_token(t.track_id, i))
            assert ann["num_lidar_pts"] == counts[i, n]
    assert sorted(cat.values()) == sorted(set(got.values()))


def test_distorted_cameras_warn(drive):
    import dataclasses
    import warnings

    from formats.export_nuscenes import LensWarning

    cam = drive.cameras[0]
    times = drive.frame_times_ns[:2]

    def sensors(model: str, distortion: tuple) -> list:
        lens = dataclasses.replace(cam.intrinsics, model=model, distortion=distortion)
        c = dataclasses.replace(cam, intrinsics=lens)
        return [NuScenesSensorFiles(cam.name, cam.ego_from_camera, [(f"{i}.jpg", int(t)) for i, t in enumerate(times)],
                                    camera=c)]

    with pytest.warns(LensWarning, match=f"camera {cam.name}: kannala_brandt lens .*3x3 matrix alone"):
        nuscenes_tables([], times, drive.gnss, sensors("kannala_brandt", (0.0, 0.0, 0.0, 0.0)))
    with pytest.warns(LensWarning, match=r"brown_conrady lens \(distortion \[-0.1"):
        nuscenes_tables([], times, drive.gnss, sensors("brown_conrady", (-0.1, 0.01)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nuscenes_tables([], times, drive.gnss, sensors("brown_conrady", (0.0, 0.0)))  # a pinhole in effect
        nuscenes_tables([], times, drive.gnss, sensors("pinhole", ()))


# ---------------------------------------------------------------- complete export of a prepared scene

_DEVKIT_RENDER = r"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import numpy as np
from nuscenes.nuscenes import NuScenes
from nuscenes.utils.data_classes import LidarPointCloud
root, version, out_dir = sys.argv[1:4]
nusc = NuScenes(version=version, dataroot=root, verbose=False)
out = []
for sample in nusc.sample:
    data = {}
    for channel, sd in sample["data"].items():
        png = f"{out_dir}/{channel}-{sample['timestamp']}.png"
        # underlay_map: the devkit's map crop calls int() on a 1-element array, an error on NumPy 2
        nusc.render_sample_data(sd, underlay_map=False, out_path=png, verbose=False)
        path, boxes, k = nusc.get_sample_data(sd)
        data[channel] = {"png": png, "path": path, "boxes": {b.token: b.corners().T.tolist() for b in boxes},
                         "names": {b.token: b.name for b in boxes}}
        if k is None:
            data[channel]["points"] = f"{out_dir}/{channel}-{sample['timestamp']}.npy"
            np.save(data[channel]["points"], LidarPointCloud.from_file(path).points.T)
    out.append({"timestamp": sample["timestamp"], "data": data})
print(json.dumps(out))
"""


def _lidar_from_world(xyz: np.ndarray, world_from_ego, ego_from_lidar) -> np.ndarray:
    """NumPy reference: world points ``(N, 3)`` → ego → LiDAR frame, row vectors."""
    ego = (xyz - world_from_ego.translation) @ quat_to_matrix(world_from_ego.rotation)
    return (ego - ego_from_lidar.translation) @ quat_to_matrix(ego_from_lidar.rotation)


def check_complete_dataroot(root: Path, scene, tracks, names: dict, out_dir: Path, version: str = VERSION) -> None:
    """``root`` loads in nuscenes-devkit, every sample's LiDAR and camera data renders to a PNG,
    the LiDAR files hold the scene's points in the LiDAR frame (NumPy reference), the camera
    files are the stored JPEGs, and ``get_sample_data`` boxes are ``tracks`` (categories
    ``names``, ``None`` = dropped) in the sensor frame."""
    from formats.export_nuscenes import token

    run = subprocess.run([DEVKIT_PYTHON, "-c", _DEVKIT_RENDER, str(root), version, str(out_dir)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
    boxes = interpolate_tracks(tracks, times)
    lidar, cam_name = scene.lidars[0], next(iter(scene.cameras))
    assert [s["timestamp"] for s in out] == [(int(t) + 500) // 1000 for t in times]
    for i, (frame, sample) in enumerate(zip(scene.frames, out)):
        assert set(sample["data"]) == {lidar.name} | ({cam_name} if cam_name in frame.images else set())
        for d in sample["data"].values():
            assert Path(d["png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        # points: the stored world points in the LiDAR frame at the frame time, intensity, ring
        table = scene.points(frame.index)
        ref = _lidar_from_world(np.column_stack([table.column(c).to_numpy() for c in "xyz"]).astype(np.float64),
                                frame.world_from_ego, lidar.ego_from_sensor)
        d = sample["data"][lidar.name]
        np.testing.assert_allclose(np.load(d["points"])[:, :3], ref, rtol=0, atol=2e-5)
        raw = np.fromfile(d["path"], "<f4").reshape(-1, 5)
        np.testing.assert_array_equal(raw[:, 3], table.column("intensity").to_numpy())
        np.testing.assert_array_equal(raw[:, 4], table.column("ring").to_numpy())
        # boxes: every kept track's box in the LiDAR frame with its nuScenes category
        kept = [n for n, t in enumerate(tracks) if boxes.valid[i, n] and names[t.category] is not None]
        tok = {token("sample_annotation", scene.scene_id, tracks[n].track_id, i): n for n in kept}
        assert set(d["boxes"]) == set(tok)
        for a, n in tok.items():
            corners = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
            same_corner_set(np.array(d["boxes"][a]),
                            _lidar_from_world(corners, frame.world_from_ego, lidar.ego_from_sensor), 1e-6)
            assert d["names"][a] == names[tracks[n].category]
        if cam_name in frame.images:
            image = scene.image_path(frame.index, cam_name).read_bytes()
            assert Path(sample["data"][cam_name]["path"]).read_bytes() == image
            assert set(sample["data"][cam_name]["boxes"]) <= set(tok)


def scene_tracks(t0: int, dt: int) -> list:
    """Labels for :func:`tests.server_scene.write_scene`: the parked car over its block of points,
    a truck turning past it and a pole."""
    from engine.cuboid import CuboidTrack

    turn = quat.from_yaw(np.array([0.0, 0.2]))
    return [CuboidTrack("car-1", "car", np.array([t0, t0 + 2 * dt]), np.array([[10.0, 0.0, 0.7]] * 2),
                        np.array([[4.2, 1.9, 1.5]] * 2), np.array([[1.0, 0, 0, 0]] * 2)),
            CuboidTrack("truck-2", "truck", np.array([t0, t0 + 2 * dt]), np.array([[14.0, 3.0, 1.0], [17.0, 3.5, 1.0]]),
                        np.array([[7.0, 2.4, 3.0]] * 2), turn),
            CuboidTrack("pole-3", "pole", np.array([t0]), np.array([[12.0, -3.0, 2.5]]), np.array([[0.3, 0.3, 5.0]]),
                        np.array([[1.0, 0, 0, 0]]), stationary=True)]


def test_complete_export_loads_and_renders_in_devkit(tmp_path):
    import cv2

    from formats.export_nuscenes_dataroot import write_nuscenes_dataroot
    from formats.scene_store import Scene
    from tests.server_scene import DT, T0, write_scene

    scene = Scene.open(write_scene(tmp_path / "scenes"))
    tracks = scene_tracks(T0, DT)
    root = write_nuscenes_dataroot(tmp_path / "nusc", scene, tracks, unmapped="drop",
                                   categories={"truck": None})
    names = {"car": "vehicle.car", "truck": None, "pole": "static.manmade"}
    (tmp_path / "renders").mkdir()
    check_complete_dataroot(root, scene, tracks, names, tmp_path / "renders")
    sample_data = json.loads((root / VERSION / "sample_data.json").read_text())
    files = {str(p.relative_to(root)) for p in (root / "samples").rglob("*") if p.is_file()}
    assert files == {sd["filename"] for sd in sample_data} and len(files) == 2 * len(scene.frames)
    assert not (root / "sweeps").exists()
    mask = cv2.imdecode(np.frombuffer((root / "maps" / "fathom-blank.png").read_bytes(), np.uint8),
                        cv2.IMREAD_UNCHANGED)
    assert mask.shape == (1, 1) and mask[0, 0] == 0  # the devkit's background value
    notes = (root / "NOTES.txt").read_text()
    assert "category 'pole' -> 'static.manmade'" in notes and "category 'truck': dropped" in notes
    assert "no sweeps" in notes
