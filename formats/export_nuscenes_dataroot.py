"""A prepared scene (:class:`formats.scene_store.Scene`) and label tracks as a nuScenes DATAROOT
that nuscenes-devkit loads (``NuScenes(version=..., dataroot=...)``) and renders::

    NOTES.txt                 what was exported: frames, category mapping, lens caveats
    v1.0-fathom/*.json        the tables (:func:`formats.export_nuscenes.nuscenes_tables`), one sample per frame
    samples/<LIDAR>/<scene>-<frame>__<LIDAR>__<µs>.pcd.bin   float32 x y z intensity ring,
                              LiDAR frame at the frame time (the devkit's LidarPointCloud.from_file)
    samples/<CAM>/<scene>-<frame>__<CAM>__<µs>.jpg           the stored JPEG bytes
    maps/fathom-blank.png     a 1-pixel empty semantic prior (the devkit's map underlay)

The global frame is the scene's world frame (ENU relative to the scene origin). Every frame
is a key frame, so there are no sweeps (no ``sweeps/``). ``render_sample_data``'s map
underlay is blank (nuscenes-devkit on NumPy 2 fails in it regardless of the map: pass
``underlay_map=False``). Files are produced one frame at a time (:meth:`NuScenesSceneExport.files`),
for a directory (:func:`write_nuscenes_dataroot`) or a streamed archive.
"""

from __future__ import annotations

import json
import os
import re
import struct
import zlib
from collections.abc import Sequence as SequenceABC
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping, Sequence

import numpy as np
import pyarrow as pa

from engine.cuboid import CuboidTrack
from formats.categories import NUSCENES, Unmapped
from formats.export_nuscenes import NuScenesSensorFiles, lens_notes, nuscenes_tables, us_from_ns
from formats.nuscenes import pcd_bin_bytes
from formats.scene_store import Scene, column_values

MAP_MASK = "maps/fathom-blank.png"


def _blank_png() -> bytes:
    """A 1×1 8-bit grey PNG of value 0: a semantic-prior mask with no foreground."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b""))


def _world_xyz(table: pa.Table) -> np.ndarray:
    """``(N, 3) float64`` positions of a stored point table (world frame, scene origin)."""
    return np.column_stack([column_values(table, c) for c in "xyz"]).astype(np.float64)


class ScenePoints(SequenceABC):
    """The points of a prepared scene's frames (by position in ``scene.frames``) as ``(N, 3)
    float64``, in the world frame (relative to the scene origin) or in each frame's ego frame;
    read from the store when indexed, so one frame is in memory at a time."""

    def __init__(self, scene: Scene, frame: Literal["world", "ego"] = "world"):
        self.scene, self.frame = scene, frame

    def __len__(self) -> int:
        return len(self.scene.frames)

    def __getitem__(self, i: int) -> np.ndarray:
        entry = self.scene.frames[i]
        xyz = _world_xyz(self.scene.points(entry.index))
        return xyz if self.frame == "world" else entry.world_from_ego.inverse().apply(xyz)


def lidar_sample_bytes(scene: Scene, position: int, lidar: int) -> bytes:
    """The nuScenes ``.pcd.bin`` of ``scene.lidars[lidar]`` in frame ``scene.frames[position]``:
    little-endian float32 records ``x y z intensity ring`` (0 for a column the scene lacks),
    positions in the LiDAR frame at the frame time, ``(world_from_ego @ ego_from_sensor)⁻¹``
    of the stored world points (motion-compensated by prepare). A frame without ``sensor_id``
    gives all its points to LiDAR 0."""
    entry = scene.frames[position]
    table = scene.points(entry.index)
    names = table.schema.names
    n = table.num_rows
    rows = (column_values(table, "sensor_id") == lidar if "sensor_id" in names
            else np.full(n, lidar == 0))
    lidar_from_world = (entry.world_from_ego @ scene.lidars[lidar].ego_from_sensor).inverse()
    intensity, ring = (column_values(table, c)[rows] if c in names else None for c in ("intensity", "ring"))
    return pcd_bin_bytes(lidar_from_world.apply(_world_xyz(table)[rows]), intensity, ring)


def scene_sensor_files(scene: Scene) -> list[NuScenesSensorFiles]:
    """One channel per LiDAR (a file every frame) and per camera (a file where the frame has its
    image), named as nuScenes names them: ``samples/<ch>/<scene>-<frame>__<ch>__<µs>.pcd.bin``
    / ``.jpg`` (the frame number keeps names unique)."""
    def name(f, ch: str, t_ns: int, ext: str) -> str:
        return f"samples/{ch}/{scene.scene_id}-{f.index:06d}__{ch}__{us_from_ns(t_ns)}.{ext}"

    sensors = [NuScenesSensorFiles(l.name, l.ego_from_sensor,
                                   [(name(f, l.name, f.timestamp_ns, "pcd.bin"), f.timestamp_ns) for f in scene.frames])
               for l in scene.lidars]
    return sensors + [NuScenesSensorFiles(c, cam.ego_from_camera, [
        (name(f, c, f.image_timestamps_ns[c], "jpg"), f.image_timestamps_ns[c]) if c in f.images else None
        for f in scene.frames], camera=cam) for c, cam in scene.cameras.items()]


@dataclass(frozen=True, eq=False)
class NuScenesSceneExport:
    """A prepared scene as a nuScenes DATAROOT (:func:`nuscenes_scene_export`).

    Attributes:
        scene, version: the scene and the tables' directory name. tables: the records.
        sensors: the channels (:func:`scene_sensor_files`). notes: the lines of ``NOTES.txt``.
        complete: whether :meth:`files` yields the sample files.
    """

    scene: Scene
    version: str
    tables: dict[str, list[dict]]
    sensors: tuple[NuScenesSensorFiles, ...]
    notes: tuple[str, ...]
    complete: bool

    def files(self) -> Iterator[tuple[str, bytes]]:
        """``(path relative to DATAROOT, bytes)``: ``NOTES.txt``, ``VERSION/*.json``, the blank
        map mask, then (complete) frame by frame each LiDAR's ``.pcd.bin`` and each camera's
        JPEG as stored — one frame's data in memory at a time."""
        yield "NOTES.txt", "".join(line + "\n" for line in self.notes).encode()
        for name, records in self.tables.items():
            yield f"{self.version}/{name}.json", json.dumps(records, allow_nan=False).encode()
        yield MAP_MASK, _blank_png()
        if not self.complete:
            return
        for i, entry in enumerate(self.scene.frames):
            for k, s in enumerate(self.sensors):  # the LiDARs first, in scene.lidars order
                if s.files[i] is not None:
                    yield s.files[i][0], (lidar_sample_bytes(self.scene, i, k) if s.camera is None
                                          else self.scene.image_path(entry.index, s.channel).read_bytes())


def nuscenes_scene_export(
    scene: Scene,
    tracks: Sequence[CuboidTrack],
    *,
    version: str = "v1.0-fathom",
    categories: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    complete: bool = True,
) -> NuScenesSceneExport:
    """The tables of ``tracks`` (scene frame) on a prepared scene, one sample per frame
    (:func:`nuscenes_tables` with the estimates from each frame's points, ego poses
    extrapolated linearly for images past the last frame), ready to write. ``complete``:
    with the sample files (:func:`lidar_sample_bytes`, the stored JPEGs). Errors as
    :func:`nuscenes_tables` (unmapped categories first), ValueError for a ``version`` that is
    not a plain directory name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", version):
        raise ValueError(f"version must be a plain directory name like 'v1.0-fathom', got {version!r}")
    names = NUSCENES.resolve((t.category for t in tracks), categories, unmapped)
    sensors = scene_sensor_files(scene)
    tables = nuscenes_tables(tracks, np.array([f.timestamp_ns for f in scene.frames], np.int64),
                             scene.world_from_ego(), sensors, scene_name=scene.scene_id, categories=categories,
                             unmapped=unmapped, lidar_points=ScenePoints(scene), extrapolate="linear",
                             map_filename=MAP_MASK)
    notes = [
        f"Fathom nuScenes export of scene {scene.scene_id}: tables in {version}/, "
        + ("sample files in samples/." if complete else "the samples/ files they name are not included."),
        "Every frame is a sample (key frame): there are no sweeps (no sweeps/ directory).",
        f"Global frame: the scene's world frame, ENU metres relative to {list(scene.origin.enu_offset_m)}"
        + ("" if scene.origin.geodetic is None else f" (lat, lon, alt {list(scene.origin.geodetic)})") + ".",
        f"{MAP_MASK}: a blank 1-pixel semantic-prior mask so the devkit's map underlay draws; no map data.",
        *(f"category {k!r} -> {v!r}" if v else f"category {k!r}: dropped" for k, v in sorted(names.items())),
        *lens_notes(sensors),
    ]
    return NuScenesSceneExport(scene, version, tables, tuple(sensors), tuple(notes), complete)


def write_nuscenes_dataroot(
    dataroot: str | os.PathLike,
    scene: Scene,
    tracks: Sequence[CuboidTrack],
    *,
    version: str = "v1.0-fathom",
    categories: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    complete: bool = True,
) -> Path:
    """Write :func:`nuscenes_scene_export` (same keywords) under ``dataroot`` (created; files
    there are replaced); returns it. Load with ``NuScenes(version=version, dataroot=dataroot)``."""
    export = nuscenes_scene_export(scene, tracks, version=version, categories=categories, unmapped=unmapped,
                                   complete=complete)
    root = Path(dataroot)
    for rel, data in export.files():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root
