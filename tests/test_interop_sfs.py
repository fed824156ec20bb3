"""SFS export: the file passes scale_sensor_fusion_io's validation and loads back with its loader."""

from __future__ import annotations

import numpy as np
import pytest

from engine.cuboid import CuboidTrack
from formats.conventions import pose_from_sfs_row, sfs_pose_row
from formats.export_sfs import LIDAR_ID, encode_sfs, scene_to_sfs, write_sfs
from formats.sfs_cuboids import track_from_sfs

sfio = pytest.importorskip("scale_sensor_fusion_io")
from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader  # noqa: E402
from scale_sensor_fusion_io.validation import parse_and_validate_scene  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402


def _tracks(drive) -> list[CuboidTrack]:
    return list(drive.actor_tracks) + list(drive.static_tracks[:5])


def _frames(drive) -> list[tuple[int, np.ndarray]]:
    lidar = drive.lidars[0]
    return [(int(t), (drive.gnss.at(int(t)) @ lidar.ego_from_lidar).apply(sweep.xyz))
            for t, sweep in zip(drive.frame_times_ns[:3], drive.sweeps[lidar.name])]


def test_sfs_file_validates_and_loads_back(drive, tmp_path):
    tracks = _tracks(drive)
    frames = _frames(drive)
    path = write_sfs(tmp_path / "scene.sfs", tracks, drive.gnss, frames)
    raw = SFSLoader(str(path)).load_unsafe()
    result = parse_and_validate_scene(raw)
    assert result.success, getattr(result, "details", result)
    scene = SFSLoader(str(path)).load_as_sfs()
    assert scene.time_unit == "microseconds" and scene.time_offset == drive.start_ns // 1000
    by_id = {a.id: a for a in scene.annotations}
    assert sorted(by_id) == sorted(t.track_id for t in tracks)
    for t in tracks:
        back = track_from_sfs(by_id[t.track_id])
        np.testing.assert_array_equal(back.timestamps_ns + scene.time_offset * 1000, t.timestamps_ns)
        np.testing.assert_allclose(back.centers, t.centers, atol=1e-9)
        np.testing.assert_allclose(back.sizes, t.sizes, atol=1e-12)
        dot = np.abs(np.sum(back.rotations * t.rotations, axis=1))
        np.testing.assert_allclose(dot, 1.0, atol=1e-12)
        assert back.category == t.category and back.stationary == t.stationary
    lidar = next(s for s in scene.sensors if s.id == LIDAR_ID)
    assert [f.timestamp for f in lidar.frames] == [(t - drive.start_ns) // 1000 for t, _ in frames]
    for f, (_, xyz) in zip(lidar.frames, frames):
        np.testing.assert_array_equal(f.points.positions, xyz.astype(np.float32))
    # poses: scalar-last quaternions, read back with scipy (x y z w) and the package's model
    values = np.asarray(lidar.poses.values)
    np.testing.assert_allclose(values[:, :3], drive.gnss.translation, atol=1e-9)
    np.testing.assert_allclose(Rotation.from_quat(values[:, 3:]).as_matrix(),
                               Rotation.from_quat(drive.gnss.rotation[:, [1, 2, 3, 0]]).as_matrix(), atol=1e-12)
    model = SFSLoader(str(path)).load()
    model_odom = next(s for s in model.sensors if s.id == LIDAR_ID)
    np.testing.assert_array_equal(np.asarray(model_odom.poses.index),
                                  (drive.gnss.timestamps_ns - drive.start_ns) // 1000)


def test_sfs_pose_rows_are_scalar_last():
    t = np.array([[1.0, 2.0, 3.0]])
    q = np.array([[0.5, 0.5, -0.5, 0.5]])
    rows = sfs_pose_row(t, q)
    np.testing.assert_array_equal(rows, [[1.0, 2.0, 3.0, 0.5, -0.5, 0.5, 0.5]])
    t2, q2 = pose_from_sfs_row(rows)
    np.testing.assert_array_equal(t2, t)
    np.testing.assert_array_equal(q2, q)


def test_encoding_is_json_binary():
    from scale_json_binary import loads

    a, b = np.arange(5, dtype=np.float32).reshape(-1, 1) * np.ones(3, np.float32), np.arange(2, dtype=np.uint8)
    scene = {"version": "1.0", "annotations": [], "x": [{"a": a}, {"b": b}]}
    data = encode_sfs(scene)
    assert len(data) % 4 == 0
    back = loads(data)
    np.testing.assert_array_equal(back["x"][0]["a"], a)
    np.testing.assert_array_equal(back["x"][1]["b"], b)
    assert back["version"] == "1.0" and back["annotations"] == []


def test_bad_inputs(drive):
    t = drive.actor_tracks[0]
    with pytest.raises(ValueError, match="precedes"):
        scene_to_sfs([t], time_offset_us=int(t.timestamps_ns[0]) // 1000 + 1)
    close = CuboidTrack("a", "car", np.array([0, 100]), np.zeros((2, 3)), np.ones((2, 3)),
                        np.tile([1.0, 0, 0, 0], (2, 1)))
    with pytest.raises(ValueError, match="merge"):
        scene_to_sfs([close])
    with pytest.raises(ValueError, match="need world_from_ego"):
        scene_to_sfs([], None, [(0, np.zeros((1, 3)))])
    with pytest.raises(ValueError, match=r"frames\[0\]: points must be finite"):
        scene_to_sfs([], drive.gnss, [(drive.start_ns, np.full((1, 3), np.nan))])
    assert scene_to_sfs([]) == {"version": "1.0", "time_unit": "microseconds", "time_offset": 0,
                                "annotations": [], "sensors": []}


# ---------------------------------------------------------------- import


def test_import_sfs_prepare_export_round_trip(drive, tmp_path):
    import json

    from formats.import_sfs import import_sfs
    from formats.raw_log import read_log
    from formats.registry import read_points
    from server.prepare import prepare
    from server.schemas import LabelDocument

    tracks = _tracks(drive)
    frames = _frames(drive)
    path = write_sfs(tmp_path / "scene.sfs", tracks, drive.gnss, frames)
    log = read_log(import_sfs(path, tmp_path / "log"))
    LabelDocument.model_validate(json.loads(log.labels_path.read_text()))
    offset = np.asarray(log.origin.enu_offset_m)
    # frames at the SFS times, points back in the LiDAR-at-ego frame: world = pose(t) · p
    assert [f.timestamp_ns for f in log.frames] == [t for t, _ in frames]
    track = log.world_from_ego()
    for f, (t, xyz) in zip(log.frames, frames):
        sweep = read_points(f.lidar["lidar"], format="pcd")
        world = track.at(t).apply(sweep.xyz) + offset
        np.testing.assert_allclose(world, xyz.astype(np.float32), atol=2e-5)
    # labels equal the exported tracks, in the scene frame
    back = {t.track_id: t for t in log.labels()}
    assert sorted(back) == sorted(t.track_id for t in tracks)
    for t in tracks:
        b = back[t.track_id]
        np.testing.assert_array_equal(b.timestamps_ns, t.timestamps_ns)
        np.testing.assert_allclose(b.centers + offset, t.centers, atol=1e-9)
        np.testing.assert_allclose(b.sizes, t.sizes, atol=1e-12)
        assert np.max(np.abs(np.abs(np.sum(b.rotations * t.rotations, axis=1)) - 1)) < 1e-12
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == len(frames) and not summary.failed
    # export again from the raw log (global frame) and import: the same boxes
    again_path = write_sfs(tmp_path / "again.sfs",
                           [replace_track(b, b.centers + offset) for b in log.labels()],
                           drive.gnss, frames)
    assert parse_and_validate_scene(SFSLoader(str(again_path)).load_unsafe()).success
    again = {t.track_id: t for t in read_log(import_sfs(again_path, tmp_path / "log2")).labels()}
    for tid, b in back.items():
        np.testing.assert_allclose(again[tid].centers, b.centers, atol=1e-3)
        np.testing.assert_array_equal(again[tid].timestamps_ns, b.timestamps_ns)


def replace_track(t: CuboidTrack, centers: np.ndarray) -> CuboidTrack:
    return CuboidTrack(t.track_id, t.category, t.timestamps_ns, centers, t.sizes, t.rotations, t.stationary,
                       t.attributes, t.keyframe_attributes)


@pytest.mark.parametrize("data, match", [
    (b'{"version": "1.0"}', "NUL byte"),
    (b'{"version": \0\0\0\0', "JSON header"),
    (b'[1]\0\0\0\0', "JSON object"),
    (b'{"$items": [{"keys": ["a"], "offset": 0, "length": 40, "dtype": "float32"}]}\0\0\0\0', "inside the file"),
    (b'{"$items": [{"keys": ["a", "b"], "offset": 0, "length": 4, "dtype": "float32"}]}\0\0\0\0', "fit the header"),
    (b'{"$items": [{"keys": ["a"]}]}\0\0\0\0', "with keys, offset"),
])
def test_decode_bad_bytes_raise_format_error(data, match):
    from formats.errors import FormatError
    from formats.import_sfs import decode_sfs

    with pytest.raises(FormatError, match=match):
        decode_sfs(data, "x.sfs")


def test_import_without_lidar_raises_format_error(tmp_path):
    from formats.errors import FormatError
    from formats.import_sfs import import_sfs

    path = write_sfs(tmp_path / "a.sfs", [])
    with pytest.raises(FormatError, match="a lidar sensor"):
        import_sfs(path, tmp_path / "log")
