"""The 3D tracker on the rig's ground truth (noisy detections, CLEAR-MOT via motmetrics),
on crossing paths, and on hand-made cases (keyframes, classes, determinism, bad input)."""

from __future__ import annotations

import math

import motmetrics as mm
import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid_interp import interpolate_tracks
from engine.se3 import SE3
from engine.sim.lidar import BeamPattern, Lidar
from engine.tracker import Detections, TrackerParams, track_detections, tracks_from_source_ids

DT_NS = 100_000_000
SIGMA_M, SIGMA_RAD, MISS, FALSE = 0.2, 0.05, 0.10, 0.05


@pytest.fixture(scope="module")
def truth():
    """The 10 s test drive's actors at its 100 frames (the preset's world; a one-beam LiDAR,
    the sweeps are not needed): frame times, centres ``(A, F, 3)``, yaws ``(A, F)``, sizes,
    classes, and which actors are within 50 m of the ego at each frame ``(A, F)``."""
    from engine.sim.road import simulate_drive

    lidar = Lidar("one", BeamPattern.uniform(1, 0.0, 0.0, 4, max_range_m=60.0), SE3.identity())
    drive = simulate_drive(seed=0, duration_s=10.0, preset="test", lidars=(lidar,), radars=())
    world = drive.world
    times = drive.frame_times_ns
    poses = [world.actor_pose(j, times) for j in range(world.n_actors)]
    centers = np.stack([c for c, _ in poses])
    yaws = np.stack([y for _, y in poses])
    ego = drive.world_from_ego.interpolate(times).translation
    near = np.linalg.norm(centers[:, :, :2] - ego[None, :, :2], axis=2) <= 50.0
    classes = [drive.objects.category[i] for i in world.actor_ids]
    return times, centers, yaws, world.actor_size, classes, near, ego


def noisy_detections(centers, yaws, sizes, classes, present, rng, ego=None) -> tuple[Detections, np.ndarray]:
    """Detections of the present objects: σ 0.2 m and 0.05 rad, 10 % missed, and for 5 % of
    them a false detection somewhere within 50 m of the ego (or of the object). Returns them
    and each one's true object (−1: false)."""
    rows = []
    for f in range(centers.shape[1]):
        for a in np.flatnonzero(present[:, f]):
            if rng.random() < FALSE:
                at = (ego[f] if ego is not None else centers[a, f]) + np.r_[rng.uniform(-50, 50, 2), 0.0]
                rows.append((f, at, sizes[a], rng.uniform(-np.pi, np.pi), classes[a], -1))
            if rng.random() < MISS:
                continue
            rows.append((f, centers[a, f] + rng.normal(0, SIGMA_M, 3), sizes[a], yaws[a, f] + rng.normal(0, SIGMA_RAD),
                         classes[a], a))
    f, c, s, y, k, who = zip(*rows)
    det = Detections(np.array(f), np.array(c), np.array(s), quat.from_yaw(np.array(y)), k,
                     rng.uniform(0.3, 1.0, len(f)))
    return det, np.array(who)


def clear_mot(times, centers, present, tracks, max_m=1.0):
    """motmetrics summary of the tracks (interpolated at the frames) against the truth."""
    boxes = interpolate_tracks(tracks, times)
    acc = mm.MOTAccumulator(auto_id=True)
    for f in range(len(times)):
        objs = np.flatnonzero(present[:, f])
        hyps = np.flatnonzero(boxes.valid[f])
        d2 = mm.distances.norm2squared_matrix(centers[objs, f], boxes.centers[f, hyps], max_d2=max_m ** 2)
        acc.update(objs.tolist(), hyps.tolist(), d2)
    return mm.metrics.create().compute(acc, metrics=["mota", "num_switches", "num_false_positives", "num_misses",
                                                     "num_objects"], name="run")


def test_rig_noisy_detections_mota_at_least_0_95(truth):
    times, centers, yaws, sizes, classes, near, ego = truth
    for seed in range(3):
        det, _ = noisy_detections(centers, yaws, sizes, classes, near, np.random.default_rng(seed), ego)
        result = track_detections(det, times)
        summary = clear_mot(times, centers, near, result.tracks)
        assert summary["num_objects"].iloc[0] > 600  # enough ground truth for the number to mean something
        assert summary["mota"].iloc[0] >= 0.95, summary


def _crossing(kind: str):
    """Two objects whose paths cross with 2 m between them at their closest: cars at right
    angles (10 m/s), pedestrians head-on on lines 2 m apart (1.4 m/s), cars overtaking in lanes
    2 m apart (12 vs 8 m/s). Returns centres ``(2, F, 3)``, yaws, sizes, classes (40 frames)."""
    t = np.arange(40) * 0.1
    if kind == "right_angle":
        v, t0 = 10.0, 2 * math.sqrt(2) / 10.0  # closest approach v·t0/√2 = 2 m at t = 2 + t0/2
        a = np.column_stack([v * (t - 2.0), np.zeros_like(t), np.full_like(t, 0.8)])
        b = np.column_stack([np.zeros_like(t), v * (t - 2.0 - t0), np.full_like(t, 0.8)])
        yaws, size, cls = (np.zeros_like(t), np.full_like(t, np.pi / 2)), [4.5, 1.9, 1.6], "car"
    elif kind == "head_on":
        a = np.column_stack([1.4 * (t - 2.0), np.zeros_like(t), np.full_like(t, 0.9)])
        b = np.column_stack([-1.4 * (t - 2.0), np.full_like(t, 2.0), np.full_like(t, 0.9)])
        yaws, size, cls = (np.zeros_like(t), np.full_like(t, np.pi)), [0.6, 0.6, 1.8], "pedestrian"
    else:
        a = np.column_stack([12.0 * t - 16.0, np.zeros_like(t), np.full_like(t, 0.8)])
        b = np.column_stack([8.0 * t, np.full_like(t, 2.0), np.full_like(t, 0.8)])
        yaws, size, cls = (np.zeros_like(t), np.zeros_like(t)), [4.5, 1.9, 1.6], "car"
    centers = np.stack([a, b])
    assert 2.0 - 1e-9 <= np.linalg.norm(centers[0] - centers[1], axis=1).min() < 2.1  # sampled at 10 Hz
    return centers, np.stack(yaws), np.array([size, size]), [cls, cls]


@pytest.mark.parametrize("kind", ["right_angle", "head_on", "overtaking"])
def test_crossing_paths_2_m_apart_keep_their_identities(kind):
    centers, yaws, sizes, classes = _crossing(kind)
    times = np.arange(centers.shape[1], dtype=np.int64) * DT_NS
    present = np.ones(centers.shape[:2], bool)
    for seed in range(5):
        det, who = noisy_detections(centers, yaws, sizes, classes, present, np.random.default_rng(seed))
        result = track_detections(det, times)
        summary = clear_mot(times, centers, present, result.tracks)
        assert summary["num_switches"].iloc[0] == 0, (kind, seed, summary)
        # every detection of an object went to one track, and no track took both objects' detections
        for obj in (0, 1):
            owners = set(result.assignment[who == obj]) - {-1}
            assert len(owners) == 1, (kind, seed, obj, owners)
        assert set(result.assignment[who == 0]).isdisjoint(set(result.assignment[who == 1]) - {-1})


def _straight(n=30, v=(8.0, 1.0, 0.0), noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n) * 0.1
    c = np.column_stack([v[0] * t, v[1] * t, np.full(n, 0.8)]) + rng.normal(0, noise, (n, 3))
    yaw = rng.normal(0, noise / 4, n)
    return Detections(np.arange(n), c, np.tile([4.5, 1.9, 1.6], (n, 1)), quat.from_yaw(yaw), ("car",) * n, np.ones(n))


def test_keyframes_where_the_motion_changes():
    times = np.arange(30, dtype=np.int64) * DT_NS
    steady = track_detections(_straight(), times)
    assert len(steady.tracks) == 1 and len(steady.tracks[0]) == 2  # constant velocity: the two ends
    t = steady.tracks[0]
    assert t.timestamps_ns[0] == 0 and t.timestamps_ns[-1] == times[-1]
    np.testing.assert_allclose(t.centers[[0, -1]], [[0.0, 0, 0.8], [23.2, 2.9, 0.8]], atol=0.01)  # birth prior: v = 0
    np.testing.assert_allclose(t.sizes, [[4.5, 1.9, 1.6]] * 2)
    # on a circle (8 m/s, 0.5 rad/s) the centre is not linear in time: keyframes in between; the
    # keyframed track stays near the truth (the constant-velocity model lags the 4 m/s² turn a little)
    t = times * 1e-9
    arc = np.column_stack([16 * np.sin(0.5 * t), 16 * (1 - np.cos(0.5 * t)), np.full(30, 0.8)])
    det = Detections(np.arange(30), arc, np.tile([4.5, 1.9, 1.6], (30, 1)), quat.from_yaw(0.5 * t), ("car",) * 30,
                     np.ones(30))
    turning = track_detections(det, times).tracks[0]
    assert 2 < len(turning) < 30
    boxes = interpolate_tracks([turning], times)
    assert np.linalg.norm(boxes.centers[:, 0] - arc, axis=1).max() < 0.2
    yaw = quat.to_euler_zyx(boxes.rotations[:, 0])[:, 2]
    assert np.abs(yaw - 0.5 * t).max() < 0.02


def test_smoothing_beats_the_detection_noise():
    times = np.arange(30, dtype=np.int64) * DT_NS
    det = _straight(noise=0.2, seed=4)
    track = track_detections(det, times).tracks[0]
    true = np.column_stack([8.0 * times * 1e-9, 1.0 * times * 1e-9, np.full(30, 0.8)])
    err_track = np.linalg.norm(interpolate_tracks([track], times).centers[:, 0] - true, axis=1)
    err_det = np.linalg.norm(det.centers - true, axis=1)
    assert np.sqrt(np.mean(err_track ** 2)) < 0.5 * np.sqrt(np.mean(err_det ** 2))


def test_classes_never_mix_and_the_result_is_deterministic():
    n = 20
    t = np.arange(n) * 0.1
    car = np.column_stack([10 * t - 10, np.zeros(n), np.full(n, 0.8)])
    ped = np.column_stack([np.zeros(n), 1.4 * t - 1.4, np.full(n, 0.9)])  # through the car's path at the same time
    c = np.concatenate([car, ped])
    det = Detections(np.r_[np.arange(n), np.arange(n)], c, np.tile([1.0, 1.0, 1.0], (2 * n, 1)),
                     quat.from_yaw(np.zeros(2 * n)), ("car",) * n + ("pedestrian",) * n, np.ones(2 * n))
    times = np.arange(n, dtype=np.int64) * DT_NS
    result = track_detections(det, times, TrackerParams(gate_m=5.0))
    assert sorted(t.category for t in result.tracks) == ["car", "pedestrian"]
    assert len(set(result.assignment[:n])) == 1 and len(set(result.assignment[n:])) == 1
    again = track_detections(det, times, TrackerParams(gate_m=5.0))
    for a, b in zip(result.tracks, again.tracks):
        assert a.track_id == b.track_id
        np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(result.assignment, again.assignment)


def test_birth_and_death_rules():
    times = np.arange(12, dtype=np.int64) * DT_NS
    base = _straight(12)
    lone = Detections(np.array([3]), np.array([[40.0, 40, 1]]), np.ones((1, 3)), quat.from_yaw([0.0]), ("car",),
                      np.ones(1))
    both = Detections(np.r_[base.frame, lone.frame], np.r_[base.centers, lone.centers], np.r_[base.sizes, lone.sizes],
                      np.r_[base.rotations, lone.rotations], base.categories + lone.categories, np.ones(13))
    result = track_detections(both, times)
    assert len(result.tracks) == 1 and result.assignment[-1] == -1  # one detection never confirms
    assert len(track_detections(both, times, TrackerParams(min_hits=1)).tracks) == 2
    # a gap longer than max_misses ends the track: the object comes back as a new one
    gap = base.select(np.r_[0:4, 9:12])
    assert len(track_detections(gap, times, TrackerParams(max_misses=3)).tracks) == 2
    assert len(track_detections(gap, times, TrackerParams(max_misses=5)).tracks) == 1
    assert track_detections(base, times, TrackerParams(min_score=2.0)).tracks == []
    none = base.select(np.zeros(0, np.int64))
    assert len(none) == 0 and track_detections(none, times).tracks == []
    assert tracks_from_source_ids(Detections(none.frame, none.centers, none.sizes, none.rotations, (), none.scores, ()),
                                  times).tracks == []


def test_tracks_from_source_ids():
    det = _straight(6)
    det = Detections(det.frame, det.centers, det.sizes, det.rotations, det.categories, det.scores,
                     ("a", "b", "a", "b", "a", "b"))
    result = tracks_from_source_ids(det, np.arange(6, dtype=np.int64) * DT_NS)
    assert [t.track_id for t in result.tracks] == ["a", "b"]
    np.testing.assert_array_equal(result.tracks[1].timestamps_ns, [DT_NS, 3 * DT_NS, 5 * DT_NS])
    np.testing.assert_array_equal(result.assignment, [0, 1, 0, 1, 0, 1])
    twice = Detections(np.array([0, 0]), np.zeros((2, 3)), np.ones((2, 3)), np.tile([1.0, 0, 0, 0], (2, 1)),
                       ("car", "car"), np.ones(2), ("a", "a"))
    with pytest.raises(ValueError, match="track 'a': two detections in frame 0"):
        tracks_from_source_ids(twice, np.array([0]))


def test_bad_input_names_the_detection():
    ok = dict(frame=np.array([0, 1]), centers=np.zeros((2, 3)), sizes=np.ones((2, 3)),
              rotations=np.tile([1.0, 0, 0, 0], (2, 1)), categories=("car", "car"), scores=np.ones(2))
    with pytest.raises(ValueError, match="detection 1: centers contains NaN"):
        Detections(**{**ok, "centers": np.array([[0.0, 0, 0], [np.nan, 0, 0]])})
    with pytest.raises(ValueError, match="detection 0: sizes must be non-negative"):
        Detections(**{**ok, "sizes": np.array([[-1.0, 1, 1], [1, 1, 1]])})
    with pytest.raises(ValueError, match="detection 1: rotation is a zero quaternion"):
        Detections(**{**ok, "rotations": np.array([[1.0, 0, 0, 0], [0, 0, 0, 0]])})
    with pytest.raises(ValueError, match="sizes must have shape"):
        Detections(**{**ok, "sizes": np.ones((3, 3))})
    with pytest.raises(ValueError, match="detection 1: frame 1 is not one of the 1 frames"):
        track_detections(Detections(**ok), np.array([0]))
    with pytest.raises(ValueError, match="strictly increasing"):
        track_detections(Detections(**ok), np.array([5, 5]))
    with pytest.raises(ValueError, match="gate_m"):
        TrackerParams(gate_m=float("nan"))
    with pytest.raises(ValueError, match="min_hits"):
        TrackerParams(min_hits=0)
