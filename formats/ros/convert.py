"""A bag → a Fathom raw log (:mod:`formats.raw_log`), in two passes over the bag.

Pass 1 (:func:`formats.ros.index.index_bag`) times every message and decodes the small
ones; the frames are then cut and matched (:mod:`formats.ros.frames`), the rig assembled —
extrinsics from ``/tf_static`` to the vehicle frame (:mod:`formats.ros.tf`), lenses from
CameraInfo (:mod:`formats.ros.images`), the ego poses (:mod:`formats.ros.poses`) — and pass
2 writes the frames' data:

- PointCloud2 → ``lidar/NAME/NNNNNN.pcd`` (binary PCD, the sensor frame, ``time_offset_ns``
  from the frame's timestamp);
- VelodyneScan → ``lidar/NAME.pcap``: every packet, its record time the packet's stamp,
  decoded at prepare time by ``formats.velodyne`` (the ``calibration`` topic option is copied
  beside it as ``lidar/NAME.yaml``);
- CompressedImage → ``camera/NAME/NNNNNN.jpg``, the JPEG bytes as recorded; Image → the same
  path, encoded once (``jpeg_quality``).

A message that cannot be decoded leaves its frame without that sensor, reported (or raises
its FormatError with ``strict``); a frame left with no LiDAR data is dropped, reported.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from engine.camera import Camera
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.jpeg import encode_jpeg
from formats.pcap import GLOBAL_HEADER_SIZE, udp_pcap_bytes
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, write_log_manifest, write_pose_table
from formats.ros.bag import Bag, bag_name
from formats.ros.frames import FramePlan, plan_frames
from formats.ros.images import camera_intrinsics, compressed_jpeg, image_pixels
from formats.ros.index import BagIndex, Issue, SensorIndex, index_bag
from formats.ros.options import CAMERA_INFO, IMU, NAV_SAT_FIX, ODOMETRY, BagOptions, camera_info_topic
from formats.ros.pointcloud import PointTime, cloud_sweep
from formats.ros.poses import (
    EgoPoses,
    at_rest,
    choose_pose_topic,
    navsat_poses,
    odometry_poses,
    pose_stamped_poses,
    tf_poses,
)
from formats.ros.tf import TransformError
from formats.ros.wire import MessageError, read_compressed_image, read_image, read_pointcloud2, read_velodyne_scan
from formats.velodyne import MODELS, get_model

SOURCE_FILE = "rosbag_source.json"


@dataclass
class Conversion:
    """What a conversion wrote: the log directory, its frames, the pose source and the issues."""

    log_dir: Path
    frames: int
    poses: str
    issues: list[Issue] = field(default_factory=list)
    start_ns: int = 0

    def lines(self) -> list[str]:
        return [f"poses: {self.poses}"] + [i.line(self.start_ns) for i in self.issues]


def _fail(idx: BagIndex, s: SensorIndex, what: str) -> FormatError:
    k = s.index[0] if s.index else 0
    return idx.fail(s.topic, k, what)


def sensor_pose(idx: BagIndex, s: SensorIndex) -> SE3:
    """``ego_from_sensor`` of a sensor topic through ``/tf_static`` (FormatError naming it)."""
    frame = idx.options.option(s.topic, "frame") or s.frame_id
    base = idx.options.base_frame
    try:
        return idx.tree.static_transform(base, frame)
    except TransformError as exc:
        raise _fail(idx, s, f"frame_id {frame!r}: {exc}; name the vehicle frame with --base-frame, the sensor's "
                            f"frame with --topic-option {s.topic} frame=FRAME, or leave the topic out with "
                            "--topics") from None


def camera(idx: BagIndex, s: SensorIndex) -> Camera:
    """The camera of an image topic: CameraInfo (beside the topic, else one with the same
    frame_id) and its extrinsic; FormatError naming what is missing."""
    infos = [t for t, i in idx.bag.topics.items() if i.msgtype == CAMERA_INFO]
    info_topic = camera_info_topic(s.topic, idx.options, infos)
    if info_topic is None:
        same = [t for t, f in idx.info_frames.items() if f == s.frame_id]
        info_topic = same[0] if len(same) == 1 else None
    if info_topic is None or info_topic not in idx.camera_infos:
        raise _fail(idx, s, f"a sensor_msgs/CameraInfo for the camera (looked for camera_info beside the topic and "
                            f"one with frame_id {s.frame_id!r} among {infos}); name it with --topic-option "
                            f"{s.topic} camera_info=TOPIC")
    try:
        fov = idx.options.number(s.topic, "max_fov_deg")
        k = camera_intrinsics(idx.camera_infos[info_topic], "image_rect" in s.topic,
                              None if fov is None else float(np.radians(fov)), s.size)
    except MessageError as exc:
        raise FormatError(idx.bag.path, None, f"topic {info_topic} message #0: {exc}") from None
    if s.size is not None and s.size != (k.width, k.height):
        raise _fail(idx, s, f"images of the size {k.width}x{k.height} of {info_topic}, found {s.size[0]}x{s.size[1]}")
    row_ns = int(idx.options.number(s.topic, "row_readout_ns") or 0)
    return Camera(s.name, k, sensor_pose(idx, s), shutter="rolling" if row_ns else "global", row_readout_ns=row_ns)


def ego_poses(idx: BagIndex, notes: list[str]) -> EgoPoses:
    """The pose source of :mod:`formats.ros.poses` applied to the bag."""
    bag, base = idx.bag, idx.options.base_frame
    types = {t: i.msgtype for t, i in bag.topics.items()}
    counts = {t: i.count for t, i in bag.topics.items()}
    dynamic = bool(idx.tree.dynamic_chain(base))
    topic = choose_pose_topic(types, counts, idx.options.pose_topic, dynamic)
    try:
        if topic is None:
            return at_rest(bag.start_ns - 1_000_000_000, bag.end_ns + 1_000_000_000)
        if topic == "/tf" or types[topic] == "tf2_msgs/msg/TFMessage":
            return tf_poses(idx.tree, base)
        msgs = idx.pose_messages.get(topic, [])
        if not msgs:
            raise ValueError(f"messages on {topic}")
        if types[topic] == ODOMETRY:
            return odometry_poses(msgs, idx.tree, base, topic)
        if types[topic] == NAV_SAT_FIX:
            imu = max((t for t in idx.pose_messages if types[t] == IMU), default=None,
                      key=lambda t: (len(idx.pose_messages[t]), t))
            imu_msgs = idx.pose_messages.get(imu, []) if imu is not None else []
            return navsat_poses(msgs, imu_msgs, idx.tree, base, topic, notes)
        return pose_stamped_poses(msgs, topic)
    except ValueError as exc:
        raise FormatError(bag.path, None, f"ego poses from {topic}: {exc}") from None


def _velodyne_model(idx: BagIndex, s: SensorIndex) -> str:
    given = idx.options.option(s.topic, "model")
    if given is not None:
        return get_model(given).name
    by_id = {m.product_id: m.name for m in MODELS.values() if m.product_id is not None}
    known = {p: n for p, n in s.product_ids.items() if p in by_id}
    if not known:
        raise _fail(idx, s, f"Velodyne packets with a known product id, found {sorted(s.product_ids)}: name the "
                            f"model with --topic-option {s.topic} model=MODEL")
    return by_id[max(known, key=known.__getitem__)]


@dataclass
class FirstPass:
    """What the first pass gives a conversion and a direct read alike: the index, the frame
    plan, the ego poses, the LiDAR topics and the cameras, and the issues so far."""

    idx: BagIndex
    plan: FramePlan
    poses: EgoPoses
    lidars: list[SensorIndex]
    cameras: list[Camera]
    issues: list[Issue]


def first_pass(bag: Bag, options: BagOptions, strict: bool = False) -> FirstPass:
    """Index the open ``bag`` and plan its frames, rig and poses (FormatError naming what is
    missing; with ``strict`` the first unreadable message's too)."""
    idx = index_bag(bag, options)
    if strict:
        for issue in idx.issues:
            if issue.error is not None:
                raise issue.error
    plan, frame_issues = plan_frames(idx)
    notes: list[str] = []
    poses = ego_poses(idx, notes)
    lidars, cameras = [], []
    for s in idx.sensors.values():
        if s.is_lidar:
            lidars.append(s)
        else:
            cameras.append(camera(idx, s))
    return FirstPass(idx, plan, poses, lidars, cameras,
                     idx.issues + frame_issues + [Issue("(poses)", None, n) for n in notes])


def pose_issues(poses: EgoPoses, frames_ns: list[int]) -> list[Issue]:
    """A frame whose timestamp lies outside the pose track, reported."""
    track = poses.track
    return [Issue("(poses)", t, f"frame {i} lies outside the pose track [{track.start_ns}, {track.end_ns}] ns")
            for i, t in enumerate(frames_ns) if not track.start_ns <= t <= track.end_ns]


def bag_to_raw_log(bag_path: str | os.PathLike, log_dir: str | os.PathLike, options: BagOptions = BagOptions(),
                   *, strict: bool = False, log_id: str | None = None) -> Conversion:
    """Convert a bag into a raw log at ``log_dir`` (see the module docstring)."""
    root = Path(log_dir)
    with Bag(bag_path) as bag:
        rig = first_pass(bag, options, strict)
        work = _fresh(root)
        log_lidars = [_log_lidar(rig.idx, s, i, work) for i, s in enumerate(rig.lidars)]
        frames, issues = _write_frames(rig.idx, rig.plan, work, strict)
    issues = rig.issues + issues + pose_issues(rig.poses, [f["timestamp_ns"] for f in frames])
    write_pose_table(work, rig.poses.track)
    write_log_manifest(work, log_id=log_id or bag_name(bag_path), origin=rig.poses.origin,
                       lidars=log_lidars, cameras=rig.cameras, frames=frames)
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    return Conversion(root, len(frames), rig.poses.source, issues, rig.idx.start_ns)


def _fresh(root: Path) -> Path:
    """An empty work directory beside ``root``, renamed to it once the log is complete;
    ValueError when ``root`` holds something other than a raw log (it would be replaced)."""
    if root.exists() and (not root.is_dir() or (any(root.iterdir()) and not (root / "log.json").exists())):
        raise ValueError(f"{root} exists and is not a raw log: the conversion replaces its output directory")
    work = root.with_name(root.name + ".converting")
    if work.exists():
        shutil.rmtree(work)  # left by a conversion that did not finish
    work.mkdir(parents=True)
    return work


def _log_lidar(idx: BagIndex, s: SensorIndex, sensor_id: int, root: Path) -> LogLidar:
    pose = sensor_pose(idx, s)
    if s.msgtype != "velodyne_msgs/msg/VelodyneScan":
        return LogLidar(s.name, sensor_id, pose, "pcd")
    cal = idx.options.path(s.topic, "calibration")
    cal_rel = None
    if cal is not None:
        cal_rel = Path(f"lidar/{s.name}.yaml")
        (root / cal_rel).parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(cal, root / cal_rel)
        except OSError as exc:
            raise FormatError(cal, None, f"a readable Velodyne calibration YAML ({exc.strerror})") from None
    return LogLidar(s.name, sensor_id, pose, "velodyne_pcap", Path(f"lidar/{s.name}.pcap"), _velodyne_model(idx, s),
                    cal_rel)


def _write_frames(idx: BagIndex, plan: FramePlan, root: Path, strict: bool) -> tuple[list[dict], list[Issue]]:
    """Pass 2: the frames' files; returns the manifest's frame entries and the issues."""
    ros1, quality = idx.bag.ros1, idx.options.jpeg_quality
    wanted: dict[tuple[str, int], list[int]] = {}  # (topic, message index) -> frames
    for topic, rows in plan.rows.items():
        s = idx.sensors[topic]
        for f, r in enumerate(rows.tolist()):
            if r >= 0:
                wanted.setdefault((topic, s.index[r]), []).append(f)
    entries: list[dict[str, Any]] = [{"timestamp_ns": int(t), "lidar": {}, "images": {}} for t in plan.times_ns]
    scans = [t for t, s in idx.sensors.items() if s.msgtype == "velodyne_msgs/msg/VelodyneScan"]
    good = {t: set(idx.sensors[t].index) for t in scans}
    stamps: dict[str, list[np.ndarray]] = {t: [] for t in scans}
    if scans:
        (root / "lidar").mkdir(exist_ok=True)
    pcaps = {t: open(root / f"lidar/{idx.sensors[t].name}.pcap", "wb") for t in scans}
    issues: list[Issue] = []
    try:
        for topic, k, log_ns, raw in idx.bag.messages(idx.sensors, stop_ns=idx.stop_log_ns):
            s = idx.sensors[topic]
            try:
                if topic in pcaps:
                    if k in good[topic]:  # the others are reported by the first pass
                        scan = read_velodyne_scan(raw, ros1)
                        data = udp_pcap_bytes(scan.packets, scan.packet_stamps_ns, nanosecond=True)
                        pcaps[topic].write(data if not stamps[topic] else data[GLOBAL_HEADER_SIZE:])
                        stamps[topic].append(scan.packet_stamps_ns)
                    continue
                for f in wanted.get((topic, k), []):
                    _write_one(root, s, entries[f], f, raw, ros1, quality)
            except (MessageError, ValueError) as exc:
                err = idx.fail(topic, k, str(exc))
                if strict:
                    raise err from None
                issues.append(Issue(topic, log_ns, f"message #{k} left out: {exc}", err))
    finally:
        for fh in pcaps.values():
            fh.close()
    for topic in scans:
        name = idx.sensors[topic].name
        times = np.sort(np.concatenate(stamps[topic])) if stamps[topic] else np.zeros(0, np.int64)
        if not stamps[topic]:
            (root / f"lidar/{name}.pcap").write_bytes(udp_pcap_bytes(np.zeros((0, 1206), np.uint8), times,
                                                                     nanosecond=True))
        counts = np.searchsorted(times, plan.windows_ns[:, 1]) - np.searchsorted(times, plan.windows_ns[:, 0])
        for f, ((a, b), n) in enumerate(zip(plan.windows_ns.tolist(), counts.tolist())):
            if n:
                entries[f]["lidar"][name] = {"start_ns": int(a), "end_ns": int(b)}
            else:
                issues.append(Issue(topic, int(a), f"frame {f} has no packet in its window; the frame goes without "
                                                   f"{name}"))
    kept = [e for e in entries if e["lidar"]]
    issues += [Issue("(frames)", e["timestamp_ns"], "a frame without any LiDAR data is dropped")
               for e in entries if not e["lidar"]]
    return kept, issues


def frame_sweep(raw: bytes, ros1: bool, rule: PointTime | None, frame_ns: int) -> Sweep:
    """A PointCloud2 message as the sweep of a frame at ``frame_ns``: its points in the sensor
    frame, ``time_offset_ns`` from the frame's timestamp (MessageError, ValueError where it
    does not decode)."""
    msg = read_pointcloud2(raw, ros1)
    sweep = cloud_sweep(msg, rule)
    shift = np.int64(msg.stamp_ns - frame_ns)
    offsets = (sweep.time_offset_ns + shift if sweep.time_offset_ns is not None
               else np.full(len(sweep), shift, np.int64))
    return Sweep(sweep.xyz, frame_ns, sweep.intensity, offsets, sweep.ring, frame="lidar")


def image_jpeg(raw: bytes, msgtype: str, ros1: bool, quality: int) -> tuple[int, bytes]:
    """``(stamp ns, JPEG bytes)`` of an image message: a CompressedImage's JPEG as recorded,
    an Image encoded once at ``quality``."""
    if msgtype == "sensor_msgs/msg/CompressedImage":
        cim = read_compressed_image(raw, ros1)
        return cim.stamp_ns, compressed_jpeg(cim)
    img = read_image(raw, ros1)
    return img.stamp_ns, encode_jpeg(image_pixels(img), quality=quality)


def _write_one(root: Path, s: SensorIndex, entry: dict, f: int, raw: bytes, ros1: bool, quality: int) -> None:
    """Write one message's file for frame ``f`` and enter it in the frame's manifest entry."""
    if s.msgtype == "sensor_msgs/msg/PointCloud2":
        rel = f"lidar/{s.name}/{f:06d}.pcd"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        write_pcd(root / rel, frame_sweep(raw, ros1, s.rule, entry["timestamp_ns"]), encoding="binary")
        entry["lidar"][s.name] = rel
        return
    stamp, jpeg = image_jpeg(raw, s.msgtype, ros1, quality)
    rel = f"camera/{s.name}/{f:06d}.jpg"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(jpeg)
    entry["images"][s.name] = {"path": rel, "timestamp_ns": int(stamp)}


def raw_log_for_prepare(bag_path: str | os.PathLike, scene_dir: str | os.PathLike, options: BagOptions = BagOptions(),
                        stream: TextIO | None = None) -> Path:
    """The raw log of a bag for ``fathom prepare``: ``SCENE_DIR.rawlog/`` beside the scene,
    converted once and reused while the bag (path, size, mtime) and the options are the same
    (:data:`SOURCE_FILE` records them); the conversion's report goes to ``stream``."""
    bag = Path(bag_path).resolve()
    log_dir = Path(f"{Path(scene_dir)}.rawlog")
    files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())
    source = {"bag": str(bag), "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
              "options": repr(options)}
    stamp = log_dir / SOURCE_FILE
    if (log_dir / "log.json").exists() and stamp.exists() and json.loads(stamp.read_text()) == source:
        if stream is not None:
            stream.write(f"fathom: reusing {log_dir} converted from {bag}\n")
        return log_dir
    result = bag_to_raw_log(bag, log_dir, options)
    stamp.write_text(json.dumps(source))
    if stream is not None:
        stream.write(f"fathom: converted {bag} → {log_dir}: {result.frames} frames\n")
        for line in result.lines():
            stream.write(f"  {line}\n")
    return log_dir
