"""Import a PandaSet sequence into Fathom's raw-log layout (:mod:`formats.raw_log`).

A sequence directory (``SEQ/``)::

    lidar/NN.pkl.gz              pandas DataFrame per frame: x y z (WORLD frame), i, t (s), d (0 Pandar64, 1 PandarGT)
    lidar/poses.json             world ← Pandar64 per frame: {"position": {x,y,z}, "heading": {w,x,y,z}}
    lidar/timestamps.json        frame times, seconds (float)
    camera/NAME/NN.jpg, intrinsics.json {fx, fy, cx, cy}, poses.json (world ← camera), timestamps.json
    annotations/cuboids/NN.pkl.gz  DataFrame: uuid, label, yaw, stationary, position.{x,y,z},
                                 dimensions.{x,y,z}, cuboids.sensor_id, ...

Conventions (see :mod:`formats.conventions`): points are world-frame, ``dimensions.x`` is
the width and ``.y`` the length, and ``yaw = 0`` points the box front along world +y, so the
Fathom rotation is a yaw of ``yaw + π/2``. The ego is the Pandar64 (``ego_from_lidar`` =
identity, ``world_from_ego`` = ``lidar/poses.json``); each frame's points are moved into the
ego frame with the frame pose and written as a binary PCD per sensor (``d``) with zero time
offsets, so that ``fathom prepare`` puts them back exactly. A camera's ``ego_from_camera``
comes from its pose nearest in time to a LiDAR frame (exact when the times coincide); its
other poses then add ego poses at the camera times to ``world_from_ego``. Cuboids duplicated
for the PandarGT overlap (``cuboids.sensor_id`` 1) are dropped; ``uuid`` is the track id.
Seconds become int64 ns (rounded to 1 µs: float seconds since 1970 hold no finer time). The
``.pkl.gz`` files are pickles: import trusted data only (unpickling runs code).
"""

from __future__ import annotations

import gzip
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.pose_sources import from_pose_table, with_extra_samples
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.conventions import lwh_from_pandaset_dimensions, quaternion_from_legacy_heading
from formats.errors import FormatError, load_json
from formats.jpeg import decode_jpeg
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, link_or_copy, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin

LIDAR_NAMES = {0: "pandar64", 1: "pandar_gt"}
_CUBOID_COLUMNS = ("uuid", "label", "yaw", "position.x", "position.y", "position.z",
                   "dimensions.x", "dimensions.y", "dimensions.z")


def _frame(path: Path, columns: tuple[str, ...]):
    try:
        with gzip.open(path, "rb") as fh:
            df = pickle.load(fh)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError) as exc:
        raise FormatError(path, None, f"a gzip-pickled pandas DataFrame ({exc})") from None
    missing = [c for c in columns if c not in getattr(df, "columns", ())]
    if missing:
        raise FormatError(path, None, f"DataFrame columns {list(columns)}, missing {missing}")
    return df


def _times_ns(path: Path, n: int | None = None) -> np.ndarray:
    t = np.asarray(load_json(path), dtype=object)
    try:
        s = t.astype(np.float64)
    except (TypeError, ValueError):
        raise FormatError(path, None, "a JSON list of timestamps in seconds") from None
    if s.ndim != 1 or not np.all(np.isfinite(s)) or (n is not None and len(s) != n):
        raise FormatError(path, None, f"{'a list' if n is None else n} of finite timestamps in seconds, got {s.shape}")
    return np.round(s * 1e6).astype(np.int64) * 1000


def _poses(path: Path, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(translation (n, 3), rotation (n, 4) wxyz)`` from a PandaSet poses.json."""
    recs = load_json(path)
    try:
        t = np.array([[r["position"][k] for k in "xyz"] for r in recs], dtype=np.float64).reshape(-1, 3)
        q = np.array([quaternion_from_legacy_heading(r["heading"]) for r in recs]).reshape(-1, 4)
    except (KeyError, TypeError, ValueError) as exc:
        raise FormatError(path, None, f"records {{position: {{x,y,z}}, heading: {{w,x,y,z}}}} ({exc})") from None
    if len(t) != n:
        raise FormatError(path, None, f"{n} poses, got {len(t)}")
    return t, q


def import_pandaset(seq_dir: str | os.PathLike, log_dir: str | os.PathLike, *, images: bool = True) -> Path:
    """Write the PandaSet sequence in ``seq_dir`` as a raw log in ``log_dir``; returns ``log_dir``."""
    try:
        import pandas  # noqa: F401  (PandaSet's frames are pandas pickles)
    except ImportError:
        raise ModuleNotFoundError("reading PandaSet needs pandas (its frames are pickled DataFrames): "
                                  "pip install 'fathom3d[pandaset]'") from None
    seq = Path(seq_dir)
    files = sorted((seq / "lidar").glob("*.pkl.gz"))
    if not files:
        raise FormatError(seq / "lidar", None, "a directory of NN.pkl.gz frames")
    times = _times_ns(seq / "lidar" / "timestamps.json", len(files))
    t, q = _poses(seq / "lidar" / "poses.json", len(files))
    try:
        track = from_pose_table(times, np.hstack([t, q]))
    except ValueError as exc:
        raise FormatError(seq / "lidar" / "timestamps.json", None, f"valid poses and times: {exc}") from None
    offset = np.array([round(t[0, 0]), round(t[0, 1]), 0.0])
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    frames, present = [], set()
    for i, (path, t_ns) in enumerate(zip(files, times)):
        df = _frame(path, ("x", "y", "z", "i", "d"))
        xyz = df[["x", "y", "z"]].to_numpy(np.float64)
        d = df["d"].to_numpy()
        if not np.all(np.isin(d, list(LIDAR_NAMES))):
            raise FormatError(path, None, f"sensor column d in {sorted(LIDAR_NAMES)}")
        local = track.at(int(t_ns)).inverse().apply(xyz).astype(np.float32)
        entry: dict[str, Any] = {"timestamp_ns": int(t_ns), "lidar": {}, "images": {}}
        for sid, name in LIDAR_NAMES.items():
            keep = d == sid
            if not keep.any():
                continue
            rel = f"lidar/{name}/{i:06d}.pcd"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            write_pcd(out / rel, Sweep(local[keep], int(t_ns), df["i"].to_numpy(np.float32)[keep],
                                       np.zeros(int(keep.sum()), np.int64), frame="ego"))
            entry["lidar"][name] = rel
            present.add(sid)
        frames.append(entry)
    cameras, extra_poses = [], []
    for cam_dir in sorted((seq / "camera").iterdir()) if images and (seq / "camera").is_dir() else []:
        jpgs = sorted(cam_dir.glob("*.jpg"))
        if not jpgs:
            continue
        k = load_json(cam_dir / "intrinsics.json")
        cam_times = _times_ns(cam_dir / "timestamps.json", len(jpgs))
        ct, cq = _poses(cam_dir / "poses.json", len(jpgs))
        first = decode_jpeg(jpgs[0].read_bytes(), jpgs[0])
        try:
            intr = CameraIntrinsics(first.shape[1], first.shape[0], float(k["fx"]), float(k["fy"]),
                                    float(k["cx"]), float(k["cy"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(cam_dir / "intrinsics.json", None, f"fx, fy, cx, cy ({exc})") from None
        # the rig extrinsic from the camera pose nearest in time to a LiDAR pose (exact when
        # one coincides; otherwise the 10 Hz pose interpolation error enters)
        gap = np.abs(cam_times[:, None] - times[None, :]).min(axis=1)
        j = int(np.argmin(gap))
        ego_from_cam = track.at(int(cam_times[j]), "hold").inverse() @ SE3(cq[j], ct[j])
        cameras.append(Camera(cam_dir.name, intr, ego_from_cam))
        extra_poses.append((cam_times, SE3(cq, ct) @ ego_from_cam.inverse()))
        for i, (jpg, t_img) in enumerate(zip(jpgs, cam_times)):
            if i < len(frames):
                rel = f"camera/{cam_dir.name}/{i:06d}.jpg"
                link_or_copy(jpg, out / rel)
                frames[i]["images"][cam_dir.name] = {"path": rel, "timestamp_ns": int(t_img)}
    write_pose_table(out, with_extra_samples(track, extra_poses))
    tracks = _tracks(seq, times, offset)
    write_labels(out, tracks)
    write_log_manifest(out, log_id=f"pandaset-{seq.name}", origin=SceneOrigin(enu_offset_m=tuple(offset)),
                       lidars=[LogLidar(LIDAR_NAMES[s], s, SE3.identity(), "pcd") for s in sorted(present)],
                       cameras=cameras, frames=frames, labels="labels.json")
    return out


def _tracks(seq: Path, times: np.ndarray, offset: np.ndarray) -> list[CuboidTrack]:
    rows: dict[str, list[tuple[int, Any]]] = {}
    labels: dict[str, tuple[str, bool]] = {}
    for i, path in enumerate(sorted((seq / "annotations" / "cuboids").glob("*.pkl.gz"))):
        if i >= len(times):
            raise FormatError(path, None, f"at most {len(times)} cuboid frames (one per LiDAR frame)")
        df = _frame(path, _CUBOID_COLUMNS)
        if "cuboids.sensor_id" in df.columns:
            df = df[df["cuboids.sensor_id"] != 1]
        for rec in df.to_dict("records"):
            rows.setdefault(str(rec["uuid"]), []).append((i, rec))
            labels.setdefault(str(rec["uuid"]), (str(rec["label"]), bool(rec.get("stationary", False))))
    tracks = []
    for uuid, recs in sorted(rows.items()):
        idx = [i for i, _ in recs]
        if len(set(idx)) != len(idx):
            raise FormatError(seq / "annotations" / "cuboids", None, f"one cuboid per frame for uuid {uuid}")
        get = lambda k: np.array([rec[k] for _, rec in recs], dtype=np.float64)  # noqa: E731
        centers = np.stack([get("position.x"), get("position.y"), get("position.z")], axis=1) - offset
        sizes = lwh_from_pandaset_dimensions(get("dimensions.x"), get("dimensions.y"), get("dimensions.z"))
        rotations = quat.from_yaw(get("yaw") + np.pi / 2)
        category, stationary = labels[uuid]
        try:
            tracks.append(CuboidTrack(uuid, category, times[idx], centers, sizes, rotations, stationary=stationary))
        except ValueError as exc:
            raise FormatError(seq / "annotations" / "cuboids", None, f"uuid {uuid}: valid boxes ({exc})") from None
    return tracks
