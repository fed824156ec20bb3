"""Ego trajectory: a seeded speed profile and yaw-rate profile integrated at 1 kHz.

The ego drives on flat ground (z = 0, no pitch or roll) in the ENU world frame; the ego frame
is x forward, y left, z up with its origin on the ground. Both profiles are piecewise linear
in time (constant acceleration, constant yaw acceleration between knots); they are sampled
on the integration grid and integrated with the trapezoid rule, and the samples *are* the
ground truth: a :class:`~engine.pose_track.PoseTrack` interpolated between them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine.pose_track import PoseTrack


@dataclass(frozen=True)
class TrajectoryConfig:
    """How the ego drives.

    Attributes:
        top_speed_mps: cruise speed the ego accelerates to and mostly holds.
        start_speed_mps: speed at the start (and before it, for the road behind).
        accel_mps2: magnitude of every acceleration / braking phase.
        max_yaw_rate_rad_s: peak yaw rate of the sharpest curve (the first curve reaches it).
        yaw_accel_rad_s2: how fast the yaw rate ramps into and out of a curve.
        rate_hz: integration and sample rate of the returned pose track.
    """

    top_speed_mps: float = 15.0
    start_speed_mps: float = 10.0
    accel_mps2: float = 2.5
    max_yaw_rate_rad_s: float = math.radians(30.0)
    yaw_accel_rad_s2: float = math.radians(90.0)
    rate_hz: int = 1000

    def __post_init__(self) -> None:
        vals = {f: getattr(self, f) for f in ("top_speed_mps", "start_speed_mps", "accel_mps2",
                                              "max_yaw_rate_rad_s", "yaw_accel_rad_s2")}
        for name, v in vals.items():
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"TrajectoryConfig.{name} must be finite and >= 0, got {v}")
        if self.accel_mps2 <= 0 or self.yaw_accel_rad_s2 <= 0:
            raise ValueError("TrajectoryConfig.accel_mps2 and yaw_accel_rad_s2 must be positive")
        if self.start_speed_mps > self.top_speed_mps:
            raise ValueError(
                f"start_speed_mps {self.start_speed_mps} exceeds top_speed_mps {self.top_speed_mps}"
            )
        if not (isinstance(self.rate_hz, int) and 1 <= self.rate_hz and 1_000_000_000 % self.rate_hz == 0):
            raise ValueError(f"TrajectoryConfig.rate_hz must divide 1e9 (integer ns step), got {self.rate_hz}")


@dataclass(frozen=True, eq=False)
class EgoTrajectory:
    """The integrated ego motion.

    Attributes:
        world_from_ego: ground-truth pose track (ENU world ← ego), sampled at ``rate_hz``.
        speed_mps: ``(K,) float64`` forward speed at each sample.
        yaw_rate_rad_s: ``(K,) float64`` yaw rate at each sample.
    """

    world_from_ego: PoseTrack
    speed_mps: np.ndarray
    yaw_rate_rad_s: np.ndarray


def _ramp_knots(t: float, v: float, target: float, rate: float, times: list, values: list) -> float:
    """Append the knot where a linear ramp from ``v`` at ``t`` reaches ``target``."""
    t_end = t + abs(target - v) / rate
    times.append(t_end)
    values.append(target)
    return t_end


def _speed_knots(rng: np.random.Generator, cfg: TrajectoryConfig, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Accelerate to top speed, hold, then seeded dips (brake to 55..90 %, recover)."""
    times, values = [0.0], [cfg.start_speed_mps]
    t = _ramp_knots(0.0, cfg.start_speed_mps, cfg.top_speed_mps, cfg.accel_mps2, times, values)
    while t < t_end:
        t += rng.uniform(2.0, 4.0)  # cruise
        times.append(t)
        values.append(cfg.top_speed_mps)
        low = cfg.top_speed_mps * rng.uniform(0.55, 0.9)
        t = _ramp_knots(t, cfg.top_speed_mps, low, cfg.accel_mps2, times, values)
        t = _ramp_knots(t, low, cfg.top_speed_mps, cfg.accel_mps2, times, values)
    return np.array(times), np.array(values)


def _yaw_rate_knots(rng: np.random.Generator, cfg: TrajectoryConfig, t_end: float) -> tuple[np.ndarray, np.ndarray]:
    """Straight, curve, straight, curve...: the first curve starts at once and peaks at the maximum."""
    times, values = [0.0], [0.0]
    t = 0.0
    peak = cfg.max_yaw_rate_rad_s * (1.0 if rng.random() < 0.5 else -1.0)
    while t < t_end:
        t = _ramp_knots(t, 0.0, peak, cfg.yaw_accel_rad_s2, times, values)
        t += rng.uniform(0.6, 1.5)  # hold the curve
        times.append(t)
        values.append(peak)
        t = _ramp_knots(t, peak, 0.0, cfg.yaw_accel_rad_s2, times, values)
        t += rng.uniform(1.0, 3.0)  # straight
        times.append(t)
        values.append(0.0)
        peak = cfg.max_yaw_rate_rad_s * rng.uniform(0.4, 1.0) * (1.0 if rng.random() < 0.5 else -1.0)
    return np.array(times), np.array(values)


def ego_trajectory(
    seed: int,
    duration_s: float,
    start_ns: int = 0,
    config: TrajectoryConfig | None = None,
) -> EgoTrajectory:
    """Integrate the seeded profiles from ``start_ns`` until at least ``duration_s`` later.

    At ``start_ns`` the ego is at the world origin with a seeded heading. Timestamps are
    ``start_ns + i * (1e9 / rate_hz)`` ns exactly; the last sample is at or just after the end.
    The same seed gives the same motion whatever the duration (a longer drive extends a
    shorter one).
    """
    cfg = config or TrajectoryConfig()
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7EA1]))
    heading0 = rng.uniform(-math.pi, math.pi)
    tv, vv = _speed_knots(rng, cfg, duration_s)
    tw, ww = _yaw_rate_knots(rng, cfg, duration_s)

    step_ns = 1_000_000_000 // cfg.rate_hz
    idx = np.arange(int(math.ceil(duration_s * cfg.rate_hz)) + 1, dtype=np.int64)
    t = idx * (step_ns * 1e-9)
    speed = np.interp(t, tv, vv)
    yaw_rate = np.interp(t, tw, ww)
    dt = step_ns * 1e-9
    yaw = np.concatenate([[0.0], np.cumsum(0.5 * (yaw_rate[1:] + yaw_rate[:-1]) * dt)])
    yaw += heading0
    vx = speed * np.cos(yaw)
    vy = speed * np.sin(yaw)
    xy = np.zeros((len(t), 2))
    xy[1:, 0] = np.cumsum(0.5 * (vx[1:] + vx[:-1]) * dt)
    xy[1:, 1] = np.cumsum(0.5 * (vy[1:] + vy[:-1]) * dt)
    translation = np.column_stack([xy, np.zeros(len(t))])
    track = PoseTrack(int(start_ns) + idx * step_ns, quat.from_yaw(yaw), translation)
    return EgoTrajectory(track, speed, yaw_rate)
