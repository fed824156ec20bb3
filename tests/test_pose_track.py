"""PoseTrack interpolation against scipy Slerp, its range policy and its validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from engine import SE3, OutOfRangeError, PoseTrack
from engine import quaternion as quat
from tests.naive import interpolate_poses


@pytest.fixture(scope="module")
def track() -> PoseTrack:
    rng = np.random.default_rng(5)
    ts = np.cumsum(rng.integers(5_000_000, 15_000_000, 40)).astype(np.int64) + 1_700_000_000_000_000_000
    rot = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.3, (40, 3)), axis=0))
    return PoseTrack(ts, rot.as_quat(scalar_first=True), np.cumsum(rng.normal(0, 2, (40, 3)), axis=0))


def test_matches_scipy_slerp_and_linear_translation(track):
    rng = np.random.default_rng(6)
    times = rng.integers(track.start_ns, track.end_ns + 1, 20_000)
    poses = track.interpolate(times)
    ref_q, ref_t = interpolate_poses(track.timestamps_ns, track.rotation, track.translation, times)
    assert quat.angle_between(poses.rotation, ref_q).max() < 1e-9
    np.testing.assert_allclose(poses.translation, ref_t, atol=1e-9)


def test_sin_quadrant_polynomial_matches_math_sin_on_its_range():
    import math

    import numba

    from engine.pose_track import sin_quadrant

    @numba.njit
    def poly(xs):
        return np.array([sin_quadrant(x) for x in xs])

    xs = np.concatenate([np.linspace(0.0, np.pi / 2, 200_001), [1e-300, 1e-8, np.nextafter(np.pi / 2, 0)]])
    got = poly(xs)
    ref = np.array([math.sin(x) for x in xs])
    assert np.abs(got - ref).max() <= 2 * np.spacing(1.0)
    # relative accuracy near 0 too (the slerp weights divide by sin θ)
    small = xs[(xs > 0) & (xs < 1e-3)]
    assert (np.abs(poly(small) - np.sin(small)) <= 2 * np.spacing(np.sin(small))).all()


@pytest.mark.parametrize("angle", [1e-9, 3e-6, 1e-3, 1.0, 2.5, 3.14])
def test_any_angle_between_samples_matches_scipy(angle):
    # rotation angles from below the slerp threshold to nearly half a turn between samples
    # (the slerp half-angle θ up to ~π/2), random axes and sign flips (shortest arc)
    rng = np.random.default_rng(8)
    axes = rng.normal(size=(12, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    rot = Rotation.from_rotvec(np.cumsum(axes * angle, axis=0))
    q = rot.as_quat(scalar_first=True) * rng.choice([-1.0, 1.0], (12, 1))
    ts = np.arange(12, dtype=np.int64) * 100_000_000
    track = PoseTrack(ts, q, np.zeros((12, 3)))
    times = rng.integers(ts[0], ts[-1] + 1, 5_000)
    got = track.interpolate(times).rotation
    ref = Slerp(ts.astype(np.float64), rot)(times.astype(np.float64)).as_quat(scalar_first=True)
    assert quat.angle_between(got, ref).max() < 1e-9
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-15)


def test_exact_at_sample_times_including_both_ends(track):
    poses = track.interpolate(track.timestamps_ns)
    assert quat.angle_between(poses.rotation, track.rotation).max() < 1e-7
    np.testing.assert_allclose(poses.translation, track.translation, atol=1e-12)


def test_epoch_nanoseconds_keep_full_precision():
    # 1 ns after a sample, 1.7e18 ns since the epoch: a float64 time would lose this
    ts = np.array([1_700_000_000_000_000_000, 1_700_000_000_000_000_002], dtype=np.int64)
    track = PoseTrack(ts, np.array([[1.0, 0, 0, 0]] * 2), np.array([[0.0, 0, 0], [2.0, 0, 0]]))
    assert track.at(ts[0] + 1).translation[0] == pytest.approx(1.0, abs=1e-15)


def test_out_of_range_raises_unless_extrapolation_is_asked_for(track):
    before = np.array([track.start_ns - 1])
    with pytest.raises(OutOfRangeError, match="outside the pose track"):
        track.interpolate(before)
    with pytest.raises(OutOfRangeError, match=r"by 5 ns"):
        track.interpolate(np.array([track.end_ns + 5]))
    held = track.interpolate(before, extrapolate="hold")
    np.testing.assert_allclose(held.translation[0], track.translation[0])


def test_linear_extrapolation_continues_at_constant_velocity():
    ts = np.array([0, 1_000_000_000], dtype=np.int64)
    q = quat.from_yaw(np.array([0.0, 0.1]))
    track = PoseTrack(ts, q, np.array([[0.0, 0, 0], [1.0, 2.0, 0]]))
    p = track.interpolate(np.array([2_000_000_000, -1_000_000_000]), extrapolate="linear")
    np.testing.assert_allclose(p.translation, [[2.0, 4.0, 0], [-1.0, -2.0, 0]], atol=1e-12)
    np.testing.assert_allclose(quat.to_euler_zyx(p.rotation)[:, 2], [0.2, -0.1], atol=1e-12)


def test_single_sample_track_and_empty_query():
    track = PoseTrack(np.array([10]), np.array([[1.0, 0, 0, 0]]), np.array([[1.0, 2, 3]]))
    np.testing.assert_allclose(track.at(10).translation, [1, 2, 3])
    assert track.interpolate(np.zeros(0, dtype=np.int64)).rotation.shape == (0, 4)
    np.testing.assert_allclose(track.interpolate(np.array([99]), "hold").translation, [[1, 2, 3]])


def test_transformed_and_slice(track):
    ego_from_lidar = SE3(quat.from_yaw(0.3), [1.0, 0.0, 1.8])
    enu_from_world = SE3(quat.from_yaw(-1.1), [100.0, -50.0, 3.0])
    t = np.arange(track.start_ns, track.end_ns, 3_000_001)
    # a left factor commutes with interpolation
    left = track.transformed(left=enu_from_world)
    assert left.interpolate(t).allclose(enu_from_world @ track.interpolate(t), atol=1e-9)
    # a right factor with a lever arm is exact at the samples only (the arc is linearised)
    right = track.transformed(right=ego_from_lidar)
    assert right.interpolate(track.timestamps_ns).allclose(track.poses @ ego_from_lidar, atol=1e-9)
    between = np.abs(right.interpolate(t).translation - (track.interpolate(t) @ ego_from_lidar).translation)
    assert between.max() > 1e-3
    part = track.slice(track.timestamps_ns[10] + 1, track.timestamps_ns[12] - 1)
    assert part.start_ns == track.timestamps_ns[10] and part.end_ns == track.timestamps_ns[12]


@pytest.mark.parametrize(
    "ts, q, t, match",
    [
        (np.array([0, 0]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)), "strictly increasing"),
        (np.array([0.0, 1.0]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)), "integer nanoseconds"),
        (np.array([0, 1]), np.array([[1.0, 0, 0, 0]] * 3), np.zeros((3, 3)), "2 timestamps"),
        (np.array([0, 1]), np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]]), np.zeros((2, 3)), "zero-norm"),
        (np.zeros(0, dtype=np.int64), np.zeros((0, 4)), np.zeros((0, 3)), "non-empty"),
    ],
)
def test_bad_tracks_raise(ts, q, t, match):
    with pytest.raises(ValueError, match=match):
        PoseTrack(ts, q, t)


def test_bad_queries_raise(track):
    with pytest.raises(ValueError, match="integer nanoseconds"):
        track.interpolate(np.array([1.5]))
    with pytest.raises(ValueError, match="extrapolate"):
        track.interpolate(track.timestamps_ns, extrapolate="wild")


def test_few_and_many_queries_give_the_same_poses(track):
    """Below ``_FEW`` queries the serial kernel runs, from it the parallel one: bit-identical."""
    from engine.pose_track import _FEW

    rng = np.random.default_rng(5)
    times = rng.integers(track.start_ns, track.end_ns + 1, _FEW)
    many = track.interpolate(times)
    for k in (0, 1, 7, _FEW - 1):
        few = track.interpolate(times[:k])
        np.testing.assert_array_equal(few.rotation.reshape(-1, 4), many.rotation[:k])
        np.testing.assert_array_equal(few.translation.reshape(-1, 3), many.translation[:k])
