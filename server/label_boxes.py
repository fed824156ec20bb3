"""Label tracks as boxes of a frame, and each point's box at its firing time: what ``prepare``
stores as ``box_id`` and what the segmentation edits fill from cuboids (the same rules).

Stationary tracks are their frame-time boxes; a moving track is its box interpolated at the
middle of the point's firing-time step (none where the track does not exist then); boxes are
inflated by a margin and a point in several belongs to the nearest centre (ties: the lower
row) — one pass over the points (:func:`engine.moving_boxes.points_in_boxes_at_times`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import TrackTable, interpolate_tracks
from engine.moving_boxes import points_in_boxes_at_times
from engine.pose_track import PoseTrack
from formats.scene_store import FrameBoxes

# a frame's firing-time steps, at most, for which every step of its range gets boxes
DENSE_STEPS = 1 << 12


@dataclass(frozen=True, eq=False)
class LabelTracks:
    """A scene's label tracks packed once (``table``), their categories, and the ego poses."""

    table: TrackTable
    categories: tuple[str, ...]
    world_from_ego: PoseTrack

    @classmethod
    def from_tracks(cls, tracks: Sequence[CuboidTrack], world_from_ego: PoseTrack) -> LabelTracks:
        return cls(TrackTable.from_tracks(tracks), tuple(t.category for t in tracks), world_from_ego)


def boxes_at(labels: LabelTracks, t_ns: int) -> tuple[FrameBoxes, np.ndarray]:
    """The label boxes existing at ``t_ns`` and their rows ``(B,) int64`` in ``labels.table``."""
    world = interpolate_tracks(labels.table, np.array([t_ns], np.int64), "none")
    rows = np.flatnonzero(world.valid[0])
    ego = world.to_ego(labels.world_from_ego)
    return FrameBoxes(
        t_ns, tuple(world.track_ids[r] for r in rows), tuple(labels.categories[r] for r in rows),
        world.sizes[0, rows], world.centers[0, rows], world.rotations[0, rows],
        ego.centers[0, rows], ego.rotations[0, rows],
    ), rows


def time_steps(offsets_ns: np.ndarray, step_ns: int) -> np.ndarray:
    """Ascending distinct firing-time steps covering every ``offsets_ns // step_ns``: the whole
    range from the first to the last (a sweep fills each step), or just the occupied ones where
    the range is not a sweep's spread of times."""
    if not len(offsets_ns):
        return np.zeros(0, np.int64)
    lo, hi = int(offsets_ns.min()) // step_ns, int(offsets_ns.max()) // step_ns
    if hi - lo < DENSE_STEPS:
        return np.arange(lo, hi + 1, dtype=np.int64)
    return np.unique(offsets_ns // step_ns)


@lru_cache(maxsize=4)
def _moving(table: TrackTable) -> tuple[TrackTable, np.ndarray]:
    """The tracks of ``table`` that are not stationary, as a table of their own (only they are
    interpolated per firing-time step), and their rows in ``table``."""
    index = np.flatnonzero(~table.stationary)
    return table.select(index), index


def firing_time_query(labels: LabelTracks, boxes: FrameBoxes, rows: np.ndarray, offsets_ns: np.ndarray,
                      step_ns: int, margin_m: float) -> dict[str, Any]:
    """The keyword arguments of ``points_in_boxes_at_times`` after the points, for the boxes
    ``boxes`` (rows ``rows``, from :func:`boxes_at`) and points firing at ``boxes.timestamp_ns +
    offsets_ns``: moving tracks at the middle of each ``step_ns`` step, boxes grown by
    ``margin_m``."""
    moving = np.flatnonzero(~labels.table.stationary[rows])
    step = int(step_ns)
    steps = time_steps(offsets_ns, step) if len(moving) and len(offsets_ns) else np.zeros(0, np.int64)
    tracks, index = _moving(labels.table)
    at = interpolate_tracks(tracks, boxes.timestamp_ns + steps * step + step // 2, "none")
    r = np.searchsorted(index, rows[moving])
    return dict(step_ns=step, centers=boxes.world_centers, sizes=boxes.sizes, rotations=boxes.world_rotations,
                moving=moving, steps=steps, moving_centers=at.centers[:, r], moving_sizes=at.sizes[:, r],
                moving_rotations=at.rotations[:, r], moving_valid=at.valid[:, r], margin=margin_m)


def box_ids(labels: LabelTracks, boxes: FrameBoxes, rows: np.ndarray, xyz: np.ndarray, offsets_ns: np.ndarray,
            step_ns: int, margin_m: float) -> np.ndarray:
    """``(N,) int32`` row of ``boxes`` holding each world point (``(N, 3) float64``, firing at
    ``boxes.timestamp_ns + offsets_ns``), -1 for none (module docstring)."""
    return points_in_boxes_at_times(xyz, offsets_ns, **firing_time_query(labels, boxes, rows, offsets_ns, step_ns,
                                                                         margin_m))
