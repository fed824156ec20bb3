"""Scenes shared by the GPU tests (``tests/test_cuda_*.py``): cameras of every lens model
around a car, a turning drive, points on near and far surfaces, fixed and moving boxes."""

from __future__ import annotations

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.pose_track import PoseTrack
from engine.quaternion import from_yaw
from engine.se3 import SE3

_CAM_IN_EGO = quat.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2)  # camera z along ego +x


def cameras(width, height, rolling=True):
    """Six cameras around the car: pinhole, pinhole with skew, Brown-Conrady (radial, and the
    full rational + tangential model), Kannala-Brandt, and a rolling-shutter Brown-Conrady."""
    s = width / 1920
    f = 1000.0 * s
    lenses = [
        CameraIntrinsics(width, height, f, 1.005 * f, width / 2 - 1.7, height / 2 + 1.3),
        CameraIntrinsics(width, height, f, f, width / 2, height / 2, skew=0.8),
        CameraIntrinsics(width, height, f, f, width / 2, height / 2, model="brown_conrady", distortion=(-0.28, 0.07)),
        CameraIntrinsics(width, height, 0.8 * f, 0.81 * f, width / 2, height / 2, model="brown_conrady",
                         distortion=(0.42, -0.05, 5e-4, 9e-4, 0.003, 0.75, -0.02, 0.012)),
        CameraIntrinsics(width, height, 0.42 * f, 0.418 * f, width / 2, height / 2, model="kannala_brandt",
                         distortion=(0.05, -0.01, 0.004, -0.0007)),
        CameraIntrinsics(width, height, f, f, width / 2, height / 2, model="brown_conrady", distortion=(-0.1, 0.01)),
    ]
    cams = []
    for k, intr in enumerate(lenses):
        q = quat.multiply(quat.from_yaw(k * np.pi / 3), _CAM_IN_EGO)
        shutter = dict(shutter="rolling", row_readout_ns=int(30_000 / s)) if rolling and k == 5 else {}
        cams.append(Camera(f"cam{k}", intr, SE3(q, [1.2, -0.3, 1.6]), **shutter))
    return cams


def track(rng):
    ts = np.arange(40, dtype=np.int64) * 10_000_000
    q = quat.from_yaw(np.cumsum(rng.uniform(-0.03, 0.03, 40)))
    return PoseTrack(ts, q, np.cumsum(rng.uniform(0.1, 0.2, (40, 3)), axis=0))


def points(rng, n):
    # a ring of surfaces around the car, some points behind others (occlusion), a few NaN
    r = np.where(rng.random(n) < 0.5, rng.uniform(4, 12, n), rng.uniform(25, 60, n))
    a = rng.uniform(-np.pi, np.pi, n)
    xyz = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-1.5, 4.0, n)], axis=1)
    xyz[:3] = np.nan
    return xyz


def timed_boxes(rng, n, b_n=40, m_n=12, t_n=100, step_ns=1_000_000, spread=30.0, huge=2):
    """Fixed and moving boxes (``huge`` of them covering everything), points fired over the
    steps (step 7 missing, some before the first), a few non-finite."""
    centers = rng.uniform(-spread, spread, (b_n, 3))
    sizes_ = rng.uniform(1.0, 6.0, (b_n, 3))
    sizes_[:huge] = 5 * spread
    rotations = from_yaw(rng.uniform(-np.pi, np.pi, b_n))
    moving = np.sort(rng.choice(np.arange(huge, b_n), m_n, replace=False))
    steps = np.delete(np.arange(-3, t_n - 2), 10)
    t_n = len(steps)
    velocity = rng.uniform(-10, 10, (1, m_n, 3)) * 1e-3  # m per step
    mc = centers[moving][None] + velocity * np.arange(t_n)[:, None, None]
    ms = np.broadcast_to(sizes_[moving], (t_n, m_n, 3)).copy()
    mq = from_yaw(rng.uniform(-np.pi, np.pi, m_n))[None].repeat(t_n, axis=0)
    mv = rng.random((t_n, m_n)) < 0.9
    near = centers[rng.integers(huge, b_n, n)] + rng.normal(0, 2.0, (n, 3))
    xyz = np.where(rng.random((n, 1)) < 0.7, near, rng.uniform(-spread, spread, (n, 3)))
    xyz[:3] = [[np.nan, 0, 0], [0, np.inf, 0], [0, 0, -np.inf]]
    offsets = rng.integers(-5 * step_ns, (steps[-1] + 1) * step_ns, n)
    return xyz, offsets, step_ns, centers, sizes_, rotations, moving, steps, mc, ms, mq, mv
