"""The large ROS messages read from their bytes (formats.ros.wire, pointcloud, images), against
rosbags' own deserialiser, per-point ``struct`` references, OpenCV's demosaic and projection."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from engine.camera import Camera
from engine.projection import project_points
from engine.se3 import SE3
from formats.jpeg import encode_jpeg
from formats.ros.images import camera_intrinsics, compressed_jpeg, debayer, image_pixels
from formats.ros.pointcloud import PointTime, cloud_sweep, detect_time, parse_point_time
from formats.ros.wire import MessageError, read_compressed_image, read_image, read_pointcloud2, read_velodyne_scan
from tests.rosbag_rig import msg, typestore

STAMP = 1_700_000_000_123_456_789
CODECS = [("ros1", True, True), ("cdr_le", False, True), ("cdr_be", False, False)]
_FMT = {1: "b", 2: "B", 3: "h", 4: "H", 5: "i", 6: "I", 7: "f", 8: "d"}
_NP = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 8: "f8"}


def serialise(ros1: bool, little: bool, typename: str, **values) -> bytes:
    store = typestore(ros1)
    m = msg(store, typename, **values)
    if ros1:
        return bytes(store.serialize_ros1(m, typename))
    return bytes(store.serialize_cdr(m, typename, little_endian=little))


def header(ros1: bool, stamp: int = STAMP, frame: str = "lidar"):
    store = typestore(ros1)
    t = msg(store, "builtin_interfaces/msg/Time", sec=stamp // 10**9, nanosec=stamp % 10**9)
    return msg(store, "std_msgs/msg/Header", stamp=t, frame_id=frame, **({"seq": 3} if ros1 else {}))


def cloud_bytes(codec, fields, step, values, *, big=False, width=None, height=1, row_step=None, data=None):
    """A serialised PointCloud2 of ``values`` (name -> (N,) array) in the given layout."""
    _, ros1, little = codec
    store = typestore(ros1)
    n = len(next(iter(values.values())))
    width = n if width is None else width
    rec = np.zeros(n, np.dtype({"names": [f[0] for f in fields],
                                "formats": [(">" if big else "<") + _NP[f[2]] for f in fields],
                                "offsets": [f[1] for f in fields], "itemsize": step}))
    for name, v in values.items():
        rec[name] = v
    raw = rec.tobytes() if data is None else data
    pf = [msg(store, "sensor_msgs/msg/PointField", name=f[0], offset=f[1], datatype=f[2], count=1) for f in fields]
    return serialise(ros1, little, "sensor_msgs/msg/PointCloud2", header=header(ros1), height=height, width=width,
                     fields=pf, is_bigendian=big, point_step=step,
                     row_step=step * width if row_step is None else row_step,
                     data=np.frombuffer(raw, np.uint8), is_dense=False)


def reference_points(raw_points: bytes, fields, step, n, big):
    """Per point, per field ``struct.unpack_from``: the naive decoder."""
    order = ">" if big else "<"
    return {f[0]: np.array([struct.unpack_from(order + _FMT[f[2]], raw_points, i * step + f[1])[0]
                            for i in range(n)]) for f in fields}


OUSTER = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 16, 7), ("t", 20, 6), ("reflectivity", 24, 4),
          ("ring", 26, 4))
HESAI_F64 = (("x", 0, 8), ("y", 8, 8), ("z", 16, 8), ("intensity", 24, 7), ("ring", 28, 4), ("timestamp", 32, 8))


@pytest.mark.parametrize("codec", CODECS, ids=[c[0] for c in CODECS])
@pytest.mark.parametrize("big", [False, True], ids=["le_points", "be_points"])
def test_pointcloud_layouts_decode_like_the_per_point_reference(codec, big):
    rng = np.random.default_rng(1)
    n = 50
    xyz = rng.normal(0, 20, (n, 3))
    xyz[3] = np.nan  # is_dense=false
    xyz[7] = 0.0     # Ouster's no-return
    t = rng.integers(0, 100_000_000, n).astype(np.uint32)
    vals = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "intensity": rng.uniform(0, 255, n), "t": t,
            "reflectivity": rng.integers(0, 65535, n), "ring": rng.integers(0, 128, n)}
    raw = cloud_bytes(codec, OUSTER, 48, vals, big=big)
    m = read_pointcloud2(raw, codec[1])
    assert (m.stamp_ns, m.frame_id, m.point_step, m.width, m.big_endian) == (STAMP, "lidar", 48, n, big)
    assert m.data.base is not None  # a view of the message bytes, not a copy
    ref = reference_points(m.data.tobytes(), OUSTER, 48, n, big)
    keep = np.ones(n, bool)
    keep[[3, 7]] = False
    s = cloud_sweep(m)
    np.testing.assert_array_equal(s.xyz, np.stack([ref[a] for a in "xyz"], 1)[keep].astype(np.float32))
    np.testing.assert_array_equal(s.intensity, ref["intensity"][keep].astype(np.float32))
    np.testing.assert_array_equal(s.time_offset_ns, ref["t"][keep])
    np.testing.assert_array_equal(s.ring, ref["ring"][keep])
    assert s.timestamp_ns == STAMP
    # the same message through rosbags' deserialiser: its data bytes are ours
    store = typestore(codec[1])
    des = (store.deserialize_ros1 if codec[1] else store.deserialize_cdr)(raw, "sensor_msgs/msg/PointCloud2")
    assert bytes(des.data) == m.data.tobytes()


def test_float64_positions_absolute_seconds_and_row_padding():
    """Hesai-like: float64 xyz, ``timestamp`` float64 UNIX seconds; an organized 2-row cloud
    whose rows carry 8 bytes of padding."""
    codec = CODECS[1]
    w, h, step = 4, 2, 40
    rng = np.random.default_rng(2)
    ts = STAMP / 1e9 + np.array([0.0, 0.01, 0.02, 0.03, 0.05, 0.06, 0.07, 0.099])
    vals = {"x": rng.normal(size=8), "y": rng.normal(size=8), "z": rng.normal(size=8), "intensity": np.arange(8.0),
            "ring": np.arange(8), "timestamp": ts}
    rec = np.zeros(8, np.dtype({"names": [f[0] for f in HESAI_F64], "formats": ["<" + _NP[f[2]] for f in HESAI_F64],
                                "offsets": [f[1] for f in HESAI_F64], "itemsize": step}))
    for k, v in vals.items():
        rec[k] = v
    rows = rec.tobytes()
    padded = rows[:w * step] + b"\x55" * 8 + rows[w * step:] + b"\x55" * 8
    m = read_pointcloud2(cloud_bytes(codec, HESAI_F64, step, vals, width=w, height=h, row_step=w * step + 8,
                                     data=padded), False)
    s = cloud_sweep(m)
    np.testing.assert_array_equal(s.xyz, np.stack([vals[a] for a in "xyz"], 1).astype(np.float32))
    whole = np.floor(ts)
    expect = whole.astype(np.int64) * 10**9 + np.rint((ts - whole) * 1e9).astype(np.int64) - STAMP
    np.testing.assert_array_equal(s.time_offset_ns, expect)
    assert np.all(np.abs(s.time_offset_ns - np.array([0, 10, 20, 30, 50, 60, 70, 99]) * 1_000_000) < 1000)


@pytest.mark.parametrize("name, dtype, values, expect", [
    ("t", "u4", [0, 50_000_000, 99_000_000], PointTime("t", "ns", True)),
    ("time", "f4", [-0.099, -0.05, 0.0], PointTime("time", "s", True)),
    ("timestamp", "f8", [1.7e9, 1.7e9 + 0.05, 1.7e9 + 0.1], PointTime("timestamp", "s", False)),
    ("offset_time", "u4", [0, 1000, 2000], PointTime("offset_time", "ns", True)),
    ("time_stamp", "u8", [1_700_000_000_000_000_000] * 3, PointTime("time_stamp", "ns", False)),
    ("timestamp", "u8", [1_700_000_000_000_000] * 3, PointTime("timestamp", "us", False)),
])
def test_time_rule(name, dtype, values, expect):
    rec = np.zeros(3, [("x", "f4"), (name, dtype)])
    rec[name] = values
    assert detect_time(rec, STAMP) == expect


def test_time_rule_refuses_ambiguity_and_parses_overrides():
    rec = np.zeros(3, [("t", "u8")])
    rec["t"] = 5_000_000_000_000  # neither an offset under 1 s in ns nor a UNIX time in µs or ns
    with pytest.raises(MessageError, match="give its unit"):
        detect_time(rec, STAMP)
    assert detect_time(np.zeros(2, [("x", "f4")]), STAMP) == PointTime(None)
    assert parse_point_time("t:us:relative") == PointTime("t", "us", True)
    assert parse_point_time("none") == PointTime(None)
    for bad in ("t:ns", "t:min:relative", ":ns:relative", "t:ns:later"):
        with pytest.raises(ValueError, match="FIELD:UNIT"):
            parse_point_time(bad)


@pytest.mark.parametrize("fields, step, match", [
    ((("x", 0, 7), ("y", 4, 7), ("z", 8, 7), ("intensity", 12, 7)), 12, "inside point_step 12"),
    ((("x", 0, 7), ("y", 2, 7), ("z", 8, 7)), 12, "not to overlap"),
    ((("x", 0, 7), ("y", 4, 7), ("z", 8, 9)), 12, "datatype 9"),
    ((("x", 0, 7), ("y", 4, 7), ("x", 8, 7)), 12, "one field named 'x'"),
    ((("x", 0, 7), ("y", 4, 7)), 8, "scalar field 'z'"),
])
def test_pointcloud_layouts_that_do_not_fit(fields, step, match):
    n = 4
    store = typestore(False)
    pf = [msg(store, "sensor_msgs/msg/PointField", name=f[0], offset=f[1], datatype=f[2], count=1) for f in fields]
    raw = serialise(False, True, "sensor_msgs/msg/PointCloud2", header=header(False), height=1, width=n, fields=pf,
                    is_bigendian=False, point_step=step, row_step=step * n, data=np.zeros(step * n, np.uint8),
                    is_dense=True)
    with pytest.raises(MessageError, match=match):
        cloud_sweep(read_pointcloud2(raw, False))


def test_pointcloud_sizes_that_do_not_fit():
    fields = (("x", 0, 7), ("y", 4, 7), ("z", 8, 7))
    short = cloud_bytes(CODECS[1], fields, 12, {"x": np.zeros(4)}, data=bytes(40))
    with pytest.raises(MessageError, match="found 40"):
        cloud_sweep(read_pointcloud2(short, False))
    narrow = cloud_bytes(CODECS[1], fields, 12, {"x": np.zeros(4)}, row_step=40)
    with pytest.raises(MessageError, match="row_step 40 >= width 4"):
        cloud_sweep(read_pointcloud2(narrow, False))
    raw = bytearray(cloud_bytes(CODECS[1], fields, 12, {"x": np.zeros(4)}))
    with pytest.raises(MessageError, match="more bytes"):  # the data length says more than the message holds
        read_pointcloud2(bytes(raw[:-10]), False)
    with pytest.raises(MessageError, match="CDR encapsulation"):
        read_pointcloud2(b"\x01\x00\x00\x00" + bytes(raw[4:]), False)


@pytest.mark.parametrize("codec", CODECS[:2], ids=["ros1", "cdr"])
def test_velodyne_scan_packets_are_strided_views(codec):
    _, ros1, little = codec
    store = typestore(ros1)
    rng = np.random.default_rng(3)
    packets = rng.integers(0, 256, (5, 1206), dtype=np.uint8)
    stamps = STAMP + np.arange(5) * 1_327_104 + rng.integers(0, 999, 5)
    items = [msg(store, "velodyne_msgs/msg/VelodynePacket", data=p,
                 stamp=msg(store, "builtin_interfaces/msg/Time", sec=int(t) // 10**9, nanosec=int(t) % 10**9))
             for p, t in zip(packets, stamps)]
    raw = serialise(ros1, little, "velodyne_msgs/msg/VelodyneScan", header=header(ros1), packets=items)
    scan = read_velodyne_scan(raw, ros1)
    np.testing.assert_array_equal(scan.packets, packets)
    np.testing.assert_array_equal(scan.packet_stamps_ns, stamps)
    assert scan.packets.strides == ((1214 if ros1 else 1216), 1)
    with pytest.raises(MessageError, match="Velodyne packets"):
        read_velodyne_scan(raw[:-100], ros1)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "rgba8", "bgra8", "mono8"])
def test_image_encodings(encoding):
    rng = np.random.default_rng(4)
    h, w = 5, 7
    ch = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}[encoding]
    pix = rng.integers(0, 256, (h, w, ch), dtype=np.uint8)
    step = w * ch + 3  # padded rows
    data = np.zeros((h, step), np.uint8)
    data[:, :w * ch] = pix.reshape(h, -1)
    raw = serialise(False, True, "sensor_msgs/msg/Image", header=header(False), height=h, width=w, encoding=encoding,
                    is_bigendian=0, step=step, data=data.ravel())
    img = read_image(raw, False)
    assert (img.width, img.height, img.step, img.encoding) == (w, h, step, encoding)
    out = image_pixels(img)
    expect = {"rgb8": pix, "bgr8": pix[:, :, ::-1], "rgba8": pix[:, :, :3], "bgra8": pix[:, :, 2::-1],
              "mono8": pix[:, :, 0]}[encoding]
    np.testing.assert_array_equal(out, expect)
    bad = serialise(False, True, "sensor_msgs/msg/Image", header=header(False), height=h, width=w, encoding="16UC1",
                    is_bigendian=0, step=step, data=data.ravel())
    with pytest.raises(MessageError, match="'16UC1'"):
        image_pixels(read_image(bad, False))


@pytest.mark.parametrize("pattern, code", [("RGGB", cv2.COLOR_BayerBG2RGB), ("BGGR", cv2.COLOR_BayerRG2RGB),
                                           ("GBRG", cv2.COLOR_BayerGR2RGB), ("GRBG", cv2.COLOR_BayerGB2RGB)])
def test_debayer_matches_opencv_bilinear(pattern, code):
    """cv_bridge maps bayer_rggb8 to OpenCV's BayerBG (OpenCV names the pattern one pixel in);
    inside the 1-pixel border (OpenCV copies its neighbour, Fathom mirrors) the two agree."""
    raw = np.random.default_rng(5).integers(0, 256, (24, 32), dtype=np.uint8)
    ours = debayer(raw, pattern)
    np.testing.assert_array_equal(ours[1:-1, 1:-1], cv2.cvtColor(raw, code)[1:-1, 1:-1])
    # the samples of each colour are kept as they are
    r0, c0 = divmod(pattern.index("R"), 2)
    np.testing.assert_array_equal(ours[r0::2, c0::2, 0], raw[r0::2, c0::2])


def test_compressed_images_keep_their_jpeg():
    jpeg = encode_jpeg(np.full((8, 8, 3), 90, np.uint8))
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8"):
        raw = serialise(True, True, "sensor_msgs/msg/CompressedImage", header=header(True), format=fmt,
                        data=np.frombuffer(jpeg, np.uint8))
        assert compressed_jpeg(read_compressed_image(raw, True)) == jpeg
    png = serialise(True, True, "sensor_msgs/msg/CompressedImage", header=header(True), format="png",
                    data=np.frombuffer(b"\x89PNG", np.uint8))
    with pytest.raises(MessageError, match="'png'"):
        compressed_jpeg(read_compressed_image(png, True))


def camera_info(model, d, *, binning=0, p=None, ros1=False):
    store = typestore(ros1)
    k = [800.0, 0.0, 640.5, 0.0, 790.0, 360.25, 0.0, 0.0, 1.0]
    roi = msg(store, "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg(store, "sensor_msgs/msg/CameraInfo", header=header(ros1), height=720, width=1280, distortion_model=model,
               d=np.array(d, float), k=np.array(k), r=np.eye(3).ravel(),
               p=np.array(p or [700.0, 0, 600.0, 0, 0, 700.0, 350.0, 0, 0, 0, 1, 0]), binning_x=binning, binning_y=0,
               roi=roi)


def _project(intrinsics, pts):
    cam = Camera("c", intrinsics, SE3.identity())
    return project_points(pts, [cam]).uv[0]


@pytest.mark.parametrize("model, d", [("plumb_bob", [-0.28, 0.07, 0.0008, -0.0004, 0.01]),
                                      ("rational_polynomial", [0.3, -0.1, 0.001, 0.002, 0.01, 0.5, -0.05, 0.02])])
def test_camera_info_brown_conrady_projects_like_opencv(model, d):
    k = camera_intrinsics(camera_info(model, d, ros1=model == "plumb_bob"))
    assert (k.model, k.distortion, k.width, k.height) == ("brown_conrady", tuple(d), 1280, 720)
    pts = np.random.default_rng(6).uniform([-3, -2, 4], [3, 2, 20], (200, 3))
    cv, _ = cv2.projectPoints(pts, np.zeros(3), np.zeros(3), k.K, np.array(d))
    np.testing.assert_allclose(_project(k, pts), cv[:, 0], atol=1e-6)


def test_camera_info_equidistant_projects_like_opencv_fisheye():
    d = [0.02, -0.005, 0.001, -0.0002]
    k = camera_intrinsics(camera_info("equidistant", d))
    assert (k.model, k.distortion) == ("kannala_brandt", tuple(d))
    pts = np.random.default_rng(7).uniform([-8, -6, 1], [8, 6, 10], (200, 1, 3))
    cv, _ = cv2.fisheye.projectPoints(pts, np.zeros(3), np.zeros(3), k.K, np.array(d))
    np.testing.assert_allclose(_project(k, pts[:, 0]), cv[:, 0], atol=1e-6)


def test_camera_info_rectified_and_refused():
    k = camera_intrinsics(camera_info("plumb_bob", [0.0] * 5))
    assert (k.model, k.fx, k.fy, k.cx, k.cy) == ("pinhole", 800.0, 790.0, 640.5, 360.25)
    rect = camera_intrinsics(camera_info("plumb_bob", [-0.2, 0.1, 0, 0, 0]), rectified_topic=True)
    assert (rect.model, rect.fx, rect.fy, rect.cx, rect.cy, rect.distortion) == (
        "pinhole", 700.0, 700.0, 600.0, 350.0, ())
    with pytest.raises(MessageError, match="'double_sphere'"):
        camera_intrinsics(camera_info("double_sphere", [0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(MessageError, match="binning 2x0"):
        camera_intrinsics(camera_info("plumb_bob", [0.0] * 5, binning=2))
