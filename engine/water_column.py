"""Water-column samples → 3D points: sample selection (threshold, per-ping top-k) and the
beam geometry in the vessel frame (Kongsberg SCS: x forward, y starboard, z down).

A sample ``i`` of a beam lies at two-way range ``r = (start_sample + i) · c / (2 fs)`` from
the beam's acoustic origin, along the direction
``(sin τ, −sin θ cos τ, cos θ cos τ)``: ``θ`` the beam's pointing angle re vertical
(positive to port, as Kongsberg writes it), ``τ`` its transmit sector's along-ship tilt.
The world placement is :func:`engine.georeference.soundings_to_world`, as for soundings.
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import pjit, prange

_DEG = math.pi / 180.0


@pjit
def _select_kernel(amp, ping_start, thr, top_k, keep):
    for p in prange(ping_start.shape[0] - 1):
        a = ping_start[p]
        b = ping_start[p + 1]
        cut = thr - 1  # keep values > cut, then the first `extra` samples equal to cut
        extra = 0
        if top_k >= 0:
            hist = np.zeros(256, np.int64)
            for s in range(a, b):
                hist[np.int64(amp[s]) + 128] += 1
            above = 0
            for v in range(127, thr - 1, -1):
                c = hist[v + 128]
                if above + c >= top_k:
                    cut = v
                    extra = top_k - above
                    break
                above += c
        for s in range(a, b):
            value = np.int64(amp[s])
            keep[s] = value > cut
            if value == cut and extra > 0:
                keep[s] = True
                extra -= 1


def select_samples(amplitude: np.ndarray, ping_sample_start: np.ndarray, threshold: float | None = None,
                   top_k: int | None = None) -> np.ndarray:
    """Indices ``(M,) int64`` (increasing) of the samples to turn into points.

    ``amplitude (S,) int8`` (any integer unit), ``ping_sample_start (P + 1,)`` splitting the
    samples by ping. A sample is kept when ``amplitude >= threshold`` (all when None) and,
    with ``top_k``, it is among the ping's ``top_k`` largest of those (ties: the earlier
    sample first).
    """
    amp = np.ascontiguousarray(amplitude)
    if amp.dtype != np.int8:
        raise ValueError(f"amplitude must be int8, got {amp.dtype}")
    start = np.ascontiguousarray(ping_sample_start, dtype=np.int64)
    if start.ndim != 1 or len(start) == 0 or start[0] != 0 or start[-1] != len(amp) or np.any(np.diff(start) < 0):
        raise ValueError(f"ping_sample_start must be (P + 1,) non-decreasing from 0 to {len(amp)}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0, got {top_k}")
    thr = -128 if threshold is None else max(math.ceil(threshold), -128)
    if thr > 127:
        return np.zeros(0, np.int64)
    keep = np.empty(len(amp), np.bool_)
    _select_kernel(amp, start, thr, -1 if top_k is None else int(top_k), keep)
    return np.flatnonzero(keep)


@pjit
def _points_kernel(sample, lo, hi, ping_of_beam, beam_sample_start, start_sample, angle, tilt, scale, origin,
                   out, beam_out):
    for b in prange(lo.shape[0]):
        if lo[b] == hi[b]:
            continue
        p = ping_of_beam[b]
        th = angle[b] * _DEG
        ta = tilt[b] * _DEG
        ux = math.sin(ta)
        uy = -math.sin(th) * math.cos(ta)
        uz = math.cos(th) * math.cos(ta)
        r0 = start_sample[b] - np.float64(beam_sample_start[b])
        for j in range(lo[b], hi[b]):
            r = (r0 + np.float64(sample[j])) * scale[p]
            out[j, 0] = origin[p, 0] + r * ux
            out[j, 1] = origin[p, 1] + r * uy
            out[j, 2] = origin[p, 2] + r * uz
            beam_out[j] = b


def sample_points(samples: np.ndarray, beam_sample_start: np.ndarray, ping_beam_start: np.ndarray,
                  start_sample: np.ndarray, beam_angle_deg: np.ndarray, tilt_deg: np.ndarray,
                  metres_per_sample: np.ndarray, origin_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vessel-frame positions of water-column samples.

    ``samples (M,)`` increasing sample indices (as :func:`select_samples` returns); per beam
    ``(B,)``: ``beam_sample_start (B + 1,)``, ``start_sample`` (range of sample 0, in
    samples), ``beam_angle_deg`` (re vertical, positive port), ``tilt_deg``; per ping
    ``(P,)``: ``ping_beam_start (P + 1,)``, ``metres_per_sample`` (``c / (2 fs)``) and
    ``origin_m (P, 3)`` the acoustic origin in the frame of the result (x fwd, y stbd,
    z down). Returns ``xyz (M, 3) float64`` and the beam of each sample ``(M,) int64``.
    """
    s = np.ascontiguousarray(samples, dtype=np.int64)
    bstart = np.ascontiguousarray(beam_sample_start, dtype=np.int64)
    pstart = np.ascontiguousarray(ping_beam_start, dtype=np.int64)
    b, p = len(bstart) - 1, len(pstart) - 1
    if len(s) and (s[0] < 0 or s[-1] >= bstart[-1] or np.any(np.diff(s) <= 0)):
        raise ValueError(f"samples must be increasing within [0, {bstart[-1]})")
    if pstart[-1] != b:
        raise ValueError(f"ping_beam_start must end at the {b} beams, got {pstart[-1]}")
    cols = {}
    for name, arr, n in (("start_sample", start_sample, b), ("beam_angle_deg", beam_angle_deg, b),
                         ("tilt_deg", tilt_deg, b), ("metres_per_sample", metres_per_sample, p)):
        a = np.ascontiguousarray(arr, dtype=np.float64)
        if a.shape != (n,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be ({n},) and finite, got shape {a.shape}")
        cols[name] = a
    origin = np.ascontiguousarray(origin_m, dtype=np.float64)
    if origin.shape != (p, 3) or not np.all(np.isfinite(origin)):
        raise ValueError(f"origin_m must be ({p}, 3) and finite, got shape {origin.shape}")
    lo = np.searchsorted(s, bstart[:-1])
    hi = np.searchsorted(s, bstart[1:])
    ping_of_beam = np.repeat(np.arange(p, dtype=np.int64), np.diff(pstart))
    out = np.empty((len(s), 3))
    beam = np.empty(len(s), np.int64)
    _points_kernel(s, lo, hi, ping_of_beam, bstart, cols["start_sample"], cols["beam_angle_deg"], cols["tilt_deg"],
                   cols["metres_per_sample"], origin, out, beam)
    return out, beam


def _warmup() -> None:
    amp = np.arange(-4, 4, dtype=np.int8)
    sel = select_samples(amp, np.array([0, 8]), 0, 2)
    sample_points(sel, np.array([0, 8]), np.array([0, 1]), np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1),
                  np.zeros((1, 3)))
