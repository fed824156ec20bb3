"""Cuboids (3D boxes) and cuboid tracks, stored in the world frame.

A box is its centre (the middle of the box), its size ``(length along local x, width along
local y, height along local z)`` and a rotation quaternion (w, x, y, z) from box frame to
world. Interior tests are inclusive of the faces.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.typing import Float64Array, Quaternions, TimesNs, Vectors3

# Corner order: bit 0 → +x (front), bit 1 → +y (left), bit 2 → +z (top).
# Corner i has local coordinates (±l/2, ±w/2, ±h/2) with signs from the bits of i.
CORNER_SIGNS = np.array([[1 if i & 1 else -1, 1 if i & 2 else -1, 1 if i & 4 else -1] for i in range(8)], float)
# The 12 edges as corner index pairs: 4 along x, 4 along y, 4 along z.
EDGES = np.array(
    [[0, 1], [2, 3], [4, 5], [6, 7], [0, 2], [1, 3], [4, 6], [5, 7], [0, 4], [1, 5], [2, 6], [3, 7]]
)


def _check_boxes(centers, sizes, rotations) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    c = np.asarray(centers, dtype=np.float64)
    s = np.asarray(sizes, dtype=np.float64)
    q = quat.as_quaternions(rotations, "rotations")
    if c.ndim == 0 or c.shape[-1] != 3 or s.shape != c.shape or q.shape[:-1] != c.shape[:-1]:
        raise ValueError(
            f"boxes need centers (..., 3), sizes (..., 3), rotations (..., 4); "
            f"got {c.shape}, {s.shape}, {q.shape}"
        )
    if not (np.all(np.isfinite(c)) and np.all(np.isfinite(s))):
        raise ValueError("box centers/sizes contain NaN or infinite values")
    if np.any(s < 0):
        raise ValueError("box sizes must be non-negative")
    return c, s, q


def box_corners(centers: Vectors3, sizes: Vectors3, rotations: Quaternions) -> Float64Array:
    """Corners ``(..., 8, 3) float64`` of boxes ``centers (..., 3)``, ``sizes (..., 3)``,
    ``rotations (..., 4)``, in :data:`CORNER_SIGNS` order."""
    c, s, q = _check_boxes(centers, sizes, rotations)
    local = 0.5 * s[..., None, :] * CORNER_SIGNS
    r = quat.to_matrix(q)
    return np.einsum("...ij,...kj->...ki", r, local) + c[..., None, :]


@dataclass(frozen=True, eq=False)
class Cuboid:
    """One box: ``center (3,)`` m, ``size (3,)`` m (l, w, h), ``rotation (4,)`` wxyz, world frame."""

    center: Vectors3
    size: Vectors3
    rotation: Quaternions

    def __post_init__(self) -> None:
        c, s, q = _check_boxes(self.center, self.size, self.rotation)
        if c.shape != (3,):
            raise ValueError(f"Cuboid.center must be (3,), got {c.shape}")
        object.__setattr__(self, "center", c)
        object.__setattr__(self, "size", s)
        object.__setattr__(self, "rotation", q)

    def corners(self) -> Float64Array:
        """``(8, 3) float64`` corners in the world frame."""
        return box_corners(self.center, self.size, self.rotation)


@dataclass(eq=False)
class CuboidTrack:
    """A labelled object over time: keyframes of one box in the world frame.

    Attributes:
        track_id: unique within a scene.
        category: class name (``"car"``, ``"pedestrian"``, ``"wreck"``).
        timestamps_ns: ``(K,) int64`` strictly increasing keyframe times.
        centers: ``(K, 3) float64`` m. sizes: ``(K, 3) float64`` m (l, w, h).
        rotations: ``(K, 4) float64`` wxyz.
        stationary: the object does not move (one pose for all time).
        attributes: static attributes (``{"color": "red"}``).
        keyframe_attributes: per keyframe attribute dicts (``[{"occluded": True}, ...]``).
    """

    track_id: str
    category: str
    timestamps_ns: TimesNs
    centers: Vectors3
    sizes: Vectors3
    rotations: Quaternions
    stationary: bool = False
    attributes: dict[str, Any] = field(default_factory=dict)
    keyframe_attributes: list[dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.track_id:
            raise ValueError("CuboidTrack.track_id must be a non-empty string")
        ts = np.asarray(self.timestamps_ns)
        if ts.ndim != 1 or len(ts) == 0 or not np.issubdtype(ts.dtype, np.integer):
            raise ValueError(f"track {self.track_id}: timestamps_ns must be a non-empty int64 (K,) array")
        ts = ts.astype(np.int64)
        if np.any(np.diff(ts) <= 0):
            raise ValueError(f"track {self.track_id}: keyframe timestamps must be strictly increasing")
        c, s, q = _check_boxes(self.centers, self.sizes, self.rotations)
        if c.shape != (len(ts), 3):
            raise ValueError(f"track {self.track_id}: {len(ts)} keyframes but centers {c.shape}")
        if self.keyframe_attributes is not None and len(self.keyframe_attributes) != len(ts):
            raise ValueError(
                f"track {self.track_id}: {len(ts)} keyframes but {len(self.keyframe_attributes)} keyframe_attributes"
            )
        self.timestamps_ns, self.centers, self.sizes, self.rotations = ts, c, s, q

    def __len__(self) -> int:
        return len(self.timestamps_ns)
