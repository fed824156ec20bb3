"""Kongsberg KMALL: #MRZ soundings, #SKM attitude/position, #SPO position, #IIP install text.

Reading indexes the datagram offsets once (one small header unpack per datagram), then
decodes each sub-struct at the sizes the file states (``numBytes*`` fields), so datagram
versions 0–3 parse and unknown trailing fields are skipped. Soundings and sensor samples
are read with NumPy structured views over the file bytes (``np.frombuffer``, no per-sounding
Python). Multi-part ``#MRZ``/``#MWC`` datagrams (``numOfDgms > 1``) are re-joined.

Frames: ``#MRZ`` x/y/z are metres from the vessel reference point in Kongsberg's surface
coordinate system (SCS): x forward along the heading, y starboard, z down, levelled (roll,
pitch, ray bending and lever arms already applied). :meth:`MrzPings.ping_sweep` converts
them to the ego convention (x forward, y left, z up); :func:`read_kmall_world` places them
in the scene's ENU world frame through :mod:`engine.georeference`.

The writer produces ``#IIP``, ``#SKM`` (version 1, 132-byte samples) and ``#MRZ`` (version
3, one tx sector, no seabed image) datagrams, split into partitions on request.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from engine.geodesy import Origin
from engine.georeference import vessel_to_ego, soundings_to_world
from engine.sweep import Sweep
from formats.errors import FormatError, load_source

PathLike = str | os.PathLike

_HEADER = struct.Struct("<I4sBBHII")  # numBytesDgm, dgmType, dgmVersion, systemID, echoSounderID, sec, nanosec
_TYPE_RE = re.compile(rb"#[A-Z]{3}")
_MIN_DGM = _HEADER.size + 4  # header + trailing length
DETECTION_REJECTED = 2

# #MRZ sub-structs: minimum sizes (version 0) and the offsets of the fields read.
_CMN = struct.Struct("<HH8B")  # numBytesCmnPart, pingCnt, rxFansPerPing, rxFanIndex, swathsPerPing, ...
_PING_INFO_MIN = 144
_PING_INFO = np.dtype({
    "names": ["num_bytes", "num_tx_sectors", "bytes_per_tx_sector", "heading_deg", "sound_speed_m_s",
              "tx_transducer_depth_m", "z_water_level_m", "latitude_deg", "longitude_deg", "ellipsoid_height_m"],
    "formats": ["<u2", "<u2", "<u2", "<f4", "<f4", "<f4", "<f4", "<f8", "<f8", "<f4"],
    "offsets": [0, 92, 94, 96, 100, 104, 108, 124, 132, 140],
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


# #SKM: info part, then KM binary samples (120 bytes) + delayed heave (12 bytes).
_SKM_INFO = struct.Struct("<HBBHHHH")
_KMB_MIN = 120
_KMB_FIELDS = [
    ("time_sec", "<u4", 8), ("time_nanosec", "<u4", 12), ("status", "<u4", 16),
    ("latitude_deg", "<f8", 20), ("longitude_deg", "<f8", 28), ("ellipsoid_height_m", "<f4", 36),
    ("roll_deg", "<f4", 40), ("pitch_deg", "<f4", 44), ("heading_deg", "<f4", 48), ("heave_m", "<f4", 52),
]
_DELAYED_HEAVE_FIELDS = [("dh_time_sec", "<u4", 120), ("dh_time_nanosec", "<u4", 124), ("delayed_heave_m", "<f4", 128)]

# #SPO: common part, then the position data block (40 bytes + raw sensor text).
_S_CMN = struct.Struct("<4H")
_SPO = struct.Struct("<IIfddfff")


@dataclass
class MrzPings:
    """All ``#MRZ`` swaths of a log, one row per datagram (ping × rx fan), soundings in CSR form.

    Per ping ``(P,)``: ``time_ns int64`` (header time, midpoint of the first tx pulse, UNIX ns),
    ``ping_counter uint16``, ``rx_fan_index uint8``, ``heading_deg``, ``sound_speed_m_s``,
    ``tx_transducer_depth_m`` (below the waterline), ``z_water_level_m`` (waterline z re the
    reference point, SCS, down positive) as ``float32``; ``latitude_deg``/``longitude_deg``
    ``float64`` and ``ellipsoid_height_m float32`` of the reference point;
    ``sounding_start (P + 1,) int64``: ping p owns soundings ``sounding_start[p]:sounding_start[p+1]``.

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
    }

    def __post_init__(self) -> None:
        for name in (*self.PING_FIELDS, "sounding_start", *self.SOUNDING_FIELDS):
            arr = np.ascontiguousarray(getattr(self, name), dtype=self.DTYPES.get(name, np.float32))
            if arr.ndim != 1:
                raise ValueError(f"MrzPings.{name} must be 1-D, got shape {arr.shape}")
            setattr(self, name, arr)
        p = len(self.time_ns)
        for name in self.PING_FIELDS:
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
            extra=_sounding_extra(self, sl, np.full(sl.stop - sl.start, ping, np.int32)),
        )
        return sweep if include_rejected else sweep.select(sweep.extra["detection_type"] != DETECTION_REJECTED)


def _sounding_extra(pings: MrzPings, sel, ping_index: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "ping_index": ping_index,
        "beam_angle_deg": pings.beam_angle_deg[sel],
        "two_way_travel_time_s": pings.two_way_travel_time_s[sel],
        "quality_factor": pings.quality_factor[sel],
        "detection_type": pings.detection_type[sel],
        "detection_method": pings.detection_method[sel],
        "sounding_index": pings.sounding_index[sel],
    }


@dataclass
class SkmSamples:
    """``#SKM`` KM-binary samples ``(K,)`` in file order, uncorrected sensor values.

    ``time_ns int64`` (sensor time, UNIX ns), ``status uint32``, ``latitude_deg``/
    ``longitude_deg float64``, ``ellipsoid_height_m``, ``roll_deg`` (positive port up),
    ``pitch_deg`` (positive bow up), ``heading_deg`` (clockwise from north), ``heave_m``
    (positive down) ``float32``; ``delayed_heave_time_ns int64`` and ``delayed_heave_m
    float32`` (NaN/0 where the samples carry none).
    """

    time_ns: np.ndarray
    status: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray
    ellipsoid_height_m: np.ndarray
    roll_deg: np.ndarray
    pitch_deg: np.ndarray
    heading_deg: np.ndarray
    heave_m: np.ndarray
    delayed_heave_time_ns: np.ndarray
    delayed_heave_m: np.ndarray

    DTYPES = {"time_ns": np.int64, "status": np.uint32, "latitude_deg": np.float64,
              "longitude_deg": np.float64, "delayed_heave_time_ns": np.int64}

    def __post_init__(self) -> None:
        k = len(np.atleast_1d(self.time_ns))
        for f in self.__dataclass_fields__:
            arr = np.ascontiguousarray(getattr(self, f), dtype=self.DTYPES.get(f, np.float32))
            if arr.shape != (k,):
                raise ValueError(f"SkmSamples.{f} must have shape ({k},), got {arr.shape}")
            setattr(self, f, arr)

    def __len__(self) -> int:
        return len(self.time_ns)


@dataclass
class SpoSamples:
    """``#SPO`` position samples ``(K,)``: ``time_ns int64`` (sensor time), ``latitude_deg``,
    ``longitude_deg float64`` (motion-corrected, reference point), ``ellipsoid_height_m``,
    ``speed_over_ground_m_s``, ``course_over_ground_deg``, ``fix_quality_m float32``."""

    time_ns: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray
    ellipsoid_height_m: np.ndarray
    speed_over_ground_m_s: np.ndarray
    course_over_ground_deg: np.ndarray
    fix_quality_m: np.ndarray

    def __len__(self) -> int:
        return len(self.time_ns)


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
    """

    pings: MrzPings
    attitude: SkmSamples
    positions: SpoSamples
    install_text: str = ""
    install: dict = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    corrupt: list[tuple[int, str]] = field(default_factory=list)


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


# ---------------------------------------------------------------- decoding


def _time_ns(sec: int, nanosec: int) -> int:
    return sec * 1_000_000_000 + nanosec


class _MrzCollector:
    def __init__(self) -> None:
        self.ping_rows: list[tuple] = []
        self.sounding_blocks: list[np.ndarray] = []  # (count, numBytesPerSounding) uint8 views

    def add(self, buf, o: int, n: int, path) -> None:
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
        self.sounding_blocks.append(np.frombuffer(buf, np.uint8, count * per_sounding, s).reshape(count, -1)
                                    if count else np.zeros((0, _SOUNDING_MIN), np.uint8))
        self.ping_rows.append((
            _time_ns(sec, nsec), cmn[1], cmn[3], info["heading_deg"], info["sound_speed_m_s"],
            info["tx_transducer_depth_m"], info["z_water_level_m"], info["latitude_deg"],
            info["longitude_deg"], info["ellipsoid_height_m"], count,
        ))

    def result(self) -> MrzPings:
        rows = self.ping_rows
        cols = list(zip(*rows)) if rows else [()] * 11
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
            ellipsoid_height_m=cols[9], sounding_start=start, **sounding,
        )


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) inside the datagram, which ends at byte {end}")


def _skm_samples(buf, o: int, n: int, path) -> np.ndarray:
    end = o + n - 4
    i = o + _HEADER.size
    _need(path, i, _SKM_INFO.size, end, "#SKM info part")
    nbytes_info, _, _, _, count, per_sample, _ = _SKM_INFO.unpack_from(buf, i)
    if nbytes_info < _SKM_INFO.size:
        raise FormatError(path, i, f"#SKM numBytesInfoPart >= {_SKM_INFO.size}, found {nbytes_info}")
    if count and per_sample < _KMB_MIN:
        raise FormatError(path, i + 8, f"#SKM numBytesPerSample >= {_KMB_MIN}, found {per_sample}")
    s = i + nbytes_info
    _need(path, s, count * per_sample, end, f"{count} #SKM samples of {per_sample} bytes")
    fields = _KMB_FIELDS + (_DELAYED_HEAVE_FIELDS if per_sample >= 132 else [])
    dt = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                   "offsets": [f[2] for f in fields], "itemsize": max(per_sample, _KMB_MIN)})
    return np.frombuffer(buf, dt, count, s)


def _spo_row(buf, o: int, n: int, path) -> tuple:
    end = o + n - 4
    c = o + _HEADER.size
    _need(path, c, _S_CMN.size, end, "#SPO common part")
    nbytes = _S_CMN.unpack_from(buf, c)[0]
    if nbytes < _S_CMN.size:
        raise FormatError(path, c, f"#SPO numBytesCmnPart >= {_S_CMN.size}, found {nbytes}")
    d = c + nbytes
    _need(path, d, _SPO.size, end, "#SPO data block")
    sec, nsec, fix, lat, lon, sog, cog, h = _SPO.unpack_from(buf, d)
    return _time_ns(sec, nsec), lat, lon, h, sog, cog, fix


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
    pending: dict[str, list[tuple[int, int]]] = {}
    for o, n, t in index:
        target, at, size = buf, o, n
        if t[1] == "M" and n >= _HEADER.size + 8:
            num, part = struct.unpack_from("<HH", buf, o + _HEADER.size)
            if num > 1:
                parts = pending.setdefault(t, [])
                if part != len(parts) + 1:
                    why = f"part {len(parts) + 1} of a {num}-part {t}, found part {part}"
                    if not recover:
                        raise FormatError(path, o, why)
                    corrupt.append((o, why))
                    parts.clear()
                    continue
                parts.append((o, n))
                if part < num:
                    continue
                target = memoryview(_rejoin(buf, parts))
                at, size = 0, len(target)
                parts.clear()
        counts[t] = counts.get(t, 0) + 1
        try:
            if t == "#MRZ":
                mrz.add(target, at, size, path)
            elif t == "#SKM":
                skm.append(_skm_samples(target, at, size, path))
            elif t == "#SPO":
                spo.append(_spo_row(target, at, size, path))
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
        pings=mrz.result(), attitude=_skm_result(skm), positions=_spo_result(spo),
        install_text=install_text, install=parse_install_text(install_text),
        counts=counts, skipped=skipped, corrupt=corrupt,
    )


def _skm_result(views: list[np.ndarray]) -> SkmSamples:
    def col(name, dtype=None):
        parts = [v[name] if name in v.dtype.names else np.zeros(len(v)) for v in views]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    sec, nsec = col("time_sec", np.int64), col("time_nanosec", np.int64)
    dsec, dnsec = col("dh_time_sec", np.int64), col("dh_time_nanosec", np.int64)
    dh = np.concatenate([
        v["delayed_heave_m"] if "delayed_heave_m" in v.dtype.names else np.full(len(v), np.nan, np.float32)
        for v in views
    ]) if views else np.zeros(0, np.float32)
    return SkmSamples(
        time_ns=sec * 1_000_000_000 + nsec, status=col("status", np.uint32),
        latitude_deg=col("latitude_deg", np.float64), longitude_deg=col("longitude_deg", np.float64),
        ellipsoid_height_m=col("ellipsoid_height_m", np.float32), roll_deg=col("roll_deg", np.float32),
        pitch_deg=col("pitch_deg", np.float32), heading_deg=col("heading_deg", np.float32),
        heave_m=col("heave_m", np.float32), delayed_heave_time_ns=dsec * 1_000_000_000 + dnsec,
        delayed_heave_m=dh,
    )


def _spo_result(rows: list[tuple]) -> SpoSamples:
    cols = list(zip(*rows)) if rows else [()] * 7
    f32 = lambda c: np.asarray(c, np.float32)  # noqa: E731
    return SpoSamples(
        time_ns=np.asarray(cols[0], np.int64), latitude_deg=np.asarray(cols[1], np.float64),
        longitude_deg=np.asarray(cols[2], np.float64), ellipsoid_height_m=f32(cols[3]),
        speed_over_ground_m_s=f32(cols[4]), course_over_ground_deg=f32(cols[5]), fix_quality_m=f32(cols[6]),
    )


def read_kmall_world(source: PathLike | bytes | KmallLog, origin: Origin, vertical: str = "waterline",
                     include_rejected: bool = False) -> tuple[Sweep, np.ndarray]:
    """All soundings in the scene's ENU world frame: ``(sweep, xyz_world_f64)``.

    ``sweep.xyz`` is ``(N, 3) float32`` world metres relative to ``origin`` (frame
    ``"world"``), ``timestamp_ns`` the first ping time, ``time_offset_ns`` each sounding's
    ping time minus it; extras carry ``ping_index``, ``beam_angle_deg``, ``quality_factor``,
    ``detection_type``... ``xyz_world_f64`` is the same ``(N, 3) float64``. ``vertical``:
    ``"waterline"`` puts the waterline at the origin's height, ``"ellipsoid"`` uses the
    reference point's ellipsoid height from the ping. Rejected detections are dropped
    unless ``include_rejected`` (then ``extra["detection_type"] == 2`` flags them).
    """
    if vertical not in ("waterline", "ellipsoid"):
        raise ValueError(f"vertical must be 'waterline' or 'ellipsoid', got {vertical!r}")
    log = source if isinstance(source, KmallLog) else read_kmall(source)
    p = log.pings
    if vertical == "waterline":
        base, z_offset = np.full(p.num_pings, origin.alt_m), p.z_water_level_m
    else:
        base, z_offset = p.ellipsoid_height_m, np.zeros(p.num_pings)
    world = soundings_to_world(p.latitude_deg, p.longitude_deg, p.heading_deg, base, z_offset,
                               p.sounding_start, p.x_m, p.y_m, p.z_m, origin)
    ping = p.ping_of_sounding
    t0 = int(p.time_ns[0]) if p.num_pings else 0
    keep = slice(None) if include_rejected else p.detection_type != DETECTION_REJECTED
    sweep = Sweep(
        xyz=world[keep], timestamp_ns=t0, intensity=p.reflectivity_db[keep],
        time_offset_ns=(p.time_ns[ping] - t0)[keep], frame="world",
        extra=_sounding_extra(p, keep, ping[keep]),
    )
    return sweep, np.ascontiguousarray(world[keep])


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
_KMB = struct.Struct("<4sHHIIIdd21f")  # 120 bytes
_DELAYED = struct.Struct("<IIf")


def _mrz_body(p: MrzPings, i: int) -> bytes:
    a, b = int(p.sounding_start[i]), int(p.sounding_start[i + 1])
    count = b - a
    cmn = _CMN.pack(_CMN.size, int(p.ping_counter[i]), 1, int(p.rx_fan_index[i]), 1, 0, 0, 0, 1, 0)
    info = _PING_INFO_V3.pack(
        _PING_INFO_V3.size, 0, 0.0, 0, 0, 0, 0, 0, 0, 0, *([0.0] * 11), 0, 0, 0, 0, 0, 0, 0.0, 0.0, 0.0, 0, 0, 0.0,
        1, _TX_SECTOR_V1.size, float(p.heading_deg[i]), float(p.sound_speed_m_s[i]),
        float(p.tx_transducer_depth_m[i]), float(p.z_water_level_m[i]), 0.0, 0.0, 1, 0, 0, 0,
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


def _skm_body(att: SkmSamples, a: int, b: int) -> bytes:
    info = _SKM_INFO.pack(_SKM_INFO.size, 0, 0, 1, b - a, _KMB.size + _DELAYED.size, 0b1111111)
    parts = [info]
    for k in range(a, b):
        sec, nsec = divmod(int(att.time_ns[k]), 1_000_000_000)
        dsec, dnsec = divmod(int(att.delayed_heave_time_ns[k]), 1_000_000_000)
        floats = [float(att.ellipsoid_height_m[k]), float(att.roll_deg[k]), float(att.pitch_deg[k]),
                  float(att.heading_deg[k]), float(att.heave_m[k])] + [0.0] * 16
        parts.append(_KMB.pack(b"#KMB", _KMB.size, 1, sec, nsec, int(att.status[k]),
                               float(att.latitude_deg[k]), float(att.longitude_deg[k]), *floats))
        parts.append(_DELAYED.pack(dsec, dnsec, float(np.nan_to_num(att.delayed_heave_m[k]))))
    return b"".join(parts)


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
            records.append((t, 1, _datagram(b"#SKM", 1, t, _skm_body(attitude, a, b), echo_sounder_id, 0)))
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
    "index_datagrams", "parse_install_text",
]