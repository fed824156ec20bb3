"""Box propagation for a label track on a prepared scene (the route's engine and store calls).

The frames are read lazily (only those propagation reaches), as world-frame points with their
firing times (``time_offset_ns``). Seeds: the track's keyframes within the frame range, each
on its nearest frame with the track's box at that frame's time (its own interpolation
mode); the first and the last of them (one or two seeds). With one seed on a track of several
keyframes, the track's velocity and yaw rate there are the motion prior. The result replaces
the track's keyframes within the time span of the boxes it found; keyframes outside it stay.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.cuboid import Cuboid, CuboidTrack
from engine.cuboid_interp import Interpolation, interpolate_tracks
from engine.cuboid_motion import heading
from engine.propagate import FramePoints, PropagateParams, Propagation, propagate_track
from formats.scene_store import Scene, column_values, positions
from server.boxes import interpolation_modes, tracks_from_document
from server.store_errors import reading

_PRIOR_DT_NS = 50_000_000  # half the time step of the track's velocity at a seed


class SceneFramePoints(Sequence[FramePoints]):
    """The frames of a prepared scene by position, read on first use (world frame, float64)."""

    def __init__(self, scene: Scene):
        self.scene = scene
        self._cache: dict[int, FramePoints] = {}

    def __len__(self) -> int:
        return len(self.scene.frames)

    def __getitem__(self, i: int) -> FramePoints:  # type: ignore[override]
        if i not in self._cache:
            entry = self.scene.frames[i]
            with reading(self.scene, entry):
                table = self.scene.stored_points(entry.index)
                offsets = (column_values(table, "time_offset_ns").astype(np.int64)
                           if "time_offset_ns" in table.schema.names else None)
                self._cache[i] = FramePoints(entry.timestamp_ns, positions(table), offsets)
        return self._cache[i]


def _track(body: dict[str, Any]) -> tuple[CuboidTrack, Interpolation]:
    doc = {"tracks": [body]}
    return tracks_from_document(doc)[0], interpolation_modes(doc)[0]


def seeds_of(scene: Scene, body: dict[str, Any], first: int, last: int) -> tuple[list[tuple[int, Cuboid]], Any]:
    """``(seeds, (velocity, yaw rate) or None)`` of a stored track body on frames ``first..last``
    (positions); no seeds when no keyframe lies within their time span."""
    track, mode = _track(body)
    stamps = np.array([scene.frames[i].timestamp_ns for i in range(first, last + 1)], np.int64)
    keys = track.timestamps_ns[(track.timestamps_ns >= stamps[0]) & (track.timestamps_ns <= stamps[-1])]
    frames = sorted({first + int(np.argmin(np.abs(stamps - k))) for k in keys})
    frames = frames[:1] + frames[-1:] if len(frames) > 1 else frames
    if not frames:
        return [], None
    at = np.array([scene.frames[f].timestamp_ns for f in frames], np.int64)
    boxes = interpolate_tracks([track], at, "hold", interpolation=mode)
    seeds = [(f, Cuboid(boxes.centers[i, 0], boxes.sizes[i, 0], boxes.rotations[i, 0])) for i, f in enumerate(frames)]
    prior = None
    if len(seeds) == 1 and len(track) > 1 and not track.stationary:
        around = at[0] + np.array([-_PRIOR_DT_NS, _PRIOR_DT_NS])
        near = interpolate_tracks([track], around, "constant_velocity", interpolation=mode)
        span = 2 * _PRIOR_DT_NS * 1e-9
        dyaw = np.angle(np.exp(1j * np.diff(heading(near.rotations[:, 0]))))[0]
        prior = ((near.centers[1, 0] - near.centers[0, 0]) / span, float(dyaw / span))
    return seeds, prior


def propagate_body(scene: Scene, body: dict[str, Any], first: int, last: int,
                   params: PropagateParams | None = None) -> tuple[Propagation, list[int]] | None:
    """Propagation of the track ``body`` on frames ``first..last`` and its seed frames; None
    without a keyframe in the range."""
    seeds, prior = seeds_of(scene, body, first, last)
    if not seeds:
        return None
    velocity, rate = prior if prior is not None else (None, 0.0)
    result = propagate_track(SceneFramePoints(scene), seeds, first, last, velocity, rate, params)
    return result, [f for f, _ in seeds]


def merged_body(scene: Scene, body: dict[str, Any], result: Propagation) -> dict[str, Any]:
    """The track ``body`` with its keyframes within the span of ``result``'s boxes replaced by them."""
    ok = np.flatnonzero(result.valid)
    stamps = [scene.frames[int(result.frames[i])].timestamp_ns for i in ok]
    kept = [k for k in body["keyframes"] if not stamps[0] <= k["timestamp_ns"] <= stamps[-1]]
    new = [{"timestamp_ns": int(t), "center": result.centers[i].tolist(), "size": result.sizes[i].tolist(),
            "rotation": result.rotations[i].tolist(), "attributes": {}} for t, i in zip(stamps, ok)]
    return {**body, "keyframes": sorted(kept + new, key=lambda k: k["timestamp_ns"])}
