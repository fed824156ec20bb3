"""Import the KITTI 3D object benchmark layout into Fathom's raw-log layout.

``ROOT/{training,testing}/``::

    velodyne/NNNNNN.bin   sweep: x y z reflectance float32, Velodyne frame (formats.kitti)
    image_2/NNNNNN.png    left colour camera, rectified
    calib/NNNNNN.txt      P0..P3 (3×4), R0_rect (3×3), Tr_velo_to_cam, Tr_imu_to_velo (3×4)
    label_2/NNNNNN.txt    type truncated occluded alpha bbox(4) h w l x y z rotation_y [score]
                          (training only; x y z the box's bottom centre in rectified camera 0)

The frames are unrelated snapshots (no oxts, no poses, no times). Calibration, labels and the
log itself go through :mod:`formats.import_kitti`, so the conventions are the tracking
importer's: the ego frame is KITTI's IMU frame (``ego_from_lidar = Tr_imu_to_velo⁻¹``,
rectified reference ``ref_from_ego = R0_rect · Tr_velo_to_cam · Tr_imu_to_velo``), camera 2
is a pinhole camera ``K`` with ``cam2_from_ref = [I | K⁻¹ P2[:, 3]]`` (so ``K · cam2_from_ego``
is the devkit's ``P2 · R0_rect · Tr_velo_to_cam`` after ``Tr_imu_to_velo``), its image size
read from the PNG. The raw log carries JPEG camera images, so PNGs are re-encoded as JPEG
(quality :data:`formats.import_kitti.JPEG_QUALITY` = 95). The vehicle is at rest: world = ego
(identity poses), no geodetic origin. KITTI frame ``i`` is at ``start_ns + i · period_ns``
(nominal 10 Hz) in both layouts:

- ``layout="per_frame"`` (default): one raw log per frame, ``LOG_DIR/NNNNNN``. The frames are
  independent scenes (shuffled across drives and calibration days), so each is its own log.
- ``layout="sequence"``: one raw log in ``LOG_DIR``, frames in index order, for browsing many
  frames in one session. A raw log has one extrinsic per sensor, so the frames must share one
  calibration (equal to 1e-12); otherwise ``FormatError`` names the first calib file that differs.

Labels: one single-keyframe track per line; ``DontCare`` rows are skipped (they mark image
regions left unlabelled, not objects). Track id = the running number of the kept lines in the
log (0, 1, ...), category = type in lower case, keyframe attributes ``truncated`` (float in
[0, 1]), ``occluded`` (0..3), ``alpha`` (rad) and ``bbox`` (left, top, right, bottom pixels of
image 2) as in the file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.errors import FormatError
from formats.import_kitti import (
    FRAME_PERIOD_NS,
    OBJECT_FIELDS,
    KittiCalibration,
    KittiLabel,
    object_label,
    read_tracking_calib,
    tracks_from_labels,
    write_kitti_log,
)
from formats.kitti import count_float_records
from formats.pose_files import read_text_lines

OBJECT_CALIB_KEYS = ("P2", "R0_rect", "Tr_velo_to_cam", "Tr_imu_to_velo")
Layout = Literal["per_frame", "sequence"]
LAYOUTS: tuple[str, ...] = ("per_frame", "sequence")


def read_object_calib(path: str | os.PathLike) -> KittiCalibration:
    """``calib/NNNNNN.txt`` → :class:`~formats.import_kitti.KittiCalibration` (ego = IMU)."""
    return read_tracking_calib(path, OBJECT_CALIB_KEYS)


def read_object_labels(path: str | os.PathLike, frame: int = 0) -> list[KittiLabel]:
    """``label_2/NNNNNN.txt`` → its lines (``DontCare`` included) with ``frame`` and
    ``track_id`` = the line's number from 0. ``FormatError`` names the file and the byte
    offset of a bad line."""
    path = Path(path)
    out = []
    for n, (offset, line) in enumerate(read_text_lines(path)):
        f = line.split()
        if len(f) not in (OBJECT_FIELDS, OBJECT_FIELDS + 1):
            raise FormatError(path, offset, f"{OBJECT_FIELDS} fields (type truncated occluded alpha bbox(4) h w l "
                                            f"x y z rotation_y [score]), got {len(f)}")
        out.append(object_label(path, offset, f, frame, n))
    return out


@dataclasses.dataclass(frozen=True)
class _Frame:
    index: int
    sweep: Path
    calib: KittiCalibration
    image: Path | None
    labels: list[KittiLabel]


def _frame_indices(velodyne: Path) -> list[int]:
    sweeps = sorted(velodyne.glob("*.bin"))
    if not sweeps:
        raise FormatError(velodyne, None, "a directory of NNNNNN.bin sweeps")
    for p in sweeps:
        if not (len(p.stem) == 6 and p.stem.isdigit()):
            raise FormatError(p, None, "a sweep named NNNNNN.bin (6 digits)")
    return [int(p.stem) for p in sweeps]


def _read_frame(base: Path, index: int, images: bool) -> _Frame:
    name = f"{index:06d}"
    sweep = base / "velodyne" / f"{name}.bin"
    if not sweep.is_file():
        raise FormatError(sweep, None, f"the sweep of frame {index}")
    count_float_records(sweep, 4)
    png = base / "image_2" / f"{name}.png"
    label_path = base / "label_2" / f"{name}.txt"
    labels = read_object_labels(label_path) if label_path.exists() else []
    return _Frame(index, sweep, read_object_calib(base / "calib" / f"{name}.txt"),
                  png if images and png.exists() else None, [x for x in labels if x.type != "DontCare"])


def _same_calibration(a: KittiCalibration, b: KittiCalibration) -> bool:
    poses = ("ego_from_lidar", "ego_from_reference", "ego_from_cam2")
    return (a.fx, a.fy, a.cx, a.cy) == (b.fx, b.fy, b.cx, b.cy) and all(
        getattr(a, k).allclose(getattr(b, k), atol=1e-12) for k in poses)


def _write(out: Path, log_id: str, frames: list[_Frame], start_ns: int, period_ns: int, source: Path) -> Path:
    """One raw log of ``frames`` (sharing the first frame's calibration), ego at rest."""
    times = np.int64(start_ns) + np.array([f.index for f in frames], np.int64) * np.int64(period_ns)
    rest = PoseTrack(times, np.tile([1.0, 0.0, 0.0, 0.0], (len(times), 1)), np.zeros((len(times), 3)))
    kept = [(k, lab) for k, f in enumerate(frames) for lab in f.labels]
    labels = [dataclasses.replace(lab, frame=k, track_id=n) for n, (k, lab) in enumerate(kept)]
    calib = frames[0].calib
    tracks = tracks_from_labels(labels, times, lambda _: SE3.identity(), calib.ego_from_reference, source)
    return write_kitti_log(out, log_id, calib, rest, None, times, [f.sweep for f in frames],
                           [None if f.image is None else (f.image, int(t)) for f, t in zip(frames, times)], tracks)


def import_kitti_object(
    root: str | os.PathLike, log_dir: str | os.PathLike, *, split: str = "training",
    frames: Sequence[int] | None = None, layout: Layout = "per_frame", start_ns: int = 0,
    period_ns: int = FRAME_PERIOD_NS, images: bool = True,
) -> list[Path]:
    """Write frames of ``root/split`` as raw logs (see the module docstring).

    Args:
        split: ``"training"`` (with ``label_2``) or ``"testing"`` (without).
        frames: KITTI frame indices (default: every ``velodyne/NNNNNN.bin``), taken in index order.
        layout: ``"per_frame"`` (one log per frame) or ``"sequence"`` (one log).
        start_ns, period_ns: frame ``i`` is at ``start_ns + i · period_ns``.
        images: re-encode ``image_2/NNNNNN.png`` as the frame's image (a frame without one has none).

    Returns the log directories: ``log_dir/NNNNNN`` per frame, or ``[log_dir]``. Every frame is
    read and checked (calibration, labels, ``.bin`` size) before anything is written.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    base = Path(root) / split
    if frames is None:
        indices = _frame_indices(base / "velodyne")
    else:
        indices = sorted({int(i) for i in frames})
        if not indices or indices[0] < 0:
            raise ValueError(f"frames must be non-empty, non-negative indices, got {frames!r}")
    read = [_read_frame(base, i, images) for i in indices]
    out = Path(log_dir)
    if layout == "per_frame":
        return [_write(out / f"{f.index:06d}", f"kitti-object-{split}-{f.index:06d}", [f], start_ns, period_ns,
                       base / "label_2") for f in read]
    for f in read[1:]:
        if not _same_calibration(f.calib, read[0].calib):
            raise FormatError(base / "calib" / f"{f.index:06d}.txt", None,
                              f"the calibration of frame {read[0].index} (layout 'sequence' needs one calibration; "
                              "use layout 'per_frame' or frames of one calibration)")
    name = f"kitti-object-{split}" + (f"-{read[0].index:06d}" if len(read) == 1 else "")  # one frame: as per_frame
    return [_write(out, name, read, start_ns, period_ns, base / "label_2")]
