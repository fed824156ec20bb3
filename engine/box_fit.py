"""Auto-fit of cuboids to their LiDAR points, and per-frame point counts.

- :func:`fit_boxes` tightens boxes to their interior points, keeping each rotation.
- :func:`suggest_yaw` proposes a yaw per box from the minimum-area rectangle around its
  interior points (bird's-eye view).
- :func:`min_area_rectangle` is that rectangle for one 2D point set: convex hull (Andrew's
  monotone chain) then rotating calipers, O(n log n).
- :func:`point_counts_per_frame` counts the points inside every box of every frame, so
  empty boxes (count 0) can be flagged for review.

Ground: a point whose box-local height is below ``bottom + ground_clearance`` is treated as
ground (or as the object's wheels touching it) and ignored; the fitted box keeps its bottom
face, since the object stands on the ground those points show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine import quaternion as quat
from engine._jit import jit, pjit, prange
from engine.cuboid import _check_boxes
from engine.cuboid_interp import BoxFrames
from engine.points_in_boxes import points_in_boxes

# ---------------------------------------------------------------- kernels


@jit
def _cross(o0, o1, a0, a1, b0, b1):
    return (a0 - o0) * (b1 - o1) - (a1 - o1) * (b0 - o0)


@jit
def _convex_hull(xy):
    """Hull vertices ``(m, 2)`` counter-clockwise, without collinear or repeated points."""
    n = xy.shape[0]
    by_y = np.argsort(xy[:, 1], kind="mergesort")
    order = by_y[np.argsort(xy[by_y, 0], kind="mergesort")]  # lexicographic (x, y)
    hull = np.empty((2 * n + 1, 2))
    m = 0
    for s in range(n):  # lower hull, left to right
        px, py = xy[order[s], 0], xy[order[s], 1]
        while m >= 2 and _cross(hull[m - 2, 0], hull[m - 2, 1], hull[m - 1, 0], hull[m - 1, 1], px, py) <= 0.0:
            m -= 1
        hull[m, 0], hull[m, 1] = px, py
        m += 1
    floor = m + 1
    for s in range(n - 2, -1, -1):  # upper hull, right to left
        px, py = xy[order[s], 0], xy[order[s], 1]
        while m >= floor and _cross(hull[m - 2, 0], hull[m - 2, 1], hull[m - 1, 0], hull[m - 1, 1], px, py) <= 0.0:
            m -= 1
        hull[m, 0], hull[m, 1] = px, py
        m += 1
    m = max(m - 1, 1)  # the last point repeats the first
    if m == 2 and hull[0, 0] == hull[1, 0] and hull[0, 1] == hull[1, 1]:
        m = 1
    return hull[:m].copy()


@jit
def _min_rect(xy, out):
    """Minimum-area rectangle of points ``xy (n ≥ 1, 2)`` → out = cx, cy, length, width, yaw.

    Length ≥ width; yaw is the direction of the length side, in (−π/2, π/2].
    """
    h = _convex_hull(xy)
    m = h.shape[0]
    if m == 1:
        out[0] = h[0, 0]
        out[1] = h[0, 1]
        out[2] = 0.0
        out[3] = 0.0
        out[4] = 0.0
        return
    best = math.inf
    ex_b = ey_b = lo_b = hi_b = w_b = ox_b = oy_b = 0.0
    j = 1  # max along the edge
    k = 1  # max along the inward normal
    l = 0  # min along the edge
    for i in range(m if m > 2 else 1):
        ox = h[i, 0]
        oy = h[i, 1]
        dx = h[(i + 1) % m, 0] - ox
        dy = h[(i + 1) % m, 1] - oy
        norm = math.sqrt(dx * dx + dy * dy)
        ex = dx / norm
        ey = dy / norm
        # rotating calipers: each pointer only moves forward around the hull
        for _ in range(m):
            a = (h[(j + 1) % m, 0] - ox) * ex + (h[(j + 1) % m, 1] - oy) * ey
            if a >= (h[j, 0] - ox) * ex + (h[j, 1] - oy) * ey and (j + 1) % m != i:
                j = (j + 1) % m
            else:
                break
        if i == 0:
            k = j
        for _ in range(m):
            a = -(h[(k + 1) % m, 0] - ox) * ey + (h[(k + 1) % m, 1] - oy) * ex
            if a >= -(h[k, 0] - ox) * ey + (h[k, 1] - oy) * ex and (k + 1) % m != i:
                k = (k + 1) % m
            else:
                break
        if i == 0:
            l = k
        for _ in range(m):
            a = (h[(l + 1) % m, 0] - ox) * ex + (h[(l + 1) % m, 1] - oy) * ey
            if a <= (h[l, 0] - ox) * ex + (h[l, 1] - oy) * ey and (l + 1) % m != (i + 1) % m:
                l = (l + 1) % m
            else:
                break
        hi = (h[j, 0] - ox) * ex + (h[j, 1] - oy) * ey
        lo = min((h[l, 0] - ox) * ex + (h[l, 1] - oy) * ey, 0.0)
        width = -(h[k, 0] - ox) * ey + (h[k, 1] - oy) * ex
        area = (hi - lo) * width
        if area < best:
            best = area
            ex_b, ey_b, lo_b, hi_b, w_b, ox_b, oy_b = ex, ey, lo, hi, width, ox, oy
    mid = 0.5 * (lo_b + hi_b)
    out[0] = ox_b + ex_b * mid - ey_b * 0.5 * w_b
    out[1] = oy_b + ey_b * mid + ex_b * 0.5 * w_b
    length = hi_b - lo_b
    yaw = math.atan2(ey_b, ex_b)
    if w_b > length:
        length, w_b = w_b, length
        yaw += 0.5 * math.pi
    # direction of the long side is defined modulo π
    while yaw > 0.5 * math.pi:
        yaw -= math.pi
    while yaw <= -0.5 * math.pi:
        yaw += math.pi
    out[2] = length
    out[3] = w_b
    out[4] = yaw


@pjit
def _rect_groups(xy, starts, out):
    for g in prange(starts.shape[0] - 1):
        a = starts[g]
        b = starts[g + 1]
        if b - a == 0:
            for c in range(5):
                out[g, c] = math.nan
        else:
            _min_rect(xy[a:b], out[g])


@jit
def _local_extents(xyz, labels, centers, rmat, half_h, clearance, ext, counts):
    """Per box: min/max of box-local x, y and max z over non-ground interior points."""
    for i in range(xyz.shape[0]):
        b = labels[i]
        if b < 0:
            continue
        dx = np.float64(xyz[i, 0]) - centers[b, 0]
        dy = np.float64(xyz[i, 1]) - centers[b, 1]
        dz = np.float64(xyz[i, 2]) - centers[b, 2]
        lz = rmat[b, 0, 2] * dx + rmat[b, 1, 2] * dy + rmat[b, 2, 2] * dz
        if lz < -half_h[b] + clearance:
            labels[i] = -1  # ground
            continue
        lx = rmat[b, 0, 0] * dx + rmat[b, 1, 0] * dy + rmat[b, 2, 0] * dz
        ly = rmat[b, 0, 1] * dx + rmat[b, 1, 1] * dy + rmat[b, 2, 1] * dz
        if counts[b] == 0:
            ext[b, 0] = ext[b, 1] = lx
            ext[b, 2] = ext[b, 3] = ly
            ext[b, 4] = lz
        else:
            ext[b, 0] = min(ext[b, 0], lx)
            ext[b, 1] = max(ext[b, 1], lx)
            ext[b, 2] = min(ext[b, 2], ly)
            ext[b, 3] = max(ext[b, 3], ly)
            ext[b, 4] = max(ext[b, 4], lz)
        counts[b] += 1


# ---------------------------------------------------------------- public API


@dataclass(frozen=True, eq=False)
class BoxFit:
    """Fitted boxes, in the frame of the points.

    Attributes:
        centers: ``(B, 3) float64`` m. sizes: ``(B, 3) float64`` m. rotations: ``(B, 4)`` wxyz.
        counts: ``(B,) int64`` non-ground interior points used; a box with 0 is returned unchanged.
    """

    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    counts: np.ndarray


def min_area_rectangle(xy: np.ndarray) -> tuple[np.ndarray, float, float, float]:
    """Smallest-area rectangle enclosing ``xy (N ≥ 1, 2)`` (finite).

    Returns ``(center (2,), length, width, yaw_rad)`` with ``length >= width`` and yaw the
    direction of the length side in (−π/2, π/2]. Collinear input gives width 0.
    """
    pts = np.ascontiguousarray(xy, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"xy must have shape (N >= 1, 2), got {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("xy contains NaN or infinite values")
    out = np.empty((1, 5))
    _rect_groups(pts, np.array([0, len(pts)], dtype=np.int64), out)
    return out[0, :2].copy(), float(out[0, 2]), float(out[0, 3]), float(out[0, 4])


def _interior(xyz, centers, sizes, rotations, margin, ground_clearance):
    """Validated inputs and the non-ground interior labels (−1 elsewhere) + local extents."""
    c, s, q = _check_boxes(centers, sizes, rotations)
    if c.ndim != 2:
        raise ValueError(f"centers must have shape (B, 3), got {c.shape}")
    ground_clearance = float(ground_clearance)
    if not (math.isfinite(ground_clearance) and ground_clearance >= 0.0):
        raise ValueError(f"ground_clearance must be a finite number >= 0, got {ground_clearance}")
    labels, _ = points_in_boxes(xyz, c, s, q, margin)
    pts = np.ascontiguousarray(xyz, dtype=np.float32).reshape(-1, 3)
    rmat = np.ascontiguousarray(quat.to_matrix(q).reshape(-1, 3, 3))
    ext = np.zeros((len(c), 5))
    counts = np.zeros(len(c), dtype=np.int64)
    _local_extents(pts, labels, np.ascontiguousarray(c), rmat, np.ascontiguousarray(0.5 * s[:, 2]),
                   ground_clearance, ext, counts)
    return pts, c, s, q, rmat, labels, ext, counts


def fit_boxes(
    xyz: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    margin: float = 0.1,
    ground_clearance: float = 0.2,
) -> BoxFit:
    """Tighten boxes to their non-ground interior points, keeping rotation and bottom face.

    Points inside a box grown by ``margin`` (m) count as interior (so a slightly small box
    can grow by up to ``margin`` per side); points lower than ``ground_clearance`` (m) above
    the box bottom are ground. The new local x/y extent is the points' extent, the new top
    their highest point, the bottom unchanged. ``xyz (N, 3)`` and the boxes ``(B, ...)`` share
    one frame. Boxes without points come back unchanged with ``counts == 0``.
    """
    _, c, s, q, rmat, _, ext, counts = _interior(xyz, centers, sizes, rotations, margin, ground_clearance)
    bottom = -0.5 * s[:, 2]
    lo = np.stack([ext[:, 0], ext[:, 2], bottom], axis=1)
    hi = np.stack([ext[:, 1], ext[:, 3], np.maximum(ext[:, 4], bottom)], axis=1)
    mid = 0.5 * (lo + hi)
    new_c = c + np.einsum("bij,bj->bi", rmat, mid)
    has = counts > 0
    return BoxFit(
        centers=np.where(has[:, None], new_c, c),
        sizes=np.where(has[:, None], hi - lo, s),
        rotations=q.copy(),
        counts=counts,
    )


def suggest_yaw(
    xyz: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    margin: float = 0.1,
    ground_clearance: float = 0.2,
) -> np.ndarray:
    """Yaw ``(B,)`` rad of the minimum-area bird's-eye rectangle of each box's interior points.

    A rectangle's orientation is ambiguous by multiples of π/2, so of the four candidates the
    one nearest the box's current yaw is returned (a heading, in (−π, π]). NaN where a box
    has fewer than 3 non-ground interior points. Interior and ground as in :func:`fit_boxes`.
    """
    pts, _, _, q, _, labels, _, counts = _interior(xyz, centers, sizes, rotations, margin, ground_clearance)
    inside = np.flatnonzero(labels >= 0)
    order = inside[np.argsort(labels[inside], kind="stable")]
    starts = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    rect = np.empty((len(counts), 5))
    _rect_groups(np.ascontiguousarray(pts[order, :2], dtype=np.float64), starts, rect)
    current = quat.to_euler_zyx(q)[:, 2] if len(q) else np.zeros(0)
    candidates = rect[:, 4:5] + 0.5 * np.pi * np.arange(4)
    diff = np.angle(np.exp(1j * (candidates - current[:, None])))
    pick = np.argmin(np.abs(diff), axis=1)
    yaw = current + diff[np.arange(len(pick)), pick]
    yaw = np.angle(np.exp(1j * yaw))
    return np.where(counts >= 3, yaw, np.nan)


def point_counts_per_frame(
    frames: BoxFrames, sweeps: Sequence[np.ndarray], margin: float = 0.0
) -> np.ndarray:
    """Points inside each box of each frame: ``(T, N) int64``, −1 where the box is not valid.

    ``sweeps[t]`` is frame t's ``(M_t, 3)`` points in the frame of ``frames`` (e.g. the
    ego frame after :meth:`BoxFrames.to_ego`). ``counts == 0`` flags empty boxes.
    """
    if len(sweeps) != len(frames.times_ns):
        raise ValueError(f"{len(frames.times_ns)} frames but {len(sweeps)} sweeps")
    out = np.full(frames.valid.shape, -1, dtype=np.int64)
    for t, xyz in enumerate(sweeps):
        cols = np.flatnonzero(frames.valid[t])
        _, counts = points_in_boxes(xyz, frames.centers[t, cols], frames.sizes[t, cols],
                                    frames.rotations[t, cols], margin)
        out[t, cols] = counts
    return out


def _warmup() -> None:
    xyz = np.array([[0.0, 0, 0.5], [1, 0, 0.5], [0, 1, 0.5], [1, 1, 0.9]], np.float32)
    box = (np.array([[0.5, 0.5, 0.5]]), np.full((1, 3), 2.0), np.array([[1.0, 0, 0, 0]]))
    fit_boxes(xyz, *box)
    suggest_yaw(xyz, *box)
