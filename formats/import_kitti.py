"""Import a KITTI tracking sequence into Fathom's raw-log layout (:mod:`formats.raw_log`).

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
attributes ``truncated`` and ``occluded``. PNG images are re-encoded as JPEG (quality 95).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.pose_sources import KITTI_OXTS_FIELDS, from_kitti_oxts
from engine.se3 import SE3
from formats.conventions import camera_boxes_from_kitti
from formats.errors import FormatError
from formats.raw_log import LogLidar, write_labels, write_log_manifest, write_pose_table
from formats.scene_store import SceneOrigin

LABEL_FIELDS = 17
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
    """One label line; ``xyz`` bottom centre in the rectified reference camera, metres, radians."""

    frame: int
    track_id: int
    type: str
    truncated: int
    occluded: int
    alpha: float
    bbox: tuple[float, float, float, float]
    hwl: tuple[float, float, float]
    xyz: tuple[float, float, float]
    rotation_y: float


def _lines(path: Path) -> list[tuple[int, str]]:
    """``(byte offset, line)`` pairs of a text file; ``FormatError`` if unreadable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FormatError(path, None, f"a readable file ({exc.strerror})") from None
    out, offset = [], 0
    for raw in data.split(b"\n"):
        try:
            out.append((offset, raw.decode("ascii").strip()))
        except UnicodeDecodeError:
            raise FormatError(path, offset, "an ASCII text line") from None
        offset += len(raw) + 1
    return [(o, s) for o, s in out if s]


def _floats(path: Path, offset: int, fields: list[str], what: str) -> np.ndarray:
    try:
        v = np.array([float(f) for f in fields])
    except ValueError:
        raise FormatError(path, offset, f"{what}: numbers, got {' '.join(fields)[:80]!r}") from None
    if not np.all(np.isfinite(v)):
        raise FormatError(path, offset, f"{what}: finite numbers")
    return v


def read_calib_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """KITTI calibration text (``KEY: numbers`` or ``KEY numbers`` per line) → key → float64 array.

    Lines whose values are not numbers (``calib_time: 09-Jan-2012 ...``) are skipped.
    """
    path = Path(path)
    out = {}
    for offset, line in _lines(path):
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


def read_tracking_calib(path: str | os.PathLike) -> KittiCalibration:
    """``calib/SSSS.txt`` of KITTI tracking → :class:`KittiCalibration`."""
    path = Path(path)
    c = read_calib_file(path)
    p2 = _se3(path, c, "P2")[:3]
    velo_from_imu = _rigid(path, _se3(path, c, "Tr_imu_velo"), "Tr_imu_velo")
    cam0_from_velo = _rigid(path, _se3(path, c, "Tr_velo_cam"), "Tr_velo_cam")
    rect_from_cam0 = _rigid(path, _se3(path, c, "R_rect", 9), "R_rect")
    k = p2[:, :3]
    if k[0, 0] <= 0 or k[1, 1] <= 0 or k[2, 2] != 1:
        raise FormatError(path, None, "P2 = K [I | t] with positive focal lengths and K[2, 2] = 1")
    cam2_from_ref = SE3(np.array([1.0, 0, 0, 0]), np.linalg.solve(k, p2[:, 3]))
    ref_from_ego = rect_from_cam0 @ cam0_from_velo @ velo_from_imu
    return KittiCalibration(velo_from_imu.inverse(), ref_from_ego.inverse(), (cam2_from_ref @ ref_from_ego).inverse(),
                            float(k[0, 0]), float(k[1, 1]), float(k[0, 2]), float(k[1, 2]))


def read_oxts(path: str | os.PathLike) -> np.ndarray:
    """An oxts file (one row of 30 fields per line) → ``(K, 30) float64``."""
    path = Path(path)
    rows = []
    for offset, line in _lines(path):
        fields = line.split()
        if len(fields) != KITTI_OXTS_FIELDS:
            raise FormatError(path, offset, f"{KITTI_OXTS_FIELDS} oxts fields, got {len(fields)}")
        rows.append(_floats(path, offset, fields, "oxts row"))
    if not rows:
        raise FormatError(path, 0, "at least one oxts row")
    return np.array(rows)


def read_tracking_labels(path: str | os.PathLike) -> list[KittiLabel]:
    """``label_02/SSSS.txt`` → label lines (``DontCare`` included, as in the file)."""
    path = Path(path)
    out = []
    for offset, line in _lines(path):
        f = line.split()
        if len(f) not in (LABEL_FIELDS, LABEL_FIELDS + 1):
            raise FormatError(path, offset, f"{LABEL_FIELDS} fields (frame id type ... rotation_y [score]), got {len(f)}")
        try:
            frame, tid, trunc, occ = int(f[0]), int(f[1]), int(float(f[3])), int(f[4])
        except ValueError:
            raise FormatError(path, offset, "integer frame, track_id, truncated and occluded fields") from None
        v = _floats(path, offset, f[5:17], "alpha bbox h w l x y z rotation_y")
        if frame < 0 or np.any(v[5:8] < 0):
            raise FormatError(path, offset, "a non-negative frame index and non-negative h w l")
        out.append(KittiLabel(frame, tid, f[2], trunc, occ, float(v[0]), tuple(v[1:5]), tuple(v[5:8]),
                              tuple(v[8:11]), float(v[11])))
    return out


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
            keyframe_attributes=[{"truncated": x.truncated, "occluded": x.occluded} for x in labs],
        ))
    return tracks


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def import_kitti_tracking(
    root: str | os.PathLike, sequence: int, log_dir: str | os.PathLike, *, split: str = "training",
    start_ns: int = 0, period_ns: int = FRAME_PERIOD_NS, images: bool = True,
) -> Path:
    """Write KITTI tracking sequence ``sequence`` of ``root/split`` as a raw log in ``log_dir``."""
    base = Path(root) / split
    seq = f"{sequence:04d}"
    calib_path = base / "calib" / f"{seq}.txt"
    calib = read_tracking_calib(calib_path)
    sweeps = sorted((base / "velodyne" / seq).glob("*.bin"))
    if not sweeps:
        raise FormatError(base / "velodyne" / seq, None, "a directory of NNNNNN.bin sweeps")
    for i, p in enumerate(sweeps):
        if p.stem != f"{i:06d}":
            raise FormatError(p, None, f"consecutive sweep names from 000000, expected {i:06d}.bin")
    oxts_path = base / "oxts" / f"{seq}.txt"
    oxts = read_oxts(oxts_path)
    if len(oxts) < len(sweeps):
        raise FormatError(oxts_path, None, f"one oxts row per frame: {len(sweeps)} frames, {len(oxts)} rows")
    times = np.int64(start_ns) + np.arange(len(sweeps), dtype=np.int64) * np.int64(period_ns)
    try:
        track, origin = from_kitti_oxts(oxts[: len(sweeps)], times)
    except ValueError as exc:
        raise FormatError(oxts_path, None, f"valid oxts poses: {exc}") from None
    out = Path(log_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_pose_table(out, track)
    cameras: list[Camera] = []
    image_dir = base / "image_02" / seq
    pngs = sorted(image_dir.glob("*.png")) if images else []
    if pngs:
        import cv2

        from formats.jpeg import encode_jpeg

        first = cv2.imread(str(pngs[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise FormatError(pngs[0], None, "a readable PNG image")
        intr = CameraIntrinsics(first.shape[1], first.shape[0], calib.fx, calib.fy, calib.cx, calib.cy)
        cameras.append(Camera("image_02", intr, calib.ego_from_cam2))
    frames = []
    for i, (t, src) in enumerate(zip(times, sweeps)):
        rel = f"lidar/velodyne/{i:06d}.bin"
        _link_or_copy(src, out / rel)
        entry = {"timestamp_ns": int(t), "lidar": {"velodyne": rel}, "images": {}}
        png = image_dir / f"{i:06d}.png"
        if cameras and png.exists():
            bgr = cv2.imread(str(png), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (cameras[0].intrinsics.height, cameras[0].intrinsics.width):
                raise FormatError(png, None, f"a readable PNG of {cameras[0].intrinsics.width}x{cameras[0].intrinsics.height}")
            rel_img = f"camera/image_02/{i:06d}.jpg"
            (out / rel_img).parent.mkdir(parents=True, exist_ok=True)
            (out / rel_img).write_bytes(encode_jpeg(np.ascontiguousarray(bgr[:, :, ::-1]), quality=JPEG_QUALITY))
            entry["images"]["image_02"] = {"path": rel_img, "timestamp_ns": int(t)}
        frames.append(entry)
    labels_rel = None
    label_path = base / "label_02" / f"{seq}.txt"
    if label_path.exists():
        poses = track.interpolate(times)
        tracks = tracks_from_labels(read_tracking_labels(label_path), times, lambda i: poses[i],
                                    calib.ego_from_reference, label_path)
        write_labels(out, tracks)
        labels_rel = "labels.json"
    write_log_manifest(
        out, log_id=f"kitti-tracking-{split}-{seq}",
        origin=SceneOrigin(geodetic=(origin.lat_deg, origin.lon_deg, origin.alt_m)),
        lidars=[LogLidar("velodyne", 0, calib.ego_from_lidar, "kitti")], cameras=cameras, frames=frames,
        labels=labels_rel,
    )
    return out
