"""Spectrograms (against SciPy), LOFARgrams (tonals in their bin, TPSW against a loop
reference) and DEMON spectra (the modulation rates of amplitude-modulated noise)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal

from engine.passive.spectra import demon, lofargram, spectrogram, tpsw

FS = 8000.0


@pytest.mark.parametrize("nfft,overlap,window", [(256, None, "hann"), (255, 100, "hamming"), (512, 0, None)])
def test_spectrogram_equals_scipy(nfft, overlap, window):
    x = np.random.default_rng(0).normal(size=(2, 3, 5000))
    s = spectrogram(x, FS, nfft, overlap, window)
    f, t, p = scipy.signal.spectrogram(x, FS, window="boxcar" if window is None else window, nperseg=nfft,
                                       noverlap=nfft // 2 if overlap is None else overlap, detrend=False,
                                       scaling="density", mode="psd")
    np.testing.assert_allclose(s.power, np.swapaxes(p, -1, -2), rtol=1e-12, atol=0)
    np.testing.assert_array_equal(s.freqs_hz, f)
    np.testing.assert_allclose(s.times_s, t, rtol=1e-15)


def test_spectrogram_refuses_bad_input():
    with pytest.raises(ValueError, match="fewer than one segment"):
        spectrogram(np.zeros(10), FS, 16)
    with pytest.raises(ValueError, match="overlap"):
        spectrogram(np.zeros(100), FS, 16, 16)
    with pytest.raises(ValueError, match="finite"):
        spectrogram(np.array([0.0, np.inf] * 20), FS, 16)
    with pytest.raises(ValueError, match="sample_rate_hz"):
        spectrogram(np.zeros(100), 0.0, 16)


def naive_tpsw(p: np.ndarray, half_width: int, gap: int, clip: float) -> np.ndarray:
    def split_mean(v):
        out = np.empty_like(v)
        for k in range(len(v)):
            idx = [j for j in range(k - half_width, k + half_width + 1) if 0 <= j < len(v) and abs(j - k) > gap]
            out[k] = v[idx].mean()
        return out

    first = split_mean(p)
    return split_mean(np.minimum(p, clip * first))


def test_tpsw_equals_a_loop_reference():
    p = np.random.default_rng(1).exponential(size=(3, 200))
    p[:, 50] = 100.0
    got = tpsw(p, half_width=10, gap=2, clip=2.5)
    for row in range(3):
        np.testing.assert_allclose(got[row], naive_tpsw(p[row], 10, 2, 2.5), rtol=1e-12)
    with pytest.raises(ValueError, match="gap"):
        tpsw(p, half_width=2, gap=2)


@pytest.mark.parametrize("tonal_hz,resolution", [(437.3, 1.0), (1234.8, 0.5), (61.0, 2.0)])
def test_lofargram_shows_a_tonal_in_its_bin(tonal_hz, resolution):
    rng = np.random.default_rng(2)
    t = np.arange(int(12 * FS)) / FS
    x = 0.2 * np.sin(2 * np.pi * tonal_hz * t) + rng.normal(size=len(t))
    lofar = lofargram(x, FS, resolution, average=2)
    assert lofar.normalised and lofar.level_db.shape[1] == len(lofar.freqs_hz)
    assert np.all(np.diff(lofar.freqs_hz) == resolution)
    peak = lofar.freqs_hz[np.argmax(lofar.level_db, axis=1)]
    assert np.all(np.abs(peak - tonal_hz) <= resolution / 2), peak
    # normalised: the noise background sits near 0 dB, the tonal well above it
    assert abs(np.median(lofar.level_db)) < 1.5
    assert lofar.level_db.max(axis=1).min() > 8.0
    raw = lofargram(x, FS, resolution, average=2, normalise=False)
    np.testing.assert_allclose(raw.times_s, lofar.times_s)
    noise_psd_db = 10 * np.log10(2 / FS)  # unit-variance white noise, one-sided
    assert abs(np.median(raw.level_db) - noise_psd_db) < 1.0


def test_lofargram_refuses_bad_resolutions():
    with pytest.raises(ValueError, match="whole number"):
        lofargram(np.zeros(80000), FS, 3.0)
    with pytest.raises(ValueError, match="one channel"):
        lofargram(np.zeros((2, 80000)), FS, 1.0)
    with pytest.raises(ValueError, match="average"):
        lofargram(np.zeros(16000), FS, 1.0, average=10)


@pytest.mark.parametrize("shaft_hz,blades", [(3.5, 4), (6.25, 3)])
def test_demon_finds_shaft_and_blade_rates(shaft_hz, blades):
    rng = np.random.default_rng(3)
    t = np.arange(int(30 * FS)) / FS
    modulation = 1 + 0.3 * np.cos(2 * np.pi * shaft_hz * t) + 0.5 * np.cos(2 * np.pi * blades * shaft_hz * t)
    carrier = scipy.signal.sosfiltfilt(scipy.signal.butter(6, [1500, 3000], "bandpass", fs=FS, output="sos"),
                                       rng.normal(size=len(t)))
    x = carrier * modulation + 0.2 * rng.normal(size=len(t))
    d = demon(x, FS, (1500.0, 3000.0), max_frequency_hz=40.0, resolution_hz=0.25, frame_s=15.0)
    assert d.power.shape == (2, len(d.freqs_hz)) and d.freqs_hz.max() <= 40.0
    np.testing.assert_allclose(d.times_s, [7.5, 22.5], rtol=1e-3)
    for spectrum in d.power:
        order = d.freqs_hz[np.argsort(spectrum)[::-1]]
        top = set(np.round(order[:2], 2))
        assert top == {shaft_hz, blades * shaft_hz}, order[:4]
    # unmodulated noise has no line: its strongest bin stands far less above the median
    flat = demon(carrier, FS, (1500.0, 3000.0), max_frequency_hz=40.0, resolution_hz=0.25)
    assert flat.power.max() / np.median(flat.power) < 0.1 * d.power.max() / np.median(d.power)


def test_demon_refuses_bad_bands():
    x = np.zeros(80000)
    with pytest.raises(ValueError, match="band_hz"):
        demon(x, FS, (3000.0, 1000.0))
    with pytest.raises(ValueError, match="band_hz"):
        demon(x, FS, (1000.0, 5000.0))
    with pytest.raises(ValueError, match="max_frequency_hz"):
        demon(x, FS, (100.0, 1000.0), max_frequency_hz=200.0)
    with pytest.raises(ValueError, match="resolution"):
        demon(x[:8000], FS, (1000.0, 2000.0), resolution_hz=0.1)
