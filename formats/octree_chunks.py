"""Out-of-core chunking for :mod:`formats.octree_build`: input points packed into pool records
and counted per cell of a fixed grid while they arrive, the cube and its chunks planned from
the counts, then the records placed cell after cell (a counting sort: the counts give every
cell's place), so no pass holds more than a block or a batch of chunks in memory.

Pool records are :data:`RAW` (16 bytes per input point: :func:`engine.map_octree.write_record`,
positions from their counting cell's corner), kept in runs of one frame and one cell. Counting
cells are cubes of ``voxel_q · 2**cell_bits`` quanta on a grid anchored at 0; the octree's
cube is aligned to that grid, so its cells at level ``depth − cell_bits`` are the counting
cells and every chunk (an octree node, :func:`plan_chunks`) is a union of them, its points a
run of whole cells in code order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine._jit import inline, jit, pjit, prange
from engine.map_octree import MAX_DEPTH, RECORD_WORDS, floor_div, morton_codes, write_record

RAW = np.dtype([("xy", "<u4"), ("zrg", "<u4"), ("intensity", "<f4"), ("b_voxel", "<u4")])  # write_record's words
RUN_COLUMNS = 3  # a run of records: int64 cell key (or first record), records, frame
_BIAS = 1 << 20  # cell coordinates packed as 21-bit fields: |cell| < 2**20
ALIGN_BITS = 4  # the cube's corner on a grid of 2**4 counting cells: a batch is a few runs of each pool segment
_PARTS = 8  # a frame's points in parts for the threads (the results do not depend on how many run)
_EMPTY = -1


@inline
def _slot(key, mask):
    h = np.uint64(key) * np.uint64(0x9E3779B97F4A7C15)
    return np.int64((h >> np.uint64(32)) & np.uint64(mask))


@inline
def _probe(keys, k, mask):
    """The slot of key ``k`` in the table ``keys`` (linear probing), −1 where it is missing."""
    h = _slot(k, mask)
    while keys[h] != k and keys[h] != _EMPTY:
        h = (h + 1) & mask
    return h if keys[h] == k else np.int64(-1)


@inline
def _cell_key(x, y, z, cell, inv):
    """The packed key of the cell (side ``cell`` quanta; ``inv = 1 / cell``) holding ``x y z``."""
    return ((floor_div(x, cell, inv) + _BIAS) | ((floor_div(y, cell, inv) + _BIAS) << 21)
            | ((floor_div(z, cell, inv) + _BIAS) << 42))


@pjit
def _scan_kernel(q, intensity, cell, keys, cell_keys, slots, bounds, irange):
    """``cell_keys[i]``: the key of point ``i``'s cell (side ``cell`` quanta), ``slots[i]`` its
    slot in the table ``keys`` (only read), −1 where missing; per part ``t`` of the points,
    ``bounds[t]`` = per-axis min then max and ``irange[t]`` = (min, max, 1.0 if every intensity
    is a whole number in [0, 65535] else 0.0, 1.0 if every intensity is finite else 0.0), from
    the values they hold (the int64 extremes, ±inf)."""
    n, inv, mask = q.shape[0], 1.0 / cell, keys.shape[0] - 1
    for t in prange(_PARTS):
        last, h = np.int64(_EMPTY), np.int64(-1)
        x0, y0, z0, x1, y1, z1 = bounds[t, 0], bounds[t, 1], bounds[t, 2], bounds[t, 3], bounds[t, 4], bounds[t, 5]
        i0, i1 = irange[t, 0], irange[t, 1]
        whole, finite = True, True
        for i in range(t * n // _PARTS, (t + 1) * n // _PARTS):
            x, y, z = q[i, 0], q[i, 1], q[i, 2]
            x0, y0, z0, x1, y1, z1 = min(x0, x), min(y0, y), min(z0, z), max(x1, x), max(y1, y), max(z1, z)
            v = np.float32(intensity[i])
            finite &= bool(np.isfinite(intensity[i]))
            i0, i1 = min(i0, v), max(i1, v)
            whole &= bool(v >= 0 and v <= 65535 and np.float32(np.int32(v)) == v)
            k = _cell_key(x, y, z, cell, inv)  # garbage beyond int32 quanta, refused before use
            if k != last:
                h = _probe(keys, k, mask)
                last = k
            cell_keys[i], slots[i] = k, h
        bounds[t, 0], bounds[t, 1], bounds[t, 2], bounds[t, 3], bounds[t, 4], bounds[t, 5] = x0, y0, z0, x1, y1, z1
        irange[t, 0], irange[t, 1] = i0, i1
        irange[t, 2], irange[t, 3] = 1.0 if whole else 0.0, 1.0 if finite else 0.0


@jit
def _slots_kernel(cell_keys, keys, used, max_used, slots):
    """``slots[i]``: the table slot of cell key ``cell_keys[i]``, new cells inserted. Returns
    ``(done, entries used)``; not done when ``max_used`` entries are taken first (grow and rerun)."""
    mask = keys.shape[0] - 1
    last, h = np.int64(_EMPTY), np.int64(-1)
    for i in range(cell_keys.shape[0]):
        k = cell_keys[i]
        if k != last:
            h = _slot(k, mask)
            while keys[h] != k and keys[h] != _EMPTY:
                h = (h + 1) & mask
            if keys[h] == _EMPTY:
                if used >= max_used:
                    return False, used
                keys[h] = k
                used += 1
            last = k
        slots[i] = h
    return True, used


@pjit
def _lookup_kernel_parts(cell_keys, keys, slots):
    """``slots[i]``: the table slot of cell key ``cell_keys[i]``, −1 where the table lacks it
    (the table only read: the parts in parallel)."""
    n, mask = cell_keys.shape[0], keys.shape[0] - 1
    for t in prange(_PARTS):
        last, h = np.int64(_EMPTY), np.int64(-1)
        for i in range(t * n // _PARTS, (t + 1) * n // _PARTS):
            k = cell_keys[i]
            if k != last:
                h = _probe(keys, k, mask)
                last = k
            slots[i] = h


@jit
def _number_kernel(slots, counts, local, first, groups):
    """Count the points per cell (``slots``) and number the frame's cells in order of first
    appearance: ``groups[i]`` is point ``i``'s, ``first[j]`` the slot of the j-th. Returns the
    cells. ``local`` (table-sized, −1) maps slots to numbers; reset it from ``first``."""
    k = 0
    for i in range(slots.shape[0]):
        s = slots[i]
        counts[s] += 1
        if local[s] < 0:
            local[s] = k
            first[k] = s
            k += 1
        groups[i] = local[s]
    return k


@pjit
def _write_kernel(q, intensity, rgb, groups, voxel, cell_bits, words, floats, cursor):
    """The records written grouped by ``groups`` (in input order within a group: a stable
    counting sort over :data:`_PARTS` parts). ``cursor`` (``(_PARTS, groups)``, zeros) ends as
    each part's end within each group (the last row: the groups' ends)."""
    n, inv = q.shape[0], 1.0 / voxel
    for t in prange(_PARTS):
        for i in range(t * n // _PARTS, (t + 1) * n // _PARTS):
            cursor[t, groups[i]] += 1
    at = 0
    for j in range(cursor.shape[1]):
        for t in range(_PARTS):
            c = cursor[t, j]
            cursor[t, j] = at
            at += c
    for t in prange(_PARTS):
        for i in range(t * n // _PARTS, (t + 1) * n // _PARTS):
            p = cursor[t, groups[i]]
            cursor[t, groups[i]] = p + 1
            r, g, b = (rgb[i, 0], rgb[i, 1], rgb[i, 2]) if rgb.shape[0] else (np.uint8(0), np.uint8(0), np.uint8(0))
            write_record(words, floats, p, q[i, 0], q[i, 1], q[i, 2], intensity[i], r, g, b, voxel, inv, cell_bits)


@jit
def _lookup_kernel(run_keys, keys, values, out):
    """``out[j]`` = ``values`` of the slot of cell key ``run_keys[j]`` (in the table)."""
    mask = keys.shape[0] - 1
    for j in range(run_keys.shape[0]):
        out[j] = values[_probe(keys, run_keys[j], mask)]


@jit
def _place_kernel(runs, rank, lo, hi, cell_runs, out):
    """The runs (cell key, records, frame; their records one after the other) whose cell
    ``rank[j]`` is in ``lo..hi-1`` listed in ``out`` (first record, records, frame) cell after
    cell, in record order within a cell (a stable counting sort); ``cell_runs`` (zeros,
    ``hi - lo + 1``) gets each cell's first run."""
    for j in range(runs.shape[0]):
        if lo <= rank[j] < hi:
            cell_runs[rank[j] - lo + 1] += 1
    for c in range(hi - lo):
        cell_runs[c + 1] += cell_runs[c]
    cursor = cell_runs[:-1].copy()
    first = 0
    for j in range(runs.shape[0]):
        c = rank[j] - lo
        if 0 <= c < hi - lo:
            out[cursor[c], 0], out[cursor[c], 1], out[cursor[c], 2] = first, runs[j, 1], runs[j, 2]
            cursor[c] += 1
        first += runs[j, 1]


@jit
def _group_kernel(words, lengths, dest, cursor, out):
    """The runs of records copied to ``out`` from ``cursor[dest]`` on, the cursor advanced."""
    i = 0
    for j in range(lengths.shape[0]):
        p, n = cursor[dest[j]], lengths[j]
        out[p:p + n] = words[i:i + n]
        cursor[dest[j]] += n
        i += n


def _words(records: np.ndarray) -> np.ndarray:
    return records.view(np.int32).reshape(len(records), RECORD_WORDS)


class CellCounter:
    """Points per counting cell (``2**cell_bits`` voxels of ``voxel_q`` quanta a side; a hash
    table of packed cell keys, grown as needed)."""

    def __init__(self, voxel_q: int, cell_bits: int, capacity: int = 1 << 12) -> None:
        self.voxel_q, self.cell_bits = int(voxel_q), int(cell_bits)
        self.cell_q = self.voxel_q << self.cell_bits
        self.keys = np.full(capacity, _EMPTY, np.int64)
        self.counts = np.zeros(capacity, np.int64)
        self._local = np.full(capacity, -1, np.int64)
        self.used = 0

    def scan(self, xyz_q: np.ndarray, intensity: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
        """Of one frame's points (``xyz_q (N, 3)`` int quanta, ``intensity (N,)``): ``(stats,
        cells (2, N) int64)``; ``stats``: ``lo_q``/``hi_q`` (per-axis bounds), ``i_min``/
        ``i_max``, ``i_whole`` (every intensity a whole number in [0, 65535]) and ``finite`` (no
        NaN or infinite intensity); ``cells``: each point's cell key and its slot in the table
        now (−1: a new cell), valid where the positions are (:meth:`fits`). Nothing changes."""
        q = np.ascontiguousarray(xyz_q, np.int64)
        cells = np.empty((2, len(q)), np.int64)
        big = np.iinfo(np.int64).max
        bounds = np.tile(np.array([big, big, big, -big - 1, -big - 1, -big - 1], np.int64), (_PARTS, 1))
        irange = np.tile(np.array([np.inf, -np.inf, 1.0, 1.0]), (_PARTS, 1))
        _scan_kernel(q, np.ascontiguousarray(intensity), np.int64(self.cell_q), self.keys, cells[0], cells[1], bounds,
                     irange)
        stats = {"lo_q": bounds[:, :3].min(axis=0).tolist(), "hi_q": bounds[:, 3:].max(axis=0).tolist(),
                 "i_min": float(irange[:, 0].min()), "i_max": float(irange[:, 1].max()),
                 "i_whole": bool(irange[:, 2].all()), "finite": bool(irange[:, 3].all())}
        return stats, cells

    def pack(self, frame: int, cells: np.ndarray, xyz_q: np.ndarray, intensity: np.ndarray,
             rgb: np.ndarray | None, out: np.ndarray) -> np.ndarray:
        """One frame's points (``xyz_q (N, 3)`` int quanta, |v| < 2**31, their ``cells`` from
        :meth:`scan` just before; ``intensity (N,)``; ``rgb (N, 3) uint8`` or None) counted and
        written to ``out`` (``(N,) RAW``) grouped by cell (in input order within a cell).
        Returns the groups: ``(R, 3) int64`` runs of (cell key, records, ``frame``)."""
        cell_keys, slots = cells
        n = len(cell_keys)
        while True:  # the known cells were looked up by scan; new ones are inserted here
            new = np.flatnonzero(slots < 0)
            inserted = np.empty(len(new), np.int64)
            done, self.used = _slots_kernel(cell_keys[new], self.keys, self.used, len(self.keys) // 2, inserted)
            if done:
                slots[new] = inserted
                break
            self._grow()
            _lookup_kernel_parts(cell_keys, self.keys, slots)  # the table rehashed
        first, groups = np.empty(n, np.int64), np.empty(n, np.int64)
        k = _number_kernel(slots, self.counts, self._local, first, groups)
        self._local[first[:k]] = -1
        colours = np.zeros((0, 3), np.uint8) if rgb is None else np.ascontiguousarray(rgb, np.uint8)
        words = _words(out)
        cursor = np.zeros((_PARTS, k), np.int64)
        _write_kernel(np.ascontiguousarray(xyz_q, np.int64), np.ascontiguousarray(intensity), colours, groups,
                      np.int64(self.voxel_q), np.int64(self.cell_bits), words, words.view(np.float32), cursor)
        ends = cursor[-1]
        return np.column_stack([self.keys[first[:k]], np.diff(ends, prepend=0), np.full(k, frame)])

    def fits(self, lo_q: list[int], hi_q: list[int]) -> bool:
        """Whether positions within ``lo_q..hi_q`` (per axis) have packable cell keys."""
        return all(-_BIAS <= v // self.cell_q < _BIAS for v in (*lo_q, *hi_q))

    def lookup(self, run_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
        """``(R,) int64`` ``values`` (aligned with the table) of the cells ``run_keys`` (counted)."""
        out = np.empty(len(run_keys), np.int64)
        _lookup_kernel(np.ascontiguousarray(run_keys, np.int64), self.keys, values, out)
        return out

    def _grow(self) -> None:
        keys, counts = self.items()
        self.keys = np.full(2 * len(self.keys), _EMPTY, np.int64)
        self.counts = np.zeros(len(self.keys), np.int64)
        self._local = np.full(len(self.keys), -1, np.int64)
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
    def restore(voxel_q: int, cell_bits: int, keys: np.ndarray, counts: np.ndarray) -> "CellCounter":
        counter = CellCounter(voxel_q, cell_bits, 1 << max(12, (2 * len(keys) + 1).bit_length()))
        counter._insert(keys, counts)
        return counter


def world_codes(keys: np.ndarray) -> np.ndarray:
    """``(C,) int64`` Morton codes of packed cell keys' biased coordinates: within any block of
    ``2**k`` cells a side anchored at 0 (``k <= 20``) the cells come in the order of their codes
    in a cube whose corner is on that block grid (:meth:`Cube.around`), each such block a run."""
    biased = cell_coords(np.asarray(keys, np.int64)) + _BIAS
    return morton_codes(biased[:, 0], biased[:, 1], biased[:, 2], 1)


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
        """The smallest cube holding the positions ``lo_q..hi_q`` whose corner is on the grid of
        blocks of ``2**ALIGN_BITS`` counting cells anchored at 0."""
        cell_q = voxel_q << cell_bits
        block_q = cell_q << ALIGN_BITS
        origin = np.floor_divide(lo_q, block_q) * block_q
        cells = int(np.max(np.floor_divide(hi_q, cell_q) - origin // cell_q)) + 1
        depth = cell_bits + max(0, (cells - 1).bit_length())
        if depth > MAX_DEPTH:
            raise ValueError(f"the map spans {cells} cells of {cell_q} quanta: beyond a depth-{MAX_DEPTH} octree of "
                             f"{voxel_q}-quantum voxels; choose a larger voxel")
        x, y, z = (int(v) for v in origin)
        return Cube((x, y, z), int(voxel_q), depth, int(cell_bits))


@dataclass(frozen=True)
class ChunkPlan:
    """Where every record goes: the counted cells ranked in code order, their records placed
    one cell after the other (``cell_starts``, ``(C + 1,) int64``), the chunks as
    ``(level, code prefix, points)`` in code order, chunk ``k`` the cells
    ``chunk_cells[k]..chunk_cells[k + 1] - 1`` (``(K + 1,) int64``); ``rank_of_slot`` gives
    each slot of the counter's table its cell's rank (−1 for an empty slot); the cells'
    Morton codes at their level (``cell_codes``, ``(C,) int64``, ascending) and min corners in
    quanta from the cube's (``cell_xyz``, ``(C, 3) int64``), by rank."""

    chunks: list[tuple[int, int, int]]
    cell_starts: np.ndarray
    chunk_cells: np.ndarray
    rank_of_slot: np.ndarray
    cell_codes: np.ndarray
    cell_xyz: np.ndarray

    def chunk_span(self, k: int) -> tuple[int, int]:
        """Chunk ``k``'s records: ``start, end`` in the placed order."""
        return int(self.cell_starts[self.chunk_cells[k]]), int(self.cell_starts[self.chunk_cells[k + 1]])

    def batches(self, memory_points: int) -> list[tuple[int, int]]:
        """Runs of chunks ``(first, end)`` of at most ``memory_points`` records each (a bigger
        chunk alone)."""
        out: list[tuple[int, int]] = []
        first = 0
        for k in range(1, len(self.chunks) + 1):
            if k == len(self.chunks) or self.chunk_span(k)[1] - self.chunk_span(first)[0] > memory_points:
                out.append((first, k))
                first = k
        return out


def plan_chunks(cube: Cube, counter: CellCounter, chunk_max: int) -> ChunkPlan:
    """Chunks covering the counted cells: an octree node becomes a chunk when it holds at most
    ``chunk_max`` points or is a counting cell."""
    full = np.flatnonzero(counter.keys != _EMPTY)
    cells = cell_coords(counter.keys[full]) - np.array(cube.origin_q, np.int64) // (cube.voxel_q << cube.cell_bits)
    codes = morton_codes(cells[:, 0], cells[:, 1], cells[:, 2], 1)
    order = np.argsort(codes, kind="stable")
    codes, csum = codes[order], np.concatenate([[0], np.cumsum(counter.counts[full][order])]).astype(np.int64)
    top = cube.cell_level
    chunks: list[tuple[int, int, int]] = []
    bounds = [0]

    def visit(level: int, prefix: int, lo: int, hi: int) -> None:
        total = int(csum[hi] - csum[lo])
        if total <= chunk_max or level == top:
            chunks.append((level, prefix, total))
            bounds.append(hi)
            return
        shift = 3 * (top - level - 1)
        child = codes[lo:hi] >> shift
        cuts = np.flatnonzero(np.diff(child)) + 1
        for a, b in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [hi - lo]])):
            visit(level + 1, int(child[a]), lo + int(a), lo + int(b))

    if len(codes):
        visit(0, 0, 0, len(codes))
    rank = np.full(len(counter.keys), -1, np.int64)
    rank[full[order]] = np.arange(len(order))
    corners = cells[order] * (cube.voxel_q << cube.cell_bits)
    return ChunkPlan(chunks, csum, np.array(bounds, np.int64), rank, codes, corners)


def place(runs: np.ndarray, rank: np.ndarray, cells: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Of the records in ``runs`` (``(R, 3) int64`` cell key, records, frame: the records one
    run after the other, run ``j``'s in the cell of rank ``rank[j]``), those in the cells
    ``cells[0]..cells[1] - 1``, cell after cell (record order within a cell): ``(runs (U, 3)
    int64`` first record, records, frame; ``cell_runs (C + 1,) int64``: cell ``cells[0] + c``
    is ``runs[cell_runs[c]:cell_runs[c + 1]]``)."""
    runs, rank = np.ascontiguousarray(runs, np.int64).reshape(-1, RUN_COLUMNS), np.ascontiguousarray(rank, np.int64)
    inside = int(np.count_nonzero((rank >= cells[0]) & (rank < cells[1])))
    out, cell_runs = np.empty((inside, RUN_COLUMNS), np.int64), np.zeros(cells[1] - cells[0] + 1, np.int64)
    _place_kernel(runs, rank, np.int64(cells[0]), np.int64(cells[1]), cell_runs, out)
    return out, cell_runs


def group(records: np.ndarray, lengths: np.ndarray, dest: np.ndarray, cursor: np.ndarray, out: np.ndarray) -> None:
    """Copy the runs of ``records`` (``(N,) RAW``, runs of ``lengths``) to ``out`` (``RAW``),
    each at its destination's ``cursor`` (advanced)."""
    _group_kernel(_words(records), np.ascontiguousarray(lengths, np.int64), np.ascontiguousarray(dest, np.int64),
                  cursor, _words(out))


def _warmup() -> None:
    counter = CellCounter(2, 3)
    v = np.array([[0, 0, 0], [40, 40, 40], [-5, -5, -5]], np.int64)
    rec = np.empty(3, RAW)
    for rgb in (None, np.zeros((3, 3), np.uint8)):
        _, cells = counter.scan(v, np.zeros(3, np.float32))
        runs = counter.pack(0, cells, v, np.zeros(3, np.float32), rgb, rec)
    _lookup_kernel_parts(cells[0], counter.keys, cells[1])
    dest = counter.lookup(runs[:, 0], np.zeros(len(counter.keys), np.int64))
    place(runs, dest, (0, 1))
    group(rec, runs[:, 1], dest, np.zeros(1, np.int64), np.empty(3, RAW))
