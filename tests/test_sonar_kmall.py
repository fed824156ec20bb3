"""KMALL reader/writer: the real EM 2042 file, round trips, partitions, damaged input."""

from __future__ import annotations

import io
import struct
from collections import Counter

import numpy as np
import pytest

from engine.geodesy import Origin, geodetic_to_enu
from engine.sim.vessel import simulate_survey
from formats.errors import FormatError
from formats.kmall import MrzPings, SkmSamples, read_kmall, read_kmall_world, write_kmall


def _walk(data: bytes) -> list[tuple[int, int, bytes]]:
    """Plain reference walk: (offset, numBytesDgm, type) following the length fields."""
    out, o = [], 0
    while o < len(data):
        n, t = struct.unpack_from("<I4s", data, o)
        assert struct.unpack_from("<I", data, o + n - 4)[0] == n
        out.append((o, n, t))
        o += n
    return out


def _ref_soundings(data: bytes, o: int) -> np.ndarray:
    """Per-sounding struct.unpack of one #MRZ: rows (detectionType, beamAngle, twtt, z, y, x)."""
    c = o + 24
    p = c + struct.unpack_from("<H", data, c)[0]
    ninfo = struct.unpack_from("<H", data, p)[0]
    ntx, per_tx = struct.unpack_from("<2H", data, p + 92)
    r = p + ninfo + ntx * per_tx
    nrx, n_main, _, per, *_ = struct.unpack_from("<4H4f4H", data, r)
    n_extra, n_cls, per_cls = struct.unpack_from("<3H", data, r + 26)
    s = r + nrx + n_cls * per_cls
    rows = []
    for k in range(n_main + n_extra):
        f = struct.unpack_from("<1H8B1H6f2H18f4H", data, s + k * per)
        rows.append((f[2], f[26], f[28], f[32], f[33], f[34]))
    return np.array(rows, dtype=np.float64)


@pytest.fixture(scope="module")
def real(real_data):
    path = real_data / "sonar" / "em_os03_a.kmall"
    return path, path.read_bytes(), read_kmall(path)


def test_real_file_datagram_counts(real):
    _, data, log = real
    want = Counter(t.decode() for _, _, t in _walk(data))
    assert log.counts == dict(want)
    assert log.counts["#MRZ"] == 5 and log.counts["#SKM"] == 1 and log.counts["#SPO"] == 2
    assert log.skipped == {t: c for t, c in want.items() if t not in ("#MRZ", "#SKM", "#SPO", "#IIP")}
    assert log.corrupt == []


def test_real_file_soundings_match_struct_reference(real):
    _, data, log = real
    p = log.pings
    mrz = [o for o, _, t in _walk(data) if t == b"#MRZ"]
    assert p.num_pings == len(mrz)
    for i, o in enumerate(mrz):
        ref = _ref_soundings(data, o)
        sl = slice(p.sounding_start[i], p.sounding_start[i + 1])
        got = np.stack([p.detection_type[sl], p.beam_angle_deg[sl], p.two_way_travel_time_s[sl],
                        p.z_m[sl], p.y_m[sl], p.x_m[sl]], axis=1).astype(np.float64)
        np.testing.assert_array_equal(got, ref)
        sec, nsec = struct.unpack_from("<II", data, o + 12)
        assert p.time_ns[i] == sec * 1_000_000_000 + nsec


def test_real_file_plausible_values(real):
    _, _, log = real
    p = log.pings
    assert p.num_soundings == 2448
    depth = p.depth_m
    assert 1.0 < depth.min() and depth.max() < 50.0  # shallow survey, metres below waterline
    assert np.all((p.latitude_deg > 50) & (p.latitude_deg < 52)) and np.all(np.abs(p.longitude_deg - 3) < 1)
    assert np.all(np.abs(p.y_m) < 5 * depth)
    # port beams (positive angle) lie to port (negative y)
    side = np.abs(p.beam_angle_deg) > 5
    assert np.all(np.sign(p.beam_angle_deg[side]) == -np.sign(p.y_m[side]))
    att = log.attitude
    assert len(att) == 102 and np.all(np.diff(att.time_ns) > 0)
    assert np.all(np.abs(att.roll_deg) < 10) and np.all(np.abs(att.heave_m) < 1)
    assert abs(att.time_ns[0] - p.time_ns[0]) < 5e9
    assert len(log.positions) == 2
    assert np.abs(log.positions.latitude_deg - p.latitude_deg[0]).max() < 1e-4
    assert log.install["TRAI_TX1"]["X"] == "-0.512"


def test_real_file_georeferencing_matches_vendor_deltas(real):
    """x/y + heading → world agrees with the ping's lat/lon + the sounding's vendor deltas."""
    _, _, log = real
    p = log.pings
    origin = Origin(float(p.latitude_deg[0]), float(p.longitude_deg[0]), 0.0)
    placed = read_kmall_world(log, origin, include_rejected=True)
    sweep, world = placed.sweep, placed.xyz_world
    assert placed.unplaced == []
    ping = p.ping_of_sounding
    vendor = geodetic_to_enu(p.latitude_deg[ping] + p.delta_latitude_deg,
                             p.longitude_deg[ping] + p.delta_longitude_deg, 0.0, origin)
    assert np.abs(world[:, :2] - vendor[:, :2]).max() < 0.01
    np.testing.assert_allclose(world[:, 2], -p.depth_m, atol=1e-5)
    assert sweep.frame == "world" and len(sweep) == p.num_soundings
    np.testing.assert_array_equal(sweep.time_offset_ns, p.time_ns[ping] - p.time_ns[0])


def test_matches_pykmall(real):
    kmall = pytest.importorskip("KMALL.kmall")
    path, data, log = real
    offsets = [o for o, _, t in _walk(data) if t == b"#MRZ"]
    k = kmall.kmall(str(path))
    k.OpenFiletoRead()
    p = log.pings
    k.FID.seek(offsets[2])
    dg = k.read_EMdgmMRZ()
    sl = slice(p.sounding_start[2], p.sounding_start[3])
    np.testing.assert_array_equal(p.z_m[sl], np.float32(dg["sounding"]["z_reRefPoint_m"]))
    np.testing.assert_array_equal(p.reflectivity_db[sl], np.float32(dg["sounding"]["reflectivity1_dB"]))
    assert p.heading_deg[2] == np.float32(dg["pingInfo"]["headingVessel_deg"])
    k.closeFile()


@pytest.fixture(scope="module")
def run():
    return simulate_survey(seed=1, num_pings=6, beams=64)


def _same(a, b):
    for name in a.__dataclass_fields__:
        if name == "datagram_offset":  # where the file put each ping, not a value written
            continue
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


@pytest.mark.parametrize("max_bytes", [None, 2000])
def test_writer_round_trip(run, max_bytes):
    pings, att = MrzPings(**run.mrz), SkmSamples(**run.skm)
    buf = io.BytesIO()
    n = write_kmall(buf, pings, att, install_text="SN=1,TRAI_TX1:X=0.5;Y=0.1", samples_per_skm=40,
                    max_datagram_bytes=max_bytes)
    data = buf.getvalue()
    assert n == len(data)
    parts = [struct.unpack_from("<HH", data, o + 20) for o, _, t in _walk(data) if t == b"#MRZ"]
    if max_bytes:
        assert all(num > 1 for num, _ in parts) and len(parts) > pings.num_pings
    log = read_kmall(data)
    assert log.counts["#MRZ"] == pings.num_pings and log.counts["#SKM"] == -(-len(att) // 40)
    _same(log.pings, pings)
    _same(log.attitude, att)
    assert log.install["TRAI_TX1"] == {"X": "0.5", "Y": "0.1"}


def test_rejected_detections_filtered_or_flagged(run):
    pings = MrzPings(**run.mrz)
    rejected = pings.detection_type == 2
    assert rejected.any()
    sweep = read_kmall_world(pings_log := read_kmall(_bytes(pings)), run.origin).sweep
    assert len(sweep) == (~rejected).sum() and not np.any(sweep.extra["detection_type"] == 2)
    flagged = read_kmall_world(pings_log, run.origin, include_rejected=True).sweep
    np.testing.assert_array_equal(flagged.extra["detection_type"] == 2, rejected)
    one = pings_log.pings.ping_sweep(0)
    assert one.frame == "vessel_level" and not np.any(one.extra["detection_type"] == 2)
    sl = slice(0, pings.sounding_start[1])
    keep = ~rejected[sl]
    np.testing.assert_array_equal(one.xyz, np.stack([pings.x_m[sl], -pings.y_m[sl], -pings.z_m[sl]], 1)[keep])


def _bytes(pings, att=None) -> bytes:
    buf = io.BytesIO()
    write_kmall(buf, pings, att)
    return buf.getvalue()


# ---------------------------------------------------------------- damaged input


@pytest.fixture(scope="module")
def small(run):
    return _bytes(MrzPings(**run.mrz), SkmSamples(**run.skm))


def test_truncated_file(small):
    last = _walk(small)[-1][0]
    cut = small[: len(small) - 10]
    with pytest.raises(FormatError) as err:
        read_kmall(cut)
    assert err.value.offset == last and "file ends" in err.value.expected
    log = read_kmall(cut, recover=True)
    assert log.corrupt[0][0] == last and log.counts["#MRZ"] == sum(t == b"#MRZ" for _, _, t in _walk(small)) - 1


def test_bad_length_repeat_and_wrong_size(small):
    o, n, _ = _walk(small)[2]
    bad = bytearray(small)
    struct.pack_into("<I", bad, o + n - 4, n + 1)
    with pytest.raises(FormatError, match="repeated") as err:
        read_kmall(bytes(bad))
    assert err.value.offset == o
    bad = bytearray(small)
    struct.pack_into("<I", bad, o, 10)
    with pytest.raises(FormatError, match="numBytesDgm"):
        read_kmall(bytes(bad))
    log = read_kmall(bytes(bad), recover=True)  # resyncs on the next datagram
    assert len(log.corrupt) == 1 and sum(log.counts.values()) == len(_walk(small)) - 1


def test_bad_sub_struct_size(small):
    o = next(o for o, _, t in _walk(small) if t == b"#MRZ")
    c = o + 24
    p = c + struct.unpack_from("<H", small, c)[0]
    r = p + struct.unpack_from("<H", small, p)[0] + 48
    bad = bytearray(small)
    struct.pack_into("<H", bad, r + 6, 100)  # numBytesPerSounding below the 120-byte struct
    with pytest.raises(FormatError, match="numBytesPerSounding") as err:
        read_kmall(bytes(bad))
    assert err.value.offset == r + 6
    bad = bytearray(small)
    struct.pack_into("<H", bad, r + 2, 60_000)  # more soundings than the datagram holds
    with pytest.raises(FormatError, match="soundings"):
        read_kmall(bytes(bad))


def test_unknown_datagram_skipped_and_counted(small):
    body = b"\x01\x02\x03\x04\x05\x06"
    n = 20 + len(body) + 4
    unknown = struct.pack("<I4sBBHII", n, b"#ZZZ", 0, 0, 0, 0, 0) + body + struct.pack("<I", n)
    log = read_kmall(unknown + small + unknown)
    assert log.skipped["#ZZZ"] == 2 and log.counts["#ZZZ"] == 2
    assert log.pings.num_pings == read_kmall(small).pings.num_pings


def test_garbage_between_datagrams_recovers(small):
    o = _walk(small)[3][0]
    data = small[:o] + b"#MRZ garbage \x00\xff" * 7 + small[o:]
    with pytest.raises(FormatError):
        read_kmall(data)
    log = read_kmall(data, recover=True)
    assert len(log.corrupt) == 1 and log.corrupt[0][0] == o
    _same(log.pings, read_kmall(small).pings)


def _ping_soundings(p: MrzPings, i: int) -> np.ndarray:
    sl = slice(p.sounding_start[i], p.sounding_start[i + 1])
    return np.stack([p.detection_type[sl], p.beam_angle_deg[sl], p.two_way_travel_time_s[sl],
                     p.z_m[sl], p.y_m[sl], p.x_m[sl]], axis=1).astype(np.float64)


def test_random_corruption_never_crashes_nor_alters_an_intact_ping(small):
    """Random bytes changed and the file cut anywhere: the reader raises FormatError or returns,
    never anything else; and every #MRZ datagram left intact (no changed byte, not cut) is
    decoded exactly as in the clean file, with recovery always, without it whenever it returns."""
    clean = read_kmall(small).pings
    mrz = [(o, n) for o, n, t in _walk(small) if t == b"#MRZ"]
    assert clean.num_pings == len(mrz) > 3
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(200):
        bad = bytearray(small)
        hits = rng.integers(0, len(bad), rng.integers(1, 8))
        for k in hits:
            bad[k] = (bad[k] + int(rng.integers(1, 256))) % 256  # always a different byte
        cut = int(rng.integers(1, len(bad) + 1))
        intact = [i for i, (o, n) in enumerate(mrz) if o + n <= cut and not any(o <= k < o + n for k in hits)]
        for recover in (False, True):
            try:
                got = read_kmall(bytes(bad[:cut]), recover=recover).pings
            except FormatError:
                assert not recover or cut < 4 or intact == [], "recovery raised although intact pings remain"
                continue
            for i in intact:
                j = np.flatnonzero(got.time_ns == clean.time_ns[i])
                assert len(j) >= 1, f"intact ping {i} lost (recover={recover})"
                assert any(np.array_equal(_ping_soundings(got, k), _ping_soundings(clean, i), equal_nan=True)
                           for k in j)
                checked += 1
    assert checked > 200


def test_empty_and_missing():
    log = read_kmall(b"")
    assert log.pings.num_pings == 0 and log.pings.num_soundings == 0 and len(log.attitude) == 0
    with pytest.raises(FormatError, match="readable"):
        read_kmall("/nonexistent/file.kmall")
