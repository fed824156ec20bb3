"""Per-point labels of a prepared scene as SemanticKITTI, nuScenes lidarseg / panoptic and Scale
SFS, and back.

Every exporter takes the scene, its labels (:class:`SceneLabels`: the class list and each
frame's ``(class_id (N,) uint16, instance_id (N,) uint32)`` in the order of the frame's
points file) and the cuboid tracks, and returns ``{path: bytes}``; every importer takes the
scene and such files and returns :class:`SceneLabels` (round trip exact for the labels).
Bad input raises ``ValueError`` naming the file.

- ``semantickitti``: ``sequences/00/labels/NNNNNN.label`` (frame index), little-endian uint32
  per point ``instance << 16 | class`` (both must fit 16 bits), and ``semantic-kitti.yaml``
  (``labels`` id → name, ``color_map`` id → [b, g, r], identity ``learning_map`` /
  ``learning_map_inv``, ``learning_ignore`` true for class 0), as semantic-kitti-api reads them.
- ``nuscenes``: the scene as a nuScenes DATAROOT (:func:`formats.export_nuscenes_dataroot.
  nuscenes_scene_export`, version ``v1.0-fathom``, unmapped cuboid categories passed through)
  plus, per LiDAR sample_data, ``lidarseg/v1.0-fathom/<token>_lidarseg.bin`` (uint8 class per
  point of that LiDAR's ``.pcd.bin``: classes must be below 256) and
  ``panoptic/v1.0-fathom/<token>_panoptic.npz`` (``data``: uint16 ``class · 1000 + instance``,
  instances below 1000), ``lidarseg.json`` / ``panoptic.json`` records, and ``category.json``
  with every category's ``index``: a class's id; cuboid categories without a class take ids
  after the last class (description ``fathom: cuboid category``). Class colours travel in the
  description (``fathom class #rrggbb``) and as ``colormap.json`` (name → [r, g, b]): pass it as
  ``NuScenes(..., colormap=...)`` where class names are not nuScenes' own.
- ``sfs``: ``<scene>.sfs``, the frames as world-frame LiDAR frames (:func:`formats.export_sfs.
  scene_to_sfs`) with one ``LabeledPointsAnnotation`` per (class, instance) other than class 0
  (id ``seg-<class>-<instance>``, label the class name, ``is_instance`` for instance > 0),
  listing per frame (``sensor_frame``) the indices of its points.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import yaml

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation
from formats.export_nuscenes import token
from formats.export_nuscenes_dataroot import nuscenes_scene_export
from formats.export_sfs import encode_sfs, scene_to_sfs
from formats.import_sfs import decode_sfs
from formats.scene_store import Scene, column_values, positions
from formats.segmentation import SegClass, classes_from_json

Labels = tuple[np.ndarray, np.ndarray]
NUSCENES_VERSION = "v1.0-fathom"
KITTI_YAML = "semantic-kitti.yaml"
_CUBOID = "fathom: cuboid category"


@dataclass(frozen=True)
class SceneLabels:
    """The class list and frame index → ``(class_id (N,) uint16, instance_id (N,) uint32)``."""

    classes: tuple[SegClass, ...]
    frames: Mapping[int, Labels]
    revision: int = 0


def _frame_rows(scene: Scene, index: int, where: str, n: int) -> None:
    if scene.frame(index).n_points != n:
        raise ValueError(f"{where}: {scene.frame(index).n_points} labels (the frame's points), got {n}")


# ---------------------------------------------------------------- SemanticKITTI


def export_semantickitti(scene: Scene, labels: SceneLabels, tracks: Sequence[CuboidTrack] = (),
                         interpolation: Sequence[Interpolation] | None = None) -> dict[str, bytes]:
    out = {}
    for index, (cls, inst) in labels.frames.items():
        if len(inst) and inst.max() > 0xFFFF:
            raise ValueError(f"frame {index}: SemanticKITTI holds instance ids below 65536, got {int(inst.max())}")
        out[f"sequences/00/labels/{index:06d}.label"] = ((inst.astype("<u4") << 16) | cls.astype("<u4")).tobytes()
    doc = {"labels": {c.id: c.name for c in labels.classes},
           "color_map": {c.id: [c.color[2], c.color[1], c.color[0]] for c in labels.classes},
           "learning_map": {c.id: c.id for c in labels.classes},
           "learning_map_inv": {c.id: c.id for c in labels.classes},
           "learning_ignore": {c.id: c.id == 0 for c in labels.classes}}
    out[KITTI_YAML] = yaml.safe_dump(doc, sort_keys=False).encode()
    return out


def import_semantickitti(scene: Scene, files: Mapping[str, bytes]) -> SceneLabels:
    if KITTI_YAML not in files:
        raise ValueError(f"{KITTI_YAML}: the label mapping is missing")
    try:
        doc = yaml.safe_load(files[KITTI_YAML])
        classes = classes_from_json([{"id": k, "name": v, "color": list(reversed(doc["color_map"][k]))}
                                     for k, v in doc["labels"].items()], KITTI_YAML)
    except (yaml.YAMLError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"{KITTI_YAML}: labels and color_map ({exc})") from None
    frames = {}
    for name, data in files.items():
        m = re.fullmatch(r"sequences/00/labels/(\d{6})\.label", name)
        if m is None:
            continue
        index = int(m.group(1))
        if len(data) % 4:
            raise ValueError(f"{name}: uint32 labels, got {len(data)} bytes")
        raw = np.frombuffer(data, "<u4")
        _frame_rows(scene, index, name, len(raw))
        frames[index] = ((raw & 0xFFFF).astype(np.uint16), (raw >> 16).astype(np.uint32))
    return SceneLabels(classes, _known(classes, frames))


def _known(classes: Sequence[SegClass], frames: dict[int, Labels]) -> dict[int, Labels]:
    ids = np.array(sorted(c.id for c in classes))
    for index, (cls, _) in frames.items():
        bad = np.setdiff1d(np.unique(cls), ids)
        if len(bad):
            raise ValueError(f"frame {index}: class ids {bad.tolist()} are not in the class list")
    return frames


# ---------------------------------------------------------------- nuScenes lidarseg / panoptic


def _lidar_rows(scene: Scene, index: int) -> np.ndarray:
    """Sensor id of each point of frame ``index`` (0 where the scene has no sensor_id)."""
    table = scene.stored_points(index)
    return (column_values(table, "sensor_id").astype(np.int64) if "sensor_id" in table.schema.names
            else np.zeros(table.num_rows, np.int64))


def export_nuscenes(scene: Scene, labels: SceneLabels, tracks: Sequence[CuboidTrack] = (),
                    interpolation: Sequence[Interpolation] | None = None) -> dict[str, bytes]:
    v = NUSCENES_VERSION
    out = dict(nuscenes_scene_export(scene, tracks, version=v, unmapped="pass", interpolation=interpolation).files())
    categories = json.loads(out[f"{v}/category.json"])
    by_name = {c.name: c for c in labels.classes}
    nxt = max(c.id for c in labels.classes) + 1
    for rec in categories:
        if rec["name"] in by_name:
            rec["index"] = by_name.pop(rec["name"]).id
        else:
            rec["index"], rec["description"], nxt = nxt, _CUBOID, nxt + 1
    categories += [{"token": token("category", c.name), "name": c.name, "index": c.id} for c in by_name.values()]
    colours = {c.name: c.color for c in labels.classes}
    for rec in categories:
        if rec["name"] in colours:
            rec["description"] = "fathom class #{:02x}{:02x}{:02x}".format(*colours[rec["name"]])
    out[f"{v}/category.json"] = json.dumps(categories).encode()
    out["colormap.json"] = json.dumps({**{r["name"]: [128, 128, 128] for r in categories},
                                       **{k: list(c) for k, c in colours.items()}}).encode()
    seg, pan = [], []
    for position, entry in enumerate(scene.frames):
        cls, inst = labels.frames[entry.index]
        if len(cls) and cls.max() > 255:
            raise ValueError(f"frame {entry.index}: nuScenes lidarseg holds class ids below 256, got {int(cls.max())}")
        if len(inst) and (inst.max() >= 1000 or cls.max() * 1000 + 999 > 0xFFFF):
            raise ValueError(f"frame {entry.index}: nuScenes panoptic holds instances below 1000 and classes "
                             "below 65")
        sensor = _lidar_rows(scene, entry.index)
        for k, lidar in enumerate(scene.lidars):
            sd = token("sample_data", scene.scene_id, lidar.name, position)
            rows = sensor == k
            seg_file, pan_file = f"lidarseg/{v}/{sd}_lidarseg.bin", f"panoptic/{v}/{sd}_panoptic.npz"
            out[seg_file] = cls[rows].astype(np.uint8).tobytes()
            buf = io.BytesIO()
            np.savez_compressed(buf, data=(cls[rows].astype(np.uint16) * 1000 + inst[rows]).astype(np.uint16))
            out[pan_file] = buf.getvalue()
            seg.append({"token": token("lidarseg", sd), "sample_data_token": sd, "filename": seg_file})
            pan.append({"token": token("panoptic", sd), "sample_data_token": sd, "filename": pan_file})
    out[f"{v}/lidarseg.json"], out[f"{v}/panoptic.json"] = json.dumps(seg).encode(), json.dumps(pan).encode()
    return out


def import_nuscenes(scene: Scene, files: Mapping[str, bytes]) -> SceneLabels:
    v = NUSCENES_VERSION
    try:
        categories = json.loads(files[f"{v}/category.json"])
        classes = classes_from_json([{"id": c["index"], "name": c["name"], "color": _colour(c.get("description", ""))}
                                     for c in categories if c.get("description") != _CUBOID], "category.json")
        records = {r["sample_data_token"]: r["filename"] for r in json.loads(
            files.get(f"{v}/panoptic.json") or files[f"{v}/lidarseg.json"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{v}/category.json and lidarseg.json or panoptic.json ({exc})") from None
    frames = {}
    for position, entry in enumerate(scene.frames):
        sensor = _lidar_rows(scene, entry.index)
        cls, inst = np.zeros(len(sensor), np.uint16), np.zeros(len(sensor), np.uint32)
        for k, lidar in enumerate(scene.lidars):
            rows = sensor == k
            name = records.get(token("sample_data", scene.scene_id, lidar.name, position))
            if name is None or name not in files:
                raise ValueError(f"frame {entry.index} {lidar.name}: no label file")
            if name.endswith(".npz"):
                data = np.load(io.BytesIO(files[name]))["data"].astype(np.int64)
                c, i = data // 1000, data % 1000
            else:
                c, i = np.frombuffer(files[name], np.uint8), 0
            if len(c) != rows.sum():
                raise ValueError(f"{name}: {rows.sum()} labels ({lidar.name}'s points), got {len(c)}")
            cls[rows], inst[rows] = c, i
        frames[entry.index] = (cls, inst)
    return SceneLabels(classes, _known(classes, frames))


def _colour(description: str) -> list[int]:
    m = re.fullmatch(r"fathom class #([0-9a-f]{6})", description)
    return [128, 128, 128] if m is None else [int(m.group(1)[k:k + 2], 16) for k in (0, 2, 4)]


# ---------------------------------------------------------------- Scale SFS


def export_sfs(scene: Scene, labels: SceneLabels, tracks: Sequence[CuboidTrack] = (),
               interpolation: Sequence[Interpolation] | None = None) -> dict[str, bytes]:
    frames = [(f.timestamp_ns, positions(scene.stored_points(f.index), np.float32)) for f in scene.frames]
    doc = scene_to_sfs(list(tracks), scene.world_from_ego(), frames, interpolation=interpolation)
    names = {c.id: c.name for c in labels.classes}
    groups: dict[tuple[int, int], list[dict]] = {}
    for position, entry in enumerate(scene.frames):
        cls, inst = labels.frames[entry.index]
        packed = (cls.astype(np.uint64) << np.uint64(32)) | inst.astype(np.uint64)
        order = np.argsort(packed, kind="stable")
        keys, starts = np.unique(packed[order], return_index=True)
        for key, part in zip(keys, np.split(order, starts[1:])):
            c, i = int(key >> np.uint64(32)), int(key & np.uint64(0xFFFFFFFF))
            if c:
                groups.setdefault((c, i), []).append(
                    {"sensor_id": "lidar", "point_ids": part.astype(np.uint32), "sensor_frame": position})
    doc["annotations"] += [{"id": f"seg-{c}-{i}", "type": "labeled_points", "label": names[c], "is_instance": i > 0,
                            "labeled_points": points} for (c, i), points in sorted(groups.items())]
    return {f"{scene.scene_id}.sfs": encode_sfs(doc)}


def import_sfs_labels(scene: Scene, files: Mapping[str, bytes]) -> SceneLabels:
    name = f"{scene.scene_id}.sfs"
    if name not in files:
        raise ValueError(f"{name}: missing")
    doc = decode_sfs(files[name], name)
    frames = {f.index: (np.zeros(f.n_points, np.uint16), np.zeros(f.n_points, np.uint32)) for f in scene.frames}
    found = {0: "unlabelled"}
    for ann in doc.get("annotations", []):
        if ann.get("type") not in ("labeled_points", "point_segmentation"):
            continue
        m = re.fullmatch(r"seg-(\d+)-(\d+)", str(ann.get("id")))
        if m is None:
            raise ValueError(f"{name}: annotation {ann.get('id')!r} is not a Fathom seg-<class>-<instance> id")
        c, i = int(m.group(1)), int(m.group(2))
        found[c] = ann["label"]
        for lp in ann["labeled_points"]:
            position = int(lp["sensor_frame"])
            if not 0 <= position < len(scene.frames):
                raise ValueError(f"{name}: annotation {ann['id']} names frame {position}")
            cls, inst = frames[scene.frames[position].index]
            ids = np.asarray(lp["point_ids"], np.int64)
            if len(ids) and (ids.min() < 0 or ids.max() >= len(cls)):
                raise ValueError(f"{name}: annotation {ann['id']} point ids outside frame {position}")
            cls[ids], inst[ids] = c, i
    classes = classes_from_json([{"id": c, "name": n} for c, n in sorted(found.items())], name)
    return SceneLabels(classes, frames)


# (scene, labels, the label tracks, each track's interpolation mode) → files
Exporter = Callable[[Scene, SceneLabels, Sequence[CuboidTrack], Sequence[Interpolation] | None], dict[str, bytes]]
EXPORTERS: dict[str, Exporter] = {"semantickitti": export_semantickitti, "nuscenes": export_nuscenes,
                                  "sfs": export_sfs}
IMPORTERS: dict[str, Callable[[Scene, Mapping[str, bytes]], SceneLabels]] = {
    "semantickitti": import_semantickitti, "nuscenes": import_nuscenes, "sfs": import_sfs_labels}
