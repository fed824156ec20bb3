"""Ouster pcap → points, pcap parsing included: Fathom vs ouster-sdk's Python path (goal ≥ 2×).

The capture is written by ouster-sdk's own packet writer and pcap recorder (tests/test_ouster.py):
an OS-1-128 in 1024x10, RNG19_RFL8_SIG16_NIR16, 8 frames, 10 % of the pixels without a return
(≈ 0.94 M points). Both sides read the file from disk on every call and return every point
with a return: xyz, reflectivity, near-IR, beam and time (Fathom: ``Sweep`` columns per frame;
ouster-sdk: ``PcapFrameSetSource`` scans, ``XYZLut`` on each scan's range, the fields masked
by range > 0, as a user of its Python API writes it). Asserted: the same points, positions to
1 mm.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from formats.ouster import read_ouster_pcap
from formats.ouster_metadata import read_ouster_metadata
from tests.test_ouster import _doc, _sdk_capture

core = pytest.importorskip("ouster.sdk.core")
opcap = pytest.importorskip("ouster.sdk.pcap")


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    doc = _doc(128, "RNG19_RFL8_SIG16_NIR16", w=1024)
    folder = tmp_path_factory.mktemp("ouster")
    path, meta = folder / "os1-128.pcap", folder / "os1-128.json"
    meta.write_text(json.dumps(doc))
    _sdk_capture((core, opcap), doc, 8, path)
    _, rep = read_ouster_pcap(path, meta)
    assert rep.points > 900_000
    return path, meta, rep.points


def _sdk_read(path, meta):
    info = core.SensorInfo(meta.read_text())
    lut = core.XYZLut(info)
    out = []
    for frames in opcap.PcapFrameSetSource(str(path), meta=[str(meta)]):
        scan = frames[0]
        rng = scan.field("RANGE")
        keep = rng > 0
        out.append((lut(rng)[keep], scan.field("REFLECTIVITY")[keep], scan.field("NEAR_IR")[keep],
                    np.nonzero(keep)[0], np.broadcast_to(np.asarray(scan.timestamp), rng.shape)[keep]))
    return out


def test_fathom_ouster_pcap(benchmark, capture):
    path, meta, n = capture
    benchmark.group = "ouster_pcap_OS-1-128"
    benchmark.extra_info.update(role="fathom", goal=2, items=n, unit="points")
    _, rep = benchmark(lambda: read_ouster_pcap(path, read_ouster_metadata(meta)))
    assert rep.points == n


def test_ouster_sdk_pcap(benchmark, capture):
    path, meta, n = capture
    benchmark.group = "ouster_pcap_OS-1-128"
    benchmark.extra_info.update(role="peer")
    scans = benchmark(_sdk_read, path, meta)
    sweeps, _ = read_ouster_pcap(path, meta)
    assert len(scans) == len(sweeps) and sum(len(s[0]) for s in scans) == n
    for (xyz, refl, _, ring, t), s in zip(scans, sweeps):
        o = np.lexsort((s.timestamp_ns + s.time_offset_ns, s.ring))  # the SDK's beam-major order
        np.testing.assert_array_equal(ring, s.ring[o])
        np.testing.assert_array_equal(refl, s.intensity[o])
        np.testing.assert_array_equal(t, (s.timestamp_ns + s.time_offset_ns)[o])
        assert np.abs(xyz - s.xyz[o]).max() < 1e-3
