"""Per-point box ids at each point's firing time on the GPU (:mod:`engine.moving_boxes`).

The boxes' test tables and bird's-eye grid are built on the host by the CPU labeller's own
``_box_tables`` (a pass over the boxes and one over the points' bounds); then one thread per
point runs ``label_range`` over itself: its grid cell's boxes and the big ones, each moving box at the
point's time step, the nearest centre winning — the CPU labeller's loop body.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from engine import moving_boxes as _moving_boxes
from engine.cuda._jit import device, kernel, launch, workspace
from engine.moving_boxes import LabelInputs

label_range = device(_moving_boxes.label_range)


@kernel
def _label(xyz, offsets, step_ns, steps, slot, base, cen, rmat, half, x0, y0, per_m, nx, ny, start, boxes, big, out):
    i = cuda.grid(1)
    if i < xyz.shape[0]:
        label_range(xyz, offsets, i, i + 1, step_ns, steps, slot, base, cen, rmat, half, x0, y0, per_m, nx, ny, start,
                    boxes, big, out)


def launch_labels(args: LabelInputs, xyz_dev: Any, offsets_dev: Any, prefix: str) -> Any:
    """Queue the labelling of the device points ``xyz_dev (N, 3) float64`` fired at
    ``offsets_dev (N,) int64`` (``args.xyz`` is their host copy, used for the grid's bounds);
    returns the ``(N,) int32`` device labels."""
    ws = workspace()
    tables = _moving_boxes._box_tables(args.xyz, args.centers, args.sizes, args.rotations, args.slot, args.m_centers,
                                       args.m_sizes, args.m_rotations, args.m_valid, args.margin)
    dev = [ws.upload(f"{prefix}.t{k}", a) if isinstance(a, np.ndarray) else a for k, a in enumerate(tables)]
    out = ws.device(f"{prefix}.out", (len(args.xyz),), np.int32)
    steps, slot = ws.upload(f"{prefix}.steps", args.steps), ws.upload(f"{prefix}.slot", args.slot)
    launch(_label, len(args.xyz), xyz_dev, offsets_dev, np.int64(args.step_ns), steps, slot, *dev, out)
    return out


def labels(args: LabelInputs) -> np.ndarray:
    """:func:`engine.moving_boxes.label_points` on the GPU (inputs checked): ``(N,) int32``."""
    ws = workspace()
    out = launch_labels(args, ws.upload("boxes.xyz", args.xyz), ws.upload("boxes.offsets", args.offsets), "boxes")
    host = ws.download("boxes.out", out)
    ws.sync()
    return np.array(host)
