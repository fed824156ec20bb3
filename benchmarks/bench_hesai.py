"""Hesai pcap → points, pcap parsing included: Fathom vs the NumPy implementation of the manual
(tests/test_hesai.py's reference, fed by NumPy views of the same file's packets).

Captures written by the tests' packet writer: an XT32 at 10 Hz (2500 packets, 0.58 M points)
and an AT128 (2500 packets, 0.58 M points), 10 % empty channels. Both sides read the file
from disk on every call and return every point's xyz, reflectivity, channel and time.
Asserted: the same points, positions to 3 mm (float32), times equal.
"""

from __future__ import annotations

import numpy as np
import pytest

from formats.hesai import read_hesai_pcap
from formats.pcap import read_udp_payloads
from tests.test_hesai import SPEC, _angle_correction, _at128_correction, _capture, _packets, _reference, _scene

N_PACKETS = 2500


@pytest.fixture(scope="module", params=["XT32", "AT128"])
def capture(request, tmp_path_factory):
    model = request.param
    az, dist, refl, stamp = _scene(model, N_PACKETS, seed=0)
    folder = tmp_path_factory.mktemp("hesai")
    if model == "AT128":
        raw, cor = _at128_correction()
        (folder / "c.dat").write_bytes(raw)
        arg = folder / "c.dat"
    else:
        cor = arg = _angle_correction(SPEC[model][1], 1)
    path = folder / f"{model}.pcap"
    path.write_bytes(_capture(_packets(model, az, dist, refl, stamp), stamp))
    return model, path, arg, cor


def _numpy_read(model: str, path, cor) -> dict[str, np.ndarray]:
    """The packets' fields as NumPy views of the file, then the manual's geometry in NumPy."""
    _, channels, blocks, _ = SPEC[model]
    rows = read_udp_payloads(path, None).array()
    at = model == "AT128"
    block = (3 if at else 2) + 4 * channels
    body = rows[:, 12:12 + blocks * block].reshape(len(rows), blocks, block)
    az = body[:, :, 0].astype(np.int64) | (body[:, :, 1].astype(np.int64) << 8)
    if at:
        az = az * 256 + body[:, :, 2]
    units = body[:, :, (3 if at else 2):].reshape(len(rows), blocks, channels, 4)
    dist = units[..., 0].astype(np.int64) | (units[..., 1].astype(np.int64) << 8)
    tail = 12 + blocks * block + (4 if at else 0)
    usec_at, utc_at = (tail + 20, tail + 26) if at else (tail + 19, tail + 13)
    usec = rows[:, usec_at:usec_at + 4].copy().view("<u4")[:, 0].astype(np.int64)
    utc = rows[:, utc_at:utc_at + 6].astype(np.int64)
    year = utc[:, 0] + (1900 if at else 2000)
    days = (np.array(year - 1970, "datetime64[Y]") + (utc[:, 1] - 1).astype("timedelta64[M]")).astype(
        "datetime64[D]") + (utc[:, 2] - 1).astype("timedelta64[D]")
    stamp = (days.astype(np.int64) * 86400 + utc[:, 3] * 3600 + utc[:, 4] * 60 + utc[:, 5]) * 10**9 + usec * 1000
    return _reference(model, az, dist, units[..., 2], stamp, cor)


def test_fathom_hesai_pcap(benchmark, capture):
    model, path, arg, _ = capture
    benchmark.group = f"hesai_pcap_{model}"
    sweeps, rep = read_hesai_pcap(path, arg)
    benchmark.extra_info.update(role="fathom", items=rep.points, unit="points")
    _, rep2 = benchmark(read_hesai_pcap, path, arg)
    assert rep2.points == rep.points


def test_numpy_manual_hesai_pcap(benchmark, capture):
    model, path, arg, cor = capture
    benchmark.group = f"hesai_pcap_{model}"
    benchmark.extra_info.update(role="peer")
    ref = benchmark(_numpy_read, model, path, cor)
    sweeps, _ = read_hesai_pcap(path, arg)
    xyz = np.concatenate([s.xyz for s in sweeps])
    assert len(xyz) == len(ref["t"])
    assert np.abs(xyz - ref["xyz"]).max() < 3e-3
    np.testing.assert_array_equal(np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps]), ref["t"])
