"""GPU level-of-detail grids (engine.cuda.voxel) against the CPU: the first point of each
voxel, in order of first appearance, identical for every level, dtype, origin and 2-D grid."""

from __future__ import annotations

import numpy as np
import pytest

from engine.voxel import first_points, first_points_levels
from tests.cuda_backend import sizes


@pytest.mark.parametrize("n", sizes(2000, 170_000))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_first_points_levels_equal_the_cpu(n, dtype):
    rng = np.random.default_rng(n)
    # clustered points (many share a voxel) far from the origin; a road-sized area for many points
    spread = np.array([1.0, 1.0, 0.2]) * (30 if n > 10_000 else 3)
    xyz = (rng.normal(0, 1, (n, 3)) * spread + rng.integers(-3, 4, (n, 1)) * 10 + 4.2e5).astype(dtype)
    levels = [0.2, 0.5, np.array([2.0, 2.0, np.inf]), 7.0]
    cpu = first_points_levels(xyz, levels, origin=np.full(3, 4e5), device="cpu")
    gpu = first_points_levels(xyz, levels, origin=np.full(3, 4e5), device="cuda")
    for a, b in zip(cpu, gpu):
        assert b.dtype == np.int64
        np.testing.assert_array_equal(b, a)
    assert len(cpu[0]) > len(cpu[1]) > len(cpu[3]) and len(cpu[1]) < n


def test_duplicates_empty_and_bad_points():
    xyz = np.repeat(np.arange(12.0).reshape(4, 3), 5, axis=0)[::-1].copy()  # each voxel 5 times
    np.testing.assert_array_equal(first_points(xyz, 0.5, device="cuda"), [0, 5, 10, 15])
    assert first_points(np.zeros((0, 3)), 0.5, device="cuda").shape == (0,)
    with pytest.raises(ValueError, match="NaN or infinite"):
        first_points(np.array([[0.0, np.nan, 0.0]]), 0.5, device="cuda")
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        first_points(xyz, 0.0, device="cuda")
