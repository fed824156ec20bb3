"""A one-LiDAR raw log around a pcap stream (formats.raw_log layout), for the decoders' tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from formats.raw_log import read_log
from server.frame_points import world_points


def write_stream_log(root: Path, fmt: str, capture: bytes, calibration: tuple[str, bytes] | None,
                     windows: list[tuple[int, int]]) -> Path:
    """``root/log.json`` naming ``lidar/L.pcap`` (``capture``) as a ``fmt`` stream with the
    calibration file ``(name, bytes)``, identity poses and extrinsic, one frame per window."""
    (root / "lidar").mkdir(parents=True, exist_ok=True)
    (root / "lidar" / "L.pcap").write_bytes(capture)
    lidar = {"name": "L", "sensor_id": 3, "ego_from_sensor": [1, 0, 0, 0, 0, 0, 0], "format": fmt,
             "path": "lidar/L.pcap"}
    if calibration is not None:
        (root / "lidar" / calibration[0]).write_bytes(calibration[1])
        lidar["calibration"] = f"lidar/{calibration[0]}"
    t0, t1 = windows[0][0] - 10**9, windows[-1][1] + 10**9
    (root / "poses.csv").write_text(f"timestamp_ns,tx,ty,tz,qw,qx,qy,qz\n{t0},0,0,0,1,0,0,0\n{t1},0,0,0,1,0,0,0\n")
    doc = {"format": "fathom-log", "version": 2, "log_id": "stream", "poses": {"kind": "table", "path": "poses.csv"},
           "lidars": [lidar], "cameras": [],
           "frames": [{"timestamp_ns": a, "lidar": {"L": {"start_ns": a, "end_ns": b}}} for a, b in windows]}
    (root / "log.json").write_text(json.dumps(doc))
    return root


def frame_points(root: Path) -> list[dict[str, np.ndarray]]:
    """Every frame's world points, as ``fathom prepare`` decodes them."""
    log = read_log(root)
    track = log.world_from_ego()
    return [world_points(log, track, i) for i in range(len(log.frames))]
