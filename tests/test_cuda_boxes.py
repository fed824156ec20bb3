"""GPU box ids at each point's firing time (engine.cuda.boxes) against the CPU labeller:
fixed and moving boxes, steps missing, overlaps, huge boxes (the grid's big list), non-finite
points; box ids identical."""

from __future__ import annotations

import numpy as np
import pytest

from engine.moving_boxes import points_in_boxes_at_times, points_in_moving_boxes
from engine.quaternion import from_yaw
from tests.cuda_backend import sizes
from tests.cuda_scenes import timed_boxes


@pytest.mark.parametrize("n", sizes(2000, 170_000))
@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_box_ids_at_times_equal_the_cpu(n, margin):
    rng = np.random.default_rng(n)
    args = timed_boxes(rng, n)
    cpu = points_in_boxes_at_times(*args, margin=margin, device="cpu")
    gpu = points_in_boxes_at_times(*args, margin=margin, device="cuda")
    assert gpu.dtype == np.int32
    np.testing.assert_array_equal(gpu, cpu)
    moving = args[6]
    assert np.isin(cpu, moving).sum() > n // 50 and (~np.isin(cpu, moving) & (cpu > 1)).sum() > n // 50
    assert np.isin(cpu, [0, 1]).any() and np.all(cpu[:3] == -1)


@pytest.mark.parametrize("n", sizes(1500, 170_000))
def test_moving_boxes_per_step_equal_the_cpu(n):
    rng = np.random.default_rng(n + 1)
    t_n, b_n = 9, 30
    centers = rng.uniform(-10, 10, (t_n, b_n, 3))
    box_sizes = rng.uniform(2, 7, (t_n, b_n, 3))
    rotations = from_yaw(rng.uniform(-np.pi, np.pi, (t_n, b_n)))
    valid = rng.random((t_n, b_n)) < 0.8
    xyz = rng.uniform(-12, 12, (n, 3)).astype(np.float32)
    steps = rng.integers(0, t_n, n)
    cpu = points_in_moving_boxes(xyz, steps, centers, box_sizes, rotations, valid, margin=0.01, device="cpu")
    gpu = points_in_moving_boxes(xyz, steps, centers, box_sizes, rotations, valid, margin=0.01, device="cuda")
    np.testing.assert_array_equal(gpu, cpu)
    assert (cpu >= 0).mean() > 0.1


def test_no_points_no_boxes_no_steps_and_bad_input():
    rng = np.random.default_rng(5)
    xyz, offsets, step_ns, c, s, q, moving, steps, mc, ms, mq, mv = timed_boxes(rng, 50)
    assert points_in_boxes_at_times(xyz[:0], offsets[:0], step_ns, c, s, q, moving, steps, mc, ms, mq, mv,
                                    device="cuda").shape == (0,)
    no_steps = (moving, steps[:0], mc[:0], ms[:0], mq[:0], mv[:0])  # moving boxes that exist at no step
    cpu = points_in_boxes_at_times(xyz, offsets, step_ns, c, s, q, *no_steps, device="cpu")
    np.testing.assert_array_equal(points_in_boxes_at_times(xyz, offsets, step_ns, c, s, q, *no_steps, device="cuda"),
                                  cpu)
    with pytest.raises(ValueError, match="steps must be strictly increasing"):
        points_in_boxes_at_times(xyz, offsets, step_ns, c, s, q, moving, steps[::-1], mc, ms, mq, mv, device="cuda")
