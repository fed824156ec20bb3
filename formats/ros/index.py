"""The first pass over a bag: every message's time, the small messages decoded, problems noted.

Sensor topics (PointCloud2, VelodyneScan, Image, CompressedImage) are parsed up to their
payload (:mod:`formats.ros.wire`, views only): header stamp and frame, and each message's
time *centre* — the middle of a cloud's per-point time span (its stamp without per-point
times), of a scan's packet stamps, or an image's stamp. CameraInfo, ``/tf_static``, ``/tf``
and the pose candidates (Odometry, PoseStamped, NavSatFix, Imu) are deserialised with the
bag's type store. A message that does not parse is kept out with its FormatError (topic and
message index); a container that breaks off ends the pass there, noted.

Per sensor topic (header stamps, in bag order): a stamp going back or a step of its stamps
that differs from the step of the recording's log times by over :data:`CLOCK_JUMP_NS` is a
clock jump; a step over 1.5 × the topic's median step is a gap (with the number of
messages missing). Each is an :class:`Issue` naming the topic and time; nothing is filled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import simplejpeg

from formats.errors import FormatError
from formats.ros.bag import Bag, BagReadError
from formats.ros.options import (
    CAMERA_INFO,
    CAMERA_TYPES,
    IMU,
    LIDAR_TYPES,
    TF_MESSAGE,
    BagOptions,
    default_sensor_topics,
    sensor_names,
)
from formats.ros.pointcloud import PointTime, cloud_time_rule, parse_point_time, time_span_ns
from formats.ros.poses import POSE_TYPES
from formats.ros.tf import TransformTree
from formats.ros.wire import MessageError, read_compressed_image, read_image, read_pointcloud2, read_velodyne_scan

CLOCK_JUMP_NS = 1_000_000_000
GAP_FACTOR = 1.5
SENSOR_TYPES = LIDAR_TYPES + CAMERA_TYPES


@dataclass(frozen=True)
class Issue:
    """Something the conversion reports: ``topic``, the bag time it happened at (ns, or None),
    what, and the FormatError when a message could not be read."""

    topic: str
    time_ns: int | None
    text: str
    error: FormatError | None = None

    def line(self, start_ns: int = 0) -> str:
        if self.time_ns is None:
            at = ""
        else:
            at = f" at {self.time_ns / 1e9:.3f} s (+{(self.time_ns - start_ns) / 1e9:.3f} s)"
        return f"{self.topic}{at}: {self.text}"


@dataclass
class SensorIndex:
    """One sensor topic's messages (parallel lists over the readable ones) and what they hold."""

    topic: str
    msgtype: str
    name: str
    index: list[int] = field(default_factory=list)      # message index in the topic
    log_ns: list[int] = field(default_factory=list)
    stamp_ns: list[int] = field(default_factory=list)   # frame time it would give (scan: first packet)
    centre_ns: list[int] = field(default_factory=list)
    frame_id: str = ""                                   # the first message's
    other_frame: str = ""                                # a different one seen later (reported once)
    rule: PointTime | None = None                        # PointCloud2 per-point time
    product_ids: dict[int, int] = field(default_factory=dict)  # VelodyneScan product id -> packets
    size: tuple[int, int] | None = None                  # images: (width, height) of the first one

    @property
    def is_lidar(self) -> bool:
        return self.msgtype in LIDAR_TYPES

    def period_ns(self) -> int | None:
        """Median step of the stamps (None below two messages)."""
        s = np.sort(np.array(self.stamp_ns, np.int64))
        steps = np.diff(s)
        steps = steps[steps > 0]
        return int(np.median(steps)) if len(steps) else None


@dataclass
class BagIndex:
    """What the first pass learned."""

    bag: Bag
    options: BagOptions
    sensors: dict[str, SensorIndex]
    reference: str | None  # None: no sensor topic (inspect only)
    camera_infos: dict[str, Any] = field(default_factory=dict)      # topic -> first CameraInfo
    info_frames: dict[str, str] = field(default_factory=dict)       # topic -> its frame_id
    tree: TransformTree = field(default_factory=TransformTree)
    pose_messages: dict[str, list[Any]] = field(default_factory=dict)
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # topic -> (count, first, last log ns)
    issues: list[Issue] = field(default_factory=list)
    stop_log_ns: int | None = None  # a truncated bag: read messages logged before this only

    @property
    def start_ns(self) -> int:
        return self.bag.start_ns

    def fail(self, topic: str, k: int, what: str) -> FormatError:
        return FormatError(self.bag.path, None, f"topic {topic} message #{k}: {what}")


def sensor_topics(bag: Bag, options: BagOptions) -> list[str]:
    """The sensor topics to use (FormatError naming a missing or unreadable one)."""
    types = {t: i.msgtype for t, i in bag.topics.items()}
    # by default the topics Fathom cannot parse are left out (index_bag reports them)
    topics = list(options.topics) if options.topics else [t for t in default_sensor_topics(types)
                                                            if not bag.topics[t].definition_error]
    for t in topics:
        if t not in bag.topics:
            raise FormatError(bag.path, None, f"topic {t} in the bag (it has {sorted(bag.topics)})")
        if types[t] not in SENSOR_TYPES:
            raise FormatError(bag.path, None, f"topic {t}: message type {types[t]} is not a sensor type Fathom reads "
                                              f"({', '.join(SENSOR_TYPES)})")
        if bag.topics[t].definition_error:
            raise FormatError(bag.path, None, f"topic {t}: {bag.topics[t].definition_error}")
    if not options.images:
        topics = [t for t in topics if types[t] in LIDAR_TYPES]
    if len(set(topics)) != len(topics):
        raise FormatError(bag.path, None, f"each sensor topic once, got {topics}")
    return topics


def index_bag(bag: Bag, options: BagOptions, every_topic: bool = False) -> BagIndex:
    """The first pass (module docstring); ``every_topic`` (inspect) also counts the topics
    Fathom ignores and accepts a bag without sensor topics."""
    topics = sensor_topics(bag, options)
    names = sensor_names(topics, options)
    lidars = [t for t in topics if bag.topics[t].msgtype in LIDAR_TYPES]
    reference = options.reference or (lidars[0] if lidars else (topics[0] if topics else None))
    if reference is None and not every_topic:
        raise FormatError(bag.path, None, f"a LiDAR or camera topic ({', '.join(SENSOR_TYPES)}); the bag has "
                                          f"{ {t: i.msgtype for t, i in bag.topics.items()} }")
    if reference is not None and reference not in topics:
        raise FormatError(bag.path, None, f"--reference-sensor {reference}: one of the sensor topics {topics}")
    idx = BagIndex(bag, options, {t: SensorIndex(t, bag.topics[t].msgtype, names[t]) for t in topics}, reference)
    small = {t for t, i in bag.topics.items()
             if i.msgtype in (CAMERA_INFO, TF_MESSAGE, IMU, *POSE_TYPES) and not i.definition_error}
    wanted = set(bag.topics) if every_topic else set(topics) | small
    for t in topics:
        given = options.option(t, "time")
        if given is not None:
            idx.sensors[t].rule = parse_point_time(given)
    try:
        for topic, k, log_ns, raw in bag.messages(wanted):
            count, first, _ = idx.seen.get(topic, (0, log_ns, log_ns))
            idx.seen[topic] = (count + 1, first, log_ns)
            if topic in idx.sensors:
                _sensor(idx, idx.sensors[topic], k, log_ns, raw)
            elif topic in small:
                _small(idx, topic, k, raw)
    except BagReadError as exc:
        if exc.last_log_ns is None:
            raise  # nothing before the break to use
        idx.stop_log_ns = exc.last_log_ns + 1
        idx.issues.append(Issue("(bag)", exc.last_log_ns, f"the bag breaks off; using the messages before it: "
                                                          f"{exc.expected}", exc))
    for s in idx.sensors.values():
        idx.issues += timing_issues(s)
    idx.issues += [Issue(t, None, f"left out: {i.definition_error}") for t, i in bag.topics.items()
                   if i.definition_error and i.msgtype in SENSOR_TYPES and t not in idx.sensors]
    return idx


def _sensor(idx: BagIndex, s: SensorIndex, k: int, log_ns: int, raw: bytes) -> None:
    ros1 = idx.bag.ros1
    try:
        if s.msgtype == "sensor_msgs/msg/PointCloud2":
            msg = read_pointcloud2(raw, ros1)
            if s.rule is None:
                s.rule = cloud_time_rule(msg)
            lo, hi = time_span_ns(msg, s.rule)
            stamp, centre, frame = msg.stamp_ns, (lo + hi) // 2, msg.frame_id
        elif s.msgtype == "velodyne_msgs/msg/VelodyneScan":
            scan = read_velodyne_scan(raw, ros1)
            if len(scan.packets) == 0:
                raise MessageError("at least one Velodyne packet")
            ids, n = np.unique(scan.packets[:, 1205], return_counts=True)
            for i, c in zip(ids.tolist(), n.tolist()):
                s.product_ids[i] = s.product_ids.get(i, 0) + c
            t = scan.packet_stamps_ns
            stamp, centre, frame = int(t.min()), (int(t.min()) + int(t.max())) // 2, scan.frame_id
        elif s.msgtype == "sensor_msgs/msg/Image":
            img = read_image(raw, ros1)
            stamp, frame = img.stamp_ns, img.frame_id
            centre = stamp
            s.size = s.size or (img.width, img.height)
        else:
            cim = read_compressed_image(raw, ros1)
            stamp, frame = cim.stamp_ns, cim.frame_id
            centre = stamp
            if s.size is None and cim.data[:2].tobytes() == b"\xff\xd8":
                height, width = simplejpeg.decode_jpeg_header(cim.data.tobytes())[:2]
                s.size = (width, height)
    except (MessageError, ValueError) as exc:
        err = idx.fail(s.topic, k, str(exc))
        idx.issues.append(Issue(s.topic, log_ns, f"message #{k} left out: {exc}", err))
        return
    s.index.append(k)
    s.log_ns.append(log_ns)
    s.stamp_ns.append(stamp)
    s.centre_ns.append(centre)
    frame = frame.lstrip("/")
    if len(s.index) == 1:
        s.frame_id = frame
    elif frame != s.frame_id and not s.other_frame:
        s.other_frame = frame
        idx.issues.append(Issue(s.topic, stamp, f"message #{k} has frame_id {frame!r}, the first had {s.frame_id!r}; "
                                                f"the first is used"))


def _small(idx: BagIndex, topic: str, k: int, raw: bytes) -> None:
    msgtype = idx.bag.topics[topic].msgtype
    try:
        msg = idx.bag.deserialize(raw, msgtype)
    except Exception as exc:  # rosbags raises its own error types for a bad message
        idx.issues.append(Issue(topic, None, f"message #{k} left out: {type(exc).__name__}: {exc}",
                                idx.fail(topic, k, f"a valid {msgtype} ({exc})")))
        return
    if msgtype == CAMERA_INFO:
        if topic not in idx.camera_infos:
            idx.camera_infos[topic] = msg
            idx.info_frames[topic] = msg.header.frame_id.lstrip("/")
    elif msgtype == TF_MESSAGE:
        static = topic.rstrip("/").endswith("tf_static")
        for child in idx.tree.add(msg, static):
            idx.issues.append(Issue(topic, None, f"the static transform of frame {child!r} changes in message #{k}; "
                                                 f"the last one is used"))
    else:
        idx.pose_messages.setdefault(topic, []).append(msg)


def timing_issues(s: SensorIndex) -> list[Issue]:
    """Clock jumps and gaps of one sensor topic (module docstring)."""
    out: list[Issue] = []
    stamps, logs = np.array(s.stamp_ns, np.int64), np.array(s.log_ns, np.int64)
    if len(stamps) < 2:
        return out
    period = s.period_ns()
    d_stamp, d_log = np.diff(stamps), np.diff(logs)
    for i in np.flatnonzero((d_stamp <= 0) | (np.abs(d_stamp - d_log) > CLOCK_JUMP_NS)):
        out.append(Issue(s.topic, int(stamps[i + 1]), f"clock jump: message #{s.index[i + 1]}'s stamp moves "
                                                      f"{d_stamp[i] / 1e9:+.3f} s from the previous one while the "
                                                      f"recording moved {d_log[i] / 1e9:+.3f} s"))
    if period:
        ok = (d_stamp > 0) & (np.abs(d_stamp - d_log) <= CLOCK_JUMP_NS)
        for i in np.flatnonzero(ok & (d_stamp > GAP_FACTOR * period)):
            missing = int(round(d_stamp[i] / period)) - 1
            out.append(Issue(s.topic, int(stamps[i]), f"gap of {d_stamp[i] / 1e9:.3f} s after message #{s.index[i]} "
                                                      f"(every {period / 1e9:.3f} s expected: ~{missing} missing)"))
    return out
