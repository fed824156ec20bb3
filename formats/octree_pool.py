"""The pool of an out-of-core octree build (:mod:`formats.octree_build`): every input point as a
:data:`~formats.octree_chunks.RAW` record, each frame's grouped by cell, kept until the
chunks are planned, then ordered cell after cell for them.

Segments: the records of whole frames, about ``segment_points`` each, written to
``pool-NNNNN.bin`` in the work directory with their runs of one cell (``pool-NNNNN.runs``:
int64 triples cell key, records, frame), the runs in the order of their cells' codes on the
world grid (:func:`~formats.octree_chunks.world_codes`; frame order within a cell), by a
background thread while the build goes on, each followed by its checkpoint (the builder's
counts and state), so a resumed build starts after the last segment written. While the pool
holds at most ``memory_points`` records they are also kept, in frame order, in one array in
memory (reserved, touched as it fills): such a pool is never read back. Beyond it, a
segment's frames fill one page-aligned buffer, reused once written. At most
:data:`_WRITES` segments are being written or wait for the writer thread (which yields the
cores to the caller's threads); a next one waits for the first of them.

Batches: a batch of chunks (:meth:`~formats.octree_chunks.ChunkPlan.batches`, at most
``batch_points`` records) is an array of records and their runs of one cell listed cell
after cell (a counting sort of the runs; pool order within a cell, so every build orders
them alike). A pool all in memory is that array for every batch; else the batches are read
from the segments, each batch's runs of a segment in a few ranges of it: the cube's corner
lies on the world grid's blocks of ``2**ALIGN_BITS`` cells, so its chunks are whole blocks
or lie in one, in the order the segment lists them. A range is read from the block holding
its first record on, with ``O_DIRECT`` straight into a page of the batch's array (the
records read along with it are left out). :data:`ARRAYS` arrays serve the batches in turn.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import sys
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from formats.errors import FormatError
from formats.octree_chunks import RAW, RUN_COLUMNS, CellCounter, ChunkPlan, group, place, world_codes

ARRAYS = 3  # batch arrays: a batch is read while the two before it are built
_WRITES = 2  # segments being written or waiting at once
ALIGN = 4096  # O_DIRECT: buffer address, length and file offset multiples of the block size
_BLOCK = ALIGN // RAW.itemsize  # records a block
_FALLOC_PUNCH_HOLE_KEEP_SIZE = 0x02 | 0x01


class Appender:
    """Appends to the file ``path`` (kept up to byte ``size``, the rest cut) through a
    page-aligned staging buffer of ``stage_bytes``, written with ``O_DIRECT`` where the
    filesystem allows it (no copy into the page cache: a fraction of the CPU time of plain
    writes), else with plain writes; whole blocks of a page-aligned array given at a block
    boundary of the file are written straight from it. :meth:`flush` puts all that was
    appended in the file (its size exact); a partial last block stays staged and is written
    again with what follows. :meth:`plain` turns to plain writes. One thread at a time."""

    def __init__(self, path: Path, size: int = 0, stage_bytes: int = 8 << 20) -> None:
        self.path, self.size = path, size
        self._stage = mmap.mmap(-1, stage_bytes)
        self._view = memoryview(self._stage)
        self._array = np.frombuffer(self._stage, np.uint8)  # copies through NumPy run without the GIL
        self._base = size - size % ALIGN  # file offset of the stage's first byte
        self._fill = size - self._base
        if self._fill:
            with open(path, "rb") as fh:
                fh.seek(self._base)
                self._view[:self._fill] = fh.read(self._fill)
        self._fd = _open_direct(path, os.O_WRONLY | os.O_CREAT)
        self._plain = False
        os.ftruncate(self._fd, size)

    def write(self, data: np.ndarray) -> None:
        """Append ``data``'s bytes (a C-contiguous array)."""
        view = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
        if self._plain:
            self._pwrite(view.data, self.size)
            self.size += len(view)
            return
        if not self._fill and view.ctypes.data % ALIGN == 0 and len(view) >= ALIGN:
            whole = len(view) // ALIGN * ALIGN
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
                self._reopen()

    def _reopen(self) -> None:
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)

    def plain(self) -> None:
        """From now on, plain writes straight from the arrays given, through the page cache:
        they return once copied, where direct ones wait for the disk (for the last bytes of
        a file, when nothing else is left to overlap with the writing)."""
        self.flush()
        self._reopen()
        self._plain, self._fill = True, 0  # nothing staged from now on

    def flush(self) -> None:
        """Write what is staged; only its partial last block stays staged (to be written again
        with what follows), so a flush rewrites at most one block."""
        if self._fill:
            self._write_stage(-(-self._fill // ALIGN) * ALIGN)
            whole = self._fill // ALIGN * ALIGN
            self._array[:self._fill - whole] = self._array[whole:self._fill]
            self._base, self._fill = self._base + whole, self._fill - whole
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


def read_range(path: Path, out: np.ndarray, start: int = 0) -> int:
    """Items ``start..`` of the file ``path`` (of ``out``'s dtype) read into ``out``, as many as
    it holds (fewer where the file ends); returns the items read. With ``O_DIRECT`` where allowed
    (a temporary read once need not pass the page cache): straight into ``out`` when it lies
    page-aligned in an :func:`aligned_empty` mapping with room for whole blocks and the range
    starts on a block, else through an aligned staging buffer."""
    dest = out.reshape(-1).view(np.uint8)
    offset, want = start * out.itemsize, len(dest)
    fd = _open_direct(path, os.O_RDONLY)
    got = 0
    try:
        if offset % ALIGN == 0 and (direct := _direct_view(out, -(-want // ALIGN) * ALIGN)) is not None:
            while got < want and (n := os.preadv(fd, [direct[got:got + (64 << 20)]], offset + got)):
                got += n
            return min(got, want) // out.itemsize
        stage = mmap.mmap(-1, 8 << 20)
        staged = np.frombuffer(stage, np.uint8)
        skip, at = offset % ALIGN, offset - offset % ALIGN  # staged reads start on a block
        try:
            while got < want and (n := os.preadv(fd, [stage], at)) > skip:
                take = min(n - skip, want - got)
                dest[got:got + take] = staged[skip:skip + take]  # a NumPy copy: without the GIL
                got, at, skip = got + take, at + n, 0
        finally:
            del staged
            stage.close()
    finally:
        os.close(fd)
    return got // out.itemsize


def aligned_empty(n: int, dtype: np.dtype) -> np.ndarray:
    """``(n,)`` uninitialised array on its own page-aligned anonymous mapping, a page of slack
    after it (:func:`read_range` reads whole blocks straight into it), huge pages asked for."""
    nbytes = n * dtype.itemsize
    buffer = mmap.mmap(-1, nbytes + ALIGN, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
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
    if base is None or out.ctypes.data % ALIGN:
        return None
    start = out.ctypes.data - np.frombuffer(base, np.uint8, 1).ctypes.data
    return memoryview(base)[start:start + nbytes] if start + nbytes <= len(base) else None


def _read_runs(path: Path) -> np.ndarray:
    size = path.stat().st_size
    if size % (8 * RUN_COLUMNS):
        raise FormatError(path, size - size % (8 * RUN_COLUMNS), f"whole runs of {RUN_COLUMNS} int64")
    n = size // (8 * RUN_COLUMNS)
    runs = aligned_empty(n * RUN_COLUMNS, np.dtype(np.int64)).reshape(n, RUN_COLUMNS)  # read straight into it
    if read_range(path, runs) != runs.size:
        raise OSError(f"{path}: read short")
    return runs


def _with_starts(runs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A segment's runs and where each starts in its records."""
    return runs, np.concatenate([[0], np.cumsum(runs[:, 1])])


def _grown(buffer: np.ndarray | None, n: int, dtype: np.dtype) -> np.ndarray:
    """``buffer`` when it holds ``n`` items, else a new array of ``n``."""
    return buffer if buffer is not None and len(buffer) >= n else aligned_empty(n, dtype)


def _punch_hole(path: Path, offset: int, length: int) -> None:
    """Free the bytes ``offset..offset + length`` of ``path`` (its size kept) where Linux's
    ``fallocate`` can (they read as zeros), else nothing."""
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        libc.fallocate(fd, _FALLOC_PUNCH_HOLE_KEEP_SIZE, offset, length)  # an error: the space stays till the end
    finally:
        os.close(fd)


def _batch_array(memory_points: int) -> np.ndarray:
    """An array for a batch of ``memory_points`` records read as ranges: room for the blocks
    read along with them (a batch spans far fewer than 4096 ranges; a bigger one gets a new
    array)."""
    return aligned_empty(memory_points + (1 << 20), RAW)


def _filler(n: int) -> np.ndarray:
    """A run of ``n`` records of no cell: read along with a batch's records, left out."""
    return np.array([[0, n, 0]], np.int64)


def runs_path(records: Path) -> Path:
    return records.with_suffix(".runs")


def _background() -> None:
    """This thread yields to the others (it runs where they leave a core idle), where the OS allows."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _drain(pending: list[Future], writer: ThreadPoolExecutor) -> None:
    """Wait for the committed writes of a dropped pool, then let its writer thread end by itself.
    No thread is joined: a finalizer may run inside any thread's start, where joining deadlocks."""
    for f in pending:
        f.exception()  # its error goes with the pool
    writer.shutdown(wait=False)


class Pool:
    """The segments (``segments``: ``file`` names in ``work``, in order) and the one being filled."""

    def __init__(self, work: Path, segments: list[dict], memory_points: int, segment_points: int,
                 batch_points: int) -> None:
        self.work, self.segments = work, list(segments)
        self._segment_room = segment_points + (1 << 20)  # records a segment buffer holds: its last frame goes past
        self._open: list[np.ndarray] = []
        self._open_runs: list[np.ndarray] = []
        self._memory_points, self._batch_points = memory_points, batch_points
        self._memory: np.ndarray | None = None if segments else _batch_array(memory_points)  # None: not all in it
        self._memory_runs: list[np.ndarray] = []
        self._held = 0
        self._records: list[np.ndarray | None] = [None] * ARRAYS  # the arrays batches reuse, in turn
        self._turn = ARRAYS - 1  # the first batch read goes to array 0: the memory array, its pages in
        self._runs: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # segments' runs (and starts): written or read
        self._ranks: tuple[ChunkPlan, list[np.ndarray]] | None = None  # their cells' ranks in a plan
        self._spans: dict[int, list[tuple[int, int, int]]] = {}  # each batch read: (segment, first, end record)
        self._buffer: np.ndarray | None = None  # beyond memory_points: the open segment's frames, one after the
        self._buffered = 0  # other (these first ones), written straight from it
        self._spare: list[np.ndarray] = []  # segment buffers written out, to reuse
        self._ordered: list[np.ndarray | None] = [None]  # the writer's: a segment's records in world order
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="octree-pool", initializer=_background)
        self._pending: list[Future] = []
        weakref.finalize(self, _drain, self._pending, self._writer)  # a pool dropped unfinished: its writes done

    @property
    def open_points(self) -> int:
        """Records in the segment being filled."""
        return sum(len(r) for r in self._open)

    def reserve(self, n: int) -> np.ndarray:
        """Room for the next ``n`` records of the open segment (``(n,) RAW``, to be filled,
        then their runs given to :meth:`filled`)."""
        if self._memory is not None and self._held + n <= self._memory_points:
            out = self._memory[self._held:self._held + n]
            self._held += n
        else:
            if self._records[1] is None:  # beyond memory_points: batches are read from the segments' files
                self._carve()
            self._memory, self._memory_runs = None, []
            if self._buffer is None and not self._open:
                self._buffer = self._spare.pop() if self._spare else aligned_empty(self._segment_room, RAW)
            start = self.open_points
            if self._buffer is not None and self._buffered == len(self._open) and start + n <= len(self._buffer):
                out = self._buffer[start:start + n]  # every open frame is in the buffer, one after the other
                self._buffered += 1
            else:  # a frame beyond the buffer: it and those after it on their own
                out = np.empty(n, RAW)
        self._open.append(out)
        return out

    def _carve(self) -> None:
        """The batch arrays made (the memory array the first one) and the others cut into the
        segment buffers and the writer's sorting buffer: the pages these touch are in when the
        batches come (memory first touched costs more than memory reused)."""
        others = [_batch_array(self._batch_points) for _ in range(ARRAYS - 1)]
        self._records = [self._memory if self._memory is not None else _batch_array(self._batch_points), *others]
        step = self._segment_room
        parts = [a[i:i + step] for a in others for i in range(0, len(a) - step + 1, step)]
        if parts:
            self._ordered[0] = parts.pop()
        self._spare += parts

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
        while len(self._pending) >= _WRITES:  # a writer behind holds the frames back: memory stays bounded
            self._pending[0].exception()
            self._raise_failed()
        path, spare, ordered = self.work / segment["file"], self._spare, self._ordered  # not self: a dropped
        kept, k = self._runs, len(self.segments) - 1  # pool's writer ends

        def write() -> None:
            records = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, RAW)
            cell_runs = np.concatenate(runs) if runs else np.zeros((0, RUN_COLUMNS), np.int64)
            order = np.argsort(world_codes(cell_runs[:, 0]), kind="stable")
            dest = np.empty(len(order), np.int64)
            dest[order] = np.arange(len(order))
            listed = cell_runs[order]
            ordered[0] = out = _grown(ordered[0], len(records), RAW)
            group(records, cell_runs[:, 1], dest, np.concatenate([[0], np.cumsum(listed[:, 1])[:-1]]), out)
            _write_arrays(runs_path(path), [listed])
            _write_arrays(path, [out[:len(records)]])
            kept[k] = _with_starts(listed)  # the batches need them: not read back
            if buffer is not None:
                spare.append(buffer)
            checkpoint()

        self._pending.append(self._writer.submit(write))

    def _raise_failed(self) -> None:
        done = [f for f in self._pending if f.done()]
        self._pending[:] = [f for f in self._pending if f not in done]  # in place: the finalizer holds the list
        for f in done:
            f.result()

    def close(self) -> None:
        """No segment follows (the segment buffers are let go once written); the writes go on
        (:meth:`sync`)."""
        self._spare = []

    def sync(self, quiet: bool = False) -> None:
        """Until every committed segment and its checkpoint are written (raising their error,
        unless ``quiet``: a build failing for another reason)."""
        for f in self._pending:
            f.exception() if quiet else f.result()
        self._pending.clear()

    def release(self) -> None:
        """Drop the records kept in memory and the arrays batches reuse."""
        self._memory, self._memory_runs, self._records, self._runs, self._ranks = None, [], [None] * ARRAYS, {}, None

    def free_batch(self, b: int) -> None:
        """Give back the disk space of the whole blocks of the segments that batch ``b`` alone
        used (its chunks all built: no build reads them again), where the filesystem can:
        deleting a file at the end then has little left to free."""
        for k, first, end in self._spans.pop(b, []):
            start, stop = -(-first // _BLOCK) * _BLOCK * RAW.itemsize, end // _BLOCK * _BLOCK * RAW.itemsize
            if stop > start:
                _punch_hole(self.work / self.segments[k]["file"], start, stop - start)

    def drop_segments(self) -> None:
        """Delete the segments' files (every chunk built from them)."""
        for seg in self.segments:
            for path in (self.work / seg["file"], runs_path(self.work / seg["file"])):
                path.unlink(missing_ok=True)

    def batch(self, counter: CellCounter, plan: ChunkPlan, batches: list[tuple[int, int]], b: int
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(records (R,) RAW, runs (U, 3) int64, cell_runs (C + 1,) int64)`` of batch ``b``
        (chunks ``batches[b][0]..batches[b][1] - 1``, cells ``plan.chunk_cells[batches[b][0]]``
        on): its records' runs cell after cell (:func:`~formats.octree_chunks.place`); from the
        pool in memory when it all is (no copy), else the batch's ranges of every segment.
        :data:`ARRAYS` batches may be held at once (the next ones read while one is used): each
        call's records are valid until the :data:`ARRAYS`-th call after it (which reuses their
        array)."""
        cells = (int(plan.chunk_cells[batches[b][0]]), int(plan.chunk_cells[batches[b][1]]))
        if self._memory is not None:
            if self._ranks is None or self._ranks[0] is not plan:  # the runs' cells' ranks, once per plan
                runs = np.concatenate(self._memory_runs) if self._memory_runs else np.zeros((0, RUN_COLUMNS), np.int64)
                self._memory_runs = [runs]
                self._ranks = plan, [counter.lookup(runs[:, 0], plan.rank_of_slot)]
            return (self._memory[:self._held], *place(self._memory_runs[0], self._ranks[1][0], cells))
        self.sync()  # the files whole, and the buffers they were written from (parts of the batch arrays) free
        if self._ranks is None or self._ranks[0] is not plan:  # each segment's cells' ranks, once per plan
            self._ranks = plan, [counter.lookup(self._segment(k)[0][:, 0], plan.rank_of_slot)
                                 for k in range(len(self.segments))]
        reads = []  # (segment, first run, end run, first record, end record) of each span of the batch's runs
        for k, rank in enumerate(self._ranks[1]):
            inside = np.concatenate([[False], (rank >= cells[0]) & (rank < cells[1]), [False]])
            edges = np.flatnonzero(inside[1:] != inside[:-1])
            ends = self._segment(k)[1]
            reads += [(k, a, z, int(ends[a]), int(ends[z])) for a, z in zip(edges[::2], edges[1::2])]
        self._spans[b] = [(k, first, end) for k, _, _, first, end in reads]
        self._turn = (self._turn + 1) % ARRAYS
        blocks = [(first // _BLOCK * _BLOCK, -(-end // _BLOCK) * _BLOCK) for *_, first, end in reads]
        size = sum(stop - start + _BLOCK for start, stop in blocks)  # a block more: each span starts at a page
        buffer = self._records[self._turn] = _grown(self._records[self._turn], size, RAW)
        got, parts, ranks = 0, [], []
        for (k, a, z, first, end), (start, stop) in zip(reads, blocks):  # from the block holding its first record
            at = -(-got // _BLOCK) * _BLOCK
            path = self.work / self.segments[k]["file"]
            n = read_range(path, buffer[at:at + stop - start], start)
            if start + n < end:
                raise FormatError(path, (start + n) * RAW.itemsize, f"pool records up to {end} (its runs list them)")
            parts += [_filler(at - got + first - start), self._segment(k)[0][a:z], _filler(start + n - end)]
            ranks += [np.full(1, -1), self._ranks[1][k][a:z], np.full(1, -1)]
            got = at + n
        if not parts:
            return buffer[:0], np.zeros((0, RUN_COLUMNS), np.int64), np.zeros(cells[1] - cells[0] + 1, np.int64)
        return (buffer[:got], *place(np.concatenate(parts), np.concatenate(ranks), cells))

    def _segment(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Segment ``k``'s runs and where they start (read once)."""
        if k not in self._runs:  # written before a resume
            self._runs[k] = _with_starts(_read_runs(runs_path(self.work / self.segments[k]["file"])))
        return self._runs[k]
