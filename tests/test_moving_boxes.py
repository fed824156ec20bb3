"""points_in_moving_boxes: each point against the boxes of its own time step, by the rules
of points_in_boxes (checked against it, called once per step); points_in_boxes_at_times:
fixed and moving boxes, each point's step from its time (checked against the plain NumPy
reference of tests/naive.py and hand-made edge cases)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.moving_boxes import points_in_boxes_at_times, points_in_moving_boxes
from engine.points_in_boxes import points_in_boxes
from engine.quaternion import from_yaw
from tests.naive import boxes_at_times


def _scene(rng, t_n=7, b_n=5, n=4000):
    centers = rng.uniform(-4, 4, (t_n, b_n, 3))
    sizes = rng.uniform(2, 7, (t_n, b_n, 3))
    rotations = from_yaw(rng.uniform(-np.pi, np.pi, (t_n, b_n)))
    valid = rng.random((t_n, b_n)) < 0.8
    xyz = rng.uniform(-5, 5, (n, 3)).astype(np.float32)
    steps = rng.integers(0, t_n, n)
    return xyz, steps, centers, sizes, rotations, valid


def _reference(xyz, steps, centers, sizes, rotations, valid, margin):
    out = np.full(len(xyz), -1, np.int32)
    for t in range(len(valid)):
        live = np.flatnonzero(valid[t])
        sel = np.flatnonzero(steps == t)
        if len(live) and len(sel):
            hit, _ = points_in_boxes(xyz[sel], centers[t, live], sizes[t, live], rotations[t, live], margin=margin)
            out[sel] = np.where(hit >= 0, live[np.maximum(hit, 0)], -1)
    return out


@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_equals_points_in_boxes_per_step(margin):
    rng = np.random.default_rng(7)
    args = _scene(rng)
    args[0][:5] = np.nan  # never inside
    args[2][2, 1] = np.nan  # an invalid box's values are ignored
    args[5][2, 1] = False
    got = points_in_moving_boxes(*args, margin=margin)
    expect = _reference(*args, margin)
    np.testing.assert_array_equal(got, expect)
    assert (got >= 0).mean() > 0.2 and np.all(got[:5] == -1)
    # the boxes overlap: points inside several boxes of their step exist (nearest centre won)
    xyz, steps, centers, sizes, rotations, valid = args
    inside = np.zeros(len(xyz), int)
    for t, b in zip(*np.nonzero(valid)):
        sel = np.flatnonzero(steps == t)
        inside[sel] += points_in_boxes(xyz[sel], centers[t, [b]], sizes[t, [b]], rotations[t, [b]], margin)[0] == 0
    assert (inside >= 2).sum() > 50


def test_a_point_on_a_face_is_inside_and_steps_matter():
    centers = np.array([[[0.0, 0, 0]], [[10.0, 0, 0]]])
    sizes = np.full((2, 1, 3), 2.0)
    rotations = np.tile([1.0, 0, 0, 0], (2, 1, 1))
    xyz = np.array([[1.0, 0, 0], [1.0, 0, 0], [11.02, 0, 0]], np.float32)
    got = points_in_moving_boxes(xyz, np.array([0, 1, 1]), centers, sizes, rotations, np.ones((2, 1), bool))
    np.testing.assert_array_equal(got, [0, -1, -1])
    got = points_in_moving_boxes(xyz, np.array([0, 1, 1]), centers, sizes, rotations, np.ones((2, 1), bool),
                                 margin=0.03)
    np.testing.assert_array_equal(got, [0, -1, 0])


def test_empty_inputs_and_bad_input():
    rng = np.random.default_rng(1)
    xyz, steps, c, s, q, v = _scene(rng, n=10)
    assert points_in_moving_boxes(xyz[:0], steps[:0], c, s, q, v).shape == (0,)
    assert np.all(points_in_moving_boxes(xyz, steps, c[:, :0], s[:, :0], q[:, :0], v[:, :0]) == -1)
    with pytest.raises(ValueError, match=r"xyz must have shape \(N, 3\)"):
        points_in_moving_boxes(xyz[:, :2], steps, c, s, q, v)
    with pytest.raises(ValueError, match="steps must be in"):
        points_in_moving_boxes(xyz, np.full(10, 7), c, s, q, v)
    with pytest.raises(ValueError, match=r"steps must have shape \(10,\)"):
        points_in_moving_boxes(xyz, steps[:3], c, s, q, v)
    with pytest.raises(ValueError, match="sizes must have shape"):
        points_in_moving_boxes(xyz, steps, c, s[:2], q, v)
    with pytest.raises(ValueError, match="margin"):
        points_in_moving_boxes(xyz, steps, c, s, q, v, margin=-1)
    bad = c.copy()
    bad[v] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        points_in_moving_boxes(xyz, steps, bad, s, q, v)


# ---------------------------------------------------------------- points_in_boxes_at_times


def _timed_scene(rng, n=6000, b_n=9, m_n=4, t_n=12, step_ns=1000, spread=4.0, size=(2.0, 7.0)):
    """Fixed and moving boxes (the moving ones: ``moving``, values per step) and float64
    points whose offsets span the steps, some before them, between two of them (a gap in
    ``steps``) and at negative offsets (floor division)."""
    centers = rng.uniform(-spread, spread, (b_n, 3))
    sizes = rng.uniform(*size, (b_n, 3))
    rotations = from_yaw(rng.uniform(-np.pi, np.pi, b_n))
    moving = np.sort(rng.choice(b_n, m_n, replace=False))
    steps = np.concatenate([np.arange(-2, 4), np.arange(5, 5 + t_n - 6)])  # step 4 missing
    mc = centers[moving] + rng.uniform(-1, 1, (t_n, m_n, 3)) * size[1] / 3
    ms = sizes[moving] * rng.uniform(0.8, 1.2, (t_n, m_n, 3))
    mq = from_yaw(rng.uniform(-np.pi, np.pi, (t_n, m_n)))
    mv = rng.random((t_n, m_n)) < 0.85
    mc[~mv] = np.nan  # not read
    near = centers[rng.integers(0, b_n, n)] + rng.normal(0, size[1] / 3, (n, 3))
    xyz = np.where(rng.random((n, 1)) < 0.5, near, rng.uniform(-spread - 3, spread + 3, (n, 3)))
    offsets = rng.integers(-3 * step_ns, (steps[-1] + 2) * step_ns, n)
    return xyz, offsets, step_ns, centers, sizes, rotations, moving, steps, mc, ms, mq, mv


@pytest.mark.parametrize("margin", [0.0, 0.02])
@pytest.mark.parametrize("wide", [False, True])
def test_timed_boxes_equal_the_numpy_reference(margin, wide):
    rng = np.random.default_rng(3)
    # wide: small boxes 2 km apart (the grid's cells grow far beyond a box)
    args = _timed_scene(rng, n=20000, b_n=60, m_n=10, spread=1000.0, size=(0.2, 1.0)) if wide else _timed_scene(rng)
    args[0][:4] = [[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf], [np.nan] * 3]
    got = points_in_boxes_at_times(*args, margin=margin)
    expect = boxes_at_times(*args, margin)
    np.testing.assert_array_equal(got, expect)
    assert got.dtype == np.int32 and np.all(got[:4] == -1)
    xyz, offsets, step_ns, centers, sizes, rotations, moving, steps = args[:8]
    assert (got >= 0).mean() > 0.1
    assert np.isin(got, moving).sum() > 100 and (~np.isin(got, moving) & (got >= 0)).sum() > 100
    # points of the missing step 4 and before the first step are in no moving box
    off_steps = ~np.isin(offsets // step_ns, steps)
    assert off_steps.sum() > 100 and not np.isin(got[off_steps], moving).any()
    if not wide:  # overlaps happen: points inside several boxes, nearest centre won
        alone = [boxes_at_times(*args[:3], *(a[[b]] for a in args[3:6]), np.zeros(0, int), args[7],
                                *(a[:, :0] for a in args[8:]), margin) for b in range(len(centers))
                 if b not in moving]
        assert (np.sum([a >= 0 for a in alone], axis=0) >= 2).sum() > 50


def _one_box(center=(0.0, 0, 0), size=(2.0, 2, 2)):
    return np.array([center]), np.array([size]), np.array([[1.0, 0, 0, 0]])


def _no_moving(t_n=0):
    return (np.zeros(0, np.int64), np.arange(t_n), np.zeros((t_n, 0, 3)), np.zeros((t_n, 0, 3)),
            np.zeros((t_n, 0, 4)), np.zeros((t_n, 0), bool))


def test_timed_boxes_point_on_a_face_within_the_margin():
    xyz = np.array([[1.0, 0, 0], [1.02, 0, 0], [0, -1.02, 1.0], [1.0200001, 0, 0]])
    off = np.zeros(4, np.int64)
    got = points_in_boxes_at_times(xyz, off, 1, *_one_box(), *_no_moving())
    np.testing.assert_array_equal(got, [0, -1, -1, -1])
    got = points_in_boxes_at_times(xyz, off, 1, *_one_box(), *_no_moving(), margin=0.02)
    np.testing.assert_array_equal(got, [0, 0, 0, -1])
    # the same box moving: on its face at the point's step, not at the other one
    mc = np.array([[[0.0, 0, 0]], [[10.0, 0, 0]]])
    moving = (np.array([0]), np.array([0, 1]), mc, np.full((2, 1, 3), 2.0), np.tile([1.0, 0, 0, 0], (2, 1, 1)),
              np.ones((2, 1), bool))
    xyz = np.array([[1.02, 0, 0], [1.02, 0, 0], [11.02, 0, 0], [11.03, 0, 0]])
    got = points_in_boxes_at_times(xyz, [0, 1500, 1999, 1000], 1000, *_one_box(), *moving, margin=0.02)
    np.testing.assert_array_equal(got, [0, -1, 0, -1])


def test_timed_boxes_ties_go_to_the_lower_index():
    # boxes 0 and 1 share a centre (exact tie); 2 and 3 are mirror images about x = 20
    centers = np.array([[0.0, 0, 0], [0.0, 0, 0], [19.0, 0, 0], [21.0, 0, 0]])
    sizes = np.full((4, 3), 4.0)
    rotations = np.tile([1.0, 0, 0, 0], (4, 1))
    xyz = np.array([[0.5, 0.5, 0.5], [20.0, 0.3, 0], [20.5, 0, 0], [19.5, 0, 0]])
    off = np.zeros(4, np.int64)
    np.testing.assert_array_equal(
        points_in_boxes_at_times(xyz, off, 1, centers, sizes, rotations, *_no_moving()), [0, 2, 3, 2])
    # a moving box ties with a fixed one at the point's step, either index order
    for moving in ([0], [1], [2], [3]):
        t = (np.array(moving), np.array([0]), centers[None, moving], sizes[None, moving],
             rotations[None, moving], np.ones((1, 1), bool))
        np.testing.assert_array_equal(points_in_boxes_at_times(xyz, off, 1, centers, sizes, rotations, *t),
                                      [0, 2, 3, 2])


def test_a_track_that_starts_mid_frame_holds_points_only_from_then():
    t_n = 10
    mv = np.arange(t_n)[:, None] >= 4  # exists from step 4 on
    mc = np.tile([0.0, 0, 0], (t_n, 1, 1))
    args = (np.array([1]), np.arange(t_n), mc, np.full((t_n, 1, 3), 2.0), np.tile([1.0, 0, 0, 0], (t_n, 1, 1)), mv)
    centers, sizes, rotations = (np.concatenate([a, a]) for a in _one_box((50.0, 0, 0)))
    xyz = np.zeros((t_n, 3))
    got = points_in_boxes_at_times(xyz, np.arange(t_n) * 100 + 5, 100, centers, sizes, rotations, *args)
    np.testing.assert_array_equal(got, np.where(np.arange(t_n) >= 4, 1, -1))


def test_timed_boxes_empty_inputs():
    box = _one_box()
    assert points_in_boxes_at_times(np.zeros((0, 3)), np.zeros(0, np.int64), 1, *box, *_no_moving()).shape == (0,)
    xyz = np.zeros((3, 3))
    none = (np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)))
    np.testing.assert_array_equal(points_in_boxes_at_times(xyz, np.zeros(3, int), 1, *none, *_no_moving(5)), -1)
    # all points non-finite: no grid, nothing inside
    nan = np.full((3, 3), np.nan)
    np.testing.assert_array_equal(points_in_boxes_at_times(nan, np.zeros(3, int), 1, *box, *_no_moving()), -1)
    # a moving box valid at no step is in no box
    t = (np.array([0]), np.arange(2), np.zeros((2, 1, 3)), np.ones((2, 1, 3)), np.tile([1.0, 0, 0, 0], (2, 1, 1)),
         np.zeros((2, 1), bool))
    np.testing.assert_array_equal(points_in_boxes_at_times(xyz, np.zeros(3, int), 1, *box, *t), -1)


def test_timed_boxes_bad_input():
    box = _one_box()
    xyz, off = np.zeros((3, 3)), np.zeros(3, np.int64)
    moving = (np.array([0]), np.arange(2), np.zeros((2, 1, 3)), np.ones((2, 1, 3)), np.tile([1.0, 0, 0, 0], (2, 1, 1)),
              np.ones((2, 1), bool))
    with pytest.raises(ValueError, match=r"xyz must have shape \(N, 3\), got \(3, 2\)"):
        points_in_boxes_at_times(xyz[:, :2], off, 1, *box, *moving)
    with pytest.raises(ValueError, match=r"time_offset_ns must be \(3,\) integer ns, got float64"):
        points_in_boxes_at_times(xyz, off.astype(float), 1, *box, *moving)
    with pytest.raises(ValueError, match=r"time_offset_ns must be \(3,\)"):
        points_in_boxes_at_times(xyz, off[:2], 1, *box, *moving)
    with pytest.raises(ValueError, match="step_ns must be an integer >= 1, got 0"):
        points_in_boxes_at_times(xyz, off, 0, *box, *moving)
    with pytest.raises(ValueError, match=r"moving must be distinct box indices in \[0, 1\)"):
        points_in_boxes_at_times(xyz, off, 1, *box, np.array([1]), *moving[1:])
    with pytest.raises(ValueError, match=r"moving must be \(1,\) integer box indices"):
        points_in_boxes_at_times(xyz, off, 1, *box, np.array([0, 0]), *moving[1:])
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        points_in_boxes_at_times(xyz, off, 1, *box, moving[0], np.array([1, 1]), *moving[2:])
    with pytest.raises(ValueError, match=r"steps must be \(2,\) integer step numbers"):
        points_in_boxes_at_times(xyz, off, 1, *box, moving[0], np.arange(3), *moving[2:])
    with pytest.raises(ValueError, match=r"sizes must have shape \(2, 1, 3\)"):
        points_in_boxes_at_times(xyz, off, 1, *box, *moving[:3], moving[3][:, :, :2], *moving[4:])
    with pytest.raises(ValueError, match="NaN or infinite"):
        points_in_boxes_at_times(xyz, off, 1, np.full((1, 3), np.nan), *box[1:], *moving)
    with pytest.raises(ValueError, match="margin"):
        points_in_boxes_at_times(xyz, off, 1, *box, *moving, margin=np.nan)
