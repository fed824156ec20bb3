"""Passive sonar: bearing-time records of a 32-element array at 8 kHz in 1 s frames.

The recording: a horizontal ring of 32 hydrophones (radius 1.5 m), white noise on every
element and one broadband plane wave (array SNR 10 dB), one minute synthesised (FFT-domain
delays) and repeated for the 10-minute run. Beams every 1° over the full circle (360).

- ``btr_vs_arlpy_20s``: 20 frames, one band 250–3000 Hz (88 bins of 31.25 Hz), ``nfft`` 256
  without overlap and no window (what ``arlpy.bf.broadband`` does): Fathom's
  :func:`bearing_time_record` (Bartlett) vs ``arlpy.bf.broadband(frame, fs, 256, sd, 250, 3000)``
  per frame averaged over its snapshots, the steering delays built before timing; outputs
  asserted equal (1e-6 relative). Goal ≥ 10×. arlpy's small BLAS calls run with the BLAS pool
  limited to one thread, its faster setting on a shared 2-core machine (more threads thrash);
  Fathom runs its own worker threads (one per CPU) with the BLAS pool held at one thread.
- ``btr_10min``: Fathom on the whole 10 minutes with its defaults (Hann window, 50 % overlap,
  bands 250–1000 and 1000–3000 Hz, Bartlett): the summary line gives seconds of compute per
  minute of recording and the real-time factor (goal ≥ 50×). ``btr_10min_mvdr`` the same
  with MVDR (diagonal loading 1 %), reported without a goal.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.passive.beamform import bearing_time_record, steering_delays

FS = 8000.0
C = 32
MINUTES = 10
AZIMUTHS = np.radians(np.arange(-180.0, 180.0, 1.0))
PEER_FRAMES = 20


def _ring() -> np.ndarray:
    a = 2 * np.pi * np.arange(C) / C
    return np.stack([1.5 * np.cos(a), 1.5 * np.sin(a), np.zeros(C)], axis=1)


@pytest.fixture(scope="module")
def recording() -> np.ndarray:
    """``(32, 10 min) float32``: one synthesised minute, repeated."""
    rng = np.random.default_rng(5)
    n = int(60 * FS)
    pos = _ring()
    lead = pos @ np.array([math.cos(0.8), math.sin(0.8), 0.0]) / 1500.0
    f = np.fft.rfftfreq(n, 1 / FS)
    source = np.fft.rfft(rng.normal(size=n))
    minute = np.empty((C, n), np.float32)
    gain = math.sqrt(10.0 / C)  # array SNR 10 dB
    for c in range(C):
        minute[c] = gain * np.fft.irfft(source * np.exp(2j * np.pi * f * lead[c]), n=n) + rng.normal(size=n)
    return np.tile(minute, (1, MINUTES))


def _summary(seconds_of_audio: float):
    def line(median_s: float) -> str:
        per_minute = median_s / (seconds_of_audio / 60.0)
        return f"{per_minute:.3f} s of compute per minute of recording, {seconds_of_audio / median_s:.0f}× real time"
    return line


def test_fathom_btr_like_arlpy(benchmark, recording):
    x = recording[:, :int(PEER_FRAMES * FS)]
    benchmark.group = "btr_vs_arlpy_20s"
    benchmark.extra_info.update(role="fathom", goal=10, items=PEER_FRAMES, unit="frames")
    btr = benchmark(bearing_time_record, x, FS, _ring(), AZIMUTHS, [[250.0, 3000.0]], nfft=256, overlap=0,
                    window=None)
    assert btr.power.shape == (PEER_FRAMES, 1, len(AZIMUTHS))


def test_arlpy_broadband(benchmark, recording):
    import arlpy.bf
    from threadpoolctl import threadpool_limits

    x = recording[:, :int(PEER_FRAMES * FS)].astype(np.float64)
    sd = arlpy.bf.steering_plane_wave(_ring(), 1500.0, np.stack([AZIMUTHS, np.zeros_like(AZIMUTHS)], axis=1))
    np.testing.assert_allclose(sd, -steering_delays(_ring(), AZIMUTHS), atol=1e-18)
    benchmark.group = "btr_vs_arlpy_20s"
    benchmark.extra_info.update(role="peer")
    frame = int(FS)

    def run() -> np.ndarray:
        with threadpool_limits(1, user_api="blas"):
            return np.stack([arlpy.bf.broadband(x[:, f * frame:(f + 1) * frame], FS, 256, sd, fmin=250.0,
                                                fmax=3000.0).mean(axis=1) for f in range(PEER_FRAMES)])

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=0)
    ours = bearing_time_record(x, FS, _ring(), AZIMUTHS, [[250.0, 3000.0]], nfft=256, overlap=0, window=None)
    np.testing.assert_allclose(ours.power[:, 0], out, rtol=1e-6)


@pytest.mark.parametrize("method", ["bartlett", "mvdr"])
def test_fathom_btr_10_minutes(benchmark, recording, method):
    seconds = recording.shape[1] / FS
    benchmark.group = "btr_10min" if method == "bartlett" else "btr_10min_mvdr"
    benchmark.extra_info.update(role="fathom", summary=_summary(seconds))
    btr = benchmark.pedantic(bearing_time_record, (recording, FS, _ring(), AZIMUTHS, [[250.0, 1000.0],
                                                                                      [1000.0, 3000.0]]),
                             {"method": method}, rounds=1, iterations=1)
    assert btr.power.shape == (MINUTES * 60, 2, len(AZIMUTHS))
    err = np.degrees(np.angle(np.exp(1j * (btr.peak_azimuths(1) - 0.8))))
    assert np.abs(err).max() < 1.0
