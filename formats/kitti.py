"""KITTI Velodyne ``.bin`` sweeps: N × (x, y, z, reflectance) little-endian float32, no header."""

from __future__ import annotations

import os

import numpy as np

from engine.sweep import Sweep
from formats.errors import FormatError


def _unreadable(path: str | os.PathLike, err: OSError) -> FormatError:
    return FormatError(path, None, f"a readable file ({err.strerror})")


def count_float_records(path: str | os.PathLike, n_fields: int) -> int:
    """Number of ``n_fields``-float32 records in the file (from its size, nothing read);
    ``FormatError`` at the first incomplete record's byte offset if the size is not a multiple,
    or naming the file if it cannot be read."""
    try:
        file_size = os.path.getsize(path)
    except OSError as err:
        raise _unreadable(path, err) from None
    record = 4 * n_fields
    if file_size % record:
        raise FormatError(
            path, file_size - file_size % record,
            f"whole {record}-byte records ({n_fields} float32 each), file has {file_size} bytes"
        )
    return file_size // record


def read_float_records(path: str | os.PathLike, n_fields: int) -> np.ndarray:
    """The file as an ``(N, n_fields) float32`` array; ``FormatError`` if not whole records
    or not readable."""
    n = count_float_records(path, n_fields)
    try:
        rec = np.fromfile(path, dtype="<f4", count=n * n_fields)
    except OSError as err:
        raise _unreadable(path, err) from None
    if len(rec) != n * n_fields:  # the file shrank since its size was taken
        raise FormatError(path, 4 * len(rec), f"{n} records of {n_fields} float32, found {len(rec)} values")
    return rec.reshape(n, n_fields)


def read_kitti_bin(path: str | os.PathLike, *, timestamp_ns: int = 0, drop_nan: bool = False) -> Sweep:
    """Read a KITTI ``.bin`` sweep (``frame="lidar"``, reflectance → ``intensity``).

    Args:
        timestamp_ns: the sweep timestamp to record (KITTI keeps it in a separate file).
        drop_nan: drop points whose x, y or z is not finite.
    """
    rec = read_float_records(path, 4)
    if drop_nan:
        rec = rec[np.isfinite(rec[:, :3]).all(axis=1)]
    return Sweep(xyz=rec[:, :3], intensity=rec[:, 3], timestamp_ns=timestamp_ns, frame="lidar")


def write_kitti_bin(path: str | os.PathLike, sweep: Sweep) -> None:
    """Write ``xyz`` and ``intensity`` (0 where absent) as KITTI float32 records."""
    rec = np.zeros((len(sweep), 4), dtype="<f4")
    rec[:, :3] = sweep.xyz
    if sweep.intensity is not None:
        rec[:, 3] = sweep.intensity
    rec.tofile(path)
