"""``fathom export nuscenes SCENE_DIR --out DATAROOT``: the scene's current labels on disk;
``fathom export kitti-2d|coco``: its 2D tracks as the HTTP API exports them."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from formats.export_2d import VideoFrames, write_kitti_2d
from formats.raw_log import read_log
from formats.rig import camera_to_json
from formats.video import write_video
from formats.video_mcap import write_mcap_video
from server.cli import main
from server.config import Settings
from server.document_schemas import Tracks2DDocument
from server.label_store import LabelStore
from server.main import create_app
from server.prepare import PrepareOptions, prepare
from server.simulate import EXPOSURE_OFFSET_NS, write_drive_log


@pytest.fixture(scope="module")
def scene(drive, tmp_path_factory):
    log = write_drive_log(tmp_path_factory.mktemp("log"), drive, cameras=False)
    doc = json.loads((log / "log.json").read_text())
    (log / "log.json").write_text(json.dumps(dict(doc, frames=doc["frames"][:2])))
    out = tmp_path_factory.mktemp("scenes") / "road"
    prepare(log, out, options=PrepareOptions(colorize=False))
    times = [f.timestamp_ns for f in read_log(log).frames]
    # the tracks that exist at a frame time (nuScenes annotates samples only)
    return out, [t for t in read_log(log).labels()
                 if any(t.timestamps_ns[0] <= x <= t.timestamps_ns[-1] for x in times)]


def _annotated_instances(dataroot) -> set[str]:
    from nuscenes import NuScenes

    nus = NuScenes(version="v1.0-fathom", dataroot=str(dataroot), verbose=False)
    return {nus.get("instance", a["instance_token"])["token"] for a in nus.sample_annotation}


def test_a_never_served_scene_exports_its_imported_labels(scene, tmp_path, capsys):
    scene_dir, tracks = scene
    assert main(["export", "nuscenes", str(scene_dir), "--out", str(tmp_path / "dr")]) == 0
    assert "label revision 0" in capsys.readouterr().out
    assert (tmp_path / "dr" / "v1.0-fathom" / "sample.json").is_file()
    assert any((tmp_path / "dr" / "samples").rglob("*.pcd.bin"))
    assert len(_annotated_instances(tmp_path / "dr")) == len(tracks) > 0


def test_the_label_store_revision_is_what_is_exported(scene, tmp_path, capsys):
    scene_dir, tracks = scene
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    first = next(t for t in json.loads((scene_dir / "labels.imported.json").read_text())["tracks"]
                 if t["id"] == tracks[0].track_id)
    store.write("road", 0, lambda d: {"tracks": [first]}, op="put", author="ann", record={})
    store.close()
    assert main(["export", "nuscenes", str(scene_dir), "--label-db", str(db), "--tables-only",
                 "--out", str(tmp_path / "dr")]) == 0
    assert "label revision 1, 1 tracks" in capsys.readouterr().out
    assert not (tmp_path / "dr" / "samples").exists()
    assert len(_annotated_instances(tmp_path / "dr")) == 1


def test_unmapped_categories_are_a_one_line_error(scene, tmp_path, capsys):
    scene_dir, _ = scene
    db = tmp_path / "labels.sqlite3"
    store = LabelStore(db)
    imported = json.loads((scene_dir / "labels.imported.json").read_text())
    odd = [dict(imported["tracks"][0], category="hovercraft")]
    store.write("road", 0, lambda d: {"tracks": odd}, op="put", author="ann", record={})
    store.close()
    args = ["export", "nuscenes", str(scene_dir), "--label-db", str(db), "--out", str(tmp_path / "dr")]
    assert main(args) == 2
    assert "hovercraft" in capsys.readouterr().err
    assert main(args + ["--unmapped", "drop"]) == 0


@pytest.fixture(scope="module")
def video_scene(drive, tmp_path_factory):
    """Two frames of the drive whose front camera is an MP4 and back camera an MCAP stream
    (every one of the drive's frame times), prepared into SCENES/video; its 2D tracks saved
    through the API. Returns the scene directory and the HTTP answers of the exports' sources."""
    log = write_drive_log(tmp_path_factory.mktemp("vlog"), drive, cameras=False)
    times = drive.frame_times_ns + EXPOSURE_OFFSET_NS
    front, back = drive.cameras[0], drive.cameras[1]
    for cam, path in ((front, "camera/front.mp4"), (back, "camera/back.mcap")):
        rgb = np.stack([drive.render(cam.name, int(t)).rgb for t in times])
        (write_video if path.endswith(".mp4") else write_mcap_video)(log / path, rgb, times)
    doc = json.loads((log / "log.json").read_text())
    doc.update(frames=doc["frames"][:2], cameras=[camera_to_json(front), camera_to_json(back)],
               videos=[{"camera": front.name, "path": "camera/front.mp4", "start_ns": int(times[0])},
                       {"camera": back.name, "path": "camera/back.mcap"}])
    (log / "log.json").write_text(json.dumps(doc))
    scenes = tmp_path_factory.mktemp("vscenes")
    assert not prepare(log, scenes / "video", options=PrepareOptions(colorize=False)).failed
    box = {"id": "car-1", "category": "parked car", "camera": front.name, "shape": "box",
           "attributes": {"occluded": 1, "truncated": 0.25},
           "keyframes": [{"timestamp_ns": int(times[1]), "points": [[5.0, 20.0], [35.0, 60.0]]},
                         {"timestamp_ns": int(times[6]), "points": [[25.0, 22.0], [55.0, 61.5]]}]}
    lane = {"id": "lane-1", "category": "lane", "camera": back.name, "shape": "polyline",
            "keyframes": [{"timestamp_ns": int(times[0]), "points": [[0.0, 40.0], [30.0, 38.0], [60.0, 41.0]]}]}
    van = dict(box, id="van-1", category="van", camera=back.name, attributes={})
    tokens = [{"token": "annotator-token", "role": "annotator", "name": "alice"}]
    head = {"Authorization": "Bearer annotator-token"}
    app = create_app(Settings(scenes_dir=scenes, tokens=json.dumps(tokens), warmup=False))
    with TestClient(app) as client:
        r = client.put("/v1/scenes/video/tracks2d", headers=head,
                       json={"expected_revision": 0, "tracks": [box, lane, van]})
        assert r.status_code == 200
        coco = client.get("/v1/scenes/video/tracks2d/coco", headers=head)
        tracks = client.get("/v1/scenes/video/tracks2d", headers=head).json()
    assert coco.status_code == 200 and len(coco.json()["annotations"]) > 10
    return scenes / "video", coco.content, tracks


def test_coco_is_the_http_export_byte_for_byte(video_scene, tmp_path, capsys):
    scene_dir, coco, _ = video_scene
    assert main(["export", "coco", str(scene_dir), "--out", str(tmp_path / "out" / "instances.json")]) == 0
    assert "2D tracks revision 1, 3 tracks, 2 video cameras" in capsys.readouterr().out
    assert (tmp_path / "out" / "instances.json").read_bytes() == coco


def test_kitti_2d_is_the_http_exports_tracks_on_its_frames(video_scene, tmp_path, capsys):
    """The command's files are ``write_kitti_2d`` of the tracks GET /tracks2d answers on the
    frames (cameras, sizes, times) of the HTTP COCO export."""
    scene_dir, coco, tracks = video_scene
    assert main(["export", "kitti-2d", str(scene_dir), "--out", str(tmp_path / "kitti")]) == 0
    assert "KITTI 2D, 20 files" in capsys.readouterr().out
    doc = json.loads(coco)
    videos = [VideoFrames(v["name"], v["width"], v["height"],
                          np.array([i["timestamp_ns"] for i in doc["images"] if i["video_id"] == v["id"]]))
              for v in doc["videos"]]
    expected = write_kitti_2d(tmp_path / "ref", [t.to_track() for t in Tracks2DDocument(**tracks).tracks], videos)
    got = sorted(p.relative_to(tmp_path / "kitti") for p in (tmp_path / "kitti").rglob("*.txt"))
    assert got == sorted(p.relative_to(tmp_path / "ref") for p in expected) and len(got) == 20
    for rel in got:
        assert (tmp_path / "kitti" / rel).read_bytes() == (tmp_path / "ref" / rel).read_bytes(), rel
    assert (tmp_path / "kitti" / "CAM_FRONT" / "000003.txt").read_text().startswith("parked_car 0.25 1 -10 ")


def test_2d_exports_of_another_label_database(video_scene, tmp_path, capsys):
    scene_dir, _, _ = video_scene
    db = ["--label-db", str(tmp_path / "elsewhere" / "labels.sqlite3")]  # no documents there: no tracks
    assert main(["export", "coco", str(scene_dir), *db, "--out", str(tmp_path / "c.json")]) == 0
    assert "2D tracks revision 0, 0 tracks" in capsys.readouterr().out
    coco = json.loads((tmp_path / "c.json").read_text())
    assert coco["annotations"] == [] and len(coco["images"]) == 20
    assert main(["export", "kitti-2d", str(scene_dir), *db, "--out", str(tmp_path / "k")]) == 0
    assert all(p.read_text() == "" for p in (tmp_path / "k").rglob("*.txt"))
