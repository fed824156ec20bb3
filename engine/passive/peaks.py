"""Peaks of one row of a bearing-time record: the bearings of the contacts it shows."""

from __future__ import annotations

import math

import numpy as np

from engine.typing import Float64Array, FloatArray


def bearing_peaks(power: FloatArray, azimuth_rad: FloatArray, *, within_db: float = 6.0, max_peaks: int = 4
                  ) -> tuple[Float64Array, Float64Array]:
    """The local maxima of beam power ``power (B,)`` (linear, >= 0) over the evenly spaced,
    increasing ``azimuth_rad (B,)`` that lie within ``within_db`` of the row's maximum,
    strongest first, at most ``max_peaks``: ``(azimuth_rad (K,), level_db (K,))``.

    A beam is a peak when it is stronger than its left neighbour and at least as strong as its
    right one; on a full circle of beams the neighbours wrap, on a sector an end beam is a peak
    when it is at least as strong as its one neighbour. A peak's azimuth is refined by the
    parabola through it and its two neighbours (where it has both), as
    :meth:`engine.passive.beamform.BearingTimeRecord.peak_azimuths` does, and wrapped to
    (−π, π]; its level is ``10 log10`` of the peak beam's power."""
    p = np.asarray(power, np.float64)
    az = np.asarray(azimuth_rad, np.float64)
    finite = np.all(np.isfinite(p)) and np.all(p >= 0) and np.all(np.isfinite(az))
    if p.ndim != 1 or p.shape != az.shape or not finite:
        raise ValueError(f"power and azimuth_rad must be finite (B,) alike with power >= 0, got {p.shape}, {az.shape}")
    if not (within_db >= 0 and math.isfinite(within_db)) or int(max_peaks) < 1:
        raise ValueError(f"within_db must be finite and >= 0 and max_peaks >= 1, got {within_db}, {max_peaks}")
    b = len(p)
    if b == 0 or p.max() <= 0:
        return np.zeros(0), np.zeros(0)
    full = b > 2 and abs((az[-1] - az[0]) + (az[1] - az[0]) - 2 * math.pi) < 1e-9
    if full:
        left, right = np.roll(p, 1), np.roll(p, -1)
    else:
        left, right = np.r_[-1.0, p[:-1]], np.r_[p[1:], -1.0]
    floor = p.max() * 10.0 ** (-within_db / 10.0)
    k = np.flatnonzero((p > left) & (p >= right) & (p >= floor))
    k = k[np.argsort(-p[k], kind="stable")][:int(max_peaks)]
    y0, y1, y2 = left[k], p[k], right[k]
    den = y0 - 2 * y1 + y2
    inside = (y0 >= 0) & (y2 >= 0) & (den < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        shift = np.where(inside, 0.5 * (y0 - y2) / den, 0.0)
    step = az[1] - az[0] if b > 1 else 0.0
    return np.angle(np.exp(1j * (az[k] + shift * step))), 10.0 * np.log10(y1)
