"""Ouster lidar packets (OS0/OS1/OS2/OSDome, 16-128 beams) from pcap/pcapng with the sensor's
metadata JSON: the decoder.

Layouts and metadata: :mod:`formats.ouster_metadata`. Every valid column (status bit set,
measurement id inside ``column_window``) yields a point per beam and return with a non-zero
range, at ``direction * range + offset`` from ouster-sdk's XYZ look-up table
(:meth:`OusterMetadata.xyz_lut`), in the sensor frame, which is the engine's lidar frame
(x forward, y left, z up; ``lidar_to_sensor_transform`` applied, the extrinsic not).

Columns: ``intensity`` the calibrated reflectivity, ``ring`` the beam (pixel row, 0 = the
top beam, as ouster-sdk and ouster-ros number them), ``return_index`` 0 for the first
(strongest) and 1 for the second return of the dual profile, ``time_offset_ns`` from the
column's time stamp; ``extra``: ``near_ir`` (uint16, photons) and, where the profile has it,
``signal`` (uint16).

Time (``time_source``): ``"auto"`` (default) the column time stamps as they are when they
agree with the capture times to a second (PTP or GPS synchronised), else mapped onto the
capture clock by a straight-line fit (free-running internal oscillator counts from power-up;
:mod:`formats.sensor_clock`); ``"sensor"`` the stamps as they are; ``"pcap"`` each packet's
capture time plus its columns' offsets from its first valid column.

Sweeps: a new sweep starts where the frame id changes; its time stamp is its earliest point.
Packets from another sensor (a serial number or init id differing from the metadata's; 0,
as ouster-sdk's packet writer leaves them, matches any) are dropped and counted; the packet
type is not checked (ouster-sdk writes 0 there).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.ouster_metadata import PROFILES, OusterMetadata, read_ouster_metadata
from formats.pcap import OK, CaptureReport, UdpPayloads, index_udp, sweeps_between, udp_pcap_bytes
from formats.sensor_clock import align_to_capture

TIME_SOURCES = ("auto", "sensor", "pcap")


@jit
def _u16(buf, pos):
    return np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)


@jit
def _u32(buf, pos):
    return _u16(buf, pos) | (_u16(buf, pos + 2) << 16)


@jit
def _decode(buf, offsets, layout, h, w, win_lo, win_hi, min_mm, max_mm, direction, offset, shift_ns,
            starts, xyz, refl, signal, nir, ring, rindex, time_ns):
    """Write the points of every packet one after the other (columns sized for every pixel and
    return of every packet), each packet's first row into ``starts``; returns the point count.
    ``layout``: legacy, cpp, column size, pixel size, returns, range offsets (2), range kind,
    reflectivity offsets (2), signal offsets (2), near-IR offset and scale
    (:data:`formats.ouster_metadata.PROFILES`)."""
    legacy, cpp, col_size, pixel, n_ret = layout[0], layout[1], layout[2], layout[3], layout[4]
    kind, nir_off, nir_scale = layout[7], layout[12], layout[13]
    mask = 0xFFFFF if kind == 0 else 0x7FFFF
    head = 16 if legacy else 12
    pos = 0
    for k in range(offsets.shape[0]):
        starts[k] = pos
        for c in range(cpp):
            col = offsets[k] + (0 if legacy else 32) + c * col_size
            status = _u32(buf, col + head + pixel * h) if legacy else _u16(buf, col + 10)
            m = _u16(buf, col + 8)
            if status & 1 == 0 or m >= w:
                continue
            if not ((win_lo <= m <= win_hi) if win_lo <= win_hi else (m >= win_lo or m <= win_hi)):
                continue
            t = (_u32(buf, col) | (_u32(buf, col + 4) << 32)) + shift_ns[k]
            for u in range(h):
                px = col + head + u * pixel
                for r in range(n_ret):
                    ro = px + layout[5 + r]
                    mm = ((_u16(buf, ro) & 0x7FFF) << 3) if kind == 2 else (_u32(buf, ro) & mask)
                    if mm == 0 or mm < min_mm or mm > max_mm:
                        continue
                    rm = mm * 0.001
                    for a in range(3):
                        xyz[pos, a] = direction[m, u, a] * rm + offset[m, u, a]
                    refl[pos] = buf[px + layout[8 + r]]
                    so = layout[10 + r]
                    signal[pos] = _u16(buf, px + so) if so >= 0 else 0
                    nir[pos] = (_u16(buf, px + nir_off) if nir_scale == 1 else np.int64(buf[px + nir_off]) * nir_scale)
                    ring[pos] = u
                    rindex[pos] = r
                    time_ns[pos] = t
                    pos += 1
    return pos


@dataclass
class OusterReport(CaptureReport):
    """:class:`~formats.pcap.CaptureReport` of an Ouster capture: ``packets`` are of the
    metadata's lidar packet size on its port; ``dropped`` adds ``prod_sn`` and ``init_id``;
    ``time_source`` is "sensor", "sensor_fit" or "pcap"."""


def _layout(meta: OusterMetadata) -> np.ndarray:
    pixel, n_ret, rng, kind, refl, sig, nir_off, nir_scale = PROFILES[meta.profile]
    return np.array([meta.legacy, meta.columns_per_packet, meta.column_size, pixel, n_ret, *rng, kind, *refl, *sig,
                     nir_off, nir_scale], np.int64)


def _columns(buf: np.ndarray, offsets: np.ndarray, meta: OusterMetadata) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(P, cpp)`` column time stamps, valid flags, and ``(P,)`` frame ids of the packets."""
    col = offsets[:, None] + (0 if meta.legacy else 32) + np.arange(meta.columns_per_packet)[None, :] * meta.column_size
    ts = np.zeros(col.shape, np.int64)
    for b in range(8):
        ts |= buf[col + b].astype(np.int64) << (8 * b)
    if meta.legacy:
        valid = (buf[col + 16 + PROFILES[meta.profile][0] * meta.pixels_per_column] & 1) == 1
        frame = buf[col[:, 0] + 10].astype(np.int64) | (buf[col[:, 0] + 11].astype(np.int64) << 8)
    else:
        valid = (buf[col + 10] & 1) == 1
        frame = buf[offsets + 2].astype(np.int64) | (buf[offsets + 3].astype(np.int64) << 8)
    return ts, valid, frame


def _packet_checks(buf: np.ndarray, offsets: np.ndarray, meta: OusterMetadata, dropped: dict[str, int]) -> np.ndarray:
    """``(P,) bool`` packets to decode; the others counted by reason."""
    alive = np.ones(len(offsets), bool)
    if meta.legacy:
        return alive

    def field(at: int, nbytes: int) -> np.ndarray:
        v = np.zeros(len(offsets), np.int64)
        for b in range(nbytes):
            v |= buf[offsets + at + b].astype(np.int64) << (8 * b)
        return v

    sn, init = field(7, 5), field(4, 3)
    checks = [("prod_sn", (sn == meta.prod_sn) | (sn == 0) | (meta.prod_sn == 0)),
              ("init_id", (init == meta.init_id) | (init == 0) | (meta.init_id == 0))]
    for reason, ok in checks:
        dropped[reason] = int(np.count_nonzero(alive & ~ok))
        alive &= ok
    return alive


def _shift_ns(col_ts: np.ndarray, valid: np.ndarray, capture_ns: np.ndarray, source: str) -> tuple[np.ndarray, str]:
    """``(P,) int64`` added to each packet's column stamps by ``time_source``, and the source used."""
    if source not in TIME_SOURCES:
        raise ValueError(f"time_source must be one of {TIME_SOURCES}, got {source!r}")
    first = np.where(valid.any(axis=1), col_ts[np.arange(len(col_ts)), valid.argmax(axis=1)], 0)
    has = valid.any(axis=1)
    shift = np.zeros(len(first), np.int64)
    if source == "sensor" or not has.any():
        return shift, "sensor"
    if source == "pcap":
        shift[has] = capture_ns[has] - first[has]
        return shift, "pcap"
    mapped, synced = align_to_capture(first[has], capture_ns[has])
    shift[has] = mapped - first[has]
    return shift, "sensor" if synced else "sensor_fit"


def _select(path: str, meta: OusterMetadata, port: int | None, data: bytes | None) -> UdpPayloads:
    """The capture's lidar packets; FormatError when it has records but none of them is one."""
    index = index_udp(path, data)
    port = meta.udp_port_lidar if port is None else port
    udp = index.select(meta.packet_size, port)
    if len(udp) == 0 and len(index.status):
        on_port = (index.status == OK) & ((index.ports == port) if port is not None else True)
        sizes, counts = np.unique(index.lengths[on_port], return_counts=True)
        seen = [f"{int(s)} B x{int(c)}" for s, c in sorted(zip(sizes, counts), key=lambda x: -x[1])[:4]]
        seen += [f"{reason} x{n}" for reason, n in udp.dropped.items() if n and reason != "payload_size"]
        raise FormatError(path, None, f"{meta.packet_size}-byte lidar packets ({meta.profile}, "
                                      f"{meta.pixels_per_column} pixels x {meta.columns_per_packet} columns)"
                                      f"{'' if port is None else f' on port {port}'}; the capture has "
                                      f"{', '.join(seen) or 'none'}")
    return udp


def read_ouster_pcap(
    path: str | os.PathLike,
    metadata: OusterMetadata | str | os.PathLike,
    *,
    time_source: str = "auto",
    min_range_m: float = 0.0,
    max_range_m: float = math.inf,
    port: int | None = None,
    data: bytes | None = None,
) -> tuple[list[Sweep], OusterReport]:
    """Decode every lidar packet of an Ouster capture into sweeps (one per frame id).

    Args:
        path: the pcap or pcapng file.
        metadata: an :class:`OusterMetadata` or the path of the sensor's metadata JSON.
        time_source: "auto", "sensor" or "pcap" (module docstring).
        min_range_m, max_range_m: keep points with range in this closed interval.
        port: UDP destination port of the lidar packets (None: the metadata's, else any).
        data: the capture's bytes, if already in memory.

    Returns:
        The sweeps (frame "lidar"; columns in the module docstring) and the report.

    Raises:
        FormatError: an unreadable capture or metadata, or lidar packets of another size than
            the metadata's profile and beam count give.
    """
    if not 0.0 <= min_range_m <= max_range_m:
        raise ValueError(f"need 0 <= min_range_m <= max_range_m, got {min_range_m}, {max_range_m}")
    meta = metadata if isinstance(metadata, OusterMetadata) else read_ouster_metadata(metadata)
    spath = os.fspath(path)
    udp = _select(spath, meta, port, data)
    buf = udp.buffer
    dropped = dict(udp.dropped)
    alive = _packet_checks(buf, udp.offsets, meta, dropped)
    offsets, capture = udp.offsets[alive], udp.timestamps_ns[alive]
    report = OusterReport(udp.records, len(udp), len(offsets), dropped, truncated_at=udp.truncated_at)
    col_ts, valid, frame = _columns(buf, offsets, meta)
    shift, report.time_source = _shift_ns(col_ts, valid, capture, time_source)
    direction, offset = _lut(meta)
    lo, hi = meta.column_window
    limits = (float(math.ceil(min_range_m * 1000 - 1e-9)), float(max_range_m * 1000))
    cap = len(offsets) * meta.columns_per_packet * meta.pixels_per_column * PROFILES[meta.profile][1]
    cols: dict[str, np.ndarray] = {
        "xyz": np.empty((cap, 3), np.float32), "intensity": np.empty(cap, np.float32),
        "signal": np.empty(cap, np.uint16), "near_ir": np.empty(cap, np.uint16), "ring": np.empty(cap, np.uint16),
        "return_index": np.empty(cap, np.uint8), "time_ns": np.empty(cap, np.int64)}
    starts = np.zeros(len(offsets), np.int64)
    n = _decode(buf, offsets, _layout(meta), meta.pixels_per_column, meta.columns_per_frame, lo, hi, *limits,
                direction, offset, shift, starts, *cols.values())
    sweeps = _split(frame, starts, n, cols, has_signal=PROFILES[meta.profile][5][0] >= 0)
    report.points, report.sweeps = n, len(sweeps)
    return sweeps, report


_LUTS: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


def _lut(meta: OusterMetadata) -> tuple[np.ndarray, np.ndarray]:
    """The metadata's XYZ look-up table, built once per distinct geometry (a few are kept)."""
    key = b"".join(np.ascontiguousarray(a, np.float64).tobytes() for a in (
        [meta.columns_per_frame, meta.pixels_per_column], meta.beam_altitude_deg, meta.beam_azimuth_deg,
        meta.beam_to_lidar_mm, meta.lidar_to_sensor_mm))
    if key not in _LUTS:
        if len(_LUTS) >= 8:
            _LUTS.pop(next(iter(_LUTS)))
        _LUTS[key] = meta.xyz_lut()
    return _LUTS[key]


def _split(frame: np.ndarray, starts: np.ndarray, n: int, cols: dict[str, np.ndarray], has_signal: bool) -> list[Sweep]:
    """One sweep per run of packets with the same frame id."""
    if len(frame) == 0:
        return []
    new = np.flatnonzero(np.concatenate([[True], frame[1:] != frame[:-1]]))
    return sweeps_between(np.append(starts[new], n), cols, ("near_ir", "signal") if has_signal else ("near_ir",))


def ouster_stream_times(udp: UdpPayloads, metadata: OusterMetadata, time_source: str = "auto") -> np.ndarray:
    """``(P,) int64`` the time of each selected packet's first valid column by ``time_source``
    over the whole stream (decode a window consistently: write its packets with these record
    times and decode it with ``time_source="pcap"``; packets without a valid column keep their
    capture time)."""
    col_ts, valid, _ = _columns(udp.buffer, udp.offsets, metadata)
    shift, _ = _shift_ns(col_ts, valid, udp.timestamps_ns, time_source)
    first = col_ts[np.arange(len(col_ts)), valid.argmax(axis=1)] if len(col_ts) else np.zeros(0, np.int64)
    return np.where(valid.any(axis=1), first + shift, udp.timestamps_ns)


def read_ouster_sweep(path: str | os.PathLike, index: int = 0, *, metadata: OusterMetadata | str | os.PathLike,
                      **options) -> Sweep:
    """One sweep of an Ouster capture (``index`` into :func:`read_ouster_pcap`'s list)."""
    sweeps, report = read_ouster_pcap(path, metadata, **options)
    if not -len(sweeps) <= index < len(sweeps):
        raise FormatError(path, None, f"sweep {index} of an Ouster capture; it decodes to {len(sweeps)} sweeps "
                                      f"({report.decoded} of {report.packets} packets)")
    return sweeps[index]


def _warmup() -> None:
    meta = OusterMetadata(16, 4, 16, (0, 15), "RNG19_RFL8_SIG16_NIR16", np.zeros(16), np.zeros(16), np.eye(4),
                          np.eye(4))
    packet = np.zeros((1, meta.packet_size), np.uint8)
    packet[0, 32 + 10] = 1  # column 0 valid
    packet[0, 32 + 12] = 100  # a 100 mm range
    read_ouster_pcap("<warmup>", meta, data=udp_pcap_bytes(packet, np.zeros(1, np.int64)))
