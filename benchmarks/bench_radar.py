"""Radar: multi-sweep accumulation and reading vs nuscenes-devkit's RadarPointCloud.

- ``radar_multisweep_5x125``: the accumulation of the last sample's 5 radar sweeps (125
  clusters each, the size of the devkit's example header, nuScenes' 18-field binary PCD;
  ~60 % pass the default filters) in the LIDAR_TOP frame, goal ≥ 50×. Like for like: the
  same DATAROOT (:func:`tests.radar_nuscenes.write_radar_dataroot`: 12 samples, ego 600-1600 m
  from the origin), the same work — read the 5 files, apply the default state filters,
  drop the points within 1 m, move every sweep through its ego pose and extrinsic into the
  reference sensor frame, stack them with their time lags.

  - Fathom: :func:`formats.radar.read_nuscenes_radar_sweeps` on the 5 files and
    :func:`engine.radar.radar_multisweep` → ``xyz (N, 3) float32``, the files' records
    ``(N,)``, ``time_lag_s (N,)``. Its inputs (the prev chain's file names, ego poses and
    calibrated sensors as ``SE3``, the reference's) are read from the devkit's tables before
    timing; the devkit looks them up in its dicts while timed (microseconds of its run).
  - Peer: ``RadarPointCloud.from_file_multisweep(nusc, sample, "RADAR_FRONT", "LIDAR_TOP", 5)``
    → ``points (18, N) float64`` and ``times (1, N)``.

  Outputs asserted equal: positions within 1e-5 m (Fathom's are float32), the other 15
  channels exactly, times within 1 µs.
- ``radar_read_125``: one 125-cluster file, :func:`formats.radar.read_nuscenes_radar` vs
  ``RadarPointCloud.from_file`` (the same filtered points asserted equal); no goal.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.radar import radar_multisweep
from formats.radar import read_nuscenes_radar, read_nuscenes_radar_sweeps
from tests.radar_nuscenes import FIELDS, VERSION, chain_inputs, write_radar_dataroot

N_SAMPLES, N_POINTS, N_SWEEPS = 12, 125, 5


@pytest.fixture(scope="module")
def dataroot(tmp_path_factory):
    from nuscenes import NuScenes

    root = write_radar_dataroot(tmp_path_factory.mktemp("nusc"), N_SAMPLES, N_POINTS)
    nusc = NuScenes(VERSION, str(root), verbose=False)
    sample = nusc.sample[-1]
    files, poses, extr, ref_pose, ref_ext, ref_ns = chain_inputs(nusc, sample, "RADAR_FRONT", "LIDAR_TOP")
    paths = [str(root / f) for f in files[:N_SWEEPS]]
    return nusc, sample, (paths, poses, extr, ref_pose, ref_ext, ref_ns)


def _fathom(paths, poses, extr, ref_pose, ref_ext, ref_ns):
    return radar_multisweep(read_nuscenes_radar_sweeps(paths), poses, extr, ref_pose, ref_ext, ref_ns, N_SWEEPS)


def _devkit(nusc, sample):
    from nuscenes.utils.data_classes import RadarPointCloud

    return RadarPointCloud.from_file_multisweep(nusc, sample, "RADAR_FRONT", "LIDAR_TOP", N_SWEEPS)


def test_fathom_radar_multisweep(benchmark, dataroot):
    nusc, sample, inputs = dataroot
    benchmark.group = "radar_multisweep_5x125"
    benchmark.extra_info.update(role="fathom", goal=50, items=N_SWEEPS * N_POINTS, unit="points")
    out = benchmark(_fathom, *inputs)
    pc, times = _devkit(nusc, sample)
    assert len(out) == pc.nbr_points() > N_SWEEPS * N_POINTS // 3
    assert np.abs(out.xyz - pc.points[:3].T).max() <= 1e-5
    rec = out.extra["nuscenes"]
    np.testing.assert_array_equal(np.vstack([rec[f].astype(np.float64) for f in FIELDS[3:]]), pc.points[3:])
    np.testing.assert_allclose(out.extra["time_lag_s"], times[0], atol=1e-6)


def test_devkit_radar_multisweep(benchmark, dataroot):
    nusc, sample, inputs = dataroot
    benchmark.group = "radar_multisweep_5x125"
    benchmark.extra_info.update(role="peer")
    pc, _ = benchmark.pedantic(_devkit, (nusc, sample), rounds=20, iterations=1, warmup_rounds=1)
    assert pc.nbr_points() == len(_fathom(*inputs))


def test_fathom_radar_read(benchmark, dataroot):
    path = dataroot[2][0][0]
    benchmark.group = "radar_read_125"
    benchmark.extra_info.update(role="fathom", items=N_POINTS, unit="points")
    sweep = benchmark(read_nuscenes_radar, path)
    assert 0 < len(sweep) < N_POINTS


def test_devkit_radar_read(benchmark, dataroot):
    from nuscenes.utils.data_classes import RadarPointCloud

    path = dataroot[2][0][0]
    benchmark.group = "radar_read_125"
    benchmark.extra_info.update(role="peer")
    pc = benchmark.pedantic(RadarPointCloud.from_file, (path,), rounds=50, iterations=1, warmup_rounds=1)
    sweep = read_nuscenes_radar(path)
    np.testing.assert_array_equal(sweep.xyz.T.astype(np.float64), pc.points[:3])
    np.testing.assert_array_equal(sweep.extra["nuscenes"]["vy_rms"].astype(np.float64), pc.points[17])
