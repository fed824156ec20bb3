"""Segmentation as the routes use it: a frame's effective labels and edits, from the scene,
the segmentation document and the cuboid labels.

A frame's *effective* labels (:func:`effective_labels`) are, per point: the frame's own layer
where it sets the point; else, inside the box of a moving track (not ``stationary``) at the
point's firing time, the track's class (its category's class by name) and instance; else the
label of the point's voxel in the map layer (class 0 where none). Boxes are found as
``fathom prepare`` finds ``box_id`` (the same margin and firing-time steps,
:mod:`server.label_boxes`), from the label store's tracks now.

Instance ids of tracks live in the document's header (``instances``: track id → id); each
write registers the tracks it has not seen yet (next ids in track-id order). Between
writes, a new track gets a provisional id the same way.

The map layer labels voxels of the scene's map (:class:`engine.segmentation_map.MapCloud`
of every frame's points; built once per scene and voxel size, kept in memory). Map edits
select map voxels by their centroid.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from engine.pose_track import OutOfRangeError
from engine.segmentation import (
    INHERIT,
    apply_labels,
    select_box,
    select_lasso,
    select_prism,
    select_sphere,
    transfer_labels,
)
from engine.segmentation_map import MapCloud, VoxelLabels, map_cloud, voxel_labels
from formats.scene_store import Scene, column_values, positions
from formats.segmentation import SegClass, classes_from_json, decode_labels, decode_map, encode_labels, encode_map
from server.boxes import tracks_from_document
from server.errors import invalid
from server.label_boxes import LabelTracks, box_ids, boxes_at
from server.prepare import PrepareOptions
from server.segmentation_store import MAP_LAYER, Frozen, Snapshot


@dataclass(frozen=True, eq=False)
class FramePoints:
    """Frame ``index``: ``xyz (N, 3) float64`` world positions (scene origin) and
    ``offsets_ns (N,) int64`` firing times from the frame timestamp."""

    index: int
    timestamp_ns: int
    xyz: np.ndarray
    offsets_ns: np.ndarray


def frame_points(scene: Scene, index: int) -> FramePoints:
    """The positions and firing times of frame ``index`` (KeyError: no such frame)."""
    entry = scene.frame(index)
    table = scene.stored_points(index)
    offsets = (column_values(table, "time_offset_ns").astype(np.int64) if "time_offset_ns" in table.schema.names
               else np.zeros(table.num_rows, np.int64))
    return FramePoints(index, entry.timestamp_ns, positions(table), offsets)


class MapCache:
    """Per scene (directory, manifest digest) and voxel size: its :class:`MapCloud`; per map
    layer bytes: their :class:`VoxelLabels`. Small LRU-free caches (a server holds few scenes)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._clouds: dict[tuple[str, str, float], MapCloud] = {}
        self._labels: dict[tuple[str, bytes | None, float], VoxelLabels] = {}

    def cloud(self, scene: Scene, voxel_m: float) -> MapCloud:
        key = (str(scene.dir), scene.manifest_digest, voxel_m)
        with self._lock:
            found = self._clouds.get(key)
        if found is None:
            found = map_cloud((frame_points(scene, f.index).xyz for f in scene.frames), voxel_m)
            with self._lock:
                self._clouds = {k: v for k, v in self._clouds.items() if k[0] != key[0]}
                self._clouds[key] = found
        return found

    def labels(self, scene_id: str, data: bytes | None, voxel_m: float) -> VoxelLabels:
        key = (scene_id, data, voxel_m)
        with self._lock:
            found = self._labels.get(key)
        if found is None:
            keys, cls, inst = decode_map(data, f"segmentation map of {scene_id}") if data else (
                np.zeros(0, np.int64), np.zeros(0, np.uint16), np.zeros(0, np.uint32))
            found = voxel_labels(keys, cls, inst, voxel_m)
            with self._lock:
                self._labels = {k: v for k, v in self._labels.items() if k[0] != scene_id}
                self._labels[key] = found
        return found


def classes(header: dict[str, Any]) -> tuple[SegClass, ...]:
    return classes_from_json(header["classes"])


def instances(header: dict[str, Any], tracks: Sequence[dict[str, Any]]) -> dict[str, int]:
    """The header's track → instance table with the ``tracks`` it lacks added (next ids, in
    track-id order)."""
    table = dict(header.get("instances", {}))
    nxt = max(table.values(), default=0) + 1
    for tid in sorted(t["id"] for t in tracks if t["id"] not in table):
        table[tid] = nxt
        nxt += 1
    return table


@dataclass(frozen=True, eq=False)
class FrameBoxIndex:
    """Boxes of the tracks existing at a frame: ``box (N,) int32`` (−1: none), per box its
    ``track_ids``, ``categories`` and whether it is ``moving``."""

    box: np.ndarray
    track_ids: tuple[str, ...]
    categories: tuple[str, ...]
    moving: np.ndarray


def box_index(scene: Scene, tracks: list[dict[str, Any]], points: FramePoints,
              options: PrepareOptions = PrepareOptions()) -> FrameBoxIndex:
    """Each point's box at its firing time, as ``fathom prepare``'s ``box_id`` (same rules)."""
    n = len(points.xyz)
    if not tracks:
        return FrameBoxIndex(np.full(n, -1, np.int32), (), (), np.zeros(0, bool))
    labels = LabelTracks.from_tracks(tracks_from_document({"tracks": tracks}), scene.world_from_ego())
    boxes, rows = boxes_at(labels, points.timestamp_ns)
    if not len(rows):
        return FrameBoxIndex(np.full(n, -1, np.int32), (), (), np.zeros(0, bool))
    box = box_ids(labels, boxes, rows, points.xyz, points.offsets_ns, options.box_time_step_ns, options.box_margin_m)
    return FrameBoxIndex(box, boxes.track_ids, boxes.categories, ~labels.table.stationary[rows])


def box_labels(boxes: FrameBoxIndex, class_ids: dict[str, int], instance_of: dict[str, int],
               moving_only: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per box ``(class (B,) uint16, instance (B,) uint32)``: its category's class
    (:data:`INHERIT` where the category has no class, or for a stationary box with
    ``moving_only``) and its track's instance."""
    cls = np.array([class_ids.get(c, INHERIT) for c in boxes.categories], np.uint16)
    if moving_only:
        cls[~boxes.moving] = INHERIT
    inst = np.array([instance_of.get(t, 0) for t in boxes.track_ids], np.uint32)
    return cls, inst


def frame_layer(snap: Snapshot | Frozen, scene_id: str, index: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index``'s own layer (all :data:`INHERIT` where it has none)."""
    data = snap.layer(index)
    if data is None:
        return np.full(n, INHERIT, np.uint16), np.zeros(n, np.uint32)
    return decode_labels(data, f"segmentation of {scene_id} frame {index}", n)


def effective_labels(scene: Scene, snap: Snapshot | Frozen, tracks: list[dict[str, Any]], maps: MapCache,
                     points: FramePoints, map_labels: VoxelLabels | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(class (N,) uint16, instance (N,) uint32)`` of frame ``points.index`` (module docstring);
    ``map_labels`` replaces the stored map layer (an edit in progress)."""
    header = snap.header
    if map_labels is None:
        map_labels = maps.labels(scene.scene_id, snap.layer(MAP_LAYER), float(header["voxel_m"]))
    boxes = box_index(scene, tracks, points)
    bc, bi = box_labels(boxes, {c.name: c.id for c in classes(header)}, instances(header, tracks), True)
    fc, fi = frame_layer(snap, scene.scene_id, points.index, len(points.xyz))
    return transfer_labels(points.xyz, map_labels, boxes.box, bc, bi, fc, fi)


class _FrameState:
    """A frame being edited: its points, its own layer and its effective labels."""

    def __init__(self, points: FramePoints, own: tuple[np.ndarray, np.ndarray],
                 effective: tuple[np.ndarray, np.ndarray]) -> None:
        self.points, (self.own_c, self.own_i), (self.eff_c, self.eff_i) = points, own, effective


class EditSession:
    """Edits of one write (one revision), applied in order on the document ``snap``; each
    sees the ones before it. :meth:`change` gives what to store."""

    def __init__(self, scene: Scene, snap: Snapshot, tracks: list[dict[str, Any]], maps: MapCache) -> None:
        self.scene, self.snap, self.tracks, self.maps = scene, snap, tracks, maps
        self.header = {**snap.header, "instances": instances(snap.header, tracks)}
        self.class_ids = {c.id for c in classes(self.header)}
        self.voxel_m = float(self.header["voxel_m"])
        self.frames: dict[int, _FrameState] = {}
        self._map: tuple[MapCloud, np.ndarray, np.ndarray, tuple[np.ndarray, ...]] | None = None
        self._edited_labels: VoxelLabels | None = None  # of the edited map, built once per map edit

    def map_labels(self) -> VoxelLabels:
        if self._map is None:
            return self.maps.labels(self.scene.scene_id, self.snap.layer(MAP_LAYER), self.voxel_m)
        if self._edited_labels is None:
            self._edited_labels = voxel_labels(*self._sparse_map(), self.voxel_m)
        return self._edited_labels

    def map_state(self) -> tuple[MapCloud, np.ndarray, np.ndarray]:
        """The map cloud and its voxels' labels (dense, editable); labelled voxels outside
        the cloud are kept aside. The caller may change the labels, so the table of the
        edited map is built again when next needed (not for every frame that reads it)."""
        if self._map is None:
            cloud = self.maps.cloud(self.scene, self.voxel_m)
            stored = self.map_labels()
            cls, inst = stored.lookup(cloud.keys)
            outside = ~np.isin(stored.keys, cloud.keys)
            self._map = (cloud, cls, inst, (stored.keys[outside], stored.class_id[outside],
                                            stored.instance_id[outside]))
        self._edited_labels = None
        return self._map[:3]

    def _sparse_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cloud, cls, inst, (ok, oc, oi) = self._map
        keep = (cls != 0) | (inst != 0)
        keys = np.concatenate([cloud.keys[keep], ok])
        order = np.argsort(keys, kind="stable")
        return keys[order], np.concatenate([cls[keep], oc])[order], np.concatenate([inst[keep], oi])[order]

    def frame(self, index: int) -> _FrameState:
        state = self.frames.get(index)
        if state is None:
            points = frame_points(self.scene, index)
            own = frame_layer(self.snap, self.scene.scene_id, index, len(points.xyz))
            state = _FrameState(points, own, self._effective(points, own))
            self.frames[index] = state
        return state

    def _effective(self, points: FramePoints, own: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        boxes = box_index(self.scene, self.tracks, points)
        bc, bi = box_labels(boxes, {c.name: c.id for c in classes(self.header)}, self.header["instances"], True)
        return transfer_labels(points.xyz, self.map_labels(), boxes.box, bc, bi, *own)

    def change(self) -> tuple[dict[str, Any], dict[int, bytes | None]]:
        """The new header and the changed layers' bytes."""
        layers: dict[int, bytes | None] = {}
        for index, state in self.frames.items():
            layers[index] = None if np.all(state.own_c == INHERIT) else encode_labels(state.own_c, state.own_i)
        if self._map is not None:
            keys, cls, inst = self._sparse_map()
            layers[MAP_LAYER] = encode_map(keys, cls, inst) if len(keys) else None
        return self.header, layers


def _mask_3d(selection: Any, xyz: np.ndarray | MapCloud, loc: tuple[str | int, ...]) -> np.ndarray:
    """The points of ``xyz`` (a frame's points or the map cloud's voxels) a world-space
    selection (indices, prism, box, sphere) selects."""
    kind = selection.kind
    try:
        if kind == "indices":
            idx = np.asarray(selection.indices, np.int64)
            if len(idx) and idx.max() >= len(xyz):
                raise invalid(loc + ("selection", "indices"), f"indices must be below {len(xyz)}", int(idx.max()))
            mask = np.zeros(len(xyz), bool)
            mask[idx] = True
            return mask
        if kind == "prism":
            return select_prism(xyz, np.array(selection.polygon), selection.z_min, selection.z_max)
        if kind == "box":
            return select_box(xyz, selection.center, selection.size, selection.rotation)
        if kind == "sphere":
            return select_sphere(xyz, selection.center, selection.radius)
    except ValueError as exc:  # an engine check: name the selection
        raise invalid(loc + ("selection",), str(exc)) from None
    raise invalid(loc + ("selection", "kind"), f"{kind!r} selects frame points only (give a frame)", kind)


def _lasso(session: EditSession, state: _FrameState, selection: Any, loc: tuple[str | int, ...]) -> np.ndarray:
    scene, entry = session.scene, session.scene.frame(state.points.index)
    camera = scene.cameras.get(selection.camera)
    if camera is None or selection.camera not in entry.image_timestamps_ns:
        raise invalid(loc + ("selection", "camera"), f"frame {entry.index} has no image of camera "
                      f"{selection.camera!r}; it has {sorted(entry.image_timestamps_ns)}", selection.camera)
    try:
        return select_lasso(state.points.xyz, camera, scene.world_from_ego(),
                            entry.image_timestamps_ns[selection.camera], np.array(selection.polygon))
    except (ValueError, OutOfRangeError) as exc:
        raise invalid(loc + ("selection",), str(exc)) from None


def _cuboid_groups(session: EditSession, state: _FrameState, edit: Any, loc: tuple[str | int, ...]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Group = box of each point (only the tracks named), with the tracks' classes
    (``edit.class_id`` where given) and instances; 422 for a track without a class."""
    boxes = box_index(session.scene, session.tracks, state.points)
    names = {c.name: c.id for c in classes(session.header)}
    cls, inst = box_labels(boxes, names, session.header["instances"], False)
    wanted = set(boxes.track_ids if edit.selection.track_ids is None else edit.selection.track_ids)
    unknown = sorted(wanted - {t["id"] for t in session.tracks})
    if unknown:
        raise invalid(loc + ("selection", "track_ids"), f"unknown track ids {unknown}", unknown)
    keep = np.array([t in wanted for t in boxes.track_ids], bool)
    if edit.class_id is not None:
        cls[:] = edit.class_id
    missing = sorted({c for c, k, use in zip(boxes.categories, cls, keep) if use and k == INHERIT})
    if missing:
        raise invalid(loc + ("selection", "track_ids"), f"no class named after the categories {missing}: add them "
                      "to the class list or give class_id", missing)
    if not len(keep):
        return np.full(len(boxes.box), -1, np.int32), cls, inst
    return np.where((boxes.box >= 0) & keep[np.maximum(boxes.box, 0)], boxes.box, -1).astype(np.int32), cls, inst


def apply_edit(session: EditSession, edit: Any, loc: tuple[str | int, ...]) -> int:
    """Apply one :class:`~server.segmentation_schemas.Edit`; returns the points (voxels) written.
    422 (``RequestValidationError`` naming the field under ``loc``) for a class id not in the
    list, a frame that does not exist, a selection that does not fit it."""
    for field in ("class_id", "only_class"):
        value = getattr(edit, field)
        if value is not None and value not in session.class_ids:
            raise invalid(loc + (field,), f"class id {value} is not in the scene's class list "
                          f"{sorted(session.class_ids)}", value)
    filters = dict(only_unlabelled=edit.only_unlabelled, only_class=edit.only_class)
    if edit.only_unlabelled and edit.only_class is not None:
        raise invalid(loc + ("only_class",), "only_unlabelled and only_class exclude each other", edit.only_class)
    kind = edit.selection.kind
    if edit.frame is None:
        if edit.class_id is None:
            raise invalid(loc + ("class_id",), "a map edit needs a class (class 0 clears)", None)
        cloud, cls, inst = session.map_state()
        mask = _mask_3d(edit.selection, cloud, loc)
        return apply_labels(cls, inst, mask, edit.class_id, edit.instance_id, **filters)
    try:
        session.scene.frame(edit.frame)
    except KeyError:
        raise invalid(loc + ("frame",), f"scene {session.scene.scene_id!r} has no frame {edit.frame}",
                      edit.frame) from None
    state = session.frame(edit.frame)
    if kind == "cuboids":
        group, gc, gi = _cuboid_groups(session, state, edit, loc)
    else:
        group = _lasso(session, state, edit.selection, loc) if kind == "lasso" else _mask_3d(
            edit.selection, state.points.xyz, loc)
        gc = np.array([INHERIT if edit.class_id is None else edit.class_id], np.uint16)
        gi = np.array([0 if edit.class_id is None else edit.instance_id], np.uint32)
    written = apply_labels(state.own_c, state.own_i, group, gc, gi, state.eff_c, **filters)
    if gc[0] == INHERIT and kind != "cuboids":  # cleared: the lower layers decide again
        state.eff_c, state.eff_i = session._effective(state.points, (state.own_c, state.own_i))
    else:
        apply_labels(state.eff_c, state.eff_i, group, gc, gi, state.eff_c, **filters)
    return written
