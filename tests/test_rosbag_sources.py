"""Small bags written here: extrinsics through /tf_static, the pose sources and their order,
frames, gaps and clock jumps, and bad input (truncated bags, missing tf links, unknown types,
a PointCloud2 that does not fit its point_step)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from engine import quaternion as quat
from engine.geodesy import Origin, geodetic_to_enu
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.pcd import read_pcd
from formats.raw_log import read_log
from formats.ros import BagOptions, bag_to_raw_log, inspect_lines
from formats.ros.bag import BagReadError
from formats.ros.source import DirectReadUnsupported, bag_log
from formats.ros.tf import TransformError, TransformTree
from tests.rosbag_rig import BagWriter, camera_info, cloud_message, msg

T0 = 1_700_000_000_000_000_000
MS = 1_000_000


def q_of(yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0) -> np.ndarray:
    return quat.from_euler_zyx(math.radians(roll_deg), math.radians(pitch_deg), math.radians(yaw_deg))


def matrix(q, t) -> np.ndarray:
    m = np.eye(4)
    m[:3, :3] = quat.to_matrix(np.asarray(q, float))
    m[:3, 3] = t
    return m


class SmallBag:
    """A bag of a few LiDAR sweeps (3 points each, per-point ``t``) and what a test adds."""

    def __init__(self, path: Path, storage: str = "mcap", compression: str | None = None) -> None:
        self.path = path
        self.w = BagWriter(path, storage, compression)

    def transforms(self, topic: str, edges, stamp: int = T0) -> None:
        w = self.w
        items = [msg(w.store, "geometry_msgs/msg/TransformStamped", header=w.header(stamp, parent),
                     child_frame_id=child,
                     transform=msg(w.store, "geometry_msgs/msg/Transform",
                                   translation=msg(w.store, "geometry_msgs/msg/Vector3", x=t[0], y=t[1], z=t[2]),
                                   rotation=msg(w.store, "geometry_msgs/msg/Quaternion",
                                                w=q[0], x=q[1], y=q[2], z=q[3])))
                 for parent, child, q, t in edges]
        w.write(topic, "tf2_msgs/msg/TFMessage", stamp, msg(w.store, "tf2_msgs/msg/TFMessage", transforms=items))

    def sweeps(self, stamps, topic="/lidar/points", frame="lidar", point_step_bug_at=None) -> None:
        for k, s in enumerate(stamps):
            sweep = Sweep(np.array([[1.0, 2, 3], [4, 5, 6], [7, 8, 9]]) * (k + 1), s, np.ones(3),
                          np.array([0, 40, 90]) * MS, np.arange(3))
            m = cloud_message(self.w, sweep, frame, "ouster")
            if k == point_step_bug_at:
                m.point_step = 24  # fields reach byte 28: they do not fit
            self.w.write(topic, "sensor_msgs/msg/PointCloud2", s, m)

    def camera(self, stamps, topic="/cam/image_raw/compressed", frame="cam_optical") -> None:
        from engine.camera import Camera, CameraIntrinsics
        from engine.se3 import SE3
        from formats.jpeg import encode_jpeg

        cam = Camera("cam", CameraIntrinsics(16, 8, 10.0, 10.0, 7.5, 3.5), SE3.identity())
        jpeg = np.frombuffer(encode_jpeg(np.zeros((8, 16, 3), np.uint8)), np.uint8)
        for s in stamps:
            self.w.write(topic, "sensor_msgs/msg/CompressedImage", s,
                         msg(self.w.store, "sensor_msgs/msg/CompressedImage", header=self.w.header(s, frame),
                             format="jpeg", data=jpeg))
            self.w.write("/cam/camera_info", "sensor_msgs/msg/CameraInfo", s, camera_info(self.w, cam, s, frame))

    def close(self) -> Path:
        self.w.close()
        return self.path


def base_bag(path: Path, storage: str = "mcap", **sweep_kw) -> SmallBag:
    b = SmallBag(path, storage)
    b.transforms("/tf_static", [("base_link", "lidar", q_of(30), [1.0, 0, 2]),
                                ("base_link", "cam_optical", q_of(), [0.0, 0, 1])])
    b.sweeps(T0 + np.arange(10) * 100 * MS, **sweep_kw)
    return b


# ---------------------------------------------------------------- extrinsics


def test_static_chain_of_any_depth_through_the_common_ancestor(tmp_path):
    """base_footprint → base_link and base_footprint → mount → bar → lidar: ``base_link_from_lidar``
    composed over the lowest common ancestor, against 4x4 matrices."""
    edges = [("base_footprint", "base_link", q_of(0, 1, 0), [0.0, 0, 0.3]),
             ("base_footprint", "mount", q_of(10, 0, 2), [1.0, 0.5, 1.2]),
             ("mount", "bar", q_of(-35, 5, 0), [0.2, -0.1, 0.4]),
             ("bar", "lidar", q_of(90, 0, 180), [0.0, 0.3, 0.05])]
    b = SmallBag(tmp_path / "t")
    b.transforms("/tf_static", edges)
    b.sweeps([T0, T0 + 100 * MS])
    bag = b.close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    pose = read_log(tmp_path / "log").lidars[0].ego_from_sensor
    m = {child: matrix(q, t) for _, child, q, t in edges}
    expect = np.linalg.inv(m["base_link"]) @ m["mount"] @ m["bar"] @ m["lidar"]
    np.testing.assert_allclose(pose.as_matrix(), expect, atol=1e-12)
    assert "at rest" in result.poses  # no pose source: said, not invented


def test_missing_tf_link_names_topic_frame_and_the_way_out(tmp_path):
    b = base_bag(tmp_path / "t")
    b.sweeps([T0 + 5 * MS], topic="/roof/points", frame="roof_lidar")  # no tf for roof_lidar
    bag = b.close()
    with pytest.raises(FormatError) as err:
        bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    text = str(err.value)
    assert "topic /roof/points message #0" in text and "'roof_lidar'" in text and "'base_link'" in text
    assert "--topics" in text and "--base-frame" in text
    # the rest of the bag converts without that topic
    assert bag_to_raw_log(bag, tmp_path / "log", BagOptions(topics=("/lidar/points",))).frames == 10
    tree = TransformTree()
    with pytest.raises(TransformError, match="tree roots"):
        tree.static_transform("base_link", "nowhere")


def test_unknown_message_type_is_refused_by_name(tmp_path):
    b = base_bag(tmp_path / "t")
    b.w.write("/chatter", "std_msgs/msg/String", T0, msg(b.w.store, "std_msgs/msg/String", data="hello"))
    bag = b.close()
    with pytest.raises(FormatError, match="topic /chatter: message type std_msgs/msg/String is not a sensor type"):
        bag_to_raw_log(bag, tmp_path / "log", BagOptions(topics=("/lidar/points", "/chatter")))
    with pytest.raises(FormatError, match=r"topic /nothing in the bag \(it has \['/chatter'"):
        bag_to_raw_log(bag, tmp_path / "log", BagOptions(topics=("/nothing",)))
    lines = inspect_lines(bag)
    assert any(line.startswith("/chatter") and "ignored: not a type Fathom reads" in line for line in lines)
    assert bag_to_raw_log(bag, tmp_path / "log", BagOptions()).frames == 10  # unused by default


def test_pointcloud_that_does_not_fit_its_point_step(tmp_path):
    bag = base_bag(tmp_path / "t", point_step_bug_at=3).close()
    with pytest.raises(FormatError, match=r"topic /lidar/points message #3: field 'reflectivity' at offset 24 \+ 2 "
                                          r"bytes inside point_step 24"):
        bag_to_raw_log(bag, tmp_path / "log", BagOptions(), strict=True)
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.frames == 9
    lines = result.lines()
    assert any("/lidar/points" in line and "message #3 left out: field 'reflectivity'" in line for line in lines)
    log, report = bag_log(bag, BagOptions())  # read directly: the same frames, the same report
    assert report.frames == len(log.frames) == 9 and report.lines() == lines
    assert [f.timestamp_ns for f in log.frames] == [f.timestamp_ns for f in read_log(tmp_path / "log").frames]
    assert any("gap of 0.200 s after message #2" in line and "~1 missing" in line for line in lines)
    assert [f.timestamp_ns for f in read_log(tmp_path / "log").frames] == [
        T0 + k * 100 * MS for k in (0, 1, 2, 4, 5, 6, 7, 8, 9)]


@pytest.mark.parametrize("storage, hint",
                         [("ros1", "rosbag reindex"), ("sqlite3", ".recover"), ("mcap", "mcap recover")])
def test_truncated_bag(tmp_path, storage, hint):
    path = tmp_path / ("t.bag" if storage == "ros1" else "t")
    bag = base_bag(path, storage).close()
    f = bag if bag.is_file() else next(p for p in bag.iterdir() if p.suffix in (".db3", ".mcap"))
    data = f.read_bytes()
    f.write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(BagReadError, match=hint) as err:
        bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert str(bag) in str(err.value)


@pytest.mark.parametrize("compression", ["message", "file"])
def test_compressed_bags_read_directly_or_converted(tmp_path, compression):
    """zstd per message: read directly (through rosbags' reader, frame by frame), the same
    sweeps as the conversion's; whole files compressed: converted, not read directly."""
    b = SmallBag(tmp_path / "t", "mcap", compression)
    b.transforms("/tf_static", [("base_link", "lidar", q_of(30), [1.0, 0, 2])])
    b.sweeps(T0 + np.arange(4) * 100 * MS)
    bag = b.close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.frames == 4
    if compression == "file":
        with pytest.raises(DirectReadUnsupported, match="compressed whole"):
            bag_log(bag, BagOptions())
        return
    log, report = bag_log(bag, BagOptions())
    assert report.lines() == result.lines() and log.frames[0].lidar["lidar"].window.mcap == ()  # no byte ranges
    converted = read_log(tmp_path / "log")
    for ours, theirs in zip(log.frames, converted.frames):
        a, b_ = ours.lidar["lidar"].sweep(), read_pcd(theirs.lidar["lidar"])
        np.testing.assert_array_equal(a.xyz, b_.xyz)
        np.testing.assert_array_equal(a.time_offset_ns, b_.time_offset_ns)


def test_mcap_chunk_checksums_are_checked(tmp_path):
    """An MCAP chunk whose bytes do not match its CRC (the writer stored one) is a bag that
    breaks off, not garbage points: here at its first message, so nothing is converted."""
    import struct
    import zlib

    from mcap.reader import make_reader

    bag = base_bag(tmp_path / "t").close()
    f = next(p for p in bag.iterdir() if p.suffix == ".mcap")
    with open(f, "rb") as fh:
        [chunk] = make_reader(fh).get_summary().chunk_indexes
    assert chunk.compression == ""
    data = bytearray(f.read_bytes())
    records = chunk.chunk_start_offset + 49 + len(chunk.compression)  # opcode, length, 3 u64, u32, string, u64
    crc_at = chunk.chunk_start_offset + 33
    data[crc_at:crc_at + 4] = struct.pack("<I", zlib.crc32(data[records:records + chunk.uncompressed_size]))
    f.write_bytes(bytes(data))
    assert bag_to_raw_log(bag, tmp_path / "log", BagOptions()).frames == 10  # the CRC is right
    data[records + chunk.uncompressed_size - 100] ^= 0xFF  # inside the last sweep's points
    f.write_bytes(bytes(data))
    with pytest.raises(BagReadError, match="CRC") as err:
        bag_to_raw_log(bag, tmp_path / "log2", BagOptions())
    assert str(bag) in str(err.value)


# ---------------------------------------------------------------- poses


def _odometry(b: SmallBag, stamps, child="base_link", topic="/odom"):
    w = b.w
    for k, s in enumerate(stamps):
        pose = msg(w.store, "geometry_msgs/msg/Pose",
                   position=msg(w.store, "geometry_msgs/msg/Point", x=10.0 * k, y=2.0, z=0.5),
                   orientation=msg(w.store, "geometry_msgs/msg/Quaternion", **dict(zip("wxyz", q_of(5 * k)))))
        zero = np.zeros(36)
        vec = msg(w.store, "geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)
        w.write(topic, "nav_msgs/msg/Odometry", s, msg(
            w.store, "nav_msgs/msg/Odometry", header=w.header(s, "map"), child_frame_id=child,
            pose=msg(w.store, "geometry_msgs/msg/PoseWithCovariance", pose=pose, covariance=zero),
            twist=msg(w.store, "geometry_msgs/msg/TwistWithCovariance", covariance=zero,
                      twist=msg(w.store, "geometry_msgs/msg/Twist", linear=vec, angular=vec))))


def _pose_stamped(b: SmallBag, stamps):
    w = b.w
    for s in stamps:
        pose = msg(w.store, "geometry_msgs/msg/Pose",
                   position=msg(w.store, "geometry_msgs/msg/Point", x=-1.0, y=0.0, z=0.0),
                   orientation=msg(w.store, "geometry_msgs/msg/Quaternion", w=1.0, x=0.0, y=0.0, z=0.0))
        w.write("/pose", "geometry_msgs/msg/PoseStamped", s,
                msg(w.store, "geometry_msgs/msg/PoseStamped", header=w.header(s, "map"), pose=pose))


def _navsat(b: SmallBag, stamps, lat, lon, alt, yaw_deg):
    w = b.w
    for s, la, lo, al, y in zip(stamps, lat, lon, alt, yaw_deg):
        status = msg(w.store, "sensor_msgs/msg/NavSatStatus", status=0, service=1)
        w.write("/fix", "sensor_msgs/msg/NavSatFix", s, msg(
            w.store, "sensor_msgs/msg/NavSatFix", header=w.header(s, "gnss"), status=status, latitude=la, longitude=lo,
            altitude=al, position_covariance=np.zeros(9), position_covariance_type=0))
        q = msg(w.store, "geometry_msgs/msg/Quaternion", **dict(zip("wxyz", q_of(y))))
        vec = msg(w.store, "geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)
        w.write("/imu", "sensor_msgs/msg/Imu", s, msg(
            w.store, "sensor_msgs/msg/Imu", header=w.header(s, "base_link"), orientation=q,
            orientation_covariance=np.zeros(9), angular_velocity=vec, angular_velocity_covariance=np.zeros(9),
            linear_acceleration=vec, linear_acceleration_covariance=np.zeros(9)))


def _poses(log: Path) -> np.ndarray:
    return np.loadtxt(log / "poses.csv", delimiter=",", skiprows=1, ndmin=2)


STAMPS = T0 + np.arange(12) * 100 * MS - 50 * MS


def test_pose_sources_in_their_order(tmp_path):
    b = base_bag(tmp_path / "t")
    _odometry(b, STAMPS)
    _pose_stamped(b, STAMPS)
    _navsat(b, STAMPS, [48.1] * 12, [11.5] * 12, [500.0] * 12, [0.0] * 12)
    b.transforms("/tf", [("odom", "base_link", q_of(), [3.0, 0, 0])], stamp=T0)
    bag = b.close()
    assert bag_to_raw_log(bag, tmp_path / "a", BagOptions()).poses.startswith("nav_msgs/Odometry /odom")
    assert bag_to_raw_log(bag, tmp_path / "b", BagOptions(pose_topic="/pose")).poses.startswith("pose topic /pose")
    assert bag_to_raw_log(bag, tmp_path / "c", BagOptions(pose_topic="/fix")).poses.startswith("sensor_msgs/NavSatFix")
    np.testing.assert_array_equal(_poses(tmp_path / "b")[:, 1:], [[-1.0, 0, 0, 1, 0, 0, 0]] * 12)
    with pytest.raises(ValueError, match="--pose-topic /lidar/points"):
        bag_to_raw_log(bag, tmp_path / "d", BagOptions(pose_topic="/lidar/points"))


def test_odometry_of_another_frame_is_moved_to_the_vehicle_frame(tmp_path):
    b = base_bag(tmp_path / "t")
    b.transforms("/tf_static", [("base_link", "gnss_link", q_of(3, 1, -2), [0.4, -0.2, 1.6])], stamp=T0 + 1)
    _odometry(b, STAMPS, child="gnss_link")
    bag = b.close()
    bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    rows = _poses(tmp_path / "log")
    base_from_gnss = matrix(q_of(3, 1, -2), [0.4, -0.2, 1.6])
    for k, row in enumerate(rows):
        expect = matrix(q_of(5 * k), [10.0 * k, 2.0, 0.5]) @ np.linalg.inv(base_from_gnss)
        np.testing.assert_allclose(matrix(row[4:], row[1:4]), expect, atol=1e-12)


def test_tf_chain_is_a_pose_source(tmp_path):
    """map → odom at 5 Hz and odom → base_link at 20 Hz: poses at the base_link edge's stamps,
    the map → odom edge interpolated there."""
    b = base_bag(tmp_path / "t")
    for k in range(6):
        b.transforms("/tf", [("map", "odom", q_of(2 * k), [float(k), 0, 0])], stamp=T0 - 100 * MS + k * 200 * MS)
    for k in range(22):
        b.transforms("/tf", [("odom", "base_link", q_of(), [0.5 * k, 0.1, 0])], stamp=T0 - 50 * MS + k * 50 * MS)
    bag = b.close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.poses == "/tf chain 'map' → 'base_link'"
    rows = _poses(tmp_path / "log")
    assert len(rows) == 22
    k = 9  # t = T0 + 400 ms: halfway between the map → odom samples at 300 and 500 ms
    assert rows[k, 0] == T0 + 400 * MS
    q_map_odom = quat.slerp(q_of(4), q_of(6), 0.5)
    expect = matrix(q_map_odom, [2.5, 0, 0]) @ matrix(q_of(), [0.5 * k, 0.1, 0])
    np.testing.assert_allclose(matrix(rows[k, 4:], rows[k, 1:4]), expect, atol=1e-9)


def test_navsat_with_imu_is_enu_at_the_first_fix_minus_the_lever_arm(tmp_path):
    b = base_bag(tmp_path / "t")
    b.transforms("/tf_static", [("base_link", "gnss", q_of(), [0.5, 0.0, 1.5])], stamp=T0 + 1)
    lat = 48.1 + np.arange(12) * 1e-5
    lon = 11.5 + np.arange(12) * 2e-5
    alt = 500.0 + np.arange(12) * 0.1
    yaw = np.arange(12) * 3.0
    _navsat(b, STAMPS, lat, lon, alt, yaw)
    bag = b.close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.poses.startswith("sensor_msgs/NavSatFix /fix + Imu")
    log = read_log(tmp_path / "log")
    assert log.origin.geodetic == (48.1, 11.5, 500.0)
    rows = _poses(tmp_path / "log")
    enu = geodetic_to_enu(lat, lon, alt, Origin(48.1, 11.5, 500.0))
    lever = quat.rotate(rows[:, 4:], np.tile([0.5, 0.0, 1.5], (12, 1)))
    np.testing.assert_allclose(rows[:, 1:4], enu - lever, atol=1e-6)
    # headings: the Imu yaw (ENU) up to the tiny tilt between the fixes' tangent planes
    np.testing.assert_allclose(np.degrees(quat.to_euler_zyx(rows[:, 4:])[:, 2]), yaw, atol=1e-3)


def test_no_pose_source_is_at_rest_and_says_so(tmp_path):
    bag = base_bag(tmp_path / "t").close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.poses == "none: no pose source in the bag, the vehicle is at rest"
    np.testing.assert_array_equal(_poses(tmp_path / "log")[:, 1:], [[0, 0, 0, 1, 0, 0, 0]] * 2)


# ---------------------------------------------------------------- frames


def test_frames_match_images_and_report_what_is_missing(tmp_path):
    b = base_bag(tmp_path / "t")
    b.camera([T0 + k * 100 * MS + 50 * MS for k in range(10) if k != 4])  # the frame-4 image was dropped
    bag = b.close()
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    frames = read_log(tmp_path / "log").frames
    assert len(frames) == 10 and "cam" not in frames[4].images
    assert [f.images["cam"][1] - f.timestamp_ns for i, f in enumerate(frames) if i != 4] == [50 * MS] * 9
    lines = result.lines()
    assert any(line.startswith("/cam/image_raw/compressed at 1700000000.350 s") and "gap of 0.200 s" in line
               for line in lines)
    assert any("frame 4 has no message within 50 ms of its centre" in line for line in lines)
    five = bag_to_raw_log(bag, tmp_path / "five", BagOptions(frame_rate_hz=5.0))
    assert five.frames == 5
    assert [f.timestamp_ns - T0 for f in read_log(tmp_path / "five").frames] == [k * 200 * MS for k in range(5)]
    by_camera = bag_to_raw_log(bag, tmp_path / "cam", BagOptions(reference="/cam/image_raw/compressed"))
    assert by_camera.frames == 9
    assert [f.timestamp_ns - T0 for f in read_log(tmp_path / "cam").frames][:4] == [
        50 * MS, 150 * MS, 250 * MS, 350 * MS]


def test_clock_jump_is_reported_with_topic_and_time(tmp_path):
    b = SmallBag(tmp_path / "t")
    b.transforms("/tf_static", [("base_link", "lidar", q_of(), [0.0, 0, 0])])
    stamps = T0 + np.arange(8) * 100 * MS
    for k, s in enumerate(stamps):  # message 5's header clock is 3 s behind
        sweep = Sweep(np.ones((3, 3)), int(s - 3_000_000_000 * (k == 5)), np.ones(3), np.zeros(3, np.int64),
                      np.arange(3))
        b.w.write("/lidar/points", "sensor_msgs/msg/PointCloud2", int(s), cloud_message(b.w, sweep, "lidar", "ouster"))
    bag = b.close()
    lines = bag_to_raw_log(bag, tmp_path / "log", BagOptions()).lines()
    jumps = [line for line in lines if "clock jump" in line]
    assert len(jumps) == 2 and all(line.startswith("/lidar/points") for line in jumps)
    assert "message #5's stamp moves -2.900 s" in jumps[0] and "message #6's stamp moves +3.100 s" in jumps[1]


def test_a_redefined_pointcloud2_is_not_parsed_as_the_standard_one(tmp_path):
    """A ROS 1 bag whose sensor_msgs/PointCloud2 is not the standard message: its topic is
    refused by name (Fathom parses the standard layout from the bytes), inspect says why."""
    from rosbags.rosbag1 import Writer

    path = tmp_path / "odd.bag"
    with Writer(path) as w:
        conn = w.add_connection("/odd/points", "sensor_msgs/msg/PointCloud2", msgdef="uint32 height\nuint32 width",
                                md5sum="0" * 32)
        w.write(conn, T0, bytes(8))
    with pytest.raises(FormatError, match=r"topic /odd/points: the bag defines \['sensor_msgs/msg/PointCloud2'\] "
                                          r"differently"):
        bag_to_raw_log(path, tmp_path / "log", BagOptions(topics=("/odd/points",)))
    with pytest.raises(FormatError, match="a LiDAR or camera topic"):  # nothing left to convert
        bag_to_raw_log(path, tmp_path / "log", BagOptions())
    lines = inspect_lines(path)
    assert any(line.startswith("/odd/points") and "ignored: the bag defines" in line for line in lines)
    assert "frames: none (no LiDAR or camera topic Fathom reads)" in lines


def test_storage_file_alone_and_an_output_that_is_not_a_log(tmp_path):
    bag = base_bag(tmp_path / "t").close()
    [mcap] = bag.glob("*.mcap")
    assert bag_to_raw_log(mcap, tmp_path / "log", BagOptions()).frames == 10  # the .mcap without metadata.yaml
    assert bag_to_raw_log(mcap, tmp_path / "log", BagOptions()).frames == 10  # a raw log is replaced
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not a raw log"):
        bag_to_raw_log(mcap, tmp_path / "mine", BagOptions())
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_bag_that_breaks_off_converts_what_came_before(tmp_path, monkeypatch, storage):
    """The container failing part-way (a damaged chunk: the mcap library's McapError on an
    MCAP bag, rosbags' ReaderError on the others): the messages logged before it are
    converted, the break is reported with its time."""
    from mcap.exceptions import McapError
    from rosbags.rosbag2 import Reader, ReaderError

    import formats.ros.bag as bag_module

    bag = base_bag(tmp_path / "t", storage).close()
    real = bag_module._mcap_messages if storage == "mcap" else Reader.messages
    error = McapError if storage == "mcap" else ReaderError

    def breaking(*args, **kwargs):
        for item in real(*args, **kwargs):
            if item[1] >= T0 + 550 * MS:
                raise error("Chunk checksum mismatch.")
            yield item

    if storage == "mcap":
        monkeypatch.setattr(bag_module, "_mcap_messages", breaking)
    else:
        monkeypatch.setattr(Reader, "messages", breaking)
    result = bag_to_raw_log(bag, tmp_path / "log", BagOptions())
    assert result.frames == 6  # the sweeps logged at 0 .. 500 ms
    [issue] = [i for i in result.issues if i.topic == "(bag)"]
    assert issue.time_ns == T0 + 500 * MS
    assert "after 7 messages" in issue.text and "Chunk checksum mismatch" in issue.text
