"""The scene manifest: ``scene.json``'s header and frame entries, as types and JSON.

The layouts are in the package docstring (:mod:`formats.scene_store`); the rig parts (origin,
LiDAR, camera, pose) are :mod:`formats.rig`'s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from engine.camera import Camera
from engine.se3 import SE3
from formats.errors import FormatError
from formats.rig import (
    Lidar,
    SceneOrigin,
    camera_from_json,
    camera_to_json,
    checked_name,
    lidar_from_json,
    lidar_to_json,
    pose_from_json,
    pose_to_json,
)

FORMAT_NAME = "fathom-scene"
FORMAT_VERSION = 3
# what each older version stored differently; a scene of one is refused with this and the advice
OLDER_VERSIONS = {
    1: "with SHA-256 digests",
    2: "with float32 x y z columns beside the quantised positions",
}
MANIFEST = "scene.json"
IMPORTED_LABELS = "labels.imported.json"


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
        radar: the radar file (:mod:`formats.scene_store.radar`), None for a frame without
        radar scans. n_radar_points: its rows.
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
    radar: StoredFile | None = None
    n_radar_points: int = 0

    def files(self) -> list[StoredFile]:
        return [self.points, *self.lods, *self.images.values(), *([self.boxes] if self.boxes else []),
                *([self.radar] if self.radar else [])]


@dataclass(frozen=True)
class PassiveLayer:
    """A hydrophone array's bearing-time record file (:mod:`formats.scene_store.passive`) and its rows."""

    array: str
    file: StoredFile
    rows: int


@dataclass(frozen=True)
class SceneHeader:
    """What ``scene.json`` says besides its frames (parsed by :func:`header_from_json`)."""

    scene_id: str
    origin: SceneOrigin
    lidars: tuple[Lidar, ...]
    cameras: Mapping[str, Camera]
    imported_labels: StoredFile | None
    radars: tuple[Lidar, ...] = ()
    passive: tuple[PassiveLayer, ...] = ()


def read_manifest(scene_dir: Path) -> dict[str, Any]:
    """``scene_dir/scene.json`` as JSON, checked to be this format and version (FormatError;
    an older version's message says to prepare the log again)."""
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
    if version in OLDER_VERSIONS:
        raise FormatError(path, None, f'"version": {FORMAT_VERSION}, found {version} (a scene of an older Fathom, '
                          f"{OLDER_VERSIONS[version]}): prepare the log again into a new directory")
    if version != FORMAT_VERSION:
        raise FormatError(path, None, f'"version": {FORMAT_VERSION}, found {version!r}')
    return doc


def file_to_json(f: StoredFile) -> dict[str, Any]:
    return {"file": f.file, "bytes": f.bytes, "xxh3_128": f.xxh3_128}


def file_from_json(d: Any, path: Path) -> StoredFile:
    """A file entry; FormatError unless complete and a relative path that stays inside the scene."""
    try:
        f = StoredFile(str(d["file"]), int(d["bytes"]), str(d["xxh3_128"]))
    except (KeyError, TypeError, ValueError):
        raise FormatError(path, None, f"a file entry {{file, bytes, xxh3_128}}, got {d!r}") from None
    if Path(f.file).is_absolute() or ".." in Path(f.file).parts or "\\" in f.file:
        raise FormatError(path, None, f"a relative path inside the scene, got {f.file!r}")
    return f


def passive_to_json(layer: PassiveLayer) -> dict[str, Any]:
    return dict(file_to_json(layer.file), array=layer.array, rows=layer.rows)


def passive_from_json(d: Any, path: Path) -> PassiveLayer:
    """A ``passive`` entry of the manifest; FormatError unless complete with a valid array name."""
    try:
        return PassiveLayer(checked_name(d["array"], path, "passive array"), file_from_json(d, path), int(d["rows"]))
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        want = f"a passive entry {{array, file, bytes, xxh3_128, rows}}, got {d!r}"
        raise FormatError(path, None, want[:300]) from None


def entry_to_json(e: FrameEntry) -> dict[str, Any]:
    return {
        "index": e.index, "timestamp_ns": e.timestamp_ns, "world_from_ego": pose_to_json(e.world_from_ego),
        "n_points": e.n_points, "points": file_to_json(e.points),
        "lods": [dict(file_to_json(f), level=i + 1, n_points=n) for i, (f, n) in enumerate(zip(e.lods, e.lod_points))],
        "images": {c: dict(file_to_json(f), timestamp_ns=e.image_timestamps_ns[c]) for c, f in e.images.items()},
        **({"boxes": file_to_json(e.boxes)} if e.boxes is not None else {}),
        **({"radar": dict(file_to_json(e.radar), n_points=e.n_radar_points)} if e.radar is not None else {}),
    }


def entry_from_json(d: Any, path: Path) -> FrameEntry:
    """A frame entry (manifest or sidecar ``path``); FormatError naming what is wrong."""
    try:
        lods = sorted(d.get("lods", []), key=lambda x: int(x["level"]))
        if [int(x["level"]) for x in lods] != list(range(1, len(lods) + 1)):
            raise FormatError(path, None, f"frame {d.get('index')}: lod levels 1..n")
        return FrameEntry(
            index=int(d["index"]), timestamp_ns=int(d["timestamp_ns"]),
            world_from_ego=pose_from_json(d["world_from_ego"], path, f"frame {d['index']} world_from_ego"),
            n_points=int(d["n_points"]), points=file_from_json(d["points"], path),
            lods=tuple(file_from_json(x, path) for x in lods),
            lod_points=tuple(int(x["n_points"]) for x in lods),
            images={checked_name(c, path, "camera name"): file_from_json(f, path)
                    for c, f in d.get("images", {}).items()},
            image_timestamps_ns={c: int(f["timestamp_ns"]) for c, f in d.get("images", {}).items()},
            boxes=None if d.get("boxes") is None else file_from_json(d["boxes"], path),
            radar=None if d.get("radar") is None else file_from_json(d["radar"], path),
            n_radar_points=0 if d.get("radar") is None else int(d["radar"]["n_points"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a valid frame entry ({type(exc).__name__}: {exc})") from None


def header_to_json(scene_id: str, origin: SceneOrigin, lidars: Sequence[Lidar], cameras: Sequence[Camera],
                   radars: Sequence[Lidar] = ()) -> dict[str, Any]:
    """The manifest without its frames (``format``, ``version``, ``scene_id``, ``origin``,
    ``sensors``; ``sensors.radars`` only when there are radars, entries like the LiDARs')."""
    geo = origin.geodetic
    return {
        "format": FORMAT_NAME, "version": FORMAT_VERSION, "scene_id": scene_id,
        "origin": {
            "enu_offset_m": list(origin.enu_offset_m),
            "geodetic": None if geo is None else {"lat_deg": geo[0], "lon_deg": geo[1], "alt_m": geo[2]},
        },
        "sensors": {
            "lidars": [lidar_to_json(l, i) for i, l in enumerate(lidars)],
            "cameras": [camera_to_json(c) for c in cameras],
            **({"radars": [lidar_to_json(r, i) for i, r in enumerate(radars)]} if radars else {}),
        },
    }


def header_from_json(doc: Mapping[str, Any], path: Path) -> SceneHeader:
    """The header of a manifest read by :func:`read_manifest`; FormatError naming what is wrong."""
    try:
        org = doc["origin"]
        geo = org.get("geodetic")
        origin = SceneOrigin(
            tuple(org["enu_offset_m"]),
            None if geo is None else (geo["lat_deg"], geo["lon_deg"], geo["alt_m"]),
        )
        sensors = doc["sensors"]
        lidars = tuple(lidar_from_json(l, path, f"sensors.lidars[{i}]") for i, l in enumerate(sensors["lidars"]))
        cameras = {c.name: c for c in (camera_from_json(c, path) for c in sensors["cameras"])}
        radars = tuple(lidar_from_json(r, path, f"sensors.radars[{i}]")
                       for i, r in enumerate(sensors.get("radars", [])))
        imported = doc.get("imported_labels")
        passive = tuple(passive_from_json(p, path) for p in doc.get("passive", []))
        if len({p.array for p in passive}) != len(passive):
            raise FormatError(path, None, "passive layers of distinct arrays")
        return SceneHeader(checked_name(doc["scene_id"], path, "scene_id"), origin, lidars, cameras,
                           None if imported is None else file_from_json(imported, path), radars, passive)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a valid scene header ({type(exc).__name__}: {exc})") from None
