"""2D boxes derived from cuboids, as pre-labels for camera streams.

Each cuboid is projected through the camera's real lens (:func:`engine.cuboid_projection.
project_cuboids`: edges clipped to the near plane and the lens' field of view, sampled along
distorted edges): its box is the bounding box of the projected edges, truncated at the image
border ``[-0.5, W - 0.5] × [-0.5, H - 0.5]``; ``truncation`` is the fraction of the untruncated
box's area outside the image.

Occlusion by the other cuboids: a grid of ``samples × samples`` pixels over the truncated box
is cast back through the lens (:func:`engine.camera.lens_unproject`); the rays that hit the
cuboid sample its silhouette, and a sample is hidden when another cuboid is hit nearer
(by more than ``1e-6`` of the range). ``occlusion`` is the hidden fraction of the silhouette
samples; ``visible_boxes`` bound the visible ones. Cuboids outside the image, or with no
visible sample, get no box (``visible`` False). Points of the scene (a wall, the ground)
occlude nothing here: only the cuboids do.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine._jit import inline, pjit, prange
from engine.camera import Camera, lens_unproject
from engine.cuboid_projection import project_cuboids
from engine.pose_track import Extrapolation, PoseTrack
from engine.projection import camera_setup
from engine.se3 import SE3
from engine.typing import BoolArray, Float64Array, Quaternions, Vectors3


@dataclass(frozen=True)
class DerivedBoxes:
    """For ``M`` cuboids in one camera: ``boxes (M, 4)`` ``(u0, v0, u1, v1)`` truncated at the
    image (NaN where not visible), ``truncation (M,)``, ``occlusion (M,)`` (hidden fraction of
    the silhouette samples), ``visible_boxes (M, 4)`` and ``visible (M,) bool``."""

    boxes: Float64Array
    truncation: Float64Array
    occlusion: Float64Array
    visible_boxes: Float64Array
    visible: BoolArray


@pjit
def _occlusion_kernel(boxes, model, params, centres, rot, half, samples, hidden, visible_boxes):
    """Per cuboid ``m`` with a finite box: cast ``samples²`` rays over it and count silhouette
    samples and hidden ones (``hidden[m] = (hidden, total)``); cuboids in the camera frame:
    ``centres (M, 3)``, ``rot (M, 3, 3)`` camera_from_box, ``half (M, 3)`` half sizes."""
    n = boxes.shape[0]
    for m in prange(n):
        hidden[m, 0] = 0.0
        hidden[m, 1] = 0.0
        for c in range(4):
            visible_boxes[m, c] = np.nan
        if not np.isfinite(boxes[m, 0]):
            continue
        u_lo, u_hi = math.inf, -math.inf
        v_lo, v_hi = math.inf, -math.inf
        for iu in range(samples):
            u = boxes[m, 0] + (iu + 0.5) / samples * (boxes[m, 2] - boxes[m, 0])
            for iv in range(samples):
                v = boxes[m, 1] + (iv + 0.5) / samples * (boxes[m, 3] - boxes[m, 1])
                dx, dy, dz, ok = lens_unproject(model, params, u, v)
                if not ok:
                    continue
                own = _ray_box(dx, dy, dz, centres, rot, half, m)
                if own < 0.0:
                    continue
                hidden[m, 1] += 1.0
                near = False
                for j in range(n):
                    if j != m:
                        t = _ray_box(dx, dy, dz, centres, rot, half, j)
                        if 0.0 <= t < own * (1.0 - 1e-6):
                            near = True
                            break
                if near:
                    hidden[m, 0] += 1.0
                else:
                    u_lo, u_hi = min(u_lo, u), max(u_hi, u)
                    v_lo, v_hi = min(v_lo, v), max(v_hi, v)
        if u_lo <= u_hi:
            visible_boxes[m, 0] = u_lo
            visible_boxes[m, 1] = v_lo
            visible_boxes[m, 2] = u_hi
            visible_boxes[m, 3] = v_hi


@inline
def _ray_box(dx, dy, dz, centres, rot, half, j):
    """Range along the camera ray ``d`` to where it enters cuboid ``j`` (0 from inside), −1 if
    it misses (slab test in the box frame)."""
    t0, t1 = -math.inf, math.inf
    for a in range(3):
        # box-frame ray: o' = Rᵀ(0 − c), d' = Rᵀ d
        o = -(rot[j, 0, a] * centres[j, 0] + rot[j, 1, a] * centres[j, 1] + rot[j, 2, a] * centres[j, 2])
        d = rot[j, 0, a] * dx + rot[j, 1, a] * dy + rot[j, 2, a] * dz
        if d == 0.0:
            if abs(o) > half[j, a]:
                return -1.0
            continue
        ta = (-half[j, a] - o) / d
        tb = (half[j, a] - o) / d
        t0 = max(t0, min(ta, tb))
        t1 = min(t1, max(ta, tb))
    if t0 > t1 or t1 < 0.0:
        return -1.0
    return max(t0, 0.0)


def derive_boxes(centers: Vectors3, sizes: Vectors3, rotations: Quaternions, camera: Camera, *,
                 world_from_ego: PoseTrack | None = None, camera_time_ns: int | None = None,
                 extrapolate: Extrapolation = "none", samples: int = 16, samples_per_edge: int = 16) -> DerivedBoxes:
    """2D boxes of ``M`` cuboids (``(M, 3)`` centres, ``(M, 3)`` sizes, ``(M, 4)`` wxyz; world
    frame with ``world_from_ego`` and the frame's ``camera_time_ns``, else ego frame) in
    ``camera`` (see the module docstring); ``extrapolate``: the pose track's policy."""
    c3 = np.asarray(centers, np.float64).reshape(-1, 3)
    s3 = np.asarray(sizes, np.float64).reshape(-1, 3)
    q4 = quat.as_quaternions(np.asarray(rotations, np.float64).reshape(-1, 4))
    if int(samples) != samples or samples < 1:
        raise ValueError(f"samples must be a positive integer, got {samples}")
    times = None if world_from_ego is None else [int(camera_time_ns)] if camera_time_ns is not None else None
    if world_from_ego is not None and times is None:
        raise ValueError("camera_time_ns is needed with world_from_ego")
    proj = project_cuboids(c3, s3, q4, [camera], world_from_ego=world_from_ego, camera_times_ns=times,
                           extrapolate=extrapolate, samples_per_edge=samples_per_edge)
    boxes = proj.boxes[:, 0]
    edges = proj.edges_uv[:, 0].reshape(len(c3), -1, 2)
    with warnings.catch_warnings():  # a cuboid behind the camera has no edge: an all-NaN row
        warnings.simplefilter("ignore", RuntimeWarning)
        full = np.stack([np.nanmin(edges[..., 0], 1), np.nanmin(edges[..., 1], 1), np.nanmax(edges[..., 0], 1),
                         np.nanmax(edges[..., 1], 1)], axis=1)
    area = lambda b: np.maximum(b[:, 2] - b[:, 0], 0.0) * np.maximum(b[:, 3] - b[:, 1], 0.0)  # noqa: E731
    full_area = area(full)
    truncation = np.where(full_area > 0, 1.0 - area(np.nan_to_num(boxes)) / np.where(full_area > 0, full_area, 1.0),
                          np.nan)
    setup = camera_setup([camera], world_from_ego, times, extrapolate)
    in_cam = setup.camera_from_src[0] @ SE3(q4, c3)
    hidden = np.empty((len(c3), 2))
    visible_boxes = np.empty((len(c3), 4))
    _occlusion_kernel(np.ascontiguousarray(boxes), int(setup.models[0]), np.ascontiguousarray(setup.params[0]),
                      np.ascontiguousarray(in_cam.translation), np.ascontiguousarray(quat.to_matrix(in_cam.rotation)),
                      np.ascontiguousarray(s3 / 2), int(samples), hidden, visible_boxes)
    visible = proj.visible[:, 0] & (hidden[:, 1] > hidden[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        occlusion = np.where(hidden[:, 1] > 0, hidden[:, 0] / hidden[:, 1], np.nan)
    boxes = np.where(visible[:, None], boxes, np.nan)
    return DerivedBoxes(boxes, np.where(visible, truncation, np.nan), np.where(visible, occlusion, np.nan),
                        np.where(visible[:, None], visible_boxes, np.nan), visible)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics

    cam = Camera("a", CameraIntrinsics(8, 8, 4.0, 4.0, 3.5, 3.5), SE3.identity())
    derive_boxes(np.array([[0.0, 0, 5], [0, 0, 8]]), np.ones((2, 3)), np.array([[1.0, 0, 0, 0]] * 2), cam)
