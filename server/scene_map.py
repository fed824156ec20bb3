"""The map of a whole prepared scene: every frame's deskewed world points in one octree per
layer (``fathom prepare --map``), served by ``server/routes/maps.py``.

Per frame, from the scene store (quantised world positions, already deskewed by ``prepare``):

1. ego-vehicle points removed: points inside ``ego_box`` (ego frame at the point's own
   firing time; :data:`engine.map_filter.DEFAULT_EGO_BOX`, a 5.2 × 2.2 × 2.1 m car around a
   rear-axle ego frame);
2. moving objects removed: with labels, the points inside a *moving* track's box (one whose
   keyframe centres span more than ``moving_threshold_m``: a parked car stays) at the point's
   own firing time (:func:`engine.moving_boxes.points_in_boxes_at_times`, boxes interpolated
   every ``moving_step_ns``, continued at constant velocity up to ``moving_extrapolate_ns``
   past a track's first and last keyframe, grown by ``moving_margin_m``: a car moves
   8 cm in a 5 ms step; keyframes set a second apart miss a turning car by decimetres more); without labels, the
   dynamic-point filter (:mod:`engine.map_dynamic`: voxels seen through more often than
   hit), which needs a first pass over the frames;
3. the rest pooled into the layer's octree (:mod:`formats.octree_build`), which merges
   duplicates per ``voxel_m`` voxel (mean position, colour and intensity, the count, the
   first and last frame index) and writes the levels of detail.

Layers: ``lidar`` (every point sensor but sonars), ``sonar`` (the sonar soundings: no ego box,
no moving objects). Layout, written last-to-commit::

    SCENE_DIR/map/map.json               the map manifest (below); absent until complete
    SCENE_DIR/map/LAYER/                 metadata.json, hierarchy.bin, octree.bin (formats.octree)
    SCENE_DIR/map/LAYER.copc.laz         the layer as COPC (formats.copc; with ``copc``)

``map.json``: ``{"format": "fathom-map", "version": 1, "scene_manifest_xxh3_128", "options",
"layers": {LAYER: {"points", "input_points", "removed": {"ego", "moving", "dynamic"},
"metadata_xxh3_128", "copc": {"file", "bytes", "xxh3_128"} | null}}}``. A build interrupted
anywhere resumes (the octree builder's pool and chunks, the dynamic filter's voxels kept in
``map/LAYER/.dynamic.npy``); a complete map whose scene has not changed is not rebuilt.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np

from engine.cuboid_interp import TrackTable, interpolate_tracks
from engine.map_dynamic import DynamicFilter, DynamicOptions
from engine.map_filter import DEFAULT_EGO_BOX, ego_and_origins, outside_box
from engine.map_octree import MAX_CELL_Q
from engine.moving_boxes import points_in_boxes_at_times
from engine.pose_track import PoseTrack
from formats.copc import write_copc
from formats.errors import FormatError
from formats.octree import METADATA
from formats.octree_build import OctreeBuilder, OctreeOptions
from formats.raw_log import RawLog
from formats.scene_store import Scene, atomic_write, column_values, quantisation
from formats.scene_store.durable import digest_file
from server.boxes import tracks_from_document

MAP_DIR, MAP_MANIFEST, MAP_FORMAT = "map", "map.json", "fathom-map"
LAYERS = ("lidar", "sonar")
SONAR_FORMATS = ("kmall",)  # raw-log point-sensor formats whose points are sonar soundings
Moving = Literal["auto", "labels", "filter", "off"]


@dataclass(frozen=True)
class MapOptions:
    """What the map keeps.

    Attributes:
        voxel_m: merge voxel (a multiple of the scene's 1 mm quantum).
        ego_box: ego-frame ``(lower, upper)`` corners of the ego vehicle (m); None keeps all.
        moving: ``labels`` (moving tracks' boxes), ``filter`` (the dynamic-point filter),
            ``auto`` (labels when the scene has them, else the filter) or ``off``.
        moving_threshold_m: a track whose keyframe centres span more than this moves.
        moving_margin_m, moving_step_ns, moving_extrapolate_ns: its boxes (module docstring).
        dynamic: the dynamic-point filter's parameters.
        octree: the octree's (its ``voxel_q`` and ``quantum_m`` are set from ``voxel_m``).
        copc: also write each layer as COPC.
    """

    voxel_m: float = 0.02
    ego_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = DEFAULT_EGO_BOX
    moving: Moving = "auto"
    moving_threshold_m: float = 0.5
    moving_margin_m: float = 0.1
    moving_step_ns: int = 5_000_000
    moving_extrapolate_ns: int = 200_000_000
    dynamic: DynamicOptions = field(default_factory=DynamicOptions)
    octree: OctreeOptions = field(default_factory=OctreeOptions)
    copc: bool = True


@dataclass
class MapSummary:
    """What a map build did, per layer: points in, removed (by reason), kept after merging."""

    scene_dir: Path
    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: bool = False

    def lines(self) -> list[str]:
        if self.skipped:
            return [f"map {self.scene_dir / MAP_DIR}: up to date"]
        return [f"map {self.scene_dir / MAP_DIR}/{name}: {d['input_points']} points kept of "
                f"{d['input_points'] + sum(d['removed'].values())} (removed: {d['removed']}), {d['points']} after "
                f"merging per voxel" for name, d in self.layers.items()]


def _moving_tracks(scene: Scene, threshold_m: float) -> TrackTable | None:
    """The scene's labelled tracks whose keyframe centres span more than ``threshold_m``."""
    doc = scene.read_imported_labels()
    tracks = [t for t in (tracks_from_document(doc) if doc is not None else [])
              if not t.stationary and float(np.linalg.norm(np.ptp(t.centers, axis=0))) > threshold_m]
    return TrackTable.from_tracks(tracks) if tracks else None


class MapFrames:
    """A scene's frames as the map needs them (positions in quanta and metres, firing times,
    sensors, what is removed and why)."""

    def __init__(self, scene: Scene, track: PoseTrack, options: MapOptions, sonar: set[int]) -> None:
        self.scene, self.track, self.options, self.sonar = scene, track, options, sonar
        self.extrinsics = [lidar.ego_from_sensor for lidar in scene.lidars]
        self.labelled = any(f.boxes is not None for f in scene.frames)
        mode = options.moving
        self.mode = ("labels" if self.labelled else "filter") if mode == "auto" else mode
        self.moving = _moving_tracks(scene, options.moving_threshold_m) if self.mode == "labels" else None

    def read(self, index: int, layer: str) -> dict[str, Any]:
        """Frame ``index``'s points of ``layer``: ``q`` (N, 3) int64 quanta and ``xyz`` (N, 3)
        metres (world frame, scene origin), ``times`` (N,) int64 ns firing times,
        ``sensor_id``, ``intensity`` (float32), ``rgb`` ((N, 3) uint8 or None), ``origins``
        (the sensor's world position per point; LiDAR only), the masks ``ego`` (inside the
        ego box) and ``moving`` (in a moving track's box), ``keep`` (neither) and the
        ``removed`` counts."""
        entry = self.scene.frame(index)
        table = self.scene.stored_points(index)
        names = table.schema.names
        scale, offset = quantisation(table.schema)
        if not np.allclose(scale, self.options.octree.quantum_m, rtol=0, atol=1e-12):
            raise FormatError(self.scene.dir / entry.points.file, None,
                              f"positions quantised at {self.options.octree.quantum_m} m, got {scale.tolist()}")
        q = np.stack([column_values(table, c).astype(np.int64) for c in ("xq", "yq", "zq")], axis=1)
        q += np.rint(offset / scale).astype(np.int64)
        n = len(q)
        sid = column_values(table, "sensor_id") if "sensor_id" in names else np.zeros(n, np.uint8)
        rows = np.isin(sid, list(self.sonar)) if layer == "sonar" else ~np.isin(sid, list(self.sonar))
        out = {"q": q[rows], "sensor_id": sid[rows], "xyz": q[rows] * scale}
        out["times"] = np.full(len(out["q"]), entry.timestamp_ns, np.int64)
        if "time_offset_ns" in names:
            out["times"] += column_values(table, "time_offset_ns")[rows]
        out["intensity"] = (column_values(table, "intensity")[rows].astype(np.float32) if "intensity" in names
                            else np.zeros(len(out["q"]), np.float32))
        out["rgb"] = (np.stack([column_values(table, c)[rows] for c in "rgb"], axis=1) if "r" in names else None)
        n = len(out["q"])
        out["ego"], out["moving"], out["origins"] = np.zeros(n, np.bool_), np.zeros(n, np.bool_), np.zeros((0, 3))
        if layer == "lidar" and n:
            ego, out["origins"] = ego_and_origins(out["xyz"], out["times"], self.track, out["sensor_id"],
                                                  self.extrinsics)
            out["ego"] = ~outside_box(ego, self.options.ego_box)
            if self.moving is not None:
                out["moving"] = self._in_moving_boxes(out["xyz"], out["times"] - entry.timestamp_ns,
                                                      entry.timestamp_ns) & ~out["ego"]
        out["keep"] = ~out["ego"] & ~out["moving"]
        out["removed"] = {"ego": int(np.count_nonzero(out["ego"])), "moving": int(np.count_nonzero(out["moving"])),
                          "dynamic": 0}
        return out

    def _in_moving_boxes(self, xyz: np.ndarray, offsets_ns: np.ndarray, t0_ns: int) -> np.ndarray:
        """``(N,) bool``: points inside a moving track's box at their firing times ``t0_ns +
        offsets_ns`` (module docstring, step 2)."""
        o, table = self.options, self.moving
        step = int(o.moving_step_ns)
        steps = np.unique(offsets_ns // step)
        mid = t0_ns + steps * step + step // 2
        at = interpolate_tracks(table, mid, "constant_velocity")
        first, last = table.timestamps_ns[table.offsets[:-1]], table.timestamps_ns[table.offsets[1:] - 1]
        reach = o.moving_extrapolate_ns
        valid = at.valid & (mid[:, None] >= first - reach) & (mid[:, None] <= last + reach)
        b = len(first)
        unit = (np.zeros((b, 3)), np.ones((b, 3)), np.tile([1.0, 0, 0, 0], (b, 1)))  # validated, never used
        labels = points_in_boxes_at_times(xyz, offsets_ns, step, *unit, np.arange(b), steps, at.centers, at.sizes,
                                          at.rotations, valid, margin=o.moving_margin_m)
        return labels >= 0

    def classify_dynamic(self, options: DynamicOptions) -> DynamicFilter:
        """The dynamic-point filter fed every frame's LiDAR points left after the ego box, classified."""
        flt = DynamicFilter(options)
        for entry in self.scene.frames:
            f = self.read(entry.index, "lidar")
            k = f["keep"]
            flt.observe(f["xyz"][k], f["origins"][k], f["sensor_id"][k])
        flt.classify()
        return flt


def sonar_sensors(log: RawLog) -> set[str]:
    """Names of the log's point sensors that are sonars (the ``sonar`` layer)."""
    return {lidar.name for lidar in log.lidars if lidar.format in SONAR_FORMATS}


def map_is_current(scene_dir: str | os.PathLike, options: MapOptions = MapOptions()) -> bool:
    """Whether ``scene_dir`` has a complete map built with ``options`` from its current manifest."""
    root = Path(scene_dir)
    try:
        doc = json.loads((root / MAP_DIR / MAP_MANIFEST).read_bytes())
        return (doc.get("scene_manifest_xxh3_128") == Scene.open(root).manifest_digest
                and doc.get("options") == _options_json(options))
    except (OSError, ValueError, FormatError):
        return False


def _options_json(options: MapOptions) -> Any:
    return json.loads(json.dumps(asdict(options)))


def build_scene_map(scene_dir: str | os.PathLike, *, sonar_sensors: set[str] = frozenset(),
                    options: MapOptions = MapOptions(), track: PoseTrack | None = None,
                    progress: Callable[[str], None] | None = None) -> MapSummary:
    """Build (or resume, or keep if current) the map of the prepared scene at ``scene_dir``.

    ``sonar_sensors``: names of the scene's point sensors that are sonars (their own layer);
    ``track``: the ego poses to use between frames (default: the frames' poses).
    """
    voxel_q = int(round(options.voxel_m / options.octree.quantum_m))
    if voxel_q < 1 or abs(voxel_q * options.octree.quantum_m - options.voxel_m) > 1e-9:
        raise ValueError(f"voxel_m {options.voxel_m} must be a multiple of the {options.octree.quantum_m} m quantum")
    if voxel_q > MAX_CELL_Q:
        raise ValueError(f"voxel_m {options.voxel_m} is above {MAX_CELL_Q * options.octree.quantum_m:g} m")
    root = Path(scene_dir)
    summary = MapSummary(root)
    if map_is_current(root, options):
        summary.skipped = True
        return summary
    scene = Scene.open(root)
    (root / MAP_DIR / MAP_MANIFEST).unlink(missing_ok=True)  # no reader takes a map being rebuilt for done
    cell_bits = min(options.octree.cell_bits, (MAX_CELL_Q // voxel_q).bit_length() - 1)  # a cell within 16 bits
    octree = OctreeOptions(**dict(asdict(options.octree), voxel_q=voxel_q, cell_bits=cell_bits))
    sonar = {k for k, lidar in enumerate(scene.lidars) if lidar.name in sonar_sensors}
    frames = MapFrames(scene, track or scene.world_from_ego(), options, sonar)
    report = progress or (lambda line: None)
    layers: dict[str, Any] = {}
    for layer in LAYERS:
        if not any((k in sonar) == (layer == "sonar") for k in range(len(scene.lidars))):
            continue
        layers[layer] = _build_layer(root / MAP_DIR / layer, frames, layer, octree, options, report)
        out = root / MAP_DIR / f"{layer}.copc.laz"
        if options.copc:
            write_copc(root / MAP_DIR / layer, out)
            layers[layer]["copc"] = {"file": out.name, "bytes": out.stat().st_size, "xxh3_128": digest_file(out)}
        else:
            out.unlink(missing_ok=True)
            layers[layer]["copc"] = None
    doc = {"format": MAP_FORMAT, "version": 1, "scene_manifest_xxh3_128": scene.manifest_digest,
           "options": _options_json(options), "moving": frames.mode, "layers": layers}
    atomic_write(root / MAP_DIR / MAP_MANIFEST, json.dumps(doc, indent=1).encode(), durable=True)
    summary.layers = layers
    return summary


def _build_layer(layer_dir: Path, frames: MapFrames, layer: str, octree: OctreeOptions, options: MapOptions,
                 report: Callable[[str], None]) -> dict[str, Any]:
    digest = frames.scene.manifest_digest
    done = _finished_layer(layer_dir, digest, options)
    if done is not None:
        return done
    (layer_dir / ".work").mkdir(parents=True, exist_ok=True)
    builder = OctreeBuilder(layer_dir, octree)
    dynamic = _dynamic_filter(layer_dir, frames, options.dynamic, report) \
        if layer == "lidar" and frames.mode == "filter" else None
    for index in (f.index for f in frames.scene.frames):
        if index < builder.next_frame:
            continue
        f = frames.read(index, layer)
        keep = f["keep"]
        if dynamic is not None and keep.any():
            dyn = dynamic.dynamic(f["xyz"]) & keep
            f["removed"]["dynamic"] = int(np.count_nonzero(dyn))
            keep = keep & ~dyn
        builder.add(index, f["q"][keep], f["intensity"][keep], None if f["rgb"] is None else f["rgb"][keep],
                    tally=f["removed"])
    removed = {"ego": 0, "moving": 0, "dynamic": 0, **builder.tally}
    report(f"map {layer}: building the octree")
    builder.finish({"layer": layer, "scene_manifest_xxh3_128": digest, "map_options": _options_json(options),
                    "removed": removed})
    return _finished_layer(layer_dir, digest, options)


def _finished_layer(layer_dir: Path, scene_digest: str, options: MapOptions) -> dict[str, Any] | None:
    """The manifest entry of a complete layer built with ``options`` from the scene manifest
    ``scene_digest``, None if there is none (its metadata is written last)."""
    path = layer_dir / METADATA
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    if ((layer_dir / ".work").exists() or meta.get("scene_manifest_xxh3_128") != scene_digest
            or meta.get("map_options") != _options_json(options)):
        return None
    return {"points": meta["points"], "input_points": meta["input_points"], "removed": meta["removed"],
            "metadata_xxh3_128": digest_file(path)}


def _dynamic_filter(layer_dir: Path, frames: MapFrames, options: DynamicOptions,
                    report: Callable[[str], None]) -> DynamicFilter:
    """The filter with its dynamic voxels: classified from every frame, or read back."""
    saved = layer_dir / ".work" / "dynamic.npy"
    if saved.is_file():
        flt = DynamicFilter(options)
        flt.restore(np.load(saved))
        return flt
    report("map: dynamic-point filter (first pass)")
    flt = frames.classify_dynamic(options)
    with open(saved.with_suffix(".tmp"), "wb") as fh:
        np.save(fh, flt.classify())
    os.replace(saved.with_suffix(".tmp"), saved)
    return flt
