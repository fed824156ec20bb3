"""A frame's label boxes file: the tracks that exist at the frame timestamp, interpolated there
(layout in the package docstring, :mod:`formats.scene_store`)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from formats.errors import FormatError
from formats.scene_store.points import arrow_array


@dataclass(frozen=True, eq=False)
class FrameBoxes:
    """Label boxes of one frame, interpolated at its timestamp (the boxes file).

    Attributes:
        timestamp_ns: the frame timestamp (int64 ns).
        track_ids, categories: B track ids and class names; ``box_id`` k of a point is row k.
        sizes: ``(B, 3) float64`` m (length, width, height).
        world_centers: ``(B, 3) float64`` m, world frame relative to the scene origin.
        world_rotations: ``(B, 4) float64`` wxyz, box → world.
        ego_centers, ego_rotations: the same boxes in the ego frame at ``timestamp_ns``.
    """

    timestamp_ns: int
    track_ids: tuple[str, ...]
    categories: tuple[str, ...]
    sizes: np.ndarray
    world_centers: np.ndarray
    world_rotations: np.ndarray
    ego_centers: np.ndarray
    ego_rotations: np.ndarray

    def __post_init__(self) -> None:
        b = len(self.track_ids)
        if len(self.categories) != b:
            raise ValueError(f"{b} track_ids but {len(self.categories)} categories")
        for name, width in (("sizes", 3), ("world_centers", 3), ("world_rotations", 4),
                            ("ego_centers", 3), ("ego_rotations", 4)):
            a = np.asarray(getattr(self, name), dtype=np.float64)
            if a.size == 0:
                a = a.reshape(0, width)
            if a.shape != (b, width) or not np.all(np.isfinite(a)):
                raise ValueError(f"{name} must be finite with shape ({b}, {width}), got {a.shape}")
            object.__setattr__(self, name, a)

    def __len__(self) -> int:
        return len(self.track_ids)

    def to_json_text(self) -> str:
        """The boxes document (module docstring) as JSON text. Every float is written as the
        shortest decimal that reads back to the same float64 (Arrow's vectorised float to
        string cast), so there is no per-float Python work and the round trip is exact."""
        flat = np.concatenate([self.sizes, self.world_centers, self.world_rotations, self.ego_centers,
                               self.ego_rotations], axis=1).ravel()  # 17 numbers per box
        num = pc.cast(arrow_array(flat, pa.float64()), pa.string()).to_pylist()
        for i in np.flatnonzero((flat == 0) & np.signbit(flat)):
            num[i] = "-0.0"  # Arrow writes "-0", which JSON reads as the integer 0
        quote = json.encoder.encode_basestring_ascii  # what json.dumps does to a str, without its overhead
        boxes = []
        for k, (track, category) in enumerate(zip(self.track_ids, self.categories)):
            v = num[17 * k:17 * k + 17]
            boxes.append(
                f'{{"track_id": {quote(track)}, "category": {quote(category)}, "size": [{v[0]}, {v[1]}, {v[2]}], '
                f'"world": {{"center": [{v[3]}, {v[4]}, {v[5]}], "rotation": [{v[6]}, {v[7]}, {v[8]}, {v[9]}]}}, '
                f'"ego": {{"center": [{v[10]}, {v[11]}, {v[12]}], "rotation": [{v[13]}, {v[14]}, {v[15]}, {v[16]}]}}}}')
        return f'{{"timestamp_ns": {int(self.timestamp_ns)}, "boxes": [{", ".join(boxes)}]}}'

    def to_json(self) -> dict[str, Any]:
        """The boxes document (module docstring) as Python objects (parsed from
        :meth:`to_json_text`, the one definition of the layout)."""
        return json.loads(self.to_json_text())

    @staticmethod
    def from_json(doc: Any, path: str | os.PathLike | None = None) -> "FrameBoxes":
        """Parse a boxes file; FormatError names what is wrong."""
        try:
            boxes = doc["boxes"]
            return FrameBoxes(
                int(doc["timestamp_ns"]), tuple(str(b["track_id"]) for b in boxes),
                tuple(str(b["category"]) for b in boxes),
                np.array([b["size"] for b in boxes], np.float64),
                np.array([b["world"]["center"] for b in boxes], np.float64),
                np.array([b["world"]["rotation"] for b in boxes], np.float64),
                np.array([b["ego"]["center"] for b in boxes], np.float64),
                np.array([b["ego"]["rotation"] for b in boxes], np.float64),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(path, None, f"a boxes document ({type(exc).__name__}: {exc})") from None
