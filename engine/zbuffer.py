"""Per-camera z-buffer: only the nearest surface at each pixel is visible.

LiDAR points are sparse in an image, so a point of a far surface can fall between the
points of a near one and wrongly count as visible. Each in-image point therefore splats
its depth over a disc of ``radius_px`` pixels around its pixel (the nearest depth wins);
a point is visible when its depth is within ``tolerance_m + tolerance_rel · depth`` of the
depth image at its own pixel. The splat radius is fixed in pixels (not scaled by depth).
"""

from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from engine._jit import pjit, prange
from engine.projection import Projection


@dataclass(frozen=True, eq=False)
class Occlusion:
    """Result of :func:`zbuffer`.

    Attributes:
        visible: ``(C, N) bool`` the point is in the image and on the nearest surface.
        depth_images: per camera a ``(height, width) float32`` image of the nearest splatted
            depth in metres, ``inf`` where no point landed.
    """

    visible: np.ndarray
    depth_images: list[np.ndarray]


@pjit
def _zbuffer_kernel(uv, depth, in_image, sizes, offsets, radius, tol_m, tol_rel, buf, visible):
    n_cam = uv.shape[0]
    n = uv.shape[1]
    r2 = radius * radius
    for c in prange(n_cam):
        w = sizes[c, 0]
        h = sizes[c, 1]
        base = offsets[c]
        for k in range(w * h):
            buf[base + k] = np.inf
        for i in range(n):
            if not in_image[c, i]:
                continue
            d = depth[c, i]
            pu = int(round(uv[c, i, 0]))
            pv = int(round(uv[c, i, 1]))
            for dv in range(-radius, radius + 1):
                y = pv + dv
                if y < 0 or y >= h:
                    continue
                row = base + y * w
                for du in range(-radius, radius + 1):
                    x = pu + du
                    if x < 0 or x >= w or du * du + dv * dv > r2:
                        continue
                    if d < buf[row + x]:
                        buf[row + x] = d
        for i in range(n):
            if not in_image[c, i]:
                visible[c, i] = False
                continue
            d = depth[c, i]
            pu = int(round(uv[c, i, 0]))
            pv = int(round(uv[c, i, 1]))
            visible[c, i] = d - buf[base + pv * w + pu] <= tol_m + tol_rel * d


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
    sizes = projection.image_sizes
    pixels = sizes[:, 0] * sizes[:, 1]
    offsets = np.concatenate([[0], np.cumsum(pixels)[:-1]]).astype(np.int64)
    buf = np.empty(int(pixels.sum()), np.float32)
    visible = np.empty(projection.in_image.shape, np.bool_)
    _zbuffer_kernel(
        projection.uv, projection.depth, projection.in_image, sizes, offsets,
        int(radius_px), float(tolerance_m), float(tolerance_rel), buf, visible,
    )
    images = [buf[o : o + w * h].reshape(h, w) for o, (w, h) in zip(offsets, sizes)]
    return Occlusion(visible=visible, depth_images=images)


def _warmup() -> None:
    uv = np.array([[[0.0, 0.0], [np.nan, np.nan]]])
    proj = Projection(uv, np.array([[1.0, 1.0]], np.float32), np.array([[True, False]]), np.array([[2, 2]]))
    zbuffer(proj)

