"""Voxel assignment and downsampling against a NumPy reference and open3d."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from engine.voxel import first_points, first_points_levels, voxel_downsample, voxelize


def _reference(xyz: np.ndarray, size, origin=np.zeros(3)):
    """np.unique over floor coordinates, voxels re-ordered by first appearance."""
    size = np.broadcast_to(np.asarray(size, float), (3,))
    inv = np.where(np.isinf(size), 0.0, 1.0 / size)
    coords = np.floor((xyz.astype(np.float64) - origin) * inv).astype(np.int64)
    uniq, first, inverse = np.unique(coords, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first)  # voxel ids by first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    inverse = rank[inverse.reshape(-1)]
    sums = np.zeros((len(uniq), 3))
    np.add.at(sums, inverse, xyz.astype(np.float64))
    counts = np.bincount(inverse, minlength=len(uniq))
    return uniq[order], first[order], inverse, sums / counts[:, None]


@pytest.fixture(scope="module")
def cloud():
    rng = np.random.default_rng(3)
    # clustered points (scan-like) with negative and positive coordinates
    centres = rng.uniform(-30, 30, (200, 3))
    return (centres[rng.integers(0, 200, 20_000)] + rng.normal(0, 0.4, (20_000, 3))).astype(np.float64)


@pytest.mark.parametrize("size", [0.25, np.array([0.5, 0.3, 1.0]), np.array([1.0, 1.0, np.inf])])
def test_voxelize_matches_numpy_reference(cloud, size):
    coords, first, inverse, centroid = _reference(cloud, size)
    vox = voxelize(cloud, size)
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.first_index, first)
    np.testing.assert_array_equal(vox.inverse, inverse)
    out, _ = voxel_downsample(cloud, size)
    np.testing.assert_allclose(out, centroid, rtol=0, atol=1e-9)
    first_pts, _ = voxel_downsample(cloud, size, keep="first")
    np.testing.assert_array_equal(first_pts, cloud[first])


def test_origin_shifts_grid(cloud):
    origin = np.array([0.1, -0.05, 0.2])
    coords, first, inverse, _ = _reference(cloud, 0.2, origin)
    vox = voxelize(cloud, 0.2, origin)
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.inverse, inverse)


def test_centroids_match_open3d(cloud):
    size = 0.3
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(cloud))
    peer = np.asarray(pcd.voxel_down_sample(size).points)
    # open3d's grid starts half a voxel below the minimum
    ours, _ = voxel_downsample(cloud, size, origin=cloud.min(axis=0) - 0.5 * size)
    assert len(ours) == len(peer)
    key = lambda p: p[np.lexsort(p.T[::-1])]  # noqa: E731
    np.testing.assert_allclose(key(ours), key(peer), atol=1e-9)


def test_float32_kept_and_deterministic(cloud):
    p32 = cloud.astype(np.float32)
    a, va = voxel_downsample(p32, 0.2)
    b, vb = voxel_downsample(p32, 0.2)
    assert a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(va.inverse, vb.inverse)
    coords, *_ = _reference(p32, 0.2)
    np.testing.assert_array_equal(va.coords, coords)


def test_every_point_in_its_voxel(cloud):
    vox = voxelize(cloud, 0.7)
    c = vox.coords[vox.inverse]
    assert np.all(c * 0.7 <= cloud + 1e-9) and np.all(cloud < (c + 1) * 0.7 + 1e-9)
    assert np.all(vox.inverse[vox.first_index] == np.arange(len(vox)))


def test_wide_sparse_grid():
    # 4e5 voxels along x and 3e5 along y: far beyond any dense table, still exact
    xyz = np.array([[0.0, 0, 0], [4e4, 0, 0], [0.05, 0.02, 0], [4e4 + 0.01, 3e4, 1.0]])
    coords, first, inverse, _ = _reference(xyz, 0.1)
    vox = voxelize(xyz, 0.1)
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.inverse, inverse)
    # 1e16 voxels in the box and 4000 points: keys and indices no longer share an int64
    rng = np.random.default_rng(8)
    xyz = np.repeat(rng.uniform(0, 1e5, (2000, 3)) * [1, 1, 0], 2, axis=0)
    xyz[1::2, :2] += 4e-4
    coords, first, inverse, _ = _reference(xyz, np.array([1e-3, 1e-3, np.inf]))
    vox = voxelize(xyz, np.array([1e-3, 1e-3, np.inf]))
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.first_index, first)
    np.testing.assert_array_equal(vox.inverse, inverse)


def test_single_voxel_and_empty():
    out, vox = voxel_downsample(np.array([[0.1, 0.1, 0.1], [0.3, 0.2, 0.1]]), 1.0)
    np.testing.assert_allclose(out, [[0.2, 0.15, 0.1]])
    assert vox.coords.tolist() == [[0, 0, 0]]
    out, vox = voxel_downsample(np.zeros((0, 3)), 0.1)
    assert out.shape == (0, 3) and len(vox) == 0 and vox.inverse.shape == (0,)


def test_negative_coordinates_and_duplicates():
    # points straddling 0 on every axis (floor, not truncation), exact repeats, scan order reversed
    rng = np.random.default_rng(5)
    xyz = rng.uniform(-0.35, 0.35, (3000, 3))
    xyz = np.concatenate([xyz, xyz[:500], -xyz[::-1]])
    coords, first, inverse, centroid = _reference(xyz, 0.1)
    out, vox = voxel_downsample(xyz, 0.1)
    assert vox.coords.min() == -4 and vox.coords.max() == 3
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.first_index, first)
    np.testing.assert_array_equal(vox.inverse, inverse)
    np.testing.assert_allclose(out, centroid, rtol=0, atol=1e-12)


def test_huge_coordinates():
    # far from the origin but a small box: keys are relative to the lowest voxel, still exact
    xyz = np.array([[1e15, -1e15, 3e14], [1e15 + 0.5, -1e15, 3e14], [1e15 + 0.25, -1e15 + 0.3, 3e14]])
    coords, first, inverse, _ = _reference(xyz, 0.25)
    vox = voxelize(xyz, 0.25)
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_array_equal(vox.inverse, inverse)
    # integer voxel coordinates beyond int64 (here 1e20 / 1e-3): a clear error, not garbage
    with pytest.raises(ValueError, match=r"beyond 2\*\*62"):
        voxelize(np.array([[1e20, 0.0, 0.0]]), 1e-3)
    with pytest.raises(ValueError, match=r"beyond 2\*\*62"):
        voxelize(np.array([[0.0, -5e18, 0.0]]), 1.0)
    # an origin near the points brings them back in range
    vox = voxelize(np.array([[1e20, 0.0, 0.0]]), 1e-3, origin=np.array([1e20, 0.0, 0.0]))
    assert vox.coords.tolist() == [[0, 0, 0]]


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        voxelize(np.zeros((4, 2)), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        voxelize(np.array([[0.0, np.nan, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="NaN"):
        voxel_downsample(np.array([[0.0, 0.0, 0.0], [np.inf, 0.0, 0.0]], np.float32), 0.1)
    with pytest.raises(ValueError, match="positive"):
        voxelize(np.zeros((1, 3)), -0.1)
    with pytest.raises(ValueError, match="origin"):
        voxelize(np.zeros((1, 3)), 0.1, origin=np.zeros(2))
    with pytest.raises(ValueError, match=r"2\*\*62"):
        voxelize(np.array([[0.0, 0, 0], [1e5, 1e5, 1e5]]), 1e-3)
    with pytest.raises(ValueError, match="keep"):
        voxel_downsample(np.zeros((1, 3)), 0.1, keep="last")


@pytest.mark.parametrize("size", [0.25, 0.05, np.array([0.5, 0.3, 1.0]), np.array([1.0, 1.0, np.inf])])
def test_first_points_are_voxelize_first_index(cloud, size):
    """Same voxels, same first-appearance order, with the hash table grown many times."""
    _, first, _, _ = _reference(cloud, size)
    got = first_points(cloud, size)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, first)
    np.testing.assert_array_equal(got, voxelize(cloud, size).first_index)
    shuffled = cloud[np.random.default_rng(5).permutation(len(cloud))].astype(np.float32)
    np.testing.assert_array_equal(first_points(shuffled, size, origin=np.full(3, 0.1)),
                                  voxelize(shuffled, size, origin=np.full(3, 0.1)).first_index)


def test_first_points_edge_cases():
    assert first_points(np.zeros((0, 3)), 0.1).shape == (0,)
    np.testing.assert_array_equal(first_points(np.zeros((5, 3), np.float32), 0.1), [0])
    # every point its own voxel: M = N
    xyz = np.arange(3000, dtype=np.float64)[:, None] * np.array([1.0, 0.0, 0.0])
    np.testing.assert_array_equal(first_points(xyz[::-1].copy(), 0.5), np.arange(3000))
    with pytest.raises(ValueError, match="NaN or infinite"):
        first_points(np.array([[0.0, np.nan, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        first_points(np.zeros((2, 3)), -1.0)


@pytest.mark.parametrize("case", ["spread", "one_bucket_dominates", "many_passes"])
def test_large_inputs_chunked_grouping(case):
    """Enough points for several parallel chunks: chunk starts move to bucket boundaries,
    one bucket may hold almost every point, wide keys need several radix passes."""
    rng = np.random.default_rng(21)
    n = 300_000
    if case == "spread":
        xyz = rng.uniform([-50, -50, -3], [50, 50, 5], (n, 3))
        size = 0.1
    elif case == "one_bucket_dominates":
        # 98 % of the points in one row of voxels (keys within 2**17: one bucket), the rest far away
        xyz = rng.uniform(0, [200.0, 0.04, 0.04], (n, 3))
        xyz[::50] = rng.uniform(0, 200, (len(xyz[::50]), 3))
        size = 0.05
    else:
        xyz = rng.uniform(-1e3, 1e3, (n, 3))
        size = 0.01
    xyz = xyz[np.repeat(np.arange(n // 3), 3)] + rng.normal(0, 0.01, (n // 3 * 3, 3))  # repeats
    coords, first, inverse, centroid = _reference(xyz, size)
    out, vox = voxel_downsample(xyz, size)
    np.testing.assert_array_equal(vox.first_index, first)
    np.testing.assert_array_equal(vox.inverse, inverse)
    np.testing.assert_array_equal(vox.coords, coords)
    np.testing.assert_allclose(out, centroid, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(first_points(xyz, size), first)


def test_first_points_levels_match_reference(cloud):
    sizes = [0.05, 0.25, np.array([0.5, 0.3, 1.0]), np.array([1.0, 1.0, np.inf])]
    origin = np.array([0.1, -0.05, 0.2])
    for pts in (cloud, cloud[::-1].astype(np.float32)):
        levels = first_points_levels(pts, sizes, origin)
        assert len(levels) == len(sizes)
        for size, got in zip(sizes, levels):
            _, first, _, _ = _reference(pts, size, origin)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, first)
            np.testing.assert_array_equal(got, first_points(pts, size, origin))


def test_first_points_levels_degenerate():
    # all points in one voxel, at every size
    xyz = np.random.default_rng(2).uniform(0.01, 0.09, (5000, 3))
    for got in first_points_levels(xyz, [0.1, 0.5, 10.0]):
        np.testing.assert_array_equal(got, [0])
    assert [a.shape for a in first_points_levels(np.zeros((0, 3)), [0.1, 1.0])] == [(0,), (0,)]
    assert first_points_levels(xyz, []) == []
    with pytest.raises(ValueError, match="NaN or infinite"):
        first_points_levels(np.array([[0.0, 0.0, 0.0], [np.nan, 0.0, 0.0]]), [0.1, 0.2])
    with pytest.raises(ValueError, match="voxel_size must be positive"):
        first_points_levels(xyz, [0.1, 0.0])
    # packed keys beyond 2**62 voxels, integer coordinates beyond int64: the typed error
    with pytest.raises(ValueError, match=r"2\*\*62"):
        first_points_levels(np.array([[0.0, 0, 0], [1e5, 1e5, 1e5]]), [1.0, 1e-3])
    with pytest.raises(ValueError, match=r"beyond 2\*\*62"):
        first_points(np.array([[1e20, 0.0, 0.0]]), 1e-3)
    # wide sparse keys (1e16 voxels in the box) still exact
    xyz = np.repeat(np.random.default_rng(8).uniform(0, 1e5, (2000, 3)) * [1, 1, 0], 2, axis=0)
    xyz[1::2, :2] += 4e-4
    size = np.array([1e-3, 1e-3, np.inf])
    np.testing.assert_array_equal(first_points(xyz, size), _reference(xyz, size)[1])


def test_first_points_table_outgrows_work_memory():
    """More voxels than the preallocated table holds at 1/8 load (2**22 slots): the table
    moves to new memory and stays exact."""
    n = 600_000
    grid = np.stack(np.unravel_index(np.random.default_rng(4).permutation(n), (100, 100, 60)), 1).astype(float)
    xyz = np.concatenate([grid + 0.5, grid[::-1] + 0.25])  # every voxel twice
    np.testing.assert_array_equal(first_points(xyz, 1.0), np.arange(n))
