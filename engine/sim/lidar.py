"""Spinning multi-beam LiDAR ray-cast against a :class:`~engine.sim.world.World`.

A sweep is ``n_sequences = sweep_period_ns // sequence_period_ns`` firing sequences; in
sequence ``s`` beam ``b`` fires at ``s * sequence_period_ns + firing_offset_ns[b]`` after
the sweep start, looking along

    azimuth   = start_azimuth_rad ∓ 2π · t / sweep_period_ns + azimuth_offset_rad[b]
    elevation = elevation_rad[b]

(``−`` for a clockwise spin seen from above, as Velodyne sensors turn), azimuth measured
counter-clockwise from the LiDAR's +x towards +y. Each ray leaves the LiDAR origin at its own
firing time: the ego pose comes from the true pose track at that time and the actors are
where they are at that time, so motion distortion is physical.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine._jit import pjit, prange
from engine.pose_track import PoseTrack
from engine.quaternion import q_rotate
from engine.se3 import SE3
from engine.sim.world import NO_HIT, World, _tiny_world, cast_ray
from engine.sweep import Sweep

_TWO_PI = 2.0 * math.pi


@dataclass(frozen=True, eq=False)
class BeamPattern:
    """Firing geometry and timing of a spinning LiDAR.

    Attributes:
        elevation_rad: ``(B,) float64`` beam elevation above the LiDAR x-y plane, in (−π/2, π/2).
        azimuth_offset_rad: ``(B,) float64`` per-beam azimuth added to the spin angle.
        firing_offset_ns: ``(B,) int64`` firing time of each beam within a sequence,
            ``0 <= offset < sequence_period_ns``.
        sequence_period_ns: time between consecutive firing sequences.
        sweep_period_ns: one revolution (``60e9 / rpm``).
        max_range_m, min_range_m: returns outside ``(min_range_m, max_range_m]`` are dropped.
        range_noise_m: standard deviation of Gaussian range noise (0 = exact).
        start_azimuth_rad: spin angle at the sweep start.
        clockwise: spin direction seen from above (+z).

    Ring ``b`` of a point is its beam index in these arrays.
    """

    elevation_rad: np.ndarray
    azimuth_offset_rad: np.ndarray
    firing_offset_ns: np.ndarray
    sequence_period_ns: int
    sweep_period_ns: int
    max_range_m: float
    min_range_m: float = 0.0
    range_noise_m: float = 0.0
    start_azimuth_rad: float = 0.0
    clockwise: bool = True

    def __post_init__(self) -> None:
        el = np.ascontiguousarray(self.elevation_rad, dtype=np.float64)
        az = np.ascontiguousarray(self.azimuth_offset_rad, dtype=np.float64)
        fo = np.asarray(self.firing_offset_ns)
        if el.ndim != 1 or len(el) == 0:
            raise ValueError(f"BeamPattern.elevation_rad must be a non-empty (B,) array, got shape {el.shape}")
        if az.shape != el.shape or fo.shape != el.shape:
            raise ValueError(
                f"BeamPattern arrays differ in length: elevation {el.shape}, azimuth_offset {az.shape}, "
                f"firing_offset_ns {fo.shape}"
            )
        if not np.issubdtype(fo.dtype, np.integer):
            raise ValueError(f"BeamPattern.firing_offset_ns must be integer ns, got {fo.dtype}")
        fo = np.ascontiguousarray(fo, dtype=np.int64)
        if not (np.all(np.isfinite(el)) and np.all(np.isfinite(az))):
            raise ValueError("BeamPattern elevations / azimuth offsets contain NaN or infinite values")
        if np.any(np.abs(el) >= math.pi / 2):
            raise ValueError(f"BeamPattern.elevation_rad must lie in (-pi/2, pi/2), got max |el| {np.abs(el).max()}")
        seq, sweep = int(self.sequence_period_ns), int(self.sweep_period_ns)
        if seq <= 0 or sweep < seq:
            raise ValueError(
                f"need 0 < sequence_period_ns <= sweep_period_ns, got {self.sequence_period_ns}, {self.sweep_period_ns}"
            )
        if np.any(fo < 0) or np.any(fo >= seq):
            raise ValueError(f"BeamPattern.firing_offset_ns must lie in [0, {seq}), got {fo.min()}..{fo.max()}")
        if not (math.isfinite(self.max_range_m) and self.max_range_m > 0):
            raise ValueError(f"BeamPattern.max_range_m must be positive and finite, got {self.max_range_m}")
        if not (0 <= self.min_range_m < self.max_range_m):
            raise ValueError(f"BeamPattern.min_range_m must lie in [0, max_range_m), got {self.min_range_m}")
        if not (math.isfinite(self.range_noise_m) and self.range_noise_m >= 0):
            raise ValueError(f"BeamPattern.range_noise_m must be >= 0, got {self.range_noise_m}")
        if not math.isfinite(self.start_azimuth_rad):
            raise ValueError(f"BeamPattern.start_azimuth_rad must be finite, got {self.start_azimuth_rad}")
        for name, arr in (("elevation_rad", el), ("azimuth_offset_rad", az), ("firing_offset_ns", fo)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "sequence_period_ns", seq)
        object.__setattr__(self, "sweep_period_ns", sweep)

    @staticmethod
    def uniform(
        n_beams: int,
        elevation_min_deg: float,
        elevation_max_deg: float,
        sequences_per_sweep: int,
        rpm: float = 600.0,
        max_range_m: float = 120.0,
        **kwargs,
    ) -> "BeamPattern":
        """Beams evenly spaced in elevation, all fired together at the start of each sequence."""
        if n_beams <= 0 or sequences_per_sweep <= 0:
            raise ValueError(f"need n_beams > 0 and sequences_per_sweep > 0, got {n_beams}, {sequences_per_sweep}")
        if not rpm > 0:
            raise ValueError(f"rpm must be positive, got {rpm}")
        sweep_ns = int(round(60e9 / rpm))
        return BeamPattern(
            np.radians(np.linspace(elevation_min_deg, elevation_max_deg, n_beams)),
            np.zeros(n_beams), np.zeros(n_beams, np.int64),
            sweep_ns // sequences_per_sweep, sweep_ns, max_range_m, **kwargs,
        )

    @property
    def n_beams(self) -> int:
        return len(self.elevation_rad)

    @property
    def n_sequences(self) -> int:
        return self.sweep_period_ns // self.sequence_period_ns

    @property
    def n_rays(self) -> int:
        return self.n_beams * self.n_sequences

    def firing_times_ns(self) -> np.ndarray:
        """``(n_sequences * B,) int64`` firing offsets from the sweep start, sequence-major."""
        s = np.arange(self.n_sequences, dtype=np.int64)[:, None] * self.sequence_period_ns
        return (s + self.firing_offset_ns[None, :]).reshape(-1)


@dataclass(frozen=True, eq=False)
class Lidar:
    """A LiDAR on the ego: name, beam pattern, mount ``ego_from_lidar``, ``sensor_id`` column value."""

    name: str
    pattern: BeamPattern
    ego_from_lidar: SE3
    sensor_id: int = 0

    def __post_init__(self) -> None:
        if self.ego_from_lidar.shape != ():
            raise ValueError("Lidar.ego_from_lidar must be a single SE3")
        if not 0 <= int(self.sensor_id) <= 255:
            raise ValueError(f"Lidar.sensor_id must fit uint8, got {self.sensor_id}")


@pjit
def _sweep_kernel(w, starts, items, ego_q, ego_t, mount_q, mount_t, start_ns, offsets, elevation, az_offset, n_beams,
                  az0, az_rate, t_max, out_range, out_id, out_cos, out_az, out_dir):
    n_sectors = starts.shape[0] - 1
    for i in prange(offsets.shape[0]):
        b = i % n_beams
        az = az0 + az_rate * float(offsets[i]) + az_offset[b]
        az = az - 2.0 * math.pi * math.floor(az / (2.0 * math.pi))
        el = elevation[b]
        ce = math.cos(el)
        lx = ce * math.cos(az)
        ly = ce * math.sin(az)
        lz = math.sin(el)
        qw, qx, qy, qz = ego_q[i, 0], ego_q[i, 1], ego_q[i, 2], ego_q[i, 3]
        ex, ey, ez = q_rotate(mount_q[0], mount_q[1], mount_q[2], mount_q[3], lx, ly, lz)
        dx, dy, dz = q_rotate(qw, qx, qy, qz, ex, ey, ez)
        ray_az = math.atan2(dy, dx)
        if ray_az < 0.0:
            ray_az += 2.0 * math.pi
        k = min(int(ray_az * n_sectors / (2.0 * math.pi)), n_sectors - 1)
        cand = items[starts[k]:starts[k + 1]]
        ox, oy, oz = q_rotate(qw, qx, qy, qz, mount_t[0], mount_t[1], mount_t[2])
        t, oid, c = cast_ray(w, cand, cand.shape[0], ox + ego_t[i, 0], oy + ego_t[i, 1], oz + ego_t[i, 2],
                             dx, dy, dz, start_ns + offsets[i], 0.0, t_max)
        out_range[i] = t
        out_id[i] = oid
        out_cos[i] = c
        out_az[i] = az
        out_dir[i, 0] = lx
        out_dir[i, 1] = ly
        out_dir[i, 2] = lz


def simulate_sweep(
    world: World,
    world_from_ego: PoseTrack,
    lidar: Lidar,
    start_ns: int,
    seed: int = 0,
) -> Sweep:
    """Ray-cast one sweep starting at ``start_ns``.

    Returns a :class:`Sweep` in the LiDAR frame (``frame="lidar"``, ``timestamp_ns=start_ns``)
    holding only the returns: ``xyz (N, 3) float32`` m, ``intensity`` ``255 · reflectivity ·
    |cos incidence|`` rounded to a whole number (an 8-bit calibrated reflectivity, as
    Velodyne and Hesai sensors report it), ``time_offset_ns`` (firing time − ``start_ns``), ``ring`` (beam index),
    ``sensor_id``, and extra columns ``object_id (N,) int32``, ``azimuth_rad (N,) float32`` in
    ``[0, 2π)`` and ``range_m (N,) float32`` (noisy when the pattern has range noise).
    Points are in firing order. ``world_from_ego`` must cover the whole sweep.
    """
    pat = lidar.pattern
    offsets = pat.firing_times_ns()
    abs_times = int(start_ns) + offsets
    poses = world_from_ego.interpolate(abs_times)
    mount = lidar.ego_from_lidar
    samples = np.linspace(0, len(abs_times) - 1, 11).astype(np.int64)
    sensor_pos = (poses[samples] @ mount).translation.reshape(-1, 3)
    starts, items = world.sector_candidates(sensor_pos, int(abs_times[0]), int(abs_times[-1]), pat.max_range_m)
    n = len(offsets)
    out_range = np.empty(n)
    out_id = np.empty(n, np.int32)
    out_cos = np.empty(n)
    out_az = np.empty(n)
    out_dir = np.empty((n, 3))
    spin = -1.0 if pat.clockwise else 1.0
    _sweep_kernel(
        world.packed, starts, items, np.ascontiguousarray(poses.rotation), np.ascontiguousarray(poses.translation),
        np.ascontiguousarray(mount.rotation), np.ascontiguousarray(mount.translation), int(start_ns), offsets,
        pat.elevation_rad, pat.azimuth_offset_rad, pat.n_beams, pat.start_azimuth_rad,
        spin * _TWO_PI / pat.sweep_period_ns, pat.max_range_m,
        out_range, out_id, out_cos, out_az, out_dir,
    )
    rng_m = out_range
    if pat.range_noise_m > 0:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(start_ns) & 0x7FFFFFFF, lidar.sensor_id]))
        rng_m = out_range + rng.normal(0.0, pat.range_noise_m, n)
    keep = (out_id != NO_HIT) & (rng_m > pat.min_range_m) & (rng_m <= pat.max_range_m)
    r = rng_m[keep]
    oid = out_id[keep]
    refl = world.objects.reflectivity[oid].astype(np.float64)
    return Sweep(
        xyz=(out_dir[keep] * r[:, None]).astype(np.float32),
        timestamp_ns=int(start_ns),
        intensity=np.rint(255.0 * refl * out_cos[keep]).astype(np.float32),
        time_offset_ns=offsets[keep],
        ring=(np.flatnonzero(keep) % pat.n_beams).astype(np.uint16),
        sensor_id=np.full(len(r), lidar.sensor_id, np.uint8),
        frame="lidar",
        extra={"object_id": oid, "azimuth_rad": out_az[keep].astype(np.float32), "range_m": r.astype(np.float32)},
    )


def _warmup() -> None:
    track = PoseTrack(np.array([0, 10**9]), np.array([[1.0, 0, 0, 0]] * 2), np.array([[0, 0, 1.0], [1, 0, 1]]))
    pattern = BeamPattern.uniform(2, -10, 0, 4, rpm=600, max_range_m=50)
    simulate_sweep(_tiny_world(), track, Lidar("warm", pattern, SE3.identity()), 0)
