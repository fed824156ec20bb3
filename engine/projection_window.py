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

Where the lens is ``K`` alone (pinhole, or Brown-Conrady without distortion) and the
shutter is global, the window is a cone in the camera frame (bounds on ``x / z`` and
``y / z``, widened far beyond rounding): a point outside it, or at or before the near
plane, is passed over after its depth or one more coordinate, before the lens; the points
inside take the same lens call as ``project_points``.
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import inline, pjit, prange, spread
from engine.camera import Camera, lens_project
from engine.pose_track import PoseTrack
from engine.projection import Projection, project_one, projection_inputs, source_point


@inline
def _keep(i, j, u, v, ok, cx, cy, cz, size, lo, hi, rows, uv, depth, cos_view):
    """Write point ``i``'s projection at row ``j`` of the outputs where it lands in the image
    of ``size (2,)`` pixels and within ``lo..hi`` (``ok``: the lens projects it); the next
    free row."""
    if (ok and u >= -0.5 and u < size[0] - 0.5 and v >= -0.5 and v < size[1] - 0.5
            and u >= lo[0] and u <= hi[0] and v >= lo[1] and v <= hi[1]):
        rows[j] = i
        uv[j, 0] = u
        uv[j, 1] = v
        depth[j] = cz
        cos_view[j] = cz / math.sqrt(cx * cx + cy * cy + cz * cz)
        return j + 1
    return j


_CHUNK = 4096  # points per work item of the window kernel


@pjit
def _window_kernel(xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode, models, params, rot,
                   trans, ce_q, ce_t, cam_times, row_ns, sizes, n_iter, lo, hi, cone, count, rows, uv, depth, cos_view):
    """The points that land in camera 0 (its rows of the arrays of
    :func:`engine.projection.projection_inputs`) within the pixel window ``lo..hi``,
    projected as :func:`engine.projection.project_points` projects them (its inlined
    ``source_point`` / ``project_one``; with ``cone (5,)`` of :func:`_cone` non-empty, the
    same transform, then ``lens_project`` for the points inside the cone and beyond its
    near plane only), chunk by chunk of ``_CHUNK`` points in parallel (:func:`spread`):
    chunk c writes its kept points' rows and :class:`engine.projection.Projection` fields
    in input order from row ``c · _CHUNK`` of ``rows (N,)``, ``uv (N, 2)``, ``depth (N,)``,
    ``cos_view (N,)``, and how many in ``count[c]``."""
    model, p, r, tr, cq, ct, tc, rns, size = models[0], params[0], rot[0], trans[0], ce_q[0], ce_t[0], \
        cam_times[0], row_ns[0], sizes[0]
    n = xyz.shape[0]
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = r[0, 0], r[0, 1], r[0, 2], r[1, 0], r[1, 1], r[1, 2], r[2, 0], \
        r[2, 1], r[2, 2]
    t0, t1, t2 = tr[0], tr[1], tr[2]
    for item in prange(count.shape[0]):
        c = spread(item, count.shape[0])
        j = c * _CHUNK
        if cone.shape[0]:
            x0, x1, y0, y1, near = cone[0], cone[1], cone[2], cone[3], cone[4]
            for i in range(c * _CHUNK, min((c + 1) * _CHUNK, n)):
                px, py, pz = source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin,
                                          mode)
                cz = r20 * px + r21 * py + r22 * pz + t2
                if not cz > near:
                    continue
                cx = r00 * px + r01 * py + r02 * pz + t0
                if cx < x0 * cz or cx > x1 * cz:
                    continue
                cy = r10 * px + r11 * py + r12 * pz + t1
                if cy < y0 * cz or cy > y1 * cz:
                    continue
                u, v, ok = lens_project(model, p, cx, cy, cz)
                j = _keep(i, j, u, v, ok, cx, cy, cz, size, lo, hi, rows, uv, depth, cos_view)
        else:
            for i in range(c * _CHUNK, min((c + 1) * _CHUNK, n)):
                px, py, pz = source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin,
                                          mode)
                u, v, ok, cx, cy, cz = project_one(
                    model, p, px, py, pz, r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2, cq, ct, tc, rns,
                    size[1] - 1.0, n_iter, ts, q, t, q1, theta, inv_sin, mode)
                j = _keep(i, j, u, v, ok, cx, cy, cz, size, lo, hi, rows, uv, depth, cos_view)
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


def _cone(camera: Camera, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``(5,)`` bounds ``x0, x1, y0, y1`` of ``x / z`` and ``y / z`` (camera frame) outside
    which a point cannot land in the pixel window ``lo..hi`` of ``camera``'s image, widened
    by 1e-6 (far beyond rounding), and the near plane's depth; empty where the lens is not
    ``K`` alone (a distortion or fisheye model) or the shutter rolls (the pixel moves with
    its row's pose)."""
    k = camera.intrinsics
    if camera.shutter == "rolling" or not (k.model == "pinhole" or (k.model == "brown_conrady"
                                                                    and not any(k.distortion))):
        return np.zeros(0)
    u0, u1 = max(float(lo[0]), -0.5), min(float(hi[0]), k.width - 0.5)
    v0, v1 = max(float(lo[1]), -0.5), min(float(hi[1]), k.height - 0.5)
    y0, y1 = (v0 - k.cy) / k.fy, (v1 - k.cy) / k.fy
    x0 = (u0 - k.cx - max(k.skew * y0, k.skew * y1)) / k.fx
    x1 = (u1 - k.cx - min(k.skew * y0, k.skew * y1)) / k.fx
    return np.array([x0 - 1e-6 * (1 + abs(x0)), x1 + 1e-6 * (1 + abs(x1)),
                     y0 - 1e-6 * (1 + abs(y0)), y1 + 1e-6 * (1 + abs(y1)), camera.near_m])


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
    _window_kernel(*args, window_lo, window_hi, _cone(camera, window_lo, window_hi), count, rows, uv, depth, cos_view)
    rows, uv_kept, depth_kept, cos_kept = _kept_rows(count, rows, uv, depth, cos_view)
    return rows, Projection(uv_kept, depth_kept, np.ones(depth_kept.shape, np.bool_), args.sizes, cos_kept)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics
    from engine.se3 import SE3

    cam = Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity())
    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    for pts in (np.array([[0.0, 0.0, 1.0]], np.float32), np.array([[0.0, 0.0, 1.0]], np.float64)):
        project_window(pts, cam, track, 5, np.zeros(2), np.full(2, 4.0))
