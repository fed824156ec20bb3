"""Export cuboid tracks, ego poses and sensor calibration as nuScenes v1.0 tables.

Writes ``DATAROOT/VERSION/{log, scene, sample, sample_data, sample_annotation, instance,
category, attribute, visibility, sensor, calibrated_sensor, ego_pose, map}.json`` as
``nuscenes-devkit`` loads them. One scene; one sample (key frame) per ``sample_times_ns``
entry, with one ``sample_data`` per LiDAR (and one per camera that has an image, per radar
that has a scan; a radar's modality is ``"radar"``, its files nuScenes radar ``.pcd``) whose
``ego_pose`` is ``world_from_ego`` at the data's timestamp. Fathom's world frame is the
nuScenes global frame. Boxes are the tracks interpolated at the sample times (each in its
interpolation mode, no extrapolation), ``size = [w, l, h]`` (:func:`formats.conventions.nuscenes_wlh_from_lwh`),
``rotation`` wxyz box → global. Timestamps are microseconds (rounded). Tokens are
deterministic (MD5 of the record's identity).

Estimates from the points of each sample (world frame), when given: ``num_lidar_pts`` /
``num_radar_pts`` count the points in each box (:func:`engine.points_in_boxes.points_in_boxes`;
-1 / 0 without points, or ``num_lidar_pts`` given by the caller); ``visibility_token``
bins the fraction of the box's LiDAR points visible in at least one camera of the sample
(inside its image and on the nearest surface of its z-buffer, at the image's timestamp:
:func:`engine.box_visibility.box_point_visibility`) into "1".."4" = 0–40, 40–60, 60–80,
80–100 % (nuScenes' levels, there judged by annotators across the six cameras); ``""``
(unknown) for a box without LiDAR points or a sample without cameras.

Categories: :mod:`formats.categories` (a default table to nuScenes names, overridable;
unmapped categories refused, passed or dropped). Lenses: nuScenes' ``camera_intrinsic`` is a
3×3 matrix; a fisheye or distorted camera is written as its matrix alone and named in a
:class:`LensWarning` (images are not undistorted).

A prepared scene as a whole DATAROOT (tables and sample files):
:mod:`formats.export_nuscenes_dataroot`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engine.box_visibility import box_point_visibility
from engine.camera import Camera
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation, TrackTable, interpolate_tracks
from engine.points_in_boxes import points_in_boxes
from engine.pose_track import Extrapolation, PoseTrack
from engine.se3 import SE3
from formats.categories import NUSCENES, Unmapped
from formats.conventions import nuscenes_wlh_from_lwh

_VISIBILITY = [("1", "v0-40"), ("2", "v40-60"), ("3", "v60-80"), ("4", "v80-100")]
VISIBILITY_BOUNDS = (0.4, 0.6, 0.8)  # visible-fraction upper bounds of levels 1, 2, 3


@dataclass(frozen=True)
class NuScenesSensorFiles:
    """One sensor's files, one per sample (``None`` where it has none).

    Attributes:
        channel: nuScenes channel name (``"LIDAR_TOP"``, ``"CAM_FRONT"``, ``"RADAR_FRONT"``).
        ego_from_sensor: the extrinsic (nuScenes LiDAR: x right, y forward, z up; camera: OpenCV;
            radar: x forward, y left, z up).
        files: per sample, ``(filename relative to DATAROOT, timestamp_ns)`` or ``None``.
        camera: the camera (intrinsics, image size) for a camera channel, else ``None``.
        radar: whether the channel is a radar (modality ``"radar"``, nuScenes radar ``.pcd`` files).
    """

    channel: str
    ego_from_sensor: SE3
    files: Sequence[tuple[str, int] | None]
    camera: Camera | None = None
    radar: bool = False

    @property
    def modality(self) -> str:
        return "camera" if self.camera else "radar" if self.radar else "lidar"


class LensWarning(UserWarning):
    """A camera whose lens nuScenes cannot describe was exported as its 3×3 matrix alone."""


def lens_notes(sensors: Sequence[NuScenesSensorFiles]) -> list[str]:
    """One line per camera whose lens is not a plain pinhole (Kannala-Brandt, or Brown-Conrady
    with a nonzero coefficient): nuScenes' ``camera_intrinsic`` is a 3×3 matrix, so tools that
    project with it (the devkit's ``view_points``) miss the distortion."""
    notes = []
    for s in sensors:
        lens = s.camera.intrinsics if s.camera is not None else None
        if lens is not None and (lens.model == "kannala_brandt" or any(lens.distortion)):
            notes.append(f"camera {s.channel}: {lens.model} lens (distortion {list(lens.distortion)}) written as its "
                         "3x3 matrix alone; nuScenes has no distortion model, so projections with camera_intrinsic "
                         "are off away from the image centre (images are not undistorted)")
    return notes


def token(*parts: object) -> str:
    """A deterministic 32-hex-digit token."""
    return hashlib.md5("/".join(map(str, parts)).encode()).hexdigest()


def us_from_ns(t_ns: int) -> int:
    """nuScenes ``timestamp``: int64 ns → µs, rounded half up."""
    return (int(t_ns) + 500) // 1000


def _linked(records: list[dict]) -> list[dict]:
    for i, r in enumerate(records):
        r["prev"] = records[i - 1]["token"] if i else ""
        r["next"] = records[i + 1]["token"] if i + 1 < len(records) else ""
    return records


def nuscenes_tables(
    tracks: Sequence[CuboidTrack],
    sample_times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    sensors: Sequence[NuScenesSensorFiles],
    *,
    scene_name: str = "scene-0001",
    location: str = "unknown",
    categories: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    num_lidar_pts: np.ndarray | None = None,
    lidar_points: Sequence[np.ndarray] | None = None,
    radar_points: Sequence[np.ndarray] | None = None,
    extrapolate: Extrapolation = "none",
    map_filename: str = "",
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> dict[str, list[dict]]:
    """The nuScenes tables as lists of records (see the module docstring).

    ``categories`` / ``unmapped``: track categories → nuScenes names
    (:data:`formats.categories.NUSCENES`: the default table updated by ``categories``; tracks
    of a dropped category are left out). ``num_lidar_pts``: optional ``(S, N) int`` points per
    box (sample × track, all of ``tracks``). ``lidar_points`` / ``radar_points``: optional per
    sample ``(P, 3)`` world-frame points (the estimates of the module docstring).
    ``extrapolate``: pose-track policy for data timestamps outside ``world_from_ego`` (e.g. an
    image exposed just after the last pose). ``map_filename``: the map record's raster (the
    devkit needs one map record; ``""`` names DATAROOT itself, enough to load the tables).
    ``interpolation``: the tracks' modes between keyframes
    (:func:`engine.cuboid_interp.interpolate_tracks`: one for all or one per track, default linear).
    Raises ``ValueError`` for unordered or merging sample times or mismatched file lists,
    :class:`formats.categories.UnmappedCategoryError` naming unmapped categories; warns
    (:class:`LensWarning`) for each camera of :func:`lens_notes`.
    """
    times = np.asarray(sample_times_ns, dtype=np.int64)
    us = [us_from_ns(t) for t in times]
    if len(times) == 0 or np.any(np.diff(us) <= 0):
        raise ValueError("sample_times_ns must be non-empty and strictly increasing at 1 µs resolution")
    for s in sensors:
        if len(s.files) != len(times):
            raise ValueError(f"sensor {s.channel}: {len(s.files)} files for {len(times)} samples")
    if num_lidar_pts is not None and np.shape(num_lidar_pts) != (len(times), len(tracks)):
        raise ValueError(f"num_lidar_pts must be ({len(times)}, {len(tracks)}), got {np.shape(num_lidar_pts)}")
    names = NUSCENES.resolve((t.category for t in tracks), categories, unmapped)
    keep = [n for n, t in enumerate(tracks) if names[t.category] is not None]
    table = TrackTable.from_tracks(tracks, interpolation).select(np.array(keep, np.int64))
    tracks = [tracks[n] for n in keep]
    if num_lidar_pts is not None:
        num_lidar_pts = np.asarray(num_lidar_pts)[:, keep]
    for note in lens_notes(sensors):
        warnings.warn(note, LensWarning, stacklevel=2)
    for name, pts in (("lidar_points", lidar_points), ("radar_points", radar_points)):
        if pts is not None and len(pts) != len(times):
            raise ValueError(f"{name}: one array per sample ({len(times)}), got {len(pts)}")
    log_token, scene_token = token("log", scene_name), token("scene", scene_name)
    samples = _linked([{"token": token("sample", scene_name, i), "timestamp": us[i], "scene_token": scene_token}
                       for i in range(len(times))])
    tables: dict[str, list[dict]] = {k: [] for k in (
        "sensor", "calibrated_sensor", "ego_pose", "sample_data", "sample_annotation", "instance", "category")}
    for s in sensors:
        sensor_token, calib_token = token("sensor", s.channel), token("calibrated_sensor", scene_name, s.channel)
        tables["sensor"].append({"token": sensor_token, "channel": s.channel,
                                 "modality": s.modality})
        tables["calibrated_sensor"].append({
            "token": calib_token, "sensor_token": sensor_token,
            "translation": s.ego_from_sensor.translation.tolist(), "rotation": s.ego_from_sensor.rotation.tolist(),
            "camera_intrinsic": s.camera.intrinsics.K.tolist() if s.camera else [],
        })
        records = []
        for i, entry in enumerate(s.files):
            if entry is None:
                continue
            filename, t_ns = entry
            sd_token = token("sample_data", scene_name, s.channel, i)
            pose = world_from_ego.at(int(t_ns), extrapolate)
            tables["ego_pose"].append({"token": sd_token, "timestamp": us_from_ns(t_ns),
                                       "rotation": pose.rotation.tolist(), "translation": pose.translation.tolist()})
            records.append({
                "token": sd_token, "sample_token": samples[i]["token"], "ego_pose_token": sd_token,
                "calibrated_sensor_token": calib_token, "timestamp": us_from_ns(t_ns),
                "fileformat": "jpg" if s.camera else "pcd", "is_key_frame": True,
                "height": s.camera.intrinsics.height if s.camera else 0,
                "width": s.camera.intrinsics.width if s.camera else 0, "filename": filename,
            })
        tables["sample_data"] += _linked(records)
    kept_names = {n for n in (names[t.category] for t in tracks) if n is not None}  # all mapped: tracks kept above
    tables["category"] = [{"token": token("category", n), "name": n, "description": ""} for n in sorted(kept_names)]
    if tracks:
        boxes = interpolate_tracks(table, times)
        wlh = nuscenes_wlh_from_lwh(boxes.sizes)
        lidar_n, radar_n, visibility = _estimates(boxes, times, world_from_ego, sensors, lidar_points, radar_points,
                                                   extrapolate)
        if num_lidar_pts is not None:
            lidar_n = np.asarray(num_lidar_pts, dtype=np.int64)
        for n, t in enumerate(tracks):
            inst = token("instance", scene_name, t.track_id)
            anns = _linked([{
                "token": token("sample_annotation", scene_name, t.track_id, i),
                "sample_token": samples[i]["token"], "instance_token": inst, "visibility_token": visibility[i][n],
                "attribute_tokens": [], "translation": boxes.centers[i, n].tolist(), "size": wlh[i, n].tolist(),
                "rotation": boxes.rotations[i, n].tolist(),
                "num_lidar_pts": int(lidar_n[i, n]), "num_radar_pts": int(radar_n[i, n]),
            } for i in np.flatnonzero(boxes.valid[:, n])])
            if not anns:
                continue
            tables["sample_annotation"] += anns
            tables["instance"].append({
                "token": inst, "category_token": token("category", names[t.category]),
                "nbr_annotations": len(anns), "first_annotation_token": anns[0]["token"],
                "last_annotation_token": anns[-1]["token"],
            })
    tables["sample"] = samples
    tables["scene"] = [{"token": scene_token, "log_token": log_token, "nbr_samples": len(samples),
                        "first_sample_token": samples[0]["token"], "last_sample_token": samples[-1]["token"],
                        "name": scene_name, "description": "exported by Fathom"}]
    tables["log"] = [{"token": log_token, "logfile": scene_name, "vehicle": "fathom", "date_captured": "",
                      "location": location}]
    # the devkit indexes maps by their log_tokens and needs one record; no raster is written
    tables["map"] = [{"token": token("map", scene_name), "log_tokens": [log_token], "category": "semantic_prior",
                      "filename": map_filename}]
    tables["attribute"] = []
    tables["visibility"] = [{"token": k, "level": v, "description": ""} for k, v in _VISIBILITY]
    return tables


def _estimates(boxes, times: np.ndarray, world_from_ego: PoseTrack, sensors: Sequence[NuScenesSensorFiles],
               lidar_points: Sequence[np.ndarray] | None, radar_points: Sequence[np.ndarray] | None,
               extrapolate: Extrapolation) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """``num_lidar_pts (S, N)`` (-1 unknown), ``num_radar_pts (S, N)`` and visibility tokens."""
    s_n, n_n = boxes.valid.shape
    lidar_n = np.full((s_n, n_n), -1, np.int64)
    radar_n = np.zeros((s_n, n_n), np.int64)
    visibility = [["" for _ in range(n_n)] for _ in range(s_n)]
    for i in range(s_n):
        live = np.flatnonzero(boxes.valid[i])
        if not len(live):
            continue
        c, sz, q = boxes.centers[i, live], boxes.sizes[i, live], boxes.rotations[i, live]
        if radar_points is not None:
            radar_n[i, live] = points_in_boxes(radar_points[i], c, sz, q)[1]
        if lidar_points is None:
            continue
        cams = [(s.camera, file[1]) for s in sensors if s.camera is not None and (file := s.files[i]) is not None]
        inside, _, visible = box_point_visibility(
            lidar_points[i], c, sz, q, [cam for cam, _ in cams], world_from_ego=world_from_ego,
            camera_times_ns=np.array([t for _, t in cams], np.int64), extrapolate=extrapolate)
        lidar_n[i, live] = inside
        if cams:
            level = np.searchsorted(VISIBILITY_BOUNDS, visible / np.maximum(inside, 1), side="left") + 1
            for j, n in enumerate(live):
                visibility[i][n] = str(level[j]) if inside[j] else ""
    return lidar_n, radar_n, visibility


def write_nuscenes(dataroot: str | os.PathLike, version: str, tables: Mapping[str, list[dict]]) -> Path:
    """Write the tables as ``DATAROOT/VERSION/NAME.json``; returns that directory."""
    out = Path(dataroot) / version
    out.mkdir(parents=True, exist_ok=True)
    for name, records in tables.items():
        (out / f"{name}.json").write_text(json.dumps(records, indent=0, allow_nan=False))
    return out

