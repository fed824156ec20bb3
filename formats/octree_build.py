"""Building an octree layer (:mod:`formats.octree`) out of core, in bounded memory, resumably.

1. **Pool** (:meth:`OctreeBuilder.add`, one call per frame in frame order): records counted
   per cell (:class:`formats.octree_chunks.CellCounter`), each frame's grouped by cell, and
   pooled in segments of about ``segment_points`` points (:class:`formats.octree_pool.Pool`:
   written to temporary files in the background, kept in memory while the pool fits
   ``memory_points``), bounds and intensity range kept.
2. **Chunks**: the cube around the bounds (its corner on a coarse grid:
   :meth:`formats.octree_chunks.Cube.around`), chunks planned from the counts (a node of at
   most ``chunk_max`` points), grouped in batches of at most ``batch_points`` points, each
   placed from the pool in memory or read from its segments (:meth:`formats.octree_pool.Pool.batch`:
   a few ranges of each) while the ones before are built, its runs of records listed cell
   after cell.
3. **Nodes**, chunk by chunk in code order, :data:`WORKERS` at once (one thread each): voxel
   duplicates merged (:func:`engine.map_octree.merge_voxels`), the chunk's subtree built and
   selected (:func:`~engine.map_octree.octree_shape`, :func:`~engine.map_octree.select_lod`),
   its nodes but the chunk's root encoded; in chunk order, appended to ``octree.bin`` (each
   chunk's nodes from a block boundary on: written straight from their page-aligned array),
   the root's points saved and given to step 4.
4. **Top** (:class:`formats.octree_top.Top`), meanwhile on the same threads: each node above
   the chunks selected as soon as its children's points are all known, its children
   encoded; written after the chunks, then ``hierarchy.bin``, then ``metadata.json`` last.

Memory: the pool while it fits ``memory_points`` records (16 bytes each), else three
batches (being built or read; as much each) and two segments, plus the chunks in work or
waiting to be written (about 100 bytes per point of each; each chunk thread keeps its arrays,
and the encoded nodes' arrays are reused, as large as the largest chunk's), the points of the
top's nodes whose parents wait and the top's encoded nodes. Temporaries live in
``LAYER_DIR/.work``. Resuming: frames in written pool segments are not added again
(:attr:`OctreeBuilder.next_frame`) and finished chunks are kept (the partial ``octree.bin``
in ``.work`` is cut back to the last finished chunk); the output is byte-identical to an
uninterrupted build's, whatever the memory budget. The finished files replace the old ones
by renames, ``metadata.json`` last.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from engine.map_octree import MAX_CELL_BITS, MAX_CELL_Q, Workspace, merge_voxels, octree_shape, select_lod
from formats.octree import (
    ENTRY,
    FORMAT_NAME,
    FORMAT_VERSION,
    HIERARCHY,
    METADATA,
    OCTREE,
    encode_entries,
    hierarchy_pages,
    intensity16,
    intensity_info,
)
from formats.octree_chunks import CellCounter, ChunkPlan, Cube, plan_chunks
from formats.octree_pool import ALIGN, ARRAYS, Appender, Pool, aligned_empty
from formats.octree_top import COLUMNS, ROOT, Top
from formats.scene_store.durable import atomic_write

WORKERS = max(1, min(4, len(os.sched_getaffinity(0))))  # chunks in work at once
QUEUED = 4 * WORKERS  # chunks submitted or done but not yet written: workers never wait for the writing
_ZEROS = np.zeros(ALIGN, np.uint8)


@dataclass(frozen=True)
class OctreeOptions:
    """How a layer is built.

    Attributes:
        quantum_m: metres per position quantum (the scene store's 1 mm).
        voxel_q: merge voxel side in quanta (20: 2 cm).
        grid_bits: a node takes one point per cell of its ``2**grid_bits``-per-side grid
            (root spacing = cube side / 128).
        leaf_max: a subtree of at most this many points is one leaf node.
        chunk_max: target points per chunk (the unit of work of step 3).
        cell_bits: counting cells are ``2**cell_bits`` voxels per side (at most
            :data:`~engine.map_octree.MAX_CELL_BITS`, and at most
            :data:`~engine.map_octree.MAX_CELL_Q` quanta).
        step: hierarchy levels per page.
        segment_points: points per pool segment (the resume granularity of step 1).
        memory_points: input points the pool keeps in memory (a pool of at most as many is
            never read back).
        batch_points: input points a batch holds at most (and ``memory_points``).
    """

    quantum_m: float = 1e-3
    voxel_q: int = 20
    grid_bits: int = 7
    leaf_max: int = 20_000
    chunk_max: int = 1 << 20
    cell_bits: int = 8
    step: int = 4
    segment_points: int = 1 << 22
    memory_points: int = 1 << 23
    batch_points: int = 1 << 22

    @property
    def batch_limit(self) -> int:
        """Input points a batch holds at most: ``batch_points``, no more than ``memory_points``."""
        return min(self.batch_points, self.memory_points)


class OctreeBuilder:
    """Builds the layer in ``layer_dir`` (see the module docstring); ``add`` then ``finish``."""

    def __init__(self, layer_dir: str | os.PathLike, options: OctreeOptions = OctreeOptions()) -> None:
        if (options.voxel_q < 1 or not (1 <= options.grid_bits <= 10) or options.leaf_max < 1 or options.step < 1
                or not 0 <= options.cell_bits <= MAX_CELL_BITS or options.voxel_q << options.cell_bits > MAX_CELL_Q):
            raise ValueError(f"invalid octree options {options}")
        self.dir = Path(layer_dir)
        self.work = self.dir / ".work"
        self.options = options
        self.work.mkdir(parents=True, exist_ok=True)
        self.counter = CellCounter(options.voxel_q, options.cell_bits)
        self.state: dict[str, Any] = {"options": asdict(options), "segments": [], "stats": None,
                                      "tally": {}}
        self._tally: dict[str, int] = {}
        self._last_frame = -1
        self._entries: dict[int, np.ndarray] = {}  # the chunks': their nodes' ENTRY rows
        self._work = threading.local()  # each chunk thread's Workspace
        self._buffers = _Buffers()  # for the chunks' encoded nodes
        saved = self._load_state()
        if saved is not None:
            self.state = saved
            counts = np.load(self.work / "counts.npz")
            self.counter = CellCounter.restore(options.voxel_q, options.cell_bits, counts["keys"], counts["counts"])
        self.pool = Pool(self.work, self.state["segments"], options.memory_points, options.segment_points,
                         options.batch_limit)

    def _load_state(self) -> dict[str, Any] | None:
        path = self.work / "state.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_bytes())
        if state.get("options") != asdict(self.options):  # other options: start again
            shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            return None
        return state

    def _save_state(self) -> None:
        atomic_write(self.work / "state.json", json.dumps(self.state).encode(), durable=False)

    @property
    def next_frame(self) -> int:
        """Frames below this one are already pooled (a resumed build skips them)."""
        segs = self.state["segments"]
        return segs[-1]["last_frame"] + 1 if segs else 0

    @property
    def tally(self) -> dict[str, int]:
        """The counts given to :meth:`add` so far, summed (those of pooled frames survive a resume)."""
        out = dict(self.state["tally"])
        for k, v in self._tally.items():
            out[k] = out.get(k, 0) + v
        return out

    def add(self, frame: int, xyz_q: np.ndarray, intensity: np.ndarray, rgb: np.ndarray | None,
            tally: dict[str, int] | None = None) -> None:
        """Pool frame ``frame``'s points: ``xyz_q`` ``(N, 3)`` integer quanta (world frame,
        scene origin; |v| < 2**31), ``intensity`` ``(N,)`` float, ``rgb`` ``(N, 3) uint8`` or None;
        ``tally``: counts to sum with the frame (e.g. points left out, by reason)."""
        if frame < max(self.next_frame, self._last_frame + 1):
            raise ValueError(f"frame {frame} added after frame {max(self.next_frame - 1, self._last_frame)}")
        q = np.asarray(xyz_q)
        if q.ndim != 2 or q.shape[1] != 3 or len(intensity) != len(q) or (rgb is not None and rgb.shape != q.shape):
            raise ValueError(f"xyz_q (N, 3), intensity (N,), rgb (N, 3): got {q.shape}, {np.shape(intensity)}, "
                             f"{None if rgb is None else rgb.shape}")
        stats, cells = self.counter.scan(q, np.asarray(intensity))
        if len(q) and (min(stats["lo_q"]) < -(2**31) or max(stats["hi_q"]) >= 2**31
                       or not self.counter.fits(stats["lo_q"], stats["hi_q"])):
            raise ValueError(f"positions beyond int32 quanta or 2**20 cells of {self.counter.cell_q} quanta from 0")
        if not stats.pop("finite"):
            raise ValueError("intensity contains NaN or infinite values")
        self._last_frame = frame
        for k, v in (tally or {}).items():
            self._tally[k] = self._tally.get(k, 0) + int(v)
        if len(q):
            self.pool.filled(self.counter.pack(frame, cells, q, np.asarray(intensity), rgb,
                                               self.pool.reserve(len(q))))
            self._stats(len(q), frame, stats, rgb is not None)
        if self.pool.open_points >= self.options.segment_points:
            self._commit_segment()

    def _stats(self, n: int, frame: int, new: dict, has_rgb: bool) -> None:
        s = self.state["stats"]
        new = dict(new, points=n, rgb=has_rgb, frames=[frame, frame])
        if s is not None:
            new = {"points": s["points"] + n, "lo_q": [min(a, b) for a, b in zip(s["lo_q"], new["lo_q"])],
                   "hi_q": [max(a, b) for a, b in zip(s["hi_q"], new["hi_q"])], "i_min": min(s["i_min"], new["i_min"]),
                   "i_max": max(s["i_max"], new["i_max"]), "i_whole": s["i_whole"] and new["i_whole"],
                   "rgb": s["rgb"] or has_rgb, "frames": [s["frames"][0], frame]}
        self.state["stats"] = new

    def _commit_segment(self) -> None:
        """Close the pool's open segment; its file and then the checkpoint (counts, state)
        are written in the background."""
        if self._last_frame < self.next_frame:
            return
        segment = {"file": f"pool-{len(self.state['segments']):05d}.bin", "points": self.pool.open_points,
                   "last_frame": self._last_frame}
        self.state["segments"].append(segment)
        self.state["tally"], self._tally = self.tally, {}
        keys, counts = self.counter.items()
        work, state = self.work, json.dumps(self.state).encode()

        def checkpoint() -> None:
            with open(work / "counts.tmp.npz", "wb") as fh:
                np.savez(fh, keys=keys, counts=counts)
            os.replace(work / "counts.tmp.npz", work / "counts.npz")
            atomic_write(work / "state.json", state, durable=False)

        self.pool.commit(segment, checkpoint)

    # ---------------------------------------------------------------- steps 2-4

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Steps 2-4; returns the written metadata (``extra`` merged into it). The pool's last
        writes go on meanwhile; a failure waits for them (a resumed build then finds them)."""
        self._commit_segment()
        self.pool.close()
        try:
            return self._finish(extra or {})
        except BaseException:
            self.pool.sync(quiet=True)
            raise
        finally:
            self._buffers = _Buffers()  # the encoded nodes' arrays let go

    def _finish(self, extra: dict[str, Any]) -> dict[str, Any]:
        stats = self.state["stats"]
        o = self.options
        lo, hi = (np.array(stats[k] if stats else [0, 0, 0]) for k in ("lo_q", "hi_q"))
        cube = Cube.around(lo, hi, o.voxel_q, o.cell_bits)
        plan = plan_chunks(cube, self.counter, o.chunk_max)
        batches = plan.batches(o.batch_limit)
        todo = [[k for k in range(first, end) if not self._done_path(k).is_file()] for first, end in batches]
        writer = _NodeWriter(self.work / "octree.partial", self._resume_point(len(plan.chunks)))
        with ThreadPoolExecutor(WORKERS, thread_name_prefix="octree-chunk") as threads, \
                ThreadPoolExecutor(2, thread_name_prefix="octree-background") as background:
            data: list[np.ndarray] = []
            top = np.zeros(1, ENTRY)
            if plan.chunks:
                upper = Top(plan.chunks, cube.depth, cube.side_q, o.grid_bits, intensity_info(stats)["shift"], threads)
                for k in sorted(set(range(len(plan.chunks))) - {k for ks in todo for k in ks}):  # done before
                    with np.load(self._done_path(k)) as saved:
                        self._entries[k] = saved["entries"].view(ENTRY).reshape(-1)
                    upper.add_chunk(k, np.load(self._root_path(k)))
                self._run_batches(plan, batches, todo, cube, stats, writer, threads, upper, background)
            self.pool.sync()
            self.pool.release()
            background.submit(self.pool.drop_segments)  # every chunk done: no longer needed, even to resume
            if plan.chunks:
                data, top = upper.finish()
            top["offset"] += writer.end
            nodes = np.concatenate([*(self._entries[k] for k in range(len(plan.chunks))), top])
            written = background.submit(writer.write_last, data)  # while the hierarchy is paged
            hierarchy = hierarchy_pages(nodes, self.options.step)
            written.result()
        writer.close()
        return self._write_index(nodes, hierarchy, cube, stats, writer, extra)

    def _done_path(self, k: int) -> Path:
        return self.work / f"chunk-{k:05d}.done.npz"

    def _root_path(self, k: int) -> Path:
        return self.work / f"chunk-{k:05d}.root.npy"

    def _resume_point(self, n_chunks: int) -> int:
        """Bytes of ``octree.bin`` that finished chunks wrote (0 before any)."""
        end = 0
        for k in range(n_chunks):
            if not self._done_path(k).is_file():
                break
            with np.load(self._done_path(k)) as saved:
                end = int(saved["end"])
        return end

    def _run_batches(self, plan: ChunkPlan, batches: list[tuple[int, int]], todo: list[list[int]], cube: Cube,
                     stats: dict, writer: "_NodeWriter", threads: ThreadPoolExecutor, upper: Top,
                     background: ThreadPoolExecutor) -> None:
        """Step 3: chunks ``todo[b]`` of each batch ``b``, up to :data:`WORKERS` at once, those
        of the next batch as soon as these are all in work; each written, in order, as soon as
        it and those before it are done (at most :data:`QUEUED` in work or waiting). A batch
        is read (:meth:`formats.octree_pool.Pool.batch`) while those before are built, once the
        one whose array it reuses is written, then that one's disk space freed (on
        ``background``). Chunks and the nodes above them (``upper``) run on ``threads``."""
        wanted = [b for b in range(len(batches)) if todo[b]]
        with ThreadPoolExecutor(1, thread_name_prefix="octree-batch") as loader:

            def save_first() -> None:
                i, k, future = pending.popleft()
                upper.add_chunk(k, self._save_chunk(k, future, writer))
                upper.poll()
                if k != todo[wanted[i]][-1]:
                    return
                background.submit(self.pool.free_batch, wanted[i])
                if i + ARRAYS < len(wanted):  # its array free for a later batch
                    loads[wanted[i + ARRAYS]] = loader.submit(self.pool.batch, self.counter, plan, batches,
                                                              wanted[i + ARRAYS])

            loads = {b: loader.submit(self.pool.batch, self.counter, plan, batches, b) for b in wanted[:ARRAYS]}
            pending: deque[tuple[int, int, Future]] = deque()
            for i, b in enumerate(wanted):
                while pending and pending[0][0] <= i - ARRAYS:  # the batch whose array this one reuses written
                    save_first()
                records, runs, cell_runs = loads.pop(b).result()
                base = int(plan.chunk_cells[batches[b][0]])
                for k in todo[b]:
                    if len(pending) == QUEUED:
                        save_first()
                    level, _, _ = plan.chunks[k]
                    c0, c1 = plan.chunk_cells[k], plan.chunk_cells[k + 1]
                    mine = cell_runs[c0 - base:c1 - base + 1]
                    pending.append((i, k, threads.submit(
                        self._process_chunk, k, level, records, runs[mine[0]:mine[-1]], mine - mine[0],
                        plan.cell_codes[c0:c1], plan.cell_xyz[c0:c1], cube, stats)))
            while pending:
                save_first()

    def _process_chunk(self, k: int, level: int, records: np.ndarray, runs: np.ndarray, cell_runs: np.ndarray,
                       cell_codes: np.ndarray, cell_xyz: np.ndarray, cube: Cube, stats: dict
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chunk ``k`` (a node at ``level``; its points the ``runs`` of ``records``, cell after
        cell, the cells ``cell_codes``/``cell_xyz``: :func:`~engine.map_octree.merge_voxels`):
        its nodes but its root encoded (``data``, :data:`ENTRY` rows with offsets in ``data``)
        and its root's points (:data:`ROOT`)."""
        work = self._work.__dict__.setdefault("arrays", Workspace())  # this thread's, kept for its next chunk
        codes, merged = merge_voxels(records.view(np.int32).reshape(len(records), -1), runs, cell_runs, cell_codes,
                                     cell_xyz, cube.cell_bits, work)
        merged["intensity16"] = intensity16(merged.pop("intensity"), stats)
        nodes = octree_shape(codes, level, cube.depth, self.options.grid_bits, self.options.leaf_max)
        owner, pool = select_lod(codes, nodes, cube.depth, self.options.grid_bits, work)
        rows = np.arange(1, len(nodes["levels"]))
        data, entries = encode_entries(merged, owner, rows, nodes["levels"][rows], nodes["prefixes"][rows], cube.side_q,
                                       intensity_info(stats)["shift"], self._buffers.take)
        root = np.empty(len(pool), ROOT)
        for c in COLUMNS:
            root[c] = merged[c][pool]
        root["codes"] = codes[pool]
        return data, entries, root

    def _save_chunk(self, k: int, future: Future, writer: "_NodeWriter") -> np.ndarray:
        """Chunk ``k``'s nodes appended to ``octree.bin``, its root's points saved (a plain
        ``.npy``), then its done file (its entries and the file's end); its entries kept, its
        root's points returned."""
        data, entries, root = future.result()
        entries["offset"] += writer.write(data, whole_blocks=True)
        self._buffers.give(data)
        with open(self._root_path(k), "wb") as fh:
            np.save(fh, root)
        done = self._done_path(k)
        with open(done.with_suffix(".tmp"), "wb") as fh:
            np.savez(fh, entries=entries.view(np.uint8), end=writer.end)
        os.replace(done.with_suffix(".tmp"), done)
        self._entries[k] = entries
        return root

    def _write_index(self, nodes: np.ndarray, pages: tuple[bytes, int], cube: Cube, stats: dict | None,
                     writer: "_NodeWriter", extra: dict[str, Any]) -> dict[str, Any]:
        """``hierarchy.bin`` (``pages``: :func:`~formats.octree.hierarchy_pages` of ``nodes``), the
        finished ``octree.bin`` and ``metadata.json`` in place; the work directory removed."""
        hierarchy, root_bytes = pages
        h = atomic_write(self.dir / HIERARCHY, hierarchy, durable=False)
        o = self.options
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "quantum_m": o.quantum_m,
            "origin_q": list(cube.origin_q), "origin_m": [v * o.quantum_m for v in cube.origin_q],
            "voxel_q": o.voxel_q, "depth": cube.depth, "side_q": cube.side_q, "grid_bits": o.grid_bits,
            "spacing_m": cube.side_q * o.quantum_m / (1 << o.grid_bits), "leaf_max": o.leaf_max,
            "points": int(nodes["point_count"].sum()), "input_points": stats["points"] if stats else 0,
            "nodes": len(nodes), "max_level": int(nodes["level"].max()),
            "bounds_q": None if stats is None else {"min": stats["lo_q"], "max": stats["hi_q"]},
            "intensity": intensity_info(stats), "rgb": bool(stats and stats["rgb"]),
            "frames": None if stats is None else stats["frames"],
            "hierarchy": {"file": HIERARCHY, "bytes": h.bytes, "xxh3_128": h.xxh3_128, "root_offset": 0,
                          "root_bytes": root_bytes, "step": o.step},
            "octree": {"file": OCTREE, "bytes": writer.end, "xxh3_128": writer.digest()}, **extra,
        }
        os.replace(writer.path, self.dir / OCTREE)  # a new file: a reader's mapping of the old one stays valid
        atomic_write(self.dir / METADATA, json.dumps(meta, indent=1).encode(), durable=False)
        shutil.rmtree(self.work)
        return meta


class _Buffers:
    """Page-aligned byte arrays for the chunks' encoded nodes, given back once written and taken
    again (memory reused costs far less than memory first touched; a page-aligned array is
    written straight from it); as many as chunks are in work or waiting at once. Any thread."""

    def __init__(self) -> None:
        self._free: deque[np.ndarray] = deque()
        self._lent: dict[int, np.ndarray] = {}  # by the address of the view lent

    def take(self, n: int) -> np.ndarray:
        """``(n,) uint8``, uninitialised, page-aligned: a given-back array where one is large enough."""
        try:
            kept = self._free.popleft()
        except IndexError:
            kept = None
        if kept is None or len(kept) < n:
            kept = aligned_empty(n + n // 4, np.dtype(np.uint8))  # a smaller one is let go
        view = kept[:n]
        self._lent[view.ctypes.data] = kept
        return view

    def give(self, data: np.ndarray) -> None:
        """``data`` (from :meth:`take`) written: its array may be taken again."""
        self._free.append(self._lent.pop(data.ctypes.data))


class _NodeWriter:
    """Appends encoded nodes to ``octree.bin`` (cut back to ``end`` first), hashing as it goes."""

    def __init__(self, path: Path, end: int) -> None:
        self.path = path
        self._hash = xxhash.xxh3_128()
        path.touch()
        with open(path, "rb") as fh:
            left = end
            while left and (block := fh.read(min(left, 1 << 24))):
                self._hash.update(block)
                left -= len(block)
        self._out = Appender(path, end)

    @property
    def end(self) -> int:
        return self._out.size

    def write(self, data: np.ndarray, whole_blocks: bool = False) -> int:
        """Append ``data`` (uint8) and flush; returns its offset in the file. ``whole_blocks``:
        zeros follow it to the next block boundary (a page-aligned array written next then goes
        straight from it, not through the staging buffer)."""
        at = self.end
        self._out.write(data)
        self._hash.update(data.data)  # the bytes as a memoryview, as xxhash takes them
        pad = -self.end % ALIGN if whole_blocks else 0
        if pad:
            self._out.write(_ZEROS[:pad])
            self._hash.update(_ZEROS[:pad].data)
        self._out.flush()
        return at

    def write_last(self, parts: list[np.ndarray]) -> None:
        """Append ``parts`` (uint8 each), the file's last bytes, through the page cache (nothing
        else runs then: a plain write returns once copied, a direct one waits for the disk)."""
        self._out.plain()
        for part in parts:
            self._out.write(part)
            self._hash.update(part.data)
        self._out.flush()

    def digest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._out.close()


__all__ = ["OctreeBuilder", "OctreeOptions"]
