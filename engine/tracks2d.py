"""2D labels on camera streams: boxes, polygons and polylines keyed in time, interpolated.

A :class:`Track2D` lives in one camera's image (pixels, u right, v down; pixel (0, 0) is the
centre of the top-left pixel) and holds a shape at each keyframe time. Between two keyframes:

- boxes ``[[u0, v0], [u1, v1]]`` (``u0 <= u1``, ``v0 <= v1``): each coordinate linear in time;
- polygons and polylines with equal vertex counts: each vertex linear in time;
- with different vertex counts: both keyframes' outlines are resampled to the larger count at
  equal arc-length steps from their first vertex (a polygon around its closed ring, a
  polyline from its first to its last vertex; vertex order and orientation as drawn) and
  those vertices are interpolated linearly, so a polygon gaining a vertex morphs smoothly.

A track exists from its first to its last keyframe (a one-keyframe track at that instant
only); outside, it has no shape.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from engine._jit import pjit, prange
from engine.pose_track import find_interval
from engine.typing import BoolArray, Float64Array, TimesNs

SHAPES = ("box", "polygon", "polyline")
MIN_VERTICES = {"box": 2, "polygon": 3, "polyline": 2}


@dataclass(frozen=True, eq=False)
class Track2D:
    """``shape`` ("box", "polygon", "polyline") of ``category`` in ``camera`` at keyframes
    ``timestamps_ns (K,) int64`` (strictly increasing); ``points[k]`` is keyframe ``k``'s
    ``(V_k, 2) float64`` pixels (a box: its two corners, min then max)."""

    track_id: str
    category: str
    camera: str
    shape: str
    timestamps_ns: TimesNs
    points: tuple[Float64Array, ...]
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = np.asarray(self.timestamps_ns)
        if self.shape not in SHAPES:
            raise ValueError(f"track {self.track_id!r}: shape must be one of {SHAPES}, got {self.shape!r}")
        if t.ndim != 1 or len(t) == 0 or not np.issubdtype(t.dtype, np.integer) or np.any(np.diff(t) <= 0):
            raise ValueError(f"track {self.track_id!r}: timestamps_ns must be strictly increasing int (K,), K >= 1")
        if len(self.points) != len(t):
            raise ValueError(f"track {self.track_id!r}: {len(t)} keyframes but {len(self.points)} shapes")
        pts = []
        for k, p in enumerate(self.points):
            a = np.array(p, dtype=np.float64)
            if a.ndim != 2 or a.shape[1] != 2 or len(a) < MIN_VERTICES[self.shape] or not np.all(np.isfinite(a)):
                raise ValueError(f"track {self.track_id!r} keyframe {k}: a {self.shape} needs finite (V, 2) pixels, "
                                 f"V >= {MIN_VERTICES[self.shape]}, got shape {a.shape}")
            if self.shape == "box" and (len(a) != 2 or np.any(a[0] > a[1])):
                raise ValueError(f"track {self.track_id!r} keyframe {k}: a box is [[u0, v0], [u1, v1]] with "
                                 f"u0 <= u1 and v0 <= v1")
            a.setflags(write=False)
            pts.append(a)
        object.__setattr__(self, "timestamps_ns", t.astype(np.int64))
        object.__setattr__(self, "points", tuple(pts))

    def at(self, times_ns: TimesNs | int) -> list[Float64Array | None]:
        """The shape ``(V, 2)`` at each time (None outside the keyframe span)."""
        q = np.atleast_1d(np.asarray(times_ns, np.int64))
        ts = self.timestamps_ns
        out: list[Float64Array | None] = []
        for t in q.tolist():
            if t < ts[0] or t > ts[-1]:
                out.append(None)
                continue
            k = min(int(np.searchsorted(ts, t, side="right")) - 1, len(ts) - 2)
            if len(ts) == 1 or t == ts[k]:
                out.append(self.points[max(k, 0)].copy())
                continue
            u = (t - int(ts[k])) / (int(ts[k + 1]) - int(ts[k]))
            a, b = self.points[k], self.points[k + 1]
            if len(a) != len(b):
                n, closed = max(len(a), len(b)), self.shape == "polygon"
                a, b = resample_outline(a, n, closed), resample_outline(b, n, closed)
            out.append((1.0 - u) * a + u * b)
        return out


def resample_outline(points: Float64Array, count: int, closed: bool) -> Float64Array:
    """``(count, 2)`` points at equal arc-length steps along ``points (V, 2)`` from its first
    vertex: around the closed ring (``closed``, the last step ends before returning to the
    start) or from the first to the last vertex (open, both ends kept)."""
    p = np.asarray(points, np.float64)
    ring = np.vstack([p, p[:1]]) if closed else p
    seg = np.linalg.norm(np.diff(ring, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] == 0.0:
        return np.repeat(p[:1], count, axis=0)
    want = np.arange(count) * (s[-1] / count) if closed else np.linspace(0.0, s[-1], count)
    return np.stack([np.interp(want, s, ring[:, 0]), np.interp(want, s, ring[:, 1])], axis=1)


@pjit
def _box_kernel(ts, boxes, offsets, query, out, valid):
    """Boxes ``out (Q, T, 4)`` / ``valid (Q, T)`` of ``T`` tracks whose keyframes are rows
    ``offsets[t]:offsets[t + 1]`` of ``ts (K,)`` and ``boxes (K, 4)``, at ``query (Q,)``."""
    n_tracks = offsets.shape[0] - 1
    for tr in prange(n_tracks):
        lo = offsets[tr]
        hi = offsets[tr + 1]
        for qi in range(query.shape[0]):
            tq = query[qi]
            if tq < ts[lo] or tq > ts[hi - 1]:
                valid[qi, tr] = False
                for c in range(4):
                    out[qi, tr, c] = np.nan
                continue
            valid[qi, tr] = True
            if hi - lo == 1:
                for c in range(4):
                    out[qi, tr, c] = boxes[lo, c]
                continue
            k = find_interval(ts, lo, hi - 1, tq)
            u = float(tq - ts[k]) / float(ts[k + 1] - ts[k])
            for c in range(4):
                out[qi, tr, c] = (1.0 - u) * boxes[k, c] + u * boxes[k + 1, c]


def boxes_at(tracks: Sequence[Track2D], times_ns: TimesNs) -> tuple[Float64Array, BoolArray]:
    """Every box track at every time: ``boxes (Q, T, 4)`` ``(u0, v0, u1, v1)`` (NaN where the
    track does not exist) and ``valid (Q, T)``."""
    if any(t.shape != "box" for t in tracks):
        raise ValueError("boxes_at takes box tracks only")
    query = np.ascontiguousarray(np.atleast_1d(np.asarray(times_ns, np.int64)))
    offsets = np.zeros(len(tracks) + 1, np.int64)
    offsets[1:] = np.cumsum([len(t.timestamps_ns) for t in tracks])
    ts = np.concatenate([t.timestamps_ns for t in tracks]) if tracks else np.zeros(0, np.int64)
    boxes = (np.concatenate([np.stack(t.points).reshape(-1, 4) for t in tracks]) if tracks
             else np.zeros((0, 4)))
    out = np.empty((len(query), len(tracks), 4))
    valid = np.empty((len(query), len(tracks)), np.bool_)
    _box_kernel(ts, np.ascontiguousarray(boxes), offsets, query, out, valid)
    return out, valid


def _warmup() -> None:
    track = Track2D("a", "car", "cam", "box", np.array([0, 10]), (np.array([[0.0, 0], [1, 1]]),) * 2)
    boxes_at([track], np.array([5]))
