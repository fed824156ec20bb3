"""Per-point motion compensation against a 4×4-matrix NumPy/scipy reference."""

from __future__ import annotations

import numpy as np
import pytest

from engine import SE3, PoseTrack, Sweep
from engine import quaternion as quat
from engine.motion import deskew, motion_compensate, sweep_reference_time
from engine.pose_track import OutOfRangeError
from tests.naive import interpolate_poses, transform_matrix

T0 = 1_700_000_000_000_000_000


def _reference(xyz, times, track: PoseTrack, ext: SE3, t_ref, frame):
    """p_ref = E⁻¹ · W(t_ref)⁻¹ · W(t_i) · E · p_i with scipy Slerp and 4×4 matrices."""
    def world_from_ego(t):
        q, tr = interpolate_poses(track.timestamps_ns, track.rotation, track.translation, t)
        return transform_matrix(tr, q)

    e = transform_matrix(ext.translation, ext.rotation)
    chain = world_from_ego(times) @ e
    if frame != "world":
        chain = np.linalg.inv(world_from_ego(t_ref)[0]) @ chain
        if frame == "sensor":
            chain = np.linalg.inv(e) @ chain
    ph = np.concatenate([xyz.astype(np.float64), np.ones((len(xyz), 1))], axis=1)
    return np.einsum("nij,nj->ni", chain, ph)[:, :3]


@pytest.fixture(scope="module")
def scene():
    rng = np.random.default_rng(5)
    # 100 Hz track: 15 m/s, 30°/s yaw rate, some pitch/roll wobble
    ts = T0 + np.arange(31, dtype=np.int64) * 10_000_000
    s = (ts - T0) * 1e-9
    yaw = np.radians(30.0) * s + 0.3
    q = quat.from_euler_zyx(0.02 * np.sin(7 * s), 0.01 * np.cos(5 * s), yaw)
    t = np.column_stack([15 * np.cos(0.3) * s, 15 * np.sin(0.3) * s, 0.05 * np.sin(3 * s)])
    track = PoseTrack(ts, q, t)
    ext = SE3(quat.from_euler_zyx(0.01, -0.03, np.radians(91.0)), np.array([1.2, -0.1, 1.9]))
    n = 5000
    xyz = rng.uniform(-60, 60, (n, 3)).astype(np.float32)
    times = np.sort(rng.integers(ts[0], ts[10], n))  # a 100 ms sweep
    return track, ext, xyz, times


@pytest.mark.parametrize("frame", ["sensor", "ego", "world"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("max_error_m", [0.0, 1e-6], ids=["exact", "table"])
def test_matches_matrix_reference(scene, frame, dtype, max_error_m):
    track, ext, xyz, times = scene
    t_ref = int(times[len(times) // 3])
    out = motion_compensate(xyz.astype(dtype), times, track, ext, t_ref, frame, max_error_m=max_error_m)
    ref = _reference(xyz, times, track, ext, t_ref, frame)
    assert out.dtype == (np.float64 if frame == "world" else np.float32)
    # float32 output rounds at ~4e-6 m for 60 m; world float64 output keeps 1e-9 (exact)
    # or the table's bound
    np.testing.assert_allclose(out, ref, atol=max(max_error_m, 1e-9) if frame == "world" else 2e-5, rtol=0)


def test_out_receives_the_result_in_place(scene):
    track, ext, xyz, times = scene
    frame = np.full((len(xyz) + 10, 3), -7.0)
    got = motion_compensate(xyz, times, track, ext, out_frame="world", out=frame[5:-5])
    assert np.shares_memory(got, frame)
    np.testing.assert_array_equal(frame[5:-5], motion_compensate(xyz, times, track, ext, out_frame="world"))
    assert np.all(frame[:5] == -7.0) and np.all(frame[-5:] == -7.0)
    for bad in (np.empty((len(xyz), 3), np.float32), np.empty((len(xyz) - 1, 3)), np.empty((len(xyz), 6))[:, :3]):
        with pytest.raises(ValueError, match="out must be"):
            motion_compensate(xyz, times, track, ext, out_frame="world", out=bad)


def test_repeated_firing_times_match_reference(scene):
    # a spinning LiDAR fires columns of beams at one instant: 32 points per time, then a jump
    track, ext, xyz, times = scene
    column_times = np.repeat(times[::32], 32)[: len(xyz)]
    t_ref = int(times[-1])
    out = motion_compensate(xyz, column_times, track, ext, t_ref, "sensor")
    np.testing.assert_allclose(out, _reference(xyz, column_times, track, ext, t_ref, "sensor"), atol=2e-5)
    shuffled = np.random.default_rng(0).permutation(len(xyz))  # and in no particular order
    out = motion_compensate(xyz[shuffled], column_times[shuffled], track, ext, t_ref, "world")
    ref = _reference(xyz[shuffled], column_times[shuffled], track, ext, t_ref, "world")
    np.testing.assert_allclose(out, ref, atol=1e-6, rtol=0)


def test_point_at_reference_time_is_unchanged(scene):
    track, ext, xyz, _ = scene
    t_ref = int(track.timestamps_ns[4]) + 3_333_333
    out = motion_compensate(xyz, np.full(len(xyz), t_ref), track, ext, t_ref, "sensor")
    np.testing.assert_allclose(out, xyz, atol=2e-5)


def test_stationary_ego_changes_nothing(scene):
    _, ext, xyz, times = scene
    still = PoseTrack(np.array([times[0], times[-1]]), np.tile([0.6, 0, 0, 0.8], (2, 1)), np.tile([5.0, 2, 1], (2, 1)))
    out = motion_compensate(xyz, times, still, ext, int(times[0]), "ego")
    np.testing.assert_allclose(out, ext.apply(xyz), atol=2e-5)


def _sweep(xyz, times):
    return Sweep(xyz=xyz, timestamp_ns=int(times[0]), time_offset_ns=times - times[0],
                 intensity=np.arange(len(xyz), dtype=np.float32), extra={"object_id": np.arange(len(xyz))})


@pytest.mark.parametrize("ref", ["start", "middle", "end", T0 + 45_000_000])
def test_deskew_reference_times(scene, ref):
    track, ext, xyz, times = scene
    sweep = _sweep(xyz, times)
    t_ref = sweep_reference_time(sweep, ref)
    expected_ref = {"start": times[0], "end": times[-1], "middle": times[0] + (times[-1] - times[0]) // 2}
    assert t_ref == (ref if isinstance(ref, int) else expected_ref[ref])
    out = deskew(sweep, track, ext, ref=ref, out_frame="ego")
    assert out.frame == "ego" and out.timestamp_ns == t_ref
    np.testing.assert_array_equal(out.time_offset_ns, times - t_ref)
    np.testing.assert_array_equal(out.intensity, sweep.intensity)
    np.testing.assert_array_equal(out.extra["object_id"], sweep.extra["object_id"])
    np.testing.assert_allclose(out.xyz, _reference(xyz, times, track, ext, t_ref, "ego"), atol=2e-5)


def test_deskew_errors_and_edges(scene):
    track, ext, xyz, times = scene
    with pytest.raises(ValueError, match="per-point times"):
        deskew(Sweep(xyz=xyz, timestamp_ns=int(times[0])), track, ext)
    late = _sweep(xyz, times + 10**9)
    with pytest.raises(OutOfRangeError):
        deskew(late, track, ext)
    held = deskew(late, track, ext, extrapolate="hold")
    assert np.all(np.isfinite(held.xyz))
    empty = Sweep(xyz=np.zeros((0, 3)), timestamp_ns=int(times[0]), time_offset_ns=np.zeros(0, np.int64))
    empty = deskew(empty, track, ext)
    assert len(empty) == 0 and empty.timestamp_ns == int(times[0])
    with pytest.raises(ValueError, match="ref must be"):
        deskew(_sweep(xyz, times), track, ext, ref="first")


def test_motion_compensate_bad_input(scene):
    track, ext, xyz, times = scene
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        motion_compensate(xyz[:, :2], times, track, ext, int(times[0]))
    with pytest.raises(ValueError, match="times_ns must have shape"):
        motion_compensate(xyz, times[:-1], track, ext, int(times[0]))
    with pytest.raises(ValueError, match="integer nanoseconds"):
        motion_compensate(xyz, times.astype(float), track, ext, int(times[0]))
    with pytest.raises(ValueError, match="needs ref_time_ns"):
        motion_compensate(xyz, times, track, ext, None, "ego")
    with pytest.raises(ValueError, match="out_frame"):
        motion_compensate(xyz, times, track, ext, int(times[0]), "camera")
    with pytest.raises(ValueError, match="single SE3"):
        motion_compensate(xyz, times, track, SE3.identity(2), int(times[0]))
    with pytest.raises(ValueError, match="max_error_m"):
        motion_compensate(xyz, times, track, ext, out_frame="world", max_error_m=-1e-6)
    with pytest.raises(ValueError, match="max_error_m"):
        motion_compensate(xyz, times, track, ext, out_frame="world", max_error_m=float("nan"))


# ---------------------------------------------------------------- staggered (per-laser) times: the table


@pytest.fixture(scope="module")
def fast_yaw():
    """1 rad/s yaw (plus pitch/roll wobble) at 30 m/s, poses every ~10 ms with jitter; a
    Velodyne-like 100 ms sweep: 32 lasers staggered 2.3 µs within each 110.6 µs column, so
    every point has its own time; ranges up to 200 m, a 1.6 m lever arm."""
    rng = np.random.default_rng(9)
    ts = T0 + np.cumsum(np.r_[0, rng.integers(8_000_000, 12_000_000, 40)]).astype(np.int64)
    s = (ts - T0) * 1e-9
    q = quat.from_euler_zyx(0.05 * np.sin(9 * s), 0.03 * np.cos(7 * s), 1.0 * s)
    t = np.column_stack([30 * s, 2 * s * s, 0.1 * np.sin(5 * s)])
    track = PoseTrack(ts, q, t)
    ext = SE3(quat.from_euler_zyx(0.0, 0.0, np.pi / 2), np.array([1.2, 0.1, 1.0]))
    columns = np.arange(904, dtype=np.int64) * 110_600
    times = T0 + 50_000_000 + (columns[:, None] + np.arange(32) * 2_304).ravel()  # spans ~10 pose samples
    az = rng.uniform(-np.pi, np.pi, len(times))
    rng_m = np.where(rng.random(len(times)) < 0.3, 200.0, rng.uniform(1, 200, len(times)))
    el = rng.uniform(-0.3, 0.1, len(times))
    xyz = np.column_stack([rng_m * np.cos(el) * np.cos(az), rng_m * np.cos(el) * np.sin(az), rng_m * np.sin(el)])
    return track, ext, xyz, times


def test_table_meets_its_bound_at_fast_yaw_and_200_m(fast_yaw):
    track, ext, xyz, times = fast_yaw
    assert len(np.unique(times)) == len(times)
    ref = _reference(xyz, times, track, ext, None, "world")
    exact = motion_compensate(xyz, times, track, ext, out_frame="world", max_error_m=0.0)
    np.testing.assert_allclose(exact, ref, atol=1e-9, rtol=0)
    for bound in (1e-6, 1e-5, 1e-3):
        err = np.linalg.norm(motion_compensate(xyz, times, track, ext, out_frame="world", max_error_m=bound) - ref,
                             axis=1).max()
        # the table is used (not the exact path) and its steps are as long as the bound allows
        assert 0.5 * bound < err <= bound, (bound, err)


@pytest.mark.parametrize("frame", ["sensor", "ego"])
def test_table_in_the_reference_frames(fast_yaw, frame):
    track, ext, xyz, times = fast_yaw
    t_ref = int(times[-1])
    got = motion_compensate(xyz, times, track, ext, t_ref, frame)
    exact = _reference(xyz, times, track, ext, t_ref, frame)
    # the bound, plus the float32 output's rounding
    assert np.all(np.abs(got - exact) <= 1e-6 + np.spacing(np.abs(exact).astype(np.float32)))


@pytest.mark.parametrize("extrapolate", ["hold", "linear"])
def test_table_beyond_the_track(fast_yaw, extrapolate):
    track, ext, xyz, times = fast_yaw
    late = times + (track.end_ns - int(times[len(times) // 2]))  # the second half after the last pose
    exact = motion_compensate(xyz, late, track, ext, out_frame="world", extrapolate=extrapolate, max_error_m=0.0)
    got = motion_compensate(xyz, late, track, ext, out_frame="world", extrapolate=extrapolate)
    err = np.linalg.norm(got - exact, axis=1)
    assert err.max() <= 1e-6
    after = late > track.end_ns
    if extrapolate == "hold":  # one pose after the track: nothing to interpolate there
        assert err[after].max() < 1e-9
    else:
        assert err[after].max() > 1e-8


def test_nan_points_stay_nan_and_leave_the_table_to_the_others(fast_yaw):
    track, ext, xyz, times = fast_yaw
    bad = xyz.copy()
    bad[7] = np.nan
    bad[9, 2] = -np.nan  # sign bit set
    got = motion_compensate(bad, times, track, ext, out_frame="world")
    assert np.all(np.isnan(got[[7, 9]]))
    np.testing.assert_array_equal(np.delete(got, [7, 9], 0),
                                  np.delete(motion_compensate(xyz, times, track, ext, out_frame="world"), [7, 9], 0))


def test_table_shuffled_times_match_firing_order(fast_yaw):
    track, ext, xyz, times = fast_yaw
    order = np.random.default_rng(3).permutation(len(times))
    sorted_out = motion_compensate(xyz, times, track, ext, out_frame="world")
    shuffled = motion_compensate(xyz[order], times[order], track, ext, out_frame="world")
    np.testing.assert_allclose(shuffled, sorted_out[order], atol=1e-12, rtol=0)


def test_exact_path_where_the_table_does_not_pay(fast_yaw):
    track, ext, xyz, times = fast_yaw
    # one time (a single-time sweep), two times, a column-synchronous sweep with fewer
    # columns than nodes: the exact slerp at every distinct time
    for t in (np.full(len(times), times[100]), np.where(np.arange(len(times)) < 500, times[0], times[-1]),
              np.repeat(times[::3200], 3200)[: len(times)]):
        got = motion_compensate(xyz, t, track, ext, out_frame="world")
        np.testing.assert_array_equal(got, motion_compensate(xyz, t, track, ext, out_frame="world", max_error_m=0.0))
        np.testing.assert_allclose(got, _reference(xyz, t, track, ext, None, "world"), atol=1e-9, rtol=0)
    # an infinite point leaves no lever arm to bound: exact path for the others
    bad = xyz.copy()
    bad[7, 0] = np.inf
    got = motion_compensate(bad, times, track, ext, out_frame="world")
    assert not np.all(np.isfinite(got[7]))
    np.testing.assert_array_equal(np.delete(got, 7, 0),
                                  np.delete(motion_compensate(xyz, times, track, ext, out_frame="world",
                                                              max_error_m=0.0), 7, 0))
    empty = motion_compensate(np.zeros((0, 3)), np.zeros(0, np.int64), track, ext, out_frame="world")
    assert empty.shape == (0, 3)


# ---------------------------------------------------------------- synthetic rig: 15 m/s, 30°/s


def surface_distance(world, xyz_world: np.ndarray, object_id: np.ndarray) -> np.ndarray:
    """Distance of world points to the true surface they hit: ground z = 0 or a static box.

    NaN for points on actors (moving) or on nothing.
    """
    out = np.full(len(xyz_world), np.nan)
    ground = object_id == 0
    out[ground] = np.abs(xyz_world[ground, 2])
    for oid in np.unique(object_id[(object_id >= 1) & (object_id <= world.n_static)]):
        sel = object_id == oid
        c, size, yaw = world.box_at(int(oid), 0)
        d = xyz_world[sel] - c
        cs, sn = np.cos(yaw), np.sin(yaw)
        local = np.column_stack([cs * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + cs * d[:, 1], d[:, 2]])
        q = np.abs(local) - 0.5 * size  # box signed distance (inside: the largest q, negative)
        outside = np.linalg.norm(np.maximum(q, 0.0), axis=1)
        out[sel] = np.abs(np.where(np.all(q <= 0, axis=1), q.max(axis=1), outside))
    return out


@pytest.fixture(scope="module")
def fast_drive():
    from engine.sim.road import simulate_drive
    from engine.sim.trajectory import TrajectoryConfig

    cfg = TrajectoryConfig(top_speed_mps=15.0, start_speed_mps=15.0, max_yaw_rate_rad_s=np.radians(30.0),
                           yaw_accel_rad_s2=np.radians(3000.0))
    d = simulate_drive(seed=3, duration_s=0.5, preset="test", trajectory=cfg)
    # the brief's motion: 15 m/s and a 30°/s yaw rate while the sweeps are taken
    assert np.allclose(d.trajectory.speed_mps, 15.0)
    assert np.allclose(np.abs(d.trajectory.yaw_rate_rad_s[50:]), np.radians(30.0))
    return d


@pytest.mark.parametrize("ref", ["start", "middle", "end"])
def test_deskewed_static_surfaces_are_flat(fast_drive, ref):
    d = fast_drive
    truth = d.world_from_ego
    for lidar in d.lidars:
        for sweep in d.sweeps[lidar.name][1:]:
            oid = sweep.extra["object_id"]
            out = deskew(sweep, truth, lidar.ego_from_lidar, ref=ref, out_frame="sensor")
            world_from_sensor = truth.at(out.timestamp_ns) @ lidar.ego_from_lidar
            fixed = surface_distance(d.world, world_from_sensor.apply(out.xyz), oid)
            raw = surface_distance(d.world, world_from_sensor.apply(sweep.xyz), oid)
            static = np.isfinite(fixed)
            assert static.sum() > 0.8 * len(sweep)
            assert np.nanmax(fixed) < 0.02, np.nanmax(fixed)
            # without deskew the same points miss their surfaces by decimetres to metres
            assert np.nanmax(raw) > 0.3, np.nanmax(raw)
