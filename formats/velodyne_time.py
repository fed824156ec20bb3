"""Velodyne packet times: position packets (port 8308) and the decoder's time sources.

Position packet (512-byte UDP payload, VLP-16 / VLP-32C / Puck Hi-Res / VLS-128 manuals; the
HDL-32E has the same offsets for the fields read here): bytes 198-201 the µs since the top of
the hour (u32), 202 the PPS status (0 absent, 1 synchronizing, 2 locked, 3 error; 0 on the
HDL-32E), 206-333 the last NMEA sentence the sensor received (``$GPRMC``/``$GNRMC`` give the
UTC date and time of the fix). A position packet with a valid RMC sentence names the hour its
own µs stamp counts from, and so the absolute time of the data packets near it.

Time sources of :func:`formats.velodyne.read_velodyne_pcap` (``time_source``):

- ``"pcap"``: the capture (record) time of each data packet, with the host's receive jitter.
- ``"gps"``: the packet's µs-past-the-hour stamp in the hour named by the nearest position
  packet's RMC sentence, or without one the hour of the capture time (the sensor's clock is
  then assumed synchronised, by PPS, to the capture host's).
- ``"sensor"``: the µs stamps counted on across hours and mapped onto the capture clock by a
  straight-line fit (:func:`formats.sensor_clock.fit_to_capture`): for a free-running clock.
- ``"auto"`` (default): ``"gps"`` with position packets, else ``"gps"`` when the stamps agree
  with the capture times to a second, else ``"sensor"``. Either way no capture jitter; and
  when every capture time lies within the µs of its packet's stamp (no jitter at all: a
  simulated or re-stamped capture), the capture times, which keep their ns.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

import numpy as np

from formats.pcap import UdpIndex
from formats.sensor_clock import align_to_capture, fit_to_capture, place_in_hour, unwrap_hour

POSITION_PACKET_SIZE = 512
POSITION_PORT = 8308
TIME_SOURCES = ("auto", "gps", "sensor", "pcap")
_NMEA_AT = 206
_NMEA_LEN = 128
_RMC = re.compile(rb"\$G[PNL]RMC,(\d{6}(?:\.\d+)?),([AV]),([\d.]*),([NS]?),([\d.]*),([EW]?),[^,]*,[^,]*,(\d{6})")


@dataclass(eq=False)
class PositionPackets:
    """The position packets of a capture, in capture order.

    Attributes:
        capture_ns: ``(Q,) int64`` pcap record times.
        usec_since_hour: ``(Q,) int64`` the packets' own time stamps.
        pps_status: ``(Q,) uint8`` 0 absent, 1 synchronizing, 2 locked, 3 error.
        fix_ns: ``(Q,) int64`` UNIX ns (UTC) of the RMC fix, -1 without a valid RMC sentence.
        latitude_deg, longitude_deg: ``(Q,) float64`` the fix position, NaN without one.
    """

    capture_ns: np.ndarray
    usec_since_hour: np.ndarray
    pps_status: np.ndarray
    fix_ns: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray

    def __len__(self) -> int:
        return len(self.capture_ns)

    def absolute_ns(self) -> np.ndarray:
        """``(Q,) int64`` UNIX ns of each packet's own stamp in the hour of its fix, -1 without a fix."""
        valid = self.fix_ns >= 0
        return np.where(valid, place_in_hour(self.usec_since_hour, np.where(valid, self.fix_ns, 0)), -1)


def _parse_rmc(sentence: bytes) -> tuple[int, float, float]:
    """(fix UNIX ns or -1, latitude, longitude) of an RMC sentence."""
    m = _RMC.search(sentence)
    if m is None or m.group(2) != b"A":
        return -1, np.nan, np.nan
    hms, date = m.group(1).decode(), m.group(7).decode()
    try:
        day = dt.datetime.strptime(date + hms[:6], "%d%m%y%H%M%S").replace(tzinfo=dt.timezone.utc)
    except ValueError:
        return -1, np.nan, np.nan
    frac = float("0" + hms[6:]) if len(hms) > 6 else 0.0
    ns = int(day.timestamp()) * 1_000_000_000 + int(round(frac * 1e9))

    def angle(text: bytes, hemi: bytes, deg_digits: int) -> float:
        if not text:
            return np.nan
        v = float(text[:deg_digits]) + float(text[deg_digits:]) / 60.0
        return -v if hemi in (b"S", b"W") else v

    return ns, angle(m.group(3), m.group(4), 2), angle(m.group(5), m.group(6), 3)


def position_packets(index: UdpIndex, port: int | None = POSITION_PORT) -> PositionPackets:
    """The 512-byte position packets sent to ``port`` (None: any) in an indexed capture.

    Each distinct NMEA sentence is parsed once (the sensor repeats the last one until the next
    fix), so the Python work grows with the capture's seconds, not its packets."""
    udp = index.select(POSITION_PACKET_SIZE, port)
    rows = udp.array()
    b = rows[:, 198:202].astype(np.int64)
    usec = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16) | (b[:, 3] << 24)
    nmea = np.ascontiguousarray(rows[:, _NMEA_AT:_NMEA_AT + _NMEA_LEN])
    fix = np.full(len(rows), -1, np.int64)
    lat = np.full(len(rows), np.nan)
    lon = np.full(len(rows), np.nan)
    if len(rows):
        keys, inverse = np.unique(nmea.view(f"V{_NMEA_LEN}").ravel(), return_inverse=True)
        parsed = [_parse_rmc(k.tobytes()) for k in keys]
        fix, lat, lon = (np.asarray(col)[inverse.ravel()] for col in zip(*parsed))
    return PositionPackets(udp.timestamps_ns.copy(), usec, rows[:, 202].copy(), np.asarray(fix, np.int64),
                           np.asarray(lat, np.float64), np.asarray(lon, np.float64))


def position_packet(usec_since_hour: int, nmea: str = "", pps_status: int = 2) -> np.ndarray:
    """``(512,) uint8`` a position packet with this stamp, PPS status and NMEA sentence."""
    out = np.zeros(POSITION_PACKET_SIZE, np.uint8)
    out[198:202] = np.frombuffer(int(usec_since_hour).to_bytes(4, "little"), np.uint8)
    out[202] = pps_status
    raw = nmea.encode("ascii")[:_NMEA_LEN]
    out[_NMEA_AT:_NMEA_AT + len(raw)] = np.frombuffer(raw, np.uint8)
    return out


def packet_times(usec: np.ndarray, capture_ns: np.ndarray, source: str,
                 positions: PositionPackets | None) -> tuple[np.ndarray, str]:
    """``((P,) int64 UNIX ns, the source used)`` of data packets from their µs-past-the-hour
    stamps ``usec`` and capture times, by ``source`` (module docstring). The source used is
    ``"pcap"``, ``"gps_fix"`` (hour from position packets), ``"gps_capture"`` (hour from the
    capture time) or ``"sensor_fit"``."""
    if source not in TIME_SOURCES:
        raise ValueError(f"time_source must be one of {TIME_SOURCES}, got {source!r}")
    capture_ns = np.asarray(capture_ns, np.int64)
    if source == "pcap":
        return capture_ns.copy(), "pcap"
    if source == "sensor":
        return fit_to_capture(unwrap_hour(usec), capture_ns), "sensor_fit"
    times, used = _gps_times(usec, capture_ns, positions, source)
    if source == "auto" and len(times) and np.all((capture_ns >= times) & (capture_ns - times < 1000)):
        return capture_ns.copy(), "pcap"  # the capture times are the stamps to the ns: no jitter to remove
    return times, used


def _gps_times(usec: np.ndarray, capture_ns: np.ndarray, positions: PositionPackets | None,
               source: str) -> tuple[np.ndarray, str]:
    """The ``"gps"`` times (``"auto"``: or the sensor fit when the hour is not known)."""
    if positions is not None:
        absolute = positions.absolute_ns()
        ok = absolute >= 0
        if ok.any():
            # each data packet counts from the nearest (by capture time) position packet with a fix
            cap, abs_t, pos_usec = positions.capture_ns[ok], absolute[ok], positions.usec_since_hour[ok]
            order = np.argsort(cap, kind="stable")
            cap, abs_t, pos_usec = cap[order], abs_t[order], pos_usec[order]
            j = np.clip(np.searchsorted(cap, capture_ns), 1, len(cap)) - 1
            if len(cap) > 1:
                nxt = np.minimum(j + 1, len(cap) - 1)
                j = np.where(np.abs(cap[nxt] - capture_ns) < np.abs(capture_ns - cap[j]), nxt, j)
            since = (np.asarray(usec, np.int64) - pos_usec[j] + 1_800_000_000) % 3_600_000_000 - 1_800_000_000
            return place_in_hour(usec, abs_t[j] + since * 1000), "gps_fix"
    in_hour = place_in_hour(usec, capture_ns)
    if source == "gps":
        return in_hour, "gps_capture"
    times, synced = align_to_capture(in_hour, capture_ns)
    if synced:
        return times, "gps_capture"
    return fit_to_capture(unwrap_hour(usec), capture_ns), "sensor_fit"
