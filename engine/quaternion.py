"""Unit quaternions, scalar first ``(w, x, y, z)``, Hamilton convention.

Public functions take ``(..., 4)`` float64 arrays and broadcast over leading axes. The
``q_*`` scalar helpers are inlined into other modules' numba kernels (deskew, projection,
interpolation), so there is one implementation of each rotation formula.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from engine._jit import inline, jit, pjit, prange
from engine.typing import Float64Array, Points3, Points3F64, Quaternions, RotationMatrices

# Below this angle between two quaternions slerp falls back to normalised lerp.
_SLERP_LINEAR_BELOW = 1e-6


# ---------------------------------------------------------------- numba scalar helpers


@inline
def q_mul(aw, ax, ay, az, bw, bx, by, bz):
    """Hamilton product a ⊗ b of two quaternions given as scalars."""
    return (
        aw * bw - ax * bx - ay * by - az * bz,
        aw * bx + ax * bw + ay * bz - az * by,
        aw * by - ax * bz + ay * bw + az * bx,
        aw * bz + ax * by - ay * bx + az * bw,
    )


@inline
def q_rotate(w, x, y, z, px, py, pz):
    """Rotate vector p by unit quaternion q: q ⊗ (0, p) ⊗ q*."""
    # t = 2 q_vec × p ; p' = p + w t + q_vec × t
    tx = 2.0 * (y * pz - z * py)
    ty = 2.0 * (z * px - x * pz)
    tz = 2.0 * (x * py - y * px)
    return (
        px + w * tx + (y * tz - z * ty),
        py + w * ty + (z * tx - x * tz),
        pz + w * tz + (x * ty - y * tx),
    )


@inline
def q_to_matrix(w, x, y, z, out):
    """Write the 3×3 rotation matrix of unit quaternion q into ``out``."""
    out[0, 0] = 1.0 - 2.0 * (y * y + z * z)
    out[0, 1] = 2.0 * (x * y - w * z)
    out[0, 2] = 2.0 * (x * z + w * y)
    out[1, 0] = 2.0 * (x * y + w * z)
    out[1, 1] = 1.0 - 2.0 * (x * x + z * z)
    out[1, 2] = 2.0 * (y * z - w * x)
    out[2, 0] = 2.0 * (x * z - w * y)
    out[2, 1] = 2.0 * (y * z + w * x)
    out[2, 2] = 1.0 - 2.0 * (x * x + y * y)


@inline
def q_slerp(aw, ax, ay, az, bw, bx, by, bz, u):
    """Spherical interpolation from a (u=0) to b (u=1) along the shortest arc.

    ``u`` outside [0, 1] extrapolates at the same angular rate. Result is unit length.
    """
    d = aw * bw + ax * bx + ay * by + az * bz
    if d < 0.0:
        bw, bx, by, bz, d = -bw, -bx, -by, -bz, -d
    if d > 1.0:
        d = 1.0
    theta = math.acos(d)
    if theta < _SLERP_LINEAR_BELOW:
        s0 = 1.0 - u
        s1 = u
    else:
        inv = 1.0 / math.sin(theta)
        s0 = math.sin((1.0 - u) * theta) * inv
        s1 = math.sin(u * theta) * inv
    w = s0 * aw + s1 * bw
    x = s0 * ax + s1 * bx
    y = s0 * ay + s1 * by
    z = s0 * az + s1 * bz
    n = 1.0 / math.sqrt(w * w + x * x + y * y + z * z)
    return w * n, x * n, y * n, z * n


# ---------------------------------------------------------------- kernels


@pjit
def _rotate_kernel(q, p, out):
    n = p.shape[0]
    step = 0 if q.shape[0] == 1 else 1  # one transform for all points, or one each
    for i in prange(n):
        j = i * step
        rx, ry, rz = q_rotate(q[j, 0], q[j, 1], q[j, 2], q[j, 3], p[i, 0], p[i, 1], p[i, 2])
        out[i, 0] = rx
        out[i, 1] = ry
        out[i, 2] = rz


@jit
def _unit_kernel(q, out):
    """``out`` = rows of ``q (M, 4)`` divided by their norms. Returns 0, or 1 for a
    non-finite value, 2 for a norm below 1e-12 (``out`` then incomplete)."""
    for i in range(q.shape[0]):
        for c in range(4):
            if not math.isfinite(q[i, c]):
                return 1
    for i in range(q.shape[0]):
        norm = math.sqrt(((q[i, 0] * q[i, 0] + q[i, 1] * q[i, 1]) + q[i, 2] * q[i, 2]) + q[i, 3] * q[i, 3])
        if norm < 1e-12:
            return 2
        for c in range(4):
            out[i, c] = q[i, c] / norm
    return 0


@jit
def _multiply_kernel(a, b, out):
    """Row i of ``out (N, 4)``: ``a[i] ⊗ b[i]``, a one-row ``a`` or ``b`` applying to all."""
    for i in range(out.shape[0]):
        ia = 0 if a.shape[0] == 1 else i
        ib = 0 if b.shape[0] == 1 else i
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = q_mul(
            a[ia, 0], a[ia, 1], a[ia, 2], a[ia, 3], b[ib, 0], b[ib, 1], b[ib, 2], b[ib, 3]
        )


@jit
def _rotate_pairs_kernel(q, v, out):
    """Row i of ``out (N, 3)``: ``v[i]`` rotated by ``q[i]``, a one-row ``q`` or ``v`` applying to all."""
    for i in range(out.shape[0]):
        iq = 0 if q.shape[0] == 1 else i
        iv = 0 if v.shape[0] == 1 else i
        out[i, 0], out[i, 1], out[i, 2] = q_rotate(q[iq, 0], q[iq, 1], q[iq, 2], q[iq, 3], v[iv, 0], v[iv, 1], v[iv, 2])


@jit
def _matrix_kernel(q, out):
    for i in range(q.shape[0]):
        q_to_matrix(q[i, 0], q[i, 1], q[i, 2], q[i, 3], out[i])


@jit
def _slerp_kernel(a, b, u, out):
    for i in range(u.shape[0]):
        ia = 0 if a.shape[0] == 1 else i
        ib = 0 if b.shape[0] == 1 else i
        w, x, y, z = q_slerp(
            a[ia, 0], a[ia, 1], a[ia, 2], a[ia, 3], b[ib, 0], b[ib, 1], b[ib, 2], b[ib, 3], u[i]
        )
        out[i, 0] = w
        out[i, 1] = x
        out[i, 2] = y
        out[i, 3] = z


# ---------------------------------------------------------------- public API


def as_quaternions(q: npt.ArrayLike, name: str = "q", normalize: bool = True) -> Quaternions:
    """Validate ``(..., 4)`` quaternions and return them as float64, unit length.

    Raises ``ValueError`` for a wrong shape, non-finite values or a (near) zero norm.
    Non-unit input is normalised when ``normalize`` is true, rejected otherwise.
    """
    arr = np.asarray(q, dtype=np.float64)
    if arr.ndim == 0 or arr.shape[-1] != 4:
        raise ValueError(f"{name} must have shape (..., 4) (w, x, y, z), got {arr.shape}")
    if normalize:  # the norm summed in NumPy's order (w² + x²) + y² + z², so the same bits
        out = np.empty(arr.shape)
        status = _unit_kernel(np.ascontiguousarray(arr).reshape(-1, 4), out.reshape(-1, 4))
        if status == 1:
            raise ValueError(f"{name} contains NaN or infinite values")
        if status == 2:
            raise ValueError(f"{name} contains a zero-norm quaternion")
        return out
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    norm = np.linalg.norm(arr, axis=-1, keepdims=True)
    if np.any(norm < 1e-12):
        raise ValueError(f"{name} contains a zero-norm quaternion")
    if not np.allclose(norm, 1.0, atol=1e-6):
        raise ValueError(f"{name} must be unit quaternions (norms {norm.min():.6g}..{norm.max():.6g})")
    return arr


def _pairs(a: np.ndarray, b: np.ndarray) -> tuple[tuple[int, ...], np.ndarray, np.ndarray]:
    """``(batch shape, a2, b2)``: float64 ``a (..., k)`` and ``b (..., l)`` broadcast over
    their leading axes, as C-contiguous ``(1 or M, k)`` and ``(1 or M, l)`` rows for the row
    kernels (a single row stays single; M = the batch size)."""
    sa, sb = a.shape[:-1], b.shape[:-1]
    shape = sa if sa == sb else np.broadcast_shapes(sa, sb)

    def rows(x: np.ndarray, own: tuple[int, ...]) -> np.ndarray:
        if own != shape and math.prod(own) != 1:
            x = np.broadcast_to(x, shape + x.shape[-1:])
        return np.ascontiguousarray(x).reshape(-1, x.shape[-1])

    return shape, rows(a, sa), rows(b, sb)


def multiply(a: Quaternions, b: Quaternions) -> Quaternions:
    """Hamilton product ``a ⊗ b``, broadcasting ``(..., 4)`` arrays."""
    shape, a2, b2 = _pairs(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    out = np.empty(shape + (4,))
    _multiply_kernel(a2, b2, out.reshape(-1, 4))
    return out


def rotate_broadcast(q: Quaternions, v: npt.ArrayLike) -> Float64Array:
    """Vectors ``v (..., 3)`` rotated by unit quaternions ``q (..., 4)``, broadcasting their
    leading axes (:func:`rotate` is the parallel one for many points)."""
    shape, q2, v2 = _pairs(np.asarray(q, dtype=np.float64), np.asarray(v, dtype=np.float64))
    out = np.empty(shape + (3,))
    _rotate_pairs_kernel(q2, v2, out.reshape(-1, 3))
    return out


def conjugate(q: Quaternions) -> Quaternions:
    """Conjugate (the inverse of a unit quaternion), ``(..., 4)``."""
    q = np.asarray(q, dtype=np.float64)
    return q * np.array([1.0, -1.0, -1.0, -1.0])


def rotate(q: Quaternions, points: Points3) -> Points3F64:
    """Rotate ``(N, 3)`` points by one ``(4,)`` quaternion or by ``(N, 4)`` quaternions.

    Returns ``(N, 3) float64``.
    """
    qa = as_quaternions(q).reshape(-1, 4)
    p = np.ascontiguousarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3), got {p.shape}")
    if qa.shape[0] not in (1, p.shape[0]):
        raise ValueError(f"need 1 or {p.shape[0]} quaternions for {p.shape[0]} points, got {qa.shape[0]}")
    out = np.empty_like(p)
    _rotate_kernel(np.ascontiguousarray(qa), p, out)
    return out


def to_matrix(q: Quaternions) -> RotationMatrices:
    """Rotation matrices ``(..., 3, 3)`` of unit quaternions ``(..., 4)``."""
    qa = as_quaternions(q)
    out = np.empty(qa.shape[:-1] + (3, 3))
    _matrix_kernel(np.ascontiguousarray(qa).reshape(-1, 4), out.reshape(-1, 3, 3))
    return out


def from_matrix(m: RotationMatrices) -> Quaternions:
    """Unit quaternions ``(..., 4)`` with ``w >= 0`` from rotation matrices ``(..., 3, 3)``.

    Uses Shepperd's method (largest diagonal pivot), stable for every rotation.
    """
    m = np.asarray(m, dtype=np.float64)
    if m.shape[-2:] != (3, 3):
        raise ValueError(f"rotation matrices must have shape (..., 3, 3), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("rotation matrices contain NaN or infinite values")
    flat = m.reshape(-1, 3, 3)
    tr = np.trace(flat, axis1=1, axis2=2)
    diag = np.stack([flat[:, 0, 0], flat[:, 1, 1], flat[:, 2, 2]], axis=1)
    pivot = np.argmax(np.concatenate([tr[:, None], diag], axis=1), axis=1)
    q = np.empty((len(flat), 4))
    for k in range(4):
        sel = pivot == k
        r = flat[sel]
        if k == 0:
            s = np.sqrt(1.0 + tr[sel]) * 2
            q[sel] = np.stack(
                [0.25 * s, (r[:, 2, 1] - r[:, 1, 2]) / s, (r[:, 0, 2] - r[:, 2, 0]) / s, (r[:, 1, 0] - r[:, 0, 1]) / s],
                axis=1,
            )
        else:
            i = k - 1
            j, l = (i + 1) % 3, (i + 2) % 3
            s = np.sqrt(1.0 + r[:, i, i] - r[:, j, j] - r[:, l, l]) * 2
            v = np.empty((len(r), 4))
            v[:, 0] = (r[:, l, j] - r[:, j, l]) / s
            v[:, 1 + i] = 0.25 * s
            v[:, 1 + j] = (r[:, j, i] + r[:, i, j]) / s
            v[:, 1 + l] = (r[:, l, i] + r[:, i, l]) / s
            q[sel] = v
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(m.shape[:-2] + (4,))


def slerp(a: Quaternions, b: Quaternions, u: Float64Array | float) -> Quaternions:
    """Shortest-arc spherical interpolation from ``a`` (u=0) to ``b`` (u=1).

    ``a`` and ``b`` are ``(4,)`` or ``(N, 4)``; ``u`` is a scalar or ``(N,)``. Returns
    ``(N, 4)`` (or ``(4,)`` when everything is scalar).
    """
    scalar = np.ndim(u) == 0 and np.ndim(a) == 1 and np.ndim(b) == 1
    qa = np.ascontiguousarray(as_quaternions(a, "a").reshape(-1, 4))
    qb = np.ascontiguousarray(as_quaternions(b, "b").reshape(-1, 4))
    uu = np.ascontiguousarray(np.atleast_1d(np.asarray(u, dtype=np.float64)))
    n = max(len(qa), len(qb), len(uu))
    if len(uu) == 1 and n > 1:
        uu = np.full(n, uu[0])
    for name, arr in (("a", qa), ("b", qb), ("u", uu)):
        if len(arr) not in (1, n):
            raise ValueError(f"slerp: {name} has {len(arr)} rows, expected 1 or {n}")
    if not np.all(np.isfinite(uu)):
        raise ValueError("slerp: u contains NaN or infinite values")
    out = np.empty((n, 4))
    _slerp_kernel(qa, qb, uu, out)
    return out[0] if scalar else out


def from_yaw(yaw_rad: Float64Array | float) -> Quaternions:
    """Quaternions of rotations about +z by ``yaw_rad``: shape ``(..., 4)``."""
    half = 0.5 * np.asarray(yaw_rad, dtype=np.float64)
    zero = np.zeros_like(half)
    return np.stack([np.cos(half), zero, zero, np.sin(half)], axis=-1)


def from_euler_zyx(
    roll_rad: Float64Array | float, pitch_rad: Float64Array | float, yaw_rad: Float64Array | float
) -> Quaternions:
    """Quaternion of intrinsic z-y'-x'' (yaw, then pitch, then roll) rotations: ``(..., 4)``.

    This is the aerospace / ISO 8855 convention ``R = Rz(yaw) · Ry(pitch) · Rx(roll)``.
    """
    r = 0.5 * np.asarray(roll_rad, dtype=np.float64)
    p = 0.5 * np.asarray(pitch_rad, dtype=np.float64)
    y = 0.5 * np.asarray(yaw_rad, dtype=np.float64)
    cr, sr, cp, sp, cy, sy = np.cos(r), np.sin(r), np.cos(p), np.sin(p), np.cos(y), np.sin(y)
    return np.stack(
        [
            cr * cp * cy + sr * sp * sy,
            sr * cp * cy - cr * sp * sy,
            cr * sp * cy + sr * cp * sy,
            cr * cp * sy - sr * sp * cy,
        ],
        axis=-1,
    )


def to_euler_zyx(q: Quaternions) -> Float64Array:
    """Inverse of :func:`from_euler_zyx`: ``(..., 3)`` (roll, pitch, yaw) in radians."""
    w, x, y, z = np.moveaxis(as_quaternions(q), -1, 0)
    roll = np.arctan2(2 * (w * x + y * z), 1 - 2 * (x * x + y * y))
    pitch = np.arcsin(np.clip(2 * (w * y - z * x), -1.0, 1.0))
    yaw = np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))
    return np.stack([roll, pitch, yaw], axis=-1)


def angle_between(a: Quaternions, b: Quaternions) -> Float64Array:
    """Rotation angle in radians of ``a⁻¹ ⊗ b`` (0..π), broadcasting ``(..., 4)``.

    Uses ``2 atan2(|v|, |w|)`` of the relative quaternion, accurate near zero (an arccos
    of the dot product is not).
    """
    rel = multiply(conjugate(as_quaternions(a)), as_quaternions(b))
    return 2.0 * np.arctan2(np.linalg.norm(rel[..., 1:], axis=-1), np.abs(rel[..., 0]))


def _warmup() -> None:
    as_quaternions(np.array([1.0, 0, 0, 0]))
    rotate(np.array([1.0, 0, 0, 0]), np.zeros((1, 3)))
    rotate_broadcast(multiply(np.array([1.0, 0, 0, 0]), np.array([1.0, 0, 0, 0])), np.zeros(3))
    to_matrix(np.array([1.0, 0, 0, 0]))
    slerp(np.array([1.0, 0, 0, 0]), np.array([0.0, 1, 0, 0]), np.array([0.5]))
