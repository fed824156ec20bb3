"""PLY point clouds: ascii, binary_little_endian and binary_big_endian, read and written.

Only the ``vertex`` element becomes the Sweep; elements before it (with or without list
properties) are walked and skipped, elements after it are ignored. Vertex scalar
properties map to Sweep columns by the rule of :mod:`formats.point_columns`, with
``red green blue`` (uchar) combined into ``extra["rgb"]`` ``(N, 3) uint8``, except ``t``:
in PLY it is the texture coordinate of ``s t``, kept in ``extra["t"]``, never a time (a
time comes from ``time``, ``time_offset_s`` or ``time_offset_ns``). List properties of the
vertex element are skipped (a Sweep column needs one row per point). Positions are
float32, relative to ``origin`` when one is given (:mod:`formats.positions`).

Every count in the header is checked against the bytes left before anything is sized by
it; a repeated property name raises ``FormatError``.

Binary rows are NumPy views of the file bytes when the vertex has no list property; rows
with lists are located by a numba walk (bounds-checked), ascii by the numba parser of
:mod:`formats.ascii_numbers`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats import ascii_numbers
from formats.errors import FormatError, load_source
from formats.point_columns import columns_to_sweep
from formats.positions import check_origin, with_relative_xyz

_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip
_WRITE_TYPES = {"i1": "char", "u1": "uchar", "i2": "short", "u2": "ushort", "i4": "int", "u4": "uint",
                "f4": "float", "f8": "double"}
ENCODINGS = ("ascii", "binary_little_endian", "binary_big_endian")


@dataclass(frozen=True)
class _Property:
    name: str
    dtype: np.dtype  # scalar value type (list items for a list)
    count_dtype: np.dtype | None  # list length type, None for a scalar


@dataclass(frozen=True)
class _Element:
    name: str
    count: int
    properties: tuple[_Property, ...]


def _parse_header(path: str, data: bytes) -> tuple[str, list[_Element], int]:
    """``(encoding, elements, data offset)``."""
    if not data.startswith(b"ply"):
        raise FormatError(path, 0, "the magic line 'ply'")
    end_tag = data.find(b"end_header")
    if end_tag < 0:
        raise FormatError(path, len(data), "an 'end_header' line")
    nl = data.find(b"\n", end_tag)
    body = len(data) if nl < 0 else nl + 1
    encoding = None
    elements: list[_Element] = []
    pos = 0
    for raw in data[:end_tag].split(b"\n"):
        at, pos = pos, pos + len(raw) + 1
        words = raw.decode("ascii", "replace").split()
        if not words or words[0] in ("ply", "comment", "obj_info"):
            continue
        key = words[0]
        try:
            if key == "format":
                encoding = words[1]
                if encoding not in ENCODINGS or words[2] != "1.0":
                    raise ValueError
            elif key == "element":
                elements.append(_Element(words[1], int(words[2]), ()))
                if elements[-1].count < 0:
                    raise ValueError
            elif key == "property" and elements:
                if words[1] == "list":
                    item_dtype, count_dtype = np.dtype(_TYPES[words[3]]), np.dtype(_TYPES[words[2]])
                    if count_dtype.kind == "f":
                        raise ValueError
                    prop = _Property(words[4], item_dtype, count_dtype)
                else:
                    prop = _Property(words[2], np.dtype(_TYPES[words[1]]), None)
                last = elements[-1]
                if any(q.name == prop.name for q in last.properties):
                    raise FormatError(path, at, f"one property {prop.name!r} in element {last.name!r}, found a second")
                elements[-1] = _Element(last.name, last.count, last.properties + (prop,))
            else:
                raise ValueError
        except FormatError:
            raise
        except (ValueError, IndexError, KeyError):
            raise FormatError(
                path, at, "a PLY header line (format <encoding> 1.0 | element <name> <count> | property <type> <name>"
                f" | property list <type> <type> <name>), found {raw!r}"
            ) from None
    if encoding is None:
        raise FormatError(path, 0, "a 'format' line in the PLY header")
    return encoding, elements, body


# status codes of the binary walk
_OK, _TRUNCATED = 0, 1


@jit
def _walk_binary(
    buf: np.ndarray, pos: int, n_rows: int, sizes: np.ndarray, count_sizes: np.ndarray, big: bool, starts: np.ndarray
) -> tuple[int, int, int]:
    """Walk ``n_rows`` rows from ``pos``; property ``p`` is ``sizes[p]`` bytes, or a list whose
    length is a ``count_sizes[p]``-byte unsigned integer. When ``starts`` has rows, it gets
    each property's byte offset. Returns ``(status, offset, row)``."""
    n = buf.shape[0]
    n_props = sizes.shape[0]
    record = starts.shape[0] > 0
    for r in range(n_rows):
        for p in range(n_props):
            if record:
                starts[r, p] = pos
            cs = count_sizes[p]
            if cs == 0:
                pos += sizes[p]
                if pos > n:
                    return _TRUNCATED, n, r
            else:
                if pos + cs > n:
                    return _TRUNCATED, n, r
                length = np.int64(0)
                for b in range(cs):
                    byte = np.int64(buf[pos + (b if big else cs - 1 - b)])
                    length = (length << 8) | byte
                pos += cs + length * sizes[p]
                if pos > n:
                    return _TRUNCATED, n, r
    return _OK, pos, n_rows


def _binary_vertex(path: str, buf: np.ndarray, pos: int, elements: list[_Element], big: bool) -> dict[str, np.ndarray]:
    order: Literal[">", "<"] = ">" if big else "<"
    for el in elements:
        props = el.properties
        has_list = any(p.count_dtype is not None for p in props)
        least = sum((p.dtype if p.count_dtype is None else p.count_dtype).itemsize for p in props)
        if el.count * least > len(buf) - pos:
            raise FormatError(
                path, len(buf),
                f"{el.count} rows of element {el.name!r} of at least {least} bytes, found {len(buf) - pos} bytes"
            )
        if not props:  # rows of no bytes
            if el.name == "vertex":
                return {}
            continue
        if el.name == "vertex":
            if not has_list:
                dt = np.dtype([(p.name, p.dtype.newbyteorder(order)) for p in props])
                rows = np.frombuffer(buf, dtype=dt, count=el.count, offset=pos)
                return {p.name: rows[p.name].astype(p.dtype, copy=False) for p in props}
            starts = np.empty((el.count, len(props)), dtype=np.int64)
        else:
            starts = np.empty((0, len(props)), dtype=np.int64)
            if not has_list:
                pos += el.count * least
                continue
        sizes = np.array([p.dtype.itemsize for p in props], dtype=np.int64)
        count_sizes = np.array([0 if p.count_dtype is None else p.count_dtype.itemsize for p in props], dtype=np.int64)
        status, end, row = _walk_binary(buf, pos, el.count, sizes, count_sizes, big, starts)
        if status != _OK:
            raise FormatError(path, int(end), f"{el.count} rows of element {el.name!r}; the data ends in row {row}")
        if el.name == "vertex":
            cols = {}
            for k, p in enumerate(props):
                if p.count_dtype is None:
                    idx = starts[:, k : k + 1] + np.arange(p.dtype.itemsize)
                    cols[p.name] = buf[idx].copy().view(p.dtype.newbyteorder(order))[:, 0].astype(p.dtype)
            return cols
        pos = int(end)
    raise FormatError(path, None, "a 'vertex' element")


def _ascii_vertex(path: str, buf: np.ndarray, pos: int, elements: list[_Element]) -> dict[str, np.ndarray]:
    for el in elements:
        props = el.properties
        is_vertex = el.name == "vertex"
        kinds, dtypes, names = [], [], []
        for p in props:
            if p.count_dtype is not None:
                kinds.append(ascii_numbers.SKIP_LIST)
            elif not is_vertex:
                kinds.append(ascii_numbers.SKIP)
            else:
                kinds.append({"f": ascii_numbers.FLOAT, "i": ascii_numbers.INT, "u": ascii_numbers.UINT}[p.dtype.kind])
            dtypes.append(p.dtype)
            names.append(p.name)
        values, pos = ascii_numbers.parse_columns(path, buf, pos, el.count, np.array(kinds, dtype=np.int64), dtypes,
                                                  names, False, False)
        if is_vertex:
            stored = [p for p in props if p.count_dtype is None]
            return {p.name: v for p, v in zip(stored, values)}
    raise FormatError(path, None, "a 'vertex' element")


def read_ply(
    path: str | os.PathLike, *, origin: np.ndarray | None = None, drop_nan: bool = False, timestamp_ns: int = 0
) -> Sweep:
    """Read the vertex element of a PLY file into a Sweep (``frame="sensor"``).

    Args:
        origin: ``(3,) float64`` metres subtracted from ``x y z`` in float64 before they are
            stored as float32 (``xyz = float32(position - origin)``; pass the scene origin
            for positions far from zero). None: the positions as stored; double (or 32-bit
            integer) ``x y z`` that float32 would move by over 1 mm raise ``FormatError``
            asking for an origin (:mod:`formats.positions`).
        drop_nan: drop points whose x, y or z is not finite.
        timestamp_ns: the sweep timestamp to record (PLY has none).
    """
    origin = None if origin is None else check_origin(origin)
    p = os.fspath(path)
    _, data = load_source(path)
    encoding, elements, pos = _parse_header(p, data)
    buf = np.frombuffer(data, dtype=np.uint8)
    if encoding == "ascii":
        cols = _ascii_vertex(p, buf, pos, elements)
    else:
        cols = _binary_vertex(p, buf, pos, elements, encoding == "binary_big_endian")
    if all(c in cols and cols[c].dtype == np.uint8 for c in ("red", "green", "blue")):
        cols["rgb"] = np.stack([cols.pop(c) for c in ("red", "green", "blue")], axis=1)
    n = len(next(iter(cols.values()))) if cols else 0
    cols = with_relative_xyz(p, cols, origin)
    texture_t = cols.pop("t", None)
    sweep = columns_to_sweep(p, cols, width=n, height=1, drop_nan=drop_nan, timestamp_ns=timestamp_ns)
    if texture_t is not None:
        sweep.extra["t"] = texture_t[np.isfinite(cols["xyz"]).all(axis=1)] if drop_nan else texture_t
    return sweep


def write_ply(path: str | os.PathLike, sweep: Sweep, encoding: str = "binary_little_endian") -> None:
    """Write ``sweep`` as a PLY vertex element.

    Properties: ``x y z`` float, ``intensity`` float, ``time_offset_s`` double (seconds,
    read back to ``time_offset_ns``), ``ring`` ushort, ``return_index``/``sensor_id`` uchar,
    ``extra["rgb"]`` uint8 as ``red green blue``, other ``(N,)`` extra columns with their
    type. ``extra["row_col"]`` is not written (PLY has no organized layout); other 2-D or
    64-bit integer extra columns raise ``ValueError``.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    props: list[tuple[str, np.ndarray]] = [(a, sweep.xyz[:, k]) for k, a in enumerate("xyz")]
    if sweep.intensity is not None:
        props.append(("intensity", sweep.intensity))
    if sweep.time_offset_ns is not None:
        props.append(("time_offset_s", sweep.time_offset_ns / 1e9))
    for name in ("ring", "return_index", "sensor_id"):
        if getattr(sweep, name) is not None:
            props.append((name, getattr(sweep, name)))
    for name, value in sweep.extra.items():
        if name == "row_col":
            continue
        if name == "rgb" and value.dtype == np.uint8 and value.shape[1:] == (3,):
            props += [(c, value[:, k]) for k, c in enumerate(("red", "green", "blue"))]
        elif value.ndim == 1 and value.dtype.str[1:] in _WRITE_TYPES:
            props.append((name, value))
        else:
            raise ValueError(
                f"Sweep.extra[{name!r}] (dtype {value.dtype}, shape {value.shape}) has no PLY property type")
    order: Literal[">", "<"] = ">" if encoding == "binary_big_endian" else "<"
    dt = np.dtype([(name, np.dtype(v.dtype.str[1:]).newbyteorder(order)) for name, v in props])
    header = ["ply", f"format {encoding} 1.0", f"element vertex {len(sweep)}"]
    header += [f"property {_WRITE_TYPES[dt[name].str[1:]]} {name}" for name, _ in props]
    header.append("end_header\n")
    rows = np.empty(len(sweep), dtype=dt)
    for name, v in props:
        rows[name] = v
    if encoding == "ascii":
        fmts = ["%.9g" if dt[n].str[1:] == "f4" else "%.17g" if dt[n].kind == "f" else "%d" for n, _ in props]
        line = " ".join(fmts)
        body = "".join(line % r + "\n" for r in rows.tolist()).encode("ascii")
    else:
        body = rows.tobytes()
    with open(path, "wb") as fh:
        fh.write("\n".join(header).encode("ascii") + body)


def _warmup() -> None:
    buf = np.frombuffer(b"\x02\x00\x01\x01\x00\x00", dtype=np.uint8)
    sizes = np.array([4, 1], dtype=np.int64)
    count_sizes = np.array([1, 0], dtype=np.int64)
    for big in (False, True):
        _walk_binary(buf, 0, 1, sizes, count_sizes, big, np.empty((1, 2), dtype=np.int64))
