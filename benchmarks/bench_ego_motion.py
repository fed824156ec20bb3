"""Ego-motion alignment: deskew, 10-sweep accumulation and voxel downsampling vs their peers.

The drive: 100 Hz poses at 15 m/s with a 30°/s yaw rate (and some roll/pitch), 10 sweeps of
a street (ground, walls 8 m either side) by a 64-beam LiDAR, 2656 columns per 100 ms sweep
(170 k points, ranges to 100 m), mounted 0.94 m ahead, 1.84 m up, yawed −90°.

- ``deskew_170k_columns`` and ``deskew_170k_staggered``: sweep 0 in two firing-time
  layouts, goal ≥ 50× each. *Columns*: the 64 beams of a column share one time (Ouster;
  2656 distinct times). *Staggered*: each laser fires at its own time, 588 ns apart within
  the 37.6 µs column (Velodyne/Hesai, as ``formats.velodyne`` decodes them; 170 k distinct
  times). Both sides start from the same ``Sweep`` (float32 sensor-frame xyz, int64 offsets)
  and the same track, and move every point to the sensor frame at the sweep's last firing
  time:

  - Fathom: :func:`deskew` (``ref="end"``, ``out_frame="sensor"``) → a ``Sweep`` with
    ``xyz (N, 3) float32`` sharing the other columns, plus ``time_offset_ns`` re-based to
    the reference (one int64 column more than the peer makes). Its chain is the exact
    slerp per distinct time (columns) or tabulated within 1 µm of it (staggered; see
    ``engine.motion``).
  - Peer: scipy ``Slerp`` + ``Rotation.apply`` per point (rotation slerp, ``np.interp``
    translation, extrinsic, inverse reference pose, inverse extrinsic, float64) →
    ``(N, 3) float32``.

  The outputs agree to 1e-5 m (the table's 1 µm plus float32 rounding at up to 100 m).
- ``accumulate_10x170k``: the 10 sweeps, one pose per sweep (its timestamp), into the
  newest sweep's sensor frame, points within 1 m (x and y) of the sensor removed: Fathom's
  :func:`accumulate` vs a NumPy copy of nuScenes' ``LidarPointCloud.from_file_multisweep``
  transform chain on in-memory clouds (``tests.naive.nuscenes_multisweep``, the reference
  the accumulation tests use; file reading excluded). Both give float32 xyz,
  intensity and each point's time lag; the same points and coordinates are asserted.
  ``accumulate_10x170k_deskewed`` times Fathom with each point at its own firing time, for
  information (no peer does that; the deskew groups compare it per point).
- ``voxel_downsample_1.7M``: voxel downsampling of the 1.7 M accumulated world points vs
  open3d ``voxel_down_sample`` (goal ≥ 5×): centroid vs centroid on the same grid (open3d's,
  whose origin is half a voxel below the minimum), the voxel counts checked.
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
from scipy.spatial.transform import Rotation, Slerp

from engine import SE3, PoseTrack, Sweep
from engine import quaternion as quat
from engine.accumulate import accumulate
from engine.motion import deskew
from engine.voxel import voxel_downsample
from tests.naive import nuscenes_multisweep

T0 = 1_700_000_000_000_000_000
SWEEP_NS = 100_000_000
N_BEAMS, N_AZIMUTH = 64, 2656  # 170 k points per sweep
COLUMN_NS = SWEEP_NS // N_AZIMUTH
LASER_NS = COLUMN_NS // N_BEAMS  # staggered layout: one laser after the other within a column
N_SWEEPS = 10
EGO_BOX = (np.array([0.94 - 1.0, -1.0, -np.inf]), np.array([0.94 + 1.0, 1.0, np.inf]))  # nuScenes' remove_close


def _scan(rng: np.random.Generator) -> np.ndarray:
    """A spinning-LiDAR sweep of a street (ground, walls 8 m either side), firing order."""
    el = np.radians(np.linspace(-24.9, 2.0, N_BEAMS))
    az = np.linspace(0, 2 * np.pi, N_AZIMUTH, endpoint=False)
    d = np.stack(np.broadcast_arrays(np.cos(el)[None, :] * np.cos(az)[:, None],
                                     np.cos(el)[None, :] * np.sin(az)[:, None], np.sin(el)[None, :]), -1)
    d = d.reshape(-1, 3)
    h = 1.85
    r_ground = np.where(d[:, 2] < -1e-6, h / -np.minimum(d[:, 2], -1e-6), np.inf)
    r_wall = np.where(np.abs(d[:, 1]) > 1e-6, 8.0 / np.maximum(np.abs(d[:, 1]), 1e-6), np.inf)
    r = np.minimum(np.minimum(r_ground, r_wall), 100.0) + rng.normal(0, 0.01, len(d))
    return (d * r[:, None]).astype(np.float32)


def firing_offsets(layout: str) -> np.ndarray:
    """``(N,) int64`` ns offsets in firing order: one time per column, or per laser."""
    column = np.repeat(np.arange(N_AZIMUTH, dtype=np.int64) * COLUMN_NS, N_BEAMS)
    if layout == "columns":
        return column
    return column + np.tile(np.arange(N_BEAMS, dtype=np.int64) * LASER_NS, N_AZIMUTH)


@pytest.fixture(scope="module")
def drive():
    rng = np.random.default_rng(11)
    ts = T0 + np.arange(0, (N_SWEEPS + 1) * SWEEP_NS + 1, 10_000_000, dtype=np.int64)  # 100 Hz poses
    s = (ts - T0) * 1e-9
    yaw = np.radians(30.0) * s
    q = quat.from_euler_zyx(0.01 * np.sin(3 * s), 0.005 * np.cos(2 * s), yaw)
    t = np.column_stack([15 * s, 0.5 * s * s, 0.02 * s])
    track = PoseTrack(ts, q, t)
    ext = SE3(quat.from_euler_zyx(0.0, 0.0, -np.pi / 2), [0.94, 0.0, 1.84])
    sweeps = []
    for k in range(N_SWEEPS):
        xyz = _scan(rng)
        sweeps.append(Sweep(xyz=xyz, timestamp_ns=T0 + k * SWEEP_NS, time_offset_ns=firing_offsets("columns"),
                            intensity=rng.uniform(0, 255, len(xyz)).astype(np.float32)))
    return track, ext, sweeps


# ---------------------------------------------------------------- deskew


@pytest.fixture(scope="module", params=["columns", "staggered"])
def sweep_layout(request, drive):
    track, ext, sweeps = drive
    s = sweeps[0]
    return request.param, track, ext, Sweep(xyz=s.xyz, timestamp_ns=s.timestamp_ns, intensity=s.intensity,
                                            time_offset_ns=firing_offsets(request.param))


def scipy_deskew(sweep: Sweep, track: PoseTrack, ext: SE3) -> np.ndarray:
    """The peer: every point through scipy's slerp at its own time, to the sensor frame at
    the last firing time, ``(N, 3) float32``."""
    rel = (track.timestamps_ns - track.start_ns).astype(np.float64)
    slerp = Slerp(rel, Rotation.from_quat(track.rotation, scalar_first=True))
    ext_r = Rotation.from_quat(ext.rotation, scalar_first=True)
    t = (sweep.timestamp_ns + sweep.time_offset_ns - track.start_ns).astype(np.float64)
    t_ref = t.max()
    rot = slerp(t)
    trans = np.stack([np.interp(t, rel, track.translation[:, c]) for c in range(3)], axis=1)
    world = rot.apply(ext_r.apply(sweep.xyz) + ext.translation) + trans
    ref_r = slerp([t_ref])[0]
    ref_t = np.array([np.interp(t_ref, rel, track.translation[:, c]) for c in range(3)])
    ego = ref_r.inv().apply(world - ref_t)
    return ext_r.inv().apply(ego - ext.translation).astype(np.float32)


def test_fathom_deskew(benchmark, sweep_layout):
    layout, track, ext, sweep = sweep_layout
    benchmark.group = f"deskew_170k_{layout}"
    benchmark.extra_info.update(role="fathom", goal=50, items=len(sweep), unit="points")
    out = benchmark(deskew, sweep, track, ext, "end", "sensor")
    assert out.xyz.dtype == np.float32 and out.timestamp_ns == sweep.timestamp_ns + int(sweep.time_offset_ns.max())


def test_scipy_deskew(benchmark, sweep_layout):
    layout, track, ext, sweep = sweep_layout
    benchmark.group = f"deskew_170k_{layout}"
    benchmark.extra_info.update(role="peer")
    out = benchmark.pedantic(scipy_deskew, args=(sweep, track, ext), rounds=5, iterations=1, warmup_rounds=1)
    np.testing.assert_allclose(out, deskew(sweep, track, ext, "end", "sensor").xyz, atol=1e-5, rtol=0)


# ---------------------------------------------------------------- accumulation


@pytest.mark.parametrize("per_point_times", [False, True], ids=["one_pose_per_sweep", "deskewed"])
def test_fathom_accumulate(benchmark, drive, per_point_times):
    track, ext, sweeps = drive
    benchmark.group = "accumulate_10x170k" + ("_deskewed" if per_point_times else "")
    benchmark.extra_info.update(role="fathom", items=sum(len(s) for s in sweeps), unit="points")
    out = benchmark(accumulate, sweeps, track, ext, None, "sensor", per_point_times, EGO_BOX)
    assert len(out) > 0.9 * sum(len(s) for s in sweeps)


def test_nuscenes_multisweep(benchmark, drive):
    track, ext, sweeps = drive
    benchmark.group = "accumulate_10x170k"
    benchmark.extra_info.update(role="peer")
    sample_datas = []
    for s in sweeps:
        pose = track.at(s.timestamp_ns)
        sample_datas.append({"timestamp": s.timestamp_ns // 1000,
                             "points": np.vstack([s.xyz.T, s.intensity[None]]).astype(np.float32),
                             "ego_pose": {"translation": pose.translation, "rotation": pose.rotation},
                             "calibrated_sensor": {"translation": ext.translation, "rotation": ext.rotation}})
    n = len(sample_datas)
    pc, times = benchmark(nuscenes_multisweep, sample_datas, n - 1, n, 1.0)
    ours = accumulate(sweeps, track, ext, None, "sensor", False, EGO_BOX)
    # the peer stacks the newest sweep first
    order = np.argsort(-ours.extra["sweep_index"], kind="stable")
    np.testing.assert_allclose(pc[:3].T, ours.xyz[order], atol=1e-5, rtol=0)
    np.testing.assert_array_equal(pc[3], ours.intensity[order])
    # nuScenes subtracts 1e-6 × epoch microseconds: its lags round to ~1e-7 s
    np.testing.assert_allclose(times[0], ours.extra["time_lag_s"][order], atol=1e-6)


# ---------------------------------------------------------------- voxel downsampling


@pytest.fixture(scope="module")
def cloud_1_7m(drive):
    track, ext, sweeps = drive
    return accumulate(sweeps, track, ext, out_frame="world").xyz.astype(np.float64)


VOXEL_M = 0.1


def test_fathom_voxel_downsample(benchmark, cloud_1_7m):
    benchmark.group = "voxel_downsample_1.7M"
    benchmark.extra_info.update(role="fathom", goal=5, items=len(cloud_1_7m), unit="points")
    origin = cloud_1_7m.min(axis=0) - 0.5 * VOXEL_M  # open3d's grid
    out, _ = benchmark(voxel_downsample, cloud_1_7m, VOXEL_M, "centroid", origin)
    assert 0 < len(out) < len(cloud_1_7m)


def test_open3d_voxel_down_sample(benchmark, cloud_1_7m):
    benchmark.group = "voxel_downsample_1.7M"
    benchmark.extra_info.update(role="peer")
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud_1_7m))
    out = np.asarray(benchmark(pcd.voxel_down_sample, VOXEL_M).points)
    ours, _ = voxel_downsample(cloud_1_7m, VOXEL_M, "centroid", cloud_1_7m.min(axis=0) - 0.5 * VOXEL_M)
    # open3d divides by the size where we multiply by its inverse: a point on a voxel face
    # may land on the other side (a handful in 1.7 M), so the counts agree to 1e-4
    assert abs(len(out) - len(ours)) <= 1e-4 * len(ours)
