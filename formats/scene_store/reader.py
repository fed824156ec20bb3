"""Reading a prepared scene: :class:`Scene` (manifest validated; point files memory-mapped)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import xxhash

from engine.camera import Camera
from engine.pose_track import PoseTrack
from formats.errors import FormatError
from formats.rig import Lidar, SceneOrigin
from formats.scene_store.boxes import FrameBoxes
from formats.scene_store.manifest import (
    MANIFEST,
    FrameEntry,
    PassiveLayer,
    StoredFile,
    entry_from_json,
    header_from_json,
    read_manifest,
)
from formats.scene_store.passive import PassiveRecord, read_passive
from formats.scene_store.points import check_points_schema, increasing_below, take_rows, with_xyz
from formats.scene_store.radar import check_radar_schema, radar_with_xyz


def _inside(root: Path, rel: str, manifest: Path) -> Path:
    """``root / rel`` resolved (symlinks followed); FormatError if it leaves ``root``."""
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise FormatError(manifest, None, f"a file inside the scene directory, {rel!r} resolves to {full}")
    return full


@dataclass(frozen=True, eq=False)
class Scene:
    """A prepared scene opened for reading (manifest parsed; point files mapped on demand).

    Attributes:
        dir: the resolved scene directory. scene_id: its id. origin: :class:`SceneOrigin`.
        lidars: :class:`Lidar` list (``sensor_id`` = position). cameras: name → ``Camera``.
        frames: :class:`FrameEntry` list sorted by index. manifest_digest: XXH3-128 (hex) of
        ``scene.json``. imported_labels: the log's label document file, or None.
        radars: the radars as :class:`Lidar` entries (name, extrinsic; ``sensor_id`` of the
        radar tables = position).
        passive: the hydrophone arrays' bearing-time record files (:meth:`passive_record`).
    """

    dir: Path
    scene_id: str
    origin: SceneOrigin
    lidars: tuple[Lidar, ...]
    cameras: Mapping[str, Camera]
    frames: tuple[FrameEntry, ...]
    manifest_digest: str
    imported_labels: StoredFile | None = None
    radars: tuple[Lidar, ...] = ()
    passive: tuple[PassiveLayer, ...] = ()

    @staticmethod
    def open(scene_dir: str | os.PathLike) -> "Scene":
        """Parse and validate ``scene_dir/scene.json``; raises :class:`FormatError`."""
        root = Path(scene_dir).resolve()
        doc = read_manifest(root)
        path = root / MANIFEST
        head = header_from_json(doc, path)
        try:
            frames = tuple(sorted((entry_from_json(f, path) for f in doc["frames"]), key=lambda e: e.index))
        except (KeyError, TypeError) as exc:
            raise FormatError(path, None, f"a list of frames ({type(exc).__name__}: {exc})") from None
        if len({f.index for f in frames}) != len(frames):
            raise FormatError(path, None, "unique frame indices")
        stamps = [f.timestamp_ns for f in frames]
        if any(b <= a for a, b in zip(stamps, stamps[1:])):
            raise FormatError(path, None, "frame timestamps strictly increasing with the index")
        for f in frames:
            for cam in f.images:
                if cam not in head.cameras:
                    raise FormatError(path, None, f"frame {f.index}: images only for declared cameras, found {cam!r}")
            for sf in f.files():
                _inside(root, sf.file, path)
        for stored in [head.imported_labels] + [p.file for p in head.passive]:
            if stored is not None:
                _inside(root, stored.file, path)
        return Scene(root, head.scene_id, head.origin, head.lidars, head.cameras, frames,
                     xxhash.xxh3_128(path.read_bytes()).hexdigest(), head.imported_labels, head.radars, head.passive)

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
        if not increasing_below(rows, n):
            raise FormatError(path, None, f"strictly increasing uint32 rows below the frame's {n} points")
        return rows

    def stored_points(self, index: int, lod: int = 0) -> pa.Table:
        """Frame ``index`` at level ``lod`` as stored (:func:`points_table`'s schema: quantised
        positions, each column in its own type): the full resolution memory-mapped (zero-copy),
        a level of detail gathered from it (:meth:`lod_rows`)."""
        if lod != 0:
            return take_rows(self.stored_points(index), self.lod_rows(index, lod))
        full = self._file(self.frame(index).points)
        try:
            reader = ipc.open_file(pa.memory_map(str(full), "r"))
            table = reader.read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(full, None, f"an Arrow IPC file ({exc})") from None
        check_points_schema(table.schema, full)
        return table

    def points(self, index: int, lod: int = 0) -> pa.Table:
        """:meth:`stored_points` with float32 ``x y z`` in front (:func:`with_xyz`: the float32
        nearest to ``offset + q * scale``, metres, world frame relative to the scene origin)."""
        return with_xyz(self.stored_points(index, lod))

    def stored_radar(self, index: int) -> pa.Table | None:
        """Frame ``index``'s radar returns as stored (:mod:`formats.scene_store.radar`: quantised
        world positions, velocities, RCS, radar id, scan time), memory-mapped; None for a frame
        without radar scans. FormatError for a file that is not a radar table; KeyError."""
        stored = self.frame(index).radar
        if stored is None:
            return None
        full = self._file(stored)
        try:
            table = ipc.open_file(pa.memory_map(str(full), "r")).read_all()
        except (pa.ArrowInvalid, OSError) as exc:
            raise FormatError(full, None, f"an Arrow IPC file ({exc})") from None
        check_radar_schema(table.schema, full)
        return table

    def radar(self, index: int) -> pa.Table | None:
        """:meth:`stored_radar` with float32 ``x y z`` in front (world frame, scene origin:
        the float32 nearest to ``offset + q * scale``); None for a frame without radar."""
        table = self.stored_radar(index)
        return None if table is None else radar_with_xyz(table)

    def passive_record(self, array: str) -> PassiveRecord:
        """The bearing-time record of hydrophone array ``array`` (:mod:`formats.scene_store.passive`,
        memory-mapped); KeyError for an array the scene has no layer of, FormatError naming the
        file for one that is not the layer the manifest lists (size, array, rows, layout)."""
        layer = next((p for p in self.passive if p.array == array), None)
        if layer is None:
            raise KeyError(array)
        full = self._file(layer.file)
        record = read_passive(full)
        if (record.array, len(record.times_ns)) != (layer.array, layer.rows):
            raise FormatError(full, None, f"array {layer.array!r} with {layer.rows} rows as the manifest records, "
                                          f"found {record.array!r} with {len(record.times_ns)}")
        return record

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
