"""Compile every GPU kernel to PTX for a given compute capability, without a GPU.

``python -m tests.cuda_compile_only [MAJOR.MINOR]`` (default 9.0, the H100) runs the GPU
paths of the engine's public functions (``device="cuda"``) and of the frame pipeline on tiny
inputs with numba-cuda in compile-only mode: buffers are NumPy arrays, and each kernel launch
compiles the kernel with NVVM for the argument types the host code passes
(``numba.cuda.compile_ptx``) instead of running it. That type-checks the device code — the
scalar helpers shared with the CPU kernels included — as a GPU run would, which the simulator
(plain Python) cannot. It needs NVVM (``pip install 'numba-cuda[cu12]'``), not a GPU. Prints
one JSON line: the kernels and signatures compiled.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import numba
import numpy as np


class CompileOnlyWorkspace:
    """``engine.cuda._jit.Workspace`` with NumPy arrays for device and pinned buffers."""

    stream = None

    def device(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        return np.zeros(shape, dtype)

    pinned = device

    def upload(self, name: str, array: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(array).copy()

    def send(self, host: np.ndarray, dev: np.ndarray) -> None:
        dev[...] = host

    def download(self, name: str, dev: np.ndarray) -> np.ndarray:
        return dev

    def sync(self) -> None:
        pass


def install(cc: tuple[int, int]) -> list[tuple[str, str]]:
    """Put numba-cuda in compile-only mode; returns the list compiled kernels go to."""
    from numba import cuda

    import engine.cuda as backend
    from engine.cuda import _jit

    compiled: list[tuple[str, str]] = []
    seen: set[tuple[Any, ...]] = set()

    def compile_launch(kern: Any, n: int, *args: Any) -> None:
        sig = tuple(numba.typeof(a) for a in args)
        key = (kern.py_func, sig)
        if key not in seen:
            seen.add(key)
            cuda.compile_ptx(kern.py_func, sig, cc=cc)
            compiled.append((f"{kern.py_func.__module__}.{kern.py_func.__name__}", str(sig)))

    backend.cuda_status.cache_clear()
    backend.cuda_status = lambda: (True, False, f"compile only, compute capability {cc}")
    _jit._local.workspace = CompileOnlyWorkspace()
    for name in ("motion", "projection", "zbuffer", "colorize", "boxes", "voxel", "pipeline"):
        module = __import__(f"engine.cuda.{name}", fromlist=["_"])
        for attr in ("launch", "launch_strided"):
            if hasattr(module, attr):
                setattr(module, attr, compile_launch)
    return compiled


def exercise() -> None:
    """Every GPU path on tiny inputs (each dtype and mode the host code can pass)."""
    from engine.camera import Camera, CameraIntrinsics
    from engine.colorize import colorize
    from engine.motion import motion_compensate
    from engine.moving_boxes import points_in_boxes_at_times, points_in_moving_boxes
    from engine.pose_track import PoseTrack
    from engine.projection import project_points
    from engine.se3 import SE3
    from engine.voxel import first_points_levels
    from engine.zbuffer import zbuffer

    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    cams = [Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity()),
            Camera("b", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0, model="kannala_brandt"), SE3.identity(),
                   shutter="rolling", row_readout_ns=1)]
    for dtype in (np.float32, np.float64):
        pts = np.array([[0.0, 0.0, 1.0]], dtype)
        for frame in ("sensor", "ego", "world"):
            motion_compensate(pts, np.array([5]), track, SE3.identity(), 5, frame, device="cuda")
        project_points(pts, cams, device="cuda")
        project_points(pts, cams, world_from_ego=track, times_ns=np.array([5]), camera_times_ns=[5, 5], device="cuda")
        first_points_levels(pts, [0.1, np.array([1.0, 1.0, np.inf])], device="cuda")
    proj = project_points(np.array([[0.0, 0.0, 1.0]]), cams, world_from_ego=track, camera_times_ns=[5, 5],
                          frame="world", device="cuda")
    vis = zbuffer(proj, device="cuda").visible
    for dtype in (np.uint8, np.float32, np.int32):
        for interp in ("bilinear", "nearest"):
            colorize(proj, vis, cams, [np.zeros((4, 4, 3), dtype), None], interp, device="cuda")
    colorize(proj, vis, cams, [np.zeros((4, 4), np.uint8)] * 2, device="cuda")
    box = (np.zeros((1, 1, 3)), np.ones((1, 1, 3)), np.array([[[1.0, 0, 0, 0]]]), np.ones((1, 1), bool))
    points_in_moving_boxes(np.zeros((2, 3)), np.zeros(2, np.int64), *box, device="cuda")
    points_in_boxes_at_times(np.zeros((2, 3)), np.zeros(2, np.int64), 1, box[0][0], box[1][0], box[2][0],
                             np.zeros(1, np.int64), np.zeros(1, np.int64), *box, device="cuda")
    from engine.cuda.pipeline import warmup

    warmup()  # the frame pipeline: its own mask kernel and the stages' device-resident arguments


def main(argv: list[str]) -> int:
    cc = tuple(int(v) for v in (argv[1] if len(argv) > 1 else "9.0").split("."))
    compiled = install((cc[0], cc[1]))
    exercise()
    print(json.dumps({"cc": list(cc), "compiled": compiled}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
