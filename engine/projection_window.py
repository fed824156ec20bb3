"""Project only the points that land in a window of one camera's image.

:func:`project_window` gives the :class:`engine.projection.Projection` of the points of a
world-frame cloud that land within a pixel window (``lo <= (u, v) <= hi``, and in the
image), and which points they are. Point by point it computes exactly what
:func:`engine.projection.project_points` computes (its checks, its kernel inputs and its
inlined ``source_point`` / ``project_one``, so the same arithmetic in the same order), but
one parallel pass writes the projection of the points kept only, chunk by chunk, and the
chunks are then concatenated: no ``(N, 2)`` pixels, depths and cosines of all the points
are stored and read back. A camera lasso needs only the points near its polygon
(:func:`engine.segmentation.select_lasso`), a tenth of a frame or less.
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import inline, pjit, prange
from engine.camera import Camera
from engine.pose_track import PoseTrack
from engine.projection import Projection, project_one, projection_inputs, source_point


@inline
def _window_point(i, xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode, model, p, r, trans,
                  ce_q, ce_t, cam_time, row_ns, size, n_iter, lo, hi):
    """Point ``i`` into one camera (``model``, ``p``, ... its rows of the arrays of
    :func:`engine.projection.projection_inputs`) as :func:`engine.projection.project_points`
    projects it: ``(keep, u, v, cx, cy, cz)``, ``keep`` where it lands in the image and
    within ``lo..hi`` (pixels)."""
    px, py, pz = source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode)
    u, v, ok, cx, cy, cz = project_one(
        model, p, px, py, pz, r[0, 0], r[0, 1], r[0, 2], r[1, 0], r[1, 1], r[1, 2], r[2, 0], r[2, 1], r[2, 2],
        trans[0], trans[1], trans[2], ce_q, ce_t, cam_time, row_ns, size[1] - 1.0, n_iter, ts, q, t, q1, theta,
        inv_sin, mode)
    keep = (ok and u >= -0.5 and u < size[0] - 0.5 and v >= -0.5 and v < size[1] - 0.5
            and u >= lo[0] and u <= hi[0] and v >= lo[1] and v <= hi[1])
    return keep, u, v, cx, cy, cz


_CHUNK = 4096  # points per work item of the window kernel


@pjit
def _window_kernel(xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode, models, params, rot,
                   trans, ce_q, ce_t, cam_times, row_ns, sizes, n_iter, lo, hi, count, rows, uv, depth, cos_view):
    """The points that land in camera 0 within ``lo..hi`` (:func:`_window_point`), chunk by
    chunk of ``_CHUNK`` points in parallel: chunk c writes its kept points' rows and
    :class:`engine.projection.Projection` fields (as ``project_points`` writes them) in input
    order from row ``c · _CHUNK`` of ``rows (N,)``, ``uv (N, 2)``, ``depth (N,)``,
    ``cos_view (N,)``, and how many in ``count[c]``."""
    model, p, r, tr, cq, ct, tc, rns, size = models[0], params[0], rot[0], trans[0], ce_q[0], ce_t[0], \
        cam_times[0], row_ns[0], sizes[0]
    n = xyz.shape[0]
    for c in prange(count.shape[0]):
        j = c * _CHUNK
        for i in range(c * _CHUNK, min((c + 1) * _CHUNK, n)):
            k, u, v, cx, cy, cz = _window_point(i, xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta,
                                                inv_sin, mode, model, p, r, tr, cq, ct, tc, rns, size, n_iter, lo, hi)
            if k:
                rows[j] = i
                uv[j, 0] = u
                uv[j, 1] = v
                depth[j] = cz
                cos_view[j] = cz / math.sqrt(cx * cx + cy * cy + cz * cz)
                j += 1
        count[c] = j - c * _CHUNK


@pjit
def _kept_rows(count, rows, uv, depth, cos_view):
    """``(rows (M,), uv (1, M, 2), depth (1, M), cos_view (1, M))``: the chunks' kept points
    of :func:`_window_kernel`, concatenated (chunks in parallel)."""
    starts = np.zeros(count.shape[0] + 1, np.int64)
    for c in range(count.shape[0]):
        starts[c + 1] = starts[c] + count[c]
    m = starts[-1]
    out_rows = np.empty(m, np.int64)
    out_uv, out_depth, out_cos = np.empty((1, m, 2)), np.empty((1, m), np.float32), np.empty((1, m), np.float32)
    for c in prange(count.shape[0]):
        for k in range(count[c]):
            src = c * _CHUNK + k
            dst = starts[c] + k
            out_rows[dst] = rows[src]
            out_uv[0, dst, 0] = uv[src, 0]
            out_uv[0, dst, 1] = uv[src, 1]
            out_depth[0, dst] = depth[src]
            out_cos[0, dst] = cos_view[src]
    return out_rows, out_uv, out_depth, out_cos


def project_window(xyz_world: np.ndarray, camera: Camera, world_from_ego: PoseTrack, camera_time_ns: int,
                   lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, Projection]:
    """``(rows (M,) int64, projection)``: the points of ``xyz_world (N, 3)`` (metres, world
    frame) that ``camera`` exposed at ``camera_time_ns`` sees in its image within the pixel
    window ``lo (2,) .. hi (2,)`` (inclusive), ascending, and their :class:`Projection`
    (one camera, ``M`` points, all in the image). ``ValueError`` as :func:`project_points`."""
    args = projection_inputs(xyz_world, [camera], world_from_ego=world_from_ego,
                             camera_times_ns=[int(camera_time_ns)], frame="world")
    n = len(args.xyz)
    count, rows, uv = np.empty((n + _CHUNK - 1) // _CHUNK, np.int64), np.empty(n, np.int64), np.empty((n, 2))
    depth, cos_view = np.empty(n, np.float32), np.empty(n, np.float32)
    window_lo = np.asarray(lo, np.float64)
    window_hi = np.asarray(hi, np.float64)
    _window_kernel(*args, window_lo, window_hi, count, rows, uv, depth, cos_view)
    rows, uv_kept, depth_kept, cos_kept = _kept_rows(count, rows, uv, depth, cos_view)
    return rows, Projection(uv_kept, depth_kept, np.ones(depth_kept.shape, np.bool_), args.sizes, cos_kept)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics
    from engine.se3 import SE3

    cam = Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity())
    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    for pts in (np.array([[0.0, 0.0, 1.0]], np.float32), np.array([[0.0, 0.0, 1.0]], np.float64)):
        project_window(pts, cam, track, 5, np.zeros(2), np.full(2, 4.0))
