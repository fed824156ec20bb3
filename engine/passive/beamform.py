"""Frequency-domain beamforming of a hydrophone array into bearing-time records.

A recording ``(C, N)`` is cut into frames of ``frame_s``; each frame into snapshots of
``nfft`` samples every ``nfft - overlap`` (``K = (L - overlap) // (nfft - overlap)`` of them in
a frame of ``L`` samples, the segmentation of ``arlpy.bf.stft``), windowed and transformed:
``X = rfft(window · segment) / sqrt(nfft)``. Per frequency bin the cross-spectral matrix is
``R = (1/K) Σ_k X_k X_kᴴ`` and, for a steering vector ``a = exp(2πi f τ)/sqrt(C)`` with
``τ_c = p_c · u / c`` (element position ``p_c``, unit direction ``u`` towards the source):

- Bartlett (delay-and-sum): ``P = aᴴ R a``;
- MVDR (Capon): ``P = 1 / (aᴴ (R + δI)⁻¹ a)``, ``δ = loading · trace(R) / C``.

A band's power is ``2 Σ P`` over the bins ``lo ≤ f ≤ hi`` below Nyquist (one-sided), so with
``window=None`` and ``loading=0`` a frame's value equals the mean over its snapshots of
``arlpy.bf.broadband`` (``bartlett`` / ``capon``) on that frame.

Directions are azimuths in the ego frame (x forward, y left, z up): ``0`` ahead, ``π/2`` to
port, measured from x towards y, at a fixed elevation (0: the array's horizontal plane).

The quadratic form uses only the upper triangle of ``R``:
``aᴴ R a = (trace R + 2 Σ_{i<j} Re(R_ij e^{iΔ_ij})) / C`` with ``Δ_ij = 2π f (p_j − p_i)·u / c``.
Per bin, the frames' triangles ``(F, 2P)`` (real parts, imaginary parts) multiply the phase
table ``(B, 2P)`` (``cos Δ``, ``−sin Δ``) in one matrix product; the table is advanced from bin
to bin by one complex multiplication per entry (recomputed exactly every :data:`_REFRESH` bins)
and shared by a chunk of frames. A horizontal look direction and its opposite have opposite
``Δ``, so on a full circle of beams (elevation 0, an even count, beam ``k + B/2`` opposite beam
``k``) one half-table serves both: ``Σ Re R cos Δ ∓ Σ Im R sin Δ``.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Literal

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from engine._jit import jit
from engine.typing import Float64Array, FloatArray, Int64Array

Method = Literal["bartlett", "mvdr"]
_REFRESH = 32  # bins between exact recomputations of the phase tables
_CHUNK_FRAMES = 64  # frames whose cross-spectra are held at once (and share the phase tables)


@jit
def _gather_spectra(spec, bins, out):
    """``out (n, nb, C, K)`` = ``spec (C, n, K, NF)`` at the rfft ``bins (nb,)``."""
    c_count, n_count, k_count, _ = spec.shape
    for f in range(n_count):
        for m in range(bins.shape[0]):
            for c in range(c_count):
                for k in range(k_count):
                    out[f, m, c, k] = spec[c, f, k, bins[m]]


@jit
def _gather_upper(csm, pair_i, pair_j, stack, trace):
    """``stack (nb, F, 2P)`` = real then imaginary parts of the pairs ``(pair_i, pair_j)`` of
    ``csm (F, nb, C, C)``; ``trace (nb, F)`` its real trace."""
    f_count, nb, c_count, _ = csm.shape
    p_count = pair_i.shape[0]
    for f in range(f_count):
        for n in range(nb):
            t = 0.0
            for c in range(c_count):
                t += csm[f, n, c, c].real
            trace[n, f] = t
            for p in range(p_count):
                v = csm[f, n, pair_i[p], pair_j[p]]
                stack[n, f, p] = v.real
                stack[n, f, p_count + p] = v.imag


@jit
def _accumulate(q_re, q_im, sign, trace, n_elements, member, inverse, out):
    """``out[f, k, b] += 2 aᴴRa`` (or ``2 / aᴴRa``) for the bands ``k`` in ``member (NB,)``, with
    ``aᴴRa = (trace[f] + 2 (q_re + sign · q_im)[f, b]) / C`` (``q (F, B)``, ``out (F, NB, B)``)."""
    f_count, b_count = q_re.shape
    for k in range(member.shape[0]):
        if not member[k]:
            continue
        for f in range(f_count):
            for b in range(b_count):
                q = (trace[f] + 2.0 * (q_re[f, b] + sign * q_im[f, b])) / n_elements
                out[f, k, b] += 2.0 / q if inverse else 2.0 * q


@jit
def _phase_table(delays, f_hz, table):
    """``table (B, 2P)`` = ``[cos(2π f d), −sin(2π f d)]`` of the pair delays ``delays (P, B)`` (s)."""
    p_count, b_count = delays.shape
    for b in range(b_count):
        for p in range(p_count):
            ph = 2.0 * math.pi * f_hz * delays[p, b]
            table[b, p] = math.cos(ph)
            table[b, p_count + p] = -math.sin(ph)


@jit
def _advance_table(table, step):
    """Rotate every phase of ``table (B, 2P)`` by that of ``step (B, 2P)`` (same layout)."""
    b_count, p2 = table.shape
    p_count = p2 // 2
    for b in range(b_count):
        for p in range(p_count):
            c0 = table[b, p]
            s0 = table[b, p_count + p]
            c1 = step[b, p]
            s1 = step[b, p_count + p]
            table[b, p] = c0 * c1 - s0 * s1
            table[b, p_count + p] = s0 * c1 + c0 * s1


@dataclass(frozen=True)
class BearingTimeRecord:
    """Beam power per frame, band and direction.

    Attributes:
        times_ns: ``(F,) int64`` mid-frame times.
        azimuth_rad: ``(B,) float64`` ego-frame azimuths of the beams (from x towards y).
        bands_hz: ``(NB, 2) float64`` inclusive ``[lo, hi]`` of each band.
        power: ``(F, NB, B) float64`` one-sided band power (full-scale² units).
        method: "bartlett" or "mvdr".
    """

    times_ns: Int64Array
    azimuth_rad: Float64Array
    bands_hz: Float64Array
    power: Float64Array
    method: str

    def peak_azimuths(self, band: int = 0) -> Float64Array:
        """``(F,)`` azimuth of each frame's strongest beam in ``band``, refined by a parabola
        through the peak and its neighbours (on a full circle of beams the neighbours wrap)."""
        p = self.power[:, band, :]
        az = self.azimuth_rad
        k = np.argmax(p, axis=1)
        full = len(az) > 2 and abs((az[-1] - az[0]) + (az[1] - az[0]) - 2 * math.pi) < 1e-9
        rows = np.arange(len(p))
        lo, hi = k - 1, k + 1
        if full:
            lo, hi = lo % len(az), hi % len(az)
        inside = (lo >= 0) & (hi < len(az))
        y0 = p[rows, np.clip(lo, 0, len(az) - 1)]
        y1 = p[rows, k]
        y2 = p[rows, np.clip(hi, 0, len(az) - 1)]
        den = y0 - 2 * y1 + y2
        with np.errstate(divide="ignore", invalid="ignore"):
            shift = np.where(inside & (den < 0), 0.5 * (y0 - y2) / den, 0.0)
        step = az[1] - az[0] if len(az) > 1 else 0.0
        return np.angle(np.exp(1j * (az[k] + shift * step)))


def steering_delays(positions_m: FloatArray, azimuth_rad: FloatArray, elevation_rad: float = 0.0,
                    sound_speed_m_s: float = 1500.0) -> Float64Array:
    """``(B, C) float64`` plane-wave lead times ``τ = (p − p̄) · u / c`` (s) of elements
    ``positions_m (C, 3)`` for arrivals from ``azimuth_rad (B,)`` at ``elevation_rad`` (ego
    frame); ``arlpy.bf.steering_plane_wave`` returns ``−τ``."""
    pos = np.asarray(positions_m, np.float64)
    if pos.ndim != 2 or pos.shape[1] != 3 or len(pos) < 1 or not np.all(np.isfinite(pos)):
        raise ValueError(f"positions_m must be finite (C, 3) with C >= 1, got shape {pos.shape}")
    az = np.atleast_1d(np.asarray(azimuth_rad, np.float64))
    if az.ndim != 1 or not np.all(np.isfinite(az)):
        raise ValueError(f"azimuth_rad must be finite (B,), got shape {az.shape}")
    if not (sound_speed_m_s > 0 and math.isfinite(sound_speed_m_s)):
        raise ValueError(f"sound_speed_m_s must be finite and positive, got {sound_speed_m_s}")
    ce = math.cos(elevation_rad)
    u = np.stack([ce * np.cos(az), ce * np.sin(az), np.full_like(az, math.sin(elevation_rad))], axis=1)
    return (u @ (pos - pos.mean(axis=0)).T) / sound_speed_m_s


def _bands(bands_hz: npt.ArrayLike, fs: float, nfft: int) -> tuple[Int64Array, np.ndarray, Float64Array]:
    bands = np.atleast_2d(np.asarray(bands_hz, np.float64))
    if bands.ndim != 2 or bands.shape[1] != 2 or len(bands) == 0 or not np.all(bands[:, 0] <= bands[:, 1]):
        raise ValueError(f"bands_hz must be (NB, 2) rows lo <= hi, got {np.asarray(bands_hz).tolist()}")
    freqs = np.arange(nfft // 2) * (fs / nfft)  # below Nyquist, as arlpy.bf.broadband
    member = (freqs[:, None] >= bands[:, 0]) & (freqs[:, None] <= bands[:, 1])
    used = np.flatnonzero(member.any(axis=1))
    if len(used) == 0:
        raise ValueError(f"no frequency bin (spacing {fs / nfft} Hz) falls in the bands {bands.tolist()}")
    empty = np.flatnonzero(~member.any(axis=0))
    if len(empty):
        raise ValueError(f"band {bands[empty[0]].tolist()} Hz holds no bin (spacing {fs / nfft} Hz, below {fs / 2} Hz)")
    return used.astype(np.int64), np.ascontiguousarray(member[used]), bands


def _csm_pieces(frames: FloatArray, nfft: int, overlap: int, window: Float64Array, bins: Int64Array,
                step: int = 4) -> Iterator[tuple[int, np.ndarray]]:
    """``(f0, R (n, nb, C, C) complex128)`` for every ``step`` frames of ``frames (C, F, L)``; the
    buffers are reused (temporaries stay in cache), so a piece is valid until the next."""
    import scipy.fft

    c, f, length = frames.shape
    hop = nfft - overlap
    k = (length - overlap) // hop
    buf = np.empty((c, step, k, nfft))
    x = np.empty((step, len(bins), c, k), np.complex128)
    out = np.empty((step, len(bins), c, c), np.complex128)
    for f0 in range(0, f, step):
        part = frames[:, f0:f0 + step]
        n = part.shape[1]
        seg = np.lib.stride_tricks.as_strided(
            part, (c, n, k, nfft), (part.strides[0], part.strides[1], hop * part.strides[2], part.strides[2]),
            writeable=False)
        np.multiply(seg, window, out=buf[:, :n])
        _gather_spectra(scipy.fft.rfft(buf[:, :n], axis=-1), bins, x[:n])
        np.matmul(x[:n], np.conj(np.swapaxes(x[:n], -1, -2)), out=out[:n])
        out[:n] *= 1.0 / (k * nfft)
        yield f0, out[:n]


def cross_spectra(frames: FloatArray, nfft: int, overlap: int, window: Float64Array, bins: Int64Array
                  ) -> np.ndarray:
    """``(F, nb, C, C) complex128`` cross-spectral matrices ``(1/K) Σ_k X_k X_kᴴ`` of ``frames
    (C, F, L)`` at rfft ``bins (nb,)``, ``X = rfft(window · segment) / sqrt(nfft)``."""
    out = np.empty((frames.shape[1], len(bins), frames.shape[0], frames.shape[0]), np.complex128)
    for f0, piece in _csm_pieces(frames, nfft, overlap, window, bins):
        out[f0:f0 + len(piece)] = piece
    return out


def bearing_time_record(samples: FloatArray, sample_rate_hz: float, positions_m: FloatArray,
                        azimuth_rad: FloatArray, bands_hz: npt.ArrayLike, *, start_ns: int = 0, frame_s: float = 1.0,
                        nfft: int = 256, overlap: int | None = None, window: str | None = "hann",
                        method: Method = "bartlett", loading: float = 1e-2, elevation_rad: float = 0.0,
                        sound_speed_m_s: float = 1500.0, workers: int | None = None) -> BearingTimeRecord:
    """Beamform ``samples (C, N)`` (any float dtype; element ``c`` at ``positions_m[c]``, ego
    frame, m) into a :class:`BearingTimeRecord` of whole frames of ``frame_s`` (a trailing
    partial frame is left out). ``overlap`` defaults to ``nfft // 2``; ``window`` is a
    ``scipy.signal.get_window`` name or None (rectangular).

    ``workers`` threads (default: the CPUs this process may use) share each chunk of frames:
    the cross-spectra by frames, then the beams by direction. The BLAS pool is held at one
    thread meanwhile (its own spinning threads would compete with these, and thrash on a
    busy machine)."""
    x = np.asarray(samples)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"samples must be a float (C, N) array, got {x.dtype} {x.shape}")
    c = x.shape[0]
    delays_bc = steering_delays(positions_m, azimuth_rad, elevation_rad, sound_speed_m_s)
    if delays_bc.shape[1] != c:
        raise ValueError(f"{c} channels but {delays_bc.shape[1]} element positions")
    if c < 2:
        raise ValueError("beamforming needs at least 2 elements")
    if method not in ("bartlett", "mvdr"):
        raise ValueError(f"method must be 'bartlett' or 'mvdr', got {method!r}")
    fs = float(sample_rate_hz)
    length = int(round(frame_s * fs))
    if not (fs > 0 and abs(length - frame_s * fs) < 1e-6 and length >= nfft >= 2):
        raise ValueError(f"frame_s * sample_rate_hz must be a whole number of samples >= nfft, got {frame_s} s at "
                         f"{fs} Hz with nfft {nfft}")
    overlap = nfft // 2 if overlap is None else int(overlap)
    if not 0 <= overlap < nfft:
        raise ValueError(f"overlap must be in [0, nfft), got {overlap}")
    if not (loading >= 0 and math.isfinite(loading)):
        raise ValueError(f"loading must be finite and >= 0, got {loading}")
    bins, member, bands = _bands(bands_hz, fs, nfft)
    if method == "mvdr" and (length - overlap) // (nfft - overlap) < c and loading == 0:
        raise ValueError(f"MVDR without loading needs at least {c} snapshots per frame")
    from scipy.signal import get_window

    win = np.ones(nfft) if window is None else get_window(window, nfft)
    iu = np.triu_indices(c, 1)
    az = np.atleast_1d(np.asarray(azimuth_rad, np.float64))
    pair_delays = np.ascontiguousarray((delays_bc[:, iu[1]] - delays_bc[:, iu[0]]).T)  # (P, B)
    n_frames = x.shape[1] // length
    out = np.zeros((n_frames, len(bands), len(az)))
    frames = x[:, :n_frames * length].reshape(c, n_frames, length)
    p = len(iu[0])
    workers = max(1, len(os.sched_getaffinity(0)) if workers is None else int(workers))
    # a horizontal look direction and its opposite have opposite delays: one table serves both
    half = len(az) // 2
    mirrored = (elevation_rad == 0.0 and len(az) % 2 == 0 and half > 0
                and np.allclose(np.angle(np.exp(1j * (az[half:] - az[:half] - math.pi))), 0.0, atol=1e-9))
    beams = _spans(half if mirrored else len(az), workers)
    delays = [np.ascontiguousarray(pair_delays[:, b0:b1]) for b0, b1 in beams]
    mvdr = method == "mvdr"

    def triangles(c0: int, f0: int, f1: int, stack: Float64Array, trace: Float64Array) -> None:
        for g0, csm in _csm_pieces(frames[:, c0 + f0:c0 + f1], nfft, overlap, win, bins):
            if mvdr:
                csm = _loaded_inverse(csm, loading)
            g = slice(f0 + g0, f0 + g0 + len(csm))
            _gather_upper(csm, iu[0], iu[1], stack[:, g], trace[:, g])

    with ThreadPoolExecutor(workers) as pool, threadpool_limits(1, user_api="blas"):
        for c0 in range(0, n_frames, _CHUNK_FRAMES):
            c1 = min(c0 + _CHUNK_FRAMES, n_frames)
            stack = np.empty((len(bins), c1 - c0, 2 * p))  # pair real parts then imaginary parts
            trace = np.empty((len(bins), c1 - c0))
            list(pool.map(lambda span: triangles(c0, span[0], span[1], stack, trace), _spans(c1 - c0, workers)))
            list(pool.map(lambda k: _beamform_chunk(
                stack, trace, c, bins, fs / nfft, delays[k], member, mvdr, out[c0:c1, :, beams[k][0]:beams[k][1]],
                out[c0:c1, :, half + beams[k][0]:half + beams[k][1]] if mirrored else None), range(len(beams))))
    mid = np.arange(n_frames) * length + length / 2
    times = start_ns + np.rint(mid * (1e9 / fs)).astype(np.int64)
    return BearingTimeRecord(times, az, bands, out, method)


def _spans(n: int, parts: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges cutting ``range(n)`` into at most ``parts`` near-equal non-empty pieces."""
    edges = np.linspace(0, n, min(parts, max(n, 1)) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _beamform_chunk(stack: Float64Array, trace: Float64Array, c: int, bins: Int64Array, df_hz: float,
                    pair_delays: Float64Array, member: np.ndarray, inverse: bool, out: Float64Array,
                    mirror: Float64Array | None) -> None:
    """Add ``2 aᴴRa`` (or ``2 / aᴴRa`` when ``inverse``) of the matrices whose upper triangles are
    ``stack (nb, F, 2P)`` and traces ``trace (nb, F)`` at ``bins`` for the directions of
    ``pair_delays (P, B)`` into the bands ``member (nb, NB)`` of ``out (F, NB, B)``, and, when
    ``mirror`` is given, for the opposite directions (delays negated) into it: per bin two
    matrix products of the frames' triangles with the phase table ``(B, 2P)``."""
    nb, f, p2 = stack.shape
    p, b = pair_delays.shape
    table = np.empty((b, 2 * p))
    step = np.empty((b, 2 * p))
    _phase_table(pair_delays, df_hz, step)
    q_re = np.empty((f, b))
    q_im = np.empty((f, b))
    for n in range(nb):
        if n % _REFRESH == 0 or bins[n] - bins[n - 1] != 1:
            _phase_table(pair_delays, bins[n] * df_hz, table)
        else:
            _advance_table(table, step)
        np.matmul(stack[n, :, :p], table[:, :p].T, out=q_re)  # Σ Re R cos
        np.matmul(stack[n, :, p:], table[:, p:].T, out=q_im)  # −Σ Im R sin: odd in the delays
        _accumulate(q_re, q_im, 1.0, trace[n], c, member[n], inverse, out)
        if mirror is not None:
            _accumulate(q_re, q_im, -1.0, trace[n], c, member[n], inverse, mirror)


def _loaded_inverse(csm: np.ndarray, loading: float) -> np.ndarray:
    """``(R + δI)⁻¹`` per matrix of ``csm (..., C, C)``, ``δ = loading · trace(R) / C``."""
    c = csm.shape[-1]
    idx = np.arange(c)
    r = csm.copy()
    r[..., idx, idx] += (loading / c) * np.trace(csm, axis1=-2, axis2=-1).real[..., None]
    return np.linalg.inv(r)


def _warmup() -> None:
    x = np.random.default_rng(0).normal(size=(3, 64))
    pos = np.array([[0.0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]])
    for method in ("bartlett", "mvdr"):
        for workers in (1, 2):
            bearing_time_record(x, 64.0, pos, np.array([0.0, 1.0]), [[4.0, 12.0]], nfft=16, method=method,
                                workers=workers)
