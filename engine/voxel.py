"""Voxel grids: assign points to voxels, downsample to one point per voxel.

Voxel ``(i, j, k)`` of a grid with origin ``o`` and size ``s`` (per axis) holds the points
with ``floor((p - o) / s) == (i, j, k)``. Voxels are numbered in order of their first point
in the input, so every result is deterministic. An infinite size along an axis makes that
axis one layer (``(cell, cell, inf)`` is a 2-D grid of columns, as ground segmentation uses).

The assignment is one pass with an open-addressing hash table that grows with the number
of occupied voxels (not with the number of points), so it stays cache-sized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import math

import numpy as np

from engine._jit import jit, pjit, prange

_BITS = 21  # bits per axis in a packed voxel key
_AXIS_LIMIT = 1 << _BITS
_MASK = _AXIS_LIMIT - 1


@jit
def _hash_slot(key, mask):
    h = key ^ (key >> 31)
    h *= 0x7FB5D329728EA185
    h ^= h >> 27
    return h & mask


@pjit
def _key_kernel(xyz, origin, inv_size, base, keys):
    for i in prange(xyz.shape[0]):
        key = 0
        for a in range(3):
            c = np.int64(math.floor((xyz[i, a] - origin[a]) * inv_size[a])) - base[a]
            key |= c << (_BITS * a)
        keys[i] = key


@jit
def _assign_kernel(point_keys, inverse):
    """Fill ``inverse`` (voxel id per point); return (first index, packed key) per voxel.

    The table holds (key, id) pairs side by side, so a probe touches one cache line.
    """
    n = point_keys.shape[0]
    cap = 1024
    table = np.full((cap, 2), -1, dtype=np.int64)
    first = np.empty(max(n, 1), dtype=np.int64)
    keys = np.empty(max(n, 1), dtype=np.int64)
    m = 0
    mask = cap - 1
    for i in range(n):
        key = point_keys[i]
        s = _hash_slot(key, mask)
        while table[s, 0] != -1 and table[s, 0] != key:
            s = (s + 1) & mask
        if table[s, 0] == key:
            inverse[i] = table[s, 1]
            continue
        table[s, 0] = key
        table[s, 1] = m
        first[m] = i
        keys[m] = key
        inverse[i] = m
        m += 1
        if 2 * m > cap:  # keep the load factor under 1/2: rebuild twice as large
            cap *= 2
            mask = cap - 1
            table = np.full((cap, 2), -1, dtype=np.int64)
            for v in range(m):
                s = _hash_slot(keys[v], mask)
                while table[s, 0] != -1:
                    s = (s + 1) & mask
                table[s, 0] = keys[v]
                table[s, 1] = v
    return first[:m].copy(), keys[:m].copy()


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
def _unpack_kernel(keys, base, out):
    for v in range(keys.shape[0]):
        for a in range(3):
            out[v, a] = ((keys[v] >> (_BITS * a)) & _MASK) + base[a]


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


def _check_points(xyz: np.ndarray) -> np.ndarray:
    p = np.asarray(xyz)
    if p.size == 0:
        p = p.reshape(0, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {p.shape}")
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    p = np.ascontiguousarray(p)
    if not np.all(np.isfinite(p)):
        raise ValueError("xyz contains NaN or infinite values")
    return p


def voxelize(
    xyz: np.ndarray, voxel_size: float | np.ndarray, origin: np.ndarray | None = None
) -> Voxelization:
    """Assign ``(N, 3)`` points (float32/float64, any frame) to voxels.

    ``voxel_size`` is a scalar or ``(3,)`` of positive metres (``inf`` allowed per axis);
    ``origin`` ``(3,)`` defaults to ``(0, 0, 0)`` so grids of different clouds line up.
    Raises ``ValueError`` for bad shapes, non-finite points or a grid wider than 2**21
    voxels along an axis.
    """
    p = _check_points(xyz)
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if np.any(np.isnan(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive, got {size.tolist()}")
    o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    if o.shape != (3,) or not np.all(np.isfinite(o)):
        raise ValueError(f"origin must be a finite (3,) array, got {o.shape}")
    inv = np.where(np.isinf(size), 0.0, 1.0 / size)
    n = len(p)
    base = np.zeros(3, dtype=np.int64)
    if n:
        # floor((p - o) / s) is monotone in p, so the lowest voxel comes from the minimum
        lo = np.floor((p.min(axis=0).astype(np.float64) - o) * inv)
        hi = np.floor((p.max(axis=0).astype(np.float64) - o) * inv)
        if np.any(hi - lo >= _AXIS_LIMIT):
            raise ValueError(
                f"voxel grid spans {(hi - lo + 1).astype(np.int64).tolist()} voxels; at most "
                f"{_AXIS_LIMIT} per axis (use a larger voxel_size or split the cloud)"
            )
        base = lo.astype(np.int64)
    point_keys = np.empty(n, dtype=np.int64)
    _key_kernel(p, o, inv, base, point_keys)
    inverse = np.empty(n, dtype=np.int64)
    first, keys = _assign_kernel(point_keys, inverse)
    coords = np.empty((len(keys), 3), dtype=np.int64)
    _unpack_kernel(keys, base, coords)
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
    p = _check_points(xyz)
    vox = voxelize(p, voxel_size, origin)
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
