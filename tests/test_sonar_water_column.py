"""Water column: KMALL #MWC against pykmall, .all 'k' against a struct reader written from
the datagram specification, sample selection and geometry against NumPy, the bottom
detections against the vendor's soundings of the same pings, damaged input."""

from __future__ import annotations

import itertools
import struct

import numpy as np
import pytest

from engine.geodesy import Origin
from engine.georeference import soundings_to_world
from engine.water_column import select_samples
from formats.errors import FormatError
from formats.kmall import read_kmall
from formats.kongsberg_all import read_all
from formats.water_column_all import _install_offsets, all_water_column_world, read_all_water_column
from formats.water_column_kmall import kmall_water_column_world, read_kmall_water_column

ORIGIN_KMALL = Origin(51.2254, 2.9385, 0.0)
ORIGIN_ALL = Origin(51.3685, 3.1393, 0.0)


@pytest.fixture(scope="module")
def kmwcd(real_data):
    return real_data / "sonar" / "em_os03_a.kmwcd"


@pytest.fixture(scope="module")
def wcd(real_data):
    return real_data / "sonar" / "belgica_em2040.wcd"


def _kmall_walk(data: bytes, want: bytes) -> list[tuple[int, int]]:
    out, o = [], 0
    while o < len(data):
        n, t = struct.unpack_from("<I4s", data, o)
        if t == want:
            out.append((o, n))
        o += n
    return out


def test_kmall_mwc_matches_pykmall(kmwcd):
    kmall = pytest.importorskip("KMALL.kmall")
    wc = read_kmall_water_column(kmwcd)
    data = kmwcd.read_bytes()
    offsets = [o for o, _ in _kmall_walk(data, b"#MWC")]
    assert wc.num_pings == len(offsets) == 6 and wc.corrupt == []
    k = kmall.kmall(str(kmwcd))
    k.OpenFiletoRead()
    for i, o in enumerate(offsets):
        k.FID.seek(o)
        dg = k.read_EMdgmMWC()
        b = slice(wc.beam_start[i], wc.beam_start[i + 1])
        beams = dg["beamData"]
        assert wc.ping_counter[i] == dg["cmnPart"]["pingCnt"] and wc.datagram_offset[i] == o
        assert wc.sample_rate_hz[i] == np.float32(dg["rxInfo"]["sampleFreq_Hz"])
        assert wc.sound_speed_m_s[i] == np.float32(dg["rxInfo"]["soundVelocity_mPerSec"])
        np.testing.assert_array_equal(wc.beam_angle_deg[b], np.float32(beams["beamPointAngReVertical_deg"]))
        np.testing.assert_array_equal(wc.start_sample[b], beams["startRangeSampleNum"])
        np.testing.assert_array_equal(wc.detected_range_samples[b],
                                      np.float32(beams["detectedRangeInSamplesHighResolution"]))
        tilt = dict(zip(dg["sectorData"]["txSectorNum"], dg["sectorData"]["tiltAngleReTx_deg"]))
        np.testing.assert_array_equal(wc.tilt_deg[b], np.float32([tilt[s] for s in beams["beamTxSectorNum"]]))
        got = wc.amplitude[wc.sample_start[b.start]: wc.sample_start[b.stop]]
        np.testing.assert_array_equal(got, np.concatenate([np.int8(a) for a in beams["sampleAmplitude05dB_p"]]))
        assert abs(wc.time_ns[i] / 1e9 - dg["header"]["dgtime"]) < 1e-6
    k.closeFile()


def _ref_wcd(data: bytes) -> dict[tuple[int, int], dict]:
    """Per (counter, serial): the beams of its 'k' datagrams, one struct.unpack per field."""
    pings: dict[tuple[int, int], dict] = {}
    o = 0
    while o < len(data):
        n = struct.unpack_from("<I", data, o)[0]
        if data[o + 5] == 0x6B:
            counter, serial = struct.unpack_from("<HH", data, o + 16)
            ndg, _, ntx, _, nrx, ss, sf = struct.unpack_from("<6HI", data, o + 20)
            p = pings.setdefault((counter, serial), {"ss": ss / 10, "sf": sf / 100, "ndg": ndg, "parts": 0,
                                                     "angle": [], "start": [], "dr": [], "tilt": [], "amp": []})
            p["parts"] += 1
            at = o + 20 + 24
            tilts = {}
            for _ in range(ntx):
                tilt, _, sector = struct.unpack_from("<hHB", data, at)
                tilts[sector] = tilt / 100
                at += 6
            for _ in range(nrx):
                angle, start, ns, dr, sector = struct.unpack_from("<hHHHB", data, at)
                p["angle"].append(angle / 100)
                p["start"].append(start)
                p["dr"].append(dr)
                p["tilt"].append(tilts[sector])
                p["amp"].append(np.frombuffer(data, np.int8, ns, at + 10))
                at += 10 + ns
        o += 4 + n
    return {k: v for k, v in pings.items() if v["parts"] == v["ndg"]}


def test_all_wcd_matches_a_struct_reader(wcd):
    data = wcd.read_bytes()
    with pytest.raises(FormatError, match="all 2 datagrams of water-column ping 59685") as err:
        read_all_water_column(data)  # the recording stops inside the last ping
    wc = read_all_water_column(data, recover=True)
    assert [at for at, _ in wc.corrupt] == [err.value.offset]
    ref = _ref_wcd(data)
    assert wc.num_pings == len(ref) == 9
    for i, key in enumerate(zip(wc.ping_counter.tolist(), wc.head.tolist())):
        r = ref[key]
        b = slice(wc.beam_start[i], wc.beam_start[i + 1])
        assert wc.sound_speed_m_s[i] == np.float32(r["ss"]) and wc.sample_rate_hz[i] == np.float32(r["sf"])
        np.testing.assert_allclose(wc.beam_angle_deg[b], r["angle"], rtol=0, atol=1e-5)
        np.testing.assert_allclose(wc.tilt_deg[b], r["tilt"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(wc.start_sample[b], r["start"])
        np.testing.assert_array_equal(wc.detected_range_samples[b], r["dr"])
        np.testing.assert_array_equal(wc.amplitude[wc.sample_start[b.start]: wc.sample_start[b.stop]],
                                      np.concatenate(r["amp"]))


def _ref_select(amp: np.ndarray, ping_start: np.ndarray, thr: int | None, k: int | None) -> np.ndarray:
    out = []
    for a, b in itertools.pairwise(ping_start):
        idx = np.arange(a, b)
        if thr is not None:
            idx = idx[amp[idx] >= thr]
        if k is not None:
            idx = np.sort(idx[np.argsort(-amp[idx].astype(np.int64), kind="stable")[:k]])
        out.append(idx)
    return np.concatenate(out)


@pytest.mark.parametrize("thr,k", [(None, None), (-40, None), (-60, 500), (None, 0), (None, 10**7), (127, 3)])
def test_select_samples_against_numpy(kmwcd, thr, k):
    wc = read_kmall_water_column(kmwcd)
    pss = wc.ping_sample_start
    np.testing.assert_array_equal(select_samples(wc.amplitude, pss, thr, k), _ref_select(wc.amplitude, pss, thr, k))


def _ref_world(wc, sel, poses_rows, origin_m, lat, lon, heading, base, z_off, origin):
    """Vessel-frame points of the selected samples in NumPy, then the soundings' chain."""
    beam = np.searchsorted(wc.sample_start, sel, side="right") - 1
    ping = np.searchsorted(wc.beam_start, beam, side="right") - 1
    r = (wc.start_sample[beam] + sel - wc.sample_start[beam]) * wc.metres_per_sample[ping]
    th, ta = np.radians(wc.beam_angle_deg[beam].astype(np.float64)), np.radians(wc.tilt_deg[beam].astype(np.float64))
    xyz = origin_m[ping] + np.stack([r * np.sin(ta), -r * np.sin(th) * np.cos(ta), r * np.cos(th) * np.cos(ta)], 1)
    start = np.searchsorted(ping, np.arange(len(poses_rows) + 1))
    return soundings_to_world(lat, lon, heading, base, z_off, start, xyz[:, 0], xyz[:, 1], xyz[:, 2], origin), ping


def test_kmall_water_column_points(kmwcd, real_data):
    wc = read_kmall_water_column(kmwcd)
    log = read_kmall(real_data / "sonar" / "em_os03_a.kmall")
    got = kmall_water_column_world(wc, log, ORIGIN_KMALL, threshold_db=-30.0)
    p = log.pings
    rows = np.array([np.flatnonzero(p.ping_counter == c)[0] if c in p.ping_counter else -1 for c in wc.ping_counter])
    assert [i for i, _ in got.unplaced] == np.flatnonzero(rows < 0).tolist()  # 4 pings have no #MRZ in the log
    placed = np.flatnonzero(rows >= 0)
    amp, pss = wc.amplitude, wc.ping_sample_start
    sel = np.concatenate([np.arange(pss[i], pss[i + 1])[amp[pss[i]:pss[i + 1]] >= -60] for i in placed])
    r = rows[placed]
    origin_m = np.zeros((wc.num_pings, 3))
    origin_m[placed] = np.stack([np.full(len(r), -0.512), np.full(len(r), 0.020),
                                 p.tx_transducer_depth_m[r].astype(np.float64) + p.z_water_level_m[r]], 1)
    ref, ping = _ref_world(wc, sel, placed, origin_m, p.latitude_deg[r], p.longitude_deg[r], p.heading_deg[r],
                           np.zeros(len(r)), p.z_water_level_m[r], ORIGIN_KMALL)
    np.testing.assert_allclose(got.xyz_world, ref, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.sweep.extra["ping_index"], ping)
    np.testing.assert_array_equal(got.sweep.intensity, amp[sel] * np.float32(0.5))
    top = kmall_water_column_world(wc, log, ORIGIN_KMALL, top_k=100)
    assert np.bincount(top.sweep.extra["ping_index"]).tolist() == [100, 100]


def _bottom_dz(wc, origin_m, i, y, z):
    """Height of ping i's water-column bottom detections above the sounding profile z(y)."""
    b = slice(wc.beam_start[i], wc.beam_start[i + 1])
    r = wc.detected_range_samples[b] * wc.metres_per_sample[i]
    th, ta = np.radians(wc.beam_angle_deg[b]), np.radians(wc.tilt_deg[b])
    yb = origin_m[i, 1] - r * np.sin(th) * np.cos(ta)
    zb = origin_m[i, 2] + r * np.cos(th) * np.cos(ta)
    ok = (wc.detected_range_samples[b] > 0) & (yb > y.min()) & (yb < y.max())
    o = np.argsort(y)
    return zb[ok] - np.interp(yb[ok], y[o], z[o])


def test_water_column_bottom_meets_the_vendor_soundings(kmwcd, wcd, real_data):
    """The beams' angle sign, ranges and acoustic origin: each beam's detected range lies on
    the seabed the vendor's soundings of the same ping describe. A straight ray at the
    surface sound speed (no ray tracing) stays within 9 cm at 5.6 m (KMALL) and 22 cm at
    10 m (.all); a wrong angle sign or origin would be metres off."""
    wc = read_kmall_water_column(kmwcd)
    log = read_kmall(real_data / "sonar" / "em_os03_a.kmall")
    p = log.pings
    checked = 0
    for i, c in enumerate(wc.ping_counter):
        j = np.flatnonzero(p.ping_counter == c)
        if len(j):
            j = int(j[0])
            s = slice(p.sounding_start[j], p.sounding_start[j + 1])
            ok = p.detection_type[s] != 2
            origin_m = np.zeros((wc.num_pings, 3))
            origin_m[i] = (-0.512, 0.020, p.tx_transducer_depth_m[j] + p.z_water_level_m[j])
            dz = _bottom_dz(wc, origin_m, i, p.y_m[s][ok], p.z_m[s][ok])
            assert len(dz) > 200 and np.abs(dz).max() < 0.1
            checked += 1
    assert checked == 2
    wc = read_all_water_column(wcd, recover=True)
    log = read_all(real_data / "sonar" / "belgica_em2040.all")
    x = log.xyz
    origin_m = _install_offsets(log, wc)
    assert origin_m[0].tolist() == pytest.approx([0.377 + 7.887, -0.374 - 0.875, 0.301 - 0.426])  # S2 head
    for i, key in enumerate(zip(wc.ping_counter, wc.head)):
        j = int(np.flatnonzero((x.ping["counter"] == key[0]) & (x.ping["serial"] == key[1]))[0])
        s = slice(x.start[j], x.start[j + 1])
        ok = (x.beam["detection_info"][s] & 0x80) == 0
        dz = _bottom_dz(wc, origin_m, i, x.beam["y_m"][s][ok], x.beam["z_m"][s][ok])
        assert len(dz) > 200 and np.abs(dz).max() < 0.25


def test_all_water_column_world_follows_the_fix_policy(wcd, real_data):
    wc = read_all_water_column(wcd, recover=True)
    log = read_all(real_data / "sonar" / "belgica_em2040.all")
    refused = all_water_column_world(wc, log, ORIGIN_ALL, threshold_db=-20.0)
    fixes = log.position["time_ns"][(log.position["descriptor"] & 0x80) != 0]
    early = np.flatnonzero(wc.time_ns < fixes.min())
    assert [i for i, _ in refused.unplaced] == early.tolist() and len(early) > 0
    held = all_water_column_world(wc, log, ORIGIN_ALL, threshold_db=-20.0, extrapolate="hold", max_extrapolation_s=3)
    assert held.unplaced == []
    flagged = np.unique(held.sweep.extra["ping_index"][held.sweep.extra["pose_extrapolated"]])
    np.testing.assert_array_equal(flagged, early)
    depth = -held.xyz_world[:, 2]
    assert depth.min() > -1.0 and np.percentile(depth, 99) < 30.0  # water and seabed below the waterline


def test_damaged_water_column(kmwcd, wcd):
    data = kmwcd.read_bytes()
    o, _ = _kmall_walk(data, b"#MWC")[1]
    c = o + 24
    t = c + struct.unpack_from("<H", data, c)[0]
    ntx_b, ntx, per_tx = struct.unpack_from("<3H", data, t)
    r = t + ntx_b + ntx * per_tx
    first_beam = r + struct.unpack_from("<H", data, r)[0]
    bad = bytearray(data)
    struct.pack_into("<H", bad, first_beam + 10, struct.unpack_from("<H", data, first_beam + 10)[0] + 1)
    with pytest.raises(FormatError, match="#MWC"):
        read_kmall_water_column(bytes(bad))
    assert read_kmall_water_column(bytes(bad), recover=True).num_pings == 5
    bad = bytearray(data)
    struct.pack_into("<H", bad, first_beam + 10, 60000)  # beam 1 would start beyond the datagram
    with pytest.raises(FormatError, match="beam 1 of 256") as err:
        read_kmall_water_column(bytes(bad))
    assert err.value.offset == first_beam + 16 + 60000
    raw = bytearray(wcd.read_bytes())
    o = 0
    while raw[o + 5] != 0x6B:
        o += 4 + struct.unpack_from("<I", raw, o)[0]
    ln = struct.unpack_from("<I", raw, o)[0]
    at = o + 20 + 24 + 6 * struct.unpack_from("<H", raw, o + 24)[0]
    struct.pack_into("<H", raw, at + 4, struct.unpack_from("<H", raw, at + 4)[0] - 2)  # first beam: 2 samples fewer
    struct.pack_into("<H", raw, o + 4 + ln - 2, sum(raw[o + 5: o + 4 + ln - 3]) & 0xFFFF)
    with pytest.raises(FormatError, match="water.column") as err:  # the beams no longer end at the ETX
        read_all_water_column(bytes(raw), recover=True)
    assert o < err.value.offset < o + 4 + ln
