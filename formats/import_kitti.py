"""Import KITTI tracking sequences and KITTI raw drives into Fathom's raw-log layout.

KITTI raw (``DATE/``): ``calib_cam_to_cam.txt`` (``R_rect_00``, ``P_rect_02``, ...),
``calib_velo_to_cam.txt`` and ``calib_imu_to_velo.txt`` (``R``, ``T``), and
``DATE_drive_NNNN_sync/{velodyne_points,oxts,image_02}/{timestamps.txt,data/NNNNNNNNNN.*}``;
timestamps ``YYYY-MM-DD HH:MM:SS.fffffffff`` are read as UTC; frame times are the velodyne
``timestamps.txt``, poses the oxts rows at their own times (:func:`formats.pose_files.read_kitti_oxts`;
tracklet labels are not read).

The KITTI tracking layout (``ROOT/{training,testing}/``)::

    velodyne/SSSS/NNNNNN.bin   sweeps, LiDAR frame (formats.kitti)
    image_02/SSSS/NNNNNN.png   left colour camera, rectified
    calib/SSSS.txt             P0..P3 (3×4), R_rect (3×3), Tr_velo_cam, Tr_imu_velo (3×4)
    oxts/SSSS.txt              one 30-field oxts row per frame
    label_02/SSSS.txt          frame track_id type truncated occluded alpha bbox(4) h w l x y z ry

Frames are 10 Hz without timestamps: frame ``i`` is at ``start_ns + i · period_ns``. The
ego frame is KITTI's IMU (oxts) frame: ``world_from_ego`` from
:func:`engine.pose_sources.from_kitti_oxts`, ``ego_from_lidar = Tr_imu_velo⁻¹``, the
rectified reference camera ``ref_from_ego = R_rect · Tr_velo_cam · Tr_imu_velo`` and camera 2
``cam2_from_ref = [I | K⁻¹ P2[:, 3]]``. Labels (``DontCare`` dropped) become world-frame
tracks in ``labels.json``: id = KITTI track id, category = type in lower case, keyframe
attributes ``truncated``, ``occluded``, ``alpha`` (rad) and ``bbox`` (left, top, right, bottom
pixels of image 2) as in the file. PNG images are re-encoded as JPEG (quality 95): the raw log
carries JPEG camera images (:mod:`formats.jpeg`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.geodesy import Origin
from engine.pose_sources import from_kitti_oxts
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.conventions import camera_boxes_from_kitti
from formats.errors import FormatError
from formats.pose_files import parse_floats, read_kitti_oxts, read_oxts, read_text_lines
from formats.pose_files import read_kitti_timestamps as read_timestamps
from formats.raw_log import LogLidar, link_or_copy, write_labels, write_log_manifest, write_pose_table
from formats.rig import SceneOrigin

LABEL_FIELDS = 17
OBJECT_FIELDS = 15  # type truncated occluded alpha bbox(4) h w l x y z rotation_y
TRACKING_CALIB_KEYS = ("P2", "R_rect", "Tr_velo_cam", "Tr_imu_velo")
FRAME_PERIOD_NS = 100_000_000
JPEG_QUALITY = 95


@dataclass(frozen=True)
class KittiCalibration:
    """A sequence's extrinsics (ego = IMU) and the rectified camera 2 intrinsics."""

    ego_from_lidar: SE3
    ego_from_reference: SE3
    ego_from_cam2: SE3
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass(frozen=True)
class KittiLabel:
    """One label line; ``xyz`` bottom centre in the rectified reference camera, metres, radians;
    ``bbox`` left top right bottom in pixels of image 2; ``truncated`` the tracking level 0, 1, 2
    or the object benchmark's fraction in [0, 1]."""

    frame: int
    track_id: int
    type: str
    truncated: float
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    hwl: tuple[float, float, float]
    xyz: tuple[float, float, float]
    rotation_y: float


def read_calib_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """KITTI calibration text (``KEY: numbers`` or ``KEY numbers`` per line) → key → float64 array.

    Lines whose values are not numbers (``calib_time: 09-Jan-2012 ...``) are skipped.
    """
    path = Path(path)
    out = {}
    for offset, line in read_text_lines(path):
        key, *fields = line.replace(":", " ", 1).split()
        try:
            out[key] = np.array([float(f) for f in fields])
        except ValueError:
            continue
        if not np.all(np.isfinite(out[key])):
            raise FormatError(path, offset, f"{key}: finite numbers")
    return out


def _se3(path: Path, calib: dict[str, np.ndarray], key: str, size: int = 12) -> np.ndarray:
    v = calib.get(key)
    if v is None or v.size != size:
        raise FormatError(path, None, f"{key} with {size} numbers, got {None if v is None else v.size}")
    if size == 9:
        m = np.eye(4)
        m[:3, :3] = v.reshape(3, 3)
        return m
    m = np.eye(4)
    m[:3] = v.reshape(3, 4)
    return m


def _rigid(path: Path, m: np.ndarray, key: str) -> SE3:
    r = m[:3, :3]
    if not np.allclose(r @ r.T, np.eye(3), atol=1e-5) or np.linalg.det(r) < 0:
        raise FormatError(path, None, f"{key}: a rotation matrix (orthonormal, det +1)")
    return SE3(quat.from_matrix(r), m[:3, 3])


def _calibration(path: Path, p2: np.ndarray, rect_from_cam0: SE3, cam0_from_velo: SE3, velo_from_imu: SE3,
                 key: str = "P2") -> KittiCalibration:
    k = p2[:, :3]
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1 or k[1, 0] or k[2, 0] or k[2, 1]:
        raise FormatError(path, None, f"{key} = K [I | t] with positive focal lengths and K[2] = (0, 0, 1)")
    cam2_from_ref = SE3(np.array([1.0, 0, 0, 0]), np.linalg.solve(k, p2[:, 3]))
    ref_from_ego = rect_from_cam0 @ cam0_from_velo @ velo_from_imu
    return KittiCalibration(velo_from_imu.inverse(), ref_from_ego.inverse(), (cam2_from_ref @ ref_from_ego).inverse(),
                            float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))


def read_tracking_calib(path: str | os.PathLike, keys: tuple[str, str, str, str] = TRACKING_CALIB_KEYS
                        ) -> KittiCalibration:
    """``calib/SSSS.txt`` of KITTI tracking → :class:`KittiCalibration`. ``keys`` name camera 2's
    projection, the rectification, Velodyne → camera 0 and IMU → Velodyne (the object layout
    spells them ``P2 R0_rect Tr_velo_to_cam Tr_imu_to_velo``)."""
    path = Path(path)
    c = read_calib_file(path)
    p2, rect, velo_cam, imu_velo = keys
    return _calibration(path, _se3(path, c, p2)[:3], _rigid(path, _se3(path, c, rect, 9), rect),
                        _rigid(path, _se3(path, c, velo_cam), velo_cam),
                        _rigid(path, _se3(path, c, imu_velo), imu_velo), p2)


def _rt(path: Path) -> SE3:
    """A ``calib_*_to_*.txt`` of KITTI raw: ``R`` (9) and ``T`` (3) → dst ← src."""
    c = read_calib_file(path)
    r, t = c.get("R"), c.get("T")
    if r is None or r.size != 9 or t is None or t.size != 3:
        raise FormatError(path, None, "R with 9 numbers and T with 3")
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = r.reshape(3, 3), t
    return _rigid(path, m, "R")


def read_raw_calib(date_dir: str | os.PathLike) -> KittiCalibration:
    """``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt``, ``calib_imu_to_velo.txt`` of a KITTI raw day."""
    d = Path(date_dir)
    cam_path = d / "calib_cam_to_cam.txt"
    c = read_calib_file(cam_path)
    return _calibration(cam_path, _se3(cam_path, c, "P_rect_02")[:3],
                        _rigid(cam_path, _se3(cam_path, c, "R_rect_00", 9), "R_rect_00"),
                        _rt(d / "calib_velo_to_cam.txt"), _rt(d / "calib_imu_to_velo.txt"), "P_rect_02")


def read_tracking_labels(path: str | os.PathLike) -> list[KittiLabel]:
    """``label_02/SSSS.txt`` → label lines (``DontCare`` included, as in the file)."""
    path = Path(path)
    out = []
    for offset, line in read_text_lines(path):
        f = line.split()
        if len(f) not in (LABEL_FIELDS, LABEL_FIELDS + 1):
            raise FormatError(path, offset,
                              f"{LABEL_FIELDS} fields (frame id type ... rotation_y [score]), got {len(f)}")
        try:
            frame, tid = int(f[0]), int(f[1])
        except ValueError:
            raise FormatError(path, offset, "integer frame and track_id fields") from None
        if frame < 0:
            raise FormatError(path, offset, f"a non-negative frame index, got {frame}")
        lab = object_label(path, offset, f[2:LABEL_FIELDS], frame, tid)
        out.append(dataclasses.replace(lab, truncated=int(lab.truncated)))  # tracking: integer levels 0, 1, 2
    return out


def object_label(path: Path, offset: int, f: list[str], frame: int, track_id: int) -> KittiLabel:
    """The :data:`OBJECT_FIELDS` fields ``type truncated occluded alpha bbox(4) h w l x y z
    rotation_y`` of a label line (``offset`` its byte offset in ``path``) as a :class:`KittiLabel`.
    ``DontCare`` rows (h w l −1 or −1000 in KITTI's files) skip the non-negative size check."""
    try:
        occ = int(f[2])
    except ValueError:
        raise FormatError(path, offset, f"an integer occluded field, got {f[2]!r}") from None
    v = parse_floats(path, offset, f[1:2] + f[3:OBJECT_FIELDS], "truncated alpha bbox h w l x y z rotation_y")
    if f[0] != "DontCare" and np.any(v[6:9] < 0):
        raise FormatError(path, offset, f"non-negative h w l, got {v[6:9].tolist()}")
    x = v.tolist()
    return KittiLabel(frame, track_id, f[0], x[0], occ, x[1], tuple(x[2:6]), tuple(x[6:9]), tuple(x[9:12]), x[12])


def tracks_from_labels(labels: list[KittiLabel], frame_times_ns: np.ndarray, world_from_ego_at,
                       ego_from_reference: SE3, source: str | os.PathLike = "<labels>") -> list[CuboidTrack]:
    """World-frame tracks from label lines; ``world_from_ego_at(i)`` is frame ``i``'s pose (SE3)."""
    by_id: dict[int, list[KittiLabel]] = {}
    for lab in labels:
        if lab.type == "DontCare" or lab.track_id < 0:
            continue
        if lab.frame >= len(frame_times_ns):
            raise FormatError(source, None, f"label frames below {len(frame_times_ns)}, got frame {lab.frame}")
        by_id.setdefault(lab.track_id, []).append(lab)
    tracks = []
    for tid in sorted(by_id):
        labs = sorted(by_id[tid], key=lambda x: x.frame)
        if len({x.frame for x in labs}) != len(labs):
            raise FormatError(source, None, f"one line per frame for track {tid}")
        h, w, l = np.array([x.hwl for x in labs]).T
        x, y, z = np.array([x.xyz for x in labs]).T
        c, s, q = camera_boxes_from_kitti(h, w, l, x, y, z, np.array([x.rotation_y for x in labs]))
        world_from_ref = SE3(
            np.array([(world_from_ego_at(x.frame) @ ego_from_reference).rotation for x in labs]),
            np.array([(world_from_ego_at(x.frame) @ ego_from_reference).translation for x in labs]),
        )
        centers = world_from_ref.apply(c)
        rotations = quat.multiply(world_from_ref.rotation, q)
        tracks.append(CuboidTrack(
            str(tid), labs[0].type.lower(), np.asarray(frame_times_ns, np.int64)[[x.frame for x in labs]],
            centers, s, rotations,
            keyframe_attributes=[{"truncated": x.truncated, "occluded": x.occluded, "alpha": x.alpha,
                                  "bbox": list(x.bbox)} for x in labs],
        ))
    return tracks


def write_kitti_log(out: Path, log_id: str, calib: KittiCalibration, track: PoseTrack, origin: Origin | None,
                    times: np.ndarray, sweeps: list[Path], images: list[tuple[Path, int] | None],
                    tracks: list[CuboidTrack]) -> Path:
    """The raw log in ``out``: ``poses.csv`` from ``track`` (world ← ego), one KITTI sweep per
    frame time (linked), camera 2 as JPEG (re-encoded PNG, size from the first image),
    ``labels.json`` of world-frame ``tracks``; ``origin`` the geodetic scene origin, if any."""
    out.mkdir(parents=True, exist_ok=True)
    write_pose_table(out, track)
    cameras: list[Camera] = []
    first = next((im for im in images if im is not None), None)
    if first is not None:
        from formats.jpeg import encode_jpeg

        shape = read_png_rgb(first[0]).shape
        cameras.append(Camera("image_02", CameraIntrinsics(shape[1], shape[0], calib.fx, calib.fy, calib.cx, calib.cy),
                              calib.ego_from_cam2))
    frames = []
    for i, (t, src, image) in enumerate(zip(times, sweeps, images)):
        rel = f"lidar/velodyne/{i:06d}.bin"
        link_or_copy(src, out / rel)
        entry: dict[str, Any] = {"timestamp_ns": int(t), "lidar": {"velodyne": rel}, "images": {}}
        if cameras and image is not None:
            rgb = read_png_rgb(image[0])
            lens = cameras[0].intrinsics
            if rgb.shape[:2] != (lens.height, lens.width):
                raise FormatError(image[0], None, f"a {lens.width}x{lens.height} image")
            rel_img = f"camera/image_02/{i:06d}.jpg"
            (out / rel_img).parent.mkdir(parents=True, exist_ok=True)
            (out / rel_img).write_bytes(encode_jpeg(rgb, quality=JPEG_QUALITY))
            entry["images"]["image_02"] = {"path": rel_img, "timestamp_ns": int(image[1])}
        frames.append(entry)
    if tracks:
        write_labels(out, tracks)
    geodetic = None if origin is None else (origin.lat_deg, origin.lon_deg, origin.alt_m)
    write_log_manifest(
        out, log_id=log_id, origin=SceneOrigin(geodetic=geodetic),
        lidars=[LogLidar("velodyne", 0, calib.ego_from_lidar, "kitti")], cameras=cameras, frames=frames,
        labels="labels.json" if tracks else None,
    )
    return out


def read_png_rgb(path: Path) -> np.ndarray:
    """An 8-bit PNG as ``(H, W, 3) uint8`` RGB (gray repeated in the three channels), read with
    open3d's image reader; FormatError for an unreadable or non-8-bit image."""
    import open3d as o3d

    image = np.asarray(o3d.io.read_image(Path(path)))
    if image.ndim not in (2, 3) or image.size == 0 or image.dtype != np.uint8:
        raise FormatError(path, None, f"a readable 8-bit PNG image (read {image.dtype} {image.shape})")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])


def _sweeps(directory: Path, width: int) -> list[Path]:
    sweeps = sorted(directory.glob("*.bin"))
    if not sweeps:
        raise FormatError(directory, None, "a directory of numbered .bin sweeps")
    for i, p in enumerate(sweeps):
        if p.stem != f"{i:0{width}d}":
            raise FormatError(p, None, f"consecutive sweep names from 0, expected {i:0{width}d}.bin")
    return sweeps


def _poses(oxts: np.ndarray, times: np.ndarray, path: Path):
    try:
        return from_kitti_oxts(oxts, times)
    except ValueError as exc:
        raise FormatError(path, None, f"valid oxts poses: {exc}") from None


def import_kitti_tracking(
    root: str | os.PathLike, sequence: int, log_dir: str | os.PathLike, *, split: str = "training",
    start_ns: int = 0, period_ns: int = FRAME_PERIOD_NS, images: bool = True,
) -> Path:
    """Write KITTI tracking sequence ``sequence`` of ``root/split`` as a raw log in ``log_dir``."""
    base = Path(root) / split
    seq = f"{sequence:04d}"
    calib = read_tracking_calib(base / "calib" / f"{seq}.txt")
    sweeps = _sweeps(base / "velodyne" / seq, 6)
    oxts_path = base / "oxts" / f"{seq}.txt"
    oxts = read_oxts(oxts_path)
    if len(oxts) < len(sweeps):
        raise FormatError(oxts_path, None, f"one oxts row per frame: {len(sweeps)} frames, {len(oxts)} rows")
    times = np.int64(start_ns) + np.arange(len(sweeps), dtype=np.int64) * np.int64(period_ns)
    track, origin = _poses(oxts[: len(sweeps)], times, oxts_path)
    pngs = [base / "image_02" / seq / f"{i:06d}.png" for i in range(len(sweeps))]
    tracks: list[CuboidTrack] = []
    label_path = base / "label_02" / f"{seq}.txt"
    if label_path.exists():
        poses = track.interpolate(times)
        tracks = tracks_from_labels(read_tracking_labels(label_path), times, lambda i: poses[i],
                                    calib.ego_from_reference, label_path)
    return write_kitti_log(Path(log_dir), f"kitti-tracking-{split}-{seq}", calib, track, origin, times, sweeps,
                      [(p, t) if images and p.exists() else None for p, t in zip(pngs, times)], tracks)


def import_kitti_raw(date_dir: str | os.PathLike, drive: str, log_dir: str | os.PathLike, *,
                     images: bool = True) -> Path:
    """Write a KITTI raw ``DATE/DRIVE_sync`` (velodyne_points, oxts, image_02 with their
    ``timestamps.txt``) as a raw log; frame times are the velodyne ``timestamps.txt``."""
    day = Path(date_dir)
    d = day / drive
    calib = read_raw_calib(day)
    sweeps = _sweeps(d / "velodyne_points" / "data", 10)
    times = read_timestamps(d / "velodyne_points" / "timestamps.txt")
    if len(times) != len(sweeps):
        raise FormatError(d / "velodyne_points" / "timestamps.txt", None, f"{len(sweeps)} timestamps, got {len(times)}")
    track, origin = read_kitti_oxts(d / "oxts")
    image_list: list[tuple[Path, int] | None] = [None] * len(sweeps)
    if images and (d / "image_02" / "timestamps.txt").exists():
        image_times = read_timestamps(d / "image_02" / "timestamps.txt")
        pngs = [d / "image_02" / "data" / f"{i:010d}.png" for i in range(min(len(sweeps), len(image_times)))]
        image_list[: len(pngs)] = [(p, int(t)) if p.exists() else None for p, t in zip(pngs, image_times)]
    return write_kitti_log(Path(log_dir), f"kitti-raw-{drive}", calib, track, origin, times, sweeps, image_list, [])
