"""Export cuboid tracks as KITTI tracking labels (``label_02/SSSS.txt``).

One line per object and frame, as the KITTI tracking devkit reads them::

    frame track_id type truncated occluded alpha left top right bottom h w l x y z rotation_y

Boxes are interpolated at the frame times (:mod:`engine.cuboid_interp`, each track in its
interpolation mode, no extrapolation),
moved to the ego frame with ``world_from_ego`` and to the rectified reference camera with
``ego_from_reference`` (KITTI: rectified camera 0; default the labelled camera itself), then
converted by :func:`formats.conventions.kitti_from_camera_boxes` (bottom centre,
``rotation_y``, ``alpha``). The 2D box is the exact pinhole projection into ``camera``
(:func:`engine.cuboid_projection.project_cuboids`), clipped to the image; only boxes visible
in ``camera`` are written, as in KITTI. Track ids are kept when all are decimal
integers, otherwise numbered 0.. in the given order (the mapping is returned). Categories
become KITTI types through :data:`formats.categories.KITTI` (unmapped ones are refused,
passed or dropped: :mod:`formats.categories`); ids are numbered over all tracks, dropped or not.

Estimates (KITTI annotators judged these by eye):

- ``truncated``: the tracking readme's integer level (it notes that this differs from the
  object benchmark's float in [0, 1]) from the fraction of the box's projected footprint
  outside the image: 0 (none), 1 (up to half), 2 (more than half). The footprint is the
  axis-aligned rectangle of the 8 projected corners; a corner behind the camera makes it
  unbounded: fraction 1.
- ``occluded``: from the LiDAR points of the frame (``sweeps``, ego frame) that fall in the
  box (:func:`engine.points_in_boxes.points_in_boxes`) and project into the image: the
  fraction hidden in the camera's z-buffer (:func:`engine.zbuffer.zbuffer`, default splat and
  tolerances) gives 0 (≤ 20 % hidden), 1 (≤ 60 %), 2 (more); 3 (unknown) when no such point
  exists or no sweeps are given.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engine import quaternion as quat
from engine.box_visibility import box_point_visibility
from engine.camera import Camera
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import Interpolation, interpolate_tracks
from engine.cuboid_projection import project_cuboids
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.categories import KITTI, Unmapped
from formats.conventions import kitti_from_camera_boxes

OCCLUSION_LEVELS = (0.2, 0.6)  # hidden fraction upper bounds of levels 0 and 1


def truncation(corners_uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """Fraction ``(M,)`` of each footprint (bounding rectangle of ``(M, 8, 2)`` corner pixels)
    outside the image ``[-0.5, width - 0.5] × [-0.5, height - 0.5]``; 1 where a corner is NaN."""
    uv = np.asarray(corners_uv, dtype=np.float64).reshape(-1, 8, 2)
    ok = np.asarray(np.isfinite(uv).all(axis=(1, 2)))
    safe = np.where(ok[:, None, None], uv, 0.0)
    lo, hi = safe.min(axis=1), safe.max(axis=1)
    area = np.prod(hi - lo, axis=1)
    clipped = np.prod(np.clip(np.minimum(hi, [width - 0.5, height - 0.5]) - np.maximum(lo, -0.5), 0.0, None), axis=1)
    out = np.ones(len(uv))
    good = ok & (area > 0)
    out[good] = 1.0 - clipped[good] / area[good]
    return out


def truncation_level(fraction: np.ndarray) -> np.ndarray:
    """KITTI tracking ``truncated`` ``(M,) int``: 0 (fraction 0), 1 (≤ 0.5), 2 (more)."""
    f = np.asarray(fraction, dtype=np.float64)
    return np.where(f <= 0.0, 0, np.where(f <= 0.5, 1, 2))


def occlusion_level(in_image: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """KITTI ``occluded`` ``(B,) int`` from the box points in the image and those visible."""
    n = np.asarray(in_image, dtype=np.float64)
    hidden = 1.0 - np.asarray(visible, dtype=np.float64) / np.maximum(n, 1.0)
    return np.where(n == 0, 3, np.searchsorted(OCCLUSION_LEVELS, hidden, side="left"))


def kitti_track_ids(tracks: Sequence[CuboidTrack]) -> dict[str, int]:
    """Fathom track id → KITTI integer id (kept when every id is a decimal integer)."""
    ids = [t.track_id for t in tracks]
    if all(i.isdigit() for i in ids) and len({int(i) for i in ids}) == len(ids):
        return {i: int(i) for i in ids}
    return {i: n for n, i in enumerate(ids)}


def kitti_tracking_lines(
    tracks: Sequence[CuboidTrack],
    frame_times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    camera: Camera,
    *,
    ego_from_reference: SE3 | None = None,
    types: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    sweeps: Sequence[np.ndarray] | None = None,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> list[str]:
    """The label lines (frame index = position in ``frame_times_ns``), frame-major, ids ascending.

    ``types`` / ``unmapped``: categories → KITTI types (the default table updated by
    ``types``; see :mod:`formats.categories`, whose ``UnmappedCategoryError`` names the
    categories refused). ``sweeps``: per frame the LiDAR points ``(N, 3)`` in the ego frame at
    the frame time (for ``occluded``; without them it is 3). ``interpolation``: the tracks'
    modes between keyframes (:func:`engine.cuboid_interp.interpolate_tracks`: one for all or
    one per track, default linear)."""
    times = np.asarray(frame_times_ns, dtype=np.int64)
    ids = kitti_track_ids(tracks)
    kinds = KITTI.resolve((t.category for t in tracks), types, unmapped)
    if not tracks or not len(times):
        return []
    if sweeps is not None and len(sweeps) != len(times):
        raise ValueError(f"sweeps: one per frame ({len(times)}), got {len(sweeps)}")
    ego = interpolate_tracks(tracks, times, interpolation=interpolation).to_ego(world_from_ego)
    ref_from_ego = (camera.ego_from_camera if ego_from_reference is None else ego_from_reference).inverse()
    width, height = camera.intrinsics.width, camera.intrinsics.height
    kept = [n for n, t in enumerate(tracks) if kinds[t.category] is not None]
    order = sorted(kept, key=lambda n: ids[tracks[n].track_id])
    lines: list[str] = []
    for f in range(len(times)):
        live = [n for n in order if ego.valid[f, n]]
        if not live:
            continue
        c, s, q = ego.centers[f, live], ego.sizes[f, live], ego.rotations[f, live]
        proj = project_cuboids(c, s, q, [camera], samples_per_edge=1)
        k = kitti_from_camera_boxes(ref_from_ego.apply(c), s,
                                    quat.multiply(np.broadcast_to(ref_from_ego.rotation, q.shape), q))
        truncated = truncation_level(truncation(proj.corners_uv[:, 0], width, height))
        if sweeps is None:
            occluded = np.full(len(live), 3)
        else:
            _, in_image, visible = box_point_visibility(sweeps[f], c, s, q, [camera])
            occluded = occlusion_level(in_image, visible)
        for j, n in enumerate(live):
            if not proj.visible[j, 0]:
                continue
            track = tracks[n]
            kind = kinds[track.category]
            values = (k["alpha"][j], *proj.boxes[j, 0], k["h"][j], k["w"][j], k["l"][j],
                      k["x"][j], k["y"][j], k["z"][j], k["rotation_y"][j])
            lines.append(f"{f} {ids[track.track_id]} {kind} {truncated[j]} {occluded[j]} "
                         + " ".join(f"{v:.6f}" for v in values))
    return lines


def write_kitti_tracking(
    path: str | os.PathLike,
    tracks: Sequence[CuboidTrack],
    frame_times_ns: np.ndarray,
    world_from_ego: PoseTrack,
    camera: Camera,
    *,
    ego_from_reference: SE3 | None = None,
    types: Mapping[str, str | None] | None = None,
    unmapped: Unmapped = "refuse",
    sweeps: Sequence[np.ndarray] | None = None,
    interpolation: Interpolation | Sequence[Interpolation] | None = None,
) -> Path:
    """Write ``label_02/SSSS.txt`` (see :func:`kitti_tracking_lines`); returns the path."""
    out = Path(path)
    lines = kitti_tracking_lines(tracks, frame_times_ns, world_from_ego, camera, ego_from_reference=ego_from_reference,
                                 types=types, unmapped=unmapped, sweeps=sweeps, interpolation=interpolation)
    out.write_text("".join(line + "\n" for line in lines))
    return out
