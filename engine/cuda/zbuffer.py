"""Per-camera z-buffer on the GPU: :func:`engine.zbuffer.zbuffer`'s visibility.

Every camera's depth image lives in one flat float32 buffer (camera ``c`` at ``offsets[c]``,
row-major). Three kernels: fill it with ``inf``; splat each in-image point's depth over its
disc of ``radius_px`` (``half[dv + R]`` half widths, as the CPU kernel) with an atomic
minimum, so the result is the nearest depth whatever the order; test each point against the
depth at its own pixel with the CPU kernel's float32 / float64 arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from engine.cuda._jit import kernel, launch, launch_strided, workspace
from engine.cuda.projection import DeviceProjection
from engine.projection import Projection


@kernel
def _fill(images, value):
    for k in range(cuda.grid(1), images.shape[0], cuda.gridsize(1)):
        images[k] = value


@kernel
def _splat(uv, depth, in_image, sizes, offsets, half, images):
    """Point ``i``'s depth into each camera's image where it is in the image."""
    i = cuda.grid(1)
    if i >= uv.shape[1]:
        return
    radius = (half.shape[0] - 1) // 2
    for c in range(uv.shape[0]):
        if not in_image[c, i]:
            continue
        w = sizes[c, 0]
        h = sizes[c, 1]
        pu = int(round(uv[c, i, 0]))
        pv = int(round(uv[c, i, 1]))
        d = depth[c, i]
        for dv in range(-radius, radius + 1):
            y = pv + dv
            if y < 0 or y >= h:
                continue
            r = half[dv + radius]
            row = offsets[c] + y * w
            for x in range(max(pu - r, 0), min(pu + r, w - 1) + 1):
                cuda.atomic.min(images, row + x, d)


@kernel
def _test(uv, depth, in_image, sizes, offsets, tol_m, tol_rel, images, visible):
    """``visible[c, i]``: in the image and within the tolerance of the depth at its pixel."""
    i = cuda.grid(1)
    if i >= uv.shape[1]:
        return
    for c in range(uv.shape[0]):
        seen = False
        if in_image[c, i]:
            d = depth[c, i]
            pixel = offsets[c] + int(round(uv[c, i, 1])) * sizes[c, 0] + int(round(uv[c, i, 0]))
            seen = d - images[pixel] <= tol_m + tol_rel * d
        visible[c, i] = seen


def launch_zbuffer(proj: DeviceProjection, half: np.ndarray, tolerance_m: float, tolerance_rel: float,
                   prefix: str) -> Any:
    """Queue the z-buffer of a device projection; returns the ``(C, N) bool`` device
    visibility (``half`` as :func:`engine.zbuffer.zbuffer` makes it)."""
    ws = workspace()
    sizes = proj.image_sizes
    pixels = sizes[:, 0] * sizes[:, 1]
    offsets = np.concatenate([[0], np.cumsum(pixels)[:-1]]).astype(np.int64)
    sizes_dev = ws.upload(f"{prefix}.sizes", sizes)
    offsets_dev = ws.upload(f"{prefix}.offsets", offsets)
    half_dev = ws.upload(f"{prefix}.half", half)
    images = ws.device(f"{prefix}.images", (int(pixels.sum()),), np.float32)
    n_cam, n = proj.in_image.shape
    visible = ws.device(f"{prefix}.visible", (n_cam, n), np.bool_)
    launch_strided(_fill, images.shape[0], images, np.float32(np.inf))
    launch(_splat, n, proj.uv, proj.depth, proj.in_image, sizes_dev, offsets_dev, half_dev, images)
    launch(_test, n, proj.uv, proj.depth, proj.in_image, sizes_dev, offsets_dev, float(tolerance_m),
           float(tolerance_rel), images, visible)
    return visible


def visibility(projection: Projection, half: np.ndarray, tolerance_m: float, tolerance_rel: float) -> np.ndarray:
    """:func:`engine.zbuffer.zbuffer`'s ``(C, N) bool`` visibility on the GPU (arguments
    checked by it)."""
    ws = workspace()
    proj = DeviceProjection(ws.upload("zbuffer.uv", projection.uv), ws.upload("zbuffer.depth", projection.depth),
                            ws.upload("zbuffer.in_image", projection.in_image), None,
                            np.asarray(projection.image_sizes, np.int64))
    visible = ws.download("zbuffer.visible", launch_zbuffer(proj, half, tolerance_m, tolerance_rel, "zbuffer"))
    ws.sync()
    return np.array(visible)
