"""Per-frame 3D detections of a prepared scene, from detector outputs, as
:class:`engine.tracker.Detections` (world frame of the scene, relative to its origin).

Formats (``FORMATS``; :func:`guess_format` picks one from a name or the first bytes):

- ``nuscenes``: a detection (or tracking) results JSON, ``{"meta": ..., "results":
  {sample_token: [{translation, size (w, l, h), rotation (w, x, y, z), detection_name,
  detection_score}, ...]}}`` (tracking results: ``tracking_name``, ``tracking_score``,
  ``tracking_id``, kept as source track ids). A sample token is a frame of the scene when it
  is the token Fathom's nuScenes export gave that frame (the global frame is then the
  scene's world frame), or when ``samples`` (a nuScenes ``sample.json``) gives it the
  frame's timestamp to the microsecond (the dataset's global frame: the scene origin is
  subtracted).
- ``kitti``: KITTI tracking results (one file, ``frame track_id type truncated occluded
  alpha bbox(4) h w l x y z rotation_y score``) or object results (``type ... rotation_y
  score``; a directory of ``NNNNNN.txt``, frame = the number, or one such file). Boxes are in
  the rectified reference camera: ``reference`` is ``ego_from_reference`` (a calibration's
  :class:`formats.import_kitti.KittiCalibration`, or a scene camera's extrinsic). KITTI frame
  ``i`` is the scene's frame at position ``i``. ``DontCare`` rows are skipped; a missing score
  is 1.
- ``sfs``: SFS cuboid annotations (a ``.sfs`` scene or JSON: a scene object with
  ``annotations``, or a list of annotations, microseconds since the epoch). Each keyframe is
  a detection on the frame at its time (to the microsecond), the annotation id its source
  track id, its score the attribute ``score`` (keyframe or static) or 1.
- ``table``: an Arrow IPC file or Parquet table, one row per detection: ``frame`` (position)
  or ``timestamp_ns``; ``x y z``; ``length width height``; ``yaw`` or ``qw qx qy qz``;
  ``category``; optional ``score`` (default 1) and ``track_id``. ``coordinates="ego"``: the
  boxes are in each frame's ego frame (default the scene's world frame).

Bad input raises :class:`FormatError` naming the file and the row (a byte offset where there
is one): NaN or infinite values, negative sizes, frames the scene does not have.
"""

from __future__ import annotations

import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from engine import quaternion as quat
from engine.se3 import SE3
from engine.tracker import Detections
from formats.conventions import camera_boxes_from_kitti, lwh_from_nuscenes_wlh
from formats.errors import FormatError, ascii_lines, load_source
from formats.export_nuscenes import token, us_from_ns
from formats.import_kitti import OBJECT_FIELDS, object_label
from formats.scene_store import Scene

FORMATS = ("nuscenes", "kitti", "sfs", "table")
Format = Literal["nuscenes", "kitti", "sfs", "table"]
Source = str | os.PathLike | bytes


@dataclass(frozen=True, eq=False)
class SceneFrames:
    """What the readers need of a scene: ``timestamps_ns (F,) int64`` and ``world_from_ego``
    (an ``(F,)`` SE3 batch) by frame position, the origin's ENU offset (m) and the id."""

    scene_id: str
    timestamps_ns: np.ndarray
    world_from_ego: SE3
    enu_offset_m: np.ndarray

    @staticmethod
    def of(scene: Scene) -> "SceneFrames":
        poses = [f.world_from_ego for f in scene.frames]
        return SceneFrames(scene.scene_id, np.array([f.timestamp_ns for f in scene.frames], np.int64),
                           SE3(np.array([p.rotation for p in poses]).reshape(-1, 4),
                               np.array([p.translation for p in poses]).reshape(-1, 3)),
                           np.asarray(scene.origin.enu_offset_m, np.float64))


@dataclass
class _Rows:
    """Detections being collected, each with where it came from: (file, byte offset or None,
    what), for error messages."""

    frame: list[int]
    centers: list[Any]
    sizes: list[Any]
    rotations: list[Any]
    categories: list[str]
    scores: list[float]
    ids: list[str | None]
    where: list[tuple[Any, int | None, str]]

    @staticmethod
    def empty() -> "_Rows":
        return _Rows([], [], [], [], [], [], [], [])

    def add(self, where: tuple[Any, int | None, str], frame: int, center, size, rotation, category: str, score: float,
            source_id: str | None = None) -> None:
        self.where.append(where)
        self.frame.append(frame)
        self.centers.append(center)
        self.sizes.append(size)
        self.rotations.append(rotation)
        self.categories.append(category)
        self.scores.append(score)
        self.ids.append(source_id)

    def done(self, frames: SceneFrames) -> Detections:
        """Checked :class:`Detections`; FormatError naming the first bad row."""
        n = len(self.frame)
        arrays = {}
        for name, width in (("centers", 3), ("sizes", 3), ("rotations", 4), ("scores", 0)):
            try:
                a = np.array(getattr(self, name), dtype=np.float64).reshape((n, width) if width else (n,))
            except (TypeError, ValueError):
                for i, v in enumerate(getattr(self, name)):
                    if np.shape(v) != ((width,) if width else ()):
                        self._fail(i, f"{name[:-1]} with {width or 1} numbers, got {v!r}"[:200])
                raise
            bad = ~np.isfinite(a.reshape(n, width or 1)).all(axis=1)
            if bad.any():
                self._fail(int(np.argmax(bad)), f"finite {name}, got {a[np.argmax(bad)].tolist()}")
            arrays[name] = a
        if (arrays["sizes"] < 0).any():
            i = int(np.argmax((arrays["sizes"] < 0).any(axis=1)))
            self._fail(i, f"non-negative sizes, got {arrays['sizes'][i].tolist()}")
        zero = np.linalg.norm(arrays["rotations"], axis=1) == 0
        if zero.any():
            self._fail(int(np.argmax(zero)), "a non-zero rotation quaternion")
        frame = np.array(self.frame, np.int64)
        bad = (frame < 0) | (frame >= len(frames.timestamps_ns))
        if bad.any():
            i = int(np.argmax(bad))
            self._fail(i, f"a frame of scene {frames.scene_id!r} (0..{len(frames.timestamps_ns) - 1}), got {frame[i]}")
        ids = None if all(s is None for s in self.ids) else tuple(self.ids)
        return Detections(frame, arrays["centers"], arrays["sizes"], arrays["rotations"], tuple(self.categories),
                          arrays["scores"], ids)

    def _fail(self, i: int, expected: str) -> None:
        path, offset, what = self.where[i]
        raise FormatError(path, offset, f"{what}: {expected}")


def _to_world(rows: _Rows, frames: SceneFrames, first: int, frame_from_box: SE3 | None) -> None:
    """Move the rows from ``first`` on from each frame's ``ego`` (``frame_from_box``:
    ``ego_from_reference``, or identity) to the world frame, in place."""
    for i in range(first, len(rows.frame)):
        f = rows.frame[i]
        if not 0 <= f < len(frames.timestamps_ns):
            continue  # reported by done()
        pose = frames.world_from_ego[f] if frame_from_box is None else frames.world_from_ego[f] @ frame_from_box
        c = np.asarray(rows.centers[i], np.float64)
        q = np.asarray(rows.rotations[i], np.float64)
        if c.shape == (3,) and q.shape == (4,) and np.isfinite(c).all() and np.isfinite(q).all() and q.any():
            rows.centers[i] = pose.apply(c[None])[0]
            rows.rotations[i] = quat.multiply(pose.rotation, q / np.linalg.norm(q))


def _json(path: Any, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(path, getattr(exc, "pos", None), f"JSON ({exc})") from None


def _nuscenes(path: Any, data: bytes, frames: SceneFrames, samples: Source | None) -> Detections:
    doc = _json(path, data)
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, dict):
        raise FormatError(path, None, 'a nuScenes results object {"results": {sample_token: [boxes]}}')
    own = {token("sample", frames.scene_id, i): i for i in range(len(frames.timestamps_ns))}
    dataset: dict[str, int] = {}
    if samples is not None:
        spath, sdata = load_source(samples)
        by_us = {us_from_ns(t): i for i, t in enumerate(frames.timestamps_ns)}
        table = _json(spath, sdata)
        if not isinstance(table, list):
            raise FormatError(spath, None, "a nuScenes sample table (a JSON list of records)")
        dataset = {r["token"]: by_us[r["timestamp"]] for r in table
                   if isinstance(r, dict) and r.get("timestamp") in by_us and isinstance(r.get("token"), str)}
    rows = _Rows.empty()
    for tok, boxes in results.items():
        if not isinstance(boxes, list):
            raise FormatError(path, None, f"results[{tok!r}]: a list of boxes")
        for k, b in enumerate(boxes):
            what = f"results[{tok!r}][{k}]"
            if not isinstance(b, dict):
                raise FormatError(path, None, f"{what}: a box object")
            frame = own.get(tok, dataset.get(tok, -1))
            tracking = "tracking_id" in b
            name = b.get("tracking_name" if tracking else "detection_name")
            score = b.get("tracking_score" if tracking else "detection_score", 1.0)
            if not isinstance(name, str) or not isinstance(score, (int, float)) or isinstance(score, bool):
                raise FormatError(path, None, f"{what}: a class name and a numeric score")
            origin = np.zeros(3) if tok in own else frames.enu_offset_m
            try:
                center = np.asarray(b["translation"], np.float64).reshape(3) - origin
                size = lwh_from_nuscenes_wlh(np.asarray(b["size"], np.float64).reshape(3))
                rotation = np.asarray(b["rotation"], np.float64).reshape(4)
            except (KeyError, TypeError, ValueError) as exc:
                raise FormatError(path, None, f"{what}: translation (3), size (3), rotation (4) ({exc})") from None
            rows.add((path, None, f"{what} (sample token {tok})"), frame, center, size, rotation, name, float(score),
                     str(b["tracking_id"]) if tracking else None)
    return rows.done(frames)


def _kitti(source: Source, frames: SceneFrames, reference: SE3 | None) -> Detections:
    files: list[tuple[Any, bytes, int | None]] = []
    if not isinstance(source, bytes) and Path(source).is_dir():
        for name in sorted(Path(source).glob("*.txt")):
            if not name.stem.isdigit():
                raise FormatError(name, None, "an object results file named by its frame (NNNNNN.txt)")
            files.append((name, load_source(name)[1], int(name.stem)))
    else:
        path, data = load_source(source)
        stem = None if path is None else Path(path).stem
        files.append((path, data, int(stem) if stem is not None and stem.isdigit() else None))
    rows = _Rows.empty()
    for path, data, file_frame in files:
        first = len(rows.frame)
        for offset, line in ascii_lines(data, path):
            f = line.split()
            if len(f) in (OBJECT_FIELDS + 2, OBJECT_FIELDS + 3):  # tracking: frame track_id ...
                try:
                    frame, tid = int(f[0]), f[1]
                except ValueError:
                    raise FormatError(path, offset, "an integer frame field") from None
                f = f[2:]
            elif len(f) in (OBJECT_FIELDS, OBJECT_FIELDS + 1) and file_frame is not None:
                frame, tid = file_frame, None
            else:
                raise FormatError(path, offset, f"KITTI tracking results (17 or 18 fields) or object results (15 or 16 "
                                                f"fields, in a file named by its frame), got {len(f)} fields")
            if f[0] == "DontCare":
                continue
            lab = object_label(path, offset, f[:OBJECT_FIELDS], frame, 0)
            score = 1.0
            if len(f) > OBJECT_FIELDS:
                try:
                    score = float(f[OBJECT_FIELDS])
                except ValueError:
                    raise FormatError(path, offset, f"a numeric score, got {f[OBJECT_FIELDS]!r}") from None
            c, s, q = camera_boxes_from_kitti(*(np.array([v]) for v in (*lab.hwl, *lab.xyz, lab.rotation_y)))
            rows.add((path, offset, f"frame {frame} line"), frame, c[0], s[0], q[0], lab.type.lower(), score, tid)
        _to_world(rows, frames, first, reference)
    return rows.done(frames)


def _sfs(path: Any, data: bytes, frames: SceneFrames) -> Detections:
    from formats.import_sfs import decode_sfs
    from formats.sfs_cuboids import _NS_PER_UNIT, TimeUnit, track_from_sfs

    doc = decode_sfs(data, path) if b"\0" in data else _json(path, data)
    anns = doc.get("annotations") if isinstance(doc, dict) else doc
    given = doc.get("time_unit") or "microseconds" if isinstance(doc, dict) else "microseconds"
    if not isinstance(anns, list) or given not in _NS_PER_UNIT:
        raise FormatError(path, None, "SFS cuboid annotations (a list, or a scene with annotations and a time_unit)")
    unit: TimeUnit = "nanoseconds" if given == "nanoseconds" else "microseconds"
    offset_ns = int(doc.get("time_offset") or 0) * _NS_PER_UNIT[unit] if isinstance(doc, dict) else 0
    by_us = {us_from_ns(t): i for i, t in enumerate(frames.timestamps_ns)}
    rows = _Rows.empty()
    for ann in anns:
        if not isinstance(ann, dict) or ann.get("type", "cuboid") != "cuboid":
            continue
        track = track_from_sfs(ann, unit, source=os.fspath(path) if path is not None else "<sfs>")
        static = track.attributes.get("score", 1.0)
        for k, t in enumerate(track.timestamps_ns + offset_ns):
            score = (track.keyframe_attributes[k] if track.keyframe_attributes else {}).get("score", static)
            where = (path, None, f"annotation {track.track_id!r} keyframe {k} ({int(t)} ns)")
            rows.add(where, by_us.get(us_from_ns(t), -1), track.centers[k], track.sizes[k], track.rotations[k],
                     track.category, score, track.track_id)
    return rows.done(frames)


_TABLE_COLUMNS = {"center": ("x", "y", "z"), "size": ("length", "width", "height"), "quat": ("qw", "qx", "qy", "qz")}


def _table(path: Any, data: bytes, frames: SceneFrames, coordinates: str) -> Detections:
    try:
        if data[:4] == b"PAR1":
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
        else:
            table = pa.ipc.open_file(pa.BufferReader(data)).read_all()
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(path, None, f"an Arrow IPC file or a Parquet table ({exc})") from None
    names = set(table.column_names)
    need = {*_TABLE_COLUMNS["center"], *_TABLE_COLUMNS["size"], "category"}
    rot = "yaw" if "yaw" in names else "quat"
    missing = sorted(need - names) + ([] if rot == "yaw" or names >= set(_TABLE_COLUMNS["quat"]) else ["yaw"])
    if missing or not ({"frame", "timestamp_ns"} & names):
        raise FormatError(path, None, f"detection columns; missing {missing or ['frame or timestamp_ns']}")

    def col(name: str, kind=np.float64) -> np.ndarray:
        column = table.column(name)
        if column.null_count:
            first = int(np.argmax(np.asarray(column.is_null().to_numpy(zero_copy_only=False))))
            raise FormatError(path, None, f"row {first}: a value in column {name!r}, got null")
        try:
            return np.asarray(column.to_numpy(zero_copy_only=False), dtype=kind)
        except (TypeError, ValueError, pa.ArrowException) as exc:
            raise FormatError(path, None, f"column {name!r} of {np.dtype(kind).name} values ({exc})") from None

    n = table.num_rows
    if "frame" in names:
        frame = col("frame", np.int64)
    else:
        stamps = col("timestamp_ns", np.int64)
        pos = np.searchsorted(frames.timestamps_ns, stamps).clip(0, max(len(frames.timestamps_ns) - 1, 0))
        frame = np.where(frames.timestamps_ns[pos] == stamps, pos, -1) if len(frames.timestamps_ns) else np.full(n, -1)
    centers = np.column_stack([col(c) for c in _TABLE_COLUMNS["center"]])
    sizes = np.column_stack([col(c) for c in _TABLE_COLUMNS["size"]])
    if rot == "yaw":
        with np.errstate(invalid="ignore"):  # a non-finite yaw is reported by row below
            rotations = quat.from_yaw(col("yaw"))
    else:
        rotations = np.column_stack([col(c) for c in _TABLE_COLUMNS["quat"]])
    categories = col("category", object).astype(str).tolist()
    scores = col("score") if "score" in names else np.ones(n)
    ids: list[str | None] = [None] * n
    if "track_id" in names:
        ids = [None if t is None else str(t) for t in table.column("track_id").to_pylist()]
    rows = _Rows(frame.tolist(), list(centers), list(sizes), list(rotations), categories, scores.tolist(),
                 ids, [(path, None, f"row {i}") for i in range(n)])
    if coordinates == "ego":
        _to_world(rows, frames, 0, None)
    return rows.done(frames)


def guess_format(name: str | None, head: bytes) -> Format:
    """The format of a detections file from its name or first bytes; FormatError if unclear."""
    suffix = Path(name).suffix.lower() if name else ""
    if head[:4] == b"PAR1" or head[:6] == b"ARROW1" or suffix in (".parquet", ".arrow", ".feather"):
        return "table"
    if suffix == ".sfs" or b'"annotations"' in head or b'"cuboid"' in head:
        return "sfs"
    if b'"results"' in head:
        return "nuscenes"
    if suffix == ".txt" or (name and Path(name).is_dir()):
        return "kitti"
    raise FormatError(name, None, f"detections in one of the formats {FORMATS} (name it with --format)")


def read_detections(
    source: Source,
    frames: SceneFrames,
    format: Format | None = None,
    *,
    samples: Source | None = None,
    reference: SE3 | None = None,
    coordinates: Literal["world", "ego"] = "world",
) -> Detections:
    """Detections of ``source`` (a path, a KITTI results directory, or the bytes of a file) on
    the scene ``frames``; see the module docstring for the formats and their options."""
    if coordinates not in ("world", "ego"):
        raise ValueError(f"coordinates must be 'world' or 'ego', got {coordinates!r}")
    if format is not None and format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    path: str | os.PathLike | None
    if not isinstance(source, bytes) and Path(source).is_dir():
        path, data, fmt = source, b"", format or "kitti"
    else:
        path, data = load_source(source)
        fmt = format or guess_format(None if path is None else str(path), data[:4096])
    if fmt == "kitti" and reference is None:
        raise ValueError("KITTI boxes need the reference camera: a calibration file or a scene camera")
    try:
        if fmt == "nuscenes":
            return _nuscenes(path, data, frames, samples)
        if fmt == "sfs":
            return _sfs(path, data, frames)
        if fmt == "table":
            return _table(path, data, frames, coordinates)
        return _kitti(source, frames, reference)
    except FormatError:
        raise
    except (KeyError, TypeError, IndexError, AttributeError, ValueError) as exc:  # malformed beyond the checks
        raise FormatError(path, None, f"{fmt} detections ({type(exc).__name__}: {exc})"[:300]) from None
