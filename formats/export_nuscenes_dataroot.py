"""A prepared scene (:class:`formats.scene_store.Scene`) and label tracks as a nuScenes DATAROOT
that nuscenes-devkit loads (``NuScenes(version=..., dataroot=...)``) and renders::

    NOTES.txt                 what was exported: frames, category mapping, lens caveats
    v1.0-fathom/*.json        the tables (:func:`formats.export_nuscenes.nuscenes_tables`), one sample per frame
    samples/<LIDAR>/<scene>-<frame>__<LIDAR>__<µs>.pcd.bin   float32 x y z intensity ring,
                              LiDAR frame at the frame time (the devkit's LidarPointCloud.from_file)
    samples/<CAM>/<scene>-<frame>__<CAM>__<µs>.jpg           the stored JPEG bytes
    samples/<RADAR>/<scene>-<frame>__<RADAR>__<µs>.pcd       nuScenes radar PCD (formats.radar), the
                              radar frame at the scan's time (the devkit's RadarPointCloud.from_file)
    maps/fathom-blank.png     a 1-pixel empty semantic prior (the devkit's map underlay)

The global frame is the scene's world frame (ENU relative to the scene origin). Every frame
is a key frame, so there are no sweeps (no ``sweeps/``). A radar's sample_data carries its scan
time and the ego pose there (the scene's frame poses, interpolated or continued linearly);
its file holds the frame's returns of that radar moved into the radar frame by that pose, so
the devkit puts them back where the scene has them. ``vx vy`` / ``vx_comp vy_comp`` are the
measured / compensated radial velocities along the line of sight in the radar's x-y plane. ``render_sample_data``'s map
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
from typing import Iterator, Literal, Mapping, Sequence, overload

import numpy as np
import pyarrow as pa

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation
from engine.radar import RadarSweep
from engine.se3 import SE3
from formats.categories import NUSCENES, Unmapped
from formats.export_nuscenes import NuScenesSensorFiles, lens_notes, nuscenes_tables, us_from_ns
from formats.nuscenes import pcd_bin_bytes
from formats.radar import nuscenes_radar_bytes
from formats.scene_store import Scene, column_values, positions
from formats.scene_store.radar import RADAR_TYPES

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
    """The points (or, with ``radar``, the radar returns: ``(0, 3)`` for a frame without) of a
    prepared scene's frames (by position in ``scene.frames``) as ``(N, 3) float64``, in the
    world frame (relative to the scene origin) or in each frame's ego frame; read from the
    store when indexed, so one frame is in memory at a time."""

    def __init__(self, scene: Scene, frame: Literal["world", "ego"] = "world", radar: bool = False):
        self.scene, self.frame, self.radar = scene, frame, radar

    def __len__(self) -> int:
        return len(self.scene.frames)

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[k] for k in range(len(self))[i]]
        entry = self.scene.frames[i]
        if self.radar:
            table = self.scene.stored_radar(entry.index)
            xyz = np.zeros((0, 3)) if table is None else positions(table)
        else:
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


def _radar_rows(scene: Scene, position: int, radar: int) -> tuple[int, dict[str, np.ndarray]] | None:
    """``(scan time ns, world positions and the stored columns of its rows)`` of ``radar``'s
    returns in frame ``scene.frames[position]``; None where the frame has none of it."""
    entry = scene.frames[position]
    table = scene.stored_radar(entry.index)
    if table is None:
        return None
    rows = np.flatnonzero(column_values(table, "sensor_id", RADAR_TYPES) == radar)
    if not len(rows):
        return None
    cols = {n: column_values(table, n, RADAR_TYPES)[rows] for n in RADAR_TYPES if n not in ("xq", "yq", "zq")}
    cols["xyz"] = positions(table)[rows]
    return entry.timestamp_ns + int(cols["time_offset_ns"][0]), cols


def _scan_pose(scene: Scene, t_ns: int, radar: int) -> SE3:
    """``world_from_radar`` at ``t_ns``: the scene's frame poses, interpolated or continued linearly."""
    return scene.world_from_ego().at(t_ns, "linear") @ scene.radars[radar].ego_from_sensor


def radar_sample_bytes(scene: Scene, position: int, radar: int) -> bytes:
    """The nuScenes radar ``.pcd`` of ``scene.radars[radar]`` in frame ``scene.frames[position]``
    (:func:`formats.radar.nuscenes_radar_bytes`): its returns in the radar frame at the scan
    time (:func:`_scan_pose`), measured and compensated radial velocities, RCS. ValueError
    when the frame has none of that radar's returns."""
    found = _radar_rows(scene, position, radar)
    if found is None:
        raise ValueError(f"frame {scene.frames[position].index} has no returns of radar {radar}")
    t_ns, cols = found
    local = _scan_pose(scene, t_ns, radar).inverse().apply(cols["xyz"])
    sweep = RadarSweep(local, cols["radial_velocity_mps"], cols["rcs_dbsm"], t_ns)
    return nuscenes_radar_bytes(sweep, cols["radial_velocity_comp_mps"])


def scene_sensor_files(scene: Scene) -> list[NuScenesSensorFiles]:
    """One channel per LiDAR (a file every frame), per camera (a file where the frame has its
    image) and per radar (a file where the frame has its returns, at the scan time), named as
    nuScenes names them: ``samples/<ch>/<scene>-<frame>__<ch>__<µs>.pcd.bin`` / ``.jpg`` /
    ``.pcd`` (the frame number keeps names unique)."""
    def name(f, ch: str, t_ns: int, ext: str) -> str:
        return f"samples/{ch}/{scene.scene_id}-{f.index:06d}__{ch}__{us_from_ns(t_ns)}.{ext}"

    sensors = [NuScenesSensorFiles(l.name, l.ego_from_sensor,
                                   [(name(f, l.name, f.timestamp_ns, "pcd.bin"), f.timestamp_ns) for f in scene.frames])
               for l in scene.lidars]
    sensors += [NuScenesSensorFiles(c, cam.ego_from_camera, [
        (name(f, c, f.image_timestamps_ns[c], "jpg"), f.image_timestamps_ns[c]) if c in f.images else None
        for f in scene.frames], camera=cam) for c, cam in scene.cameras.items()]
    for k, r in enumerate(scene.radars):
        scans = [_radar_rows(scene, i, k) for i in range(len(scene.frames))]
        sensors.append(NuScenesSensorFiles(r.name, r.ego_from_sensor, [
            None if scan is None else (name(f, r.name, scan[0], "pcd"), scan[0])
            for f, scan in zip(scene.frames, scans)], radar=True))
    return sensors


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
        map mask, then (complete) frame by frame each LiDAR's ``.pcd.bin``, each camera's
        JPEG as stored and each radar's ``.pcd`` — one frame's data in memory at a time."""
        yield "NOTES.txt", "".join(line + "\n" for line in self.notes).encode()
        for name, records in self.tables.items():
            yield f"{self.version}/{name}.json", json.dumps(records, allow_nan=False).encode()
        yield MAP_MASK, _blank_png()
        if not self.complete:
            return
        lidars = {l.name: k for k, l in enumerate(self.scene.lidars)}
        radars = {r.name: k for k, r in enumerate(self.scene.radars)}
        for i, entry in enumerate(self.scene.frames):
            for s in self.sensors:
                file = s.files[i]
                if file is None:
                    continue
                if s.camera is not None:
                    yield file[0], self.scene.image_path(entry.index, s.channel).read_bytes()
                elif s.radar:
                    yield file[0], radar_sample_bytes(self.scene, i, radars[s.channel])
                else:
                    yield file[0], lidar_sample_bytes(self.scene, i, lidars[s.channel])


def nuscenes_scene_export(
    scene: Scene,
    tracks: Sequence[CuboidTrack],
    *,
    version: str = "v1.0-fathom",
    categories: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    complete: bool = True,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> NuScenesSceneExport:
    """The tables of ``tracks`` (scene frame) on a prepared scene, one sample per frame
    (:func:`nuscenes_tables` with the estimates from each frame's points, ego poses
    extrapolated linearly for images past the last frame), ready to write. ``complete``:
    with the sample files (:func:`lidar_sample_bytes`, the stored JPEGs). ``interpolation``:
    the tracks' modes between keyframes, as :func:`nuscenes_tables` takes them. Errors as
    :func:`nuscenes_tables` (unmapped categories first), ValueError for a ``version`` that is
    not a plain directory name."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", version):
        raise ValueError(f"version must be a plain directory name like 'v1.0-fathom', got {version!r}")
    names = NUSCENES.resolve((t.category for t in tracks), categories, unmapped)
    sensors = scene_sensor_files(scene)
    tables = nuscenes_tables(tracks, np.array([f.timestamp_ns for f in scene.frames], np.int64),
                             scene.world_from_ego(), sensors, scene_name=scene.scene_id, categories=categories,
                             unmapped=unmapped, lidar_points=ScenePoints(scene),
                             radar_points=ScenePoints(scene, radar=True) if scene.radars else None,
                             extrapolate="linear", map_filename=MAP_MASK, interpolation=interpolation)
    notes = [
        f"Fathom nuScenes export of scene {scene.scene_id}: tables in {version}/, "
        + ("sample files in samples/." if complete else "the samples/ files they name are not included."),
        "Every frame is a sample (key frame): there are no sweeps (no sweeps/ directory).",
        f"Global frame: the scene's world frame, ENU metres relative to {list(scene.origin.enu_offset_m)}"
        + ("" if scene.origin.geodetic is None else f" (lat, lon, alt {list(scene.origin.geodetic)})") + ".",
        f"{MAP_MASK}: a blank 1-pixel semantic-prior mask so the devkit's map underlay draws; no map data.",
        *(["Radars: each radar's returns of a frame in its .pcd at the scan time (nuScenes' 18-field radar "
           "layout); vx_comp/vy_comp are Fathom's ego-motion compensation, the state fields defaults."]
          if scene.radars else []),
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
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> Path:
    """Write :func:`nuscenes_scene_export` (same keywords) under ``dataroot`` (created; files
    there are replaced); returns it. Load with ``NuScenes(version=version, dataroot=dataroot)``."""
    export = nuscenes_scene_export(scene, tracks, version=version, categories=categories, unmapped=unmapped,
                                   complete=complete, interpolation=interpolation)
    root = Path(dataroot)
    for rel, data in export.files():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root
