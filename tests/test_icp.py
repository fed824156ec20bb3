"""ICP pose refinement on the synthetic rig: injected noise removed, bad corrections refused."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import PoseTrack, Sweep
from engine import quaternion as quat
from engine.icp import refine_poses
from engine.motion import deskew
from engine.sim.road import simulate_drive
from engine.sim.trajectory import TrajectoryConfig

N_FRAMES = 6


@pytest.fixture(scope="module")
def frames():
    """Ego-frame frames (both LiDARs deskewed to the frame time) of a 15 m/s, 30°/s drive."""
    cfg = TrajectoryConfig(top_speed_mps=15.0, start_speed_mps=15.0, max_yaw_rate_rad_s=math.radians(30.0),
                           yaw_accel_rad_s2=math.radians(3000.0))
    d = simulate_drive(seed=3, duration_s=0.1 * N_FRAMES, preset="test", trajectory=cfg)
    truth = d.world_from_ego
    out = []
    for k, t in enumerate(d.frame_times_ns):
        parts = [deskew(d.sweeps[l.name][k], truth, l.ego_from_lidar, ref=int(t), out_frame="ego") for l in d.lidars]
        out.append(Sweep.concatenate(parts, timestamp_ns=int(t)))
    return out, truth.interpolate(d.frame_times_ns), d.frame_times_ns


def _perturb(poses, ts, trans_m, angle_deg, seed=0, skip_first=True):
    """Each pose moved by exactly ``trans_m`` and turned by ``angle_deg`` in random directions."""
    rng = np.random.default_rng(seed)
    n = len(ts)
    dt = rng.normal(size=(n, 3))
    dt *= trans_m / np.linalg.norm(dt, axis=1, keepdims=True)
    axis = rng.normal(size=(n, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    half = math.radians(angle_deg) / 2
    dq = np.column_stack([np.full(n, math.cos(half)), math.sin(half) * axis])
    if skip_first:
        dt[0], dq[0] = 0.0, [1, 0, 0, 0]
    return PoseTrack(ts, quat.multiply(poses.rotation, dq), poses.translation + dt)


def _errors(track, truth):
    return (np.linalg.norm(track.translation - truth.translation, axis=1),
            np.degrees(quat.angle_between(track.rotation, truth.rotation)))


def test_injected_noise_is_removed(frames):
    sweeps, truth, ts = frames
    noisy = _perturb(truth, ts, 0.3, 1.0)
    e_t, e_r = _errors(noisy, truth)
    assert np.allclose(e_t[1:], 0.3) and np.allclose(e_r[1:], 1.0)
    track, reports = refine_poses(sweeps, noisy, target="map")
    assert [r.accepted for r in reports] == [True] * N_FRAMES, [r.reason for r in reports]
    assert reports[0].reason == "anchor"
    e_t, e_r = _errors(track, truth)
    assert e_t.max() < 0.05, e_t
    assert e_r.max() < 0.1, e_r
    for r in reports[1:]:
        assert r.fitness > r.initial_fitness and r.rmse_m < r.initial_rmse_m
        assert abs(r.correction_m - 0.3) < 0.05 and abs(r.correction_deg - 1.0) < 0.1
    np.testing.assert_array_equal(track.timestamps_ns, ts)


def test_true_poses_stay_true(frames):
    sweeps, truth, ts = frames
    track, reports = refine_poses(sweeps, PoseTrack(ts, truth.rotation, truth.translation), target="map")
    e_t, e_r = _errors(track, truth)
    assert e_t.max() < 0.05 and e_r.max() < 0.1, (e_t, e_r)


def test_sweep_to_sweep_registers_each_pair(frames):
    # sweep-to-sweep: each step is checked against the previous accepted sweep only, so
    # small per-step errors add up along the drive (sweep-to-map does not drift like that)
    sweeps, truth, ts = frames
    noisy = _perturb(truth[:3], ts[:3], 0.3, 1.0, seed=3)
    track, reports = refine_poses(sweeps[:3], noisy, target="previous")
    assert all(r.accepted for r in reports)
    e_t, e_r = _errors(track, truth[:3])
    assert e_t.max() < 0.05 and e_r.max() < 0.1, (e_t, e_r)


def test_implausible_correction_keeps_given_pose(frames):
    sweeps, truth, ts = frames
    noisy = _perturb(truth, ts, 0.3, 1.0, seed=1)
    track, reports = refine_poses(sweeps[:3], noisy, max_translation_m=0.1)
    for r in reports[1:]:
        assert not r.accepted and r.reason.startswith("correction") and "> 0.1 m" in r.reason
    given = noisy.interpolate(ts[:3])
    np.testing.assert_array_equal(track.translation, given.translation)
    np.testing.assert_array_equal(track.rotation, given.rotation)


def test_unrelated_sweep_is_refused(frames):
    sweeps, truth, ts = frames
    rng = np.random.default_rng(2)
    junk = Sweep(xyz=rng.uniform(-40, 40, (3000, 3)), timestamp_ns=int(ts[1]), frame="ego")
    track, reports = refine_poses([sweeps[0], junk, sweeps[2]], PoseTrack(ts, truth.rotation, truth.translation))
    assert not reports[1].accepted
    assert "fitness" in reports[1].reason or "RMSE" in reports[1].reason
    np.testing.assert_array_equal(track.translation[1], truth.translation[1])
    # sweep 2 registers against sweep 0 alone: whether its (true) pose is kept or corrected, it stays true
    e_t, e_r = _errors(track, PoseTrack(ts[:3], truth.rotation[:3], truth.translation[:3]))
    assert e_t[2] < 0.05 and e_r[2] < 0.1


def test_bad_input(frames):
    sweeps, truth, ts = frames
    track = PoseTrack(ts, truth.rotation, truth.translation)
    with pytest.raises(ValueError, match="at least one"):
        refine_poses([], track)
    with pytest.raises(ValueError, match="increasing"):
        refine_poses([sweeps[1], sweeps[0]], track)
    with pytest.raises(ValueError, match="ego frame"):
        refine_poses([sweeps[0].with_xyz(sweeps[0].xyz, "lidar")], track)
    with pytest.raises(ValueError, match="target"):
        refine_poses(sweeps[:2], track, target="world")
    with pytest.raises(ValueError, match="voxel_m"):
        refine_poses(sweeps[:2], track, voxel_m=0)
