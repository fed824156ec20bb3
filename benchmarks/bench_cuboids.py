"""Cuboid tracks: interpolation vs scale_sensor_fusion_io, points-in-boxes vs open3d.

- ``cuboid_interp_1000x200``: 1,000 tracks (20 keyframes each, 1 Hz) at 200 frame times
  (10 Hz; the last 9 after the last keyframe, so held), goal ≥ 100×. Like for like: the same
  tracks and times, world frame on both sides (no ego conversion, no matrices), ends held.

  - Fathom: :func:`interpolate_tracks` (``"hold"``) on a ``TrackTable`` packed before timing
    → ``centers (T, N, 3)``, ``sizes (T, N, 3)``, ``rotations (T, N, 4)`` (slerp) float64
    and ``valid (T, N)``: 2.0 M floats. A second Fathom row (``dtype=float32``, the serving
    variant) is reported beside it, without the goal.
  - Peer: ``CuboidPath.interpolate`` (default ``fill_value="nearest"``, which holds) for each
    of the 1,000 ``CuboidPath`` DataFrames built before timing → per track a ``(T, 9)`` float64
    frame ``[x y z yaw pitch roll dx dy dz]`` (``interp1d`` on all nine columns, Euler angles
    included: less arithmetic than a slerp): 1.8 M floats.
- ``points_in_100_boxes_170k``: one 170 k-point sweep, 100 rotated boxes; Fathom's
  :func:`points_in_boxes` vs a loop over open3d ``OrientedBoundingBox.
  get_point_indices_within_bounding_box`` (inclusive bounds, like Fathom's), goal ≥ 5×.
- ``box_ids_at_times_170k``: the same sweep in float64 with firing times over 100 ms and the
  same boxes, 20 of them moving (up to 1.5 m in the sweep, two appearing mid-sweep) at 100
  steps of 1 ms, each point tested against the boxes at its own step (``prepare``'s
  ``box_id``): Fathom's :func:`points_in_boxes_at_times` (one pass) vs open3d: one call per
  fixed box on all points plus one per moving box and step on that step's points, goal ≥ 5×.
"""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import CuboidTrack
from engine.cuboid_interp import TrackTable, interpolate_tracks
from engine.moving_boxes import points_in_boxes_at_times
from engine.points_in_boxes import points_in_boxes

N_TRACKS, N_KEYS, N_FRAMES = 1000, 20, 200
N_POINTS, N_BOXES = 170_000, 100
N_MOVING, N_STEPS, STEP_NS = 20, 100, 1_000_000
T0_NS = 1_700_000_000_000_000_000


def random_tracks() -> tuple[list[CuboidTrack], np.ndarray]:
    """``N_TRACKS`` random-walk cars keyed at 1 Hz over 20 s and the ``N_FRAMES`` 10 Hz frame
    times: the interpolation benchmarks' input (here and in ``bench_assist``)."""
    rng = np.random.default_rng(17)
    key_ns = T0_NS + np.arange(N_KEYS, dtype=np.int64) * 1_000_000_000  # 1 Hz keyframes over 20 s
    out = []
    for n in range(N_TRACKS):
        centers = np.cumsum(rng.normal(0, 1, (N_KEYS, 3)), axis=0) + rng.uniform(-100, 100, 3)
        yaw = np.cumsum(rng.normal(0, 0.2, N_KEYS))
        out.append(CuboidTrack(f"t{n}", "car", key_ns, centers, np.tile(rng.uniform(1, 5, 3), (N_KEYS, 1)),
                               quat.from_yaw(yaw)))
    frames_ns = T0_NS + np.arange(N_FRAMES, dtype=np.int64) * 100_000_000  # 10 Hz
    return out, frames_ns


@pytest.fixture(scope="module")
def tracks():
    return random_tracks()


def test_fathom_interpolate_tracks(benchmark, tracks):
    items, frames_ns = tracks
    table = TrackTable.from_tracks(items)
    benchmark.group = "cuboid_interp_1000x200"
    benchmark.extra_info.update(role="fathom", goal=100, items=N_TRACKS * N_FRAMES, unit="boxes")
    out = benchmark(interpolate_tracks, table, frames_ns, "hold")
    assert out.valid.all() and out.centers.shape == (N_FRAMES, N_TRACKS, 3)


def test_fathom_interpolate_tracks_float32(benchmark, tracks):
    items, frames_ns = tracks
    table = TrackTable.from_tracks(items)
    benchmark.group = "cuboid_interp_1000x200"
    benchmark.extra_info.update(role="fathom", items=N_TRACKS * N_FRAMES, unit="boxes")
    out = benchmark(interpolate_tracks, table, frames_ns, "hold", np.float32)
    assert out.valid.all() and out.centers.dtype == np.float32


def test_sfio_cuboid_path_interpolate(benchmark, tracks):
    from scale_sensor_fusion_io.models import CuboidPath

    from formats.sfs_cuboids import cuboids_to_sfs_values

    items, frames_ns = tracks
    frames_us = frames_ns // 1000
    paths = []
    for t in items:
        v = cuboids_to_sfs_values(t.centers, t.sizes, t.rotations)  # dx dy dz px py pz roll pitch yaw
        # the model's columns: x y z yaw pitch roll dx dy dz (as model_converters.sfs reorders)
        paths.append(CuboidPath(np.hstack([v[:, 3:6], v[:, 8:5:-1], v[:, 0:3]]), index=t.timestamps_ns // 1000))
    benchmark.group = "cuboid_interp_1000x200"
    benchmark.extra_info.update(role="peer")

    def run():
        return [p.interpolate(frames_us) for p in paths]

    out = benchmark.pedantic(run, rounds=3, iterations=1, warmup_rounds=1)
    assert len(out) == N_TRACKS and out[0].shape == (N_FRAMES, 9)
    # the same boxes: centres and sizes agree (the rotations differ by design: Euler lerp vs slerp)
    ours = interpolate_tracks(TrackTable.from_tracks(items), frames_ns, "hold")
    peer = np.stack([p[CuboidPath.POSITION + CuboidPath.DIMENSIONS].to_numpy() for p in out], axis=1)
    np.testing.assert_allclose(peer, np.concatenate([ours.centers, ours.sizes], axis=2), atol=1e-9)


@pytest.fixture(scope="module")
def sweep_and_boxes():
    rng = np.random.default_rng(23)
    centers = np.column_stack([rng.uniform(-60, 60, (N_BOXES, 2)), rng.uniform(0.7, 1.0, N_BOXES)])
    sizes = np.column_stack([rng.uniform(3.5, 5.5, N_BOXES), rng.uniform(1.6, 2.1, N_BOXES),
                             rng.uniform(1.4, 2.0, N_BOXES)])
    rotations = quat.from_yaw(rng.uniform(-np.pi, np.pi, N_BOXES))
    # a sweep-like cloud: ground out to 80 m, a third of the points on and around the boxes
    r = 80 * np.sqrt(rng.uniform(0, 1, N_POINTS))
    a = rng.uniform(0, 2 * np.pi, N_POINTS)
    xyz = np.column_stack([r * np.cos(a), r * np.sin(a), rng.normal(0, 0.05, N_POINTS)])
    k = N_POINTS // 3
    pick = rng.integers(0, N_BOXES, k)
    local = rng.uniform(-0.6, 0.6, (k, 3)) * sizes[pick]
    xyz[:k] = quat.rotate(rotations[pick], local) + centers[pick]
    return xyz.astype(np.float32), centers, sizes, rotations


def test_fathom_points_in_boxes(benchmark, sweep_and_boxes):
    xyz, centers, sizes, rotations = sweep_and_boxes
    benchmark.group = "points_in_100_boxes_170k"
    benchmark.extra_info.update(role="fathom", goal=5, items=N_POINTS, unit="points")
    labels, counts = benchmark(points_in_boxes, xyz, centers, sizes, rotations)
    assert counts.sum() > N_POINTS // 5


def test_open3d_obb_loop(benchmark, sweep_and_boxes):
    import open3d as o3d

    xyz, centers, sizes, rotations = sweep_and_boxes
    boxes = [o3d.geometry.OrientedBoundingBox(c, r, s) for c, r, s in zip(centers, quat.to_matrix(rotations), sizes)]
    points = o3d.utility.Vector3dVector(xyz.astype(np.float64))
    benchmark.group = "points_in_100_boxes_170k"
    benchmark.extra_info.update(role="peer")

    def run():
        labels = np.full(len(xyz), -1, np.int32)
        counts = np.zeros(len(boxes), np.int64)
        for b, box in enumerate(boxes):
            idx = box.get_point_indices_within_bounding_box(points)
            labels[idx] = b
            counts[b] = len(idx)
        return labels, counts

    labels, counts = benchmark(run)
    fathom_labels, fathom_counts = points_in_boxes(xyz, centers, sizes, rotations)
    # boxes do not overlap much here: the same points are inside
    assert np.array_equal(labels >= 0, fathom_labels >= 0)


@pytest.fixture(scope="module")
def timed_sweep_and_boxes(sweep_and_boxes):
    xyz, centers, sizes, rotations = sweep_and_boxes
    rng = np.random.default_rng(29)
    offsets = np.sort(rng.integers(0, N_STEPS * STEP_NS, N_POINTS))
    moving = np.arange(0, N_BOXES, N_BOXES // N_MOVING)
    steps = np.arange(N_STEPS)
    velocity = rng.uniform(-15, 15, (N_MOVING, 3)) * [1, 1, 0]  # m/s
    mid_s = (steps * STEP_NS + STEP_NS // 2) * 1e-9
    m_centers = centers[moving] + mid_s[:, None, None] * velocity
    m_sizes = np.broadcast_to(sizes[moving], m_centers.shape).copy()
    m_rotations = np.broadcast_to(rotations[moving], (N_STEPS, N_MOVING, 4)).copy()
    m_valid = np.ones((N_STEPS, N_MOVING), bool)
    m_valid[:40, :2] = False  # two tracks start mid-sweep
    return (xyz.astype(np.float64), offsets, STEP_NS, centers, sizes, rotations, moving, steps,
            m_centers, m_sizes, m_rotations, m_valid)


def test_fathom_points_in_boxes_at_times(benchmark, timed_sweep_and_boxes):
    benchmark.group = "box_ids_at_times_170k"
    benchmark.extra_info.update(role="fathom", goal=5, items=N_POINTS, unit="points")
    labels = benchmark(points_in_boxes_at_times, *timed_sweep_and_boxes)
    assert (labels >= 0).sum() > N_POINTS // 5


def test_open3d_obb_loop_per_step(benchmark, timed_sweep_and_boxes):
    import open3d as o3d

    xyz, offsets, step_ns, centers, sizes, rotations, moving, steps, m_c, m_s, m_q, m_valid = timed_sweep_and_boxes
    fixed = np.setdiff1d(np.arange(N_BOXES), moving)
    obb = o3d.geometry.OrientedBoundingBox
    fixed_boxes = [obb(centers[b], quat.to_matrix(rotations[b]), sizes[b]) for b in fixed]
    step_of = offsets // step_ns
    bounds = np.searchsorted(step_of, steps), np.searchsorted(step_of, steps, side="right")  # sorted offsets
    moving_boxes = [[obb(m_c[t, m], quat.to_matrix(m_q[t, m]), m_s[t, m]) if m_valid[t, m] else None
                     for m in range(len(moving))] for t in range(len(steps))]
    points = o3d.utility.Vector3dVector(xyz)
    step_points = [o3d.utility.Vector3dVector(xyz[a:b]) for a, b in zip(*bounds)]
    benchmark.group = "box_ids_at_times_170k"
    benchmark.extra_info.update(role="peer")

    def run():
        labels = np.full(len(xyz), -1, np.int32)
        for b, box in zip(fixed, fixed_boxes):
            labels[box.get_point_indices_within_bounding_box(points)] = b
        for t, start in enumerate(bounds[0]):
            for m, box in enumerate(moving_boxes[t]):
                if box is not None:
                    inside = np.asarray(box.get_point_indices_within_bounding_box(step_points[t]), int)
                    labels[start + inside] = moving[m]
        return labels

    labels = benchmark(run)
    # the boxes do not overlap much here: the same points are inside
    fathom = points_in_boxes_at_times(*timed_sweep_and_boxes)
    assert np.mean((labels >= 0) == (fathom >= 0)) > 0.999
