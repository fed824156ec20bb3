"""GNSS/INS-style pose samples drawn from the true ego trajectory, with optional noise."""

from __future__ import annotations

import math

import numpy as np

from engine import quaternion as quat
from engine.pose_track import PoseTrack


def gnss_track(
    truth: PoseTrack,
    rate_hz: float = 100.0,
    position_sigma_m: float = 0.0,
    attitude_sigma_rad: float = 0.0,
    seed: int = 0,
) -> PoseTrack:
    """Sample ``truth`` (``world_from_ego``) every ``1 / rate_hz`` s from its start, adding
    independent Gaussian noise per sample: ``position_sigma_m`` per axis on the translation,
    and a rotation vector with ``attitude_sigma_rad`` per axis (in the ego frame) applied on
    the right. Zero sigmas return the exact true poses at the sample times.
    """
    if not (math.isfinite(rate_hz) and rate_hz > 0):
        raise ValueError(f"rate_hz must be positive, got {rate_hz}")
    if not (math.isfinite(position_sigma_m) and position_sigma_m >= 0):
        raise ValueError(f"position_sigma_m must be >= 0, got {position_sigma_m}")
    if not (math.isfinite(attitude_sigma_rad) and attitude_sigma_rad >= 0):
        raise ValueError(f"attitude_sigma_rad must be >= 0, got {attitude_sigma_rad}")
    step = 1e9 / rate_hz
    n = int((truth.end_ns - truth.start_ns) // step) + 1
    times = truth.start_ns + np.round(np.arange(n) * step).astype(np.int64)
    poses = truth.interpolate(times)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6E55]))
    translation = poses.translation + rng.normal(0.0, position_sigma_m, (n, 3))
    rotvec = rng.normal(0.0, attitude_sigma_rad, (n, 3))
    angle = np.linalg.norm(rotvec, axis=1, keepdims=True)
    axis = np.divide(rotvec, angle, out=np.zeros_like(rotvec), where=angle > 0)
    dq = np.concatenate([np.cos(0.5 * angle), np.sin(0.5 * angle) * axis], axis=1)
    return PoseTrack(times, quat.multiply(poses.rotation, dq), translation)
