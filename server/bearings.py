"""Passive-sonar bearings of a scene for the passive routes: the stored bearing-time records
(:mod:`formats.scene_store.passive`) listed, and a frame's bearings as world rays, drawn into its
cameras (engine calls only).

A record row's peaks (:func:`engine.passive.peaks.bearing_peaks`) become rays at the row's time
and a labelled bearing track (the ``bearing_tracks`` document) a ray at the frame's time, each
from its array's acoustic centre moved by the ego pose then, levelled in the world
(:func:`engine.passive.bearings.bearing_rays`). Ego poses are the scene's frame poses,
interpolated and held beyond the first and last frame. A track's array is the one its
``array`` attribute names, else the scene's first array; without arrays its ray starts at the
ego origin.

In a camera, each ray is sampled at :func:`ray_ranges` along its segment, projected through
the camera's lens at its exposure time (:func:`engine.projection.project_points`) and kept as
polylines of the consecutive samples that land in the image (samples behind the camera or
outside the image dropped; a run of one sample is no line).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.passive.bearings import BearingTrack, bearing_rays, ray_points
from engine.passive.peaks import bearing_peaks
from engine.projection import project_points
from engine.se3 import SE3
from formats.scene_store import FrameEntry, PassiveRecord, Scene

log = logging.getLogger("fathom.server")
RAY_SAMPLES = 64
DB_FLOOR = -300.0  # dB given for zero power
DAMAGED_LAYER = "the stored passive layer is damaged or unreadable (the server log has the details)"


def ray_ranges(range_m: float) -> np.ndarray:
    """``(RAY_SAMPLES,) float64`` distances along a ray where it is sampled for a camera: 0, then
    geometrically from 1 m to ``range_m`` (>= 1; dense near the origin, where a lens bends most)."""
    return np.r_[0.0, np.geomspace(1.0, range_m, RAY_SAMPLES - 1)]


def read_record(scene: Scene, array: str) -> PassiveRecord | None:
    """The array's record, None (logged with its cause) when its layer cannot be read."""
    try:
        return scene.passive_record(array)
    except (ValueError, OSError) as exc:  # FormatError included
        log.error("scene %r passive layer %r: %s", scene.scene_id, array, exc)
        return None


def array_listing(scene: Scene) -> list[dict[str, Any]]:
    """Each hydrophone array's record: its azimuths, band, time range and how it was made."""
    out: list[dict[str, Any]] = []
    for layer in scene.passive:
        rec = read_record(scene, layer.array)
        if rec is None:
            out.append({"array": layer.array, "error": DAMAGED_LAYER})
            continue
        out.append({"array": rec.array, "azimuth_rad": rec.azimuth_rad.tolist(), "band_hz": rec.band_hz.tolist(),
                    "rows": len(rec.times_ns), "first_ns": int(rec.times_ns[0]) if len(rec.times_ns) else None,
                    "last_ns": int(rec.times_ns[-1]) if len(rec.times_ns) else None, "frame_s": rec.frame_s,
                    "method": rec.method, "nfft": rec.nfft, "sample_rate_hz": rec.sample_rate_hz,
                    "centre_ego_m": rec.centre_ego_m.tolist()})
    return out


def bearing_tracks(body: dict[str, Any] | None) -> list[BearingTrack]:
    """Engine tracks of a stored (already validated) ``bearing_tracks`` document."""
    return [BearingTrack(t["id"], t["category"], np.array([k["timestamp_ns"] for k in t["keyframes"]], np.int64),
                         np.array([k["azimuth_rad"] for k in t["keyframes"]], np.float64), np.array(t["band_hz"]),
                         t.get("attributes", {}))
            for t in (body or {}).get("tracks", [])]


def _ray_json(refs: list[dict[str, Any]], origins: np.ndarray, directions: np.ndarray, range_m: float,
              ego_from_world: SE3 | None) -> list[dict[str, Any]]:
    """``refs`` with each ray's ``origin``, unit ``direction`` and segment ``end`` (at ``range_m``),
    in the world frame or moved by ``ego_from_world``."""
    o, d = origins, directions
    if ego_from_world is not None:
        o, d = ego_from_world.apply(o), quat.rotate(ego_from_world.rotation, d)
    end = o + range_m * d
    return [dict(r, origin=o[m].tolist(), direction=d[m].tolist(), end=end[m].tolist()) for m, r in enumerate(refs)]


def _runs(inside: np.ndarray) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of the runs of True in ``inside (R,)`` at least two long."""
    edges = np.flatnonzero(np.diff(np.r_[0, inside.astype(np.int8), 0]))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]


def camera_polylines(scene: Scene, entry: FrameEntry, refs: list[dict[str, Any]], origins: np.ndarray,
                     directions: np.ndarray, range_m: float) -> list[dict[str, Any]]:
    """Per camera of the frame: each world ray (``origins``, ``directions`` ``(M, 3)``) as pixel
    polylines (module docstring), the ray named by its ``refs`` entry; rays not seen left out."""
    out = []
    ranges = ray_ranges(range_m)
    pts = ray_points(origins, directions, ranges).reshape(-1, 3) if len(refs) else np.zeros((0, 3))
    for name in (c for c in scene.cameras if c in entry.images):
        cam, t_cam = scene.cameras[name], entry.image_timestamps_ns[name]
        proj = project_points(pts, [cam], world_from_ego=scene.world_from_ego(), camera_times_ns=[t_cam],
                              frame="world", extrapolate="hold")
        inside = proj.in_image[0].reshape(len(refs), len(ranges))
        uv = proj.uv[0].reshape(len(refs), len(ranges), 2)
        rays = []
        for m, ref in enumerate(refs):
            paths = [uv[m, a:b].round(2).tolist() for a, b in _runs(inside[m])]
            if paths:
                rays.append(dict(ref, paths=paths))
        out.append({"camera": name, "timestamp_ns": t_cam, "width": cam.intrinsics.width,
                    "height": cam.intrinsics.height, "rays": rays})
    return out


def frame_bearings(scene: Scene, entry: FrameEntry, tracks: list[BearingTrack], *, frame: str, range_m: float,
                   within_db: float, max_peaks: int, array: str | None = None) -> dict[str, Any]:
    """The frame's bearings (module docstring): per array (or only ``array``) the record row
    nearest the frame's time with its peaks as rays, the labelled tracks existing at that time
    as rays, and every ray in each of the frame's cameras."""
    t = entry.timestamp_ns
    track = scene.world_from_ego()
    ego_from_world = entry.world_from_ego.inverse() if frame == "ego" else None
    records = {p.array: read_record(scene, p.array) for p in scene.passive}
    refs: list[dict[str, Any]] = []
    origins, directions = [np.zeros((0, 3))], [np.zeros((0, 3))]
    arrays = []
    for name, rec in records.items():
        if array is not None and name != array:
            continue
        if rec is None:
            arrays.append({"array": name, "error": DAMAGED_LAYER})
            continue
        row = rec.nearest_row(t)
        item: dict[str, Any] = {"array": name, "band_hz": rec.band_hz.tolist(), "azimuth_rad": rec.azimuth_rad.tolist(),
                                "time_ns": None, "power_db": None, "peaks": []}
        if row is not None:
            power = rec.power[row].astype(np.float64)
            az, level = bearing_peaks(power, rec.azimuth_rad, within_db=within_db, max_peaks=max_peaks)
            ray_refs = [{"kind": "peak", "array": name, "peak": k, "time_ns": int(rec.times_ns[row]),
                         "azimuth_rad": float(az[k]), "level_db": round(float(level[k]), 2)} for k in range(len(az))]
            if len(az):
                o, d = bearing_rays(np.full(len(az), rec.times_ns[row]), az, track, rec.centre_ego_m,
                                    extrapolate="hold")
                refs += ray_refs
                origins.append(o)
                directions.append(d)
                item["peaks"] = _ray_json(ray_refs, o, d, range_m, ego_from_world)
            db = 10.0 * np.log10(np.maximum(power, 10.0 ** (DB_FLOOR / 10.0)))
            item.update(time_ns=int(rec.times_ns[row]), power_db=db.round(2).tolist())
        arrays.append(item)
    tracks_out = []
    first = next(iter(records), None)
    for bt in tracks:
        az, valid = bt.at(np.array([t], np.int64))
        if not valid[0]:
            continue
        named = bt.attributes.get("array")
        owner = named if isinstance(named, str) and named in records else first
        ref = {"kind": "track", "track_id": bt.track_id, "category": bt.category, "band_hz": bt.band_hz.tolist(),
               "array": owner, "time_ns": t, "azimuth_rad": float(az[0])}
        owner_record = records.get(owner) if owner is not None else None
        if owner is not None and owner_record is None:
            tracks_out.append(dict(ref, error=DAMAGED_LAYER))
            continue
        centre = np.zeros(3) if owner_record is None else owner_record.centre_ego_m
        o, d = bearing_rays(np.array([t], np.int64), az, track, centre, extrapolate="hold")
        refs.append(ref)
        origins.append(o)
        directions.append(d)
        tracks_out += _ray_json([ref], o, d, range_m, ego_from_world)
    o_all, d_all = np.concatenate(origins), np.concatenate(directions)
    return {"scene_id": scene.scene_id, "frame_index": entry.index, "timestamp_ns": t, "frame": frame,
            "range_m": range_m, "arrays": arrays, "tracks": tracks_out,
            "cameras": camera_polylines(scene, entry, refs, o_all, d_all, range_m)}
