"""Import an Argoverse 2 sensor log into Fathom's raw-log layout (:mod:`formats.raw_log`).

A log directory (``LOG_ID/``)::

    city_SE3_egovehicle.feather            timestamp_ns, qw qx qy qz, tx_m ty_m tz_m (city ← ego)
    calibration/egovehicle_SE3_sensor.feather  sensor_name, qw..qz, tx_m..tz_m (ego ← sensor)
    calibration/intrinsics.feather         sensor_name, fx_px fy_px cx_px cy_px, height_px width_px (k1 k2 k3 unused)
    sensors/lidar/TIMESTAMP_NS.feather     x y z (ego frame), intensity, laser_number, offset_ns
    sensors/cameras/NAME/TIMESTAMP_NS.jpg
    annotations.feather                    timestamp_ns, track_uuid, category, length_m width_m height_m,
                                           qw..qz, tx_m..tz_m (ego frame at timestamp_ns)

Conventions: sweeps are in the ego frame **at the sweep timestamp** (av2-api projects them
with ``city_SE3_ego`` at the LiDAR time, ``points_lidar_time``), so each sweep becomes a PCD
of a virtual ``lidar`` at the ego origin (``ego_from_lidar`` = identity) with zero time offsets
(``fathom prepare`` must not move the points again); ``offset_ns`` is dropped. Cuboid centres
are the box middles, sizes l w h, rotation ego ← box; they become world-frame tracks
(id = ``track_uuid``). Cameras are pinhole with ``K`` from ``fx_px fy_px cx_px cy_px``: AV2
images are distributed already undistorted and av2-api's ``PinholeCamera`` projects with ``K``
alone, so ``k1 k2 k3`` are ignored (applying them would distort the images a second time, by
up to ~160 px at the corners of the ring cameras). Each frame takes every camera's image
nearest in time within half a camera period (25 ms, cameras at 20 Hz). The city frame is
kept; ``origin.enu_offset_m`` is the first ego position rounded to whole metres (x, y), label
centres are relative to it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.pose_sources import from_pose_table
from engine.pose_track import OutOfRangeError
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.av2 import read_av2_sweep
from formats.errors import FormatError
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, link_or_copy, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin

POSE = ("qw", "qx", "qy", "qz", "tx_m", "ty_m", "tz_m")
IMAGE_TOLERANCE_NS = 25_000_000


def _table(path: Path, columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        table = feather.read_table(path, memory_map=False)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(path, None, f"an Arrow IPC (feather) file: {exc}") from None
    missing = [c for c in columns if c not in table.column_names]
    if missing:
        raise FormatError(path, None, f"columns {list(columns)}, missing {missing}")
    out = {}
    for c in columns:
        col = table.column(c)
        if col.null_count:
            raise FormatError(path, None, f"column {c!r} without nulls")
        out[c] = col.to_numpy()
    return out


def _se3(cols: dict[str, np.ndarray], path: Path, rows=slice(None)) -> SE3:
    try:
        q = np.stack([cols[k][rows] for k in POSE[:4]], axis=-1).astype(np.float64)
        t = np.stack([cols[k][rows] for k in POSE[4:]], axis=-1).astype(np.float64)
        return SE3(q, t)
    except ValueError as exc:
        raise FormatError(path, None, f"finite, non-zero poses ({exc})") from None


def import_av2_log(log_path: str | os.PathLike, log_dir: str | os.PathLike, *, images: bool = True) -> Path:
    """Write the AV2 sensor log at ``log_path`` as a raw log in ``log_dir``; returns ``log_dir``."""
    src = Path(log_path)
    pose_path = src / "city_SE3_egovehicle.feather"
    p = _table(pose_path, ("timestamp_ns",) + POSE)
    try:
        track = from_pose_table(p["timestamp_ns"].astype(np.int64),
                                np.stack([p[k] for k in POSE[4:] + POSE[:4]], axis=1).astype(np.float64))
    except ValueError as exc:
        raise FormatError(pose_path, None, f"valid poses: {exc}") from None
    offset = np.array([round(track.translation[0, 0]), round(track.translation[0, 1]), 0.0])
    sweeps = sorted((src / "sensors" / "lidar").glob("*.feather"))
    if not sweeps:
        raise FormatError(src / "sensors" / "lidar", None, "a directory of TIMESTAMP_NS.feather sweeps")
    for s in sweeps:
        if not s.stem.isdigit():
            raise FormatError(s, None, "a sweep named TIMESTAMP_NS.feather")
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_pose_table(out, track)
    cameras = _cameras(src) if images else []
    cam_times = {c.name: sorted(int(f.stem) for f in (src / "sensors" / "cameras" / c.name).glob("*.jpg"))
                 for c in cameras}
    frames = []
    for i, path in enumerate(sweeps):
        sweep = read_av2_sweep(path)
        t_ns = int(path.stem)
        rel = f"lidar/lidar/{i:06d}.pcd"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        n = len(sweep)
        write_pcd(out / rel, Sweep(sweep.xyz, t_ns, sweep.intensity, np.zeros(n, np.int64), sweep.ring, frame="ego"))
        entry: dict[str, Any] = {"timestamp_ns": t_ns, "lidar": {"lidar": rel}, "images": {}}
        for name, stamps in cam_times.items():
            if not stamps:
                continue
            k = int(np.argmin(np.abs(np.asarray(stamps) - t_ns)))
            if abs(stamps[k] - t_ns) <= IMAGE_TOLERANCE_NS:
                rel_img = f"camera/{name}/{i:06d}.jpg"
                link_or_copy(src / "sensors" / "cameras" / name / f"{stamps[k]}.jpg", out / rel_img)
                entry["images"][name] = {"path": rel_img, "timestamp_ns": stamps[k]}
        frames.append(entry)
    ann_path = src / "annotations.feather"
    labels = None
    if ann_path.exists():
        write_labels(out, _tracks(ann_path, track, offset))
        labels = "labels.json"
    write_log_manifest(out, log_id=src.name, origin=SceneOrigin(enu_offset_m=tuple(offset)),
                       lidars=[LogLidar("lidar", 0, SE3.identity(), "pcd")],
                       cameras=[c for c in cameras if cam_times.get(c.name)], frames=frames, labels=labels)
    return out


def _cameras(src: Path) -> list[Camera]:
    ext_path = src / "calibration" / "egovehicle_SE3_sensor.feather"
    int_path = src / "calibration" / "intrinsics.feather"
    if not (src / "sensors" / "cameras").is_dir():
        return []
    ext = _table(ext_path, ("sensor_name",) + POSE)
    intr = _table(int_path, ("sensor_name", "fx_px", "fy_px", "cx_px", "cy_px", "height_px", "width_px"))
    ego_from = {str(n): _se3(ext, ext_path, i) for i, n in enumerate(ext["sensor_name"])}
    cams = []
    for i, name in enumerate(map(str, intr["sensor_name"])):
        if not (src / "sensors" / "cameras" / name).is_dir():
            continue
        if name not in ego_from:
            raise FormatError(ext_path, None, f"an extrinsic row for camera {name!r}")
        try:
            k = CameraIntrinsics(int(intr["width_px"][i]), int(intr["height_px"][i]), float(intr["fx_px"][i]),
                                 float(intr["fy_px"][i]), float(intr["cx_px"][i]), float(intr["cy_px"][i]))
        except ValueError as exc:
            raise FormatError(int_path, None, f"valid intrinsics for {name!r} ({exc})") from None
        cams.append(Camera(name, k, ego_from[name]))
    return cams


def _tracks(path: Path, track, offset: np.ndarray) -> list[CuboidTrack]:
    a = _table(path, ("timestamp_ns", "track_uuid", "category", "length_m", "width_m", "height_m") + POSE)
    ts = a["timestamp_ns"].astype(np.int64)
    try:
        world_from_ego = track.interpolate(ts)
    except OutOfRangeError as exc:
        raise FormatError(path, None, f"annotation times inside the pose table ({exc})") from None
    ego_box = _se3(a, path)
    centers = world_from_ego.apply(ego_box.translation) - offset
    rotations = quat.multiply(world_from_ego.rotation, ego_box.rotation)
    sizes = np.stack([a["length_m"], a["width_m"], a["height_m"]], axis=1).astype(np.float64)
    tracks = []
    uuids = a["track_uuid"].astype(str)
    for uuid in sorted(set(uuids)):
        rows = np.flatnonzero(uuids == uuid)
        rows = rows[np.argsort(ts[rows], kind="stable")]
        try:
            tracks.append(CuboidTrack(uuid, str(a["category"][rows[0]]), ts[rows], centers[rows], sizes[rows],
                                      rotations[rows]))
        except ValueError as exc:
            raise FormatError(path, None, f"track {uuid}: valid boxes ({exc})") from None
    return tracks
