"""Video cameras end to end: a raw log whose cameras are MP4 (PTS rule), MKV (sidecar) and
MCAP streams prepares into frames with the video frame nearest each frame's middle; the server
serves the frame nearest a time and stores 2D tracks; COCO and KITTI 2D exports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine.sim.road import simulate_drive
from engine.tracks2d import Track2D
from formats.export_2d import VideoFrames, coco_document, write_kitti_2d
from formats.jpeg import decode_jpeg
from formats.raw_log import read_log
from formats.rig import camera_to_json
from formats.scene_store import Scene
from formats.video import write_video
from formats.video_mcap import write_mcap_video
from server.config import Settings
from server.main import create_app
from server.prepare import prepare
from server.simulate import EXPOSURE_OFFSET_NS, write_drive_log

TOKENS = [{"token": "viewer-token", "role": "viewer", "name": "vera"},
          {"token": "annotator-token", "role": "annotator", "name": "alice"}]
V = {"Authorization": "Bearer viewer-token"}
A = {"Authorization": "Bearer annotator-token"}


def psnr(a, b) -> float:
    return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b.astype(float)) ** 2))


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """The test rig's drive (2 s) with its three cameras recorded as videos; prepared."""
    root = tmp_path_factory.mktemp("video")
    drive = simulate_drive(seed=3, duration_s=2.0, preset="test")
    log_dir = write_drive_log(root / "log", drive, cameras=False)
    times = drive.frame_times_ns + EXPOSURE_OFFSET_NS
    frames = {c.name: np.stack([drive.render(c.name, int(t)).rgb for t in times]) for c in drive.cameras}
    front, back, fisheye = (c.name for c in drive.cameras)
    write_video(log_dir / "camera/front.mp4", frames[front], times, crf=14)
    sensor = times + 1_234  # the back camera's own clock, from a sidecar
    write_video(log_dir / "camera/back.mkv", frames[back], times, codec="hevc", crf=14)
    rows = "".join(f"{i},{t}\n" for i, t in enumerate(sensor))
    (log_dir / "camera/back.csv").write_text("frame,timestamp_ns\n" + rows)
    write_mcap_video(log_dir / "camera/fisheye.mcap", frames[fisheye], times, encoding="cdr", crf=14)
    doc = json.loads((log_dir / "log.json").read_text())
    doc["cameras"] = [camera_to_json(c) for c in drive.cameras]
    doc["videos"] = [{"camera": front, "path": "camera/front.mp4", "start_ns": int(times[0])},
                     {"camera": back, "path": "camera/back.mkv", "sidecar": "camera/back.csv"},
                     {"camera": fisheye, "path": "camera/fisheye.mcap", "topic": "/camera/video"}]
    (log_dir / "log.json").write_text(json.dumps(doc))
    scenes = root / "scenes"
    summary = prepare(log_dir, scenes / "drive")
    assert not summary.failed, summary.failed
    return drive, frames, {front: times, back: sensor, fisheye: times}, log_dir, scenes


def test_raw_log_reads_the_videos(rig):
    drive, _, _, log_dir, _ = rig
    log = read_log(log_dir)
    assert [v.camera for v in log.videos] == [c.name for c in drive.cameras]
    assert log.videos[1].sidecar is not None and log.videos[2].topic == "/camera/video"
    doc = json.loads((log_dir / "log.json").read_text())
    doc["frames"][0]["images"] = {drive.cameras[0].name: {"path": "x.jpg", "timestamp_ns": 0}}
    (log_dir / "bad").mkdir(exist_ok=True)
    (log_dir / "bad/log.json").write_text(json.dumps({**doc, "videos": doc["videos"] + doc["videos"][:1]}))
    from formats.errors import FormatError

    with pytest.raises(FormatError, match="one video per camera"):
        read_log(log_dir / "bad")


def test_prepared_frames_hold_the_video_frame_nearest_their_middle(rig):
    drive, frames, times, _, scenes = rig
    scene = Scene.open(scenes / "drive")
    assert len(scene.frames) == len(drive.frame_times_ns)
    for i, entry in enumerate(scene.frames):
        for cam in drive.cameras:
            # the frame's middle is 50 ms in: this frame's exposure, at the camera's own time
            assert entry.image_timestamps_ns[cam.name] == times[cam.name][i]
            rgb = decode_jpeg((scene.dir / entry.images[cam.name].file).read_bytes())
            scores = [psnr(rgb, f) for f in frames[cam.name]]
            assert int(np.argmax(scores)) == i and scores[i] > 27.0
    assert {p.name for p in (scenes / "drive/videos").iterdir()} == {
        "CAM_FRONT.mp4", "CAM_FRONT.json", "CAM_BACK.mkv", "CAM_BACK.times.csv", "CAM_BACK.json",
        "CAM_LEFT_FISHEYE.mcap", "CAM_LEFT_FISHEYE.json"}


@pytest.fixture(scope="module")
def client(rig):
    app = create_app(Settings(scenes_dir=rig[4], tokens=json.dumps(TOKENS), warmup=False))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    assert app.state.fathom.server_errors == 0


def test_server_serves_the_frame_nearest_a_time(rig, client):
    drive, frames, times, _, _ = rig
    listed = {v["camera"]: v for v in client.get("/v1/scenes/drive/videos", headers=V).json()}
    assert set(listed) == {c.name for c in drive.cameras}
    for cam in drive.cameras:
        t = times[cam.name]
        assert listed[cam.name]["frames"] == len(t) and listed[cam.name]["first_ns"] == t[0]
        for i, q in ((0, t[0] - 10**9), (3, t[3] + 40_000_000), (7, t[7] - 49_000_000), (len(t) - 1, t[-1] + 5)):
            r = client.get(f"/v1/scenes/drive/videos/{cam.name}/frame", headers=V, params={"time_ns": int(q)})
            assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
            assert (int(r.headers["X-Frame-Index"]), int(r.headers["X-Frame-Time-Ns"])) == (i, t[i])
            rgb = decode_jpeg(r.content)
            assert int(np.argmax([psnr(rgb, f) for f in frames[cam.name]])) == i
    assert client.get("/v1/scenes/drive/videos/NOPE/frame", headers=V, params={"time_ns": 0}).status_code == 404
    assert client.get("/v1/scenes/drive/videos/CAM_FRONT/frame", headers=V, params={"time_ns": -1}).status_code == 422
    assert client.get("/v1/scenes/drive/videos", headers={}).status_code == 401


def _box_track(tid, camera, times, u0):
    return {"id": tid, "category": "car", "camera": camera, "shape": "box", "attributes": {"occluded": 1},
            "keyframes": [{"timestamp_ns": int(t), "points": [[u0 + 10.0 * k, 20.0], [u0 + 10.0 * k + 30, 60.0]]}
                          for k, t in enumerate(times)]}


def test_tracks2d_are_stored_revisioned_and_exported_as_coco(rig, client):
    drive, _, times, _, _ = rig
    front = drive.cameras[0].name
    t = times[front]
    polygon = {"id": "lane-1", "category": "lane", "camera": front, "shape": "polygon",
               "keyframes": [{"timestamp_ns": int(t[0]), "points": [[0.0, 100], [50, 100], [50, 107]]},
                             {"timestamp_ns": int(t[4]), "points": [[0.0, 100], [50, 100], [60, 107], [10, 107]]}]}
    body = {"expected_revision": 0, "tracks": [_box_track("car-1", front, t[[0, 10]], 5.0), polygon]}
    r = client.put("/v1/scenes/drive/tracks2d", headers=A, json=body)
    assert r.status_code == 200 and r.json()["revision"] == 1
    assert client.put("/v1/scenes/drive/tracks2d", headers=A, json=body).status_code == 412
    bad = {"expected_revision": 1, "tracks": [{**polygon, "shape": "box"}]}
    assert client.put("/v1/scenes/drive/tracks2d", headers=A, json=bad).status_code == 422
    assert client.get("/v1/scenes/drive/tracks2d", headers=V).json()["tracks"][1]["id"] == "lane-1"
    coco = client.get("/v1/scenes/drive/tracks2d/coco", headers=V).json()
    assert len(coco["videos"]) == 3 and len(coco["images"]) == sum(len(v) for v in times.values())
    boxes = [a for a in coco["annotations"] if a["track_name"] == "car-1"]
    assert len(boxes) == 11  # frames 0..10 of the front camera
    fifth = next(a for a in boxes if coco["images"][a["image_id"] - 1]["frame_id"] == 5)
    assert fifth["bbox"] == [5.5 + 5 * 10.0 / 10, 20.5, 30.0, 40.0] and fifth["area"] == 1200.0


def test_coco_and_kitti_2d_values(tmp_path):
    times = np.array([0, 100, 200], np.int64)
    box = Track2D("7", "traffic light", "CAM", "box", times[[0, 2]],
                  (np.array([[10.0, 20.0], [30.0, 60.0]]), np.array([[20.0, 20.0], [40.0, 80.0]])),
                  {"truncated": 0.25, "occluded": 2})
    line = Track2D("line", "curb", "CAM", "polyline", times[:1], (np.array([[0.0, 0.0], [3.0, 4.0]]),))
    square = Track2D("sq", "sign", "OTHER", "polygon", times[1:2], (np.array([[0.0, 0], [2, 0], [2, 2], [0, 2]]),))
    videos = [VideoFrames("CAM", 64, 48, times), VideoFrames("OTHER", 32, 32, times)]
    doc = coco_document([box, line, square], videos)
    assert [c["name"] for c in doc["categories"]] == ["curb", "sign", "traffic light"]
    assert [(i["video_id"], i["frame_id"]) for i in doc["images"]] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (2, 2)]
    by_image = {(a["image_id"], a["track_name"]): a for a in doc["annotations"]}
    assert by_image[(2, "7")]["bbox"] == [15.5, 20.5, 20.0, 50.0] and by_image[(2, "7")]["category_id"] == 3
    assert by_image[(1, "line")]["polyline"] == [0.5, 0.5, 3.5, 4.5] and by_image[(1, "line")]["area"] == 0.0
    assert by_image[(5, "sq")]["segmentation"] == [[0.5, 0.5, 2.5, 0.5, 2.5, 2.5, 0.5, 2.5]]
    assert by_image[(5, "sq")]["area"] == 4.0 and len(doc["annotations"]) == 5
    files = write_kitti_2d(tmp_path, [box, line, square], videos)
    assert [f.relative_to(tmp_path).as_posix() for f in files[:3]] == ["CAM/000000.txt", "CAM/000001.txt",
                                                                     "CAM/000002.txt"]
    # KITTI's 15 fields, the 3D ones KITTI's "unknown" placeholders
    (line,) = (tmp_path / "CAM/000001.txt").read_text().splitlines()
    assert line.split() == ["traffic_light", "0.25", "2", "-10", "15.00", "20.00", "35.00", "70.00",
                            "-1", "-1", "-1", "-1000", "-1000", "-1000", "-10"]
    assert (tmp_path / "CAM/000002.txt").read_text().split()[4:8] == ["20.00", "20.00", "40.00", "80.00"]
    assert (tmp_path / "OTHER/000001.txt").read_text() == ""  # polygons are not KITTI 2D boxes


def test_prelabels_are_the_labelled_cuboids_through_the_lens(rig, client):
    from engine.boxes2d import derive_boxes
    from engine.cuboid_interp import TrackTable, interpolate_tracks
    from formats.raw_log import read_labels

    drive, frames, times, log_dir, scenes = rig
    cam = drive.cameras[0]
    t = times[cam.name]
    r = client.get(f"/v1/scenes/drive/videos/{cam.name}/prelabels", headers=V, params={"time_ns": int(t[6]) + 7})
    assert r.status_code == 200
    got = r.json()
    assert (got["frame_index"], got["timestamp_ns"]) == (6, t[6]) and got["boxes"]
    # the same boxes from the log's labels and the scene's poses, straight through the engine
    tracks = read_labels(log_dir / "labels.json")
    at = interpolate_tracks(TrackTable.from_tracks(tracks), np.array([t[6]]), "none")
    rows = np.flatnonzero(at.valid[0])
    scene = Scene.open(scenes / "drive")
    d = derive_boxes(at.centers[0, rows], at.sizes[0, rows], at.rotations[0, rows], scene.cameras[cam.name],
                     world_from_ego=scene.world_from_ego(), camera_time_ns=int(t[6]), extrapolate="hold")
    want = {tracks[r].track_id: d.boxes[m] for m, r in enumerate(rows) if d.visible[m]}
    assert {b["track_id"] for b in got["boxes"]} == set(want)
    for b in got["boxes"]:
        np.testing.assert_allclose(b["box"], want[b["track_id"]], atol=0.006)
        assert 0.0 <= b["truncation"] <= 1.0 and 0.0 <= b["occlusion"] < 1.0
    assert client.get("/v1/scenes/drive/videos/NOPE/prelabels", headers=V, params={"time_ns": 0}).status_code == 404
