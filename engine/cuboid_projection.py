"""Project cuboids into cameras: corners, clipped edge polylines, 2D boxes, visibility.

Each of the 12 edges (:data:`engine.cuboid.EDGES`) is clipped in 3D, in the camera frame,
to the part the lens can project: in front of the near plane and inside the lens' valid
field of view (the cone ``x² + y² <= limit · z²`` of the Brown-Conrady / pinhole fold-back
guard, or ``θ <= limit`` of a Kannala-Brandt lens, see :mod:`engine.camera`). Both bounds
are solved exactly on the segment (a linear and a quadratic equation in the segment
parameter). The clipped segment is then sampled: a pinhole edge is a straight image line
(its two ends suffice); a distorted lens bends it, so ``samples_per_edge`` intervals are
projected along it. The resulting polylines are the cuboid's projection paths.

The 2D box is the bounding box of every projected edge sample, clipped to the image
``[-0.5, width - 0.5] × [-0.5, height - 0.5]`` (pixel (0, 0) is the centre of the top-left
pixel). The box silhouette of a convex solid is made of its edges, so for a pinhole camera
the box is exact; for distorted lenses it is exact up to the edge sampling. A cuboid is
visible in a camera when its clipped box has positive area.

Cuboids are projected at the camera timestamp (row 0 of a rolling-shutter camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine._jit import pjit, prange
from engine.camera import KANNALA_BRANDT, Camera, lens_project
from engine.cuboid import EDGES, box_corners
from engine.pose_track import Extrapolation, PoseTrack
from engine.projection import camera_setup
from engine.quaternion import q_rotate
from engine.se3 import SE3
from engine.typing import BoolArray, Float64Array, Quaternions, TimesNs, Vectors3

# The clipped segment ends stay this far (m, and relative along the edge) inside the
# near plane / field-of-view cone, so rounding never pushes an end sample out.
_NEAR_MARGIN_M = 1e-9
_CONE_MARGIN = 1e-9


@dataclass(frozen=True, eq=False)
class CuboidProjection:
    """``M`` cuboids projected into ``C`` cameras.

    Attributes:
        corners_uv: ``(M, C, 8, 2) float64`` corner pixels (corner order of
            :data:`engine.cuboid.CORNER_SIGNS`), NaN where a corner cannot project.
        edges_uv: ``(M, C, 12, S + 1, 2) float64`` samples along the clipped part of each
            edge (:data:`engine.cuboid.EDGES` order), NaN where an edge has no visible part.
        boxes: ``(M, C, 4) float64`` ``(u_min, v_min, u_max, v_max)`` clipped to the image,
            NaN where not visible.
        visible: ``(M, C) bool``.
    """

    corners_uv: Float64Array
    edges_uv: Float64Array
    boxes: Float64Array
    visible: BoolArray

    def paths(self, m: int, c: int) -> list[Float64Array]:
        """Polylines ``(k, 2)`` of cuboid ``m`` in camera ``c`` (one per visible edge piece)."""
        out = []
        for edge in self.edges_uv[m, c]:
            ok = np.isfinite(edge[:, 0])
            if not ok.any():
                continue
            # split at unprojectable samples (rounding at the clipped ends)
            breaks = np.flatnonzero(np.diff(ok.astype(np.int8)))
            for piece in np.split(np.arange(len(edge)), breaks + 1):
                if ok[piece[0]] and len(piece) >= 2:
                    out.append(edge[piece].copy())
        return out


@pjit
def _cuboid_kernel(corners, edges, models, params, cw_q, cw_t, sizes, n_seg, corners_uv, edges_uv, boxes, visible):
    n_box = corners.shape[0]
    n_cam = models.shape[0]
    for job in prange(n_box * n_cam):
        m = job // n_cam
        c = job % n_cam
        p = params[c]
        model = models[c]
        near = p[14] + _NEAR_MARGIN_M
        # field-of-view cone x² + y² <= lim · z² (inf: only the near plane bounds it)
        if model == KANNALA_BRANDT:
            lim = math.tan(p[13]) ** 2 if p[13] < 0.5 * math.pi else np.inf
        else:
            lim = p[13]
        cam = np.empty((8, 3))
        for k in range(8):
            x, y, z = q_rotate(cw_q[c, 0], cw_q[c, 1], cw_q[c, 2], cw_q[c, 3],
                               corners[m, k, 0], corners[m, k, 1], corners[m, k, 2])
            cam[k, 0] = x + cw_t[c, 0]
            cam[k, 1] = y + cw_t[c, 1]
            cam[k, 2] = z + cw_t[c, 2]
            u, v, ok = lens_project(model, p, cam[k, 0], cam[k, 1], cam[k, 2])
            corners_uv[m, c, k, 0] = u if ok else np.nan
            corners_uv[m, c, k, 1] = v if ok else np.nan
        umin = np.inf
        vmin = np.inf
        umax = -np.inf
        vmax = -np.inf
        for e in range(edges.shape[0]):
            a = edges[e, 0]
            b = edges[e, 1]
            ax, ay, az = cam[a, 0], cam[a, 1], cam[a, 2]
            dx, dy, dz = cam[b, 0] - ax, cam[b, 1] - ay, cam[b, 2] - az
            # near plane: az + t dz > near
            t0 = 0.0
            t1 = 1.0
            if dz == 0.0:
                if not (az > near):
                    t1 = -1.0
            elif dz > 0.0:
                t0 = max(t0, (near - az) / dz)
            else:
                t1 = min(t1, (near - az) / dz)
            # cone: f(t) = qa t² + qb t + qc <= 0; its two nappes meet the line in at most
            # two pieces and only the forward one (z > near) can overlap [t0, t1]
            if t0 < t1 and lim < np.inf:
                qa = dx * dx + dy * dy - lim * dz * dz
                qb = 2.0 * (ax * dx + ay * dy - lim * az * dz)
                qc = ax * ax + ay * ay - lim * az * az
                scale = max(abs(qa), abs(qb), abs(qc))
                if scale == 0.0:
                    pass
                elif abs(qa) <= 1e-12 * scale:
                    if qb > 0.0:
                        t1 = min(t1, -qc / qb)
                    elif qb < 0.0:
                        t0 = max(t0, -qc / qb)
                    elif qc > 0.0:
                        t1 = -1.0
                else:
                    disc = qb * qb - 4.0 * qa * qc
                    if disc < 0.0:
                        if qa > 0.0:
                            t1 = -1.0
                    else:
                        sq = math.sqrt(disc)
                        # numerically stable roots
                        qq = -0.5 * (qb + math.copysign(sq, qb))
                        r1 = qq / qa
                        r2 = qc / qq if qq != 0.0 else r1
                        lo = min(r1, r2)
                        hi = max(r1, r2)
                        if qa > 0.0:
                            t0 = max(t0, lo)
                            t1 = min(t1, hi)
                        else:
                            # (-inf, lo] or [hi, inf): keep the longer overlap
                            left = min(t1, lo) - t0
                            right = t1 - max(t0, hi)
                            if left >= right:
                                t1 = min(t1, lo)
                            else:
                                t0 = max(t0, hi)
                    span = t1 - t0
                    t0 += _CONE_MARGIN * span
                    t1 -= _CONE_MARGIN * span
            for s in range(n_seg + 1):
                ok = False
                u = 0.0
                v = 0.0
                if t0 < t1:
                    tt = t0 + (t1 - t0) * s / n_seg
                    u, v, ok = lens_project(model, p, ax + tt * dx, ay + tt * dy, az + tt * dz)
                if ok:
                    edges_uv[m, c, e, s, 0] = u
                    edges_uv[m, c, e, s, 1] = v
                    umin = min(umin, u)
                    umax = max(umax, u)
                    vmin = min(vmin, v)
                    vmax = max(vmax, v)
                else:
                    edges_uv[m, c, e, s, 0] = np.nan
                    edges_uv[m, c, e, s, 1] = np.nan
        u0 = max(umin, -0.5)
        v0 = max(vmin, -0.5)
        u1 = min(umax, sizes[c, 0] - 0.5)
        v1 = min(vmax, sizes[c, 1] - 0.5)
        vis = u0 < u1 and v0 < v1
        visible[m, c] = vis
        boxes[m, c, 0] = u0 if vis else np.nan
        boxes[m, c, 1] = v0 if vis else np.nan
        boxes[m, c, 2] = u1 if vis else np.nan
        boxes[m, c, 3] = v1 if vis else np.nan


def project_cuboids(
    centers: Vectors3,
    sizes: Vectors3,
    rotations: Quaternions,
    cameras: Sequence[Camera],
    *,
    world_from_ego: PoseTrack | None = None,
    camera_times_ns: TimesNs | Sequence[int] | None = None,
    extrapolate: Extrapolation = "none",
    samples_per_edge: int = 16,
) -> CuboidProjection:
    """Project ``M`` boxes into ``C`` cameras.

    Args:
        centers, sizes, rotations: ``(M, 3)``, ``(M, 3)`` (l, w, h), ``(M, 4)`` wxyz boxes in
            the world frame (with ``world_from_ego``) or the ego frame (without).
        cameras: the ``C`` cameras.
        world_from_ego: ego poses; None when the boxes are in the ego frame.
        camera_times_ns: ``(C,) int64`` camera timestamps (needed with ``world_from_ego``).
        samples_per_edge: intervals sampled along each clipped edge for distorted lenses
            (a pinhole-only rig uses 1: straight edges stay straight).
    """
    c3 = np.asarray(centers, dtype=np.float64)
    if c3.ndim != 2 or c3.shape[1:] != (3,):
        raise ValueError(f"centers must have shape (M, 3), got {c3.shape}")
    corners = np.ascontiguousarray(box_corners(c3, sizes, rotations).reshape(-1, 8, 3))
    if int(samples_per_edge) != samples_per_edge or samples_per_edge < 1:
        raise ValueError(f"samples_per_edge must be a positive integer, got {samples_per_edge}")
    setup = camera_setup(cameras, world_from_ego, camera_times_ns, extrapolate)
    n_cam = len(setup.cameras)
    n_seg = 1 if all(c.intrinsics.model == "pinhole" for c in setup.cameras) else int(samples_per_edge)
    m = len(corners)
    corners_uv = np.empty((m, n_cam, 8, 2))
    edges_uv = np.empty((m, n_cam, len(EDGES), n_seg + 1, 2))
    boxes = np.empty((m, n_cam, 4))
    visible = np.empty((m, n_cam), np.bool_)
    cw = setup.camera_from_src
    _cuboid_kernel(
        corners, np.ascontiguousarray(EDGES, dtype=np.int64), setup.models, setup.params,
        np.ascontiguousarray(cw.rotation), np.ascontiguousarray(cw.translation), setup.sizes, n_seg,
        corners_uv, edges_uv, boxes, visible,
    )
    return CuboidProjection(corners_uv=corners_uv, edges_uv=edges_uv, boxes=boxes, visible=visible)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics

    cam = Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 1.5, 1.5), SE3.identity())
    project_cuboids(np.array([[0.0, 0, 5]]), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]), [cam])
