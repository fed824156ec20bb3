"""Dynamic points without labels: coarse voxels that rays saw through more often than they hit.

The criterion (free-space evidence, as OctoMap / Removert-style map cleaning): a voxel of
side ``voxel_m`` is *dynamic* when, among the frames checked for it, the frames whose rays
passed through it ("free") outnumber ``ratio`` times the frames with a point in it ("hit"),
and at least ``min_free`` frames saw through it. A moving car's voxel is hit in the few
frames the car is there and seen through before and after; a static surface is hit whenever
it is in view and never seen through; something in front of a voxel (occlusion) gives no
evidence either way.

Rays: each frame's points of each sensor are binned into a range image around the sensor's
position (world-aligned azimuth and elevation, ``res_deg`` pixels, the nearest range per
pixel, each column with the mean sensor position of its points, so the ego's motion within
a sweep is followed). A voxel is seen through by a frame when its centre falls in a pixel
whose nearest return lies more than ``margin_m + margin_rate · d + half diagonal`` beyond it
(``d`` its distance); an empty pixel is no evidence (no return is not free space). Frames
checked: those within ``window`` frames of the voxel's first and last hit, at most
``max_checks`` of them, evenly spaced.

Ground is never dynamic: a ray at a grazing angle passes just above a ground voxel and lands
further on, which would read as free space, so a point within ``ground_height_m`` of the
lowest point of its ``ground_cell_m`` column in its own frame
(:func:`engine.accumulate.ground_mask_grid`) is kept whatever its voxel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine._jit import jit, pjit, prange
from engine.accumulate import ground_mask_grid

_BIAS = 1 << 20  # voxel coordinates packed as 21-bit fields
_EMPTY = np.uint16(0xFFFF)
_CM = 0.05  # range image unit: 5 cm (uint16: up to 3.3 km)


@dataclass(frozen=True)
class DynamicOptions:
    """The criterion's parameters (module docstring); distances in metres."""

    voxel_m: float = 0.25
    res_deg: float = 1.0
    rows: int = 90  # elevation rows per image (90° at 1°), centred on the frame's points
    window: int = 30
    max_checks: int = 48
    ratio: float = 1.0
    min_free: int = 2
    margin_m: float = 0.3
    margin_rate: float = 0.03
    ground_cell_m: float = 1.0
    ground_height_m: float = 0.2


def voxel_keys(xyz: np.ndarray, voxel_m: float) -> np.ndarray:
    """``(N,) int64`` packed keys of the ``voxel_m`` voxels of world points ``(N, 3)``."""
    v = np.floor(np.asarray(xyz, np.float64) / voxel_m).astype(np.int64) + _BIAS
    if len(v) and (v.min() < 0 or v.max() >= 1 << 21):
        raise ValueError(f"points beyond ±{_BIAS} voxels of {voxel_m} m from the origin")
    return v[:, 0] | (v[:, 1] << 21) | (v[:, 2] << 42)


@jit
def _image_kernel(xyz, origin, az_res, el_res, el0, rows, img, col_sum, col_n):
    """Nearest range (in ``_CM`` units) per pixel and the summed sensor positions per column."""
    cols = img.shape[1]
    for i in range(xyz.shape[0]):
        dx, dy, dz = xyz[i, 0] - origin[i, 0], xyz[i, 1] - origin[i, 1], xyz[i, 2] - origin[i, 2]
        h = math.sqrt(dx * dx + dy * dy)
        c = int((math.atan2(dy, dx) + math.pi) / az_res) % cols
        r = int(math.floor(math.atan2(dz, h) / el_res)) - el0
        if 0 <= r < rows:
            d = min(65534.0, math.sqrt(h * h + dz * dz) / _CM)
            img[r, c] = min(img[r, c], np.uint16(d))
        for a in range(3):
            col_sum[c, a] += origin[i, a]
        col_n[c] += 1


@pjit
def _classify_kernel(centres, hit_start, hit_frames, n_frames, images, el0, col_origin, frame_of,
                     az_res, el_res, half_diag, margin_m, margin_rate, window, max_checks, ratio, min_free, out):
    cols = images.shape[2]
    rows = images.shape[1]
    for v in prange(centres.shape[0]):
        a, b = hit_start[v], hit_start[v + 1]
        f0, f1 = max(0, hit_frames[a] - window), min(n_frames - 1, hit_frames[b - 1] + window)
        span = f1 - f0 + 1
        step = max(1, (span + max_checks - 1) // max_checks)
        hits = free = 0
        j = a
        for f in range(f0, f1 + 1, step):
            while j < b and hit_frames[j] < f:
                j += 1
            if j < b and hit_frames[j] == f:
                hits += 1
                continue
            seen = False
            for m in range(frame_of[f], frame_of[f + 1]):  # the frame's images, one per sensor
                # the column from the image's mean origin, then the ray from that column's origin
                o = col_origin[m, cols]
                c = int((math.atan2(centres[v, 1] - o[1], centres[v, 0] - o[0]) + math.pi) / az_res) % cols
                o = col_origin[m, c]
                dx, dy, dz = centres[v, 0] - o[0], centres[v, 1] - o[1], centres[v, 2] - o[2]
                h = math.sqrt(dx * dx + dy * dy)
                c = int((math.atan2(dy, dx) + math.pi) / az_res) % cols
                r = int(math.floor(math.atan2(dz, h) / el_res)) - el0[m]
                if r < 0 or r >= rows or images[m, r, c] == _EMPTY:
                    continue
                d = math.sqrt(h * h + dz * dz)
                if images[m, r, c] * _CM > d + half_diag + margin_m + margin_rate * d:
                    seen = True
                    break
            if seen:
                free += 1
        out[v] = free >= min_free and free > ratio * hits


class DynamicFilter:
    """Collects every frame's range images and hit voxels (:meth:`observe`, frames in order),
    then finds the dynamic voxels (:meth:`classify`) and masks points (:meth:`dynamic`).

    Memory: one ``rows × 360/res_deg`` uint16 image per frame and sensor (184 KB at the
    defaults) and the distinct (voxel, frame) pairs.
    """

    def __init__(self, options: DynamicOptions = DynamicOptions()) -> None:
        self.o = options
        self.cols = int(round(360.0 / options.res_deg))
        self._images: list[np.ndarray] = []
        self._el0: list[int] = []
        self._origins: list[np.ndarray] = []
        self._frame_of = [0]
        self._pairs: list[np.ndarray] = []
        self._dynamic: np.ndarray | None = None

    @property
    def frames(self) -> int:
        return len(self._frame_of) - 1

    def observe(self, xyz: np.ndarray, origins: np.ndarray, sensor_id: np.ndarray) -> None:
        """The next frame: world points ``(N, 3)``, each one's sensor position ``(N, 3)``
        (:func:`engine.map_filter.ego_and_origins`) and ``sensor_id (N,)``."""
        p = np.ascontiguousarray(xyz, np.float64).reshape(-1, 3)
        org = np.ascontiguousarray(origins, np.float64).reshape(-1, 3)
        res = math.radians(self.o.res_deg)
        for s in np.unique(sensor_id):
            sel = np.flatnonzero(sensor_id == s)
            d = p[sel] - org[sel]
            el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
            el0 = int(math.floor(float(np.median(el)) / res)) - self.o.rows // 2
            img = np.full((self.o.rows, self.cols), _EMPTY, np.uint16)
            col_sum, col_n = np.zeros((self.cols, 3)), np.zeros(self.cols, np.int64)
            _image_kernel(p[sel], org[sel], res, res, el0, self.o.rows, img, col_sum, col_n)
            mean = org[sel].mean(axis=0)
            col = np.where(col_n[:, None] > 0, col_sum / np.maximum(col_n, 1)[:, None], mean)
            self._images.append(img)
            self._el0.append(el0)
            self._origins.append(np.vstack([col, mean]))  # row `cols`: the image's mean origin
        self._frame_of.append(len(self._images))
        keys = np.unique(voxel_keys(p, self.o.voxel_m))
        self._pairs.append(np.stack([keys, np.full(len(keys), self.frames - 1, np.int64)], axis=1))

    def classify(self) -> np.ndarray:
        """Sorted ``(D,) int64`` keys (:func:`voxel_keys`) of the dynamic voxels."""
        pairs = np.concatenate(self._pairs) if self._pairs else np.zeros((0, 2), np.int64)
        order = np.lexsort((pairs[:, 1], pairs[:, 0]))
        keys, frames = pairs[order, 0], np.ascontiguousarray(pairs[order, 1])
        first = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]])) if len(keys) else np.zeros(0, int)
        voxels = keys[first]
        mask = (1 << 21) - 1
        centres = (np.stack([(voxels >> s) & mask for s in (0, 21, 42)], axis=1) - _BIAS + 0.5) * self.o.voxel_m
        out = np.zeros(len(voxels), np.bool_)
        if len(voxels) and self._images:
            o = self.o
            _classify_kernel(np.ascontiguousarray(centres), np.append(first, len(keys)).astype(np.int64), frames,
                             self.frames, np.stack(self._images), np.array(self._el0, np.int64),
                             np.stack(self._origins), np.array(self._frame_of, np.int64), math.radians(o.res_deg),
                             math.radians(o.res_deg), math.sqrt(3) * o.voxel_m / 2, o.margin_m, o.margin_rate,
                             o.window, o.max_checks, o.ratio, o.min_free, out)
        self._dynamic = voxels[out]
        return self._dynamic

    def restore(self, keys: np.ndarray) -> None:
        """Use the dynamic voxels a previous :meth:`classify` returned (sorted ``(D,) int64``)."""
        self._dynamic = np.asarray(keys, np.int64)

    def dynamic(self, xyz: np.ndarray) -> np.ndarray:
        """``(N,) bool``: one frame's world points ``(N, 3)`` in a dynamic voxel and not ground
        (after :meth:`classify`)."""
        if self._dynamic is None:
            raise RuntimeError("classify() first")
        keys = voxel_keys(xyz, self.o.voxel_m)
        if not len(self._dynamic) or not len(keys):
            return np.zeros(len(keys), np.bool_)
        at = np.minimum(np.searchsorted(self._dynamic, keys), len(self._dynamic) - 1)
        hit = self._dynamic[at] == keys
        if hit.any():
            hit &= ~ground_mask_grid(xyz, self.o.ground_cell_m, self.o.ground_height_m)
        return hit


def _warmup() -> None:
    f = DynamicFilter(DynamicOptions(rows=8))
    for _ in range(2):
        f.observe(np.array([[5.0, 0, 0], [0, 5.0, 1]]), np.zeros((2, 3)), np.zeros(2, np.uint8))
    f.classify()
    f.dynamic(np.zeros((1, 3)))
