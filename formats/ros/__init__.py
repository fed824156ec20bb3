"""ROS bags as Fathom input: ROS 1 ``.bag``, ROS 2 bags in sqlite3 (``.db3``) or MCAP storage
(a bag directory with ``metadata.yaml``, or the storage file alone), read through ``rosbags``.

What is read (one module each):

- :mod:`~formats.ros.bag`: the container and one type store (the bag's definitions, the
  standard ones, and the ``velodyne_msgs`` definitions Fathom ships for older ROS 2 bags).
- :mod:`~formats.ros.wire`: PointCloud2, Image, CompressedImage and VelodyneScan parsed up
  to their payload, which stays a view of the message bytes.
- :mod:`~formats.ros.pointcloud`: any PointCloud2 layout through a structured view; the
  per-point time rule.
- :mod:`~formats.ros.images`: image encodings (Bayer demosaic), JPEG kept as recorded,
  CameraInfo → lens model.
- :mod:`~formats.ros.tf`, :mod:`~formats.ros.poses`: extrinsics from ``/tf_static``; the ego
  poses by an order of preference (Odometry, PoseStamped, ``/tf``, NavSatFix + Imu; else at
  rest).
- :mod:`~formats.ros.index`, :mod:`~formats.ros.frames`, :mod:`~formats.ros.convert`: the
  two passes — time every message, cut frames by the reference sensor and match the others,
  write a raw log (:mod:`formats.raw_log`) — and the issues (gaps, dropped messages, clock
  jumps, unreadable messages), each naming its topic and time, none filled in.
- :mod:`~formats.ros.source`: the first pass alone, the frames' messages read from the bag
  when ``prepare`` needs them (:mod:`~formats.ros.mcap_ranges`: an MCAP message's byte range).
- :mod:`~formats.ros.inspect`: ``fathom inspect``.
"""

from __future__ import annotations

from formats.ros.bag import Bag, bag_name, is_bag
from formats.ros.convert import Conversion, bag_to_raw_log, raw_log_for_prepare
from formats.ros.inspect import inspect_lines
from formats.ros.options import BagOptions, parse_topic_options

__all__ = ["Bag", "BagOptions", "bag_name", "Conversion", "bag_to_raw_log", "inspect_lines", "is_bag",
           "parse_topic_options", "raw_log_for_prepare"]
