"""Point tables: the Arrow schema of a frame's points file, building one from NumPy
(:func:`points_table`, with the int32 quantisation), gathering rows (:func:`take_rows`),
reading columns back (:func:`column_values`) and checking a schema read from a file.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pyarrow as pa

from engine._jit import jit
from engine.arrays import as_points
from formats.errors import FormatError

QUANT_KEY = b"fathom.quantisation"

# column -> Arrow type; x y z xq yq zq are required, the rest optional
COLUMN_TYPES: dict[str, pa.DataType] = {
    "x": pa.float32(), "y": pa.float32(), "z": pa.float32(),
    "xq": pa.int32(), "yq": pa.int32(), "zq": pa.int32(),
    "intensity": pa.float32(),
    "r": pa.uint8(), "g": pa.uint8(), "b": pa.uint8(),
    "time_offset_ns": pa.int32(),
    "sensor_id": pa.uint8(),
    "ring": pa.uint16(),
    "camera_mask": pa.uint32(),
    "box_id": pa.int32(),
}
NUMPY_TYPES: dict[str, np.dtype] = {k: np.dtype(t.to_pandas_dtype()) for k, t in COLUMN_TYPES.items()}
REQUIRED_COLUMNS = ("x", "y", "z", "xq", "yq", "zq")
QUANTISED_COLUMNS = ("xq", "yq", "zq")
MAX_CAMERAS = 32  # camera_mask is uint32

_ROUND = 4503599627370496.0  # 2**52: for 0 <= q < 2**52, (q + 2**52) - 2**52 == rint(q) (half to even)
_BLOCK = 512  # points per block of _quantise_kernel (3 float64 rows of it stay in L1)


@jit
def _split_bounds_kernel(p, x, y, z, lo, hi):
    """x[i], y[i], z[i] = float32 of p[i]; lo, hi = per-axis min, max of p. Returns False if
    any coordinate is NaN or infinite (lo, hi are then meaningless)."""
    lx = ly = lz = np.inf
    hx = hy = hz = -np.inf
    nonfinite = 0.0  # v - v is 0 for finite v, NaN for NaN and ±inf; NaN sticks in the sum
    for i in range(p.shape[0]):
        a, b, c = p[i, 0], p[i, 1], p[i, 2]
        x[i] = a
        y[i] = b
        z[i] = c
        lx, ly, lz = min(lx, a), min(ly, b), min(lz, c)
        hx, hy, hz = max(hx, a), max(hy, b), max(hz, c)
        nonfinite += (a - a) + (b - b) + (c - c)
    lo[0], lo[1], lo[2] = lx, ly, lz
    hi[0], hi[1], hi[2] = hx, hy, hz
    return nonfinite == 0.0


@jit
def _quantise_kernel(p, offset, quantum, q32):
    """q32[k, i] = rint((p[i, k] - offset[k]) / quantum) as int32, rounding half to even via
    ``(q + 2**52) - 2**52`` (exact for 0 <= q < 2**52; the caller checks the range first).
    Blocks of points are transposed into a scratch buffer so the arithmetic vectorises."""
    n = p.shape[0]
    buf = np.empty((3, _BLOCK))
    for start in range(0, n, _BLOCK):
        m = min(_BLOCK, n - start)
        for j in range(m):
            buf[0, j] = p[start + j, 0]
            buf[1, j] = p[start + j, 1]
            buf[2, j] = p[start + j, 2]
        for k in range(3):
            o = offset[k]
            row = buf[k]
            out = q32[k, start:start + m]
            for j in range(m):
                out[j] = np.int32(((row[j] - o) / quantum + _ROUND) - _ROUND)


def arrow_array(a: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A non-null Arrow array viewing the contiguous 1-D array ``a`` (no copy, no pandas)."""
    return pa.Array.from_buffers(kind, len(a), [None, pa.py_buffer(a)])


def _integer_column(name: str, value: np.ndarray, dtype: type) -> np.ndarray:
    """``value`` (any integer dtype) as contiguous ``dtype``; ValueError naming the column and
    the range if a value does not fit."""
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {value.dtype}")
    if value.dtype != dtype and value.size:
        info = np.iinfo(dtype)
        vmin, vmax = value.min(), value.max()
        if vmin < info.min or vmax > info.max:
            raise ValueError(f"{name} values outside {np.dtype(dtype).name} range [{info.min}, {info.max}]: "
                             f"found [{vmin}, {vmax}]")
    return np.ascontiguousarray(value, dtype=dtype)


def points_table(
    xyz: np.ndarray,
    *,
    intensity: np.ndarray | None = None,
    rgb: np.ndarray | None = None,
    time_offset_ns: np.ndarray | None = None,
    sensor_id: np.ndarray | None = None,
    ring: np.ndarray | None = None,
    camera_mask: np.ndarray | None = None,
    box_id: np.ndarray | None = None,
    quantum_m: float = 1e-3,
) -> pa.Table:
    """An Arrow table in the store's point schema. Columns view NumPy arrays (no copy where an
    input already has the column's dtype and is contiguous; pandas is never imported).

    Args:
        xyz: ``(N, 3)`` positions in metres, world frame relative to the scene origin; float64
            input gives the most accurate quantised columns (float32 input is used as is).
        intensity: ``(N,) float32``; rgb: ``(N, 3) uint8``; time_offset_ns: ``(N,)`` ns from
            the frame timestamp, stored as int32 (so within ±2.147 s); sensor_id: ``(N,)
            uint8``; ring: ``(N,) uint16``; camera_mask: ``(N,) uint32`` bit k = camera k sees
            the point; box_id: ``(N,) int32`` row of the frame's boxes file, -1 for none.
            Integer columns take any integer dtype whose values fit (ValueError naming the
            column and the range otherwise).
        quantum_m: quantisation step (the ``scale``); the ``offset`` is the per-axis minimum
            rounded down to a multiple of it, so quantised values are ``>= 0``:
            ``xq = rint((x - offset) / scale)`` (half to even), which must fit int32.
    """
    p = as_points(xyz)
    if not (math.isfinite(quantum_m) and quantum_m > 0):
        raise ValueError(f"quantum_m must be positive, got {quantum_m}")
    n = len(p)
    xyz32 = np.empty((3, n), np.float32)
    lo, hi = np.empty(3), np.empty(3)
    if not _split_bounds_kernel(p, xyz32[0], xyz32[1], xyz32[2], lo, hi):
        raise ValueError("xyz contains NaN or infinite values")
    offset = np.floor(lo / quantum_m) * quantum_m if n else np.zeros(3)
    q32 = np.empty((3, n), np.int32)
    if n:
        # rounding is monotonic, so the largest quantised value is that of the maximum
        top = ((hi - offset) / quantum_m + _ROUND) - _ROUND
        if top.max() > np.iinfo(np.int32).max:
            raise ValueError(f"extent {hi - lo} m does not fit int32 at quantum_m={quantum_m}")
        _quantise_kernel(p, offset, float(quantum_m), q32)
    cols: dict[str, np.ndarray] = {c: xyz32[i] for i, c in enumerate("xyz")}
    cols.update({c + "q": q32[i] for i, c in enumerate("xyz")})

    def column(name: str, value: np.ndarray | None, shape: tuple[int, ...] = ()) -> np.ndarray | None:
        if value is None:
            return None
        a = np.asarray(value)
        if a.shape != (n, *shape):
            raise ValueError(f"{name} must have shape {(n, *shape)}, got {a.shape}")
        return a

    if (a := column("intensity", intensity)) is not None:
        cols["intensity"] = np.ascontiguousarray(a, dtype=np.float32)
    if (a := column("rgb", rgb, (3,))) is not None:
        a = _integer_column("rgb", a, np.uint8)
        cols.update({c: np.ascontiguousarray(a[:, i]) for i, c in enumerate("rgb")})
    for name, value in (("time_offset_ns", time_offset_ns), ("sensor_id", sensor_id), ("ring", ring),
                        ("camera_mask", camera_mask), ("box_id", box_id)):
        if (a := column(name, value)) is not None:
            cols[name] = _integer_column(name, a, NUMPY_TYPES[name])
    quant = {"scale": [quantum_m] * 3, "offset": [float(v) for v in offset]}
    schema = pa.schema([pa.field(k, COLUMN_TYPES[k], nullable=False) for k in cols],
                       metadata={QUANT_KEY: json.dumps(quant).encode()})
    return pa.Table.from_arrays([arrow_array(v, COLUMN_TYPES[k]) for k, v in cols.items()], schema=schema)


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """The rows ``rows`` of a point table (a level of detail), same schema and quantisation.

    Args:
        table: a table of :func:`points_table` (any chunking).
        rows: ``(M,)`` integer row indices in ``[0, N)``, in the order wanted (repeats allowed).
    Columns are gathered with NumPy from views of the table's buffers (no pandas). ValueError
    for rows of another shape, dtype or range, or a column outside the point schema.
    """
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"rows must be a 1-D integer array, got shape {r.shape} dtype {r.dtype}")
    n = table.num_rows
    if r.size and (r.min() < 0 or r.max() >= n):
        raise ValueError(f"rows must be in [0, {n}), found [{r.min()}, {r.max()}]")
    r = r.astype(np.intp, copy=False)
    arrays = [arrow_array(column_values(table, name).take(r), COLUMN_TYPES[name]) for name in table.schema.names]
    return pa.Table.from_arrays(arrays, schema=table.schema)


def increasing_below(rows: np.ndarray, n: int) -> bool:
    """Whether the integer ``rows`` are strictly increasing within ``[0, n)`` (a level of detail)."""
    return not rows.size or (rows[0] >= 0 and rows[-1] < n and not np.any(rows[1:] <= rows[:-1]))


def checked_lod_rows(rows: np.ndarray, n: int, level: int) -> np.ndarray:
    """Level ``level``'s rows as the little-endian uint32 array its ``.rows`` file holds;
    ValueError unless they are a 1-D integer array, strictly increasing, within ``[0, n)``."""
    r = np.asarray(rows)
    if r.ndim != 1 or not (np.issubdtype(r.dtype, np.integer) or r.size == 0):
        raise ValueError(f"level {level} rows must be a 1-D integer array, got shape {r.shape} dtype {r.dtype}")
    if not increasing_below(r, n):
        raise ValueError(f"level {level} rows must be strictly increasing within [0, {n})")
    return r.astype("<u4", copy=False)


def column_values(table: pa.Table, name: str) -> np.ndarray:
    """Column ``name`` of a point table as a 1-D NumPy array of its dtype: a view of its
    buffer when it has one chunk (else a copy), without pandas. ValueError for a column
    outside the point schema or with nulls."""
    col = table.column(name)
    if COLUMN_TYPES.get(name) != col.type:
        raise ValueError(f"column {name!r} of type {col.type} is not in the point schema")
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if chunk.null_count:
        raise ValueError(f"column {name!r} has nulls; point tables have none")
    dtype = NUMPY_TYPES[name]
    if len(chunk) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype.itemsize)


def quantisation(schema: pa.Schema) -> tuple[np.ndarray, np.ndarray]:
    """``(scale (3,), offset (3,))`` float64 of a point table: ``x = offset + xq * scale``."""
    raw = (schema.metadata or {}).get(QUANT_KEY)
    if raw is None:
        raise ValueError("schema has no fathom.quantisation metadata")
    d = json.loads(raw)
    return np.asarray(d["scale"], float), np.asarray(d["offset"], float)


def check_points_schema(schema: pa.Schema, path: str | os.PathLike | None = None) -> None:
    """FormatError unless ``schema`` is the store's point schema (required columns, dtypes)."""
    for name in schema.names:
        if name not in COLUMN_TYPES:
            raise FormatError(path, None, f"only columns {list(COLUMN_TYPES)}, found {name!r}")
        if schema.field(name).type != COLUMN_TYPES[name]:
            raise FormatError(path, None, f"column {name!r} of type {COLUMN_TYPES[name]}, found {schema.field(name).type}")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise FormatError(path, None, f"required columns {missing}")
    if len({"r", "g", "b"} & set(schema.names)) not in (0, 3):
        raise FormatError(path, None, "colour columns r, g, b all present or all absent")
    try:
        scale, offset = quantisation(schema)
    except (ValueError, KeyError, TypeError):
        raise FormatError(path, None, "schema metadata fathom.quantisation {scale: [3], offset: [3]}") from None
    if scale.shape != (3,) or offset.shape != (3,) or not np.all(np.isfinite(np.r_[scale, offset])) or np.any(scale <= 0):
        raise FormatError(path, None, "quantisation scale (3 positive) and offset (3 finite)")


def _warmup() -> None:
    for dtype in (np.float64, np.float32):
        take_rows(points_table(np.zeros((2, 3), dtype)), np.array([1]))
