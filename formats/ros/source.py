"""A bag read directly by ``prepare``: a :class:`formats.raw_log.RawLog` whose frames' clouds and
images are messages of the bag, read when their frame is prepared; no raw log is written.

The first pass is the conversion's (:func:`formats.ros.convert.first_pass`): the same frames,
rig, poses and issues. A frame's cloud is a :class:`BagCloud` (its sweep is exactly the one
the conversion writes as PCD and ``prepare`` reads back), an image a :class:`BagImage` (the
JPEG the conversion writes). Each thread keeps the bag open and, per frame, reads the
frame's messages in one pass over the log-time span they cover (:func:`frame_messages`).
A message that no longer decodes fails its frame, named, where the conversion would leave
the frame without that sensor.

What the direct read does not take: VelodyneScan topics (their packets are decoded as one
stream, by the conversion's pcap), a sensor topic logging two messages at the same log time
(a message is found by its topic and log time) and a bag whose files are compressed whole
(every reader would decompress it all again); :func:`bag_log` raises
:class:`DirectReadUnsupported` for these, and ``prepare`` converts such a bag instead.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

from engine.sweep import Sweep
from formats.errors import FormatError
from formats.raw_log import MESSAGE_FORMAT, LogFrame, LogLidar, RawLog
from formats.ros.bag import Bag, bag_name
from formats.ros.convert import Conversion, FirstPass, first_pass, frame_sweep, image_jpeg, pose_issues, sensor_pose
from formats.ros.index import Issue
from formats.ros.mcap_ranges import McapRanges
from formats.ros.options import BagOptions
from formats.ros.pointcloud import PointTime
from formats.ros.wire import MessageError


class DirectReadUnsupported(ValueError):
    """The bag holds what only a conversion reads (module docstring)."""


@dataclass(frozen=True)
class FrameWindow:
    """The messages of one frame: the bag, its ROS version, its MCAP files (none for the
    other storages), the topics and the half-open log-time span ``[start_ns, stop_ns)``
    that holds them."""

    bag: Path
    ros1: bool
    mcap: tuple[Path, ...]
    topics: tuple[str, ...]
    start_ns: int
    stop_ns: int


@dataclass(frozen=True)
class BagMessage:
    """One message of a frame: its topic, type and log time (unique in its topic)."""

    window: FrameWindow
    topic: str
    msgtype: str
    log_ns: int

    def raw(self) -> bytes:
        """The message's serialised bytes (FormatError naming the topic and time if gone)."""
        try:
            return frame_messages(self.window)[(self.topic, self.log_ns)]
        except KeyError:
            raise FormatError(self.window.bag, None, f"topic {self.topic}: a message logged at {self.log_ns} ns "
                                                     "(the bag changed since it was indexed?)") from None

    def __fspath__(self) -> str:  # names the message in errors
        return f"{self.window.bag}:{self.topic}@{self.log_ns}"


@dataclass(frozen=True)
class BagCloud(BagMessage):
    """A frame's PointCloud2 message and its per-point time rule."""

    rule: PointTime | None = None
    frame_ns: int = 0

    def sweep(self) -> Sweep:
        """The frame's sweep of :func:`formats.ros.convert.frame_sweep` (FormatError naming
        the message where it does not decode)."""
        try:
            return frame_sweep(self.raw(), self.window.ros1, self.rule, self.frame_ns)
        except (MessageError, ValueError) as exc:
            raise FormatError(self.window.bag, None, f"topic {self.topic} message logged at {self.log_ns} ns: "
                                                     f"{exc}") from None


@dataclass(frozen=True)
class BagImage(BagMessage):
    """A frame's image message and the JPEG quality a raw image is encoded at."""

    quality: int = 92

    def read_bytes(self) -> bytes:
        """The image's JPEG (:func:`formats.ros.convert.image_jpeg`)."""
        try:
            return image_jpeg(self.raw(), self.msgtype, self.window.ros1, self.quality)[1]
        except (MessageError, ValueError) as exc:
            raise FormatError(self.window.bag, None, f"topic {self.topic} message logged at {self.log_ns} ns: "
                                                     f"{exc}") from None


_open = threading.local()  # per thread: the readers opened (by path) and the last frame's messages


def frame_messages(window: FrameWindow) -> dict[tuple[str, int], bytes]:
    """``{(topic, log ns): bytes}`` of the window's topics within its span, read once per
    frame and thread (the last frame's messages are kept: the cloud and the images of a
    frame are asked for one after the other): from an MCAP bag's uncompressed chunks as
    byte ranges (:class:`formats.ros.mcap_ranges.McapRanges`), else through the bag's reader."""
    cached = getattr(_open, "frame", None)
    if cached is not None and cached[0] == window:
        return cached[1]
    opened = _open.__dict__.setdefault("opened", {})  # path -> McapRanges or Bag
    for path in window.mcap:
        if path not in opened:
            opened[path] = McapRanges(path)
    parts = [opened[path].read(window.topics, window.start_ns, window.stop_ns) for path in window.mcap]
    if window.mcap and all(p is not None for p in parts):
        got = {key: data for part in parts if part is not None for key, data in part.items()}
    else:
        if window.bag not in opened:
            opened[window.bag] = Bag(window.bag)
        got = {(topic, log_ns): raw for topic, _, log_ns, raw in
               opened[window.bag].messages(window.topics, stop_ns=window.stop_ns, start_ns=window.start_ns)}
    _open.frame = (window, got)
    return got


_logs: dict[tuple, tuple[RawLog, Conversion]] = {}
_logs_lock = threading.Lock()


def bag_log(bag_path: str | os.PathLike, options: BagOptions = BagOptions()) -> tuple[RawLog, Conversion]:
    """``(log, report)``: the bag as a raw log whose frames are its messages, and what a
    conversion would report of it (``report.log_dir`` is the bag); the last few are kept
    per process for the bag's path, size and mtime and the options.
    :class:`DirectReadUnsupported` for a bag only a conversion reads (module docstring)."""
    path = Path(bag_path).resolve()
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    key = (path, tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files), repr(options))
    with _logs_lock:  # one first pass per bag, whichever thread asks first
        if key not in _logs:
            with Bag(path) as bag:
                if bag.compressed_files:  # each worker would decompress the whole bag again
                    raise DirectReadUnsupported("its files are compressed whole: it is converted once instead")
                rig = first_pass(bag, options)
                mcap = tuple(bag.mcap_files())
            log, issues = _direct_log(path, rig, mcap)
            while len(_logs) >= 4:  # the last few bags kept
                del _logs[next(iter(_logs))]
            _logs[key] = (log, Conversion(path, len(log.frames), rig.poses.source, issues, rig.idx.start_ns))
        return _logs[key]


def _direct_log(path: Path, rig: FirstPass, mcap: tuple[Path, ...]) -> tuple[RawLog, list[Issue]]:
    idx, plan = rig.idx, rig.plan
    for s in idx.sensors.values():
        if s.msgtype == "velodyne_msgs/msg/VelodyneScan":
            raise DirectReadUnsupported(f"topic {s.topic}: VelodyneScan packets are read through a conversion")
        if len(set(s.log_ns)) != len(s.log_ns):
            raise DirectReadUnsupported(f"topic {s.topic} logs two messages at one log time")
    lidars = tuple(LogLidar(s.name, i, sensor_pose(idx, s), MESSAGE_FORMAT) for i, s in enumerate(rig.lidars))
    quality = idx.options.jpeg_quality
    frames, issues = [], []
    for f, frame_ns in enumerate(plan.times_ns.tolist()):
        chosen = [(s, int(plan.rows[t][f])) for t, s in idx.sensors.items() if plan.rows[t][f] >= 0]
        if not any(s.is_lidar for s, _ in chosen):
            issues.append(Issue("(frames)", frame_ns, "a frame without any LiDAR data is dropped"))
            continue
        logs = [s.log_ns[r] for s, r in chosen]
        window = FrameWindow(path, idx.bag.ros1, mcap, tuple(s.topic for s, _ in chosen), min(logs), max(logs) + 1)
        frames.append(LogFrame(
            frame_ns,
            lidar={s.name: BagCloud(window, s.topic, s.msgtype, s.log_ns[r], s.rule, frame_ns)
                   for s, r in chosen if s.is_lidar},
            images={s.name: (BagImage(window, s.topic, s.msgtype, s.log_ns[r], quality), s.stamp_ns[r])
                    for s, r in chosen if not s.is_lidar}))
    log = RawLog(root=path, log_id=bag_name(path), origin=rig.poses.origin, poses_path=path, lidars=lidars,
                 cameras=tuple(rig.cameras), frames=tuple(frames), pose_track=rig.poses.track)
    return log, rig.issues + issues + pose_issues(rig.poses, [f.timestamp_ns for f in frames])
