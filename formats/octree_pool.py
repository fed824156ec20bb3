"""The pool of an out-of-core octree build (:mod:`formats.octree_build`): every input point as a
:data:`~formats.octree_chunks.RAW` record, each frame's grouped by cell, kept until the
chunks are planned, then ordered cell after cell for them.

Segments: the records of whole frames, about ``segment_points`` each, written in order to
``pool-NNNNN.bin`` in the work directory, with their runs of one cell (``pool-NNNNN.runs``:
int64 triples cell key, records, frame), by a background thread while the build goes on,
each followed by its checkpoint (the builder's counts and state), so a resumed build starts
after the last segment written. While the pool holds at most ``memory_points`` records they
are also kept in one array in memory (reserved, touched as it fills): such a pool is never
read back. Beyond it, a segment's frames fill one page-aligned buffer, written straight
from it with ``O_DIRECT`` (:class:`Appender`) and reused.

Batches: a batch of chunks (:meth:`~formats.octree_chunks.ChunkPlan.batches`, at most
``memory_points`` records) is an array of records and their runs of one cell listed cell
after cell (a counting sort of the runs; pool order within a cell, so every build orders
them alike). A pool of one batch is that array (the one in memory, or the segments read
back); a bigger one is first partitioned, segment by segment (those still in memory not
read back): the first two batches into the two arrays that serve the batches in turn (the
first one the memory array, over records already grouped), their chunks handed out as soon
as their records are all grouped; the others into one file each (``batch-NNNN.bin`` and
``.runs``), read back whole, straight into page-aligned arrays, for their batch. The
partition reuses the segment buffers: memory first touched costs more than memory reused.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from formats.octree_chunks import RAW, RUN_COLUMNS, CellCounter, ChunkPlan, group, place

_ALIGN = 4096  # O_DIRECT: buffer address, length and file offset multiples of the block size


class Appender:
    """Appends to the file ``path`` (kept up to byte ``size``, the rest cut) through a
    page-aligned staging buffer of ``stage_bytes``, written with ``O_DIRECT`` where the
    filesystem allows it (no copy into the page cache: a fraction of the CPU time of plain
    writes), else with plain writes; whole blocks of a page-aligned array given at a block
    boundary of the file are written straight from it. :meth:`flush` puts all that was
    appended in the file (its size exact); a partial last block stays staged and is written
    again with what follows. One thread at a time."""

    def __init__(self, path: Path, size: int = 0, stage_bytes: int = 8 << 20) -> None:
        self.path, self.size = path, size
        self._stage = mmap.mmap(-1, stage_bytes)
        self._view = memoryview(self._stage)
        self._array = np.frombuffer(self._stage, np.uint8)  # copies through NumPy run without the GIL
        self._base = size - size % _ALIGN  # file offset of the stage's first byte
        self._fill = size - self._base
        if self._fill:
            with open(path, "rb") as fh:
                fh.seek(self._base)
                self._view[:self._fill] = fh.read(self._fill)
        self._fd = _open_direct(path, os.O_WRONLY | os.O_CREAT)
        os.ftruncate(self._fd, size)

    def write(self, data: np.ndarray) -> None:
        """Append ``data``'s bytes (a C-contiguous array)."""
        view = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if not self._fill and view.ctypes.data % _ALIGN == 0 and len(view) >= _ALIGN:
            whole = len(view) // _ALIGN * _ALIGN
            self._pwrite(view[:whole].data, self._base)
            self._base, self.size, view = self._base + whole, self.size + whole, view[whole:]
        while len(view):
            take = min(len(view), len(self._stage) - self._fill)
            self._array[self._fill:self._fill + take] = view[:take]
            self._fill, self.size, view = self._fill + take, self.size + take, view[take:]
            if self._fill == len(self._stage):
                self._write_stage(len(self._stage))
                self._base, self._fill = self._base + len(self._stage), 0

    def _write_stage(self, n: int) -> None:
        self._pwrite(self._view[:n], self._base)

    def _pwrite(self, data: memoryview, offset: int) -> None:
        done = 0
        while done < len(data):
            try:
                done += os.pwrite(self._fd, data[done:], offset + done)
            except OSError as exc:  # direct I/O refused at the first write: plain writes from now on
                if exc.errno != errno.EINVAL:
                    raise
                os.close(self._fd)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)

    def flush(self) -> None:
        if self._fill:
            self._write_stage(-(-self._fill // _ALIGN) * _ALIGN)
        os.ftruncate(self._fd, self.size)

    def close(self) -> None:
        self.flush()
        os.close(self._fd)
        del self._array
        self._view.release()
        self._stage.close()


def _write_arrays(path: Path, parts: list[np.ndarray]) -> None:
    """The arrays ``parts`` one after the other to ``path``, through a temporary file and a
    rename (no fsync: a temporary)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    out = Appender(tmp)
    for part in parts:
        out.write(part)
    out.close()
    os.replace(tmp, path)


def _open_direct(path: Path, flags: int) -> int:
    """``path`` opened with ``O_DIRECT`` added where the filesystem allows it."""
    try:
        return os.open(path, flags | os.O_CLOEXEC | getattr(os, "O_DIRECT", 0), 0o644)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: no direct I/O on this filesystem (tmpfs...)
            raise
        return os.open(path, flags | os.O_CLOEXEC, 0o644)


def read_into(path: Path, out: np.ndarray) -> int:
    """Read ``path`` into the front of ``out``; returns the items read. With ``O_DIRECT`` where
    allowed (a temporary read once need not pass the page cache): straight into ``out`` when it
    lies page-aligned in an :func:`aligned_empty` mapping with room for the file's last block,
    else through an aligned staging buffer."""
    dest = out.reshape(-1).view(np.uint8)
    size = path.stat().st_size
    if size > len(dest):
        raise ValueError(f"{path}: {size} bytes for a buffer of {len(dest)}")
    fd = _open_direct(path, os.O_RDONLY)
    got = 0
    try:
        if (direct := _direct_view(out, -(-size // _ALIGN) * _ALIGN)) is not None:
            while n := os.preadv(fd, [direct[got:got + (64 << 20)]], got):
                got += n
            return got // out.itemsize
        stage = mmap.mmap(-1, 8 << 20)
        staged = np.frombuffer(stage, np.uint8)
        try:
            while n := os.preadv(fd, [stage], got):
                dest[got:got + n] = staged[:n]  # a NumPy copy: without the GIL
                got += n
        finally:
            del staged
            stage.close()
    finally:
        os.close(fd)
    return got // out.itemsize


def aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """``(n,)`` uninitialised array on its own page-aligned anonymous mapping, a page of slack
    after it (:func:`read_into` reads whole blocks straight into it), huge pages asked for."""
    nbytes = n * dtype.itemsize
    buffer = mmap.mmap(-1, nbytes + _ALIGN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, np.uint8, nbytes).view(dtype)


def _mapping(array: np.ndarray) -> mmap.mmap | None:
    """The :func:`aligned_empty` mapping under ``array`` (a view of one), else None."""
    base = array.base
    while isinstance(base, (np.ndarray, memoryview)):
        base = base.base if isinstance(base, np.ndarray) else base.obj
    return base if isinstance(base, mmap.mmap) else None


def _direct_view(out: np.ndarray, nbytes: int) -> memoryview | None:
    """``nbytes`` of memory from ``out``'s first byte as a byte view, where ``out`` starts on a
    page of an :func:`aligned_empty` mapping that holds them; else None."""
    base = _mapping(out)
    if base is None or out.ctypes.data % _ALIGN:
        return None
    start = out.ctypes.data - np.frombuffer(base, np.uint8, 1).ctypes.data
    return memoryview(base)[start:start + nbytes] if start + nbytes <= len(base) else None


def _read_runs(path: Path) -> np.ndarray:
    runs = np.empty((path.stat().st_size // (8 * RUN_COLUMNS), RUN_COLUMNS), np.int64)
    read_into(path, runs)
    return runs


def _grown(buffer: np.ndarray | None, n: int, dtype: np.dtype) -> np.ndarray:
    """``buffer`` when it holds ``n`` items, else a new array of ``n``."""
    return buffer if buffer is not None and len(buffer) >= n else aligned_empty(n, dtype)


def _largest(plan: ChunkPlan, batches: list[tuple[int, int]]) -> int:
    """Records of the largest batch."""
    return max(plan.chunk_span(e - 1)[1] - plan.chunk_span(f)[0] for f, e in batches)


def runs_path(records: Path) -> Path:
    return records.with_suffix(".runs")


def _drain(pending: list[Future], writer: ThreadPoolExecutor) -> None:
    """Wait for the committed writes of a dropped pool, then let its writer thread end by itself.
    No thread is joined: a finalizer may run inside any thread's start, where joining deadlocks."""
    for f in pending:
        f.exception()  # its error goes with the pool
    writer.shutdown(wait=False)


@dataclass
class _Kept:
    """A kept batch's records (``records[:held]``, ``expected`` in all) and runs, as the partition
    groups them (``changed`` notified at each segment's and at its end: ``over``)."""

    records: np.ndarray
    expected: int
    held: int = 0
    runs: list[np.ndarray] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)
    over: bool = False


class Pool:
    """The segments (``segments``: ``file`` names in ``work``, in order) and the one being filled."""

    def __init__(self, work: Path, segments: list[dict], memory_points: int, segment_points: int) -> None:
        self.work, self.segments = work, list(segments)
        self._segment_points = segment_points
        self._open: list[np.ndarray] = []
        self._open_runs: list[np.ndarray] = []
        self._memory: np.ndarray | None = None if segments else aligned_empty(memory_points, RAW)  # None: not all in it
        self._memory_runs: list[np.ndarray] = []
        self._held = 0
        self._records: list[np.ndarray | None] = [None, None]  # the arrays batches reuse, in turn
        self._turn = 0
        self._kept: dict[int, _Kept] = {}  # batches grouped in memory by the partition
        self._in_memory = 0  # the pool's first records, still in _records[0] once it outgrew memory_points
        self._buffer: np.ndarray | None = None  # beyond memory_points: the open segment's frames, one after the
        self._buffered = 0  # other (these first ones), written straight from it
        self._spare: list[np.ndarray] = []  # segment buffers written out, to reuse
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="octree-pool")
        self._pending: list[Future] = []
        weakref.finalize(self, _drain, self._pending, self._writer)  # a pool dropped unfinished: its writes done

    @property
    def open_points(self) -> int:
        """Records in the segment being filled."""
        return sum(len(r) for r in self._open)

    def reserve(self, n: int) -> np.ndarray:
        """Room for the next ``n`` records of the open segment (``(n,) RAW``, to be filled,
        then their runs given to :meth:`filled`)."""
        if self._memory is not None and self._held + n <= len(self._memory):
            out = self._memory[self._held:self._held + n]
            self._held += n
        else:
            if self._memory is not None:  # beyond memory_points: segments are read back from files (but for
                self._records[0], self._in_memory = self._memory, self._held  # those still here), batches too
            self._memory, self._memory_runs = None, []
            if self._buffer is None and not self._open:
                self._buffer = self._spare.pop() if self._spare else aligned_empty(self._segment_points + (1 << 20),
                                                                                  RAW)
            start = self.open_points
            if self._buffer is not None and self._buffered == len(self._open) and start + n <= len(self._buffer):
                out = self._buffer[start:start + n]  # every open frame is in the buffer, one after the other
                self._buffered += 1
            else:  # a frame beyond the buffer: it and those after it on their own
                out = np.empty(n, RAW)
        self._open.append(out)
        return out

    def filled(self, runs: np.ndarray) -> None:
        """The runs of the records last reserved (``(R, 3) int64``: cell key, records, frame)."""
        self._open_runs.append(runs)
        if self._memory is not None:
            self._memory_runs.append(runs)

    def commit(self, segment: dict, checkpoint: Callable[[], None]) -> None:
        """Close the open segment as ``segment`` (its ``file``); ``checkpoint`` runs once it is
        written (in the writer thread: it must not need the caller's objects to stay
        unchanged)."""
        parts, runs, buffer = self._open, self._open_runs, self._buffer
        if buffer is not None:  # its frames as one array, written straight from it
            parts = [buffer[:sum(len(r) for r in parts[:self._buffered])], *parts[self._buffered:]]
        self._open, self._open_runs, self._buffer, self._buffered = [], [], None, 0
        self.segments.append(segment)
        self._raise_failed()
        path, spare = self.work / segment["file"], self._spare  # not self: a dropped pool's writer ends

        def write() -> None:
            _write_arrays(runs_path(path), runs)
            _write_arrays(path, parts)
            if buffer is not None:
                spare.append(buffer)
            checkpoint()

        self._pending.append(self._writer.submit(write))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending[:] = [f for f in self._pending if not f.done()]  # in place: the finalizer holds the list
        for f in done:
            f.result()

    def close(self) -> None:
        """Until every committed segment and its checkpoint are written (raising their error);
        no segment follows (the segment buffers are kept for :meth:`partition`)."""
        for f in self._pending:
            f.result()
        self._pending.clear()

    def _scratch(self, n: int) -> np.ndarray:
        """``(n,) RAW`` page-aligned: a segment buffer written out where one holds ``n`` (its
        pages already in), else a new array."""
        return _grown(self._spare.pop() if self._spare else None, n, RAW)

    def release(self) -> None:
        """Drop the records kept in memory and the arrays batches reuse."""
        self._memory, self._memory_runs, self._records, self._spare, self._kept = None, [], [None, None], [], {}

    def drop_segments(self) -> None:
        """Delete the segments' files (once partitioned: batches read their own files)."""
        for seg in self.segments:
            for path in (self.work / seg["file"], runs_path(self.work / seg["file"])):
                path.unlink(missing_ok=True)

    def batch_path(self, b: int) -> Path:
        return self.work / f"batch-{b:04d}.bin"

    def keep(self, plan: ChunkPlan, batches: list[tuple[int, int]], kept: list[int]) -> None:
        """Have the next :meth:`partition` keep the batches ``kept`` (at most two, in order) in
        memory, in the two arrays batches use in turn: :meth:`kept_parts` (from another thread)
        takes their chunks as their records are all grouped."""
        largest = _largest(plan, batches)
        for turn, b in enumerate(kept):
            if turn == 0 and (self._records[0] is None or len(self._records[0]) < largest):
                self._in_memory = 0  # a new array: nothing to read from
            # the first batch's records overwrite the pool's first records only where these were grouped:
            # no more of it is grouped than of the pool, segment after segment
            self._records[turn] = array = _grown(self._records[turn], largest, RAW)
            self._kept[b] = _Kept(array, plan.chunk_span(batches[b][1] - 1)[1] - plan.chunk_span(batches[b][0])[0])
        self._turn = len(kept) - 1  # the next batch read goes to the first kept batch's array

    def partition(self, counter: CellCounter, batch_of_slot: np.ndarray, n_batches: int, write: list[int]) -> None:
        """Append every record of the batches ``write`` to its batch's file (:meth:`batch_path`),
        segment by segment, each grouped by batch first (one write per batch and segment, runs
        kept whole); the next segment is read and the last one written while one is grouped.
        Segments still in memory are not read back. The batches :meth:`keep` named are grouped
        in memory, the others (already built) dropped; the caller keeps the segments until the
        kept ones are built."""
        kept = dict(self._kept)
        try:
            self._partition(counter, batch_of_slot, n_batches, write, kept)
        finally:
            for one in kept.values():
                with one.changed:  # complete, or never: kept_parts() tells which
                    one.over = True
                    one.changed.notify_all()

    def _partition(self, counter: CellCounter, batch_of_slot: np.ndarray, n_batches: int, write: list[int],
                   kept: dict[int, "_Kept"]) -> None:
        files = {b: Appender(self.batch_path(b), stage_bytes=4 << 20) for b in write}
        run_files = {b: Appender(runs_path(self.batch_path(b)), stage_bytes=1 << 16) for b in write}
        largest = max(seg["points"] for seg in self.segments)
        blocks, grouped = [self._scratch(largest) for _ in range(2)], [self._scratch(largest) for _ in range(2)]

        ends = np.cumsum([seg["points"] for seg in self.segments])

        def load(k: int) -> tuple[np.ndarray, np.ndarray]:
            path = self.work / self.segments[k]["file"]
            if ends[k] <= self._in_memory and self._records[0] is not None:  # still in memory: not read back
                return self._records[0][ends[k] - self.segments[k]["points"]:ends[k]], _read_runs(runs_path(path))
            return blocks[k % 2][:read_into(path, blocks[k % 2])], _read_runs(runs_path(path))

        def store(b: int, records: np.ndarray, runs: np.ndarray) -> None:
            if b in files:
                files[b].write(records)
                run_files[b].write(runs)
            elif (one := kept.get(b)) is not None:
                one.records[one.held:one.held + len(records)] = records
                with one.changed:
                    one.runs.append(runs)
                    one.held += len(records)
                    one.changed.notify_all()

        def store_all(parts: list[tuple[int, np.ndarray, np.ndarray]]) -> None:
            for part in parts:
                store(*part)

        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(1) as writer:
            loading = reader.submit(load, 0)
            storing: list[Future | None] = [None, None]
            for k in range(len(self.segments)):
                records, runs = loading.result()
                if k + 1 < len(self.segments):
                    loading = reader.submit(load, k + 1)
                if (previous := storing[k % 2]) is not None:
                    previous.result()  # grouped[k % 2] written: free again
                dest = counter.lookup(runs[:, 0], batch_of_slot)
                starts = np.concatenate([[0], np.cumsum(np.bincount(dest, runs[:, 1], n_batches))]).astype(np.int64)
                group(records, runs[:, 1], dest, starts[:-1].copy(), grouped[k % 2])
                storing[k % 2] = writer.submit(store_all, [
                    (int(b), grouped[k % 2][starts[b]:starts[b + 1]], runs[dest == b])
                    for b in np.flatnonzero(np.diff(starts))])
            for pending in storing:
                if pending is not None:
                    pending.result()
        for f in [*files.values(), *run_files.values()]:
            f.close()
        self._memory, self._memory_runs, self._in_memory = None, [], 0

    def keeps(self, b: int) -> bool:
        """Whether batch ``b`` comes from the partition's memory (:meth:`kept_parts`)."""
        return b in self._kept

    def kept_parts(self, counter: CellCounter, plan: ChunkPlan, batches: list[tuple[int, int]], b: int
                   ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray, np.ndarray]]:
        """Batch ``b`` kept by the partition (:meth:`keep`), a part as soon as the records of
        its chunks are all grouped (the segments' order is the drive's: a place's chunks are
        whole once the last frame seeing it is): ``(first chunk, end chunk, records, runs,
        cell_runs)``, chunks ``first..end - 1`` as :meth:`batch` gives them, in order. Raises
        RuntimeError when the partition ends before the batch is whole (its own error says why)."""
        kept, (first, end) = self._kept[b], batches[b]
        need = np.diff(plan.cell_starts[plan.chunk_cells[first:end + 1]])  # records per chunk
        have = np.zeros(end - first, np.int64)
        ranks: list[np.ndarray] = []
        done = seen = 0  # chunks given, runs arrays counted
        while done < end - first:
            with kept.changed:
                kept.changed.wait_for(lambda: len(kept.runs) > seen or kept.over)
                new, over = kept.runs[seen:], kept.over
            seen += len(new)
            for runs in new:
                ranks.append(counter.lookup(runs[:, 0], plan.rank_of_slot))
                chunk = np.searchsorted(plan.chunk_cells, ranks[-1], "right") - 1 - first
                have += np.bincount(chunk, runs[:, 1], end - first).astype(np.int64)
            ready = done
            while ready < end - first and have[ready] == need[ready]:
                ready += 1
            if ready > done:
                cells = (int(plan.chunk_cells[first + done]), int(plan.chunk_cells[first + ready]))
                yield (first + done, first + ready, kept.records,
                       *place(np.concatenate(kept.runs[:seen]), np.concatenate(ranks), cells))
                done = ready
            elif over and not new:
                raise RuntimeError(f"the partition stopped at {kept.held} of batch {b}'s {kept.expected} records")

    def batch(self, counter: CellCounter, plan: ChunkPlan, batches: list[tuple[int, int]], b: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(records (R,) RAW, runs (U, 3) int64, cell_runs (C + 1,) int64)`` of batch ``b``
        (chunks ``batches[b][0]..batches[b][1] - 1``, cells ``plan.chunk_cells[batches[b][0]]``
        on): its records' runs cell after cell (:func:`~formats.octree_chunks.place`); from the
        batch's file or, for one batch, the whole pool (batches kept by the partition:
        :meth:`kept_parts`). Two batches may be held at once (one loaded while the other is
        used): each call's records are valid until the call after next (which reuses their
        array)."""
        cells = (int(plan.chunk_cells[batches[b][0]]), int(plan.chunk_cells[batches[b][1]]))
        if len(batches) == 1 and self._memory is not None:
            records = self._memory[:self._held]
            runs = np.concatenate(self._memory_runs) if self._memory_runs else np.zeros((0, RUN_COLUMNS), np.int64)
        else:
            self._turn ^= 1
            buffer = self._records[self._turn] = _grown(self._records[self._turn], _largest(plan, batches), RAW)
            paths = [self.work / seg["file"] for seg in self.segments] if len(batches) == 1 else [self.batch_path(b)]
            got = 0
            for path in paths:
                got += read_into(path, buffer[got:])
            records = buffer[:got]
            runs = np.concatenate([_read_runs(runs_path(p)) for p in paths])
        return (records, *place(runs, counter.lookup(runs[:, 0], plan.rank_of_slot), cells))
