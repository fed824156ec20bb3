"""Camera types and lens models: pinhole, Brown-Conrady (OpenCV rational), Kannala-Brandt.

Camera frame: x right, y down, z forward (OpenCV). Pixel (0, 0) is the centre of the
top-left pixel, as in OpenCV.

The scalar functions :func:`lens_project` and :func:`lens_unproject` are the one
implementation of each model; batch projection kernels (``engine.projection``) and the
synthetic rig's renderer inline them. A lens is passed to kernels as ``(model, params)``:
``model`` one of the ``PINHOLE``/``BROWN_CONRADY``/``KANNALA_BRANDT`` codes and ``params`` a
``(16,) float64`` array laid out as ``_P_*`` below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from engine._jit import inline, jit
from engine.se3 import SE3

PINHOLE, BROWN_CONRADY, KANNALA_BRANDT = 0, 1, 2
_MODEL_CODES = {"pinhole": PINHOLE, "brown_conrady": BROWN_CONRADY, "kannala_brandt": KANNALA_BRANDT}
_N_DIST = {"pinhole": 0, "brown_conrady": 8, "kannala_brandt": 4}
LensModel = Literal["pinhole", "brown_conrady", "kannala_brandt"]

# params layout: fx fy cx cy skew | d0..d7 | limit near_m unused
# brown_conrady d = k1 k2 p1 p2 k3 k4 k5 k6 (OpenCV order); kannala_brandt d = k1 k2 k3 k4.
# limit: brown_conrady max undistorted r² on the normalised plane; kannala_brandt max
# incidence angle θ (rad). Beyond it the distortion polynomial folds back.
_P_FX, _P_FY, _P_CX, _P_CY, _P_SKEW, _P_D0, _P_LIMIT, _P_NEAR = 0, 1, 2, 3, 4, 5, 13, 14
N_PARAMS = 16


@inline
def _bc_distort(p, x, y):
    """OpenCV rational + tangential distortion of normalised (x, y)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = p[5], p[6], p[7], p[8], p[9], p[10], p[11], p[12]
    r2 = x * x + y * y
    radial = (1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1.0 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    return xd, yd


@inline
def _kb_theta_d(p, theta):
    t2 = theta * theta
    return theta * (1.0 + t2 * (p[5] + t2 * (p[6] + t2 * (p[7] + t2 * p[8]))))


@inline
def lens_project(model, p, x, y, z):
    """Camera-frame point → pixel ``(u, v, ok)``. ``ok`` is false at/behind the near plane
    or outside the lens' valid field of view (where it would fold back)."""
    if not (z > p[_P_NEAR]):
        return 0.0, 0.0, False
    if model == KANNALA_BRANDT:
        rho = math.sqrt(x * x + y * y)
        theta = math.atan2(rho, z)
        if theta > p[_P_LIMIT]:
            return 0.0, 0.0, False
        if rho > 0.0:
            s = _kb_theta_d(p, theta) / rho
        else:
            s = 1.0 / z
        xd = x * s
        yd = y * s
    else:
        xn = x / z
        yn = y / z
        if model == BROWN_CONRADY:
            if xn * xn + yn * yn > p[_P_LIMIT]:
                return 0.0, 0.0, False
            xd, yd = _bc_distort(p, xn, yn)
        else:
            xd = xn
            yd = yn
    u = p[_P_FX] * xd + p[_P_SKEW] * yd + p[_P_CX]
    v = p[_P_FY] * yd + p[_P_CY]
    return u, v, True


@inline
def lens_unproject(model, p, u, v):
    """Pixel → unit ray ``(dx, dy, dz, ok)`` in the camera frame (inverse of lens_project)."""
    yd = (v - p[_P_CY]) / p[_P_FY]
    xd = (u - p[_P_CX] - p[_P_SKEW] * yd) / p[_P_FX]
    if model == KANNALA_BRANDT:
        theta_d = math.sqrt(xd * xd + yd * yd)
        if theta_d == 0.0:
            return 0.0, 0.0, 1.0, True
        theta = min(theta_d, p[_P_LIMIT])
        for _ in range(30):  # Newton on θ_d(θ) = theta_d, monotonic below the limit
            t2 = theta * theta
            f = _kb_theta_d(p, theta) - theta_d
            df = 1.0 + t2 * (3.0 * p[5] + t2 * (5.0 * p[6] + t2 * (7.0 * p[7] + t2 * 9.0 * p[8])))
            step = f / df
            theta -= step
            if abs(step) < 1e-14:
                break
        if not (0.0 <= theta <= p[_P_LIMIT]) or abs(_kb_theta_d(p, theta) - theta_d) > 1e-9:
            return 0.0, 0.0, 0.0, False
        s = math.sin(theta) / theta_d
        return xd * s, yd * s, math.cos(theta), True
    x = xd
    y = yd
    if model == BROWN_CONRADY:
        # Newton on distort(x, y) = (xd, yd) with a numerical Jacobian
        for _ in range(50):
            fx, fy = _bc_distort(p, x, y)
            ex = fx - xd
            ey = fy - yd
            if abs(ex) < 1e-14 and abs(ey) < 1e-14:
                break
            h = 1e-7
            ax, ay = _bc_distort(p, x + h, y)
            bx, by = _bc_distort(p, x, y + h)
            j00 = (ax - fx) / h
            j10 = (ay - fy) / h
            j01 = (bx - fx) / h
            j11 = (by - fy) / h
            det = j00 * j11 - j01 * j10
            if det == 0.0:
                break
            x -= (j11 * ex - j01 * ey) / det
            y -= (-j10 * ex + j00 * ey) / det
        fx, fy = _bc_distort(p, x, y)
        if x * x + y * y > p[_P_LIMIT] or abs(fx - xd) > 1e-9 or abs(fy - yd) > 1e-9:
            return 0.0, 0.0, 0.0, False
    n = 1.0 / math.sqrt(x * x + y * y + 1.0)
    return x * n, y * n, n, True


@jit
def _bc_fold_limit(p, r2_cap):
    """Largest r² below ``r2_cap`` up to which the radial map r → r_d stays increasing."""
    steps = 20000
    prev = 0.0
    for i in range(1, steps + 1):
        r = math.sqrt(r2_cap) * i / steps
        xd, yd = _bc_distort(p, r, 0.0)
        xd2, yd2 = _bc_distort(p, 0.0, r)
        rd = min(math.sqrt(xd * xd + yd * yd), math.sqrt(xd2 * xd2 + yd2 * yd2))
        if rd <= prev:
            r_prev = math.sqrt(r2_cap) * (i - 1) / steps
            return r_prev * r_prev
        prev = rd
    return r2_cap


@jit
def _kb_fold_limit(p, theta_cap):
    steps = 20000
    prev = 0.0
    for i in range(1, steps + 1):
        th = theta_cap * i / steps
        td = _kb_theta_d(p, th)
        if td <= prev:
            return theta_cap * (i - 1) / steps
        prev = td
    return theta_cap


@dataclass(frozen=True)
class CameraIntrinsics:
    """Image size and lens model.

    Attributes:
        width, height: image size in pixels.
        fx, fy, cx, cy: focal lengths and principal point in pixels.
        skew: ``K[0, 1]`` in pixels (0 for almost every real camera).
        model: ``"pinhole"``, ``"brown_conrady"`` (OpenCV ``k1 k2 p1 p2 k3 k4 k5 k6``) or
            ``"kannala_brandt"`` (OpenCV fisheye ``k1 k2 k3 k4``).
        distortion: coefficients in the model's OpenCV order (missing trailing ones are 0).
        max_fov_rad: optional cap on the full field of view the lens may project
            (2 × the largest incidence angle); the fold-back limit applies regardless.
    """

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    skew: float = 0.0
    model: LensModel = "pinhole"
    distortion: tuple[float, ...] = ()
    max_fov_rad: float | None = None

    def __post_init__(self) -> None:
        if self.model not in _MODEL_CODES:
            raise ValueError(f"model must be one of {sorted(_MODEL_CODES)}, got {self.model!r}")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")
        vals = (self.fx, self.fy, self.cx, self.cy, self.skew, *self.distortion)
        if not all(math.isfinite(v) for v in vals):
            raise ValueError("camera intrinsics contain NaN or infinite values")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"focal lengths must be positive, got fx={self.fx}, fy={self.fy}")
        if len(self.distortion) > _N_DIST[self.model]:
            raise ValueError(
                f"{self.model} takes at most {_N_DIST[self.model]} distortion coefficients, "
                f"got {len(self.distortion)}"
            )
        object.__setattr__(self, "distortion", tuple(float(d) for d in self.distortion))

    @property
    def model_code(self) -> int:
        return _MODEL_CODES[self.model]

    @property
    def K(self) -> np.ndarray:
        """The ``(3, 3)`` camera matrix."""
        return np.array([[self.fx, self.skew, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def params(self, near_m: float) -> np.ndarray:
        """The ``(16,) float64`` parameter vector kernels take, fold-back limit included."""
        p = np.zeros(N_PARAMS)
        p[[_P_FX, _P_FY, _P_CX, _P_CY, _P_SKEW]] = self.fx, self.fy, self.cx, self.cy, self.skew
        p[_P_D0 : _P_D0 + len(self.distortion)] = self.distortion
        p[_P_NEAR] = near_m
        half_fov = None if self.max_fov_rad is None else 0.5 * self.max_fov_rad
        if self.model == "kannala_brandt":
            cap = math.pi if half_fov is None else min(half_fov, math.pi)
            p[_P_LIMIT] = _kb_fold_limit(p, cap)
        else:
            # the image corners bound the useful field; allow 1.5× their radius before folding
            corners = np.array([[0, 0], [self.width, 0], [0, self.height], [self.width, self.height]], float)
            yn = (corners[:, 1] - self.cy) / self.fy
            xn = (corners[:, 0] - self.cx - self.skew * yn) / self.fx
            r2_cap = float(np.max(xn * xn + yn * yn)) * (1.5**2)
            if self.model == "brown_conrady":
                r2_cap = max(r2_cap * 4.0, 1e-6)
            if half_fov is not None and half_fov < math.pi / 2:
                r2_cap = min(r2_cap, math.tan(half_fov) ** 2)
            p[_P_LIMIT] = _bc_fold_limit(p, r2_cap) if self.model == "brown_conrady" else r2_cap
        return p


def cameras_from_ego(cameras) -> SE3:
    """``camera_from_ego`` of each of ``cameras`` as one ``(C,)`` SE3 batch."""
    if not cameras:
        return SE3.identity(0)
    return SE3(
        np.stack([c.ego_from_camera.rotation for c in cameras]),
        np.stack([c.ego_from_camera.translation for c in cameras]),
    ).inverse()


@dataclass(frozen=True)
class Camera:
    """A calibrated camera on the ego vehicle.

    Attributes:
        name: sensor name (``"CAM_FRONT"``).
        intrinsics: image size and lens.
        ego_from_camera: extrinsic, camera frame (x right, y down, z forward) → ego frame.
        near_m: points at or closer than this depth never project.
        shutter: ``"global"`` or ``"rolling"``.
        row_readout_ns: for a rolling shutter, time between consecutive rows; row 0 is
            exposed at the image timestamp.
    """

    name: str
    intrinsics: CameraIntrinsics
    ego_from_camera: SE3
    near_m: float = 0.1
    shutter: Literal["global", "rolling"] = "global"
    row_readout_ns: int = 0
    _params: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.ego_from_camera.shape != ():
            raise ValueError("Camera.ego_from_camera must be a single SE3")
        if not (self.near_m > 0):
            raise ValueError(f"Camera.near_m must be positive, got {self.near_m}")
        if self.shutter not in ("global", "rolling"):
            raise ValueError(f"Camera.shutter must be 'global' or 'rolling', got {self.shutter!r}")
        if self.shutter == "rolling" and self.row_readout_ns <= 0:
            raise ValueError("a rolling-shutter camera needs row_readout_ns > 0")
        params = self.intrinsics.params(self.near_m)
        params.setflags(write=False)
        object.__setattr__(self, "_params", params)

    @property
    def params(self) -> np.ndarray:
        """``(16,) float64`` lens parameters for kernels (see module docstring)."""
        return self._params

    @property
    def model_code(self) -> int:
        return self.intrinsics.model_code


def _warmup() -> None:
    lenses: tuple[tuple[LensModel, tuple[float, ...]], ...] = (("brown_conrady", (0.1,)), ("kannala_brandt", (0.1,)))
    for model, dist in lenses:
        CameraIntrinsics(2, 2, 1.0, 1.0, 1.0, 1.0, model=model, distortion=dist).params(0.1)
