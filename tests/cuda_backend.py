"""numba-cuda for the GPU tests (``tests/test_cuda_*.py``): the real GPU where one is usable,
else numba-cuda's simulator, so CI without a GPU still runs every GPU kernel against its CPU
twin.

Import this module before anything imports ``numba.cuda``. The simulator is chosen by
``NUMBA_ENABLE_CUDASIM=1``, which numba reads with the rest of its configuration; numba is
imported long before (``engine``), so the variable is set and the configuration reloaded
(numba's compiler reloads it on every compile too, so the variable stays set). That is safe in
this process: only ``numba.cuda`` reads it, CPU kernels (``numba.njit``) compile and run as
before, and ``device="auto"`` never picks the simulator. Simulated kernels run as Python
threads, so inputs there stay small; ``LARGE`` inputs run only on a real GPU.

Whether a GPU is usable is asked in a subprocess (``numba.cuda.is_available()``), since once
this process imports ``numba.cuda`` for a GPU it can no longer switch to the simulator.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numba
import pytest

pytest.importorskip("numba_cuda", reason="numba-cuda is not installed (pip install 'fathom3d[test]')")


def _real_gpu() -> bool:
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return False
    code = "import sys; from numba import cuda; sys.exit(0 if cuda.is_available() else 1)"
    try:
        return subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


REAL_GPU = _real_gpu()
if not REAL_GPU:
    if "numba.cuda" in sys.modules and not numba.core.config.ENABLE_CUDASIM:
        raise RuntimeError("numba.cuda was imported for a GPU before tests.cuda_backend could select its simulator")
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    numba.core.config.reload_config()

from numba import cuda  # noqa: E402  (after the choice above)

assert cuda.is_available()

SIMULATOR = not REAL_GPU
requires_gpu = pytest.mark.skipif(
    SIMULATOR, reason="large inputs need a CUDA GPU (none usable here: the simulator runs the small inputs)")


def sizes(small: int, large: int) -> list:
    """Test parameters: ``small`` everywhere (GPU or simulator), ``large`` on a GPU only."""
    return [small, pytest.param(large, marks=requires_gpu)]


def assert_same(cpu, gpu, atol: float = 0.0) -> None:
    """A float output of a GPU kernel against its CPU twin: within ``atol`` (the backend's
    stated bound) on a GPU, identical on the simulator (IEEE float64, as the CPU); NaN where
    the CPU has NaN."""
    import numpy as np

    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape
    if SIMULATOR:
        np.testing.assert_array_equal(gpu, cpu)
    else:
        np.testing.assert_allclose(gpu, cpu, rtol=0, atol=atol)
