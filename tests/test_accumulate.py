"""World-frame accumulation vs a NumPy re-implementation of nuScenes' multisweep; ego box; ground."""

from __future__ import annotations

import numpy as np
import pytest

from engine import SE3, Sweep
from engine import quaternion as quat
from engine.accumulate import accumulate, ground_mask_grid, ground_mask_ransac, outside_ego_box
from engine.motion import motion_compensate
from engine.pose_sources import from_nuscenes_ego_poses
from tests.naive import nuscenes_multisweep

# ---------------------------------------------------------------- vs nuScenes multisweep


def _drive(n_sweeps, ext_q, ext_t, seed=0):
    rng = np.random.default_rng(seed)
    t0_us = 1532402927647951
    sds = []
    for k in range(n_sweeps):
        s = 0.05 * k
        yaw = 0.4 + np.radians(30) * s
        pose = {"timestamp": t0_us + 50_000 * k + int(rng.integers(-300, 300)),
                "translation": [600.0 + 15 * s * np.cos(0.4), 1600.0 + 15 * s * np.sin(0.4), 0.02 * k],
                "rotation": list(quat.from_euler_zyx(0.01 * np.sin(k), 0.005 * k, yaw))}
        n = int(rng.integers(800, 1200))
        pts = np.vstack([rng.uniform(-40, 40, (2, n)), rng.uniform(-3, 5, (1, n)), rng.uniform(0, 255, (1, n))])
        sds.append({"points": pts.astype(np.float32), "timestamp": pose["timestamp"], "ego_pose": pose,
                    "calibrated_sensor": {"translation": list(ext_t), "rotation": list(ext_q)}})
    return sds


def _sweeps(sds):
    return [Sweep(xyz=sd["points"][:3].T, timestamp_ns=sd["timestamp"] * 1000, intensity=sd["points"][3]) for sd in sds]


@pytest.mark.parametrize("case", ["general_extrinsic", "remove_close"])
def test_matches_nuscenes_multisweep(case):
    if case == "general_extrinsic":
        ext_q, ext_t, min_distance, box = quat.from_euler_zyx(0.02, -0.01, -1.56), [0.94, 0.0, 1.84], 0.0, None
    else:
        # a yaw of exactly 90° maps nuScenes' sensor-frame square onto an ego-frame box
        ext_q, ext_t, min_distance = quat.from_yaw(np.pi / 2), [0.94, 0.1, 1.84], 2.5
        box = (np.array([0.94 - 2.5, 0.1 - 2.5, -np.inf]), np.array([0.94 + 2.5, 0.1 + 2.5, np.inf]))
    sds = _drive(10, ext_q, ext_t)
    ref_pts, ref_times = nuscenes_multisweep(sds, ref_index=9, nsweeps=10, min_distance=min_distance)
    track = from_nuscenes_ego_poses([sd["ego_pose"] for sd in sds])
    ext = SE3(ext_q, ext_t)
    out = accumulate(_sweeps(sds), track, ext, ref_time_ns=sds[9]["timestamp"] * 1000, out_frame="sensor",
                     per_point_times=False, ego_box=box)
    # nuScenes stacks newest first; ours keeps the input order
    order = np.concatenate([np.flatnonzero(out.extra["sweep_index"] == k) for k in range(9, -1, -1)])
    assert len(order) == ref_pts.shape[1]
    if case == "remove_close":
        assert ref_pts.shape[1] < sum(sd["points"].shape[1] for sd in sds)  # some were removed
    np.testing.assert_allclose(out.xyz[order], ref_pts[:3].T, atol=5e-5, rtol=0)
    np.testing.assert_array_equal(out.intensity[order], ref_pts[3])
    np.testing.assert_allclose(out.extra["time_lag_s"][order], ref_times[0], atol=1e-6)
    assert out.frame == "sensor" and out.timestamp_ns == sds[9]["timestamp"] * 1000


def test_per_point_times_deskew_each_point():
    ext = SE3(quat.from_yaw(0.3), [1.0, 0.0, 1.8])
    sds = _drive(4, ext.rotation, ext.translation, seed=1)
    track = from_nuscenes_ego_poses([sd["ego_pose"] for sd in sds])
    sweeps = _sweeps(sds)
    rng = np.random.default_rng(2)
    for s in sweeps[:3]:
        s.time_offset_ns = np.sort(rng.integers(0, 49_000_000, len(s)))
    t_ref = sweeps[-1].timestamp_ns
    out = accumulate(sweeps, track, ext, out_frame="world")
    assert out.frame == "world" and out.timestamp_ns == t_ref
    for k, s in enumerate(sweeps):
        mine = out.select(out.extra["sweep_index"] == k)
        times = s.timestamp_ns + (s.time_offset_ns if s.time_offset_ns is not None else 0)
        times = np.broadcast_to(times, (len(s),)).astype(np.int64)
        expect = motion_compensate(s.xyz, times, track, ext, out_frame="world")
        np.testing.assert_allclose(mine.xyz, expect, atol=1e-4)
        np.testing.assert_allclose(mine.extra["time_lag_s"], (t_ref - times) * 1e-9, atol=1e-6)
    # the last sweep has no per-point times, so the stack has none either
    assert out.time_offset_ns is None
    out3 = accumulate(sweeps[:3], track, ext, ref_time_ns=t_ref, out_frame="ego")
    s0 = sweeps[0]
    np.testing.assert_array_equal(out3.time_offset_ns[: len(s0)], s0.timestamp_ns + s0.time_offset_ns - t_ref)


def test_outside_ego_box_matches_numpy():
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-4, 4, (5000, 3)).astype(np.float32)
    ext = SE3(quat.from_euler_zyx(0.1, 0.2, 0.7), [1.0, -0.5, 1.5])
    lo, hi = np.array([-1.0, -1.0, -0.5]), np.array([3.0, 1.0, 2.0])
    ego = xyz.astype(np.float64) @ quat.to_matrix(ext.rotation).T + ext.translation
    inside = np.all((ego >= lo) & (ego <= hi), axis=1)
    mask = outside_ego_box(xyz, ext, (lo, hi))
    assert 0 < inside.sum() < len(xyz)
    np.testing.assert_array_equal(mask, ~inside)


def test_accumulate_bad_input():
    ext = SE3.identity()
    sds = _drive(2, ext.rotation, ext.translation)
    track = from_nuscenes_ego_poses([sd["ego_pose"] for sd in sds])
    sweeps = _sweeps(sds)
    with pytest.raises(ValueError, match="at least one"):
        accumulate([], track, ext)
    with pytest.raises(ValueError, match="2 sweeps but 3 extrinsics"):
        accumulate(sweeps, track, [ext] * 3)
    with pytest.raises(ValueError, match="single ego_from_sensor"):
        accumulate(sweeps, track, [ext, ext], out_frame="sensor")
    with pytest.raises(ValueError, match="exceeds upper"):
        accumulate(sweeps, track, ext, ego_box=(np.ones(3), np.zeros(3)))
    with pytest.raises(ValueError, match="pair"):
        accumulate(sweeps, track, ext, ego_box=np.zeros(3))


def test_several_extrinsics():
    sds = _drive(2, [1.0, 0, 0, 0], [0, 0, 0])
    track = from_nuscenes_ego_poses([sd["ego_pose"] for sd in sds])
    exts = [SE3(quat.from_yaw(0.5), [1.0, 0, 2]), SE3(quat.from_yaw(-0.5), [-1.0, 0, 2])]
    out = accumulate(_sweeps(sds), track, exts, per_point_times=False)
    for k in range(2):
        pose = track.at(sds[k]["timestamp"] * 1000)
        expect = (pose @ exts[k]).apply(sds[k]["points"][:3].T)
        np.testing.assert_allclose(out.xyz[out.extra["sweep_index"] == k], expect, atol=1e-4)


# ---------------------------------------------------------------- ground


def _ground_scene(seed=4):
    rng = np.random.default_rng(seed)
    n = 20_000
    ground = np.column_stack([rng.uniform(-30, 30, (n, 2)), rng.normal(0, 0.02, n) + 0.0])
    boxes = np.column_stack([rng.uniform(-30, 30, (3000, 2)), rng.uniform(0.4, 3.0, 3000)])
    return np.concatenate([ground, boxes]), n


def _grid_reference(xyz, cell, height):
    cells = np.floor(xyz[:, :2] / cell).astype(np.int64)
    _, inv = np.unique(cells, axis=0, return_inverse=True)
    low = np.full(inv.max() + 1, np.inf)
    np.minimum.at(low, inv.reshape(-1), xyz[:, 2])
    return xyz[:, 2] - low[inv.reshape(-1)] <= height


def test_ground_grid_matches_numpy():
    xyz, n_ground = _ground_scene()
    mask = ground_mask_grid(xyz, cell_m=1.0, height_m=0.2)
    np.testing.assert_array_equal(mask, _grid_reference(xyz, 1.0, 0.2))
    assert mask[:n_ground].mean() > 0.99 and mask[n_ground:].mean() < 0.15
    assert ground_mask_grid(np.zeros((0, 3))).shape == (0,)
    with pytest.raises(ValueError, match="cell_m"):
        ground_mask_grid(xyz, cell_m=0.0)


def test_ground_ransac_finds_the_plane():
    xyz, n_ground = _ground_scene()
    mask, plane = ground_mask_ransac(xyz, distance_m=0.1)
    np.testing.assert_allclose(plane[:3], [0, 0, 1], atol=5e-3)
    assert abs(plane[3]) < 5e-3
    np.testing.assert_array_equal(mask, np.abs(xyz @ plane[:3] + plane[3]) <= 0.1)
    again, _ = ground_mask_ransac(xyz, distance_m=0.1)
    np.testing.assert_array_equal(mask, again)
    # a lone wall is no ground
    rng = np.random.default_rng(5)
    wall = np.column_stack([np.full(2000, 3.0), rng.uniform(-5, 5, (2000, 2))])
    mask, plane = ground_mask_ransac(wall)
    assert not mask.any() and np.all(np.isnan(plane))
    assert not ground_mask_ransac(wall[:2])[0].any()


# ---------------------------------------------------------------- synthetic rig: sharpness


@pytest.fixture(scope="module")
def fast_drive():
    import math

    from engine.sim.road import simulate_drive
    from engine.sim.trajectory import TrajectoryConfig

    cfg = TrajectoryConfig(top_speed_mps=15.0, start_speed_mps=15.0, max_yaw_rate_rad_s=math.radians(30.0),
                           yaw_accel_rad_s2=math.radians(3000.0))
    return simulate_drive(seed=3, duration_s=1.0, preset="test", trajectory=cfg)


def face_spread(world, xyz, object_id, oid):
    """Spread (std, max |offset|) of the points on the most-hit face of static box ``oid``,
    measured along the face normal from the true face plane."""
    c, size, yaw = world.box_at(oid, 0)
    d = xyz[object_id == oid].astype(np.float64) - c
    cs, sn = np.cos(yaw), np.sin(yaw)
    local = np.column_stack([cs * d[:, 0] + sn * d[:, 1], -sn * d[:, 0] + cs * d[:, 1], d[:, 2]])
    rel = np.abs(local) / (0.5 * size)  # 1 on a face
    axis = np.argmax(rel, axis=1)
    sign = np.sign(local[np.arange(len(local)), axis])
    faces, counts = np.unique(np.column_stack([axis, sign]), axis=0, return_counts=True)
    a, s = faces[np.argmax(counts)]
    on = (axis == a) & (sign == s)
    offset = local[on, int(a)] - s * 0.5 * size[int(a)]
    return float(offset.std()), float(np.abs(offset).max()), int(on.sum())


def test_accumulated_static_faces_are_as_sharp_as_one_sweep(fast_drive):
    d = fast_drive
    lidar = d.lidar("LIDAR_TOP")
    sweeps = list(d.sweeps["LIDAR_TOP"])
    assert len(sweeps) == 10
    acc = accumulate(sweeps, d.world_from_ego, lidar.ego_from_lidar, out_frame="world")
    naive = accumulate(sweeps, d.world_from_ego, lidar.ego_from_lidar, out_frame="world", per_point_times=False)
    oid_all = acc.extra["object_id"]
    statics = oid_all[(oid_all >= 1) & (oid_all <= d.world.n_static)]
    oid = int(np.bincount(statics).argmax())  # the most-hit building
    single = accumulate(sweeps[5:6], d.world_from_ego, lidar.ego_from_lidar, out_frame="world")
    s_std, s_max, s_n = face_spread(d.world, single.xyz, single.extra["object_id"], oid)
    a_std, a_max, a_n = face_spread(d.world, acc.xyz, oid_all, oid)
    n_std, n_max, _ = face_spread(d.world, naive.xyz, naive.extra["object_id"], oid)
    assert a_n > 5 * s_n > 0
    assert a_std <= s_std + 1e-3 and a_max < 0.02, (a_std, s_std, a_max)
    assert n_std > 10 * max(a_std, 1e-3), (n_std, a_std)  # one pose per sweep smears the face
