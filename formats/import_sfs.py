"""Import a Scale Sensor Fusion Scene (``.sfs``) into Fathom's raw-log layout.

The file is Scale's JSON-binary container (see :mod:`formats.export_sfs`). Timestamps are
integers in the scene's ``time_unit`` (µs by default) relative to ``time_offset``. One LiDAR
sensor is imported (``lidar_id``, default the first): its ``PosePath`` (``x y z qx qy qz qw``,
scalar last) becomes ``world_from_ego`` with the ego at the LiDAR (``ego_from_lidar`` =
identity), each frame's points (``coordinates`` ``"world"``: moved into the LiDAR frame with
the pose at the frame time; ``"ego"``: kept) a binary PCD with ``intensity`` (uint8 → float32).
``CuboidAnnotation``s become tracks (:func:`formats.sfs_cuboids.track_from_sfs`) in
``labels.json``. ``origin.enu_offset_m`` is the first pose rounded to whole metres (x, y),
and label centres are relative to it. Per-point timestamps, cameras and radars are not
imported.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import numpy as np

from engine.pose_sources import from_pose_table
from engine.pose_track import OutOfRangeError
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.conventions import pose_from_sfs_row
from formats.errors import FormatError
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin
from formats.sfs_cuboids import _NS_PER_UNIT, TimeUnit, track_from_sfs

_DTYPES = {"float32", "float64", "uint8", "uint16", "uint32", "uint64", "int32", "int64"}


def decode_sfs(data: bytes, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """A JSON-binary scene as a dict with NumPy arrays in place; ``FormatError`` on bad bytes."""
    end = data.find(b"\0")
    if end < 0:
        raise FormatError(path, len(data), "a NUL byte ending the JSON header")
    try:
        doc = json.loads(data[:end])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(path, getattr(exc, "pos", 0), f"a JSON header ({exc})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("$items", []), list):
        raise FormatError(path, 0, 'a JSON object header with an "$items" list')
    blob = memoryview(data)[end:]
    for n, item in enumerate(doc.pop("$items", [])):
        try:
            keys, off, length, dtype = item["keys"], int(item["offset"]), int(item["length"]), item["dtype"]
            shape = tuple(item.get("shape") or (-1,))
        except (KeyError, TypeError, ValueError):
            raise FormatError(path, 0, f"$items[{n}] with keys, offset, length, dtype") from None
        if (dtype not in _DTYPES or off < 0 or length < 0 or off + length > len(blob)
                or length % np.dtype(dtype).itemsize):
            raise FormatError(path, end + max(off, 0), f"$items[{n}]: {length} bytes of {dtype} inside the file")
        try:
            value = np.frombuffer(blob[off:off + length], dtype=dtype).reshape(shape).copy()
            target = doc
            for k in keys[:-1]:
                target = target[k]
            target[keys[-1]] = value
        except (KeyError, IndexError, TypeError, ValueError):
            raise FormatError(path, end + off,
                              f"$items[{n}]: keys {keys} and shape {shape} that fit the header") from None
    return doc


def import_sfs(path: str | os.PathLike, log_dir: str | os.PathLike, *, lidar_id: str | None = None) -> Path:
    """Write the ``.sfs`` scene at ``path`` as a raw log in ``log_dir``; returns ``log_dir``."""
    src = Path(path)
    try:
        scene = decode_sfs(src.read_bytes(), src)
    except OSError as exc:
        raise FormatError(src, None, f"a readable SFS file ({exc.strerror})") from None
    unit = scene.get("time_unit") or "microseconds"
    if unit not in _NS_PER_UNIT:
        raise FormatError(src, None, f"time_unit one of {sorted(_NS_PER_UNIT)}, got {unit!r}")
    offset_ns = int(scene.get("time_offset") or 0) * _NS_PER_UNIT[unit]
    lidars = [s for s in scene.get("sensors") or [] if isinstance(s, dict) and s.get("type") == "lidar"
              and (lidar_id is None or s.get("id") == lidar_id)]
    if not lidars:
        raise FormatError(src, None, f"a lidar sensor{'' if lidar_id is None else f' with id {lidar_id!r}'}")
    lidar = lidars[0]
    name = str(lidar.get("id"))
    try:
        stamps = np.asarray(lidar["poses"]["timestamps"], dtype=np.int64) * _NS_PER_UNIT[unit] + offset_ns
        t, q = pose_from_sfs_row(np.asarray(lidar["poses"]["values"], dtype=np.float64))
        track = from_pose_table(stamps, np.hstack([t, q]))
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(src, None,
                          f"sensor {name}: a pose path of timestamps and x y z qx qy qz qw rows ({exc})") from None
    origin = np.array([round(track.translation[0, 0]), round(track.translation[0, 1]), 0.0])
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_pose_table(out, track)
    world = lidar.get("coordinates", "world") == "world"
    frames = []
    for i, frame in enumerate(lidar.get("frames") or []):
        where = f"sensor {name} frame {i}"
        try:
            t_ns = int(frame["timestamp"]) * _NS_PER_UNIT[unit] + offset_ns
            xyz = np.asarray(frame["points"]["positions"], dtype=np.float64).reshape(-1, 3)
            inten = frame["points"].get("intensities")
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(src, None, f"{where}: timestamp and (N, 3) positions ({exc})") from None
        if world:
            try:
                xyz = track.at(t_ns).inverse().apply(xyz)
            except OutOfRangeError:
                raise FormatError(src, None, f"{where}: a timestamp inside the pose path") from None
        n = len(xyz)
        intensity = None if inten is None else np.asarray(inten, dtype=np.float32).reshape(-1)
        if intensity is not None and len(intensity) != n:
            raise FormatError(src, None, f"{where}: {n} intensities, got {len(intensity)}")
        rel = f"lidar/{name}/{i:06d}.pcd"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        write_pcd(out / rel, Sweep(xyz.astype(np.float32), t_ns, intensity, np.zeros(n, np.int64), frame="lidar"))
        frames.append({"timestamp_ns": t_ns, "lidar": {name: rel}, "images": {}})
    tracks = []
    for ann in scene.get("annotations") or []:
        if isinstance(ann, dict) and ann.get("type") == "cuboid":
            tr = track_from_sfs(ann, cast(TimeUnit, unit), source=os.fspath(src))  # a unit checked above
            tracks.append(replace(tr, timestamps_ns=tr.timestamps_ns + offset_ns, centers=tr.centers - origin))
    write_labels(out, tracks)
    write_log_manifest(out, log_id=src.stem, origin=SceneOrigin(enu_offset_m=tuple(origin)),
                       lidars=[LogLidar(name, 0, SE3.identity(), "pcd")], cameras=[], frames=frames,
                       labels="labels.json")
    return out
