"""points_in_moving_boxes: each point against the boxes of its own time step, by the rules
of points_in_boxes (checked against it, called once per step)."""

from __future__ import annotations

import numpy as np
import pytest

from engine.moving_boxes import points_in_moving_boxes
from engine.points_in_boxes import points_in_boxes
from engine.quaternion import from_yaw


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
