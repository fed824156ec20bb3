"""pcapng captures: dpkt's writer and hand-built blocks (both byte orders, several sections and
interfaces, time resolutions and offsets, skipped and time-less blocks) read as the same
packets as a classic pcap; a damaged block structure raises FormatError at its offset."""

from __future__ import annotations

import io
import struct

import dpkt
import numpy as np
import pytest

from formats.errors import FormatError
from formats.pcap import index_udp, read_udp_payloads, udp_pcap_bytes
from formats.velodyne import read_velodyne_pcap
from formats.velodyne_writer import Firings, velodyne_packets

T0 = 1_700_000_000_123_456_789


def _frames(n: int, size: int = 1206, seed: int = 0) -> tuple[np.ndarray, list[bytes]]:
    """``n`` random UDP payloads and their Ethernet frames (from the classic pcap writer)."""
    payloads = np.random.default_rng(seed).integers(0, 256, (n, size)).astype(np.uint8)
    data = udp_pcap_bytes(payloads, np.zeros(n, np.int64))
    rec = 16 + 42 + size
    return payloads, [data[24 + k * rec + 16:24 + (k + 1) * rec] for k in range(n)]


def _block(btype: int, body: bytes, big: bool = False) -> bytes:
    """A pcapng block: type, total length, body padded to 4 bytes, total length."""
    o = ">" if big else "<"
    body = body + bytes(-len(body) % 4)
    n = len(body) + 12
    return struct.pack(o + "II", btype, n) + body + struct.pack(o + "I", n)


def _shb(big: bool = False) -> bytes:
    o = ">" if big else "<"
    return _block(0x0A0D0D0A, struct.pack(o + "IHHq", 0x1A2B3C4D, 1, 0, -1), big)


def _idb(big: bool = False, link: int = 1, tsresol: int | None = None, tsoffset_s: int | None = None) -> bytes:
    o = ">" if big else "<"
    opts = b""
    if tsresol is not None:
        opts += struct.pack(o + "HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if tsoffset_s is not None:
        opts += struct.pack(o + "HHq", 14, 8, tsoffset_s)
    if opts:
        opts += struct.pack(o + "HH", 0, 0)
    return _block(1, struct.pack(o + "HHI", link, 0, 65535) + opts, big)


def _epb(frame: bytes, ts_units: int, iface: int = 0, big: bool = False) -> bytes:
    o = ">" if big else "<"
    return _block(6, struct.pack(o + "IIIII", iface, ts_units >> 32, ts_units & 0xFFFFFFFF, len(frame), len(frame))
                  + frame, big)


def test_dpkt_pcapng_reads_as_the_classic_pcap():
    payloads, frames = _frames(6)
    ts = T0 + np.arange(6) * 1_000_123
    f = io.BytesIO()
    w = dpkt.pcapng.Writer(f, snaplen=65535, linktype=1)
    for fr, t in zip(frames, ts):
        w.writepkt(fr, ts=int(t) / 1e9)
    u = read_udp_payloads("<ng>", 1206, data=f.getvalue())
    assert u.records == 6 and len(u) == 6 and sum(u.dropped.values()) == 0
    np.testing.assert_array_equal(u.array(), payloads)
    # dpkt writes whole µs (from float seconds)
    assert np.all(u.timestamps_ns % 1000 == 0) and np.all(np.abs(u.timestamps_ns - ts) < 1000)


def test_sections_byte_orders_resolutions_and_offsets():
    """A little-endian section (µs) then a big-endian one with two interfaces (ns with an offset
    of -3 s; 2^-20 s units on raw IPv4), with blocks to skip and a time-less Simple Packet Block."""
    payloads, frames = _frames(5)
    ts = T0 + np.arange(5) * 7_777_777
    raw_ip = frames[4][14:]  # link type 101: the IPv4 datagram alone
    us = ts // 1000
    data = (_shb() + _idb() + _epb(frames[0], int(us[0])) + _block(4, b"\0" * 8) + _epb(frames[1], int(us[1]))
            + _shb(True) + _idb(True, tsresol=9, tsoffset_s=-3) + _idb(True, link=101, tsresol=0x80 | 20)
            + _block(5, b"\0" * 16, True) + _epb(frames[2], int(ts[2]) + 3 * 10**9, big=True)
            + _epb(frames[3], int(ts[3]) + 3 * 10**9, 0, True)
            + _epb(raw_ip, int(ts[4]) * 2**20 // 10**9, 1, True)
            + _block(3, struct.pack(">I", len(frames[0])) + frames[0], True))
    idx = index_udp("<ng>", data)
    u = idx.select(1206)
    assert u.records == 6 and u.dropped["no_timestamp"] == 1
    np.testing.assert_array_equal(u.array(), payloads)
    np.testing.assert_array_equal(u.timestamps_ns[:2], us[:2] * 1000)
    np.testing.assert_array_equal(u.timestamps_ns[2:4], ts[2:4])
    assert abs(int(u.timestamps_ns[4]) - int(ts[4])) <= 954  # one 2^-20 s unit


def test_velodyne_decodes_pcapng_as_pcap():
    s = 24 * 30
    firings = Firings(T0 + np.arange(s, dtype=np.int64) * 55_296, np.linspace(0, 60, s),
                      np.random.default_rng(1).uniform(1, 50, (s, 16)))
    packets, ts = velodyne_packets(firings, "VLP-16")
    _, frames = _frames(0)
    classic = udp_pcap_bytes(packets, ts, nanosecond=True)
    rec = 16 + 42 + 1206
    ng = _shb() + _idb(tsresol=9) + b"".join(_epb(classic[24 + k * rec + 16:24 + (k + 1) * rec], int(t))
                                             for k, t in enumerate(ts))
    a, rep_a = read_velodyne_pcap("<pcap>", data=classic)
    b, rep_b = read_velodyne_pcap("<pcapng>", data=ng)
    assert rep_b.decoded == rep_a.decoded == 30 and len(a) == len(b) > 0
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.xyz, y.xyz)
        np.testing.assert_array_equal(x.time_offset_ns, y.time_offset_ns)
        assert x.timestamp_ns == y.timestamp_ns


def test_truncated_last_block_is_counted():
    _, frames = _frames(3)
    data = _shb() + _idb() + _epb(frames[0], 1) + _epb(frames[1], 2)
    cut = len(data) + 40
    data = data + _epb(frames[2], 3)[:40]
    u = read_udp_payloads("<ng>", 1206, data=data)
    assert len(u) == 2 and u.records == 3 and u.dropped["truncated_record"] == 1 and u.truncated_at == cut - 40


@pytest.mark.parametrize("case, offset, what", [
    ("bom", 8, "byte-order magic"),
    ("length", 4 + 28, "multiple of 4"),
    ("trailer", 28 + 20 - 4, "trailing total length"),
    ("interface", 28 + 20, "declared interface"),
    ("caplen", 28 + 20, "captured length"),
    ("option", 28 + 16, "options inside it"),
])
def test_damaged_pcapng_raises(case, offset, what):
    _, (frame,) = _frames(1)
    shb, idb, epb = _shb(), _idb(), _epb(frame, 5)
    if case == "bom":
        data = shb[:8] + b"\x00\x00\x00\x00" + shb[12:] + idb
    elif case == "length":
        data = shb + idb[:4] + struct.pack("<I", 22) + idb[8:]
    elif case == "trailer":
        data = shb + idb[:-4] + struct.pack("<I", 24) + epb
    elif case == "interface":
        data = shb + idb + _epb(frame, 5, iface=1)
    elif case == "caplen":
        data = shb + idb + epb[:20] + struct.pack("<I", 5000) + epb[24:]
    else:  # an option longer than the block
        data = shb + _block(1, struct.pack("<HHI", 1, 0, 65535) + struct.pack("<HH", 9, 200) + b"\x06\0\0\0")
    with pytest.raises(FormatError) as e:
        read_udp_payloads("bad.pcapng", 1206, data=data)
    assert e.value.offset == offset and what in e.value.expected and e.value.path == "bad.pcapng"
