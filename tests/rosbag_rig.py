"""A simulated drive written as the ROS bag a team records (tests and benchmarks), through
rosbags' own writers: ROS 1 ``.bag``, ROS 2 sqlite3 or MCAP.

Topics (``NAME`` the rig's sensor name):

- ``/NAME/points``: ``sensor_msgs/PointCloud2`` per sweep, header stamp = the sweep's
  timestamp, frame ``name_lower``, in one of :data:`LAYOUTS`;
- ``/NAME/velodyne_packets``: ``velodyne_msgs/VelodyneScan`` per sweep (the drive must use
  ``server.simulate.velodyne_rig``), packets from ``server.simulate.velodyne_firings``;
- ``/NAME/image_raw`` (``rgb8`` or ``bgr8`` Image) or ``/NAME/image_raw/compressed`` (JPEG,
  ``formats.jpeg.encode_jpeg`` at quality 92 as ``write_drive_log``), exposed
  ``EXPOSURE_OFFSET_NS`` after each sweep start, and ``/NAME/camera_info`` beside each image;
- ``/tf_static``: ``base_link → frame`` per sensor (cameras through ``camera_mount``, an
  identity link, so the chain has two levels); ``/odom``: ``nav_msgs/Odometry`` of
  ``base_link`` in ``map`` at every GNSS/INS sample (``drive.gnss``).

Log times are the header stamps plus :data:`LOG_DELAY_NS` (a scan: its last packet's stamp).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from engine.sim.road import Drive
from engine.sweep import Sweep
from formats.jpeg import encode_jpeg
from formats.ros.bag import SHIPPED_MSGS
from server.simulate import EXPOSURE_OFFSET_NS, velodyne_firings

Storage = Literal["ros1", "sqlite3", "mcap"]
LOG_DELAY_NS = 2_000_000
LAYOUTS = ("ouster", "livox_f64_be")
F32, F64, U8, U16, U32 = 7, 8, 2, 4, 6
_NP = {F32: "f4", F64: "f8", U8: "u1", U16: "u2", U32: "u4"}
# (fields (name, offset, datatype), point_step, big-endian): Ouster's layout with its padding,
# and float64 positions in big-endian records with a Livox-style "offset_time" and "line"
_LAYOUT = {
    "ouster": ((("x", 0, F32), ("y", 4, F32), ("z", 8, F32), ("intensity", 16, F32), ("t", 20, U32),
                ("reflectivity", 24, U16), ("ring", 26, U16)), 48, False),
    "livox_f64_be": ((("x", 0, F64), ("y", 8, F64), ("z", 16, F64), ("intensity", 24, F32),
                      ("offset_time", 28, U32), ("line", 32, U8)), 40, True),
}


def typestore(ros1: bool) -> Any:
    """rosbags' Noetic or Humble store with Fathom's velodyne_msgs definitions (and
tf2_msgs/TFMessage, which the Noetic store lacks)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS1_NOETIC if ros1 else Stores.ROS2_HUMBLE)
    types: dict = {}
    if "tf2_msgs/msg/TFMessage" not in store.fielddefs:  # not in rosbags' Noetic store
        types.update(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    for name, text in SHIPPED_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def msg(store: Any, typename: str, **values: Any) -> Any:
    """A message of ``typename``; field names matched case-insensitively (ROS 1's ``K``)."""
    names = {f[0].lower(): f[0] for f in store.fielddefs[typename][1]}
    return store.types[typename](**{names[k.lower()]: v for k, v in values.items()})


class BagWriter:
    """rosbags' writer of one storage, one connection per topic, messages serialised here."""

    def __init__(self, path: Path, storage: Storage, compression: str | None = None) -> None:
        """``compression``: a ROS 2 bag's ``"file"`` or ``"message"`` zstd compression."""
        from rosbags.rosbag1 import Writer as Writer1
        from rosbags.rosbag2 import CompressionFormat, CompressionMode, StoragePlugin
        from rosbags.rosbag2 import Writer as Writer2

        self.ros1 = storage == "ros1"
        self.store = typestore(self.ros1)
        if self.ros1:
            self.writer = Writer1(path)
        else:
            plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer2(path, version=9, storage_plugin=plugin)
            if compression is not None:
                self.writer.set_compression(CompressionMode[compression.upper()], CompressionFormat.ZSTD)
        self.writer.open()
        self.conns: dict[str, Any] = {}

    def header(self, stamp_ns: int, frame: str) -> Any:
        stamp = msg(self.store, "builtin_interfaces/msg/Time", sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
        extra = {"seq": 0} if self.ros1 else {}
        return msg(self.store, "std_msgs/msg/Header", stamp=stamp, frame_id=frame, **extra)

    def write(self, topic: str, typename: str, log_ns: int, message: Any) -> None:
        if topic not in self.conns:
            self.conns[topic] = self.writer.add_connection(topic, typename, typestore=self.store)
        ser = self.store.serialize_ros1 if self.ros1 else self.store.serialize_cdr
        self.writer.write(self.conns[topic], int(log_ns), bytes(ser(message, typename)))

    def close(self) -> None:
        self.writer.close()


def cloud_message(w: BagWriter, sweep: Sweep, frame: str, layout: str, nan_points: int = 0) -> Any:
    """A PointCloud2 of ``sweep`` in ``layout`` (per-point time = ``time_offset_ns``), with
    ``nan_points`` NaN rows spread in (then ``is_dense`` false)."""
    fields, step, big = _LAYOUT[layout]
    order = ">" if big else "<"
    dt = np.dtype({"names": [f[0] for f in fields], "formats": [order + _NP[f[2]] for f in fields],
                   "offsets": [f[1] for f in fields], "itemsize": step})
    n = len(sweep)
    rec = np.zeros(n + nan_points, dt)
    rows = np.sort(np.random.default_rng(n).choice(n + nan_points, n, replace=False)) if nan_points else slice(None)
    for k, axis in enumerate("xyz"):
        rec[axis] = np.nan
        rec[axis][rows] = sweep.xyz[:, k]
    names = set(dt.names)
    time_field = "t" if "t" in names else "offset_time"
    ring_field = "ring" if "ring" in names else "line"
    rec["intensity"][rows] = sweep.intensity
    rec[time_field][rows] = sweep.time_offset_ns
    rec[ring_field][rows] = sweep.ring
    if "reflectivity" in names:
        rec["reflectivity"][rows] = np.rint(sweep.intensity)
    point_fields = [msg(w.store, "sensor_msgs/msg/PointField", name=f[0], offset=f[1], datatype=f[2], count=1)
                    for f in fields]
    return msg(w.store, "sensor_msgs/msg/PointCloud2", header=w.header(sweep.timestamp_ns, frame), height=1,
               width=n + nan_points, fields=point_fields, is_bigendian=big, point_step=step,
               row_step=step * (n + nan_points), data=np.frombuffer(rec.tobytes(), np.uint8),
               is_dense=nan_points == 0)


def _pose(w: BagWriter, typename: str, q: np.ndarray, t: np.ndarray) -> Any:
    vec = "geometry_msgs/msg/Vector3" if typename.endswith("Transform") else "geometry_msgs/msg/Point"
    rot = msg(w.store, "geometry_msgs/msg/Quaternion", x=q[1], y=q[2], z=q[3], w=q[0])
    pos = msg(w.store, vec, x=t[0], y=t[1], z=t[2])
    key = ("translation", "rotation") if typename.endswith("Transform") else ("position", "orientation")
    return msg(w.store, typename, **{key[0]: pos, key[1]: rot})


def camera_info(w: BagWriter, cam: Any, stamp_ns: int, frame: str) -> Any:
    k = cam.intrinsics
    kmat = [k.fx, k.skew, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    model, d = ("equidistant", list(k.distortion)) if k.model == "kannala_brandt" else ("plumb_bob", [0.0] * 5)
    roi = msg(w.store, "sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return msg(w.store, "sensor_msgs/msg/CameraInfo", header=w.header(stamp_ns, frame), height=k.height, width=k.width,
               distortion_model=model, d=np.array(d), k=np.array(kmat), r=np.eye(3).ravel(),
               p=np.array([k.fx, k.skew, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]), binning_x=0,
               binning_y=0, roi=roi)


def write_drive_bag(path: str | Path, drive: Drive, storage: Storage, *, lidar: str = "points",
                    layouts: dict[str, str] | None = None, images: dict[str, str] | None = None,
                    nan_points: int = 0, odometry: bool = True,
                    jpegs: Callable[[str, int], bytes] | None = None) -> Path:
    """Write ``drive`` as a bag (module docstring). ``lidar``: ``"points"`` or
    ``"velodyne"``; ``layouts``: LiDAR name → one of :data:`LAYOUTS` (default the first);
    ``images``: camera name → ``"rgb8"``, ``"bgr8"`` or ``"compressed"`` (default: every
    camera compressed); ``jpegs(camera, frame)``: the compressed images' bytes (default:
    rendered and encoded here), e.g. the files of the drive's raw log."""
    path = Path(path)
    w = BagWriter(path, storage)
    t0 = int(drive.frame_times_ns[0])
    tfs = [("base_link", "camera_mount", np.array([1.0, 0, 0, 0]), np.zeros(3))]
    for l in drive.lidars:
        tfs.append(("base_link", l.name.lower(), l.ego_from_lidar.rotation, l.ego_from_lidar.translation))
    images = {c.name: "compressed" for c in drive.cameras} if images is None else images
    for c in drive.cameras:
        if c.name in images:
            p = c.ego_from_camera
            tfs.append(("camera_mount", f"{c.name.lower()}_optical", p.rotation, p.translation))
    transforms = [msg(w.store, "geometry_msgs/msg/TransformStamped", header=w.header(t0, parent), child_frame_id=child,
                      transform=_pose(w, "geometry_msgs/msg/Transform", q, t)) for parent, child, q, t in tfs]
    w.write("/tf_static", "tf2_msgs/msg/TFMessage", t0, msg(w.store, "tf2_msgs/msg/TFMessage", transforms=transforms))
    if odometry:
        zero = np.zeros(36)
        for ts, t, q in zip(drive.gnss.timestamps_ns, drive.gnss.translation, drive.gnss.rotation):
            pose = msg(w.store, "geometry_msgs/msg/PoseWithCovariance",
                       pose=_pose(w, "geometry_msgs/msg/Pose", q, t), covariance=zero)
            twist = msg(w.store, "geometry_msgs/msg/TwistWithCovariance", covariance=zero, twist=msg(
                w.store, "geometry_msgs/msg/Twist",
                linear=msg(w.store, "geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0),
                angular=msg(w.store, "geometry_msgs/msg/Vector3", x=0.0, y=0.0, z=0.0)))
            w.write("/odom", "nav_msgs/msg/Odometry", int(ts) + LOG_DELAY_NS,
                    msg(w.store, "nav_msgs/msg/Odometry", header=w.header(int(ts), "map"), child_frame_id="base_link",
                        pose=pose, twist=twist))
    layouts = layouts or {}
    for i, t in enumerate(drive.frame_times_ns.tolist()):
        for l in drive.lidars:
            sweep = drive.sweeps[l.name][i]
            if lidar == "velodyne":
                _write_scan(w, l, sweep)
            else:
                m = cloud_message(w, sweep, l.name.lower(), layouts.get(l.name, LAYOUTS[0]), nan_points)
                w.write(f"/{l.name}/points", "sensor_msgs/msg/PointCloud2", t + LOG_DELAY_NS, m)
        for c in drive.cameras:
            if c.name in images:
                jpeg = None if jpegs is None else jpegs(c.name, i)
                _write_image(w, drive, c, t + EXPOSURE_OFFSET_NS, images[c.name], jpeg)
    w.close()
    return path


def _write_scan(w: BagWriter, lidar: Any, sweep: Sweep) -> None:
    from formats.velodyne import velodyne_packets
    from server.simulate import _velodyne_model_of

    packets, times = velodyne_packets(velodyne_firings(sweep, lidar.pattern), _velodyne_model_of(lidar))
    items = [msg(w.store, "velodyne_msgs/msg/VelodynePacket",
                 stamp=msg(w.store, "builtin_interfaces/msg/Time", sec=int(t) // 10**9, nanosec=int(t) % 10**9),
                 data=p) for p, t in zip(packets, times)]
    last = int(times[-1])
    w.write(f"/{lidar.name}/velodyne_packets", "velodyne_msgs/msg/VelodyneScan", last + LOG_DELAY_NS,
            msg(w.store, "velodyne_msgs/msg/VelodyneScan", header=w.header(last, lidar.name.lower()), packets=items))


def _write_image(w: BagWriter, drive: Drive, cam: Any, t_img: int, kind: str, jpeg: bytes | None) -> None:
    if jpeg is not None and kind != "compressed":
        raise ValueError(f"JPEG bytes given for the {kind} images of {cam.name}")
    frame = f"{cam.name.lower()}_optical"
    rgb = drive.render(cam.name, t_img).rgb if jpeg is None else None
    head = w.header(t_img, frame)
    if kind == "compressed":
        data = encode_jpeg(rgb, quality=92) if jpeg is None else jpeg
        w.write(f"/{cam.name}/image_raw/compressed", "sensor_msgs/msg/CompressedImage", t_img + LOG_DELAY_NS,
                msg(w.store, "sensor_msgs/msg/CompressedImage", header=head, format="jpeg",
                    data=np.frombuffer(data, np.uint8)))
    else:
        pixels = rgb[:, :, ::-1] if kind == "bgr8" else rgb
        h, wd, _ = rgb.shape
        w.write(f"/{cam.name}/image_raw", "sensor_msgs/msg/Image", t_img + LOG_DELAY_NS,
                msg(w.store, "sensor_msgs/msg/Image", header=head, height=h, width=wd, encoding=kind,
                    is_bigendian=0, step=wd * 3, data=np.ascontiguousarray(pixels).reshape(-1)))
    w.write(f"/{cam.name}/camera_info", "sensor_msgs/msg/CameraInfo", t_img + LOG_DELAY_NS,
            camera_info(w, cam, t_img, frame))
