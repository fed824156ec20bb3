"""Prepared-scene store: round trip, quantisation, zero-copy reads, resumability, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import xxhash

from engine.quaternion import from_yaw
from engine.se3 import SE3
from formats.errors import FormatError
from formats.scene_store import (
    MANIFEST,
    FrameBoxes,
    Scene,
    SceneWriter,
    points_table,
    positions,
    quantisation,
    take_rows,
    with_xyz,
    write_arrow_file,
)
from tests.server_scene import DT, T0, camera, ego_pose, frame_xyz, jpeg, millimetres, write_scene


def test_round_trip_values_and_manifest(tmp_path):
    scene = Scene.open(write_scene(tmp_path))
    assert [f.index for f in scene.frames] == [0, 1, 2]
    assert scene.origin.enu_offset_m == (500_000.0, 4_000_000.0, 12.0)
    assert scene.origin.geodetic == (36.1, -5.3, 12.0)
    cam = scene.cameras["CAM_FRONT"]
    assert cam.intrinsics == camera().intrinsics and cam.ego_from_camera.allclose(camera().ego_from_camera)
    for i in range(3):
        e = scene.frame(i)
        assert e.timestamp_ns == T0 + i * DT and e.image_timestamps_ns["CAM_FRONT"] == T0 + i * DT + 5_000_000
        assert e.world_from_ego.allclose(ego_pose(i))
        t = scene.points(i)
        xyz = frame_xyz(i)
        q, expect = millimetres(xyz)
        # float64 in, the 1 mm quantisation back: float64 exactly, float32 x y z its nearest float32
        np.testing.assert_array_equal(np.column_stack([t.column(c).to_numpy() for c in ("xq", "yq", "zq")]), q)
        np.testing.assert_array_equal(positions(scene.stored_points(i)), expect)
        np.testing.assert_array_equal(np.column_stack([t.column(c).to_numpy() for c in "xyz"]),
                                      expect.astype(np.float32))
        assert t.schema.names[:3] == ["x", "y", "z"] and "x" not in scene.stored_points(i).schema.names
        assert e.n_points == len(xyz) == t.num_rows
        lod = scene.points(i, 1)  # every 4th row, with all the full table's columns
        np.testing.assert_array_equal(scene.lod_rows(i, 1), np.arange(0, len(xyz), 4))
        assert lod.schema == t.schema and lod.equals(t.take(pa.array(np.arange(0, len(xyz), 4))))
        assert scene.image_path(i, "CAM_FRONT").read_bytes() == jpeg(i)


def test_quantised_columns_within_half_a_quantum(tmp_path):
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-2000, 2000, (5000, 3))
    t = points_table(xyz, quantum_m=1e-3)
    scale, offset = quantisation(t.schema)
    q = np.column_stack([t.column(c).to_numpy() for c in ("xq", "yq", "zq")])
    assert q.dtype == np.int32 and q.min() >= 0
    np.testing.assert_array_less(np.abs(offset + q * scale - xyz), 0.5e-3 + 1e-9)


def test_points_are_memory_mapped_zero_copy(tmp_path):
    scene = Scene.open(write_scene(tmp_path, n_frames=1))
    before = pa.total_allocated_bytes()
    t = scene.stored_points(0)
    assert pa.total_allocated_bytes() == before  # buffers live in the mapping, nothing allocated
    assert t.num_rows == scene.frame(0).n_points


def test_resume_skips_finished_and_redoes_half_written(tmp_path):
    root = write_scene(tmp_path)
    w = SceneWriter(root, scene_id="demo", origin=Scene.open(root).origin,
                    lidars=Scene.open(root).lidars, cameras=[camera()])
    assert w.finished_frames() == {0, 1, 2}
    # frame 1's points file rewritten by a killed job: its sidecar no longer matches
    (root / "frames" / "000001.arrow").write_bytes(b"garbage")
    assert w.finished_frames() == {0, 2}
    assert w.finished_frames(verify="size") == {0, 2}
    # same size, different bytes: only the digest notices
    good = (root / "frames" / "000002.arrow").read_bytes()
    (root / "frames" / "000002.arrow").write_bytes(bytes(len(good)))
    assert w.finished_frames() == {0}
    entries = w.finalize()
    assert [e.index for e in entries] == [0]
    assert [f.index for f in Scene.open(root).frames] == [0]
    # incremental: add frame 5 and publish
    w.write_frame(5, T0 + 5 * DT, ego_pose(5), points_table(frame_xyz(5)))
    w.finalize()
    assert [f.index for f in Scene.open(root).frames] == [0, 5]
    assert not list(root.rglob("*.tmp"))


def test_writer_refuses_a_different_header(tmp_path):
    root = write_scene(tmp_path)
    with pytest.raises(ValueError, match="different scene header"):
        SceneWriter(root, scene_id="demo")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(points=pa.table({"x": [1.0]})), "computed on read"),
        (dict(points=pa.table({"xq": pa.array([1], pa.int64())})), "column 'xq' of type int32, found int64"),
        (dict(points=pa.table({"intensity": pa.array([1], pa.int8())})),
         "column 'intensity' of type uint8 or uint16 or float, found int8"),
        (dict(images={"NOPE": b"\xff\xd8\xff"}), "unknown camera"),
        (dict(images={"CAM_FRONT": b"PNG..."}), "not JPEG"),
        (dict(index=-1), "frame index"),
        (dict(lods=[np.array([0, 2, 2])]), "level 1 rows must be strictly increasing"),
        (dict(lods=[np.arange(3), np.array([5, 1])]), "level 2 rows must be strictly increasing"),
        (dict(lods=[np.array([-1, 3])]), r"within \[0, "),
        (dict(lods=[np.array([0, 10**6])]), r"within \[0, "),
        (dict(lods=[np.array([0.0, 1.0])]), "1-D integer array"),
        (dict(lods=[np.zeros((2, 2), int)]), "1-D integer array"),
    ],
)
def test_write_frame_bad_input(tmp_path, kwargs, match):
    w = SceneWriter(tmp_path / "s", scene_id="s", cameras=[camera()])
    args = dict(index=0, timestamp_ns=T0, world_from_ego=SE3.identity(), points=points_table(frame_xyz(0)))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        w.write_frame(**args)


def test_points_table_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        points_table(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="NaN"):
        points_table(np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(ValueError, match="intensity must have shape"):
        points_table(np.zeros((3, 3)), intensity=np.zeros(2))
    with pytest.raises(ValueError, match="int32"):
        points_table(np.array([[0.0, 0, 0], [1e7, 0, 0]]), quantum_m=1e-3)
    empty = points_table(np.zeros((0, 3)))
    assert empty.num_rows == 0 and empty.schema.names == ["xq", "yq", "zq"]
    assert with_xyz(empty).schema.names == ["x", "y", "z", "xq", "yq", "zq"] and positions(empty).shape == (0, 3)


def _edit_manifest(root, fn):
    doc = json.loads((root / MANIFEST).read_text())
    fn(doc)
    (root / MANIFEST).write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda d: d.update(format="other"), "format"),
        (lambda d: d.update(version=99), "version"),
        (lambda d: d["frames"][0]["points"].update(file="../../etc/passwd"), "relative path inside"),
        (lambda d: d["frames"][0]["points"].update(file="/etc/passwd"), "relative path inside"),
        (lambda d: d["frames"][1].update(timestamp_ns=0), "strictly increasing"),
        (lambda d: d["frames"][0].update(world_from_ego=[1, 0, 0]), "7 numbers"),
        (lambda d: d["sensors"]["cameras"][0].update(name="../x"), "camera name"),
        (lambda d: d.pop("origin"), "scene header"),
    ],
)
def test_open_rejects_bad_manifests(tmp_path, edit, match):
    root = write_scene(tmp_path)
    _edit_manifest(root, edit)
    with pytest.raises(FormatError, match=match):
        Scene.open(root)


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("version, what", [(1, "SHA-256 digests"), (2, "float32 x y z columns")])
def test_older_versions_are_refused_with_advice(tmp_path, resume, version, what):
    """Version 1 recorded SHA-256 digests, version 2 float32 x y z beside the quantised
    positions: neither opened nor resumed, the error says what it is and what to do."""
    root = write_scene(tmp_path)
    _edit_manifest(root, lambda d: d.update(version=version))
    with pytest.raises(FormatError, match=rf"scene\.json.*version.*found {version} \(a scene of an older Fathom, "
                                          rf"with {what}.*\): prepare the log again into a new directory"):
        if resume:
            SceneWriter(root, scene_id="demo", cameras=[camera()])
        else:
            Scene.open(root)


def test_manifest_digest_is_the_manifest_bytes(tmp_path):
    root = write_scene(tmp_path)
    assert Scene.open(root).manifest_digest == xxhash.xxh3_128((root / MANIFEST).read_bytes()).hexdigest()
    doc = json.loads((root / MANIFEST).read_text())
    assert doc["version"] == 3 and set(doc["frames"][0]["points"]) == {"file", "bytes", "xxh3_128"}


def test_symlink_out_of_the_scene_is_refused(tmp_path):
    root = write_scene(tmp_path)
    outside = tmp_path / "secret.arrow"
    outside.write_bytes(b"x")
    (root / "frames" / "evil.arrow").symlink_to(outside)
    _edit_manifest(root, lambda d: d["frames"][0]["points"].update(file="frames/evil.arrow"))
    with pytest.raises(FormatError, match="inside the scene directory"):
        Scene.open(root)


def test_truncated_or_corrupt_point_file(tmp_path):
    root = write_scene(tmp_path)
    scene = Scene.open(root)
    path = root / "frames" / "000000.arrow"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FormatError, match="bytes as the manifest records"):
        scene.points(0)
    path.write_bytes(b"\0" * len(data))
    with pytest.raises(FormatError, match="Arrow IPC file"):
        scene.points(0)
    with pytest.raises(IndexError):
        scene.points(1, lod=2)
    # a level of detail whose rows file is damaged (same size, so only the rows check sees it)
    rows = root / scene.frame(1).lods[0].file
    good = rows.read_bytes()
    for bad in (np.r_[np.arange(len(good) // 4 - 1), 0], np.full(len(good) // 4, scene.frame(1).n_points)):
        rows.write_bytes(bad.astype("<u4").tobytes())
        with pytest.raises(FormatError, match="strictly increasing uint32 rows"):
            scene.points(1, lod=1)
    rows.write_bytes(good[:-4])
    with pytest.raises(FormatError, match="bytes as the manifest records"):
        scene.points(1, lod=1)
    with pytest.raises(KeyError):
        scene.points(7)


def test_quantisation_kernel_equals_numpy(tmp_path):
    rng = np.random.default_rng(5)
    xyz = rng.uniform(-300, 300, (3000, 3)) + np.array([1e4, -2e3, 5.0])
    t = points_table(xyz, quantum_m=2e-3)
    offset = np.floor(xyz.min(axis=0) / 2e-3) * 2e-3
    q = np.rint((xyz - offset) / 2e-3).astype(np.int32)
    np.testing.assert_array_equal(quantisation(t.schema)[1], offset)
    read = with_xyz(t)
    for i, c in enumerate("xyz"):
        np.testing.assert_array_equal(t[c + "q"].to_numpy(), q[:, i])
        np.testing.assert_array_equal(read[c].to_numpy(), (offset[i] + q[:, i] * 2e-3).astype(np.float32))
    np.testing.assert_array_equal(positions(t), offset + q * 2e-3)
    with pytest.raises(ValueError, match="NaN"):
        points_table(np.array([[0.0, 0.0, np.inf]]))


@pytest.mark.parametrize("column, values, kind", [
    ("ring", [0, 7, 255], pa.uint8()),  # 256 rings: 0..255
    ("ring", [0, 7, 256], pa.uint16()),
    ("camera_mask", [0, 1, 2**8 - 1], pa.uint8()),  # 8 cameras: bits 0..7
    ("camera_mask", [0, 1, 2**9 - 1], pa.uint16()),  # 9 cameras
    ("camera_mask", [0, 1, 2**16 - 1], pa.uint16()),
    ("camera_mask", [0, 1, 2**16], pa.uint32()),
    ("camera_mask", [0, 1, 2**31 + 5], pa.uint32()),
    ("box_id", [-1, 0, 127], pa.int8()),  # 128 boxes: ids 0..127
    ("box_id", [-1, 0, 128], pa.int16()),  # 129 boxes
    ("box_id", [-1, 0, 2**15 - 1], pa.int16()),
    ("box_id", [-1, 0, 2**15], pa.int32()),
    ("intensity", [0.0, 17.0, 255.0], pa.uint8()),  # an 8-bit sensor's values as float32 (Velodyne)
    ("intensity", [0, 17, 255], pa.uint8()),
    ("intensity", [0.0, 17.0, 256.0], pa.uint16()),
    ("intensity", [0, 17, 65535], pa.uint16()),
    ("intensity", [0.0, 17.0, 65536.0], pa.float32()),
    ("intensity", [0.0, 17.5, 3.0], pa.float32()),  # fractional (a PCD's F4 values)
    ("intensity", [-1.0, 17.0, 3.0], pa.float32()),
    ("intensity", [0.0, np.nan, 3.0], pa.float32()),
])
def test_columns_take_the_narrowest_type_of_their_values_and_read_back_equal(tmp_path, column, values, kind):
    """Each narrowable column at its boundaries, through a written and reopened scene: the
    type the file records, the values read back equal to the input (NaN included)."""
    values = np.array(values)
    xyz = np.arange(9.0).reshape(3, 3)
    table = points_table(xyz, **{column: values}, **({"box_id": np.array([-1, 0, 0])} if column != "box_id" else {}))
    assert table.schema.field(column).type == kind
    w = SceneWriter(tmp_path / "s", scene_id="s")
    n_boxes = int(max(values.max() + 1, 1)) if column == "box_id" else 1
    w.write_frame(0, T0, ego_pose(0), table, [np.array([0, 2])], boxes=_boxes(T0, n_boxes))
    w.finalize()
    scene = Scene.open(tmp_path / "s")
    for lod, rows in ((0, [0, 1, 2]), (1, [0, 2])):
        read = scene.points(0, lod)
        assert read.schema.field(column).type == kind
        np.testing.assert_array_equal(read[column].to_numpy(), values[rows])


def test_narrowing_refuses_what_no_type_holds():
    xyz = np.zeros((3, 3))
    with pytest.raises(ValueError, match=r"camera_mask values outside uint32 range \[0, 4294967295\]: found \[-1, 0\]"):
        points_table(xyz, camera_mask=np.array([0, -1, 0]))
    with pytest.raises(ValueError, match="box_id values outside int32"):
        points_table(xyz, box_id=np.array([0, 2**31, 0]))
    with pytest.raises(ValueError, match="ring values outside uint16"):
        points_table(xyz, ring=np.array([0, 2**16, 0]))
    with pytest.raises(ValueError, match="rgb values outside uint8"):
        points_table(xyz, rgb=np.full((3, 3), 256))
    with pytest.raises(ValueError, match="box_id must have shape"):
        points_table(xyz, box_id=np.zeros(2, np.int32))
    with pytest.raises(ValueError, match="intensity must be numeric"):
        points_table(xyz, intensity=np.array(["a", "b", "c"]))


def test_time_offset_is_stored_as_int32_from_any_integer_dtype():
    xyz = np.zeros((4, 3))
    limit = 2**31 - 1
    for dtype in (np.int64, np.int32, np.uint32, np.int16, np.uint64):
        info = np.iinfo(dtype)
        values = np.array([0, 1, max(info.min, -limit - 1), min(info.max, limit)], dtype)
        t = points_table(xyz, time_offset_ns=values)
        assert t.schema.field("time_offset_ns").type == pa.int32()
        np.testing.assert_array_equal(t["time_offset_ns"].to_numpy(), values.astype(np.int64))
    for bad in (np.array([0, 0, 0, 2**31]), np.array([0, 0, 0, -(2**31) - 1]), np.array([0, 0, 0, 2**32], np.uint64)):
        with pytest.raises(ValueError, match=r"time_offset_ns values outside int32 range \[-2147483648, 2147483647\]"):
            points_table(xyz, time_offset_ns=bad)
    with pytest.raises(ValueError, match="time_offset_ns must have an integer dtype"):
        points_table(xyz, time_offset_ns=np.zeros(4))


def _boxes(t_ns: int, n: int) -> FrameBoxes:
    rng = np.random.default_rng(n)
    q = from_yaw(rng.uniform(-3, 3, n))
    return FrameBoxes(t_ns, tuple(f"trk-{k}" for k in range(n)), ("car",) * n, rng.uniform(1, 5, (n, 3)),
                      rng.uniform(-50, 50, (n, 3)), q, rng.uniform(-50, 50, (n, 3)), q[::-1])


def test_boxes_file_round_trip_and_box_id_range(tmp_path):
    w = SceneWriter(tmp_path / "s", scene_id="s", cameras=[camera()])
    xyz = frame_xyz(0)
    boxes = _boxes(T0, 3)
    ids = np.arange(len(xyz)) % 4 - 1  # -1, 0, 1, 2
    w.write_frame(0, T0, ego_pose(0), points_table(xyz, box_id=ids), boxes=boxes)
    w.write_frame(1, T0 + DT, ego_pose(1), points_table(frame_xyz(1)))
    w.finalize()
    scene = Scene.open(tmp_path / "s")
    got = scene.boxes(0)
    assert got.timestamp_ns == T0 and got.track_ids == boxes.track_ids and got.categories == boxes.categories
    for name in ("sizes", "world_centers", "world_rotations", "ego_centers", "ego_rotations"):
        np.testing.assert_array_equal(getattr(got, name), getattr(boxes, name))  # exact: JSON keeps float64
    assert scene.boxes(1) is None
    assert (tmp_path / "s" / scene.frame(0).boxes.file).name == "000000.boxes.json"
    for bad, n_boxes in ((np.full(len(xyz), 3), 3), (np.full(len(xyz), -2), 3), (np.zeros(len(xyz), np.int32), 0)):
        with pytest.raises(ValueError, match="box_id must be in"):
            w.write_frame(2, T0, ego_pose(0), points_table(xyz, box_id=bad),
                          boxes=_boxes(T0, n_boxes) if n_boxes else None)
    # a corrupted boxes file unfinishes the frame like any other of its files
    path = tmp_path / "s" / scene.frame(0).boxes.file
    path.write_bytes(path.read_bytes().replace(b"trk-0", b"trk-9"))
    assert w.finished_frames() == {1}
    with pytest.raises(ValueError, match="sizes must be finite"):
        FrameBoxes(T0, ("a",), ("car",), np.full((1, 3), np.nan), np.zeros((1, 3)), np.eye(4)[:1], np.zeros((1, 3)),
                   np.eye(4)[:1])


def test_boxes_json_round_trips_every_float_bit_exactly():
    awkward = np.array([0.1 + 0.2, 1e-300, 5e-324, -0.0, 2.0**53 + 2, 1 / 3, -123456.789e10, 1e22])
    n = len(awkward)
    rng = np.random.default_rng(9)
    cols = [np.roll(awkward, k)[:, None] * rng.uniform(0.5, 2, (n, w)) for k, w in enumerate((3, 3, 4, 3, 4))]
    cols[0][:, 0] = awkward  # the awkward values themselves, unscaled
    boxes = FrameBoxes(T0, tuple(f"t\"{k}é" for k in range(n)), ("car",) * n, *cols)
    doc = boxes.to_json()
    # the documented layout, built here from plain Python floats
    for k, b in enumerate(doc["boxes"]):
        assert b == {"track_id": boxes.track_ids[k], "category": "car", "size": [float(v) for v in cols[0][k]],
                     "world": {"center": [float(v) for v in cols[1][k]], "rotation": [float(v) for v in cols[2][k]]},
                     "ego": {"center": [float(v) for v in cols[3][k]], "rotation": [float(v) for v in cols[4][k]]}}
    # random bit patterns: every finite float64 comes back bit for bit from the text written
    bits = np.random.default_rng(10).integers(0, 2**63, (300, 17), dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    floats = bits.view(np.float64)
    floats[~np.isfinite(floats)] = 1.5
    random = FrameBoxes(T0, tuple(map(str, range(300))), ("x",) * 300, floats[:, :3], floats[:, 3:6], floats[:, 6:10],
                        floats[:, 10:13], floats[:, 13:])

    def strict(name):
        raise AssertionError(f"not strict JSON: {name}")

    for original in (boxes, random):
        back = FrameBoxes.from_json(json.loads(original.to_json_text(), parse_constant=strict))
        assert back.track_ids == original.track_ids and back.timestamp_ns == T0
        for name in ("sizes", "world_centers", "world_rotations", "ego_centers", "ego_rotations"):
            a, b = getattr(back, name), getattr(original, name)
            np.testing.assert_array_equal(a.view(np.int64), b.view(np.int64))  # bits, so -0.0 counts
    empty = FrameBoxes(T0, (), (), *(np.zeros((0, w)) for w in (3, 3, 4, 3, 4)))
    assert json.loads(empty.to_json_text()) == {"timestamp_ns": T0, "boxes": []}
    assert len(FrameBoxes.from_json(empty.to_json())) == 0


def test_recorded_digests_are_the_files_and_finalize_trusts_known_entries(tmp_path):
    w = SceneWriter(tmp_path / "s", scene_id="s", cameras=[camera()])
    entries = {i: w.write_frame(i, T0 + i * DT, ego_pose(i), points_table(frame_xyz(i)),
                                [np.arange(0, len(frame_xyz(i)), 3)], images={"CAM_FRONT": jpeg(i)}) for i in range(3)}
    for e in entries.values():
        for f in e.files():
            assert xxhash.xxh3_128((tmp_path / "s" / f.file).read_bytes()).hexdigest() == f.xxh3_128
            assert len(f.xxh3_128) == 32
    # the point files were streamed into their temporaries: the bytes of an in-memory
    # serialisation; a level of detail is its rows as little-endian uint32
    for i, e in entries.items():
        sink = pa.BufferOutputStream()
        write_arrow_file(points_table(frame_xyz(i)), sink)
        assert (tmp_path / "s" / e.points.file).read_bytes() == sink.getvalue().to_pybytes()
        rows = np.arange(0, len(frame_xyz(i)), 3)
        assert (tmp_path / "s" / e.lods[0].file).read_bytes() == rows.astype("<u4").tobytes()
    assert w.finished_entries().keys() == {0, 1, 2} and w.finished_entries(skip=[1]).keys() == {0, 2}
    # frame 2's points change behind the writer's back: a verifying finalize drops it, one
    # told the entries (as a job that just wrote them) lists them without reading the files
    path = tmp_path / "s" / entries[2].points.file
    path.write_bytes(bytes(path.stat().st_size))
    assert [e.index for e in w.finalize()] == [0, 1]
    assert [e.index for e in w.finalize(known=entries)] == [0, 1, 2]
    assert [e.index for e in w.finalize(known={0: entries[0]})] == [0, 1]


@pytest.mark.parametrize("durable", [False, True])
@pytest.mark.parametrize("syncfs", [True, False], ids=["syncfs", "fsync-each"])
def test_frames_are_synced_by_finalize_or_as_written(tmp_path, monkeypatch, durable, syncfs):
    """Default: writing a frame fsyncs nothing; finalize makes every file it lists durable
    (one syncfs of the filesystem, or without it an fsync of each file and directory) before
    the manifest. ``durable=True``: each frame's files, its directory and its sidecar are
    fsynced as it is written."""
    import os

    from formats.scene_store import durable as store_files

    w = SceneWriter(tmp_path / "s", scene_id="s", cameras=[camera()], durable=durable)
    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def fake_syncfs(fd):
        synced.append("syncfs " + os.readlink(f"/proc/self/fd/{fd}"))
        return 0

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(store_files, "_SYNCFS", fake_syncfs if syncfs else None)
    entries = {i: w.write_frame(i, T0 + i * DT, ego_pose(i), points_table(frame_xyz(i)),
                                [np.arange(0, len(frame_xyz(i)), 3)], images={"CAM_FRONT": jpeg(i)}) for i in range(2)}
    frames = tmp_path / "s" / "frames"
    if durable:
        # per frame: 3 files (as temporaries), the directory, the sidecar (temporary) and the directory
        assert len(synced) == 2 * 6 and synced.count(str(frames)) == 4
        assert sum(".000000.json." in s for s in synced) == 1
    else:
        assert synced == []
    synced.clear()
    w.finalize(known=entries)
    if syncfs:
        assert synced[0] == f"syncfs {tmp_path / 's'}" and len(synced) == 3
    else:
        listed = {str(tmp_path / "s" / f.file) for e in entries.values() for f in e.files()}
        assert listed <= set(synced) and synced.index(str(frames)) < len(synced) - 2
    # then the manifest (as its temporary) and the scene directory
    assert ".scene.json." in synced[-2] and synced[-1] == str(tmp_path / "s")
    assert [f.index for f in Scene.open(tmp_path / "s").frames] == [0, 1]


def test_failed_serialisation_leaves_no_file_and_no_temporary(tmp_path, monkeypatch):
    from formats.scene_store import durable

    w = SceneWriter(tmp_path / "s", scene_id="s", cameras=[camera()])
    w.write_frame(0, T0, ego_pose(0), points_table(frame_xyz(0)))
    old = (tmp_path / "s" / "frames" / "000000.arrow").read_bytes()

    def broken(table, sink):
        sink.write(b"ARROW1\0\0half a file")
        raise OSError("disk full")

    monkeypatch.setattr(durable, "write_arrow_file", broken)
    with pytest.raises(OSError, match="disk full"):
        w.write_frame(0, T0, ego_pose(0), points_table(frame_xyz(0)))
    assert not list((tmp_path / "s").rglob("*.tmp"))
    assert w.finished_frames() == set()  # the rewrite removed the old sidecar first
    assert (tmp_path / "s" / "frames" / "000000.arrow").read_bytes() == old  # not replaced by half a file


def test_quantisation_rounds_half_to_even_like_numpy_up_to_the_int32_limit():
    """The kernel's (q + 2**52) - 2**52 rounding against np.rint, on exact .5 ties (quantum a
    power of two, so (x - offset) / quantum is exact) and around the int32 limit."""
    quantum = 0.25
    q = np.array([0, 0.5, 1.5, 2.5, 3.5, 4.49999999, 4.5, 1e6 + 0.5, 1e6 + 1.5, 2**31 - 1.5, 2**31 - 1, 2**31 - 1.25])
    xyz = np.column_stack([q * quantum, np.roll(q, 3) * quantum + 8.0, np.roll(q, 5) * quantum - 3.0])
    t = points_table(xyz, quantum_m=quantum)
    scale, offset = quantisation(t.schema)
    np.testing.assert_array_equal(offset, [0.0, 8.0, -3.0])
    expect = np.rint((xyz - offset) / quantum)
    assert expect.max() == 2**31 - 1 and {0.0, 2.0, 4.0, 2**31 - 2} <= set(expect[:, 0])  # ties went to even
    for i, c in enumerate("xyz"):
        np.testing.assert_array_equal(t[c + "q"].to_numpy(), expect[:, i].astype(np.int32))
    # 2**31 - 1 fits; 2**31 - 0.5 rounds (to even) to 2**31, which does not
    edge = points_table(np.array([[0.0, 0, 0], [(2**31 - 1) * quantum, 0, 0]]), quantum_m=quantum)
    assert edge["xq"][1].as_py() == 2**31 - 1
    with pytest.raises(ValueError, match="does not fit int32"):
        points_table(np.array([[0.0, 0, 0], [(2**31 - 0.5) * quantum, 0, 0]]), quantum_m=quantum)
    rng = np.random.default_rng(11)
    for dtype in (np.float64, np.float32):  # random values, odd sizes (partial blocks)
        xyz = (rng.uniform(-70, 70, (1037, 3)) + [3e4, -1e3, 2]).astype(dtype)
        t = points_table(xyz, quantum_m=1e-3)
        _, offset = quantisation(t.schema)
        ref = np.rint((xyz.astype(np.float64) - offset) / 1e-3).astype(np.int32)
        np.testing.assert_array_equal(np.column_stack([t[c + "q"].to_numpy() for c in "xyz"]), ref)
        np.testing.assert_array_equal(np.column_stack([with_xyz(t)[c].to_numpy() for c in "xyz"]),
                                      (offset + ref * 1e-3).astype(np.float32))


def test_take_rows_equals_arrow_take_and_checks_rows():
    rng = np.random.default_rng(4)
    n = 700
    xyz = rng.uniform(-10, 10, (n, 3))
    stored = points_table(xyz, intensity=rng.random(n, dtype=np.float32), rgb=rng.integers(0, 256, (n, 3)),
                          time_offset_ns=rng.integers(-(10**8), 10**8, n), sensor_id=rng.integers(0, 3, n),
                          ring=rng.integers(0, 128, n), camera_mask=rng.integers(0, 2**32, n, np.uint64),
                          box_id=rng.integers(-1, 5, n))
    narrow = points_table(xyz, intensity=rng.integers(0, 256, n), ring=rng.integers(0, 128, n),
                          camera_mask=rng.integers(0, 64, n), box_id=rng.integers(-1, 5, n))
    t = with_xyz(stored)
    rows = rng.integers(0, n, 300)
    for table, r in ((t, rows), (pa.concat_tables([t.slice(0, 100), t.slice(100)]), rows),
                     (t.slice(50), rows[rows < n - 50]), (t, np.zeros(0, np.int64)), (stored, rows), (narrow, rows)):
        got = take_rows(table, r)
        assert got.schema == table.schema and got.schema.metadata == table.schema.metadata
        assert got.equals(table.take(pa.array(r, pa.int64())))
    empty = points_table(np.zeros((0, 3)), box_id=np.zeros(0, np.int32))
    assert take_rows(empty, np.zeros(0, np.int64)).equals(empty)
    assert take_rows(t, np.array([n - 1, 0], np.uint32))["x"].to_pylist() == [t["x"][n - 1].as_py(), t["x"][0].as_py()]
    for bad, match in ((np.array([0, n]), r"rows must be in \[0, 700\)"), (np.array([-1]), "rows must be in"),
                       (np.zeros((2, 2), int), "1-D integer"), (np.array([0.0, 1.0]), "1-D integer")):
        with pytest.raises(ValueError, match=match):
            take_rows(t, bad)


def test_point_tables_never_import_pandas(tmp_path):
    """points_table, take_rows and write_frame (with a boxes file) build Arrow arrays from
    buffers: no pandas import (300 ms in each worker process)."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "from engine.se3 import SE3\n"
        "from formats.scene_store import FrameBoxes, SceneWriter, points_table, take_rows, with_xyz\n"
        "t = points_table(np.random.rand(50, 3), intensity=np.ones(50, np.float32), time_offset_ns=np.arange(50),\n"
        "                 rgb=np.zeros((50, 3), np.uint8), box_id=np.full(50, -1))\n"
        "b = FrameBoxes(0, ('a',), ('car',), np.ones((1, 3)), np.zeros((1, 3)), np.eye(4)[:1], np.zeros((1, 3)),\n"
        "               np.eye(4)[:1])\n"
        f"w = SceneWriter({str(tmp_path / 's')!r}, scene_id='s')\n"
        "w.write_frame(0, 0, SE3.identity(), t, [np.arange(0, 50, 5)], boxes=b)\n"
        "from formats.scene_store import Scene\n"
        "w.finalize()\n"
        "scene = Scene.open(w.dir)\n"
        "assert scene.stored_points(0, 1).equals(take_rows(t, np.arange(0, 50, 5)))\n"
        "assert scene.points(0, 1).equals(with_xyz(take_rows(t, np.arange(0, 50, 5))))\n"
        "assert 'pandas' not in sys.modules, 'pandas imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_a_stale_temporary_with_our_name_is_skipped_not_overwritten(tmp_path, monkeypatch):
    """Temporaries are named .NAME.PID-SERIAL.tmp; one left by a dead process with the same
    id is neither reused nor clobbered, and remove_stale_temporaries deletes it."""
    import itertools
    import os

    from formats.scene_store import durable

    monkeypatch.setattr(durable, "_TEMPORARY_SERIAL", itertools.count())
    w = SceneWriter(tmp_path / "s", scene_id="s")
    stale = tmp_path / "s" / "frames" / f".000000.arrow.{os.getpid()}-0.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by a killed writer")
    w.write_frame(0, T0, ego_pose(0), points_table(frame_xyz(0)))
    assert stale.read_bytes() == b"left by a killed writer"
    assert w.finished_frames() == {0} and Scene.open(tmp_path / "s").frames == ()  # not yet finalized
    assert w.remove_stale_temporaries() == [stale] and not list((tmp_path / "s").rglob("*.tmp"))


def _direct_writes(monkeypatch) -> list[bool]:
    """Record, per temporary created, whether it was opened with O_DIRECT."""
    import os

    from formats.scene_store import durable

    opened: list[bool] = []
    real = durable._create_temporary

    def spy(path, flags=0):
        opened.append(bool(flags & os.O_DIRECT))
        return real(path, flags)

    monkeypatch.setattr(durable, "_create_temporary", spy)
    return opened


def _big_table() -> pa.Table:
    """A points table of a few MB (over the direct-I/O threshold), not a block multiple."""
    rng = np.random.default_rng(11)
    n = 60_001
    return points_table(rng.uniform(-50, 50, (n, 3)), intensity=rng.random(n, np.float32),
                        time_offset_ns=rng.integers(-50_000_000, 50_000_000, n))


def _serialised(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    write_arrow_file(table, sink)
    return sink.getvalue().to_pybytes()


def test_points_files_go_to_disk_with_direct_io_and_read_back_equal(tmp_path, monkeypatch):
    """A points file over the threshold is written with O_DIRECT (block-padded, then cut to
    its size): the same bytes and digest as the page-cache path, mode 0666 less the umask."""
    import os

    try:
        os.close(os.open(tmp_path / "probe", os.O_WRONLY | os.O_CREAT | os.O_DIRECT))
    except OSError:
        pytest.skip(f"{tmp_path} is on a filesystem without O_DIRECT")
    table = _big_table()
    w = SceneWriter(tmp_path / "s", scene_id="s")
    opened = _direct_writes(monkeypatch)
    e = w.write_frame(0, T0, ego_pose(0), table, [np.arange(0, table.num_rows, 7)])
    path = tmp_path / "s" / e.points.file
    data = path.read_bytes()
    assert len(data) % 4096 != 0 and data == _serialised(table)
    assert e.points.bytes == len(data) and e.points.xxh3_128 == xxhash.xxh3_128(data).hexdigest()
    assert opened == [True, False, False]  # the rows file and the sidecar: page cache
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    w.finalize()
    assert Scene.open(tmp_path / "s").stored_points(0).equals(table)
    assert not list((tmp_path / "s").rglob("*.tmp"))


@pytest.mark.parametrize("refused_at", ["open", "write"])
def test_direct_io_refused_falls_back_to_the_page_cache(tmp_path, monkeypatch, refused_at):
    """A filesystem without O_DIRECT (EINVAL at open, or at the first write) gets the file
    through the page cache: same bytes, no temporary left behind."""
    import errno
    import os

    from formats.scene_store import durable

    real_open, real_write = os.open, os.write
    direct_fds: set[int] = set()
    refused: list[int] = []

    def fake_open(path, flags, mode=0o777):
        if flags & os.O_DIRECT:
            if refused_at == "open":
                raise OSError(errno.EINVAL, "Invalid argument")
            fd = real_open(path, flags, mode)
            direct_fds.add(fd)
            return fd
        return real_open(path, flags, mode)

    def fake_write(fd, data):
        if fd in direct_fds:
            direct_fds.discard(fd)  # (the number is free for the next open once closed)
            refused.append(fd)
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(durable.os, "open", fake_open)
    monkeypatch.setattr(durable.os, "write", fake_write)
    table = _big_table()
    w = SceneWriter(tmp_path / "s", scene_id="s")
    e = w.write_frame(0, T0, ego_pose(0), table)
    assert (tmp_path / "s" / e.points.file).read_bytes() == _serialised(table)
    assert bool(refused) == (refused_at == "write")
    assert not list((tmp_path / "s").rglob("*.tmp"))


def test_a_failing_direct_write_leaves_nothing_and_raises(tmp_path, monkeypatch):
    """An error other than 'not supported' (a full disk) propagates: no temporary, no sidecar."""
    import errno
    import os

    from formats.scene_store import durable

    real_write = os.write

    def full_disk(fd, data):
        if len(data) > 1 << 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(durable.os, "write", full_disk)
    w = SceneWriter(tmp_path / "s", scene_id="s")
    with pytest.raises(OSError, match="No space left"):
        w.write_frame(0, T0, ego_pose(0), _big_table())
    assert not list((tmp_path / "s").rglob("*.tmp")) and w.finished_frames() == set()
