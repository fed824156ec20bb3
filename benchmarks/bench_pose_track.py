"""PoseTrack interpolation of 1 M per-point times vs scipy ``Slerp`` (goal ≥ 30×).

The track: 20 s of 100 Hz poses (random-walk rotation and translation); the queries: 1 M
int64 times inside it, in firing (increasing) order or shuffled.

- Fathom: :meth:`PoseTrack.interpolate` → ``SE3`` with ``rotation (N, 4)`` (slerp) and
  ``translation (N, 3)`` float64.
- Peer: scipy ``Slerp`` (built before timing) on the times as float64 ns, ``as_quat
  (scalar_first=True)``, and ``np.interp`` per translation axis: the same two arrays.

Asserted: the same rotations (up to the quaternion's sign) to 1e-12 and translations to
1e-9 m.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from engine import PoseTrack

N_QUERIES = 1_000_000


@pytest.fixture(scope="module")
def track_and_times():
    rng = np.random.default_rng(7)
    # 20 s of 100 Hz INS poses, 1 M per-point times in firing (increasing) order
    ts = np.arange(2001, dtype=np.int64) * 10_000_000
    rot = Rotation.from_rotvec(np.cumsum(rng.normal(0, 0.01, (len(ts), 3)), axis=0))
    track = PoseTrack(ts, rot.as_quat(scalar_first=True), np.cumsum(rng.normal(0, 0.1, (len(ts), 3)), axis=0))
    times = np.sort(rng.integers(ts[0], ts[-1], N_QUERIES))
    return track, times, rot


@pytest.fixture(params=["firing", "shuffled"])
def order(request) -> str:
    return request.param


def query_times(times: np.ndarray, order: str) -> np.ndarray:
    """The per-point times in firing order, or the same times shuffled."""
    return times if order == "firing" else np.random.default_rng(1).permutation(times)


def test_fathom_pose_interpolation(benchmark, track_and_times, order):
    track, times, _ = track_and_times
    times = query_times(times, order)
    benchmark.group = f"pose_track_1M_{order}"
    benchmark.extra_info.update(role="fathom", goal=30, items=N_QUERIES, unit="poses")
    poses = benchmark(track.interpolate, times)
    assert poses.rotation.shape == (N_QUERIES, 4)


def test_scipy_slerp(benchmark, track_and_times, order):
    track, times, rot = track_and_times
    times = query_times(times, order)
    benchmark.group = f"pose_track_1M_{order}"
    benchmark.extra_info.update(role="peer")
    slerp = Slerp(track.timestamps_ns.astype(np.float64), rot)

    def run():
        t = times.astype(np.float64)
        return slerp(t).as_quat(scalar_first=True), np.stack(
            [np.interp(t, slerp.times, track.translation[:, c]) for c in range(3)], axis=1
        )

    q, t = benchmark(run)
    ours = track.interpolate(times)
    sign = np.sign(np.sum(q * ours.rotation, axis=1))[:, None]
    np.testing.assert_allclose(sign * q, ours.rotation, atol=1e-12, rtol=0)
    np.testing.assert_allclose(t, ours.translation, atol=1e-9, rtol=0)
