"""WGS84 geodesy: known values, round trips, a NumPy reference, pyproj where installed."""

from __future__ import annotations

import numpy as np
import pytest

from engine.geodesy import (
    WGS84_A,
    WGS84_B,
    WGS84_E2,
    Origin,
    ecef_to_enu,
    ecef_to_geodetic,
    enu_to_ecef,
    enu_to_geodetic,
    geodetic_to_ecef,
    geodetic_to_enu,
)


def _ref_geodetic_to_ecef(lat, lon, h):
    lat, lon = np.radians(lat), np.radians(lon)
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
    return np.stack([(n + h) * np.cos(lat) * np.cos(lon), (n + h) * np.cos(lat) * np.sin(lon),
                     (n * (1 - WGS84_E2) + h) * np.sin(lat)], axis=-1)


def _ref_ecef_to_geodetic(xyz):
    """Fixed-point iteration on latitude (independent of the closed form under test)."""
    x, y, z = xyz.T
    p = np.hypot(x, y)
    lat = np.arctan2(z, p * (1 - WGS84_E2))
    for _ in range(20):
        n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
        h = p / np.cos(lat) - n
        lat = np.arctan2(z, p * (1 - WGS84_E2 * n / (n + h)))
    n = WGS84_A / np.sqrt(1 - WGS84_E2 * np.sin(lat) ** 2)
    return np.degrees(lat), np.degrees(np.arctan2(y, x)), p / np.cos(lat) - n


@pytest.fixture(scope="module")
def points():
    rng = np.random.default_rng(3)
    n = 2000
    return rng.uniform(-85, 85, n), rng.uniform(-180, 180, n), rng.uniform(-11000, 20000, n)


def test_known_ecef_values():
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 0.0, 0.0), [WGS84_A, 0, 0], atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(90.0, 0.0, 0.0), [0, 0, WGS84_B], atol=1e-9)
    np.testing.assert_allclose(geodetic_to_ecef(0.0, 90.0, 100.0), [0, WGS84_A + 100, 0], atol=1e-9)
    lat, lon, h = ecef_to_geodetic(np.array([0.0, 0.0, -WGS84_B - 5.0]))
    assert lat == pytest.approx(-90.0, abs=1e-12) and h == pytest.approx(5.0, abs=1e-8)


def test_matches_numpy_reference(points):
    lat, lon, h = points
    xyz = geodetic_to_ecef(lat, lon, h)
    np.testing.assert_allclose(xyz, _ref_geodetic_to_ecef(lat, lon, h), rtol=0, atol=1e-8)
    rlat, rlon, rh = _ref_ecef_to_geodetic(xyz)
    glat, glon, gh = ecef_to_geodetic(xyz)
    np.testing.assert_allclose(glat, rlat, atol=1e-11)
    np.testing.assert_allclose(glon, rlon, atol=1e-11)
    np.testing.assert_allclose(gh, rh, atol=1e-7)


def test_matches_pyproj(points):
    pyproj = pytest.importorskip("pyproj")
    lat, lon, h = points
    fwd = pyproj.Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
    xyz = np.stack(fwd.transform(lon, lat, h), axis=1)
    np.testing.assert_allclose(geodetic_to_ecef(lat, lon, h), xyz, rtol=0, atol=1e-6)
    glat, glon, gh = ecef_to_geodetic(xyz)
    np.testing.assert_allclose(glat, lat, atol=1e-9)
    np.testing.assert_allclose(glon, lon, atol=1e-9)
    np.testing.assert_allclose(gh, h, atol=1e-6)


def test_enu_round_trip_and_inverses():
    origin = Origin(51.3684659, 3.1392916, 12.5)
    rng = np.random.default_rng(5)
    enu = rng.uniform(-10_000, 10_000, (1000, 3))
    lat, lon, h = enu_to_geodetic(enu, origin)
    np.testing.assert_allclose(geodetic_to_enu(lat, lon, h, origin), enu, rtol=0, atol=1e-7)
    lat2, lon2, h2 = enu_to_geodetic(geodetic_to_enu(lat, lon, h, origin), origin)
    np.testing.assert_allclose(lat2, lat, atol=1e-9)
    np.testing.assert_allclose(lon2, lon, atol=1e-9)
    ecef = enu_to_ecef(enu, origin)
    np.testing.assert_allclose(ecef_to_enu(ecef, origin), enu, atol=1e-7)
    np.testing.assert_allclose(ecef, geodetic_to_ecef(lat, lon, h), atol=1e-6)


def test_enu_of_known_offsets():
    lat0, lon0 = 40.0, -70.0
    origin = Origin(lat0, lon0, 0.0)
    np.testing.assert_allclose(geodetic_to_enu(lat0, lon0, 100.0, origin), [0, 0, 100], atol=1e-9)
    s2 = np.sin(np.radians(lat0)) ** 2
    meridian = WGS84_A * (1 - WGS84_E2) / (1 - WGS84_E2 * s2) ** 1.5
    prime = WGS84_A / np.sqrt(1 - WGS84_E2 * s2)
    d = 1e-5  # degrees: ~1 m, curvature terms ~1e-7 m
    north = geodetic_to_enu(lat0 + d, lon0, 0.0, origin)
    east = geodetic_to_enu(lat0, lon0 + d, 0.0, origin)
    np.testing.assert_allclose(north, [0, meridian * np.radians(d), 0], atol=1e-6)
    np.testing.assert_allclose(east, [prime * np.cos(np.radians(lat0)) * np.radians(d), 0, 0], atol=1e-6)
    # a point 10 km east on the ellipsoid drops below the tangent plane by ~d²/2R
    far = geodetic_to_enu(lat0, lon0 + 10_000 / (prime * np.cos(np.radians(lat0))) * 180 / np.pi, 0.0, origin)
    assert far[2] == pytest.approx(-10_000 ** 2 / (2 * prime), rel=1e-3)


def test_scalar_and_empty_shapes():
    origin = Origin(10.0, 20.0)
    assert geodetic_to_enu(10.0, 20.0, 0.0, origin).shape == (3,)
    assert isinstance(enu_to_geodetic(np.zeros(3), origin)[0], float)
    assert geodetic_to_enu(np.zeros(0), np.zeros(0), np.zeros(0), origin).shape == (0, 3)
    assert ecef_to_geodetic(np.zeros((0, 3)))[0].shape == (0,)


def test_bad_input_raises():
    origin = Origin(10.0, 20.0)
    with pytest.raises(ValueError, match="lat_deg"):
        Origin(91.0, 0.0)
    with pytest.raises(ValueError, match="finite"):
        Origin(float("nan"), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        geodetic_to_enu(np.array([np.nan]), np.array([0.0]), np.array([0.0]), origin)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        enu_to_geodetic(np.zeros((4, 2)), origin)
    with pytest.raises(ValueError, match="broadcast"):
        geodetic_to_ecef(np.zeros(3), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match="lat_deg must lie"):
        geodetic_to_ecef(95.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="centre"):
        ecef_to_geodetic(np.array([1.0, 2.0, 3.0]))
