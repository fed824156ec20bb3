"""Hesai Pandar XT32, QT128 and AT128 packets from pcap/pcapng with the unit's angle
correction: the decoder.

Packets (UDP payloads, little-endian; Hesai user manuals' "point cloud data packet"): a 6-byte
pre-header (``0xEE 0xFF``, protocol major and minor: 6.1 XT32, 3.2 QT128, 4.3 AT128), a 6-byte
header (channels, blocks, first block's return, distance unit in mm, returns, flags: 0x01
sequence number, 0x04 functional safety, 0x08 cyber security, 0x10 confidence byte), the
blocks (encoder azimuth u16 in 0.01°, AT128 also a fine azimuth u8 in 1/256 of it, then per
channel distance u16, reflectivity u8 and, where present, confidence u8), then the tail (XT32:
return mode @10, UTC @13, µs @19; QT128 after a body CRC and optional safety block: return
mode @12, UTC @15, µs @21; AT128 after a body CRC: µs @20, return mode @24, UTC @26). The UTC
is year, month, day, hour, minute, second (XT32/QT128 years from 2000, AT128 from 1900;
a zero year byte: bytes 2-5 are big-endian UNIX seconds).

Geometry in Hesai's frame (y forward, x right, z up): ``x = d cos ε sin α``, ``y = d cos ε cos α``,
``z = d sin ε``; XT32 / QT128: ``α`` the block azimuth plus the channel's azimuth offset, ``ε``
its elevation (:class:`formats.hesai_calibration.AngleCorrection`); AT128: the mirror field
holding the block azimuth ``A`` gives ``α = 2 (A - start) - azimuth[ch] + adjust_α(ch, A)``,
``ε = elevation[ch] + adjust_ε(ch, A)`` with the adjustments interpolated between the 2°
steps and rounded (:class:`formats.hesai_calibration.AT128Correction`). Points are returned
in the engine's lidar frame: x forward (Hesai y), y left (-Hesai x), z up.

Time: the packet's UTC + µs stamp, plus the XT32 block's offset, ``5.632 µs + 50 µs × (block − 7)``
(dual return: per block pair), and the channel's, ``0.368 + 1.512 × channel`` µs (the offsets of
Hesai's own PandarGeneral SDK, which Autoware's nebula driver uses too);
QT128 and AT128 points take their packet's time (as Hesai's SDK) unless ``firetime_us`` gives
per-channel offsets. ``time_source``: "auto" (the stamps, or fitted to the capture clock when
they disagree with it by over a second; :mod:`formats.sensor_clock`), "sensor" or "pcap".

Returns: ``return_index`` 0 / 1 the first / second block of a dual-return pair (which returns
those are: ``report.return_mode``, 0x39 last+strongest, 0x3b first+last...). Sweeps: a new
one where the block azimuth wraps (XT32, QT128) or the mirror field changes (AT128).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.hesai_calibration import (
    ADJUST_STEPS,
    AngleCorrection,
    AT128Correction,
    read_angle_correction_csv,
    read_at128_correction,
)
from formats.pcap import CaptureReport, UdpPayloads, index_udp, sweeps_between, udp_pcap_bytes
from formats.sensor_clock import align_to_capture

MODELS = {(6, 1): "XT32", (3, 2): "QT128", (4, 3): "AT128"}
TIME_SOURCES = ("auto", "sensor", "pcap")
_FULL = 36000 * 256  # AT128 angle units per turn


@dataclass(frozen=True)
class _Layout:
    model: str
    channels: int
    blocks: int
    az_bytes: int
    unit: int
    dist_unit_m: float
    returns: int
    tail: int  # offset of the tail fields' base
    size: int

    @property
    def block_size(self) -> int:
        return self.az_bytes + self.channels * self.unit


def _layout(p: np.ndarray, path: str) -> _Layout:
    """The packet layout from one packet's pre-header and header."""
    model = MODELS.get((int(p[2]), int(p[3])))
    if bytes(p[:2]) != b"\xee\xff" or model is None:
        raise FormatError(path, None, f"a Hesai packet (ee ff, protocol 6.1 XT32, 3.2 QT128 or 4.3 AT128), got "
                                      f"{bytes(p[:4]).hex()}")
    channels, blocks, unit_mm, returns, flags = int(p[6]), int(p[7]), int(p[9]), int(p[10]), int(p[11])
    at128, qt = model == "AT128", model == "QT128"
    unit = 3 if qt and not flags & 0x10 else 4
    body_end = 12 + blocks * ((3 if at128 else 2) + channels * unit)
    if model == "XT32":
        tail, size = body_end, body_end + 28
    else:
        tail = body_end + 4 + (17 if qt and flags & 0x04 else 0)
        size = tail + (26 if qt else 32) + 4 * (flags & 1) + 4 + (32 if flags & 0x08 else 0)
    return _Layout(model, channels, blocks, 3 if at128 else 2, unit, unit_mm / 1000.0, returns, tail, size)


def _tail_fields(rows: np.ndarray, lay: _Layout) -> tuple[np.ndarray, np.ndarray]:
    """``((P,) int64 UNIX ns of the packet stamps, (P,) uint8 return mode)``."""
    mode_at, utc_at, usec_at = (lay.tail + k for k in {"XT32": (10, 13, 19), "QT128": (12, 15, 21),
                                                         "AT128": (24, 26, 20)}[lay.model])
    mode = rows[:, mode_at].copy()
    utc = rows[:, utc_at:utc_at + 6].astype(np.int64)
    usec = rows[:, usec_at:usec_at + 4].copy().view("<u4")[:, 0].astype(np.int64)
    year = utc[:, 0] + (1900 if lay.model == "AT128" else 2000)
    date = (np.array(year - 1970, "datetime64[Y]") + (np.maximum(utc[:, 1], 1) - 1).astype("timedelta64[M]")).astype(
        "datetime64[D]") + (np.maximum(utc[:, 2], 1) - 1).astype("timedelta64[D]")
    secs = date.astype(np.int64) * 86400 + utc[:, 3] * 3600 + utc[:, 4] * 60 + utc[:, 5]
    unix = (utc[:, 2] << 24) | (utc[:, 3] << 16) | (utc[:, 4] << 8) | utc[:, 5]
    secs = np.where(utc[:, 0] == 0, unix, secs)
    return secs * 1_000_000_000 + usec * 1000, mode


@jit
def _decode(buf, offsets, packet_ns, at128, channels, blocks, az_bytes, unit, dual, dist_unit, sin_el, cos_el,
            az_off_deg, starts_f, ends_f, at_az, at_el, adj_az, adj_el, block_ns, fire_ns,
            starts, xyz, refl, ring, rindex, time_ns, block_key):
    """Write every point (columns sized for every channel of every block), each (packet, block)'s
    first row into ``starts`` and its sweep key (azimuth, or AT128 mirror field) into
    ``block_key``; returns the point count."""
    pos = 0
    deg = math.pi / 180.0
    for k in range(offsets.shape[0]):
        for b in range(blocks):
            starts[k, b] = pos
            base = offsets[k] + 12 + b * (az_bytes + channels * unit)
            az16 = np.int64(buf[base]) | (np.int64(buf[base + 1]) << 8)
            block_key[k, b] = az16
            field = -1
            a_full = az16 * 256
            i0 = np.int64(0)
            w = 0.0
            if at128:
                a_full += np.int64(buf[base + 2])
                for f in range(starts_f.shape[0]):
                    span = (ends_f[f] - starts_f[f] + _FULL) % _FULL
                    if ((a_full - starts_f[f] + _FULL) % _FULL + (ends_f[f] - a_full + _FULL) % _FULL) == span:
                        field = f
                        break
                block_key[k, b] = field
                if field < 0:
                    continue
                i0 = a_full // (200 * 256)
                w = (a_full - i0 * 200 * 256) / (200.0 * 256.0)
            t_block = packet_ns[k] + block_ns[b // 2 if dual else b]
            for ch in range(channels):
                px = base + az_bytes + ch * unit
                raw = np.int64(buf[px]) | (np.int64(buf[px + 1]) << 8)
                if raw == 0:
                    continue
                d = raw * dist_unit
                if at128:
                    j = ch * ADJUST_STEPS + i0
                    j1 = min(j + 1, adj_az.shape[0] - 1)  # past a channel's 180th step: the next one's first
                    da = (1.0 - w) * adj_az[j] + w * adj_az[j1]
                    de = (1.0 - w) * adj_el[j] + w * adj_el[j1]
                    da = math.floor(da + 0.5) if da >= 0 else -math.floor(-da + 0.5)
                    de = math.floor(de + 0.5) if de >= 0 else -math.floor(-de + 0.5)
                    el_u = (at_el[ch] + np.int64(de) * 256 + _FULL) % _FULL
                    az_u = ((a_full - starts_f[field] + _FULL) % _FULL * 2 - at_az[ch] + np.int64(da) * 256) % _FULL
                    el = 2.0 * math.pi * el_u / _FULL
                    az = 2.0 * math.pi * az_u / _FULL
                    se, ce = math.sin(el), math.cos(el)
                else:
                    az = (az16 * 0.01 + az_off_deg[ch]) * deg
                    se, ce = sin_el[ch], cos_el[ch]
                xy = d * ce
                xyz[pos, 0] = xy * math.cos(az)  # Hesai y (forward)
                xyz[pos, 1] = -xy * math.sin(az)  # minus Hesai x (right)
                xyz[pos, 2] = d * se
                refl[pos] = buf[px + 2]
                ring[pos] = ch
                rindex[pos] = b % 2 if dual else 0
                time_ns[pos] = t_block + fire_ns[ch]
                pos += 1
    return pos


@dataclass
class HesaiReport(CaptureReport):
    """:class:`~formats.pcap.CaptureReport` of a Hesai capture: ``dropped`` adds ``header``;
    ``time_source`` is "sensor", "sensor_fit" or "pcap"; ``model`` and ``return_mode`` (the
    tail byte)."""

    model: str = ""
    return_mode: int = 0


def _correction(correction, lay: _Layout, path: str):
    if isinstance(correction, (str, os.PathLike)):
        correction = (read_at128_correction(correction) if lay.model == "AT128"
                      else read_angle_correction_csv(correction))
    want = AT128Correction if lay.model == "AT128" else AngleCorrection
    if not isinstance(correction, want):
        raise FormatError(path, None, f"an {want.__name__} for the {lay.model}, got {type(correction).__name__}")
    if correction.channels != lay.channels:
        raise FormatError(path, None, f"a correction of {lay.channels} channels for the {lay.model}, "
                                      f"it has {correction.channels}")
    return correction


def read_hesai_pcap(
    path: str | os.PathLike,
    correction: AngleCorrection | AT128Correction | str | os.PathLike,
    *,
    time_source: str = "auto",
    firetime_us: np.ndarray | None = None,
    port: int | None = None,
    data: bytes | None = None,
) -> tuple[list[Sweep], HesaiReport]:
    """Decode every XT32 / QT128 / AT128 data packet of a capture into sweeps.

    Args:
        path: the pcap or pcapng file.
        correction: the unit's angle correction (an object of :mod:`formats.hesai_calibration`,
            or the path of its CSV, or of the AT128's ``.dat``).
        time_source: "auto", "sensor" or "pcap" (module docstring).
        firetime_us: ``(L,)`` per-channel firing offsets (default: the XT32 manual's, 0 for the others).
        port: UDP destination port of the data packets (None: any).
        data: the capture's bytes, if already in memory.

    Raises:
        FormatError: no Hesai data packet, an unknown protocol, a correction of another model
            or channel count. Packets whose header differs from the first one's are dropped.
    """
    if time_source not in TIME_SOURCES:
        raise ValueError(f"time_source must be one of {TIME_SOURCES}, got {time_source!r}")
    spath = os.fspath(path)
    index = index_udp(spath, data)
    udp = index.select(None, port)
    rows = udp.array()
    if len(rows) == 0 or rows.shape[1] < 12:
        raise FormatError(spath, None, "UDP datagrams of a Hesai XT32, QT128 or AT128 (none of 12 bytes or more)")
    lay = _layout(rows[0], spath)
    dropped = dict(udp.dropped)
    ok = (rows.shape[1] == lay.size) & np.all(rows[:, :12] == rows[0, :12], axis=1)
    dropped["header"] = int(np.count_nonzero(~ok))
    if lay.size != rows.shape[1]:
        raise FormatError(spath, None, f"{lay.size}-byte {lay.model} packets (from the header: {lay.channels} "
                                      f"channels, {lay.blocks} blocks), the capture's are {rows.shape[1]} bytes")
    rows, offsets, capture = rows[ok], udp.offsets[ok], udp.timestamps_ns[ok]
    cor = _correction(correction, lay, spath)
    stamps, modes = _tail_fields(rows, lay)
    report = HesaiReport(udp.records, len(udp), len(rows), dropped, model=lay.model,
                         return_mode=int(modes[0]) if len(modes) else 0, truncated_at=udp.truncated_at)
    packet_ns, report.time_source = _times(stamps, capture, time_source)
    dual = lay.returns == 2
    xt = lay.model == "XT32"
    groups = lay.blocks // 2 if dual else lay.blocks
    block_ns = np.rint(((np.arange(groups) - (groups - 1)) * 50.0 + 5.632) * 1000).astype(np.int64) if xt \
        else np.zeros(groups, np.int64)
    fire = (0.368 + 1.512 * np.arange(lay.channels)) if firetime_us is None and xt else (
        np.zeros(lay.channels) if firetime_us is None else np.asarray(firetime_us, np.float64))
    if fire.shape != (lay.channels,) or not np.all(np.isfinite(fire)):
        raise ValueError(f"firetime_us must be {lay.channels} finite numbers, got shape {fire.shape}")
    at128 = lay.model == "AT128"
    empty_i, empty_f = np.zeros(2, np.int64), np.zeros(lay.channels)
    el = np.radians(cor.elevation_deg) if not at128 else empty_f
    cap = len(rows) * lay.blocks * lay.channels
    cols: dict[str, np.ndarray] = {
        "xyz": np.empty((cap, 3), np.float32), "intensity": np.empty(cap, np.float32),
        "ring": np.empty(cap, np.uint16), "return_index": np.empty(cap, np.uint8), "time_ns": np.empty(cap, np.int64)}
    starts = np.zeros((len(rows), lay.blocks), np.int64)
    key = np.zeros((len(rows), lay.blocks), np.int64)
    n = _decode(udp.buffer, np.ascontiguousarray(offsets), packet_ns, at128, lay.channels, lay.blocks, lay.az_bytes,
                lay.unit, dual, lay.dist_unit_m, np.sin(el), np.cos(el),
                empty_f if at128 else cor.azimuth_deg, *((cor.start_frame, cor.end_frame, cor.azimuth, cor.elevation,
                                                          cor.azimuth_adjust, cor.elevation_adjust) if at128
                                                         else (empty_i,) * 6),
                block_ns, np.rint(fire * 1000).astype(np.int64), starts, *cols.values(), key)
    sweeps = _split(starts.ravel(), key.ravel(), n, cols, at128)
    report.points, report.sweeps = n, len(sweeps)
    return sweeps, report


def hesai_stream_times(udp: UdpPayloads, time_source: str = "auto") -> np.ndarray:
    """``(P,) int64`` each selected packet's time by ``time_source`` over the whole stream (decode
    a window consistently: write its packets with these record times and decode it with
    ``time_source="pcap"``)."""
    rows = udp.array()
    if len(rows) == 0:
        return np.zeros(0, np.int64)
    stamps, _ = _tail_fields(rows, _layout(rows[0], udp.path))
    return _times(stamps, udp.timestamps_ns, time_source)[0]


def _times(stamps: np.ndarray, capture: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    if source == "sensor":
        return stamps, "sensor"
    if source == "pcap":
        return capture.copy(), "pcap"
    times, synced = align_to_capture(stamps, capture)
    return times, "sensor" if synced else "sensor_fit"


def _split(starts: np.ndarray, key: np.ndarray, n: int, cols: dict[str, np.ndarray], at128: bool) -> list[Sweep]:
    """Sweeps between blocks whose azimuth wraps (XT32, QT128) or whose mirror field changes (AT128)."""
    if len(starts) == 0:
        return []
    if at128:
        valid = key >= 0
        starts, key = starts[valid], key[valid]
        new = np.concatenate([[True], key[1:] != key[:-1]]) if len(key) else np.zeros(0, bool)
    else:
        new = np.concatenate([[True], np.diff(key) < -18000])
    return sweeps_between(np.append(starts[new], n), cols)


def _warmup() -> None:
    packet = np.zeros((1, 1080), np.uint8)
    packet[0, :12] = [0xEE, 0xFF, 6, 1, 0, 0, 32, 8, 0, 4, 1, 1]
    packet[0, 12:14] = [1, 0]
    packet[0, 14] = 1  # one return
    cor = AngleCorrection(np.zeros(32), np.zeros(32))
    read_hesai_pcap("<warmup>", cor, data=udp_pcap_bytes(packet, np.zeros(1, np.int64)))
