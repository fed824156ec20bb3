"""The one JIT policy every numba kernel in Fathom follows.

``jit`` compiles a serial kernel, ``pjit`` a kernel whose ``numba.prange`` loops run in
parallel, ``inline`` a small scalar helper that other kernels call. ``prange`` splits its
range into one contiguous share per thread; :func:`spread` scatters the chunks a share
takes where the work is uneven along the input. All cache their
machine code beside the sources and release the GIL, so the server and Dask workers can
call kernels from threads.
"""

from __future__ import annotations

import math

import numba

jit = numba.njit(cache=True, nogil=True, fastmath=False)
pjit = numba.njit(cache=True, nogil=True, fastmath=False, parallel=True)
inline = numba.njit(cache=True, nogil=True, fastmath=False, inline="always")
prange = numba.prange


@inline
def spread(item, n):
    """Work item ``item`` of ``prange(n)`` → the chunk it takes, a permutation of
    ``0 .. n-1`` (a stride coprime to ``n``, about 0.62 n) that hands each thread's
    contiguous static share chunks from all over the input: a sensor's points that matter
    (those one camera sees) are contiguous in firing order and would fall to one thread."""
    stride = max(1, int(n * 0.6180339887))
    while math.gcd(stride, n) != 1:
        stride -= 1
    return (item * stride) % n
