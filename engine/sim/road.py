"""The road scenario: an ego car driving a curvy street lined with buildings and poles,
with cars in the neighbouring lanes and pedestrians on the sidewalks, seen by spinning
LiDARs, cameras and a GNSS/INS.

:func:`simulate_drive` is the entry point; it returns a frozen :class:`Drive` holding the
ground truth and the LiDAR sweeps (computed eagerly); camera images render on request
(:meth:`Drive.render`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import CuboidTrack
from engine.pose_track import PoseTrack
from engine.radar import RadarSweep
from engine.se3 import SE3
from engine.sim.camera_render import RenderedImage, render_camera
from engine.sim.gnss import gnss_track
from engine.sim.lidar import BeamPattern, Lidar, simulate_sweep
from engine.sim.radar import Radar, simulate_radar_sweep
from engine.sim.trajectory import EgoTrajectory, TrajectoryConfig, ego_trajectory
from engine.sim.world import ObjectTable, World
from engine.sweep import Sweep

Preset = Literal["test", "road"]
DEFAULT_START_NS = 1_700_000_000_000_000_000
FRAME_PERIOD_NS = 100_000_000  # 10 Hz sweeps
ACTOR_DT_NS = 100_000_000  # 10 Hz actor keyframes
LANE_WIDTH_M = 3.5
SKY_RGB = (150, 200, 240)
GROUND_RGB = (90, 90, 96)

# camera axes (x right, y down, z forward) in ego axes (x forward, y left, z up)
_EGO_FROM_CAM_AXES = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_mount(x: float, y: float, z: float, yaw_deg: float, pitch_down_deg: float = 0.0) -> SE3:
    """``ego_from_camera`` for a camera at ego ``(x, y, z)`` looking along ego yaw ``yaw_deg``,
    tilted down by ``pitch_down_deg``."""
    r = quat.to_matrix(quat.from_euler_zyx(0.0, math.radians(pitch_down_deg), math.radians(yaw_deg)))
    return SE3(quat.from_matrix(r @ _EGO_FROM_CAM_AXES), np.array([x, y, z]))


def lidar_mount(x: float, y: float, z: float, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                roll_deg: float = 0.0) -> SE3:
    """``ego_from_lidar`` for a LiDAR at ego ``(x, y, z)`` rotated by yaw, pitch, roll (z-y'-x'')."""
    q = quat.from_euler_zyx(math.radians(roll_deg), math.radians(pitch_deg), math.radians(yaw_deg))
    return SE3(q, np.array([x, y, z]))


def rig(preset: Preset) -> tuple[tuple[Lidar, ...], tuple[Camera, ...]]:
    """The sensors of a preset.

    ``"road"``: a 64-beam roof LiDAR (HDL-64E-like elevations −24.9°..+2°, 1800 firings per
    revolution) and a 32-beam bumper LiDAR (HDL-32E-like −30.67°..+10.67°, 1800 firings), both
    at 600 rpm, 120 m range; six 1920×1080 cameras (front, front-left, front-right, back
    pinhole; left and right Kannala-Brandt fisheye).

    ``"test"``: a 16-beam roof LiDAR (300 firings) and an 8-beam tilted bumper LiDAR (200
    firings), 60 m range; a pinhole front camera, a rolling-shutter pinhole back camera and a
    fisheye left camera at 192×108 / 320×240.
    """
    if preset == "road":
        lidars = (
            Lidar("LIDAR_TOP", BeamPattern.uniform(64, -24.9, 2.0, 1800, rpm=600, max_range_m=120.0,
                                                   start_azimuth_rad=math.pi),
                  lidar_mount(0.95, 0.0, 1.85, yaw_deg=-90.0), sensor_id=0),
            Lidar("LIDAR_FRONT", BeamPattern.uniform(32, -30.67, 10.67, 1800, rpm=600, max_range_m=120.0,
                                                     start_azimuth_rad=math.pi),
                  lidar_mount(3.7, 0.0, 0.75), sensor_id=1),
        )
        w, h = 1920, 1080
        pin = CameraIntrinsics(w, h, 1266.0, 1266.0, 959.5, 539.5)
        wide = CameraIntrinsics(w, h, 800.0, 800.0, 959.5, 539.5)
        fish = CameraIntrinsics(w, h, 520.0, 520.0, 959.5, 539.5, model="kannala_brandt",
                                distortion=(0.02, -0.005, 0.001, 0.0), max_fov_rad=math.radians(190.0))
        cameras: tuple[Camera, ...] = (
            Camera("CAM_FRONT", pin, camera_mount(1.7, 0.0, 1.55, 0.0)),
            Camera("CAM_FRONT_LEFT", pin, camera_mount(1.5, 0.5, 1.55, 55.0)),
            Camera("CAM_FRONT_RIGHT", pin, camera_mount(1.5, -0.5, 1.55, -55.0)),
            Camera("CAM_BACK", wide, camera_mount(-1.0, 0.0, 1.55, 180.0)),
            Camera("CAM_LEFT_FISHEYE", fish, camera_mount(1.0, 0.9, 1.0, 90.0, 15.0)),
            Camera("CAM_RIGHT_FISHEYE", fish, camera_mount(1.0, -0.9, 1.0, -90.0, 15.0)),
        )
        return lidars, cameras
    if preset == "test":
        lidars = (
            Lidar("LIDAR_TOP", BeamPattern.uniform(16, -15.0, 5.0, 300, rpm=600, max_range_m=60.0,
                                                   start_azimuth_rad=math.pi),
                  lidar_mount(0.95, 0.0, 1.85, yaw_deg=-90.0), sensor_id=0),
            Lidar("LIDAR_FRONT", BeamPattern.uniform(8, -20.0, 4.0, 200, rpm=600, max_range_m=60.0,
                                                     clockwise=False),
                  lidar_mount(3.7, 0.2, 0.75, yaw_deg=10.0, pitch_deg=5.0, roll_deg=2.0), sensor_id=1),
        )
        pin = CameraIntrinsics(192, 108, 120.0, 120.0, 95.5, 53.5)
        fish = CameraIntrinsics(320, 240, 100.0, 100.0, 159.5, 119.5, model="kannala_brandt",
                                distortion=(0.02, -0.005, 0.001, 0.0), max_fov_rad=math.radians(190.0))
        cameras = (
            Camera("CAM_FRONT", pin, camera_mount(1.7, 0.0, 1.55, 0.0)),
            Camera("CAM_BACK", pin, camera_mount(-1.0, 0.0, 1.55, 180.0, 5.0), shutter="rolling",
                   row_readout_ns=200_000),
            Camera("CAM_LEFT_FISHEYE", fish, camera_mount(1.0, 0.9, 1.0, 90.0, 15.0)),
        )
        return lidars, cameras
    raise ValueError(f"preset must be 'test' or 'road', got {preset!r}")


def radar_rig(preset: Preset) -> tuple[Radar, ...]:
    """The radars of a preset: a front radar in the bumper (``"test"``: 91 rays over 90°,
    100 m; ``"road"``: 181 rays over 120°, 150 m), ``"road"`` also a rear one."""
    if preset == "test":
        return (Radar("RADAR_FRONT", lidar_mount(3.8, 0.0, 0.5)),)
    if preset == "road":
        wide: dict[str, Any] = dict(fov_rad=math.radians(120.0), n_rays=181, max_range_m=150.0)
        return (Radar("RADAR_FRONT", lidar_mount(3.8, 0.0, 0.5), **wide),
                Radar("RADAR_BACK", lidar_mount(-1.0, 0.0, 0.5, yaw_deg=180.0), **wide))
    raise ValueError(f"preset must be 'test' or 'road', got {preset!r}")


# ---------------------------------------------------------------- the street


@dataclass(frozen=True, eq=False)
class _Centerline:
    """The road centre as arc length → (x, y, heading); straight beyond the driven part."""

    s: np.ndarray
    xy: np.ndarray
    heading: np.ndarray

    def at(self, s: np.ndarray, lateral_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Points ``(M, 2)`` at arc lengths ``s`` offset ``lateral_m`` to the left, and headings."""
        x = np.interp(s, self.s, self.xy[:, 0])
        y = np.interp(s, self.s, self.xy[:, 1])
        h = np.interp(s, self.s, self.heading)
        return np.column_stack([x - lateral_m * np.sin(h), y + lateral_m * np.cos(h)]), h


def _centerline(traj: EgoTrajectory, ego_s0_m: float, behind_m: float, ahead_m: float) -> _Centerline:
    xy = traj.world_from_ego.translation[:, :2]
    heading = quat.to_euler_zyx(traj.world_from_ego.rotation)[:, 2]
    heading = np.unwrap(heading)
    seg = np.linalg.norm(np.diff(xy, axis=0), axis=1)
    keep = np.concatenate([[True], seg > 1e-9])  # drop repeated points while standing still
    xy, heading = xy[keep], heading[keep]
    s = ego_s0_m + np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(xy, axis=0), axis=1))])
    d0 = np.array([math.cos(heading[0]), math.sin(heading[0])])
    d1 = np.array([math.cos(heading[-1]), math.sin(heading[-1])])
    start = xy[0] - behind_m * d0
    end = xy[-1] + ahead_m * d1
    return _Centerline(
        np.concatenate([[ego_s0_m - behind_m], s, [s[-1] + ahead_m]]),
        np.vstack([start, xy, end]),
        np.concatenate([[heading[0]], heading, [heading[-1]]]),
    )


def _clear_of_road(line: _Centerline, center: np.ndarray, half: np.ndarray, yaw: float, clearance: float) -> bool:
    """True if the box footprint stays ``clearance`` m away from the centreline."""
    d = line.xy - center[:2]
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.column_stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]])
    gap = np.linalg.norm(np.maximum(np.abs(local) - half[:2], 0.0), axis=1)
    return bool(gap.min() >= clearance)


def _street(rng: np.random.Generator, line: _Centerline, keyframes_ns: np.ndarray, start_ns: int,
            ego_s0_m: float) -> World:
    """Buildings, poles, cars and pedestrians along ``line``."""
    centers, sizes, yaws, cats, refl = [], [], [], [], []
    s_lo, s_hi = line.s[0], line.s[-1]

    def place(kind: str, s: float, lateral: float, size: np.ndarray, clearance: float, r: float) -> None:
        p, h = line.at(np.array([s]), lateral)
        center = np.array([p[0, 0], p[0, 1], 0.5 * size[2]])
        if _clear_of_road(line, center, 0.5 * size, float(h[0]), clearance):
            centers.append(center)
            sizes.append(size)
            yaws.append(float(h[0]))
            cats.append(kind)
            refl.append(r)

    for side in (1.0, -1.0):
        s = s_lo + rng.uniform(0, 10)
        while s < s_hi:  # buildings: 8..22 m long, 8..14 m deep, 5..25 m tall, 11.5..15 m from the centre
            size = np.array([rng.uniform(8, 22), rng.uniform(8, 14), rng.uniform(5, 25)])
            place("building", s + 0.5 * size[0], side * (rng.uniform(11.5, 15.0) + 0.5 * size[1]), size, 8.0,
                  rng.uniform(0.4, 0.8))
            s += size[0] + rng.uniform(1, 12)
        s = s_lo + rng.uniform(0, 20)
        while s < s_hi:  # poles
            place("pole", s, side * 6.5, np.array([0.3, 0.3, rng.uniform(4, 7)]), 5.5, 0.9)
            s += rng.uniform(18, 30)

    n_static = len(centers)
    t_s = (keyframes_ns - start_ns) * 1e-9
    a_center, a_yaw, a_size = [], [], []

    def drive(kind: str, s0: float, v: float, lateral: float, size: np.ndarray, r: float) -> None:
        s = np.clip(s0 + v * t_s, s_lo, s_hi)
        p, h = line.at(s, lateral)
        a_center.append(np.column_stack([p, np.full(len(s), 0.5 * size[2])]))
        a_yaw.append(h + (math.pi if v < 0 else 0.0))
        a_size.append(size)
        cats.append(kind)
        refl.append(r)

    for _ in range(4):  # oncoming cars, left lane
        car = np.array([rng.uniform(4.0, 5.2), rng.uniform(1.8, 2.0), rng.uniform(1.4, 1.9)])
        drive("car", ego_s0_m + rng.uniform(15, 110), -rng.uniform(8, 14), LANE_WIDTH_M, car, rng.uniform(0.3, 0.9))
    for _ in range(3):  # same direction, right lane
        car = np.array([rng.uniform(4.0, 5.2), rng.uniform(1.8, 2.0), rng.uniform(1.4, 1.9)])
        drive("car", ego_s0_m + rng.uniform(-25, 60), rng.uniform(8, 16), -LANE_WIDTH_M, car, rng.uniform(0.3, 0.9))
    for _ in range(6):  # pedestrians on both sidewalks
        side = 1.0 if rng.random() < 0.5 else -1.0
        ped = np.array([rng.uniform(0.5, 0.7), rng.uniform(0.5, 0.7), rng.uniform(1.55, 1.9)])
        speed = rng.uniform(0.8, 1.6) * (1.0 if rng.random() < 0.5 else -1.0)
        drive("pedestrian", ego_s0_m + rng.uniform(-10, 50), speed, side * 8.5, ped, 0.4)

    n = 1 + n_static + len(a_size)
    colors = rng.integers(30, 256, size=(n, 3), dtype=np.uint8)
    colors[0] = GROUND_RGB
    objects = ObjectTable(("ground", *cats), colors, np.array([0.2, *refl], dtype=np.float32))
    return World(
        np.array(centers).reshape(-1, 3), np.array(sizes).reshape(-1, 3), np.array(yaws),
        int(keyframes_ns[0]), ACTOR_DT_NS,
        np.array(a_center).reshape(len(a_size), len(keyframes_ns), 3),
        np.array(a_yaw).reshape(len(a_size), len(keyframes_ns)),
        np.array(a_size).reshape(-1, 3), objects, np.array(SKY_RGB),
    )


# ---------------------------------------------------------------- the drive


@dataclass(frozen=True, eq=False)
class Drive:
    """A simulated drive and its ground truth.

    Attributes:
        seed, preset: what produced it.
        start_ns, end_ns: the drive's time range (``int64`` ns).
        trajectory: true ego motion (``world_from_ego`` pose track at 1 kHz, speed, yaw rate).
        world: ground plane, static boxes, actors; ``world.objects`` is the object table.
        lidars: the LiDARs (name, beam pattern, ``ego_from_lidar``, sensor id).
        frame_times_ns: ``(F,) int64`` sweep start times (10 Hz).
        sweeps: per LiDAR name, ``F`` sweeps in the LiDAR frame (see :func:`simulate_sweep`).
        cameras: the cameras; render with :meth:`render`.
        gnss: GNSS/INS pose samples ``world_from_ego`` (100 Hz, noisy if asked).
        static_tracks, actor_tracks: world-frame cuboid tracks, track id = object id.
        radars: the radars; radar_sweeps: per radar name, ``F`` scans in the radar frame, scan
            ``i`` at ``frame_times_ns[i] + radar.time_offset_ns`` (:func:`simulate_radar_sweep`).
    """

    seed: int
    preset: str
    start_ns: int
    end_ns: int
    trajectory: EgoTrajectory
    world: World
    lidars: tuple[Lidar, ...]
    frame_times_ns: np.ndarray
    sweeps: dict[str, tuple[Sweep, ...]]
    cameras: tuple[Camera, ...]
    gnss: PoseTrack
    static_tracks: tuple[CuboidTrack, ...]
    actor_tracks: tuple[CuboidTrack, ...]
    radars: tuple[Radar, ...] = ()
    radar_sweeps: dict[str, tuple[RadarSweep, ...]] = field(default_factory=dict)

    @property
    def world_from_ego(self) -> PoseTrack:
        """The true ego pose track."""
        return self.trajectory.world_from_ego

    @property
    def objects(self) -> ObjectTable:
        return self.world.objects

    def lidar(self, name: str) -> Lidar:
        for lidar in self.lidars:
            if lidar.name == name:
                return lidar
        raise ValueError(f"no LiDAR {name!r}; have {[l.name for l in self.lidars]}")

    def camera(self, name: str) -> Camera:
        for cam in self.cameras:
            if cam.name == name:
                return cam
        raise ValueError(f"no camera {name!r}; have {[c.name for c in self.cameras]}")

    def render(self, camera_name: str, time_ns: int) -> RenderedImage:
        """Render camera ``camera_name`` exposed at ``time_ns`` (within the drive)."""
        return render_camera(self.world, self.world_from_ego, self.camera(camera_name), time_ns)


def simulate_drive(
    seed: int = 0,
    duration_s: float = 2.0,
    preset: Preset = "test",
    start_ns: int = DEFAULT_START_NS,
    trajectory: TrajectoryConfig | None = None,
    gnss_rate_hz: float = 100.0,
    gnss_position_sigma_m: float = 0.0,
    gnss_attitude_sigma_rad: float = 0.0,
    lidars: tuple[Lidar, ...] | None = None,
    radars: tuple[Radar, ...] | None = None,
) -> Drive:
    """Simulate a drive of ``duration_s`` seconds (at least one 10 Hz sweep).

    Everything is a deterministic function of the arguments: the trajectory, the world,
    range noise and GNSS noise are drawn from ``seed``. ``lidars`` replaces the preset's
    LiDARs (e.g. with patterns of real sensor models); the cameras stay the preset's.
    ``radars`` replaces the preset's radars (:func:`radar_rig`; ``()`` for none).
    """
    if not (math.isfinite(duration_s) and duration_s * 1e9 >= FRAME_PERIOD_NS):
        raise ValueError(f"duration_s must be at least {FRAME_PERIOD_NS * 1e-9} s, got {duration_s}")
    preset_lidars, cameras = rig(preset)
    if lidars is None:
        lidars = preset_lidars
    elif len(lidars) == 0 or len({l.name for l in lidars}) != len(lidars):
        raise ValueError(f"lidars must be a non-empty tuple with unique names, got {[l.name for l in lidars]}")
    lidars = tuple(lidars)
    cfg = trajectory or TrajectoryConfig()
    traj = ego_trajectory(seed, duration_s, start_ns, cfg)
    end_ns = int(start_ns + round(duration_s * 1e9))
    reach = max(l.pattern.max_range_m for l in lidars) + 60.0
    ego_s0 = 0.0
    line = _centerline(traj, ego_s0, behind_m=reach + 16.0 * duration_s, ahead_m=reach + 16.0 * duration_s)
    n_key = int(math.ceil((traj.world_from_ego.end_ns - start_ns) / ACTOR_DT_NS)) + 1
    keyframes = start_ns + np.arange(n_key, dtype=np.int64) * ACTOR_DT_NS
    world = _street(np.random.default_rng(np.random.SeedSequence([int(seed), 0x5717])), line, keyframes,
                    start_ns, ego_s0)
    n_frames = int((end_ns - start_ns) // FRAME_PERIOD_NS)
    frames = start_ns + np.arange(n_frames, dtype=np.int64) * FRAME_PERIOD_NS
    sweeps = {
        l.name: tuple(simulate_sweep(world, traj.world_from_ego, l, int(t), seed) for t in frames) for l in lidars
    }
    radars = radar_rig(preset) if radars is None else tuple(radars)
    radar_sweeps = {r.name: tuple(simulate_radar_sweep(world, traj.world_from_ego, r, int(t) + r.time_offset_ns)
                                  for t in frames) for r in radars}
    gnss = gnss_track(traj.world_from_ego, gnss_rate_hz, gnss_position_sigma_m, gnss_attitude_sigma_rad, seed)
    static_tracks, actor_tracks = world.cuboid_tracks()
    return Drive(int(seed), preset, int(start_ns), end_ns, traj, world, lidars, frames, sweeps, cameras, gnss,
                 tuple(static_tracks), tuple(actor_tracks), radars, radar_sweeps)
