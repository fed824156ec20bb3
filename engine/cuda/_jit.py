"""The CUDA JIT policy of Fathom's GPU kernels, their scalar helpers, launches and buffers.

- :func:`kernel` compiles a kernel with fast-math off (``fastmath=False``: no flush to zero,
  IEEE division and square root), cached beside the sources.
- :func:`device` makes one of the engine's scalar numba helpers (``q_rotate``, ``pose_at``,
  ``lens_project``, ...) callable from kernels, so the GPU runs the one implementation of
  each formula: on a GPU numba-cuda compiles a CPU dispatcher called from a kernel as a
  device function from the same Python source; on numba-cuda's simulator, whose kernels are
  plain Python and whose arrays are wrappers a CPU dispatcher cannot take, the helper is the
  compiled CPU function called with the wrapped NumPy arrays.
- :class:`Workspace` is a thread's CUDA stream with its device and pinned host buffers,
  reused from call to call (grown by powers of two, so a frame allocates nothing): copies
  are asynchronous from pinned memory, so the workers of a job (one stream each) overlap one
  frame's copies with another's kernels.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np
from numba import cuda
from numba.core import config

SIMULATOR = bool(config.ENABLE_CUDASIM)
# threads per block (the simulator runs a block's threads as Python threads)
THREADS = 32 if SIMULATOR else 256
# most threads of a grid-stride launch (:func:`launch_strided`)
STRIDED = 256 if SIMULATOR else 1 << 18


def kernel(fn: Callable[..., None]) -> Any:
    """``fn`` as a CUDA kernel under the one policy (fast-math off, on-disk cache)."""
    return cuda.jit(fn, fastmath=False, cache=not SIMULATOR)


def _unwrap(value: Any) -> Any:
    """A simulator array as the NumPy array it wraps; anything else as is."""
    item = getattr(value, "_item", None)  # FakeWithinKernelCUDAArray -> FakeCUDAArray
    if item is not None:
        value = item
    ary = getattr(value, "_ary", None)  # FakeCUDAArray -> ndarray
    return value if ary is None else ary


def device(helper: Any) -> Any:
    """An engine scalar helper (a numba CPU dispatcher) for kernels (module docstring)."""
    if not SIMULATOR:
        return helper

    def call(*args: Any) -> Any:
        return helper(*[_unwrap(a) for a in args])

    call.__name__ = getattr(helper, "__name__", "helper")
    call.__doc__ = helper.__doc__
    return call


def blocks(n: int) -> int:
    """Blocks of :data:`THREADS` covering ``n`` threads (at least one)."""
    return max(1, (n + THREADS - 1) // THREADS)


def launch(kern: Any, n: int, *args: Any) -> None:
    """Queue ``kern`` over ``n`` threads (one per item) on the calling thread's stream;
    nothing for ``n = 0``."""
    if n > 0:
        kern[blocks(n), THREADS, workspace().stream](*args)


def launch_strided(kern: Any, n: int, *args: Any) -> None:
    """Queue ``kern``, a grid-stride loop over ``n`` items (``for k in range(cuda.grid(1),
    n, cuda.gridsize(1))``), on at most :data:`STRIDED` threads; nothing for ``n = 0``."""
    if n > 0:
        kern[blocks(min(n, STRIDED)), THREADS, workspace().stream](*args)


def _capacity(n: int) -> int:
    return 1 << max(10, (max(n, 1) - 1).bit_length())


class Workspace:
    """One thread's stream and named, reusable device / pinned host buffers (module docstring).

    A buffer is flat and grows to the next power of two of the bytes asked for; a request
    returns a C-contiguous view of the asked shape and dtype. Views of one name alias: a
    caller uses each name for one array at a time (the modules prefix their names).
    """

    def __init__(self) -> None:
        self.stream = cuda.stream()
        self._device: dict[str, Any] = {}
        self._pinned: dict[str, np.ndarray] = {}

    def device(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """An uninitialised device array ``shape`` ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._device.get(name)
        if buf is None or buf.shape[0] < nbytes:
            buf = self._device[name] = cuda.device_array(_capacity(nbytes), np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    def pinned(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """An uninitialised page-locked host array ``shape`` ``dtype``."""
        dtype = np.dtype(dtype)
        nbytes = int(np.prod(shape)) * dtype.itemsize
        buf = self._pinned.get(name)
        if buf is None or buf.shape[0] < nbytes:
            buf = self._pinned[name] = cuda.pinned_array(_capacity(nbytes), np.uint8)
        return buf[:nbytes].view(dtype).reshape(shape)

    def upload(self, name: str, array: np.ndarray) -> Any:
        """``array`` on the device (staged through pinned memory, copied on the stream)."""
        a = np.ascontiguousarray(array)
        host = self.pinned(name, a.shape, a.dtype)
        host[...] = a
        dev = self.device(name, a.shape, a.dtype)
        self.send(host, dev)
        return dev

    def send(self, host: np.ndarray, dev: Any) -> None:
        """Queue the copy of the pinned array ``host`` into the device array ``dev``."""
        if host.size:
            dev.copy_to_device(host, stream=self.stream)

    def download(self, name: str, dev: Any) -> np.ndarray:
        """Queue the copy of ``dev`` into pinned memory; the returned array is valid after
        :meth:`sync` (copy it before this name is used again)."""
        host = self.pinned(name, dev.shape, dev.dtype)
        if host.size:
            dev.copy_to_host(host, stream=self.stream)
        return host

    def sync(self) -> None:
        """Wait for everything queued on this thread's stream."""
        self.stream.synchronize()


_local = threading.local()


def workspace() -> Workspace:
    """The calling thread's :class:`Workspace` (created on first use)."""
    ws = getattr(_local, "workspace", None)
    if ws is None:
        ws = _local.workspace = Workspace()
    return ws
