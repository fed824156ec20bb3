"""Voxel keys of the accumulated world map and the hash table that labels them.

A voxel of size ``s`` (metres) holds the world points with ``floor(p · (1/s)) == (i, j, k)``
(float64, products with ``1/s`` so every caller rounds alike); its key packs the three
indices, each biased by 2**20, into 21 bits apiece: ``((i + B) << 42) | ((j + B) << 21) |
(k + B)``, so keys are non-negative int64 and sort z-fastest. Indices must lie in
``[-2**20, 2**20)`` (±104 km at 0.1 m); a point outside that range or with a NaN
coordinate has key −1 and no voxel.

:class:`MapCloud` is the scene's map: one entry per occupied voxel of all frames' world
points (their centroid and count), keys sorted. :class:`VoxelLabels` holds labels per voxel
key (only labelled voxels) for :func:`engine.segmentation.transfer_labels`, which looks up
every point of every frame. Its table is made for that many lookups into a map far larger
than the caches: one record per 4×4×4 *brick* of voxels (open addressing with linear
probing, Fibonacci hashing of the brick key, load at most 1/2), ``[brick key, occupancy
mask (bit = place in the brick), first row]``, and the labels ``class << 32 | instance`` of
the brick's voxels in consecutive rows (in place order, so a voxel's row is the first row
plus the number of occupied places below its own). A lookup touches two cache lines, and
the voxels of one brick (neighbours along a LiDAR ring) share them: a third of the memory
of a table of voxels, and fewer distinct lines per frame. :func:`find_rows` looks up a
block of keys in passes (every key at its brick's home slot, then the few probes further
on), so that the cache misses of a block are in flight together, not one after another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np

from engine._jit import inline, jit, pjit, prange
from engine.arrays import as_points
from engine.voxel import hash_slot

BIAS = 1 << 20
FIELD = (1 << 21) - 1
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
def _place(key):
    """Place ``0..63`` of voxel ``key`` in its 4×4×4 brick (x fastest)."""
    return (key & 3) | (((key >> 21) & 3) << 2) | (((key >> 42) & 3) << 4)


@inline
def _popcount(x):
    """Set bits of ``x`` (int64, >= 0)."""
    x = x - ((x >> 1) & 0x5555555555555555)
    x = (x & 0x3333333333333333) + ((x >> 2) & 0x3333333333333333)
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0F
    return (x * 0x0101010101010101) >> 56


@inline
def _row_in(table, h, key):
    """Row of ``key`` if slot ``h`` holds its brick; −1 if the slot is empty or the brick
    does not hold the voxel; −2 if the slot holds another brick (probe on)."""
    k = table[h, 0]
    if k == (key & _BRICK):
        occupied = table[h, 1]
        bit = np.int64(1) << _place(key)
        if occupied & bit == 0:
            return np.int64(-1)
        return table[h, 2] + _popcount(occupied & (bit - 1))
    return np.int64(-1) if k == -1 else np.int64(-2)


@inline
def find_rows(table, bits, keys, n, rows):
    """``rows[j]``: row of ``keys[j]`` (``j < n``) in :attr:`VoxelLabels.packed`, −1 where
    the table does not hold it (or the key is −1). A pass over the keys' home slots (their
    loads independent, so their cache misses overlap), then the probe on for the few keys
    whose brick lies further along."""
    mask = (1 << bits) - 1
    for j in range(n):
        key = keys[j]
        rows[j] = _row_in(table, hash_slot(key & _BRICK, bits), key) if key >= 0 else -1
    for j in range(n):
        if rows[j] == -2:
            key = keys[j]
            h = hash_slot(key & _BRICK, bits)
            while rows[j] == -2:
                h = (h + 1) & mask
                rows[j] = _row_in(table, h, key)


@pjit
def _keys_kernel(xyz, inv_size, out):
    for i in prange(xyz.shape[0]):
        out[i] = key_of(xyz[i, 0], xyz[i, 1], xyz[i, 2], inv_size)


@jit
def _build_table(bricks, occupied, first, table, bits):
    mask = (1 << bits) - 1
    for r in range(bricks.shape[0]):
        h = hash_slot(bricks[r], bits)
        while table[h, 0] != -1:
            h = (h + 1) & mask
        table[h, 0] = bricks[r]
        table[h, 1] = occupied[r]
        table[h, 2] = first[r]


BLOCK = 256  # keys per lookup block (its buffers stay in L1)
CHUNK = 16 * BLOCK  # keys per parallel work item


@pjit
def _lookup_kernel(table, bits, packed, keys, out_class, out_inst):
    n = keys.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK):
        rows = np.empty(BLOCK, np.int64)
        for lo in range(c * CHUNK, min(c * CHUNK + CHUNK, n), BLOCK):
            m = min(BLOCK, n - lo)
            find_rows(table, bits, keys[lo:], m, rows)
            for j in range(m):
                v = packed[rows[j]] if rows[j] >= 0 else np.int64(0)
                out_class[lo + j] = v >> 32
                out_inst[lo + j] = v & 0xFFFFFFFF


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
    idx = np.stack([(k >> 42) & FIELD, (k >> 21) & FIELD, k & FIELD], axis=1) - BIAS
    return (idx + 0.5) * _voxel_size(voxel_m)


@dataclass(frozen=True, eq=False)
class VoxelLabels:
    """Labels of voxels: ``keys (M,) int64`` strictly increasing, ``class_id (M,) uint16``,
    ``instance_id (M,) uint32``, ``voxel_m``; the brick table ``table (2**bits, 3) int64``
    (module docstring) and ``packed (M,) int64``, ``class << 32 | instance`` in its row order."""

    voxel_m: float
    keys: np.ndarray
    class_id: np.ndarray
    instance_id: np.ndarray
    table: np.ndarray
    bits: int
    packed: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)

    def lookup(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(class (K,) uint16, instance (K,) uint32)`` of voxel ``keys (K,)`` (0, 0 where unlabelled)."""
        k = np.ascontiguousarray(keys, dtype=np.int64)
        out_c, out_i = np.empty(len(k), np.uint16), np.empty(len(k), np.uint32)
        _lookup_kernel(self.table, self.bits, self.packed, k, out_c, out_i)
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
    brick = k & _BRICK
    place = _place(k)
    order = np.lexsort((place, brick))
    brick, bit = brick[order], np.left_shift(np.int64(1), place[order])
    first = np.flatnonzero(np.diff(brick, prepend=-1)) if len(k) else np.zeros(0, np.int64)
    occupied = np.bitwise_or.reduceat(bit, first) if len(k) else np.zeros(0, np.int64)
    bits = max(4, int(np.ceil(np.log2(max(2 * len(first), 1)))))
    table = np.full((1 << bits, 3), -1, np.int64)
    _build_table(brick[first], occupied, first.astype(np.int64), table, bits)
    packed = (c[order].astype(np.int64) << 32) | i[order].astype(np.int64)
    return VoxelLabels(_voxel_size(voxel_m), k, c, i, table, bits, packed)


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
