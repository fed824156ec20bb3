"""The one rule that turns named per-point columns (PCD fields, PLY properties) into a Sweep.

Name mapping (exact, lower-case names):

- ``x``, ``y``, ``z`` → ``xyz`` ``(N, 3) float32`` (required).
- ``intensity`` or ``i`` → ``intensity`` ``float32``.
- ``ring``, ``return_index``, ``sensor_id`` → the core column of that name when every value
  is integral and fits its dtype (else the column stays in ``extra``).
- Time, only where the unit is unambiguous:
  an integer ``time_offset_ns``, ``offset_ns`` or ``t`` (Ouster: uint32 ns) is a
  nanosecond offset; a float ``time``, ``t`` or ``time_offset_s`` (Velodyne / Hesai ROS
  drivers: float seconds from the sweep start) is a second offset, rounded to ns. Either
  becomes ``time_offset_ns``; the first such column wins. A float column with a non-finite
  value or a magnitude over 1e6 s (an absolute time, not an offset) stays in ``extra``. ``timestamp`` and any other
  time-like name (absolute, unit varies between drivers) stays in ``extra`` untouched.
- ``rgb`` / ``rgba`` of 4 bytes (float or uint32 holding ``0xAARRGGBB``) → ``extra["rgb"]``
  ``(N, 3) uint8`` (R, G, B) / ``extra["rgba"]`` ``(N, 4) uint8`` (R, G, B, A).
- Everything else → ``extra[name]`` with its original dtype (``(N, count)`` for COUNT > 1).

Organized clouds (``height > 1``) get ``extra["row_col"]`` ``(N, 2) uint32``: each point's
row and column in the ``height × width`` grid, kept through NaN dropping.
"""

from __future__ import annotations

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.errors import FormatError

_INTENSITY = ("intensity", "i")
_INT_COLUMNS = {"ring": np.uint16, "return_index": np.uint8, "sensor_id": np.uint8}
_TIME_NS = ("time_offset_ns", "offset_ns", "t")
_TIME_S = ("time", "t", "time_offset_s")


def unpack_rgb(packed: np.ndarray, alpha: bool) -> np.ndarray:
    """``(N,)`` 4-byte packed colours ``0xAARRGGBB`` → ``(N, 3|4) uint8`` (R, G, B[, A])."""
    u = np.ascontiguousarray(packed).view(np.uint32)
    shifts = np.array([16, 8, 0, 24] if alpha else [16, 8, 0], dtype=np.uint32)
    return ((u[:, None] >> shifts) & 0xFF).astype(np.uint8)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """``(N, 3|4) uint8`` (R, G, B[, A]) → ``(N,) uint32`` ``0xAARRGGBB`` (alpha 0 if absent)."""
    c = rgb.astype(np.uint32)
    out = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    if rgb.shape[1] == 4:
        out |= c[:, 3] << 24
    return out


@jit
def _interleave3(x: np.ndarray, y: np.ndarray, z: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = (x[i], y[i], z[i])``; inputs float32 of any stride (e.g. views of file rows)."""
    for i in range(out.shape[0]):
        out[i, 0] = x[i]
        out[i, 1] = y[i]
        out[i, 2] = z[i]


def interleave_xyz(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Three ``(N,)`` columns (any real dtype, any stride) → ``(N, 3) float32`` C-contiguous."""
    cols = [c if c.dtype == np.float32 else c.astype(np.float32) for c in (x, y, z)]
    out = np.empty((len(x), 3), dtype=np.float32)
    _interleave3(cols[0], cols[1], cols[2], out)
    return out


def _integral(col: np.ndarray, dtype: type) -> np.ndarray | None:
    info = np.iinfo(dtype)
    if col.size == 0 or np.can_cast(col.dtype, dtype):
        return col.astype(dtype)
    if col.dtype.kind == "f" and not np.array_equal(col, np.round(col)):
        return None
    if col.min() < info.min or col.max() > info.max:
        return None
    return col.astype(dtype)


def columns_to_sweep(
    path: str,
    columns: dict[str, np.ndarray],
    *,
    width: int,
    height: int,
    drop_nan: bool,
    timestamp_ns: int,
    frame: str = "sensor",
) -> Sweep:
    """Map ``columns`` (``(N,)`` or ``(N, count)`` arrays, or a ready ``"xyz"``) to a Sweep.

    ``drop_nan`` removes points with a non-finite x, y or z.
    """
    cols = dict(columns)
    if "xyz" in cols:
        xyz = cols.pop("xyz")
    else:
        if not all(k in cols and cols[k].ndim == 1 for k in "xyz"):
            raise FormatError(path, None, f"fields x, y and z (found {sorted(cols)})")
        xyz = interleave_xyz(cols.pop("x"), cols.pop("y"), cols.pop("z"))
    n = len(xyz)
    extra: dict[str, np.ndarray] = {}
    if height > 1:
        idx = np.arange(n, dtype=np.uint32)
        extra["row_col"] = np.stack([idx // np.uint32(width), idx % np.uint32(width)], axis=1)
    if drop_nan:
        keep = np.isfinite(xyz).all(axis=1)
        if not keep.all():
            xyz = xyz[keep]
            cols = {k: v[keep] for k, v in cols.items()}
            extra = {k: v[keep] for k, v in extra.items()}
    core: dict[str, np.ndarray] = {}
    for name, col in cols.items():
        if col.ndim == 1 and name in _INTENSITY and "intensity" not in core:
            core["intensity"] = col.astype(np.float32)
        elif col.ndim == 1 and name in _INT_COLUMNS and name not in core:
            value = _integral(col, _INT_COLUMNS[name])
            if value is None:
                extra[name] = col
            else:
                core[name] = value
        elif col.ndim == 1 and "time_offset_ns" not in core and (
            (name in _TIME_NS and col.dtype.kind in "iu") or (name in _TIME_S and col.dtype.kind == "f")
        ):
            if col.dtype.kind == "f":
                if not np.isfinite(col).all() or (col.size and np.abs(col).max() > 1e6):
                    extra[name] = col
                    continue
                core["time_offset_ns"] = np.round(col.astype(np.float64) * 1e9).astype(np.int64)
            elif col.dtype == np.uint64 and col.size and col.max() > np.iinfo(np.int64).max:
                extra[name] = col
            else:
                core["time_offset_ns"] = col.astype(np.int64)
        elif col.ndim == 1 and name in ("rgb", "rgba") and col.dtype.itemsize == 4:
            extra[name] = unpack_rgb(col, alpha=name == "rgba")
        else:
            extra[name] = col
    return Sweep(xyz=xyz, timestamp_ns=timestamp_ns, frame=frame, extra=extra, **core)


def _warmup() -> None:
    rows = np.zeros((2, 5), dtype=np.float32)
    c = np.zeros(2, dtype=np.float32)
    readonly = np.frombuffer(rows.tobytes(), dtype=np.float32).reshape(2, 5)[:, 0]
    for a in (rows[:, 0], c, readonly, np.frombuffer(c.tobytes(), dtype=np.float32)):
        interleave_xyz(a, a, a)
