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
may fall on either side. NaN points are never selected. The test runs only for points near
the boundary: the others take the answer of their slab's gap (:mod:`engine.polygon_slabs`,
the same answer bit for bit). On a :class:`MapCloud` (rows sorted by voxel key) a prism
reads only the voxel columns near the boundary and the rows inside: a gap's columns are
found by binary search, and inside ones need only their z index.

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
from engine.polygon_slabs import in_polygon, in_polygon_slabs, polygon_slabs, slab_table
from engine.pose_track import PoseTrack
from engine.projection_window import project_window
from engine.segmentation_map import BIAS, BLOCK, CHUNK, FIELD, MapCloud, VoxelLabels, find_rows, key_of
from engine.zbuffer import splat_half, zbuffer

UNLABELLED = 0
INHERIT = 0xFFFF  # a layer's class id for "not set here": the next layer decides
MAX_CLASSES = INHERIT  # class ids 0 .. 65534

# only-filters of apply_labels
ANY, ONLY_UNLABELLED, ONLY_CLASS = 0, 1, 2


@inline
def _z_and_polygon(x, y, z, z_min, z_max, poly, lo, hi, x0, inv_width, bands, first, gap_in):
    return (z >= z_min and z <= z_max
            and in_polygon_slabs(x, y, poly, lo, hi, x0, inv_width, bands, first, gap_in))


@pjit
def _prism_kernel(xyz, starts, ends, z_min, z_max, poly, lo, hi, x0, inv_width, bands, first, gap_in, out):
    for r in prange(starts.shape[0]):
        for i in range(starts[r], ends[r]):
            out[i] = _z_and_polygon(np.float64(xyz[i, 0]), np.float64(xyz[i, 1]), np.float64(xyz[i, 2]), z_min,
                                    z_max, poly, lo, hi, x0, inv_width, bands, first, gap_in)


@inline
def _in_prism(xyz, t, poly, lo, hi, z_min, z_max):
    """The prism test of row ``t`` of ``xyz`` by the crossing test itself."""
    x, y, z = xyz[t, 0], xyz[t, 1], xyz[t, 2]
    return (z >= z_min and z <= z_max and x >= lo[0] and x <= hi[0] and y >= lo[1] and y <= hi[1]
            and in_polygon(x, y, poly))


@pjit
def _prism_map_kernel(keys, xyz, i0, starts, ends, voxel_m, poly, lo, hi, z_min, z_max, bands, first, gap_in, out):
    """:func:`_prism_kernel` on a map cloud, by the slabs of x voxels ``i0 + s``
    (:func:`engine.polygon_slabs.slab_table` one voxel wide): the rows of the voxel columns
    that lie wholly within a gap (two voxels of slack) take the gap's answer, with the z
    range decided by the voxel's z index (the centroid only within a voxel of ``z_min`` or
    ``z_max``); the rows of outside gaps are never read. The other rows take the full test."""
    inv = 1.0 / voxel_m
    kz_min = int(min(max(np.floor(z_min * inv), -BIAS - 4.0), BIAS + 4.0)) + BIAS
    kz_max = int(min(max(np.floor(z_max * inv), -BIAS - 4.0), BIAS + 4.0)) + BIAS
    for s in prange(starts.shape[0]):
        slab = np.int64(i0 + s + BIAS) << 42
        r = starts[s]
        below = -np.inf
        for b in range(first[s], first[s + 1] + 1):
            last = b == first[s + 1]  # the gap above the last band
            above = np.inf if last else bands[b, 0]
            ja = max(np.floor(below * inv), -BIAS - 2.0) + 2  # voxel columns wholly in the gap
            jb = min(np.floor(above * inv), BIAS + 2.0) - 2
            if ja <= jb:
                ra = np.searchsorted(keys[r : ends[s]], slab | (np.int64(ja + BIAS) << 21)) + r
                rb = np.searchsorted(keys[r : ends[s]], slab + (np.int64(jb + 1 + BIAS) << 21)) + r
                for t in range(r, ra):
                    out[t] = _in_prism(xyz, t, poly, lo, hi, z_min, z_max)
                if not last and gap_in[b]:
                    for t in range(ra, rb):
                        kz = keys[t] & FIELD
                        inside = (kz > kz_min + 1) & (kz < kz_max - 1)  # no branch on random z
                        if (kz >= kz_min - 1) & (kz <= kz_max + 1) & (not inside):
                            inside = z_min <= xyz[t, 2] <= z_max
                        out[t] = inside
                r = rb
            if not last:
                below = bands[b, 1]
        for t in range(r, ends[s]):
            out[t] = _in_prism(xyz, t, poly, lo, hi, z_min, z_max)


@pjit
def _polygon_kernel(uv, ok, rows, poly, lo, hi, x0, inv_width, bands, first, gap_in, out):
    """Point i (``ok[i]`` and inside the polygon) into ``out[i]``, or with ``rows`` given
    True into ``out[rows[i]]`` where inside (``out`` zeroed by the caller)."""
    for i in prange(uv.shape[0]):
        inside = ok[i] and in_polygon_slabs(uv[i, 0], uv[i, 1], poly, lo, hi, x0, inv_width, bands, first, gap_in)
        if rows.shape[0] == 0:
            out[i] = inside
        elif inside:
            out[rows[i]] = True


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
def _transfer_kernel(xyz, inv_size, table, bits, packed, box, b_class, b_inst, f_class, f_inst,
                     out_class, out_inst):
    """Per block of points: the voxel keys (from a copy of the block's coordinates: a tight
    copy loop streams them from memory far faster than the key arithmetic does), their rows
    in the labels (:func:`engine.segmentation_map.find_rows`), then per point the first
    layer that labels it."""
    n = xyz.shape[0]
    has_frame = f_class.shape[0] > 0
    has_box = box.shape[0] > 0
    for c in prange((n + CHUNK - 1) // CHUNK):
        pts = np.empty((BLOCK, 3))
        keys = np.empty(BLOCK, np.int64)
        rows = np.empty(BLOCK, np.int64)
        for lo in range(c * CHUNK, min(c * CHUNK + CHUNK, n), BLOCK):
            m = min(BLOCK, n - lo)
            for j in range(m):
                pts[j, 0] = xyz[lo + j, 0]
                pts[j, 1] = xyz[lo + j, 1]
                pts[j, 2] = xyz[lo + j, 2]
            for j in range(m):
                keys[j] = key_of(pts[j, 0], pts[j, 1], pts[j, 2], inv_size)
            find_rows(table, bits, keys, m, rows)
            for j in range(m):
                i = lo + j
                if has_frame and f_class[i] != INHERIT:
                    out_class[i] = f_class[i]
                    out_inst[i] = f_inst[i]
                elif has_box and box[i] >= 0 and b_class[box[i]] != INHERIT:
                    out_class[i] = b_class[box[i]]
                    out_inst[i] = b_inst[box[i]]
                else:
                    v = packed[rows[j]] if rows[j] >= 0 else np.int64(0)
                    out_class[i] = v >> 32
                    out_inst[i] = v & 0xFFFFFFFF


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
_SLABS = 128  # slabs of a polygon tested against points in no order (engine.polygon_slabs)


def _work(points: Points, lo_xy: np.ndarray, hi_xy: np.ndarray) -> tuple[np.ndarray, int, np.ndarray, np.ndarray,
                                                                        np.ndarray]:
    """``(xyz, i0, starts, ends, out)``: the rows a selection within ``lo_xy..hi_xy`` must
    test. A :class:`MapCloud` (rows sorted by voxel key, each centroid in its voxel) gives
    only its voxel columns that the bounding box meets (range ``s`` holds the slab of x
    voxels ``i0 + s``, its y span found by binary search; one voxel of slack for rounding),
    the others stay False; an array gives every row in chunks."""
    if not isinstance(points, MapCloud):
        xyz = as_points(points)
        starts = np.arange(0, len(xyz), _CHUNK, dtype=np.int64)
        return xyz, 0, starts, np.minimum(starts + _CHUNK, len(xyz)), np.empty(len(xyz), np.bool_)
    cloud = points
    out = np.zeros(len(cloud), np.bool_)
    if not len(cloud):
        return cloud.centroids, 0, np.zeros(0, np.int64), np.zeros(0, np.int64), out
    first, last = (int(k >> 42) - BIAS for k in (cloud.keys[0], cloud.keys[-1]))
    i0, j0 = np.clip(np.floor(lo_xy / cloud.voxel_m) - 1, -BIAS, BIAS - 1).astype(np.int64)
    i1, j1 = np.clip(np.floor(hi_xy / cloud.voxel_m) + 1, -BIAS, BIAS - 1).astype(np.int64)
    i0, i1 = max(int(i0), first), min(int(i1), last)
    n = max(i1 - i0 + 1, 0)
    starts, ends = np.empty(n, np.int64), np.empty(n, np.int64)
    _slab_ranges(cloud.keys, i0, int(j0), int(j1), starts, ends)
    return cloud.centroids, i0, starts, ends, out


def select_prism(points: Points, polygon_xy: np.ndarray, z_min: float, z_max: float) -> np.ndarray:
    """``(N,) bool``: points (``(N, 3)`` float32/64 or a :class:`MapCloud`'s centroids, metres,
    same frame as the polygon) whose ``(x, y)`` lie in ``polygon_xy (K, 2)`` and
    ``z_min <= z <= z_max``."""
    poly, lo, hi = _polygon(polygon_xy, "polygon")
    z = _finite([z_min, z_max], (2,), "z range")
    if z[0] > z[1]:
        raise ValueError(f"z_min must not exceed z_max, got {z[0]} > {z[1]}")
    xyz, i0, starts, ends, out = _work(points, lo, hi)
    if isinstance(points, MapCloud):
        v = points.voxel_m
        slabs = slab_table(poly, i0 * v, v, len(starts), 1e-7 * (1.0 + np.abs(poly).max() + v))
        _prism_map_kernel(points.keys, xyz, i0, starts, ends, v, poly, lo, hi, z[0], z[1], *slabs, out)
    else:
        _prism_kernel(xyz, starts, ends, z[0], z[1], poly, lo, hi, *polygon_slabs(poly, lo, hi, _SLABS), out)
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
    xyz, _, starts, ends, out = _work(points, c[:2] - reach, c[:2] + reach)
    _box_kernel(xyz, starts, ends, c, rmat, 0.5 * s, out)
    return out


def select_sphere(points: Points, center: Sequence[float], radius_m: float) -> np.ndarray:
    """``(N,) bool``: points (as :func:`select_prism`) within ``radius_m`` (inclusive) of ``center (3,)``."""
    c = _finite(center, (3,), "center")
    r = float(_finite(radius_m, (), "radius"))
    if r < 0:
        raise ValueError(f"radius must be non-negative, got {r}")
    xyz, _, starts, ends, out = _work(points, c[:2] - r, c[:2] + r)
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
    _polygon_kernel(pix, flags, np.zeros(0, np.int64), poly, lo, hi, *polygon_slabs(poly, lo, hi, _SLABS), out)
    return out


def select_lasso(
    xyz_world: np.ndarray, camera: Camera, world_from_ego: PoseTrack, camera_time_ns: int, polygon_uv: np.ndarray,
    *, radius_px: int = 2, tolerance_m: float = 0.1, tolerance_rel: float = 0.02,
) -> np.ndarray:
    """``(N,) bool``: world points (``(N, 3)``, metres, scene origin) that project into
    ``camera`` exposed at ``camera_time_ns`` (its lens, rolling shutter included:
    :func:`engine.projection.project_points`), survive its z-buffer (:func:`engine.zbuffer.zbuffer`
    with these parameters: prepare's defaults) and land inside ``polygon_uv (K, 2)`` pixels.

    Only the points that land within the polygon's bounding box (plus the splat's reach)
    are kept from the projection and z-buffered: a point's visibility depends only on the
    splats that reach its pixel, so the result equals z-buffering the whole image."""
    poly, lo, hi = _polygon(polygon_uv, "polygon")
    splat_half(radius_px, tolerance_m, tolerance_rel)  # zbuffer's checks, before any work
    reach = int(radius_px) + 2  # a splat's reach beyond the rounded pixel, and the rounding
    rows, proj = project_window(xyz_world, camera, world_from_ego, camera_time_ns, lo - reach, hi + reach)
    visible = zbuffer(proj, radius_px, tolerance_m, tolerance_rel).visible
    out = np.zeros(len(xyz_world), np.bool_)
    _polygon_kernel(proj.uv[0], visible[0], rows, poly, lo, hi, *polygon_slabs(poly, lo, hi, _SLABS), out)
    return out


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
    _transfer_kernel(p, 1.0 / v.voxel_m, v.table, v.bits, v.packed, box, bc, bi, fc, fi, out_c, out_i)
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
