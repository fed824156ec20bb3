"""PCD reading, 170 k-point sweep (x y z intensity ring time), Fathom vs pypcd4 / Open3D.

Goals (issue 3): binary ≥ pypcd4, binary_compressed ≥ pypcd4 (``PointCloud.from_path`` +
``.numpy()``), ascii ≥ 10× Open3D ``read_point_cloud``. The files are written once by
Fathom's writer (both peers read them, see tests/test_formats_pcd.py).
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
from pypcd4 import PointCloud

from engine.sweep import Sweep
from formats.pcd import read_pcd, write_pcd

N_POINTS = 170_000


@pytest.fixture(scope="module")
def pcd_files(tmp_path_factory):
    rng = np.random.default_rng(0)
    # a 32-beam spinning-LiDAR-like sweep: ranges 1-80 m, 2 decimals like a driver writes
    az = rng.uniform(-np.pi, np.pi, N_POINTS)
    ring = rng.integers(0, 32, N_POINTS)
    el = np.deg2rad(-25 + ring * (40 / 31))
    rng_m = rng.uniform(1, 80, N_POINTS)
    xyz = np.stack([rng_m * np.cos(el) * np.cos(az), rng_m * np.cos(el) * np.sin(az), rng_m * np.sin(el)], 1)
    sweep = Sweep(
        xyz=np.round(xyz, 3),
        intensity=rng.integers(0, 256, N_POINTS).astype(np.float32),
        ring=ring,
        time_offset_ns=np.sort(rng.integers(0, 100_000_000, N_POINTS)),
    )
    out = tmp_path_factory.mktemp("pcd")
    paths = {}
    for encoding in ("ascii", "binary", "binary_compressed"):
        paths[encoding] = out / f"sweep_{encoding}.pcd"
        write_pcd(paths[encoding], sweep, encoding)
    return paths


@pytest.mark.parametrize("encoding", ["binary", "binary_compressed"])
def test_fathom_read_pcd(benchmark, pcd_files, encoding):
    benchmark.group = f"pcd_{encoding}_170k"
    benchmark.extra_info.update(role="fathom", goal=1, items=N_POINTS, unit="points")
    sweep = benchmark(read_pcd, pcd_files[encoding])
    assert len(sweep) == N_POINTS


@pytest.mark.parametrize("encoding", ["binary", "binary_compressed"])
def test_pypcd4_read_pcd(benchmark, pcd_files, encoding):
    benchmark.group = f"pcd_{encoding}_170k"
    benchmark.extra_info.update(role="peer")
    arr = benchmark(lambda: PointCloud.from_path(pcd_files[encoding]).numpy())
    assert arr.shape == (N_POINTS, 6)


def test_fathom_read_pcd_ascii(benchmark, pcd_files):
    benchmark.group = "pcd_ascii_170k"
    benchmark.extra_info.update(role="fathom", goal=10, items=N_POINTS, unit="points")
    sweep = benchmark(read_pcd, pcd_files["ascii"])
    assert len(sweep) == N_POINTS


def test_open3d_read_pcd_ascii(benchmark, pcd_files):
    benchmark.group = "pcd_ascii_170k"
    benchmark.extra_info.update(role="peer")
    pc = benchmark(o3d.io.read_point_cloud, str(pcd_files["ascii"]))
    assert len(pc.points) == N_POINTS
