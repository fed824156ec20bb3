"""The raw-log manifest (formats.raw_log): version 1 and 2 documents, stream sensors, labels,
and bad manifests → FormatError naming the field."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cuboid import CuboidTrack
from engine.se3 import SE3
from formats.errors import FormatError
from formats.raw_log import LogLidar, read_labels, read_log, write_labels, write_log_manifest
from formats.scene_store import SceneOrigin

POSES = "timestamp_ns,tx,ty,tz,qw,qx,qy,qz\n0,1.0,2.0,3.0,1.0,0.0,0.0,0.0\n100,1.5,2.0,3.0,1.0,0.0,0.0,0.0\n"


def _v2(tmp_path: Path) -> dict:
    (tmp_path / "poses.csv").write_text(POSES)
    write_log_manifest(
        tmp_path, log_id="x", origin=SceneOrigin((1.0, 2.0, 0.0)),
        lidars=[LogLidar("TOP", 0, SE3.identity(), "velodyne_pcap", Path("lidar/TOP.pcap"), "vlp16",
                         Path("lidar/TOP.yaml")),
                LogLidar("FRONT", 1, SE3.identity(), "pcd")],
        cameras=[], frames=[{"timestamp_ns": 0, "lidar": {"TOP": {"start_ns": 0, "end_ns": 100},
                                                           "FRONT": "lidar/FRONT/0.pcd"}, "images": {}}],
    )
    return json.loads((tmp_path / "log.json").read_text())


def test_stream_lidar_round_trip(tmp_path):
    doc = _v2(tmp_path)
    assert doc["version"] == 2
    assert doc["lidars"][0] == {"name": "TOP", "sensor_id": 0, "ego_from_sensor": [1, 0, 0, 0, 0, 0, 0],
                                "format": "velodyne_pcap", "path": "lidar/TOP.pcap", "model": "vlp16",
                                "calibration": "lidar/TOP.yaml"}
    assert set(doc["lidars"][1]) == {"name", "sensor_id", "ego_from_sensor", "format"}
    log = read_log(tmp_path)
    top, front = log.lidars
    assert top.is_stream and not front.is_stream
    assert top.model == "VLP-16"  # normalised to the decoder's model name
    assert top.path == tmp_path.resolve() / "lidar/TOP.pcap"
    assert top.calibration == tmp_path.resolve() / "lidar/TOP.yaml"
    assert log.frames[0].lidar == {"TOP": (0, 100), "FRONT": tmp_path.resolve() / "lidar/FRONT/0.pcd"}
    assert log.poses_kind == "table"
    np.testing.assert_allclose(log.world_from_ego().translation, [[0.0, 0.0, 3.0], [0.5, 0.0, 3.0]])


def test_version_1_manifest_still_reads(tmp_path):
    (tmp_path / "poses.csv").write_text(POSES)
    doc = {"format": "fathom-log", "version": 1, "log_id": "old", "poses": {"kind": "table", "path": "poses.csv"},
           "lidars": [{"name": "L", "sensor_id": 0, "ego_from_sensor": [1, 0, 0, 0, 0, 0, 0], "format": "pcd"}],
           "frames": [{"timestamp_ns": 5, "lidar": {"L": "a.pcd"}}]}
    (tmp_path / "log.json").write_text(json.dumps(doc))
    log = read_log(tmp_path)
    assert log.lidars[0].path is None and log.frames[0].lidar["L"] == tmp_path.resolve() / "a.pcd"


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(version=3), "version"),
    (lambda d: d["poses"].update(kind="gpx"), "poses.kind"),
    (lambda d: d["lidars"][0].update(format="velodyne"), "lidars[0].format"),
    (lambda d: d["lidars"][0].update(model="HDL-99"), "lidars[0].model"),
    (lambda d: d["lidars"][0].pop("path"), "lidars[0].path"),
    (lambda d: d["lidars"][0].update(path="../../etc/x.pcap"), "lidars[0].path"),
    (lambda d: d["lidars"][0].update(calibration="/abs.yaml"), "lidars[0].calibration"),
    (lambda d: d["frames"][0]["lidar"].update(TOP={"start_ns": 100, "end_ns": 100}), "frames[0].lidar.TOP"),
    (lambda d: d["frames"][0]["lidar"].update(TOP="lidar/TOP.pcap"), "frames[0].lidar.TOP"),
    (lambda d: d["frames"][0]["lidar"].update(TOP={"start_ns": 0.5, "end_ns": 9}), "frames[0].lidar.TOP"),
    (lambda d: d["frames"][0]["lidar"].update(FRONT={"start_ns": 0, "end_ns": 9}), "frames[0].lidar.FRONT"),
])
def test_bad_manifest_names_the_field(tmp_path, edit, field):
    doc = _v2(tmp_path)
    edit(doc)
    (tmp_path / "log.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        read_log(tmp_path)


def test_kmall_poses_need_a_geodetic_origin(tmp_path):
    doc = _v2(tmp_path)
    doc["poses"] = {"kind": "kmall_skm", "path": "sonar/M.kmall"}
    (tmp_path / "log.json").write_text(json.dumps(doc))
    log = read_log(tmp_path)
    with pytest.raises(FormatError, match="origin.geodetic"):
        log.world_from_ego()
    doc["origin"]["geodetic"] = [51.0, 3.0, 0.0]
    (tmp_path / "log.json").write_text(json.dumps(doc))
    with pytest.raises(FormatError, match="M.kmall"):  # the file is missing
        read_log(tmp_path).world_from_ego()


def test_labels_round_trip(tmp_path):
    t = CuboidTrack("7", "car", np.array([0, 10], np.int64), np.array([[1.0, 2, 3], [2, 2, 3]]),
                    np.ones((2, 3)), np.array([[1.0, 0, 0, 0]] * 2), attributes={"a": 1},
                    keyframe_attributes=[{"occluded": True}, {}])
    path = write_labels(tmp_path, [t])
    (back,) = read_labels(path)
    assert (back.track_id, back.category, back.attributes, back.keyframe_attributes) == ("7", "car", {"a": 1},
                                                                                         [{"occluded": True}, {}])
    np.testing.assert_array_equal(back.centers, t.centers)
    np.testing.assert_array_equal(back.timestamps_ns, t.timestamps_ns)
    path.write_text(json.dumps({"tracks": [{"id": "1", "category": "car", "keyframes": [{"timestamp_ns": 0}]}]}))
    with pytest.raises(FormatError, match=r"tracks\[0\]"):
        read_labels(path)


def test_unreadable_or_broken_json_names_the_file(tmp_path):
    from formats.errors import FormatError, load_json

    with pytest.raises(FormatError, match="a readable raw-log manifest") as err:
        load_json(tmp_path / "absent.json", "raw-log manifest")
    assert err.value.path.endswith("absent.json") and err.value.offset is None
    (tmp_path / "bad.json").write_bytes(b'{"a": 1,\n "b": }')
    with pytest.raises(FormatError, match="valid JSON") as err:
        load_json(tmp_path / "bad.json")
    assert err.value.offset == 15
    (tmp_path / "latin.json").write_bytes(b'{"a": "\xe9"}')
    with pytest.raises(FormatError, match="UTF-8 JSON") as err:
        load_json(tmp_path / "latin.json")
    assert err.value.offset == 7
