"""Colourisation on the GPU: :func:`engine.colorize.colorize` with the images on the device.

One thread per point: the most frontal camera that sees it (``best_camera``), then its
colour sampled from that camera's decoded image (``sample_point``: bilinear or nearest, as
the CPU). The images of a frame go up as one ``(C, H, W, K)`` array (smaller images in the
top-left corner of their slot); a camera's pixel coordinates can be mapped to an image
decoded at a reduced scale ``s`` on the way (``u' = s (u + 0.5) - 0.5``, the arithmetic of
``formats.jpeg.scale_pixels``), so the projection stays at full resolution.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from numba import cuda

from engine import colorize as cpu_colorize
from engine.colorize import ColorizeInputs
from engine.cuda._jit import device, kernel, launch, workspace
from engine.cuda.projection import DeviceProjection
from engine.projection import Projection

best_camera = device(cpu_colorize.best_camera)
sample_point = device(cpu_colorize.sample_point)


@kernel
def _colorize(cos_view, visible, usable, uv, scales, sizes, images, bilinear, is_int, best, out):
    """``best[i]`` and ``out[i, :]`` (zeros where no camera colours point ``i``); ``sizes``
    ``(C, 2)`` width, height of each image, ``scales (C,)`` its decoding scale."""
    i = cuda.grid(1)
    if i >= best.shape[0]:
        return
    c = best_camera(cos_view, visible, usable, i)
    best[i] = c
    if c < 0:
        for k in range(out.shape[1]):
            out[i, k] = 0
        return
    u = uv[c, i, 0]
    v = uv[c, i, 1]
    s = scales[c]
    if s != 1.0:
        u = (u + 0.5) * s - 0.5
        v = (v + 0.5) * s - 0.5
    sample_point(images[c], sizes[c, 1], sizes[c, 0], u, v, bilinear, is_int, out, i)


def launch_colorize(proj: DeviceProjection, visible: Any, args: ColorizeInputs, scales: Sequence[float],
                    prefix: str) -> tuple[Any, Any]:
    """Queue colourisation of a device projection with the device visibility ``visible``;
    ``args.images`` decoded at ``scales`` (one per camera, 1 for full size). Returns device
    ``(colours (N, K), camera_index (N,) int64)``."""
    ws = workspace()
    n_cam, n = proj.cos_view.shape
    images = args.images
    sizes = np.array([(0, 0) if a is None else (a.shape[1], a.shape[0]) for a in images], np.int64).reshape(n_cam, 2)
    stack = ws.pinned(f"{prefix}.images", (n_cam, max(sizes[:, 1].max(initial=1), 1),
                                           max(sizes[:, 0].max(initial=1), 1), args.channels), args.dtype)
    for c, img in enumerate(images):
        if img is not None:
            stack[c, : img.shape[0], : img.shape[1]] = img
    images_dev = ws.device(f"{prefix}.images", stack.shape, args.dtype)
    ws.send(stack, images_dev)
    usable = ws.upload(f"{prefix}.usable", np.array([a is not None for a in images], np.bool_))
    scales_dev = ws.upload(f"{prefix}.scales", np.asarray(scales, np.float64).reshape(n_cam))
    sizes_dev = ws.upload(f"{prefix}.sizes", sizes)
    best = ws.device(f"{prefix}.best", (n,), np.int64)
    out = ws.device(f"{prefix}.out", (n, args.channels), args.dtype)
    launch(_colorize, n, proj.cos_view, visible, usable, proj.uv, scales_dev, sizes_dev, images_dev, args.bilinear,
           args.is_int, best, out)
    return out, best


def colorize_points(projection: Projection, args: ColorizeInputs) -> tuple[np.ndarray, np.ndarray]:
    """:func:`engine.colorize.colorize` on the GPU (inputs checked by it): ``(colours
    (N, K), camera_index (N,) int64)``."""
    ws = workspace()
    proj = DeviceProjection(ws.upload("colorize.uv", projection.uv), None, None,
                            ws.upload("colorize.cos_view", projection.cos_view), projection.image_sizes)
    assert args.visible is not None  # colorize() passes its checked visibility
    vis = ws.upload("colorize.visible", args.visible)
    out, best = launch_colorize(proj, vis, args, [1.0] * len(args.images), "colorize")
    parts = ws.download("colorize.out", out), ws.download("colorize.best", best)
    ws.sync()
    return np.array(parts[0]), np.array(parts[1])
