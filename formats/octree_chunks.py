"""Out-of-core chunking for :mod:`formats.octree_build`: input points pooled in temporary
files, counted per cell of a fixed grid while they arrive, the cube and its chunks planned
from the counts, then the pool distributed into one file per chunk (a counting sort by chunk
per block read), so no pass holds more than a block or a chunk in memory.

Pool and chunk files are arrays of :data:`RAW` records (24 bytes per input point). Counting
cells are cubes of ``voxel_q · 2**cell_bits`` quanta on a grid anchored at 0; the octree's
cube is aligned to that grid, so its cells at level ``depth − cell_bits`` are the counting
cells and every chunk (an octree node, :func:`plan_chunks`) is a union of them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine._jit import inline, jit
from engine.map_octree import MAX_DEPTH, gather_rows, group_by_node, morton_codes

RAW = np.dtype([("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("intensity", "<f4"), ("r", "u1"), ("g", "u1"),
                ("b", "u1"), ("pad", "u1"), ("frame", "<u4")])
RAW_WORDS = RAW.itemsize // 4  # a record viewed as int32 words: x y z, intensity, rgb + pad, frame
_BIAS = 1 << 20  # cell coordinates packed as 21-bit fields: |cell| < 2**20
_EMPTY = -1
BLOCK_POINTS = 1 << 21  # records per block read from the pool


@jit
def _pack_kernel(q, intensity, rgb, frame, words, floats, octets, lo, hi, irange):
    """Fill records from the columns; ``lo``/``hi`` per-axis bounds, ``irange`` = (min, max,
    1.0 if every intensity is a whole number in [0, 65535] else 0.0)."""
    whole = True
    for i in range(q.shape[0]):
        for a in range(3):
            v = q[i, a]
            words[i, a] = v
            lo[a] = min(lo[a], v)
            hi[a] = max(hi[a], v)
        v = np.float32(intensity[i])
        floats[i, 3] = v
        irange[0] = min(irange[0], v)
        irange[1] = max(irange[1], v)
        whole = whole and bool(v >= 0 and v <= 65535 and v == np.floor(v))
        if rgb.shape[0]:
            octets[i, 16], octets[i, 17], octets[i, 18] = rgb[i, 0], rgb[i, 1], rgb[i, 2]
        words[i, 5] = frame
    irange[2] = 1.0 if whole else 0.0


def pack_records(frame: int, xyz_q: np.ndarray, intensity: np.ndarray, rgb: np.ndarray | None
                 ) -> tuple[np.ndarray, dict[str, object]]:
    """``(records (N,) RAW, stats)`` of one frame's points (``xyz_q (N, 3)`` int quanta,
    ``intensity (N,)``, ``rgb (N, 3) uint8`` or None): stats ``lo_q``/``hi_q`` (per-axis
    bounds), ``i_min``/``i_max``, ``i_whole`` (every intensity a whole number in [0, 65535])."""
    n = len(xyz_q)
    rec = np.zeros(n, RAW)
    words = rec.view(np.int32).reshape(n, RAW_WORDS)
    lo, hi = np.full(3, np.iinfo(np.int64).max), np.full(3, np.iinfo(np.int64).min)
    irange = np.array([np.inf, -np.inf, 1.0])
    colours = np.zeros((0, 3), np.uint8) if rgb is None else np.ascontiguousarray(rgb, np.uint8)
    _pack_kernel(np.ascontiguousarray(xyz_q, np.int64), np.ascontiguousarray(intensity), colours, np.int64(frame),
                 words, rec.view(np.float32).reshape(n, RAW_WORDS), rec.view(np.uint8).reshape(n, RAW.itemsize),
                 lo, hi, irange)
    return rec, {"lo_q": lo.tolist(), "hi_q": hi.tolist(), "i_min": float(irange[0]), "i_max": float(irange[1]),
                 "i_whole": bool(irange[2])}


@inline
def _slot(key, mask):
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((h ^ (h >> np.uint64(29))) & np.uint64(mask))


@inline
def _cell_key(x, y, z, cell_q):
    return ((x // cell_q + _BIAS) | ((y // cell_q + _BIAS) << 21) | ((z // cell_q + _BIAS) << 42))


@jit
def _count_kernel(x, y, z, cell_q, start, keys, counts, used, max_used):
    """Count points ``start..`` into the open-addressing table; stops early (returns the
    next point and the entries used) when ``max_used`` entries are taken."""
    mask = keys.shape[0] - 1
    last, last_slot = np.int64(_EMPTY), np.int64(-1)
    for i in range(start, x.shape[0]):
        k = _cell_key(np.int64(x[i]), np.int64(y[i]), np.int64(z[i]), cell_q)
        if k == last:
            counts[last_slot] += 1
            continue
        h = _slot(k, mask)
        while keys[h] != k and keys[h] != _EMPTY:
            h = (h + 1) & mask
        if keys[h] == _EMPTY:
            if used >= max_used:
                return i, used
            keys[h] = k
            used += 1
        counts[h] += 1
        last, last_slot = k, h
    return x.shape[0], used


@jit
def _lookup_kernel(x, y, z, cell_q, keys, values, out):
    """``out[i]`` = the value of point i's cell (the cell must be in the table)."""
    mask = keys.shape[0] - 1
    last, last_value = np.int64(_EMPTY), np.int64(-1)
    for i in range(x.shape[0]):
        k = _cell_key(np.int64(x[i]), np.int64(y[i]), np.int64(z[i]), cell_q)
        if k != last:
            h = _slot(k, mask)
            while keys[h] != k:
                h = (h + 1) & mask
            last, last_value = k, values[h]
        out[i] = last_value


class CellCounter:
    """Points per counting cell (a hash table of packed cell keys, grown as needed)."""

    def __init__(self, cell_q: int, capacity: int = 1 << 12) -> None:
        self.cell_q = int(cell_q)
        self.keys = np.full(capacity, _EMPTY, np.int64)
        self.counts = np.zeros(capacity, np.int64)
        self.used = 0

    def add(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> None:
        """Count integer positions ``x y z`` (``(N,)``, quanta from 0, |v| < 2**31)."""
        start = 0
        while start < len(x):
            start, self.used = _count_kernel(x, y, z, np.int64(self.cell_q), start, self.keys, self.counts,
                                             self.used, len(self.keys) // 2)
            if start < len(x):
                self._grow()

    def _grow(self) -> None:
        keys, counts = self.items()
        self.keys = np.full(2 * len(self.keys), _EMPTY, np.int64)
        self.counts = np.zeros(len(self.keys), np.int64)
        self.used = 0
        self._insert(keys, counts)

    def _insert(self, keys: np.ndarray, counts: np.ndarray) -> None:
        for k, c in zip(keys.tolist(), counts.tolist()):
            h = int(_slot(k, len(self.keys) - 1))
            while self.keys[h] not in (k, _EMPTY):
                h = (h + 1) & (len(self.keys) - 1)
            if self.keys[h] == _EMPTY:
                self.used += 1
            self.keys[h] = k
            self.counts[h] += c

    def items(self) -> tuple[np.ndarray, np.ndarray]:
        """``(keys, counts)`` of the occupied cells (``(C,) int64`` each)."""
        full = self.keys != _EMPTY
        return self.keys[full].copy(), self.counts[full].copy()

    @staticmethod
    def restore(cell_q: int, keys: np.ndarray, counts: np.ndarray) -> "CellCounter":
        counter = CellCounter(cell_q, 1 << max(12, (2 * len(keys) + 1).bit_length()))
        counter._insert(keys, counts)
        return counter

    def lookup(self, x: np.ndarray, y: np.ndarray, z: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``(N,) int64`` ``values[slot]`` of each point's cell, ``values`` aligned with the table."""
        out = np.empty(len(x), np.int64)
        _lookup_kernel(x, y, z, np.int64(self.cell_q), self.keys, values, out)
        return out


def cell_coords(keys: np.ndarray) -> np.ndarray:
    """``(C, 3) int64`` cell coordinates of packed cell keys."""
    mask = (1 << 21) - 1
    return np.stack([(keys >> s) & mask for s in (0, 21, 42)], axis=1) - _BIAS


@dataclass(frozen=True)
class Cube:
    """The octree's cube: min corner ``origin_q`` (quanta), side ``voxel_q << depth``; its
    level ``depth − cell_bits`` cells are the counting cells (``cell_bits <= depth``)."""

    origin_q: tuple[int, int, int]
    voxel_q: int
    depth: int
    cell_bits: int

    @property
    def side_q(self) -> int:
        return self.voxel_q << self.depth

    @property
    def cell_level(self) -> int:
        return self.depth - self.cell_bits

    @staticmethod
    def around(lo_q: np.ndarray, hi_q: np.ndarray, voxel_q: int, cell_bits: int) -> "Cube":
        """The smallest cube on the counting grid holding the positions ``lo_q..hi_q``."""
        cell_q = voxel_q << cell_bits
        origin = np.floor_divide(lo_q, cell_q) * cell_q
        cells = int(np.max(np.floor_divide(hi_q, cell_q) - origin // cell_q)) + 1
        depth = cell_bits + max(0, (cells - 1).bit_length())
        if depth > MAX_DEPTH:
            raise ValueError(f"the map spans {cells} cells of {cell_q} quanta: beyond a depth-{MAX_DEPTH} octree of "
                             f"{voxel_q}-quantum voxels; choose a larger voxel")
        x, y, z = (int(v) for v in origin)
        return Cube((x, y, z), int(voxel_q), depth, int(cell_bits))


def plan_chunks(cube: Cube, keys: np.ndarray, counts: np.ndarray, chunk_max: int
                ) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """Chunks covering the counted cells: an octree node becomes a chunk when it holds at most
    ``chunk_max`` points or is a counting cell. Returns ``(chunks, chunk_of_cell)``: the
    chunks as ``(level, code prefix, points)`` in code order and each cell's chunk (aligned
    with ``keys``)."""
    cells = cell_coords(keys) - np.array(cube.origin_q, np.int64) // (cube.voxel_q << cube.cell_bits)
    codes = morton_codes(cells[:, 0], cells[:, 1], cells[:, 2], 1)
    order = np.argsort(codes, kind="stable")
    codes, csum = codes[order], np.concatenate([[0], np.cumsum(counts[order])])
    top = cube.cell_level
    chunks: list[tuple[int, int, int]] = []
    chunk_sorted = np.empty(len(codes), np.int64)

    def visit(level: int, prefix: int, lo: int, hi: int) -> None:
        total = int(csum[hi] - csum[lo])
        if total <= chunk_max or level == top:
            chunk_sorted[lo:hi] = len(chunks)
            chunks.append((level, prefix, total))
            return
        shift = 3 * (top - level - 1)
        child = codes[lo:hi] >> shift
        cuts = np.flatnonzero(np.diff(child)) + 1
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [hi - lo]])):
            visit(level + 1, int(child[a]), lo + int(a), lo + int(b))

    if len(codes):
        visit(0, 0, 0, len(codes))
    chunk_of_cell = np.empty(len(codes), np.int64)
    chunk_of_cell[order] = chunk_sorted
    return chunks, chunk_of_cell


def distribute(pool: list[Path], counter: CellCounter, chunk_of_slot: np.ndarray, n_chunks: int,
               chunk_path) -> None:
    """Append every pool record to its chunk's file (``chunk_path(k)``), block by block, each
    block counting-sorted by chunk first (one write per chunk and block)."""
    fds = [os.open(chunk_path(k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644) for k in range(n_chunks)]
    try:
        for path in pool:
            n = path.stat().st_size // RAW.itemsize
            for start in range(0, n, BLOCK_POINTS):
                block = np.fromfile(path, RAW, min(BLOCK_POINTS, n - start), offset=start * RAW.itemsize)
                ids = counter.lookup(block["x"], block["y"], block["z"], chunk_of_slot)
                order, starts = group_by_node(ids, n_chunks)
                grouped = gather_rows(block.view(np.int32).reshape(-1, RAW_WORDS), order)
                for k in np.flatnonzero(np.diff(starts)):
                    os.write(fds[k], grouped[starts[k]:starts[k + 1]].data)  # the rows' bytes, as a memoryview
    finally:
        for fd in fds:
            os.close(fd)


def _warmup() -> None:
    counter = CellCounter(16)
    v = np.array([0, 40, -5], np.int32)
    counter.add(v, v, v)
    counter.lookup(v, v, v, np.zeros(len(counter.keys), np.int64))
    for rgb in (None, np.zeros((1, 3), np.uint8)):
        pack_records(0, np.zeros((1, 3), np.int64), np.zeros(1, np.float32), rgb)
