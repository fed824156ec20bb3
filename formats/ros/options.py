"""What a bag conversion is asked to do: :class:`BagOptions`, per-topic options, and the
rules that pick the sensor topics of a bag and name its sensors.

Per-topic options (``--topic-option TOPIC KEY=VALUE`` on the command line):

| key | applies to | value |
|---|---|---|
| ``name`` | any sensor | the sensor's name in the log (default: from the topic, below) |
| ``frame`` | any sensor | the TF frame of its data (default: the messages' ``header.frame_id``) |
| ``time`` | PointCloud2 | ``none`` or ``FIELD:UNIT:relative|absolute`` (default: detected) |
| ``model`` | VelodyneScan | a ``formats.velodyne`` model (default: the packets' product id) |
| ``calibration`` | VelodyneScan | a ROS ``velodyne_pointcloud`` calibration YAML (default: the model's table) |
| ``camera_info`` | camera | its CameraInfo topic (default: ``camera_info`` beside the image topic) |
| ``row_readout_ns`` | camera | rolling shutter: ns between rows (default: global shutter) |
| ``max_fov_deg`` | camera | the lens' usable field of view (default: its fold-back limit) |

Sensor topics: ``BagOptions.topics`` in the order given (the order makes the LiDARs'
``sensor_id`` and the cameras' ``camera_mask`` bits), else every PointCloud2, VelodyneScan,
Image and CompressedImage topic in name order; a raw image topic whose ``…/compressed``
twin is in the bag is left to the twin (no re-encoding). Names: the topic's components
without the transport and data words of :data:`GENERIC_WORDS`, joined by ``_``
(``/sensing/lidar/top/points`` → ``sensing_lidar_top``, ``/CAM_FRONT/image_raw/compressed``
→ ``CAM_FRONT``), characters outside the scene-store name rule replaced by ``_``, repeats
suffixed ``_2``, ``_3``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from formats.rig import NAME_RULE, valid_name

LIDAR_TYPES = ("sensor_msgs/msg/PointCloud2", "velodyne_msgs/msg/VelodyneScan")
CAMERA_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
TF_MESSAGE = "tf2_msgs/msg/TFMessage"
ODOMETRY = "nav_msgs/msg/Odometry"
POSE_STAMPED = ("geometry_msgs/msg/PoseStamped", "geometry_msgs/msg/PoseWithCovarianceStamped")
NAV_SAT_FIX = "sensor_msgs/msg/NavSatFix"
IMU = "sensor_msgs/msg/Imu"
TOPIC_KEYS = ("name", "frame", "time", "model", "calibration", "camera_info", "row_readout_ns", "max_fov_deg")
GENERIC_WORDS = frozenset({
    "compressed", "image", "image_raw", "image_color", "image_mono", "image_rect", "image_rect_color",
    "points", "points_raw", "pointcloud", "point_cloud", "cloud", "velodyne_points", "velodyne_packets",
    "packets", "scan", "data",
})


@dataclass(frozen=True)
class BagOptions:
    """A bag conversion's choices.

    Attributes:
        topics: the sensor topics, in sensor order (None: every supported one, see above).
        reference: the topic whose messages cut frames (None: the first LiDAR topic).
        frame_rate_hz: keep the reference message nearest each tick of this rate (None: all).
        pose_topic: the ego pose source (None: the preference order of :mod:`formats.ros.poses`).
        base_frame: the vehicle frame extrinsics and poses refer to.
        topic_options: per topic, ``{key: value}`` strings of :data:`TOPIC_KEYS`.
        image_tolerance_ns: how far an image may be from the frame's centre (None: half the
            reference's period).
        jpeg_quality: quality of the JPEGs encoded from raw images.
        images: False leaves every camera topic out (``fathom import --no-images``).
    """

    topics: tuple[str, ...] | None = None
    reference: str | None = None
    frame_rate_hz: float | None = None
    pose_topic: str | None = None
    base_frame: str = "base_link"
    topic_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    image_tolerance_ns: int | None = None
    jpeg_quality: int = 92
    images: bool = True

    def __post_init__(self) -> None:
        if self.frame_rate_hz is not None and not (math.isfinite(self.frame_rate_hz) and self.frame_rate_hz > 0):
            raise ValueError(f"frame_rate_hz must be a positive number, got {self.frame_rate_hz}")
        for topic, opts in self.topic_options.items():
            unknown = sorted(set(opts) - set(TOPIC_KEYS))
            if unknown:
                raise ValueError(f"topic option {unknown} of {topic}: keys are {', '.join(TOPIC_KEYS)}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    def option(self, topic: str, key: str) -> str | None:
        return self.topic_options.get(topic, {}).get(key)

    def number(self, topic: str, key: str) -> float | None:
        """A numeric topic option (ValueError naming it when it is not a finite number)."""
        text = self.option(topic, key)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"topic option {key} of {topic}: a non-negative number, got {text!r}")
        return value

    def path(self, topic: str, key: str) -> Path | None:
        text = self.option(topic, key)
        return None if text is None else Path(text)


def parse_topic_options(pairs: list[list[str]] | None) -> dict[str, dict[str, str]]:
    """``[[TOPIC, "KEY=VALUE"], ...]`` (argparse ``nargs=2, action="append"``) → per-topic dicts."""
    out: dict[str, dict[str, str]] = {}
    for topic, item in pairs or []:
        key, sep, value = item.partition("=")
        if not sep or key not in TOPIC_KEYS:
            raise ValueError(f"--topic-option {topic} {item!r}: KEY=VALUE with KEY one of {', '.join(TOPIC_KEYS)}")
        out.setdefault(topic, {})[key] = value
    return out


def default_sensor_topics(types: Mapping[str, str]) -> list[str]:
    """The sensor topics of a bag (``topic → type``) when none are named, in name order."""
    sensors = [t for t, ty in sorted(types.items()) if ty in LIDAR_TYPES + CAMERA_TYPES]
    compressed = {t for t in sensors if types[t] == CAMERA_TYPES[1]}
    return [t for t in sensors if not (types[t] == CAMERA_TYPES[0] and f"{t.rstrip('/')}/compressed" in compressed)]


def sensor_names(topics: list[str], options: BagOptions) -> dict[str, str]:
    """Each sensor topic's name (module docstring); ValueError for an invalid given name."""
    out: dict[str, str] = {}
    for topic in topics:
        given = options.option(topic, "name")
        if given is not None:
            if not valid_name(given):
                raise ValueError(f"topic option name of {topic}: {NAME_RULE}; got {given!r}")
            name = given
        else:
            parts = [p for p in topic.split("/") if p]
            kept = [p for p in parts if p.lower() not in GENERIC_WORDS] or parts[-1:] or ["sensor"]
            name = re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(kept)).lstrip("_.-")[:60] or "sensor"
            base, k = name, 2
            while name in out.values():
                name, k = f"{base}_{k}", k + 1
        if name in out.values():
            raise ValueError(f"two sensors named {name!r}; name them with --topic-option TOPIC name=NAME")
        out[topic] = name
    return out


def camera_info_topic(topic: str, options: BagOptions, info_topics: list[str]) -> str | None:
    """The CameraInfo topic of an image topic: the ``camera_info`` option, else
    ``camera_info`` beside the image topic (its transport suffix and image word removed:
    ``/ns/image_raw/compressed`` → ``/ns/camera_info``), else None."""
    given = options.option(topic, "camera_info")
    if given is not None:
        return given
    parts = [p for p in topic.split("/") if p]
    while parts and parts[-1].lower() in GENERIC_WORDS:
        parts.pop()
    candidate = "/" + "/".join([*parts, "camera_info"])
    return candidate if candidate in info_topics else None
