"""Import one nuScenes v1.0 scene into Fathom's raw-log layout (:mod:`formats.raw_log`).

Reads ``DATAROOT/VERSION/{scene, sample, sample_data, ego_pose, calibrated_sensor, sensor,
sample_annotation, instance, category}.json``. Every LiDAR ``sample_data`` of the scene's
samples (key frames and, with ``sweeps=True``, the sweeps between them) becomes a raw-log
frame at its own timestamp (µs → ns), its ``.pcd.bin`` linked or copied into the log
(LiDAR frame, :mod:`formats.nuscenes`). ``world_from_ego`` is the ``ego_pose`` of every
sample_data used (LiDAR and cameras; equal timestamps merged), via
:func:`formats.pose_files.nuscenes_ego_pose_track`. Key-frame camera images go with their
sample's key LiDAR frame; cameras are pinhole with ``camera_intrinsic`` and the image size of
their sample_data. Annotations become tracks (id = instance token, category = category name,
size ``wlh`` → ``lwh``, keyframes at the sample timestamps) in ``labels.json``.

The global frame is kept as the log's ENU frame; ``origin.enu_offset_m`` is the first ego
position rounded to whole metres (x, y; z = 0) so that the prepared scene stays near 0, and
``labels.json`` centres are relative to it (as the raw-log layout states).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.se3 import SE3
from formats.conventions import lwh_from_nuscenes_wlh
from formats.errors import FormatError, load_json
from formats.pose_files import nuscenes_ego_pose_track
from formats.raw_log import LogLidar, link_or_copy, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin

TABLES = ("scene", "sample", "sample_data", "ego_pose", "calibrated_sensor", "sensor", "sample_annotation",
          "instance", "category")


def load_tables(dataroot: str | os.PathLike, version: str) -> dict[str, dict[str, dict]]:
    """The needed tables as ``name → token → record``; ``FormatError`` names a bad table file."""
    out = {}
    for name in TABLES:
        path = Path(dataroot) / version / f"{name}.json"
        records = load_json(path, "nuScenes table")
        if not isinstance(records, list) or not all(isinstance(r, dict) and "token" in r for r in records):
            raise FormatError(path, None, "a JSON list of records with a 'token'")
        out[name] = {r["token"]: r for r in records}
    return out


def _get(tables: dict, name: str, tok: str, field: str | None = None, *, dataroot: Path, version: str) -> Any:
    path = dataroot / version / f"{name}.json"
    rec = tables[name].get(tok)
    if rec is None:
        raise FormatError(path, None, f"a record with token {tok!r}")
    if field is None:
        return rec
    if field not in rec:
        raise FormatError(path, None, f"record {tok}: field {field!r}")
    return rec[field]


def _pose(rec: dict, path: Path) -> SE3:
    try:
        return SE3(np.asarray(rec["rotation"], dtype=np.float64), np.asarray(rec["translation"], dtype=np.float64))
    except (KeyError, ValueError, TypeError) as exc:
        raise FormatError(path, None, f"record {rec.get('token')}: translation (3) and rotation (4) ({exc})") from None


def import_nuscenes_scene(
    dataroot: str | os.PathLike, version: str, scene_name: str, log_dir: str | os.PathLike, *,
    lidar: str = "LIDAR_TOP", sweeps: bool = True, images: bool = True,
) -> Path:
    """Write nuScenes scene ``scene_name`` as a raw log in ``log_dir``; returns ``log_dir``."""
    root = Path(dataroot)
    t = load_tables(root, version)
    get = lambda name, tok, field=None: _get(t, name, tok, field, dataroot=root, version=version)  # noqa: E731
    scene = next((s for s in t["scene"].values() if s.get("name") == scene_name), None)
    if scene is None:
        raise FormatError(root / version / "scene.json", None, f"a scene named {scene_name!r}")
    samples, tok = [], get("scene", scene["token"], "first_sample_token")
    while tok:
        samples.append(get("sample", tok))
        tok = get("sample", tok, "next")
    sample_tokens = {s["token"] for s in samples}
    calibrated = t["calibrated_sensor"].values()
    channel = {c["token"]: get("sensor", c.get("sensor_token", ""), "channel") for c in calibrated}
    modality = {c["token"]: get("sensor", c.get("sensor_token", ""), "modality") for c in calibrated}
    data = [d for d in t["sample_data"].values() if d.get("sample_token") in sample_tokens]
    for d in data:
        for f in ("calibrated_sensor_token", "ego_pose_token", "timestamp", "filename", "is_key_frame"):
            get("sample_data", d["token"], f)
    lidar_data = sorted((d for d in data if channel.get(d["calibrated_sensor_token"]) == lidar
                         and (sweeps or d["is_key_frame"])), key=lambda d: d["timestamp"])
    if not lidar_data:
        raise FormatError(root / version / "sample_data.json", None, f"{lidar} sample_data for scene {scene_name!r}")
    cam_data = [d for d in data if modality.get(d["calibrated_sensor_token"]) == "camera" and d["is_key_frame"]] \
        if images else []
    used = lidar_data + cam_data
    poses: dict[int, dict[str, Any]] = {}  # ego_pose records by timestamp (µs)
    for d in used:
        rec = get("ego_pose", d["ego_pose_token"])
        poses.setdefault(int(rec["timestamp"]), rec)
    track = nuscenes_ego_pose_track(poses.values(), root / version / "ego_pose.json")
    offset = np.array([round(track.translation[0, 0]), round(track.translation[0, 1]), 0.0])
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_pose_table(out, track)
    lidar_calib = get("calibrated_sensor", lidar_data[0]["calibrated_sensor_token"])
    cameras: dict[str, Camera] = {}
    for d in cam_data:
        name = channel[d["calibrated_sensor_token"]]
        if name in cameras:
            continue
        cs = get("calibrated_sensor", d["calibrated_sensor_token"])
        k = np.asarray(cs.get("camera_intrinsic"), dtype=np.float64)
        if k.shape != (3, 3):
            raise FormatError(root / version / "calibrated_sensor.json", None, f"{cs['token']}: a 3×3 camera_intrinsic")
        intr = CameraIntrinsics(int(d["width"]), int(d["height"]), k[0, 0], k[1, 1], k[0, 2], k[1, 2], skew=k[0, 1])
        cameras[name] = Camera(name, intr, _pose(cs, root / version / "calibrated_sensor.json"))
    key_images: dict[str, dict[str, dict]] = {}
    for d in cam_data:
        key_images.setdefault(d["sample_token"], {})[channel[d["calibrated_sensor_token"]]] = d
    frames = []
    for i, d in enumerate(lidar_data):
        rel = f"lidar/{lidar}/{i:06d}.pcd.bin"
        link_or_copy(root / d["filename"], out / rel)
        entry: dict[str, Any] = {"timestamp_ns": int(d["timestamp"]) * 1000, "lidar": {lidar: rel}, "images": {}}
        if d["is_key_frame"]:
            for name, img in sorted(key_images.get(d["sample_token"], {}).items()):
                rel_img = f"camera/{name}/{i:06d}.jpg"
                link_or_copy(root / img["filename"], out / rel_img)
                entry["images"][name] = {"path": rel_img, "timestamp_ns": int(img["timestamp"]) * 1000}
        frames.append(entry)
    tracks = _tracks(t, samples, offset, get, root / version / "sample_annotation.json")
    write_labels(out, tracks)
    write_log_manifest(
        out, log_id=scene_name, origin=SceneOrigin(enu_offset_m=tuple(offset)),
        lidars=[LogLidar(lidar, 0, _pose(lidar_calib, root / version / "calibrated_sensor.json"), "nuscenes")],
        cameras=list(cameras.values()), frames=frames, labels="labels.json",
    )
    return out


def _tracks(t: dict, samples: list[dict], offset: np.ndarray, get, path: Path) -> list[CuboidTrack]:
    stamp = {s["token"]: int(s["timestamp"]) * 1000 for s in samples}
    by_instance: dict[str, list[dict]] = {}
    for a in t["sample_annotation"].values():
        if a.get("sample_token") in stamp:
            by_instance.setdefault(get("sample_annotation", a["token"], "instance_token"), []).append(a)
    tracks = []
    for inst, anns in sorted(by_instance.items()):
        anns.sort(key=lambda a: stamp[a["sample_token"]])
        category = get("category", get("instance", inst, "category_token"), "name")
        try:
            centers = np.array([a["translation"] for a in anns], dtype=np.float64).reshape(-1, 3) - offset
            sizes = lwh_from_nuscenes_wlh(np.array([a["size"] for a in anns], dtype=np.float64).reshape(-1, 3))
            times = np.array([stamp[a["sample_token"]] for a in anns], np.int64)
            rotations = np.array([a["rotation"] for a in anns], dtype=np.float64).reshape(-1, 4)
            track = CuboidTrack(inst, category, times, centers, sizes, rotations)
        except (KeyError, ValueError) as exc:
            raise FormatError(path, None, f"instance {inst}: valid boxes ({exc})") from None
        tracks.append(track)
    return tracks
