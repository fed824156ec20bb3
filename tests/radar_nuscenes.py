"""nuScenes radar data for the radar tests and benchmark: files in the devkit's 18-field layout
(written here from the devkit's ``RadarPointCloud.from_file`` docstring, not from
``formats.radar``), a DATAROOT of radar sweeps the devkit loads, and the inputs
``engine.radar.radar_multisweep`` takes, read from its tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine import quaternion as quat
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.export_nuscenes import NuScenesSensorFiles, nuscenes_tables, us_from_ns, write_nuscenes

FIELDS = ("x", "y", "z", "dyn_prop", "id", "rcs", "vx", "vy", "vx_comp", "vy_comp", "is_quality_valid", "ambig_state",
          "x_rms", "y_rms", "invalid_state", "pdh0", "vx_rms", "vy_rms")
SIZES = "4 4 4 1 2 4 4 4 4 4 1 1 1 1 1 1 1 1"
TYPES = "F F F I I F F F F F I I I I I I I I"
DTYPE = np.dtype([(f, f"<{t.lower()}{s}") for f, s, t in zip(FIELDS, SIZES.split(), TYPES.split())])
T0 = 1_532_402_927_000_000_000
VERSION = "v1.0-radar"


def devkit_pcd(path: Path, rec: np.ndarray) -> Path:
    """``rec`` (DTYPE) as a binary PCD with the devkit's header lines (and a trailing newline)."""
    head = (f"# .PCD v0.7 - Point Cloud Data file format\nVERSION 0.7\nFIELDS {' '.join(FIELDS)}\n"
            f"SIZE {SIZES}\nTYPE {TYPES}\nCOUNT {' '.join(['1'] * 18)}\nWIDTH {len(rec)}\n"
            f"HEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(rec)}\nDATA binary\n")
    path.write_bytes(head.encode() + rec.tobytes() + b"\n")
    return path


def random_records(n: int, seed: int, near: int = 0) -> np.ndarray:
    """Clusters out to 200 m of every state (most valid and unambiguous), the first ``near``
    within 1 m of the sensor in x and y."""
    rng = np.random.default_rng(seed)
    rec = np.zeros(n, DTYPE)
    rec["x"], rec["y"], rec["z"] = rng.uniform(-5, 200, n), rng.uniform(-60, 60, n), rng.uniform(-1, 1, n)
    rec["x"][:near], rec["y"][:near] = rng.uniform(-0.9, 0.9, (2, near))
    for f in ("rcs", "vx", "vy", "vx_comp", "vy_comp"):
        rec[f] = rng.normal(0, 8, n)
    rec["id"] = np.arange(n)
    for f, hi in (("dyn_prop", 8), ("is_quality_valid", 2), ("ambig_state", 5), ("x_rms", 32), ("y_rms", 32),
                  ("invalid_state", 18), ("pdh0", 8), ("vx_rms", 32), ("vy_rms", 32)):
        rec[f] = rng.integers(0, hi, n)
    rec["invalid_state"][rng.random(n) < 0.6] = 0
    rec["ambig_state"][rng.random(n) < 0.6] = 3
    return rec


def write_radar_dataroot(root: Path, samples: int, points: int) -> Path:
    """A DATAROOT (tables in :data:`VERSION`) of ``samples`` 10 Hz samples: LIDAR_TOP (no files;
    the reference channel) and a RADAR_FRONT scan 37 ms after each of ``points`` random clusters
    (4 of them close to the sensor); the ego 600-1600 m from the origin, turning."""
    frames = T0 + np.arange(samples, dtype=np.int64) * 100_000_000
    k = np.arange(10 * samples + 10)
    track = PoseTrack(T0 - 50_000_000 + k * 10_000_000, quat.from_yaw(0.3 + 0.01 * k),
                      np.column_stack([612.0 + 1.5 * k, 1640.0 + 0.2 * k, 0.1 * np.sin(k / 9)]))
    files = []
    for i, t in enumerate(frames + 37_000_000):
        name = f"samples/RADAR_FRONT/x__RADAR_FRONT__{us_from_ns(t)}.pcd"
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        devkit_pcd(root / name, random_records(points, 10 + i, near=4))
        files.append((name, int(t)))
    sensors = [NuScenesSensorFiles("LIDAR_TOP", SE3(quat.from_yaw(-np.pi / 2), np.array([0.9, 0.0, 1.8])),
                                   [(f"samples/LIDAR_TOP/x__{us_from_ns(t)}.pcd.bin", int(t)) for t in frames]),
               NuScenesSensorFiles("RADAR_FRONT", SE3(quat.from_yaw(0.03), np.array([3.4, 0.1, 0.6])), files,
                                   radar=True)]
    write_nuscenes(root, VERSION, nuscenes_tables([], frames, track, sensors))
    return root


def chain_inputs(nusc, sample: dict, channel: str, ref_channel: str) -> tuple:
    """What ``radar_multisweep`` takes, from the tables as the devkit walks them: the sweeps'
    file names newest first (the ``prev`` chain), their ego poses and extrinsics as ``(K,)``
    SE3, the reference sample_data's ego pose, extrinsic and time (ns)."""
    def pose(rec: dict) -> SE3:
        return SE3(np.array(rec["rotation"]), np.array(rec["translation"]))

    def stack(poses: list[SE3]) -> SE3:
        return SE3(np.stack([p.rotation for p in poses]), np.stack([p.translation for p in poses]))

    ref = nusc.get("sample_data", sample["data"][ref_channel])
    chain, sd = [], nusc.get("sample_data", sample["data"][channel])
    while True:
        chain.append(sd)
        if not sd["prev"]:
            break
        sd = nusc.get("sample_data", sd["prev"])
    return ([c["filename"] for c in chain], stack([pose(nusc.get("ego_pose", c["ego_pose_token"])) for c in chain]),
            stack([pose(nusc.get("calibrated_sensor", c["calibrated_sensor_token"])) for c in chain]),
            pose(nusc.get("ego_pose", ref["ego_pose_token"])),
            pose(nusc.get("calibrated_sensor", ref["calibrated_sensor_token"])), ref["timestamp"] * 1000)
