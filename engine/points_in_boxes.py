"""Which box each point of a sweep lies in, for many boxes, in one pass over the points.

The boxes' bird's-eye (x, y) bounding rectangles are binned into a uniform grid once, over
the part of the plane where both points and boxes are (each cell lists the boxes that may
cover it, in ascending box order); then each point looks up its cell and runs the exact
oriented test only against that cell's boxes. The grid holds at most ``_MAX_CELLS`` cells and
``_ENTRIES_PER_BOX·B + _MIN_ENTRIES`` (box, cell) entries: the boxes that cover the most cells
(a few huge boxes among small ones) are left out of it and kept in a short "big" list that
every point on the grid is tested against. Memory is O(N + B) whatever the boxes are; time
O(N·(boxes per cell + big boxes) + B), and O(N + B·cells per box) for the usual sizes.

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

from engine._jit import inline, jit, pjit, prange
from engine.cuboid import _check_boxes
from engine.quaternion import q_to_matrix

# A grid never has more cells than this (the cell grows instead).
_MAX_CELLS = 1 << 20
# A grid holds at most _ENTRIES_PER_BOX·B + _MIN_ENTRIES (box, cell) entries (B boxes); the
# boxes covering the most cells go to the big list instead.
_ENTRIES_PER_BOX = 64
_MIN_ENTRIES = 1 << 16
# Points per parallel chunk (each chunk keeps its own per-box counts).
_CHUNK = 16384


@jit
def build_grid(lo, hi, x0, y0, per_m, nx, ny):
    """CSR lists ``start (nx*ny + 1,)``, ``boxes`` — box ids per cell, ascending — and
    ``big``: ascending ids of the boxes left out of the cells (every point on the grid is
    tested against them). The cell of a point ``p`` is ``(int((px − x0)·per_m),
    int((py − y0)·per_m))`` (cells per metre, a product rather than a division, in the
    labellers too: the same rounding). A box's rectangle ``lo[b]``–``hi[b]`` is clipped to the
    grid; an empty one (``lo > hi``, e.g. ``+inf``/``-inf``) or one off the grid is in no cell
    and not big. Boxes covering the most cells are big until the others' entries number at
    most ``_ENTRIES_PER_BOX·B + _MIN_ENTRIES``."""
    n_boxes = lo.shape[0]
    rng = np.zeros((n_boxes, 4), dtype=np.int64)  # i0, i1, j0, j1 (inclusive cell ranges)
    cells = np.zeros(n_boxes, dtype=np.int64)
    for b in range(n_boxes):
        fx0 = (lo[b, 0] - x0) * per_m
        fx1 = (hi[b, 0] - x0) * per_m
        fy0 = (lo[b, 1] - y0) * per_m
        fy1 = (hi[b, 1] - y0) * per_m
        if not (fx0 <= fx1 and fy0 <= fy1 and fx1 >= 0.0 and fx0 < nx and fy1 >= 0.0 and fy0 < ny):
            rng[b, 1] = rng[b, 3] = -1
            continue
        rng[b, 0] = int(math.floor(max(fx0, 0.0)))
        rng[b, 1] = min(int(math.floor(min(fx1, float(nx)))), nx - 1)
        rng[b, 2] = int(math.floor(max(fy0, 0.0)))
        rng[b, 3] = min(int(math.floor(min(fy1, float(ny)))), ny - 1)
        cells[b] = (rng[b, 1] - rng[b, 0] + 1) * (rng[b, 3] - rng[b, 2] + 1)
    is_big = np.zeros(n_boxes, dtype=np.bool_)
    budget = _ENTRIES_PER_BOX * n_boxes + _MIN_ENTRIES
    total = 0
    for b in np.argsort(cells):  # fewest cells first: once one does not fit, no later one does
        if total + cells[b] > budget:
            is_big[b] = True
            rng[b, 1] = rng[b, 3] = -1
        else:
            total += cells[b]
    start = np.zeros(nx * ny + 1, dtype=np.int64)
    for b in range(n_boxes):
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
    return start, boxes, np.flatnonzero(is_big)


@jit
def make_grid(xyz, lo, hi, side):
    """The grid of :func:`build_grid` over the bird's-eye extent shared by the finite points
    ``xyz (N, 3)`` and the boxes' rectangles ``lo``/``hi (B, 2)`` (an empty one, ``lo > hi``,
    is no box), its cells the median of the boxes' longer sides ``side (B,)`` (grown to at
    most ``_MAX_CELLS`` cells). Returns ``(x0, y0, per_m, nx, ny, start, boxes, big)``; a
    grid of no cell when points and boxes do not meet. Points off the grid are in no box."""
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    for i in range(xyz.shape[0]):
        px, py, pz = np.float64(xyz[i, 0]), np.float64(xyz[i, 1]), np.float64(xyz[i, 2])
        if math.isfinite(px) and math.isfinite(py) and math.isfinite(pz):
            x0, x1, y0, y1 = min(x0, px), max(x1, px), min(y0, py), max(y1, py)
    live = np.flatnonzero(lo[:, 0] <= hi[:, 0])
    if len(live):
        x0, y0 = max(x0, lo[live, 0].min()), max(y0, lo[live, 1].min())
        x1, y1 = min(x1, hi[live, 0].max()), min(y1, hi[live, 1].max())
    if not (len(live) and x0 <= x1 and y0 <= y1):
        none = np.zeros(0, dtype=np.int64)
        return 0.0, 0.0, 1.0, 0, 0, np.zeros(1, dtype=np.int64), none, none
    per_m, nx, ny = grid_shape(x0, y0, x1, y1, np.median(side[live]))
    start, boxes, big = build_grid(lo, hi, x0, y0, per_m, nx, ny)
    return x0, y0, per_m, nx, ny, start, boxes, big


@inline
def nearer(d2, b, best_d2, best):
    """Whether box ``b`` at squared distance ``d2`` beats ``best`` at ``best_d2``: a nearer
    centre, or the same distance and a lower index (``d2`` is ``inf`` for a box not holding the point)."""
    return d2 < best_d2 or (d2 == best_d2 and d2 < math.inf and b < best)


@inline
def grid_shape(x0, y0, x1, y1, side):
    """Cells per metre and cell counts ``(per_m, nx, ny)`` of a grid from ``(x0, y0)``
    covering ``x1``, ``y1``: cells of ``side`` metres, grown so there are at most ``_MAX_CELLS``."""
    per_m = 1.0 / max(side, max(x1 - x0, y1 - y0) / math.sqrt(_MAX_CELLS), 1e-6)
    return per_m, int((x1 - x0) * per_m) + 1, int((y1 - y0) * per_m) + 1


@inline
def box_row(c, s, q, margin, rmat, half, lo, hi):
    """One box's test table row: its rotation matrix into ``rmat (3, 3)`` and half sizes
    grown by ``margin`` into ``half (3,)``; its bird's-eye bounding rectangle (``|R| @ half``
    around the centre ``c``) widens ``lo (2,)``/``hi (2,)``. Returns the rectangle's longer side."""
    q_to_matrix(q[0], q[1], q[2], q[3], rmat)
    for k in range(3):
        half[k] = 0.5 * s[k] + margin
    side = 0.0
    for a in range(2):
        ext = abs(rmat[a, 0]) * half[0] + abs(rmat[a, 1]) * half[1] + abs(rmat[a, 2]) * half[2]
        lo[a] = min(lo[a], c[a] - ext)
        hi[a] = max(hi[a], c[a] + ext)
        side = max(side, 2.0 * ext)
    return side


def check_margin(margin: float) -> float:
    """``margin`` as a float; ``ValueError`` unless finite and ≥ 0."""
    margin = float(margin)
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    return margin


@inline
def nearest_inside(px, py, pz, centers, rmat, half, ids, k0, k1, best, best_d2):
    """``(box, squared distance)``: the nearer (:func:`nearer`) of ``best`` at ``best_d2``
    and the boxes ``ids[k0:k1]`` that hold the point (a cell's boxes, or the big ones)."""
    for k in range(k0, k1):
        b = ids[k]
        d2 = inside_d2(px, py, pz, centers, rmat, half, b)
        if nearer(d2, b, best_d2, best):
            best_d2 = d2
            best = b
    return best, best_d2


@jit
def _prepare(xyz, q, centers, sizes, margin):
    """Rotation matrices, inflated half sizes and the bird's-eye grid (:func:`make_grid`)."""
    b = q.shape[0]
    rmat = np.empty((b, 3, 3))
    half = np.empty((b, 3))
    lo = np.full((b, 2), np.inf)
    hi = np.full((b, 2), -np.inf)
    side = np.empty(b)
    for i in range(b):
        side[i] = box_row(centers[i], sizes[i], q[i], margin, rmat[i], half[i], lo[i], hi[i])
    return (rmat, half, *make_grid(xyz, lo, hi, side))


@inline
def grid_cell(px, py, pz, x0, y0, per_m, nx, ny):
    """The cell of the ``nx × ny`` grid (origin ``x0, y0``, ``per_m`` cells per metre) that
    holds the point's (x, y); -1 for a point off the grid or with a non-finite coordinate."""
    if not (math.isfinite(px) and math.isfinite(py) and math.isfinite(pz)):
        return -1
    fx = (px - x0) * per_m
    fy = (py - y0) * per_m
    if not (fx >= 0.0 and fx < nx and fy >= 0.0 and fy < ny):
        return -1
    return int(fx) * ny + int(fy)


@inline
def inside_d2(px, py, pz, centers, rmat, half, b):
    """Squared distance from point ``(px, py, pz)`` (float64) to the centre of box ``b`` if
    the point is inside it (``|Rᵀ (p − c)| ≤ half`` per axis, inclusive), else ``inf``."""
    dx = px - centers[b, 0]
    dy = py - centers[b, 1]
    dz = pz - centers[b, 2]
    if abs(rmat[b, 0, 0] * dx + rmat[b, 1, 0] * dy + rmat[b, 2, 0] * dz) > half[b, 0]:
        return math.inf
    if abs(rmat[b, 0, 1] * dx + rmat[b, 1, 1] * dy + rmat[b, 2, 1] * dz) > half[b, 1]:
        return math.inf
    if abs(rmat[b, 0, 2] * dx + rmat[b, 1, 2] * dy + rmat[b, 2, 2] * dz) > half[b, 2]:
        return math.inf
    return dx * dx + dy * dy + dz * dz


@inline
def _label_chunk(xyz, centers, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, chunk, ch, labels, counts):
    """Label points ``[ch·chunk, (ch+1)·chunk)`` and count them into ``counts[ch]``."""
    for i in range(ch * chunk, min((ch + 1) * chunk, xyz.shape[0])):
        labels[i] = -1
        px = np.float64(xyz[i, 0])
        py = np.float64(xyz[i, 1])
        pz = np.float64(xyz[i, 2])
        c = grid_cell(px, py, pz, x0, y0, per_m, nx, ny)
        if c < 0:
            continue
        best, best_d2 = nearest_inside(px, py, pz, centers, rmat, half, boxes, start[c], start[c + 1], -1, math.inf)
        best, _ = nearest_inside(px, py, pz, centers, rmat, half, big, 0, big.shape[0], best, best_d2)
        if best >= 0:
            labels[i] = best
            counts[ch, best] += 1


@pjit
def _label_parallel(xyz, centers, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, chunk, labels, counts):
    for ch in prange(counts.shape[0]):
        _label_chunk(xyz, centers, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, chunk, ch, labels, counts)


@jit
def _label_serial(xyz, centers, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, chunk, labels, counts):
    """One chunk without waking the thread pool (small sweeps, per-slice calls)."""
    _label_chunk(xyz, centers, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, chunk, 0, labels, counts)


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
    margin = check_margin(margin)
    n, b = len(pts), len(c)
    labels = np.full(n, -1, dtype=np.int32)
    if b == 0 or n == 0:
        return labels, np.zeros(b, dtype=np.int64)
    rmat, half, x0, y0, per_m, nx, ny, start, boxes, big = _prepare(
        pts, np.ascontiguousarray(q), np.ascontiguousarray(c), np.ascontiguousarray(s), margin)
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    counts = np.zeros((n_chunks, b), dtype=np.int64)
    kernel = _label_serial if n_chunks == 1 else _label_parallel
    kernel(pts, np.ascontiguousarray(c), rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, _CHUNK, labels,
           counts)
    return labels, counts.sum(axis=0)


def _warmup() -> None:
    box = (np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]))
    points_in_boxes(np.zeros((2, 3), np.float32), *box)
    points_in_boxes(np.zeros((_CHUNK + 1, 3), np.float32), *box)
