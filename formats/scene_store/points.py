"""Point tables: the Arrow schema of a frame's points file, building one from NumPy
(:func:`points_table`: positions quantised, each column in the narrowest type its values
allow), gathering rows (:func:`take_rows`), reading columns (:func:`column_values`) and
positions (:func:`positions`, :func:`with_xyz`) back, and checking a schema read from a file.
"""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np
import pyarrow as pa

from engine.arrays import as_points
from formats.errors import FormatError
from formats.scene_store.quantise import (
    QUANT_KEY,
    checked_quantisation,
    dequantise,
    quantisation,
    quantisation_metadata,
    quantise,
)

# stored column -> the Arrow types it may have, narrowest first (points_table picks the first
# that holds the frame's values); xq yq zq are required, the rest optional
STORED_TYPES: dict[str, tuple[pa.DataType, ...]] = {
    "xq": (pa.int32(),), "yq": (pa.int32(),), "zq": (pa.int32(),),
    "intensity": (pa.uint8(), pa.uint16(), pa.float32()),
    "r": (pa.uint8(),), "g": (pa.uint8(),), "b": (pa.uint8(),),
    "time_offset_ns": (pa.int32(),),
    "sensor_id": (pa.uint8(),),
    "ring": (pa.uint8(), pa.uint16()),
    "camera_mask": (pa.uint8(), pa.uint16(), pa.uint32()),
    "box_id": (pa.int8(), pa.int16(), pa.int32()),
}
XYZ_COLUMNS = ("x", "y", "z")  # float32, computed on read (with_xyz), never stored
COLUMN_TYPES: dict[str, tuple[pa.DataType, ...]] = {**{c: (pa.float32(),) for c in XYZ_COLUMNS}, **STORED_TYPES}
REQUIRED_COLUMNS = ("xq", "yq", "zq")
QUANTISED_COLUMNS = REQUIRED_COLUMNS
MAX_CAMERAS = 32  # camera_mask is at most uint32


def arrow_array(a: np.ndarray, kind: pa.DataType) -> pa.Array:
    """A non-null Arrow array viewing the contiguous 1-D array ``a`` (no copy, no pandas)."""
    return pa.Array.from_buffers(kind, len(a), [None, pa.py_buffer(a)])


def _narrowest(value: np.ndarray, kinds: tuple[pa.DataType, ...]) -> np.dtype | None:
    """The first integer dtype of ``kinds`` that holds every (integer-valued) ``value``; None if none does."""
    vmin, vmax = (value.min(), value.max()) if value.size else (0, 0)
    for kind in kinds:
        dtype = np.dtype(kind.to_pandas_dtype())
        if dtype.kind in "iu" and np.iinfo(dtype).min <= vmin and vmax <= np.iinfo(dtype).max:
            return dtype
    return None


def _integer_column(name: str, value: np.ndarray, kinds: tuple[pa.DataType, ...]) -> np.ndarray:
    """``value`` (any integer dtype) as a contiguous array of the narrowest of ``kinds`` that
    holds it; ValueError naming the column and the range if none does."""
    if not np.issubdtype(value.dtype, np.integer):
        raise ValueError(f"{name} must have an integer dtype, got {value.dtype}")
    dtype = _narrowest(value, kinds)
    if dtype is None:
        widest = np.iinfo(kinds[-1].to_pandas_dtype())
        raise ValueError(f"{name} values outside {widest.dtype} range [{widest.min}, {widest.max}]: "
                         f"found [{value.min()}, {value.max()}]")
    return np.ascontiguousarray(value, dtype=dtype)


def _intensity_column(value: np.ndarray) -> np.ndarray:
    """Intensities as uint8 or uint16 when they are whole numbers in that range (what an 8- or
    16-bit sensor reports, in whichever dtype its reader gave), else as float32."""
    if value.dtype.kind not in "iuf":
        raise ValueError(f"intensity must be numeric, got {value.dtype}")
    if value.dtype.kind == "f":
        value = np.ascontiguousarray(value, dtype=np.float32)
        if not np.all(np.rint(value) == value):
            return value  # fractional, NaN or infinite values: float32 as given
    dtype = _narrowest(value, STORED_TYPES["intensity"])
    return np.ascontiguousarray(value, dtype=np.float32 if dtype is None else dtype)


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
    """An Arrow table in the store's point schema (what a points file holds). Columns view
    NumPy arrays (no copy where an input already has the column's stored dtype and is
    contiguous; pandas is never imported).

    Args:
        xyz: ``(N, 3)`` positions in metres, world frame relative to the scene origin; float64
            input gives the most accurate quantised columns (float32 input is used as is).
        intensity: ``(N,)`` any numeric dtype: stored as uint8 or uint16 when every value is
            a whole number in that range, else as float32. rgb: ``(N, 3) uint8``.
            time_offset_ns: ``(N,)`` ns from the frame timestamp, stored as int32 (so within
            ±2.147 s). sensor_id: ``(N,) uint8``. ring: ``(N,)`` uint8 or uint16.
            camera_mask: ``(N,)`` bit k = camera k sees the point, uint8, uint16 or uint32.
            box_id: ``(N,)`` row of the frame's boxes file, -1 for none, int8, int16 or int32.
            Integer columns take any integer dtype and are stored in the narrowest of their
            types that holds the values (ValueError naming the column and the range if none does).
        quantum_m: quantisation step (the ``scale``); the ``offset`` is the per-axis minimum
            rounded down to a multiple of it, so quantised values are ``>= 0``:
            ``xq = rint((x - offset) / scale)`` (half to even), which must fit int32.
    """
    p = as_points(xyz)
    q32, offset = quantise(p, quantum_m)
    n = len(p)
    cols: dict[str, np.ndarray] = {c: q32[i] for i, c in enumerate(QUANTISED_COLUMNS)}

    def column(name: str, value: np.ndarray | None, shape: tuple[int, ...] = ()) -> np.ndarray | None:
        if value is None:
            return None
        a = np.asarray(value)
        if a.shape != (n, *shape):
            raise ValueError(f"{name} must have shape {(n, *shape)}, got {a.shape}")
        return a

    if (a := column("intensity", intensity)) is not None:
        cols["intensity"] = _intensity_column(a)
    if (a := column("rgb", rgb, (3,))) is not None:
        a = _integer_column("rgb", a, STORED_TYPES["r"])
        cols.update({c: np.ascontiguousarray(a[:, i]) for i, c in enumerate("rgb")})
    for name, value in (("time_offset_ns", time_offset_ns), ("sensor_id", sensor_id), ("ring", ring),
                        ("camera_mask", camera_mask), ("box_id", box_id)):
        if (a := column(name, value)) is not None:
            cols[name] = _integer_column(name, a, STORED_TYPES[name])
    return _table(cols, {QUANT_KEY: quantisation_metadata(quantum_m, offset)})


def _table(cols: dict[str, np.ndarray], metadata: dict[bytes, bytes] | None) -> pa.Table:
    """A non-null table of the 1-D arrays ``cols`` (no copies), each typed as its dtype."""
    arrays = [arrow_array(v, pa.from_numpy_dtype(v.dtype)) for v in cols.values()]
    schema = pa.schema([pa.field(k, a.type, nullable=False) for k, a in zip(cols, arrays)], metadata=metadata)
    return pa.Table.from_arrays(arrays, schema=schema)


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
    arrays = [arrow_array(column_values(table, name).take(r), table.schema.field(name).type)
              for name in table.schema.names]
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


def column_values(table: pa.Table, name: str,
                  types: Mapping[str, tuple[pa.DataType, ...]] = COLUMN_TYPES) -> np.ndarray:
    """Column ``name`` of a point table (or of another store table whose column types are
    ``types``, e.g. the radar schema) as a 1-D NumPy array of its stored dtype (one of the
    column's types: widen it where a fixed type is needed): a view of its buffer when it has
    one chunk (else a copy), without pandas. ValueError for a column outside the schema
    or with nulls."""
    col = table.column(name)
    if col.type not in types.get(name, ()):
        raise ValueError(f"column {name!r} of type {col.type} is not in the schema")
    chunk = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    if chunk.null_count:
        raise ValueError(f"column {name!r} has nulls; point tables have none")
    dtype = np.dtype(col.type.to_pandas_dtype())
    if len(chunk) == 0:
        return np.empty(0, dtype)
    return np.frombuffer(chunk.buffers()[1], dtype, len(chunk), chunk.offset * dtype.itemsize)


def positions(table: pa.Table, dtype: type = np.float64) -> np.ndarray:
    """``(N, 3)`` positions of a point table in metres (world frame, scene origin):
    ``offset + q * scale`` in float64 from its quantised columns and metadata, as ``dtype``
    (float32: the float32 nearest to each; see :func:`quantise.dequantise`)."""
    scale, offset = quantisation(table.schema)
    xq, yq, zq = (column_values(table, c) for c in QUANTISED_COLUMNS)
    return dequantise((xq, yq, zq), scale, offset, dtype)


def with_xyz(table: pa.Table) -> pa.Table:
    """``table`` with float32 ``x y z`` columns (:func:`positions`) in front of its own."""
    xyz = positions(table, np.float32)
    cols = {c: xyz[:, k] for k, c in enumerate(XYZ_COLUMNS)}
    cols.update({c: column_values(table, c) for c in table.schema.names})
    return _table(cols, table.schema.metadata)


def check_points_schema(schema: pa.Schema, path: str | os.PathLike | None = None) -> None:
    """FormatError unless ``schema`` is the store's point schema: only stored columns, each of
    one of its types, the required ones, all or none of r g b, the quantisation metadata."""
    for name in schema.names:
        if name not in STORED_TYPES:
            raise FormatError(path, None, f"only columns {list(STORED_TYPES)} (x y z are computed on read), "
                                          f"found {name!r}")
        if schema.field(name).type not in STORED_TYPES[name]:
            kinds = " or ".join(map(str, STORED_TYPES[name]))
            raise FormatError(path, None, f"column {name!r} of type {kinds}, found {schema.field(name).type}")
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise FormatError(path, None, f"required columns {missing}")
    if len({"r", "g", "b"} & set(schema.names)) not in (0, 3):
        raise FormatError(path, None, "colour columns r, g, b all present or all absent")
    checked_quantisation(schema, path)


def _warmup() -> None:
    for dtype in (np.float64, np.float32):
        with_xyz(take_rows(points_table(np.zeros((2, 3), dtype)), np.array([1])))
