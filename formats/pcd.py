"""PCD (Point Cloud Library) files: ascii, binary and binary_compressed, read and written.

Any FIELDS with TYPE ``I``/``U`` (SIZE 1, 2, 4, 8) or ``F`` (SIZE 4, 8) and any COUNT;
PCL padding fields named ``_`` are skipped. Fields map to Sweep columns by the rule of
:mod:`formats.point_columns` (``x y z`` → ``xyz``, ``intensity``, ``ring``, time offsets,
packed ``rgb``; the rest to ``extra`` with their original dtype, ``(N, COUNT)`` for
COUNT > 1; organized clouds get ``extra["row_col"]``). :func:`read_pcd_header` gives
WIDTH, HEIGHT and VIEWPOINT.

Binary data is read through NumPy views of the file bytes; binary_compressed is
LZF-decoded in numba (:mod:`formats.lzf`) and laid out field by field; ascii is parsed
by the numba kernel of :mod:`formats.ascii_numbers`. Nothing is sized by a header number
the file cannot hold: binary needs ``POINTS * row`` bytes, binary_compressed an
uncompressed size LZF can reach from its bytes, ascii two bytes per value.

Positions are float32; ``origin=`` stores them relative to a float64 origin, and without
one float64 ``x y z`` that float32 would move by over 1 mm raise (:mod:`formats.positions`).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from engine.sweep import Sweep
from formats import ascii_numbers, lzf
from formats.errors import FormatError, load_source
from formats.point_columns import columns_to_sweep, pack_rgb
from formats.positions import check_origin, with_relative_xyz

ENCODINGS = ("ascii", "binary", "binary_compressed")
_KEYWORDS = ("VERSION", "FIELDS", "COLUMNS", "SIZE", "TYPE", "COUNT", "WIDTH", "HEIGHT", "VIEWPOINT", "POINTS", "DATA")
_SIZES = {"I": (1, 2, 4, 8), "U": (1, 2, 4, 8), "F": (4, 8)}
_PAD = "_"
_MAX_ROW_BYTES = 1 << 40  # beyond any file; keeps the shapes of zero-point columns valid


@dataclass(frozen=True)
class PcdHeader:
    """A parsed PCD header.

    ``fields``, ``sizes``, ``types`` (``"I"``/``"U"``/``"F"``) and ``counts`` are parallel;
    ``points == width * height``; ``viewpoint`` is ``(tx, ty, tz, qw, qx, qy, qz)``;
    ``data_offset`` is the byte offset of the point data after the ``DATA`` line.
    """

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    viewpoint: tuple[float, ...]
    data: str
    data_offset: int
    version: str = "0.7"

    def dtypes(self) -> list[np.dtype]:
        """Little-endian NumPy dtype of each field's scalar values."""
        return [np.dtype(f"<{'iuf'['IUF'.index(t)]}{s}") for t, s in zip(self.types, self.sizes)]

    @property
    def row_bytes(self) -> int:
        return sum(s * c for s, c in zip(self.sizes, self.counts))


def parse_pcd_header(path: str, data: bytes) -> PcdHeader:
    """The header of the PCD file whose first bytes (through the DATA line) are ``data``;
    ``path`` names the file in errors (:class:`FormatError` with the line's offset)."""
    values: dict[str, list[str]] = {}
    where: dict[str, int] = {}
    pos = 0
    while True:
        end = data.find(b"\n", pos)
        if end < 0:
            raise FormatError(path, pos, "a header line; the file ends before the DATA line")
        try:
            line = data[pos:end].decode("ascii").strip()
        except UnicodeDecodeError:
            raise FormatError(path, pos, "an ASCII PCD header line") from None
        line_at, pos = pos, end + 1
        if not line or line.startswith("#"):
            continue
        key, *rest = line.split()
        if key not in _KEYWORDS:
            raise FormatError(path, line_at, f"a PCD header keyword ({', '.join(_KEYWORDS)}), found {key!r}")
        key = "FIELDS" if key == "COLUMNS" else key
        if key in values:
            raise FormatError(path, line_at, f"one {key} line, found a second")
        values[key], where[key] = rest, line_at
        if key == "DATA":
            break

    def ints(key: str, default: list[int] | None = None) -> list[int]:
        if key not in values:
            if default is None:
                raise FormatError(path, where.get("DATA"), f"a {key} line in the header")
            return default
        try:
            out = [int(v) for v in values[key]]
        except ValueError:
            raise FormatError(path, where[key], f"integers after {key}, found {values[key]}") from None
        if any(v < 0 for v in out):
            raise FormatError(path, where[key], f"non-negative integers after {key}, found {out}")
        return out

    if "FIELDS" not in values:
        raise FormatError(path, where["DATA"], "a FIELDS line in the header")
    fields = values["FIELDS"]
    n_fields = len(fields)
    if not n_fields:
        raise FormatError(path, where["FIELDS"], "at least one field name after FIELDS")
    sizes, counts = ints("SIZE"), ints("COUNT", [1] * n_fields)
    types = values.get("TYPE")
    if types is None:
        raise FormatError(path, where["DATA"], "a TYPE line in the header")
    for key, vals in (("SIZE", sizes), ("TYPE", types), ("COUNT", counts)):
        if len(vals) != n_fields:
            raise FormatError(path, where.get(key), f"{n_fields} {key} values (one per field), found {len(vals)}")
    for name, t, s, c in zip(fields, types, sizes, counts):
        if t not in _SIZES:
            raise FormatError(path, where["TYPE"], f"TYPE I, U or F for field {name!r}, found {t!r}")
        if s not in _SIZES[t]:
            raise FormatError(path, where["SIZE"], f"SIZE in {_SIZES[t]} for TYPE {t} field {name!r}, found {s}")
        if c < 1:
            raise FormatError(path, where["COUNT"], f"COUNT >= 1 for field {name!r}, found {c}")
    if sum(s * c for s, c in zip(sizes, counts)) > _MAX_ROW_BYTES:
        raise FormatError(path, where.get("COUNT"),
                          f"a point of at most {_MAX_ROW_BYTES} bytes (SIZE x COUNT summed), found {sizes} x {counts}")
    named = [f for f in fields if f != _PAD]
    if len(set(named)) != len(named):
        raise FormatError(path, where["FIELDS"], f"distinct field names, found {fields}")
    (width,) = _single(path, "WIDTH", ints("WIDTH"), where)
    (height,) = _single(path, "HEIGHT", ints("HEIGHT", [1]), where)
    (points,) = _single(path, "POINTS", ints("POINTS", [width * height]), where)
    if points != width * height:
        raise FormatError(path, where.get("POINTS"), f"POINTS = WIDTH * HEIGHT = {width * height}, found {points}")
    viewpoint: tuple[float, ...] = (0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    if "VIEWPOINT" in values:
        try:
            viewpoint = tuple(float(v) for v in values["VIEWPOINT"])
        except ValueError:
            viewpoint = ()
        if len(viewpoint) != 7:
            raise FormatError(path, where["VIEWPOINT"], f"7 numbers after VIEWPOINT, found {values['VIEWPOINT']}")
    encoding = values["DATA"][0].lower() if len(values["DATA"]) == 1 else ""
    if encoding not in ENCODINGS:
        raise FormatError(path, where["DATA"], f"DATA ascii, binary or binary_compressed, found {values['DATA']}")
    return PcdHeader(
        fields=tuple(fields),
        sizes=tuple(sizes),
        types=tuple(types),
        counts=tuple(counts),
        width=width,
        height=height,
        points=points,
        viewpoint=viewpoint,
        data=encoding,
        data_offset=pos,
        version=" ".join(values.get("VERSION", ["0.7"])),
    )


def _single(path: str, key: str, vals: list[int], where: dict[str, int]) -> list[int]:
    if len(vals) != 1:
        raise FormatError(path, where.get(key), f"one integer after {key}, found {vals}")
    return vals


def read_pcd_header(path: str | os.PathLike) -> PcdHeader:
    """Parse only the header of a PCD file (reads at most the first 64 KiB, then more if needed)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(65536)
            if b"\nDATA" not in head and b"DATA" not in head[:5]:
                head += fh.read()
    except OSError as err:
        raise FormatError(path, None, f"a readable file ({err.strerror})") from None
    return parse_pcd_header(os.fspath(path), head)


def _columns_binary(path: str, hdr: PcdHeader, data: bytes) -> dict[str, np.ndarray]:
    n, row = hdr.points, hdr.row_bytes
    have = len(data) - hdr.data_offset
    if have < n * row:
        raise FormatError(path, len(data), f"{n} points x {row} bytes = {n * row} bytes of binary data, found {have}")
    if n == 0:
        return _no_points(hdr)
    cols: dict[str, np.ndarray] = {}
    offset = 0
    for name, dt, c in zip(hdr.fields, hdr.dtypes(), hdr.counts):
        if name != _PAD:
            shape = (n, c) if c > 1 else (n,)
            cols[name] = np.ndarray(shape, dt, data, hdr.data_offset + offset, (row, dt.itemsize) if c > 1 else (row,))
        offset += dt.itemsize * c
    return cols


def _no_points(hdr: PcdHeader) -> dict[str, np.ndarray]:
    """Empty ``(0,)`` or ``(0, COUNT)`` columns of every field."""
    return {name: np.empty((0, c) if c > 1 else (0,), dt)
            for name, dt, c in zip(hdr.fields, hdr.dtypes(), hdr.counts) if name != _PAD}


def _columns_compressed(path: str, hdr: PcdHeader, data: bytes) -> dict[str, np.ndarray]:
    n, row = hdr.points, hdr.row_bytes
    start = hdr.data_offset
    if len(data) < start + 8:
        raise FormatError(path, len(data), "8 bytes of compressed and uncompressed sizes after DATA binary_compressed")
    packed, size = struct.unpack_from("<II", data, start)
    # PCL leaves padding fields ("_") out of the compressed planes; accept them present too
    fields = [(f, dt, c) for f, dt, c in zip(hdr.fields, hdr.dtypes(), hdr.counts) if f != _PAD]
    if size != n * row:
        row = sum(dt.itemsize * c for _, dt, c in fields)
        if size != n * row:
            raise FormatError(path, start + 4, f"uncompressed size {n} points x {row} bytes = {n * row}, found {size}")
    else:
        fields = list(zip(hdr.fields, hdr.dtypes(), hdr.counts))
    if len(data) < start + 8 + packed:
        raise FormatError(path, len(data), f"{packed} bytes of LZF data, found {len(data) - start - 8}")
    src = np.frombuffer(data, dtype=np.uint8, count=packed, offset=start + 8)
    blocks = np.cumsum([0] + [n * dt.itemsize * c for _, dt, c in fields])
    if packed == 0 and size == 0:
        raw = np.empty(0, dtype=np.uint8)
    else:
        raw, status, in_off, out_off = lzf.decompress(src, size)
        if status == lzf.TOO_LARGE:
            raise FormatError(path, start + 4, f"{lzf.MESSAGES[status]}: {size} bytes from {packed}")
        if status != lzf.OK:
            k = min(int(np.searchsorted(blocks, out_off, side="right")) - 1, len(fields) - 1)
            raise FormatError(
                path, start + 8 + in_off,
                f"{lzf.MESSAGES[status]} (decoding field {fields[k][0]!r}, output byte {out_off})"
            )
    cols = {}
    for (name, dt, c), b in zip(fields, blocks):
        if name != _PAD:
            arr = np.frombuffer(raw, dtype=dt, count=n * c, offset=int(b))
            cols[name] = arr.reshape(n, c) if c > 1 else arr
    return cols


def _columns_ascii(path: str, hdr: PcdHeader, data: bytes) -> dict[str, np.ndarray]:
    if hdr.points == 0:
        return _no_points(hdr)
    have, per_point = len(data) - hdr.data_offset, sum(hdr.counts)
    if 2 * per_point - 1 > have:  # a token and a separator per value
        raise FormatError(path, len(data), f"a point of {per_point} ascii values (at least {2 * per_point - 1} bytes), "
                                           f"found {have} bytes")
    kinds, dtypes, names = [], [], []
    for name, t, s, c, dt in zip(hdr.fields, hdr.types, hdr.sizes, hdr.counts, hdr.dtypes()):
        if name == _PAD:
            kind = ascii_numbers.SKIP
        elif t == "F":
            kind = ascii_numbers.PACKED_RGB if name in ("rgb", "rgba") and s == 4 and c == 1 else ascii_numbers.FLOAT
        else:
            kind = ascii_numbers.INT if t == "I" else ascii_numbers.UINT
        kinds += [kind] * c
        dtypes += [dt] * c
        names += [name] * c
    buf = np.frombuffer(data, dtype=np.uint8)
    values, _ = ascii_numbers.parse_columns(path, buf, hdr.data_offset, hdr.points, np.array(kinds), dtypes, names,
                                            True, True)
    cols: dict[str, np.ndarray] = {}
    k = 0  # stored column (padding fields have tokens, no stored column)
    for name, c in zip(hdr.fields, hdr.counts):
        if name != _PAD:
            cols[name] = np.stack(values[k : k + c], axis=1) if c > 1 else values[k]
            k += c
    return cols


_READERS = {"ascii": _columns_ascii, "binary": _columns_binary, "binary_compressed": _columns_compressed}


def read_pcd(
    path: str | os.PathLike, *, origin: np.ndarray | None = None, drop_nan: bool = False, timestamp_ns: int = 0
) -> Sweep:
    """Read a PCD file into a Sweep (``frame="sensor"``).

    Args:
        origin: ``(3,) float64`` metres subtracted from ``x y z`` in float64 before they are
            stored as float32 (``xyz = float32(position - origin)``; pass the scene origin
            for positions far from zero, e.g. a map in UTM). None: the positions as stored;
            float64 (or 32/64-bit integer) ``x y z`` that float32 would move by over 1 mm
            raise ``FormatError`` asking for an origin (:mod:`formats.positions`).
        drop_nan: drop points whose x, y or z is not finite (default: keep every point, as
            an organized cloud needs).
        timestamp_ns: the sweep timestamp to record (PCD has none).
    """
    origin = None if origin is None else check_origin(origin)
    p = os.fspath(path)
    _, data = load_source(path)
    hdr = parse_pcd_header(p, data)
    cols = with_relative_xyz(p, _READERS[hdr.data](p, hdr, data), origin)
    return columns_to_sweep(
        p, cols, width=hdr.width, height=hdr.height, drop_nan=drop_nan, timestamp_ns=timestamp_ns
    )


# ---------------------------------------------------------------- writer

_CORE_FIELDS = (("intensity", "intensity"), ("time_offset_ns", "time_offset_ns"), ("ring", "ring"),
                ("return_index", "return_index"), ("sensor_id", "sensor_id"))  # fmt: skip


def _sweep_fields(sweep: Sweep) -> tuple[list[tuple[str, np.ndarray]], int, int]:
    """``(name, (N,) or (N, count) array)`` per field, width and height."""
    fields: list[tuple[str, np.ndarray]] = [("x", sweep.xyz[:, 0]), ("y", sweep.xyz[:, 1]), ("z", sweep.xyz[:, 2])]
    for attr, name in _CORE_FIELDS:
        value = getattr(sweep, attr)
        if value is not None:
            fields.append((name, value))
    n = len(sweep)
    width, height = n, 1
    for name, value in sweep.extra.items():
        if name == "row_col":
            height = int(value[:, 0].max()) + 1 if n else 1
            width = n // height
            idx = np.arange(n)
            if width * height != n or not (np.array_equal(value[:, 0], idx // width)
                                           and np.array_equal(value[:, 1], idx % width)):
                raise ValueError(
                    "Sweep.extra['row_col'] is not a complete row-major grid; drop it to write unorganized")
            continue
        channels = 3 if name == "rgb" else 4
        if name in ("rgb", "rgba") and value.dtype == np.uint8 and value.ndim == 2 and value.shape[1] == channels:
            value = pack_rgb(value)
        kind = value.dtype.kind
        if kind not in "iuf" or value.ndim > 2 or value.dtype.itemsize not in _SIZES["F" if kind == "f" else "I"]:
            raise ValueError(f"Sweep.extra[{name!r}] has dtype {value.dtype} shape {value.shape}; "
                             "PCD needs int/uint 1-8 or float 4/8 bytes, (N,) or (N, count)")
        if not name or any(ch.isspace() for ch in name):
            raise ValueError(f"Sweep.extra name {name!r} cannot be a PCD field name")
        fields.append((name, value))
    return fields, width, height


def write_pcd(path: str | os.PathLike, sweep: Sweep, encoding: str = "binary") -> None:
    """Write ``sweep`` as a PCD v0.7 file in ``encoding`` (``ascii``, ``binary``, ``binary_compressed``).

    Fields: ``x y z`` (F4), then the present core columns (``intensity`` F4,
    ``time_offset_ns`` I8, ``ring`` U2, ``return_index``/``sensor_id`` U1), then ``extra``
    columns with their dtype (``rgb``/``rgba`` uint8 colours packed into one U4 field).
    ``extra["row_col"]`` (a full row-major grid) sets WIDTH/HEIGHT instead of being written.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    fields, width, height = _sweep_fields(sweep)
    n = len(sweep)
    counts = [1 if v.ndim == 1 else v.shape[1] for _, v in fields]
    dts = [v.dtype.newbyteorder("<") for _, v in fields]
    header = "\n".join(
        [
            "# .PCD v0.7 - Point Cloud Data file format",
            "VERSION 0.7",
            "FIELDS " + " ".join(name for name, _ in fields),
            "SIZE " + " ".join(str(dt.itemsize) for dt in dts),
            "TYPE " + " ".join(dt.kind.upper() for dt in dts),
            "COUNT " + " ".join(map(str, counts)),
            f"WIDTH {width}",
            f"HEIGHT {height}",
            "VIEWPOINT 0 0 0 1 0 0 0",
            f"POINTS {n}",
            f"DATA {encoding}",
            "",
        ]
    ).encode("ascii")
    body: bytes | memoryview
    if encoding == "binary":
        rec = np.empty(n, dtype=[(f"f{k}", dt, (c,) if c > 1 else ()) for k, (dt, c) in enumerate(zip(dts, counts))])
        for k, (_, v) in enumerate(fields):
            rec[f"f{k}"] = v
        body = rec.view(np.uint8).data  # written from the array's buffer, not copied into bytes
    elif encoding == "binary_compressed":
        raw = b"".join(np.ascontiguousarray(v, dtype=dt).tobytes() for (_, v), dt in zip(fields, dts))
        packed = lzf.compress(raw)
        body = struct.pack("<II", len(packed), len(raw)) + packed
    else:
        body = _ascii_body(fields)
    with open(path, "wb") as fh:
        fh.write(header)
        fh.write(body)


def _ascii_body(fields: list[tuple[str, np.ndarray]]) -> bytes:
    """One line per point; floats with enough digits to round-trip exactly."""
    cols: list[np.ndarray] = []
    fmts: list[str] = []
    for _, v in fields:
        for c in (v[:, None] if v.ndim == 1 else v).T:
            cols.append(c)
            fmts.append({"f": "%.9g" if c.dtype.itemsize == 4 else "%.17g"}.get(c.dtype.kind, "%d"))
    if not cols or not len(cols[0]):
        return b""
    line = " ".join(fmts)
    rows = zip(*(c.tolist() for c in cols))
    return ("\n".join(line % r for r in rows) + "\n").encode("ascii")
