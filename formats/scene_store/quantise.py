"""Positions as the store keeps them: int32 steps of ``scale`` metres above ``offset``.

``xq = rint((x - offset) / scale)`` (half to even) from float64 positions; read back as
``x = offset + xq * scale`` in float64 (:func:`dequantise`), or its float32 (the columns
:meth:`Scene.points` and the server's payloads serve). The scale and offset are the schema
metadata ``fathom.quantisation`` of each points file.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa

from engine._jit import jit
from formats.errors import FormatError

QUANT_KEY = b"fathom.quantisation"
_ROUND = 4503599627370496.0  # 2**52: for 0 <= q < 2**52, (q + 2**52) - 2**52 == rint(q) (half to even)
_BLOCK = 512  # points per block of _quantise_kernel (3 float64 rows of it stay in L1)


@jit
def _bounds_kernel(p, lo, hi):
    """lo, hi = per-axis min, max of ``p (N, 3)``. Returns False if any coordinate is NaN or
    infinite (lo, hi are then meaningless)."""
    lx = ly = lz = np.inf
    hx = hy = hz = -np.inf
    nonfinite = 0.0  # v - v is 0 for finite v, NaN for NaN and ±inf; NaN sticks in the sum
    for i in range(p.shape[0]):
        a, b, c = p[i, 0], p[i, 1], p[i, 2]
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


@jit
def _dequantise_kernel(q, scale, offset, out):
    """out[k][i] = offset[k] + q[k][i] * scale[k], computed in float64 and stored in out's
    dtype (float32 rounds to nearest, as NumPy's ``astype``)."""
    for k in range(3):
        s, o, src, dst = scale[k], offset[k], q[k], out[k]
        for i in range(src.shape[0]):
            dst[i] = o + src[i] * s


def quantise(p: np.ndarray, quantum_m: float) -> tuple[np.ndarray, np.ndarray]:
    """``(q (3, N) int32, offset (3,) float64)`` of ``(N, 3)`` float64/float32 positions ``p``
    (metres): the offset is the per-axis minimum rounded down to a multiple of ``quantum_m``,
    so ``q >= 0``. ValueError for a non-finite coordinate, a step that is not positive, or an
    extent that does not fit int32 at this step."""
    if not (np.isfinite(quantum_m) and quantum_m > 0):
        raise ValueError(f"quantum_m must be positive, got {quantum_m}")
    n = len(p)
    lo, hi = np.empty(3), np.empty(3)
    if not _bounds_kernel(p, lo, hi):
        raise ValueError("xyz contains NaN or infinite values")
    offset = np.floor(lo / quantum_m) * quantum_m if n else np.zeros(3)
    q32 = np.empty((3, n), np.int32)
    if n:
        # rounding is monotonic, so the largest quantised value is that of the maximum
        top = ((hi - offset) / quantum_m + _ROUND) - _ROUND
        if top.max() > np.iinfo(np.int32).max:
            raise ValueError(f"extent {hi - lo} m does not fit int32 at quantum_m={quantum_m}")
        _quantise_kernel(p, offset, float(quantum_m), q32)
    return q32, offset


def dequantise(q: tuple[np.ndarray, np.ndarray, np.ndarray], scale: np.ndarray, offset: np.ndarray,
               dtype: type = np.float64) -> np.ndarray:
    """``(N, 3)`` positions ``offset + q * scale`` (metres, computed in float64) from the three
    ``(N,) int32`` quantised columns ``q``, as ``dtype``: float64 (C-contiguous), or float32
    (the float32 nearest to each float64 position; the transpose of a C-contiguous ``(3, N)``
    array, so each axis ``out[:, k]`` is a contiguous column)."""
    n = len(q[0])
    if dtype == np.float64:
        out = np.empty((n, 3))
        rows = (out[:, 0], out[:, 1], out[:, 2])
    else:
        out = np.empty((3, n), np.float32)
        rows = (out[0], out[1], out[2])
        out = out.T
    _dequantise_kernel(tuple(np.ascontiguousarray(c, np.int32) for c in q), np.asarray(scale, np.float64),
                       np.asarray(offset, np.float64), rows)
    return out


def quantisation_metadata(scale: float, offset: np.ndarray) -> bytes:
    """The ``fathom.quantisation`` schema metadata value (JSON)."""
    return json.dumps({"scale": [float(scale)] * 3, "offset": [float(v) for v in offset]}).encode()


def quantisation(schema: pa.Schema) -> tuple[np.ndarray, np.ndarray]:
    """``(scale (3,), offset (3,))`` float64 of a point table: ``x = offset + xq * scale``."""
    raw = (schema.metadata or {}).get(QUANT_KEY)
    if raw is None:
        raise ValueError("schema has no fathom.quantisation metadata")
    d = json.loads(raw)
    return np.asarray(d["scale"], float), np.asarray(d["offset"], float)


def checked_quantisation(schema: pa.Schema, path: Any) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantisation` of a table read from ``path``, checked: three positive scales and
    three finite offsets, or :class:`FormatError` naming the file."""
    try:
        scale, offset = quantisation(schema)
    except (ValueError, KeyError, TypeError):
        raise FormatError(path, None, "schema metadata fathom.quantisation {scale: [3], offset: [3]}") from None
    if (scale.shape != (3,) or offset.shape != (3,) or not np.all(np.isfinite(np.r_[scale, offset]))
            or np.any(scale <= 0)):
        raise FormatError(path, None, "quantisation scale (3 positive) and offset (3 finite)")
    return scale, offset
