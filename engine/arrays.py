"""Input checks shared by the engine's public functions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from engine._jit import jit


def as_points(xyz: np.ndarray, name: str = "xyz", float64: bool = False, finite: bool = False) -> np.ndarray:
    """``(N, 3)`` points as a C-contiguous float32 or float64 array, for kernels.

    float32 and float64 input keep their dtype unless ``float64`` asks for it; anything else
    becomes float64. Empty input becomes ``(0, 3)``. A wrong shape raises ``ValueError``
    naming ``name`` and the shape; with ``finite``, so does a NaN or infinite coordinate.
    """
    p = np.asarray(xyz)
    if p.size == 0:
        p = p.reshape(0, 3)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3), got {p.shape}")
    if float64 or p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    if finite and not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(p)


def coerce_columns(owner: str, obj: Any, columns: Mapping[str, tuple[np.dtype, tuple[int, ...]]]) -> None:
    """Make a per-point structure's columns what its kernels take, in place.

    ``obj.xyz`` becomes ``(N, 3)`` C-contiguous float32 (empty input ``(0, 3)``); each attribute
    named in ``columns`` that is not None becomes C-contiguous of its dtype and shape
    ``(N, *tail)``; each array of ``obj.extra`` keeps its dtype and must have N rows. A wrong
    shape raises ``ValueError`` naming ``owner.attribute`` and the shape.
    """
    xyz = np.ascontiguousarray(obj.xyz, dtype=np.float32)
    if xyz.size == 0:
        xyz = xyz.reshape(0, 3)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise ValueError(f"{owner}.xyz must have shape (N, 3), got {xyz.shape}")
    obj.xyz = xyz
    n = len(xyz)
    for name, (dtype, tail) in columns.items():
        value = getattr(obj, name)
        if value is None:
            continue
        arr = np.ascontiguousarray(value, dtype=dtype)
        if arr.shape != (n, *tail):
            raise ValueError(f"{owner}.{name} must have shape {(n, *tail)}, got {arr.shape}")
        setattr(obj, name, arr)
    extra = {}
    for name, value in obj.extra.items():
        arr = np.ascontiguousarray(value)
        if arr.shape[:1] != (n,):
            raise ValueError(f"{owner}.extra[{name!r}] must have {n} rows, got shape {arr.shape}")
        extra[name] = arr
    obj.extra = extra


@jit
def _bounds_kernel(xyz, lo, hi):
    lo[:] = np.inf
    hi[:] = -np.inf
    for i in range(xyz.shape[0]):
        for a in range(3):
            v = xyz[i, a]
            if not math.isfinite(v):
                return False
            if v < lo[a]:
                lo[a] = v
            if v > hi[a]:
                hi[a] = v
    return True


def finite_bounds(p: np.ndarray, name: str = "xyz") -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``(min (3,), max (3,))`` float64 of points from :func:`as_points`, in one pass
    that also rejects a NaN or infinite coordinate (``ValueError`` naming ``name``).
    Empty input gives ``(+inf, -inf)``."""
    lo, hi = np.empty(3), np.empty(3)
    if not _bounds_kernel(p, lo, hi):
        raise ValueError(f"{name} contains NaN or infinite values")
    return lo, hi


def _warmup() -> None:
    for dtype in (np.float32, np.float64):
        finite_bounds(np.zeros((2, 3), dtype))
