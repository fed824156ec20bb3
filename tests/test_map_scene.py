"""Scene maps on the simulated rig: moving objects removed with labels and without (measured
against the simulator's object ids), the map built, read back as octree and COPC, kept when
current, resumed when interrupted; the sonar layer of a survey."""

from __future__ import annotations

import json

import laspy
import numpy as np
import pytest

from engine.map_dynamic import DynamicOptions
from engine.sim.road import FRAME_PERIOD_NS, simulate_drive
from formats.copc import MIN_NODE_POINTS, chunk_holders
from formats.octree import OctreeLayer
from formats.octree_build import OctreeBuilder
from formats.raw_log import read_log, write_labels
from formats.scene_store import Scene
from server.prepare import PrepareOptions, prepare
from server.scene_map import MAP_DIR, MAP_MANIFEST, MapFrames, MapOptions, build_scene_map
from server.simulate import drive_labels, write_drive_log, write_harbor_log


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A 4 s drive of the test rig prepared without cameras, labelled with the true tracks at
    every frame (10 Hz keyframes: interpolating them reproduces the simulated motion exactly),
    and per frame whether each stored point belongs to a moving object (an actor)."""
    root = tmp_path_factory.mktemp("rig")
    drive = simulate_drive(seed=3, duration_s=4.0, preset="test")
    write_drive_log(root / "log", drive, cameras=False)
    write_labels(root / "log", drive_labels(drive, period_ns=FRAME_PERIOD_NS))
    summary = prepare(root / "log", root / "scene", options=PrepareOptions(colorize=False, visibility=False, map=False),
                      workers=2)
    assert not summary.failed
    log = read_log(root / "log")
    actors = drive.world.actor_ids
    truth = []
    for f in range(len(drive.frame_times_ns)):  # prepare stores each frame's sweeps in the log's LiDAR order
        oid = np.concatenate([drive.sweeps[lidar.name][f].extra["object_id"] for lidar in log.lidars])
        truth.append(np.isin(oid, actors))
    return root, drive, truth


def removal(frames: MapFrames, truth: list[np.ndarray], dynamic=None) -> tuple[float, float, int]:
    """(moving points removed / moving points, static points removed / static points, moving
    points) over every frame, among the points outside the ego box: removed by the labels'
    moving boxes, or by ``dynamic(frame)`` (a mask) when given."""
    moving = removed_moving = static = removed_static = 0
    for entry, is_moving in zip(frames.scene.frames, truth):
        f = frames.read(entry.index, "lidar")
        assert len(f["q"]) == len(is_moving)
        kept = ~f["ego"]
        gone = f["moving"] if dynamic is None else dynamic(f) & kept
        moving += int(np.count_nonzero(is_moving & kept))
        static += int(np.count_nonzero(~is_moving & kept))
        removed_moving += int(np.count_nonzero(is_moving & gone))
        removed_static += int(np.count_nonzero(~is_moving & gone))
    return removed_moving / moving, removed_static / static, moving


def test_labels_remove_moving_objects(rig):
    root, drive, truth = rig
    scene = Scene.open(root / "scene")
    frames = MapFrames(scene, read_log(root / "log").world_from_ego(), MapOptions(), set())
    assert frames.mode == "labels"
    assert set(frames.moving.track_ids) == {str(a) for a in drive.world.actor_ids}  # not the poles
    recall, static, moving = removal(frames, truth)
    assert moving > 10_000
    assert recall >= 0.99 and static <= 0.01, (recall, static)


def test_dynamic_filter_without_labels_removes_most_traffic(rig):
    root, drive, truth = rig
    scene = Scene.open(root / "scene")
    frames = MapFrames(scene, read_log(root / "log").world_from_ego(), MapOptions(moving="filter"), set())
    assert frames.mode == "filter" and not frames.moving
    flt = frames.classify_dynamic(DynamicOptions())
    recall, static, _ = removal(frames, truth, lambda f: flt.dynamic(f["xyz"]))
    print(f"dynamic filter on the rig: {recall:.3f} of moving points removed, {static:.5f} of static points")
    assert recall >= 0.75 and static <= 0.01, (recall, static)  # measured: 0.81, 0.0064


def test_map_build_copc_and_rerun(rig, tmp_path, monkeypatch):
    root, drive, _ = rig
    scene_dir = root / "scene"
    calls = []
    real = OctreeBuilder._process_chunk

    def crash(self, *args):  # the first build dies in its first chunk
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(self, *args)

    monkeypatch.setattr(OctreeBuilder, "_process_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        build_scene_map(scene_dir)
    assert not (scene_dir / MAP_DIR / MAP_MANIFEST).exists()
    summary = build_scene_map(scene_dir, track=read_log(root / "log").world_from_ego())
    assert len(calls) == 2 and not summary.skipped
    doc = json.loads((scene_dir / MAP_DIR / MAP_MANIFEST).read_bytes())
    lidar = doc["layers"]["lidar"]
    assert doc["moving"] == "labels" and set(doc["layers"]) == {"lidar"}
    assert lidar["removed"]["moving"] > 10_000 and lidar["removed"]["dynamic"] == 0
    layer = OctreeLayer.open(scene_dir / MAP_DIR / "lidar")
    assert layer.metadata["points"] == lidar["points"] < lidar["input_points"]  # voxels merged
    pts = layer.points()
    assert pts["count"].sum() == lidar["input_points"]
    assert pts["first"].min() == 0 and pts["last"].max() == len(drive.frame_times_ns) - 1
    with laspy.CopcReader.open(scene_dir / MAP_DIR / lidar["copc"]["file"]) as reader:
        copc = reader.query()
        assert reader.header.point_count == lidar["points"]
        root_nodes = reader.query(level=0)
    order = np.lexsort((pts["z"], pts["y"], pts["x"]))
    corder = np.lexsort((copc.Z, copc.Y, copc.X))
    for mine, theirs in (("x", "X"), ("y", "Y"), ("z", "Z"), ("intensity16", "intensity"), ("count", "count"),
                         ("first", "first_frame"), ("last", "last_frame")):
        assert np.array_equal(np.asarray(pts[mine])[order], np.asarray(copc[theirs])[corder]), mine
    holder = chunk_holders(layer.nodes, MIN_NODE_POINTS)  # the root's chunk: its points and the small leaves it took
    assert len(root_nodes) == layer.nodes["point_count"][holder == np.flatnonzero(layer.nodes["level"] == 0)[0]].sum()
    assert np.allclose(copc.x[corder], layer.metadata["origin_m"][0] + pts["x"][order] * 1e-3)
    assert build_scene_map(scene_dir).skipped  # current: nothing to do


def test_sonar_soundings_are_their_own_layer(tmp_path):
    log_dir, _ = write_harbor_log(tmp_path / "log", duration_s=4.0, beams=64)
    assert not prepare(log_dir, tmp_path / "scene", options=PrepareOptions(colorize=False, visibility=False)).failed
    assert not (tmp_path / "scene" / MAP_DIR).exists()  # a sonar-only log: no map unless asked
    sonar = {lidar.name for lidar in read_log(log_dir).lidars if lidar.format == "kmall"}
    summary = build_scene_map(tmp_path / "scene", sonar_sensors=sonar, options=MapOptions(copc=False))
    assert set(summary.layers) == {"sonar"}
    layer = summary.layers["sonar"]
    assert layer["removed"] == {"ego": 0, "moving": 0, "dynamic": 0} and layer["copc"] is None
    meta = OctreeLayer.open(tmp_path / "scene" / MAP_DIR / "sonar").metadata
    assert meta["input_points"] == sum(f.n_points for f in Scene.open(tmp_path / "scene").frames) > 400
    assert 0.9 * meta["input_points"] < meta["points"] <= meta["input_points"]  # 2 cm voxels: few merge
    assert meta["intensity"]["source_range"] is not None  # reflectivity in dB, mapped to 16 bits


def test_voxel_must_be_whole_quanta(rig):
    with pytest.raises(ValueError, match="multiple"):
        build_scene_map(rig[0] / "scene", options=MapOptions(voxel_m=0.0205))
    with pytest.raises(ValueError, match="above 65.536 m"):
        build_scene_map(rig[0] / "scene", options=MapOptions(voxel_m=70.0))


def test_prepare_builds_the_map_unless_told_not_to(tmp_path, capsys):
    from server.cli import main

    drive = simulate_drive(seed=1, duration_s=0.5, preset="test")
    write_drive_log(tmp_path / "log", drive, cameras=False)
    assert main(["prepare", str(tmp_path / "log"), "--out", str(tmp_path / "a"), "--workers", "1",
                 "--map-voxel", "0.05", "--no-copc"]) == 0
    out = capsys.readouterr().out
    assert "map " in out and (tmp_path / "a" / MAP_DIR / MAP_MANIFEST).is_file()
    doc = json.loads((tmp_path / "a" / MAP_DIR / MAP_MANIFEST).read_bytes())
    assert doc["options"]["voxel_m"] == 0.05 and doc["layers"]["lidar"]["copc"] is None
    assert main(["prepare", str(tmp_path / "log"), "--out", str(tmp_path / "b"), "--workers", "1", "--no-map"]) == 0
    assert not (tmp_path / "b" / MAP_DIR).exists()
    assert main(["map", str(tmp_path / "b"), "--map-moving", "off"]) == 0  # later, from the scene alone
    doc = json.loads((tmp_path / "b" / MAP_DIR / MAP_MANIFEST).read_bytes())
    assert doc["moving"] == "off" and doc["layers"]["lidar"]["removed"]["moving"] == 0
    assert (tmp_path / "b" / MAP_DIR / "lidar.copc.laz").is_file()
    assert main(["map", str(tmp_path / "b"), "--map-voxel", "0.0205"]) == 2  # refused, named
    assert "multiple" in capsys.readouterr().err
