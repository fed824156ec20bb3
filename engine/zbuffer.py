"""Per-camera z-buffer: only the nearest surface at each pixel is visible.

LiDAR points are sparse in an image, so a point of a far surface can fall between the
points of a near one and wrongly count as visible. Each in-image point therefore splats
its depth over a disc of ``radius_px`` pixels around its pixel (the nearest depth wins);
a point is visible when its depth is within ``tolerance_m + tolerance_rel · depth`` of the
depth image at its own pixel. The splat radius is fixed in pixels (not scaled by depth).

Cameras run in parallel, each on its own buffers, so no atomics are needed. Within a
camera the in-image points are bucketed by band of image rows (a counting sort) and the
depth test runs band after band on a band-sized buffer that stays in cache: the cost
follows the number of points, not the image area, and no full-size image is touched.
The dense depth images are assembled only when :attr:`Occlusion.depth_images` is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from engine._jit import inline, pjit, prange
from engine.projection import Projection

_BAND = 16  # image rows per band: 16 × 1920 float32 = 120 KiB, in L2


@inline
def _splat_rows(band, y0, y1, w, pu, pv, half, d, reset):
    """Lower band rows ``y0 <= y < y1`` to ``d`` over the disc around (pu, pv) (nearest
    wins), or set them back to inf (``reset``)."""
    radius = (half.shape[0] - 1) // 2
    for y in range(max(pv - radius, y0), min(pv + radius, y1 - 1) + 1):
        r = half[y - pv + radius]
        for x in range(max(pu - r, 0), min(pu + r, w - 1) + 1):
            if reset:
                band[y - y0, x] = np.inf
            elif d < band[y - y0, x]:
                band[y - y0, x] = d


@pjit
def _zbuffer_kernel(uv, depth, in_image, sizes, half, tol_m, tol_rel, visible, images, offsets):
    """Per camera (in parallel): bucket the in-image points by band of ``_BAND`` image rows,
    then per band splat into a band-sized depth buffer (the band's points and those of
    neighbouring rows whose disc reaches in) and test the band's points against it.

    ``half[dv + R]`` is the disc's half width on row offset ``dv`` (R = radius). With
    ``images`` non-empty, each band's depth rows are also copied there (at ``offsets[c]``).
    """
    n_cam = uv.shape[0]
    n = uv.shape[1]
    radius = (half.shape[0] - 1) // 2
    for c in prange(n_cam):
        w = sizes[c, 0]
        h = sizes[c, 1]
        n_bands = (h + _BAND - 1) // _BAND
        start = np.zeros(n_bands + 1, np.int64)
        for i in range(n):
            if in_image[c, i]:
                start[int(round(uv[c, i, 1])) // _BAND + 1] += 1
        for b in range(n_bands):
            start[b + 1] += start[b]
        m = start[n_bands]
        pus = np.empty(m, np.int32)
        pvs = np.empty(m, np.int32)
        ds = np.empty(m, np.float32)
        idx = np.empty(m, np.int64)
        fill = start[:n_bands].copy()
        for i in range(n):
            if in_image[c, i]:
                pv = int(round(uv[c, i, 1]))
                k = fill[pv // _BAND]
                fill[pv // _BAND] = k + 1
                pus[k] = int(round(uv[c, i, 0]))
                pvs[k] = pv
                ds[k] = depth[c, i]
                idx[k] = i
            visible[c, i] = False
        reach = (radius + _BAND - 1) // _BAND  # neighbouring bands whose discs reach in
        band = np.full((_BAND, w), np.inf, np.float32)
        for b in range(n_bands):
            y0 = b * _BAND
            y1 = min(y0 + _BAND, h)
            lo = start[max(b - reach, 0)]
            hi = start[min(b + reach + 1, n_bands)]
            for k in range(lo, hi):
                _splat_rows(band, y0, y1, w, pus[k], pvs[k], half, ds[k], False)
            for k in range(start[b], start[b + 1]):
                d = ds[k]
                visible[c, idx[k]] = d - band[pvs[k] - y0, pus[k]] <= tol_m + tol_rel * d
            if images.shape[0]:
                o = offsets[c] + y0 * w
                for y in range(y1 - y0):
                    for x in range(w):
                        images[o + y * w + x] = band[y, x]
            for k in range(lo, hi):  # back to inf, touching only the splatted pixels
                _splat_rows(band, y0, y1, w, pus[k], pvs[k], half, ds[k], True)


@dataclass(frozen=True, eq=False)
class Occlusion:
    """Result of :func:`zbuffer`.

    Attributes:
        visible: ``(C, N) bool`` the point is in the image and on the nearest surface.
        depth_images: per camera a ``(height, width) float32`` image of the nearest splatted
            depth in metres, ``inf`` where no point landed (built on first access).
    """

    visible: np.ndarray
    _projection: Projection = field(repr=False)
    _half: np.ndarray = field(repr=False)

    @cached_property
    def depth_images(self) -> list[np.ndarray]:
        proj = self._projection
        sizes = proj.image_sizes
        pixels = sizes[:, 0] * sizes[:, 1]
        offsets = np.concatenate([[0], np.cumsum(pixels)[:-1]]).astype(np.int64)
        images = np.empty(int(pixels.sum()), np.float32)
        scratch = np.empty(self.visible.shape, np.bool_)
        _zbuffer_kernel(proj.uv, proj.depth, proj.in_image, sizes, self._half, 0.0, 0.0, scratch, images, offsets)
        return [images[o : o + w * h].reshape(h, w) for o, (w, h) in zip(offsets, sizes)]


def zbuffer(
    projection: Projection,
    radius_px: int = 2,
    tolerance_m: float = 0.1,
    tolerance_rel: float = 0.02,
) -> Occlusion:
    """Occlusion test of projected points, per camera.

    Args:
        projection: output of :func:`engine.projection.project_points`.
        radius_px: splat radius in pixels (0: the point's own pixel only).
        tolerance_m, tolerance_rel: a point is visible if its depth exceeds the depth image
            at its pixel by at most ``tolerance_m + tolerance_rel · depth`` (metres).

    Returns:
        :class:`Occlusion` (visibility ``(C, N)`` and one depth image per camera).
    """
    if not isinstance(projection, Projection):
        raise ValueError(f"projection must be a Projection, got {type(projection).__name__}")
    if int(radius_px) != radius_px or radius_px < 0:
        raise ValueError(f"radius_px must be a non-negative integer, got {radius_px}")
    for name, value in (("tolerance_m", tolerance_m), ("tolerance_rel", tolerance_rel)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    r = int(radius_px)
    half = np.array([math.isqrt(r * r - dv * dv) for dv in range(-r, r + 1)], np.int64)
    visible = np.empty(projection.in_image.shape, np.bool_)
    _zbuffer_kernel(
        projection.uv, projection.depth, projection.in_image, projection.image_sizes, half,
        float(tolerance_m), float(tolerance_rel), visible, np.empty(0, np.float32), np.zeros(0, np.int64),
    )
    return Occlusion(visible=visible, _projection=projection, _half=half)


def _warmup() -> None:
    uv = np.array([[[0.0, 0.0], [np.nan, np.nan]]])
    proj = Projection(uv, np.array([[1.0, 1.0]], np.float32), np.array([[True, False]]), np.array([[2, 2]]),
                      np.array([[1.0, np.nan]], np.float32))
    zbuffer(proj).depth_images
