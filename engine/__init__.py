"""Fathom's numeric core: pure computation on arrays (no files, no HTTP).

Conventions (see DESIGN.md): metres, radians, int64 ns timestamps; quaternions (w, x, y, z);
transforms named ``dst_from_src``; ego x forward / y left / z up; camera x right / y down /
z forward; world ENU around a scene origin.
"""

from __future__ import annotations

from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import Cuboid, CuboidTrack, box_corners
from engine.cuda import get_device, set_device, use_device
from engine.pose_track import OutOfRangeError, PoseTrack
from engine.se3 import SE3
from engine.sweep import Sweep

__all__ = [
    "SE3", "PoseTrack", "OutOfRangeError", "Sweep", "Camera", "CameraIntrinsics",
    "Cuboid", "CuboidTrack", "box_corners", "warmup", "set_device", "get_device", "use_device",
]


def warmup() -> None:
    """Compile (or load from cache) every kernel once, so no request pays for it.

    Each module that defines kernels exposes ``_warmup()`` calling them on tiny inputs;
    this runs them all. The server calls it at start-up, the tests once per session. The GPU
    kernels (``engine.cuda``, which import numba-cuda) are left to ``engine.cuda.pipeline.warmup``.
    """
    import importlib
    import pkgutil

    import engine

    for info in pkgutil.walk_packages(engine.__path__, "engine."):
        if info.name.startswith("engine.cuda."):
            continue
        module = importlib.import_module(info.name)
        hook = getattr(module, "_warmup", None)
        if callable(hook):
            hook()
