"""An octree layer (:mod:`formats.octree`) as COPC: a LAZ 1.4 file whose octree is in its VLRs
(https://copc.io), which PDAL, QGIS, Potree, laspy's ``CopcReader`` and untwine users open.

The file: the 375-byte LAS 1.4 header; VLRs ``copc``/1 (the COPC info: cube centre and
half-size, root spacing, where the root hierarchy page is; first, as COPC requires),
``laszip encoded``/22204 (variable-size chunks) and ``LASF_Spec``/4 (extra bytes); the point
data, one LAZ chunk per octree node in hierarchy order (nodes without points have none)
and the chunk table; then the EVLR ``copc``/1000, the hierarchy pages (the layer's, with
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
from pathlib import Path

import lazrs
import numpy as np

from formats.octree import OctreeLayer, hierarchy_pages

POINT = np.dtype([("X", "<i4"), ("Y", "<i4"), ("Z", "<i4"), ("intensity", "<u2"), ("returns", "u1"),
                  ("flags", "u1"), ("classification", "u1"), ("user_data", "u1"), ("scan_angle", "<i2"),
                  ("point_source_id", "<u2"), ("gps_time", "<f8"), ("red", "<u2"), ("green", "<u2"),
                  ("blue", "<u2"), ("count", "<u4"), ("first_frame", "<u4"), ("last_frame", "<u4")])
POINT_FORMAT, EXTRA_BYTES = 7, 12
EXTRA = (("count", "voxel's merged point count"), ("first_frame", "first frame that saw the voxel"),
         ("last_frame", "last frame that saw the voxel"))
HEADER_SIZE, VLR_HEADER, EVLR_HEADER = 375, 54, 60
BATCH_POINTS = 1 << 21  # points compressed per call (bounds the memory of the conversion)


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


def _records(node: dict[str, np.ndarray]) -> np.ndarray:
    out = np.zeros(len(node["x"]), POINT)
    out["X"], out["Y"], out["Z"] = node["x"], node["y"], node["z"]
    out["intensity"], out["returns"] = node["intensity16"], 0x11
    for src, dst in (("r", "red"), ("g", "green"), ("b", "blue")):
        out[dst] = node[src].astype(np.uint16) * 257
    out["count"], out["first_frame"], out["last_frame"] = node["count"], node["first"], node["last"]
    return out


def write_copc(layer_dir: str | os.PathLike, path: str | os.PathLike) -> dict[str, int]:
    """Write the octree layer at ``layer_dir`` as the COPC file ``path`` (replaced atomically).
    Returns ``{"points", "nodes", "bytes"}``."""
    layer = OctreeLayer.open(layer_dir)
    meta, nodes = layer.metadata, layer.nodes
    side = meta["side_q"] * meta["quantum_m"]
    vlr = lazrs.LazVlr.new_for_compression(POINT_FORMAT, EXTRA_BYTES, True)
    info_size = 160
    vlrs_size = VLR_HEADER + info_size + VLR_HEADER + len(vlr.record_data()) + len(_extra_bytes_vlr())
    offset_to_points = HEADER_SIZE + vlrs_size
    full = [k for k in range(len(nodes)) if nodes[k]["point_count"] > 0]
    target = Path(path)
    tmp = target.with_name(target.name + ".tmp")
    lo, hi = np.full(3, np.iinfo(np.int64).max), np.full(3, np.iinfo(np.int64).min)
    with open(tmp, "w+b") as fh:
        fh.write(bytes(offset_to_points))
        compressor = lazrs.ParLasZipCompressor(fh, vlr)
        batch: list[bytes] = []
        size = 0
        for k in full:
            node = layer.node(k)
            for a, name in enumerate("xyz"):
                lo[a], hi[a] = min(lo[a], node[name].min()), max(hi[a], node[name].max())
            batch.append(_records(node).tobytes())
            size += len(node["x"])
            if size >= BATCH_POINTS:
                compressor.compress_chunks(batch)
                batch, size = [], 0
        if batch:
            compressor.compress_chunks(batch)
        compressor.done()
        evlr_start = fh.seek(0, os.SEEK_END)
        fh.seek(offset_to_points)
        table = lazrs.read_chunk_table(fh, vlr)
        sizes = np.array([b for _, b in table], np.int64)
        if len(table) != len(full) or any(c != nodes[k]["point_count"] for (c, _), k in zip(table, full)):
            raise RuntimeError("LAZ chunks do not match the octree's nodes")
        entries = nodes.copy()
        entries["offset"], entries["byte_size"] = 0, 0
        entries["offset"][full] = offset_to_points + 8 + np.concatenate([[0], np.cumsum(sizes)[:-1]])
        entries["byte_size"][full] = sizes
        pages, root_bytes = hierarchy_pages(entries, int(meta["hierarchy"]["step"]), base=evlr_start + EVLR_HEADER)
        fh.seek(evlr_start)
        fh.write(_vlr("copc", 1000, pages, "EPT hierarchy", extended=True))
        center = np.array(meta["origin_m"]) + side / 2
        info = struct.pack("<3dddQQdd11Q", *center, side / 2, meta["spacing_m"], evlr_start + EVLR_HEADER, root_bytes,
                           0.0, 0.0, *([0] * 11))
        bounds = np.stack([lo, hi]) if full else np.zeros((2, 3), np.int64)
        fh.seek(0)
        fh.write(_header(meta, int(nodes["point_count"].sum()), offset_to_points, 3, evlr_start, bounds))
        fh.write(_vlr("copc", 1, info, "copc info") + _vlr("laszip encoded", 22204, vlr.record_data(), "lazrs")
                 + _extra_bytes_vlr())
        total = fh.seek(0, os.SEEK_END)
    os.replace(tmp, target)
    return {"points": int(nodes["point_count"].sum()), "nodes": len(nodes), "bytes": total}


__all__ = ["POINT", "write_copc"]
