"""``fathom simulate``: the synthetic rig written out as a raw log (formats.raw_log layout)."""

from __future__ import annotations

import os
from pathlib import Path

from engine.sim.road import Drive, simulate_drive
from engine.sweep import Sweep
from formats.jpeg import encode_jpeg
from formats.pcd import write_pcd
from formats.raw_log import LogLidar, write_log_manifest, write_pose_table
from formats.scene_store import SceneOrigin

# Cameras expose halfway through each 10 Hz sweep, as on most AV rigs (synced to the
# LiDAR pointing forward).
EXPOSURE_OFFSET_NS = 50_000_000


def write_road_log(
    log_dir: str | os.PathLike,
    *,
    seed: int = 0,
    duration_s: float = 2.0,
    preset: str = "test",
    cameras: bool = True,
) -> Path:
    """Simulate a drive (``engine.sim.road.simulate_drive``) and write it as a raw log."""
    drive = simulate_drive(seed=seed, duration_s=duration_s, preset=preset)
    return write_drive_log(log_dir, drive, cameras=cameras)


def write_drive_log(log_dir: str | os.PathLike, drive: Drive, *, cameras: bool = True,
                    jpeg_quality: int = 92) -> Path:
    """Write a simulated drive as a raw log: its GNSS/INS poses, one binary PCD per sweep
    (sensor frame, per-point ``time_offset_ns``, no ground-truth columns), one JPEG per camera
    and frame exposed :data:`EXPOSURE_OFFSET_NS` after the sweep start."""
    root = Path(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_pose_table(root, drive.gnss)
    frames = []
    for i, t in enumerate(drive.frame_times_ns):
        entry = {"timestamp_ns": int(t), "lidar": {}, "images": {}}
        for lidar in drive.lidars:
            rel = f"lidar/{lidar.name}/{i:06d}.pcd"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            sweep = drive.sweeps[lidar.name][i]
            write_pcd(root / rel, _core(sweep), encoding="binary")
            entry["lidar"][lidar.name] = rel
        if cameras:
            for cam in drive.cameras:
                t_img = int(t) + EXPOSURE_OFFSET_NS
                rel = f"camera/{cam.name}/{i:06d}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encode_jpeg(drive.render(cam.name, t_img).rgb, quality=jpeg_quality))
                entry["images"][cam.name] = {"path": rel, "timestamp_ns": t_img}
        frames.append(entry)
    write_log_manifest(
        root, log_id=f"road-{drive.seed}", origin=SceneOrigin(),
        lidars=[LogLidar(l.name, l.sensor_id, l.ego_from_lidar, "pcd") for l in drive.lidars],
        cameras=list(drive.cameras) if cameras else [], frames=frames,
    )
    return root


def _core(sweep: Sweep) -> Sweep:
    """The sweep without its ground-truth extra columns (a real sensor has none)."""
    return Sweep(sweep.xyz, sweep.timestamp_ns, sweep.intensity, sweep.time_offset_ns, sweep.ring,
                 sweep.return_index, sweep.sensor_id, frame=sweep.frame)
