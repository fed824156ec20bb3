"""The prepared-scene store: what ``fathom prepare`` writes and ``fathom serve`` memory-maps.

Layout of one scene directory (format ``fathom-scene``, version 2)::

    SCENE_DIR/
      scene.json                 manifest: header + the list of finished frames (written last)
      labels.imported.json       the raw log's labels as the server's first label revision (optional)
      frames/000000.arrow        full-resolution points of frame 0 (Arrow IPC *file*, uncompressed)
      frames/000000.lod1.rows    level of detail 1, 2, ... (coarser voxel grids): row numbers
      frames/000000.boxes.json   label boxes at the frame timestamp (only for a labelled log)
      frames/000000.CAM_FRONT.jpg camera images, JPEG bytes as given
      frames/000000.json         the frame's manifest entry ("sidecar"), written after its files

(Readers take every path from the manifest; all of a frame's files share one directory so
that one directory fsync makes their renames durable.)

``scene.json``::

    {"format": "fathom-scene", "version": 2, "scene_id": "road-01",
     "origin": {"enu_offset_m": [e, n, u], "geodetic": {"lat_deg", "lon_deg", "alt_m"} | null},
     "sensors": {"lidars": [{"name", "sensor_id", "ego_from_sensor": [qw qx qy qz tx ty tz]}],
                 "cameras": [{"name", "width", "height", "fx", "fy", "cx", "cy", "skew", "model",
                              "distortion": [...], "near_m", "shutter", "row_readout_ns",
                              "ego_from_camera": [qw qx qy qz tx ty tz]}]},
     "frames": [FRAME_ENTRY, ...],            # sorted by index
     "imported_labels": FILE}                 # optional

The scene id is the name of the scene's directory (1-64 ASCII letters, digits, ``_-.``,
starting with a letter or digit): ``fathom prepare`` names the scene after the directory it
writes, and the server serves each directory under its name.

``imported_labels`` is the label document (the schema of the raw log's ``labels.json``, see
:func:`formats.raw_log.labels_document`) of a log that came with labels (an imported dataset,
the simulator's tracks): the server starts the scene's label history with it as revision 1
(operation ``import``) while the scene has no label revision yet, and never again after.

    FRAME_ENTRY = {"index", "timestamp_ns", "world_from_ego": [qw qx qy qz tx ty tz], "n_points",
                   "points": FILE, "lods": [FILE + {"level", "n_points"}, ...],
                   "images": {CAMERA: FILE + {"timestamp_ns"}},
                   "boxes": FILE}                       # optional
    FILE = {"file": relative path, "bytes": size, "xxh3_128": hex digest (32 hex digits)}

Frames: the *world* frame is the local ENU frame whose origin sits at ``origin.enu_offset_m``;
``world_from_ego`` translations and all stored point positions are relative to it, so float32
keeps millimetres over tens of kilometres. Point files hold one record batch with the columns

    x y z            float32  m, world frame relative to the scene origin      (required)
    xq yq zq         int32    quantised positions: x = offset + xq * scale      (required)
    intensity        float32  (optional)        r g b   uint8 colour (optional, all three)
    time_offset_ns   int32    firing time minus the frame timestamp, ns, so within ±2.147 s
                              (optional; add it to the int64 frame timestamp as int64)
    sensor_id        uint8    index into sensors.lidars (optional)
    ring             uint16   (optional)
    camera_mask      uint32   bit k set: camera k of sensors.cameras sees the point — it
                              projects into that camera's image of this frame and survives
                              its z-buffer (engine.zbuffer); 0 for no camera (optional;
                              so a scene has at most 32 cameras)
    box_id           int32    index into the "boxes" list of the frame's boxes file, the
                              box holding the point at its own firing time; -1 for none
                              (optional)

with the quantisation in the schema metadata key ``fathom.quantisation`` as JSON
``{"scale": [sx, sy, sz], "offset": [ox, oy, oz]}`` (metres, like Potree's scale/offset):
``xq = rint((x - offset) / scale)``, rounding half to even, computed from float64 positions.
Build tables with :func:`points_table`.

Levels of detail are row subsets of the full table, stored as the rows alone: a ``.rows`` file
is the level's row numbers in the frame's points file, strictly increasing, as little-endian
uint32 (``4 × n_points`` bytes, no header). :meth:`Scene.points` gathers a level from the
full table (:func:`take_rows`), so a level has every column, the quantisation, and only keys
of the full table — and costs 4 bytes per point on disk instead of a copy of each row.

The boxes file (:class:`FrameBoxes`) holds the label tracks that exist at the frame timestamp,
interpolated there (tracks are not extrapolated beyond their keyframes)::

    {"timestamp_ns": t, "boxes": [{"track_id", "category", "size": [l, w, h],
                                   "world": {"center": [x, y, z], "rotation": [qw, qx, qy, qz]},
                                   "ego": {"center": [...], "rotation": [...]}}]}

``world`` is the scene's world frame (relative to the origin, like the points), ``ego`` the
ego frame at the frame timestamp; rotations are box → frame. It is one of the frame's files:
written atomically before the sidecar and listed with its size and digest.

Atomicity, durability and resumability: every file is written to a temporary file in its
directory and renamed over its final name (``os.replace``), so no reader ever sees half a
file. A frame's sidecar ``frames/NNNNNN.json`` is written after its data files (and removed
first when a frame is rewritten), and a frame counts as *finished* only when its sidecar
exists and every file it names exists with the recorded size and digest. Each digest is
computed once, from the bytes while they are written.

Digests are XXH3-128 (``xxhash.xxh3_128``, 32 hex digits; ~0.3 ms per 10 MB where SHA-256
takes ~6 ms). They guard against accidents, not attackers: a torn, short or zeroed file
after a crash is caught on resume, and the server uses them as ETags. They are not
tamper-proofing — anyone who can write the scene directory can rewrite its manifest too.
Version 1 of the format recorded SHA-256 (key ``sha256``); opening or resuming a version-1
scene raises :class:`FormatError` (prepare the log again into a new directory).

Frame files are not fsynced by default. They are derived data whose digests are recorded and
checked on resume: after a power loss a frame file may come back empty, short or zeroed even
though its rename survived, and its sidecar may be lost or torn — each of these makes the
frame unfinished (digest mismatch, unreadable or missing sidecar), so the resumed job redoes
exactly those frames. A per-file fsync would only move that redo into a slower first run.
The commit point is the manifest: :meth:`SceneWriter.finalize` makes the files of every
frame it lists durable (one ``syncfs`` of the scene's filesystem on Linux, else an fsync
per file and directory), then writes ``scene.json`` atomically with fsync of the file and
the directory, so a durable manifest never names data that is not on disk. A frame's points
file (megabytes, written once and not read back by the job) goes to disk with direct I/O
where the filesystem offers it (Linux ``O_DIRECT``: serialised into a page-aligned buffer
that each writing thread reuses, written from there by the device, no page-cache copy); the
thread waits for the device instead of copying, so the other workers compute meanwhile, and
the final sync finds that data already written. Other files (and points files where direct
I/O is refused) are written through the page cache, each starting its write-back as soon
as it is written (Linux ``sync_file_range``, not waited for). ``SceneWriter(durable=True)``
(``fathom prepare --fsync-frames``) fsyncs each frame's files and directory before its
sidecar instead, for those who want each sidecar to mean "on disk" on its own.

:meth:`SceneWriter.finished_entries` answers which frames a resumed job may skip
(verifying their digests); :meth:`SceneWriter.finalize` rewrites ``scene.json`` with all
finished frames, trusting the entries it is given (those a job wrote or verified itself) and
verifying only the others (call it at the end of a job, or after each batch to publish frames
incrementally). Frames are independent, so worker processes may each build a ``SceneWriter``
on the same directory and header and write different frames concurrently; only ``finalize``
must run in one place.

Reading: :meth:`Scene.open` validates the manifest (paths may never leave the scene directory,
symlinks included), :meth:`Scene.points` memory-maps a frame's Arrow file and returns a table
whose buffers point into the mapping (zero-copy), or a level of detail gathered from it.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import json
import math
import mmap
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import xxhash

from engine._jit import jit
from engine.arrays import as_points
from engine.camera import Camera, CameraIntrinsics
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.errors import FormatError

FORMAT_NAME = "fathom-scene"
FORMAT_VERSION = 2
MANIFEST = "scene.json"
IMPORTED_LABELS = "labels.imported.json"
QUANT_KEY = b"fathom.quantisation"

# column -> Arrow type; x y z xq yq zq are required, the rest optional
COLUMN_TYPES: dict[str, pa.DataType] = {
    "x": pa.float32(), "y": pa.float32(), "z": pa.float32(),
    "xq": pa.int32(), "yq": pa.int32(), "zq": pa.int32(),
    "intensity": pa.float32(),
    "r": pa.uint8(), "g": pa.uint8(), "b": pa.uint8(),
    "time_offset_ns": pa.int32(),
    "sensor_id": pa.uint8(),
    "ring": pa.uint16(),
    "camera_mask": pa.uint32(),
    "box_id": pa.int32(),
}
NUMPY_TYPES: dict[str, np.dtype] = {k: np.dtype(t.to_pandas_dtype()) for k, t in COLUMN_TYPES.items()}
REQUIRED_COLUMNS = ("x", "y", "z", "xq", "yq", "zq")
QUANTISED_COLUMNS = ("xq", "yq", "zq")
MAX_CAMERAS = 32  # camera_mask is uint32


# ---------------------------------------------------------------- header types


@dataclass(frozen=True)
class SceneOrigin:
    """Where the scene's local world frame sits.

    Attributes:
        enu_offset_m: ``(3,) float64`` position of the local frame's origin in the ENU frame
            of the log (metres).
        geodetic: optional ``(lat_deg, lon_deg, alt_m)`` of that origin.
    """

    enu_offset_m: tuple[float, float, float] = (0.0, 0.0, 0.0)
    geodetic: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        off = tuple(float(v) for v in self.enu_offset_m)
        if len(off) != 3 or not all(math.isfinite(v) for v in off):
            raise ValueError(f"SceneOrigin.enu_offset_m must be 3 finite floats, got {self.enu_offset_m!r}")
        object.__setattr__(self, "enu_offset_m", off)
        if self.geodetic is not None:
            geo = tuple(float(v) for v in self.geodetic)
            if len(geo) != 3 or not all(math.isfinite(v) for v in geo) or abs(geo[0]) > 90:
                raise ValueError(f"SceneOrigin.geodetic must be (lat_deg, lon_deg, alt_m), got {self.geodetic!r}")
            object.__setattr__(self, "geodetic", geo)


@dataclass(frozen=True)
class Lidar:
    """A LiDAR (or sonar) on the ego: its name and extrinsic ``ego_from_sensor``."""

    name: str
    ego_from_sensor: SE3


@dataclass(frozen=True)
class StoredFile:
    """A file of the store: path relative to the scene directory, size and XXH3-128 (hex)."""

    file: str
    bytes: int
    xxh3_128: str


@dataclass(frozen=True)
class FrameEntry:
    """One finished frame as the manifest records it.

    Attributes:
        index: frame number (0-based, unique). timestamp_ns: frame time, int64 ns.
        world_from_ego: the ego pose at ``timestamp_ns`` (translation relative to the origin).
        n_points: rows of the full-resolution table.
        points: the full-resolution Arrow file. lods: the ``.rows`` files of the coarser
        levels 1, 2, ... in order. lod_points: rows of each level. images: camera name → JPEG file.
        image_timestamps_ns: camera name → exposure timestamp (int64 ns).
        boxes: the boxes file (:class:`FrameBoxes`), None for an unlabelled frame.
    """

    index: int
    timestamp_ns: int
    world_from_ego: SE3
    n_points: int
    points: StoredFile
    lods: tuple[StoredFile, ...] = ()
    lod_points: tuple[int, ...] = ()
    images: Mapping[str, StoredFile] = field(default_factory=dict)
    image_timestamps_ns: Mapping[str, int] = field(default_factory=dict)
    boxes: StoredFile | None = None

    def files(self) -> list[StoredFile]:
        return [self.points, *self.lods, *self.images.values(), *([self.boxes] if self.boxes else [])]


@dataclass(frozen=True, eq=False)
class FrameBoxes:
    """Label boxes of one frame, interpolated at its timestamp (the boxes file).

    Attributes:
        timestamp_ns: the frame timestamp (int64 ns).
        track_ids, categories: B track ids and class names; ``box_id`` k of a point is row k.
        sizes: ``(B, 3) float64`` m (length, width, height).
        world_centers: ``(B, 3) float64`` m, world frame relative to the scene origin.
        world_rotations: ``(B, 4) float64`` wxyz, box → world.
        ego_centers, ego_rotations: the same boxes in the ego frame at ``timestamp_ns``.
    """

    timestamp_ns: int
    track_ids: tuple[str, ...]
    categories: tuple[str, ...]
    sizes: np.ndarray
    world_centers: np.ndarray
    world_rotations: np.ndarray
    ego_centers: np.ndarray
    ego_rotations: np.ndarray

    def __post_init__(self) -> None:
        b = len(self.track_ids)
        if len(self.categories) != b:
            raise ValueError(f"{b} track_ids but {len(self.categories)} categories")
        for name, width in (("sizes", 3), ("world_centers", 3), ("world_rotations", 4),
                            ("ego_centers", 3), ("ego_rotations", 4)):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.size == 0:
                a = a.reshape(0, width)
            if a.shape != (b, width) or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite with shape ({b}, {width}), got {a.shape}")
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.track_ids)

    def to_json_text(self) -> str:
        """The boxes document (module docstring) as JSON text. Every float is written as the
        shortest decimal that reads back to the same float64 (Arrow's vectorised float to
        string cast), so there is no per-float Python work and the round trip is exact."""
        flat = np.concatenate([self.sizes, self.world_centers, self.world_rotations, self.ego_centers,
                               self.ego_rotations], axis=1).ravel()  # 17 numbers per box
        num = pc.cast(_arrow_array(flat, pa.float64()), pa.string()).to_pylist()
        for i in np.flatnonzero((flat == 0) & np.signbit(flat)):
            num[i] = "-0.0"  # Arrow writes "-0", which JSON reads as the integer 0
        quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, without its overhead
        boxes = []
        for k, (track, category) in enumerate(zip(self.track_ids, self.categories)):
            v = num[17 * k:17 * k + 17]
            boxes.append(
                f'{{"track_id": {quote(track)}, "category": {quote(category)}, "size": [{v[0]}, {v[1]}, {v[2]}], '
                f'"world": {{"center": [{v[3]}, {v[4]}, {v[5]}], "rotation": [{v[6]}, {v[7]}, {v[8]}, {v[9]}]}}, '
                f'"ego": {{"center": [{v[10]}, {v[11]}, {v[12]}], "rotation": [{v[13]}, {v[14]}, {v[15]}, {v[16]}]}}}}')
        return f'{{"timestamp_ns": {int(self.timestamp_ns)}, "boxes": [{", ".join(boxes)}]}}'

    def to_json(self) -> dict[str, Any]:
        """The boxes document (module docstring) as Python objects (parsed from
        :meth:`to_json_text`, the one definition of the layout)."""
        return json.loads(self.to_json_text())

    @staticmethod
    def from_json(doc: Any, path: str | os.PathLike | None = None) -> "FrameBoxes":
        """Parse a boxes file; FormatError names what is wrong."""
        try:
            boxes = doc["boxes"]
            return FrameBoxes(
                int(doc["timestamp_ns"]), tuple(str(b["track_id"]) for b in boxes),
                tuple(str(b["category"]) for b in boxes),
                np.array([b["size"] for b in boxes], np.float64),
                np.array([b["world"]["center"] for b in boxes], np.float64),
                np.array([b["world"]["rotation"] for b in boxes], np.float64),
                np.array([b["ego"]["center"] for b in boxes], np.float64),
                np.array([b["ego"]["rotation"] for b in boxes], np.float64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(path, None, f"a boxes document ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------- JSON <-> types


def pose_to_json(pose: SE3) -> list[float]:
    return np.concatenate([pose.rotation, pose.translation]).tolist()


def _pose_from_json(value: Any, path: Path, what: str) -> SE3:
    if not (isinstance(value, list) and len(value) == 7 and all(isinstance(v, (int, float)) for v in value)):
        raise FormatError(path, None, f"{what}: a list of 7 numbers [qw qx qy qz tx ty tz]")
    try:
        return SE3(np.array(value[:4], float), np.array(value[4:], float))
    except ValueError as exc:
        raise FormatError(path, None, f"{what}: a valid pose ({exc})") from None


def camera_to_json(cam: Camera) -> dict[str, Any]:
    k = cam.intrinsics
    return {
        "name": cam.name, "width": k.width, "height": k.height, "fx": k.fx, "fy": k.fy,
        "cx": k.cx, "cy": k.cy, "skew": k.skew, "model": k.model, "distortion": list(k.distortion),
        "max_fov_rad": k.max_fov_rad, "near_m": cam.near_m, "shutter": cam.shutter,
        "row_readout_ns": cam.row_readout_ns, "ego_from_camera": pose_to_json(cam.ego_from_camera),
    }


def _camera_from_json(d: Mapping[str, Any], path: Path) -> Camera:
    try:
        k = CameraIntrinsics(
            int(d["width"]), int(d["height"]), float(d["fx"]), float(d["fy"]), float(d["cx"]),
            float(d["cy"]), float(d.get("skew", 0.0)), d.get("model", "pinhole"),
            tuple(d.get("distortion", ())), d.get("max_fov_rad"),
        )
        return Camera(
            _name(d["name"], path, "camera name"), k,
            _pose_from_json(d["ego_from_camera"], path, f"camera {d['name']!r} ego_from_camera"),
            float(d.get("near_m", 0.1)), d.get("shutter", "global"), int(d.get("row_readout_ns", 0)),
        )
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a valid camera entry ({type(exc).__name__}: {exc})") from None


NAME_RULE = "1-64 ASCII letters, digits, '_', '-', '.', starting with a letter or digit"


def valid_name(value: Any) -> bool:
    """Whether ``value`` may name a scene or a sensor (:data:`NAME_RULE`): such names become
    directory and file names, and the strict pattern keeps them inside the scenes directory."""
    return (isinstance(value, str) and 0 < len(value) <= 64 and value.isascii() and value[0].isalnum()
            and all(c.isalnum() or c in "_-." for c in value))


def _name(value: Any, path: Path, what: str) -> str:
    if not valid_name(value):
        raise FormatError(path, None, f"{what}: {NAME_RULE}; got {value!r}")
    return value


def _file_to_json(f: StoredFile) -> dict[str, Any]:
    return {"file": f.file, "bytes": f.bytes, "xxh3_128": f.xxh3_128}


def _file_from_json(d: Any, path: Path) -> StoredFile:
    try:
        f = StoredFile(str(d["file"]), int(d["bytes"]), str(d["xxh3_128"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError(path, None, f"a file entry {{file, bytes, xxh3_128}}, got {d!r}") from None
    if Path(f.file).is_absolute() or ".." in Path(f.file).parts or "\\" in f.file:
        raise FormatError(path, None, f"a relative path inside the scene, got {f.file!r}")
    return f


def _entry_to_json(e: FrameEntry) -> dict[str, Any]:
    return {
        "index": e.index, "timestamp_ns": e.timestamp_ns, "world_from_ego": pose_to_json(e.world_from_ego),
        "n_points": e.n_points, "points": _file_to_json(e.points),
        "lods": [dict(_file_to_json(f), level=i + 1, n_points=n) for i, (f, n) in enumerate(zip(e.lods, e.lod_points))],
        "images": {c: dict(_file_to_json(f), timestamp_ns=e.image_timestamps_ns[c]) for c, f in e.images.items()},
        **({"boxes": _file_to_json(e.boxes)} if e.boxes is not None else {}),
    }


def _entry_from_json(d: Any, path: Path) -> FrameEntry:
    try:
        lods = sorted(d.get("lods", []), key=lambda x: int(x["level"]))
        if [int(x["level"]) for x in lods] != list(range(1, len(lods) + 1)):
            raise FormatError(path, None, f"frame {d.get('index')}: lod levels 1..n")
        return FrameEntry(
            index=int(d["index"]), timestamp_ns=int(d["timestamp_ns"]),
            world_from_ego=_pose_from_json(d["world_from_ego"], path, f"frame {d['index']} world_from_ego"),
            n_points=int(d["n_points"]), points=_file_from_json(d["points"], path),
            lods=tuple(_file_from_json(x, path) for x in lods),
            lod_points=tuple(int(x["n_points"]) for x in lods),
            images={_name(c, path, "camera name"): _file_from_json(f, path) for c, f in d.get("images", {}).items()},
            image_timestamps_ns={c: int(f["timestamp_ns"]) for c, f in d.get("images", {}).items()},
            boxes=None if d.get("boxes") is None else _file_from_json(d["boxes"], path),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a valid frame entry ({type(exc).__name__}: {exc})") from None


def _header_to_json(scene_id: str, origin: SceneOrigin, lidars: Sequence[Lidar], cameras: Sequence[Camera]) -> dict:
    geo = origin.geodetic
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "scene_id": scene_id,
        "origin": {
            "enu_offset_m": list(origin.enu_offset_m),
            "geodetic": None if geo is None else {"lat_deg": geo[0], "lon_deg": geo[1], "alt_m": geo[2]},
        },
        "sensors": {
            "lidars": [{"name": l.name, "sensor_id": i, "ego_from_sensor": pose_to_json(l.ego_from_sensor)}
                       for i, l in enumerate(lidars)],
            "cameras": [camera_to_json(c) for c in cameras],
        },
    }


# ---------------------------------------------------------------- files


def _libc(name: str, *argtypes):
    """A Linux libc function through ctypes (``sync_file_range``, ``syncfs``); None elsewhere."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


_SYNC_FILE_RANGE = _libc("sync_file_range", ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_SYNC_FILE_RANGE_WRITE = 2
_SYNCFS = _libc("syncfs", ctypes.c_int)


def _start_writeback(fd: int) -> None:
    """Start writing the file's dirty pages to disk without waiting (Linux), so the fsync of
    :meth:`SceneWriter.finalize` finds them written while the job went on computing."""
    if _SYNC_FILE_RANGE is not None:
        _SYNC_FILE_RANGE(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # advisory: a failure costs only time


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _HashingFile:
    """A minimal raw, write-only file over an open descriptor that digests (XXH3-128) and
    counts what it writes; :func:`write_arrow_file` streams into it through ``pa.PythonFile``,
    so a point table goes to disk without an intermediate full-size buffer."""

    closed = False

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.digest = xxhash.xxh3_128()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | memoryview | pa.Buffer) -> int:
        view = memoryview(data).cast("B")
        self.digest.update(view)
        done = 0
        while done < view.nbytes:
            done += os.write(self.fd, view[done:])
        self.size += done
        return done

    def flush(self) -> None:
        pass


_TEMPORARY_SERIAL = itertools.count()


def _create_temporary(path: Path, flags: int = 0) -> tuple[int, Path]:
    """Create and open (write-only, mode 0666 less the umask, plus ``flags``) a new
    temporary file ``.NAME.PID-SERIAL.tmp`` beside ``path``; the name is unique among live
    writers (process id) and ``O_EXCL`` skips one left by a dead process that had the same id."""
    while True:
        tmp = path.parent / f".{path.name}.{os.getpid()}-{next(_TEMPORARY_SERIAL)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | flags, 0o666), tmp
        except FileExistsError:
            continue


FileData = bytes | memoryview | pa.Buffer | np.ndarray | pa.Table  # a table is written as an Arrow IPC file

_DIRECT_ALIGN = 4096  # O_DIRECT: buffer address, length and file offset multiples of the block size
_DIRECT_MIN_BYTES = 1 << 20  # smaller files go through the page cache
_direct_buffers = threading.local()  # each writing thread's reusable page-aligned buffer


def _direct_buffer(size: int) -> mmap.mmap:
    """This thread's page-aligned buffer of at least ``size`` bytes (grown in 8 MiB steps,
    kept for the next file: memory touched once, not faulted in again per frame)."""
    buf = getattr(_direct_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = mmap.mmap(-1, -(-size // (8 << 20)) * (8 << 20))
        _direct_buffers.buf = buf
    return buf


def _write_direct(path: Path, table: pa.Table) -> tuple[StoredFile, Path] | None:
    """Write ``table`` as an Arrow IPC file to a new temporary beside ``path`` with
    ``O_DIRECT``: its :class:`StoredFile` (named ``path``) and the temporary; None (nothing
    left behind) for a small file or where the filesystem refuses direct I/O."""
    counter = pa.MockOutputStream()  # the file's size, without copying its buffers
    write_arrow_file(table, counter)
    size = counter.size()
    if size < _DIRECT_MIN_BYTES or not hasattr(os, "O_DIRECT"):
        return None
    try:
        fd, tmp = _create_temporary(path, os.O_DIRECT)
    except OSError as exc:
        if exc.errno == errno.EINVAL:  # no direct I/O on this filesystem (tmpfs...)
            return None
        raise
    try:
        padded = -(-size // _DIRECT_ALIGN) * _DIRECT_ALIGN
        buf = _direct_buffer(padded)
        write_arrow_file(table, pa.FixedSizeBufferWriter(pa.py_buffer(buf)))
        view = memoryview(buf)[:padded]
        done = 0
        while done < padded:
            done += os.write(fd, view[done:])
        os.ftruncate(fd, size)  # drop the block padding
        digest = xxhash.xxh3_128(view[:size]).hexdigest()
    except BaseException as exc:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno == errno.EINVAL:  # refused at the first write
            return None
        raise
    os.close(fd)
    return StoredFile(str(path), size, digest), tmp


def _replace_files(files: Sequence[tuple[Path, FileData]], durable: bool) -> list[StoredFile]:
    """Replace each ``path`` with its ``data`` atomically: every temp file (in the path's
    directory) written (a ``pa.Table`` serialised by :func:`write_arrow_file` straight into
    it, or with direct I/O: :func:`_write_direct`), with ``durable`` then every one fsynced (the first fsync's journal commit carries
    most of the others), then each renamed over its path. The caller fsyncs the directories.
    Returns the :class:`StoredFile` of each (digest of the bytes written)."""
    temps: list[tuple[Path, Path]] = []
    out = []
    try:
        for path, data in files:
            direct = _write_direct(path, data) if isinstance(data, pa.Table) else None
            if direct is not None:
                out.append(direct[0])
                temps.append((path, direct[1]))
                continue
            fd, tmp = _create_temporary(path)
            temps.append((path, tmp))
            sink = _HashingFile(fd)
            try:
                if isinstance(data, pa.Table):
                    write_arrow_file(data, sink)
                else:
                    sink.write(data)
                if not durable:
                    _start_writeback(fd)
            finally:
                os.close(fd)
            out.append(StoredFile(str(path), sink.size, sink.digest.hexdigest()))
        if durable:
            _fsync_files([tmp for _, tmp in temps], directories=False)
        for path, tmp in temps:
            os.replace(tmp, path)
    except BaseException:
        for _, tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    return out


def atomic_write(path: Path, data: FileData, durable: bool = True) -> StoredFile:
    """Write ``data`` to ``path`` atomically (temp file in the same directory, rename; with
    ``durable`` the file and then its directory fsynced). Returns the :class:`StoredFile`
    (path as given, size, digest)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    [stored] = _replace_files([(path, data)], durable)
    if durable:
        _fsync_dir(path.parent)
    return stored


def _make_durable(root: Path, paths: Sequence[Path]) -> None:
    """Make the files ``paths`` under ``root`` and their renames durable: one ``syncfs`` of
    root's filesystem (one journal commit for all of them) where Linux offers it, else an
    fsync of each file and directory."""
    if _SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY)
        try:
            if _SYNCFS(fd) == 0:
                return
        finally:
            os.close(fd)
    _fsync_files(paths)


def _fsync_files(paths: Sequence[Path], directories: bool = True) -> None:
    """fsync each file, then (``directories``) each directory holding them, which makes
    the renames into them durable."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    for d in sorted({p.parent for p in paths}) if directories else ():
        _fsync_dir(d)


def _digest_file(path: Path) -> str:
    """XXH3-128 (hex) of the file at ``path``, read in 1 MiB chunks."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _inside(root: Path, rel: str, manifest: Path) -> Path:
    """``root / rel`` resolved (symlinks followed); FormatError if it leaves ``root``."""
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise FormatError(manifest, None, f"a file inside the scene directory, {rel!r} resolves to {full}")
    return full


# ---------------------------------------------------------------- point tables


_ROUND = 4503599627370496.0  # 2**52: for 0 <= q < 2**52, (q + 2**52) - 2**52 == rint(q) (half to even)
_BLOCK = 512  # points per block of _quantise_kernel (3 float64 rows of it stay in L1)


@jit
def _split_bounds_kernel(p, x, y, z, lo, hi):
    """x[i], y[i], z[i] = float32 of p[i]; lo, hi = per-axis min, max of p. Returns False if
    any coordinate is NaN or infinite (lo, hi are then meaningless)."""
    lx = ly = lz = np.inf
    hx = hy = hz = -np.inf
    nonfinite = 0.0  # v - v is 0 for finite v, NaN for NaN and ±inf; NaN sticks in the sum
    for i in range(p.shape[0]):
        a, b, c = p[i, 0], p[i, 1], p[i, 2]
        x[i] = a
        y[i] = b
        z[i] = c
        lx, ly, lz = min(lx, a), min(ly, b), min(lz, c)
        hx, hy, hz = max(hx, a), max(hy, b), max(hz, c)
        nonfinite += (a - a) + (b - b) + (c - c)
    lo[0], lo[1], lo[2] = lx, ly, lz
    hi[0], hi[1], hi[2] = hx, hy, hz
    return nonfinite == 0.0


@jit
def _quantise_kernel(p, offset, quantum, q32):
    """q32[k, i] = rint((p[i, k] - offset[k]) / quantum) as int32, rounding half to even via
    ``(q + 2**52) - 2**52`` (exact for 0 <= q < 2**52; the caller checks the range first).
    Blocks of points are transposed into a scratch buffer so the arithmetic vectorises."""
    n = p.shape[0]
    buf = np.empty((3, _BLOCK))
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        for j in range(m):
            buf[0, j] = p[start + j, 0]
            buf[1, j] = p[start + j, 1]
            buf[2, j] = p[start + j, 2]
        for k in range(3):
            o = offset[k]
            row = buf[k]
            out = q32[k, start:start + m]
            for j in range(m):
                out[j] = np.int32(((row[j] - o) / quantum + _ROUND) - _ROUND)


def _arrow_array(a: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A non-null Arrow array viewing the contiguous 1-D array ``a`` (no copy, no pandas)."""
    return pa.Array.from_buffers(kind, len(a), [None, pa.py_buffer(a)])


def _integer_column(name: str, value: np.ndarray, dtype: type) -> np.ndarray:
    """``value`` (any integer dtype) as contiguous ``dtype``; ValueError naming the column and
    the range if a value does not fit."""
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {value.dtype}")
    if value.dtype != dtype and value.size:
        info = np.iinfo(dtype)
        vmin, vmax = value.min(), value.max()
        if vmin < info.min or vmax > info.max:
            raise ValueError(f"{name} values outside {np.dtype(dtype).name} range [{info.min}, {info.max}]: "
                             f"found [{vmin}, {vmax}]")
    return np.ascontiguousarray(value, dtype=dtype)


def points_table(
    xyz: np.ndarray,
    *,
    intensity: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    time_offset_ns: np.ndarray | None = None,
    sensor_id: np.ndarray | None = None,
    ring: np.ndarray | None = None,
    camera_mask: np.ndarray | None = None,
    box_id: np.ndarray | None = None,
    quantum_m: float = 1e-3,
) -> pa.Table:
    """An Arrow table in the store's point schema. Columns view NumPy arrays (no copy where an
    input already has the column's dtype and is contiguous; pandas is never imported).

    Args:
        xyz: ``(N, 3)`` positions in metres, world frame relative to the scene origin; float64
            input gives the most accurate quantised columns (float32 input is used as is).
        intensity: ``(N,) float32``; rgb: ``(N, 3) uint8``; time_offset_ns: ``(N,)`` ns from
            the frame timestamp, stored as int32 (so within ±2.147 s); sensor_id: ``(N,)
            uint8``; ring: ``(N,) uint16``; camera_mask: ``(N,) uint32`` bit k = camera k sees
            the point; box_id: ``(N,) int32`` row of the frame's boxes file, -1 for none.
            Integer columns take any integer dtype whose values fit (ValueError naming the
            column and the range otherwise).
        quantum_m: quantisation step (the ``scale``); the ``offset`` is the per-axis minimum
            rounded down to a multiple of it, so quantised values are ``>= 0``:
            ``xq = rint((x - offset) / scale)`` (half to even), which must fit int32.
    """
    p = as_points(xyz)
    if not (math.isfinite(quantum_m) and quantum_m > 0):
        raise ValueError(f"quantum_m must be positive, got {quantum_m}")
    n = len(p)
    xyz32 = np.empty((3, n), np.float32)
    lo, hi = np.empty(3), np.empty(3)
    if not _split_bounds_kernel(p, xyz32[0], xyz32[1], xyz32[2], lo, hi):
        raise ValueError("xyz contains NaN or infinite values")
    offset = np.floor(lo / quantum_m) * quantum_m if n else np.zeros(3)
    q32 = np.empty((3, n), np.int32)
    if n:
        # rounding is monotonic, so the largest quantised value is that of the maximum
        top = ((hi - offset) / quantum_m + _ROUND) - _ROUND
        if top.max() > np.iinfo(np.int32).max:
            raise ValueError(f"extent {hi - lo} m does not fit int32 at quantum_m={quantum_m}")
        _quantise_kernel(p, offset, float(quantum_m), q32)
    cols: dict[str, np.ndarray] = {c: xyz32[i] for i, c in enumerate("xyz")}
    cols.update({c + "q": q32[i] for i, c in enumerate("xyz")})

    def column(name: str, value: np.ndarray | None, shape: tuple[int, ...] = ()) -> np.ndarray | None:
        if value is None:
            return None
        a = np.asarray(value)
        if a.shape != (n, *shape):
            raise ValueError(f"{name} must have shape {(n, *shape)}, got {a.shape}")
        return a

    if (a := column("intensity", intensity)) is not None:
        cols["intensity"] = np.ascontiguousarray(a, dtype=np.float32)
    if (a := column("rgb", rgb, (3,))) is not None:
        a = _integer_column("rgb", a, np.uint8)
        cols.update({c: np.ascontiguousarray(a[:, i]) for i, c in enumerate("rgb")})
    for name, value in (("time_offset_ns", time_offset_ns), ("sensor_id", sensor_id), ("ring", ring),
                        ("camera_mask", camera_mask), ("box_id", box_id)):
        if (a := column(name, value)) is not None:
            cols[name] = _integer_column(name, a, NUMPY_TYPES[name])
    quant = {"scale": [quantum_m] * 3, "offset": [float(v) for v in offset]}
    schema = pa.schema([pa.field(k, COLUMN_TYPES[k], nullable=False) for k in cols],
                       metadata={QUANT_KEY: json.dumps(quant).encode()})
    return pa.Table.from_arrays([_arrow_array(v, COLUMN_TYPES[k]) for k, v in cols.items()], schema=schema)


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The rows ``rows`` of a point table (a level of detail), same schema and quantisation.

    Args:
        table: a table of :func:`points_table` (any chunking).
        rows: ``(M,)`` integer row indices in ``[0, N)``, in the order wanted (repeats allowed).
    Columns are gathered with NumPy from views of the table's buffers (no pandas). ValueError
    for rows of another shape, dtype or range, or a column outside the point schema.
    """
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"rows must be a 1-D integer array, got shape {r.shape} dtype {r.dtype}")
    n = table.num_rows
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"rows must be in [0, {n}), found [{r.min()}, {r.max()}]")
    r = r.astype(np.intp, copy=False)
    arrays = [_arrow_array(column_values(table, name).take(r), COLUMN_TYPES[name]) for name in table.schema.names]
    return pa.Table.from_arrays(arrays, schema=table.schema)


def _increasing_below(rows: np.ndarray, n: int) -> bool:
    """Whether the integer ``rows`` are strictly increasing within ``[0, n)`` (a level of detail)."""
    return not rows.size or (rows[0] >= 0 and rows[-1] < n and not np.any(rows[1:] <= rows[:-1]))


def _lod_rows(rows: np.ndarray, n: int, level: int) -> np.ndarray:
    """Level ``level``'s rows as the little-endian uint32 array its ``.rows`` file holds;
    ValueError unless they are a 1-D integer array, strictly increasing, within ``[0, n)``."""
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"level {level} rows must be a 1-D integer array, got shape {r.shape} dtype {r.dtype}")
    if not _increasing_below(r, n):
        raise ValueError(f"level {level} rows must be strictly increasing within [0, {n})")
    return r.astype("<u4", copy=False)


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """Column ``name`` of a point table as a 1-D NumPy array of its dtype: a view of its
    buffer when it has one chunk (else a copy), without pandas. ValueError for a column
    outside the point schema or with nulls."""
    col = table.column(name)
    if COLUMN_TYPES.get(name) != col.type:
        raise ValueError(f"column {name!r} of type {col.type} is not in the point schema")
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if chunk.null_count:
        raise ValueError(f"column {name!r} has nulls; point tables have none")
    dtype = NUMPY_TYPES[name]
    if len(chunk) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype.itemsize)


def quantisation(schema: pa.Schema) -> tuple[np.ndarray, np.ndarray]:
    """``(scale (3,), offset (3,))`` float64 of a point table: ``x = offset + xq * scale``."""
    raw = (schema.metadata or {}).get(QUANT_KEY)
    if raw is None:
        raise ValueError("schema has no fathom.quantisation metadata")
    d = json.loads(raw)
    return np.asarray(d["scale"], float), np.asarray(d["offset"], float)


def check_points_schema(schema: pa.Schema, path: str | os.PathLike | None = None) -> None:
    """FormatError unless ``schema`` is the store's point schema (required columns, dtypes)."""
    for name in schema.names:
        if name not in COLUMN_TYPES:
            raise FormatError(path, None, f"only columns {list(COLUMN_TYPES)}, found {name!r}")
        if schema.field(name).type != COLUMN_TYPES[name]:
            raise FormatError(path, None, f"column {name!r} of type {COLUMN_TYPES[name]}, found {schema.field(name).type}")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise FormatError(path, None, f"required columns {missing}")
    if len({"r", "g", "b"} & set(schema.names)) not in (0, 3):
        raise FormatError(path, None, "colour columns r, g, b all present or all absent")
    try:
        scale, offset = quantisation(schema)
    except (ValueError, KeyError, TypeError):
        raise FormatError(path, None, "schema metadata fathom.quantisation {scale: [3], offset: [3]}") from None
    if scale.shape != (3,) or offset.shape != (3,) or not np.all(np.isfinite(np.r_[scale, offset])) or np.any(scale <= 0):
        raise FormatError(path, None, "quantisation scale (3 positive) and offset (3 finite)")


def write_arrow_file(table: pa.Table, sink: Any) -> None:
    """Serialise a point table into ``sink`` (a writable file object or Arrow stream) as one
    uncompressed Arrow IPC file holding one record batch."""
    out = sink if isinstance(sink, pa.NativeFile) else pa.PythonFile(sink, mode="w")
    with ipc.new_file(out, table.schema) as writer:
        writer.write_table(table.combine_chunks(), max_chunksize=max(len(table), 1))


# ---------------------------------------------------------------- writer


class SceneWriter:
    """Writes (and resumes writing) one prepared scene; see the module docstring.

    Constructing it on an existing directory checks that the header (scene id, origin,
    sensors) is the one already there (``ValueError`` otherwise) and keeps its frames.
    ``durable``: fsync every frame's files as they are written (see the module docstring;
    by default only :meth:`finalize` syncs, once for all the frames it lists).
    """

    def __init__(
        self,
        scene_dir: str | os.PathLike,
        *,
        scene_id: str,
        origin: SceneOrigin = SceneOrigin(),
        lidars: Sequence[Lidar] = (),
        cameras: Sequence[Camera] = (),
        durable: bool = False,
    ) -> None:
        self.dir = Path(scene_dir).resolve()
        self.durable = bool(durable)
        manifest = self.dir / MANIFEST
        _name(scene_id, manifest, "scene_id")
        names = [l.name for l in lidars] + [c.name for c in cameras]
        for nm in names:
            _name(nm, manifest, "sensor name")
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        if len(lidars) > 256:
            raise ValueError(f"at most 256 lidars (sensor_id is uint8), got {len(lidars)}")
        self.cameras = {c.name: c for c in cameras}
        self.header = _header_to_json(scene_id, origin, lidars, cameras)
        if manifest.exists():
            existing = Scene.read_manifest(self.dir)
            old = {k: existing[k] for k in self.header}
            if json.loads(json.dumps(old)) != json.loads(json.dumps(self.header)):
                raise ValueError(f"{manifest} holds a different scene header; use a new directory")
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_write(manifest, json.dumps(dict(self.header, frames=[]), indent=1).encode())

    def _sidecar(self, index: int) -> Path:
        return self.dir / "frames" / f"{index:06d}.json"

    def write_frame(
        self,
        index: int,
        timestamp_ns: int,
        world_from_ego: SE3,
        points: pa.Table,
        lods: Sequence[np.ndarray] = (),
        images: Mapping[str, bytes] | None = None,
        image_timestamps_ns: Mapping[str, int] | None = None,
        boxes: FrameBoxes | None = None,
    ) -> FrameEntry:
        """Write one frame's files atomically, then its sidecar; returns its entry as the
        sidecar records it (with the digest of every file, computed from the bytes written).

        ``points`` must follow the point schema (build it with :func:`points_table`); ``lods``
        are the levels 1, 2, ... (coarser and coarser), each a ``(M,)`` integer array of rows
        of ``points``, strictly increasing (e.g. :func:`engine.voxel.first_points_levels`). ``images`` maps camera name →
        JPEG bytes; ``image_timestamps_ns`` defaults to ``timestamp_ns`` per camera. ``boxes``
        (a labelled frame) is written as the frame's boxes file; a ``box_id`` column must index
        it. Rewriting a finished frame first removes its sidecar, so an interruption leaves it
        unfinished.
        """
        index = int(index)
        if not 0 <= index < 1_000_000:
            raise ValueError(f"frame index must be in [0, 999999], got {index}")
        if not isinstance(world_from_ego, SE3) or world_from_ego.shape != ():
            raise ValueError("world_from_ego must be a single SE3")
        images = dict(images or {})
        stamps = dict(image_timestamps_ns or {})
        for cam, data in images.items():
            if cam not in self.cameras:
                raise ValueError(f"image for unknown camera {cam!r}; cameras are {sorted(self.cameras)}")
            if not bytes(data[:3]) == b"\xff\xd8\xff":
                raise ValueError(f"image for camera {cam!r} is not JPEG (no SOI marker)")
        for cam in stamps:
            if cam not in images:
                raise ValueError(f"image_timestamps_ns names camera {cam!r} without an image")
        if boxes is not None and not isinstance(boxes, FrameBoxes):
            raise ValueError(f"boxes must be FrameBoxes, got {type(boxes).__name__}")
        if not isinstance(points, pa.Table):
            raise ValueError(f"points must be a pyarrow.Table, got {type(points).__name__}")
        try:
            check_points_schema(points.schema, f"<frame {index} points>")
        except FormatError as exc:
            raise ValueError(str(exc)) from None
        if "box_id" in points.schema.names and len(points):
            ids = column_values(points, "box_id")
            n_boxes = 0 if boxes is None else len(boxes)
            if ids.min() < -1 or ids.max() >= n_boxes:
                raise ValueError(f"box_id must be in [-1, {n_boxes}) (the frame's boxes)")
        levels = [_lod_rows(rows, len(points), level) for level, rows in enumerate(lods, start=1)]
        self._sidecar(index).unlink(missing_ok=True)
        stem = f"{index:06d}"
        files: list[tuple[str, FileData]] = [(f"frames/{stem}.arrow", points)]
        files += [(f"frames/{stem}.lod{level}.rows", rows) for level, rows in enumerate(levels, start=1)]
        files += [(f"frames/{stem}.{cam}.jpg", data) for cam, data in images.items()]
        if boxes is not None:
            files.append((f"frames/{stem}.boxes.json", boxes.to_json_text().encode()))
        dirs = sorted({(self.dir / rel).parent for rel, _ in files})
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        stored = {rel: StoredFile(rel, f.bytes, f.xxh3_128)
                  for (rel, _), f in zip(files, _replace_files([(self.dir / rel, data) for rel, data in files],
                                                               self.durable))}
        if self.durable:
            for d in dirs:  # the renames are durable before the sidecar names them
                _fsync_dir(d)
        entry = FrameEntry(
            index=index, timestamp_ns=int(timestamp_ns), world_from_ego=world_from_ego,
            n_points=len(points), points=stored[files[0][0]],
            lods=tuple(stored[rel] for rel, _ in files[1:1 + len(levels)]),
            lod_points=tuple(len(r) for r in levels),
            images={cam: stored[f"frames/{stem}.{cam}.jpg"] for cam in images},
            image_timestamps_ns={c: int(stamps.get(c, timestamp_ns)) for c in images},
            boxes=None if boxes is None else stored[f"frames/{stem}.boxes.json"],
        )
        side = self._sidecar(index)
        text = json.dumps(_entry_to_json(entry))
        atomic_write(side, text.encode(), durable=self.durable)
        # as a resumed job reads it back: the manifest depends on the sidecar's bytes only
        return _entry_from_json(json.loads(text), side)

    def _entries(self, verify: Literal["size", "digest"], skip: frozenset[int] | set[int] = frozenset()
                 ) -> dict[int, FrameEntry]:
        out = {}
        for side in sorted((self.dir / "frames").glob("[0-9]" * 6 + ".json")):
            if int(side.stem) in skip:
                continue
            try:
                entry = _entry_from_json(json.loads(side.read_bytes()), side)
            except (FormatError, ValueError):
                continue  # unreadable sidecar: the frame is not finished
            if entry.index != int(side.stem):
                continue
            if all(self._matches(f, verify) for f in entry.files()):
                out[entry.index] = entry
        return out

    def _matches(self, f: StoredFile, verify: str) -> bool:
        path = self.dir / f.file
        try:
            if path.stat().st_size != f.bytes:
                return False
        except OSError:
            return False
        return verify == "size" or _digest_file(path) == f.xxh3_128

    def remove_stale_temporaries(self) -> list[Path]:
        """Delete temporary files left by writers that died mid-write (``kill -9``).

        Only safe while no other writer works on this scene: a job calls it once at its
        start, before it hands frames to workers. Returns what was removed.
        """
        stale = [p for p in self.dir.rglob(".*.tmp") if p.is_file()]
        for p in stale:
            p.unlink(missing_ok=True)
        return stale

    def finished_entries(self, verify: Literal["size", "digest"] = "digest",
                         skip: Sequence[int] = ()) -> dict[int, FrameEntry]:
        """Index → entry of the frames whose sidecar exists and whose files match it (size, and
        digest with ``verify="digest"``); frames in ``skip`` are not read."""
        return self._entries(verify, set(skip))

    def finished_frames(self, verify: Literal["size", "digest"] = "digest") -> set[int]:
        """Indices of frames whose sidecar exists and whose files match it (size and digest)."""
        return set(self._entries(verify))

    def finalize(self, verify: Literal["size", "digest"] = "digest",
                 known: Mapping[int, FrameEntry] | None = None,
                 imported_labels: Mapping[str, Any] | None = None) -> list[FrameEntry]:
        """Rewrite ``scene.json`` atomically and durably listing every finished frame; returns
        them. The commit point: the files of the frames it lists are fsynced first.

        ``known``: entries the caller wrote (``write_frame``'s return value) or verified
        (``finished_entries``) itself; they are listed as given, every other sidecar is
        verified. ``imported_labels``: the log's label document, written as
        ``labels.imported.json`` and listed in the manifest (see the module docstring).
        """
        known = dict(known or {})
        found = self._entries(verify, set(known))
        found.update(known)
        entries = [e for _, e in sorted(found.items())]
        files = [self.dir / f.file for e in entries for f in e.files()]
        extra: dict[str, Any] = {}
        if imported_labels is not None:
            body = json.dumps(imported_labels, separators=(",", ":"), allow_nan=False).encode()
            stored = atomic_write(self.dir / IMPORTED_LABELS, body, durable=False)
            extra["imported_labels"] = _file_to_json(StoredFile(IMPORTED_LABELS, stored.bytes, stored.xxh3_128))
            files.append(self.dir / IMPORTED_LABELS)
        _make_durable(self.dir, files)
        doc = dict(self.header, frames=[_entry_to_json(e) for e in entries], **extra)
        atomic_write(self.dir / MANIFEST, json.dumps(doc, indent=1).encode())
        return entries


# ---------------------------------------------------------------- reader


@dataclass(frozen=True, eq=False)
class Scene:
    """A prepared scene opened for reading (manifest parsed; point files mapped on demand).

    Attributes:
        dir: the resolved scene directory. scene_id: its id. origin: :class:`SceneOrigin`.
        lidars: :class:`Lidar` list (``sensor_id`` = position). cameras: name → ``Camera``.
        frames: :class:`FrameEntry` list sorted by index. manifest_digest: XXH3-128 (hex) of
        ``scene.json``. imported_labels: the log's label document file, or None.
    """

    dir: Path
    scene_id: str
    origin: SceneOrigin
    lidars: tuple[Lidar, ...]
    cameras: Mapping[str, Camera]
    frames: tuple[FrameEntry, ...]
    manifest_digest: str
    imported_labels: StoredFile | None = None

    @staticmethod
    def read_manifest(scene_dir: Path) -> dict[str, Any]:
        path = scene_dir / MANIFEST
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raise FormatError(path, None, f"a readable manifest ({exc.strerror})") from None
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(path, getattr(exc, "pos", None), "JSON") from None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            raise FormatError(path, None, f'"format": "{FORMAT_NAME}"')
        version = doc.get("version")
        if version == 1:
            raise FormatError(path, None, f'"version": {FORMAT_VERSION}, found 1 (a scene of an older Fathom, '
                              "with SHA-256 digests): prepare the log again into a new directory")
        if version != FORMAT_VERSION:
            raise FormatError(path, None, f'"version": {FORMAT_VERSION}, found {version!r}')
        return doc

    @staticmethod
    def open(scene_dir: str | os.PathLike) -> "Scene":
        """Parse and validate ``scene_dir/scene.json``; raises :class:`FormatError`."""
        root = Path(scene_dir).resolve()
        doc = Scene.read_manifest(root)
        path = root / MANIFEST
        try:
            org = doc["origin"]
            geo = org.get("geodetic")
            origin = SceneOrigin(
                tuple(org["enu_offset_m"]),
                None if geo is None else (geo["lat_deg"], geo["lon_deg"], geo["alt_m"]),
            )
            sensors = doc["sensors"]
            lidars = tuple(
                Lidar(_name(l["name"], path, "lidar name"), _pose_from_json(l["ego_from_sensor"], path, "ego_from_sensor"))
                for l in sensors["lidars"]
            )
            cameras = {c.name: c for c in (_camera_from_json(c, path) for c in sensors["cameras"])}
            frames = tuple(sorted((_entry_from_json(f, path) for f in doc["frames"]), key=lambda e: e.index))
            scene_id = _name(doc["scene_id"], path, "scene_id")
            imported = doc.get("imported_labels")
            imported = None if imported is None else _file_from_json(imported, path)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, FormatError):
                raise
            raise FormatError(path, None, f"a valid scene header ({type(exc).__name__}: {exc})") from None
        if len({f.index for f in frames}) != len(frames):
            raise FormatError(path, None, "unique frame indices")
        stamps = [f.timestamp_ns for f in frames]
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise FormatError(path, None, "frame timestamps strictly increasing with the index")
        for f in frames:
            for cam in f.images:
                if cam not in cameras:
                    raise FormatError(path, None, f"frame {f.index}: images only for declared cameras, found {cam!r}")
            for sf in f.files():
                _inside(root, sf.file, path)
        if imported is not None:
            _inside(root, imported.file, path)
        return Scene(root, scene_id, origin, lidars, cameras, frames,
                     xxhash.xxh3_128(path.read_bytes()).hexdigest(), imported)

    def frame(self, index: int) -> FrameEntry:
        """The entry of frame ``index``; ``KeyError`` if the scene has no such frame."""
        lookup = self.__dict__.get("_by_index")
        if lookup is None:
            lookup = {f.index: f for f in self.frames}
            object.__setattr__(self, "_by_index", lookup)
        return lookup[index]

    def world_from_ego(self) -> PoseTrack:
        """The ego poses of all frames as a :class:`PoseTrack` (ValueError if no frames)."""
        track = self.__dict__.get("_track")
        if track is None:
            if not self.frames:
                raise ValueError(f"scene {self.scene_id!r} has no frames")
            track = PoseTrack(
                np.array([f.timestamp_ns for f in self.frames], np.int64),
                np.stack([f.world_from_ego.rotation for f in self.frames]),
                np.stack([f.world_from_ego.translation for f in self.frames]),
            )
            object.__setattr__(self, "_track", track)
        return track

    def _file(self, f: StoredFile) -> Path:
        full = _inside(self.dir, f.file, self.dir / MANIFEST)
        try:
            size = full.stat().st_size
        except OSError as exc:
            raise FormatError(full, None, f"the file the manifest lists ({exc.strerror})") from None
        if size != f.bytes:
            raise FormatError(full, size, f"{f.bytes} bytes as the manifest records")
        return full

    def _lod_file(self, index: int, lod: int) -> StoredFile:
        e = self.frame(index)
        if not 1 <= lod <= len(e.lods):
            raise IndexError(f"frame {index} has levels of detail 0..{len(e.lods)}, asked {lod}")
        return e.lods[lod - 1]

    def points_version(self, index: int, lod: int = 0) -> str:
        """What frame ``index`` at level ``lod`` is made of, as a string that changes whenever
        its data does (the digests of its files; for a cache key or an ETag); KeyError/IndexError."""
        full = self.frame(index).points.xxh3_128
        return full if lod == 0 else f"{full}.{self._lod_file(index, lod).xxh3_128}"

    def lod_rows(self, index: int, lod: int) -> np.ndarray:
        """``(M,) uint32`` rows of the full table that make level ``lod`` (>= 1) of frame
        ``index``; FormatError for a file of the wrong size or rows not strictly increasing
        within the frame's points; KeyError/IndexError for a frame or level that is not there."""
        stored = self._lod_file(index, lod)
        path = self._file(stored)
        n = self.frame(index).n_points
        rows = np.fromfile(path, dtype="<u4").astype(np.uint32, copy=False)
        if not _increasing_below(rows, n):
            raise FormatError(path, None, f"strictly increasing uint32 rows below the frame's {n} points")
        return rows

    def points(self, index: int, lod: int = 0) -> pa.Table:
        """Frame ``index`` at level ``lod`` as an Arrow table: the full resolution memory-mapped
        (zero-copy), a level of detail gathered from it (:meth:`lod_rows`)."""
        if lod != 0:
            return take_rows(self.points(index), self.lod_rows(index, lod))
        full = self._file(self.frame(index).points)
        try:
            reader = ipc.open_file(pa.memory_map(str(full), "r"))
            table = reader.read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(full, None, f"an Arrow IPC file ({exc})") from None
        check_points_schema(table.schema, full)
        return table

    def image_path(self, index: int, camera: str) -> Path:
        """Path of frame ``index``'s JPEG for ``camera``; KeyError if there is none."""
        return self._file(self.frame(index).images[camera])

    def boxes(self, index: int) -> FrameBoxes | None:
        """The label boxes of frame ``index`` (None for an unlabelled frame); FormatError."""
        stored = self.frame(index).boxes
        if stored is None:
            return None
        full = self._file(stored)
        try:
            doc = json.loads(full.read_bytes())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(full, getattr(exc, "pos", None), f"a JSON boxes file ({exc})") from None
        return FrameBoxes.from_json(doc, full)


    def read_imported_labels(self) -> dict[str, Any] | None:
        """The log's label document (see the module docstring), None if the log had none;
        FormatError if the file is not the one the manifest records (size, digest) or not JSON."""
        stored = self.imported_labels
        if stored is None:
            return None
        full = self._file(stored)
        raw = full.read_bytes()
        if xxhash.xxh3_128(raw).hexdigest() != stored.xxh3_128:
            raise FormatError(full, None, "the XXH3-128 digest the manifest records")
        try:
            doc = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise FormatError(full, getattr(exc, "pos", None), "a JSON label document") from None
        if not isinstance(doc, dict):
            raise FormatError(full, 0, 'a label document {"tracks": [...]}')
        return doc


def _warmup() -> None:
    for dtype in (np.float64, np.float32):
        take_rows(points_table(np.zeros((2, 3), dtype)), np.array([1]))
