"""Box auto-fit, yaw suggestion (minimum-area rectangle) and per-frame point counts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial import ConvexHull

from engine import quaternion as quat
from engine.box_fit import fit_boxes, min_area_rectangle, point_counts_per_frame, suggest_yaw
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import interpolate_tracks


def _brute_min_area(xy):
    """Try every hull edge direction (the optimum has a side on the hull) over all points."""
    hull = xy[ConvexHull(xy).vertices]
    best = np.inf
    for a, b in zip(hull, np.roll(hull, -1, axis=0)):
        e = (b - a) / np.linalg.norm(b - a)
        n = np.array([-e[1], e[0]])
        pe, pn = xy @ e, xy @ n
        best = min(best, (pe.max() - pe.min()) * (pn.max() - pn.min()))
    return best


def _inside_rect(xy, center, length, width, yaw, tol=1e-9):
    e = np.array([np.cos(yaw), np.sin(yaw)])
    n = np.array([-e[1], e[0]])
    d = xy - center
    return np.all(np.abs(d @ e) <= length / 2 + tol) and np.all(np.abs(d @ n) <= width / 2 + tol)


def test_min_area_rectangle_matches_brute_force():
    rng = np.random.default_rng(2)
    for trial in range(150):
        n = int(rng.integers(3, 200))
        xy = rng.normal(0, 1, (n, 2)) * rng.uniform(0.1, 5, 2) + rng.uniform(-50, 50, 2)
        center, length, width, yaw = min_area_rectangle(xy)
        assert length >= width and -np.pi / 2 < yaw <= np.pi / 2
        assert _inside_rect(xy, center, length, width, yaw)
        np.testing.assert_allclose(length * width, _brute_min_area(xy), rtol=1e-9)


def test_min_area_rectangle_recovers_a_rotated_rectangle():
    rng = np.random.default_rng(4)
    for yaw in (-1.4, -0.3, 0.0, 0.7, 1.5):
        r = np.array([[np.cos(yaw), -np.sin(yaw)], [np.sin(yaw), np.cos(yaw)]])
        local = np.vstack([[[2.25, 0.9], [2.25, -0.9], [-2.25, 0.9], [-2.25, -0.9]],
                           rng.uniform([-2.25, -0.9], [2.25, 0.9], (40, 2))])
        center, length, width, got = min_area_rectangle(local @ r.T + [10.0, -3.0])
        np.testing.assert_allclose(center, [10.0, -3.0], atol=1e-9)
        np.testing.assert_allclose([length, width], [4.5, 1.8], atol=1e-9)
        assert abs(np.angle(np.exp(2j * (got - yaw)))) < 1e-9  # same direction modulo π


def test_min_area_rectangle_degenerate_and_bad_input():
    center, length, width, yaw = min_area_rectangle(np.array([[3.0, 4.0]] * 5))
    assert np.array_equal(center, [3.0, 4.0]) and length == width == 0.0
    center, length, width, yaw = min_area_rectangle(np.array([[0.0, 0.0], [1, 1], [3, 3], [2, 2]]))
    np.testing.assert_allclose([*center, length, width, yaw], [1.5, 1.5, 3 * np.sqrt(2), 0, np.pi / 4], atol=1e-12)
    with pytest.raises(ValueError, match=r"\(N >= 1, 2\)"):
        min_area_rectangle(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="NaN"):
        min_area_rectangle(np.array([[0.0, np.nan]]))


def _car_scene(rng, yaw=0.5, center=(10.0, 5.0, 0.9), size=(4.5, 1.9, 1.8)):
    """Points filling a car-shaped box standing on the ground z = 0, plus ground points."""
    q = quat.from_yaw(yaw)
    local = rng.uniform(-0.5, 0.5, (3000, 3)) * size
    car = quat.rotate(q, local) + center
    ground = np.column_stack([rng.uniform(0, 20, 4000), rng.uniform(-5, 15, 4000), rng.normal(0, 0.02, 4000)])
    return np.vstack([car, ground]).astype(np.float32), q


def _reference_fit(xyz, c, s, q, margin, clearance):
    r = quat.to_matrix(q)
    local = (xyz.astype(np.float64) - c) @ r
    inside = np.all(np.abs(local) <= 0.5 * s + margin, axis=1) & (local[:, 2] >= -0.5 * s[2] + clearance)
    pts = local[inside]
    lo = np.array([pts[:, 0].min(), pts[:, 1].min(), -0.5 * s[2]])
    hi = np.array([pts[:, 0].max(), pts[:, 1].max(), pts[:, 2].max()])
    return c + r @ ((lo + hi) / 2), hi - lo, len(pts)


def test_fit_boxes_tightens_keeping_yaw_and_excludes_ground():
    rng = np.random.default_rng(8)
    xyz, q = _car_scene(rng)
    # a loose box: too big, off-centre, same yaw, bottom on the ground
    c = np.array([[10.3, 5.2, 1.1], [-30.0, -30.0, 1.0]])
    s = np.array([[5.6, 2.6, 2.2], [2.0, 2.0, 2.0]])
    rot = np.stack([q, quat.from_yaw(0.0)])
    fit = fit_boxes(xyz, c, s, rot, margin=0.1, ground_clearance=0.2)
    ref_c, ref_s, ref_n = _reference_fit(xyz, c[0], s[0], rot[0], 0.1, 0.2)
    np.testing.assert_allclose(fit.centers[0], ref_c, atol=1e-9)
    np.testing.assert_allclose(fit.sizes[0], ref_s, atol=1e-9)
    assert fit.counts[0] == ref_n
    np.testing.assert_allclose(fit.rotations, rot, atol=1e-15)
    # close to the true car in length/width/top; the bottom stays on the ground
    np.testing.assert_allclose(fit.sizes[0, :2], [4.5, 1.9], atol=0.05)
    np.testing.assert_allclose(fit.centers[0, 2] + fit.sizes[0, 2] / 2, 1.8, atol=0.02)
    np.testing.assert_allclose(fit.centers[0, 2] - fit.sizes[0, 2] / 2, 0.0, atol=1e-9)
    # the empty box comes back unchanged and is flagged by its count
    assert fit.counts[1] == 0
    np.testing.assert_array_equal(fit.centers[1], c[1])
    np.testing.assert_array_equal(fit.sizes[1], s[1])


def test_suggest_yaw_from_min_area_rectangle_keeps_heading():
    rng = np.random.default_rng(9)
    xyz, _ = _car_scene(rng, yaw=0.5)
    # a box big enough to hold the car in any orientation, and an empty one
    c = np.array([[10.0, 5.0, 1.0], [-30.0, -30.0, 1.0]])
    s = np.array([[6.0, 6.0, 2.2]] * 2)
    # of the four equivalent rectangle yaws, the one nearest the box's own yaw
    for current, expected in ((0.35, 0.5), (0.5 + np.pi - 0.2, 0.5 + np.pi), (0.5 - np.pi / 2 + 0.1, 0.5 - np.pi / 2)):
        yaw = suggest_yaw(xyz, c, s, quat.from_yaw([current, 0.0]))
        assert abs(np.angle(np.exp(1j * (yaw[0] - expected)))) < 0.02
        assert np.isnan(yaw[1])
    with pytest.raises(ValueError, match="ground_clearance"):
        suggest_yaw(xyz, c, s, quat.from_yaw([0.0, 0.0]), ground_clearance=-1.0)


def test_point_counts_per_frame_flags_empty_boxes():
    q0 = quat.from_yaw([0.0, 0.0])
    a = CuboidTrack("a", "car", np.array([0, 100]), [[0.0, 0, 0], [10.0, 0, 0]], np.full((2, 3), 2.0), q0)
    b = CuboidTrack("b", "car", np.array([50, 100]), [[5.0, 5, 0], [5.0, 5, 0]], np.full((2, 3), 2.0), q0)
    frames = interpolate_tracks([a, b], np.array([0, 100]))
    sweeps = [np.array([[0.5, 0, 0], [-0.9, 0.2, 0.1], [5, 5, 0]], np.float32),
              np.array([[10, 0, 1.0], [30, 0, 0]], np.float32)]
    counts = point_counts_per_frame(frames, sweeps)
    np.testing.assert_array_equal(counts, [[2, -1], [1, 0]])  # b does not exist at t=0; empty at t=100
    with pytest.raises(ValueError, match="sweeps"):
        point_counts_per_frame(frames, sweeps[:1])
