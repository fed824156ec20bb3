"""Points in boxes against a brute-force NumPy reference (every point against every box)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engine import points_in_boxes as pib
from engine import quaternion as quat
from engine.moving_boxes import points_in_boxes_at_times
from engine.points_in_boxes import points_in_boxes
from tests import naive


def _scene(rng, n_boxes=60, n_points=30_000, full_3d=False):
    centers = rng.uniform(-40, 40, (n_boxes, 3))
    centers[:, 2] = rng.uniform(-1, 2, n_boxes)
    sizes = rng.uniform(0.3, 8, (n_boxes, 3))
    if full_3d:
        rotations = Rotation.random(n_boxes, random_state=int(rng.integers(1 << 31))).as_quat(scalar_first=True)
    else:
        rotations = quat.from_yaw(rng.uniform(-np.pi, np.pi, n_boxes))
    xyz = rng.uniform([-45, -45, -3], [45, 45, 5], (n_points, 3)).astype(np.float32)
    # half the points near box centres so many boxes are hit, some by several boxes
    k = n_points // 2
    xyz[:k] = (centers[rng.integers(0, n_boxes, k)] + rng.normal(0, 2, (k, 3))).astype(np.float32)
    return xyz, centers, sizes, rotations


@pytest.mark.parametrize("full_3d", [False, True])
@pytest.mark.parametrize("margin", [0.0, 0.25])
def test_matches_brute_force(full_3d, margin):
    xyz, c, s, q = _scene(np.random.default_rng(11), full_3d=full_3d)
    c[-1] = [300.0, -300.0, 0.0]  # far from every point: stretches the grid, stays empty
    labels, counts = points_in_boxes(xyz, c, s, q, margin=margin)
    ref_labels, ref_counts = naive.points_in_boxes(xyz, c, s, q, margin)
    assert labels.dtype == np.int32 and counts.dtype == np.int64
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(counts, ref_counts)
    assert counts.sum() > 1000 and counts[-1] == 0 and np.count_nonzero(counts) > 50


def test_points_exactly_on_faces_are_inside():
    c = np.array([[1.0, 2.0, 3.0]])
    s = np.array([[2.0, 4.0, 6.0]])
    q = np.array([[1.0, 0, 0, 0]])
    faces = np.array([[0, 2, 3], [2, 2, 3], [1, 0, 3], [1, 4, 3], [1, 2, 0], [1, 2, 6], [0, 0, 0], [2, 4, 6]],
                     np.float32)
    just_out = faces.copy()
    just_out[:, 0] = np.where(faces[:, 0] == 2, np.nextafter(np.float32(2), np.float32(3)), faces[:, 0])
    labels, counts = points_in_boxes(faces, c, s, q)
    np.testing.assert_array_equal(labels, 0)
    assert counts[0] == len(faces)
    labels, _ = points_in_boxes(just_out, c, s, q)
    np.testing.assert_array_equal(labels >= 0, just_out[:, 0] != np.nextafter(np.float32(2), np.float32(3)))
    # the margin widens every face by exactly that much
    out = np.array([[2.5, 2, 3], [1, 4.5, 3], [1, 2, 6.5], [1, 2, 6.6]], np.float32)
    labels, _ = points_in_boxes(out, c, s, q, margin=0.5)
    np.testing.assert_array_equal(labels, [0, 0, 0, -1])


def test_overlap_goes_to_nearest_centre_then_lower_index():
    c = np.array([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0]])
    s = np.full((3, 3), 4.0)
    q = np.tile([1.0, 0, 0, 0], (3, 1))
    xyz = np.array([[0.9, 0, 0], [0.2, 0, 0], [-0.1, 0, 0]], np.float32)
    labels, counts = points_in_boxes(xyz, c, s, q)
    np.testing.assert_array_equal(labels, [1, 0, 0])  # box 2 duplicates box 0: lower index wins
    np.testing.assert_array_equal(counts, [2, 1, 0])


def test_nan_inf_and_far_points_are_never_inside():
    c = np.zeros((1, 3))
    s = np.full((1, 3), 1e6)  # a box that covers everything finite nearby
    q = np.array([[1.0, 0, 0, 0]])
    xyz = np.array([[np.nan, 0, 0], [0, np.nan, 0], [0, 0, np.nan], [np.inf, 0, 0], [0, -np.inf, 0],
                    [1e30, 0, 0], [1.0, 1.0, 1.0]], np.float32)
    labels, counts = points_in_boxes(xyz, c, s, q)
    np.testing.assert_array_equal(labels, [-1] * 6 + [0])
    assert counts[0] == 1


def test_mixed_box_sizes_and_empty_inputs():
    rng = np.random.default_rng(5)
    xyz, c, s, q = _scene(rng, n_boxes=30, n_points=5000)
    s[0] = [80.0, 80.0, 10.0]  # one box spanning the scene among small ones
    s[1:5] = 0.05
    labels, counts = points_in_boxes(xyz, c, s, q)
    np.testing.assert_array_equal(labels, naive.points_in_boxes(xyz, c, s, q)[0])
    labels, counts = points_in_boxes(np.zeros((0, 3), np.float32), c, s, q)
    assert labels.shape == (0,) and np.array_equal(counts, np.zeros(len(c)))
    labels, counts = points_in_boxes(xyz, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)))
    assert np.all(labels == -1) and counts.shape == (0,)
    # zero-size box: only a point exactly at its centre is inside
    labels, _ = points_in_boxes(np.array([[1, 1, 1], [1, 1, 1.01]], np.float32), np.ones((1, 3)),
                                np.zeros((1, 3)), [[1.0, 0, 0, 0]])
    np.testing.assert_array_equal(labels, [0, -1])


def test_bad_input_raises_value_error():
    c, s, q = np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]])
    p = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        points_in_boxes(np.zeros((4, 2)), c, s, q)
    with pytest.raises(ValueError, match="non-negative"):
        points_in_boxes(p, c, -s, q)
    with pytest.raises(ValueError, match="NaN"):
        points_in_boxes(p, np.full((1, 3), np.nan), s, q)
    with pytest.raises(ValueError, match="margin"):
        points_in_boxes(p, c, s, q, margin=-0.1)
    with pytest.raises(ValueError):
        points_in_boxes(p, c, np.ones((2, 3)), q)


def test_rig_point_labels_equal_simulator_hits(drive):
    """Every return lies in the box of the object the simulator says it hit, at its firing time."""
    from engine.cuboid_interp import TrackTable, interpolate_tracks

    table = TrackTable.from_tracks([*drive.static_tracks, *drive.actor_tracks])
    object_ids = np.array([int(i) for i in table.track_ids])
    checked = 0
    for lidar in drive.lidars:
        for sweep in drive.sweeps[lidar.name][::4]:  # 3 of the 10 frames keep the test short
            # boxes in the LiDAR frame at each distinct firing time; points stay as simulated
            times, first = np.unique(sweep.time_offset_ns, return_index=True)
            times = times + sweep.timestamp_ns
            world_from_lidar = drive.world_from_ego.interpolate(times) @ lidar.ego_from_lidar
            boxes = interpolate_tracks(table, times, "hold").to_ego(world_from_lidar)
            bounds = np.append(first, len(sweep))
            got = np.empty(len(sweep), np.int64)
            for k in range(len(times)):
                sl = slice(bounds[k], bounds[k + 1])
                labels, _ = points_in_boxes(sweep.xyz[sl], boxes.centers[k], boxes.sizes[k], boxes.rotations[k],
                                            margin=1e-4)  # float32 storage of exact face hits
                got[sl] = np.where(labels >= 0, object_ids[np.maximum(labels, 0)], 0)  # 0: ground
            hit = sweep.extra["object_id"]
            np.testing.assert_array_equal(got, hit)
            box_hits = hit[hit > 0]
            np.testing.assert_array_equal(np.bincount(got[got > 0], minlength=object_ids.max() + 1),
                                          np.bincount(box_hits, minlength=object_ids.max() + 1))
            checked += len(box_hits)
    assert checked > 500


def _huge_among_small(rng, n_huge: int, n_small: int, n_points: int, extent_m: float = 200.0):
    """A sweep over ±``extent_m`` and labels as one annotator could send them: ``n_huge`` boxes
    0.5 to 1000 km wide around it (first), then ``n_small`` cars among the points."""
    centers = np.vstack([rng.uniform(-50, 50, (n_huge, 3)), rng.uniform(-extent_m, extent_m, (n_small, 3))])
    centers[:, 2] = rng.uniform(-1, 2, len(centers))
    sizes = np.vstack([rng.uniform(5e2, 1e6, (n_huge, 3)), np.tile([4.5, 1.9, 1.6], (n_small, 1))])
    sizes[:n_huge, 2] = rng.uniform(0.5, 3, n_huge)  # thin slabs: their heights decide which points they hold
    rotations = quat.from_yaw(rng.uniform(-np.pi, np.pi, len(centers)))
    xyz = rng.uniform([-extent_m, -extent_m, -3], [extent_m, extent_m, 5], (n_points, 3)).astype(np.float32)
    return xyz, centers, sizes, rotations


@pytest.mark.parametrize("n_huge, n_small", [(200, 201), (10_000, 0), (5_000, 5_001)])
def test_huge_boxes_keep_the_grid_small_and_the_labels_exact(n_huge, n_small):
    """Huge boxes among small ones leave the grid's cells (its entries stay within the
    budget, O(B)) for the big list, and every label is still the reference's."""
    xyz, c, s, q = _huge_among_small(np.random.default_rng(n_huge), n_huge, n_small, 3000)
    labels, counts = points_in_boxes(xyz, c, s, q)
    ref_labels, ref_counts = naive.points_in_boxes(xyz, c, s, q)
    np.testing.assert_array_equal(labels, ref_labels)
    np.testing.assert_array_equal(counts, ref_counts)
    assert np.count_nonzero(counts[:n_huge]) > min(n_huge, 100) // 2
    *_, nx, ny, start, boxes, big = pib._prepare(xyz, q, c, s, 0.0)
    b = len(c)
    assert start.shape == (nx * ny + 1,) and nx * ny <= pib._MAX_CELLS
    assert len(boxes) <= pib._ENTRIES_PER_BOX * b + pib._MIN_ENTRIES
    assert np.all(big < n_huge) and np.all(np.diff(big) > 0)  # only huge boxes are big, ascending
    if n_small:
        assert len(big) > n_huge // 2


def test_huge_moving_boxes_match_the_reference():
    """The moving-box labeller shares the bounded grid: huge and small boxes, half of them
    moving over 3 steps (one step without them), each point at its own step."""
    rng = np.random.default_rng(3)
    xyz, c, s, q = _huge_among_small(rng, 200, 201, 3000)
    n_b, t_n = len(c), 3
    moving = np.arange(0, n_b, 2)
    shift = np.array([0.0, 7.0, -40.0])[:, None, None] * np.array([1.0, 0.5, 0.0])
    valid = np.ones((t_n, len(moving)), bool)
    valid[2, ::3] = False
    offsets = rng.integers(0, 3 * t_n, len(xyz))  # steps at 0, 3, 6 ns: a point at another time is in no moving box
    args = (1, c, s, q, moving, np.arange(t_n) * 3, c[moving] + shift,
            np.broadcast_to(s[moving], (t_n, len(moving), 3)), np.broadcast_to(q[moving], (t_n, len(moving), 4)),
            valid)
    got = points_in_boxes_at_times(xyz.astype(np.float64), offsets, *args)
    ref = naive.boxes_at_times(xyz.astype(np.float64), offsets, *args, 0.0)
    np.testing.assert_array_equal(got, ref)
    assert np.count_nonzero(got >= 0) > 100
