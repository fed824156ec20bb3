"""WGS84 geodetic ⇄ ECEF ⇄ local ENU around a scene origin, float64, closed-form.

Geodetic coordinates are latitude/longitude in degrees and height in metres above the
WGS84 ellipsoid. ECEF is the Earth-centred, Earth-fixed frame in metres. The scene's world
frame is the local ENU (x east, y north, z up) tangent frame at an :class:`Origin`.

Forward conversion is the textbook formula; ECEF → geodetic is Vermeille's (2004) exact
closed form (no iteration), valid everywhere outside a ~40 km ball around the Earth's
centre. The ``*_scalar`` helpers are numba-inlined into other kernels (georeferencing,
GNSS pose sources) so there is one implementation of each formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine._jit import inline, pjit, prange

WGS84_A = 6378137.0  #: semi-major axis, metres
WGS84_F = 1.0 / 298.257223563  #: flattening
WGS84_E2 = WGS84_F * (2.0 - WGS84_F)  #: first eccentricity squared
WGS84_B = WGS84_A * (1.0 - WGS84_F)  #: semi-minor axis, metres

_DEG = math.pi / 180.0

# (lat_deg, lon_deg, alt_m): (N,) float64 arrays for (N, 3) points, floats for one (3,) point; the
# two cases differ only in the input's shape, which the annotation cannot tell apart
GeodeticTriple = tuple[Any, Any, Any]


# ---------------------------------------------------------------- numba scalar helpers


@inline
def geodetic_to_ecef_scalar(lat_rad, lon_rad, h):
    """ECEF ``(x, y, z)`` metres of one geodetic point (radians, metres)."""
    s = math.sin(lat_rad)
    c = math.cos(lat_rad)
    n = WGS84_A / math.sqrt(1.0 - WGS84_E2 * s * s)
    return (n + h) * c * math.cos(lon_rad), (n + h) * c * math.sin(lon_rad), (n * (1.0 - WGS84_E2) + h) * s


@inline
def ecef_to_geodetic_scalar(x, y, z):
    """Geodetic ``(lat_rad, lon_rad, h)`` of one ECEF point (Vermeille 2004, exact)."""
    e4 = WGS84_E2 * WGS84_E2
    a2 = WGS84_A * WGS84_A
    rho2 = x * x + y * y
    p = rho2 / a2
    q = (1.0 - WGS84_E2) * z * z / a2
    r = (p + q - e4) / 6.0
    s = e4 * p * q / (4.0 * r * r * r)
    t = (1.0 + s + math.sqrt(s * (2.0 + s))) ** (1.0 / 3.0)
    u = r * (1.0 + t + 1.0 / t)
    v = math.sqrt(u * u + e4 * q)
    w = WGS84_E2 * (u + v - q) / (2.0 * v)
    k = math.sqrt(u + v + w * w) - w
    rho = math.sqrt(rho2)
    d = k * rho / (k + WGS84_E2)
    dz = math.sqrt(d * d + z * z)
    lat = 2.0 * math.atan2(z, d + dz)
    lon = math.atan2(y, x)
    h = (k + WGS84_E2 - 1.0) / k * dz
    return lat, lon, h


@inline
def enu_from_ecef_rotate(lat_rad, lon_rad, dx, dy, dz):
    """Rotate an ECEF vector into the ENU axes at (lat, lon)."""
    sl = math.sin(lat_rad)
    cl = math.cos(lat_rad)
    so = math.sin(lon_rad)
    co = math.cos(lon_rad)
    e = -so * dx + co * dy
    n = -sl * co * dx - sl * so * dy + cl * dz
    u = cl * co * dx + cl * so * dy + sl * dz
    return e, n, u


@inline
def ecef_from_enu_rotate(lat_rad, lon_rad, e, n, u):
    """Rotate an ENU vector at (lat, lon) into ECEF axes (transpose of the above)."""
    sl = math.sin(lat_rad)
    cl = math.cos(lat_rad)
    so = math.sin(lon_rad)
    co = math.cos(lon_rad)
    dx = -so * e - sl * co * n + cl * co * u
    dy = co * e - sl * so * n + cl * so * u
    dz = cl * n + sl * u
    return dx, dy, dz


# ---------------------------------------------------------------- kernels


@pjit
def _geodetic_to_enu_kernel(lat, lon, h, olat, olon, ox, oy, oz, out):
    for i in prange(lat.shape[0]):
        x, y, z = geodetic_to_ecef_scalar(lat[i] * _DEG, lon[i] * _DEG, h[i])
        e, n, u = enu_from_ecef_rotate(olat, olon, x - ox, y - oy, z - oz)
        out[i, 0] = e
        out[i, 1] = n
        out[i, 2] = u


@pjit
def _enu_to_geodetic_kernel(enu, olat, olon, ox, oy, oz, lat, lon, h):
    for i in prange(enu.shape[0]):
        dx, dy, dz = ecef_from_enu_rotate(olat, olon, enu[i, 0], enu[i, 1], enu[i, 2])
        la, lo, hh = ecef_to_geodetic_scalar(ox + dx, oy + dy, oz + dz)
        lat[i] = la / _DEG
        lon[i] = lo / _DEG
        h[i] = hh


@pjit
def _geodetic_to_ecef_kernel(lat, lon, h, out):
    for i in prange(lat.shape[0]):
        x, y, z = geodetic_to_ecef_scalar(lat[i] * _DEG, lon[i] * _DEG, h[i])
        out[i, 0] = x
        out[i, 1] = y
        out[i, 2] = z


@pjit
def _ecef_to_geodetic_kernel(xyz, lat, lon, h):
    for i in prange(xyz.shape[0]):
        la, lo, hh = ecef_to_geodetic_scalar(xyz[i, 0], xyz[i, 1], xyz[i, 2])
        lat[i] = la / _DEG
        lon[i] = lo / _DEG
        h[i] = hh


# ---------------------------------------------------------------- public API


@dataclass(frozen=True)
class Origin:
    """The scene origin: the geodetic point where the world ENU frame is tangent.

    Attributes:
        lat_deg: latitude in degrees, [-90, 90].
        lon_deg: longitude in degrees, [-180, 360).
        alt_m: height above the WGS84 ellipsoid in metres (world z = 0 there).
    """

    lat_deg: float
    lon_deg: float
    alt_m: float = 0.0

    def __post_init__(self) -> None:
        for name in ("lat_deg", "lon_deg", "alt_m"):
            value = float(getattr(self, name))
            if not math.isfinite(value):
                raise ValueError(f"Origin.{name} must be finite, got {value}")
            object.__setattr__(self, name, value)
        if not -90.0 <= self.lat_deg <= 90.0:
            raise ValueError(f"Origin.lat_deg must lie in [-90, 90], got {self.lat_deg}")
        if not -180.0 <= self.lon_deg < 360.0:
            raise ValueError(f"Origin.lon_deg must lie in [-180, 360), got {self.lon_deg}")

    @property
    def ecef(self) -> np.ndarray:
        """``(3,) float64`` ECEF position of the origin, metres."""
        return np.array(geodetic_to_ecef_scalar(self.lat_deg * _DEG, self.lon_deg * _DEG, self.alt_m))

    @property
    def enu_from_ecef(self) -> np.ndarray:
        """``(3, 3) float64`` rotation taking ECEF vectors into the origin's ENU axes."""
        return enu_rotation(self.lat_deg, self.lon_deg)


def enu_rotation(lat_deg: float, lon_deg: float) -> np.ndarray:
    """``(3, 3)`` rotation ``enu_from_ecef`` at a geodetic point (rows: east, north, up)."""
    sl, cl = math.sin(lat_deg * _DEG), math.cos(lat_deg * _DEG)
    so, co = math.sin(lon_deg * _DEG), math.cos(lon_deg * _DEG)
    return np.array([[-so, co, 0.0], [-sl * co, -sl * so, cl], [cl * co, cl * so, sl]])


def _geodetic_arrays(lat_deg, lon_deg, alt_m) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    scalar = np.ndim(lat_deg) == 0 and np.ndim(lon_deg) == 0 and np.ndim(alt_m) == 0
    try:
        lat, lon, alt = np.broadcast_arrays(
            np.asarray(lat_deg, dtype=np.float64), np.asarray(lon_deg, dtype=np.float64),
            np.asarray(alt_m, dtype=np.float64),
        )
    except ValueError:
        raise ValueError(
            f"lat_deg, lon_deg, alt_m must broadcast together, got shapes "
            f"{np.shape(lat_deg)}, {np.shape(lon_deg)}, {np.shape(alt_m)}"
        ) from None
    if lat.ndim > 1:
        raise ValueError(f"lat_deg/lon_deg/alt_m must be scalars or (N,), got shape {lat.shape}")
    lat, lon, alt = (np.ascontiguousarray(np.atleast_1d(a)) for a in (lat, lon, alt))
    for name, arr in (("lat_deg", lat), ("lon_deg", lon), ("alt_m", alt)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(np.abs(lat) > 90.0):
        raise ValueError(f"lat_deg must lie in [-90, 90], got values up to {np.abs(lat).max()}")
    return lat, lon, alt, scalar


def _points(xyz: np.ndarray, name: str) -> tuple[np.ndarray, bool]:
    arr = np.asarray(xyz, dtype=np.float64)
    scalar = arr.ndim == 1
    arr = np.ascontiguousarray(np.atleast_2d(arr))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} must have shape (3,) or (N, 3), got {np.shape(xyz)}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr, scalar


def geodetic_to_ecef(lat_deg, lon_deg, alt_m) -> np.ndarray:
    """ECEF positions ``(N, 3) float64`` (or ``(3,)`` for scalars) of geodetic points."""
    lat, lon, alt, scalar = _geodetic_arrays(lat_deg, lon_deg, alt_m)
    out = np.empty((len(lat), 3))
    _geodetic_to_ecef_kernel(lat, lon, alt, out)
    return out[0] if scalar else out


def ecef_to_geodetic(xyz: np.ndarray) -> GeodeticTriple:
    """``(lat_deg, lon_deg, alt_m)`` float64 arrays ``(N,)`` (or floats) of ECEF ``(N, 3)``/``(3,)``."""
    p, scalar = _points(xyz, "xyz")
    if len(p) and np.min(np.linalg.norm(p, axis=1)) < 100e3:
        raise ValueError("ecef_to_geodetic: a point lies within 100 km of the Earth's centre")
    lat, lon, h = (np.empty(len(p)) for _ in range(3))
    _ecef_to_geodetic_kernel(p, lat, lon, h)
    if scalar:
        return float(lat[0]), float(lon[0]), float(h[0])
    return lat, lon, h


def geodetic_to_enu(lat_deg, lon_deg, alt_m, origin: Origin) -> np.ndarray:
    """Local ENU ``(N, 3) float64`` metres (or ``(3,)``) of geodetic points around ``origin``."""
    lat, lon, alt, scalar = _geodetic_arrays(lat_deg, lon_deg, alt_m)
    o = origin.ecef
    out = np.empty((len(lat), 3))
    _geodetic_to_enu_kernel(lat, lon, alt, origin.lat_deg * _DEG, origin.lon_deg * _DEG, o[0], o[1], o[2], out)
    return out[0] if scalar else out


def enu_to_geodetic(enu: np.ndarray, origin: Origin) -> GeodeticTriple:
    """``(lat_deg, lon_deg, alt_m)`` of local ENU points ``(N, 3)``/``(3,)`` around ``origin``."""
    p, scalar = _points(enu, "enu")
    o = origin.ecef
    lat, lon, h = (np.empty(len(p)) for _ in range(3))
    _enu_to_geodetic_kernel(p, origin.lat_deg * _DEG, origin.lon_deg * _DEG, o[0], o[1], o[2], lat, lon, h)
    if scalar:
        return float(lat[0]), float(lon[0]), float(h[0])
    return lat, lon, h


def ecef_to_enu(xyz: np.ndarray, origin: Origin) -> np.ndarray:
    """ECEF ``(N, 3)``/``(3,)`` → local ENU around ``origin``, float64 metres."""
    p, scalar = _points(xyz, "xyz")
    out = (p - origin.ecef) @ origin.enu_from_ecef.T
    return out[0] if scalar else out


def enu_to_ecef(enu: np.ndarray, origin: Origin) -> np.ndarray:
    """Local ENU ``(N, 3)``/``(3,)`` around ``origin`` → ECEF, float64 metres."""
    p, scalar = _points(enu, "enu")
    out = p @ origin.enu_from_ecef + origin.ecef
    return out[0] if scalar else out


def _warmup() -> None:
    origin = Origin(50.0, 3.0, 0.0)
    enu = geodetic_to_enu(np.array([50.0]), np.array([3.0]), np.array([1.0]), origin)
    enu_to_geodetic(enu, origin)
    ecef_to_geodetic(geodetic_to_ecef(np.array([50.0]), np.array([3.0]), np.array([1.0])))
