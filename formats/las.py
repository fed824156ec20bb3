"""LAS / LAZ point clouds through laspy (LAZ decompressed by the lazrs backend).

Coordinates: laspy applies the header scale and offset to the integer X, Y, Z in float64;
the Sweep stores ``xyz`` as float32 *relative to an origin* so that no precision is lost
(float32 is ~0.06 m coarse at 6e5 m, typical of UTM eastings). The origin is a keyword:
given, it is used as is (pass your scene origin); omitted, it is :func:`las_origin`
(the header's minimum corner floored to whole metres). Absolute float64 coordinates are
``sweep.xyz.astype(np.float64) + origin``. The frame is ``"world"``: the file's projected
CRS shifted by the origin.

Columns: ``intensity`` → ``intensity`` (float32); ``return_number`` → ``return_index``
(``return_number - 1``) when every value is ≥ 1, else it stays in ``extra``; ``red``,
``green``, ``blue`` → ``extra["rgb"]`` ``(N, 3) uint16``; every other dimension
(``classification``, ``gps_time`` in GPS seconds, extra bytes...) → ``extra`` with its dtype.
"""

from __future__ import annotations

import os

import laspy
import numpy as np

from engine.sweep import Sweep
from formats.errors import FormatError

_SKIP = {"X", "Y", "Z", "intensity", "red", "green", "blue"}


def _open_error(path: str | os.PathLike, exc: Exception) -> FormatError:
    return FormatError(path, None, f"a valid LAS/LAZ file ({type(exc).__name__}: {exc})")


def las_origin(path: str | os.PathLike) -> np.ndarray:
    """The default origin of :func:`read_las`: ``floor(header mins)``, ``(3,) float64``, metres."""
    try:
        with laspy.open(path) as reader:
            mins = np.asarray(reader.header.mins, dtype=np.float64)
    except (laspy.errors.LaspyException, OSError, ValueError) as exc:
        raise _open_error(path, exc) from None
    return np.floor(mins)


def read_las(
    path: str | os.PathLike, *, origin: np.ndarray | None = None, timestamp_ns: int = 0, drop_nan: bool = False
) -> Sweep:
    """Read a LAS or LAZ file into a Sweep with ``xyz = float32(xyz_f64 - origin)``.

    Args:
        origin: ``(3,) float64`` metres subtracted in float64; default :func:`las_origin`.
        timestamp_ns: the sweep timestamp to record.
        drop_nan: accepted for a uniform reader signature; LAS coordinates are always finite.
    """
    try:
        las = laspy.read(path, laz_backend=laspy.LazBackend.Lazrs)
    except (laspy.errors.LaspyException, OSError, ValueError, EOFError) as exc:
        raise _open_error(path, exc) from None
    if origin is None:
        origin = np.floor(np.asarray(las.header.mins, dtype=np.float64))
    origin = np.asarray(origin, dtype=np.float64)
    if origin.shape != (3,) or not np.isfinite(origin).all():
        raise ValueError(f"origin must be 3 finite numbers, got shape {origin.shape}")
    n = len(las.points)
    xyz = np.empty((n, 3), dtype=np.float32)
    for k, axis in enumerate("xyz"):
        xyz[:, k] = np.asarray(las[axis], dtype=np.float64) - origin[k]
    dims = list(las.point_format.dimension_names)
    extra: dict[str, np.ndarray] = {}
    core: dict[str, np.ndarray] = {"intensity": np.asarray(las["intensity"], dtype=np.float32)}
    if all(c in dims for c in ("red", "green", "blue")):
        extra["rgb"] = np.stack([np.asarray(las[c]) for c in ("red", "green", "blue")], axis=1).astype(np.uint16)
    for name in dims:
        if name in _SKIP:
            continue
        col = np.asarray(las[name])
        if name == "return_number" and (n == 0 or col.min() >= 1):
            core["return_index"] = (col - 1).astype(np.uint8)
        else:
            extra[name] = col
    sweep = Sweep(xyz=xyz, timestamp_ns=timestamp_ns, frame="world", extra=extra, **core)
    if drop_nan:
        sweep = sweep.select(np.isfinite(sweep.xyz).all(axis=1))
    return sweep
