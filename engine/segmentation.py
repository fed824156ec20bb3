"""Per-point segmentation: selections, label edits and the map-to-frame label transfer.

Labels are two per-point arrays: ``class_id (N,) uint16`` (an index into a scene-level class
list; 0 is "unlabelled") and ``instance_id (N,) uint32`` (0: no instance). A *layer* that
may leave points to another layer uses :data:`INHERIT` as its class id there.

Selections return ``(N,) bool`` masks, computed by parallel kernels on float64:

- :func:`select_prism`: a top-down polygon (world x, y; even-odd rule) and ``z_min <= z <= z_max``;
- :func:`select_box`: an oriented box (inclusive, ``local = Rᵀ (p − centre)``, as
  :mod:`engine.points_in_boxes`);
- :func:`select_sphere`: ``|p − c|² <= r²``;
- :func:`select_polygon_2d`: pixels inside an image polygon, among the points flagged
  ``ok`` (a camera lasso: :func:`select_lasso` projects and z-buffers first).

Polygons use the crossing-number test ``(y_i > y) != (y_j > y) and x < x_i + (y − y_i) ·
(x_j − x_i) / (y_j − y_i)`` over the edges ``(i, j = i − 1)``; a point exactly on an edge
may fall on either side. NaN points are never selected.

:func:`apply_labels` writes a selection (or per-group labels, e.g. one group per cuboid)
into label arrays, optionally only where the current (effective) class is 0 or a given
class. :func:`transfer_labels` gives each point of a frame its label: the frame's own layer
where set, else the label of the moving box holding it, else the label of its voxel in the
map (:mod:`engine.segmentation_map`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine import quaternion as quat
from engine._jit import inline, jit, pjit, prange
from engine.arrays import as_points
from engine.camera import Camera
from engine.pose_track import PoseTrack
from engine.projection import project_points
from engine.segmentation_map import BIAS, MapCloud, VoxelLabels, key_of, lookup_packed
from engine.zbuffer import zbuffer

UNLABELLED = 0
INHERIT = 0xFFFF  # a layer's class id for "not set here": the next layer decides
MAX_CLASSES = INHERIT  # class ids 0 .. 65534

# only-filters of apply_labels
ANY, ONLY_UNLABELLED, ONLY_CLASS = 0, 1, 2


@inline
def _in_polygon(x, y, poly):
    """Even-odd crossing test of ``(x, y)`` against ``poly (K, 2)``."""
    inside = False
    k = poly.shape[0]
    j = k - 1
    for i in range(k):
        xi, yi, xj, yj = poly[i, 0], poly[i, 1], poly[j, 0], poly[j, 1]
        if (yi > y) != (yj > y):
            if x < xi + (y - yi) * (xj - xi) / (yj - yi):
                inside = not inside
        j = i
    return inside


@pjit
def _prism_kernel(xyz, starts, ends, poly, lo, hi, z_min, z_max, out):
    for r in prange(starts.shape[0]):
        for i in range(starts[r], ends[r]):
            x, y, z = np.float64(xyz[i, 0]), np.float64(xyz[i, 1]), np.float64(xyz[i, 2])
            out[i] = (z >= z_min and z <= z_max and x >= lo[0] and x <= hi[0] and y >= lo[1] and y <= hi[1]
                      and _in_polygon(x, y, poly))


@pjit
def _polygon_kernel(uv, ok, poly, lo, hi, out):
    for i in prange(uv.shape[0]):
        x, y = uv[i, 0], uv[i, 1]
        out[i] = ok[i] and x >= lo[0] and x <= hi[0] and y >= lo[1] and y <= hi[1] and _in_polygon(x, y, poly)


@pjit
def _box_kernel(xyz, starts, ends, center, rmat, half, out):
    for r in prange(starts.shape[0]):
        for i in range(starts[r], ends[r]):
            dx = np.float64(xyz[i, 0]) - center[0]
            dy = np.float64(xyz[i, 1]) - center[1]
            dz = np.float64(xyz[i, 2]) - center[2]
            inside = True
            for a in range(3):
                local = rmat[0, a] * dx + rmat[1, a] * dy + rmat[2, a] * dz
                if not abs(local) <= half[a]:
                    inside = False
            out[i] = inside


@pjit
def _sphere_kernel(xyz, starts, ends, center, r2, out):
    for r in prange(starts.shape[0]):
        for i in range(starts[r], ends[r]):
            dx = np.float64(xyz[i, 0]) - center[0]
            dy = np.float64(xyz[i, 1]) - center[1]
            dz = np.float64(xyz[i, 2]) - center[2]
            out[i] = dx * dx + dy * dy + dz * dz <= r2


@jit
def _slab_ranges(keys, i0, j0, j1, starts, ends):
    """Rows of ``keys`` (sorted voxel keys) in voxel columns ``(i0 + s, j0..j1)``: ``starts[s]:ends[s]``."""
    for s in range(starts.shape[0]):
        x = np.int64(i0 + s + BIAS) << 42
        starts[s] = np.searchsorted(keys, x | (np.int64(j0 + BIAS) << 21))
        ends[s] = np.searchsorted(keys, x + (np.int64(j1 + 1 + BIAS) << 21))  # j1 + 1 == 2**20: the next slab


@pjit
def _apply_kernel(group, g_class, g_inst, current, mode, only_class, cls, inst):
    """Point i of group ``g = group[i] >= 0`` takes ``(g_class[g], g_inst[g])`` if its
    ``current`` class passes the filter ``mode``; returns the number of points written."""
    n = group.shape[0]
    count = 0
    for i in prange(n):
        g = group[i]
        if g < 0:
            continue
        if mode == ONLY_UNLABELLED and current[i] != UNLABELLED:
            continue
        if mode == ONLY_CLASS and current[i] != only_class:
            continue
        cls[i] = g_class[g]
        inst[i] = g_inst[g]
        count += 1
    return count


@pjit
def _transfer_kernel(xyz, inv_size, table, bits, box, b_class, b_inst, f_class, f_inst,
                     out_class, out_inst):
    has_frame = f_class.shape[0] > 0
    has_box = box.shape[0] > 0
    for i in prange(xyz.shape[0]):
        if has_frame and f_class[i] != INHERIT:
            out_class[i] = f_class[i]
            out_inst[i] = f_inst[i]
            continue
        if has_box:
            b = box[i]
            if b >= 0 and b_class[b] != INHERIT:
                out_class[i] = b_class[b]
                out_inst[i] = b_inst[b]
                continue
        v = lookup_packed(table, bits, key_of(xyz[i, 0], xyz[i, 1], xyz[i, 2], inv_size))
        if v >= 0:
            out_class[i] = v >> 32
            out_inst[i] = v & 0xFFFFFFFF
        else:
            out_class[i] = UNLABELLED
            out_inst[i] = 0


# ---------------------------------------------------------------- checks


def _polygon(polygon: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(K, 2)`` float64 polygon (K >= 3, finite) and its bounding box; ValueError naming it."""
    p = np.ascontiguousarray(polygon, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ValueError(f"{name} must have shape (K, 2) with K >= 3, got {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return p, p.min(axis=0), p.max(axis=0)


def _finite(value: Sequence[float] | np.ndarray | float, shape: tuple[int, ...], name: str) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return a.copy()  # C-contiguous, and 0-d stays 0-d


# ---------------------------------------------------------------- selections

Points = np.ndarray | MapCloud
_CHUNK = 1 << 14  # points per parallel work item of an unsorted cloud


def _work(points: Points, lo_xy: np.ndarray, hi_xy: np.ndarray) -> tuple[np.ndarray, ...]:
    """``(xyz, starts, ends, out)``: the rows a selection within ``lo_xy..hi_xy`` must test.
    A :class:`MapCloud` (rows sorted by voxel key, each centroid in its voxel) gives only its
    voxel columns that the bounding box meets (one slab of x per range, its y span found by
    binary search; one voxel of slack for rounding), the others stay False; an array gives
    every row in chunks."""
    if not isinstance(points, MapCloud):
        xyz = as_points(points)
        starts = np.arange(0, len(xyz), _CHUNK, dtype=np.int64)
        return xyz, starts, np.minimum(starts + _CHUNK, len(xyz)), np.empty(len(xyz), np.bool_)
    cloud = points
    out = np.zeros(len(cloud), np.bool_)
    if not len(cloud):
        return cloud.centroids, np.zeros(0, np.int64), np.zeros(0, np.int64), out
    first, last = (int(k >> 42) - BIAS for k in (cloud.keys[0], cloud.keys[-1]))
    i0, j0 = np.clip(np.floor(lo_xy / cloud.voxel_m) - 1, -BIAS, BIAS - 1).astype(np.int64)
    i1, j1 = np.clip(np.floor(hi_xy / cloud.voxel_m) + 1, -BIAS, BIAS - 1).astype(np.int64)
    i0, i1 = max(int(i0), first), min(int(i1), last)
    n = max(i1 - i0 + 1, 0)
    starts, ends = np.empty(n, np.int64), np.empty(n, np.int64)
    _slab_ranges(cloud.keys, i0, int(j0), int(j1), starts, ends)
    return cloud.centroids, starts, ends, out


def select_prism(points: Points, polygon_xy: np.ndarray, z_min: float, z_max: float) -> np.ndarray:
    """``(N,) bool``: points (``(N, 3)`` float32/64 or a :class:`MapCloud`'s centroids, metres,
    same frame as the polygon) whose ``(x, y)`` lie in ``polygon_xy (K, 2)`` and
    ``z_min <= z <= z_max``."""
    poly, lo, hi = _polygon(polygon_xy, "polygon")
    z = _finite([z_min, z_max], (2,), "z range")
    if z[0] > z[1]:
        raise ValueError(f"z_min must not exceed z_max, got {z[0]} > {z[1]}")
    xyz, starts, ends, out = _work(points, lo, hi)
    _prism_kernel(xyz, starts, ends, poly, lo, hi, z[0], z[1], out)
    return out


def select_box(points: Points, center: Sequence[float], size: Sequence[float], rotation: Sequence[float]
               ) -> np.ndarray:
    """``(N,) bool``: points (as :func:`select_prism`) inside the box ``center (3,)``, ``size
    (3,)`` (l, w, h, metres), ``rotation (4,)`` wxyz (box → frame of the points), bounds inclusive."""
    c = _finite(center, (3,), "center")
    s = _finite(size, (3,), "size")
    if np.any(s < 0):
        raise ValueError(f"size must be non-negative, got {s.tolist()}")
    rmat = np.ascontiguousarray(quat.to_matrix(quat.as_quaternions(_finite(rotation, (4,), "rotation"), "rotation")))
    reach = np.abs(rmat[:2]) @ (0.5 * s)  # the box's half extent along world x and y
    xyz, starts, ends, out = _work(points, c[:2] - reach, c[:2] + reach)
    _box_kernel(xyz, starts, ends, c, rmat, 0.5 * s, out)
    return out


def select_sphere(points: Points, center: Sequence[float], radius_m: float) -> np.ndarray:
    """``(N,) bool``: points (as :func:`select_prism`) within ``radius_m`` (inclusive) of ``center (3,)``."""
    c = _finite(center, (3,), "center")
    r = float(_finite(radius_m, (), "radius"))
    if r < 0:
        raise ValueError(f"radius must be non-negative, got {r}")
    xyz, starts, ends, out = _work(points, c[:2] - r, c[:2] + r)
    _sphere_kernel(xyz, starts, ends, c, r * r, out)
    return out


def select_polygon_2d(uv: np.ndarray, ok: np.ndarray, polygon_uv: np.ndarray) -> np.ndarray:
    """``(N,) bool``: pixels ``uv (N, 2)`` inside ``polygon_uv (K, 2)`` where ``ok (N,)``."""
    pix = np.ascontiguousarray(uv, dtype=np.float64)
    flags = np.ascontiguousarray(ok, dtype=np.bool_)
    if pix.ndim != 2 or pix.shape[1] != 2 or flags.shape != (len(pix),):
        raise ValueError(f"uv must be (N, 2) and ok (N,), got {pix.shape} and {flags.shape}")
    poly, lo, hi = _polygon(polygon_uv, "polygon")
    out = np.empty(len(pix), np.bool_)
    _polygon_kernel(pix, flags, poly, lo, hi, out)
    return out


def select_lasso(
    xyz_world: np.ndarray, camera: Camera, world_from_ego: PoseTrack, camera_time_ns: int, polygon_uv: np.ndarray,
    *, radius_px: int = 2, tolerance_m: float = 0.1, tolerance_rel: float = 0.02,
) -> np.ndarray:
    """``(N,) bool``: world points (``(N, 3)``, metres, scene origin) that project into
    ``camera`` exposed at ``camera_time_ns`` (its lens, rolling shutter included:
    :func:`engine.projection.project_points`), survive its z-buffer (:func:`engine.zbuffer.zbuffer`
    with these parameters: prepare's defaults) and land inside ``polygon_uv (K, 2)`` pixels."""
    poly, _, _ = _polygon(polygon_uv, "polygon")
    proj = project_points(xyz_world, [camera], world_from_ego=world_from_ego, camera_times_ns=[int(camera_time_ns)],
                          frame="world")
    visible = zbuffer(proj, radius_px, tolerance_m, tolerance_rel).visible
    return select_polygon_2d(proj.uv[0], visible[0], poly)


# ---------------------------------------------------------------- edits


def apply_labels(
    class_id: np.ndarray, instance_id: np.ndarray, group: np.ndarray, group_class: np.ndarray | int,
    group_instance: np.ndarray | int, current_class: np.ndarray | None = None, *, only_unlabelled: bool = False,
    only_class: int | None = None,
) -> int:
    """Write labels in place: point i with ``g = group[i] >= 0`` gets ``group_class[g]``,
    ``group_instance[g]``. A bool ``group`` is one group (True: selected).

    ``class_id (N,) uint16`` and ``instance_id (N,) uint32`` are modified; ``current_class
    (N,)`` (default ``class_id``) is what the filters look at: ``only_unlabelled`` (class 0)
    or ``only_class``. Returns the number of points written."""
    if class_id.dtype != np.uint16 or instance_id.dtype != np.uint32 or class_id.shape != instance_id.shape \
            or class_id.ndim != 1 or not (class_id.flags.c_contiguous and instance_id.flags.c_contiguous):
        raise ValueError("class_id / instance_id must be C-contiguous (N,) uint16 / uint32 arrays")
    n = len(class_id)
    g = np.asarray(group)
    if g.dtype == np.bool_:
        g, group_class, group_instance = (np.where(g, 0, -1), np.atleast_1d(group_class),
                                          np.atleast_1d(group_instance))
    g = np.ascontiguousarray(g, dtype=np.int32)
    gc = np.ascontiguousarray(group_class, dtype=np.uint16)
    gi = np.ascontiguousarray(group_instance, dtype=np.uint32)
    if g.shape != (n,) or gc.ndim != 1 or gi.shape != gc.shape:
        raise ValueError(f"group must be ({n},) and the group labels (G,), got {g.shape}, {gc.shape}, {gi.shape}")
    if n and (g.max() >= len(gc)):
        raise ValueError(f"group ids must be below the {len(gc)} group labels")
    cur = class_id if current_class is None else np.ascontiguousarray(current_class, dtype=np.uint16)
    if cur.shape != (n,):
        raise ValueError(f"current_class must have shape ({n},), got {cur.shape}")
    if only_unlabelled and only_class is not None:
        raise ValueError("only_unlabelled and only_class exclude each other")
    mode = ONLY_UNLABELLED if only_unlabelled else ANY if only_class is None else ONLY_CLASS
    return int(_apply_kernel(g, gc, gi, cur, mode, np.uint16(0 if only_class is None else only_class),
                             class_id, instance_id))


def transfer_labels(
    xyz: np.ndarray, voxel_labels: VoxelLabels, box_index: np.ndarray | None = None,
    box_class: np.ndarray | None = None, box_instance: np.ndarray | None = None,
    frame_class: np.ndarray | None = None, frame_instance: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A frame's effective labels ``(class (N,) uint16, instance (N,) uint32)``.

    Per point: the frame layer ``frame_class/frame_instance (N,)`` where it is not
    :data:`INHERIT`; else, where ``box_index (N,) int32 >= 0`` and that box's
    ``box_class (B,)`` is not :data:`INHERIT`, the box's labels; else the labels of the
    point's voxel in ``voxel_labels`` (class 0, instance 0 for a voxel it does not hold).
    ``xyz (N, 3)`` world frame of the map (float32 or float64)."""
    p = as_points(xyz)
    n = len(p)
    empty = np.zeros(0, np.int32)
    if box_index is None:
        box, bc, bi = empty, np.zeros(0, np.uint16), np.zeros(0, np.uint32)
    else:
        box = np.ascontiguousarray(box_index, dtype=np.int32)
        bc = np.ascontiguousarray(box_class, dtype=np.uint16)
        bi = np.ascontiguousarray(box_instance, dtype=np.uint32)
        if box.shape != (n,) or bc.ndim != 1 or bi.shape != bc.shape or (n and box.max() >= len(bc)):
            raise ValueError(f"box_index must be ({n},) below the (B,) box labels, got {box.shape}, {bc.shape}")
    if frame_class is None:
        fc, fi = np.zeros(0, np.uint16), np.zeros(0, np.uint32)
    else:
        fc = np.ascontiguousarray(frame_class, dtype=np.uint16)
        fi = np.ascontiguousarray(frame_instance, dtype=np.uint32)
        if fc.shape != (n,) or fi.shape != (n,):
            raise ValueError(f"frame layer must be ({n},) arrays, got {fc.shape}, {fi.shape}")
    out_c, out_i = np.empty(n, np.uint16), np.empty(n, np.uint32)
    v = voxel_labels
    _transfer_kernel(p, 1.0 / v.voxel_m, v.table, v.bits, box, bc, bi, fc, fi, out_c, out_i)
    return out_c, out_i


def _warmup() -> None:
    from engine.segmentation_map import map_cloud, voxel_labels

    tri = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    for dtype in (np.float32, np.float64):
        p = np.zeros((2, 3), dtype)
        select_prism(p, tri, -1.0, 1.0)
        select_box(p, [0, 0, 0], [1, 1, 1], [1, 0, 0, 0])
        select_sphere(p, [0, 0, 0], 1.0)
        labels = voxel_labels(np.zeros(1, np.int64), np.ones(1, np.uint16), np.ones(1, np.uint32), 0.1)
        transfer_labels(p, labels)
        transfer_labels(p, labels, np.zeros(2, np.int32), np.ones(1, np.uint16), np.ones(1, np.uint32),
                        np.full(2, INHERIT, np.uint16), np.zeros(2, np.uint32))
    select_polygon_2d(np.zeros((2, 2)), np.ones(2, bool), tri)
    cloud = map_cloud([np.zeros((2, 3))], 0.1)
    select_prism(cloud, tri, -1.0, 1.0)
    select_box(cloud, [0, 0, 0], [1, 1, 1], [1, 0, 0, 0])
    select_sphere(cloud, [0, 0, 0], 1.0)
    c, i = np.zeros(2, np.uint16), np.zeros(2, np.uint32)
    apply_labels(c, i, np.ones(2, bool), 1, 1)
