"""Per-point segmentation: map-label transfer, map prism selection, camera lasso, label storage.

Each Fathom kernel is timed beside its plain NumPy implementation on the same input in the
same run (there is no peer library for these operations), goal ≥ 10× each.

- ``seg_transfer_200x170k``: the map's voxel labels (0.1 m voxels, every voxel of the 20
  distinct frames labelled: ~0.7 M) transferred to 200 frames of ~178 k points (the 20
  frames ten times; float64 world positions in firing order: a 64-beam LiDAR moving 5 m per
  frame between two walls, :func:`_frame`). Fathom: :func:`transfer_labels` per frame → class
  and instance per point, with the labels' table (:func:`voxel_labels`: a hash table of 4×4×4
  bricks) built once, outside the timing, as the server builds it once per stored map layer
  (``server.segmentation_edits.MapCache``) and reuses it for every frame. NumPy: the same
  keys (``floor(p · (1/s))`` packed), ``searchsorted`` into the sorted labelled keys,
  equality check, gather. Goal: ≤ 0.5 s for the 200 frames.
- ``seg_prism_10M``: a 12-vertex top-down polygon (~1/10 of the map's area) with a z range
  over a map cloud of 10 M voxels (:class:`MapCloud`: float64 centroids sorted by voxel
  key). Fathom: :func:`select_prism` on the cloud (only the voxel columns the polygon's
  bounding box meets, found by binary search in the key order; per slab of x voxels, the
  columns between the boundary's bands take their gap's answer and the z range from their
  voxel index, only rows near the boundary take the full test); NumPy: the bounding-box
  prefilter over all centroids, then the crossing test edge by edge on the candidates.
  Goal: ≤ 50 ms.
- ``seg_lasso_170k``: a 170 k-point frame (world frame), one 1920×1080 pinhole camera on a
  moving ego, a 10-vertex image polygon. Fathom: :func:`select_lasso` (projection at the
  exposure time of the points that land within the polygon's bounding box plus the splat's
  reach, z-buffer of those, polygon); NumPy: camera transform, pinhole, image bounds,
  ``tests.naive.zbuffer`` (``np.minimum.at`` splats over the whole image), the crossing
  test. Goal: ≤ 5 ms.
- ``seg_storage_170k``: one frame of the simulated road drive (two LiDARs, ~170 k points)
  labelled with the simulator's truth (category class, actor instance); the time of
  :func:`encode_labels` and the stored size (goal ≤ 50 kB) are reported.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine.camera import Camera, CameraIntrinsics
from engine.pose_track import PoseTrack
from engine.quaternion import from_yaw
from engine.se3 import SE3
from engine.segmentation import select_lasso, select_prism, transfer_labels
from engine.segmentation_map import MapCloud, map_cloud, voxel_keys, voxel_labels
from formats.segmentation import encode_labels
from tests import naive

N_DISTINCT, N_FRAMES, VOXEL_M = 20, 200, 0.1
N_MAP = 10_000_000
RNG = np.random.default_rng(3)


def _frame(x0: float) -> np.ndarray:
    """~170 k world points of a 64-beam LiDAR 1.8 m above (x0, 0), in firing order (azimuth
    columns, beams bottom to top): the ground ``z = 0`` and two 8 m walls at ``y = ±12``
    within 120 m, 2 cm of range noise."""
    elev = np.radians(np.linspace(-25.0, 3.0, 64))
    az = np.linspace(-np.pi, np.pi, 2800, endpoint=False)
    d = np.stack([np.cos(elev)[None, :] * np.cos(az)[:, None], np.cos(elev)[None, :] * np.sin(az)[:, None],
                  np.broadcast_to(np.sin(elev), (len(az), len(elev)))], axis=-1).reshape(-1, 3)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[:, 2] < 0, -1.8 / d[:, 2], np.inf)
        t_wall = np.where(d[:, 1] != 0, 12.0 / np.abs(d[:, 1]), np.inf)
    t_wall = np.where((1.8 + t_wall * d[:, 2] >= 0) & (1.8 + t_wall * d[:, 2] <= 8), t_wall, np.inf)
    t = np.minimum(t_ground, t_wall)
    keep = t < 120
    t = t[keep] + RNG.normal(0, 0.02, keep.sum())
    return d[keep] * t[:, None] + np.array([x0, 0.0, 1.8])


@pytest.fixture(scope="module")
def transfer_case():
    frames = [_frame(5.0 * k) for k in range(N_DISTINCT)]
    keys = np.unique(np.concatenate([voxel_keys(f, VOXEL_M) for f in frames]))
    cls = RNG.integers(1, 30, len(keys)).astype(np.uint16)
    inst = RNG.integers(0, 500, len(keys)).astype(np.uint32)
    return frames, voxel_labels(keys, cls, inst, VOXEL_M)


def _numpy_transfer(xyz: np.ndarray, keys: np.ndarray, cls: np.ndarray, inst: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray]:
    idx = np.floor(xyz * (1.0 / VOXEL_M)).astype(np.int64) + (1 << 20)
    k = (idx[:, 0] << 42) | (idx[:, 1] << 21) | idx[:, 2]
    row = np.minimum(np.searchsorted(keys, k), len(keys) - 1)
    hit = keys[row] == k
    return np.where(hit, cls[row], 0).astype(np.uint16), np.where(hit, inst[row], 0).astype(np.uint32)


def _run_transfer(frames, fn):
    out = None
    for k in range(N_FRAMES):
        out = fn(frames[k % N_DISTINCT])
    return out


def test_fathom_transfer(benchmark, transfer_case):
    frames, labels = transfer_case
    benchmark.group = "seg_transfer_200x170k"
    benchmark.extra_info.update(role="fathom", goal=10, items=sum(len(frames[k % N_DISTINCT]) for k in
                                                                   range(N_FRAMES)), unit="points")
    cls, inst = benchmark.pedantic(_run_transfer, (frames, lambda f: transfer_labels(f, labels)), rounds=5)
    ref = _numpy_transfer(frames[(N_FRAMES - 1) % N_DISTINCT], labels.keys, labels.class_id, labels.instance_id)
    np.testing.assert_array_equal(cls, ref[0])
    np.testing.assert_array_equal(inst, ref[1])


def test_numpy_transfer(benchmark, transfer_case):
    frames, labels = transfer_case
    benchmark.group = "seg_transfer_200x170k"
    benchmark.extra_info.update(role="peer")
    benchmark.pedantic(_run_transfer, (frames, lambda f: _numpy_transfer(f, labels.keys, labels.class_id,
                                                                           labels.instance_id)), rounds=2)


POLY = np.array([[0.0, 0.0], [60, -20], [120, -10], [150, 30], [130, 80], [90, 60], [70, 110], [30, 120],
                 [-10, 90], [20, 60], [-20, 40], [-15, 10]])


@pytest.fixture(scope="module")
def big_map() -> MapCloud:
    """A map cloud of 10 M voxels (0.1 m; one random point each, 500 × 400 × 11 m)."""
    p = np.column_stack([RNG.uniform(-200, 300, N_MAP), RNG.uniform(-150, 250, N_MAP), RNG.uniform(-1, 10, N_MAP)])
    cloud = map_cloud([p], VOXEL_M)
    assert len(cloud) > 0.98 * N_MAP
    return cloud


def _numpy_prism(xyz: np.ndarray, poly: np.ndarray, z_min: float, z_max: float) -> np.ndarray:
    lo, hi = poly.min(axis=0), poly.max(axis=0)
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    cand = np.flatnonzero((x >= lo[0]) & (x <= hi[0]) & (y >= lo[1]) & (y <= hi[1]) & (z >= z_min) & (z <= z_max))
    cx, cy = x[cand], y[cand]
    inside = np.zeros(len(cand), bool)
    for i in range(len(poly)):
        (xi, yi), (xj, yj) = poly[i], poly[i - 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            inside ^= ((yi > cy) != (yj > cy)) & (cx < xi + (cy - yi) * (xj - xi) / (yj - yi))
    out = np.zeros(len(xyz), bool)
    out[cand[inside]] = True
    return out


def test_fathom_prism(benchmark, big_map):
    benchmark.group = "seg_prism_10M"
    benchmark.extra_info.update(role="fathom", goal=10, items=N_MAP, unit="points")
    got = benchmark(select_prism, big_map, POLY, 0.0, 4.0)
    np.testing.assert_array_equal(got, _numpy_prism(big_map.centroids, POLY, 0.0, 4.0))


def test_numpy_prism(benchmark, big_map):
    benchmark.group = "seg_prism_10M"
    benchmark.extra_info.update(role="peer")
    benchmark.pedantic(_numpy_prism, (big_map.centroids, POLY, 0.0, 4.0), rounds=3)


@pytest.fixture(scope="module")
def lasso_case():
    t = np.arange(0, 200_000_001, 10_000_000, dtype=np.int64)
    track = PoseTrack(t, from_yaw(0.1 * t / 1e9), np.column_stack([15.0 * t / 1e9, np.zeros(len(t)), np.zeros(len(t))]))
    cam = Camera("CAM", CameraIntrinsics(1920, 1080, 1266.0, 1266.0, 959.5, 539.5),
                 SE3(np.array([0.5, -0.5, 0.5, -0.5]), np.array([1.5, 0.0, 1.6])))
    xyz = _frame(0.0)
    poly = np.array([[200.0, 150], [900, 80], [1700, 200], [1800, 700], [1500, 1000], [1000, 900], [700, 1050],
                     [300, 950], [100, 600], [400, 400]])
    return xyz, cam, track, 100_000_000, poly


def _numpy_lasso(xyz, cam, track, t_cam, poly):
    pc = (track.at(t_cam) @ cam.ego_from_camera).inverse().apply(xyz)
    w, h = cam.intrinsics.width, cam.intrinsics.height
    front = pc[:, 2] > cam.near_m
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = naive.brown_conrady(pc[:, 0] / pc[:, 2], pc[:, 1] / pc[:, 2], cam.intrinsics)
    inside = front & naive.in_image(uv, w, h)
    _, visible = naive.zbuffer(uv, pc[:, 2].astype(np.float32), inside, w, h, 2, 0.1, 0.02)
    sel = np.zeros(len(xyz), bool)
    cand = np.flatnonzero(visible)
    sel[cand] = _numpy_prism(np.column_stack([uv[cand], np.zeros(len(cand))]), poly, 0.0, 0.0)
    return sel


def test_fathom_lasso(benchmark, lasso_case):
    benchmark.group = "seg_lasso_170k"
    benchmark.extra_info.update(role="fathom", goal=10, items=len(lasso_case[0]), unit="points")
    got = benchmark(select_lasso, *lasso_case)
    want = _numpy_lasso(*lasso_case)
    assert want.sum() > 10_000 and (got != want).sum() <= 1e-4 * want.sum()


def test_numpy_lasso(benchmark, lasso_case):
    benchmark.group = "seg_lasso_170k"
    benchmark.extra_info.update(role="peer")
    benchmark.pedantic(_numpy_lasso, lasso_case, rounds=3)


def test_storage_of_a_labelled_road_frame(benchmark):
    from engine.sim.road import simulate_drive

    drive = simulate_drive(seed=0, duration_s=0.1, preset="road")
    hit = np.concatenate([drive.sweeps[lidar.name][0].extra["object_id"] for lidar in drive.lidars])
    names = sorted(set(drive.objects.category))
    cls = np.array([1 + names.index(c) for c in drive.objects.category], np.uint16)[hit]
    inst = np.where(hit > drive.world.n_static, hit, 0).astype(np.uint32)
    size = len(encode_labels(cls, inst))
    benchmark.group = "seg_storage_170k"
    benchmark.extra_info.update(role="fathom", summary=lambda s: f"{len(hit)} points labelled ({len(names)} classes, "
                                f"{len(np.unique(inst)) - 1} instances): {size / 1000:.1f} kB stored (goal <= 50 kB), "
                                f"encoded in {s * 1e3:.1f} ms")
    benchmark(encode_labels, cls, inst)
    assert len(hit) > 150_000
