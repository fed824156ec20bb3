"""An octree layer (:mod:`formats.octree`) as COPC: a LAZ 1.4 file whose octree is in its VLRs
(https://copc.io), which PDAL, QGIS, Potree, laspy's ``CopcReader`` and untwine users open.

The file: the 375-byte LAS 1.4 header; VLRs ``copc``/1 (the COPC info: cube centre and
half-size, root spacing, where the root hierarchy page is; first, as COPC requires),
``laszip encoded``/22204 (variable-size chunks) and ``LASF_Spec``/4 (extra bytes); the point
data, one LAZ chunk per octree node in octree.bin's order (nodes without points have none;
a leaf of few points joins its parent's chunk and is left out of the hierarchy:
:func:`chunk_holders`) and the chunk table; then the EVLR ``copc``/1000, the hierarchy pages (the layer's, with
offsets into this file).

Points are point format 7 plus 12 extra bytes (48 bytes before compression): ``X Y Z`` the
layer's integer positions (quanta from the cube's corner; scale = the quantum, offset = the
corner in metres: the scene's world frame, ENU relative to the scene origin, not a projected
CRS), ``intensity`` the layer's 16-bit intensity, ``red green blue`` the 8-bit colour times
257, return 1 of 1, class 0, GPS time 0; extra bytes ``count``, ``first_frame``,
``last_frame`` (uint32). Everything is exact: reading it back gives the layer's values.
"""

from __future__ import annotations

import datetime
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import lazrs
import numpy as np

from engine._jit import jit
from formats.errors import FormatError
from formats.octree import OCTREE, OctreeLayer, hierarchy_pages, node_sections, position_width

POINT = np.dtype([("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("intensity", "<u2"), ("returns", "u1"),
                  ("flags", "u1"), ("classification", "u1"), ("user_data", "u1"), ("scan_angle", "<i2"),
                  ("point_source_id", "<u2"), ("gps_time", "<f8"), ("red", "<u2"), ("green", "<u2"),
                  ("blue", "<u2"), ("count", "<u4"), ("first_frame", "<u4"), ("last_frame", "<u4")])
POINT_FORMAT, EXTRA_BYTES = 7, 12
EXTRA = (("count", "voxel's merged point count"), ("first_frame", "first frame that saw the voxel"),
         ("last_frame", "last frame that saw the voxel"))
HEADER_SIZE, VLR_HEADER, EVLR_HEADER = 375, 54, 60
BATCH_POINTS = 1 << 19  # points converted and compressed per call (bounds the memory of the conversion)
MIN_NODE_POINTS = 8192  # a smaller leaf's points join its parent's chunk (as untwine and entwine do): fewer chunks


def _vlr(user: str, record: int, data: bytes, description: str, extended: bool = False) -> bytes:
    length = struct.pack("<Q", len(data)) if extended else struct.pack("<H", len(data))
    return (struct.pack("<H16sH", 0, user.encode(), record) + length
            + description.encode()[:32].ljust(32, b"\0") + data)


def _extra_bytes_vlr() -> bytes:
    body = b""
    for name, description in EXTRA:  # data type 5: uint32
        body += (struct.pack("<2sBB32s4s", b"", 5, 0, name.encode(), b"") + bytes(24 * 5)
                 + description.encode().ljust(32, b"\0"))
    return _vlr("LASF_Spec", 4, body, "extra bytes")


def _header(meta: dict, n_points: int, offset_to_points: int, n_vlrs: int, evlr_start: int,
            bounds: np.ndarray) -> bytes:
    today = datetime.date.today()
    q, origin = meta["quantum_m"], meta["origin_m"]
    mins, maxs = bounds[0] * q + origin, bounds[1] * q + origin
    return struct.pack(
        "<4sHH16sBB32s32sHHHIIBHI5I3d3d6dQQIQ15Q",
        b"LASF", 0, 1 << 4, bytes(16), 1, 4, b"fathom", b"fathom map (COPC)", today.timetuple().tm_yday, today.year,
        HEADER_SIZE, offset_to_points, n_vlrs, POINT_FORMAT | 0x80, POINT.itemsize, 0, 0, 0, 0, 0, 0,
        q, q, q, *origin, maxs[0], mins[0], maxs[1], mins[1], maxs[2], mins[2], 0, evlr_start, 1, n_points,
        n_points, *([0] * 14))


@jit
def _records_kernel(data, data16, data32, offsets, counts, widths, mins, out8, out16, out32, lo, hi):
    """Nodes ``k`` (``counts[k]`` points at byte ``offsets[k]`` of ``data``, :mod:`formats.octree`'s
    layout, positions ``widths[k]`` bytes from the corner ``mins[k]``) one after the other as
    :data:`POINT` records in ``out8`` (zeroed: fields not written stay 0), ``out16``/``out32``
    viewing it; per-axis bounds into ``lo``/``hi``."""
    j = 0
    for k in range(offsets.shape[0]):
        o, n, w = offsets[k], counts[k], widths[k]
        o16 = o + ((n * (3 * w + 4) + 3) & ~3)
        oc = (o16 + 2 * n + 3) & ~3
        rgb = o + 3 * w * n
        for t in range(n):
            if w == 2:
                x, y, z = data16[(o >> 1) + 3 * t], data16[(o >> 1) + 3 * t + 1], data16[(o >> 1) + 3 * t + 2]
            else:
                x, y, z = data32[(o >> 2) + 3 * t], data32[(o >> 2) + 3 * t + 1], data32[(o >> 2) + 3 * t + 2]
            x, y, z = x + mins[k, 0], y + mins[k, 1], z + mins[k, 2]
            lo[0], lo[1], lo[2] = min(lo[0], x), min(lo[1], y), min(lo[2], z)
            hi[0], hi[1], hi[2] = max(hi[0], x), max(hi[1], y), max(hi[2], z)
            out32[12 * j], out32[12 * j + 1], out32[12 * j + 2] = x, y, z
            out16[24 * j + 6] = data16[(o16 >> 1) + t]
            out8[48 * j + 14] = 0x11  # return 1 of 1
            out16[24 * j + 15] = np.uint16(data[rgb + 3 * t]) * 257
            out16[24 * j + 16] = np.uint16(data[rgb + 3 * t + 1]) * 257
            out16[24 * j + 17] = np.uint16(data[rgb + 3 * t + 2]) * 257
            out32[12 * j + 9] = data32[(oc >> 2) + t]
            out32[12 * j + 10] = data32[(oc >> 2) + n + t]
            out32[12 * j + 11] = data32[(oc >> 2) + 2 * n + t]
            j += 1


def chunk_holders(nodes: np.ndarray, min_points: int) -> np.ndarray:
    """``(M,) int64``: for each node (:data:`formats.octree.ENTRY` rows, a tree), the node whose
    COPC chunk holds its points: itself, or, for a leaf of fewer than ``min_points`` points
    (counting those it took), its parent's holder. Deepest leaves first, so small leaves move
    up until their parent's chunk holds enough."""
    key = {(int(e["level"]), int(e["x"]), int(e["y"]), int(e["z"])): i for i, e in enumerate(nodes)}
    parent = np.array([key.get((lv - 1, x >> 1, y >> 1, z >> 1), -1) if lv else -1 for lv, x, y, z in key], np.int64)
    size = nodes["point_count"].astype(np.int64)
    children = np.bincount(parent[parent >= 0], minlength=len(nodes))
    holder = np.arange(len(nodes))
    for i in np.argsort(-nodes["level"].astype(np.int64), kind="stable"):
        p = parent[i]
        if p >= 0 and children[i] == 0 and size[i] < min_points:
            holder[i], size[p], children[p] = p, size[p] + size[i], children[p] - 1
    for i in np.argsort(nodes["level"], kind="stable"):  # parents first: their holder is final
        holder[i] = holder[holder[i]]
    return holder


def write_copc(layer_dir: str | os.PathLike, path: str | os.PathLike, min_points: int = MIN_NODE_POINTS
               ) -> dict[str, int]:
    """Write the octree layer at ``layer_dir`` as the COPC file ``path`` (replaced atomically):
    one LAZ chunk per node, except leaves of fewer than ``min_points`` points, whose points join
    their parent's (:func:`chunk_holders`; 0: every node its own). Returns ``{"points", "nodes",
    "bytes"}`` (``nodes``: the COPC hierarchy's)."""
    layer = OctreeLayer.open(layer_dir)
    meta, nodes = layer.metadata, layer.nodes
    side = meta["side_q"] * meta["quantum_m"]
    vlr = lazrs.LazVlr.new_for_compression(POINT_FORMAT, EXTRA_BYTES, True)
    info_size = 160
    vlrs_size = VLR_HEADER + info_size + VLR_HEADER + len(vlr.record_data()) + len(_extra_bytes_vlr())
    offset_to_points = HEADER_SIZE + vlrs_size
    counts = nodes["point_count"].astype(np.int64)
    widths = np.array([position_width(int(meta["side_q"]), int(lv)) for lv in nodes["level"]], np.int64)
    sizes = np.array([node_sections(int(n), int(w))["total"] if n else 0 for n, w in zip(counts, widths)], np.int64)
    octree_bytes = os.path.getsize(layer.dir / OCTREE)
    bad = np.flatnonzero((counts > 0) & ((nodes["byte_size"] != sizes) | (nodes["offset"] + sizes > octree_bytes)))
    if len(bad):
        e = nodes[bad[0]]
        raise FormatError(layer.dir / OCTREE, int(e["offset"]), f"node {e['level']}-{e['x']}-{e['y']}-{e['z']} of "
                          f"{e['byte_size']} bytes for {e['point_count']} points in a file of {octree_bytes}")
    mins = (np.stack([nodes[a] for a in "xyz"], 1).astype(np.int64)
            * (np.int64(meta["side_q"]) >> nodes["level"].astype(np.int64))[:, None])
    holder = chunk_holders(nodes, min_points)
    totals = np.bincount(holder, counts, len(nodes)).astype(np.int64)
    # sources: the nodes with points, chunk after chunk (in octree.bin's order), the holder's own points first
    offsets = nodes["offset"].astype(np.int64)
    first_offset = np.full(len(nodes), np.iinfo(np.int64).max)
    np.minimum.at(first_offset, holder[counts > 0], offsets[counts > 0])
    src = np.flatnonzero(counts > 0)
    src = src[np.lexsort((offsets[src], holder[src] != src, holder[src], first_offset[holder[src]]))]
    chunks = np.unique(holder[src])
    chunks = chunks[np.argsort(first_offset[chunks], kind="stable")]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    lo, hi = np.full(3, np.iinfo(np.int64).max), np.full(3, np.iinfo(np.int64).min)
    ends = np.cumsum(totals[chunks])
    cuts = [0, *np.flatnonzero(np.diff(ends // BATCH_POINTS)) + 1, len(chunks)]  # batches of about BATCH_POINTS
    batches = [(a, b) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]
    src_cuts = np.concatenate([[0], np.flatnonzero(np.diff(holder[src])) + 1, [len(src)]])  # chunk after chunk
    biggest = max((int(totals[chunks[a:b]].sum()) for a, b in batches), default=0)
    buffers = [np.zeros(biggest, POINT).view(np.uint8) for _ in range(min(2, len(batches)))]
    data = np.memmap(layer.dir / OCTREE, np.uint8, mode="r") if len(src) else np.zeros(8, np.uint8)

    def convert(k: int) -> list[np.ndarray]:
        """Batch ``k``'s chunks as records (in one of two buffers: converted while the one
        before is compressed)."""
        a, b = batches[k]
        mine = src[src_cuts[a]:src_cuts[b]]
        out = buffers[k % 2]
        _records_kernel(data, data[:len(data) // 2 * 2].view("<u2"), data[:len(data) // 4 * 4].view("<u4"),
                        offsets[mine], counts[mine], widths[mine], mins[mine], out, out.view("<u2"),
                        out.view("<u4"), lo, hi)
        bounds = np.concatenate([[0], np.cumsum(totals[chunks[a:b]])]) * POINT.itemsize
        return [out[s:e] for s, e in zip(bounds[:-1], bounds[1:])]

    with open(tmp, "w+b") as fh, ThreadPoolExecutor(1, thread_name_prefix="copc-records") as converter:
        fh.write(bytes(offset_to_points))
        compressor = lazrs.ParLasZipCompressor(fh, vlr)
        pending = [converter.submit(convert, 0)] if batches else []
        for k in range(len(batches)):
            records = pending.pop().result()
            pending.extend(converter.submit(convert, n) for n in range(k + 1, min(k + 2, len(batches))))
            compressor.compress_chunks(records)  # lazrs, in parallel, without the GIL
        compressor.done()
        evlr_start = fh.seek(0, os.SEEK_END)
        fh.seek(offset_to_points)
        table = lazrs.read_chunk_table(fh, vlr)
        chunk_bytes = np.array([b for _, b in table], np.int64)
        if len(table) != len(chunks) or any(c != n for (c, _), n in zip(table, totals[chunks])):
            raise RuntimeError("LAZ chunks do not match the octree's nodes")
        entries = nodes.copy()
        entries["offset"], entries["byte_size"], entries["point_count"] = 0, 0, totals
        entries["offset"][chunks] = offset_to_points + 8 + np.concatenate([[0], np.cumsum(chunk_bytes)[:-1]])
        entries["byte_size"][chunks] = chunk_bytes
        entries = entries[holder == np.arange(len(nodes))]
        pages, root_bytes = hierarchy_pages(entries, int(meta["hierarchy"]["step"]), base=evlr_start + EVLR_HEADER)
        fh.seek(evlr_start)
        fh.write(_vlr("copc", 1000, pages, "EPT hierarchy", extended=True))
        center = np.array(meta["origin_m"]) + side / 2
        info = struct.pack("<3dddQQdd11Q", *center, side / 2, meta["spacing_m"], evlr_start + EVLR_HEADER, root_bytes,
                           0.0, 0.0, *([0] * 11))
        fh.seek(0)
        fh.write(_header(meta, int(counts.sum()), offset_to_points, 3, evlr_start,
                         np.stack([lo, hi]) if len(src) else np.zeros((2, 3), np.int64)))
        fh.write(_vlr("copc", 1, info, "copc info") + _vlr("laszip encoded", 22204, vlr.record_data(), "lazrs")
                 + _extra_bytes_vlr())
        total = fh.seek(0, os.SEEK_END)
    os.replace(tmp, target)
    return {"points": int(counts.sum()), "nodes": len(entries), "bytes": total}


def _warmup() -> None:
    data = np.zeros(64, np.uint8)
    out = np.zeros(POINT.itemsize, np.uint8)
    for w in (2, 4):
        _records_kernel(data, data.view("<u2"), data.view("<u4"), np.zeros(1, np.int64), np.ones(1, np.int64),
                        np.array([w]), np.zeros((1, 3), np.int64), out, out.view("<u2"), out.view("<u4"),
                        np.zeros(3, np.int64), np.zeros(3, np.int64))


__all__ = ["MIN_NODE_POINTS", "POINT", "chunk_holders", "write_copc"]
