"""ROS bags end to end: the synthetic drive recorded as a ROS 1 bag, a ROS 2 sqlite3 bag and a
ROS 2 MCAP bag (tests/rosbag_rig.py) prepares into the same scene as the drive's own raw log
(server.simulate.write_drive_log), byte for byte; the CLI's import, prepare and inspect."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from engine.sim.road import simulate_drive
from formats.raw_log import read_log
from formats.rig import camera_to_json
from formats.ros import BagOptions, bag_to_raw_log
from formats.ros.source import DirectReadUnsupported, bag_log
from server.cli import main
from server.prepare import PrepareOptions, prepare
from server.simulate import velodyne_rig, write_drive_log
from tests.rosbag_rig import write_drive_bag

TOPICS = ("/LIDAR_TOP/points", "/LIDAR_FRONT/points", "/CAM_FRONT/image_raw", "/CAM_BACK/image_raw/compressed",
          "/CAM_LEFT_FISHEYE/image_raw")
IMAGES = {"CAM_FRONT": "rgb8", "CAM_BACK": "compressed", "CAM_LEFT_FISHEYE": "bgr8"}
# what a CameraInfo cannot say about the rig's cameras: the rolling shutter, the fisheye's field of view
TOPIC_OPTIONS = {"/CAM_BACK/image_raw/compressed": {"row_readout_ns": "200000"},
                 "/CAM_LEFT_FISHEYE/image_raw": {"max_fov_deg": "190"}}
OPTIONS = BagOptions(topics=TOPICS, topic_options=TOPIC_OPTIONS)
STORAGES = ("ros1", "sqlite3", "mcap")


def bag_path(root: Path, storage: str) -> Path:
    return root / ("drive.bag" if storage == "ros1" else f"drive_{storage}")


def without_labels(log_dir: Path) -> Path:
    """The raw log without what the bag does not record: labels.json and radar scans."""
    doc = json.loads((log_dir / "log.json").read_text())
    doc.pop("labels")
    doc.pop("radars", None)
    for frame in doc["frames"]:
        frame.pop("radar", None)
    (log_dir / "log.json").write_text(json.dumps(doc))
    return log_dir


def assert_same_scene(a: Path, b: Path) -> None:
    """Every frame file byte-identical; scene.json equal as values (a composed extrinsic may
    write a quaternion's -0.0 as 0.0)."""
    files_a = sorted(p.relative_to(a) for p in (a / "frames").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in (b / "frames").rglob("*") if p.is_file())
    assert files_a == files_b and files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    doc_a, doc_b = (json.loads((d / "scene.json").read_text()) for d in (a, b))
    assert doc_a == doc_b


@pytest.fixture(scope="module")
def bags(drive, tmp_path_factory):
    """The drive as a rig raw log prepared (labels left out) and as a bag of each storage
    (PointCloud2 in two layouts with NaN rows, raw rgb8/bgr8 and JPEG images, CameraInfo,
    /tf_static two levels deep, Odometry)."""
    root = tmp_path_factory.mktemp("rosbag")
    rig = without_labels(write_drive_log(root / "rig", drive))
    assert prepare(rig, root / "scenes/rig/drive").prepared == len(drive.frame_times_ns)
    for storage in STORAGES:
        write_drive_bag(bag_path(root, storage), drive, storage, layouts={"LIDAR_FRONT": "livox_f64_be"},
                        images=IMAGES, nan_points=7)
    return root


@pytest.mark.parametrize("storage", STORAGES)
def test_bag_prepares_into_the_raw_logs_scene(bags, drive, storage):
    log = bags / f"log_{storage}"
    result = bag_to_raw_log(bag_path(bags, storage), log, OPTIONS)
    assert result.issues == [] and result.frames == len(drive.frame_times_ns)
    assert result.poses == "nav_msgs/Odometry /odom (world frame 'map')"
    rig = read_log(bags / "rig")
    ours = read_log(log)
    assert [l.name for l in ours.lidars] == ["LIDAR_TOP", "LIDAR_FRONT"]
    assert [l.sensor_id for l in ours.lidars] == [0, 1]
    assert [camera_to_json(c) for c in ours.cameras] == [camera_to_json(c) for c in rig.cameras]
    # images: the recorded JPEG as it is, the raw ones encoded as the simulator encodes them
    for f_rig, f_bag in zip(rig.frames, ours.frames):
        assert f_rig.timestamp_ns == f_bag.timestamp_ns
        for cam in IMAGES:
            assert f_bag.images[cam][0].read_bytes() == f_rig.images[cam][0].read_bytes()
            assert f_bag.images[cam][1] == f_rig.images[cam][1]
    assert (log / "poses.csv").read_text() == (bags / "rig/poses.csv").read_text()
    scene = bags / f"scenes/{storage}/drive"
    assert prepare(log, scene).prepared == len(drive.frame_times_ns)
    assert_same_scene(bags / "scenes/rig/drive", scene)
    # read directly (no raw log written; two workers, each reading its frames' messages)
    direct, report = bag_log(bag_path(bags, storage), OPTIONS)
    assert report.issues == [] and report.frames == len(drive.frame_times_ns) and report.poses == result.poses
    assert [camera_to_json(c) for c in direct.cameras] == [camera_to_json(c) for c in rig.cameras]
    scene = bags / f"scenes/{storage}_direct/drive"
    summary = prepare(bag_path(bags, storage), scene, options=PrepareOptions(rosbag=OPTIONS), workers=2)
    assert summary.prepared == len(drive.frame_times_ns) and not summary.failed
    assert_same_scene(bags / "scenes/rig/drive", scene)


def _drop_definitions(bag_dir: Path) -> None:
    """Make a ROS 2 sqlite3 bag look like one recorded before Iron: no message definitions."""
    [db] = bag_dir.glob("*.db3")
    with sqlite3.connect(db) as con:
        con.execute("DELETE FROM message_definitions")


@pytest.mark.parametrize("storage", ["ros1", "sqlite3"])
def test_velodyne_packets_prepare_into_the_pcap_logs_scene(tmp_path, storage, capsys):
    """VelodyneScan packets (a ROS 2 bag without message definitions: Fathom's own
    velodyne_msgs) decode with formats.velodyne into the scene of the rig's pcap log."""
    drive = simulate_drive(seed=3, duration_s=0.3, preset="test", lidars=velodyne_rig("test"))
    rig = without_labels(write_drive_log(tmp_path / "rig", drive, cameras=False, lidar_format="pcap"))
    bag = write_drive_bag(bag_path(tmp_path, storage), drive, storage, lidar="velodyne", images={})
    if storage == "sqlite3":
        _drop_definitions(bag)
    topics = ("/LIDAR_TOP/velodyne_packets", "/LIDAR_FRONT/velodyne_packets")
    # the simulated units' calibration (no per-laser offsets), as the driver would be given it
    options = BagOptions(topics=topics, topic_options={t: {"calibration": str(rig / f"lidar/{t.split('/')[1]}.yaml")}
                                                       for t in topics})
    result = bag_to_raw_log(bag, tmp_path / "log", options)
    assert result.issues == [] and result.frames == 3
    with pytest.raises(DirectReadUnsupported, match="VelodyneScan"):  # packets: only through a conversion
        bag_log(bag, options)
    log = read_log(tmp_path / "log")
    assert [(l.format, l.model) for l in log.lidars] == [("velodyne_pcap", "HDL-32E"), ("velodyne_pcap", "VLP-16")]
    no_colour = PrepareOptions(colorize=False)
    for name in ("rig", "log"):
        assert prepare(tmp_path / name, tmp_path / f"scenes/{name}/drive", options=no_colour).prepared == 3
    assert_same_scene(tmp_path / "scenes/rig/drive", tmp_path / "scenes/log/drive")
    if storage == "ros1":  # `fathom prepare BAG` converts such a bag (and says so), then prepares its log
        args = ["--topics", *topics] + [a for t in topics for a in ("--topic-option", t,
                                                                   f"calibration={options.topic_options[t]['calibration']}")]
        scene = tmp_path / "scenes/cli/drive"
        assert main(["prepare", str(bag), "--out", str(scene), "--workers", "1", "--no-colorize", "--no-map",
                     *args]) == 0
        assert "converting" in capsys.readouterr().err and (tmp_path / "scenes/cli/drive.rawlog/log.json").exists()
        assert_same_scene(tmp_path / "scenes/rig/drive", scene)


def _bag_args() -> list[str]:
    args = ["--topics", *TOPICS]
    for topic, opts in TOPIC_OPTIONS.items():
        args += [a for k, v in opts.items() for a in ("--topic-option", topic, f"{k}={v}")]
    return args


def test_cli_import_prepare_and_inspect(bags, drive, capsys):
    bag = bag_path(bags, "mcap")
    assert main(["import", "rosbag", str(bag), "--out", str(bags / "cli_log"), *_bag_args()]) == 0
    assert len(read_log(bags / "cli_log").frames) == len(drive.frame_times_ns)
    assert "imported 1 of 1 scenes" in capsys.readouterr().out
    assert main(["import", "rosbag", str(bag), "--out", str(bags / "cli_lidar"), "--no-images", *_bag_args()]) == 0
    lidar_only = read_log(bags / "cli_lidar")
    assert lidar_only.cameras == () and [l.name for l in lidar_only.lidars] == ["LIDAR_TOP", "LIDAR_FRONT"]
    assert main(["import", "rosbag", str(bag), "--out", str(bags / "x"), "--scene", "a"]) == 2
    assert "--scene does not apply" in capsys.readouterr().err
    scene = bags / "cli_scenes" / "drive"
    assert main(["prepare", str(bag), "--out", str(scene), "--workers", "1", *_bag_args()]) == 0
    assert not (bags / "cli_scenes" / "drive.rawlog").exists()  # read directly: no raw log written
    assert_same_scene(bags / "scenes/rig/drive", scene)
    err = capsys.readouterr().err
    assert "reading" in err and "directly: 10 frames" in err and "poses: nav_msgs/Odometry /odom" in err
    assert main(["prepare", str(bag), "--out", str(scene), "--workers", "1", *_bag_args()]) == 0
    assert "10 frames, 0 prepared, 10 already finished" in capsys.readouterr().out  # resumed: nothing to do
    assert main(["inspect", str(bag), *_bag_args()]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line for line in out if line.startswith("/")}
    assert set(rows) == {*TOPICS, "/odom", "/tf_static", "/CAM_FRONT/camera_info", "/CAM_BACK/camera_info",
                         "/CAM_LEFT_FISHEYE/camera_info"}
    assert rows["/LIDAR_TOP/points"].split()[1:4] == ["sensor_msgs/msg/PointCloud2", "10", "10.00"]
    assert "reference: cuts the frames" in rows["/LIDAR_TOP/points"] and "'t' relative" in rows["/LIDAR_TOP/points"]
    assert "'offset_time' relative" in rows["/LIDAR_FRONT/points"]
    assert "kannala_brandt 320x240" in rows["/CAM_LEFT_FISHEYE/image_raw"]
    assert "frames: 10 cut by /LIDAR_TOP/points every 100 ms" in out and "issues: 0" in out


def test_mcap_bags_read_through_the_mcap_library_give_rosbags_messages(bags):
    """An MCAP bag's messages, read with the ``mcap`` library, are rosbags' messages: per
    topic the same log times and bytes in the same order, and ``stop_ns`` cuts the same."""
    from formats.ros import Bag

    with Bag(bag_path(bags, "mcap")) as bag:
        assert bag.mcap_files()
        mid = (bag.start_ns + bag.end_ns) // 2
        for stop in (None, mid):
            ours: dict[str, list] = {}
            for topic, k, log_ns, raw in bag.messages(bag.topics, stop_ns=stop):
                assert k == len(ours.setdefault(topic, []))
                ours[topic].append((log_ns, bytes(raw)))
            theirs: dict[str, list] = {}
            for conn, log_ns, raw in bag._reader.messages(connections=bag.connections, stop=stop):
                theirs.setdefault(conn.topic, []).append((log_ns, bytes(raw)))
            assert ours == theirs and sum(map(len, ours.values())) > 50
        assert all(t < mid for m in ours.values() for t, _ in m)
