"""Projection into every camera on the GPU: :func:`engine.projection.project_points`' kernel.

One thread per point: its source position (``source_point``: the per-point pose where the
points are sensor-frame points of a moving ego), then camera after camera the transform, the
lens of any model and the rolling-shutter re-projection (``project_one``), written
camera-major (``store_projection``) — the helpers of the CPU kernel's general path, which
its pinhole / Brown-Conrady fast path matches operation for operation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import cuda

from engine import projection as _projection
from engine.cuda._jit import device, kernel, launch, workspace
from engine.projection import Projection, ProjectionInputs

source_point = device(_projection.source_point)
project_one = device(_projection.project_one)
store_projection = device(_projection.store_projection)


@kernel
def _project(xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode, models, params, rot,
             trans, ce_q, ce_t, cam_times, row_ns, sizes, n_iter, uv, depth, in_image, cos_view):
    """Point ``i`` into every camera (arguments of :class:`ProjectionInputs`, then outputs)."""
    i = cuda.grid(1)
    if i >= xyz.shape[0]:
        return
    px, py, pz = source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode)
    for c in range(models.shape[0]):
        r = rot[c]
        width = float(sizes[c, 0])
        height = float(sizes[c, 1])
        u, v, ok, cx, cy, cz = project_one(
            models[c], params[c], px, py, pz, r[0, 0], r[0, 1], r[0, 2], r[1, 0], r[1, 1], r[1, 2], r[2, 0],
            r[2, 1], r[2, 2], trans[c, 0], trans[c, 1], trans[c, 2], ce_q[c], ce_t[c], cam_times[c], row_ns[c],
            height - 1.0, n_iter, ts, q, t, q1, theta, inv_sin, mode)
        store_projection(c, i, u, v, ok, cx, cy, cz, width, height, uv, depth, in_image, cos_view)


@dataclass(frozen=True, eq=False)
class DeviceProjection:
    """A :class:`Projection` whose ``(C, N)`` arrays are on the device."""

    uv: Any  # (C, N, 2) float64
    depth: Any  # (C, N) float32
    in_image: Any  # (C, N) bool
    cos_view: Any  # (C, N) float32
    image_sizes: np.ndarray  # (C, 2) int64, host

    def to_host(self, prefix: str) -> Projection:
        """The host :class:`Projection` (waits for the stream)."""
        ws = workspace()
        names = ("uv", "depth", "in_image", "cos_view")
        parts = [ws.download(f"{prefix}.{name}", getattr(self, name)) for name in names]
        ws.sync()
        uv, depth, in_image, cos_view = (np.array(a) for a in parts)
        return Projection(uv, depth, in_image, self.image_sizes, cos_view)


def launch_project(args: ProjectionInputs, xyz_dev: Any, prefix: str) -> DeviceProjection:
    """Queue the projection of the points ``xyz_dev`` (on the device; ``args.xyz`` is their
    host copy, not read) with the other inputs of ``args`` copied up."""
    ws = workspace()
    dev = [xyz_dev if k == 0 else ws.upload(f"{prefix}.in{k}", a) if isinstance(a, np.ndarray) else a
           for k, a in enumerate(args)]
    n_cam, n = len(args.models), len(args.xyz)
    out = DeviceProjection(
        ws.device(f"{prefix}.uv", (n_cam, n, 2), np.float64),
        ws.device(f"{prefix}.depth", (n_cam, n), np.float32),
        ws.device(f"{prefix}.in_image", (n_cam, n), np.bool_),
        ws.device(f"{prefix}.cos_view", (n_cam, n), np.float32),
        args.sizes,
    )
    if n_cam:
        launch(_project, n, *dev, out.uv, out.depth, out.in_image, out.cos_view)
    return out


def project(args: ProjectionInputs) -> Projection:
    """:func:`engine.projection.project_points` on the GPU (inputs checked by it)."""
    xyz_dev = workspace().upload("projection.xyz", args.xyz)
    return launch_project(args, xyz_dev, "projection").to_host("projection")
