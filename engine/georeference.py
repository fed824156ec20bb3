"""Georeferencing for marine sensors: vessel samples → PoseTrack, soundings → world points.

Frames: the vessel frame (Kongsberg) is x forward, y starboard, z down; the ego frame is
x forward, y left, z up; the world frame is ENU around an :class:`engine.geodesy.Origin`.
Attitude follows Kongsberg: roll positive port up, pitch positive bow up, heading clockwise
from north, heave positive down. Every geodetic step is exact (ECEF round trip), so points
far from the origin keep the Earth's curvature.
"""

from __future__ import annotations

import math

import numpy as np

from engine import quaternion as quat
from engine._jit import pjit, prange
from engine.geodesy import (
    Origin,
    _geodetic_arrays,
    ecef_from_enu_rotate,
    enu_from_ecef_rotate,
    enu_rotation,
    geodetic_to_ecef_scalar,
    geodetic_to_enu,
)
from engine.pose_track import EXTRAPOLATION_CODES, Extrapolation, PoseTrack

_DEG = math.pi / 180.0
# ego (x fwd, y left, z up) → vessel (x fwd, y stbd, z down), and NED → ENU axes
_FRD_FROM_FLU = np.diag([1.0, -1.0, -1.0])
_ENU_FROM_NED = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])


def vessel_to_ego(xyz: np.ndarray) -> np.ndarray:
    """Vessel-frame points ``(N, 3)`` (x fwd, y stbd, z down) → ego ``(x, −y, −z)``, same dtype."""
    arr = np.asarray(xyz)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"xyz must have shape (N, 3), got {arr.shape}")
    out = np.array(arr, copy=True, order="C")
    out[:, 1:] *= -1
    return out


def vessel_pose_track(time_ns: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, height_m: np.ndarray,
                      roll_deg: np.ndarray, pitch_deg: np.ndarray, heading_deg: np.ndarray, origin: Origin,
                      heave_m: np.ndarray | None = None) -> PoseTrack:
    """``world_from_ego`` poses of the vessel reference point from attitude/position samples.

    All inputs ``(K,)``: ``time_ns`` int64, angles in degrees (Kongsberg signs), ``height_m``
    above the ellipsoid. ``heave_m`` (positive down), when given, is subtracted from the
    height (use it with a constant ``height_m`` where no GNSS height is logged). Samples
    are sorted by time; repeated timestamps keep the first sample. Every sample becomes a
    pose: drop the ones a sensor flags invalid first (e.g.
    :attr:`formats.kmall_sensors.SkmSamples.pose_valid`).
    """
    t = np.asarray(time_ns)
    if t.ndim != 1 or len(t) == 0 or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"time_ns must be a non-empty (K,) integer array, got {t.dtype} {t.shape}")
    k = len(t)
    cols = {}
    for name, arr in (("lat_deg", lat_deg), ("lon_deg", lon_deg), ("height_m", height_m), ("roll_deg", roll_deg),
                      ("pitch_deg", pitch_deg), ("heading_deg", heading_deg), ("heave_m", heave_m)):
        if arr is None:
            continue
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim == 0:
            a = np.broadcast_to(a, (k,))
        if a.shape != (k,):
            raise ValueError(f"{name} must have shape ({k},) like time_ns, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        cols[name] = a
    order = np.argsort(t, kind="stable")
    t = t[order].astype(np.int64)
    keep = np.concatenate([[True], np.diff(t) > 0])
    sel = order[keep]
    c = {name: a[sel] for name, a in cols.items()}
    height = c["height_m"] - c["heave_m"] if "heave_m" in c else c["height_m"]
    lat, lon, height, _ = _geodetic_arrays(c["lat_deg"], c["lon_deg"], height)
    translation = geodetic_to_enu(lat, lon, height, origin)
    world_from_ego = world_from_ego_rotation(lat, lon, c["roll_deg"], c["pitch_deg"], c["heading_deg"], origin)
    return PoseTrack(t[keep], quat.from_matrix(world_from_ego), translation)


def world_from_ego_rotation(lat_deg: np.ndarray, lon_deg: np.ndarray, roll_deg: np.ndarray,
                            pitch_deg: np.ndarray, heading_deg: np.ndarray, origin: Origin) -> np.ndarray:
    """``(K, 3, 3)`` rotations taking ego vectors (x fwd, y left, z up) of a vessel at
    ``(lat, lon)`` with Kongsberg attitude (degrees) into the world ENU axes at ``origin``:
    ``world_from_ecef · ecef_from_local_enu · enu_from_ned · R_z(heading) R_y(pitch) R_x(roll) · frd_from_flu``.
    """
    ned_from_frd = quat.to_matrix(quat.from_euler_zyx(np.radians(roll_deg), np.radians(pitch_deg),
                                                      np.radians(heading_deg)))
    ecef_from_local = np.transpose(np.stack([enu_rotation(a, b) for a, b in
                                             zip(np.atleast_1d(lat_deg), np.atleast_1d(lon_deg))]), (0, 2, 1))
    return origin.enu_from_ecef @ ecef_from_local @ _ENU_FROM_NED @ ned_from_frd @ _FRD_FROM_FLU


FIX_INTERPOLATED, FIX_EXTRAPOLATED, FIX_BEYOND_SPAN, FIX_IN_GAP = 0, 1, -1, -2


def interpolate_fixes(fix_time_ns: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, query_ns: np.ndarray,
                      extrapolate: Extrapolation = "none", max_extrapolation_ns: int = 0,
                      max_gap_ns: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latitude/longitude at ``query_ns`` from position fixes, under the pose track's policy.

    Fixes ``(K,)`` (``int64`` ns, degrees; sorted here, repeated times keep the first) are
    interpolated linearly (longitude unwrapped across ±180°). A query outside the fixes'
    span is refused under ``extrapolate="none"`` (:class:`engine.pose_track.PoseTrack`'s
    default), and under ``"hold"`` (the end fix) or ``"linear"`` (the end interval
    continued) when it lies more than ``max_extrapolation_ns`` beyond the span. A query
    between two fixes more than ``max_gap_ns`` apart is refused (no fix near it).

    Returns ``lat (Q,) float64``, ``lon (Q,) float64`` (NaN where refused) and
    ``status (Q,) int8``: :data:`FIX_INTERPOLATED`, :data:`FIX_EXTRAPOLATED`,
    :data:`FIX_BEYOND_SPAN` or :data:`FIX_IN_GAP`.
    """
    if extrapolate not in EXTRAPOLATION_CODES:
        raise ValueError(f"extrapolate must be one of {sorted(EXTRAPOLATION_CODES)}, got {extrapolate!r}")
    t = np.asarray(fix_time_ns)
    q = np.asarray(query_ns)
    for name, arr in (("fix_time_ns", t), ("query_ns", q)):
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{name} must be a (K,) integer array, got {arr.dtype} {arr.shape}")
    if len(t) == 0:
        raise ValueError("interpolate_fixes needs at least one fix")
    if max_extrapolation_ns < 0 or (max_gap_ns is not None and max_gap_ns <= 0):
        raise ValueError(f"max_extrapolation_ns must be >= 0 and max_gap_ns > 0, got {max_extrapolation_ns}, "
                         f"{max_gap_ns}")
    lat, lon, _, _ = _geodetic_arrays(lat_deg, lon_deg, 0.0)
    if lat.shape != t.shape:
        raise ValueError(f"lat_deg/lon_deg must have shape {t.shape} like fix_time_ns, got {lat.shape}")
    order = np.argsort(t, kind="stable")
    t = t[order].astype(np.int64)
    first = np.concatenate([[True], np.diff(t) > 0])
    t, lat, lon = t[first], lat[order][first], np.unwrap(lon[order][first], period=360.0)
    q = q.astype(np.int64)
    tf, qf = (t - t[0]).astype(np.float64), (q - t[0]).astype(np.float64)  # exact int64 differences
    out_lat, out_lon = np.interp(qf, tf, lat), np.interp(qf, tf, lon)
    status = np.zeros(len(q), np.int8)
    beyond = np.where(q < t[0], t[0] - q, np.where(q > t[-1], q - t[-1], 0))
    outside = beyond > 0
    if extrapolate == "linear" and len(t) > 1:
        for side, (a, b) in ((q < t[0], (0, 1)), (q > t[-1], (-2, -1))):
            u = (qf[side] - tf[a]) / (tf[b] - tf[a])
            out_lat[side] = lat[a] + u * (lat[b] - lat[a])
            out_lon[side] = lon[a] + u * (lon[b] - lon[a])
    status[outside] = FIX_EXTRAPOLATED
    status[outside & ((beyond > max_extrapolation_ns) | (extrapolate == "none"))] = FIX_BEYOND_SPAN
    if max_gap_ns is not None and len(t) > 1:
        k = np.clip(np.searchsorted(t, q, side="right") - 1, 0, len(t) - 2)
        on_fix = (t[k] == q) | (t[k + 1] == q)
        status[~outside & ~on_fix & (t[k + 1] - t[k] > max_gap_ns)] = FIX_IN_GAP
    refused = status < 0
    out_lat[refused] = np.nan
    out_lon[refused] = np.nan
    out_lon = (out_lon + 180.0) % 360.0 - 180.0
    return out_lat, out_lon, status


@pjit
def _ping_frames(lat, lon, heading, base_h, out):
    """Per ping: base ECEF (3), ecef_from_enu columns at the ping (9), sin/cos heading (2)."""
    for p in prange(lat.shape[0]):
        la = lat[p] * _DEG
        lo = lon[p] * _DEG
        x, y, z = geodetic_to_ecef_scalar(la, lo, base_h[p])
        out[p, 0] = x
        out[p, 1] = y
        out[p, 2] = z
        for c in range(3):
            e = 1.0 if c == 0 else 0.0
            n = 1.0 if c == 1 else 0.0
            u = 1.0 if c == 2 else 0.0
            dx, dy, dz = ecef_from_enu_rotate(la, lo, e, n, u)
            out[p, 3 + 3 * c] = dx
            out[p, 4 + 3 * c] = dy
            out[p, 5 + 3 * c] = dz
        out[p, 12] = math.sin(heading[p] * _DEG)
        out[p, 13] = math.cos(heading[p] * _DEG)


@pjit
def _soundings_kernel(frames, z_off, ping, x, y, z, olat, olon, ox, oy, oz, out):
    for i in prange(x.shape[0]):
        p = ping[i]
        sh = frames[p, 12]
        ch = frames[p, 13]
        xi = np.float64(x[i])
        yi = np.float64(y[i])
        e = xi * sh + yi * ch
        n = xi * ch - yi * sh
        u = z_off[p] - np.float64(z[i])
        gx = frames[p, 0] + e * frames[p, 3] + n * frames[p, 6] + u * frames[p, 9]
        gy = frames[p, 1] + e * frames[p, 4] + n * frames[p, 7] + u * frames[p, 10]
        gz = frames[p, 2] + e * frames[p, 5] + n * frames[p, 8] + u * frames[p, 11]
        we, wn, wu = enu_from_ecef_rotate(olat, olon, gx - ox, gy - oy, gz - oz)
        out[i, 0] = we
        out[i, 1] = wn
        out[i, 2] = wu


def soundings_to_world(lat_deg: np.ndarray, lon_deg: np.ndarray, heading_deg: np.ndarray,
                       base_height_m: np.ndarray, z_offset_m: np.ndarray, sounding_start: np.ndarray,
                       x_m: np.ndarray, y_m: np.ndarray, z_m: np.ndarray, origin: Origin) -> np.ndarray:
    """World ENU positions ``(N, 3) float64`` of levelled, heading-aligned soundings.

    Per ping ``(P,)``: reference-point ``lat_deg``/``lon_deg``, ``heading_deg``, and a
    vertical base: the point ``(lat, lon, base_height_m)`` is where ``z = z_offset_m``
    (e.g. the waterline: base height of the water surface, ``z_offset_m`` the waterline's
    z re the reference point). ``sounding_start (P + 1,)``: ping p owns soundings
    ``start[p]:start[p+1]``. Per sounding ``(N,)``: ``x_m`` forward, ``y_m`` starboard,
    ``z_m`` down (Kongsberg SCS). Each sounding sits at the local-level offset
    ``(east, north, up) = R(heading)(x, y), z_offset − z`` from the base point.
    """
    lat, lon, base, _ = _geodetic_arrays(lat_deg, lon_deg, base_height_m)
    p = len(lat)
    per_ping = {}
    for name, arr in (("heading_deg", heading_deg), ("z_offset_m", z_offset_m)):
        a = np.ascontiguousarray(arr, dtype=np.float64)
        if a.shape != (p,):
            raise ValueError(f"{name} must have shape ({p},) like lat_deg, got {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} contains NaN or infinite values")
        per_ping[name] = a
    start = np.asarray(sounding_start, dtype=np.int64)
    if start.shape != (p + 1,) or (p and start[0] != 0) or np.any(np.diff(start) < 0):
        raise ValueError(f"sounding_start must be ({p + 1},) non-decreasing from 0, got shape {start.shape}")
    n = int(start[-1]) if p else 0
    pts = []
    for name, arr in (("x_m", x_m), ("y_m", y_m), ("z_m", z_m)):
        a = np.ascontiguousarray(arr, dtype=np.float32)
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},) per sounding_start, got {a.shape}")
        pts.append(a)
    frames = np.empty((p, 14))
    _ping_frames(lat, lon, per_ping["heading_deg"], base, frames)
    ping = np.repeat(np.arange(p, dtype=np.int64), np.diff(start))
    out = np.empty((n, 3))
    o = origin.ecef
    _soundings_kernel(frames, per_ping["z_offset_m"], ping, *pts,
                      origin.lat_deg * _DEG, origin.lon_deg * _DEG, o[0], o[1], o[2], out)
    return out


@pjit
def _fls_count(image, threshold, counts):
    for r in prange(image.shape[0]):
        c = 0
        for b in range(image.shape[1]):
            if image[r, b] >= threshold:
                c += 1
        counts[r] = c


@pjit
def _fls_fill(image, threshold, sin_b, cos_b, range_res, first, xyz, intensity, row, col):
    for r in prange(image.shape[0]):
        k = first[r]
        rng = r * range_res
        for b in range(image.shape[1]):
            v = image[r, b]
            if v >= threshold:
                xyz[k, 0] = rng * cos_b[b]
                xyz[k, 1] = -rng * sin_b[b]
                xyz[k, 2] = 0.0
                intensity[k] = v
                row[k] = r
                col[k] = b
                k += 1


def fls_image_to_points(image: np.ndarray, bearings_deg: np.ndarray, range_resolution_m: float,
                        threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Forward-looking sonar polar image → points on the beams' centre plane.

    ``image (R, B)`` (uint8/uint16/float): rows are range bins (bin r at ``r ×
    range_resolution_m``), columns beams at ``bearings_deg (B,)`` (positive to starboard).
    Pixels with value ``>= threshold`` become points in the sonar frame (x along the
    boresight, y left, z up; elevation unknown, so z = 0). Returns ``xyz (M, 3) float32``,
    ``intensity (M,) float32``, ``row (M,) int32``, ``col (M,) int32`` in row-major order.
    """
    img = np.ascontiguousarray(image)
    if img.ndim != 2:
        raise ValueError(f"image must be (R, B), got shape {img.shape}")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        img = img.astype(np.float32)
    b = np.ascontiguousarray(bearings_deg, dtype=np.float64)
    if b.shape != (img.shape[1],):
        raise ValueError(f"bearings_deg must have shape ({img.shape[1]},) like the image's beams, got {b.shape}")
    if not (math.isfinite(range_resolution_m) and range_resolution_m > 0):
        raise ValueError(f"range_resolution_m must be positive and finite, got {range_resolution_m}")
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if img.dtype.kind == "u":  # integer pixels: v >= threshold  <=>  v >= ceil(threshold)
        t = math.ceil(threshold)
        if t > np.iinfo(img.dtype).max:
            z = np.zeros(0, np.int32)
            return np.zeros((0, 3), np.float32), np.zeros(0, np.float32), z, z.copy()
        thr = img.dtype.type(max(t, 0))
    else:
        thr = np.float32(threshold)
    counts = np.empty(img.shape[0], np.int64)
    _fls_count(img, thr, counts)
    first = np.zeros(img.shape[0], np.int64)
    np.cumsum(counts[:-1], out=first[1:])
    m = int(counts.sum())
    xyz = np.empty((m, 3), np.float32)
    intensity = np.empty(m, np.float32)
    row = np.empty(m, np.int32)
    col = np.empty(m, np.int32)
    _fls_fill(img, thr, np.sin(np.radians(b)), np.cos(np.radians(b)), float(range_resolution_m), first,
              xyz, intensity, row, col)
    return xyz, intensity, row, col


def _warmup() -> None:
    origin = Origin(50.0, 3.0, 0.0)
    one = np.ones(1)
    soundings_to_world(one * 50, one * 3, one, one, one, np.array([0, 1]), one, one, one, origin)
    vessel_pose_track(np.array([0, 1]), np.full(2, 50.0), np.full(2, 3.0), np.zeros(2), np.zeros(2),
                      np.zeros(2), np.zeros(2), origin)
    for dtype in (np.uint8, np.uint16):
        fls_image_to_points(np.ones((2, 2), dtype), np.zeros(2), 0.1, 1)

