"""Which box each point lies in when some boxes move: every point tested against the boxes
as they are at the point's own time step.

Moving boxes are given at T time steps (``(T, M, ...)`` arrays, e.g. tracks interpolated at
the middle of each millisecond of a LiDAR sweep); each point's step follows from its own
time. One pass over the points: the boxes' bird's-eye footprints (a moving box's is the
union over its steps) are binned into :func:`engine.points_in_boxes.make_grid`'s grid over
the points' extent, and each point runs the exact oriented test only against the boxes of
its grid cell and the few big boxes left out of the cells, a moving box at the point's step.
Cost O(N + boxes' cells) for the usual sizes, memory O(N + boxes) whatever the sizes, one
call per sweep.

The rules are those of :func:`engine.points_in_boxes.points_in_boxes`, per step: inclusive
bounds grown by ``margin``, ``local = Rᵀ (p − centre)`` in float64, a point inside several
boxes belongs to the nearest centre (Euclidean; exact ties: the lower box index),
non-finite points and boxes not valid at the point's step hold nothing.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from engine._jit import inline, jit
from engine.cuboid import _check_boxes
from engine.cuda import Device, resolve
from engine.points_in_boxes import (
    _rows,
    box_row,
    check_margin,
    grid_cell,
    inside_d2,
    make_grid,
    nearer,
)
from engine.pose_track import find_interval


@inline
def _step_index(offset, step_ns, steps):
    """Row of ``steps`` (ascending, distinct) equal to ``offset // step_ns``, −1 if none."""
    key = offset // step_ns
    t_n = steps.shape[0]
    if t_n == 0:
        return -1
    t = key - steps[0]
    if t >= 0 and t < t_n and steps[t] == key:
        return t
    t = find_interval(steps, 0, t_n, key)  # the last step <= key (a binary search that compiles for CUDA too)
    return t if steps[t] == key else -1


@jit
def _box_tables(xyz, centers, sizes, rotations, slot, m_centers, m_sizes, m_rotations, m_valid, margin):
    """The boxes' test tables and the grid over ``xyz``: ``(base, cen, rmat, half, x0, y0,
    per_m, nx, ny, start, boxes, big)``. Box ``b`` is ``centers[b]``… at every time if
    ``slot[b] < 0``, else moving box ``m = slot[b]``: ``m_centers[t, m]``… at step row ``t``
    where ``m_valid[t, m]``. One entry per fixed box, T consecutive entries from ``base[b]``
    per moving box (an entry not valid keeps half = -1: no point passes its test)."""
    b_n = centers.shape[0]
    t_n = m_valid.shape[0]
    base = np.empty(b_n, dtype=np.int64)
    e_n = 0
    for b in range(b_n):
        base[b] = e_n
        e_n += 1 if slot[b] < 0 else t_n
    cen = np.zeros((e_n, 3))
    rmat = np.zeros((e_n, 3, 3))
    half = np.full((e_n, 3), -1.0)
    lo = np.full((b_n, 2), np.inf)
    hi = np.full((b_n, 2), -np.inf)
    side = np.zeros(b_n)
    for b in range(b_n):
        m = slot[b]
        for t in range(1 if m < 0 else t_n):
            e = base[b] + t
            if m < 0:
                c, s, q = centers[b], sizes[b], rotations[b]
            elif m_valid[t, m]:
                c, s, q = m_centers[t, m], m_sizes[t, m], m_rotations[t, m]
            else:
                continue
            cen[e] = c
            side[b] = max(side[b], box_row(c, s, q, margin, rmat[e], half[e], lo[b], hi[b]))
    return (base, cen, rmat, half, *make_grid(xyz, lo, hi, side))


@inline
def label_range(xyz, offsets, i0, i1, step_ns, steps, slot, base, cen, rmat, half, x0, y0, per_m, nx, ny, start,
                boxes, big, labels):
    """``labels[i]`` for the points ``i0 <= i < i1`` of ``xyz`` (float64) fired at ``offsets``:
    the box holding the point (tables from :func:`_box_tables`), -1 for none. A point runs the
    exact test against its grid cell's boxes and the big ones, a moving box at the point's step
    (looked up at its first moving box), the nearest centre winning (:func:`nearer`). The CPU
    kernel runs it once over all the points; a GPU thread over its own point."""
    n_big = big.shape[0]
    for i in range(i0, i1):
        px, py, pz = xyz[i, 0], xyz[i, 1], xyz[i, 2]
        best = -1
        c = grid_cell(px, py, pz, x0, y0, per_m, nx, ny)
        if c >= 0:
            k0, k1 = start[c], start[c + 1]
            t = -2  # the point's step row: not looked up yet
            best_d2 = math.inf
            for j in range(k0, k1 + n_big):
                b = boxes[j] if j < k1 else big[j - k1]
                e = base[b]
                if slot[b] >= 0:
                    if t == -2:
                        t = _step_index(offsets[i], step_ns, steps)
                    if t < 0:
                        continue
                    e += t
                d2 = inside_d2(px, py, pz, cen, rmat, half, e)
                if nearer(d2, b, best_d2, best):
                    best_d2 = d2
                    best = b
        labels[i] = best


@jit
def _label_kernel(xyz, offsets, step_ns, steps, centers, sizes, rotations, slot,
                  m_centers, m_sizes, m_rotations, m_valid, margin, labels):
    """Writes ``labels`` (N,) (every entry); boxes as :func:`_box_tables`."""
    base, cen, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big = _box_tables(
        xyz, centers, sizes, rotations, slot, m_centers, m_sizes, m_rotations, m_valid, margin)
    label_range(xyz, offsets, 0, xyz.shape[0], step_ns, steps, slot, base, cen, rmat, half, x0, y0, per_m, nx, ny,
                start, boxes, big, labels)


class LabelInputs(NamedTuple):
    """The labeller's inputs in :func:`_label_kernel`'s order (then the ``(N,) int32`` output):
    float64 points ``(N, 3)``, their time offsets ``(N,) int64``, ``step_ns``, the steps
    ``(T,) int64``, the boxes ``(B, ·)``, each box's moving slot ``(B,) int64`` (−1: fixed),
    the moving boxes ``(T, M, ·)`` and their validity ``(T, M)``, the margin (m)."""

    xyz: np.ndarray
    offsets: np.ndarray
    step_ns: int
    steps: np.ndarray
    centers: np.ndarray
    sizes: np.ndarray
    rotations: np.ndarray
    slot: np.ndarray
    m_centers: np.ndarray
    m_sizes: np.ndarray
    m_rotations: np.ndarray
    m_valid: np.ndarray
    margin: float


def _check_moving(centers, sizes, rotations, valid) -> tuple[np.ndarray, ...]:
    """``(T, M, ...)`` boxes and ``valid (T, M)`` as C-contiguous float64 arrays, validated (and
    rotations normalised) where valid, as ``points_in_boxes`` does; where not valid the box is
    a unit box at the origin (never read)."""
    ok = np.ascontiguousarray(valid, dtype=bool)
    if ok.ndim != 2:
        raise ValueError(f"valid must have shape (T, B), got {ok.shape}")
    t_n, b_n = ok.shape
    arrays = []
    for name, a, width, fill in (("centers", centers, 3, 0.0), ("sizes", sizes, 3, 1.0),
                                 ("rotations", rotations, 4, [1.0, 0.0, 0.0, 0.0])):
        a = np.asarray(a, dtype=np.float64)
        if a.shape != (t_n, b_n, width):
            raise ValueError(f"{name} must have shape ({t_n}, {b_n}, {width}), got {a.shape}")
        arrays.append(np.where(ok[:, :, None], a, np.asarray(fill)))
    return (*_check_boxes(*arrays), ok)


def _points(xyz: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(xyz, dtype=np.float64)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {pts.shape}")
    return pts


def points_in_moving_boxes(
    xyz: np.ndarray,
    steps: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    valid: np.ndarray,
    margin: float = 0.0,
    device: Device | None = None,
) -> np.ndarray:
    """Per-point box index, each point tested against the boxes at its own time step.

    Args:
        xyz: ``(N, 3)`` points (any float dtype and frame; computed in float64).
        steps: ``(N,)`` integer step of each point, in ``[0, T)``.
        centers, sizes, rotations: ``(T, B, 3)``, ``(T, B, 3)`` m (l, w, h), ``(T, B, 4)``
            wxyz: box b at step t, in the frame of ``xyz``.
        valid: ``(T, B) bool``: box b exists at step t (its other values are then ignored).
        margin: metres added to every half-extent (≥ 0).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`).

    Returns:
        ``(N,) int32`` box index (−1: inside no valid box of the point's step).
    """
    pts = _points(xyz)
    c, s, q, ok = _check_moving(centers, sizes, rotations, valid)
    t_n, b_n = ok.shape
    st = np.ascontiguousarray(steps, dtype=np.int64)
    if st.shape != (len(pts),):
        raise ValueError(f"steps must have shape ({len(pts)},), got {st.shape}")
    if len(st) and (st.min() < 0 or st.max() >= t_n):
        raise ValueError(f"steps must be in [0, {t_n}), got [{st.min()}, {st.max()}]")
    margin = check_margin(margin)
    fixed = np.zeros((b_n, 3))  # no box is fixed: these are never read
    return label_points(LabelInputs(pts, st, 1, np.arange(t_n, dtype=np.int64), fixed, fixed, np.zeros((b_n, 4)),
                                    np.arange(b_n, dtype=np.int64), c, s, q, ok, margin), device)


def points_in_boxes_at_times(
    xyz: np.ndarray,
    time_offset_ns: np.ndarray,
    step_ns: int,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    moving: np.ndarray,
    steps: np.ndarray,
    moving_centers: np.ndarray,
    moving_sizes: np.ndarray,
    moving_rotations: np.ndarray,
    moving_valid: np.ndarray,
    margin: float = 0.0,
    device: Device | None = None,
) -> np.ndarray:
    """Per-point box index, each point against the boxes as they are at its own time step.

    Point i's step is ``time_offset_ns[i] // step_ns`` (floor). Box b is ``centers[b]``,
    ``sizes[b]``, ``rotations[b]`` at every time unless ``b = moving[m]``: then, for a point
    whose step equals ``steps[t]``, it is ``moving_centers[t, m]``, ... where
    ``moving_valid[t, m]``, and no box otherwise (nor for a point whose step is not in
    ``steps``).

    Args:
        xyz: ``(N, 3)`` points, float64 (world frame: no float32 rounding), metres.
        time_offset_ns: ``(N,)`` integer ns, each point's time (any common origin).
        step_ns: the step length, ns (≥ 1).
        centers, sizes, rotations: ``(B, 3)``, ``(B, 3)`` m (l, w, h), ``(B, 4)`` wxyz, in
            the frame of ``xyz`` (a moving box's values here are validated, not used).
        moving: ``(M,)`` distinct indices into the B boxes.
        steps: ``(T,)`` strictly increasing integer step numbers.
        moving_centers, moving_sizes, moving_rotations: ``(T, M, 3)``, ``(T, M, 3)``,
            ``(T, M, 4)``; ``moving_valid``: ``(T, M) bool`` (values ignored where False).
        margin: metres added to every half-extent (≥ 0).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`).

    Returns:
        ``(N,) int32`` box index (−1: inside no box at its step).
    """
    return label_points(at_times_inputs(xyz, time_offset_ns, step_ns, centers, sizes, rotations, moving, steps,
                                        moving_centers, moving_sizes, moving_rotations, moving_valid, margin), device)


def at_times_inputs(xyz: np.ndarray, time_offset_ns: np.ndarray, step_ns: int, centers: np.ndarray,
                    sizes: np.ndarray, rotations: np.ndarray, moving: np.ndarray, steps: np.ndarray,
                    moving_centers: np.ndarray, moving_sizes: np.ndarray, moving_rotations: np.ndarray,
                    moving_valid: np.ndarray, margin: float = 0.0) -> LabelInputs:
    """:func:`points_in_boxes_at_times`' checks (``ValueError`` naming the argument) and
    its labeller's inputs."""
    pts = _points(xyz)
    off = np.asarray(time_offset_ns)
    if off.shape != (len(pts),) or not (np.issubdtype(off.dtype, np.integer) or off.size == 0):
        raise ValueError(f"time_offset_ns must be ({len(pts)},) integer ns, got {off.dtype} {off.shape}")
    off = np.ascontiguousarray(off, dtype=np.int64)
    if int(step_ns) != step_ns or step_ns < 1:
        raise ValueError(f"step_ns must be an integer >= 1, got {step_ns}")
    c, s, q = _check_boxes(_rows(centers, 3), _rows(sizes, 3), _rows(rotations, 4))
    if c.ndim != 2:
        raise ValueError(f"centers must have shape (B, 3), got {c.shape}")
    b_n = len(c)
    mc, ms, mq, ok = _check_moving(moving_centers, moving_sizes, moving_rotations, moving_valid)
    t_n, m_n = ok.shape
    mv = np.asarray(moving)
    if mv.shape != (m_n,) or not (np.issubdtype(mv.dtype, np.integer) or mv.size == 0):
        raise ValueError(f"moving must be ({m_n},) integer box indices, got {mv.dtype} {mv.shape}")
    slot = np.full(b_n, -1, dtype=np.int64)
    if m_n:
        if mv.min() < 0 or mv.max() >= b_n or len(np.unique(mv)) != m_n:
            raise ValueError(f"moving must be distinct box indices in [0, {b_n}), got {mv}")
        slot[mv] = np.arange(m_n)
    st = np.asarray(steps)
    if st.shape != (t_n,) or not (np.issubdtype(st.dtype, np.integer) or st.size == 0):
        raise ValueError(f"steps must be ({t_n},) integer step numbers, got {st.dtype} {st.shape}")
    st = np.ascontiguousarray(st, dtype=np.int64)
    if np.any(st[1:] <= st[:-1]):
        raise ValueError("steps must be strictly increasing")
    margin = check_margin(margin)
    return LabelInputs(pts, off, int(step_ns), st, np.ascontiguousarray(c), np.ascontiguousarray(s),
                       np.ascontiguousarray(q), slot, mc, ms, mq, ok, margin)


def label_points(args: LabelInputs, device: Device | None = None) -> np.ndarray:
    """``(N,) int32`` box of each point (−1: none) for checked inputs, on ``device``."""
    on_gpu = resolve(device) == "cuda"
    if len(args.xyz) == 0 or len(args.centers) == 0:
        return np.full(len(args.xyz), -1, dtype=np.int32)
    if on_gpu:
        from engine.cuda.boxes import labels

        return labels(args)
    out = np.empty(len(args.xyz), dtype=np.int32)
    _label_kernel(*args, out)
    return out


def _warmup() -> None:
    box = (np.zeros((1, 1, 3)), np.ones((1, 1, 3)), np.array([[[1.0, 0, 0, 0]]]), np.ones((1, 1), bool))
    points_in_moving_boxes(np.zeros((2, 3)), np.zeros(2, np.int64), *box)
    points_in_boxes_at_times(np.zeros((2, 3)), np.zeros(2, np.int64), 1, box[0][0], box[1][0], box[2][0],
                             np.zeros(1, np.int64), np.zeros(1, np.int64), *box)
