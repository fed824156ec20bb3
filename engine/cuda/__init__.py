"""GPU backend (numba-cuda) for the prepare hot path, and the choice of device.

The engine's public functions that have a GPU twin take ``device=`` (``"cpu"``, ``"cuda"``,
``"auto"`` or ``None`` for the current default): :func:`engine.motion.motion_compensate`,
:func:`engine.projection.project_points`, :func:`engine.zbuffer.zbuffer`,
:func:`engine.colorize.colorize`, :func:`engine.moving_boxes.points_in_boxes_at_times` and
``points_in_moving_boxes``, :func:`engine.voxel.first_points_levels` and ``first_points``.
The default is ``"cpu"``; :func:`set_device` changes it for the process, :func:`use_device`
for the calling thread inside a ``with`` block. ``"cuda"`` without a usable GPU raises
:class:`CudaUnavailableError` (never a silent CPU run); ``"auto"`` picks CUDA where a real GPU
is usable (never numba-cuda's simulator) and the CPU otherwise.

Modules (each imports ``numba.cuda``, so only a GPU run imports them; a CPU-only install
never needs numba-cuda): ``_jit`` (the CUDA JIT policy, device helpers, per-thread stream and
buffers), ``motion``, ``projection``, ``zbuffer``, ``colorize``, ``boxes``, ``voxel`` (one
kernel per hot operation, each calling the same scalar helpers as its CPU kernel) and
``pipeline`` (a frame's stages with its data kept on the device).

Agreement with the CPU kernels: the kernels run in float64 with fast-math off (no flush to
zero, IEEE division and square root) and the same scalar helpers in the same order, so on
numba-cuda's simulator (IEEE float64, as the CPU) every output is bit-identical. On a GPU the
CUDA compiler contracts ``a·b + c`` into fused multiply-adds (NVVM's default, independent of
fast-math) and ``atan2``/``sin`` come from libdevice: float outputs differ from the CPU by a
few units in the last place, far inside the stated bounds (points 1e-6 m, pixels 1e-4 px);
integer outputs (camera masks, box ids, voxel first points) can only differ for a value
within that rounding of a decision boundary (an image edge, a box face, a voxel face), which
real data does not hit.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator, Literal

Device = Literal["cpu", "cuda", "auto"]
_DEVICES = ("cpu", "cuda", "auto")


class CudaUnavailableError(RuntimeError):
    """``device="cuda"`` was asked for where numba-cuda or a usable GPU is missing."""


_default: Literal["cpu", "cuda"] = "cpu"
_local = threading.local()


@functools.lru_cache(maxsize=1)
def cuda_status() -> tuple[bool, bool, str]:
    """``(usable, simulator, description)`` of numba-cuda here: the GPU's name and compute
    capability, ``"numba-cuda simulator"``, or why CUDA is not usable. Checked once."""
    try:
        from numba import cuda
        from numba.core import config
    except ImportError as exc:
        return False, False, f"numba-cuda is not installed ({exc}); pip install 'fathom3d[gpu]'"
    if config.ENABLE_CUDASIM:
        return True, True, "numba-cuda simulator (NUMBA_ENABLE_CUDASIM=1)"
    try:
        if not cuda.is_available():
            return False, False, "no usable CUDA GPU (numba.cuda.is_available() is False: no GPU or driver)"
        dev = cuda.get_current_device()
        name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
        return True, False, f"{name} (compute capability {dev.compute_capability[0]}.{dev.compute_capability[1]})"
    except Exception as exc:  # a broken driver or toolkit: report it, do not crash the CPU path
        return False, False, f"CUDA is not usable: {type(exc).__name__}: {exc}"


def gpu_usable() -> bool:
    """Whether a real GPU is usable (the simulator does not count)."""
    usable, simulator, _ = cuda_status()
    return usable and not simulator


def describe() -> str:
    """What ``"cuda"`` runs on here, or why it cannot run."""
    return cuda_status()[2]


def require() -> None:
    """Raise :class:`CudaUnavailableError` unless CUDA (a GPU or the simulator) is usable."""
    usable, _, why = cuda_status()
    if not usable:
        raise CudaUnavailableError(f"device 'cuda' asked for, but {why}")


def resolve(device: Device | None = None) -> Literal["cpu", "cuda"]:
    """The device a call runs on: ``device``, else the thread's :func:`use_device`, else the
    process default (:func:`set_device`). ``"auto"`` is CUDA where a real GPU is usable.
    Raises ``ValueError`` for an unknown name, :class:`CudaUnavailableError` for ``"cuda"``
    without CUDA."""
    if device is None:
        device = get_device()
    if device not in _DEVICES:
        raise ValueError(f"device must be one of {list(_DEVICES)}, got {device!r}")
    if device == "auto":
        return "cuda" if gpu_usable() else "cpu"
    if device == "cuda":
        require()
    return device


def set_device(device: Device) -> Literal["cpu", "cuda"]:
    """Set the process-wide default device and return the one chosen (``"auto"`` resolved
    now). Raises as :func:`resolve`."""
    global _default
    chosen = resolve(device)
    _default = chosen
    return chosen


def get_device() -> Literal["cpu", "cuda"]:
    """The calling thread's current default device."""
    device: Literal["cpu", "cuda"] | None = getattr(_local, "device", None)
    return device or _default


@contextlib.contextmanager
def use_device(device: Device) -> Iterator[Literal["cpu", "cuda"]]:
    """Within the block, the calling thread's default device is ``device`` (resolved once)."""
    chosen = resolve(device)
    previous = getattr(_local, "device", None)
    _local.device = chosen
    try:
        yield chosen
    finally:
        _local.device = previous
