"""Exports follow each track's interpolation mode, as the cuboids route does: a car on a
constant-turn arc (10 m/s, 0.3 rad/s) keyed once a second and marked ``ctrv`` exports the
engine's CTRV boxes at the frame times (on the arc: a third of a metre off the chord mid-way),
while its linear twin (the same keyframes, no mode) exports the linear boxes as before."""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import replace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine import quaternion as quat
from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.conventions import camera_boxes_from_kitti
from formats.export_nuscenes import token
from formats.export_sfs import scene_to_sfs
from formats.import_sfs import decode_sfs
from formats.scene_store import Scene
from formats.sfs_cuboids import cuboids_from_sfs_values, cuboids_to_sfs_values
from server.boxes import interpolation_modes, tracks_from_document
from server.cli import main
from server.config import Settings
from server.main import create_app
from tests.server_scene import DT, T0, TOKENS, write_scene

V = {"Authorization": "Bearer viewer-token-1"}
A = {"Authorization": "Bearer annotator-token-1"}
SPEED, RATE, START, HEADING = 10.0, 0.3, np.array([18.0, 1.0, 0.8]), 0.25
KEYS = T0 + np.arange(3) * 10 * DT  # 1 s apart; the scene's 21 frames are 0.1 s apart
MODES = ["ctrv", "linear"]  # the turning track, its linear twin
SAGITTA = SPEED / RATE * (1 - np.cos(RATE * 0.5))  # mid-way between keys: arc to chord, 0.374 m


def truth(t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres ``(T, 3)`` and yaws ``(T,)`` of the car on its arc."""
    yaw = HEADING + RATE * (np.asarray(t_ns) - T0) * 1e-9
    r = SPEED / RATE
    c = START + np.column_stack([r * (np.sin(yaw) - np.sin(HEADING)), r * (np.cos(HEADING) - np.cos(yaw)),
                                 np.zeros(len(yaw))])
    return c, yaw


def _track(track_id: str, **extra) -> dict:
    c, yaw = truth(KEYS)
    return {"id": track_id, "category": "car", "attributes": {}, **extra, "keyframes": [
        {"timestamp_ns": int(t), "center": c[k].tolist(), "size": [4.5, 1.9, 1.6],
         "rotation": quat.from_yaw(yaw[k]).tolist()} for k, t in enumerate(KEYS)]}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("scenes")
    write_scene(root, "turn", n_frames=21)
    app = create_app(Settings(scenes_dir=root, tokens=json.dumps(TOKENS)))
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.put("/v1/scenes/turn/labels", headers={**A, "If-Match": "*"},
                       json={"tracks": [_track("turn-1", interpolation="ctrv"), _track("line-2")]})
        assert r.status_code == 200, r.text
        doc = client.get("/v1/scenes/turn/labels", headers=V).json()
        assert doc["tracks"][0]["interpolation"] == "ctrv" and interpolation_modes(doc) == MODES
        scene = Scene.open(root / "turn")
        times = np.array([f.timestamp_ns for f in scene.frames], np.int64)
        tracks = tracks_from_document(doc)
        yield client, scene, tracks, times, interpolate_tracks(tracks, times, interpolation=MODES)
    assert app.state.fathom.server_errors == 0


def test_the_reference_boxes_are_the_arc_and_the_chord(env):
    *_, times, boxes = env
    c, yaw = truth(times)
    assert boxes.valid.all()
    np.testing.assert_allclose(boxes.centers[:, 0], c, atol=1e-9)  # ctrv: on the arc
    assert np.abs(np.angle(np.exp(1j * (quat.to_euler_zyx(boxes.rotations[:, 0])[:, 2] - yaw)))).max() < 1e-9
    off = np.linalg.norm(boxes.centers[:, 0] - boxes.centers[:, 1], axis=1)
    np.testing.assert_allclose(off[[5, 15]], SAGITTA, rtol=1e-6)  # linear cuts the corner mid-way
    assert off[[0, 10, 20]].max() < 1e-9 and SAGITTA > 0.37


def _nuscenes_annotations(tables: dict, scene_id: str, track_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(timestamps µs, translations, rotations)`` of a track's sample annotations, by time."""
    stamp = {s["token"]: s["timestamp"] for s in tables["sample"]}
    anns = sorted((stamp[a["sample_token"]], a["translation"], a["rotation"]) for a in tables["sample_annotation"]
                  if a["instance_token"] == token("instance", scene_id, track_id))
    return tuple(np.array(x) for x in zip(*anns))


def test_nuscenes_export_and_command_follow_each_tracks_mode(env, tmp_path):
    client, scene, tracks, times, boxes = env
    r = client.get("/v1/scenes/turn/export/nuscenes", headers=V)
    assert r.status_code == 200
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        tables = {n.split("/")[1][:-5]: json.loads(z.read(n)) for n in z.namelist() if n.startswith("v1.0-fathom/")}
    for n, t in enumerate(tracks):
        us, centers, rotations = _nuscenes_annotations(tables, "turn", t.track_id)
        np.testing.assert_array_equal(us, (times + 500) // 1000)
        np.testing.assert_array_equal(centers, boxes.centers[:, n])
        np.testing.assert_array_equal(rotations, boxes.rotations[:, n])
    # the command line export reads the same label store and writes the same annotations
    assert main(["export", "nuscenes", str(scene.dir), "--out", str(tmp_path / "dr"), "--tables-only"]) == 0
    on_disk = json.loads((tmp_path / "dr" / "v1.0-fathom" / "sample_annotation.json").read_text())
    assert on_disk == tables["sample_annotation"]


def test_kitti_export_follows_each_tracks_mode(env):
    client, scene, tracks, times, boxes = env
    r = client.get("/v1/scenes/turn/export/kitti", headers=V)
    assert r.status_code == 200
    cam = scene.cameras["CAM_FRONT"]
    seen = {0: [], 1: []}
    for f in (line.split() for line in r.text.splitlines()):
        i, n = int(f[0]), int(f[1])  # ids are not decimal integers: numbered in stored order
        c, s, q = camera_boxes_from_kitti(*[float(x) for x in f[10:17]])
        theirs = (scene.frames[i].world_from_ego @ cam.ego_from_camera).apply(box_corners(c[0], s[0], q[0]))
        ours = box_corners(boxes.centers[i, n], boxes.sizes[i, n], boxes.rotations[i, n])
        d = np.linalg.norm(ours[:, None] - theirs[None], axis=-1)
        assert d.min(axis=0).max() < 1e-5 and d.min(axis=1).max() < 1e-5  # 6-decimal text
        seen[n].append(i)
    assert seen[0] == seen[1] and {5, 15} <= set(seen[0]) and len(seen[0]) >= 15


def _sfs_paths(content: bytes) -> tuple[dict[str, dict], int]:
    doc = decode_sfs(content)
    return {a["id"]: a for a in doc["annotations"]}, doc["time_offset"]


def test_sfs_export_samples_a_motion_aware_track_at_the_frames(env, tmp_path):
    from scale_sensor_fusion_io.loaders.sfs_loader import SFSLoader
    from scale_sensor_fusion_io.validation import parse_and_validate_scene

    client, scene, tracks, times, boxes = env
    r = client.get("/v1/scenes/turn/export/sfs?points=false", headers=V)
    assert r.status_code == 200
    (tmp_path / "turn.sfs").write_bytes(r.content)
    assert parse_and_validate_scene(SFSLoader(str(tmp_path / "turn.sfs")).load_unsafe()).success
    paths, offset_us = _sfs_paths(r.content)
    # the ctrv track: a box at every frame time (its keyframes among them), the engine's ctrv boxes
    turn = paths["turn-1"]["path"]
    np.testing.assert_array_equal(turn["timestamps"], (times + 500) // 1000 - offset_us)
    c, s, q = cuboids_from_sfs_values(turn["values"])
    np.testing.assert_allclose(c, boxes.centers[:, 0], atol=1e-9)
    np.testing.assert_allclose(s, boxes.sizes[:, 0], atol=1e-12)
    assert np.degrees(quat.angle_between(q, boxes.rotations[:, 0])).max() < 1e-6
    # the linear track: its keyframes, exactly as the SFS values of its keyframes
    line = paths["line-2"]["path"]
    t = tracks[1]
    np.testing.assert_array_equal(line["timestamps"], (t.timestamps_ns + 500) // 1000 - offset_us)
    assert line["values"] == cuboids_to_sfs_values(t.centers, t.sizes, t.rotations).tolist()


def test_sfs_keeps_keyframe_attributes_at_their_keyframes_and_linear_tracks_as_before(env):
    _, scene, tracks, times, boxes = env
    turn = replace(tracks[0], keyframe_attributes=[{}, {"occluded": True}, {}])
    frames = [(int(t), np.zeros((0, 3))) for t in times]
    pose = scene.world_from_ego()
    doc = scene_to_sfs([turn, tracks[1]], pose, frames, interpolation=MODES)
    attrs = doc["annotations"][0]["attributes"]
    assert attrs == [{"name": "occluded", "timestamps": [(int(KEYS[1]) + 500) // 1000 - doc["time_offset"]],
                      "values": [True], "static": False}]
    assert len(doc["annotations"][0]["path"]["timestamps"]) == len(times)
    assert doc["annotations"][1] == scene_to_sfs([turn, tracks[1]], pose, frames)["annotations"][1]
    with pytest.raises(ValueError, match="one mode per track"):
        scene_to_sfs([turn, tracks[1]], pose, frames, interpolation=["ctrv"])


def test_camera_projection_draws_each_track_in_its_own_mode(env):
    from engine.cuboid_projection import project_cuboids

    client, scene, tracks, times, _ = env
    entry = scene.frames[5]  # mid-way between the first two keyframes
    cam = scene.cameras["CAM_FRONT"]
    t_cam = entry.image_timestamps_ns["CAM_FRONT"]
    r = client.get("/v1/scenes/turn/frames/5/projection/CAM_FRONT", headers=V)
    assert r.status_code == 200, r.text
    drawn = {b["track_id"]: b["paths"] for b in r.json()["boxes"]}
    assert set(drawn) == {"turn-1", "line-2"}
    for mode in set(MODES):  # the ctrv track as ctrv, its twin as linear, and not the other way round
        at = interpolate_tracks(tracks, np.array([t_cam], np.int64), "none", interpolation=mode)
        cp = project_cuboids(at.centers[0], at.sizes[0], at.rotations[0], [cam], world_from_ego=scene.world_from_ego(),
                             camera_times_ns=[t_cam], extrapolate="hold")
        n = MODES.index(mode)
        expected = [p.round(2).tolist() for p in cp.paths(n, 0)]
        assert drawn[tracks[n].track_id] == expected
        other = [p.round(2).tolist() for p in cp.paths(1 - n, 0)]
        assert drawn[tracks[1 - n].track_id] != other
