"""Positions as a Sweep stores them: ``float32`` metres relative to a ``float64`` origin.

A Sweep's ``xyz`` is float32, which is ~1 mm coarse at 16 km and ~0.06 m at 6e5 m (a UTM
easting). Readers whose files can hold more (LAS, float64 or 32-bit integer PCD/PLY
fields) take an ``origin``: ``xyz = float32(position_f64 - origin)``, subtracted in
float64, so ``xyz.astype(np.float64) + origin`` gives back the file's positions to float32
precision *around the origin*. Without an origin, positions that float32 cannot hold to
:data:`MAX_ROUNDING_M` raise :class:`FormatError` instead of coming back silently moved.
"""

from __future__ import annotations

import numpy as np

from formats.errors import FormatError
from formats.point_columns import interleave_xyz

MAX_ROUNDING_M = 1e-3
"""Largest move float32 rounding may cause, metres, when a reader is given no origin."""


def check_origin(origin: np.ndarray | list[float] | tuple[float, ...]) -> np.ndarray:
    """``origin`` as ``(3,) float64`` metres; ``ValueError`` unless 3 finite numbers."""
    out = np.asarray(origin, dtype=np.float64)
    if out.shape != (3,) or not np.isfinite(out).all():
        raise ValueError(f"origin must be 3 finite numbers (metres), got {np.asarray(origin)!r}")
    return out


def floor_origin(xyz: np.ndarray) -> np.ndarray:
    """``floor`` of the per-axis minimum of the finite rows of ``(N, 3) float64`` positions,
    ``(3,) float64`` metres; zeros when no row is finite."""
    finite = xyz[np.isfinite(xyz).all(axis=1)]
    return np.floor(finite.min(axis=0)) if len(finite) else np.zeros(3)


def _holds_exactly(dtype: np.dtype) -> bool:
    return np.can_cast(dtype, np.float32, casting="safe")


def relative_xyz(
    path: str, x: np.ndarray, y: np.ndarray, z: np.ndarray, origin: np.ndarray | None
) -> np.ndarray:
    """``(N, 3) float32`` of the columns ``x y z`` (any real dtype, any stride) minus ``origin``.

    ``origin`` ``(3,) float64`` metres is subtracted in float64. ``None``: the positions as
    stored; columns float32 cannot hold exactly (float64, 32/64-bit integers) are checked,
    and ``FormatError`` names the file when float32 would move a point by more than
    :data:`MAX_ROUNDING_M`. Either way a finite position float32 cannot hold at all raises.
    """
    if origin is None and all(_holds_exactly(c.dtype) for c in (x, y, z)):
        return interleave_xyz(x, y, z)
    xyz64 = np.stack([x, y, z], axis=1).astype(np.float64, copy=False)
    if origin is not None:
        xyz64 = xyz64 - check_origin(origin)
    with np.errstate(invalid="ignore", over="ignore"):
        xyz = xyz64.astype(np.float32)
        if np.isinf(xyz).sum() != np.isinf(xyz64).sum():  # a finite position beyond float32
            reach = np.abs(xyz64[np.isfinite(xyz64)]).max()
            raise FormatError(path, None,
                              f"positions within float32's range (3.4e38 m) of the origin, found {reach:.6g} m")
        if origin is not None:
            return xyz
        moved = np.abs(xyz.astype(np.float64) - xyz64)
    moved = moved[np.isfinite(moved)]
    worst = float(moved.max()) if moved.size else 0.0
    if worst > MAX_ROUNDING_M:
        reach = float(np.abs(xyz64[np.isfinite(xyz64)]).max())
        dtypes = "/".join(sorted({str(c.dtype) for c in (x, y, z)}))
        raise FormatError(
            path,
            None,
            f"positions float32 holds to {MAX_ROUNDING_M} m: the {dtypes} x y z reach {reach:.12g} m, where float32 "
            f"moves a point by up to {worst:.3g} m; pass origin= (metres, e.g. the scene origin) to keep them exact",
        )
    return np.ascontiguousarray(xyz)


def with_relative_xyz(path: str, columns: dict[str, np.ndarray], origin: np.ndarray | None) -> dict[str, np.ndarray]:
    """``columns`` with 1-D ``x y z`` replaced by ``"xyz"`` from :func:`relative_xyz`; unchanged
    when one of them is missing or not 1-D (``columns_to_sweep`` names what is wrong)."""
    if not all(k in columns and columns[k].ndim == 1 for k in "xyz"):
        return columns
    cols = dict(columns)
    cols["xyz"] = relative_xyz(path, cols.pop("x"), cols.pop("y"), cols.pop("z"), origin)
    return cols
