"""Per-point geometry a scene map needs from a frame's world points: each point in the ego
frame at its own firing time (for the ego-vehicle box) and the world position of the sensor
that measured it (for the dynamic-point filter's rays, :mod:`engine.map_dynamic`).
"""

from __future__ import annotations

import numpy as np

from engine._jit import pjit, prange
from engine.accumulate import outside_ego_box
from engine.pose_track import PoseTrack
from engine.quaternion import q_rotate
from engine.se3 import SE3

# the ego vehicle of a rear-axle ego frame (nuScenes-like: x forward from the rear axle, z up
# from the ground): a 5.2 m x 2.2 m car up to 2.1 m, roof sensors included
DEFAULT_EGO_BOX = ((-1.2, -1.1, -0.5), (4.0, 1.1, 2.1))


@pjit
def _ego_kernel(xyz, q, t, sensor, lever, ego, origin):
    for i in prange(xyz.shape[0]):
        w, x, y, z = q[i, 0], q[i, 1], q[i, 2], q[i, 3]
        ego[i, 0], ego[i, 1], ego[i, 2] = q_rotate(w, -x, -y, -z, xyz[i, 0] - t[i, 0], xyz[i, 1] - t[i, 1],
                                                   xyz[i, 2] - t[i, 2])
        s = sensor[i]
        ox, oy, oz = q_rotate(w, x, y, z, lever[s, 0], lever[s, 1], lever[s, 2])
        origin[i, 0], origin[i, 1], origin[i, 2] = ox + t[i, 0], oy + t[i, 1], oz + t[i, 2]


def ego_and_origins(xyz: np.ndarray, times_ns: np.ndarray, world_from_ego: PoseTrack, sensor_id: np.ndarray,
                    ego_from_sensors: list[SE3]) -> tuple[np.ndarray, np.ndarray]:
    """``(ego (N, 3) float64, origins (N, 3) float64)``: world points ``xyz`` (``(N, 3)``, m)
    in the ego frame at their firing times ``times_ns`` (``(N,) int64`` absolute; poses held
    beyond the track's ends), and the world position of each point's sensor then
    (``sensor_id (N,)`` indexes ``ego_from_sensors``)."""
    p = np.ascontiguousarray(xyz, np.float64).reshape(-1, 3)
    sid = np.ascontiguousarray(sensor_id, np.int64)
    if sid.shape != (len(p),) or np.shape(times_ns) != (len(p),):
        raise ValueError(f"times_ns and sensor_id must be ({len(p)},), got {np.shape(times_ns)}, {sid.shape}")
    if len(sid) and (sid.min() < 0 or sid.max() >= len(ego_from_sensors)):
        raise ValueError(f"sensor_id beyond the {len(ego_from_sensors)} sensors")
    poses = world_from_ego.interpolate(np.asarray(times_ns, np.int64), "hold")
    lever = np.array([e.translation for e in ego_from_sensors], np.float64).reshape(-1, 3)
    ego, origin = np.empty_like(p), np.empty_like(p)
    _ego_kernel(p, poses.rotation.reshape(-1, 4), poses.translation.reshape(-1, 3), sid, lever, ego, origin)
    return ego, origin


def outside_box(ego: np.ndarray, box) -> np.ndarray:
    """``(N,) bool``: ego-frame points ``(N, 3)`` outside the inclusive axis-aligned ``box``
    (``(lower (3,), upper (3,))`` ego-frame corners, m; None keeps every point)."""
    if box is None:
        return np.ones(len(ego), np.bool_)
    return outside_ego_box(ego, SE3.identity(), box)


def _warmup() -> None:
    track = PoseTrack(np.array([0, 10], np.int64), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    ego, _ = ego_and_origins(np.zeros((2, 3)), np.array([0, 5], np.int64), track, np.zeros(2, np.uint8),
                             [SE3.identity()])
    outside_box(ego, DEFAULT_EGO_BOX)
