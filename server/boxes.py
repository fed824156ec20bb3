"""Boxes of one frame for the cuboids route: label tracks interpolated now, or the prepared boxes file."""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.cuboid import CuboidTrack
from engine.cuboid_interp import BoxFrames, Extrapolation, Interpolation, interpolate_tracks
from engine.points_in_boxes import points_in_boxes
from engine.se3 import SE3
from formats.scene_store import FrameEntry, Scene, column_values, positions
from server.schemas import Box
from server.store_errors import reading


def tracks_from_document(doc: dict[str, Any]) -> list[CuboidTrack]:
    """Engine tracks from a stored (already validated) label document."""
    out = []
    for t in doc["tracks"]:
        kf = t["keyframes"]
        out.append(CuboidTrack(
            t["id"], t["category"],
            np.array([k["timestamp_ns"] for k in kf], np.int64),
            np.array([k["center"] for k in kf], np.float64),
            np.array([k["size"] for k in kf], np.float64),
            np.array([k["rotation"] for k in kf], np.float64),
            stationary=t.get("stationary", False), attributes=t.get("attributes", {}),
            keyframe_attributes=[k.get("attributes", {}) for k in kf],
        ))
    return out


def interpolation_modes(doc: dict[str, Any]) -> list[Interpolation]:
    """Each track's interpolation mode between keyframes (linear unless the document sets one),
    in the order of :func:`tracks_from_document`: what every route that interpolates the
    label tracks (cuboids, exports, propagation) interpolates them with."""
    return [t.get("interpolation", "linear") for t in doc["tracks"]]


def document_boxes(doc: dict[str, Any], times_ns: np.ndarray, extrapolate: Extrapolation = "none"
                   ) -> tuple[list[CuboidTrack], BoxFrames]:
    """The document's tracks and their boxes at ``times_ns (M,) int64``, each track
    interpolated in its own mode (:func:`interpolation_modes`)."""
    tracks = tracks_from_document(doc)
    return tracks, interpolate_tracks(tracks, np.asarray(times_ns, np.int64), extrapolate,
                                      interpolation=interpolation_modes(doc))


def frame_boxes(scene: Scene, entry: FrameEntry, doc: dict[str, Any], frame: str) -> list[Box]:
    """Boxes of every track that exists at the frame's timestamp (no extrapolation), in the
    ``world`` or ``ego`` frame, each with the number of the frame's points inside it;
    :class:`~server.store_errors.DamagedScene` if the points file cannot be read."""
    tracks, boxes = document_boxes(doc, np.array([entry.timestamp_ns], np.int64))
    valid = boxes.valid[0]
    with reading(scene, entry):
        xyz = positions(scene.stored_points(entry.index))
    # counts do not depend on the frame (a rigid motion), so count in the stored world frame
    _, counts = points_in_boxes(xyz, boxes.centers[0, valid], boxes.sizes[0, valid], boxes.rotations[0, valid])
    if frame == "ego":
        pose = entry.world_from_ego
        boxes = boxes.to_ego(SE3(pose.rotation[None], pose.translation[None]))
    out = []
    for j, n in zip(np.flatnonzero(valid), counts):
        out.append(Box(
            track_id=tracks[j].track_id, category=tracks[j].category,
            center=tuple(boxes.centers[0, j]), size=tuple(boxes.sizes[0, j]),
            rotation=tuple(boxes.rotations[0, j]), points_in_box=int(n),
        ))
    return out


def prepared_boxes(scene: Scene, entry: FrameEntry, frame: str) -> list[Box] | None:
    """The boxes file ``fathom prepare`` wrote for the frame (None: prepared without labels),
    in the ``world`` or ``ego`` frame, counts from the stored ``box_id`` column (each point
    tested at its own firing time, so a moving box's count can differ slightly from the
    label-store route's count at the frame timestamp); DamagedScene if a file cannot be read."""
    with reading(scene, entry, "boxes file"):
        boxes = scene.boxes(entry.index)
    if boxes is None:
        return None
    with reading(scene, entry):
        ids = column_values(scene.stored_points(entry.index), "box_id")
    counts = np.bincount(ids[ids >= 0], minlength=len(boxes.track_ids))
    centers, rotations = ((boxes.world_centers, boxes.world_rotations) if frame == "world"
                          else (boxes.ego_centers, boxes.ego_rotations))
    return [
        Box(track_id=t, category=c, center=tuple(p), size=tuple(s), rotation=tuple(q), points_in_box=int(n))
        for t, c, p, s, q, n in zip(boxes.track_ids, boxes.categories, centers, boxes.sizes, rotations, counts)
    ]
