"""Rigid transforms (SE3) as a rotation quaternion plus a translation, batched.

``SE3`` holds ``rotation (..., 4)`` (w, x, y, z) and ``translation (..., 3)`` in float64,
with any number of leading batch axes (none for a single transform). Names follow
``dst_from_src``: ``world_from_lidar = world_from_ego @ ego_from_lidar`` maps lidar-frame
points into the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine import quaternion as quat
from engine._jit import pjit, prange
from engine.quaternion import q_rotate
from engine.typing import Float64Array, Points3, Points3F64, Quaternions, Vectors3


@pjit
def _apply_kernel(q, t, p, out):
    n = p.shape[0]
    step = 0 if q.shape[0] == 1 else 1  # one transform for all points, or one each
    for i in prange(n):
        j = i * step
        rx, ry, rz = q_rotate(q[j, 0], q[j, 1], q[j, 2], q[j, 3], p[i, 0], p[i, 1], p[i, 2])
        out[i, 0] = rx + t[j, 0]
        out[i, 1] = ry + t[j, 1]
        out[i, 2] = rz + t[j, 2]


@dataclass(frozen=True, eq=False)
class SE3:
    """A rigid transform ``p_dst = R p_src + t``, or a batch of them.

    Attributes:
        rotation: ``(..., 4) float64`` unit quaternions (w, x, y, z); normalised on construction.
        translation: ``(..., 3) float64`` metres.
    """

    rotation: Quaternions
    translation: Vectors3

    def __post_init__(self) -> None:
        q = quat.as_quaternions(self.rotation, "SE3.rotation")
        t = np.asarray(self.translation, dtype=np.float64)
        if t.ndim == 0 or t.shape[-1] != 3:
            raise ValueError(f"SE3.translation must have shape (..., 3), got {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("SE3.translation contains NaN or infinite values")
        if q.shape[:-1] != t.shape[:-1]:
            raise ValueError(
                f"SE3 batch shapes differ: rotation {q.shape} vs translation {t.shape}"
            )
        q.setflags(write=False)
        t = t.copy()
        t.setflags(write=False)
        object.__setattr__(self, "rotation", q)
        object.__setattr__(self, "translation", t)

    # ---------------------------------------------------------------- constructors

    @staticmethod
    def _trusted(rotation: np.ndarray, translation: np.ndarray) -> "SE3":
        """Wrap kernel outputs that are unit, finite and float64 by construction (no checks)."""
        self = object.__new__(SE3)
        object.__setattr__(self, "rotation", rotation)
        object.__setattr__(self, "translation", translation)
        return self

    @staticmethod
    def identity(n: int | None = None) -> "SE3":
        """The identity, or ``n`` identities."""
        shape = () if n is None else (n,)
        q = np.zeros(shape + (4,))
        q[..., 0] = 1.0
        return SE3(q, np.zeros(shape + (3,)))

    @staticmethod
    def from_matrix(m: Float64Array) -> "SE3":
        """From homogeneous ``(..., 4, 4)`` matrices (the last row is not checked)."""
        m = np.asarray(m, dtype=np.float64)
        if m.shape[-2:] != (4, 4):
            raise ValueError(f"SE3.from_matrix needs (..., 4, 4), got {m.shape}")
        return SE3(quat.from_matrix(m[..., :3, :3]), m[..., :3, 3])

    # ---------------------------------------------------------------- algebra

    @property
    def shape(self) -> tuple[int, ...]:
        return self.rotation.shape[:-1]

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("a single SE3 has no len()")
        return self.shape[0]

    def __getitem__(self, index) -> "SE3":
        return SE3(self.rotation[index], self.translation[index])

    def __matmul__(self, other: "SE3") -> "SE3":
        """Composition ``self ∘ other`` (apply ``other`` first), broadcasting batches."""
        if not isinstance(other, SE3):
            return NotImplemented
        q = quat.multiply(self.rotation, other.rotation)
        t = quat.rotate_broadcast(self.rotation, other.translation) + self.translation
        return SE3(q, t)

    def inverse(self) -> "SE3":
        qi = quat.conjugate(self.rotation)
        return SE3(qi, -quat.rotate_broadcast(qi, self.translation))

    def as_matrix(self) -> Float64Array:
        """Homogeneous matrices ``(..., 4, 4) float64``."""
        m = np.zeros(self.shape + (4, 4))
        m[..., :3, :3] = quat.to_matrix(self.rotation)
        m[..., :3, 3] = self.translation
        m[..., 3, 3] = 1.0
        return m

    def apply(self, points: Points3) -> Points3F64:
        """Transform ``(N, 3)`` points: by one transform, or row ``i`` by transform ``i``.

        Computes in float64 and returns ``(N, 3) float64`` (world coordinates need it).
        """
        p = np.ascontiguousarray(points, dtype=np.float64)
        if p.size == 0:
            p = p.reshape(0, 3)
        if p.ndim != 2 or p.shape[1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {p.shape}")
        q = np.ascontiguousarray(self.rotation.reshape(-1, 4))
        t = np.ascontiguousarray(self.translation.reshape(-1, 3))
        if len(q) not in (1, len(p)):
            raise ValueError(f"{len(q)} transforms cannot apply to {len(p)} points (need 1 or {len(p)})")
        out = np.empty_like(p)
        _apply_kernel(q, t, p, out)
        return out

    def allclose(self, other: "SE3", atol: float = 1e-9) -> bool:
        """Equal as transforms (q and −q are the same rotation)."""
        same_t = np.allclose(self.translation, other.translation, atol=atol)
        return bool(same_t and np.all(quat.angle_between(self.rotation, other.rotation) <= atol * 10))


def _warmup() -> None:
    SE3.identity().apply(np.zeros((1, 3)))
