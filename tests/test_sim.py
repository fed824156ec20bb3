"""Synthetic sensor rig: determinism, exact geometry against NumPy references, physics checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import quaternion as quat
from engine.camera import Camera, lens_project, lens_unproject
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from engine.sim.camera_render import render_camera
from engine.sim.gnss import gnss_track
from engine.sim.lidar import BeamPattern, Lidar, simulate_sweep
from engine.sim.road import camera_mount, rig, simulate_drive
from engine.sim.trajectory import TrajectoryConfig, ego_trajectory
from engine.sim.world import NO_HIT, ObjectTable, World, cast_rays

SURFACE_TOL_M = 1e-4


# ---------------------------------------------------------------- NumPy references


def _track_state(track, times_ns):
    """Reference interpolation of a CuboidTrack: centre lerp, rotation slerp → (centre, R)."""
    ts = track.timestamps_ns
    t = np.asarray(times_ns, dtype=np.int64)
    if len(ts) == 1:
        return np.repeat(track.centers, len(t), 0), np.repeat(quat.to_matrix(track.rotations), len(t), 0)
    k = np.clip(np.searchsorted(ts, t, side="right") - 1, 0, len(ts) - 2)
    u = (t - ts[k]) / (ts[k + 1] - ts[k])
    c = track.centers[k] + u[:, None] * (track.centers[k + 1] - track.centers[k])
    q = quat.slerp(track.rotations[k], track.rotations[k + 1], u)
    return c, quat.to_matrix(q).reshape(-1, 3, 3)


def _all_tracks(drive):
    return {int(tr.track_id): tr for tr in (*drive.static_tracks, *drive.actor_tracks)}


def _ref_cast(drive, origins, dirs, times_ns):
    """Nearest hit (range, object id) of world rays, brute force over the ground and every box."""
    n = len(origins)
    best = np.full(n, np.inf)
    ids = np.full(n, NO_HIT, np.int32)
    down = dirs[:, 2] < 0
    tg = np.where(down, -origins[:, 2] / np.where(down, dirs[:, 2], -1.0), np.inf)
    best[down] = tg[down]
    ids[down] = 0
    for oid, tr in _all_tracks(drive).items():
        c, r = _track_state(tr, times_ns)
        half = 0.5 * tr.sizes[0]
        lo = np.einsum("nji,nj->ni", r, origins - c)  # Rᵀ (o − c)
        ld = np.einsum("nji,nj->ni", r, dirs)
        with np.errstate(divide="ignore", invalid="ignore"):
            ta = (-half - lo) / ld
            tb = (half - lo) / ld
        parallel = ld == 0
        inside = np.abs(lo) <= half
        ta = np.where(parallel, np.where(inside, -np.inf, np.inf), ta)
        tb = np.where(parallel, np.where(inside, np.inf, -np.inf), tb)
        near = np.minimum(ta, tb).max(axis=1)
        far = np.maximum(ta, tb).min(axis=1)
        hit = (near <= far) & (near >= 0) & (near < best)
        best[hit] = near[hit]
        ids[hit] = oid
    return best, ids


def _world_points(drive, sweep):
    lidar = drive.lidars[sweep.sensor_id[0]] if len(sweep) else None
    times = sweep.timestamp_ns + sweep.time_offset_ns
    pose = drive.world_from_ego.interpolate(times) @ lidar.ego_from_lidar
    return pose.apply(sweep.xyz), times


def _surface_distance(drive, points, ids, times):
    """Distance of each point to the surface of its object at its time, and 'within the face'."""
    dist = np.full(len(points), np.inf)
    within = np.zeros(len(points), bool)
    ground = ids == 0
    dist[ground] = np.abs(points[ground, 2])
    within[ground] = True
    for oid, tr in _all_tracks(drive).items():
        sel = ids == oid
        if not sel.any():
            continue
        c, r = _track_state(tr, times[sel])
        local = np.einsum("nji,nj->ni", r, points[sel] - c)
        half = 0.5 * tr.sizes[0]
        dist[sel] = np.min(np.abs(np.abs(local) - half), axis=1)
        within[sel] = np.all(np.abs(local) <= half + SURFACE_TOL_M, axis=1)
    return dist, within


# ---------------------------------------------------------------- determinism


def test_same_seed_same_arrays_different_seed_different(drive):
    again = simulate_drive(seed=0, duration_s=1.0, preset="test")
    other = simulate_drive(seed=1, duration_s=1.0, preset="test")
    for name, sweeps in drive.sweeps.items():
        for a, b in zip(sweeps, again.sweeps[name]):
            for col, arr in a.columns().items():
                np.testing.assert_array_equal(arr, b.columns()[col])
    np.testing.assert_array_equal(drive.world_from_ego.translation, again.world_from_ego.translation)
    np.testing.assert_array_equal(drive.world.actor_center, again.world.actor_center)
    np.testing.assert_array_equal(drive.gnss.rotation, again.gnss.rotation)
    assert not np.array_equal(drive.world_from_ego.rotation, other.world_from_ego.rotation)
    a, b = drive.sweeps["LIDAR_TOP"][0], other.sweeps["LIDAR_TOP"][0]
    assert len(a) != len(b) or not np.array_equal(a.xyz, b.xyz)


def test_longer_drive_extends_shorter_one(drive):
    short = simulate_drive(seed=0, duration_s=0.3, preset="test")
    n = len(short.world_from_ego)
    np.testing.assert_array_equal(short.world_from_ego.translation, drive.world_from_ego.translation[:n])
    np.testing.assert_array_equal(short.world_from_ego.rotation, drive.world_from_ego.rotation[:n])


# ---------------------------------------------------------------- trajectory and GNSS


def test_trajectory_reaches_configured_speed_and_yaw_rate_and_integrates_them():
    cfg = TrajectoryConfig(top_speed_mps=15.0, start_speed_mps=15.0, max_yaw_rate_rad_s=math.radians(30))
    traj = ego_trajectory(seed=3, duration_s=3.0, start_ns=5_000, config=cfg)
    track = traj.world_from_ego
    assert track.start_ns == 5_000 and np.all(np.diff(track.timestamps_ns) == 1_000_000)
    assert traj.speed_mps.max() == pytest.approx(15.0)
    assert np.abs(traj.yaw_rate_rad_s).max() == pytest.approx(math.radians(30))
    np.testing.assert_array_equal(track.translation[:, 2], 0.0)
    np.testing.assert_allclose(track.translation[0], 0.0)
    dt = 1e-3
    v = np.linalg.norm(np.diff(track.translation, axis=0), axis=1) / dt
    np.testing.assert_allclose(v, 0.5 * (traj.speed_mps[1:] + traj.speed_mps[:-1]), atol=1e-3)
    yaw = np.unwrap(quat.to_euler_zyx(track.rotation)[:, 2])
    np.testing.assert_allclose(np.diff(yaw) / dt, 0.5 * (traj.yaw_rate_rad_s[1:] + traj.yaw_rate_rad_s[:-1]),
                               atol=1e-6)
    rp = quat.to_euler_zyx(track.rotation)[:, :2]
    np.testing.assert_allclose(rp, 0.0, atol=1e-12)


def test_gnss_exact_without_noise_and_noisy_with_sigma(drive):
    exact = gnss_track(drive.world_from_ego, rate_hz=100.0)
    assert np.all(np.diff(exact.timestamps_ns) == 10_000_000) and len(exact) == 101
    truth = drive.world_from_ego.interpolate(exact.timestamps_ns)
    np.testing.assert_allclose(exact.translation, truth.translation, atol=1e-12)
    assert np.all(quat.angle_between(exact.rotation, truth.rotation) < 1e-7)
    noisy = gnss_track(drive.world_from_ego, 100.0, position_sigma_m=0.05, attitude_sigma_rad=0.01, seed=4)
    err = noisy.translation - truth.translation
    assert 0.035 < err.std() < 0.065
    ang = quat.angle_between(noisy.rotation, truth.rotation)
    # the angle of a 3-D isotropic Gaussian rotation vector is Maxwell distributed: mean 2σ√(2/π)
    assert ang.mean() == pytest.approx(0.01 * 2 * math.sqrt(2 / math.pi), rel=0.2)
    again = gnss_track(drive.world_from_ego, 100.0, position_sigma_m=0.05, attitude_sigma_rad=0.01, seed=4)
    np.testing.assert_array_equal(noisy.translation, again.translation)
    with pytest.raises(ValueError, match="position_sigma_m"):
        gnss_track(drive.world_from_ego, position_sigma_m=-1.0)


# ---------------------------------------------------------------- world


def test_actor_pose_equals_cuboid_track_interpolation(drive):
    world = drive.world
    times = np.sort(np.random.default_rng(0).integers(drive.start_ns, drive.end_ns, 50))
    for j, tr in enumerate(drive.actor_tracks):
        c, yaw = world.actor_pose(j, times)
        c_ref, r_ref = _track_state(tr, times)
        np.testing.assert_allclose(c, c_ref, atol=1e-9)
        np.testing.assert_allclose(quat.to_matrix(quat.from_yaw(yaw)), r_ref, atol=1e-9)
    assert {tr.category for tr in drive.actor_tracks} == {"car", "pedestrian"}
    assert {tr.category for tr in drive.static_tracks} == {"building", "pole"}
    assert all(tr.stationary for tr in drive.static_tracks)


def test_cast_rays_matches_numpy_reference(drive):
    rng = np.random.default_rng(1)
    n = 4000
    t = rng.integers(drive.start_ns, drive.end_ns, n)
    origins = drive.world_from_ego.interpolate(t).translation + rng.uniform([-5, -5, 0.2], [5, 5, 3], (n, 3))
    dirs = rng.normal(size=(n, 3))
    dirs[:, 2] *= 0.2
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    dirs[:5] = [[1.0, 0, 0], [0, 1.0, 0], [0, 0, -1.0], [0, 0, 1.0], [-1.0, 0, 0]]  # axis-parallel rays
    rng_m, ids = cast_rays(drive.world, origins, dirs, t)
    ref_m, ref_ids = _ref_cast(drive, origins, dirs, t)
    assert (ids != NO_HIT).sum() > n // 2 and len(np.unique(ids)) > 10
    np.testing.assert_array_equal(ids, ref_ids)
    hit = ids != NO_HIT
    np.testing.assert_allclose(rng_m[hit], ref_m[hit], rtol=1e-12, atol=1e-9)
    assert np.all(np.isinf(rng_m[~hit]))


def test_world_rejects_bad_shapes():
    objects = ObjectTable(("ground", "pole"), np.zeros((2, 3), np.uint8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="static boxes"):
        World(np.zeros((1, 3)), np.ones((2, 3)), np.zeros(1), 0, 100, np.zeros((0, 2, 3)), np.zeros((0, 2)),
              np.zeros((0, 3)), objects, np.zeros(3))
    with pytest.raises(ValueError, match="object table needs 3 rows"):
        World(np.zeros((1, 3)), np.ones((1, 3)), np.zeros(1), 0, 100, np.zeros((1, 2, 3)), np.zeros((1, 2)),
              np.ones((1, 3)), objects, np.zeros(3))
    with pytest.raises(ValueError, match="sizes must be positive"):
        World(np.zeros((1, 3)), np.zeros((1, 3)), np.zeros(1), 0, 100, np.zeros((0, 2, 3)), np.zeros((0, 2)),
              np.zeros((0, 3)), objects, np.zeros(3))


# ---------------------------------------------------------------- LiDAR


def test_every_point_lies_on_the_surface_it_hit(drive):
    n_ground = n_box = 0
    for sweeps in drive.sweeps.values():
        for sweep in sweeps:
            pts, times = _world_points(drive, sweep)
            ids = sweep.extra["object_id"]
            dist, within = _surface_distance(drive, pts, ids, times)
            assert dist.max() < SURFACE_TOL_M
            assert within.all()
            n_ground += int((ids == 0).sum())
            n_box += int((ids > 0).sum())
    assert n_ground > 10_000 and n_box > 10_000
    hit_actors = {int(i) for s in drive.sweeps["LIDAR_TOP"] for i in np.unique(s.extra["object_id"])}
    assert hit_actors & set(drive.world.actor_ids.tolist())


def test_motion_distortion_is_real(drive):
    sweep = drive.sweeps["LIDAR_TOP"][5]
    lidar = drive.lidar("LIDAR_TOP")
    pts, times = _world_points(drive, sweep)
    start_pose = drive.world_from_ego.at(sweep.timestamp_ns) @ lidar.ego_from_lidar
    naive = start_pose.apply(sweep.xyz)
    ids = sweep.extra["object_id"]
    dist, _ = _surface_distance(drive, naive, ids, times)
    late = (sweep.time_offset_ns > 50_000_000) & (ids > 0)
    speed = float(np.mean(drive.trajectory.speed_mps[500:600]))
    assert late.sum() > 200
    # transformed with the start pose, late points leave their surfaces by ~speed × Δt
    assert np.median(dist[late]) > 0.05
    shift = np.linalg.norm(naive - pts, axis=1)
    dt = sweep.time_offset_ns * 1e-9
    assert shift.max() > 0.8 * speed * dt.max()
    # the displacement of the sensor origin is exactly the ego's motion between the times
    origin_shift = np.linalg.norm(
        (drive.world_from_ego.interpolate(times) @ lidar.ego_from_lidar).translation - start_pose.translation, axis=1
    )
    np.testing.assert_allclose(origin_shift, speed * dt, rtol=0.1, atol=1e-3)


def test_sweep_equals_brute_force_cast_of_every_ray(drive):
    """Every ray of the pattern, cast by the NumPy reference against every object (no culling):
    the same rays return, with the same object and range; misses and far hits are absent."""
    for lidar in drive.lidars:
        pat = lidar.pattern
        sweep = drive.sweeps[lidar.name][7]
        offsets = pat.firing_times_ns()
        times = sweep.timestamp_ns + offsets
        beam = np.tile(np.arange(pat.n_beams), pat.n_sequences)
        spin = -1.0 if pat.clockwise else 1.0
        az = pat.start_azimuth_rad + spin * 2 * np.pi * offsets / pat.sweep_period_ns + pat.azimuth_offset_rad[beam]
        el = pat.elevation_rad[beam]
        d_lidar = np.column_stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        pose = drive.world_from_ego.interpolate(times) @ lidar.ego_from_lidar
        ref_m, ref_ids = _ref_cast(drive, pose.translation, quat.rotate(pose.rotation, d_lidar), times)
        returned = (ref_ids != NO_HIT) & (ref_m <= pat.max_range_m) & (ref_m > pat.min_range_m)
        np.testing.assert_array_equal(offsets[returned], sweep.time_offset_ns)
        np.testing.assert_array_equal(beam[returned], sweep.ring)
        np.testing.assert_array_equal(ref_ids[returned], sweep.extra["object_id"])
        np.testing.assert_allclose(sweep.extra["range_m"], ref_m[returned], rtol=1e-6)
        assert (~returned).sum() > 50  # sky and beyond-range rays exist and are dropped


def test_point_columns_follow_the_beam_pattern(drive):
    for lidar in drive.lidars:
        pat = lidar.pattern
        for sweep in drive.sweeps[lidar.name]:
            r = sweep.extra["range_m"].astype(np.float64)
            assert len(sweep) <= pat.n_rays and sweep.frame == "lidar"
            assert np.all((r > pat.min_range_m) & (r <= pat.max_range_m))
            np.testing.assert_allclose(np.linalg.norm(sweep.xyz, axis=1), r, rtol=1e-6)
            ring = sweep.ring.astype(np.int64)
            np.testing.assert_array_equal(sweep.sensor_id, lidar.sensor_id)
            # firing time = sequence × period + beam offset
            seq_index = (sweep.time_offset_ns - pat.firing_offset_ns[ring]) // pat.sequence_period_ns
            np.testing.assert_array_equal(
                seq_index * pat.sequence_period_ns + pat.firing_offset_ns[ring], sweep.time_offset_ns
            )
            assert np.all(np.diff(sweep.time_offset_ns) >= 0)
            x, y, z = sweep.xyz.astype(np.float64).T
            np.testing.assert_allclose(np.arcsin(z / r), pat.elevation_rad[ring], atol=1e-5)
            spin = -1.0 if pat.clockwise else 1.0
            az = pat.start_azimuth_rad + spin * 2 * np.pi * sweep.time_offset_ns / pat.sweep_period_ns
            az = np.mod(az + pat.azimuth_offset_rad[ring], 2 * np.pi)
            np.testing.assert_allclose(sweep.extra["azimuth_rad"], az, atol=1e-5)
            d = np.angle(np.exp(1j * (np.arctan2(y, x) - az)))
            np.testing.assert_allclose(d, 0.0, atol=1e-5)
            refl = drive.objects.reflectivity[sweep.extra["object_id"]]
            assert np.all((sweep.intensity >= 0) & (sweep.intensity <= np.rint(255 * refl)))
            np.testing.assert_array_equal(sweep.intensity, np.rint(sweep.intensity))  # 8-bit, as sensors give


def _static_world(boxes=()):
    n = len(boxes)
    objects = ObjectTable(("ground", *["building"] * n), np.full((1 + n, 3), 100, np.uint8),
                          np.full(1 + n, 0.5, np.float32))
    c = np.array([b[0] for b in boxes]).reshape(-1, 3)
    s = np.array([b[1] for b in boxes]).reshape(-1, 3)
    return World(c, s, np.zeros(n), 0, 10**8, np.zeros((0, 2, 3)), np.zeros((0, 2)), np.zeros((0, 3)),
                 objects, np.array([1, 2, 3]))


def test_hand_computed_ranges():
    track = PoseTrack(np.array([0, 10**9]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3)))
    # 4 sequences of 100 ns per 400 ns turn (counter-clockwise); beam 0 looks 10° down and fires
    # at 0 ns, beam 1 is horizontal, fires 5 ns later with its azimuth offset cancelling the spin
    pattern = BeamPattern(np.radians([-10.0, 0.0]), np.array([0.0, -2 * np.pi * 5 / 400]), np.array([0, 5]),
                          100, 400, 50.0, clockwise=False)
    world = _static_world([((21.0, 0.0, 5.0), (2.0, 4.0, 10.0))])  # wall face at x = 20
    sweep = simulate_sweep(world, track, Lidar("L", pattern, SE3(np.array([1.0, 0, 0, 0]), [0, 0, 2.0])), 0)
    ground = sweep.extra["object_id"] == 0
    np.testing.assert_allclose(sweep.extra["range_m"][ground], 2.0 / math.sin(math.radians(10)), rtol=1e-6)
    np.testing.assert_array_equal(sweep.time_offset_ns[ground], [0, 100, 200, 300])
    np.testing.assert_allclose(sweep.extra["azimuth_rad"][ground], [0, np.pi / 2, np.pi, 1.5 * np.pi], atol=1e-6)
    wall = sweep.extra["object_id"] == 1
    np.testing.assert_allclose(sweep.extra["range_m"][wall], [20.0], rtol=1e-6)
    np.testing.assert_allclose(sweep.xyz[wall], [[20.0, 0.0, 0.0]], atol=1e-5)
    np.testing.assert_array_equal(sweep.time_offset_ns[wall], [5])
    assert len(sweep) == 5  # the other horizontal rays see nothing within 50 m
    np.testing.assert_array_equal(sweep.intensity[wall], np.rint(255 * 0.5))  # normal incidence


def test_range_noise_is_seeded_and_bounded():
    track = PoseTrack(np.array([0, 10**9]), np.tile([1.0, 0, 0, 0], (2, 1)), np.zeros((2, 3)))
    pattern = BeamPattern.uniform(4, -20, -10, 500, rpm=600, max_range_m=12.0, range_noise_m=0.02)
    lidar = Lidar("L", pattern, SE3(np.array([1.0, 0, 0, 0]), [0, 0, 2.0]))
    a = simulate_sweep(_static_world(), track, lidar, 0, seed=1)
    b = simulate_sweep(_static_world(), track, lidar, 0, seed=1)
    c = simulate_sweep(_static_world(), track, lidar, 0, seed=2)
    np.testing.assert_array_equal(a.xyz, b.xyz)
    assert not np.array_equal(a.extra["range_m"], c.extra["range_m"][: len(a)])
    true = 2.0 / np.sin(-pattern.elevation_rad[a.ring])
    err = a.extra["range_m"] - true
    assert 0.015 < err.std() < 0.025
    assert a.extra["range_m"].max() <= 12.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(elevation_rad=np.zeros(0), azimuth_offset_rad=np.zeros(0), firing_offset_ns=np.zeros(0, int)),
         "non-empty"),
        (dict(max_range_m=-5.0), "max_range_m"),
        (dict(max_range_m=float("nan")), "max_range_m"),
        (dict(min_range_m=200.0), "min_range_m"),
        (dict(firing_offset_ns=np.array([0, 100])), "firing_offset_ns"),
        (dict(sequence_period_ns=0), "sequence_period_ns"),
        (dict(range_noise_m=-0.1), "range_noise_m"),
        (dict(elevation_rad=np.array([0.0, 2.0])), "elevation_rad"),
        (dict(azimuth_offset_rad=np.zeros(3)), "differ in length"),
    ],
)
def test_beam_pattern_rejects_degenerate_config(kwargs, match):
    base = dict(elevation_rad=np.zeros(2), azimuth_offset_rad=np.zeros(2), firing_offset_ns=np.zeros(2, int),
                sequence_period_ns=100, sweep_period_ns=1000, max_range_m=100.0)
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        BeamPattern(**base)
    with pytest.raises(ValueError, match="n_beams"):
        BeamPattern.uniform(0, -10, 10, 100)


def test_sweep_outside_the_pose_track_raises(drive):
    with pytest.raises(ValueError, match="outside the pose track"):
        simulate_sweep(drive.world, drive.world_from_ego, drive.lidars[0], drive.end_ns)


def test_drive_rejects_bad_arguments():
    with pytest.raises(ValueError, match="preset"):
        simulate_drive(preset="moon")
    with pytest.raises(ValueError, match="duration_s"):
        simulate_drive(duration_s=0.05)
    with pytest.raises(ValueError, match="top_speed_mps"):
        TrajectoryConfig(top_speed_mps=-1.0)


# ---------------------------------------------------------------- cameras


def _row_poses(drive, cam, time_ns, rows):
    readout = cam.row_readout_ns if cam.shutter == "rolling" else 0
    times = time_ns + rows.astype(np.int64) * readout
    return drive.world_from_ego.interpolate(times) @ cam.ego_from_camera, times


def test_renderer_matches_numpy_reference_per_pixel(drive):
    t_img = drive.start_ns + 420_000_000
    for cam in drive.cameras:
        img = drive.render(cam.name, t_img)
        h, w = cam.intrinsics.height, cam.intrinsics.width
        assert img.rgb.shape == (h, w, 3) and img.rgb.dtype == np.uint8
        assert img.object_id.shape == (h, w) and img.object_id.dtype == np.int32
        rr, cc = np.mgrid[0:h:2, 0:w:2]  # every other row and column keeps the reference cheap
        rays = np.array([lens_unproject(cam.model_code, cam.params, float(c), float(r))
                         for r, c in zip(rr.ravel(), cc.ravel())])
        valid = rays[:, 3].astype(bool)
        poses, times = _row_poses(drive, cam, t_img, rr.ravel())
        dirs = quat.rotate(poses.rotation, rays[:, :3])
        ref_m, ref_ids = _ref_cast(drive, poses.translation, dirs, times)
        ref_ids[~valid] = NO_HIT
        ids = img.object_id[rr, cc].ravel()
        assert np.mean(ids == ref_ids) > 0.999
        both = (ids == ref_ids) & (ids != NO_HIT)
        np.testing.assert_allclose(img.range_m[rr, cc].ravel()[both], ref_m[both], rtol=1e-5)
        assert len(np.unique(ids)) > 5
        # colours: the object table for hits, the sky for misses, black outside the lens
        rgb = img.rgb[rr, cc].reshape(-1, 3)
        hit = ids != NO_HIT
        np.testing.assert_array_equal(rgb[hit], drive.objects.color_rgb[ids[hit]])
        np.testing.assert_array_equal(rgb[~hit & valid], np.broadcast_to(drive.world.sky_rgb, rgb[~hit & valid].shape))
        np.testing.assert_array_equal(rgb[~valid], 0)
        assert (cam.intrinsics.model == "kannala_brandt") == bool((~valid).any())
        all_ids = img.object_id.reshape(-1)
        all_hit = all_ids != NO_HIT
        np.testing.assert_array_equal(img.rgb.reshape(-1, 3)[all_hit], drive.objects.color_rgb[all_ids[all_hit]])


def test_camera_sees_what_the_lidar_hit(drive):
    frame = 4
    t_img = int(drive.frame_times_ns[frame]) + 50_000_000
    pts, ids, times = [], [], []
    for name, sweeps in drive.sweeps.items():
        p, t = _world_points(drive, sweeps[frame])
        pts.append(p)
        times.append(t)
        ids.append(sweeps[frame].extra["object_id"])
    pts, ids, times = np.concatenate(pts), np.concatenate(ids), np.concatenate(times)
    moving = np.isin(ids, drive.world.actor_ids)
    keep = ~moving | (np.abs(times - t_img) < 1_000_000)  # an actor is where the LiDAR saw it only then
    pts, ids = pts[keep], ids[keep]
    total = 0
    for cam in drive.cameras:
        img = drive.render(cam.name, t_img)
        h, w = cam.intrinsics.height, cam.intrinsics.width
        rows = np.zeros(len(pts), np.int64)
        for _ in range(3):  # rolling shutter: the row a point lands on sets its exposure time
            poses, row_t = _row_poses(drive, cam, t_img, rows)
            pc = poses.inverse().apply(pts)
            uvk = np.array([lens_project(cam.model_code, cam.params, *p) for p in pc]).reshape(-1, 3)
            rows = np.clip(np.rint(uvk[:, 1]), 0, h - 1).astype(np.int64)
        u, v = np.rint(uvk[:, 0]).astype(np.int64), np.rint(uvk[:, 1]).astype(np.int64)
        inside = uvk[:, 2].astype(bool) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        # visible: the reference ray cast from the camera reaches the point itself
        origin = poses.translation
        d = pts - origin
        dist = np.linalg.norm(d, axis=1)
        ref_m, _ = _ref_cast(drive, origin, d / dist[:, None], row_t)
        visible = inside & (ref_m > dist - 1e-3)
        assert visible.sum() > 100, cam.name
        seen = img.object_id[v[visible], u[visible]]
        assert np.mean(seen == ids[visible]) >= 0.99, cam.name
        total += int(visible.sum())
    assert total > 1000


def test_rolling_shutter_differs_from_global(drive):
    cam = drive.camera("CAM_BACK")
    assert cam.shutter == "rolling"
    glob = Camera(cam.name, cam.intrinsics, cam.ego_from_camera)
    t = drive.start_ns + 300_000_000
    a = render_camera(drive.world, drive.world_from_ego, cam, t)
    b = render_camera(drive.world, drive.world_from_ego, glob, t)
    np.testing.assert_array_equal(a.object_id[0], b.object_id[0])  # row 0 is exposed at t in both
    assert np.mean(a.object_id != b.object_id) > 0.001


def test_tile_size_does_not_change_the_image(drive):
    cam = drive.camera("CAM_LEFT_FISHEYE")
    t = drive.start_ns + 100_000_000
    a = render_camera(drive.world, drive.world_from_ego, cam, t, tile_px=16)
    b = render_camera(drive.world, drive.world_from_ego, cam, t, tile_px=7)
    np.testing.assert_array_equal(a.object_id, b.object_id)
    np.testing.assert_array_equal(a.rgb, b.rgb)
    with pytest.raises(ValueError, match="tile_px"):
        render_camera(drive.world, drive.world_from_ego, cam, t, tile_px=0)
    with pytest.raises(ValueError, match="no camera"):
        drive.render("CAM_NOWHERE", t)


def test_presets_have_the_documented_sensors():
    lidars, cameras = rig("road")
    assert [l.pattern.n_beams for l in lidars] == [64, 32]
    assert sum(l.pattern.n_rays for l in lidars) == 172_800
    assert [c.intrinsics.model for c in cameras].count("kannala_brandt") == 2
    assert all((c.intrinsics.width, c.intrinsics.height) == (1920, 1080) for c in cameras)
    pose = camera_mount(0.0, 0.0, 1.0, 90.0)  # looking left: camera z = ego +y, camera x (right) = ego +x
    np.testing.assert_allclose(pose.apply(np.array([[0.0, 0, 1], [1.0, 0, 0]])), [[0, 1, 1], [1, 0, 1]], atol=1e-12)
