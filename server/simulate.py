"""``fathom simulate``: the synthetic rigs written out as raw logs (formats.raw_log layout).

- Road (:func:`write_road_log`, :func:`write_drive_log`): GNSS/INS poses, LiDAR sweeps as
  per-frame PCDs or as one Velodyne pcap per LiDAR (``lidar_format="pcap"``, with the rig's
  LiDARs replaced by VLP-16 / HDL-32E beam patterns, :func:`velodyne_rig`), radar scans as
  nuScenes radar PCDs, camera JPEGs, and the true object tracks as ``labels.json`` keyframed
  at 1 Hz.
- Harbor (:func:`write_harbor_log`): the survey vessel's multibeam as one KMALL file
  (``#SKM`` attitude/position, ``#MRZ`` pings), frames of one second of pings, the wreck as a
  label; with ``hydrophones=True`` also the hull ring array's recording of two passing ships
  (``acoustic/HULL.wav``, 24-bit, gain :data:`HYDROPHONE_GAIN_DB`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal

import numpy as np

from engine import quaternion as quat
from engine.cuboid import CuboidTrack
from engine.se3 import SE3
from engine.sim.lidar import BeamPattern, Lidar
from engine.sim.road import FRAME_PERIOD_NS, Drive, Preset, rig, simulate_drive
from engine.sim.vessel import MBES_LEVER_ARM_M, VesselRun, simulate_passive, simulate_survey
from engine.sweep import Sweep
from formats.hydrophone import ArrayMount, HydrophoneArray, write_hydrophone
from formats.jpeg import encode_jpeg
from formats.kmall import MrzPings, SkmSamples, write_kmall
from formats.pcap import udp_pcap_bytes
from formats.pcd import write_pcd
from formats.radar import LogRadar, write_nuscenes_radar
from formats.raw_log import LogLidar, write_labels, write_log_manifest, write_pose_table
from formats.scene_store import SceneOrigin
from formats.velodyne import Firings, get_model, velodyne_packets

# Cameras expose halfway through each 10 Hz sweep, as on most AV rigs (synced to the
# LiDAR pointing forward).
EXPOSURE_OFFSET_NS = 50_000_000
LABEL_PERIOD_NS = 1_000_000_000  # labels.json keyframes: 1 Hz (and the last frame)
LABEL_CATEGORIES = ("car", "pedestrian", "pole")  # buildings are scenery, not labelled
VELODYNE_MODELS = {"LIDAR_TOP": "HDL-32E", "LIDAR_FRONT": "VLP-16"}
VELODYNE_MAX_RANGE_M = 100.0
HARBOR_FRAME_PERIOD_NS = 1_000_000_000
HYDROPHONE_GAIN_DB = 12.0  # recorded = pressure × 10^(gain/20), every element
LidarFormat = Literal["pcd", "pcap"]


# ---------------------------------------------------------------- road


def velodyne_pattern(model: str, *, rpm: float = 600.0, max_range_m: float = VELODYNE_MAX_RANGE_M,
                     start_azimuth_rad: float = math.pi) -> BeamPattern:
    """The beam pattern of a Velodyne model (``formats.velodyne.MODELS``, single-bank): its
    lasers' elevations and azimuth offsets in laser-id order, firing offsets within a
    sequence and sequence period from the model's timing table, clockwise spin at ``rpm``.
    Sweeps start at ``start_azimuth_rad`` (π: behind the sensor, where the decoder cuts).
    The simulated lasers share one origin (no per-laser vertical offset)."""
    table = get_model(model).beam_table()
    return BeamPattern(table.elevation_rad, table.azimuth_offset_rad, table.firing_offset_ns,
                       table.sequence_period_ns, int(round(60e9 / rpm)), max_range_m,
                       start_azimuth_rad=start_azimuth_rad, clockwise=True)


def velodyne_rig(preset: Preset) -> tuple[Lidar, ...]:
    """The preset's LiDARs (names, mounts, sensor ids) with :data:`VELODYNE_MODELS` patterns."""
    lidars, _ = rig(preset)
    return tuple(Lidar(l.name, velodyne_pattern(VELODYNE_MODELS[l.name]), l.ego_from_lidar, l.sensor_id)
                 for l in lidars)


def write_road_log(
    log_dir: str | os.PathLike,
    *,
    seed: int = 0,
    duration_s: float = 2.0,
    preset: Preset = "test",
    cameras: bool = True,
    lidar_format: LidarFormat = "pcd",
) -> Path:
    """Simulate a drive (``engine.sim.road.simulate_drive``; with ``lidar_format="pcap"`` on the
    :func:`velodyne_rig`) and write it as a raw log."""
    if lidar_format not in ("pcd", "pcap"):
        raise ValueError(f"lidar_format must be 'pcd' or 'pcap', got {lidar_format!r}")
    lidars = velodyne_rig(preset) if lidar_format == "pcap" else None
    drive = simulate_drive(seed=seed, duration_s=duration_s, preset=preset, lidars=lidars)
    return write_drive_log(log_dir, drive, cameras=cameras, lidar_format=lidar_format)


def write_drive_log(log_dir: str | os.PathLike, drive: Drive, *, cameras: bool = True,
                    jpeg_quality: int = 92, lidar_format: LidarFormat = "pcd") -> Path:
    """Write a simulated drive as a raw log: its GNSS/INS poses; per LiDAR one binary PCD per
    sweep (sensor frame, per-point ``time_offset_ns``, no ground-truth columns) or, with
    ``lidar_format="pcap"``, one Velodyne pcap for the whole log (:func:`write_velodyne_stream`;
    the LiDARs must have Velodyne patterns, :func:`velodyne_rig`); one JPEG per camera and
    frame exposed :data:`EXPOSURE_OFFSET_NS` after the sweep start; per radar one nuScenes radar
    PCD per scan (:func:`write_radar_scans`); ``labels.json`` with the true tracks
    (:func:`drive_labels`)."""
    if lidar_format not in ("pcd", "pcap"):
        raise ValueError(f"lidar_format must be 'pcd' or 'pcap', got {lidar_format!r}")
    root = Path(log_dir)
    root.mkdir(parents=True, exist_ok=True)
    write_pose_table(root, drive.gnss)
    frames = [{"timestamp_ns": int(t), "lidar": {}, "images": {}} for t in drive.frame_times_ns]
    log_lidars = []
    for lidar in drive.lidars:
        if lidar_format == "pcap":
            model = _velodyne_model_of(lidar)
            rel = f"lidar/{lidar.name}.pcap"
            cal_rel = f"lidar/{lidar.name}.yaml"
            write_velodyne_stream(root / rel, drive, lidar, model)
            write_calibration_yaml(root / cal_rel, model)
            log_lidars.append(LogLidar(lidar.name, lidar.sensor_id, lidar.ego_from_lidar, "velodyne_pcap",
                                       Path(rel), model, Path(cal_rel)))
            for entry in frames:
                t = entry["timestamp_ns"]
                entry["lidar"][lidar.name] = {"start_ns": t, "end_ns": t + FRAME_PERIOD_NS}
            continue
        log_lidars.append(LogLidar(lidar.name, lidar.sensor_id, lidar.ego_from_lidar, "pcd"))
        for i, entry in enumerate(frames):
            rel = f"lidar/{lidar.name}/{i:06d}.pcd"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            write_pcd(root / rel, _core(drive.sweeps[lidar.name][i]), encoding="binary")
            entry["lidar"][lidar.name] = rel
    if cameras:
        for i, (t, entry) in enumerate(zip(drive.frame_times_ns, frames)):
            for cam in drive.cameras:
                t_img = int(t) + EXPOSURE_OFFSET_NS
                rel = f"camera/{cam.name}/{i:06d}.jpg"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                (root / rel).write_bytes(encode_jpeg(drive.render(cam.name, t_img).rgb, quality=jpeg_quality))
                entry["images"][cam.name] = {"path": rel, "timestamp_ns": t_img}
    log_radars = write_radar_scans(root, drive, frames)
    labels = write_labels(root, drive_labels(drive))
    write_log_manifest(
        root, log_id=f"road-{drive.seed}", origin=SceneOrigin(), lidars=log_lidars,
        cameras=list(drive.cameras) if cameras else [], frames=frames, labels=labels.name, radars=log_radars,
    )
    return root


def write_radar_scans(root: Path, drive: Drive, frames: list[dict]) -> list[LogRadar]:
    """Each radar scan of the drive as ``radar/NAME/NNNNNN.pcd`` in nuScenes' radar layout
    (sensor frame; ``vx vy`` the measured radial velocity, ``vx_comp vy_comp`` the true
    compensated one, the states :data:`formats.radar.WRITE_DEFAULTS`), named with its own time
    in ``frames[i]["radar"]``; returns the log's radar entries."""
    for radar in drive.radars:
        for i, (scan, entry) in enumerate(zip(drive.radar_sweeps[radar.name], frames)):
            rel = f"radar/{radar.name}/{i:06d}.pcd"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            write_nuscenes_radar(root / rel, scan, scan.extra["target_radial_velocity_mps"])
            entry.setdefault("radar", {})[radar.name] = {"path": rel, "timestamp_ns": scan.timestamp_ns}
    return [LogRadar(r.name, r.ego_from_radar, "nuscenes_radar") for r in drive.radars]


def drive_labels(drive: Drive, period_ns: int = LABEL_PERIOD_NS) -> list[CuboidTrack]:
    """The drive's true tracks of :data:`LABEL_CATEGORIES` as an annotator would key them:
    moving objects at the frame times every ``period_ns`` from the first frame plus the last
    frame (the simulator's 10 Hz grid holds every frame time, so these are exact); static
    objects with their one keyframe at the first frame."""
    frames = drive.frame_times_ns
    t0, t1 = int(frames[0]), int(frames[-1])
    want = np.unique(np.append(np.arange(t0, t1 + 1, period_ns, dtype=np.int64), t1))
    out = [t for t in drive.static_tracks if t.category in LABEL_CATEGORIES]
    for t in drive.actor_tracks:
        if t.category not in LABEL_CATEGORIES:
            continue
        k = np.searchsorted(t.timestamps_ns, want)
        if np.any(k >= len(t.timestamps_ns)) or np.any(t.timestamps_ns[np.minimum(k, len(t) - 1)] != want):
            raise ValueError(f"track {t.track_id}: keyframes do not hold every label time")
        out.append(CuboidTrack(t.track_id, t.category, want, t.centers[k], t.sizes[k], t.rotations[k],
                               stationary=t.stationary, attributes=dict(t.attributes)))
    return out


def _velodyne_model_of(lidar: Lidar) -> str:
    """The Velodyne model whose :func:`velodyne_pattern` ``lidar`` has (ValueError if none)."""
    pat = lidar.pattern
    for name in ("VLP-16", "HDL-32E", "VLP-32C"):
        table = get_model(name).beam_table()
        if (pat.n_beams == len(table.elevation_rad) and pat.sequence_period_ns == table.sequence_period_ns
                and np.array_equal(pat.firing_offset_ns, table.firing_offset_ns)
                and np.allclose(pat.elevation_rad, table.elevation_rad) and pat.clockwise):
            return name
    raise ValueError(f"LiDAR {lidar.name!r} has no Velodyne beam pattern (use server.simulate.velodyne_rig)")


def velodyne_firings(sweep: Sweep, pattern: BeamPattern) -> Firings:
    """One simulated sweep (with its ``range_m`` extra) as Velodyne firing sequences: every
    sequence of the sweep, ranges at the returns (0 = no return), reflectivity the rounded
    intensity, encoder azimuth ``−(spin angle)`` in degrees at each sequence start."""
    s, L = pattern.n_sequences, pattern.n_beams
    seq = sweep.time_offset_ns // pattern.sequence_period_ns
    dist = np.zeros((s, L))
    refl = np.zeros((s, L), np.uint8)
    dist[seq, sweep.ring] = sweep.extra["range_m"]
    refl[seq, sweep.ring] = np.clip(np.rint(sweep.intensity), 0, 255).astype(np.uint8)
    start = np.arange(s, dtype=np.int64) * pattern.sequence_period_ns
    spin = -1.0 if pattern.clockwise else 1.0
    az = pattern.start_azimuth_rad + spin * 2 * math.pi * start / pattern.sweep_period_ns
    return Firings(sweep.timestamp_ns + start, np.degrees(-az) % 360.0, dist, refl)


def write_velodyne_stream(path: str | os.PathLike, drive: Drive, lidar: Lidar, model: str) -> int:
    """All sweeps of ``lidar`` as one Velodyne pcap (nanosecond record times); returns the
    packet count. Each sweep is packed on its own (its last packet padded with empty
    sequences), so a frame's packets are exactly those recorded in its sweep's time span."""
    packets, times = [], []
    for sweep in drive.sweeps[lidar.name]:
        p, t = velodyne_packets(velodyne_firings(sweep, lidar.pattern), model)
        packets.append(p)
        times.append(t)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(udp_pcap_bytes(np.concatenate(packets), np.concatenate(times), nanosecond=True))
    return sum(len(p) for p in packets)


def write_calibration_yaml(path: str | os.PathLike, model: str) -> Path:
    """The ROS ``velodyne_pointcloud`` calibration of the simulated unit: the model's angles,
    no per-laser offsets (the simulated lasers share one origin)."""
    import yaml

    cal = get_model(model).default_calibration()
    doc = {"num_lasers": cal.n_lasers, "distance_resolution": float(cal.distance_resolution_m),
           "lasers": [{"laser_id": i, "rot_correction": float(r), "vert_correction": float(v),
                       "vert_offset_correction": 0.0, "horiz_offset_correction": 0.0, "dist_correction": 0.0}
                      for i, (r, v) in enumerate(zip(cal.rot_correction, cal.vert_correction))]}
    path = Path(path)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _core(sweep: Sweep) -> Sweep:
    """The sweep without its ground-truth extra columns (a real sensor has none)."""
    return Sweep(sweep.xyz, sweep.timestamp_ns, sweep.intensity, sweep.time_offset_ns, sweep.ring,
                 sweep.return_index, sweep.sensor_id, frame=sweep.frame)


# ---------------------------------------------------------------- harbor


def write_harbor_log(log_dir: str | os.PathLike, *, seed: int = 0, duration_s: float = 10.0, beams: int = 128,
                     ping_rate_hz: float = 2.0, hydrophones: bool = False,
                     hydrophone_snr_db: float = 10.0) -> tuple[Path, VesselRun]:
    """Simulate a survey line (``engine.sim.vessel.simulate_survey``) and write it as a raw log:
    ``sonar/MBES.kmall`` (``#SKM`` + ``#MRZ``) as the pose source and the multibeam, frames of
    :data:`HARBOR_FRAME_PERIOD_NS` of pings, the wreck as a stationary label; with
    ``hydrophones`` the hull array's recording over the same ``duration_s``
    (``engine.sim.vessel.simulate_passive`` at array SNR ``hydrophone_snr_db``, in
    ``run.passive``). Returns the log directory and the run (its ground truth)."""
    num_pings = int(round(duration_s * ping_rate_hz))
    if num_pings < 1:
        raise ValueError(
            f"duration_s * ping_rate_hz must give at least one ping, got {duration_s} s at {ping_rate_hz} Hz")
    run = simulate_survey(seed=seed, num_pings=num_pings, beams=beams, ping_rate_hz=ping_rate_hz)
    root = Path(log_dir)
    rel = "sonar/MBES.kmall"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    write_kmall(root / rel, MrzPings(**run.mrz), SkmSamples(**run.skm))
    ping_ns = np.asarray(run.mrz["time_ns"], np.int64)
    starts = np.arange(int(ping_ns[0]), int(ping_ns[-1]) + 1, HARBOR_FRAME_PERIOD_NS, dtype=np.int64)
    frames = [{"timestamp_ns": int(t),
               "lidar": {"MBES": {"start_ns": int(t), "end_ns": int(t) + HARBOR_FRAME_PERIOD_NS}}, "images": {}}
              for t in starts]
    o = run.origin
    # vessel frame (x fwd, y stbd, z down) lever arm → ego (x fwd, y left, z up)
    mount = SE3(np.array([1.0, 0.0, 0.0, 0.0]), MBES_LEVER_ARM_M * np.array([1.0, -1.0, -1.0]))
    w = run.wreck
    wreck = CuboidTrack("wreck", "wreck", starts[:1], w.centre[None], w.size[None],
                        quat.from_yaw(np.array([w.yaw_rad])), stationary=True)
    labels = write_labels(root, [wreck])
    arrays = []
    if hydrophones:
        run.passive = simulate_passive(seed=seed, duration_s=duration_s, snr_db=hydrophone_snr_db, origin=o)
        p = run.passive
        wav = "acoustic/HULL.wav"
        gain = 10.0 ** (HYDROPHONE_GAIN_DB / 20.0)
        write_hydrophone(root / wav, p.samples * gain, p.sample_rate_hz, subtype="PCM_24")
        arrays.append(HydrophoneArray("HULL", Path(wav), p.start_ns, p.sample_rate_hz,
                                      np.full(len(p.elements_vessel), HYDROPHONE_GAIN_DB),
                                      ArrayMount("hull", p.elements_vessel)))
    write_log_manifest(
        root, log_id=f"harbor-{seed}", origin=SceneOrigin((0.0, 0.0, 0.0), (o.lat_deg, o.lon_deg, o.alt_m)),
        lidars=[LogLidar("MBES", 0, mount, "kmall", Path(rel))], cameras=[], frames=frames, labels=labels.name,
        poses={"kind": "kmall_skm", "path": rel}, hydrophones=arrays,
    )
    return root, run
