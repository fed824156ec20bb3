"""Per-camera z-buffer: only the nearest surface at each pixel is visible.

LiDAR points are sparse in an image, so a point of a far surface can fall between the
points of a near one and wrongly count as visible. Each in-image point therefore splats
its depth over a disc of ``radius_px`` pixels around its pixel (the nearest depth wins);
a point is visible when its depth is within ``tolerance_m + tolerance_rel · depth`` of the
depth image at its own pixel. The splat radius is fixed in pixels (not scaled by depth).

Each camera's in-image points are sorted by image row (a counting sort into arrays that
hold only in-image points), cameras in parallel. The image is then swept top to bottom in
bands of rows, every band of every camera in parallel and on its own buffer, so no atomics
are needed; a camera's bands hold about equal numbers of its points (points often fill
only part of an image: bands of equal rows would leave a core idle). A band sweeps with a
lag of ``R = radius_px`` rows: at row ``y`` the points of row ``y`` splat their discs into
the band's rows (row offset by row offset, each a tight loop over the row's points), then
row ``y − R`` — which no later disc reaches — is final: its points are tested and its
pixels set back to ``inf`` (only the span that was written). A band starts ``R`` rows
above its first row and ends ``R`` rows below its last, so the discs of its neighbours'
points reach it too.
Live rows span ``2R + 1`` image rows, held in a ring buffer of the next power of two rows
(8 rows, 60 KiB at R = 2 and 1920 px: in L2). Each point is tested once and splatted once
(its disc cut in two at a band edge); the cost follows the number of points, not the image
area, and no full-size image is touched
(a dense 8 MB image per camera costs a cache miss per touched line and, fresh, a page
fault per 4 KiB). The dense depth images are assembled, row by row as rows become final,
only when :attr:`Occlusion.depth_images` is read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from engine._jit import inline, pjit, prange
from engine.cuda import Device, resolve
from engine.projection import Projection

_BANDS = 8  # work items per camera of the sweep, each of about as many points


@inline
def _band_start(start, b):
    """First image row of band ``b`` of a camera whose row sort starts rows at
    ``start (H + 1,)``: the row where ``b / _BANDS`` of its points are passed (``H`` for
    ``b = _BANDS``)."""
    h = start.shape[0] - 1
    if b == 0:
        return 0
    if b >= _BANDS:
        return h
    return np.searchsorted(start, (b * start[h]) // _BANDS)


@pjit
def _zbuffer_kernel(uv, depth, in_image, sizes, half, tol_m, tol_rel, visible, images, offsets):
    """Per camera (in parallel): counting-sort the in-image points by row; then per band of
    rows of every camera (in parallel) sweep the rows with a lag of R (see the module
    docstring).

    ``half[dv + R]`` is the disc's half width on row offset ``dv`` (R = radius). With
    ``images`` non-empty, each final row is also copied there (at ``offsets[c]``).
    """
    n_cam = uv.shape[0]
    n = uv.shape[1]
    radius = (half.shape[0] - 1) // 2
    n_ring = 1
    while n_ring < 2 * radius + 1:
        n_ring *= 2
    mask = n_ring - 1
    h_max = 0
    for c in range(n_cam):
        h_max = max(h_max, sizes[c, 1])
    # per camera: its in-image points counted per row (start[c, y + 1]), then their rows'
    # starts (a prefix sum), then the points sorted by row (a counting sort) into its part
    # of pus / ds / idx (pixel column, depth, input index), which holds only in-image points
    start = np.zeros((n_cam, h_max + 1), np.int64)
    for c in prange(n_cam):
        for i in range(n):
            visible[c, i] = False
            if in_image[c, i]:
                start[c, int(round(uv[c, i, 1])) + 1] += 1
        for y in range(sizes[c, 1]):
            start[c, y + 1] += start[c, y]
    base = np.zeros(n_cam + 1, np.int64)
    for c in range(n_cam):
        base[c + 1] = base[c] + start[c, sizes[c, 1]]
    pus = np.empty(base[n_cam], np.int32)
    ds = np.empty(base[n_cam], np.float32)
    idx = np.empty(base[n_cam], np.int64)
    for c in prange(n_cam):
        fill = start[c, : sizes[c, 1]] + base[c]
        for i in range(n):
            if in_image[c, i]:
                y = int(round(uv[c, i, 1]))
                k = fill[y]
                fill[y] = k + 1
                pus[k] = int(round(uv[c, i, 0]))
                ds[k] = depth[c, i]
                idx[k] = i
    # the sweep, band by band: band [y0, y1) of a camera holds about 1 / _BANDS of its
    # points, splats the rows y0 - R .. y1 + R - 1 into its own rows only and finalises those
    for item in prange(n_cam * _BANDS):
        c = item // _BANDS
        b = item % _BANDS
        w = sizes[c, 0]
        h = sizes[c, 1]
        y0 = _band_start(start[c, : h + 1], b)
        y1 = _band_start(start[c, : h + 1], b + 1)
        if y0 >= y1 or (start[c, min(y1 + radius, h)] == start[c, max(y0 - radius, 0)] and images.shape[0] == 0):
            continue  # no point splats into the band (and no image is asked for)
        ring = np.full((n_ring, w), np.inf, np.float32)
        lo = np.full(n_ring, w, np.int64)  # written span of each ring row
        hi = np.full(n_ring, -1, np.int64)
        for y in range(y0 - radius, y1 + radius):
            if y >= 0 and y < h and start[c, y + 1] > start[c, y]:
                umin = w
                umax = -1
                for k in range(base[c] + start[c, y], base[c] + start[c, y + 1]):
                    umin = min(umin, pus[k])
                    umax = max(umax, pus[k])
                for dv in range(max(-radius, y0 - y), min(radius, y1 - 1 - y) + 1):
                    r = half[dv + radius]
                    slot = (y + dv) & mask
                    line = ring[slot]
                    lo[slot] = min(lo[slot], max(umin - r, 0))
                    hi[slot] = max(hi[slot], min(umax + r, w - 1))
                    for k in range(base[c] + start[c, y], base[c] + start[c, y + 1]):
                        d = ds[k]
                        pu = pus[k]
                        for x in range(max(pu - r, 0), min(pu + r, w - 1) + 1):
                            old = line[x]
                            line[x] = d if d < old else old  # a store, not a branch
            yt = y - radius
            if yt >= y0:
                slot = yt & mask
                line = ring[slot]
                for k in range(base[c] + start[c, yt], base[c] + start[c, yt + 1]):
                    d = ds[k]
                    visible[c, idx[k]] = d - line[pus[k]] <= tol_m + tol_rel * d
                if images.shape[0]:
                    o = offsets[c] + yt * w
                    images[o : o + w] = line
                line[lo[slot] : hi[slot] + 1] = np.inf
                lo[slot] = w
                hi[slot] = -1


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


def splat_half(radius_px: int, tolerance_m: float, tolerance_rel: float) -> np.ndarray:
    """:func:`zbuffer`'s checks of its parameters (``ValueError`` naming the bad one) and the
    splat disc: ``(2R + 1,) int64`` half widths, ``half[dv + R]`` on row offset ``dv``."""
    if int(radius_px) != radius_px or radius_px < 0:
        raise ValueError(f"radius_px must be a non-negative integer, got {radius_px}")
    for name, value in (("tolerance_m", tolerance_m), ("tolerance_rel", tolerance_rel)):
        if not (np.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    r = int(radius_px)
    return np.array([math.isqrt(r * r - dv * dv) for dv in range(-r, r + 1)], np.int64)


def zbuffer(
    projection: Projection,
    radius_px: int = 2,
    tolerance_m: float = 0.1,
    tolerance_rel: float = 0.02,
    device: Device | None = None,
) -> Occlusion:
    """Occlusion test of projected points, per camera.

    Args:
        projection: output of :func:`engine.projection.project_points`.
        radius_px: splat radius in pixels (0: the point's own pixel only).
        tolerance_m, tolerance_rel: a point is visible if its depth exceeds the depth image
            at its pixel by at most ``tolerance_m + tolerance_rel · depth`` (metres).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`);
            the depth images are built on the CPU either way, when read.

    Returns:
        :class:`Occlusion` (visibility ``(C, N)`` and one depth image per camera).
    """
    if not isinstance(projection, Projection):
        raise ValueError(f"projection must be a Projection, got {type(projection).__name__}")
    half = splat_half(radius_px, tolerance_m, tolerance_rel)
    if resolve(device) == "cuda":
        from engine.cuda.zbuffer import visibility

        return Occlusion(visibility(projection, half, tolerance_m, tolerance_rel), projection, half)
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
