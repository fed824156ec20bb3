"""The pool of an out-of-core octree build (:mod:`formats.octree_build`): every input point as a
:data:`~formats.octree_chunks.RAW` record, each frame's grouped by cell, kept until the
chunks are planned, then ordered cell after cell for them.

Segments: the records of whole frames, about ``segment_points`` each, written in order to
``pool-NNNNN.bin`` in the work directory by a background thread while the build goes on,
each followed by its checkpoint (the builder's counts and state), so a resumed build starts
after the last segment written. While the pool holds at most ``memory_points`` records they
are also kept in one array in memory (reserved, touched as it fills): such a pool is never
read back.

Batches: a batch of chunks (:meth:`~formats.octree_chunks.ChunkPlan.batches`, at most
``memory_points`` records) is an array of records and the order of their numbers, cell
after cell (a counting sort: the counts give every cell's place; pool order within a cell,
so every build orders them alike). A pool of one batch is that array (the one in memory, or
the segments read back); a bigger one is first partitioned, block by block, into one file
per batch (``batch-NNNN.bin``), each read back whole for its batch. Arrays read are reused
from batch to batch.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from formats.octree_chunks import RAW, CellCounter, ChunkPlan

BLOCK_POINTS = 1 << 21  # records per block read from a file


def _write_records(path: Path, parts: list[np.ndarray]) -> None:
    """The record arrays ``parts`` one after the other to ``path``, through a temporary file
    and a rename (no fsync: a temporary)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part.view(np.uint8).data)
    os.replace(tmp, path)


def _read_records(path: Path, out: np.ndarray) -> int:
    """Read ``path``'s records into the front of ``out`` (``RAW``); returns their number."""
    with open(path, "rb", buffering=0) as fh:
        got = fh.readinto(out.view(np.uint8).data)
    return got // RAW.itemsize


def _file_blocks(path: Path, buffer: np.ndarray) -> Iterator[np.ndarray]:
    """``path``'s records a block at a time, each read into (a view of) ``buffer``."""
    with open(path, "rb", buffering=0) as fh:
        while got := fh.readinto(buffer.view(np.uint8).data):
            yield buffer[:got // RAW.itemsize]


def _grown(buffer: np.ndarray | None, n: int, dtype: np.dtype) -> np.ndarray:
    """``buffer`` when it holds ``n`` items, else a new array of ``n``."""
    return buffer if buffer is not None and len(buffer) >= n else np.empty(n, dtype)


class Pool:
    """The segments (``segments``: ``file`` names in ``work``, in order) and the one being filled."""

    def __init__(self, work: Path, segments: list[dict], memory_points: int) -> None:
        self.work, self.segments = work, list(segments)
        self._open: list[np.ndarray] = []
        self._memory: np.ndarray | None = None if segments else np.empty(memory_points, RAW)  # None: not all in it
        self._held = 0
        self._records: np.ndarray | None = None  # arrays reused by batches
        self._order: np.ndarray | None = None
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="octree-pool")
        self._pending: list[Future] = []
        weakref.finalize(self, self._writer.shutdown)  # a pool dropped unfinished still writes what it committed

    @property
    def open_points(self) -> int:
        """Records in the segment being filled."""
        return sum(len(r) for r in self._open)

    def reserve(self, n: int) -> np.ndarray:
        """Room for the next ``n`` records of the open segment (``(n,) RAW``, to be filled)."""
        if self._memory is not None and self._held + n <= len(self._memory):
            out = self._memory[self._held:self._held + n]
            self._held += n
        else:
            self._memory = None  # beyond memory_points: the segments are read back from their files
            out = np.empty(n, RAW)
        self._open.append(out)
        return out

    def commit(self, segment: dict, checkpoint: Callable[[], None]) -> None:
        """Close the open segment as ``segment`` (its ``file``); ``checkpoint`` runs once it is
        written (in the writer thread: it must not need the caller's objects to stay
        unchanged)."""
        parts, self._open = self._open, []
        self.segments.append(segment)
        self._raise_failed()
        path = self.work / segment["file"]

        def write() -> None:
            _write_records(path, parts)
            checkpoint()

        self._pending.append(self._writer.submit(write))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending = [f for f in self._pending if not f.done()]
        for f in done:
            f.result()

    def wait(self) -> None:
        """Until every committed segment and its checkpoint are written (raising their error)."""
        for f in self._pending:
            f.result()
        self._pending = []

    def release(self) -> None:
        """Drop the records kept in memory and the arrays batches reuse."""
        self._memory = self._records = self._order = None

    def batch_path(self, b: int) -> Path:
        return self.work / f"batch-{b:04d}.bin"

    def partition(self, counter: CellCounter, batch_of_slot: np.ndarray, n_batches: int) -> None:
        """Append every record to its batch's file (:meth:`batch_path`), block by block, each
        block grouped by batch first (one write per batch and block)."""
        fds = [os.open(self.batch_path(b), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
               for b in range(n_batches)]
        block, grouped = np.empty(BLOCK_POINTS, RAW), np.empty(BLOCK_POINTS, RAW)
        try:
            for seg in self.segments:
                for records in _file_blocks(self.work / seg["file"], block):
                    counts = np.zeros(n_batches, np.int64)
                    counter.count(records, batch_of_slot, counts)
                    starts = np.concatenate([[0], np.cumsum(counts)])
                    counter.place(records, batch_of_slot, starts[:-1].copy(), (0, n_batches), 0, out=grouped)
                    for b in np.flatnonzero(counts):
                        os.write(fds[b], grouped[starts[b]:starts[b + 1]].view(np.uint8).data)
        finally:
            for fd in fds:
                os.close(fd)
        self._memory = None

    def batch(self, counter: CellCounter, plan: ChunkPlan, batches: list[tuple[int, int]], b: int
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(records (R,) RAW, order (M,) int64)`` of batch ``b`` (chunks ``batches[b][0]..
        batches[b][1] - 1``): ``records[order]`` is them cell after cell (chunk ``k`` at
        ``plan.chunk_span(k)`` less the first one's start); from the batch's file or, for one
        batch, the whole pool. Valid until the next call (the arrays are reused)."""
        cells = (int(plan.chunk_cells[batches[b][0]]), int(plan.chunk_cells[batches[b][1]]))
        base = int(plan.cell_starts[cells[0]])
        n = int(plan.cell_starts[cells[1]]) - base
        largest = max(plan.chunk_span(e - 1)[1] - plan.chunk_span(f)[0] for f, e in batches)
        if len(batches) == 1 and self._memory is not None:
            records = self._memory[:self._held]
        else:
            self._records = _grown(self._records, largest, RAW)
            paths = [self.work / seg["file"] for seg in self.segments] if len(batches) == 1 else [self.batch_path(b)]
            got = 0
            for path in paths:
                got += _read_records(path, self._records[got:])
            records = self._records[:got]
        self._order = _grown(self._order, largest, np.dtype(np.int64))
        order = self._order[:n]
        counter.place(records, plan.rank_of_slot, plan.cell_starts[:-1].copy(), cells, base, order=order)
        return records, order
