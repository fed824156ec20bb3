"""Kongsberg EM ``.all``: XYZ 88 soundings, raw range and angle 78, attitude (A), position (P).

Each datagram is ``uint32 length`` (bytes after this field), ``STX 0x02``, a type byte, the
EM model, date ``YYYYMMDD``, milliseconds since midnight, a counter and the serial number,
then the body, ``ETX 0x03`` and a 16-bit checksum of the bytes between STX and ETX.
The byte order is detected from the first datagram. Bodies are read with NumPy
structured views; nothing is copied per beam.

Counts are not believed unchecked: the beams of an XYZ 88 or raw 78 datagram, the entries of
an attitude datagram and the input text of a position datagram must end exactly where the
datagram does (before one optional spare byte and ETX). A position fix is invalid when the
latitude or longitude holds the unavailable value ``0x7FFFFFFF``, when it is (0, 0), or when
the GGA sentence it was decoded from reports fix quality 0 (no fix).

XYZ 88 soundings are in the levelled, heading-aligned vessel frame: ``x`` along, ``y``
across (starboard), ``z`` down from the transmit transducer; x/y are relative to the
active position sensor's reference. :func:`read_all_world` georeferences them with the
valid position fixes (interpolated at ping time under a stated extrapolation policy)
through :mod:`engine.georeference`. Water column (datagram 'k', ``.wcd`` files) is decoded
by :mod:`formats.water_column_all`.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
from dataclasses import dataclass, field

import numpy as np

from engine.geodesy import Origin
from engine.georeference import FIX_EXTRAPOLATED, FIX_IN_GAP, interpolate_fixes
from engine.pose_track import Extrapolation
from formats.errors import FormatError, load_source
from formats.kmall_sensors import plausible_position
from formats.sonar_world import PingPoses, SonarWorld, place_soundings

PathLike = str | os.PathLike
STX, ETX = 0x02, 0x03
TYPE_XYZ88, TYPE_RAW78, TYPE_ATTITUDE, TYPE_POSITION, TYPE_INSTALL = 0x58, 0x4E, 0x41, 0x50, 0x49
DECODED_TYPES = (TYPE_XYZ88, TYPE_RAW78, TYPE_ATTITUDE, TYPE_POSITION, TYPE_INSTALL)
_HEAD_LEN = 20  # length field + STX .. serial number
_TAIL_LEN = 3  # ETX + checksum
INVALID_DETECTION = 0x80  # detection-information bit 7: not a valid sounding
ACTIVE_POSITION_SYSTEM = 0x80  # position-system descriptor bit 7: the active system
UNAVAILABLE_I32 = 0x7FFFFFFF  # a 4-byte signed field with no value


def _dtype(fields: list[tuple[str, str]], order: str) -> np.dtype:
    return np.dtype([(name, order + code) for name, code in fields])


_XYZ_BEAM = [("z_m", "f4"), ("y_m", "f4"), ("x_m", "f4"), ("detection_window", "u2"), ("quality_factor", "u1"),
             ("incidence_adjust", "i1"), ("detection_info", "u1"), ("cleaning_info", "i1"), ("reflectivity", "i2")]
_RAW_TX = [("tilt_angle", "i2"), ("focus_range", "u2"), ("signal_length_s", "f4"), ("transmit_delay_s", "f4"),
           ("centre_frequency_hz", "f4"), ("absorption", "u2"), ("waveform", "u1"), ("sector", "u1"),
           ("bandwidth_hz", "f4")]
_RAW_RX = [("beam_angle", "i2"), ("tx_sector", "u1"), ("detection_info", "u1"), ("detection_window", "u2"),
           ("quality_factor", "u1"), ("d_corr", "i1"), ("two_way_travel_time_s", "f4"), ("reflectivity", "i2"),
           ("cleaning_info", "i1"), ("spare", "u1")]
_XYZ_PING = ("time_ns", "counter", "serial", "heading_deg", "sound_speed_m_s", "tx_depth_m", "offset")
_RAW_PING = ("time_ns", "counter", "serial", "sound_speed_m_s", "offset")
_ATT = [("dt_ms", "u2"), ("status", "u2"), ("roll", "i2"), ("pitch", "i2"), ("heave", "i2"), ("heading", "u2")]


@dataclass
class AllPings:
    """Per-ping ``(P,)`` and per-beam ``(N,)`` columns of one datagram kind (XYZ 88 or raw 78).

    ``ping`` holds ``time_ns int64``, ``counter``/``serial uint16`` and kind-specific
    ``float64`` values (XYZ 88: ``heading_deg``, ``sound_speed_m_s``, ``tx_depth_m``;
    raw 78: ``sound_speed_m_s``); ``start (P + 1,) int64`` splits the beams by ping;
    ``beam`` holds the decoded columns in SI units (XYZ 88: ``x_m, y_m, z_m`` float32,
    ``reflectivity_db``, ``quality_factor``, ``detection_info``; raw 78: ``beam_angle_deg``
    (re the rx array, positive port), ``two_way_travel_time_s``, ``tx_sector``, ...).
    """

    ping: dict[str, np.ndarray]
    start: np.ndarray
    beam: dict[str, np.ndarray]

    @property
    def num_pings(self) -> int:
        return len(self.start) - 1

    @property
    def ping_of_beam(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_pings, dtype=np.int32), np.diff(self.start))


@dataclass
class AllLog:
    """A decoded ``.all`` file: ``xyz`` (XYZ 88), ``raw`` (raw range and angle 78),
    ``attitude`` / ``position`` columns ``(K,)``, ``install`` (key → value text),
    ``counts`` per datagram type byte, ``skipped`` types not decoded, ``byte_order``,
    ``path`` (None for bytes). Per ping, ``ping["offset"]`` is the datagram's byte offset;
    ``position`` holds ``valid`` (bool, see the module docstring) and ``offset`` per fix."""

    xyz: AllPings
    raw: AllPings
    attitude: dict[str, np.ndarray]
    position: dict[str, np.ndarray]
    install: dict[str, str] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    skipped: dict[int, int] = field(default_factory=dict)
    byte_order: str = "<"
    path: str | os.PathLike | None = None


def epoch_ns(date: int, ms: int) -> int:
    """UNIX ns of a ``YYYYMMDD`` date and milliseconds since midnight; -1 for an invalid date."""
    try:
        day = _dt.date(date // 10000, date // 100 % 100, date % 100)
    except ValueError:
        return -1
    return (day - _dt.date(1970, 1, 1)).days * 86_400_000_000_000 + int(ms) * 1_000_000


def byte_order(buf: bytes, path) -> str:
    """``"<"`` or ``">"``: the byte order in which the first datagram's length and ETX agree."""
    for order in "<>":
        if len(buf) >= _HEAD_LEN + _TAIL_LEN:
            n = struct.unpack_from(order + "I", buf, 0)[0]
            if 16 <= n <= len(buf) - 4 and buf[4] == STX and buf[4 + n - _TAIL_LEN] == ETX:
                return order
    raise FormatError(path, 0, "a .all datagram (length, STX 0x02 ... ETX 0x03) at the start")


def index_datagrams(buf: bytes, path: PathLike | None = None, order: str = "<",
                    verify_checksum: bool = True) -> list[tuple[int, int, int]]:
    """``[(offset, length, type)]`` of every datagram; ``FormatError`` at the first bad one."""
    out = []
    o = 0
    end = len(buf)
    arr = np.frombuffer(buf, np.uint8)
    fmt = order + "I"
    csum = order + "H"
    while o < end:
        if o + 4 + 16 + _TAIL_LEN > end:
            raise FormatError(path, o, f"a datagram header, found {end - o} trailing bytes")
        n = struct.unpack_from(fmt, buf, o)[0]
        if n < 16 + _TAIL_LEN or o + 4 + n > end:
            raise FormatError(path, o, f"a datagram length within the file, found {n} with {end - o - 4} bytes left")
        if buf[o + 4] != STX or buf[o + 4 + n - _TAIL_LEN] != ETX:
            raise FormatError(path, o, "STX 0x02 at the datagram start and ETX 0x03 before its checksum")
        if verify_checksum:
            want = struct.unpack_from(csum, buf, o + 4 + n - 2)[0]
            got = int(arr[o + 5: o + 4 + n - _TAIL_LEN].sum(dtype=np.uint64)) & 0xFFFF
            if got != want:
                raise FormatError(path, o, f"checksum {want:#06x}, computed {got:#06x}")
        out.append((o, n, buf[o + 5]))
        o += 4 + n
    return out


class _Pings:
    def __init__(self) -> None:
        self.rows: list[dict] = []
        self.views: list[np.ndarray] = []

    def result(self, beam_fields: list[tuple[str, str]], convert, names: tuple[str, ...]) -> AllPings:
        start = np.zeros(len(self.rows) + 1, np.int64)
        np.cumsum([len(v) for v in self.views], out=start[1:])
        ping = {k: np.array([r[k] for r in self.rows], dtype=np.int64 if k in ("time_ns", "offset") else
                            (np.uint16 if k in ("counter", "serial") else np.float64)) for k in names}
        raw = {}
        for name, code in beam_fields:
            out = np.empty(int(start[-1]), np.dtype(code))
            for v, a, b in zip(self.views, start[:-1], start[1:]):
                out[a:b] = v[name]
            raw[name] = out
        return AllPings(ping, start, convert(raw))


def _xyz_beams(raw: dict) -> dict:
    return {
        "x_m": raw["x_m"], "y_m": raw["y_m"], "z_m": raw["z_m"],
        "reflectivity_db": raw["reflectivity"].astype(np.float32) * np.float32(0.1),
        "quality_factor": raw["quality_factor"], "detection_info": raw["detection_info"],
        "detection_window": raw["detection_window"],
    }


def _raw_beams(raw: dict) -> dict:
    return {
        "beam_angle_deg": raw["beam_angle"].astype(np.float32) * np.float32(0.01),
        "two_way_travel_time_s": raw["two_way_travel_time_s"], "tx_sector": raw["tx_sector"],
        "detection_info": raw["detection_info"], "quality_factor": raw["quality_factor"],
        "reflectivity_db": raw["reflectivity"].astype(np.float32) * np.float32(0.1),
    }


def read_all(source: PathLike | bytes, verify_checksum: bool = True) -> AllLog:
    """Decode a ``.all`` file (path or bytes). Bad input raises :class:`FormatError`."""
    path, buf = load_source(source)
    order = byte_order(buf, path)
    head = struct.Struct(order + "HIIHH")  # model, date, time_ms, counter, serial
    xyz_beam, raw_tx, raw_rx, att = (_dtype(f, order) for f in (_XYZ_BEAM, _RAW_TX, _RAW_RX, _ATT))
    xyz, raw = _Pings(), _Pings()
    att_rows: list[tuple[np.ndarray, int]] = []
    pos_rows: list[tuple] = []
    install: dict[str, str] = {}
    counts: dict[int, int] = {}
    skipped: dict[int, int] = {}
    for o, n, t in index_datagrams(buf, path, order, verify_checksum):
        counts[t] = counts.get(t, 0) + 1
        end = o + 4 + n - _TAIL_LEN
        _, date, ms, counter, serial = head.unpack_from(buf, o + 6)
        t_ns = epoch_ns(date, ms)
        if t_ns < 0 and t in DECODED_TYPES:
            raise FormatError(path, o + 8, f"a date YYYYMMDD, found {date}")
        b = o + _HEAD_LEN
        if t == TYPE_XYZ88:
            _need(path, b, 20, end, "XYZ 88 ping info")
            hd, ss, txd, nb = struct.unpack_from(order + "HHfH", buf, b)
            check_body_end(path, b + 8, b + 20 + nb * xyz_beam.itemsize, end, f"{nb} XYZ 88 beams")
            xyz.views.append(np.frombuffer(buf, xyz_beam, nb, b + 20))
            xyz.rows.append({"time_ns": t_ns, "counter": counter, "serial": serial, "heading_deg": hd * 0.01,
                             "sound_speed_m_s": ss * 0.1, "tx_depth_m": txd, "offset": o})
        elif t == TYPE_RAW78:
            _need(path, b, 16, end, "raw range and angle 78 ping info")
            ss, ntx, nrx = struct.unpack_from(order + "HHH", buf, b)
            rx_at = b + 16 + ntx * raw_tx.itemsize
            check_body_end(path, b + 2, rx_at + nrx * raw_rx.itemsize, end, f"{ntx} tx sectors and {nrx} rx beams")
            raw.views.append(np.frombuffer(buf, raw_rx, nrx, rx_at))
            raw.rows.append({"time_ns": t_ns, "counter": counter, "serial": serial, "sound_speed_m_s": ss * 0.1,
                             "offset": o})
        elif t == TYPE_ATTITUDE:
            _need(path, b, 2, end, "attitude entry count")
            m = struct.unpack_from(order + "H", buf, b)[0]
            # the entries, then the sensor system descriptor byte
            check_body_end(path, b, b + 2 + m * att.itemsize + 1, end, f"{m} attitude entries")
            att_rows.append((np.frombuffer(buf, att, m, b + 2), t_ns))
        elif t == TYPE_POSITION:
            _need(path, b, 18, end, "position data")
            lat, lon, fix, sog, cog, hd, desc, nin = struct.unpack_from(order + "iiHHHHBB", buf, b)
            check_body_end(path, b + 17, b + 18 + nin, end, f"a position input datagram of {nin} bytes")
            unavailable = UNAVAILABLE_I32 in (lat, lon) or _gga_without_fix(buf[b + 18: b + 18 + nin])
            if not unavailable and abs(lat) > 90 * 20_000_000:
                raise FormatError(path, b, f"a latitude within ±90° (or 0x7FFFFFFF, unavailable), found {lat / 2e7}")
            pos_rows.append((t_ns, lat / 2e7, lon / 1e7, fix * 0.01, sog * 0.01, cog * 0.01, hd * 0.01, desc,
                             not unavailable, o))
        elif t == TYPE_INSTALL:
            text = buf[b + 2: end].split(b"\0", 1)[0].decode("ascii", errors="replace")
            if not install:
                install = dict(kv.split("=", 1) for kv in text.split(",") if "=" in kv)
        else:
            skipped[t] = skipped.get(t, 0) + 1
    return AllLog(
        xyz=xyz.result(_XYZ_BEAM, _xyz_beams, _XYZ_PING), raw=raw.result(_RAW_RX, _raw_beams, _RAW_PING),
        attitude=_attitude(att_rows), position=_position(pos_rows), install=install,
        counts=counts, skipped=skipped, byte_order=order, path=path,
    )


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) before the datagram's ETX at byte {end}")


def check_body_end(path, count_at: int, body_end: int, etx: int, what: str) -> None:
    """The body a count implies must end at the ETX at ``etx``, or one spare byte before it;
    else :class:`FormatError` at the count's offset ``count_at``."""
    if not 0 <= etx - body_end <= 1:
        raise FormatError(path, count_at, f"{what} ending at the datagram's ETX (byte {etx}, or one spare byte "
                                          f"before), they end at byte {body_end}")


def _gga_without_fix(text: bytes) -> bool:
    """True for an NMEA GGA sentence whose fix quality (field 6) is 0: no position."""
    fields = bytes(text).split(b"*", 1)[0].split(b",")
    return fields[0].endswith(b"GGA") and len(fields) > 6 and fields[6].strip() == b"0"


def _attitude(rows: list[tuple[np.ndarray, int]]) -> dict[str, np.ndarray]:
    if not rows:
        return {k: np.zeros(0) for k in ("time_ns", "roll_deg", "pitch_deg", "heave_m", "heading_deg", "status")}
    e = np.concatenate([r[0] for r in rows])
    t0 = np.concatenate([np.full(len(r[0]), r[1], np.int64) for r in rows])
    return {
        "time_ns": t0 + e["dt_ms"].astype(np.int64) * 1_000_000,
        "roll_deg": e["roll"] * 0.01, "pitch_deg": e["pitch"] * 0.01,
        "heave_m": e["heave"] * 0.01, "heading_deg": e["heading"] * 0.01, "status": e["status"].astype(np.uint16),
    }


def _position(rows: list[tuple]) -> dict[str, np.ndarray]:
    names = ("time_ns", "latitude_deg", "longitude_deg", "fix_quality_m", "speed_m_s", "course_deg",
             "heading_deg", "descriptor", "valid", "offset")
    cols = list(zip(*rows)) if rows else [()] * len(names)
    types = {"time_ns": np.int64, "descriptor": np.int64, "offset": np.int64, "valid": bool}
    return {k: np.asarray(c, dtype=types.get(k, np.float64)) for k, c in zip(names, cols)}


def read_all_world(source: PathLike | bytes | AllLog, origin: Origin, include_invalid: bool = False,
                   extrapolate: Extrapolation = "none", max_extrapolation_s: float = 0.0,
                   max_fix_gap_s: float = 5.0) -> SonarWorld:
    """XYZ 88 soundings of the pings with a position near them, in the world ENU frame.

    The ping position is the active system's (descriptor bit 7; all systems if none is
    flagged) valid fixes interpolated linearly at the ping time
    (:func:`engine.georeference.interpolate_fixes`). A ping before the first or after the
    last fix is refused under ``extrapolate="none"`` (the default, as
    :class:`engine.pose_track.PoseTrack`); ``"hold"`` / ``"linear"`` place it within
    ``max_extrapolation_s`` of the span and mark its soundings ``pose_extrapolated``. A ping
    between fixes more than ``max_fix_gap_s`` apart is refused. Refused pings are listed in
    :attr:`SonarWorld.unplaced`. Heading from the XYZ 88 ping; depth below the waterline
    ``z + tx_depth``, the waterline at the origin's height. Soundings flagged invalid
    (detection-information bit 7) are dropped unless ``include_invalid``. A log without
    valid position fixes raises :class:`FormatError`.
    """
    log = source if isinstance(source, AllLog) else read_all(source)
    x = log.xyz
    poses = all_ping_poses(log, origin, extrapolate, max_extrapolation_s, max_fix_gap_s)
    keep = np.ones(len(x.beam["x_m"]), bool) if include_invalid else (x.beam["detection_info"] & INVALID_DETECTION) == 0
    return place_soundings(log.path, poses, x.start, x.beam["x_m"], x.beam["y_m"], x.beam["z_m"], keep,
                           x.beam["reflectivity_db"],
                           {"quality_factor": x.beam["quality_factor"], "detection_info": x.beam["detection_info"]},
                           origin)


def active_fixes(log: AllLog) -> np.ndarray:
    """``(K,) bool``: the valid fixes of the active position system (all systems if none is
    flagged active)."""
    pos = log.position
    active = (pos["descriptor"] & ACTIVE_POSITION_SYSTEM) != 0
    use = active if active.any() else np.ones(len(active), bool)
    return use & pos["valid"] & plausible_position(pos["latitude_deg"], pos["longitude_deg"])


def all_ping_poses(log: AllLog, origin: Origin, extrapolate: Extrapolation = "none",
                   max_extrapolation_s: float = 0.0, max_fix_gap_s: float = 5.0) -> PingPoses:
    """The XYZ 88 pings' poses for :func:`formats.sonar_world.place_soundings` (see
    :func:`read_all_world`)."""
    x, pos = log.xyz, log.position
    t = x.ping["time_ns"]
    use = active_fixes(log)
    if not use.any():
        raise FormatError(log.path, None, f"at least one valid position fix of the active system "
                                          f"({len(pos['time_ns'])} position datagrams)")
    lat, lon, status = interpolate_fixes(
        pos["time_ns"][use], pos["latitude_deg"][use], pos["longitude_deg"][use], t, extrapolate,
        round(max_extrapolation_s * 1e9), round(max_fix_gap_s * 1e9))
    fix_t = pos["time_ns"][use]
    unplaced = []
    for i in np.flatnonzero(status < 0):
        if status[i] == FIX_IN_GAP:
            why = f"no valid position fix within {max_fix_gap_s} s (between fixes more than that apart)"
        else:
            off = (fix_t.min() - t[i]) if t[i] < fix_t.min() else (t[i] - fix_t.max())
            side = "before the first" if t[i] < fix_t.min() else "after the last"
            why = (f"{off / 1e9:.3f} s {side} valid position fix (extrapolate={extrapolate!r}, "
                   f"max_extrapolation_s={max_extrapolation_s})")
        unplaced.append((int(i), why))
    return PingPoses(lat, lon, x.ping["heading_deg"], np.full(len(t), origin.alt_m), -x.ping["tx_depth_m"], t,
                     x.ping["offset"], status >= 0, status == FIX_EXTRAPOLATED, unplaced)
