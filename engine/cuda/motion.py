"""Per-point motion compensation on the GPU: :func:`engine.motion.motion_compensate`'s chain.

One thread per point: the ego pose at the point's own firing time (slerp + lerp of the track,
``engine.pose_track.pose_at``), composed with the mount and the reference pose into
``[R | b]`` (``engine.motion._chain``) and applied. That is the CPU kernel's exact path at
every point; the CPU's tabulated path (within ``max_error_m``, 1 µm by default) is not used:
a GPU can afford the exact slerp.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from numba import cuda

from engine import motion as _motion
from engine import pose_track as _pose_track
from engine.cuda._jit import device, kernel, launch, workspace
from engine.pose_track import PoseTrack, interval_table
from engine.se3 import SE3

pose_at = device(_pose_track.pose_at)
_chain = device(_motion._chain)


@kernel
def _compensate(xyz, times, ts, q, t, q1, theta, inv_sin, mode, ext_q, ext_t, ref_q, ref_t, out_frame, out):
    """``out[i] = [R | b](times[i]) · xyz[i]`` (the CPU kernel's ``_apply_run`` arithmetic)."""
    i = cuda.grid(1)
    if i >= xyz.shape[0]:
        return
    w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, times[i], mode)
    m = cuda.local.array((3, 4), numba.float64)
    _chain(w, x, y, z, tx, ty, tz, ext_q, ext_t, ref_q, ref_t, out_frame, m)
    px = float(xyz[i, 0])
    py = float(xyz[i, 1])
    pz = float(xyz[i, 2])
    for r in range(3):
        out[i, r] = m[r, 0] * px + m[r, 1] * py + m[r, 2] * pz + m[r, 3]


class DeviceTrack:
    """A pose track's arrays and slerp tables (``interval_table``) on the device."""

    def __init__(self, track: PoseTrack, prefix: str) -> None:
        ws = workspace()
        q1, theta, inv_sin = interval_table(track.rotation)
        self.host = (track.timestamps_ns, track.rotation, track.translation, q1, theta, inv_sin)
        self.arrays = tuple(ws.upload(f"{prefix}.track{k}", a) for k, a in enumerate(self.host))


def launch_compensate(xyz_dev: Any, times_dev: Any, track: DeviceTrack, mode: int, ego_from_sensor: SE3,
                      ref_time: int, out_frame: int, out_dev: Any, prefix: str) -> None:
    """Queue the kernel on the thread's stream: ``xyz_dev (N, 3)`` float32/64 sensor points
    fired at ``times_dev (N,) int64`` into ``out_dev (N, 3)`` (frame code of
    ``engine.motion._OUT_FRAME``; ``ref_time`` int64 ns, unused for the world frame)."""
    ws = workspace()
    ref = np.zeros(7)
    if out_frame != 2:
        ref[:] = pose_at(*track.host, np.int64(ref_time), mode)
    ext = ws.upload(f"{prefix}.ext", np.concatenate([ego_from_sensor.rotation, ego_from_sensor.translation]))
    ref_dev = ws.upload(f"{prefix}.ref", ref)
    launch(_compensate, xyz_dev.shape[0], xyz_dev, times_dev, *track.arrays, mode, ext[:4], ext[4:], ref_dev[:4],
           ref_dev[4:], out_frame, out_dev)


def compensate(p: np.ndarray, times: np.ndarray, track: PoseTrack, mode: int, ego_from_sensor: SE3,
               ref_time: int, out_frame: int, out: np.ndarray) -> np.ndarray:
    """:func:`engine.motion.motion_compensate` on the GPU, arguments checked by it: ``p (N, 3)``
    float32/64, ``times (N,) int64``, ``out (N, 3)`` (filled and returned)."""
    ws = workspace()
    xyz_dev = ws.upload("motion.xyz", p)
    times_dev = ws.upload("motion.times", times)
    out_dev = ws.device("motion.out", out.shape, out.dtype)
    launch_compensate(xyz_dev, times_dev, DeviceTrack(track, "motion"), mode, ego_from_sensor, ref_time,
                      out_frame, out_dev, "motion")
    host = ws.download("motion.out", out_dev)
    ws.sync()
    out[...] = host
    return out
