"""Voxel grids: assign points to voxels, downsample to one point per voxel.

Voxel ``(i, j, k)`` of a grid with origin ``o`` and size ``s`` (per axis) holds the points
with ``floor((p - o) / s) == (i, j, k)``. Voxels are numbered in order of their first point
in the input, so every result is deterministic. An infinite size along an axis makes that
axis one layer (``(cell, cell, inf)`` is a 2-D grid of columns, as ground segmentation uses).

The assignment radix-sorts the high bits of integer voxel keys (passes whose write heads
stay in cache, instead of one cache miss per point into a hash table), which groups the
points into buckets in input order; a per-chunk table indexed by the keys' low 17 bits then
finds each bucket's voxels, so a box of up to 2**28 voxels needs one pass. Passes, grouping
and renumbering run in parallel over chunks; centroids are summed in the renumbering pass.
:func:`first_points` needs only each voxel's first point (a level of detail): one pass with
a hash set of the occupied voxels, whose table stays small because it holds voxels, not
points; :func:`first_points_levels` does several sizes on one validation and bounds pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from engine._jit import inline, jit, pjit, prange
from engine.arrays import as_points, finite_bounds
from engine.cuda import Device, resolve

_DIGIT_BITS = 11  # radix-sort digit: 2048 buckets, whose write heads stay in cache
_LOW_BITS = 17  # key bits left unsorted: a table of 2**17 runs (1 MiB) per chunk finds them
_MAX_CELLS = 1 << 62  # voxels in the bounding box, so keys fit int64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: key * 2**64 / golden ratio
_MAX_COORD = 2.0**62  # |floor((p - o) / s)|, so integer voxel coordinates fit int64


@inline
def _voxel_key(xyz, i, origin, inv_size, base, dims):
    """Key ``ix + nx * (iy + ny * iz)`` of point i's voxel, relative to the lowest voxel."""
    key = 0
    mul = 1
    for a in range(3):
        c = np.int64(math.floor((xyz[i, a] - origin[a]) * inv_size[a])) - base[a]
        key += c * mul
        mul *= dims[a]
    return key


@inline
def hash_slot(key, bits):
    """Slot of voxel ``key`` in a hash table of ``2**bits`` slots (Fibonacci hashing)."""
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))


@pjit
def _keys_kernel(xyz, origin, inv_size, base, dims, shift, keys):
    """``keys[i] = (voxel key << shift) | i`` (or the key alone when ``shift`` is 0)."""
    for i in prange(xyz.shape[0]):
        key = _voxel_key(xyz, i, origin, inv_size, base, dims)
        keys[i] = (key << shift) | i if shift else key


@pjit
def _radix_pass(src, src_idx, dst, dst_idx, shift, digit, with_idx):
    """One stable counting-sort pass on the ``digit`` bits at ``shift``, in parallel over point
    chunks: each chunk counts its digits, then scatters from its own offsets (chunk c's
    elements of a digit follow chunk c - 1's, so the pass stays stable)."""
    radix = 1 << digit
    n = src.shape[0]
    n_chunks = max(1, min(8, n // 65536))
    offsets = np.zeros((n_chunks, radix), dtype=np.int64)
    for c in prange(n_chunks):
        for i in range(n * c // n_chunks, n * (c + 1) // n_chunks):
            offsets[c, (src[i] >> shift) & (radix - 1)] += 1
    start = 0
    for d in range(radix):
        for c in range(n_chunks):
            k = offsets[c, d]
            offsets[c, d] = start
            start += k
    for c in prange(n_chunks):
        for i in range(n * c // n_chunks, n * (c + 1) // n_chunks):
            x = src[i]
            d = (x >> shift) & (radix - 1)
            pos = offsets[c, d]
            offsets[c, d] = pos + 1
            dst[pos] = x
            if with_idx:
                dst_idx[pos] = src_idx[i]


@jit
def _runs_kernel(xyz, origin, inv_size, base, dims, inverse, scratch, run_first, spans):
    """Voxel runs of the points, numbered with gaps: fills ``spans`` (``(C, 2)``: chunk c's
    runs are ``spans[c, 0] <= r < spans[c, 1]``), ``run_first[r]`` (each run's first point)
    and ``inverse`` (each point's run number); returns C.
    ``scratch`` is ``(N,) int64`` work memory.

    Key ``ix + nx * (iy + ny * iz)`` relative to the lowest voxel. An LSD radix sort of the
    keys' high bits (above the low ``_LOW_BITS``) groups the points into buckets, in input
    order within each (the sort is stable); a table indexed by the low bits then finds each
    bucket's voxels, so the whole key needs no sort. When key and point index fit one int64
    together they are sorted as one value (half the memory traffic), otherwise as (key,
    index) pairs.
    """
    n = xyz.shape[0]
    total = dims[0] * dims[1] * dims[2]
    key_bits = 0
    while (np.int64(1) << key_bits) < total:
        key_bits += 1
    idx_bits = 0
    while (np.int64(1) << idx_bits) < n:
        idx_bits += 1
    low_bits = min(key_bits, _LOW_BITS)
    pack = key_bits + idx_bits <= 63
    shift0 = idx_bits if pack else 0
    passes = (key_bits - low_bits + _DIGIT_BITS - 1) // _DIGIT_BITS
    digit = (key_bits - low_bits + passes - 1) // passes if passes else 0
    # the sort ping-pongs between ``inverse`` and ``scratch``, ending in ``scratch``
    # (``inverse`` is written while the sorted keys are read)
    keys, keys2 = (inverse, scratch) if passes % 2 == 1 else (scratch, inverse)
    _keys_kernel(xyz, origin, inv_size, base, dims, shift0, keys)
    idx = np.arange(n) if not pack else np.empty(0, dtype=np.int64)
    idx2 = np.empty(n if not pack else 0, dtype=np.int64)
    for r in range(passes):
        _radix_pass(keys, idx, keys2, idx2, shift0 + low_bits + r * digit, digit, not pack)
        keys, keys2 = keys2, keys
        idx, idx2 = idx2, idx
    # chunks of whole buckets (the bucket at a chunk's nominal start goes to the chunk before)
    high = shift0 + low_bits
    n_chunks = max(1, min(8, n // 65536)) if passes else 1
    starts = np.empty(n_chunks + 1, dtype=np.int64)
    starts[0], starts[n_chunks] = 0, n
    for c in range(1, n_chunks):
        lo, hi = max(n * c // n_chunks, starts[c - 1]), n
        if lo > 0:
            b = keys[lo - 1] >> high
            while lo < hi:  # first position past bucket b
                mid = (lo + hi) // 2
                if (keys[mid] >> high) > b:
                    hi = mid
                else:
                    lo = mid + 1
        starts[c] = lo
    _group(keys, idx, shift0, low_bits, pack, starts, inverse, run_first, spans)
    return n_chunks


@pjit
def _group(keys, idx, shift, low_bits, pack, starts, inverse, run_first, spans):
    """Runs of equal keys within each bucket of equal high bits, in parallel over chunks of
    buckets: a run is numbered on its first point (the first of its key in the bucket, so
    the first in the input) from ``starts[c]`` on; a table indexed by the low ``low_bits``
    bits holds each key's run, valid when numbered since the bucket began."""
    mask = (np.int64(1) << shift) - 1
    low_mask = (np.int64(1) << low_bits) - 1
    high = shift + low_bits
    for c in prange(starts.shape[0] - 1):
        table = np.full(1 << low_bits, -1, dtype=np.int64)
        r = starts[c]
        bucket_first = r
        bucket = np.int64(-1)
        for j in range(starts[c], starts[c + 1]):
            k = keys[j]
            i = k & mask if pack else idx[j]
            if (k >> high) != bucket:
                bucket = k >> high
                bucket_first = r
            low = (k >> shift) & low_mask
            q = table[low]
            if q < bucket_first:
                q = r
                table[low] = r
                run_first[r] = i
                r += 1
            inverse[i] = q
        spans[c, 0] = starts[c]
        spans[c, 1] = r


@jit
def _order_kernel(spans, run_first, slot, first):
    """Voxel ids by first appearance: the runs' first points are distinct point indices,
    so marking them in ``slot`` (``(N,) int64`` work memory) and scanning it in point order
    lists them sorted; fills ``first`` and turns ``run_first`` into run → voxel id."""
    slot[:] = -1
    for c in range(spans.shape[0]):
        for q in range(spans[c, 0], spans[c, 1]):
            slot[run_first[q]] = q
    v = 0
    for i in range(slot.shape[0]):
        q = slot[i]
        if q >= 0:
            first[v] = i
            run_first[q] = v
            v += 1


@pjit
def _coords_kernel(xyz, first, origin, inv_size, out):
    """Integer coordinates ``floor((p - o) / s)`` of each voxel, from its first point."""
    for v in prange(first.shape[0]):
        for a in range(3):
            out[v, a] = np.int64(math.floor((xyz[first[v], a] - origin[a]) * inv_size[a]))


@jit
def _means_kernel(sums, means):
    for v in range(sums.shape[0]):
        for a in range(3):
            means[v, a] = sums[v, a] / sums[v, 3]


@pjit
def _renumber(xyz, inverse, voxel_of_run, sums, half):
    """``inverse[i] = voxel_of_run[inverse[i]]`` and, when ``sums`` has rows, the per-voxel
    coordinate sums and counts: in parallel over two halves of the points, each summing into
    its own zeroed table (``half`` is added to ``sums`` at the end, so the result does not
    depend on scheduling)."""
    n = xyz.shape[0]
    with_sums = sums.shape[0] > 0
    for c in prange(2):
        acc = sums if c == 0 else half
        for i in range(n * c // 2, n * (c + 1) // 2):
            v = voxel_of_run[inverse[i]]
            inverse[i] = v
            if with_sums:
                for a in range(3):
                    acc[v, a] += xyz[i, a]
                acc[v, 3] += 1.0
    for v in range(sums.shape[0]):
        for a in range(4):
            sums[v, a] += half[v, a]


@jit
def _first_points_kernel(xyz, origin, inv_size, base, dims, keys, first, work):
    """Fills ``first[:M]`` with the index of each voxel's first point, in order of first
    appearance; returns M. The voxel keys go to ``keys`` (``(N,) int64`` work memory) in one
    tight pass, then one pass over them with an open-addressing hash set of keys (linear
    probing, grown at 1/8 load so a lookup rarely probes twice: a mispredicted probe costs
    more than the larger table). The set's keys are kept in ``keys[:M]``, so a grown table
    is rebuilt from them in place, in ``work`` (int64 memory from NumPy, whose huge pages
    fault far less than fresh small ones) while it fits, else in a new array."""
    n = xyz.shape[0]
    for i in range(n):
        keys[i] = _voxel_key(xyz, i, origin, inv_size, base, dims)
    bits = 12
    table = work[: 1 << bits] if work.shape[0] >= 1 << bits else np.empty(1 << bits, dtype=np.int64)
    table[:] = -1
    m = 0
    for i in range(n):
        key = keys[i]
        mask = (1 << bits) - 1
        h = hash_slot(key, bits)
        t = table[h]
        while t != key and t != -1:
            h = (h + 1) & mask
            t = table[h]
        if t == key:
            continue
        table[h] = key
        keys[m] = key  # keys[:i] are done with
        first[m] = i
        m += 1
        if 8 * m > (1 << bits):  # rehash the keys seen so far into a table twice as large
            bits += 1
            mask = (1 << bits) - 1
            table = work[: 1 << bits] if work.shape[0] >= 1 << bits else np.empty(1 << bits, dtype=np.int64)
            table[:] = -1
            for v in range(m):
                h = hash_slot(keys[v], bits)
                while table[h] != -1:
                    h = (h + 1) & mask
                table[h] = keys[v]
    return m


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


def _points(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(points, min (3,), max (3,))``: NaN or infinite coordinates raise."""
    p = as_points(xyz)
    lo, hi = finite_bounds(p)
    return p, lo, hi


def _grid(p: np.ndarray, lo: np.ndarray, hi: np.ndarray, voxel_size: float | np.ndarray,
          origin: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated ``(size, origin, 1/size, base, dims)`` for points from :func:`_points`: the
    voxels' integer coordinates relative to ``base`` span ``dims`` (the bounding box)."""
    size = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,)).copy()
    if np.any(np.isnan(size)) or np.any(size <= 0):
        raise ValueError(f"voxel_size must be positive, got {size.tolist()}")
    o = np.zeros(3) if origin is None else np.asarray(origin, dtype=np.float64)
    if o.shape != (3,) or not np.all(np.isfinite(o)):
        raise ValueError(f"origin must be a finite (3,) array, got {o.shape}")
    inv = np.where(np.isinf(size), 0.0, 1.0 / size)
    base = np.zeros(3, dtype=np.int64)
    dims = np.ones(3, dtype=np.int64)
    if len(p):
        # floor((p - o) / s) is monotone in p, so the extreme voxels come from the extremes
        lo = np.floor((lo - o) * inv)
        hi = np.floor((hi - o) * inv)
        reach = max(-lo.min(), hi.max())
        if reach >= _MAX_COORD:
            raise ValueError(
                f"integer voxel coordinates reach {reach:.3g}, beyond 2**62 (int64): points too far "
                f"from the origin for voxel_size {size.tolist()} (pass an origin near the points)"
            )
        extent = [int(h) - int(l) + 1 for l, h in zip(lo, hi)]
        if extent[0] * extent[1] * extent[2] > _MAX_CELLS:
            raise ValueError(
                f"voxel grid spans {extent} voxels, more than 2**62 in all "
                f"(use a larger voxel_size or split the cloud)"
            )
        base = lo.astype(np.int64)
        dims = np.array(extent, dtype=np.int64)
    return size, o, inv, base, dims


def _assign(
    xyz: np.ndarray, voxel_size: float | np.ndarray, origin: np.ndarray | None, centroids: bool
) -> tuple[Voxelization, np.ndarray | None]:
    """:func:`voxelize`; with ``centroids`` also the ``(M, 3)`` voxel means in the input dtype."""
    p, lo, hi = _points(xyz)
    size, o, inv, base, dims = _grid(p, lo, hi, voxel_size, origin)
    n = len(p)
    # N-sized work memory comes from NumPy, which asks the kernel for transparent huge pages
    # (a fresh 4 KiB-paged array costs a page fault per 4 KiB, a third of the time here)
    inverse, scratch = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    run_first, spans = np.empty(n, dtype=np.int64), np.zeros((8, 2), dtype=np.int64)
    chunks = _runs_kernel(p, o, inv, base, dims, inverse, scratch, run_first, spans)
    spans = spans[:chunks]
    m = int((spans[:, 1] - spans[:, 0]).sum())
    first, coords = np.empty(m, np.int64), np.empty((m, 3), dtype=np.int64)
    _order_kernel(spans, run_first, scratch, first)
    _coords_kernel(p, first, o, inv, coords)
    rows = m if centroids else 0
    sums = np.zeros((rows, 4))
    _renumber(p, inverse, run_first, sums, np.zeros((rows, 4)))
    means = np.empty((rows, 3), dtype=p.dtype)
    _means_kernel(sums, means)
    return Voxelization(inverse, first, coords, size, o), means if centroids else None


def voxelize(
    xyz: np.ndarray, voxel_size: float | np.ndarray, origin: np.ndarray | None = None
) -> Voxelization:
    """Assign ``(N, 3)`` points (float32/float64, any frame) to voxels.

    ``voxel_size`` is a scalar or ``(3,)`` of positive metres (``inf`` allowed per axis);
    ``origin`` ``(3,)`` defaults to ``(0, 0, 0)`` so grids of different clouds line up.
    Raises ``ValueError`` for bad shapes, non-finite points, integer voxel coordinates
    beyond ±2**62 or a bounding box of more than 2**62 voxels.
    """
    return _assign(xyz, voxel_size, origin, False)[0]


def first_points(
    xyz: np.ndarray, voxel_size: float | np.ndarray, origin: np.ndarray | None = None,
    device: Device | None = None,
) -> np.ndarray:
    """``(M,) int64`` index of each occupied voxel's first point, in order of first
    appearance: ``voxelize(xyz, voxel_size, origin).first_index`` without assigning every
    point (one hashing pass; a level of detail needs no more). Same arguments and errors;
    ``device`` as :func:`first_points_levels`."""
    return first_points_levels(xyz, [voxel_size], origin, device)[0]


def level_grids(xyz: np.ndarray, voxel_sizes: Sequence[float | np.ndarray], origin: np.ndarray | None = None
                ) -> tuple[np.ndarray, list[tuple[np.ndarray, ...]]]:
    """The checked points (:func:`_points`) and, per voxel size, the kernels' grid
    ``(origin, 1/size, base, dims)`` (:func:`_grid`); raises as :func:`voxelize`."""
    p, lo, hi = _points(xyz)
    return p, [_grid(p, lo, hi, size, origin)[1:] for size in voxel_sizes]


def first_points_levels(
    xyz: np.ndarray, voxel_sizes: Sequence[float | np.ndarray], origin: np.ndarray | None = None,
    device: Device | None = None,
) -> list[np.ndarray]:
    """:func:`first_points` for each of several voxel sizes (levels of detail), validating
    the points and finding their bounds once. Returns one ``(M_k,) int64`` array per size.
    ``device``: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`)."""
    p, grids = level_grids(xyz, voxel_sizes, origin)
    if resolve(device) == "cuda":
        from engine.cuda.voxel import first_points_levels as on_gpu

        return on_gpu(p, grids)
    n = len(p)
    keys, first = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    # room for a table of 8 N slots (at most 2**22: 32 MiB of address space, touched as used)
    work = np.empty(min(1 << max(12, (8 * n - 1).bit_length()), 1 << 22), dtype=np.int64)
    levels = []
    for o, inv, base, dims in grids:
        m = _first_points_kernel(p, o, inv, base, dims, keys, first, work)
        levels.append(first[:m].copy())
    return levels


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
    vox, means = _assign(xyz, voxel_size, origin, keep == "centroid")
    if means is None:
        return as_points(xyz)[vox.first_index], vox
    return means, vox


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        first_points(np.zeros((2, 3), dtype), 0.1)
        voxel_downsample(np.zeros((2, 3), dtype), 0.1)
        voxel_downsample(np.zeros((2, 3), dtype), 0.1, keep="first")
