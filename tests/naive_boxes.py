"""Plain NumPy reference of the box tests (no grid, no numba): every point against every
box as it is at the point's own time step, by the rules of ``engine.points_in_boxes``."""

from __future__ import annotations

import numpy as np

from engine import quaternion as quat


def boxes_at_times(xyz, time_offset_ns, step_ns, centers, sizes, rotations, moving, steps,
                   moving_centers, moving_sizes, moving_rotations, moving_valid, margin) -> np.ndarray:
    """``(N,) int32`` box of each point, as :func:`engine.moving_boxes.points_in_boxes_at_times`
    documents it: box b fixed unless ``b = moving[m]`` (then its values at the row of
    ``steps`` equal to the point's ``time_offset_ns // step_ns``, where valid), inflated by
    ``margin``, nearest centre wins, exact ties the lower index, non-finite points nowhere."""
    xyz = np.asarray(xyz, np.float64)
    n, t_n = len(xyz), len(steps)
    key = np.asarray(time_offset_ns, np.int64) // step_ns
    row = np.minimum(np.searchsorted(steps, key), max(t_n - 1, 0))
    has_step = (row < t_n) & (np.asarray(steps)[row] == key) if t_n else np.zeros(n, bool)
    out = np.full(n, -1, np.int32)
    best = np.full(n, np.inf)
    finite = np.all(np.isfinite(xyz), axis=1)
    for b in range(len(centers)):
        if b in list(moving):
            m = list(moving).index(b)
            live = finite & has_step
            live[live] = moving_valid[row[live], m]
            c = moving_centers[row[live], m]
            half = 0.5 * moving_sizes[row[live], m] + margin
            r = quat.to_matrix(moving_rotations[row[live], m])
        else:
            live = finite.copy()
            c = np.broadcast_to(centers[b], (live.sum(), 3))
            half = np.broadcast_to(0.5 * np.asarray(sizes[b]) + margin, (live.sum(), 3))
            r = np.broadcast_to(quat.to_matrix(rotations[b]), (live.sum(), 3, 3))
        idx = np.flatnonzero(live)
        d = xyz[idx] - c
        local = d[:, 0, None] * r[:, 0, :] + d[:, 1, None] * r[:, 1, :] + d[:, 2, None] * r[:, 2, :]  # Rᵀ d
        inside = np.all(np.abs(local) <= half, axis=1)
        d2 = d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1] + d[:, 2] * d[:, 2]
        take = inside & (d2 < best[idx])
        out[idx[take]] = b
        best[idx[take]] = d2[take]
    return out
