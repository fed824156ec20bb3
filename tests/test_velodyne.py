"""Velodyne pcap decoding vs velodyne_decoder, the writer, the pcap indexer and bad input."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import velodyne_decoder as vd
import yaml

from engine.sweep import Sweep
from formats.errors import FormatError
from formats.pcap import read_udp_payloads, udp_pcap_bytes
from formats.registry import read_points
from formats.velodyne import (
    MODELS,
    Firings,
    get_model,
    read_velodyne_pcap,
    read_velodyne_sweep,
    velodyne_packets,
    write_velodyne_pcap,
)
from formats.velodyne_calibration import (
    VelodyneCalibration,
    calibration_from_dict,
    calibration_from_hdl64e_status,
    read_calibration_yaml,
)

T0 = 1_700_000_000_000_000_000
PEER_MODEL = {"VLP-16": vd.Model.VLP16, "HDL-32E": vd.Model.HDL32E, "VLP-32C": vd.Model.VLP32C,
              "HDL-64E_S2": vd.Model.HDL64E_S2, "HDL-64E_S3": vd.Model.HDL64E_S3,
              "Puck Hi-Res": vd.Model.PuckHiRes, "VLS-128": vd.Model.VLS128}


def _firings(model: str, n_packets: int, mode: str = "strongest", seed: int = 0, rpm: float = 600.0,
             max_range: float = 80.0, same: float = 0.0) -> Firings:
    """Random firings; in dual mode a fraction ``same`` of them has identical returns."""
    mdl = get_model(model)
    per = mdl.sequences_per_packet // (2 if mode == "dual" else 1)
    s = per * n_packets
    rng = np.random.default_rng(seed)
    period_ns = mdl.sequence_period_us * 1000
    ts = T0 + np.rint(np.arange(s) * period_ns).astype(np.int64)
    az = (37.0 + np.arange(s) * period_ns * 1e-9 * rpm * 6.0) % 360.0
    shape = (s, 2, mdl.n_lasers) if mode == "dual" else (s, mdl.n_lasers)
    dist = rng.uniform(0.5, max_range, shape)
    dist[rng.random(shape) < 0.1] = 0.0  # no return
    if mode == "dual":
        both = rng.random((s, mdl.n_lasers)) < same
        dist[:, 1][both] = dist[:, 0][both]
    return Firings(ts, az, dist, rng.integers(0, 256, shape))


def _ours(sweeps: list[Sweep], since_ns: float = -np.inf):
    """(xyz, ring, time ns, return_index, intensity, return_type) of the points fired from ``since_ns``."""
    a = Sweep.concatenate(sweeps)
    t = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps]).astype(np.float64)
    k = t >= since_ns
    return a.xyz[k], a.ring[k], t[k], a.return_index[k], a.intensity[k], a.extra["return_type"][k]


def _peer(path, model: str, calibration=None, skip_scans: int = 0, **cfg):
    """The peer's points as :func:`_ours` (its first ``skip_scans`` scans left out)."""
    config = vd.Config(model=PEER_MODEL[model], min_range=0.0, max_range=1000.0, **cfg)
    if calibration is not None:
        config.calibration = calibration
    scans = list(vd.read_pcap(str(path), config))[skip_scans:]
    pts = np.concatenate([s.points for s in scans])
    # scan stamps are pcap record times (whole µs); relative times float32 seconds -> ns, 100 ns grid
    t = np.concatenate([np.rint(s.stamp.host * 1e6) * 1000 + np.rint(s.points[:, 4].astype(np.float64) * 1e7) * 100
                        for s in scans])
    # peer return_type: 1 strongest, 2 last, 3 both (an identical dual return, reported once)
    kind = pts[:, 7].astype(np.uint8)
    return pts[:, :3], pts[:, 6].astype(np.uint16), t, (kind == 2).astype(np.uint8), pts[:, 3], kind


def _match(ours, peer, xyz_tol=1e-3, t_tol=100.0, az_tol_deg=0.0):
    """Same points in the same firing (time, ring, return): positions within ``xyz_tol`` plus
    ``az_tol_deg`` of azimuth at their range, times within ``t_tol`` ns."""
    oxyz, oring, ot, oret, oint, otype = ours
    pxyz, pring, pt, pret, pint, ptype = peer
    assert len(oxyz) == len(pxyz) > 0
    oi = np.lexsort((oret, ot, oring))  # a ring fires once per sequence: (ring, time) names a firing
    pi = np.lexsort((pret, pt, pring))
    np.testing.assert_array_equal(oring[oi], pring[pi])
    np.testing.assert_array_equal(oret[oi], pret[pi])
    np.testing.assert_array_equal(otype[oi], ptype[pi])
    np.testing.assert_allclose(ot[oi], pt[pi], atol=t_tol)  # ns
    np.testing.assert_allclose(oint[oi], pint[pi], atol=1e-3)
    err = np.linalg.norm(oxyz[oi] - pxyz[pi], axis=1)
    r = np.linalg.norm(pxyz[pi], axis=1)
    assert np.all(err <= xyz_tol + r * np.radians(az_tol_deg)), err.max()
    return oxyz[oi], pxyz[pi]


# ---------------------------------------------------------------- pcap indexer
def _swap_to_big_endian(data: bytes) -> bytes:
    """The same capture with big-endian global and record headers."""
    out = bytearray(data)
    magic, major, minor, zone, sig, snap, link = struct.unpack_from("<IHHiIII", data, 0)
    struct.pack_into(">IHHiIII", out, 0, magic, major, minor, zone, sig, snap, link)
    pos = 24
    while pos < len(data):
        rec = struct.unpack_from("<IIII", data, pos)
        struct.pack_into(">IIII", out, pos, *rec)
        pos += 16 + rec[2]
    return bytes(out)


@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("nano", [False, True])
def test_pcap_byte_orders_and_resolutions(big, nano):
    rng = np.random.default_rng(3)
    payloads = rng.integers(0, 256, (5, 1206)).astype(np.uint8)
    ts = T0 + np.array([0, 1_234_567, 2_000_001, 9_999_999_999, 10_000_000_000])
    data = udp_pcap_bytes(payloads, ts, nanosecond=nano)
    if big:
        data = _swap_to_big_endian(data)
    u = read_udp_payloads("<mem>", 1206, data=data)
    assert u.records == 5 and len(u) == 5 and sum(u.dropped.values()) == 0
    np.testing.assert_array_equal(u.array(), payloads)
    np.testing.assert_array_equal(u.timestamps_ns, ts if nano else ts // 1000 * 1000)


def test_pcap_skips_other_traffic_and_counts_why():
    good = udp_pcap_bytes(np.full((1, 1206), 7, np.uint8), np.array([T0]))
    header, rec = good[:24], good[24:]
    frame = bytearray(rec[16:])
    recs = [bytes(rec)]
    frag = bytearray(frame)
    frag[14 + 6] = 0x20  # more-fragments flag
    arp = bytearray(frame)
    arp[12:14] = b"\x08\x06"
    tcp = bytearray(frame)
    tcp[14 + 9] = 6
    vlan = bytes(frame[:12]) + b"\x81\x00\x00\x05" + bytes(frame[12:])
    other_port = bytearray(frame)
    other_port[14 + 20 + 2:14 + 20 + 4] = (8308).to_bytes(2, "big")
    short = bytes(frame[:30])
    for f in (frag, arp, tcp, vlan, other_port, short):
        recs.append(struct.pack("<IIII", T0 // 10**9, 0, len(f), len(f)) + bytes(f))
    truncated = recs[0][:700]
    data = header + b"".join(recs) + truncated
    u = read_udp_payloads("<mem>", 1206, port=2368, data=data)
    assert len(u) == 2  # the plain and the VLAN-tagged datagram
    np.testing.assert_array_equal(u.array(), np.full((2, 1206), 7, np.uint8))
    assert u.records == 8
    assert u.dropped == {"not_ipv4_udp": 2, "ip_fragment": 1, "malformed_headers": 1, "truncated_record": 1,
                         "no_timestamp": 0, "unsupported_link": 0, "wrong_port": 1, "payload_size": 0}
    assert u.truncated_at == len(header) + sum(len(r) for r in recs)


@pytest.mark.parametrize("data, offset, what", [
    (b"\xd4\xc3\xb2", 0, "global header"),
    (b"\x00" * 24, 0, "magic"),
    (b"\x0a\x0d\x0d\x0a" + b"\x00" * 24, 8, "byte-order magic"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 3, 4, 0, 0, 65535, 1), 4, "major version"),
    (struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 147), 20, "link type"),
])
def test_pcap_file_level_errors(data, offset, what):
    with pytest.raises(FormatError) as e:
        read_velodyne_pcap("bad.pcap", data=data)
    assert e.value.offset == offset and what in e.value.expected and e.value.path == "bad.pcap"


def test_missing_file_is_format_error(tmp_path):
    with pytest.raises(FormatError):
        read_velodyne_pcap(tmp_path / "nope.pcap")


def test_empty_capture_decodes_to_nothing():
    sweeps, rep = read_velodyne_pcap("<mem>", data=udp_pcap_bytes(np.zeros((0, 1206), np.uint8), np.zeros(0, np.int64)))
    assert sweeps == [] and rep.records == 0 and rep.points == 0


# ---------------------------------------------------------------- real file
def test_real_vlp16_file(real_data, tmp_path):
    path = real_data / "lidar_packets" / "vlp16_one_packet.pcap"
    # its one datagram is 1212 bytes, not a 1206-byte data packet: both decoders decode nothing
    sweeps, rep = read_velodyne_pcap(path, model="VLP-16")
    assert sweeps == [] and rep.records == 1 and rep.dropped["payload_size"] == 1 and rep.packets == 0
    assert list(vd.read_pcap(str(path), vd.Config(model=vd.Model.VLP16))) == []
    u = read_udp_payloads(path, 1212)
    assert u.timestamps_ns.tolist() == [1666315463845132000]
    # its 12 real blocks and time stamp re-packed as a standard VLP-16 packet: both decoders agree
    raw = u.array()[0]
    packet = np.concatenate([raw[:1200], raw[1206:1210], [0x37, 0x22]]).astype(np.uint8)[None]
    data = udp_pcap_bytes(packet, u.timestamps_ns)
    sweeps, rep = read_velodyne_pcap("<mem>", data=data, quantize_azimuth=True)
    assert rep.decoded == 1 and rep.model == "VLP-16"
    f = tmp_path / "p.pcap"
    f.write_bytes(data)
    peer = _peer(f, "VLP-16")
    ours = _ours(sweeps)
    returns = raw[:1200].reshape(12, 100)[:, 4:].reshape(12, 32, 3)  # block, channel, (distance lo, hi, reflectivity)
    assert len(ours[0]) == int(np.count_nonzero(returns[:, :, :2].any(axis=2)))
    _match(ours, peer)


# ---------------------------------------------------------------- against velodyne_decoder
@pytest.mark.parametrize("model", ["VLP-16", "HDL-32E", "VLP-32C"])
@pytest.mark.parametrize("mode", ["strongest", "last", "dual"])
def test_writer_pcaps_match_velodyne_decoder(tmp_path, model, mode):
    path = tmp_path / "w.pcap"
    firings = _firings(model, 40, mode, rpm=600.0)
    n = write_velodyne_pcap(path, firings, model, mode)
    sweeps, rep = read_velodyne_pcap(path, quantize_azimuth=True, cut_angle_deg=90.0)
    assert rep.decoded == n and rep.dropped_total == 0 and rep.model == model
    ours = _ours(sweeps)
    if mode == "last":
        assert np.all(ours[3] == 1)
    elif mode == "strongest":
        assert np.all(ours[3] == 0)
    _match(ours, _peer(path, model))
    # unquantized azimuth differs from the peer by at most the 0.005° rounding (plus float error)
    sweeps2, _ = read_velodyne_pcap(path, cut_angle_deg=90.0)
    o2, p2 = _match(_ours(sweeps2), _peer(path, model), xyz_tol=np.inf)
    r = np.linalg.norm(p2[:, :2], axis=1)
    assert np.all(np.linalg.norm(o2[:, :2] - p2[:, :2], axis=1) <= r * np.radians(0.005) + 1e-4)


def _hdl64e_packets(n_packets: int, dual: bool, seed: int, status: bytes | None = None, empty: float = 0.1):
    """Hand-built HDL-64E packets: upper/lower block pairs (strongest, last pairs in dual)."""
    rng = np.random.default_rng(seed)
    packets = np.zeros((n_packets, 1206), np.uint8)
    groups = 3 if dual else 6
    az = 1234
    for k in range(n_packets):
        for g in range(groups):
            blocks = [0, 1, 2, 3] if dual else [0, 1]
            for b in blocks:
                i = g * len(blocks) + b
                base = i * 100
                packets[k, base:base + 2] = [0xFF, 0xEE] if b % 2 == 0 else [0xFF, 0xDD]
                packets[k, base + 2:base + 4] = np.array([az % 36000], "<u2").view(np.uint8)
                raw = rng.integers(1000, 40000, 32).astype("<u2")
                raw[rng.random(32) < empty] = 0
                ch = np.zeros((32, 3), np.uint8)
                ch[:, :2] = raw.view(np.uint8).reshape(32, 2)
                ch[:, 2] = rng.integers(0, 256, 32)
                packets[k, base + 4:base + 100] = ch.ravel()
            az += 17
        if status is not None:
            packets[k, 1204:1206] = np.frombuffer(status[2 * k:2 * k + 2], np.uint8)
    ts = T0 + np.arange(n_packets, dtype=np.int64) * 400_000  # > one packet's firing span
    packets[:, 1200:1204] = ((ts // 1000) % 3_600_000_000).astype("<u4").view(np.uint8).reshape(-1, 4)
    return packets, ts


@pytest.mark.parametrize("model", ["HDL-64E_S2", "HDL-64E_S3"])
@pytest.mark.parametrize("dual", [False, True])
@pytest.mark.parametrize("two_point", ["none", "bundled", "wide"])
def test_hdl64e_yaml_calibration_matches_velodyne_decoder(tmp_path, model, dual, two_point):
    """Every HDL-64E term (distance, offsets, focal intensity, two-point near/far distance
    correction) against the peer, on ranges 2-80 m: both sides of the 25.04 m far point."""
    yml = vd.calibrations.get_bundled_calibration("HDL-64E_S3-VeloView.yml")
    doc = yaml.safe_load(yml.to_string())
    rng = np.random.default_rng(7)
    for laser in doc["lasers"]:
        if two_point == "none":
            del laser["dist_correction_x"], laser["dist_correction_y"]
        elif two_point == "wide":  # near corrections 3-8 cm off the far one: errors would show
            laser["dist_correction_x"] = laser["dist_correction"] + float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.08))
            laser["dist_correction_y"] = laser["dist_correction"] + float(rng.choice([-1, 1]) * rng.uniform(0.03, 0.08))
    yml = vd.Calibration.from_string(yaml.dump(doc))
    calib_path = tmp_path / "hdl64.yaml"
    calib_path.write_text(yaml.dump(doc))
    packets, ts = _hdl64e_packets(30, dual, seed=5)
    path = tmp_path / "h.pcap"
    path.write_bytes(udp_pcap_bytes(packets, ts))
    sweeps, rep = read_velodyne_pcap(path, model=model, calibration=calib_path, quantize_azimuth=True)
    assert rep.calibration_source == "yaml" and rep.decoded == 30
    ours = _ours(sweeps)
    assert set(np.unique(ours[3])) == ({0, 1} if dual else {0})
    _match(ours, _peer(path, model, calibration=yml))


def _status_stream(cal_values: np.ndarray, s3: bool) -> bytes:
    """An HDL-64E status byte stream whose calibration cycle encodes ``cal_values`` (64, 12) raw."""
    rec = np.zeros(64, np.dtype([("id", "u1"), ("v", "<i2", 9), ("lo", "u1"), ("hi", "u1")]))
    rec["id"] = np.arange(64)
    rec["v"] = cal_values[:, :9]
    rec["lo"] = cal_values[:, 9]
    rec["hi"] = cal_values[:, 10]
    date = bytes([16, 11, 15, 12, 47, 47, 25])  # calibration date and humidity: the last record's 7 spare bytes
    chunks = b"".join(r.tobytes() + (date if k == 63 else bytes(7)) for k, r in enumerate(rec))
    body = b"UNIT#" + bytes([24, 24]) + chunks
    tail = bytes(19)  # rpm, field of view, hours, addresses, modes
    from formats.velodyne_calibration import _crc16

    check = _crc16(b"".join(r.tobytes()[1:] for r in rec)) if s3 else 1820
    cycle = body + tail + check.to_bytes(2, "little")
    assert len(cycle) == 1820
    out = bytearray()
    clock = b"HMSDNYGTV"
    # starting mid-cycle; interleave time/status bytes as the sensor does
    for k, byte in enumerate(cycle[-100:] + cycle):
        if k % 7 == 0:
            out += bytes([clock[(k // 7) % len(clock)], 1])
        # S3 sends some data bytes under the 'W' (warning) type; both are data
        out += bytes([ord("W") if s3 and k % 5 == 0 else 0x01, byte])
    return bytes(out)


@pytest.mark.parametrize("s3", [False, True])
def test_hdl64e_calibration_from_status_bytes(tmp_path, s3):
    rng = np.random.default_rng(9)
    raw = np.zeros((64, 11), np.int64)
    raw[:, 0] = rng.integers(-2500, 1000, 64)  # vertical, 0.01°
    raw[:, 1] = rng.integers(-900, 900, 64)  # rotational, 0.01°
    raw[:, 2] = rng.integers(1000, 1500, 64)  # distance correction, mm
    raw[:, 3:5] = raw[:, 2:3] + rng.integers(-60, 60, (64, 2))  # two-point near corrections, mm
    raw[:, 5] = rng.integers(100, 220, 64)
    raw[:, 6] = rng.choice([-26, 26], 64)
    raw[:, 7] = rng.integers(0, 2400, 64)
    raw[:, 8] = rng.integers(0, 20, 64)
    raw[:, 9] = 0
    raw[:, 10] = 255
    stream = _status_stream(raw, s3)
    n = len(stream) // 2
    stype = np.frombuffer(stream[0::2], np.uint8)
    sval = np.frombuffer(stream[1::2], np.uint8)
    cal, which = calibration_from_hdl64e_status(stype, sval)
    assert which == ("S3" if s3 else "S2")
    np.testing.assert_allclose(np.degrees(cal.vert_correction), raw[:, 0] * 0.01)
    np.testing.assert_allclose(np.degrees(cal.rot_correction), raw[:, 1] * 0.01)
    np.testing.assert_allclose(cal.dist_correction, raw[:, 2] * 0.001)
    np.testing.assert_allclose(cal.focal_slope, raw[:, 8] * 0.1)
    # the peer parses the same stream to the same values
    peer = vd.hdl64e.read_status_info(bytes(1198) + stream[2 * k:2 * k + 2] for k in range(n))
    np.testing.assert_allclose([c["Vertical Correction"] for c in peer["Calibration"]], raw[:, 0] * 0.01)
    # packets carrying the stream decode with it, as the peer decodes them with the same calibration
    packets, ts = _hdl64e_packets(n, False, seed=2, status=stream, empty=0.98)
    path = tmp_path / "s.pcap"
    path.write_bytes(udp_pcap_bytes(packets, ts))
    model = "HDL-64E_S3" if s3 else "HDL-64E_S2"
    sweeps, rep = read_velodyne_pcap(path, model=model, quantize_azimuth=True)
    assert rep.calibration_source == "packets"
    peer_cal = vd.Calibration.from_string(yaml.dump(vd.hdl64e.status_info_to_calib_dict(peer)))
    _match(_ours(sweeps), _peer(path, model, calibration=peer_cal))
    # a stream with a broken checksum has no usable cycle
    if s3:
        bad = bytearray(stream)
        k = 1000 + int(np.flatnonzero(~np.isin(stype[1000:], list(b"HMSDNYGTV")))[0])
        bad[1 + 2 * k] ^= 0xFF  # a data byte inside the laser records
        with pytest.raises(FormatError, match="calibration cycle"):
            calibration_from_hdl64e_status(stype, np.frombuffer(bytes(bad[1::2]), np.uint8))


def test_hdl64e_needs_model_and_calibration(tmp_path):
    packets, ts = _hdl64e_packets(3, False, seed=1)
    data = udp_pcap_bytes(packets, ts)
    with pytest.raises(FormatError, match="model"):
        read_velodyne_pcap("h.pcap", data=data)
    with pytest.raises(FormatError, match="calibration cycle"):
        read_velodyne_pcap("h.pcap", model="HDL-64E_S3", data=data)


# ---------------------------------------------------------------- writer round trip, time, sweeps
@pytest.mark.parametrize("model", ["VLP-16", "HDL-32E", "VLP-32C"])
def test_writer_round_trip_recovers_firings(model):
    mdl = get_model(model)
    firings = _firings(model, 25, seed=4)
    packets, ts = velodyne_packets(firings, model)
    sweeps, rep = read_velodyne_pcap("<mem>", data=udp_pcap_bytes(packets, ts, nanosecond=True), cut_angle_deg=0.0,
                                     time_source="pcap")
    xyz, ring, t, ret, inten, _ = _ours(sweeps)
    cal = mdl.default_calibration()
    beams = mdl.beam_table()
    # expected, in NumPy: every firing with a return, in packet order
    hit = firings.distance_m > 0
    seq, laser = np.nonzero(hit)
    t_exp = firings.timestamp_ns[seq] + beams.firing_offset_ns[laser]
    order = np.lexsort((cal.ring[laser], t_exp))
    seq, laser, t_exp = seq[order], laser[order], t_exp[order]
    o = np.lexsort((ring, t))
    np.testing.assert_array_equal(t[o], t_exp)
    np.testing.assert_array_equal(ring[o], cal.ring[laser])
    np.testing.assert_array_equal(inten[o], firings.reflectivity[seq, laser])
    # range from the laser origin to the point is the written distance to the 2 mm quantisation
    p = xyz[o].astype(np.float64)
    p[:, 2] -= cal.vert_offset_correction[laser]
    d = np.linalg.norm(p, axis=1)
    assert np.abs(d - firings.distance_m[seq, laser]).max() <= mdl.distance_resolution_m / 2 + 1e-5
    np.testing.assert_allclose(np.arcsin(p[:, 2] / d), cal.vert_correction[laser], atol=1e-6)
    # azimuth: the written encoder angle advanced by the rotation during the firing delay
    az_true = np.radians(firings.azimuth_deg[seq] + beams.firing_offset_ns[laser] * 1e-9 * 600 * 6.0)
    yaw = np.arctan2(p[:, 1], p[:, 0])
    err = np.angle(np.exp(1j * (yaw - (-az_true + beams.azimuth_offset_rad[laser]))))
    assert np.abs(err).max() < np.radians(0.011)


def test_sweeps_split_at_cut_angle():
    firings = _firings("VLP-16", 240, seed=6, rpm=600.0)  # 240 packets x 24 sequences = 2.65 rotations
    packets, ts = velodyne_packets(firings, "VLP-16")
    data = udp_pcap_bytes(packets, ts)
    for cut in (0.0, 90.0, 270.0):
        sweeps, rep = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=cut)
        # NumPy reference: a block (2 sequences) starts a sweep when its written azimuth crosses the cut
        block_az = np.rint(firings.azimuth_deg[::2] * 100) % 36000
        rel = (block_az - cut * 100) % 36000
        starts = 1 + np.count_nonzero(rel[1:] < rel[:-1])
        assert len(sweeps) == rep.sweeps == starts
        for s in sweeps:
            assert s.frame == "lidar" and s.time_offset_ns.min() == 0
            assert np.all(np.diff(s.time_offset_ns) >= -60_000)
        full = sweeps[1]
        assert 0.099 < (full.time_offset_ns.max()) * 1e-9 < 0.1001  # one rotation at 600 rpm
        yaw = np.degrees(np.arctan2(-full.xyz[:, 1], full.xyz[:, 0])) % 360  # encoder azimuth
        first = yaw[full.time_offset_ns < 200_000]
        assert np.all(((first - cut) % 360) < 2.0)


def test_gps_time_source():
    firings = _firings("VLP-16", 5, seed=7)
    packets, ts = velodyne_packets(firings, "VLP-16")
    # the capture clock runs 25 minutes ahead of the sensor's GPS-synchronised clock
    skew = 25 * 60 * 10**9
    data = udp_pcap_bytes(packets, ts + skew)
    (sw_pcap,), _ = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0)
    (sw_gps,), _ = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0, time_source="gps")
    assert sw_pcap.timestamp_ns - sw_gps.timestamp_ns == skew
    assert sw_gps.timestamp_ns == firings.timestamp_ns[0] // 1000 * 1000
    np.testing.assert_array_equal(sw_pcap.time_offset_ns, sw_gps.time_offset_ns)
    with pytest.raises(ValueError, match="time_source"):
        read_velodyne_pcap("<mem>", data=data, time_source="host")


# ---------------------------------------------------------------- bad packets
def test_bad_packets_are_dropped_and_counted():
    firings = _firings("HDL-32E", 12, seed=8)
    packets, ts = velodyne_packets(firings, "HDL-32E")
    good, _ = read_velodyne_pcap("<mem>", data=udp_pcap_bytes(packets, ts), cut_angle_deg=0.0)
    bad = packets.copy()
    bad[1, 500] = 0x00  # block flag (block 5)
    bad[3, 702:704] = [0xFF, 0xFF]  # azimuth 65535
    bad[5, 1204] = 0x99  # unknown return mode
    bad[7, 1205] = 0x22  # VLP-16 product id inside an HDL-32E log
    data = udp_pcap_bytes(bad, ts)
    short = udp_pcap_bytes(packets[:1, :1000], ts[:1])[24:]  # a 1000-byte datagram
    data = data + short + udp_pcap_bytes(packets[:1], ts[:1])[24:100]  # and a truncated record
    sweeps, rep = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0)
    assert rep.records == 14 and rep.packets == 12 and rep.decoded == 8 and rep.dropped_total == 6
    assert {k: v for k, v in rep.dropped.items() if v} == {
        "block_flag": 1, "azimuth": 1, "return_mode": 1, "product_id": 1, "payload_size": 1, "truncated_record": 1}
    assert rep.truncated_at is not None
    keep = np.setdiff1d(np.arange(12), [1, 3, 5, 7])
    ref, _ = read_velodyne_pcap("<mem>", data=udp_pcap_bytes(packets[keep], ts[keep]), cut_angle_deg=0.0)
    a, b = Sweep.concatenate(sweeps), Sweep.concatenate(ref)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    np.testing.assert_array_equal(a.ring, b.ring)
    assert len(a) < len(Sweep.concatenate(good))


def test_range_filter_and_errors():
    firings = _firings("VLP-16", 4, seed=10)
    data = udp_pcap_bytes(*velodyne_packets(firings, "VLP-16"))
    (s,), _ = read_velodyne_pcap("<mem>", data=data, min_range_m=5.0, max_range_m=20.0, cut_angle_deg=0.0)
    d = firings.distance_m
    assert len(s) == np.count_nonzero((d >= 5.0 - 1e-3) & (d <= 20.0 + 1e-3))
    with pytest.raises(ValueError, match="min_range_m"):
        read_velodyne_pcap("<mem>", data=data, min_range_m=-1.0)
    with pytest.raises(ValueError, match="unknown Velodyne model"):
        read_velodyne_pcap("<mem>", data=data, model="VLP-64")
    with pytest.raises(ValueError, match="distance_m"):
        velodyne_packets(Firings(firings.timestamp_ns, firings.azimuth_deg, d[:, :8]), "VLP-16")
    with pytest.raises(ValueError, match="cannot be encoded"):
        velodyne_packets(Firings(firings.timestamp_ns, firings.azimuth_deg, d * 100), "VLP-16")


def test_calibration_yaml_errors(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lasers: [{laser_id: 0, rot_correction: 0.0}]\nnum_lasers: 1\n")
    with pytest.raises(FormatError, match="vert_correction"):
        read_calibration_yaml(p)
    p.write_text("lasers: [{laser_id: 1, rot_correction: 0.0, vert_correction: 0.1}]\nnum_lasers: 2\n")
    with pytest.raises(FormatError, match="missing"):
        read_calibration_yaml(p)
    p.write_text("a: [1, 2\n")
    with pytest.raises(FormatError):
        read_calibration_yaml(p)
    cal = calibration_from_dict({"lasers": [{"laser_id": i, "rot_correction": 0.0, "vert_correction": v}
                                            for i, v in enumerate([0.2, -0.1, 0.0])]})
    assert cal.ring.tolist() == [2, 0, 1]
    with pytest.raises(ValueError, match="rot_correction"):
        VelodyneCalibration(np.zeros((2, 2)), np.zeros(2), 0.002)


def test_beam_tables_and_registry(tmp_path):
    vlp = MODELS["VLP-16"].beam_table()
    np.testing.assert_array_equal(vlp.firing_offset_ns, np.arange(16) * 2304)
    assert vlp.sequence_period_ns == 55_296
    np.testing.assert_allclose(np.degrees(vlp.elevation_rad[vlp.ring.argsort()]), np.arange(-15, 16, 2))
    hdl = MODELS["HDL-32E"].beam_table()
    np.testing.assert_array_equal(hdl.firing_offset_ns, np.arange(32) * 1152)
    assert hdl.sequence_period_ns == 46_080
    c32 = MODELS["VLP-32C"].beam_table()
    np.testing.assert_array_equal(c32.firing_offset_ns, np.arange(32) // 2 * 2304)
    path = tmp_path / "r.pcap"
    write_velodyne_pcap(path, _firings("VLP-16", 300, seed=11), "VLP-16")
    sweeps, _ = read_velodyne_pcap(path)
    s = read_points(path, index=1)
    np.testing.assert_array_equal(s.xyz, sweeps[1].xyz)
    assert read_velodyne_sweep(path, index=-1).timestamp_ns == sweeps[-1].timestamp_ns
    with pytest.raises(FormatError, match="sweep 99"):
        read_velodyne_sweep(path, index=99)


def test_simulated_rig_to_pcap_round_trip():
    """engine.sim ray-casts a VLP-32C beam pattern; its firings written as a pcap decode to its points."""
    from engine.pose_track import PoseTrack
    from engine.se3 import SE3
    from engine.sim import BeamPattern, Lidar, ObjectTable, World, simulate_sweep

    mdl = get_model("VLP-32C")
    beams = mdl.beam_table()
    pattern = BeamPattern(beams.elevation_rad, beams.azimuth_offset_rad, beams.firing_offset_ns,
                          beams.sequence_period_ns, 100_000_000, 150.0, clockwise=True)
    boxes = [((12.0, 3.0, 1.0), (2.0, 4.0, 3.0)), ((-8.0, -6.0, 1.5), (3.0, 2.0, 3.0)),
             ((2.0, -25.0, 2.0), (8.0, 1.0, 4.0))]
    objects = ObjectTable(("ground", *["building"] * 3), np.full((4, 3), 100, np.uint8), np.full(4, 0.5, np.float32))
    world = World(np.array([b[0] for b in boxes]), np.array([b[1] for b in boxes]), np.zeros(3), 0, 10**8,
                  np.zeros((0, 2, 3)), np.zeros((0, 2)), np.zeros((0, 3)), objects, np.array([1, 2, 3]))
    track = PoseTrack(np.array([T0, T0 + 10**9]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3)))
    sim = simulate_sweep(world, track, Lidar("L", pattern, SE3(np.array([1.0, 0, 0, 0]), [0, 0, 1.8])), T0)
    # the sweep as firing sequences: clockwise encoder angle, range per (sequence, laser), 0 = no return
    n_seq = pattern.n_sequences
    seq = sim.time_offset_ns // pattern.sequence_period_ns
    dist = np.zeros((n_seq, mdl.n_lasers))
    dist[seq, sim.ring] = sim.extra["range_m"]
    t_seq = np.arange(n_seq) * pattern.sequence_period_ns
    firings = Firings(T0 + t_seq, 360.0 * t_seq / pattern.sweep_period_ns, dist)
    # decode with the pattern's own beams (the simulator has no per-laser origin offsets)
    cal = VelodyneCalibration(beams.azimuth_offset_rad, beams.elevation_rad, mdl.distance_resolution_m)
    sweeps, rep = read_velodyne_pcap("<mem>", data=udp_pcap_bytes(*velodyne_packets(firings, mdl), nanosecond=True),
                                     calibration=cal, cut_angle_deg=359.0, time_source="pcap")
    out = Sweep.concatenate(sweeps)
    t = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps])
    assert len(out) == len(sim) > 10_000
    laser = np.argsort(cal.ring)[out.ring]  # ring (elevation rank) -> laser id, the simulator's ring
    o = np.lexsort((laser, t))
    e = np.lexsort((sim.ring, sim.timestamp_ns + sim.time_offset_ns))
    np.testing.assert_array_equal(t[o], sim.timestamp_ns + sim.time_offset_ns[e])
    np.testing.assert_array_equal(out.ring[o], cal.ring[sim.ring[e]])
    r = sim.extra["range_m"][e].astype(np.float64)
    err = np.linalg.norm(out.xyz[o].astype(np.float64) - sim.xyz[e], axis=1)
    # 4 mm range step, 0.01° encoder step on the block azimuth and on the packet's rotation rate
    assert np.all(err <= mdl.distance_resolution_m / 2 + r * np.radians(0.01) + 1e-4), err.max()


# ---------------------------------------------------------------- Puck Hi-Res, VLS-128, dual returns
@pytest.mark.parametrize("model", ["Puck Hi-Res", "VLS-128"])
@pytest.mark.parametrize("mode", ["strongest", "last", "dual"])
def test_hires_and_vls128_match_velodyne_decoder(tmp_path, model, mode):
    """Product id 0x24 / 0xA1 packets against the peer: ring, return type, intensity, time and
    position. The peer has no rotation rate in its first VLS-128 packet and stretched times in
    its first VLS-128 scan: those are compared from its second scan on, to 300 ns (its scan
    stamps are float seconds) and one 0.01° encoder step (it takes the rate between packets)."""
    path = tmp_path / "m.pcap"
    n = write_velodyne_pcap(path, _firings(model, 120, mode, same=0.3), model, mode)
    sweeps, rep = read_velodyne_pcap(path, quantize_azimuth=True, cut_angle_deg=40.0)
    assert rep.model == model and rep.decoded == n and rep.dropped_total == 0
    if model == "Puck Hi-Res":
        _match(_ours(sweeps), _peer(path, model))
        return
    # (the peer does not cut dual-return VLS-128 scans: there, from its third packet)
    peer = _peer(path, model, skip_scans=0 if mode == "dual" else 1, cut_angle=40.0)
    # from halfway between two firing groups (2.67 µs apart)
    since = peer[2].min() + 1333 + (2 * 53_333 if mode == "dual" else 0)
    keep = peer[2] >= since
    _match(_ours(sweeps, since), tuple(c[keep] for c in peer), t_tol=300.0, az_tol_deg=0.0101)


@pytest.mark.parametrize("model", ["VLP-16", "HDL-32E", "VLP-32C"])
def test_identical_dual_returns_are_kept_once(tmp_path, model):
    """Half the firings have equal strongest and last distances (reflectivities differ): one
    point each, flagged return_type 3 with the strongest return's intensity, as the peer."""
    path = tmp_path / "d.pcap"
    firings = _firings(model, 30, "dual", same=0.5, seed=12)
    write_velodyne_pcap(path, firings, model, "dual")
    sweeps, rep = read_velodyne_pcap(path, quantize_azimuth=True)
    ours = _ours(sweeps)
    d = firings.distance_m
    hit = d > 0
    same = hit[:, 0] & (np.rint(d[:, 0] / MODELS[model].distance_resolution_m)
                        == np.rint(d[:, 1] / MODELS[model].distance_resolution_m))
    assert rep.points == len(ours[0]) == np.count_nonzero(hit) - np.count_nonzero(same)
    types = np.bincount(ours[5], minlength=4)
    assert types[3] == np.count_nonzero(same) > 0
    assert types[1] == np.count_nonzero(hit[:, 0]) - types[3] and types[2] == np.count_nonzero(hit[:, 1]) - types[3]
    assert np.all(ours[3][ours[5] == 3] == 0)  # return_index: the strongest return
    _match(ours, _peer(path, model))


def test_hdl64e_identical_dual_returns(tmp_path):
    packets, ts = _hdl64e_packets(20, True, seed=13)
    # the last-return block pairs (2, 3) repeat the strongest pairs' (0, 1) distances for half the channels
    rng = np.random.default_rng(13)
    blocks = packets[:, :1200].reshape(20, 3, 4, 100)
    copy = rng.random((20, 3, 2, 32)) < 0.5
    for c in range(2):
        dist = blocks[:, :, c, 4:].reshape(20, 3, 32, 3)[..., :2]
        last = blocks[:, :, 2 + c, 4:].reshape(20, 3, 32, 3)
        last[..., :2] = np.where(copy[:, :, c, :, None], dist, last[..., :2])
        blocks[:, :, 2 + c, 4:] = last.reshape(20, 3, 96)
    packets[:, :1200] = blocks.reshape(20, 1200)
    path = tmp_path / "h.pcap"
    path.write_bytes(udp_pcap_bytes(packets, ts))
    cal = vd.calibrations.get_bundled_calibration("HDL-64E_S3-VeloView.yml")
    calib_path = tmp_path / "c.yaml"
    calib_path.write_text(cal.to_string())
    sweeps, _ = read_velodyne_pcap(path, model="HDL-64E_S3", calibration=calib_path, quantize_azimuth=True)
    ours = _ours(sweeps)
    assert np.count_nonzero(ours[5] == 3) > 0
    _match(ours, _peer(path, "HDL-64E_S3", calibration=cal))


def test_model_names_and_vls128_tables():
    assert get_model("Alpha Prime") is get_model("vls128") is MODELS["VLS-128"]
    assert get_model("VLP-16 Hi-Res") is get_model("puck hi-res") is MODELS["Puck Hi-Res"]
    vls = MODELS["VLS-128"].beam_table()
    assert vls.sequence_period_ns == 53_333 and len(vls.elevation_rad) == 128
    # eight lasers per firing group, groups 0-7 then two maintenance slots, then 8-15
    slot = np.arange(128) // 8 + np.arange(128) // 64 * 2
    np.testing.assert_array_equal(vls.firing_offset_ns, np.rint(slot * 2666.66).astype(np.int64))
    # the peer's default calibrations hold the same beams
    for name, peer_model in (("VLS-128", vd.Model.VLS128), ("Puck Hi-Res", vd.Model.PuckHiRes)):
        doc = yaml.safe_load(vd.Calibration.default_calibs[peer_model].to_string())
        cal = MODELS[name].default_calibration()
        for key in ("vert_correction", "rot_correction", "vert_offset_correction"):
            np.testing.assert_allclose(getattr(cal, key), [laser[key] for laser in doc["lasers"]], atol=2e-6)


# ---------------------------------------------------------------- time sources, position packets
def _rmc(t_ns: int) -> str:
    """The $GPRMC sentence of the whole UTC second before ``t_ns`` (valid fix, checksum)."""
    import datetime
    import functools

    d = datetime.datetime.fromtimestamp(t_ns // 10**9, datetime.timezone.utc)
    body = f"GPRMC,{d:%H%M%S}.00,A,5922.4400,N,02439.1800,E,0.0,0.0,{d:%d%m%y},,,A"
    return f"${body}*{functools.reduce(lambda a, c: a ^ ord(c), body, 0):02X}\r\n"


def _timed_capture(skew_ns: int, jitter_us: float, seed: int, t0: int = 1_700_002_799_000_000_000,
                   positions: bool = False, clock=lambda t: t):
    """VLP-16 packets fired from ``t0`` (2 s crossing the top of an hour) whose µs stamps read
    ``clock(true time)``, recorded ``skew_ns`` late plus 0..``jitter_us`` of jitter; with position
    packets every 100 ms. Returns (pcap bytes, true packet times)."""
    from formats.velodyne_time import position_packet

    rng = np.random.default_rng(seed)
    firings = _firings("VLP-16", 1500, seed=seed)
    firings.timestamp_ns = t0 + (firings.timestamp_ns - T0)
    firings.distance_m[firings.distance_m == 0] = 5.0  # every laser returns: one point per firing
    packets, true_ns = velodyne_packets(firings, "VLP-16")
    usec = (clock(true_ns) // 1000) % 3_600_000_000
    packets[:, 1200:1204] = usec.astype("<u4").view(np.uint8).reshape(-1, 4)
    capture = true_ns + skew_ns + rng.uniform(0, jitter_us * 1000, len(true_ns)).astype(np.int64)
    data = udp_pcap_bytes(packets, capture, nanosecond=True)
    if positions:
        pos_true = np.arange(true_ns[0], true_ns[-1], 100_000_000)
        pos = np.stack([position_packet(int(clock(t) // 1000 % 3_600_000_000), _rmc(int(t))) for t in pos_true])
        extra = udp_pcap_bytes(pos, pos_true + skew_ns, dst_port=8308, nanosecond=True)[24:]
        data += extra
    return data, true_ns


def _packet_starts(sweeps: list[Sweep]) -> np.ndarray:
    """Packet times (the first firing of each 24-sequence packet) of decoded sweeps."""
    first_laser = MODELS["VLP-16"].beam_table().ring[0]
    t = np.concatenate([s.timestamp_ns + s.time_offset_ns[s.ring == first_laser] for s in sweeps])
    return np.unique(t)[::24]


def test_auto_time_takes_the_sensor_clock_without_capture_jitter():
    data, true_ns = _timed_capture(skew_ns=0, jitter_us=230.0, seed=20)
    for source, used in (("auto", "gps_capture"), ("gps", "gps_capture"), ("pcap", "pcap")):
        sweeps, rep = read_velodyne_pcap("<mem>", data=data, time_source=source, cut_angle_deg=0.0)
        assert rep.time_source == used
        t = _packet_starts(sweeps)
        if source == "pcap":  # the record times: the jitter is there
            assert np.ptp(t - true_ns) > 100_000
        else:  # the packets' own µs stamps, across the top of the hour
            np.testing.assert_array_equal(t, true_ns // 1000 * 1000)


def test_auto_time_keeps_jitter_free_capture_times():
    """Capture times within the µs of each packet's stamp (a simulated capture): kept, with their ns."""
    data, true_ns = _timed_capture(skew_ns=0, jitter_us=0.0, seed=25)
    assert np.any(true_ns % 1000)
    sweeps, rep = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0)
    assert rep.time_source == "pcap"
    np.testing.assert_array_equal(_packet_starts(sweeps), true_ns)


def test_free_running_sensor_clock_is_fitted_to_the_capture_clock():
    # the sensor counts from its power-up, 17 minutes off the hour, and runs 40 ppm fast
    clock = lambda t: (t - 1_700_000_000_000_000_000 + 17 * 60 * 10**9) * (1 + 40e-6)  # noqa: E731
    data, true_ns = _timed_capture(skew_ns=0, jitter_us=230.0, seed=21, clock=lambda t: np.int64(clock(t)))
    sweeps, rep = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0)
    assert rep.time_source == "sensor_fit"
    err = (_packet_starts(sweeps) - true_ns).astype(np.float64)
    # on the capture clock (a mean latency of 115 µs later), its drift fitted, jitter-free
    assert abs(err.mean() - 115_000) < 10_000 and err.std() < 1_500
    sweeps_pcap, _ = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0, time_source="pcap")
    assert (_packet_starts(sweeps_pcap) - true_ns).std() > 40 * err.std()


def test_position_packets_name_the_hour():
    """A capture host 25 minutes off: the position packets' RMC fix puts the sensor's µs stamps
    in the right hour (the capture time alone would put them in the wrong one)."""
    skew = 25 * 60 * 10**9
    data, true_ns = _timed_capture(skew_ns=skew, jitter_us=230.0, seed=22, positions=True)
    sweeps, rep = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=0.0)
    assert rep.time_source == "gps_fix"
    pos = rep.position_packets
    assert len(pos) == 20 and np.all(pos.pps_status == 2)
    np.testing.assert_allclose(pos.latitude_deg, 59 + 22.44 / 60)
    np.testing.assert_allclose(pos.longitude_deg, 24 + 39.18 / 60)
    np.testing.assert_array_equal(_packet_starts(sweeps), true_ns // 1000 * 1000)
    # the peer reads the same stamp and fix from the position packets
    from formats.pcap import read_udp_payloads

    raw = read_udp_payloads("<mem>", 512, port=8308, data=data).array()
    for k in (0, 11, 19):
        peer = vd.TelemetryPacket(raw[k].tobytes())
        fix = peer.parse_nmea()
        assert peer.usec_since_toh == pos.usec_since_hour[k]
        whole = (pos.fix_ns[k] // 10**9) % 86400
        assert (fix.utc_hours, fix.utc_minutes, fix.utc_seconds) == (whole // 3600, whole // 60 % 60, whole % 60)
    # without the position packets the hour comes from the (wrong) capture clock: "gps" is off
    # by an hour, "auto" sees the disagreement and fits the clock
    plain = data[: len(data) - 20 * (16 + 42 + 512)]
    (*_, ), rep_gps = read_velodyne_pcap("<mem>", data=plain, time_source="gps")
    assert rep_gps.time_source == "gps_capture"
    _, rep_auto = read_velodyne_pcap("<mem>", data=plain)
    assert rep_auto.time_source == "sensor_fit"


# ---------------------------------------------------------------- full rotations, azimuth crop
def test_full_rotation_cut():
    firings = _firings("VLP-16", 240, seed=23, rpm=600.0)
    data = udp_pcap_bytes(*velodyne_packets(firings, "VLP-16"))
    sweeps, _ = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=None)
    first = np.rint(firings.azimuth_deg[0] * 100) / 100
    ref, _ = read_velodyne_pcap("<mem>", data=data, cut_angle_deg=first)
    assert len(sweeps) == len(ref) == 4  # 3.2 rotations
    for a, b in zip(sweeps, ref):
        np.testing.assert_array_equal(a.xyz, b.xyz)
    # the first sweep is a whole rotation: 0.1 s at 600 rpm, starting with the first firing
    assert sweeps[0].timestamp_ns == firings.timestamp_ns[0] // 1000 * 1000
    assert 0.0999 < sweeps[0].time_offset_ns.max() * 1e-9 < 0.1 + 111e-6  # up to the last firing pair


@pytest.mark.parametrize("crop", [(10.0, 200.0), (300.0, 60.0)])
def test_azimuth_crop_matches_velodyne_decoder(tmp_path, crop):
    path = tmp_path / "c.pcap"
    write_velodyne_pcap(path, _firings("VLP-16", 60, seed=24), "VLP-16")
    sweeps, _ = read_velodyne_pcap(path, quantize_azimuth=True, azimuth_range_deg=crop)
    ours = _ours(sweeps)
    yaw = np.degrees(np.arctan2(-ours[0][:, 1], ours[0][:, 0])) % 360  # encoder azimuth (no rot correction)
    lo, hi = crop
    inside = ((yaw >= lo - 0.01) & (yaw <= hi + 0.01)) if lo < hi else ((yaw >= lo - 0.01) | (yaw <= hi + 0.01))
    assert np.all(inside)
    full, _ = read_velodyne_pcap(path)
    assert 0 < len(ours[0]) < sum(len(s) for s in full)
    # the peer reads (a, b) as an unordered pair: a wrapping range is its two halves
    halves = [(lo, hi)] if lo < hi else [(lo, 359.99), (0.0, hi)]
    peer = [_peer(path, "VLP-16", min_angle=a, max_angle=b) for a, b in halves]
    _match(ours, tuple(np.concatenate(cols) for cols in zip(*peer)))
    with pytest.raises(ValueError, match="azimuth_range_deg"):
        read_velodyne_pcap(path, azimuth_range_deg=(0.0, np.nan))
