"""Export cuboid tracks (and the ego poses) as a Scale Sensor Fusion Scene (SFS) file.

The scene holds one ``CuboidAnnotation`` per track (:func:`formats.sfs_cuboids.track_to_sfs`):
its keyframes and, for a moving track interpolated motion-aware (``interpolation`` ``"ctrv"`` /
``"hermite"``, :mod:`engine.cuboid_motion`), its box at every LiDAR frame time between them as
well (at least 1 µs from a keyframe), since SFS readers interpolate a path linearly. When
frames are given, a ``lidar`` sensor (``coordinates: "world"``) holds one frame of
world-frame float32 points per timestamp and the ``world_from_ego`` poses as its pose path
(``PosePath`` rows ``x y z qx qy qz qw``, scalar last). ``scale_sensor_fusion_io``'s
parser accepts only camera, lidar and radar sensors, and a lidar needs at least one frame,
so the poses travel on the lidar. Radars (``radars``, e.g. :func:`scene_radar_frames` of a
prepared scene) become one ``radar`` sensor each (``id`` the radar's name, ``coordinates:
"world"``, the same ego poses), a frame per timestamp with the returns' world-frame float32
``positions`` and ``directions``: the compensated radial velocity as a world-frame vector
(m/s) along the line of sight from the radar (zero for a static target). Timestamps are integer microseconds relative
to the scene's ``time_offset`` (µs since the epoch), because ``scale_sensor_fusion_io``'s
validator rejects a first timestamp over 100 s. The file is Scale's JSON-binary container
(``scale_json_binary``): a JSON header padded with spaces to 4 bytes whose ``$items`` list
each array's key path, byte offset, length, dtype and shape, then a 4-byte NUL block and the
arrays' bytes, each padded to 4 bytes.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation, TrackTable, interpolate_tracks
from engine.cuboid_motion import INTERPOLATION
from engine.pose_track import PoseTrack
from formats.conventions import sfs_pose_row
from formats.scene_store import Scene, column_values, positions
from formats.scene_store.radar import RADAR_TYPES
from formats.sfs_cuboids import track_to_sfs

LIDAR_ID = "lidar"
RadarFrame = tuple[int, np.ndarray, np.ndarray]  # (timestamp_ns, positions (N, 3), velocities (N, 3)), world frame


def _us(times_ns: np.ndarray | Sequence[int], offset_ns: int, what: str) -> list[int]:
    stamps = (np.asarray(times_ns, dtype=np.int64) - offset_ns + 500) // 1000
    if np.any(np.diff(stamps) <= 0):
        raise ValueError(f"{what}: timestamps closer than 1 µs (or unordered) merge in SFS")
    return stamps.tolist()


def scene_to_sfs(
    tracks: Sequence[CuboidTrack],
    world_from_ego: PoseTrack | None = None,
    frames: Sequence[tuple[int, np.ndarray]] = (),
    *,
    time_offset_us: int | None = None,
    radars: Mapping[str, Sequence[RadarFrame]] | None = None,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> dict:
    """The SFS scene as a dict (``time_unit`` microseconds; points as float32 arrays).

    Args:
        tracks: world-frame cuboid tracks.
        world_from_ego: ego poses; needed with ``frames`` or ``radars``.
        frames: ``(timestamp_ns, xyz (N, 3))`` LiDAR frames, points in the world frame.
        time_offset_us: defaults to the earliest track, pose or frame time, floored to 1 µs.
        radars: radar name → its frames ``(timestamp_ns, positions (N, 3), velocities (N, 3))``
            (world frame; a radar needs at least one frame).
        interpolation: the tracks' modes between keyframes (one for all or one per track,
            default linear; see the module docstring).

    Raises ``ValueError`` when a time precedes the offset or two keyframes/poses/frames
    round to the same microsecond, or for a radar id that repeats another sensor's.
    """
    radars = dict(radars or {})
    if (frames or radars) and world_from_ego is None:
        raise ValueError("LiDAR and radar frames need world_from_ego (the sensors' pose path)")
    if LIDAR_ID in radars or any(not r for r in radars.values()):
        raise ValueError(f"radar ids must differ from {LIDAR_ID!r} and each radar needs a frame")
    starts = [int(t.timestamps_ns[0]) for t in tracks] + [int(f[0]) for f in frames[:1]]
    starts += [int(min(f[0] for f in r)) for r in radars.values()]
    if frames or radars:
        assert world_from_ego is not None  # checked above
        starts.append(int(world_from_ego.timestamps_ns[0]))
    if time_offset_us is None:
        time_offset_us = min(starts) // 1000 if starts else 0
    offset_ns = int(time_offset_us) * 1000
    if starts and min(starts) < offset_ns:
        raise ValueError(f"a timestamp ({min(starts)} ns) precedes time_offset_us {time_offset_us}")
    sampled = _with_frame_boxes(tracks, interpolation, np.array([f[0] for f in frames], np.int64))
    annotations = [track_to_sfs(replace(t, timestamps_ns=t.timestamps_ns - offset_ns)) for t in sampled]
    scene: dict = {"version": "1.0", "time_unit": "microseconds", "time_offset": int(time_offset_us),
                   "annotations": annotations, "sensors": []}
    if frames or radars:
        assert world_from_ego is not None
        poses = {"timestamps": _us(world_from_ego.timestamps_ns, offset_ns, "world_from_ego"),
                 "values": sfs_pose_row(world_from_ego.translation, world_from_ego.rotation).tolist()}
    if frames:
        frame_us = _us([f[0] for f in frames], offset_ns, "frames")
        scene["sensors"].append({
            "id": LIDAR_ID, "type": "lidar", "coordinates": "world", "poses": poses,
            "frames": [{"timestamp": t, "points": {"positions": _positions(xyz, i)}}
                       for i, (t, (_, xyz)) in enumerate(zip(frame_us, frames))],
        })
    for name, radar in radars.items():
        radar_us = _us([f[0] for f in radar], offset_ns, f"radar {name}")
        scene["sensors"].append({
            "id": name, "type": "radar", "coordinates": "world", "poses": poses,
            "frames": [{"timestamp": t, "points": {"positions": _positions(xyz, i), "directions": _positions(v, i)}}
                       for i, (t, (_, xyz, v)) in enumerate(zip(radar_us, radar))],
        })
    return scene


def _with_frame_boxes(tracks: Sequence[CuboidTrack], interpolation: Interpolation | Sequence[Interpolation] | None,
                      frame_times_ns: np.ndarray) -> list[CuboidTrack]:
    """The tracks as written: each motion-aware, moving track with its box at every frame
    time between its keyframes and at least 1 µs from each (the keyframes, their attributes
    and the other tracks as they are)."""
    table = TrackTable.from_tracks(tracks, interpolation)
    moving = np.flatnonzero((table.interpolation != INTERPOLATION["linear"]) & ~table.stationary)
    if not len(moving) or not len(frame_times_ns):
        return list(tracks)
    boxes = interpolate_tracks(table.select(moving), frame_times_ns)  # valid from the first to the last keyframe
    out = list(tracks)
    for j, n in enumerate(moving.tolist()):
        t = tracks[n]
        gap = np.abs(frame_times_ns[:, None] - t.timestamps_ns[None]).min(axis=1)
        add = np.flatnonzero(boxes.valid[:, j] & (gap >= 1000))
        times = np.concatenate([t.timestamps_ns, frame_times_ns[add]])
        order = np.argsort(times, kind="stable")
        centers, sizes, rotations = (np.concatenate([a, b[add, j]])[order] for a, b in (
            (t.centers, boxes.centers), (t.sizes, boxes.sizes), (t.rotations, boxes.rotations)))
        padded = None if t.keyframe_attributes is None else t.keyframe_attributes + [{}] * len(add)
        out[n] = replace(t, timestamps_ns=times[order], centers=centers, sizes=sizes, rotations=rotations,
                         keyframe_attributes=None if padded is None else [padded[i] for i in order])
    return out


def scene_radar_frames(scene: Scene) -> dict[str, list[RadarFrame]]:
    """Each radar of a prepared scene → one frame per scene frame (at the frame timestamp):
    its returns' world positions and compensated radial velocities as world vectors along the
    line of sight from the radar at the scan time (the scene's frame poses, interpolated or
    continued linearly). A frame without returns of a radar has an empty one."""
    track = scene.world_from_ego()
    out: dict[str, list[RadarFrame]] = {r.name: [] for r in scene.radars}
    for entry in scene.frames:
        table = scene.stored_radar(entry.index)
        if table is None:
            for frames in out.values():
                frames.append((entry.timestamp_ns, np.zeros((0, 3)), np.zeros((0, 3))))
            continue
        xyz = positions(table)
        ids, comp, offset = (column_values(table, c, RADAR_TYPES)
                             for c in ("sensor_id", "radial_velocity_comp_mps", "time_offset_ns"))
        for k, radar in enumerate(scene.radars):
            rows = np.flatnonzero(ids == k)
            poses = track.interpolate(entry.timestamp_ns + offset[rows].astype(np.int64), "linear")
            sight = xyz[rows] - (poses @ radar.ego_from_sensor).translation.reshape(-1, 3)
            unit = sight / np.maximum(np.linalg.norm(sight, axis=1, keepdims=True), 1e-12)
            out[radar.name].append((entry.timestamp_ns, xyz[rows], unit * comp[rows, None]))
    return out


def _positions(xyz: np.ndarray, i: int) -> np.ndarray:
    p = np.ascontiguousarray(xyz, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != 3 or not np.all(np.isfinite(p)):
        raise ValueError(f"frames[{i}]: points must be finite (N, 3), got {p.shape}")
    return p


def encode_sfs(scene: dict) -> bytes:
    """Scale JSON-binary bytes of a scene dict whose arrays are NumPy arrays."""
    items: list[dict] = []
    blobs: list[bytes] = [bytes(4)]
    offset = 4

    def strip(obj, keys: list):
        nonlocal offset
        if isinstance(obj, dict):
            return {k: strip(v, keys + [k]) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [strip(v, keys + [i]) for i, v in enumerate(obj)]
        if isinstance(obj, np.ndarray):
            data = obj.tobytes()
            items.append({"keys": keys, "length": len(data), "offset": offset, "dtype": obj.dtype.name,
                          "shape": list(obj.shape)})
            blobs.append(data + bytes(4 - len(data) % 4))
            offset += len(blobs[-1])
            return ""
        return obj

    header = json.dumps({**strip(scene, []), "$items": items}, allow_nan=False).encode()
    header += b" " * (4 - len(header) % 4)
    return header + b"".join(blobs)


def write_sfs(
    path: str | os.PathLike,
    tracks: Sequence[CuboidTrack],
    world_from_ego: PoseTrack | None = None,
    frames: Sequence[tuple[int, np.ndarray]] = (),
    *,
    time_offset_us: int | None = None,
    radars: Mapping[str, Sequence[RadarFrame]] | None = None,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> Path:
    """Write an ``.sfs`` file (see :func:`scene_to_sfs`); returns the path."""
    out = Path(path)
    out.write_bytes(encode_sfs(scene_to_sfs(tracks, world_from_ego, frames, time_offset_us=time_offset_us,
                                            radars=radars, interpolation=interpolation)))
    return out
