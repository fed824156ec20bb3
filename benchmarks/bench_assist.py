"""Assisted labelling: the tracker, box propagation and motion-aware interpolation.

- ``tracker_100x200``: :func:`track_detections` on 100 objects × 200 frames at 10 Hz (σ 0.2 m,
  10 % missed: ~18 k detections), the whole pipeline (filter, assignment, smoothing,
  keyframes). No peer: the goal is absolute, ≥ 50 k detections/s on 2 cores (printed as the
  summary line).
- ``propagate_100_frames``: :func:`propagate_track` of the rig's car 131 (the 10 s test
  drive, both LiDARs, points at their firing times) from its true box on frame 0 over 100
  frames, no motion prior; goal ≤ 100 ms (the result is checked against the truth for 30
  frames). No peer timing: the frame-to-frame loop one would write with open3d (crop each
  frame to the box grown by 0.5 m, point-to-plane ``registration_icp`` of consecutive crops,
  even started with the true velocity) loses this car within four frames of these sparse
  sweeps, so there is no like-for-like run to time.
- ``motion_interp_1000x200``: the 1,000 tracks × 200 frames of ``bench_cuboids`` with every
  track in ``"ctrv"`` or ``"hermite"`` mode, against the linear kernel on the same table
  (reported as the peer, so the ratio is linear / motion-aware): goal ≥ 0.5, i.e. within 2×.

The machine may be busy: figures are indicative.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bench_cuboids import N_FRAMES, N_TRACKS, random_tracks
from engine import quaternion as quat
from engine.cuboid import Cuboid
from engine.cuboid_interp import TrackTable, interpolate_tracks
from engine.motion import motion_compensate
from engine.propagate import FramePoints, propagate_track
from engine.tracker import Detections, track_detections

N_OBJECTS, N_FRAMES_TRACK = 100, 200
T0_NS = 1_700_000_000_000_000_000
CAR = 131


@pytest.fixture(scope="module")
def detections():
    rng = np.random.default_rng(41)
    start = rng.uniform(-100, 100, (N_OBJECTS, 2))
    vel = rng.normal(0, 5, (N_OBJECTS, 2))
    rows = []
    for f in range(N_FRAMES_TRACK):
        seen = np.flatnonzero(rng.random(N_OBJECTS) > 0.1)
        c = start[seen] + vel[seen] * f * 0.1 + rng.normal(0, 0.2, (len(seen), 2))
        rows.append((np.full(len(seen), f), c, np.arctan2(vel[seen, 1], vel[seen, 0]) + rng.normal(0, 0.05, len(seen))))
    f, c, y = (np.concatenate(x) for x in zip(*rows))
    n = len(f)
    det = Detections(f, np.column_stack([c, np.full(n, 0.8)]), np.tile([4.5, 1.9, 1.6], (n, 1)), quat.from_yaw(y),
                     ("car",) * n, rng.uniform(0.3, 1.0, n))
    return det, T0_NS + np.arange(N_FRAMES_TRACK, dtype=np.int64) * 100_000_000


def test_fathom_tracker(benchmark, detections):
    det, times = detections
    benchmark.group = "tracker_100x200"
    benchmark.extra_info.update(
        role="fathom", items=len(det), unit="detections",
        summary=lambda s: f"{len(det) / s / 1e3:.0f} k detections/s (goal >= 50 k on 2 cores)")
    result = benchmark(track_detections, det, times)
    assert N_OBJECTS <= len(result.tracks) <= 1.1 * N_OBJECTS


@pytest.fixture(scope="module")
def rig():
    from engine.sim.road import simulate_drive

    drive = simulate_drive(seed=0, duration_s=10.0, preset="test", radars=())
    frames = []
    for f, t in enumerate(drive.frame_times_ns):
        xyz, offsets = [], []
        for lidar in drive.lidars:
            s = drive.sweeps[lidar.name][f]
            times = s.time_offset_ns + s.timestamp_ns
            xyz.append(motion_compensate(s.xyz, times, drive.world_from_ego, lidar.ego_from_lidar, out_frame="world"))
            offsets.append(times - t)
        frames.append(FramePoints(int(t), np.concatenate(xyz), np.concatenate(offsets)))
    j = CAR - 1 - drive.world.n_static
    center, yaw = drive.world.actor_pose(j, drive.frame_times_ns)
    return frames, center, yaw, drive.world.actor_size[j]


def test_fathom_propagate(benchmark, rig):
    frames, center, yaw, size = rig
    seed = [(0, Cuboid(center[0], size, quat.from_yaw(yaw[0])))]
    benchmark.group = "propagate_100_frames"
    benchmark.extra_info.update(role="fathom", summary=lambda s: f"{s * 1e3:.0f} ms per 100 frames (goal <= 100 ms)")
    result = benchmark(propagate_track, frames, seed, 0, 99)
    assert np.linalg.norm(result.centers[:30] - center[:30], axis=1).max() < 0.1


@pytest.fixture(scope="module")
def tracks():
    return random_tracks()


@pytest.mark.parametrize("mode", ["ctrv", "hermite"])
def test_fathom_motion_interpolation(benchmark, tracks, mode):
    items, frames_ns = tracks
    table = TrackTable.from_tracks(items, mode)
    benchmark.group = "motion_interp_1000x200"
    benchmark.extra_info.update(role="fathom", goal=0.5, items=N_TRACKS * N_FRAMES, unit="boxes")
    out = benchmark(interpolate_tracks, table, frames_ns, "hold")
    assert out.valid.all()


def test_linear_interpolation(benchmark, tracks):
    items, frames_ns = tracks
    table = TrackTable.from_tracks(items)
    benchmark.group = "motion_interp_1000x200"
    benchmark.extra_info.update(role="peer")
    out = benchmark(interpolate_tracks, table, frames_ns, "hold")
    assert out.valid.all()
