"""Voxel grids: assign points to voxels, downsample to one point per voxel.

Voxel ``(i, j, k)`` of a grid with origin ``o`` and size ``s`` (per axis) holds the points
with ``floor((p - o) / s) == (i, j, k)``. Voxels are numbered in order of their first point
in the input, so every result is deterministic. An infinite size along an axis makes that
axis one layer (``(cell, cell, inf)`` is a 2-D grid of columns, as ground segmentation uses).

The assignment radix-sorts integer voxel keys (a few sequential passes whose write heads
stay in cache, instead of one cache miss per point into a hash table), so it runs in
linear time whatever the order of the points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import math

import numpy as np

from engine.arrays import as_points
from engine._jit import jit

_DIGIT_BITS = 11  # radix-sort digit: 2048 buckets, whose write heads stay in cache
_MAX_CELLS = 1 << 62  # voxels in the bounding box, so keys fit int64


@jit
def _keys_kernel(xyz, origin, inv_size, base, dims, shift, passes, keys, count):
    """``keys[i] = (voxel key << shift) | i`` (or the key alone when ``shift`` is 0) and the
    histograms of the key's radix digits (all passes in this one pass over the points)."""
    radix = 1 << _DIGIT_BITS
    for i in range(xyz.shape[0]):
        key = 0
        mul = 1
        for a in range(3):
            c = np.int64(math.floor((xyz[i, a] - origin[a]) * inv_size[a])) - base[a]
            key += c * mul
            mul *= dims[a]
        keys[i] = (key << shift) | i if shift else key
        for r in range(passes):
            count[r, ((key >> (r * _DIGIT_BITS)) & (radix - 1)) + 1] += 1


@jit
def _radix_pass(src, src_idx, dst, dst_idx, shift, count, with_idx):
    radix = 1 << _DIGIT_BITS
    for d in range(radix):
        count[d + 1] += count[d]
    for i in range(src.shape[0]):
        x = src[i]
        d = (x >> shift) & (radix - 1)
        pos = count[d]
        count[d] = pos + 1
        dst[pos] = x
        if with_idx:
            dst_idx[pos] = src_idx[i]


@jit
def _assign_kernel(xyz, origin, inv_size, base, dims, inverse):
    """Fill ``inverse`` (voxel id per point); return (first index, key) per voxel.

    Key ``ix + nx * (iy + ny * iz)`` relative to the lowest voxel; an LSD radix sort
    (stable, so each run of equal keys starts at its voxel's first point), then ids by
    first appearance from a prefix sum over the run starts. When key and point index fit
    one int64 together they are sorted as one value (half the memory traffic), otherwise
    as (key, index) pairs.
    """
    n = xyz.shape[0]
    total = dims[0] * dims[1] * dims[2]
    key_bits = 0
    while (np.int64(1) << key_bits) < total:
        key_bits += 1
    idx_bits = 0
    while (np.int64(1) << idx_bits) < n:
        idx_bits += 1
    pack = key_bits + idx_bits <= 63
    shift0 = idx_bits if pack else 0
    passes = (key_bits + _DIGIT_BITS - 1) // _DIGIT_BITS
    count = np.zeros((max(passes, 1), (1 << _DIGIT_BITS) + 1), dtype=np.int64)
    keys = np.empty(n, dtype=np.int64)
    _keys_kernel(xyz, origin, inv_size, base, dims, shift0, passes, keys, count)
    keys2 = np.empty(n, dtype=np.int64)
    idx = np.arange(n) if not pack else np.empty(0, dtype=np.int64)
    idx2 = np.empty(n if not pack else 0, dtype=np.int64)
    for r in range(passes):
        _radix_pass(keys, idx, keys2, idx2, shift0 + r * _DIGIT_BITS, count[r], not pack)
        keys, keys2 = keys2, keys
        idx, idx2 = idx2, idx
    mask = (np.int64(1) << shift0) - 1
    # rank[i]: how many voxels start before point i (in input order)
    rank = np.zeros(n + 1, dtype=np.int64)
    for j in range(n):
        if j == 0 or (keys[j] >> shift0) != (keys[j - 1] >> shift0):
            rank[(keys[j] & mask if pack else idx[j]) + 1] = 1
    for i in range(n):
        rank[i + 1] += rank[i]
    m = rank[n]
    first = np.empty(m, dtype=np.int64)
    voxel_keys = np.empty(m, dtype=np.int64)
    v = 0
    for j in range(n):
        i = keys[j] & mask if pack else idx[j]
        if j == 0 or (keys[j] >> shift0) != (keys[j - 1] >> shift0):
            v = rank[i]
            first[v] = i
            voxel_keys[v] = keys[j] >> shift0
        inverse[i] = v
    return first, voxel_keys


@jit
def _bounds_kernel(xyz, lo, hi):
    """Per-axis min/max into ``lo``/``hi``; False if any coordinate is NaN or infinite."""
    lo[:] = np.inf
    hi[:] = -np.inf
    for i in range(xyz.shape[0]):
        for a in range(3):
            v = xyz[i, a]
            if not math.isfinite(v):
                return False
            if v < lo[a]:
                lo[a] = v
            if v > hi[a]:
                hi[a] = v
    return True


@jit
def _centroid_kernel(xyz, inverse, m, out, count):
    acc = np.zeros((m, 3))
    for i in range(xyz.shape[0]):
        v = inverse[i]
        count[v] += 1
        for a in range(3):
            acc[v, a] += xyz[i, a]
    for v in range(m):
        for a in range(3):
            out[v, a] = acc[v, a] / count[v]


@jit
def _unpack_kernel(keys, base, dims, out):
    for v in range(keys.shape[0]):
        k = keys[v]
        for a in range(3):
            out[v, a] = k % dims[a] + base[a]
            k //= dims[a]


@dataclass(frozen=True, eq=False)
class Voxelization:
    """Points assigned to the occupied voxels of a grid.

    Attributes:
        inverse: ``(N,) int64`` voxel id of each point (ids in order of first appearance).
        first_index: ``(M,) int64`` index of each voxel's first point in the input.
        coords: ``(M, 3) int64`` integer voxel coordinates ``floor((p - origin) / size)``
            (0 along an axis of infinite size).
        voxel_size: ``(3,) float64`` metres. origin: ``(3,) float64`` metres.
    """

    inverse: np.ndarray
    first_index: np.ndarray
    coords: np.ndarray
    voxel_size: np.ndarray
    origin: np.ndarray

    def __len__(self) -> int:
        return len(self.first_index)


def voxelize(
    xyz: np.ndarray, voxel_size: float | np.ndarray, origin: np.ndarray | None = None
) -> Voxelization:
    """Assign ``(N, 3)`` points (float32/float64, any frame) to voxels.

    ``voxel_size`` is a scalar or ``(3,)`` of positive metres (``inf`` allowed per axis);
    ``origin`` ``(3,)`` defaults to ``(0, 0, 0)`` so grids of different clouds line up.
    Raises ``ValueError`` for bad shapes, non-finite points or a bounding box of more than
    2**62 voxels.
    """
    p = as_points(xyz)
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if np.any(np.isnan(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive, got {size.tolist()}")
    o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    if o.shape != (3,) or not np.all(np.isfinite(o)):
        raise ValueError(f"origin must be a finite (3,) array, got {o.shape}")
    inv = np.where(np.isinf(size), 0.0, 1.0 / size)
    n = len(p)
    base = np.zeros(3, dtype=np.int64)
    dims = np.ones(3, dtype=np.int64)
    if n:
        lo = np.empty(3)
        hi = np.empty(3)
        if not _bounds_kernel(p, lo, hi):
            raise ValueError("xyz contains NaN or infinite values")
        # floor((p - o) / s) is monotone in p, so the extreme voxels come from the extremes
        lo = np.floor((lo - o) * inv)
        hi = np.floor((hi - o) * inv)
        extent = [int(h) - int(l) + 1 for l, h in zip(lo, hi)]
        if extent[0] * extent[1] * extent[2] > _MAX_CELLS:
            raise ValueError(
                f"voxel grid spans {extent} voxels, more than 2**62 in all "
                f"(use a larger voxel_size or split the cloud)"
            )
        base = lo.astype(np.int64)
        dims = np.array(extent, dtype=np.int64)
    inverse = np.empty(n, dtype=np.int64)
    first, keys = _assign_kernel(p, o, inv, base, dims, inverse)
    coords = np.empty((len(keys), 3), dtype=np.int64)
    _unpack_kernel(keys, base, dims, coords)
    return Voxelization(inverse, first, coords, size, o)


def voxel_downsample(
    xyz: np.ndarray,
    voxel_size: float | np.ndarray,
    keep: Literal["centroid", "first"] = "centroid",
    origin: np.ndarray | None = None,
) -> tuple[np.ndarray, Voxelization]:
    """One point per occupied voxel: the mean of its points or its first point.

    Returns ``(points (M, 3), voxelization)`` with points in voxel order (first appearance)
    and in the input dtype (centroids are summed in float64). See :func:`voxelize`.
    """
    if keep not in ("centroid", "first"):
        raise ValueError(f"keep must be 'centroid' or 'first', got {keep!r}")
    p = as_points(xyz)
    vox = voxelize(p, voxel_size, origin)  # checks finiteness
    if keep == "first":
        return p[vox.first_index], vox
    out = np.empty((len(vox), 3), dtype=p.dtype)
    count = np.zeros(len(vox), dtype=np.int64)
    _centroid_kernel(p, vox.inverse, len(vox), out, count)
    return out, vox


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        voxel_downsample(np.zeros((2, 3), dtype), 0.1)
        voxel_downsample(np.zeros((2, 3), dtype), 0.1, keep="first")
