"""KMALL sensor datagrams: ``#SKM`` attitude/position samples and ``#SPO`` position fixes,
their validity flags, and the vessel pose track built from the valid samples only.

``#SKM`` holds an info part and ``numSamplesArray`` samples of ``numBytesPerSample`` bytes:
a 120-byte KM-binary record (``#KMB``) and, from datagram version 1, 12 bytes of delayed
heave. Every sample's ``#KMB`` marker and stated length are checked, so a damaged sample
size is an error, not a stream of shifted numbers. The ``KMbinary.status`` word marks
invalid data per quantity (bits 0–7) and reduced performance (bits 16–23); the pose bits
are :data:`KMB_INVALID_POSITION`, :data:`KMB_INVALID_ROLL_PITCH`, :data:`KMB_INVALID_HEADING`
and :data:`KMB_INVALID_HEAVE` (Kongsberg KMALL spec, ``KMbinary_def``). ``#SPO`` carries a
``sensorStatus`` (bit 4: invalid data) and marks a missing position as latitude/longitude
200° (``UNAVAILABLE_LATITUDE``/``UNAVAILABLE_LONGITUDE``).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from engine.geodesy import Origin
from engine.georeference import vessel_pose_track
from engine.pose_track import PoseTrack
from formats.errors import FormatError

KMB_INVALID_POSITION = 1 << 0  # horizontal position and velocity
KMB_INVALID_ROLL_PITCH = 1 << 1
KMB_INVALID_HEADING = 1 << 2
KMB_INVALID_HEAVE = 1 << 3
KMB_POSE_INVALID = KMB_INVALID_POSITION | KMB_INVALID_ROLL_PITCH | KMB_INVALID_HEADING
SENSOR_STATUS_INVALID = 1 << 4  # #SPO / #SKM info sensorStatus: invalid data
UNAVAILABLE_DEG = 200.0  # KMALL's UNAVAILABLE_LATITUDE / UNAVAILABLE_LONGITUDE

_HEADER_SIZE = 20
# numBytesInfoPart, sensorSystem, sensorStatus, format, count, per sample, contents
_SKM_INFO = struct.Struct("<HBBHHHH")
_KMB_MIN = 120
_KMB_FIELDS = [
    ("marker", "S4", 0), ("kmb_num_bytes", "<u2", 4),
    ("time_sec", "<u4", 8), ("time_nanosec", "<u4", 12), ("status", "<u4", 16),
    ("latitude_deg", "<f8", 20), ("longitude_deg", "<f8", 28), ("ellipsoid_height_m", "<f4", 36),
    ("roll_deg", "<f4", 40), ("pitch_deg", "<f4", 44), ("heading_deg", "<f4", 48), ("heave_m", "<f4", 52),
]
_DELAYED_HEAVE_FIELDS = [("dh_time_sec", "<u4", 120), ("dh_time_nanosec", "<u4", 124), ("delayed_heave_m", "<f4", 128)]
_S_CMN = struct.Struct("<4H")  # numBytesCmnPart, sensorSystem, sensorStatus, padding
_SPO = struct.Struct("<IIfddfff")
_KMB = struct.Struct("<4sHHIIIdd21f")  # 120 bytes
_DELAYED = struct.Struct("<IIf")


def plausible_position(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """``(K,) bool``: finite, on the globe, and not the (0, 0) a sensor writes when it has no fix."""
    lat = np.asarray(lat_deg, np.float64)
    lon = np.asarray(lon_deg, np.float64)
    with np.errstate(invalid="ignore"):
        return (np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (np.abs(lon) <= 180)
                & ~((lat == 0) & (lon == 0)))


@dataclass
class SkmSamples:
    """``#SKM`` KM-binary samples ``(K,)`` in file order, uncorrected sensor values.

    ``time_ns int64`` (sensor time, UNIX ns), ``status uint32`` (``KMbinary.status``),
    ``latitude_deg``/``longitude_deg float64``, ``ellipsoid_height_m``, ``roll_deg``
    (positive port up), ``pitch_deg`` (positive bow up), ``heading_deg`` (clockwise from
    north), ``heave_m`` (positive down) ``float32``; ``delayed_heave_time_ns int64`` and
    ``delayed_heave_m float32`` (NaN/0 where the samples carry none).
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

    @property
    def pose_valid(self) -> np.ndarray:
        """``(K,) bool``: no invalid bit for position, roll/pitch or heading, a plausible
        position and finite attitude. Only these samples may become poses."""
        finite = np.isfinite(self.roll_deg) & np.isfinite(self.pitch_deg) & np.isfinite(self.heading_deg)
        finite &= np.isfinite(self.ellipsoid_height_m)
        return ((self.status & KMB_POSE_INVALID) == 0) & finite & plausible_position(self.latitude_deg,
                                                                                     self.longitude_deg)


@dataclass
class SpoSamples:
    """``#SPO`` position samples ``(K,)``: ``time_ns int64`` (sensor time), ``latitude_deg``,
    ``longitude_deg float64`` (motion-corrected, reference point), ``ellipsoid_height_m``,
    ``speed_over_ground_m_s``, ``course_over_ground_deg``, ``fix_quality_m float32``,
    ``sensor_status uint16`` (bit 4: invalid data)."""

    time_ns: np.ndarray
    latitude_deg: np.ndarray
    longitude_deg: np.ndarray
    ellipsoid_height_m: np.ndarray
    speed_over_ground_m_s: np.ndarray
    course_over_ground_deg: np.ndarray
    fix_quality_m: np.ndarray
    sensor_status: np.ndarray

    def __len__(self) -> int:
        return len(self.time_ns)

    @property
    def valid(self) -> np.ndarray:
        """``(K,) bool``: sensor status not invalid and a plausible position (200° = unavailable)."""
        return ((self.sensor_status & SENSOR_STATUS_INVALID) == 0) & plausible_position(self.latitude_deg,
                                                                                        self.longitude_deg)


def _need(path, at: int, size: int, end: int, what: str) -> None:
    if at + size > end:
        raise FormatError(path, at, f"{what} ({size} bytes) inside the datagram, which ends at byte {end}")


def skm_samples(buf, o: int, n: int, path) -> np.ndarray:
    """The ``#SKM`` datagram at ``o`` (``n`` bytes) as a structured view ``(count,)``.

    The samples must fill the datagram exactly, and each must start with ``#KMB`` and state
    a length between 120 bytes and ``numBytesPerSample``.
    """
    end = o + n - 4
    i = o + _HEADER_SIZE
    _need(path, i, _SKM_INFO.size, end, "#SKM info part")
    nbytes_info, _, _, _, count, per_sample, _ = _SKM_INFO.unpack_from(buf, i)
    if nbytes_info < _SKM_INFO.size:
        raise FormatError(path, i, f"#SKM numBytesInfoPart >= {_SKM_INFO.size}, found {nbytes_info}")
    if count and per_sample < _KMB_MIN:
        raise FormatError(path, i + 8, f"#SKM numBytesPerSample >= {_KMB_MIN}, found {per_sample}")
    s = i + nbytes_info
    if s + count * per_sample != end:
        raise FormatError(path, i + 6, f"{count} #SKM samples of {per_sample} bytes ending at the datagram's end "
                                       f"(byte {end}), they end at byte {s + count * per_sample}")
    fields = _KMB_FIELDS + (_DELAYED_HEAVE_FIELDS if per_sample >= _KMB_MIN + _DELAYED.size else [])
    dt = np.dtype({"names": [f[0] for f in fields], "formats": [f[1] for f in fields],
                   "offsets": [f[2] for f in fields], "itemsize": per_sample})
    view = np.frombuffer(buf, dt, count, s)
    bad = np.flatnonzero((view["marker"] != b"#KMB") | (view["kmb_num_bytes"] < _KMB_MIN)
                         | (view["kmb_num_bytes"] > per_sample))
    if len(bad):
        k = int(bad[0])
        raise FormatError(path, s + k * per_sample, f"#SKM sample {k}: a '#KMB' record of {_KMB_MIN}.."
                                                    f"{per_sample} bytes, found {bytes(view['marker'][k])!r} "
                                                    f"stating {int(view['kmb_num_bytes'][k])} bytes")
    return view


def spo_row(buf, o: int, n: int, path) -> tuple:
    """One ``#SPO`` datagram: ``(time_ns, lat, lon, height, sog, cog, fix_quality, sensor_status)``."""
    end = o + n - 4
    c = o + _HEADER_SIZE
    _need(path, c, _S_CMN.size, end, "#SPO common part")
    nbytes, _, status, _ = _S_CMN.unpack_from(buf, c)
    if nbytes < _S_CMN.size:
        raise FormatError(path, c, f"#SPO numBytesCmnPart >= {_S_CMN.size}, found {nbytes}")
    d = c + nbytes
    _need(path, d, _SPO.size, end, "#SPO data block")
    sec, nsec, fix, lat, lon, sog, cog, h = _SPO.unpack_from(buf, d)
    return sec * 1_000_000_000 + nsec, lat, lon, h, sog, cog, fix, status


def skm_result(views: list[np.ndarray]) -> SkmSamples:
    """Concatenate :func:`skm_samples` views into :class:`SkmSamples`."""
    def col(name, dtype):
        parts = [v[name] if name in (v.dtype.names or ()) else np.zeros(len(v)) for v in views]
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype)

    sec, nsec = col("time_sec", np.int64), col("time_nanosec", np.int64)
    dsec, dnsec = col("dh_time_sec", np.int64), col("dh_time_nanosec", np.int64)
    dh = np.concatenate([
        v["delayed_heave_m"] if "delayed_heave_m" in (v.dtype.names or ()) else np.full(len(v), np.nan, np.float32)
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


def spo_result(rows: list[tuple]) -> SpoSamples:
    """:func:`spo_row` tuples as :class:`SpoSamples`."""
    cols = list(zip(*rows)) if rows else [()] * 8
    f32 = lambda c: np.asarray(c, np.float32)
    return SpoSamples(
        time_ns=np.asarray(cols[0], np.int64), latitude_deg=np.asarray(cols[1], np.float64),
        longitude_deg=np.asarray(cols[2], np.float64), ellipsoid_height_m=f32(cols[3]),
        speed_over_ground_m_s=f32(cols[4]), course_over_ground_deg=f32(cols[5]), fix_quality_m=f32(cols[6]),
        sensor_status=np.asarray(cols[7], np.uint16),
    )


def skm_pose_track(samples: SkmSamples, origin: Origin, path=None) -> PoseTrack:
    """``world_from_ego`` of the vessel reference point from the valid ``#SKM`` samples only
    (:attr:`SkmSamples.pose_valid`; ellipsoid heights). ``FormatError`` naming ``path`` when
    no sample is valid."""
    ok = samples.pose_valid
    if not ok.any():
        raise FormatError(path, None, f"at least one valid #SKM attitude/position sample, all {len(samples)} "
                                      f"are flagged invalid (KMbinary.status) or have no position")
    a = samples
    return vessel_pose_track(a.time_ns[ok], a.latitude_deg[ok], a.longitude_deg[ok], a.ellipsoid_height_m[ok],
                             a.roll_deg[ok], a.pitch_deg[ok], a.heading_deg[ok], origin)


def skm_body(att: SkmSamples, a: int, b: int) -> bytes:
    """The body of a version-1 ``#SKM`` datagram holding samples ``a:b`` (132 bytes each)."""
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
