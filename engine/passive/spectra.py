"""Spectra an analyst reads off a hydrophone: spectrograms, LOFARgrams and DEMON spectra.

- :func:`spectrogram`: one-sided power spectral density of windowed segments, the values of
  ``scipy.signal.spectrogram(..., detrend=False, scaling="density", mode="psd")``
  (``|X|² / (fs Σw²)``, doubled except at 0 Hz and Nyquist; units full-scale²/Hz).
- :func:`lofargram`: LOw-Frequency Analysis and Recording: spectrogram lines at a chosen
  resolution ``fs / nfft``, ``average`` consecutive lines averaged, in dB, optionally
  normalised across frequency by a two-pass split-window (TPSW) background estimate, so
  tonals stand out of the broadband noise as lines.
- :func:`demon`: Detection of Envelope Modulation On Noise: the cavitation noise of a
  propeller is amplitude-modulated at the shaft and blade rates; band-pass the signal, take
  its envelope (magnitude of the analytic signal), low-pass and decimate it, and the spectrum
  of the envelope shows those rates.

Times are offsets in seconds from the first sample (add a recording's ``start_ns``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.typing import Float64Array, FloatArray


@dataclass(frozen=True)
class Spectrogram:
    """``times_s (T,)`` segment centres (s from the first sample), ``freqs_hz (F,)``, ``power (..., T, F)``."""

    times_s: Float64Array
    freqs_hz: Float64Array
    power: Float64Array


def _segments(x: np.ndarray, nfft: int, hop: int) -> np.ndarray:
    n = x.shape[-1]
    count = (n - nfft) // hop + 1
    return np.lib.stride_tricks.as_strided(x, x.shape[:-1] + (count, nfft), x.strides[:-1] + (hop * x.strides[-1],
                                           x.strides[-1]), writeable=False)


def _check(x: FloatArray, sample_rate_hz: float, nfft: int, overlap: int | None) -> tuple[np.ndarray, int]:
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.ndim < 1 or not np.all(np.isfinite(arr)):
        raise ValueError(f"samples must be a finite (..., N) array, got shape {arr.shape}")
    if not (sample_rate_hz > 0 and math.isfinite(sample_rate_hz)):
        raise ValueError(f"sample_rate_hz must be finite and positive, got {sample_rate_hz}")
    overlap = nfft // 2 if overlap is None else int(overlap)
    if not (nfft >= 2 and 0 <= overlap < nfft):
        raise ValueError(f"need nfft >= 2 and 0 <= overlap < nfft, got nfft {nfft}, overlap {overlap}")
    if arr.shape[-1] < nfft:
        raise ValueError(f"{arr.shape[-1]} samples are fewer than one segment of {nfft}")
    return arr, nfft - overlap


def spectrogram(x: FloatArray, sample_rate_hz: float, nfft: int, overlap: int | None = None,
                window: str | None = "hann") -> Spectrogram:
    """PSD of segments of ``nfft`` samples every ``nfft − overlap`` (default half) of ``x (..., N)``."""
    from scipy.signal import get_window

    arr, hop = _check(x, sample_rate_hz, nfft, overlap)
    w = np.ones(nfft) if window is None else get_window(window, nfft)
    spec = np.fft.rfft(_segments(arr, nfft, hop) * w, axis=-1)
    power = (spec.real ** 2 + spec.imag ** 2) / (sample_rate_hz * np.sum(w * w))
    power[..., 1:(nfft + 1) // 2] *= 2.0  # one-sided: all but 0 Hz and (even nfft) Nyquist
    count = power.shape[-2]
    times = (np.arange(count) * hop + nfft / 2) / sample_rate_hz
    return Spectrogram(times, np.fft.rfftfreq(nfft, 1.0 / sample_rate_hz).astype(np.float64), power)


def tpsw(power: FloatArray, half_width: int = 16, gap: int = 2, clip: float = 2.0) -> Float64Array:
    """Two-pass split-window background of ``power (..., F)`` along the last axis: the mean over
    ``gap < |k| <= half_width`` bins around each bin, then again after clipping values above
    ``clip`` × that mean (so tonals do not raise their own background). Edges average what
    exists."""
    p = np.asarray(power, np.float64)
    if not (0 <= gap < half_width):
        raise ValueError(f"need 0 <= gap < half_width, got gap {gap}, half_width {half_width}")
    kernel = np.ones(2 * half_width + 1)
    kernel[half_width - gap:half_width + gap + 1] = 0.0

    def split_mean(v: np.ndarray) -> np.ndarray:
        flat = v.reshape(-1, v.shape[-1])
        total = np.stack([np.convolve(row, kernel, mode="same") for row in flat]).reshape(v.shape)
        count = np.convolve(np.ones(v.shape[-1]), kernel, mode="same")
        return total / count

    first = split_mean(p)
    return split_mean(np.minimum(p, clip * first))


@dataclass(frozen=True)
class Lofargram:
    """``times_s (T,)`` line centres, ``freqs_hz (F,)``, ``level_db (T, F)`` (dB re 1 full-scale²/Hz,
    or dB above the TPSW background when ``normalised``)."""

    times_s: Float64Array
    freqs_hz: Float64Array
    level_db: Float64Array
    normalised: bool


def lofargram(x: FloatArray, sample_rate_hz: float, resolution_hz: float = 1.0, *, overlap: float = 0.5,
              average: int = 1, window: str | None = "hann", normalise: bool = True) -> Lofargram:
    """LOFARgram of one channel ``x (N,)``: bins ``resolution_hz`` apart (``nfft = fs /
    resolution_hz``, a whole number), lines overlapping by the fraction ``overlap``, each
    output line the mean of ``average`` consecutive lines."""
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"a LOFARgram is of one channel (N,), got shape {arr.shape}")
    nfft = int(round(sample_rate_hz / resolution_hz))
    if resolution_hz <= 0 or abs(nfft * resolution_hz - sample_rate_hz) > 1e-9 * sample_rate_hz:
        raise ValueError(f"sample_rate_hz / resolution_hz must be a whole number, got {sample_rate_hz} / "
                         f"{resolution_hz}")
    if not (0.0 <= overlap < 1.0) or average < 1:
        raise ValueError(f"need 0 <= overlap < 1 and average >= 1, got {overlap}, {average}")
    s = spectrogram(arr, sample_rate_hz, nfft, int(round(overlap * nfft)), window)
    count = len(s.times_s) // average
    if count == 0:
        raise ValueError(f"{len(s.times_s)} lines are fewer than average={average}")
    power = s.power[:count * average].reshape(count, average, -1).mean(axis=1)
    times = s.times_s[:count * average].reshape(count, average).mean(axis=1)
    if normalise:
        power = power / tpsw(power)
    with np.errstate(divide="ignore"):
        return Lofargram(times, s.freqs_hz, 10.0 * np.log10(power), normalise)


@dataclass(frozen=True)
class Demon:
    """``freqs_hz (F,)`` modulation frequencies up to the maximum asked for, ``power (T, F)`` the
    envelope spectrum of each frame (mean removed, full-scale²/Hz), ``times_s (T,)`` frame centres."""

    times_s: Float64Array
    freqs_hz: Float64Array
    power: Float64Array


def demon(x: FloatArray, sample_rate_hz: float, band_hz: tuple[float, float], *, max_frequency_hz: float = 100.0,
          resolution_hz: float = 0.5, frame_s: float | None = None, order: int = 6) -> Demon:
    """DEMON spectra of one channel ``x (N,)``: band-pass ``band_hz`` (Butterworth of ``order``,
    zero phase), envelope ``|hilbert|``, low-pass at ``max_frequency_hz`` and decimate to about
    ``4 × max_frequency_hz``, then the PSD (Hann, half overlap, bins ``resolution_hz`` apart)
    of each frame of ``frame_s`` (the whole signal when None)."""
    from scipy.signal import butter, hilbert, sosfiltfilt

    arr = np.asarray(x, np.float64)
    fs = float(sample_rate_hz)
    lo, hi = float(band_hz[0]), float(band_hz[1])
    if arr.ndim != 1 or not np.all(np.isfinite(arr)):
        raise ValueError(f"DEMON takes one finite channel (N,), got shape {arr.shape}")
    if not (0 < lo < hi < fs / 2):
        raise ValueError(f"band_hz must satisfy 0 < lo < hi < {fs / 2}, got {band_hz}")
    if not (0 < max_frequency_hz < lo and resolution_hz > 0):
        raise ValueError(f"need 0 < max_frequency_hz < band low edge and resolution_hz > 0, got "
                         f"{max_frequency_hz}, {resolution_hz}")
    band = sosfiltfilt(butter(order, [lo, hi], "bandpass", fs=fs, output="sos"), arr)
    envelope = np.abs(hilbert(band))
    q = max(int(fs // (4 * max_frequency_hz)), 1)
    smooth = sosfiltfilt(butter(order, max_frequency_hz, "lowpass", fs=fs, output="sos"), envelope)
    dec = smooth[::q]
    fs_d = fs / q
    nfft = int(round(fs_d / resolution_hz))
    frame = len(dec) if frame_s is None else int(round(frame_s * fs_d))
    if frame < nfft or len(dec) < frame:
        raise ValueError(f"a frame needs at least 1 / resolution_hz = {1 / resolution_hz} s of signal")
    count = len(dec) // frame
    frames = dec[:count * frame].reshape(count, frame)
    frames = frames - frames.mean(axis=1, keepdims=True)
    s = spectrogram(frames, fs_d, nfft)
    keep = s.freqs_hz <= max_frequency_hz
    times = (np.arange(count) + 0.5) * frame / fs_d
    return Demon(times.astype(np.float64), s.freqs_hz[keep], s.power.mean(axis=-2)[:, keep])
