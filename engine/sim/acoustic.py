"""Underwater sound from moving sources at moving hydrophones (the harbor rig's passive sonar).

Each ship radiates a tonal plus broadband noise from a point moving at constant velocity.
A hydrophone at world position ``e(t)`` hears, at time ``t``, what the ship emitted at the
retarded time ``τ`` with ``t − τ = |s(τ) − e(t)| / c`` (solved by fixed-point iteration),
spread spherically: ``x(t) = src(τ) / |s(τ) − e(t)|``. Direct path only in an isovelocity
ocean (no surface or bottom reflections, no absorption). The propagation delay makes the
Doppler shift and the inter-element delays that beamforming reads.

The broadband source and the ambient noise are white Gaussian noise band-limited to
``band_hz`` (FFT mask); the broadband source is sampled at the retarded times by a
Kaiser-windowed sinc (:data:`SINC_HALF_TAPS` each side), the tonal is evaluated exactly.
Ambient noise is independent between elements.

Array SNR: ``10 log10(C · S / N)`` with ``S`` a ship's signal power per element (tonal plus
broadband) at the range it has when the recording starts, and ``N`` the noise power per
element; both lie in ``band_hz``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine.pose_track import PoseTrack

SINC_HALF_TAPS = 16
KAISER_BETA = 8.0
SOUND_SPEED_M_S = 1500.0


@dataclass(frozen=True)
class Ship:
    """A radiating ship: world position ``start_m (3,)`` at the recording start, constant
    ``velocity_m_s (3,)``, ``length_m``, a tonal at ``tonal_hz`` carrying ``tonal_fraction`` of
    its power, and its array SNR ``snr_db``."""

    name: str
    start_m: np.ndarray
    velocity_m_s: np.ndarray
    length_m: float
    tonal_hz: float
    snr_db: float
    tonal_fraction: float = 0.3

    def position(self, t_s: np.ndarray) -> np.ndarray:
        """``(..., 3)`` world position at ``t_s`` seconds after the recording start."""
        return np.asarray(self.start_m) + np.asarray(t_s)[..., None] * np.asarray(self.velocity_m_s)


def band_noise(rng: np.random.Generator, shape: tuple[int, ...], fs: float, band_hz: tuple[float, float]
               ) -> np.ndarray:
    """White Gaussian noise ``shape (..., N)`` kept in ``band_hz`` by an FFT mask, unit variance."""
    x = rng.normal(size=shape)
    spec = np.fft.rfft(x, axis=-1)
    f = np.fft.rfftfreq(shape[-1], 1.0 / fs)
    spec[..., (f < band_hz[0]) | (f > band_hz[1])] = 0.0
    y = np.fft.irfft(spec, n=shape[-1], axis=-1)
    return y / np.sqrt(np.mean(y * y))


_TABLE_STEPS = 1024  # kernel samples per input sample (linear interpolation between them)


def _kernel_table() -> tuple[np.ndarray, np.ndarray]:
    x = np.arange(-SINC_HALF_TAPS * _TABLE_STEPS, SINC_HALF_TAPS * _TABLE_STEPS + 1) / _TABLE_STEPS
    w = np.i0(KAISER_BETA * np.sqrt(np.clip(1.0 - (x / SINC_HALF_TAPS) ** 2, 0.0, None))) / np.i0(KAISER_BETA)
    return x, np.sinc(x) * w


def _sinc_sample(signal: np.ndarray, position: np.ndarray) -> np.ndarray:
    """``signal`` (sampled at integers) at fractional sample ``position (M,)`` (Kaiser-windowed sinc)."""
    x, h = _kernel_table()
    i0 = np.floor(position).astype(np.int64)
    frac = position - i0
    out = np.zeros(len(position))
    for j in range(-SINC_HALF_TAPS + 1, SINC_HALF_TAPS + 1):
        out += signal[i0 + j] * np.interp(frac - j, x, h)
    return out


def element_tracks(world_from_ego: PoseTrack, elements_ego: np.ndarray, times_ns: np.ndarray) -> np.ndarray:
    """``(C, N, 3)`` world positions of ``elements_ego (C, 3)`` at ``times_ns (N,)``."""
    pose = world_from_ego.interpolate(times_ns)
    r = quat.to_matrix(pose.rotation)
    return np.einsum("nij,cj->cni", r, elements_ego) + pose.translation[None]


def retarded_time(ship: Ship, receiver_m: np.ndarray, t_s: np.ndarray, c: float = SOUND_SPEED_M_S,
                  iterations: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Emission time ``τ (...)`` (s) of what ``receiver_m (..., 3)`` hears at ``t_s (...)`` and the
    path length ``(...)`` (m); each iteration gains the factor ``|v| / c`` in accuracy."""
    tau = t_s - np.linalg.norm(ship.position(t_s) - receiver_m, axis=-1) / c
    for _ in range(iterations):
        r = np.linalg.norm(ship.position(tau) - receiver_m, axis=-1)
        tau = t_s - r / c
    return tau, np.linalg.norm(ship.position(tau) - receiver_m, axis=-1)


def received(ships: list[Ship], elements_world: np.ndarray, times_s: np.ndarray, fs: float,
             band_hz: tuple[float, float], noise_rms: float, rng: np.random.Generator,
             c: float = SOUND_SPEED_M_S) -> np.ndarray:
    """``(C, N) float64`` pressure at elements moving along ``elements_world (C, N, 3)`` sampled at
    ``times_s (N,)`` (s after the recording start, spacing ``1/fs``): every ship's sound plus
    ambient noise of ``noise_rms`` per element (see the module docstring for the SNR rule)."""
    n_el, n = elements_world.shape[:2]
    out = noise_rms * band_noise(rng, (n_el, n), fs, band_hz)
    centre = elements_world[:, 0].mean(axis=0)
    for ship in ships:
        r0 = float(np.linalg.norm(ship.position(np.array(0.0)) - centre))
        signal_power = noise_rms ** 2 * 10.0 ** (ship.snr_db / 10.0) / n_el  # per element at r0
        tonal_amp = math.sqrt(2.0 * ship.tonal_fraction * signal_power) * r0
        broad_rms = math.sqrt((1.0 - ship.tonal_fraction) * signal_power) * r0
        tau, dist = retarded_time(ship, elements_world, times_s[None, :], c)
        g0 = tau.min() - (SINC_HALF_TAPS + 1) / fs  # emission time of the broadband grid's sample 0
        span = int(math.ceil((tau.max() - g0) * fs)) + SINC_HALF_TAPS + 2
        broadband = broad_rms * band_noise(rng, (span,), fs, band_hz)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        for e in range(n_el):
            src = _sinc_sample(broadband, (tau[e] - g0) * fs)
            src += tonal_amp * np.sin(2.0 * math.pi * ship.tonal_hz * tau[e] + phase)
            out[e] += src / dist[e]
    return out
