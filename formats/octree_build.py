"""Building an octree layer (:mod:`formats.octree`) out of core, in bounded memory, resumably.

1. **Pool** (:meth:`OctreeBuilder.add`, one call per frame in frame order): records appended
   to temporary pool segments of about ``segment_points`` points, counted per cell
   (:class:`formats.octree_chunks.CellCounter`), bounds and intensity range kept.
2. **Chunks**: the cube around the bounds, chunks planned from the counts (a node of at most
   ``chunk_max`` points), the pool distributed into one file per chunk.
3. **Nodes**, chunk by chunk in code order: voxel duplicates merged
   (:func:`engine.map_octree.merge_voxels`), the chunk's subtree built and selected
   (:func:`~engine.map_octree.octree_shape`, :func:`~engine.map_octree.select_lod`), its
   nodes but the chunk's root appended to ``octree.bin``; the root's points kept for step 4.
4. **Top**: the levels above the chunks selected from the chunk roots' points; their nodes
   and the chunk roots written; ``hierarchy.bin``, then ``metadata.json`` last.

Memory: a block of ``BLOCK_POINTS`` records, one chunk (about 100 bytes per input point of
it) and the chunk roots' points. Temporaries live in ``LAYER_DIR/.work``. Resuming: frames
in committed pool segments are not added again (:attr:`OctreeBuilder.next_frame`), a finished
distribution and finished chunks are kept (the partial ``octree.bin`` in ``.work`` is cut back
to the last finished chunk); the output is byte-identical to an uninterrupted build's. The
finished files replace the old ones by renames, ``metadata.json`` last.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from engine.map_octree import (
    gather_rows,
    group_by_node,
    merge_voxels,
    morton_codes,
    node_xyz,
    octree_shape,
    select_lod,
    sort_order,
)
from formats.octree import (
    ENTRY,
    FORMAT_NAME,
    FORMAT_VERSION,
    HIERARCHY,
    METADATA,
    OCTREE,
    encode_nodes,
    hierarchy_pages,
)
from formats.octree_chunks import RAW, RAW_WORDS, CellCounter, Cube, distribute, pack_records, plan_chunks
from formats.scene_store.durable import atomic_write

COLUMNS = ("x", "y", "z", "intensity16", "r", "g", "b", "count", "first", "last")


@dataclass(frozen=True)
class OctreeOptions:
    """How a layer is built.

    Attributes:
        quantum_m: metres per position quantum (the scene store's 1 mm).
        voxel_q: merge voxel side in quanta (20: 2 cm).
        grid_bits: a node takes one point per cell of its ``2**grid_bits``-per-side grid
            (root spacing = cube side / 128).
        leaf_max: a subtree of at most this many points is one leaf node.
        chunk_max: target points per chunk (one chunk is in memory at a time).
        cell_bits: counting cells are ``2**cell_bits`` voxels per side.
        step: hierarchy levels per page.
        segment_points: points per pool segment (the resume granularity of step 1).
    """

    quantum_m: float = 1e-3
    voxel_q: int = 20
    grid_bits: int = 7
    leaf_max: int = 20_000
    chunk_max: int = 4_000_000
    cell_bits: int = 8
    step: int = 4
    segment_points: int = 1 << 22


class OctreeBuilder:
    """Builds the layer in ``layer_dir`` (see the module docstring); ``add`` then ``finish``."""

    def __init__(self, layer_dir: str | os.PathLike, options: OctreeOptions = OctreeOptions()) -> None:
        if options.voxel_q < 1 or not (1 <= options.grid_bits <= 10) or options.leaf_max < 1 or options.step < 1:
            raise ValueError(f"invalid octree options {options}")
        self.dir = Path(layer_dir)
        self.work = self.dir / ".work"
        self.options = options
        self.work.mkdir(parents=True, exist_ok=True)
        self.counter = CellCounter(options.voxel_q << options.cell_bits)
        self.state: dict[str, Any] = {"options": asdict(options), "segments": [], "stats": None, "distributed": False,
                                      "tally": {}}
        self._buffer: list[np.ndarray] = []
        self._tally: dict[str, int] = {}
        self._last_frame = -1
        saved = self._load_state()
        if saved is not None:
            self.state = saved
            counts = np.load(self.work / "counts.npz")
            self.counter = CellCounter.restore(self.counter.cell_q, counts["keys"], counts["counts"])

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
        if len(q) and (q.min() < -(2**31) or q.max() >= 2**31):
            raise ValueError("positions beyond int32 quanta")
        if not np.all(np.isfinite(intensity)):
            raise ValueError("intensity contains NaN or infinite values")
        rec, stats = pack_records(frame, q, np.asarray(intensity), rgb)
        self._last_frame = frame
        for k, v in (tally or {}).items():
            self._tally[k] = self._tally.get(k, 0) + int(v)
        if len(rec):
            self.counter.add(rec["x"], rec["y"], rec["z"])
            self._stats(len(rec), frame, stats, rgb is not None)
            self._buffer.append(rec)
        if sum(len(b) for b in self._buffer) >= self.options.segment_points:
            self._commit_segment()

    def _stats(self, n: int, frame: int, new: dict, has_rgb: bool) -> None:
        s = self.state["stats"]
        new = dict(new, points=n, rgb=has_rgb, frames=[frame, frame])
        if s is not None:
            new = {"points": s["points"] + n, "lo_q": np.minimum(s["lo_q"], new["lo_q"]).tolist(),
                   "hi_q": np.maximum(s["hi_q"], new["hi_q"]).tolist(), "i_min": min(s["i_min"], new["i_min"]),
                   "i_max": max(s["i_max"], new["i_max"]), "i_whole": s["i_whole"] and new["i_whole"],
                   "rgb": s["rgb"] or has_rgb, "frames": [s["frames"][0], frame]}
        self.state["stats"] = new

    def _commit_segment(self) -> None:
        if self._last_frame < self.next_frame:
            return
        path = self.work / f"pool-{len(self.state['segments']):05d}.bin"
        _write_temporary(path, self._buffer)
        keys, counts = self.counter.items()
        with open(self.work / "counts.tmp.npz", "wb") as fh:
            np.savez(fh, keys=keys, counts=counts)
        os.replace(self.work / "counts.tmp.npz", self.work / "counts.npz")
        self.state["segments"].append({"file": path.name, "points": sum(len(b) for b in self._buffer),
                                       "last_frame": self._last_frame})
        self.state["tally"] = self.tally
        self._save_state()
        self._buffer, self._tally = [], {}

    # ---------------------------------------------------------------- steps 2-4

    def finish(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Steps 2-4; returns the written metadata (``extra`` merged into it)."""
        self._commit_segment()
        stats = self.state["stats"]
        o = self.options
        lo, hi = (np.array(stats[k] if stats else [0, 0, 0]) for k in ("lo_q", "hi_q"))
        cube = Cube.around(lo, hi, o.voxel_q, o.cell_bits)
        keys, counts = self.counter.items()
        chunks, chunk_of_cell = plan_chunks(cube, keys, counts, o.chunk_max)
        if not self.state["distributed"] and len(chunks) > 1:  # one chunk: the pool is its file
            of_slot = np.full(len(self.counter.keys), -1, np.int64)
            of_slot[self.counter.keys != -1] = chunk_of_cell
            distribute([self.work / s["file"] for s in self.state["segments"]], self.counter, of_slot, len(chunks),
                       self._chunk_path)
            self.state["distributed"] = True
            self._save_state()
        writer = _NodeWriter(self.work / "octree.partial", self._resume_point(len(chunks)))
        entries, roots = [], []
        for k, (level, prefix, _) in enumerate(chunks):
            done = self.work / f"chunk-{k:05d}.done.npz"
            if not done.is_file():
                self._process_chunk(k, level, cube, stats, writer, done)
            with np.load(done) as saved:
                entries.append(saved["entries"].view(ENTRY).reshape(-1))
                roots.append({c: saved["root_" + c] for c in (*COLUMNS, "codes")})
        top = self._top(chunks, roots, cube, stats, writer) if chunks else np.zeros(1, ENTRY)
        nodes = np.concatenate([*entries, top])
        writer.close()
        return self._write_index(nodes, cube, stats, writer, extra or {})

    def _chunk_path(self, k: int) -> Path:
        return self.work / f"chunk-{k:05d}.bin"

    def _chunk_files(self, k: int) -> list[Path]:
        """The files holding chunk ``k``'s records: its own, or the pool when it is the only chunk."""
        own = self._chunk_path(k)
        return [own] if self.state["distributed"] else [self.work / s["file"] for s in self.state["segments"]]

    def _resume_point(self, n_chunks: int) -> int:
        """Bytes of ``octree.bin`` that finished chunks wrote (0 before any)."""
        end = 0
        for k in range(n_chunks):
            done = self.work / f"chunk-{k:05d}.done.npz"
            if not done.is_file():
                break
            with np.load(done) as saved:
                end = int(saved["end"])
        return end

    def _process_chunk(self, k: int, level: int, cube: Cube, stats: dict, writer: "_NodeWriter", done: Path) -> None:
        words = np.concatenate([np.fromfile(f, np.int32) for f in self._chunk_files(k)]).reshape(-1, RAW_WORDS)
        raw = words.view(RAW).reshape(-1)
        codes = morton_codes(raw["x"], raw["y"], raw["z"], cube.voxel_q, cube.origin_q)
        bits = 3 * (cube.depth - level)
        order = sort_order(codes & ((np.int64(1) << bits) - 1) if bits < 63 else codes, bits)
        raw = gather_rows(words, order).view(RAW).reshape(-1)
        del words
        pts = {c: raw[c] for c in ("x", "y", "z", "intensity", "r", "g", "b")}
        pts.update(first=raw["frame"], last=raw["frame"], count=np.ones(len(raw), np.uint32))
        codes, merged = merge_voxels(codes[order], pts)
        del pts, raw, order
        for i, a in enumerate("xyz"):
            merged[a] -= np.int32(cube.origin_q[i])
        merged["intensity16"] = intensity16(merged.pop("intensity"), stats)
        nodes = octree_shape(codes, level, cube.depth, self.options.grid_bits, self.options.leaf_max)
        owner, pool = select_lod(codes, nodes, cube.depth, self.options.grid_bits)
        body = writer.write(merged, owner, nodes, range(1, len(nodes["levels"])), cube, stats)
        root = {c: merged[c][pool] for c in COLUMNS}
        with open(done.with_suffix(".tmp"), "wb") as fh:
            np.savez(fh, entries=body.view(np.uint8), end=writer.end, root_codes=codes[pool],
                     **{"root_" + c: v for c, v in root.items()})
        os.replace(done.with_suffix(".tmp"), done)
        self._chunk_path(k).unlink(missing_ok=True)

    def _top(self, chunks: list, roots: list[dict], cube: Cube, stats: dict, writer: "_NodeWriter") -> np.ndarray:
        """The levels above the chunks and the chunk roots, written; their entries."""
        pts = {c: np.concatenate([r[c] for r in roots]) for c in (*COLUMNS, "codes")}
        codes = pts.pop("codes")
        nodes = upper_nodes([(lv, p) for lv, p, _ in chunks], [len(r["codes"]) for r in roots], cube.depth)
        owner, _ = select_lod(codes, nodes, cube.depth, self.options.grid_bits)
        return writer.write(pts, owner, nodes, range(len(nodes["levels"])), cube, stats)

    def _write_index(self, nodes: np.ndarray, cube: Cube, stats: dict | None, writer: "_NodeWriter",
                     extra: dict[str, Any]) -> dict[str, Any]:
        hierarchy, root_bytes = hierarchy_pages(nodes, self.options.step)
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


def _write_temporary(path: Path, parts: list[np.ndarray]) -> None:
    """The arrays ``parts`` one after the other to ``path``, through a temporary file and a
    rename (no fsync: a temporary)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        for part in parts:
            fh.write(part.view(np.uint8).data)
    os.replace(tmp, path)


def intensity_info(stats: dict | None) -> dict[str, Any]:
    """How stored intensities relate to the input (:mod:`formats.octree`): ``source_range``
    None (as given) or ``[lo, hi]`` (mapped to 0..65535), and ``shift`` (intensity8 = value >> shift)."""
    if stats is None or stats["i_whole"]:
        top = 0 if stats is None else int(stats["i_max"])
        return {"source_range": None, "shift": max(0, top.bit_length() - 8)}
    return {"source_range": [stats["i_min"], stats["i_max"]], "shift": 8}


def intensity16(values: np.ndarray, stats: dict) -> np.ndarray:
    """Float intensities as stored (:func:`intensity_info`), ``(N,) uint16``."""
    rng = intensity_info(stats)["source_range"]
    if rng is None:
        return np.rint(values).astype(np.uint16)
    lo, hi = rng
    scaled = (values.astype(np.float64) - lo) * (65535.0 / (hi - lo)) if hi > lo else np.zeros(len(values))
    return np.rint(np.clip(scaled, 0, 65535)).astype(np.uint16)


def upper_nodes(chunks: list[tuple[int, int]], sizes: list[int], depth: int) -> dict[str, np.ndarray]:
    """Pre-order tree (``octree_shape``'s arrays) of the chunk roots ``(level, prefix)`` (in
    code order, ``sizes[k]`` points each, concatenated) and their ancestors; the chunk roots
    are its leaves."""
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    rows: list[tuple[int, int, int, int, int, bool]] = []

    def visit(level: int, prefix: int, lo: int, hi: int, parent: int) -> None:
        me = len(rows)
        leaf = hi - lo == 1 and chunks[lo] == (level, prefix)
        rows.append((level, prefix, int(starts[lo]), int(starts[hi]), parent, leaf))
        if leaf:
            return
        child = [p >> (3 * (lv - level - 1)) for lv, p in chunks[lo:hi]]
        a = 0
        while a < len(child):
            b = a
            while b < len(child) and child[b] == child[a]:
                b += 1
            visit(level + 1, child[a], lo + a, lo + b, me)
            a = b

    if chunks:
        visit(0, 0, 0, len(chunks), -1)
    names = ("levels", "prefixes", "starts", "ends", "parents")
    out = {n: np.array([r[i] for r in rows], np.int64) for i, n in enumerate(names)}
    out["leaf"] = np.array([r[5] for r in rows], np.bool_)
    return out


class _NodeWriter:
    """Appends encoded nodes to ``octree.bin`` (cut back to ``end`` first), hashing as it goes."""

    def __init__(self, path: Path, end: int) -> None:
        self.path, self.end = path, end
        self._hash = xxhash.xxh3_128()
        with open(path, "ab") as fh:
            fh.truncate(end)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 24), b""):
                self._hash.update(block)
        self._fh = open(path, "ab")

    def write(self, pts: dict[str, np.ndarray], owner: np.ndarray, nodes: dict[str, np.ndarray], which: range,
              cube: Cube, stats: dict) -> np.ndarray:
        """Append nodes ``which`` (rows of ``nodes``); their :data:`ENTRY` rows."""
        order, starts = group_by_node(owner, len(nodes["levels"]))
        rows = np.asarray(which, np.int64)
        levels, cells = nodes["levels"][rows], node_xyz(nodes["prefixes"][rows])
        counts = starts[rows + 1] - starts[rows]
        picked = np.concatenate([order[starts[r]:starts[r + 1]] for r in rows]) if len(rows) else np.zeros(0, np.int64)
        sub_starts = np.concatenate([[0], np.cumsum(counts)])
        data, offsets, sizes = encode_nodes(pts, picked, sub_starts, levels, cells, cube.side_q,
                                            intensity_info(stats)["shift"])
        chunk = data.data  # the node bytes as a memoryview, as file writes and xxhash take them
        self._fh.write(chunk)
        self._hash.update(chunk)
        out = np.zeros(len(rows), ENTRY)
        out["level"], out["x"], out["y"], out["z"] = levels, cells[:, 0], cells[:, 1], cells[:, 2]
        out["offset"], out["byte_size"], out["point_count"] = offsets + self.end, sizes, counts
        out["byte_size"][counts == 0] = 0
        self.end += len(data)
        self._fh.flush()
        return out

    def digest(self) -> str:
        return self._hash.hexdigest()

    def close(self) -> None:
        self._fh.close()


__all__ = ["OctreeBuilder", "OctreeOptions", "intensity16", "intensity_info", "upper_nodes"]
