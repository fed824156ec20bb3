"""Hesai XT32 / QT128 / AT128 decoding against a NumPy implementation of the manuals written
here (packet writer and geometry, independent of formats.hesai), correction files and bad input."""

from __future__ import annotations

import datetime

import numpy as np
import pytest

from formats.errors import FormatError
from formats.hesai import read_hesai_pcap
from formats.hesai_calibration import (
    AngleCorrection,
    parse_at128_correction,
    read_angle_correction_csv,
    read_at128_correction,
)
from formats.pcap import udp_pcap_bytes

T0 = 1_700_000_000_000_000_000
SPEC = {  # model: (protocol, channels, blocks, packet period ns)
    "XT32": ((6, 1), 32, 8, 400_000),
    "QT128": ((3, 2), 128, 2, 111_111),
    "AT128": ((4, 3), 128, 2, 41_667),
}


def _utc(t_ns: np.ndarray, year0: int) -> np.ndarray:
    """``(P, 6) uint8`` year - ``year0``, month, day, hour, minute, second of each stamp."""
    out = []
    for t in t_ns:
        d = datetime.datetime.fromtimestamp(int(t) // 10**9, datetime.timezone.utc)
        out.append([d.year - year0, d.month, d.day, d.hour, d.minute, d.second])
    return np.array(out, np.uint8)


def _packets(model: str, az: np.ndarray, dist: np.ndarray, refl: np.ndarray, stamp_ns: np.ndarray,
             dual: bool = False, confidence: bool = True) -> np.ndarray:
    """``(P, S) uint8`` packets per the manuals' layouts: ``az`` ``(P, B)`` encoder azimuth (0.01°,
    AT128: 1/25600°), ``dist`` / ``refl`` ``(P, B, L)`` raw (4 mm units)."""
    (major, minor), channels, blocks, _ = SPEC[model]
    p = len(az)
    qt, at = model == "QT128", model == "AT128"
    unit = 4 if (confidence or not qt) else 3
    flags = (0x10 if qt and confidence else 0) | (0x01 if not qt else 0) | (0x08 if at else 0)
    head = bytes([0xEE, 0xFF, major, minor, 0, 0, channels, blocks, 0 if not dual else 1, 4, 2 if dual else 1, flags])
    blocks_b = []
    for b in range(blocks):
        units = np.zeros((p, channels, unit), np.uint8)
        units[:, :, :2] = dist[:, b].astype("<u2").view(np.uint8).reshape(p, channels, 2)
        units[:, :, 2] = refl[:, b]
        coarse = (az[:, b] // 256 if at else az[:, b]).astype("<u2").view(np.uint8).reshape(p, 2)
        fine = (az[:, b] % 256).astype(np.uint8)[:, None] if at else np.zeros((p, 0), np.uint8)
        blocks_b.append(np.concatenate([coarse, fine, units.reshape(p, -1)], axis=1))
    body = np.concatenate(blocks_b, axis=1)
    usec = ((stamp_ns // 1000) % 1_000_000).astype("<u4").view(np.uint8).reshape(p, 4)
    utc = _utc(stamp_ns, 1900 if at else 2000)
    mode = np.full((p, 1), 0x39 if dual else 0x37, np.uint8)
    if model == "XT32":  # reserved 9, shutdown, return mode, motor speed, UTC, µs, factory, sequence
        tail = np.concatenate([np.zeros((p, 10), np.uint8), mode, np.full((p, 2), 0x58, np.uint8), utc, usec,
                               np.zeros((p, 5), np.uint8)], axis=1)
    elif qt:  # body CRC; reserved 3+2, mode flag, reserved 3, azimuth flag 2, working mode; return mode,
        # motor speed, UTC, µs, factory; tail CRC
        tail = np.concatenate([np.zeros((p, 4 + 12), np.uint8), mode, np.zeros((p, 2), np.uint8), utc, usec,
                               np.zeros((p, 1 + 4), np.uint8)], axis=1)
    else:  # body CRC; reserved 3+3, shutdown, reserved 3+8, motor speed, µs, return mode, factory, UTC;
        # sequence, tail CRC, signature
        tail = np.concatenate([np.zeros((p, 4 + 18 + 2), np.uint8), usec, mode, np.zeros((p, 1), np.uint8), utc,
                               np.zeros((p, 4 + 4 + 32), np.uint8)], axis=1)
    return np.concatenate([np.tile(np.frombuffer(head, np.uint8), (p, 1)), body, tail], axis=1)


def _at128_correction(seed: int = 0) -> tuple[bytes, dict]:
    """A version-1.5 AT128 correction: three 120° mirror fields, beams and small adjustments."""
    rng = np.random.default_rng(seed)
    res = 1
    start = np.array([30, 150, 270]) * 25600 // res
    end = np.array([150, 270, 30]) * 25600 // res
    az = np.rint(rng.uniform(-2, 2, 128) * 25600).astype(np.int32) // res
    el = np.rint(np.linspace(12.5, -12.5, 128) * 25600).astype(np.int32) // res
    adj_az = rng.integers(-30, 30, 128 * 180).astype(np.int8)
    adj_el = rng.integers(-20, 20, 128 * 180).astype(np.int8)
    head = bytes([0xEE, 0xFF, 1, 5, 128, 3, 3]) + bytes(8) + bytes([res])
    data = (head + start.astype("<u4").tobytes() + end.astype("<u4").tobytes() + az.astype("<i4").tobytes()
            + el.astype("<i4").tobytes() + adj_az.tobytes() + adj_el.tobytes() + bytes(32))
    return data, {"start": start * res, "end": end * res, "az": az * res, "el": el * res,
                  "adj_az": adj_az.astype(np.int64) * res, "adj_el": adj_el.astype(np.int64) * res}


def _round(v: np.ndarray) -> np.ndarray:
    """C's round: halves away from zero."""
    return np.sign(v) * np.floor(np.abs(v) + 0.5)


def _reference(model: str, az: np.ndarray, dist: np.ndarray, refl: np.ndarray, stamp_ns: np.ndarray, cor,
               dual: bool = False) -> dict[str, np.ndarray]:
    """The manuals' geometry and timing in NumPy, points in packet, block, channel order."""
    _, channels, blocks, _ = SPEC[model]
    p = len(az)
    pk, b, ch = np.meshgrid(np.arange(p), np.arange(blocks), np.arange(channels), indexing="ij")
    raw = dist[pk, b, ch]
    keep = raw > 0
    pk, b, ch, raw = pk[keep], b[keep], ch[keep], raw[keep].astype(np.float64)
    d = raw * 0.004
    a = az[pk, b].astype(np.int64)
    if model == "AT128":
        full = 36000 * 256
        inside = [((a - s) % full + (e - a) % full) == (e - s) % full for s, e in zip(cor["start"], cor["end"])]
        field = np.argmax(np.stack(inside), axis=0)
        i0 = a // (200 * 256)
        w = (a - i0 * 200 * 256) / (200 * 256)
        j = ch * 180 + i0
        j1 = np.minimum(j + 1, len(cor["adj_az"]) - 1)  # Hesai's SDK reads on into the next channel's row
        da = _round((1 - w) * cor["adj_az"][j] + w * cor["adj_az"][j1]).astype(np.int64)
        de = _round((1 - w) * cor["adj_el"][j] + w * cor["adj_el"][j1]).astype(np.int64)
        alpha = (((a - cor["start"][field]) % full) * 2 - cor["az"][ch] + da * 256) % full * 2 * np.pi / full
        eps = (cor["el"][ch] + de * 256) % full * 2 * np.pi / full
    else:
        alpha = np.radians(a / 100.0 + cor.azimuth_deg[ch])
        eps = np.radians(cor.elevation_deg[ch])
    hx, hy, hz = d * np.cos(eps) * np.sin(alpha), d * np.cos(eps) * np.cos(alpha), d * np.sin(eps)
    t = stamp_ns[pk] // 1000 * 1000
    if model == "XT32":  # block i of 8 at 5.632 µs - 50 µs (7 - i), dual per pair; channel n at 0.368 + 1.512 n µs
        group = b // 2 if dual else b
        last = 3 if dual else 7
        t = t + np.rint((5.632 - 50.0 * (last - group)) * 1000).astype(np.int64) + np.rint(
            (0.368 + 1.512 * ch) * 1000).astype(np.int64)
    # sweeps: a new one where the encoder azimuth wraps (AT128: where the mirror field changes)
    block_key = field if model == "AT128" else a
    new = np.diff(block_key) != 0 if model == "AT128" else np.diff(block_key) < -18000
    return {"xyz": np.stack([hy, -hx, hz], 1), "ring": ch, "refl": refl[pk, b, ch], "t": t,
            "ret": (b % 2) if dual else np.zeros_like(b), "sweeps": 1 + int(np.count_nonzero(new))}


def _scene(model: str, n_packets: int, seed: int, dual: bool = False):
    _, channels, blocks, period = SPEC[model]
    rng = np.random.default_rng(seed)
    stamp = T0 + 123_000 + np.arange(n_packets, dtype=np.int64) * period
    if model == "AT128":  # encoder azimuth sweeping the three fields, in 1/25600°
        az = (30 * 25600 + np.arange(n_packets * blocks).reshape(n_packets, blocks) * 16001) % (360 * 25600)
    else:
        step = 18 if model == "XT32" else 40
        az = (np.arange(n_packets * blocks).reshape(n_packets, blocks) // (2 if dual else 1) * step + 35000) % 36000
    dist = rng.integers(200, 40000, (n_packets, blocks, channels))
    dist[rng.random(dist.shape) < 0.1] = 0
    refl = rng.integers(0, 256, dist.shape)
    return az, dist, refl, stamp


def _capture(packets: np.ndarray, stamp: np.ndarray) -> bytes:
    return udp_pcap_bytes(packets, stamp + 60_000, dst_port=2368)


def _angle_correction(channels: int, seed: int) -> AngleCorrection:
    rng = np.random.default_rng(seed)
    return AngleCorrection(np.linspace(15, -16, channels) + rng.normal(0, 0.01, channels),
                           rng.uniform(-1.5, 1.5, channels))


@pytest.mark.parametrize("model, dual, confidence", [("XT32", False, True), ("XT32", True, True),
                                                     ("QT128", False, True), ("QT128", True, False),
                                                     ("AT128", False, True)])
def test_decoder_matches_the_numpy_manual(tmp_path, model, dual, confidence):
    az, dist, refl, stamp = _scene(model, 300, seed=1, dual=dual)
    packets = _packets(model, az, dist, refl, stamp, dual, confidence)
    if model == "AT128":
        raw, cor = _at128_correction()
        path = tmp_path / "at128.dat"
        path.write_bytes(raw)
    else:
        cor = _angle_correction(SPEC[model][1], seed=2)
        path = tmp_path / "angles.csv"
        path.write_text("Channel,Elevation,Azimuth\n" + "".join(
            f"{k + 1},{e:.6f},{a:.6f}\n" for k, (e, a) in enumerate(zip(cor.elevation_deg, cor.azimuth_deg))))
        cor = read_angle_correction_csv(path)
    sweeps, rep = read_hesai_pcap("<mem>", path, data=_capture(packets, stamp))
    assert rep.model == model and rep.decoded == rep.packets == 300 and rep.time_source == "sensor"
    assert rep.return_mode == (0x39 if dual else 0x37)
    ref = _reference(model, az, dist, refl, stamp, cor, dual)
    xyz = np.concatenate([s.xyz for s in sweeps])
    t = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps])
    assert len(xyz) == len(ref["t"]) == rep.points
    np.testing.assert_allclose(xyz, ref["xyz"], atol=2e-5 * 160)  # float32 at 160 m
    np.testing.assert_array_equal(t, ref["t"])
    np.testing.assert_array_equal(np.concatenate([s.ring for s in sweeps]), ref["ring"])
    np.testing.assert_array_equal(np.concatenate([s.intensity for s in sweeps]), ref["refl"])
    np.testing.assert_array_equal(np.concatenate([s.return_index for s in sweeps]), ref["ret"])
    assert len(sweeps) == ref["sweeps"] >= (4 if model == "AT128" else 2)


def test_capture_clock_and_other_packets():
    az, dist, refl, stamp = _scene("XT32", 50, seed=3)
    packets = _packets("XT32", az, dist, refl, stamp)
    cor = _angle_correction(32, 4)
    # the sensor's clock 3 minutes behind the capture's: fitted onto the capture clock (60 µs latency)
    late = udp_pcap_bytes(packets, stamp + 180 * 10**9 + 60_000)
    fitted, rep = read_hesai_pcap("<mem>", cor, data=late)
    own, rep_own = read_hesai_pcap("<mem>", cor, data=late, time_source="sensor")
    assert rep.time_source == "sensor_fit" and rep_own.time_source == "sensor"
    shift = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in fitted]) - np.concatenate(
        [s.timestamp_ns + s.time_offset_ns for s in own])
    assert np.all(np.abs(shift - (180 * 10**9 + 60_000)) <= 1000)
    _, rep = read_hesai_pcap("<mem>", cor, data=_capture(packets, stamp), time_source="pcap")
    assert rep.time_source == "pcap"
    # a packet whose header says 64 channels is dropped and counted
    bad = packets.copy()
    bad[7, 6] = 64
    _, rep = read_hesai_pcap("<mem>", cor, data=_capture(bad, stamp))
    assert rep.decoded == 49 and rep.dropped["header"] == 1
    with pytest.raises(ValueError, match="time_source"):
        read_hesai_pcap("<mem>", cor, data=_capture(packets, stamp), time_source="gps")
    with pytest.raises(ValueError, match="firetime_us"):
        read_hesai_pcap("<mem>", cor, data=_capture(packets, stamp), firetime_us=np.zeros(3))


def test_bad_packets_and_corrections(tmp_path):
    az, dist, refl, stamp = _scene("XT32", 10, seed=5)
    packets = _packets("XT32", az, dist, refl, stamp)
    cor = _angle_correction(32, 6)
    with pytest.raises(FormatError, match="1080-byte XT32 packets .* 1000 bytes"):  # truncated packets
        read_hesai_pcap("cap.pcap", cor, data=_capture(packets[:, :1000], stamp))
    wrong = packets.copy()
    wrong[:, 2] = 9  # an unknown protocol
    with pytest.raises(FormatError, match="protocol 6.1 XT32"):
        read_hesai_pcap("cap.pcap", cor, data=_capture(wrong, stamp))
    with pytest.raises(FormatError, match="correction of 32 channels"):
        read_hesai_pcap("cap.pcap", _angle_correction(64, 6), data=_capture(packets, stamp))
    with pytest.raises(FormatError, match="AngleCorrection"):
        read_hesai_pcap("cap.pcap", parse_at128_correction(_at128_correction()[0]), data=_capture(packets, stamp))
    with pytest.raises(FormatError, match="none of 12 bytes"):
        read_hesai_pcap("cap.pcap", cor, data=udp_pcap_bytes(np.zeros((0, 10), np.uint8), np.zeros(0, np.int64)))
    csv = tmp_path / "a.csv"
    csv.write_text("Channel,Elevation,Azimuth\n1,2.0,0.1\n3,1.0,0.0\n")
    with pytest.raises(FormatError, match="line 3: channel 2"):
        read_angle_correction_csv(csv)
    csv.write_text("Channel,Elevation,Azimuth\n1,abc,0.1\n")
    with pytest.raises(FormatError, match="line 2"):
        read_angle_correction_csv(csv)
    raw, _ = _at128_correction()
    dat = tmp_path / "c.dat"
    for spoiled, what in ((raw[:100], "bytes after the header"), (raw[:3] + b"\x03" + raw[4:], "version 1.5"),
                          (b"\x00" + raw[1:], "delimiter"), (raw[:10], "16-byte")):
        dat.write_bytes(spoiled)
        with pytest.raises(FormatError, match=what):
            read_at128_correction(dat)
    dat.write_bytes(raw)
    np.testing.assert_array_equal(read_at128_correction(dat).start_frame, [30 * 25600, 150 * 25600, 270 * 25600])


def test_raw_log_stream_decodes_as_the_capture(tmp_path):
    """A ``hesai_pcap`` stream in a raw log (an AT128 with its .dat): each frame's window of
    packets decodes to the capture's points."""
    from tests.stream_log import frame_points, write_stream_log

    az, dist, refl, stamp = _scene("AT128", 200, seed=9)
    data = _capture(_packets("AT128", az, dist, refl, stamp), stamp)
    raw, _ = _at128_correction()
    (tmp_path / "c.dat").write_bytes(raw)
    sweeps, _ = read_hesai_pcap("<mem>", tmp_path / "c.dat", data=data)
    mid = int(stamp[100]) + 30_000
    root = write_stream_log(tmp_path / "log", "hesai_pcap", data, ("L.dat", raw),
                            [(int(stamp[0]) - 10**6, mid), (mid, int(stamp[-1]) + 10**6)])
    frames = frame_points(root)
    want = np.concatenate([s.xyz for s in sweeps])
    got = np.concatenate([f["xyz"] for f in frames])
    assert len(frames[0]["xyz"]) == 100 * 2 * 128 - np.count_nonzero(dist[:100] == 0)
    np.testing.assert_allclose(got, want, atol=1e-6)
