"""Bearings as world-frame rays, and bearing tracks (labelled contacts) interpolated in time.

A beam's azimuth is in the ego frame (x forward, y left, z up; from x towards y). A
horizontal array cannot tell the elevation, so a bearing is the half-plane of directions
``u(el) = (cos el cos az, cos el sin az, sin el)``; :func:`bearing_rays` picks, at the
bearing's time, the direction in it that is level in the world (z = 0, a contact on the sea
surface), or the ego-horizontal one (``level=False``). The ray starts at the array's
acoustic centre moved to the world by the ego pose at that time.

Ray points (:func:`ray_points`) are ordinary world points: pass them to
``engine.projection.project_points(..., frame="world")`` to draw a bearing in a camera.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.pose_track import Extrapolation, PoseTrack
from engine.typing import Float64Array, FloatArray, Points3F64, TimesNs


def bearing_rays(times_ns: TimesNs, azimuth_rad: FloatArray, world_from_ego: PoseTrack, array_centre_ego: FloatArray,
                 *, level: bool = True, extrapolate: Extrapolation = "none") -> tuple[Points3F64, Points3F64]:
    """World rays of bearings: ``origins (M, 3)`` (the array centre ``array_centre_ego (3,)`` at
    each time) and unit ``directions (M, 3)`` for ``azimuth_rad (M,)`` (ego) at ``times_ns (M,)``."""
    t = np.atleast_1d(np.asarray(times_ns))
    az = np.atleast_1d(np.asarray(azimuth_rad, np.float64))
    centre = np.asarray(array_centre_ego, np.float64)
    if t.shape != az.shape or t.ndim != 1:
        raise ValueError(f"times_ns and azimuth_rad must be (M,) alike, got {t.shape} and {az.shape}")
    if centre.shape != (3,) or not np.all(np.isfinite(np.r_[centre, az])):
        raise ValueError(f"array_centre_ego must be finite (3,) and azimuths finite, got {centre.shape}")
    pose = world_from_ego.interpolate(t, extrapolate)
    r = quat.to_matrix(pose.rotation).reshape(-1, 3, 3)
    elev = np.zeros_like(az)
    if level:
        tilt = r[:, 2, 0] * np.cos(az) + r[:, 2, 1] * np.sin(az)
        elev = np.arctan2(-tilt, r[:, 2, 2])
    u = np.stack([np.cos(elev) * np.cos(az), np.cos(elev) * np.sin(az), np.sin(elev)], axis=1)
    directions = np.einsum("mij,mj->mi", r, u)
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    origins = np.einsum("mij,j->mi", r, centre) + pose.translation.reshape(-1, 3)
    return origins, directions


def ray_points(origins: FloatArray, directions: FloatArray, ranges_m: FloatArray) -> Points3F64:
    """``(M, R, 3)`` points ``origin + range · direction`` of rays ``(M, 3)`` at ``ranges_m (R,)``."""
    o = np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    r = np.asarray(ranges_m, np.float64)
    if o.shape != d.shape or o.ndim != 2 or o.shape[1] != 3 or r.ndim != 1:
        raise ValueError(f"origins and directions must be (M, 3) alike and ranges (R,), got {o.shape}, {d.shape}, "
                         f"{r.shape}")
    return o[:, None, :] + r[None, :, None] * d[:, None, :]


def distance_to_rays(points: FloatArray, origins: FloatArray, directions: FloatArray) -> Float64Array:
    """``(M,)`` distance from each point ``(M, 3)`` to its ray (to the origin when it lies behind)."""
    p = np.asarray(points, np.float64) - np.asarray(origins, np.float64)
    d = np.asarray(directions, np.float64)
    along = np.maximum(np.sum(p * d, axis=1), 0.0)
    return np.linalg.norm(p - along[:, None] * d, axis=1)


@dataclass(frozen=True)
class BearingTrack:
    """A labelled contact: ego-frame ``azimuth_rad (K,)`` at keyframes ``timestamps_ns (K,)``
    (strictly increasing), in the band ``band_hz (2,)``, of ``category``."""

    track_id: str
    category: str
    timestamps_ns: TimesNs
    azimuth_rad: Float64Array
    band_hz: Float64Array
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        t = np.asarray(self.timestamps_ns)
        az = np.asarray(self.azimuth_rad, np.float64)
        band = np.asarray(self.band_hz, np.float64)
        if t.ndim != 1 or len(t) == 0 or not np.issubdtype(t.dtype, np.integer) or np.any(np.diff(t) <= 0):
            raise ValueError(f"track {self.track_id!r}: timestamps_ns must be strictly increasing int (K,), K >= 1")
        if az.shape != t.shape or not np.all(np.isfinite(az)):
            raise ValueError(f"track {self.track_id!r}: azimuth_rad must be finite ({len(t)},), got {az.shape}")
        if band.shape != (2,) or not (0 <= band[0] <= band[1]) or not np.all(np.isfinite(band)):
            raise ValueError(f"track {self.track_id!r}: band_hz must be [lo, hi] with 0 <= lo <= hi")
        object.__setattr__(self, "timestamps_ns", t.astype(np.int64))
        object.__setattr__(self, "azimuth_rad", az)
        object.__setattr__(self, "band_hz", band)

    def at(self, times_ns: TimesNs) -> tuple[Float64Array, np.ndarray]:
        """Azimuth at ``times_ns (Q,)`` (linear along the shorter arc between keyframes, wrapped to
        (−π, π]) and ``valid (Q,)``: inside the keyframe span (NaN outside)."""
        q = np.atleast_1d(np.asarray(times_ns, np.int64))
        ts, az = self.timestamps_ns, self.azimuth_rad
        valid = (q >= ts[0]) & (q <= ts[-1])
        if len(ts) == 1:
            out = np.full(len(q), az[0])
        else:
            k = np.clip(np.searchsorted(ts, q, side="right") - 1, 0, len(ts) - 2)
            u = (q - ts[k]).astype(np.float64) / (ts[k + 1] - ts[k]).astype(np.float64)
            out = az[k] + u * np.angle(np.exp(1j * (az[k + 1] - az[k])))
        return np.where(valid, np.angle(np.exp(1j * out)), np.nan), valid
