"""Export 2D tracks of camera streams as COCO (video style) and KITTI 2D object labels.

Both take the tracks (:class:`engine.tracks2d.Track2D`) and, per camera, the frames to
export (:class:`VideoFrames`: the image size and each frame's time, e.g. a video's index);
each track's shape is interpolated at each frame time (no extrapolation).

COCO (``instances.json``): ``videos`` (one per camera), ``images`` (one per frame, with
``video_id``, ``frame_id`` = the frame's position from 0, ``file_name`` ``CAMERA/NNNNNN.jpg``,
``timestamp_ns``), ``categories`` (sorted names, ids from 1) and ``annotations`` with
``track_id`` (an integer per track, from 1; ``track_name`` keeps Fathom's id) and the track's
``attributes``. Coordinates move from Fathom's pixel centres to COCO's pixel corners
(``x = u + 0.5``): a box's ``bbox`` is ``[u0 + 0.5, v0 + 0.5, u1 − u0, v1 − v0]``; a polygon
gives ``segmentation`` (one ring), its ``bbox`` and its area (shoelace); a polyline, which COCO
lacks, its ``bbox``, ``area`` 0 and its points as ``polyline`` ``[x0, y0, x1, y1, ...]``.

KITTI 2D (``CAMERA/NNNNNN.txt`` per frame, the object benchmark's 15 fields): box tracks
only, one line ``type truncated occluded -10 left top right bottom -1 -1 -1 -1000 -1000 -1000
-10`` (no 3D box: KITTI's placeholder values) with the box in Fathom's pixel coordinates;
``truncated`` (0-1) and ``occluded`` (0-3) from the track's attributes of those names (0 and
3, unknown, without); ``type`` the category with spaces as ``_``. A frame without boxes gets
an empty file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from engine.tracks2d import Track2D


@dataclass(frozen=True)
class VideoFrames:
    """The frames of ``camera`` to export: ``width``, ``height`` and ``times_ns (F,)``."""

    camera: str
    width: int
    height: int
    times_ns: np.ndarray


def _shapes(track: Track2D, video: VideoFrames) -> list[np.ndarray | None]:
    return track.at(video.times_ns) if track.camera == video.camera else [None] * len(video.times_ns)


def coco_document(tracks: Sequence[Track2D], videos: Sequence[VideoFrames]) -> dict[str, Any]:
    """The COCO document (see the module docstring)."""
    categories = {name: k for k, name in enumerate(sorted({t.category for t in tracks}), 1)}
    track_ids = {t.track_id: k for k, t in enumerate(tracks, 1)}
    doc: dict[str, Any] = {
        "info": {"description": "Fathom 2D tracks", "version": "1"},
        "videos": [{"id": v, "name": video.camera, "width": video.width, "height": video.height}
                   for v, video in enumerate(videos, 1)],
        "categories": [{"id": k, "name": name} for name, k in categories.items()],
        "images": [], "annotations": [],
    }
    image_id = 0
    for v, video in enumerate(videos, 1):
        shapes = [_shapes(t, video) for t in tracks]
        for f, t_ns in enumerate(np.asarray(video.times_ns, np.int64).tolist()):
            image_id += 1
            doc["images"].append({"id": image_id, "video_id": v, "frame_id": f, "width": video.width,
                                  "height": video.height, "file_name": f"{video.camera}/{f:06d}.jpg",
                                  "timestamp_ns": t_ns})
            for track, track_shapes in zip(tracks, shapes):
                shape = track_shapes[f]
                if shape is not None:
                    doc["annotations"].append(_coco_annotation(len(doc["annotations"]) + 1, image_id, track, shape,
                                                               categories[track.category], track_ids[track.track_id]))
    return doc


def _coco_annotation(ann_id: int, image_id: int, track: Track2D, shape: np.ndarray, category: int, track_id: int
                     ) -> dict[str, Any]:
    corners = shape + 0.5  # pixel centres → pixel corners
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    out: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": category, "iscrowd": 0,
                           "track_id": track_id, "track_name": track.track_id,
                           "bbox": [float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1])],
                           "attributes": dict(track.attributes)}
    if track.shape == "box":
        out["area"] = float((hi[0] - lo[0]) * (hi[1] - lo[1]))
    elif track.shape == "polygon":
        x, y = corners[:, 0], corners[:, 1]
        out["segmentation"] = [corners.ravel().tolist()]
        out["area"] = float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)
    else:
        out["polyline"] = corners.ravel().tolist()
        out["area"] = 0.0
    return out


def write_coco(path: str | os.PathLike, tracks: Sequence[Track2D], videos: Sequence[VideoFrames]) -> Path:
    """Write :func:`coco_document` as JSON; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco_document(tracks, videos), allow_nan=False))
    return path


def kitti_2d_lines(tracks: Sequence[Track2D], video: VideoFrames) -> list[list[str]]:
    """Per frame of ``video``, its KITTI object label lines (box tracks only)."""
    out: list[list[str]] = [[] for _ in range(len(video.times_ns))]
    for track in tracks:
        if track.shape != "box":
            continue
        kind = track.category.replace(" ", "_")
        truncated = float(track.attributes.get("truncated", 0.0))
        occluded = int(track.attributes.get("occluded", 3))
        for f, shape in enumerate(_shapes(track, video)):
            if shape is not None:
                (u0, v0), (u1, v1) = shape
                out[f].append(f"{kind} {truncated:.2f} {occluded} -10 {u0:.2f} {v0:.2f} {u1:.2f} {v1:.2f} "
                              "-1 -1 -1 -1000 -1000 -1000 -10")
    return out


def write_kitti_2d(out_dir: str | os.PathLike, tracks: Sequence[Track2D], videos: Sequence[VideoFrames]
                   ) -> list[Path]:
    """``OUT/CAMERA/NNNNNN.txt`` for every frame of every video; returns the files."""
    written = []
    for video in videos:
        folder = Path(out_dir) / video.camera
        folder.mkdir(parents=True, exist_ok=True)
        for f, lines in enumerate(kitti_2d_lines(tracks, video)):
            path = folder / f"{f:06d}.txt"
            path.write_text("".join(line + "\n" for line in lines))
            written.append(path)
    return written
