"""Which box each point lies in when the boxes move: every point tested against the boxes
as they are at the point's own time step.

The boxes are given at T time steps (``(T, B, ...)`` arrays, e.g. tracks interpolated at
the middle of each millisecond of a LiDAR sweep) and each point names its step. One pass
over the points tests each against the B boxes of its step, so a sweep's ~100 steps cost
one call rather than one :func:`engine.points_in_boxes.points_in_boxes` call per step.
The rules are those of ``points_in_boxes``, per step: inclusive bounds grown by ``margin``,
``local = Rᵀ (p − centre)`` in float64 from float32 points, a point inside several boxes
belongs to the nearest centre (exact ties: the lower box index), non-finite points and
boxes marked not valid at the step hold nothing. Cost O(N·B): meant for the few boxes that
move (callers pre-select the points near them).
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import jit
from engine.cuboid import _check_boxes
from engine.points_in_boxes import inside_d2
from engine.quaternion import q_to_matrix


@jit
def _box_tables(rotations, sizes, margin, valid):
    """Rotation matrices ``(T, B, 3, 3)`` and inflated half sizes ``(T, B, 3)`` of the valid boxes."""
    t_n, b_n = valid.shape
    rmat = np.zeros((t_n, b_n, 3, 3))
    half = np.zeros((t_n, b_n, 3))
    for t in range(t_n):
        for b in range(b_n):
            if valid[t, b]:
                q = rotations[t, b]
                q_to_matrix(q[0], q[1], q[2], q[3], rmat[t, b])
                for k in range(3):
                    half[t, b, k] = 0.5 * sizes[t, b, k] + margin
    return rmat, half


@jit
def _label_kernel(xyz, steps, centers, rmat, half, valid, labels):
    """``centers``, ``rmat``, ``half``: the ``(T, B, ...)`` tables flattened to ``(T·B, ...)``."""
    b_n = valid.shape[1]
    for i in range(xyz.shape[0]):
        labels[i] = -1
        t = steps[i]
        px = np.float64(xyz[i, 0])
        py = np.float64(xyz[i, 1])
        pz = np.float64(xyz[i, 2])
        if not (math.isfinite(px) and math.isfinite(py) and math.isfinite(pz)):
            continue
        best = -1
        best_d2 = math.inf
        for b in range(b_n):
            if not valid[t, b]:
                continue
            d2 = inside_d2(px, py, pz, centers, rmat, half, t * b_n + b)
            if d2 < best_d2:
                best_d2 = d2
                best = b
        labels[i] = best


def points_in_moving_boxes(
    xyz: np.ndarray,
    steps: np.ndarray,
    centers: np.ndarray,
    sizes: np.ndarray,
    rotations: np.ndarray,
    valid: np.ndarray,
    margin: float = 0.0,
) -> np.ndarray:
    """Per-point box index, each point tested against the boxes at its own time step.

    Args:
        xyz: ``(N, 3)`` points (float32, any frame; computed in float64 as ``points_in_boxes``).
        steps: ``(N,)`` integer step of each point, in ``[0, T)``.
        centers, sizes, rotations: ``(T, B, 3)``, ``(T, B, 3)`` m (l, w, h), ``(T, B, 4)``
            wxyz: box b at step t, in the frame of ``xyz``.
        valid: ``(T, B) bool``: box b exists at step t (its other values are then ignored).
        margin: metres added to every half-extent (≥ 0).

    Returns:
        ``(N,) int32`` box index (−1: inside no valid box of the point's step).
    """
    pts = np.ascontiguousarray(xyz, dtype=np.float32)
    if pts.size == 0:
        pts = pts.reshape(0, 3)
    if pts.ndim != 2 or pts.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {pts.shape}")
    ok = np.ascontiguousarray(valid, dtype=bool)
    if ok.ndim != 2:
        raise ValueError(f"valid must have shape (T, B), got {ok.shape}")
    t_n, b_n = ok.shape
    c = np.array(centers, dtype=np.float64, order="C")  # copies: valid rows are normalised in place
    s = np.array(sizes, dtype=np.float64, order="C")
    q = np.array(rotations, dtype=np.float64, order="C")
    for name, a, width in (("centers", c, 3), ("sizes", s, 3), ("rotations", q, 4)):
        if a.shape != (t_n, b_n, width):
            raise ValueError(f"{name} must have shape ({t_n}, {b_n}, {width}), got {a.shape}")
    if ok.any():  # validated (and normalised) where valid, as points_in_boxes does
        c[ok], s[ok], q[ok] = _check_boxes(c[ok], s[ok], q[ok])
    st = np.ascontiguousarray(steps, dtype=np.int64)
    if st.shape != (len(pts),):
        raise ValueError(f"steps must have shape ({len(pts)},), got {st.shape}")
    if len(st) and (st.min() < 0 or st.max() >= t_n):
        raise ValueError(f"steps must be in [0, {t_n}), got [{st.min()}, {st.max()}]")
    margin = float(margin)
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    labels = np.full(len(pts), -1, dtype=np.int32)
    if len(pts) == 0 or b_n == 0:
        return labels
    rmat, half = _box_tables(q, s, margin, ok)
    _label_kernel(pts, st, c.reshape(-1, 3), rmat.reshape(-1, 3, 3), half.reshape(-1, 3), ok, labels)
    return labels


def _warmup() -> None:
    box = (np.zeros((1, 1, 3)), np.ones((1, 1, 3)), np.array([[[1.0, 0, 0, 0]]]), np.ones((1, 1), bool))
    points_in_moving_boxes(np.zeros((2, 3), np.float32), np.zeros(2, np.int64), *box)
