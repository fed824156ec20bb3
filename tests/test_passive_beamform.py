"""Beamforming into bearing-time records: against arlpy's beamformers and a NumPy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import get_window

from engine.passive.beamform import BearingTimeRecord, bearing_time_record, cross_spectra, steering_delays

FS = 4000.0


def _ring(c: int, radius: float = 1.0, wobble: float = 0.0, seed: int = 0) -> np.ndarray:
    a = 2 * np.pi * np.arange(c) / c
    z = wobble * np.random.default_rng(seed).normal(size=c)
    return np.stack([radius * np.cos(a), radius * np.sin(a), z], axis=1)


def _plane_wave(pos: np.ndarray, azimuth: float, n: int, snr: float, seed: int) -> np.ndarray:
    """White noise per element plus a broadband plane wave from ``azimuth`` (FFT-domain delays)."""
    rng = np.random.default_rng(seed)
    lead = pos @ np.array([math.cos(azimuth), math.sin(azimuth), 0.0]) / 1500.0
    f = np.fft.rfftfreq(n, 1 / FS)
    s = np.fft.rfft(rng.normal(size=n))
    x = np.fft.irfft(s[None] * np.exp(2j * np.pi * f[None] * lead[:, None]), n=n)
    return snr * x + rng.normal(size=(len(pos), n))


def naive_btr(x, fs, pos, az, bands, frame, nfft, overlap, window, method, loading):
    """Per frame, bin and beam: aᴴRa or 1/aᴴ(R+δI)⁻¹a with explicit loops over snapshots."""
    c = len(pos)
    hop = nfft - overlap
    w = np.ones(nfft) if window is None else get_window(window, nfft)
    u = np.stack([np.cos(az), np.sin(az), np.zeros_like(az)], axis=1)
    tau = u @ (pos - pos.mean(0)).T / 1500.0
    out = np.zeros((x.shape[1] // frame, len(bands), len(az)))
    for fr in range(out.shape[0]):
        seg = x[:, fr * frame:(fr + 1) * frame]
        k = (frame - overlap) // hop
        spec = np.stack([np.fft.fft(seg[:, j * hop:j * hop + nfft] * w, axis=1) / math.sqrt(nfft) for j in range(k)])
        for i in range(nfft // 2):
            f = i * fs / nfft
            r = sum(np.outer(s[:, i], s[:, i].conj()) for s in spec) / k
            if method == "mvdr":
                r = np.linalg.inv(r + loading * np.trace(r).real / c * np.eye(c))
            for b in range(len(az)):
                a = np.exp(2j * np.pi * f * tau[b]) / math.sqrt(c)
                q = (a.conj() @ r @ a).real
                for m, (lo, hi) in enumerate(bands):
                    if lo <= f <= hi:
                        out[fr, m, b] += 2 / q if method == "mvdr" else 2 * q
    return out


@pytest.mark.parametrize("method,peer_name", [("bartlett", "bartlett"), ("mvdr", "capon")])
def test_equals_arlpy_broadband_frame_by_frame(method, peer_name):
    import arlpy.bf

    pos = _ring(12, wobble=0.2)
    az = np.radians(np.arange(-180.0, 180.0, 3.0))
    x = _plane_wave(pos, 0.7, int(3 * FS), 0.5, seed=1)
    bands = [[200.0, 900.0], [600.0, 1500.0], [1000.0, 1000.0]]  # overlapping, and one bin alone
    btr = bearing_time_record(x, FS, pos, az, bands, nfft=64, overlap=0, window=None, method=method, loading=0.0)
    sd = arlpy.bf.steering_plane_wave(pos, 1500.0, np.stack([az, np.zeros_like(az)], axis=1))
    np.testing.assert_allclose(sd, -steering_delays(pos, az), rtol=0, atol=1e-18)
    peer = getattr(arlpy.bf, peer_name)
    for fr in range(3):
        frame = x[:, int(fr * FS):int((fr + 1) * FS)]
        for m, (lo, hi) in enumerate(bands):
            want = arlpy.bf.broadband(frame, FS, 64, sd, fmin=lo, fmax=hi, beamformer=peer).mean(axis=1)
            np.testing.assert_allclose(btr.power[fr, m], want, rtol=1e-6)


@pytest.mark.parametrize("method,loading", [("bartlett", 0.0), ("mvdr", 0.05)])
def test_equals_numpy_reference_with_window_and_overlap(method, loading):
    pos = _ring(6, wobble=0.3, seed=2)
    az = np.radians(np.arange(0.0, 360.0, 20.0))
    x = _plane_wave(pos, -2.0, int(2 * FS), 1.0, seed=3)[:, :int(2 * FS) - 5]  # a partial frame is left out
    bands = [[100.0, 700.0], [1200.0, 1900.0]]
    btr = bearing_time_record(x, FS, pos, az, bands, start_ns=10**18, nfft=64, overlap=40, window="hamming",
                              method=method, loading=loading)
    want = naive_btr(x, FS, pos, az, bands, int(FS), 64, 40, "hamming", method, loading)
    assert btr.power.shape == (1, 2, len(az))
    np.testing.assert_allclose(btr.power, want, rtol=1e-10)
    np.testing.assert_array_equal(btr.times_ns, [10**18 + 500_000_000])


def test_chunks_and_refresh_do_not_change_the_result():
    # 70 frames cross the 64-frame chunk; 40+ adjacent bins cross the phase-table refresh
    pos = _ring(5, wobble=0.1)
    az = np.radians(np.arange(-180.0, 180.0, 7.0))
    x = _plane_wave(pos, 1.0, 70 * 256, 0.3, seed=4)
    btr = bearing_time_record(x, 256.0, pos, az, [[0.0, 127.0]], nfft=128, overlap=0, window=None)
    want = naive_btr(x[:, -2 * 256:], 256.0, pos, az, [[0.0, 127.0]], 256, 128, 0, None, "bartlett", 0.0)
    np.testing.assert_allclose(btr.power[-2:], want, rtol=1e-10)
    first = bearing_time_record(x[:, :256], 256.0, pos, az, [[0.0, 127.0]], nfft=128, overlap=0, window=None)
    np.testing.assert_allclose(btr.power[:1], first.power, rtol=1e-12)


def test_cross_spectra_are_hermitian_snapshot_means():
    x = np.random.default_rng(5).normal(size=(3, 2, 100))
    r = cross_spectra(x, 32, 16, np.hanning(32), np.array([1, 5]))
    spec = np.fft.rfft(np.stack([x[:, :, j * 16:j * 16 + 32] for j in range(5)], axis=2) * np.hanning(32), axis=-1)
    spec = spec[..., [1, 5]] / math.sqrt(32)  # (C, F, K, nb)
    want = np.einsum("ifkn,jfkn->fnij", spec, spec.conj()) / 5
    np.testing.assert_allclose(r, want, rtol=1e-12, atol=1e-15)


def test_a_plane_wave_peaks_at_its_azimuth():
    pos = _ring(16, radius=1.0)
    az = np.radians(np.arange(-180.0, 180.0, 1.0))
    truth = math.radians(-123.4)
    x = _plane_wave(pos, truth, int(4 * FS), 0.5, seed=6)
    for method in ("bartlett", "mvdr"):
        btr = bearing_time_record(x, FS, pos, az, [[300.0, 1500.0]], method=method)
        err = np.degrees(np.angle(np.exp(1j * (btr.peak_azimuths() - truth))))
        assert np.abs(err).max() < 0.5, (method, err)


def test_peak_refinement_wraps_around_a_full_circle():
    az = np.radians(np.arange(0.0, 360.0, 10.0))
    p = np.cos(az - math.radians(-3.0))[None, None, :] + 2.0  # peak between 350° and 0°
    btr = BearingTimeRecord(np.zeros(1, np.int64), az, np.array([[0.0, 1.0]]), p, "bartlett")
    assert -5.0 < math.degrees(btr.peak_azimuths()[0]) < -1.0
    half = BearingTimeRecord(np.zeros(1, np.int64), az[:10], np.array([[0.0, 1.0]]), p[..., :10], "bartlett")
    assert math.degrees(half.peak_azimuths()[0]) == 0.0  # at the edge of a sector: no neighbour, no shift


@pytest.mark.parametrize("kwargs,words", [
    (dict(bands_hz=[[900.0, 100.0]]), "lo <= hi"), (dict(bands_hz=[[100.0, 900.0], [20.0, 25.0]]), "holds no bin"),
    (dict(bands_hz=[[2100.0, 3000.0]]), "no frequency bin"), (dict(method="music"), "method"),
    (dict(frame_s=0.0101), "whole number"), (dict(nfft=8000), "whole number"), (dict(overlap=256), "overlap"),
    (dict(loading=-1.0), "loading"), (dict(method="mvdr", loading=0.0, nfft=1024, overlap=0), "snapshots"),
    (dict(sound_speed_m_s=0.0), "sound_speed"),
])
def test_bad_arguments_are_refused(kwargs, words):
    args = dict(bands_hz=[[100.0, 900.0]])
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        bearing_time_record(np.zeros((4, 4000)), FS, _ring(4), np.zeros(3), **args)


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="channels"):
        bearing_time_record(np.zeros((3, 4000)), FS, _ring(4), np.zeros(3), [[100.0, 900.0]])
    with pytest.raises(ValueError, match="float"):
        bearing_time_record(np.zeros((4, 4000), np.int16), FS, _ring(4), np.zeros(3), [[100.0, 900.0]])
    with pytest.raises(ValueError, match="finite"):
        steering_delays(np.array([[0.0, 0.0, np.nan]]), np.zeros(2))
    with pytest.raises(ValueError, match="2 elements"):
        bearing_time_record(np.zeros((1, 4000)), FS, np.zeros((1, 3)), np.zeros(3), [[100.0, 900.0]])


def test_shorter_than_a_frame_gives_no_frames():
    btr = bearing_time_record(np.zeros((4, 100)), FS, _ring(4), np.zeros(3), [[100.0, 900.0]])
    assert btr.power.shape == (0, 1, 3) and btr.times_ns.shape == (0,)


@pytest.mark.parametrize("method", ["bartlett", "mvdr"])
def test_opposite_beams_and_workers_do_not_change_the_result(method):
    # a full circle pairs each beam with its opposite (one phase table for both); half circles do not
    pos = _ring(7, wobble=0.4, seed=8)
    az = np.radians(np.arange(-180.0, 180.0, 10.0))
    x = _plane_wave(pos, 2.5, int(3 * FS), 0.4, seed=9)
    args = (x, FS, pos)
    kw = dict(bands_hz=[[100.0, 900.0], [700.0, 1800.0]], method=method, nfft=128)
    full = bearing_time_record(*args, az, workers=1, **kw)
    halves = [bearing_time_record(*args, part, workers=1, **kw).power for part in (az[:18], az[18:])]
    np.testing.assert_allclose(full.power, np.concatenate(halves, axis=2), rtol=1e-12)
    np.testing.assert_array_equal(bearing_time_record(*args, az, workers=3, **kw).power, full.power)
