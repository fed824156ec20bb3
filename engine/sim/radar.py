"""A simple automotive radar: a horizontal fan of rays, one return per ray that hits a box.

Each ray leaves the radar origin at the sweep time (a radar reports a scan at one time) in
the radar's x-y plane; a return sits where the ray meets a box (buildings, poles, actors; the
ground is never hit by a horizontal ray above it). Its measured radial velocity is the range
rate ``(v_target - v_sensor) · u`` (``u`` the unit ray, positive receding), from the true
motions: the target point's rigid-body velocity (an actor's keyframe interval: centre velocity
plus yaw rate × lever arm; 0 for static boxes) and the radar origin's velocity along the true
ego track (the interval of the 1 kHz samples holding the sweep time: translation rate plus
yaw rate × the radar's lever arm). Its RCS is a per-category constant (:data:`RCS_DBSM`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine.pose_track import PoseTrack
from engine.radar import RadarSweep
from engine.se3 import SE3
from engine.sim.world import NO_HIT, World, cast_rays

RCS_DBSM = {"building": 25.0, "pole": 8.0, "car": 12.0, "pedestrian": -3.0}  # others: 0 dBsm


@dataclass(frozen=True, eq=False)
class Radar:
    """A radar on the ego: name, mount ``ego_from_radar`` (x forward, y left, z up), the fan
    (``n_rays`` azimuths evenly over ``fov_rad`` centred on the radar's +x), range limit and
    when it scans: at ``time_offset_ns`` after each frame start (radars run unsynchronised)."""

    name: str
    ego_from_radar: SE3
    fov_rad: float = math.radians(90.0)
    n_rays: int = 91
    max_range_m: float = 100.0
    time_offset_ns: int = 37_500_000

    def __post_init__(self) -> None:
        if self.ego_from_radar.shape != ():
            raise ValueError("Radar.ego_from_radar must be a single SE3")
        if not (0 < self.fov_rad < 2 * math.pi and self.n_rays >= 1 and self.max_range_m > 0):
            raise ValueError(f"Radar needs 0 < fov_rad < 2π, n_rays >= 1 and max_range_m > 0, got {self.fov_rad}, "
                             f"{self.n_rays}, {self.max_range_m}")


def _yaw(q: np.ndarray) -> np.ndarray:
    """Yaw (rad) of yaw-only quaternions ``(..., 4)``."""
    return 2.0 * np.arctan2(q[..., 3], q[..., 0])


def ego_point_velocity(track: PoseTrack, time_ns: int, lever_world: np.ndarray) -> np.ndarray:
    """``(3,)`` world velocity (m/s) at ``time_ns`` of the point ``lever_world`` (world-frame
    offset from the ego origin) riding on the yaw-only ego track: the rate of the track's
    interval holding ``time_ns`` (translation rate + yaw rate × lever arm)."""
    ts = track.timestamps_ns
    k = int(np.clip(np.searchsorted(ts, time_ns, side="right") - 1, 0, len(ts) - 2))
    dt = (ts[k + 1] - ts[k]) * 1e-9
    rate = (track.translation[k + 1] - track.translation[k]) / dt
    dyaw = (_yaw(track.rotation[k + 1]) - _yaw(track.rotation[k]) + math.pi) % (2 * math.pi) - math.pi
    return rate + np.cross([0.0, 0.0, dyaw / dt], lever_world)


def _target_velocity(world: World, object_id: np.ndarray, hit: np.ndarray, time_ns: int) -> np.ndarray:
    """``(N, 3)`` world velocity of each hit point: actors move rigidly on their keyframe
    interval (centre velocity + yaw rate × lever arm), everything else is still."""
    out = np.zeros((len(hit), 3))
    t0, dt_ns = world.actor_t0_ns, world.actor_dt_ns
    k = int(np.clip((time_ns - t0) // dt_ns, 0, world.actor_center.shape[1] - 2))
    for i in np.flatnonzero(object_id > world.n_static):
        j = int(object_id[i]) - 1 - world.n_static
        c, _ = world.actor_pose(j, np.array([time_ns]))
        v = (world.actor_center[j, k + 1] - world.actor_center[j, k]) / (dt_ns * 1e-9)
        w = (world.actor_yaw[j, k + 1] - world.actor_yaw[j, k]) / (dt_ns * 1e-9)
        out[i] = v + np.cross([0.0, 0.0, w], hit[i] - c[0])
    return out


def simulate_radar_sweep(world: World, world_from_ego: PoseTrack, radar: Radar, time_ns: int) -> RadarSweep:
    """Ray-cast one radar scan at ``time_ns`` (see the module docstring).

    Returns a :class:`RadarSweep` in the radar frame (``timestamp_ns = time_ns``) holding the
    returns in azimuth order, with the truth as extra columns: ``object_id (N,) int32``,
    ``target_radial_velocity_mps (N,) float32`` (the target's own velocity along the line of
    sight: what an exact ego-motion compensation gives) and ``sensor_velocity_mps (N, 3)
    float32`` (the radar origin's world velocity, the same on every row).
    """
    az = np.linspace(-radar.fov_rad / 2, radar.fov_rad / 2, radar.n_rays)
    local = np.column_stack([np.cos(az), np.sin(az), np.zeros_like(az)])
    world_from_radar = world_from_ego.at(int(time_ns)) @ radar.ego_from_radar
    dirs = quat.rotate(world_from_radar.rotation, local)
    origin = world_from_radar.translation
    rng_m, oid = cast_rays(world, np.tile(origin, (len(az), 1)), dirs, np.full(len(az), int(time_ns), np.int64),
                           radar.max_range_m)
    keep = (oid != NO_HIT) & (rng_m <= radar.max_range_m)
    r, oid, u = rng_m[keep], oid[keep], dirs[keep]
    hit = origin + u * r[:, None]
    v_sensor = ego_point_velocity(world_from_ego, int(time_ns), origin - world_from_ego.at(int(time_ns)).translation)
    v_target = _target_velocity(world, oid, hit, int(time_ns))
    category = world.objects.category
    rcs = np.array([RCS_DBSM.get(category[i], 0.0) for i in oid], np.float32)
    return RadarSweep(
        local[keep] * r[:, None], np.sum((v_target - v_sensor) * u, axis=1), rcs, int(time_ns), "radar",
        {"object_id": oid.astype(np.int32),
         "target_radial_velocity_mps": np.sum(v_target * u, axis=1).astype(np.float32),
         "sensor_velocity_mps": np.tile(v_sensor, (len(r), 1)).astype(np.float32)},
    )
