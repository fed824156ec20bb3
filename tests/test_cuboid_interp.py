"""Cuboid track interpolation against a scipy Rotation/Slerp reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from engine import quaternion as quat
from engine.cuboid import CuboidTrack, box_corners
from engine.cuboid_interp import BoxFrames, TrackTable, interpolate_tracks
from engine.pose_track import OutOfRangeError, PoseTrack
from engine.se3 import SE3


def _random_tracks(rng, n_tracks=12, max_k=7):
    tracks = []
    for n in range(n_tracks):
        k = int(rng.integers(2, max_k + 1))
        ts = np.cumsum(rng.integers(10_000_000, 300_000_000, k)) + int(rng.integers(0, 10**9))
        rot = Rotation.random(k, random_state=int(rng.integers(1 << 31)))
        tracks.append(CuboidTrack(
            f"t{n}", "car", ts, rng.normal(0, 30, (k, 3)), rng.uniform(0.5, 6, (k, 3)),
            rot.as_quat(scalar_first=True),
        ))
    return tracks


def _reference(track: CuboidTrack, times: np.ndarray, mode: str):
    """Plain NumPy/scipy: np.interp per axis, scipy Slerp, explicit extrapolation."""
    ts = track.timestamps_ns
    rot = Rotation.from_quat(track.rotations, scalar_first=True)
    t = times.astype(np.float64)
    inside = (times >= ts[0]) & (times <= ts[-1])
    c = np.stack([np.interp(t, ts, track.centers[:, i]) for i in range(3)], axis=1)
    s = np.stack([np.interp(t, ts, track.sizes[:, i]) for i in range(3)], axis=1)
    clamped = np.clip(times, ts[0], ts[-1]).astype(np.float64)
    q = Slerp(ts.astype(np.float64), rot)(clamped)
    if mode == "constant_velocity":
        for end, (i0, i1) in (("lo", (0, 1)), ("hi", (-2, -1))):
            sel = times < ts[0] if end == "lo" else times > ts[-1]
            if not np.any(sel):
                continue
            u = (t[sel] - ts[i0]) / (ts[i1] - ts[i0])
            c[sel] = track.centers[i0] + u[:, None] * (track.centers[i1] - track.centers[i0])
            delta = (rot[i0].inv() * rot[i1]).as_rotvec()
            qs = q.as_quat()
            qs[sel] = (rot[i0] * Rotation.from_rotvec(u[:, None] * delta)).as_quat()
            q = Rotation.from_quat(qs)
    q = q.as_quat(scalar_first=True)
    valid = inside if mode == "none" else np.ones(len(t), bool)
    return c, s, q, valid


@pytest.mark.parametrize("mode", ["none", "hold", "constant_velocity"])
def test_matches_scipy_reference_at_random_times(mode):
    rng = np.random.default_rng(3)
    tracks = _random_tracks(rng)
    lo = min(t.timestamps_ns[0] for t in tracks) - 500_000_000
    hi = max(t.timestamps_ns[-1] for t in tracks) + 500_000_000
    times = rng.integers(lo, hi, 400)
    times[:12] = [t.timestamps_ns[0] for t in tracks]  # exact keyframe times are inside
    out = interpolate_tracks(tracks, times, mode)
    assert out.centers.shape == (400, len(tracks), 3) and out.valid.shape == (400, len(tracks))
    for n, track in enumerate(tracks):
        c, s, q, valid = _reference(track, times, mode)
        np.testing.assert_array_equal(out.valid[:, n], valid)
        assert np.all(np.isnan(out.centers[~valid, n])) and np.all(np.isnan(out.rotations[~valid, n]))
        np.testing.assert_allclose(out.centers[valid, n], c[valid], atol=1e-9)
        np.testing.assert_allclose(out.sizes[valid, n], s[valid], atol=1e-12)
        assert np.all(quat.angle_between(out.rotations[valid, n], q[valid]) < 1e-7)


def _fields(frames: BoxFrames):
    return frames.centers, frames.sizes, frames.rotations, frames.valid


@pytest.mark.parametrize("mode", ["none", "hold", "constant_velocity"])
def test_float32_output_is_the_float64_result_rounded_once(mode):
    rng = np.random.default_rng(5)
    tracks = _random_tracks(rng, 9)
    lo = min(t.timestamps_ns[0] for t in tracks) - 10**8
    hi = max(t.timestamps_ns[-1] for t in tracks) + 10**8
    times = rng.integers(lo, hi, 150)
    f64 = interpolate_tracks(tracks, times, mode)
    f32 = interpolate_tracks(tracks, times, mode, dtype=np.float32)
    np.testing.assert_array_equal(f32.valid, f64.valid)
    for got, full in zip(_fields(f32)[:3], _fields(f64)[:3]):
        assert got.dtype == np.float32 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, full.astype(np.float32))  # NaN where no box, too
        ok = f64.valid
        np.testing.assert_allclose(got[ok], full[ok], rtol=np.finfo(np.float32).eps, atol=0)
    ego = SE3(quat.from_yaw(rng.uniform(-3, 3, len(times))), rng.normal(0, 20, (len(times), 3)))
    e64, e32 = f64.to_ego(ego), f32.to_ego(ego)
    assert e32.centers.dtype == np.float32
    ok = f64.valid
    scale = np.abs(f64.centers[ok]).max() + np.abs(ego.translation).max()
    np.testing.assert_allclose(e32.centers[ok], e64.centers[ok], atol=4 * np.finfo(np.float32).eps * scale)


def test_packed_table_equals_each_track_on_its_own():
    """A TrackTable packed once, a list packed per call and one call per track agree bit for bit."""
    rng = np.random.default_rng(11)
    tracks = _random_tracks(rng, 140, max_k=9)  # more than two blocks of tracks in the kernel
    tracks.append(CuboidTrack("still", "sign", np.array([5 * 10**8, 6 * 10**8]), [[1.0, 2, 3]] * 2,
                              [[1.0, 1, 2]] * 2, quat.from_yaw([0.2, 0.9]), stationary=True))
    tracks.append(CuboidTrack("one", "car", np.array([7 * 10**8]), [[4.0, 5, 6]], [[2.0, 1, 1]],
                              quat.from_yaw([0.3])))
    table = TrackTable.from_tracks(tracks)
    lo = min(t.timestamps_ns[0] for t in tracks) - 10**8
    hi = max(t.timestamps_ns[-1] for t in tracks) + 10**8
    times = np.sort(rng.integers(lo, hi, 300))  # several chunks of the merge walk
    times[40:45] = times[40]  # repeated times
    times[100] = 7 * 10**8
    for mode in ("none", "hold", "constant_velocity"):
        packed = interpolate_tracks(table, times, mode)
        for got, want in zip(_fields(packed), _fields(interpolate_tracks(tracks, times, mode))):
            np.testing.assert_array_equal(got, want)
        for n, track in enumerate(tracks):
            alone = interpolate_tracks([track], times, mode)
            for got, want in zip(_fields(packed), _fields(alone)):
                np.testing.assert_array_equal(got[:, n], want[:, 0])
    assert packed.valid[100, -1] and packed.valid[:, -2].all()
    # a selection of the table (any order, a repeat, the stationary and the one-key track)
    # interpolates to the selected columns bit for bit; an empty one to no columns
    pick = np.array([len(tracks) - 1, 3, len(tracks) - 2, 0, 3])
    sub = table.select(pick)
    assert sub.track_ids == tuple(table.track_ids[n] for n in pick)
    np.testing.assert_array_equal(sub.stationary, table.stationary[pick])
    for mode in ("none", "hold", "constant_velocity"):
        full = interpolate_tracks(table, times, mode)
        for got, want in zip(_fields(interpolate_tracks(sub, times, mode)), _fields(full)):
            np.testing.assert_array_equal(got, want[:, pick])
    assert interpolate_tracks(table.select(np.zeros(0, int)), times, "none").valid.shape == (len(times), 0)


@pytest.mark.parametrize("mode", ["none", "hold", "constant_velocity"])
def test_every_time_at_and_around_each_keyframe_matches_one_time_calls_and_scipy(mode):
    """Sorted times 1 ns before, at and after every keyframe of every track (the kernel
    carries each track's interval from one time to the next and re-checks it only past
    the interval's end): bit for bit the boxes of one call per time, and scipy's."""
    rng = np.random.default_rng(17)
    tracks = _random_tracks(rng, 5, max_k=6)
    keys = np.concatenate([t.timestamps_ns for t in tracks])
    times = np.unique(np.concatenate([keys - 1, keys, keys + 1]))
    table = TrackTable.from_tracks(tracks)
    batch = interpolate_tracks(table, times, mode)
    for j, tq in enumerate(times):
        one = interpolate_tracks(table, times[j:j + 1], mode)
        for got, want in zip(_fields(batch), _fields(one)):
            np.testing.assert_array_equal(got[j], want[0])
    for n, track in enumerate(tracks):
        c, s, q, valid = _reference(track, times, mode)
        np.testing.assert_array_equal(batch.valid[:, n], valid)
        np.testing.assert_allclose(batch.centers[valid, n], c[valid], atol=1e-9)
        np.testing.assert_allclose(batch.sizes[valid, n], s[valid], atol=1e-12)
        got_q, ref_q = batch.rotations[valid, n], q[valid]
        ref_q *= np.sign(np.sum(got_q * ref_q, axis=1))[:, None]  # q and -q are one rotation
        np.testing.assert_allclose(got_q, ref_q, atol=1e-14)


def test_time_order_does_not_change_any_box():
    rng = np.random.default_rng(13)
    tracks = _random_tracks(rng, 6)
    lo = min(t.timestamps_ns[0] for t in tracks) - 10**8
    hi = max(t.timestamps_ns[-1] for t in tracks) + 10**8
    times = np.sort(rng.integers(lo, hi, 200))
    perm = rng.permutation(len(times))
    for mode in ("none", "constant_velocity"):
        ordered = interpolate_tracks(tracks, times, mode)
        shuffled = interpolate_tracks(tracks, times[perm], mode)
        np.testing.assert_array_equal(shuffled.times_ns, times[perm])
        for got, want in zip(_fields(shuffled), _fields(ordered)):
            np.testing.assert_array_equal(got, want[perm])


def test_outputs_are_separate_contiguous_arrays():
    tracks = _random_tracks(np.random.default_rng(2), 4)
    out = interpolate_tracks(tracks, tracks[0].timestamps_ns)
    arrays = _fields(out)
    assert all(a.flags.c_contiguous and a.flags.writeable for a in arrays)
    assert not any(np.shares_memory(a, b) for i, a in enumerate(arrays) for b in arrays[i + 1:])


def test_yaw_crossing_pi_goes_through_pi_not_zero():
    yaw = np.deg2rad([170.0, -170.0])
    track = CuboidTrack("a", "car", np.array([0, 100]), np.zeros((2, 3)), np.ones((2, 3)), quat.from_yaw(yaw))
    times = np.arange(0, 101, 5, dtype=np.int64)
    out = interpolate_tracks([track], times)
    got = quat.to_euler_zyx(out.rotations[:, 0])[:, 2]
    expected = np.deg2rad(170.0 + 20.0 * times / 100.0)  # 170 → 190 (= −170)
    err = np.angle(np.exp(1j * (got - expected)))
    assert np.max(np.abs(err)) < 1e-9
    assert np.all(np.abs(got) > np.deg2rad(169.9))  # never near 0


def test_constant_velocity_continues_yaw_rate_and_holds_size():
    ts = np.array([0, 1_000_000_000])
    track = CuboidTrack(
        "a", "car", ts, np.array([[0.0, 0, 0], [2.0, 1, 0]]), np.array([[4.0, 2, 1.5], [5.0, 2, 1.5]]),
        quat.from_yaw([0.0, 0.1]),
    )
    out = interpolate_tracks([track], np.array([3_000_000_000, -1_000_000_000]), "constant_velocity")
    np.testing.assert_allclose(out.centers[:, 0], [[6.0, 3, 0], [-2.0, -1, 0]], atol=1e-12)
    np.testing.assert_allclose(quat.to_euler_zyx(out.rotations[:, 0])[:, 2], [0.3, -0.1], atol=1e-12)
    np.testing.assert_allclose(out.sizes[:, 0], [[5.0, 2, 1.5], [4.0, 2, 1.5]])
    held = interpolate_tracks([track], np.array([3_000_000_000]), "hold")
    np.testing.assert_array_equal(held.centers[0, 0], [2.0, 1, 0])


def test_single_keyframe_and_stationary_tracks():
    q = quat.from_yaw(0.3)[None]
    one = CuboidTrack("one", "car", np.array([50]), [[1.0, 2, 3]], [[4.0, 2, 1]], q)
    still = CuboidTrack("still", "sign", np.array([50, 60]), [[5.0, 5, 1], [9.0, 9, 9]], [[1.0, 1, 2]] * 2,
                        np.repeat(q, 2, 0), stationary=True)
    times = np.array([0, 50, 55, 100], dtype=np.int64)
    none = interpolate_tracks([one, still], times, "none")
    np.testing.assert_array_equal(none.valid, [[False, True], [True, True], [False, True], [False, True]])
    np.testing.assert_array_equal(none.centers[:, 1], [[5.0, 5, 1]] * 4)  # first keyframe, always
    for mode in ("hold", "constant_velocity"):
        out = interpolate_tracks([one, still], times, mode)
        assert out.valid.all()
        np.testing.assert_array_equal(out.centers[:, 0], [[1.0, 2, 3]] * 4)


def test_stationary_object_still_in_world_moves_in_ego_frame():
    box = CuboidTrack("pole", "pole", np.array([0]), [[20.0, 5, 1]], [[0.5, 0.5, 2]], quat.from_yaw(0.4)[None],
                      stationary=True)
    ts = np.arange(0, 11, dtype=np.int64) * 100_000_000
    yaw = np.linspace(0, 0.5, len(ts))
    ego = PoseTrack(ts, quat.from_yaw(yaw), np.stack([np.linspace(0, 10, len(ts)), np.zeros(len(ts)),
                                                      np.full(len(ts), 0.3)], 1))
    times = ts[:-1] + 50_000_000
    world = interpolate_tracks([box], times)
    np.testing.assert_array_equal(world.centers[:, 0], np.repeat([[20.0, 5, 1]], len(times), 0))
    ego_boxes = world.to_ego(ego)
    assert ego_boxes.frame == "ego"
    ego_from_world = ego.interpolate(times).inverse()
    expected_corners = np.stack([ego_from_world[i].apply(box_corners(box.centers[0], box.sizes[0], box.rotations[0]))
                                 for i in range(len(times))])
    got = box_corners(ego_boxes.centers[:, 0], ego_boxes.sizes[:, 0], ego_boxes.rotations[:, 0])
    np.testing.assert_allclose(got, expected_corners, atol=1e-9)
    # the ego drives forward: the pole comes closer along ego x
    assert np.all(np.diff(ego_boxes.centers[:, 0, 0]) < 0)


def test_to_ego_with_se3_batch_and_errors():
    track = CuboidTrack("a", "car", np.array([0, 10]), np.zeros((2, 3)), np.ones((2, 3)), quat.from_yaw([0.0, 0.0]))
    out = interpolate_tracks([track], np.array([0, 20]))  # second time: no box
    ego = out.to_ego(SE3(quat.from_yaw([0.0, np.pi / 2]), [[1.0, 0, 0], [0, 0, 0]]))
    np.testing.assert_allclose(ego.centers[0, 0], [-1.0, 0, 0])
    assert not ego.valid[1, 0] and np.all(np.isnan(ego.centers[1, 0]))
    with pytest.raises(ValueError, match="poses"):
        out.to_ego(SE3.identity(3))
    with pytest.raises(ValueError, match="world-frame"):
        ego.to_ego(SE3.identity(2))
    short = PoseTrack(np.array([0, 5]), quat.from_yaw([0.0, 0.0]), np.zeros((2, 3)))
    with pytest.raises(OutOfRangeError):
        out.to_ego(short)


def test_empty_inputs():
    tracks = _random_tracks(np.random.default_rng(0), 3)
    out = interpolate_tracks(tracks, np.zeros(0, dtype=np.int64))
    assert out.centers.shape == (0, 3, 3)
    out = interpolate_tracks([], np.array([1, 2]))
    assert out.centers.shape == (2, 0, 3) and out.valid.shape == (2, 0)
    assert isinstance(out, BoxFrames) and len(TrackTable.from_tracks([])) == 0


def test_bad_input_raises_value_error():
    ok = dict(track_id="a", category="car", timestamps_ns=np.array([0, 10]), centers=np.zeros((2, 3)),
              sizes=np.ones((2, 3)), rotations=np.array([[1.0, 0, 0, 0]] * 2))
    with pytest.raises(ValueError, match="non-negative"):
        CuboidTrack(**{**ok, "sizes": -np.ones((2, 3))})
    with pytest.raises(ValueError, match="NaN"):
        CuboidTrack(**{**ok, "centers": np.full((2, 3), np.nan)})
    with pytest.raises(ValueError, match="increasing"):
        CuboidTrack(**{**ok, "timestamps_ns": np.array([10, 10])})
    track = CuboidTrack(**ok)
    with pytest.raises(ValueError, match="extrapolation"):
        interpolate_tracks([track], np.array([0]), "linear")
    with pytest.raises(ValueError, match="integer"):
        interpolate_tracks([track], np.array([0.5]))
    with pytest.raises(ValueError, match="float32 or float64"):
        interpolate_tracks([track], np.array([0]), dtype=np.float16)
    with pytest.raises(ValueError, match="duplicate"):
        TrackTable.from_tracks([track, track])


def test_rig_boxes_from_every_10th_keyframe_match_true_tracks(drive):
    """Actor tracks subsampled to every 10th keyframe (1 s), interpolated every 10 ms."""
    world = drive.world
    sparse = [CuboidTrack(t.track_id, t.category, t.timestamps_ns[::10], t.centers[::10], t.sizes[::10],
                          t.rotations[::10]) for t in drive.actor_tracks]
    assert all(len(t) >= 2 for t in sparse)
    times = np.arange(world.keyframe_times_ns[0], world.keyframe_times_ns[::10][-1] + 1, 10_000_000)
    out = interpolate_tracks(sparse, times)
    assert out.valid.all()
    for j in range(world.n_actors):
        center, yaw = world.actor_pose(j, times)
        true = box_corners(center, np.broadcast_to(world.actor_size[j], center.shape), quat.from_yaw(yaw))
        got = box_corners(out.centers[:, j], out.sizes[:, j], out.rotations[:, j])
        assert np.max(np.linalg.norm(got - true, axis=-1)) < 0.05


# ---------------------------------------------------------------- motion-aware modes


def _turning_car(v_mps=10.0, w_radps=0.3, keys_s=np.arange(0.0, 7.0)):
    """A car at constant speed and yaw rate (truth at any time) and its 1 Hz keyframe track."""
    def truth(t_ns):
        s = np.asarray(t_ns) * 1e-9
        return (np.column_stack([v_mps / w_radps * np.sin(w_radps * s), v_mps / w_radps * (1 - np.cos(w_radps * s)),
                                 np.full(len(s), 0.8)]), w_radps * s)

    ts = (keys_s * 1e9).astype(np.int64)
    c, yaw = truth(ts)
    return CuboidTrack("car", "car", ts, c, np.tile([4.5, 1.9, 1.6], (len(ts), 1)), quat.from_yaw(yaw)), truth


def _yaw_error(q, yaw):
    return np.abs(np.angle(np.exp(1j * (quat.to_euler_zyx(q)[:, 2] - yaw))))


def test_turning_car_mid_way_linear_is_a_third_of_a_metre_off_motion_aware_within_2_cm():
    track, truth = _turning_car()
    mid = track.timestamps_ns[:-1] + 500_000_000
    c_true, yaw_true = truth(mid)
    linear = interpolate_tracks([track], mid)
    assert np.linalg.norm(linear.centers[:, 0] - c_true, axis=1).min() > 0.37  # the corner linear cuts
    ctrv = interpolate_tracks([track], mid, interpolation="ctrv")
    assert np.linalg.norm(ctrv.centers[:, 0] - c_true, axis=1).max() < 1e-9  # the truth is a CTRV arc
    assert _yaw_error(ctrv.rotations[:, 0], yaw_true).max() < 1e-9
    hermite = interpolate_tracks([track], mid, interpolation="hermite")
    err = np.linalg.norm(hermite.centers[:, 0] - c_true, axis=1)
    assert err[1:-1].max() < 0.02  # between interior keyframes (one-sided tangents at the ends)
    assert err.max() < 0.1
    assert np.degrees(_yaw_error(hermite.rotations[:, 0], yaw_true)[1:-1]).max() < 0.5  # heading follows the path


def _reference_motion(track: CuboidTrack, times: np.ndarray, mode: str) -> np.ndarray:
    """Centres inside the keyframe range by plain formulas: ctrv rotates the start about the
    centre of the circle through both keyframes that turns by the heading change; hermite is
    scipy's CubicHermiteSpline with tangents from np.polyfit parabolas over three keyframes."""
    from scipy.interpolate import CubicHermiteSpline

    t = track.timestamps_ns.astype(np.float64) * 1e-9
    c = track.centers
    s = times.astype(np.float64) * 1e-9
    if mode == "hermite":
        slopes = []
        for j in range(len(t)):
            i = min(max(j, 1), len(t) - 2)
            fit = [np.polyfit(t[i - 1:i + 2] - t[j], c[i - 1:i + 2, a], 2) for a in range(3)]
            slopes.append([f[1] for f in fit])
        return CubicHermiteSpline(t, c, np.array(slopes))(s)
    psi = quat.to_euler_zyx(track.rotations)[:, 2]
    k = np.clip(np.searchsorted(t, s, side="right") - 1, 0, len(t) - 2)
    u = (s - t[k]) / (t[k + 1] - t[k])
    turn = np.angle(np.exp(1j * (psi[k + 1] - psi[k])))
    p0, p1 = c[k, :2], c[k + 1, :2]
    mid, chord = 0.5 * (p0 + p1), p1 - p0
    normal = np.column_stack([-chord[:, 1], chord[:, 0]])
    centre = mid + normal / (2 * np.tan(turn / 2))[:, None]
    a = u * turn
    rel = p0 - centre
    xy = centre + np.column_stack([np.cos(a) * rel[:, 0] - np.sin(a) * rel[:, 1],
                                   np.sin(a) * rel[:, 0] + np.cos(a) * rel[:, 1]])
    return np.column_stack([xy, c[k, 2] + u * (c[k + 1, 2] - c[k, 2])])


@pytest.mark.parametrize("mode", ["ctrv", "hermite"])
def test_motion_aware_modes_match_plain_references_inside_and_linear_outside(mode):
    rng = np.random.default_rng(31)
    for n in range(6):
        k = int(rng.integers(3, 8))
        ts = np.cumsum(rng.integers(200_000_000, 2_000_000_000, k))
        yaw = np.cumsum(rng.uniform(-0.8, 0.8, k))
        track = CuboidTrack(f"t{n}", "car", ts, rng.normal(0, 20, (k, 3)), rng.uniform(1, 5, (k, 3)),
                            quat.from_yaw(yaw))
        times = np.sort(rng.integers(ts[0] - 10**9, ts[-1] + 10**9, 300))
        times[:k] = ts  # the keyframes themselves
        times.sort()
        out = interpolate_tracks([track], times, "constant_velocity", interpolation=mode)
        linear = interpolate_tracks([track], times, "constant_velocity")
        inside = (times >= ts[0]) & (times <= ts[-1])
        np.testing.assert_allclose(out.centers[inside, 0], _reference_motion(track, times[inside], mode), atol=1e-8)
        np.testing.assert_array_equal(out.centers[~inside], linear.centers[~inside])
        np.testing.assert_array_equal(out.sizes, linear.sizes)
        at_keys = np.isin(times, ts)
        np.testing.assert_allclose(out.centers[at_keys, 0], track.centers, atol=1e-9)
        assert np.all(quat.angle_between(out.rotations[at_keys, 0], track.rotations) < 1e-9)
        if mode == "ctrv":  # the rotation stays the slerp
            np.testing.assert_array_equal(out.rotations, linear.rotations)


def test_modes_are_per_track_and_survive_select_and_float32():
    rng = np.random.default_rng(37)
    tracks = _random_tracks(rng, 9)
    modes = ["linear", "ctrv", "hermite"] * 3
    table = TrackTable.from_tracks(tracks, modes)
    lo = min(t.timestamps_ns[0] for t in tracks)
    hi = max(t.timestamps_ns[-1] for t in tracks)
    times = rng.integers(lo, hi, 120)
    mixed = interpolate_tracks(table, times, "hold")
    for n, (track, mode) in enumerate(zip(tracks, modes)):
        alone = interpolate_tracks([track], times, "hold", interpolation=mode)
        for got, want in zip(_fields(mixed), _fields(alone)):
            np.testing.assert_array_equal(got[:, n], want[:, 0])
    pick = np.array([2, 1, 0])
    np.testing.assert_array_equal(table.select(pick).interpolation, table.interpolation[pick])
    f32 = interpolate_tracks(table, times, "hold", np.float32)
    for got, full in zip(_fields(f32)[:3], _fields(mixed)[:3]):
        np.testing.assert_array_equal(got, full.astype(np.float32))


def test_interpolation_mode_errors():
    track, _ = _turning_car()
    with pytest.raises(ValueError, match="track car: interpolation must be one of"):
        interpolate_tracks([track], np.array([0]), interpolation="spline")
    with pytest.raises(ValueError, match="one mode per track"):
        TrackTable.from_tracks([track], ["ctrv", "hermite"])
    with pytest.raises(ValueError, match="when packing"):
        interpolate_tracks(TrackTable.from_tracks([track]), np.array([0]), interpolation="ctrv")
    with pytest.raises(ValueError, match="interpolation must be"):
        TrackTable(("a",), np.array([0, 1]), np.array([0]), np.zeros((1, 3)), np.ones((1, 3)),
                   np.array([[1.0, 0, 0, 0]]), np.zeros(1, bool), np.array([7]))
