"""The one JIT policy every numba kernel in Fathom follows.

``jit`` compiles a serial kernel, ``pjit`` a kernel whose ``numba.prange`` loops run in
parallel, ``inline`` a small scalar helper that other kernels call. All cache their
machine code beside the sources and release the GIL, so the server and Dask workers can
call kernels from threads.
"""

from __future__ import annotations

import numba

jit = numba.njit(cache=True, nogil=True, fastmath=False)
pjit = numba.njit(cache=True, nogil=True, fastmath=False, parallel=True)
inline = numba.njit(cache=True, nogil=True, fastmath=False, inline="always")
prange = numba.prange
