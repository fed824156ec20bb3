"""GSF swath pings: the UKHO gsfpy test file against libgsf (through gsfpy, when installed)
and against a struct reader written from the GSF specification; georeferencing; damage."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from engine.geodesy import Origin
from formats.errors import FormatError
from formats.gsf import read_gsf, read_gsf_world


@pytest.fixture(scope="module")
def gsf_path(real_data):
    return real_data / "sonar" / "gsf3_08_test_file.gsf"


def _records(data: bytes) -> list[tuple[int, int, int, int]]:
    """(offset, type, data offset, data size) of every record."""
    out, o = [], 0
    while o < len(data):
        size, rid = struct.unpack_from(">II", data, o)
        d = o + 8 + (4 if rid >> 31 else 0)
        out.append((o, rid & 0x3FFFFF, d, size))
        o = d + size
    return out


def _ref_pings(data: bytes) -> list[dict]:
    """Swath pings decoded field by field with struct (GSF v3: 56-byte ping header)."""
    pings, scale = [], {}
    for _, rtype, d, size in _records(data):
        if rtype != 2:
            continue
        f = struct.unpack_from(">IIiiHHHHhiHhhhHH", data, d)
        n = f[4]
        ping = {"time": f[0] * 10**9 + f[1], "lon": f[2] / 1e7, "lat": f[3] / 1e7, "heading": f[10] / 100,
                "pitch": f[11] / 100, "roll": f[12] / 100, "heave": f[13] / 100}
        q = d + 56
        while d + size - q > 4:
            word = struct.unpack_from(">I", data, q)[0]
            sid, ss = word >> 24, word & 0xFFFFFF
            if sid == 100:
                for k in range(struct.unpack_from(">I", data, q + 4)[0]):
                    a, m, off = struct.unpack_from(">IIi", data, q + 8 + 12 * k)
                    scale[a >> 24] = (m, off)
            elif sid in (1, 2, 3, 4, 5):
                width = ss // n
                fmt = {(1, False): "B", (2, False): "H", (4, False): "I", (2, True): "h", (4, True): "i"}[
                    (width, sid in (2, 3, 5))]
                m, off = scale[sid]
                ping[sid] = [struct.unpack_from(">" + fmt, data, q + 4 + width * k)[0] / m - off for k in range(n)]
            elif sid == 16:
                ping[16] = list(data[q + 4: q + 4 + n])
            q += 4 + ss
        pings.append(ping)
    return pings


def test_gsf_matches_a_struct_reader(gsf_path):
    data = gsf_path.read_bytes()
    g = read_gsf(data)
    ref = _ref_pings(data)
    assert g.version == "GSF-v03.06" and g.num_pings == len(ref) == 8
    for i, r in enumerate(ref):
        sl = slice(g.start[i], g.start[i + 1])
        assert g.ping["time_ns"][i] == r["time"]
        for name, key in (("latitude_deg", "lat"), ("longitude_deg", "lon"), ("heading_deg", "heading"),
                          ("pitch_deg", "pitch"), ("roll_deg", "roll"), ("heave_m", "heave")):
            assert g.ping[name][i] == pytest.approx(r[key], abs=1e-12)
        for name, sid in (("depth_m", 1), ("across_track_m", 2), ("along_track_m", 3), ("travel_time_s", 4),
                          ("beam_angle_deg", 5)):
            np.testing.assert_allclose(g.beam[name][sl], r[sid], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(g.beam["beam_flags"][sl], r[16])


def test_gsf_matches_libgsf(gsf_path):
    """gsfpy3_08 calls libgsf 3.08. Its ctypes struct names the first two doubles
    longitude, latitude, but libgsf's gsfSwathBathyPing stores latitude first: gsfpy's
    ``longitude`` holds the latitude (8.7° N, Kwajalein) and ``latitude`` the longitude."""
    gsfpy = pytest.importorskip("gsfpy3_08")
    from gsfpy3_08.enums import RecordType

    g = read_gsf(gsf_path)
    i = 0
    with gsfpy.open_gsf(str(gsf_path)) as f:
        while i < g.num_pings:
            rid, rec = f.read()
            if rid.recordID != RecordType.GSF_RECORD_SWATH_BATHYMETRY_PING:
                continue
            p = rec.mb_ping
            n = p.number_beams
            sl = slice(g.start[i], g.start[i + 1])
            assert n == sl.stop - sl.start
            assert g.ping["time_ns"][i] == p.ping_time.tv_sec * 10**9 + p.ping_time.tv_nsec
            assert g.ping["latitude_deg"][i] == pytest.approx(p.longitude, abs=1e-9)
            assert g.ping["longitude_deg"][i] == pytest.approx(p.latitude, abs=1e-9)
            assert (g.ping["heading_deg"][i], g.ping["roll_deg"][i]) == pytest.approx((p.heading, p.roll), abs=1e-9)
            for name, attr in (("depth_m", "depth"), ("across_track_m", "across_track"),
                               ("along_track_m", "along_track"), ("travel_time_s", "travel_time"),
                               ("beam_angle_deg", "beam_angle")):
                np.testing.assert_allclose(g.beam[name][sl], np.ctypeslib.as_array(getattr(p, attr), (n,)),
                                           rtol=0, atol=1e-9)
            np.testing.assert_array_equal(g.beam["beam_flags"][sl], np.ctypeslib.as_array(p.beam_flags, (n,)))
            i += 1
    assert i == g.num_pings


def test_gsf_world(gsf_path):
    g = read_gsf(gsf_path)
    origin = Origin(float(g.ping["latitude_deg"][0]), float(g.ping["longitude_deg"][0]), 0.0)
    w = read_gsf_world(g, origin)
    keep = (g.beam["beam_flags"] & 1) == 0
    assert w.unplaced == [] and len(w.sweep) == keep.sum() < len(keep)
    assert np.all(w.sweep.extra["beam_flags"] & 1 == 0)
    all_beams = read_gsf_world(g, origin, include_flagged=True)
    assert len(all_beams.sweep) == len(keep)
    # reference: (along, across) rotated by the heading, depth down, in the local level frame
    # at the ping, to ECEF (pyproj for the geodetic step) and into the origin's ENU frame
    pyproj = pytest.importorskip("pyproj")
    to_ecef = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    ping = all_beams.sweep.extra["ping_index"]
    lat, lon = np.radians(g.ping["latitude_deg"][ping]), np.radians(g.ping["longitude_deg"][ping])
    h = np.radians(g.ping["heading_deg"][ping])
    x, y, z = g.beam["along_track_m"], g.beam["across_track_m"], g.beam["depth_m"]
    local = np.stack([x * np.sin(h) + y * np.cos(h), x * np.cos(h) - y * np.sin(h), -z], 1)

    def enu_axes(la, lo):  # rows: east, north, up in ECEF
        return np.stack([np.stack([-np.sin(lo), np.cos(lo), np.zeros_like(lo)], -1),
                         np.stack([-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)], -1),
                         np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], -1)], -2)

    base = np.stack(to_ecef.transform(g.ping["longitude_deg"][ping], g.ping["latitude_deg"][ping],
                                      np.zeros(len(ping))), 1)
    ecef = base + np.einsum("nij,ni->nj", enu_axes(lat, lon), local)
    o = np.array(to_ecef.transform(origin.lon_deg, origin.lat_deg, 0.0))
    ref = (enu_axes(np.radians(origin.lat_deg), np.radians(origin.lon_deg)) @ (ecef - o).T).T
    np.testing.assert_allclose(all_beams.xyz_world, ref, rtol=0, atol=1e-3)


def test_gsf_ignored_ping_and_null_position(gsf_path):
    data = bytearray(gsf_path.read_bytes())
    pings = [r for r in _records(bytes(data)) if r[1] == 2]
    struct.pack_into(">H", data, pings[1][2] + 20, 1)  # ping flags: GSF_IGNORE_PING
    struct.pack_into(">i", data, pings[3][2] + 12, 910_000_000)  # latitude 91: GSF_NULL_LATITUDE
    w = read_gsf_world(bytes(data), Origin(8.71, 167.47, 0.0))
    assert [i for i, _ in w.unplaced] == [1, 3]
    assert "ignore" in w.unplaced[0][1] and "91" in w.unplaced[1][1]
    assert not np.isin(w.sweep.extra["ping_index"], [1, 3]).any()


def test_gsf_damaged(gsf_path):
    data = gsf_path.read_bytes()
    recs = _records(data)
    o, _, d, size = next(r for r in recs if r[1] == 2)
    with pytest.raises(FormatError, match="file ends") as err:
        read_gsf(data[: d + size - 8])
    assert err.value.offset == o
    bad = bytearray(data)
    q = d + 56 + 4 + 328  # the depth subrecord after the scale factors
    struct.pack_into(">I", bad, q, (1 << 24) | 866)
    with pytest.raises(FormatError, match="beam array 1|subrecord"):
        read_gsf(bytes(bad))
    bad = bytearray(data)
    struct.pack_into(">I", bad, d + 56 + 4, 0)  # zero scale factors
    with pytest.raises(FormatError, match="scale factors") as err:
        read_gsf(bytes(bad))
    assert err.value.offset == d + 60
    with pytest.raises(FormatError, match="header record"):
        read_gsf(data[recs[1][0]:])


def test_gsf_through_the_registry(gsf_path):
    from formats.registry import format_for, read_points

    assert format_for(gsf_path) == "gsf"
    sweep = read_points(gsf_path)
    g = read_gsf(gsf_path)
    origin = Origin(float(g.ping["latitude_deg"][0]), float(g.ping["longitude_deg"][0]), 0.0)
    np.testing.assert_array_equal(sweep.xyz, read_gsf_world(g, origin).sweep.xyz)
    assert sweep.frame == "world"
