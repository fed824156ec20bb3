"""Decode one frame of a raw log into world-frame point columns (the first step of prepare)."""

from __future__ import annotations

import numpy as np

from engine.motion import motion_compensate
from engine.pose_track import PoseTrack
from formats.raw_log import RawLog
from formats.registry import read_points


def world_points(log: RawLog, track: PoseTrack, index: int) -> dict[str, np.ndarray]:
    """All LiDARs' points of frame ``index`` in the world frame (float64, scene origin)."""
    frame = log.frames[index]
    parts: list[dict[str, np.ndarray]] = []
    for lidar in log.lidars:
        path = frame.lidar.get(lidar.name)
        if path is None:
            continue
        sweep = read_points(path, format=lidar.format)
        n = len(sweep)
        offsets = sweep.time_offset_ns if sweep.time_offset_ns is not None else np.zeros(n, np.int64)
        times = offsets + np.int64(frame.timestamp_ns)
        parts.append({
            "xyz": motion_compensate(sweep.xyz, times, track, lidar.ego_from_sensor, out_frame="world"),
            "intensity": sweep.intensity if sweep.intensity is not None else np.zeros(n, np.float32),
            "time_offset_ns": offsets,
            "sensor_id": np.full(n, lidar.sensor_id, np.uint8),
            "ring": sweep.ring if sweep.ring is not None else np.zeros(n, np.uint16),
        })
    if not parts:
        raise ValueError(f"frame {index} has no LiDAR sweep")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
