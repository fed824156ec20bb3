"""Per-point segmentation labels as compact bytes, and the scene's class list.

A frame's labels are two per-point arrays, ``class_id (N,) uint16`` and ``instance_id (N,)
uint32`` (in the order of the frame's points file). They are stored *dictionary and
run-length encoded*, then deflated: the distinct ``(class, instance)`` pairs of the frame
(sorted), each point's pair index, and runs of equal indices along the point order (a LiDAR
sweep in firing order has long runs: ground, then a wall, ...). All little-endian::

    header  (24 bytes)  magic b"FSEG", version u8 = 1, codec u8 (0: raw, 1: zlib), u16 0,
                        n_points u32, n_pairs u32, n_runs u32, payload bytes u32
    payload (deflated)  pair classes n_pairs × u16, pair instances n_pairs × u32,
                        run lengths n_runs × u32, run pair indices n_runs × (u8 | u16 | u32:
                        the narrowest that holds n_pairs − 1)

The map's labels (:func:`encode_map`) are voxel keys (:mod:`engine.segmentation_map`,
strictly increasing) with a label each: ``b"FSMP"``, version u8 = 1, 3 × u8 0, n_keys u32,
key bytes u32, then the keys' first value and successive differences as u64, deflated,
then the labels of the keys as above (``n_points = n_keys``).

Decoders check every count against the bytes there are before allocating (a length never
exceeds what the payload can hold), inflate at most the expected size, and raise
:class:`~formats.errors.FormatError` naming ``where``, the byte offset and what was expected.

The class list (:func:`classes_from_json`) is ``[{"id", "name", "color": [r, g, b]}, ...]``:
ids unique in ``0 .. 65534`` (65535 is reserved: "not set in this layer"), id 0 present
(it means unlabelled), names unique and non-empty, colours three bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from formats.errors import FormatError

MAGIC, MAP_MAGIC, VERSION = b"FSEG", b"FSMP", 1
RAW, ZLIB = 0, 1
_HEAD = struct.Struct("<4sBBHIIII")
_MAP_HEAD = struct.Struct("<4sB3xII")
MAX_CLASS_ID = 0xFFFE
_MAX_COUNT = 1 << 31


@dataclass(frozen=True)
class SegClass:
    """One class of the scene's list: id (uint16), name, display colour (r, g, b)."""

    id: int
    name: str
    color: tuple[int, int, int]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "color": list(self.color)}


def classes_from_json(doc: Any, where: str = "classes") -> tuple[SegClass, ...]:
    """The class list of ``doc`` (see the module docstring), sorted by id; ``ValueError``
    naming the entry (``where[i].field``) otherwise."""
    if not isinstance(doc, list):
        raise ValueError(f"{where}: a list of classes")
    out, ids, names = [], set(), set()
    for i, c in enumerate(doc):
        if not isinstance(c, dict):
            raise ValueError(f"{where}[{i}]: an object with id, name, color")
        cid, name, color = c.get("id"), c.get("name"), c.get("color", [128, 128, 128])
        if not isinstance(cid, int) or isinstance(cid, bool) or not 0 <= cid <= MAX_CLASS_ID or cid in ids:
            raise ValueError(f"{where}[{i}].id: a unique integer in 0..{MAX_CLASS_ID}, got {cid!r}")
        if not isinstance(name, str) or not name or name in names:
            raise ValueError(f"{where}[{i}].name: a unique non-empty string, got {name!r}")
        if (not isinstance(color, list) or len(color) != 3
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in color)):
            raise ValueError(f"{where}[{i}].color: three integers 0..255, got {color!r}")
        ids.add(cid)
        names.add(name)
        out.append(SegClass(cid, name, (color[0], color[1], color[2])))
    if 0 not in ids:
        raise ValueError(f"{where}: class id 0 (unlabelled) must be listed")
    return tuple(sorted(out, key=lambda c: c.id))


def _index_dtype(n_pairs: int) -> np.dtype:
    return np.dtype("<u1" if n_pairs <= 1 << 8 else "<u2" if n_pairs <= 1 << 16 else "<u4")


def encode_labels(class_id: np.ndarray, instance_id: np.ndarray, level: int = 6) -> bytes:
    """Bytes of per-point labels ``class_id (N,)`` (uint16 values), ``instance_id (N,)``
    (uint32 values); ``level`` the zlib level (0: stored raw)."""
    c = np.asarray(class_id)
    inst = np.asarray(instance_id)
    if c.ndim != 1 or inst.shape != c.shape:
        raise ValueError(f"class_id and instance_id must be (N,) arrays, got {c.shape} and {inst.shape}")
    n = len(c)
    if n >= _MAX_COUNT:
        raise ValueError(f"at most {_MAX_COUNT - 1} points, got {n}")
    packed = (c.astype(np.uint64) << np.uint64(32)) | inst.astype(np.uint64)
    pairs, index = np.unique(packed, return_inverse=True)
    starts = np.flatnonzero(np.diff(index)) + 1 if n else np.zeros(0, np.int64)
    bounds = np.concatenate([[0], starts, [n]]) if n else np.zeros(1, np.int64)
    lengths = np.diff(bounds).astype("<u4")
    values = index[bounds[:-1]].astype(_index_dtype(len(pairs))) if n else np.zeros(0, _index_dtype(0))
    payload = b"".join([(pairs >> np.uint64(32)).astype("<u2").tobytes(), (pairs & np.uint64(0xFFFFFFFF)).astype("<u4")
                        .tobytes(), lengths.tobytes(), values.tobytes()])
    codec = ZLIB if level else RAW
    body = zlib.compress(payload, level) if level else payload
    return _HEAD.pack(MAGIC, VERSION, codec, 0, n, len(pairs), len(lengths), len(body)) + body


def _inflate(body: bytes, codec: int, size: int, where: str, offset: int) -> bytes:
    if codec == RAW:
        data = body
    elif codec == ZLIB:
        d = zlib.decompressobj()
        try:
            data = d.decompress(body, size + 1)
        except zlib.error as exc:
            raise FormatError(where, offset, f"a zlib stream ({exc})") from None
        if not d.eof:
            raise FormatError(where, offset, f"a zlib stream of {size} bytes")
    else:
        raise FormatError(where, 5, f"codec 0 (raw) or 1 (zlib), got {codec}")
    if len(data) != size:
        raise FormatError(where, offset, f"{size} bytes of labels after inflating, got {len(data)}")
    return data


def decode_labels(data: bytes, where: str = "<labels>", n_points: int | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(class_id (N,) uint16, instance_id (N,) uint32)`` of :func:`encode_labels` bytes;
    ``n_points``, when given, must match. Raises :class:`FormatError`."""
    if len(data) < _HEAD.size:
        raise FormatError(where, 0, f"a {_HEAD.size}-byte segmentation header, got {len(data)} bytes")
    magic, version, codec, _, n, n_pairs, n_runs, n_body = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise FormatError(where, 0, f"magic {MAGIC!r} version {VERSION}, got {magic!r} version {version}")
    if n_points is not None and n != n_points:
        raise FormatError(where, 8, f"labels for the frame's {n_points} points, got {n}")
    if n_body != len(data) - _HEAD.size:
        raise FormatError(where, 20, f"{len(data) - _HEAD.size} payload bytes as stored, header says {n_body}")
    if n_pairs > n or n_runs > n or (n and not (n_pairs and n_runs)) or n >= _MAX_COUNT:
        raise FormatError(where, 12, f"1..{n} pairs and runs for {n} points, got {n_pairs} and {n_runs}")
    idx = _index_dtype(n_pairs)
    size = n_pairs * 6 + n_runs * (4 + idx.itemsize)
    if codec == RAW and size != n_body or codec == ZLIB and size > 1032 * n_body + 64:
        raise FormatError(where, 20, f"a payload that can hold {size} bytes, got {n_body}")
    raw = _inflate(data[_HEAD.size:], codec, size, where, _HEAD.size)
    o = 0
    pc = np.frombuffer(raw, "<u2", n_pairs, o)
    o += 2 * n_pairs
    pi = np.frombuffer(raw, "<u4", n_pairs, o)
    o += 4 * n_pairs
    lengths = np.frombuffer(raw, "<u4", n_runs, o)
    o += 4 * n_runs
    values = np.frombuffer(raw, idx, n_runs, o)
    if int(lengths.sum(dtype=np.uint64)) != n or (n_runs and (lengths.min() == 0 or values.max() >= n_pairs)):
        raise FormatError(where, _HEAD.size, f"non-empty runs of pair indices below {n_pairs} covering {n} points")
    index = np.repeat(values, lengths)
    return pc[index].astype(np.uint16), pi[index].astype(np.uint32)


def encode_map(keys: np.ndarray, class_id: np.ndarray, instance_id: np.ndarray, level: int = 6) -> bytes:
    """Bytes of voxel labels: ``keys (M,) int64`` strictly increasing and >= 0 with their
    ``class_id (M,)`` and ``instance_id (M,)``."""
    k = np.asarray(keys, np.int64)
    if k.ndim != 1 or (len(k) and (k[0] < 0 or np.any(k[1:] <= k[:-1]))):
        raise ValueError("keys must be (M,) non-negative and strictly increasing")
    deltas = np.diff(k, prepend=np.int64(0)).astype("<u8").tobytes()
    body = zlib.compress(deltas, level) if level else deltas
    return (_MAP_HEAD.pack(MAP_MAGIC, VERSION, len(k), len(body)) + bytes([ZLIB if level else RAW]) + body
            + encode_labels(class_id, instance_id, level))


def decode_map(data: bytes, where: str = "<map labels>") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(keys (M,) int64, class_id (M,) uint16, instance_id (M,) uint32)`` of
    :func:`encode_map` bytes; raises :class:`FormatError`."""
    head = _MAP_HEAD.size + 1
    if len(data) < head:
        raise FormatError(where, 0, f"a {head}-byte map header, got {len(data)} bytes")
    magic, version, m, n_body = _MAP_HEAD.unpack_from(data)
    if magic != MAP_MAGIC or version != VERSION:
        raise FormatError(where, 0, f"magic {MAP_MAGIC!r} version {VERSION}, got {magic!r} version {version}")
    if n_body > len(data) - head or m >= _MAX_COUNT or (data[head - 1] == ZLIB and 8 * m > 1032 * n_body + 64):
        raise FormatError(where, 12, f"{m} keys in at most {len(data) - head} bytes, header says {n_body}")
    raw = _inflate(data[head:head + n_body], data[head - 1], 8 * m, where, head)
    keys = np.cumsum(np.frombuffer(raw, "<u8", m).astype(np.int64), dtype=np.int64)
    if m and (keys[0] < 0 or np.any(np.diff(keys) <= 0)):
        raise FormatError(where, head, "non-negative, strictly increasing voxel keys")
    class_id, instance_id = decode_labels(data[head + n_body:], where, m)
    return keys, class_id, instance_id
