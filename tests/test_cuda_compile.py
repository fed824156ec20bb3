"""The GPU backend's install story and its kernels' compilation, without a GPU: the CPU
engine never imports numba.cuda; every kernel type-checks and compiles to PTX for the H100
(compute capability 9.0) with the argument types the host code passes
(``python -m tests.cuda_compile_only``, which needs NVVM, not a GPU)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    return subprocess.run([sys.executable, *args] if not code else [sys.executable, "-c", code], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_the_cpu_engine_never_imports_numba_cuda():
    done = _python(
        "import sys, numpy as np, engine\n"
        "from engine import motion, projection, zbuffer, colorize, moving_boxes, voxel, frame_stages\n"
        "from engine.cuda import resolve\n"
        "assert resolve('cpu') == 'cpu' and resolve(None) == 'cpu'\n"
        "voxel.first_points(np.zeros((3, 3)), 0.5)\n"
        "assert not [m for m in sys.modules if m.startswith(('numba.cuda', 'numba_cuda'))], 'numba.cuda imported'\n"
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _toolkit_missing() -> str | None:
    """Why PTX can't be compiled here (NVVM or NVRTC not found), or None."""
    done = _python("from numba.cuda.cudadrv.nvvm import NVVM; NVVM()\n"
                   "from numba.cuda.cudadrv import nvrtc; nvrtc.get_supported_ccs()", timeout=120)
    return None if done.returncode == 0 else (done.stderr.strip().splitlines() or ["?"])[-1]


@pytest.mark.slow
def test_every_kernel_compiles_to_ptx_for_the_h100():
    missing = _toolkit_missing()
    if missing:
        pytest.skip(f"the CUDA 12 compilers are not installed (pip install 'numba-cuda[cu12]'): {missing}")
    done = _python("", "-m", "tests.cuda_compile_only", "9.0")
    assert done.returncode == 0, done.stderr[-6000:]
    compiled = json.loads(done.stdout.strip().splitlines()[-1])["compiled"]
    kernels = {name for name, _ in compiled}
    assert kernels == {f"engine.cuda.{k}" for k in (
        "motion._compensate", "projection._project", "zbuffer._fill", "zbuffer._splat", "zbuffer._test",
        "colorize._colorize", "boxes._label", "voxel._reset", "voxel._insert", "voxel._flag", "pipeline._mask")}
    # float32 and float64 points, uint8 / float32 / int32 images: one specialisation each
    assert sum(name == "engine.cuda.colorize._colorize" for name, _ in compiled) >= 3
    assert sum(name == "engine.cuda.motion._compensate" for name, _ in compiled) == 4
