"""Kongsberg KMALL: #MRZ soundings, #SKM attitude/position, #SPO position, #IIP install text.

Reading indexes the datagram offsets once (one small header unpack per datagram), then
decodes each sub-struct at the sizes the file states (``numBytes*`` fields), so datagram
versions 0–3 parse and unknown trailing fields are skipped. Soundings and sensor samples
are read with NumPy structured views over the file bytes (``np.frombuffer``, no per-sounding
Python). Multi-part ``#MRZ``/``#MWC`` datagrams (``numOfDgms > 1``) are re-joined; one
whose parts do not all arrive is an error (or a ``corrupt`` entry with ``recover``).

Nothing a size field says is believed unchecked: an ``#MRZ``'s soundings and seabed-image
samples must end exactly at the datagram's end and every detection type must be 0–2;
``#SKM`` samples must fill their datagram and each start with ``#KMB``
(:mod:`formats.kmall_sensors`, which also holds the sensor validity flags).

Frames: ``#MRZ`` x/y/z are metres from the vessel reference point in Kongsberg's surface
coordinate system (SCS): x forward along the heading, y starboard, z down, levelled (roll,
pitch, ray bending and lever arms already applied). :meth:`MrzPings.ping_sweep` converts
them to the ego convention (x forward, y left, z up); :func:`read_kmall_world` places them
in the scene's ENU world frame through :mod:`engine.georeference`.

Water column (``#MWC``) is decoded by :mod:`formats.water_column_kmall`.

The writer produces ``#IIP``, ``#SKM`` (version 1, 132-byte samples) and ``#MRZ`` (version
3, one tx sector, no seabed image) datagrams, split into partitions on request.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.geodesy import Origin
from engine.georeference import vessel_to_ego
from engine.sweep import Sweep
from formats.errors import FormatError, load_source
from formats.kmall_sensors import (
    UNAVAILABLE_DEG,
    SkmSamples,
    SpoSamples,
    skm_body,
    skm_result,
    skm_samples,
    spo_result,
    spo_row,
)
from formats.sonar_world import PingPoses, SonarWorld, place_soundings

PathLike = str | os.PathLike

_HEADER = struct.Struct("<I4sBBHII")  # numBytesDgm, dgmType, dgmVersion, systemID, echoSounderID, sec, nanosec
_TYPE_RE = re.compile(rb"#[A-Z]{3}")
_MIN_DGM = _HEADER.size + 4  # header + trailing length
DETECTION_REJECTED = 2
SENSOR_INVALID = 1  # #MRZ posSensorStatus / attitudeSensorStatus: 0 valid, 1 invalid, 2 reduced performance

# #MRZ sub-structs: minimum sizes (version 0) and the offsets of the fields read.
_CMN = struct.Struct("<HH8B")  # numBytesCmnPart, pingCnt, rxFansPerPing, rxFanIndex, swathsPerPing, ...
_PING_INFO_MIN = 144
_PING_INFO = np.dtype({
    "names": ["num_bytes", "num_tx_sectors", "bytes_per_tx_sector", "heading_deg", "sound_speed_m_s",
              "tx_transducer_depth_m", "z_water_level_m", "pos_sensor_status", "attitude_sensor_status",
              "latitude_deg", "longitude_deg", "ellipsoid_height_m"],
    "formats": ["<u2", "<u2", "<u2", "<f4", "<f4", "<f4", "<f4", "u1", "u1", "<f8", "<f8", "<f4"],
    "offsets": [0, 92, 94, 96, 100, 104, 108, 121, 122, 124, 132, 140],
    "itemsize": _PING_INFO_MIN,
})
_RX_INFO = struct.Struct("<4H4f4H")
_SOUNDING_MIN = 120
_SOUNDING_FIELDS = [  # (name, dtype, offset) in EMdgmMRZ_sounding_def
    ("sounding_index", "<u2", 0), ("tx_sector", "u1", 2), ("detection_type", "u1", 3),
    ("detection_method", "u1", 4), ("quality_factor", "<f4", 16),
    ("reflectivity_db", "<f4", 48), ("beam_angle_deg", "<f4", 72), ("two_way_travel_time_s", "<f4", 80),
    ("delta_latitude_deg", "<f4", 88), ("delta_longitude_deg", "<f4", 92),
    ("z_m", "<f4", 96), ("y_m", "<f4", 100), ("x_m", "<f4", 104), ("si_num_samples", "<u2", 118),
]


def _sounding_dtype(itemsize: int) -> np.dtype:
    return np.dtype({
        "names": [f[0] for f in _SOUNDING_FIELDS],
        "formats": [f[1] for f in _SOUNDING_FIELDS],
        "offsets": [f[2] for f in _SOUNDING_FIELDS],
        "itemsize": itemsize,
    })


@dataclass
class MrzPings:
    """All ``#MRZ`` swaths of a log, one row per datagram (ping × rx fan), soundings in CSR form.

    Per ping ``(P,)``: ``time_ns int64`` (header time, midpoint of the first tx pulse, UNIX ns),
    ``ping_counter uint16``, ``rx_fan_index uint8``, ``heading_deg``, ``sound_speed_m_s``,
    ``tx_transducer_depth_m`` (below the waterline), ``z_water_level_m`` (waterline z re the
    reference point, SCS, down positive) as ``float32``; ``latitude_deg``/``longitude_deg``
    ``float64`` (200 = unavailable) and ``ellipsoid_height_m float32`` of the reference point;
    ``sounding_start (P + 1,) int64``: ping p owns soundings ``sounding_start[p]:sounding_start[p+1]``;
    optional (zeros / -1 when not given): ``pos_sensor_status``, ``attitude_sensor_status``
    ``uint8`` (0 valid, 1 invalid, 2 reduced performance) and ``datagram_offset int64`` (the
    ping's first datagram in the file, -1 when not read from one).

    Per sounding ``(N,)``: ``x_m, y_m, z_m float32`` (SCS: forward, starboard, down, metres
    from the reference point), ``beam_angle_deg`` (re the rx array, positive port),
    ``two_way_travel_time_s``, ``reflectivity_db``, ``quality_factor``, ``delta_latitude_deg``,
    ``delta_longitude_deg`` (``float32``), ``detection_type uint8`` (0 normal, 1 extra,
    2 rejected), ``detection_method uint8``, ``sounding_index uint16``, ``tx_sector uint8``.
    """

    time_ns: np.ndarray
    ping_counter: np.ndarray
    rx_fan_index: np.ndarray
    heading_deg: np.ndarray
    sound_speed_m_s: np.ndarray
    tx_transducer_depth_m: np.ndarray
    z_water_level_m: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray
    ellipsoid_height_m: np.ndarray
    sounding_start: np.ndarray
    x_m: np.ndarray
    y_m: np.ndarray
    z_m: np.ndarray
    beam_angle_deg: np.ndarray
    two_way_travel_time_s: np.ndarray
    reflectivity_db: np.ndarray
    quality_factor: np.ndarray
    delta_latitude_deg: np.ndarray
    delta_longitude_deg: np.ndarray
    detection_type: np.ndarray
    detection_method: np.ndarray
    sounding_index: np.ndarray
    tx_sector: np.ndarray
    pos_sensor_status: np.ndarray | None = None
    attitude_sensor_status: np.ndarray | None = None
    datagram_offset: np.ndarray | None = None

    PING_FIELDS = ("time_ns", "ping_counter", "rx_fan_index", "heading_deg", "sound_speed_m_s",
                   "tx_transducer_depth_m", "z_water_level_m", "latitude_deg", "longitude_deg",
                   "ellipsoid_height_m")
    SOUNDING_FIELDS = ("x_m", "y_m", "z_m", "beam_angle_deg", "two_way_travel_time_s", "reflectivity_db",
                       "quality_factor", "delta_latitude_deg", "delta_longitude_deg", "detection_type",
                       "detection_method", "sounding_index", "tx_sector")
    DTYPES = {
        "time_ns": np.int64, "ping_counter": np.uint16, "rx_fan_index": np.uint8, "latitude_deg": np.float64,
        "longitude_deg": np.float64, "sounding_start": np.int64, "detection_type": np.uint8,
        "detection_method": np.uint8, "sounding_index": np.uint16, "tx_sector": np.uint8,
        "pos_sensor_status": np.uint8, "attitude_sensor_status": np.uint8, "datagram_offset": np.int64,
    }
    OPTIONAL_PING_FIELDS = {"pos_sensor_status": 0, "attitude_sensor_status": 0, "datagram_offset": -1}

    def __post_init__(self) -> None:
        for name, fill in self.OPTIONAL_PING_FIELDS.items():
            if getattr(self, name) is None:
                setattr(self, name, np.full(len(np.atleast_1d(self.time_ns)), fill))
        for name in (*self.PING_FIELDS, *self.OPTIONAL_PING_FIELDS, "sounding_start", *self.SOUNDING_FIELDS):
            arr = np.ascontiguousarray(getattr(self, name), dtype=self.DTYPES.get(name, np.float32))
            if arr.ndim != 1:
                raise ValueError(f"MrzPings.{name} must be 1-D, got shape {arr.shape}")
            setattr(self, name, arr)
        p = len(self.time_ns)
        for name in (*self.PING_FIELDS, *self.OPTIONAL_PING_FIELDS):
            if len(getattr(self, name)) != p:
                raise ValueError(f"MrzPings.{name} has {len(getattr(self, name))} rows, expected {p} pings")
        s = self.sounding_start
        if len(s) != p + 1 or s[0] != 0 or np.any(np.diff(s) < 0):
            raise ValueError(f"MrzPings.sounding_start must be ({p + 1},) non-decreasing from 0, got {s[:8]}...")
        n = int(s[-1])
        for name in self.SOUNDING_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"MrzPings.{name} has {len(getattr(self, name))} rows, expected {n} soundings")

    @property
    def num_pings(self) -> int:
        return len(self.time_ns)

    @property
    def num_soundings(self) -> int:
        return int(self.sounding_start[-1])

    @property
    def ping_of_sounding(self) -> np.ndarray:
        """``(N,) int32`` row index of each sounding's ping."""
        return np.repeat(np.arange(self.num_pings, dtype=np.int32), np.diff(self.sounding_start))

    @property
    def depth_m(self) -> np.ndarray:
        """``(N,) float32`` depth below the waterline: ``z − z_water_level`` of the ping."""
        return self.z_m - np.repeat(self.z_water_level_m, np.diff(self.sounding_start))

    def ping_sweep(self, ping: int, include_rejected: bool = False) -> Sweep:
        """One ping's soundings as a :class:`Sweep` in the frame ``"vessel_level"``.

        That frame is the SCS converted to the ego convention: x forward along the heading,
        y left, z up, levelled, origin at the vessel reference point at the ping time.
        Rejected detections are dropped unless ``include_rejected``.
        """
        if not 0 <= ping < self.num_pings:
            raise IndexError(f"ping {ping} out of range [0, {self.num_pings})")
        sl = slice(int(self.sounding_start[ping]), int(self.sounding_start[ping + 1]))
        xyz = vessel_to_ego(np.stack([self.x_m[sl], self.y_m[sl], self.z_m[sl]], axis=1))
        sweep = Sweep(
            xyz=xyz, timestamp_ns=int(self.time_ns[ping]), intensity=self.reflectivity_db[sl],
            time_offset_ns=np.zeros(sl.stop - sl.start, np.int64), frame="vessel_level",
            extra={"ping_index": np.full(sl.stop - sl.start, ping, np.int32),
                   **{k: v[sl] for k, v in _sounding_extra(self).items()}},
        )
        return sweep if include_rejected else sweep.select(sweep.extra["detection_type"] != DETECTION_REJECTED)


def _sounding_extra(pings: MrzPings) -> dict[str, np.ndarray]:
    return {name: getattr(pings, name) for name in (
        "beam_angle_deg", "two_way_travel_time_s", "quality_factor", "detection_type", "detection_method",
        "sounding_index")}


@dataclass
class KmallLog:
    """A decoded KMALL file.

    Attributes:
        pings: the ``#MRZ`` swaths.
        attitude: the ``#SKM`` samples.
        positions: the ``#SPO`` samples.
        install_text: the first ``#IIP`` text ("" if none); ``install``: it parsed into
            ``{key: value}`` with sensor sections as nested dicts (e.g. ``install["TRAI_TX1"]["X"]``).
        counts: datagrams found per type (multi-part datagrams count once, as re-joined).
        skipped: datagrams of types this reader does not decode, per type.
        corrupt: ``(offset, reason)`` of damaged stretches skipped (only with ``recover=True``).
        path: the file read (None for bytes), named by later errors about its values.
    """

    pings: MrzPings
    attitude: SkmSamples
    positions: SpoSamples
    install_text: str = ""
    install: dict = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    corrupt: list[tuple[int, str]] = field(default_factory=list)
    path: str | os.PathLike | None = None


# ---------------------------------------------------------------- indexing


def _check_datagram(buf: memoryview, o: int) -> str | None:
    """Why the datagram at ``o`` is not well formed, or None if it is."""
    end = len(buf)
    if o + _HEADER.size > end:
        return f"a {_HEADER.size}-byte datagram header, found {end - o} bytes before the end"
    n, dtype_ = struct.unpack_from("<I4s", buf, o)
    if not _TYPE_RE.fullmatch(dtype_):
        return f"a datagram type '#XYZ', found {bytes(dtype_)!r}"
    if n < _MIN_DGM:
        return f"numBytesDgm >= {_MIN_DGM}, found {n}"
    if o + n > end:
        return f"{n} bytes of datagram {dtype_.decode()}, file ends after {end - o}"
    rep = struct.unpack_from("<I", buf, o + n - 4)[0]
    if rep != n:
        return f"the length {n} of datagram {dtype_.decode()} repeated at its end, found {rep}"
    return None


def index_datagrams(data: bytes | memoryview, path: PathLike | None = None, recover: bool = False
                    ) -> tuple[list[tuple[int, int, str]], list[tuple[int, str]]]:
    """Offsets of all datagrams: ``([(offset, numBytes, type)], corrupt)``.

    A damaged datagram (bad type, impossible or truncated length, length repeat mismatch)
    raises :class:`FormatError` at its offset, or with ``recover`` is skipped to the next
    well-formed datagram and listed in ``corrupt`` as ``(offset, reason)``.
    """
    buf = memoryview(data)
    out: list[tuple[int, int, str]] = []
    corrupt: list[tuple[int, str]] = []
    o = 0
    end = len(buf)
    raw = bytes(buf) if recover else b""
    while o < end:
        why = _check_datagram(buf, o)
        if why is None:
            n, t = struct.unpack_from("<I4s", buf, o)
            out.append((o, n, t.decode()))
            o += n
            continue
        if not recover:
            raise FormatError(path, o, why)
        corrupt.append((o, why))
        o = _resync(buf, raw, o + 1)
    return out, corrupt


def _resync(buf: memoryview, raw: bytes, start: int) -> int:
    """The offset of the next well-formed datagram at or after ``start`` (or the end)."""
    for m in _TYPE_RE.finditer(raw, max(start + 4, 4)):
        o = m.start() - 4
        if o >= start and _check_datagram(buf, o) is None:
            return o
    return len(buf)


def _rejoin(buf: memoryview, parts: list[tuple[int, int]]) -> bytes:
    """Join a multi-part M datagram: part 1 whole less its length tail, then every later
    part's bytes after its header and partition struct; lengths and partition set to 1/1."""
    chunks = [bytes(buf[parts[0][0]: parts[0][0] + parts[0][1] - 4])]
    for o, n in parts[1:]:
        chunks.append(bytes(buf[o + _HEADER.size + 4: o + n - 4]))
    joined = bytearray(b"".join(chunks) + b"\0\0\0\0")
    total = len(joined)
    struct.pack_into("<I", joined, 0, total)
    struct.pack_into("<HH", joined, _HEADER.size, 1, 1)
    struct.pack_into("<I", joined, total - 4, total)
    return bytes(joined)


def joined_datagrams(buf: memoryview, index: list[tuple[int, int, str]], path, recover: bool,
                     corrupt: list[tuple[int, str]]) -> Iterator[tuple[int, memoryview, int, int, str]]:
    """Each datagram as ``(file offset, buffer, offset in it, numBytes, type)``, multi-part M
    datagrams re-joined into one buffer (file offset: their first part).

    The parts of a multi-part datagram must arrive in order 1..numOfDgms with the same
    ``numOfDgms`` and header time. One cut short (by the next part 1, a part out of order or
    the end of the file) raises :class:`FormatError` at its first part, or with ``recover``
    is listed in ``corrupt`` and dropped.
    """
    pending: dict[str, tuple[int, bytes, list[tuple[int, int]]]] = {}  # type -> (numOfDgms, time, parts)

    def report(at: int, why: str) -> None:
        if not recover:
            raise FormatError(path, at, why)
        corrupt.append((at, why))

    def cut_short(t: str) -> None:
        num, _, parts = pending.pop(t)
        report(parts[0][0], f"all {num} parts of the multi-part {t} starting here, "
                            f"found parts 1..{len(parts)} only")

    for o, n, t in index:
        if t[1] == "M" and n >= _HEADER.size + 8:
            num, part = struct.unpack_from("<HH", buf, o + _HEADER.size)
            when = bytes(buf[o + 12: o + 20])
            if t in pending:
                want_num, want_when, parts = pending[t]
                if part == len(parts) + 1 and num == want_num and when == want_when:
                    parts.append((o, n))
                    if part == num:
                        del pending[t]
                        target = memoryview(_rejoin(buf, parts))
                        yield parts[0][0], target, 0, len(target), t
                    continue
                cut_short(t)
            if num != 1 or part != 1:
                if part != 1 or num == 0:
                    report(o, f"part 1 of a {t} in 1..numOfDgms, found part {part} of {num}")
                else:
                    pending[t] = (num, when, [(o, n)])
                continue
        yield o, buf, o, n, t
    for t in list(pending):
        cut_short(t)


# ---------------------------------------------------------------- decoding


def _time_ns(sec: int, nanosec: int) -> int:
    return sec * 1_000_000_000 + nanosec


class _MrzCollector:
    def __init__(self) -> None:
        self.ping_rows: list[tuple] = []
        self.sounding_blocks: list[np.ndarray] = []  # (count, numBytesPerSounding) uint8 views

    def add(self, buf, o: int, n: int, path, file_offset: int) -> None:
        """Decode the ``#MRZ`` at ``o`` of ``buf`` (``n`` bytes; ``file_offset`` its first
        datagram's offset in the file)."""
        end = o + n - 4
        _, _, _, _, _, sec, nsec = _HEADER.unpack_from(buf, o)
        c = o + _HEADER.size + 4
        need = lambda at, size, what: _need(path, at, size, end, what)  # noqa: E731
        need(c, _CMN.size, "#MRZ common part")
        cmn = _CMN.unpack_from(buf, c)
        if cmn[0] < _CMN.size:
            raise FormatError(path, c, f"#MRZ numBytesCmnPart >= {_CMN.size}, found {cmn[0]}")
        p = c + cmn[0]
        need(p, _PING_INFO_MIN, "#MRZ pingInfo")
        info = np.frombuffer(buf, _PING_INFO, 1, p)[0]
        if info["num_bytes"] < _PING_INFO_MIN:
            raise FormatError(path, p, f"#MRZ numBytesInfoData >= {_PING_INFO_MIN}, found {info['num_bytes']}")
        r = p + int(info["num_bytes"]) + int(info["num_tx_sectors"]) * int(info["bytes_per_tx_sector"])
        need(r, _RX_INFO.size, "#MRZ rxInfo")
        rx = _RX_INFO.unpack_from(buf, r)
        nbytes_rx, n_main, _, per_sounding = rx[0], rx[1], rx[2], rx[3]
        n_extra, n_classes, per_class = rx[9], rx[10], rx[11]
        if nbytes_rx < _RX_INFO.size:
            raise FormatError(path, r, f"#MRZ numBytesRxInfo >= {_RX_INFO.size}, found {nbytes_rx}")
        count = n_main + n_extra
        if count and per_sounding < _SOUNDING_MIN:
            raise FormatError(path, r + 6, f"#MRZ numBytesPerSounding >= {_SOUNDING_MIN}, found {per_sounding}")
        s = r + nbytes_rx + n_classes * per_class
        need(s, count * per_sounding, f"{count} #MRZ soundings of {per_sounding} bytes")
        block = (np.frombuffer(buf, np.uint8, count * per_sounding, s).reshape(count, -1)
                 if count else np.zeros((0, _SOUNDING_MIN), np.uint8))
        # the soundings, then their seabed-image samples (int16), fill the datagram exactly
        si_end = s + count * per_sounding + 2 * int(block[:, 118:120].copy().view("<u2").sum())
        if si_end != end:
            raise FormatError(path, r, f"#MRZ soundings ({count} of {per_sounding} bytes after a {nbytes_rx}-byte "
                                       f"rxInfo) and seabed-image samples ending at the datagram's end (byte {end}), "
                                       f"they end at byte {si_end}")
        bad = np.flatnonzero(block[:, 3] > DETECTION_REJECTED)
        if len(bad):
            k = int(bad[0])
            raise FormatError(path, s + k * per_sounding + 3,
                              f"#MRZ sounding {k}: detectionType 0, 1 or 2, found {int(block[k, 3])}")
        self.sounding_blocks.append(block)
        self.ping_rows.append((
            _time_ns(sec, nsec), cmn[1], cmn[3], info["heading_deg"], info["sound_speed_m_s"],
            info["tx_transducer_depth_m"], info["z_water_level_m"], info["latitude_deg"],
            info["longitude_deg"], info["ellipsoid_height_m"], count, info["pos_sensor_status"],
            info["attitude_sensor_status"], file_offset,
        ))

    def result(self) -> MrzPings:
        rows = self.ping_rows
        cols = [np.asarray(c) for c in zip(*rows)] if rows else [np.empty(0)] * 14
        counts = np.asarray(cols[10], dtype=np.int64)
        start = np.zeros(len(rows) + 1, np.int64)
        np.cumsum(counts, out=start[1:])
        total = int(start[-1])
        # one contiguous (N, 120) copy of the known sounding bytes (a memcpy per ping), then
        # one strided read per column over all soundings
        blob = np.empty((total, _SOUNDING_MIN), np.uint8)
        for v, a, b in zip(self.sounding_blocks, start[:-1], start[1:]):
            blob[a:b] = v[:, :_SOUNDING_MIN]
        rec = blob.view(_sounding_dtype(_SOUNDING_MIN)).reshape(total)
        sounding = {name: rec[name].astype(np.dtype(dt).newbyteorder("="))
                    for name, dt, _ in _SOUNDING_FIELDS if name != "si_num_samples"}
        return MrzPings(
            time_ns=np.asarray(cols[0], np.int64), ping_counter=cols[1], rx_fan_index=cols[2],
            heading_deg=cols[3], sound_speed_m_s=cols[4], tx_transducer_depth_m=cols[5],
            z_water_level_m=cols[6], latitude_deg=cols[7], longitude_deg=cols[8],
            ellipsoid_height_m=cols[9], sounding_start=start, pos_sensor_status=cols[11],
            attitude_sensor_status=cols[12], datagram_offset=cols[13], **sounding,
        )


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) inside the datagram, which ends at byte {end}")


def _iip_text(buf, o: int, n: int, path) -> str:
    c = o + _HEADER.size
    _need(path, c, 6, o + n - 4, "#IIP common part")
    nbytes = struct.unpack_from("<H", buf, c)[0]
    _need(path, c, nbytes, o + n - 4, f"#IIP text of {nbytes} bytes")
    return bytes(buf[c + 6: c + nbytes]).split(b"\0", 1)[0].decode("utf-8", errors="replace")


def parse_install_text(text: str) -> dict:
    """``#IIP`` text → dict: ``key=value`` and ``key:value`` items, sensor sections
    ``NAME:k=v;k=v`` as nested dicts. Items are separated by commas and newlines."""
    out: dict = {}
    for item in re.split(r"[,\n]+", text):
        item = item.strip()
        if not item:
            continue
        head, sep, rest = item.partition(":")
        if sep and "=" in rest and "=" not in head:
            out[head] = dict(kv.split("=", 1) for kv in rest.split(";") if "=" in kv)
        elif "=" in item:
            k, v = item.split("=", 1)
            out[k] = v
        elif sep:
            out[head] = rest
    return out


def read_kmall(source: PathLike | bytes, recover: bool = False) -> KmallLog:
    """Decode a KMALL file (path or bytes) into a :class:`KmallLog`.

    Raises :class:`FormatError` (path, byte offset, what was expected) for a damaged
    datagram; with ``recover=True`` damaged stretches are skipped and listed in
    ``KmallLog.corrupt`` instead. Datagram types not decoded here are skipped and counted.
    """
    path, data = load_source(source)
    buf = memoryview(data)
    index, corrupt = index_datagrams(buf, path, recover)
    counts: dict[str, int] = {}
    skipped: dict[str, int] = {}
    mrz = _MrzCollector()
    skm: list[np.ndarray] = []
    spo: list[tuple] = []
    install_text = ""
    for o, target, at, size, t in joined_datagrams(buf, index, path, recover, corrupt):
        counts[t] = counts.get(t, 0) + 1
        try:
            if t == "#MRZ":
                mrz.add(target, at, size, path, o)
            elif t == "#SKM":
                skm.append(skm_samples(target, at, size, path))
            elif t == "#SPO":
                spo.append(spo_row(target, at, size, path))
            elif t == "#IIP":
                if not install_text:
                    install_text = _iip_text(target, at, size, path)
            else:
                skipped[t] = skipped.get(t, 0) + 1
        except FormatError as err:
            if not recover:
                if target is not buf:  # offsets inside a re-joined datagram: report its first part
                    raise FormatError(path, o, f"(in re-joined {t}) {err.expected}") from None
                raise
            corrupt.append((o, err.expected))
    return KmallLog(
        pings=mrz.result(), attitude=skm_result(skm), positions=spo_result(spo),
        install_text=install_text, install=parse_install_text(install_text),
        counts=counts, skipped=skipped, corrupt=corrupt, path=path,
    )


def read_kmall_world(source: PathLike | bytes | KmallLog, origin: Origin, vertical: str = "waterline",
                     include_rejected: bool = False) -> SonarWorld:
    """All soundings of the pings with a valid pose, in the scene's ENU world frame.

    A ping is placed from its own ``#MRZ`` position and heading unless the processing unit
    flagged its position or attitude sensor invalid (``posSensorStatus`` /
    ``attitudeSensorStatus`` 1) or wrote the unavailable position (200°): such pings are
    listed in :attr:`SonarWorld.unplaced` with the reason. ``vertical``: ``"waterline"``
    puts the waterline at the origin's height, ``"ellipsoid"`` uses the reference point's
    ellipsoid height from the ping. Rejected detections are dropped unless
    ``include_rejected`` (then ``extra["detection_type"] == 2`` flags them). Extras:
    ``ping_index``, ``pose_extrapolated`` (always False), ``beam_angle_deg``,
    ``two_way_travel_time_s``, ``quality_factor``, ``detection_type``, ``detection_method``,
    ``sounding_index``. An impossible value of a placed ping (NaN heading, latitude beyond
    ±90°, infinite waterline) raises :class:`FormatError` at the ping's datagram offset.
    """
    log = source if isinstance(source, KmallLog) else read_kmall(source)
    p = log.pings
    poses = mrz_ping_poses(p, origin, vertical)
    keep = np.ones(p.num_soundings, bool) if include_rejected else p.detection_type != DETECTION_REJECTED
    return place_soundings(log.path, poses, p.sounding_start, p.x_m, p.y_m, p.z_m, keep, p.reflectivity_db,
                           _sounding_extra(p), origin)


def mrz_ping_poses(p: MrzPings, origin: Origin, vertical: str = "waterline") -> PingPoses:
    """Each ``#MRZ`` ping's pose for :func:`formats.sonar_world.place_soundings` (see
    :func:`read_kmall_world`): placed unless its position/attitude sensor is flagged invalid
    or its position is unavailable."""
    if vertical not in ("waterline", "ellipsoid"):
        raise ValueError(f"vertical must be 'waterline' or 'ellipsoid', got {vertical!r}")
    if vertical == "waterline":
        base, z_offset = np.full(p.num_pings, origin.alt_m), p.z_water_level_m
    else:
        base, z_offset = p.ellipsoid_height_m, np.zeros(p.num_pings)
    unavailable = (p.latitude_deg == UNAVAILABLE_DEG) | (p.longitude_deg == UNAVAILABLE_DEG)
    reasons = [
        (p.pos_sensor_status == SENSOR_INVALID, "position sensor flagged invalid (posSensorStatus 1)"),
        (unavailable, "position unavailable (latitude/longitude 200)"),
        (p.attitude_sensor_status == SENSOR_INVALID, "attitude sensor flagged invalid (attitudeSensorStatus 1)"),
    ]
    placed = np.ones(p.num_pings, bool)
    unplaced = []
    for i in range(p.num_pings):
        why = [text for mask, text in reasons if mask[i]]
        if why:
            placed[i] = False
            unplaced.append((i, "; ".join(why)))
    assert p.datagram_offset is not None  # MrzPings.__post_init__ fills every optional column
    return PingPoses(p.latitude_deg, p.longitude_deg, p.heading_deg, base, z_offset, p.time_ns,
                     p.datagram_offset, placed, np.zeros(p.num_pings, bool), unplaced)


# ---------------------------------------------------------------- writer


def _datagram(dtype_: bytes, version: int, time_ns: int, body: bytes, echo_sounder_id: int, system_id: int) -> bytes:
    n = _HEADER.size + len(body) + 4
    sec, nsec = divmod(int(time_ns), 1_000_000_000)
    return _HEADER.pack(n, dtype_, version, system_id, echo_sounder_id, sec, nsec) + body + struct.pack("<I", n)


def _split_m(dgm: bytes, max_bytes: int) -> list[bytes]:
    """Split an M datagram into partitions of at most ``max_bytes`` each."""
    head = dgm[: _HEADER.size]
    payload = dgm[_HEADER.size + 4: -4]
    room = max_bytes - _HEADER.size - 4 - 4
    if room <= 0:
        raise ValueError(f"max_datagram_bytes must exceed {_HEADER.size + 8}, got {max_bytes}")
    chunks = [payload[i: i + room] for i in range(0, len(payload), room)] or [b""]
    out = []
    for k, chunk in enumerate(chunks, 1):
        n = _HEADER.size + 4 + len(chunk) + 4
        out.append(struct.pack("<I", n) + head[4:] + struct.pack("<HH", len(chunks), k) + chunk + struct.pack("<I", n))
    return out


_PING_INFO_V3 = struct.Struct("<2H1f6B1H11f2h2B1H1I3f2H1f2H6f4B2d1ff2BH")  # 152 bytes
_TX_SECTOR_V1 = struct.Struct("<4B7f2B1H3f")  # 48 bytes
_SOUNDING = struct.Struct("<1H8B1H6f2H18f4H")  # 120 bytes


def _mrz_body(p: MrzPings, i: int) -> bytes:
    a, b = int(p.sounding_start[i]), int(p.sounding_start[i + 1])
    count = b - a
    assert p.pos_sensor_status is not None and p.attitude_sensor_status is not None  # filled by __post_init__
    cmn = _CMN.pack(_CMN.size, int(p.ping_counter[i]), 1, int(p.rx_fan_index[i]), 1, 0, 0, 0, 1, 0)
    info = _PING_INFO_V3.pack(
        _PING_INFO_V3.size, 0, 0.0, 0, 0, 0, 0, 0, 0, 0, *([0.0] * 11), 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0, 0.0,
        1, _TX_SECTOR_V1.size, float(p.heading_deg[i]), float(p.sound_speed_m_s[i]),
        float(p.tx_transducer_depth_m[i]), float(p.z_water_level_m[i]), 0.0, 0.0, 1,
        int(p.pos_sensor_status[i]), int(p.attitude_sensor_status[i]), 0,
        float(p.latitude_deg[i]), float(p.longitude_deg[i]), float(p.ellipsoid_height_m[i]), 0.0, 0, 0, 0,
    )
    tx = _TX_SECTOR_V1.pack(0, 0, 0, 0, *([0.0] * 7), 0, 0, 0, 0.0, 0.0, 0.0)
    valid = int(np.count_nonzero(p.detection_type[a:b] != DETECTION_REJECTED))
    rx = _RX_INFO.pack(_RX_INFO.size, count, valid, _SOUNDING.size, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0)
    s = np.zeros(count, _sounding_dtype(_SOUNDING.size))
    for name, _, _ in _SOUNDING_FIELDS:
        if name != "si_num_samples":
            s[name] = getattr(p, name)[a:b]
    return struct.pack("<HH", 1, 1) + cmn + info + tx + rx + s.tobytes()


def write_kmall(target: PathLike | BinaryIO, pings: MrzPings, attitude: SkmSamples | None = None,
                install_text: str = "", echo_sounder_id: int = 2040, samples_per_skm: int = 100,
                max_datagram_bytes: int | None = None) -> int:
    """Write ``#IIP`` (if text), ``#SKM`` and ``#MRZ`` datagrams in time order; return bytes written.

    ``#SKM`` datagrams hold up to ``samples_per_skm`` samples and carry the first sample's
    time. An ``#MRZ`` longer than ``max_datagram_bytes`` is split into partitions
    (``numOfDgms > 1``), as a processing unit sends them over UDP.
    """
    records: list[tuple[int, int, bytes]] = []  # (time, order, bytes)
    if install_text:
        t0 = int(pings.time_ns[0]) if pings.num_pings else 0
        body = struct.pack("<3H", 6 + len(install_text.encode()) + 1, 0, 0) + install_text.encode() + b"\0"
        records.append((t0, 0, _datagram(b"#IIP", 0, t0, body, echo_sounder_id, 0)))
    if attitude is not None and len(attitude):
        for a in range(0, len(attitude), samples_per_skm):
            b = min(a + samples_per_skm, len(attitude))
            t = int(attitude.time_ns[a])
            records.append((t, 1, _datagram(b"#SKM", 1, t, skm_body(attitude, a, b), echo_sounder_id, 0)))
    for i in range(pings.num_pings):
        t = int(pings.time_ns[i])
        dgm = _datagram(b"#MRZ", 3, t, _mrz_body(pings, i), echo_sounder_id, 0)
        for part in (_split_m(dgm, max_datagram_bytes) if max_datagram_bytes and len(dgm) > max_datagram_bytes
                     else [dgm]):
            records.append((t, 2, part))
    records.sort(key=lambda r: (r[0], r[1]))
    blob = b"".join(r[2] for r in records)
    if isinstance(target, (str, os.PathLike)):
        Path(target).write_bytes(blob)
    else:
        target.write(blob)
    return len(blob)


__all__ = [
    "KmallLog", "MrzPings", "SkmSamples", "SpoSamples", "read_kmall", "read_kmall_world", "write_kmall",
    "index_datagrams", "joined_datagrams", "parse_install_text",
]
