"""Velodyne pcap → points, pcap parsing included: Fathom vs velodyne_decoder (goal ≥ 2×).

The capture is written by Fathom's writer: HDL-32E at 600 rpm (≈ 69 k points per rotation),
2.7 rotations ≈ 178 k points, and VLP-16 at 600 rpm, 6.5 rotations ≈ 179 k points (5 % empty channels). Both
decoders read the file from disk on every call and return every point's xyz, intensity,
ring and time (Fathom: ``Sweep`` columns per rotation; velodyne_decoder: an ``(N, 8)``
float32 array per scan). Asserted: the same points in the same order, equal intensities and
rings, times to 1 µs (the peer's float32 seconds) and positions to 6 mm (the two interpolate
each firing's azimuth between packets differently: ~0.005° apart, 5 mm at 60 m).
"""

from __future__ import annotations

import numpy as np
import pytest
import velodyne_decoder as vd

from formats.velodyne import Firings, get_model, read_velodyne_pcap, write_velodyne_pcap

CASES = {"HDL-32E": 2.7, "VLP-16": 6.5}  # model -> rotations
PEER = {"HDL-32E": vd.Model.HDL32E, "VLP-16": vd.Model.VLP16}


@pytest.fixture(scope="module", params=sorted(CASES))
def capture(request, tmp_path_factory):
    model = request.param
    mdl = get_model(model)
    period_ns = mdl.sequence_period_us * 1000
    s = int(CASES[model] * 0.1e9 / period_ns)
    rng = np.random.default_rng(0)
    dist = rng.uniform(1.0, 60.0, (s, mdl.n_lasers))
    dist[rng.random(dist.shape) < 0.05] = 0.0
    firings = Firings(1_700_000_000_000_000_000 + np.rint(np.arange(s) * period_ns).astype(np.int64),
                      (np.arange(s) * period_ns * 1e-9 * 3600.0) % 360.0, dist, rng.integers(0, 256, dist.shape))
    path = tmp_path_factory.mktemp("velodyne") / f"{model}.pcap"
    write_velodyne_pcap(path, firings, model)
    _, rep = read_velodyne_pcap(path)
    assert rep.points >= 170_000
    return model, path, rep.points


def test_fathom_velodyne_pcap(benchmark, capture):
    model, path, n = capture
    benchmark.group = f"velodyne_pcap_{model}"
    benchmark.extra_info.update(role="fathom", goal=2, items=n, unit="points")
    _, rep = benchmark(read_velodyne_pcap, path)
    assert rep.points == n


def test_velodyne_decoder_pcap(benchmark, capture):
    model, path, n = capture
    benchmark.group = f"velodyne_pcap_{model}"
    benchmark.extra_info.update(role="peer")

    def run():
        config = vd.Config(model=PEER[model], min_range=0.0, max_range=1000.0)
        return [scan.points for scan in vd.read_pcap(str(path), config)]

    pts = np.concatenate(benchmark(run))
    scans = list(vd.read_pcap(str(path), vd.Config(model=PEER[model], min_range=0.0, max_range=1000.0)))
    sweeps, _ = read_velodyne_pcap(path)
    cat = lambda name: np.concatenate([getattr(s, name) for s in sweeps])
    assert len(pts) == n
    np.testing.assert_array_equal(pts[:, 3], cat("intensity"))
    np.testing.assert_array_equal(pts[:, 6], cat("ring"))
    assert np.linalg.norm(pts[:, :3] - cat("xyz"), axis=1).max() < 0.006
    t0 = sweeps[0].timestamp_ns
    stamps = np.repeat([round(s.stamp.device * 1e9) - t0 for s in scans], [len(s.points) for s in scans])
    ours = np.concatenate([s.timestamp_ns - t0 + s.time_offset_ns for s in sweeps])
    np.testing.assert_allclose(stamps + pts[:, 4].astype(np.float64) * 1e9, ours, atol=1e3, rtol=0)
