"""Writing a prepared scene: :class:`SceneWriter` (frames, their sidecars, the manifest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.camera import Camera
from engine.se3 import SE3
from formats.errors import FormatError
from formats.rig import Lidar, SceneOrigin, checked_name
from formats.scene_store.boxes import FrameBoxes
from formats.scene_store.durable import FileData, atomic_write, digest_file, fsync_dir, make_durable, replace_files
from formats.scene_store.manifest import (
    IMPORTED_LABELS,
    MANIFEST,
    FrameEntry,
    PassiveLayer,
    StoredFile,
    entry_from_json,
    entry_to_json,
    file_to_json,
    header_to_json,
    passive_to_json,
    read_manifest,
)
from formats.scene_store.passive import PassiveRecord, passive_table
from formats.scene_store.points import check_points_schema, checked_lod_rows, column_values
from formats.scene_store.radar import RADAR_TYPES, check_radar_schema


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
        radars: Sequence[Lidar] = (),
    ) -> None:
        self.dir = Path(scene_dir).resolve()
        self.durable = bool(durable)
        manifest = self.dir / MANIFEST
        checked_name(scene_id, manifest, "scene_id")
        names = [l.name for l in lidars] + [c.name for c in cameras] + [r.name for r in radars]
        for nm in names:
            checked_name(nm, manifest, "sensor name")
        if len(set(names)) != len(names):
            raise ValueError(f"sensor names must be unique, got {names}")
        if len(lidars) > 256 or len(radars) > 256:
            raise ValueError(f"at most 256 lidars and 256 radars (sensor_id is uint8), got {len(lidars)} and "
                             f"{len(radars)}")
        self.n_radars = len(radars)
        self.cameras = {c.name: c for c in cameras}
        self.header = header_to_json(scene_id, origin, lidars, cameras, radars)
        if manifest.exists():
            existing = read_manifest(self.dir)
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
        radar: pa.Table | None = None,
    ) -> FrameEntry:
        """Write one frame's files atomically, then its sidecar; returns its entry as the
        sidecar records it (with the digest of every file, computed from the bytes written).

        ``points`` must follow the point schema (build it with :func:`points_table`); ``lods``
        are the levels 1, 2, ... (coarser and coarser), each a ``(M,)`` integer array of rows
        of ``points``, strictly increasing (e.g. :func:`engine.voxel.first_points_levels`).
        ``images`` maps camera name → JPEG bytes; ``image_timestamps_ns`` defaults to
        ``timestamp_ns`` per camera. ``boxes``
        (a labelled frame) is written as the frame's boxes file; a ``box_id`` column must index
        it. ``radar`` (a frame with radar scans) is written as the frame's radar file; build it
        with :func:`formats.scene_store.radar.radar_table` (``sensor_id`` indexes the radars).
        Rewriting a finished frame first removes its sidecar, so an interruption leaves it
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
        if radar is not None:
            self._check_radar(index, radar)
        levels = [checked_lod_rows(rows, len(points), level) for level, rows in enumerate(lods, start=1)]
        self._sidecar(index).unlink(missing_ok=True)
        stem = f"{index:06d}"
        files: list[tuple[str, FileData]] = [(f"frames/{stem}.arrow", points)]
        files += [(f"frames/{stem}.lod{level}.rows", rows) for level, rows in enumerate(levels, start=1)]
        files += [(f"frames/{stem}.{cam}.jpg", data) for cam, data in images.items()]
        if boxes is not None:
            files.append((f"frames/{stem}.boxes.json", boxes.to_json_text().encode()))
        if radar is not None:
            files.append((f"frames/{stem}.radar.arrow", radar))
        dirs = sorted({(self.dir / rel).parent for rel, _ in files})
        for d in dirs:
            d.mkdir(parents=True, exist_ok=True)
        stored = {rel: StoredFile(rel, f.bytes, f.xxh3_128)
                  for (rel, _), f in zip(files, replace_files([(self.dir / rel, data) for rel, data in files],
                                                               self.durable))}
        if self.durable:
            for d in dirs:  # the renames are durable before the sidecar names them
                fsync_dir(d)
        entry = FrameEntry(
            index=index, timestamp_ns=int(timestamp_ns), world_from_ego=world_from_ego,
            n_points=len(points), points=stored[files[0][0]],
            lods=tuple(stored[rel] for rel, _ in files[1:1 + len(levels)]),
            lod_points=tuple(len(r) for r in levels),
            images={cam: stored[f"frames/{stem}.{cam}.jpg"] for cam in images},
            image_timestamps_ns={c: int(stamps.get(c, timestamp_ns)) for c in images},
            boxes=None if boxes is None else stored[f"frames/{stem}.boxes.json"],
            radar=None if radar is None else stored[f"frames/{stem}.radar.arrow"],
            n_radar_points=0 if radar is None else len(radar),
        )
        side = self._sidecar(index)
        text = json.dumps(entry_to_json(entry))
        atomic_write(side, text.encode(), durable=self.durable)
        # as a resumed job reads it back: the manifest depends on the sidecar's bytes only
        return entry_from_json(json.loads(text), side)

    def _check_radar(self, index: int, radar: pa.Table) -> None:
        """ValueError unless ``radar`` is a radar table whose ``sensor_id`` indexes the radars."""
        if not isinstance(radar, pa.Table):
            raise ValueError(f"radar must be a pyarrow.Table, got {type(radar).__name__}")
        try:
            check_radar_schema(radar.schema, f"<frame {index} radar>")
        except FormatError as exc:
            raise ValueError(str(exc)) from None
        ids = column_values(radar, "sensor_id", RADAR_TYPES)
        if len(ids) and ids.max() >= self.n_radars:
            raise ValueError(f"radar sensor_id must be below the scene's {self.n_radars} radars, found {ids.max()}")

    def _entries(self, verify: Literal["size", "digest"], skip: frozenset[int] | set[int] = frozenset()
                 ) -> dict[int, FrameEntry]:
        out = {}
        for side in sorted((self.dir / "frames").glob("[0-9]" * 6 + ".json")):
            if int(side.stem) in skip:
                continue
            try:
                entry = entry_from_json(json.loads(side.read_bytes()), side)
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
        return verify == "size" or digest_file(path) == f.xxh3_128

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
                 imported_labels: Mapping[str, Any] | None = None,
                 passive: Sequence[PassiveRecord] = ()) -> list[FrameEntry]:
        """Rewrite ``scene.json`` atomically and durably listing every finished frame; returns
        them. The commit point: the files of the frames it lists are fsynced first.

        ``known``: entries the caller wrote (``write_frame``'s return value) or verified
        (``finished_entries``) itself; they are listed as given, every other sidecar is
        verified. ``imported_labels``: the log's label document, written as
        ``labels.imported.json`` and listed in the manifest (see the module docstring).
        ``passive``: the hydrophone arrays' bearing-time records, written as ``passive/NAME.arrow``
        (:mod:`formats.scene_store.passive`) and listed as ``passive``.
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
            extra["imported_labels"] = file_to_json(StoredFile(IMPORTED_LABELS, stored.bytes, stored.xxh3_128))
            files.append(self.dir / IMPORTED_LABELS)
        if len({r.array for r in passive}) != len(passive):
            raise ValueError(f"one passive layer per array, got {[r.array for r in passive]}")
        layers = []
        for record in passive:
            rel = f"passive/{checked_name(record.array, self.dir / MANIFEST, 'passive array')}.arrow"
            stored = atomic_write(self.dir / rel, passive_table(record), durable=False)
            layers.append(PassiveLayer(record.array, StoredFile(rel, stored.bytes, stored.xxh3_128),
                                       len(record.times_ns)))
            files.append(self.dir / rel)
        if layers:
            extra["passive"] = [passive_to_json(p) for p in layers]
        make_durable(self.dir, files)
        doc = dict(self.header, frames=[entry_to_json(e) for e in entries], **extra)
        atomic_write(self.dir / MANIFEST, json.dumps(doc, indent=1).encode())
        return entries
