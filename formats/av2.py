"""Argoverse 2 LiDAR sweep ``.feather`` files (Apache Arrow IPC, read with pyarrow).

Columns ``x y z`` (float16 in the released data, widened to float32), ``intensity``,
``laser_number`` → ``ring``, ``offset_ns`` (from the sweep timestamp) → ``time_offset_ns``;
any further column goes to ``extra`` with its dtype. The sweep timestamp is the file name
(``<timestamp_ns>.feather``) unless given.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather

from engine.sweep import Sweep
from formats.errors import FormatError

_CORE = {"intensity": "intensity", "laser_number": "ring", "offset_ns": "time_offset_ns"}


def read_av2_sweep(path: str | os.PathLike, *, timestamp_ns: int | None = None, drop_nan: bool = False) -> Sweep:
    """Read an AV2 sweep (``frame="ego"``: AV2 sweeps are stored in the ego frame).

    Args:
        timestamp_ns: overrides the timestamp parsed from the file name (0 if neither).
        drop_nan: drop points whose x, y or z is not finite.
    """
    try:
        table = feather.read_table(path, memory_map=False)
    except (pa.ArrowException, OSError) as exc:
        raise FormatError(path, None, f"an Arrow IPC (feather) file: {exc}") from None
    names = table.column_names
    if not all(k in names for k in "xyz"):
        raise FormatError(path, None, f"columns x, y and z, found {names}")
    cols: dict[str, np.ndarray] = {}
    for name in names:
        col = table.column(name)
        if col.null_count:
            raise FormatError(path, None, f"column {name!r} without nulls, found {col.null_count}")
        cols[name] = col.to_numpy()
    xyz = np.empty((table.num_rows, 3), dtype=np.float32)
    for k, axis in enumerate("xyz"):
        xyz[:, k] = cols.pop(axis)
    core = {_CORE[k]: cols.pop(k) for k in list(cols) if k in _CORE}
    for name, col in cols.items():
        if col.dtype == np.float16:
            cols[name] = col.astype(np.float32)
    if "time_offset_ns" in core and core["time_offset_ns"].dtype.kind not in "iu":
        raise FormatError(path, None, f"an integer offset_ns column, found {core['time_offset_ns'].dtype}")
    if timestamp_ns is None:
        stem = Path(path).name.removesuffix(".feather")
        timestamp_ns = int(stem) if stem.isdigit() else 0
    sweep = Sweep(xyz=xyz, timestamp_ns=timestamp_ns, frame="ego", extra=cols, **core)
    if drop_nan:
        sweep = sweep.select(np.isfinite(sweep.xyz).all(axis=1))
    return sweep


def write_av2_sweep(path: str | os.PathLike, sweep: Sweep) -> None:
    """Write ``sweep`` in the AV2 layout (float16 ``x y z``, uint8 ``intensity``/``laser_number``,
    int64 ``offset_ns``), for tests and synthetic logs. Absent columns are written as 0."""
    n = len(sweep)
    zeros = np.zeros(n)
    table = pa.table(
        {
            "x": sweep.xyz[:, 0].astype(np.float16),
            "y": sweep.xyz[:, 1].astype(np.float16),
            "z": sweep.xyz[:, 2].astype(np.float16),
            "intensity": (zeros if sweep.intensity is None else sweep.intensity).astype(np.uint8),
            "laser_number": (zeros if sweep.ring is None else sweep.ring).astype(np.uint8),
            "offset_ns": (zeros if sweep.time_offset_ns is None else sweep.time_offset_ns).astype(np.int64),
        }
    )
    feather.write_feather(table, path, compression="uncompressed")
