"""The synthetic sensor rig: deterministic (by seed) stand-ins for real drives and surveys.

Each scenario returns its ground truth (true poses, object tracks, which object each
point or pixel hit) beside the simulated sensor data, for tests and the demo.
"""

from engine.sim.camera_render import RenderedImage, render_camera
from engine.sim.gnss import gnss_track
from engine.sim.lidar import BeamPattern, Lidar, simulate_sweep
from engine.sim.radar import Radar, simulate_radar_sweep
from engine.sim.road import Drive, radar_rig, rig, simulate_drive
from engine.sim.trajectory import EgoTrajectory, TrajectoryConfig, ego_trajectory
from engine.sim.world import GROUND_ID, NO_HIT, ObjectTable, World, cast_rays

__all__ = [
    "BeamPattern", "Drive", "EgoTrajectory", "GROUND_ID", "Lidar", "NO_HIT", "ObjectTable", "Radar", "RenderedImage",
    "TrajectoryConfig", "World", "cast_rays", "ego_trajectory", "gnss_track", "radar_rig", "render_camera", "rig",
    "simulate_drive", "simulate_radar_sweep", "simulate_sweep",
]
