"""Generic Sensor Format (GSF, Leidos/SAIC for the US Navy): swath bathymetry pings.

A GSF file is a sequence of big-endian records: ``uint32 dataSize``, ``uint32 recordId``
(bit 31: a ``uint32`` checksum follows; low 22 bits: the record type), then ``dataSize``
bytes (padded to a multiple of 4). The header record (type 1) holds the version text
``GSF-vMM.mm``. A swath bathymetry ping (type 2) starts with time (s, ns), longitude and
latitude (1e-7°), number of beams, centre beam, ping flags, reserved, tide corrector (cm),
depth corrector (cm), heading, pitch, roll (0.01°), heave (cm), course (0.01°), speed
(0.01 kn) and, from version 3, height, separation and GPS tide corrector (mm) and 2 spare
bytes. Subrecords follow, each ``uint32`` id (high byte) and size (low 24 bits): the scale
factors (id 100: per array id, multiplier and offset, kept for later pings of the file)
and the beam arrays, one value of 1, 2 or 4 bytes per beam, ``value = stored /
multiplier − offset`` (gsf_dec.c). Beam and ping flags are plain bytes / a word; bit 0
(``GSF_IGNORE_BEAM`` / ``GSF_IGNORE_PING``) marks data to ignore. A missing position is
written as latitude 91 / longitude 181 (``GSF_NULL_LATITUDE`` / ``GSF_NULL_LONGITUDE``).

Depth is positive down from the waterline (corrected), across-track positive to
starboard, along-track positive forward: the Kongsberg SCS axes, so
:func:`read_gsf_world` places the soundings through the same chain as KMALL and ``.all``.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

import numpy as np

from engine.geodesy import Origin
from engine.sweep import Sweep
from formats.errors import FormatError, load_source
from formats.sonar_world import PingPoses, SonarWorld, place_soundings

PathLike = str | os.PathLike
RECORD_HEADER, RECORD_SWATH_PING = 1, 2
IGNORE_BEAM = 0x01
IGNORE_PING = 0x0001
NULL_LATITUDE, NULL_LONGITUDE = 91.0, 181.0
SCALE_FACTORS = 100
_MAX_ARRAY_ID = 30
# array subrecord id -> (column, signed)
ARRAYS = {1: ("depth_m", False), 2: ("across_track_m", True), 3: ("along_track_m", True),
          4: ("travel_time_s", False), 5: ("beam_angle_deg", True), 6: ("mean_cal_amplitude_db", True),
          7: ("mean_rel_amplitude_db", False), 9: ("quality_factor", False)}
_BEAM_FLAGS_ID = 16
_PING_V2 = struct.Struct(">IIiiHHHHhiHhhhHH")  # 42 bytes
_PING_V3_EXTRA = struct.Struct(">iii2x")  # height, separation, GPS tide corrector (mm), spare
_PING_FIELDS = ("time_ns", "latitude_deg", "longitude_deg", "ping_flags", "tide_corrector_m",
                "depth_corrector_m", "heading_deg", "pitch_deg", "roll_deg", "heave_m", "course_deg",
                "speed_knots", "height_m", "separation_m", "record_offset")


@dataclass
class GsfPings:
    """Swath bathymetry pings in CSR form.

    ``ping``: per ping ``(P,)`` columns ``time_ns``, ``ping_flags``, ``record_offset``
    (``int64``) and ``float64`` ``latitude_deg``, ``longitude_deg``, ``tide_corrector_m``,
    ``depth_corrector_m``, ``heading_deg``, ``pitch_deg``, ``roll_deg``, ``heave_m``,
    ``course_deg``, ``speed_knots``, ``height_m``, ``separation_m`` (NaN before version 3).
    ``start (P + 1,) int64`` splits the beams. ``beam``: per beam ``(N,)`` ``float64`` arrays
    named in :data:`ARRAYS` (metres, seconds, degrees from vertical, dB) and ``beam_flags
    uint8``, each only if some ping has it (NaN / 0 in the pings without it). ``version``: the header's
    ``GSF-vMM.mm`` text; ``counts``: records per type; ``path``: the file (None for bytes).
    """

    ping: dict[str, np.ndarray]
    start: np.ndarray
    beam: dict[str, np.ndarray]
    version: str = ""
    counts: dict[int, int] = field(default_factory=dict)
    path: str | os.PathLike | None = None

    @property
    def num_pings(self) -> int:
        return len(self.start) - 1


def _array(buf: bytes, at: int, nbeams: int, size: int, signed: bool, scale: np.ndarray, path,
           sid: int) -> np.ndarray:
    if size not in (nbeams, 2 * nbeams, 4 * nbeams):
        raise FormatError(path, at - 4, f"beam array {sid}: 1, 2 or 4 bytes for each of {nbeams} beams, "
                                        f"found a {size}-byte subrecord")
    if not scale[0] > 0:
        raise FormatError(path, at - 4, f"beam array {sid}: a positive scale factor multiplier before it")
    kind = ("i" if signed else "u") + str(size // nbeams)
    raw = np.frombuffer(buf, ">" + kind, nbeams, at)
    return raw / scale[0] - scale[1]


def _scale_factors(buf: bytes, at: int, size: int, path, table: np.ndarray) -> None:
    """Update ``table (_MAX_ARRAY_ID + 1, 2)`` (multiplier, offset per array id) from the
    scale-factor subrecord at ``at``."""
    n = struct.unpack_from(">I", buf, at)[0] if size >= 4 else -1
    if not 1 <= n <= _MAX_ARRAY_ID or 4 + 12 * n > size:
        raise FormatError(path, at, f"1..{_MAX_ARRAY_ID} scale factors of 12 bytes in the {size}-byte subrecord, "
                                    f"found a count of {n}")
    rows = np.frombuffer(buf, ">u4", 3 * n, at + 4).reshape(n, 3)
    ids = rows[:, 0] >> 24
    if ids.min() < 1 or ids.max() > _MAX_ARRAY_ID:
        raise FormatError(path, at, f"scale factors for array ids 1..{_MAX_ARRAY_ID}, found ids {ids.tolist()}")
    table[ids, 0] = rows[:, 1]
    table[ids, 1] = rows[:, 2].astype(np.uint32).view(np.int32)


def _ping(buf: bytes, p: int, end: int, major: int, path, table: np.ndarray, offset: int) -> tuple[tuple, dict, int]:
    """One swath ping record at ``p`` (ending at ``end``): ``(ping row, beam arrays, beams)``."""
    fixed = _PING_V2.size + (_PING_V3_EXTRA.size if major > 2 else 0)
    if p + fixed > end:
        raise FormatError(path, p, f"a {fixed}-byte swath ping header inside the record ending at byte {end}")
    (sec, nsec, lon, lat, nbeams, _, flags, _, tide, depth_corr, heading, pitch, roll, heave, course,
     speed) = _PING_V2.unpack_from(buf, p)
    height = sep = np.nan
    if major > 2:
        h, s, _ = _PING_V3_EXTRA.unpack_from(buf, p + _PING_V2.size)
        height, sep = h / 1000.0, s / 1000.0
    if nbeams == 0:
        raise FormatError(path, p + 16, "a swath ping with at least one beam, found 0")
    row = (sec * 1_000_000_000 + nsec, lat / 1e7, lon / 1e7, flags, tide / 100.0, depth_corr / 100.0,
           heading / 100.0, pitch / 100.0, roll / 100.0, heave / 100.0, course / 100.0, speed / 100.0, height, sep,
           offset)
    arrays: dict = {}
    q = p + fixed
    while end - q > 4:
        word = struct.unpack_from(">I", buf, q)[0]
        sid, size = word >> 24, word & 0xFFFFFF
        body = q + 4
        if body + size > end:
            raise FormatError(path, q, f"subrecord {sid} of {size} bytes inside the record ending at byte {end}")
        if sid == SCALE_FACTORS:
            _scale_factors(buf, body, size, path, table)
        elif sid in ARRAYS:
            arrays[ARRAYS[sid][0]] = _array(buf, body, nbeams, size, ARRAYS[sid][1], table[sid], path, sid)
        elif sid == _BEAM_FLAGS_ID:
            if size != nbeams:
                raise FormatError(path, q, f"beam flags: one byte for each of {nbeams} beams, found {size} bytes")
            arrays["beam_flags"] = np.frombuffer(buf, np.uint8, nbeams, body)
        q = body + size
    return row, arrays, nbeams


def read_gsf(source: PathLike | bytes) -> GsfPings:
    """Decode the swath bathymetry pings of a GSF file (path or bytes).

    Other record types are counted and skipped. Bad input raises :class:`FormatError`."""
    path, buf = load_source(source)
    o, end = 0, len(buf)
    counts: dict[int, int] = {}
    version, major = "", 0
    table = np.zeros((_MAX_ARRAY_ID + 1, 2))  # scale factors (multiplier, offset) by array id, 0: none yet
    rows, per_ping, nbeams = [], [], []
    while o < end:
        if o + 8 > end:
            raise FormatError(path, o, f"an 8-byte GSF record header, found {end - o} bytes")
        size, rid = struct.unpack_from(">II", buf, o)
        d = o + 8 + (4 if rid & 0x80000000 else 0)
        rtype = rid & 0x3FFFFF
        if d + size > end:
            raise FormatError(path, o, f"a record of {size} bytes, the file ends after {end - d}")
        counts[rtype] = counts.get(rtype, 0) + 1
        if rtype == RECORD_HEADER:
            version = buf[d: d + size].split(b"\0", 1)[0].decode("ascii", errors="replace")
            m = re.match(r"GSF-v(\d+)\.", version)
            if m is None:
                raise FormatError(path, d, f"a GSF version text 'GSF-vMM.mm', found {version[:16]!r}")
            major = int(m.group(1))
        elif rtype == RECORD_SWATH_PING:
            if not version:
                raise FormatError(path, o, "the GSF header record before the first ping")
            row, arrays, n = _ping(buf, d, d + size, major, path, table, o)
            rows.append(row)
            per_ping.append(arrays)
            nbeams.append(n)
        o = d + size
    if not version:
        raise FormatError(path, 0, "a GSF header record (type 1)")
    return _collect(rows, per_ping, nbeams, version, counts, path)


def _collect(rows: list[tuple], per_ping: list[dict], nbeams: list[int], version: str, counts: dict,
             path) -> GsfPings:
    cols = list(zip(*rows)) if rows else [()] * len(_PING_FIELDS)
    ints = ("time_ns", "ping_flags", "record_offset")
    ping = {k: np.asarray(c, np.int64 if k in ints else np.float64) for k, c in zip(_PING_FIELDS, cols)}
    start = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(nbeams, out=start[1:])
    beam = {}
    for name in [n for n, _ in ARRAYS.values()] + ["beam_flags"]:
        dtype, fill = (np.uint8, 0) if name == "beam_flags" else (np.float64, np.nan)
        if not any(name in arrays for arrays in per_ping):
            continue
        beam[name] = np.concatenate([arrays[name] if name in arrays else np.full(n, fill, dtype)
                                     for arrays, n in zip(per_ping, nbeams)]).astype(dtype, copy=False)
    return GsfPings(ping=ping, start=start, beam=beam, version=version, counts=counts, path=path)


def read_gsf_world(source: PathLike | bytes | GsfPings, origin: Origin, include_flagged: bool = False
                   ) -> SonarWorld:
    """The soundings of a GSF file in the scene's ENU world frame.

    Each ping is placed at its latitude/longitude and heading; depth below the waterline
    puts the waterline at the origin's height. Pings flagged ignore (ping flags bit 0) or
    without a position (91°/181°) are unplaced; beams flagged ignore (beam flags bit 0) or
    without a depth are dropped unless ``include_flagged``; along-track is 0 in pings
    without that array, intensity the mean calibrated amplitude (NaN without it). Extras: ``ping_index``,
    ``pose_extrapolated`` (always False), ``beam_flags``, ``beam_angle_deg``,
    ``travel_time_s``.
    """
    g = source if isinstance(source, GsfPings) else read_gsf(source)
    pg, n = g.ping, g.num_pings
    null = (pg["latitude_deg"] == NULL_LATITUDE) | (pg["longitude_deg"] == NULL_LONGITUDE)
    ignored = (pg["ping_flags"] & IGNORE_PING) != 0
    b = g.beam
    for name, sid in (("depth_m", 1), ("across_track_m", 2)):
        if name not in b:
            raise FormatError(g.path, None, f"a {name} array (subrecord {sid}) in the swath pings")
    unplaced = [(int(i), "ping flagged ignore (ping flags bit 0)" if ignored[i] else "no position (91/181)")
                for i in np.flatnonzero(null | ignored)]
    poses = PingPoses(pg["latitude_deg"], pg["longitude_deg"], pg["heading_deg"], np.full(n, origin.alt_m),
                      np.zeros(n), pg["time_ns"], pg["record_offset"], ~(null | ignored), np.zeros(n, bool), unplaced)
    total = int(g.start[-1])
    nan = np.full(total, np.nan)
    flags = b.get("beam_flags", np.zeros(total, np.uint8))
    has_xyz = ~(np.isnan(b["depth_m"]) | np.isnan(b["across_track_m"]))
    keep = has_xyz if include_flagged else has_xyz & ((flags & IGNORE_BEAM) == 0)
    along = np.nan_to_num(b.get("along_track_m", nan), nan=0.0)
    return place_soundings(g.path, poses, g.start, along, np.nan_to_num(b["across_track_m"]),
                           np.nan_to_num(b["depth_m"]), keep, b.get("mean_cal_amplitude_db", nan),
                           {"beam_flags": flags, "beam_angle_deg": b.get("beam_angle_deg", nan),
                            "travel_time_s": b.get("travel_time_s", nan)}, origin)


def read_gsf_sweep(path: PathLike, origin: Origin | None = None, include_flagged: bool = False) -> Sweep:
    """:func:`read_gsf_world`'s sweep, for :mod:`formats.registry`: the world frame around
    ``origin``, by default the first placed ping's position at height 0."""
    g = read_gsf(path)
    if origin is None:
        ok = np.flatnonzero((g.ping["latitude_deg"] != NULL_LATITUDE) & ((g.ping["ping_flags"] & IGNORE_PING) == 0))
        if not len(ok):
            raise FormatError(path, None, "a swath ping with a position to centre the scene on")
        origin = Origin(float(g.ping["latitude_deg"][ok[0]]), float(g.ping["longitude_deg"][ok[0]]), 0.0)
    return read_gsf_world(g, origin, include_flagged).sweep
