"""PCD reading, 170 k-point sweep (x y z intensity ring time), Fathom vs pypcd4 / Open3D.

Goals (issue 3): binary ≥ pypcd4, binary_compressed ≥ pypcd4, ascii ≥ 10× Open3D. The files
are written once by Fathom's writer (fields ``x y z intensity time_offset_ns ring``); every
side reads the file from its path.

- Fathom: :func:`read_pcd` → a ``Sweep`` (``xyz (N, 3) float32``, ``intensity float32``,
  ``time_offset_ns int64``, ``ring uint16``).
- pypcd4: ``PointCloud.from_path(path).numpy()`` → ``(N, 6) float64`` of all fields.
  Asserted: every column equals Fathom's.
- Open3D (ascii): ``read_point_cloud`` → ``points (N, 3) float64`` (x y z only; it parses
  and skips the other fields). Asserted: the points, rounded to float32, equal Fathom's xyz.
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
    fields = PointCloud.from_path(pcd_files[encoding]).fields
    ours = read_pcd(pcd_files[encoding])
    expect = {"x": ours.xyz[:, 0], "y": ours.xyz[:, 1], "z": ours.xyz[:, 2], "intensity": ours.intensity,
              "time_offset_ns": ours.time_offset_ns, "ring": ours.ring}
    assert sorted(fields) == sorted(expect)
    for k, name in enumerate(fields):
        np.testing.assert_array_equal(arr[:, k], expect[name], err_msg=name)


def test_fathom_read_pcd_ascii(benchmark, pcd_files):
    benchmark.group = "pcd_ascii_170k"
    benchmark.extra_info.update(role="fathom", goal=10, items=N_POINTS, unit="points")
    sweep = benchmark(read_pcd, pcd_files["ascii"])
    assert len(sweep) == N_POINTS


def test_open3d_read_pcd_ascii(benchmark, pcd_files):
    benchmark.group = "pcd_ascii_170k"
    benchmark.extra_info.update(role="peer")
    pc = benchmark(o3d.io.read_point_cloud, str(pcd_files["ascii"]))
    np.testing.assert_array_equal(np.asarray(pc.points).astype(np.float32), read_pcd(pcd_files["ascii"]).xyz)
