"""Voxel keys of the accumulated world map and the hash table that labels them.

A voxel of size ``s`` (metres) holds the world points with ``floor(p · (1/s)) == (i, j, k)``
(float64, products with ``1/s`` so every caller rounds alike); its key packs the three
indices, each biased by 2**20, into 21 bits apiece: ``((i + B) << 42) | ((j + B) << 21) |
(k + B)``, so keys are non-negative int64 and sort z-fastest. Indices must lie in
``[-2**20, 2**20)`` (±104 km at 0.1 m); a point outside that range or with a NaN
coordinate has key −1 and no voxel.

:class:`MapCloud` is the scene's map: one entry per occupied voxel of all frames' world
points (their centroid and count), keys sorted. :class:`VoxelLabels` holds labels per voxel
key (only labelled voxels) with an open-addressing hash table (linear probing from a
home slot that keeps the voxels of a 4×4×4 brick together, Fibonacci hashing of the brick,
load 1/3 to 2/3, each slot ``[key, class << 32 | instance]`` so a lookup touches one cache
line, and successive points of a LiDAR ring mostly the same lines) that
:func:`engine.segmentation.transfer_labels` reads per point.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from engine._jit import inline, jit, pjit, prange
from engine.arrays import as_points
from engine.voxel import hash_slot

BIAS = 1 << 20
_FIELD = (1 << 21) - 1
_BRICK = ~((3 << 42) | (3 << 21) | 3)  # a key with its voxel's place in its 4×4×4 brick cleared


@inline
def key_of(x, y, z, inv_size):
    """Voxel key of the point ``(x, y, z)`` (−1: NaN or out of range)."""
    fx = np.floor(np.float64(x) * inv_size)
    fy = np.floor(np.float64(y) * inv_size)
    fz = np.floor(np.float64(z) * inv_size)
    if not (-BIAS <= fx < BIAS and -BIAS <= fy < BIAS and -BIAS <= fz < BIAS):  # NaN fails too
        return np.int64(-1)
    return ((np.int64(fx) + BIAS) << 42) | ((np.int64(fy) + BIAS) << 21) | (np.int64(fz) + BIAS)


@inline
def _home(key, bits):
    """Home slot of ``key``: its brick's hashed slot plus the voxel's place in the brick, so
    the voxels of one 4×4×4 brick (neighbours along a LiDAR ring) share a few cache lines."""
    local = (key & 3) | (((key >> 21) & 3) << 2) | (((key >> 42) & 3) << 4)
    return (hash_slot(key & _BRICK, bits) + local) & ((1 << bits) - 1)


@inline
def lookup_packed(table, bits, key):
    """``class << 32 | instance`` stored for ``key``, −1 if the table does not hold it."""
    if key < 0:
        return np.int64(-1)
    mask = (1 << bits) - 1
    h = _home(key, bits)
    while True:
        k = table[h, 0]
        if k == key:
            return table[h, 1]
        if k == -1:
            return np.int64(-1)
        h = (h + 1) & mask


@pjit
def _keys_kernel(xyz, inv_size, out):
    for i in prange(xyz.shape[0]):
        out[i] = key_of(xyz[i, 0], xyz[i, 1], xyz[i, 2], inv_size)


@jit
def _build_table(keys, class_id, instance_id, table, bits):
    mask = (1 << bits) - 1
    for r in range(keys.shape[0]):
        h = _home(keys[r], bits)
        while table[h, 0] != -1:
            h = (h + 1) & mask
        table[h, 0] = keys[r]
        table[h, 1] = (np.int64(class_id[r]) << 32) | np.int64(instance_id[r])


@pjit
def _lookup_kernel(table, bits, keys, out_class, out_inst):
    for i in prange(keys.shape[0]):
        v = lookup_packed(table, bits, keys[i])
        if v < 0:
            out_class[i] = 0
            out_inst[i] = 0
        else:
            out_class[i] = v >> 32
            out_inst[i] = v & 0xFFFFFFFF


def _voxel_size(voxel_m: float) -> float:
    v = float(voxel_m)
    if not (np.isfinite(v) and v > 0):
        raise ValueError(f"voxel_m must be a positive number of metres, got {voxel_m}")
    return v


def voxel_keys(xyz: np.ndarray, voxel_m: float) -> np.ndarray:
    """``(N,) int64`` voxel key of each point of ``xyz (N, 3)`` (metres; −1: no voxel)."""
    p = as_points(xyz)
    out = np.empty(len(p), np.int64)
    _keys_kernel(p, 1.0 / _voxel_size(voxel_m), out)
    return out


def key_centers(keys: np.ndarray, voxel_m: float) -> np.ndarray:
    """``(M, 3) float64`` centres (metres) of the voxels ``keys (M,)`` (each >= 0)."""
    k = np.asarray(keys, np.int64)
    idx = np.stack([(k >> 42) & _FIELD, (k >> 21) & _FIELD, k & _FIELD], axis=1) - BIAS
    return (idx + 0.5) * _voxel_size(voxel_m)


@dataclass(frozen=True, eq=False)
class VoxelLabels:
    """Labels of voxels: ``keys (M,) int64`` strictly increasing, ``class_id (M,) uint16``,
    ``instance_id (M,) uint32``, ``voxel_m``; ``table (2**bits, 2) int64`` the hash table."""

    voxel_m: float
    keys: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray
    table: np.ndarray
    bits: int

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class (K,) uint16, instance (K,) uint32)`` of voxel ``keys (K,)`` (0, 0 where unlabelled)."""
        k = np.ascontiguousarray(keys, dtype=np.int64)
        out_c, out_i = np.empty(len(k), np.uint16), np.empty(len(k), np.uint32)
        _lookup_kernel(self.table, self.bits, k, out_c, out_i)
        return out_c, out_i


def voxel_labels(keys: np.ndarray, class_id: np.ndarray, instance_id: np.ndarray, voxel_m: float) -> VoxelLabels:
    """:class:`VoxelLabels` of ``keys (M,)`` (strictly increasing, >= 0) labelled
    ``class_id (M,)``, ``instance_id (M,)``; ValueError naming a bad argument."""
    k = np.ascontiguousarray(keys, dtype=np.int64)
    c = np.ascontiguousarray(class_id, dtype=np.uint16)
    i = np.ascontiguousarray(instance_id, dtype=np.uint32)
    if k.ndim != 1 or c.shape != k.shape or i.shape != k.shape:
        raise ValueError(f"keys, class_id, instance_id must be (M,) arrays, got {k.shape}, {c.shape}, {i.shape}")
    if len(k) and (k[0] < 0 or np.any(k[1:] <= k[:-1])):
        raise ValueError("keys must be non-negative and strictly increasing")
    bits = max(4, int(np.ceil(np.log2(max(1.5 * len(k), 1.0)))))
    table = np.full((1 << bits, 2), -1, np.int64)
    _build_table(k, c, i, table, bits)
    return VoxelLabels(_voxel_size(voxel_m), k, c, i, table, bits)


@dataclass(frozen=True, eq=False)
class MapCloud:
    """The accumulated map: ``keys (M,) int64`` sorted occupied voxels, ``centroids (M, 3)
    float64`` (metres, the frames' world frame), ``counts (M,) int64`` points per voxel."""

    voxel_m: float
    keys: np.ndarray
    centroids: np.ndarray
    counts: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


def _reduce(keys: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries with equal keys merged (sums and counts added); keys sorted, −1 dropped."""
    keep = keys >= 0
    keys, sums, counts = keys[keep], sums[keep], counts[keep]
    uniq, inverse = np.unique(keys, return_inverse=True)
    out = np.stack([np.bincount(inverse, sums[:, a], len(uniq)) for a in range(3)], axis=1)
    return uniq, out, np.bincount(inverse, counts, len(uniq)).astype(np.int64)


def map_cloud(frames_xyz: Iterable[np.ndarray], voxel_m: float) -> MapCloud:
    """:class:`MapCloud` of the frames' world points (each ``(N_f, 3)``, metres; NaN points
    and points out of the key range are left out)."""
    size = _voxel_size(voxel_m)
    parts = []
    for xyz in frames_xyz:
        p = as_points(xyz, float64=True)
        parts.append(_reduce(voxel_keys(p, size), p, np.ones(len(p), np.int64)))
    if not parts:
        return MapCloud(size, np.zeros(0, np.int64), np.zeros((0, 3)), np.zeros(0, np.int64))
    keys, sums, counts = _reduce(*(np.concatenate(c) for c in zip(*parts)))
    return MapCloud(size, keys, sums / counts[:, None], counts)


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        voxel_keys(np.zeros((2, 3), dtype), 0.1)
    labels = voxel_labels(np.array([1, 5], np.int64), np.ones(2, np.uint16), np.ones(2, np.uint32), 0.1)
    labels.lookup(np.array([1, 2, -1], np.int64))
