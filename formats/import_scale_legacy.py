"""Import Scale's legacy per-frame LiDAR JSON (one ``Frame`` object per file) into Fathom's
raw-log layout (:mod:`formats.raw_log`).

Field names, from Scale's reference "Data Types and the Frame Objects"
(https://docs.scale.com/reference/data-types-and-the-frame-objects: ``Vector3``, ``LidarPoint``
``{x, y, z, i?, d?, t?, is_ground?}``), its "Callback Format" for cuboids
(https://docs.scale.com/reference/lidar-callback-format: ``uuid label position dimensions yaw
stationary attributes``, ENU world, "0 yaw is along the vector <0, 1, 0> and rotates
counter-clockwise"), the Scale Lidar Toolkit ("We define headings using quaternion ... w, x,
y, z"; camera extrinsics added to the device pose per frame,
https://scaleapi.github.io/scale-lidar-toolkit/load_raw_data/structure.html) and a public
writer of the format (tier4/tier4_perception_dataset, ``ConfigData.to_dict`` /
``ImageData.to_dict``: ``images timestamp device_position device_heading points``; images
``fx fy cx cy timestamp image_url position heading camera_model k1 k2 p1 p2 k3 k4``)::

    FRAMES_DIR/N.json   {"device_position": {x, y, z}, "device_heading": {w, x, y, z},
                         "timestamp": int (ns), "points": [{x, y, z, i?, d?}, ...],
                         "images": [{"image_url", "position", "heading", "fx", "fy", "cx", "cy",
                                     "skew"?, "camera_model"? ("brown_conrady" | "fisheye"),
                                     "k1".."k4"?, "p1"?, "p2"?, "timestamp"?, "scale_factor"?}],
                         "radar_points": [...]}                         (not imported)
    ANNOTATIONS.json    [{"cuboids": [{"uuid", "label", "position": {x, y, z},
                          "dimensions": {x, y, z}, "yaw", "stationary"?, "attributes"?}]}, ...]
                        one entry per frame file, in frame order (the task's response)

Conventions (the Scale legacy row of :mod:`formats.conventions`): points, device pose and
camera poses are in the **world** frame; headings are ``{w, x, y, z}`` objects (key names, so
the key order does not matter); ``timestamp`` is integer nanoseconds (``timestamp_unit``
otherwise); cuboid ``dimensions.x`` is the width and ``.y`` the length, and ``yaw = 0``
points the front along world +y (Fathom rotation: yaw + π/2), as PandaSet (a Scale export).
The ego is the device (``world_from_ego`` = device pose, ``ego_from_lidar`` = identity);
points go to the device frame with the frame pose and into one PCD per device id ``d``
(LiDAR ``lidar<d>``) with zero time offsets, so ``fathom prepare`` puts them back exactly.
Camera ``k`` of the ``images`` list is ``camera<k>``; its world pose is taken at the image
``timestamp``: ``ego_from_camera`` = device pose⁻¹ · camera pose of the image closest in time
to its frame, and the camera poses at the other image times add ego poses to
``world_from_ego`` (as the PandaSet importer does); intrinsics refer to the full-size image, so they are divided
by ``scale_factor`` (the stored image's downscale). ``brown_conrady`` takes ``k1 k2 p1 p2 k3``
(OpenCV order), ``fisheye`` ``k1..k4`` (OpenCV fisheye = ``kannala_brandt``). Images must be
local JPEG files, ``image_url`` relative to ``FRAMES_DIR``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal, Mapping

import numpy as np

from engine.camera import Camera, CameraIntrinsics, LensModel
from engine.cuboid import CuboidTrack
from engine.pose_sources import from_pose_table, with_extra_samples
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.conventions import lwh_from_scale_dimensions, quaternion_from_legacy_heading, rotation_from_scale_yaw
from formats.errors import FormatError, load_json
from formats.jpeg import decode_jpeg
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, link_or_copy, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin

_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_LENS: dict[str, tuple[LensModel, tuple[str, ...]]] = {
    "brown_conrady": ("brown_conrady", ("k1", "k2", "p1", "p2", "k3")),
    "pinhole": ("brown_conrady", ("k1", "k2", "p1", "p2", "k3")),
    "fisheye": ("kannala_brandt", ("k1", "k2", "k3", "k4")),
}


def _number(obj: Mapping[str, Any], key: str, path: Path, where: str, default: float | None = None) -> float:
    value = obj.get(key, default) if isinstance(obj, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise FormatError(path, None, f"{where}.{key}: a finite number, got {value!r}")
    return float(value)


def _stamp_ns(obj: Mapping[str, Any], path: Path, where: str, unit: int, default: int | None = None) -> int:
    """``obj["timestamp"]`` in ns: integers exactly (epoch ns do not fit a float64), floats rounded."""
    if isinstance(obj.get("timestamp"), int) and not isinstance(obj["timestamp"], bool):
        return obj["timestamp"] * unit
    if default is not None and obj.get("timestamp") is None:
        return default
    return round(_number(obj, "timestamp", path, where) * unit)


def _vector3(obj: Any, path: Path, where: str) -> np.ndarray:
    if not isinstance(obj, Mapping):
        raise FormatError(path, None, f"{where}: a Vector3 object {{x, y, z}}, got {type(obj).__name__}")
    return np.array([_number(obj, k, path, where) for k in "xyz"])


def _heading(obj: Any, path: Path, where: str) -> np.ndarray:
    if isinstance(obj, Mapping):
        q = np.array([_number(obj, k, path, where) for k in "wxyz"])
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool) and np.isfinite(obj):
        q = quaternion_from_legacy_heading(float(obj))
    else:
        raise FormatError(path, None, f"{where}: a quaternion object {{w, x, y, z}} or a yaw number, got {obj!r}")
    norm = float(np.linalg.norm(q))
    if not 0.99 < norm < 1.01:  # float32 writers leave ~1e-7; anything far off is not a rotation
        raise FormatError(path, None, f"{where}: a unit quaternion, norm is {norm:.6g}")
    return q / norm


def _frame_files(frames_dir: Path, skip: Path | None) -> list[Path]:
    files = [p for p in frames_dir.glob("*.json") if skip is None or p.resolve() != skip]
    digits = [re.findall(r"\d+", p.stem) for p in files]
    if not files or not all(digits):
        raise FormatError(frames_dir, None, "a directory of frame JSON files numbered by frame (0.json, 1.json, ...)")
    return [p for _, p in sorted(zip((int(d[-1]) for d in digits), files))]


def _points(doc: Mapping[str, Any], path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xyz (N, 3) float64 world, intensity (N,) float32, device (N,) int64)``."""
    pts = doc.get("points")
    if not isinstance(pts, list):
        raise FormatError(path, None, f"points: a list of LidarPoint objects, got {type(pts).__name__}")
    try:
        xyz = np.array([(p["x"], p["y"], p["z"]) for p in pts], dtype=np.float64).reshape(-1, 3)
        inten = np.array([p.get("i", 0.0) for p in pts], dtype=np.float32)
        dev = np.array([p.get("d", 0) for p in pts], dtype=np.float64)
    except (KeyError, TypeError, ValueError, AttributeError):
        at = next(i for i, p in enumerate(pts) if not _is_point(p))
        raise FormatError(path, None,
                          f"points[{at}]: a LidarPoint {{x, y, z, i?, d?}} of numbers, got {pts[at]!r}") from None
    bad = np.flatnonzero(~np.isfinite(xyz).all(axis=1) | ~np.isfinite(inten))
    if len(bad):
        raise FormatError(path, None, f"points[{bad[0]}]: finite x, y, z and i")
    bad = np.flatnonzero((dev != np.round(dev)) | (dev < 0) | (dev > 255))
    if len(bad):
        raise FormatError(path, None, f"points[{bad[0]}].d: a device id in [0, 255], got {dev[bad[0]]!r}")
    return xyz, inten, dev.astype(np.int64)


def _is_point(p: Any) -> bool:
    try:
        float(p["x"]), float(p["y"]), float(p["z"]), float(p.get("i", 0.0)), float(p.get("d", 0))
    except (KeyError, TypeError, ValueError, AttributeError):
        return False
    return True


def _intrinsics(im: Mapping[str, Any], jpg: np.ndarray, path: Path, where: str) -> CameraIntrinsics:
    name = im.get("camera_model", "brown_conrady")
    if name not in _LENS:
        raise FormatError(path, None, f"{where}.camera_model: one of {sorted(_LENS)}, got {name!r}")
    model, keys = _LENS[name]
    if model == "brown_conrady" and _number(im, "k4", path, where, 0.0) != 0.0:
        raise FormatError(path, None, f"{where}.k4: 0 for camera_model {name!r} (k4 belongs to fisheye)")
    s = _number(im, "scale_factor", path, where, 1.0)
    if s <= 0:
        raise FormatError(path, None, f"{where}.scale_factor: a positive number, got {s}")
    fx, fy, cx, cy, skew = (_number(im, k, path, where, 0.0 if k == "skew" else None) / s
                            for k in ("fx", "fy", "cx", "cy", "skew"))
    try:
        return CameraIntrinsics(jpg.shape[1], jpg.shape[0], fx, fy, cx, cy, skew, model,
                                tuple(_number(im, k, path, where, 0.0) for k in keys))
    except ValueError as exc:
        raise FormatError(path, None, f"{where}: valid intrinsics ({exc})") from None


def import_scale_legacy(
    frames_dir: str | os.PathLike,
    log_dir: str | os.PathLike,
    *,
    annotations: str | os.PathLike | None = None,
    timestamp_unit: Literal["ns", "us", "ms", "s"] = "ns",
    images: bool = True,
) -> Path:
    """Write the frames in ``frames_dir`` (and the cuboids of ``annotations``) as a raw log in
    ``log_dir``; returns ``log_dir``. ``FormatError`` names the file and the field at fault."""
    src = Path(frames_dir)
    if timestamp_unit not in _NS:
        raise ValueError(f"timestamp_unit must be one of {sorted(_NS)}, got {timestamp_unit!r}")
    files = _frame_files(src, None if annotations is None else Path(annotations).resolve())
    docs = [load_json(p) for p in files]
    for p, d in zip(files, docs):
        if not isinstance(d, dict):
            raise FormatError(p, None, f"a Frame JSON object, got {type(d).__name__}")
    unit = _NS[timestamp_unit]
    times = np.array([_stamp_ns(d, p, "frame", unit) for p, d in zip(files, docs)], dtype=np.int64)
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        raise FormatError(files[bad[0] + 1], None, f"timestamp: later than the previous frame's ({times[bad[0]]} ns)")
    t = np.array([_vector3(d.get("device_position"), p, "device_position") for p, d in zip(files, docs)])
    q = np.array([_heading(d.get("device_heading"), p, "device_heading") for p, d in zip(files, docs)])
    track = from_pose_table(times, np.hstack([t, q]))
    offset = np.array([round(t[0, 0]), round(t[0, 1]), 0.0])
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, devices, first_jpg = [], set(), {}
    cam_poses: dict[str, list[tuple[int, int, SE3]]] = {}  # camera → (|t_img - t_frame|, t_img, world_from_cam)
    for i, (path, doc, t_ns) in enumerate(zip(files, docs, times)):
        xyz, inten, dev = _points(doc, path)
        local = track.at(int(t_ns)).inverse().apply(xyz).astype(np.float32)
        entry: dict[str, Any] = {"timestamp_ns": int(t_ns), "lidar": {}, "images": {}}
        for d in np.unique(dev).tolist():
            keep = dev == d
            rel = f"lidar/lidar{d}/{i:06d}.pcd"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_pcd(out / rel, Sweep(local[keep], int(t_ns), inten[keep], np.zeros(int(keep.sum()), np.int64),
                                       frame="ego"))
            entry["lidar"][f"lidar{d}"] = rel
            devices.add(d)
        ims = doc.get("images", []) if images else []
        if not isinstance(ims, list):
            raise FormatError(path, None, f"images: a list of CameraImage objects, got {type(ims).__name__}")
        for k, im in enumerate(ims):
            where = f"images[{k}]"
            if not isinstance(im, Mapping) or not isinstance(im.get("image_url"), str):
                raise FormatError(path, None, f"{where}.image_url: a path string")
            jpg_path = (src / im["image_url"]).resolve()
            name = f"camera{k}"
            if name not in first_jpg:
                first_jpg[name] = (decode_jpeg(_read(jpg_path, path, where), jpg_path), path, where, im)
            t_img = _stamp_ns(im, path, where, unit, int(t_ns))
            pose = SE3(_heading(im.get("heading"), path, f"{where}.heading"),
                       _vector3(im.get("position"), path, f"{where}.position"))
            cam_poses.setdefault(name, []).append((abs(t_img - int(t_ns)), t_img, pose))
            rel = f"camera/{name}/{i:06d}.jpg"
            link_or_copy(jpg_path, out / rel)
            entry["images"][name] = {"path": rel, "timestamp_ns": int(t_img)}
        frames.append(entry)
    cameras, extra = [], []
    for name, (jpg, path, where, im) in first_jpg.items():
        # the rig extrinsic from the image taken closest to its frame (exact at equal times);
        # the camera poses at the other image times then add ego poses to the track
        _, t_img, world_from_cam = min(cam_poses[name], key=lambda r: r[0])
        ego_from_cam = track.at(t_img, "hold").inverse() @ world_from_cam
        cameras.append(Camera(name, _intrinsics(im, jpg, path, where), ego_from_cam))
        stamps = np.array([r[1] for r in cam_poses[name]], dtype=np.int64)
        rows = [r[2] @ ego_from_cam.inverse() for r in cam_poses[name]]
        extra.append((stamps, SE3(np.array([r.rotation for r in rows]), np.array([r.translation for r in rows]))))
    write_pose_table(out, with_extra_samples(track, extra))
    tracks = [] if annotations is None else _tracks(Path(annotations), times, offset)
    write_labels(out, tracks)
    write_log_manifest(out, log_id=f"scale-{src.name}", origin=SceneOrigin(enu_offset_m=tuple(offset)),
                       lidars=[LogLidar(f"lidar{d}", d, SE3.identity(), "pcd") for d in sorted(devices)],
                       cameras=cameras, frames=frames, labels="labels.json")
    return out


def _read(path: Path, frame: Path, where: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise FormatError(frame, None, f"{where}.image_url: a readable local image ({path}: {exc.strerror})") from None


def _tracks(path: Path, times: np.ndarray, offset: np.ndarray) -> list[CuboidTrack]:
    """World-frame tracks (centres relative to ``offset``) from the per-frame cuboid lists."""
    doc = load_json(path)
    if not isinstance(doc, list) or len(doc) > len(times):
        raise FormatError(path, None, f"a list of at most {len(times)} per-frame entries {{\"cuboids\": [...]}}")
    rows: dict[str, list[tuple[int, dict]]] = {}
    for i, entry in enumerate(doc):
        cuboids = entry.get("cuboids") if isinstance(entry, Mapping) else entry
        if not isinstance(cuboids, list):
            raise FormatError(path, None, f"[{i}].cuboids: a list of cuboids")
        for j, c in enumerate(cuboids):
            where = f"[{i}].cuboids[{j}]"
            if not isinstance(c, Mapping) or not isinstance(c.get("uuid"), str) or not isinstance(c.get("label"), str):
                raise FormatError(path, None, f"{where}: a cuboid with string uuid and label")
            dims = _vector3(c.get("dimensions"), path, f"{where}.dimensions")
            if np.any(dims <= 0):
                raise FormatError(path, None, f"{where}.dimensions: positive x, y, z, got {dims.tolist()}")
            rec = {"position": _vector3(c.get("position"), path, f"{where}.position"), "dimensions": dims,
                   "yaw": _number(c, "yaw", path, where), "label": c["label"],
                   "stationary": bool(c.get("stationary", False)), "attributes": dict(c.get("attributes") or {})}
            rows.setdefault(c["uuid"], []).append((i, rec))
    tracks = []
    for uuid, recs in sorted(rows.items()):
        idx = [i for i, _ in recs]
        if len(set(idx)) != len(idx):
            raise FormatError(path, None, f"one cuboid per frame for uuid {uuid!r}")
        d = np.array([r["dimensions"] for _, r in recs])
        tracks.append(CuboidTrack(
            uuid, recs[0][1]["label"], times[idx], np.array([r["position"] for _, r in recs]) - offset,
            lwh_from_scale_dimensions(d[:, 0], d[:, 1], d[:, 2]),
            rotation_from_scale_yaw(np.array([r["yaw"] for _, r in recs])),
            stationary=recs[0][1]["stationary"], attributes=recs[0][1]["attributes"],
            keyframe_attributes=[r["attributes"] for _, r in recs]))
    return tracks
