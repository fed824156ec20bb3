"""Array aliases for the engine's public signatures.

NumPy's typing cannot state shapes, so each alias names what an array holds and the
comment beside it gives the shape, unit and frame the docstrings use. Inputs that the
engine converts once (``np.ascontiguousarray(x, dtype=...)``) are typed by what they hold
(``Points3`` accepts float32 or float64 points); outputs by their exact dtype.

========================  ==========================================================
alias                     holds
========================  ==========================================================
``Float64Array``          any float64 array
``Float32Array``          any float32 array
``Int64Array``            any int64 array
``BoolArray``             any bool array
``FloatArray``            any floating dtype (an input converted once)
``Points3``               ``(N, 3)`` points in metres, float32 or float64, frame named
                          by the argument (``xyz`` sensor / ego / world)
``Points3F64``            ``(N, 3) float64`` points (transform outputs, world frame)
``Vectors3``              ``(..., 3) float64``: centres, sizes, translations (m)
``Quaternions``           ``(..., 4) float64`` unit quaternions (w, x, y, z), Hamilton
``RotationMatrices``      ``(..., 3, 3) float64`` rotation matrices
``TimesNs``               ``(N,) int64`` absolute timestamps, nanoseconds
``Pixels``                ``(..., 2) float64`` pixel coordinates (u right, v down;
                          pixel (0, 0) is the centre of the top-left pixel)
========================  ==========================================================
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Float64Array = npt.NDArray[np.float64]
Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.floating[Any]]

Points3 = FloatArray  # (N, 3) m, float32 or float64
Points3F64 = Float64Array  # (N, 3) m, float64
Vectors3 = Float64Array  # (..., 3) m
Quaternions = Float64Array  # (..., 4) unit (w, x, y, z)
RotationMatrices = Float64Array  # (..., 3, 3)
TimesNs = Int64Array  # (N,) int64 ns
Pixels = Float64Array  # (..., 2) px
