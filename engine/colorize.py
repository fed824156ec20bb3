"""Colour points from camera images.

Each point takes its colour from one camera: among the cameras where it is visible (in
the image and not occluded, see :mod:`engine.zbuffer`) and that have an image, the one
that sees it most frontally — the smallest angle between the point's viewing ray and the
camera's optical axis, i.e. the largest ``Projection.cos_view`` (camera-frame ``z / |p|``
of the point, known from the transform; the same angle ``lens_unproject`` of the pixel
gives), so wide-angle and fisheye cameras compare fairly with narrow ones and points near
the distorted image border lose to a camera that sees them near its centre. Ties go to the
lower camera index.

Sampling is bilinear between the four nearest pixel centres (edge pixels are repeated
at the border) or nearest-pixel; use ``"nearest"`` for label or id images, where
blending neighbouring values is meaningless. Integer images are rounded to the nearest
value after blending.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np

from engine._jit import inline, pjit, prange
from engine.camera import Camera
from engine.cuda import Device, resolve
from engine.projection import Projection

Interpolation = Literal["bilinear", "nearest"]


@dataclass(frozen=True, eq=False)
class Colorization:
    """Result of :func:`colorize`.

    Attributes:
        colors: ``(N, K)`` (or ``(N,)`` for single-channel images) in the images' dtype;
            zero for points no camera colours.
        camera_index: ``(N,) int64`` the camera each point took its colour from, -1 if none.
    """

    colors: np.ndarray
    camera_index: np.ndarray


@inline
def best_camera(cos_view, visible, usable, i):
    """The camera point ``i`` takes its colour from (largest ``cos_view`` among the usable
    cameras that see it; ties: the lower index), -1 for none."""
    b = -1
    best_cos = np.float32(-2.0)
    for c in range(cos_view.shape[0]):
        if usable[c] and visible[c, i] and cos_view[c, i] > best_cos:
            best_cos = cos_view[c, i]
            b = c
    return b


@pjit
def _choose_kernel(cos_view, visible, usable, best):
    for i in prange(cos_view.shape[1]):
        best[i] = best_camera(cos_view, visible, usable, i)


@inline
def sample_point(image, h, w, u, v, bilinear, is_int, out, i):
    """``out[i, :]`` = the ``(h, w, K)`` top-left part of ``image`` sampled at pixel
    ``(u, v)`` (module docstring: edge pixels repeated, integers rounded)."""
    if bilinear:
        x0 = math.floor(u)
        y0 = math.floor(v)
        fx = u - x0
        fy = v - y0
        xa = min(max(int(x0), 0), w - 1)
        xb = min(max(int(x0) + 1, 0), w - 1)
        ya = min(max(int(y0), 0), h - 1)
        yb = min(max(int(y0) + 1, 0), h - 1)
        for k in range(image.shape[2]):
            top = (1.0 - fx) * float(image[ya, xa, k]) + fx * float(image[ya, xb, k])
            bottom = (1.0 - fx) * float(image[yb, xa, k]) + fx * float(image[yb, xb, k])
            val = (1.0 - fy) * top + fy * bottom
            if is_int:
                val = math.floor(val + 0.5)
            out[i, k] = val
    else:
        x = min(max(int(round(u)), 0), w - 1)
        y = min(max(int(round(v)), 0), h - 1)
        for k in range(image.shape[2]):
            out[i, k] = image[y, x, k]


@pjit
def _sample_kernel(image, uv, index, bilinear, is_int, out):
    for j in prange(index.shape[0]):
        i = index[j]
        sample_point(image, image.shape[0], image.shape[1], uv[i, 0], uv[i, 1], bilinear, is_int, out, i)


class ColorizeInputs(NamedTuple):
    """:func:`colorize`'s inputs, checked by :func:`colorize_inputs`."""

    visible: np.ndarray | None  # (C, N) bool, C-contiguous (None: given on the device)
    images: list[np.ndarray | None]  # per camera (h, w, K) C-contiguous, or None
    dtype: np.dtype  # the images' dtype (uint8 where there is none)
    tail: tuple[int, ...]  # the images' channel shape, () for 2-D images
    channels: int  # K
    bilinear: bool
    is_int: bool  # integer (or bool) images: blended values rounded


def colorize_inputs(shape: tuple[int, int], visible: np.ndarray | None, cameras: Sequence[Camera],
                    images: Sequence[np.ndarray | None], interpolation: Interpolation = "bilinear") -> ColorizeInputs:
    """:func:`colorize`'s checks for a projection of ``shape`` ``(C, N)``; ``ValueError``
    naming the bad argument. ``visible`` None: the visibility is the GPU pipeline's own."""
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation must be 'bilinear' or 'nearest', got {interpolation!r}")
    cameras = list(cameras)
    images = list(images)
    n_cam, n = shape
    if len(cameras) != n_cam or len(images) != n_cam:
        raise ValueError(
            f"projection has {n_cam} cameras but got {len(cameras)} cameras and {len(images)} images"
        )
    vis = None if visible is None else np.ascontiguousarray(visible, dtype=np.bool_)
    if vis is not None and vis.shape != (n_cam, n):
        raise ValueError(f"visible must have shape ({n_cam}, {n}), got {vis.shape}")
    stacked: list[np.ndarray | None] = []
    kind = None
    for cam, img in zip(cameras, images):
        if img is None:
            stacked.append(None)
            continue
        a = np.asarray(img)
        hw = (cam.intrinsics.height, cam.intrinsics.width)
        if a.ndim not in (2, 3) or a.shape[:2] != hw:
            raise ValueError(f"image for camera {cam.name!r} must be {hw} (+ channels), got {a.shape}")
        this = (a.dtype, a.shape[2:])
        if kind is not None and this != kind:
            raise ValueError(f"images differ in dtype/channels: {kind} vs {this} (camera {cam.name!r})")
        kind = this
        stacked.append(np.ascontiguousarray(a.reshape(a.shape[0], a.shape[1], -1)))
    dtype, tail = kind if kind is not None else (np.dtype(np.uint8), (3,))
    channels = int(np.prod(tail)) if tail else 1
    is_int = bool(np.issubdtype(dtype, np.integer) or dtype == np.bool_)
    return ColorizeInputs(vis, stacked, dtype, tail, channels, interpolation == "bilinear", is_int)


def colorize(
    projection: Projection,
    visible: np.ndarray,
    cameras: Sequence[Camera],
    images: Sequence[np.ndarray | None],
    interpolation: Interpolation = "bilinear",
    device: Device | None = None,
) -> Colorization:
    """Colour each point from the camera that sees it most frontally.

    Args:
        projection: the points projected into ``cameras`` (same order).
        visible: ``(C, N) bool``, e.g. ``zbuffer(projection).visible``.
        cameras: the ``C`` cameras.
        images: per camera an image ``(height, width)`` or ``(height, width, K)`` matching
            its size, or None (that camera is not used). All images share dtype and K.
        interpolation: ``"bilinear"`` or ``"nearest"``.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`).
    """
    args = colorize_inputs(projection.in_image.shape, visible, cameras, images, interpolation)
    n = projection.in_image.shape[1]
    if resolve(device) == "cuda":
        from engine.cuda.colorize import colorize_points

        out, best = colorize_points(projection, args)
        return Colorization(colors=out.reshape((n,) + args.tail), camera_index=best)
    best = np.empty(n, np.int64)
    usable = np.array([s is not None for s in args.images], np.bool_)
    _choose_kernel(projection.cos_view, args.visible, usable, best)

    out = np.zeros((n, args.channels), args.dtype)
    for c, img in enumerate(args.images):
        if img is None:
            continue
        index = np.flatnonzero(best == c)
        if len(index):
            _sample_kernel(img, projection.uv[c], index, args.bilinear, args.is_int, out)
    return Colorization(colors=out.reshape((n,) + args.tail), camera_index=best)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics
    from engine.projection import project_points
    from engine.se3 import SE3

    cam = Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 1.5, 1.5), SE3.identity())
    proj = project_points(np.array([[0.0, 0.0, 1.0]]), [cam])
    for dtype in (np.uint8, np.float32, np.int32):
        for interp in ("bilinear", "nearest"):
            colorize(proj, proj.in_image, [cam], [np.zeros((4, 4, 3), dtype)], interp)
