"""Which box each point of a sweep lies in, for many boxes, in one pass over the points.

The boxes' bird's-eye (x, y) bounding rectangles are binned into a uniform grid once
(each cell lists the boxes that may cover it, in ascending box order); then each point
looks up its cell and runs the exact oriented test only against that cell's boxes. Cost
is O(N + B·cells per box), not O(N·B).

Rules:
- Inclusive bounds: a point is inside when ``|local_k| <= size_k / 2 + margin`` on every
  local axis k, faces included. ``local = Rᵀ (p − centre)`` in float64.
- Overlapping boxes: a point inside several boxes belongs to the one whose centre is
  nearest (Euclidean); exact ties go to the lower box index.
- Points with a NaN or infinite coordinate are never inside any box.
"""

from __future__ import annotations

import math

import numpy as np

from engine import quaternion as quat
from engine._jit import jit, pjit, prange
from engine.cuboid import _check_boxes

# A grid never has more cells than this (the cell grows instead).
_MAX_CELLS = 1 << 20
# Points per parallel chunk (each chunk keeps its own per-box counts).
_CHUNK = 16384


@jit
def _build_grid(lo, hi, x0, y0, cell, nx, ny):
    """CSR lists: ``start (nx*ny + 1,)``, ``boxes`` — box ids per cell, ascending."""
    n_boxes = lo.shape[0]
    rng = np.empty((n_boxes, 4), dtype=np.int64)  # i0, i1, j0, j1 (inclusive cell ranges)
    start = np.zeros(nx * ny + 1, dtype=np.int64)
    for b in range(n_boxes):
        rng[b, 0] = max(int(math.floor((lo[b, 0] - x0) / cell)), 0)
        rng[b, 1] = min(int(math.floor((hi[b, 0] - x0) / cell)), nx - 1)
        rng[b, 2] = max(int(math.floor((lo[b, 1] - y0) / cell)), 0)
        rng[b, 3] = min(int(math.floor((hi[b, 1] - y0) / cell)), ny - 1)
        for i in range(rng[b, 0], rng[b, 1] + 1):
            for j in range(rng[b, 2], rng[b, 3] + 1):
                start[i * ny + j + 1] += 1
    for c in range(nx * ny):
        start[c + 1] += start[c]
    boxes = np.empty(start[nx * ny], dtype=np.int64)
    fill = start[:-1].copy()
    for b in range(n_boxes):
        for i in range(rng[b, 0], rng[b, 1] + 1):
            for j in range(rng[b, 2], rng[b, 3] + 1):
                c = i * ny + j
                boxes[fill[c]] = b
                fill[c] += 1
    return start, boxes


@pjit
def _label_kernel(xyz, centers, rmat, half, x0, y0, cell, nx, ny, start, boxes, chunk, labels, counts):
    n = xyz.shape[0]
    for ch in prange(counts.shape[0]):
        for i in range(ch * chunk, min((ch + 1) * chunk, n)):
            labels[i] = -1
            px = np.float64(xyz[i, 0])
            py = np.float64(xyz[i, 1])
            pz = np.float64(xyz[i, 2])
            if not (math.isfinite(px) and math.isfinite(py) and math.isfinite(pz)):
                continue
            fx = (px - x0) / cell
            fy = (py - y0) / cell
            if not (fx >= 0.0 and fx < nx and fy >= 0.0 and fy < ny):
                continue
            c = int(fx) * ny + int(fy)
            best = -1
            best_d2 = math.inf
            for s in range(start[c], start[c + 1]):
                b = boxes[s]
                dx = px - centers[b, 0]
                dy = py - centers[b, 1]
                dz = pz - centers[b, 2]
                lx = rmat[b, 0, 0] * dx + rmat[b, 1, 0] * dy + rmat[b, 2, 0] * dz
                if abs(lx) > half[b, 0]:
                    continue
                ly = rmat[b, 0, 1] * dx + rmat[b, 1, 1] * dy + rmat[b, 2, 1] * dz
                if abs(ly) > half[b, 1]:
                    continue
                lz = rmat[b, 0, 2] * dx + rmat[b, 1, 2] * dy + rmat[b, 2, 2] * dz
                if abs(lz) > half[b, 2]:
                    continue
                d2 = dx * dx + dy * dy + dz * dz
                if d2 < best_d2:
                    best_d2 = d2
                    best = b
            if best >= 0:
                labels[i] = best
                counts[ch, best] += 1


def _rows(a, width: int) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    return arr.reshape(0, width) if arr.size == 0 else arr


def points_in_boxes(
    xyz: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    margin: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-point box index and per-box point counts for one sweep.

    Args:
        xyz: ``(N, 3)`` points (float32, any frame; computed in float64).
        centers, sizes, rotations: ``(B, 3)``, ``(B, 3)`` m (l, w, h), ``(B, 4)`` wxyz, in
            the same frame as ``xyz``.
        margin: metres added to every half-extent (≥ 0).

    Returns:
        ``box_index (N,) int32`` (−1 outside every box; see the module rules for overlaps)
        and ``counts (B,) int64`` = number of points assigned to each box.
    """
    pts = np.ascontiguousarray(xyz, dtype=np.float32)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {pts.shape}")
    c, s, q = _check_boxes(_rows(centers, 3), _rows(sizes, 3), _rows(rotations, 4))
    if c.ndim != 2:
        raise ValueError(f"centers must have shape (B, 3), got {c.shape}")
    margin = float(margin)
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    n, b = len(pts), len(c)
    labels = np.full(n, -1, dtype=np.int32)
    if b == 0 or n == 0:
        return labels, np.zeros(b, dtype=np.int64)
    rmat = np.ascontiguousarray(quat.to_matrix(q))
    half = np.ascontiguousarray(0.5 * s + margin)
    # bird's-eye bounding rectangle of each rotated box: |R| @ half
    ext = np.einsum("bij,bj->bi", np.abs(rmat), half)[:, :2]
    lo = np.ascontiguousarray(c[:, :2] - ext)
    hi = np.ascontiguousarray(c[:, :2] + ext)
    x0, y0 = lo.min(axis=0)
    span = max(float(np.max(hi[:, 0]) - x0), float(np.max(hi[:, 1]) - y0))
    cell = max(float(np.median(2.0 * ext.max(axis=1))), span / math.sqrt(_MAX_CELLS), 1e-6)
    nx = int((np.max(hi[:, 0]) - x0) // cell) + 1
    ny = int((np.max(hi[:, 1]) - y0) // cell) + 1
    start, boxes = _build_grid(lo, hi, float(x0), float(y0), cell, nx, ny)
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((n_chunks, b), dtype=np.int64)
    _label_kernel(pts, np.ascontiguousarray(c), rmat, half, float(x0), float(y0), cell, nx, ny,
                  start, boxes, _CHUNK, labels, counts)
    return labels, counts.sum(axis=0)


def _warmup() -> None:
    points_in_boxes(np.zeros((2, 3), np.float32), np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]))
