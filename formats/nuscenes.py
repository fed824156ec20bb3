"""nuScenes LiDAR ``.pcd.bin`` sweeps: N × (x, y, z, intensity, ring) little-endian float32.

The sweep timestamp is taken from the file name when it ends in ``__<microseconds>.pcd.bin``
(the nuScenes naming), else from the ``timestamp_ns`` option.
"""

from __future__ import annotations

import os
import re

import numpy as np

from engine.sweep import Sweep
from formats.errors import FormatError
from formats.kitti import read_float_records

_STAMP = re.compile(r"__(\d+)\.pcd\.bin$")


def read_nuscenes_pcd_bin(path: str | os.PathLike, *, timestamp_ns: int | None = None, drop_nan: bool = False) -> Sweep:
    """Read a nuScenes ``.pcd.bin`` sweep (``frame="lidar"``; ``ring`` as uint16).

    Args:
        timestamp_ns: overrides the timestamp from the file name (0 if neither).
        drop_nan: drop points whose x, y or z is not finite.
    """
    rec = read_float_records(path, 5)
    ring = rec[:, 4]
    if ring.size and not (np.array_equal(ring, np.round(ring)) and ring.min() >= 0 and ring.max() <= 65535):
        bad = int(np.argmax((ring != np.round(ring)) | (ring < 0) | (ring > 65535) | ~np.isfinite(ring)))
        raise FormatError(path, bad * 20 + 16, f"an integral ring index in [0, 65535], found {ring[bad]}")
    if drop_nan:
        rec = rec[np.isfinite(rec[:, :3]).all(axis=1)]
        ring = rec[:, 4]
    if timestamp_ns is None:
        m = _STAMP.search(os.fspath(path))
        timestamp_ns = int(m.group(1)) * 1000 if m else 0
    return Sweep(xyz=rec[:, :3], intensity=rec[:, 3], ring=ring, timestamp_ns=timestamp_ns, frame="lidar")


def pcd_bin_bytes(xyz: np.ndarray, intensity: np.ndarray | None = None, ring: np.ndarray | None = None) -> bytes:
    """nuScenes ``.pcd.bin`` bytes: little-endian float32 records ``x y z intensity ring`` of
    ``(N, 3)`` positions (metres, the LiDAR frame) and ``(N,)`` intensity and ring (0 where None)."""
    rec = np.zeros((len(xyz), 5), dtype="<f4")
    rec[:, :3] = xyz
    if intensity is not None:
        rec[:, 3] = intensity
    if ring is not None:
        rec[:, 4] = ring
    return rec.tobytes()


def write_nuscenes_pcd_bin(path: str | os.PathLike, sweep: Sweep) -> None:
    """Write ``xyz``, ``intensity`` and ``ring`` (0 where absent) as nuScenes float32 records."""
    with open(path, "wb") as f:
        f.write(pcd_bin_bytes(sweep.xyz, sweep.intensity, sweep.ring))
