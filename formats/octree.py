"""Fathom's level-of-detail octree layer (Potree 2 style): ``metadata.json``, ``hierarchy.bin``,
``octree.bin``. :mod:`formats.octree_build` writes one; :class:`OctreeLayer` reads it.

Geometry: positions are integers, quanta of ``quantum_m`` metres; the cube's min corner is
``origin_q`` (quanta, in the scene's world frame relative to the scene origin: ENU, z up)
and its side ``side_q = voxel_q · 2**depth``. Node ``(level, x, y, z)`` (COPC's VoxelKey) is
the cube of side ``side_q >> level`` at ``origin_q + (x, y, z) · (side_q >> level)``; its
points lie inside it and every map point is in exactly one node (:mod:`engine.map_octree`).

``octree.bin`` holds the nodes' data, each at an offset that is a multiple of 8 (bytes between
nodes are zeros), little-endian, in sections (offsets from the node's start, ``n`` its points,
``w`` = 2 bytes where ``side_q >> level <= 65536``, else 4)::

    position   uint{8w}[3n]  x y z interleaved, quanta from the node's min corner   (exact)
    rgb        uint8[3n]     colour (mean of the merged points; 0 without cameras)
    intensity8 uint8[n]      intensity16 >> intensity_shift                  ── viewer part:
                                                                                 n · (3w + 4) bytes
    intensity16 uint16[n]    at align4(n · (3w + 4))
    count      uint32[n]     points merged into the voxel, at align4(…)
    first      uint32[n]     first frame index that saw the voxel
    last       uint32[n]     last frame index

The viewer part (≤ 16 bytes per point) is a prefix of the node: a client fetches it alone
with one byte range. ``intensity16`` is the source value when every input intensity was a
whole number in [0, 65535], else ``rint((v − lo) / (hi − lo) · 65535)`` over the layer's
``intensity.source_range [lo, hi]``.

``hierarchy.bin`` is COPC's hierarchy: pages of 32-byte entries ``int32 level, x, y, z;
uint64 offset; int32 byte_size; int32 point_count`` (``offset``/``byte_size`` locate the
node in ``octree.bin``; ``point_count = -1``: the entry locates the page of that node's
subtree in ``hierarchy.bin`` instead). The root page (at ``hierarchy.root_offset``) lists
the levels ``0 .. step-1``; each page rooted at level ``l`` lists ``l .. l+step-1``.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine._jit import jit
from engine.map_octree import node_xyz
from formats.errors import FormatError, load_json

FORMAT_NAME = "fathom-octree"
FORMAT_VERSION = 1
METADATA, HIERARCHY, OCTREE = "metadata.json", "hierarchy.bin", "octree.bin"
ENTRY = np.dtype([("level", "<i4"), ("x", "<i4"), ("y", "<i4"), ("z", "<i4"), ("offset", "<u8"),
                  ("byte_size", "<i4"), ("point_count", "<i4")])
NODE_ALIGN = 8


def _align4(v):
    return (v + 3) & ~3


def position_width(side_q: int, level: int) -> int:
    """Bytes per coordinate of a node at ``level``: 2 when its side fits uint16 steps, else 4."""
    return 2 if (side_q >> level) <= 65536 else 4


def node_sections(n: int, width: int) -> dict[str, int]:
    """Byte offsets of a node's sections (module docstring) and ``viewer``/``total`` sizes."""
    pos = 3 * width * n
    viewer = n * (3 * width + 4)
    i16 = _align4(viewer)
    count = _align4(i16 + 2 * n)
    return {"position": 0, "rgb": pos, "intensity8": pos + 3 * n, "viewer": viewer, "intensity16": i16,
            "count": count, "first": count + 4 * n, "last": count + 8 * n, "total": count + 12 * n}


@jit
def _encode_kernel(owner, slot, node_offset, node_count, node_width, node_min, x, y, z, i16, shift, r, g, b,
                   count, first, last, buf, buf16, buf32):
    """One pass over the points: point ``i`` goes to output node ``slot[owner[i]]`` (none
    when negative), after that node's earlier points. ``buf16``/``buf32`` view ``buf``
    (little-endian; uninitialised: the padding between sections and after each node is
    zeroed here); node offsets are multiples of 8, so every section is aligned."""
    for k in range(node_offset.shape[0]):
        n, w, o = node_count[k], node_width[k], node_offset[k]
        viewer = n * (3 * w + 4)
        o16 = (viewer + 3) & ~3
        oc = (o16 + 2 * n + 3) & ~3
        end = (oc + 12 * n + NODE_ALIGN - 1) // NODE_ALIGN * NODE_ALIGN
        buf[o + viewer:o + o16] = 0
        buf[o + o16 + 2 * n:o + oc] = 0
        buf[o + oc + 12 * n:o + end] = 0
    cursor = np.zeros(node_offset.shape[0], np.int64)
    for i in range(owner.shape[0]):
        k = slot[owner[i]]
        if k < 0:
            continue
        j = cursor[k]
        cursor[k] = j + 1
        n, w, o = node_count[k], node_width[k], node_offset[k]
        px, py, pz = x[i] - node_min[k, 0], y[i] - node_min[k, 1], z[i] - node_min[k, 2]
        if w == 2:
            p = (o >> 1) + 3 * j
            buf16[p], buf16[p + 1], buf16[p + 2] = px, py, pz
        else:
            p = (o >> 2) + 3 * j
            buf32[p], buf32[p + 1], buf32[p + 2] = px, py, pz
        rgb = o + 3 * w * n + 3 * j
        buf[rgb], buf[rgb + 1], buf[rgb + 2] = r[i], g[i], b[i]
        buf[o + 3 * w * n + 3 * n + j] = i16[i] >> shift
        o16 = o + ((n * (3 * w + 4) + 3) & ~3)
        buf16[(o16 >> 1) + j] = i16[i]
        oc = (o16 + 2 * n + 3) & ~3
        buf32[(oc >> 2) + j] = count[i]
        buf32[(oc >> 2) + n + j] = first[i]
        buf32[(oc >> 2) + 2 * n + j] = last[i]


def encode_nodes(points: dict[str, np.ndarray], owner: np.ndarray, rows: np.ndarray, levels: np.ndarray,
                 cells: np.ndarray, side_q: int, intensity_shift: int, alloc: Callable[[int], np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Serialise nodes ``rows`` (``(K,)`` of a tree's node numbers): node ``rows[k]`` holds the
    points ``i`` with ``owner[i] == rows[k]``, in index order (``points``: ``x y z`` int32
    quanta from the cube's corner, ``intensity16`` uint16, ``r g b`` uint8, ``count first
    last`` uint32; ``owner`` ``(N,) int64``), sits at ``levels[k]`` with cell coordinates
    ``cells[k]`` (``(K, 3)``). Points of other nodes are left out.

    Returns ``(data uint8, offsets, sizes, counts)`` (``(K,) int64`` each): the nodes one
    after the other, each at a multiple of 8 from the start of ``data`` (``alloc(n)``'s ``(n,)
    uint8`` array where given, else a new one).
    """
    rows = np.asarray(rows, np.int64)
    owner = np.ascontiguousarray(owner, np.int64)
    n_nodes = int(max(owner.max(initial=-1), rows.max(initial=-1))) + 1
    slot = np.full(n_nodes, -1, np.int64)
    slot[rows] = np.arange(len(rows))
    counts = np.bincount(owner, minlength=n_nodes)[rows].astype(np.int64) if len(owner) else np.zeros(len(rows),
                                                                                                      np.int64)
    widths = np.array([position_width(side_q, int(lv)) for lv in levels], np.int64)
    sizes = np.array([node_sections(int(n), int(w))["total"] for n, w in zip(counts, widths)], np.int64)
    padded = (sizes + NODE_ALIGN - 1) // NODE_ALIGN * NODE_ALIGN
    offsets = np.concatenate([[0], np.cumsum(padded)[:-1]]).astype(np.int64)
    buf = (alloc or _new_bytes)(int(padded.sum()))
    node_min = np.asarray(cells, np.int64).reshape(-1, 3) * (np.int64(side_q) >> np.asarray(levels, np.int64))[:, None]
    _encode_kernel(owner, slot, offsets, counts, widths, np.ascontiguousarray(node_min), points["x"], points["y"],
                   points["z"], points["intensity16"], np.int64(intensity_shift), points["r"], points["g"],
                   points["b"], points["count"], points["first"], points["last"], buf, buf.view("<u2"),
                   buf.view("<u4"))
    return buf, offsets, sizes, counts


def _new_bytes(n: int) -> np.ndarray:
    return np.empty(n, np.uint8)


def encode_entries(points: dict[str, np.ndarray], owner: np.ndarray, rows: np.ndarray, levels: np.ndarray,
                   prefixes: np.ndarray, side_q: int, intensity_shift: int,
                   alloc: Callable[[int], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``rows`` at ``levels`` with Morton code ``prefixes`` (``(K,)`` each) encoded as
    :func:`encode_nodes` does: ``(data uint8, their ENTRY rows)``, offsets in ``data``."""
    cells = node_xyz(np.asarray(prefixes, np.int64))
    data, offsets, sizes, counts = encode_nodes(points, owner, rows, levels, cells, side_q, intensity_shift, alloc)
    out = np.zeros(len(rows), ENTRY)
    out["level"], out["x"], out["y"], out["z"] = levels, cells[:, 0], cells[:, 1], cells[:, 2]
    out["offset"], out["byte_size"], out["point_count"] = offsets, sizes, counts
    return data, out


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


def hierarchy_pages(nodes: np.ndarray, step: int, base: int = 0) -> tuple[bytes, int]:
    """``(hierarchy bytes, root page size)`` of ``nodes`` (an :data:`ENTRY` array of every
    node, node entries only): the root page first, then the subtree pages, whose pointer
    entries give their offset as ``base`` + offset in these bytes."""
    items = nodes.tolist()  # (level, x, y, z, offset, byte_size, point_count) tuples: fast to read
    children: dict[tuple[int, int, int, int], list[int]] = {}
    for i, (lv, x, y, z, *_) in enumerate(items):
        if lv:
            children.setdefault((lv - 1, x >> 1, y >> 1, z >> 1), []).append(i)
    roots = [i for i, e in enumerate(items) if e[0] == 0]
    if len(roots) != 1:
        raise ValueError(f"a hierarchy needs exactly one root node, got {len(roots)}")
    pages: list[np.ndarray] = []
    pointers: list[tuple[int, int] | None] = []  # per page: (page index, entry row) to patch; None for the root
    queue: deque[tuple[int, tuple[int, int] | None]] = deque([(roots[0], None)])
    while queue:
        top, parent_ref = queue.popleft()
        rows: list[tuple] = []
        frontier = deque([top])
        level0 = items[top][0]
        while frontier:
            e = items[frontier.popleft()]
            rows.append(e)
            for c in sorted(children.get(e[:4], []), key=lambda c: items[c][1:4]):
                if items[c][0] < level0 + step:
                    frontier.append(c)
                else:
                    rows.append((*items[c][:6], -1))
                    queue.append((c, (len(pages), len(rows) - 1)))
        pages.append(np.array(rows, ENTRY))
        pointers.append(parent_ref)
    offsets = base + np.concatenate([[0], np.cumsum([p.nbytes for p in pages])[:-1]])
    for k, ref in enumerate(pointers):
        if ref is not None:
            pages[ref[0]][ref[1]]["offset"] = offsets[k]
            pages[ref[0]][ref[1]]["byte_size"] = pages[k].nbytes
    return b"".join(p.tobytes() for p in pages), pages[0].nbytes


@dataclass(frozen=True)
class OctreeLayer:
    """A written octree layer opened for reading: ``dir``, its ``metadata`` (validated) and
    every node entry (``nodes``, an :data:`ENTRY` array, page pointers resolved)."""

    dir: Path
    metadata: dict[str, Any]
    nodes: np.ndarray

    @staticmethod
    def open(layer_dir: str | os.PathLike) -> "OctreeLayer":
        root = Path(layer_dir)
        meta_path = root / METADATA
        meta = load_json(meta_path, "octree metadata")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME or meta.get("version") != FORMAT_VERSION:
            raise FormatError(meta_path, None, f'"format": "{FORMAT_NAME}", "version": {FORMAT_VERSION}')
        try:
            depth, side_q = int(meta["depth"]), int(meta["side_q"])
            h_bytes, o_bytes = int(meta["hierarchy"]["bytes"]), int(meta["octree"]["bytes"])
            root_size = int(meta["hierarchy"]["root_bytes"])
        except (KeyError, TypeError, ValueError) as exc:
            raise FormatError(meta_path, None, f"octree metadata fields ({type(exc).__name__}: {exc})") from None
        for name, size in ((HIERARCHY, h_bytes), (OCTREE, o_bytes)):
            actual = (root / name).stat().st_size if (root / name).is_file() else None
            if actual != size:
                raise FormatError(root / name, actual, f"{size} bytes as {METADATA} records")
        raw = np.fromfile(root / HIERARCHY, np.uint8)
        nodes = _walk_pages(raw, root_size, root / HIERARCHY, depth, side_q, o_bytes)
        return OctreeLayer(root, meta, nodes)

    def node(self, row: int) -> dict[str, np.ndarray]:
        """Node ``row`` of :attr:`nodes` decoded: ``x y z`` int64 quanta from the cube's
        corner, ``intensity8 r g b`` uint8, ``intensity16`` uint16, ``count first last`` uint32."""
        e = self.nodes[row]
        n, lv = int(e["point_count"]), int(e["level"])
        w = position_width(int(self.metadata["side_q"]), lv)
        sec = node_sections(n, w)
        with open(self.dir / OCTREE, "rb") as fh:
            fh.seek(int(e["offset"]))
            raw = fh.read(sec["total"])
        if len(raw) != sec["total"] or int(e["byte_size"]) != sec["total"]:
            raise FormatError(self.dir / OCTREE, int(e["offset"]), f"node {lv}-{e['x']}-{e['y']}-{e['z']} of "
                              f"{sec['total']} bytes for {n} points")
        side = int(self.metadata["side_q"]) >> lv
        pos = np.frombuffer(raw, f"<u{w}", 3 * n).reshape(n, 3).astype(np.int64)
        pos += np.array([e["x"], e["y"], e["z"]], np.int64) * side
        rgb = np.frombuffer(raw, np.uint8, 3 * n, sec["rgb"]).reshape(n, 3)
        out: dict[str, np.ndarray] = {
            "x": pos[:, 0], "y": pos[:, 1], "z": pos[:, 2], "r": rgb[:, 0], "g": rgb[:, 1], "b": rgb[:, 2],
            "intensity8": np.frombuffer(raw, np.uint8, n, sec["intensity8"]),
            "intensity16": np.frombuffer(raw, "<u2", n, sec["intensity16"])}
        for name in ("count", "first", "last"):
            out[name] = np.frombuffer(raw, "<u4", n, sec[name])
        return out

    def points(self) -> dict[str, np.ndarray]:
        """Every node's points, node after node (:attr:`nodes` order), as :meth:`node`'s columns."""
        parts = [self.node(k) for k in range(len(self.nodes)) if self.nodes[k]["point_count"] > 0]
        if not parts:
            return {k: np.zeros(0) for k in ("x", "y", "z")}
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _walk_pages(raw: np.ndarray, root_size: int, path: Path, depth: int, side_q: int, octree_bytes: int) -> np.ndarray:
    """Every node entry reachable from the root page; FormatError for a page outside the file,
    a size that is not whole entries, a key beyond the cube or data outside ``octree.bin``."""
    found: list[np.ndarray] = []
    pages = [(0, root_size)]
    seen = set()
    while pages:
        off, size = pages.pop()
        if off in seen or size <= 0 or size % ENTRY.itemsize or off + size > raw.size:
            raise FormatError(path, off, f"a hierarchy page of whole {ENTRY.itemsize}-byte entries inside the "
                              f"{raw.size}-byte file, visited once (size {size})")
        seen.add(off)
        page = raw[off:off + size].view(ENTRY)
        lv = page["level"].astype(np.int64)
        bad = (lv < 0) | (lv > depth)
        for a in "xyz":
            bad |= (page[a] < 0) | (page[a].astype(np.int64) >= (np.int64(1) << np.clip(lv, 0, 62)))
        nodes, ptrs = page[page["point_count"] >= 0], page[page["point_count"] == -1]
        bad_rows = np.flatnonzero(bad | (page["point_count"] < -1))
        end = nodes["offset"].astype(np.uint64) + nodes["byte_size"].astype(np.int64).clip(0).astype(np.uint64)
        if bad_rows.size or np.any(nodes["byte_size"] < 0) or np.any(end > octree_bytes):
            row = int(bad_rows[0]) if bad_rows.size else 0
            raise FormatError(path, off + row * ENTRY.itemsize, f"entries with keys inside the depth-{depth} cube "
                              f"and node data inside octree.bin ({octree_bytes} bytes)")
        found.append(nodes)
        pages.extend((int(p["offset"]), int(p["byte_size"])) for p in ptrs)
    return np.concatenate(found) if found else np.zeros(0, ENTRY)


def _warmup() -> None:
    pts: dict[str, np.ndarray] = {k: np.zeros(1, np.int32) for k in "xyz"}
    pts.update(intensity16=np.zeros(1, np.uint16), count=np.ones(1, np.uint32), first=np.zeros(1, np.uint32),
               last=np.zeros(1, np.uint32), **{k: np.zeros(1, np.uint8) for k in "rgb"})
    encode_nodes(pts, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, 3), np.int64),
                 1 << 10, 0)
