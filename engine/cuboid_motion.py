"""Motion-aware interpolation of cuboid tracks: the ``"ctrv"`` and ``"hermite"`` modes.

Linear interpolation (centre lerp + rotation slerp, :mod:`engine.cuboid_interp`) cuts the
corner of a turn: a car at 10 m/s turning at 0.3 rad/s with keyframes 1 s apart is ~0.37 m
inside its path mid-way. A track may instead name a motion-aware mode (per track; linear
stays the default). Inside the track's keyframe range:

- ``"ctrv"`` (constant turn rate and velocity): between keyframes k and k+1 the centre moves
  at constant speed along the circular arc from ``c_k`` to ``c_{k+1}`` that turns by the
  change ``Δψ`` of the box heading (the box x axis in the horizontal plane, shortest way),
  height linear; the rotation is still the slerp (for yaw-only boxes the heading then turns
  at the same constant rate, i.e. follows the arc). Exact for an object driving at constant
  speed and yaw rate; linear where ``Δψ`` = 0.
- ``"hermite"``: the centre follows the cubic Hermite curve through the keyframes whose
  tangents are the three-point (parabola) derivatives over neighbouring keyframes (one-sided
  parabolas at the ends; a two-keyframe track is linear). The heading follows the path:
  ``rotation = Rz(δ(u)) ⊗ slerp``, where ``δ`` is the curve's heading minus the heading
  interpolated linearly between its values at the two keyframes (0 at both keyframes, so
  keyframes are exact). Where the object is nearly still (a tangent below 0.5 m/s) or the
  tangents point against the chord (a reversal) the rotation is the plain slerp.

Outside the keyframe range the extrapolation policy applies as for linear tracks. The
interpolation kernel (:mod:`engine.cuboid_interp`) calls :func:`motion_box` after the linear
box of a motion-aware track, while the box is in cache; a linear track costs one test.
"""

from __future__ import annotations

import math

import numpy as np

from engine._jit import inline
from engine.pose_track import sin_quadrant, slerp_combine

INTERPOLATION = {"linear": 0, "ctrv": 1, "hermite": 2}
MIN_HEADING_SPEED_MPS = 0.5

# columns of the per-interval motion table (row k: keyframe k → k+1)
_DPSI, _A, _B = 0, 1, 2  # ctrv: turn angle, arc radius · (cos, sin) of the start heading
_T0, _T1 = 3, 6  # hermite: tangents at k and k+1 times Δt (3 each)
_FOLLOW = 9  # hermite: 1.0 where the heading follows the path
_COS_H0, _SIN_H0, _DH = 10, 11, 12  # hermite: path heading at k (cos, sin), its change to k+1
_MOTION_COLS = 13

# columns of engine.cuboid_interp's interval table this module reads
_TH, _INV_SIN, _INV_DT, _C0, _DC, _Q0, _Q1 = 0, 1, 2, 3, 6, 15, 19


def _wrap(a: np.ndarray) -> np.ndarray:
    return np.mod(np.asarray(a) + np.pi, 2.0 * np.pi) - np.pi


def heading(rotations: np.ndarray) -> np.ndarray:
    """``(K,)`` heading rad of boxes ``rotations (K, 4)`` wxyz: the box x axis in the horizontal plane."""
    w, x, y, z = rotations.T
    return np.arctan2(2.0 * (x * y + w * z), 1.0 - 2.0 * (y * y + z * z))


def _tangents(ts: np.ndarray, centers: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``(K, 3)`` m/s: per keyframe the derivative of the parabola through it and its two
    neighbours of the same track (one-sided at the ends; the chord slope for two keyframes)."""
    k = len(ts)
    t = ts.astype(np.float64) * 1e-9
    lengths = np.diff(offsets)
    first = np.zeros(k, bool)
    last = np.zeros(k, bool)
    first[offsets[:-1][lengths > 0]] = True
    last[offsets[1:][lengths > 0] - 1] = True
    # for each key j a centre index i (j's own, or the next/previous one at an end) and the
    # parabola through i-1, i, i+1 differentiated at t[j]
    i = np.arange(k)
    i = np.where(first, i + 1, np.where(last, i - 1, i))
    out = np.zeros((k, 3))
    three = (lengths >= 3)[np.repeat(np.arange(len(lengths)), lengths)]
    two = (lengths == 2)[np.repeat(np.arange(len(lengths)), lengths)]
    j = np.flatnonzero(three)
    if len(j):
        a, b, c = i[j] - 1, i[j], i[j] + 1
        ta, tb, tc, tj = t[a], t[b], t[c], t[j]
        # derivative of the Lagrange parabola at tj
        la = ((tj - tb) + (tj - tc)) / ((ta - tb) * (ta - tc))
        lb = ((tj - ta) + (tj - tc)) / ((tb - ta) * (tb - tc))
        lc = ((tj - ta) + (tj - tb)) / ((tc - ta) * (tc - tb))
        out[j] = la[:, None] * centers[a] + lb[:, None] * centers[b] + lc[:, None] * centers[c]
    j = np.flatnonzero(two)
    if len(j):
        other = np.where(first[j], j + 1, j - 1)
        out[j] = (centers[other] - centers[j]) / (t[other] - t[j])[:, None]
    return out


def motion_table(ts: np.ndarray, centers: np.ndarray, rotations: np.ndarray, offsets: np.ndarray,
                 modes: np.ndarray) -> np.ndarray:
    """``(K-1, 13) float64``: per keyframe interval the ctrv arc and the hermite tangents
    (see the column constants), for tracks of packed keyframes ``ts (K,)``, ``centers (K, 3)``,
    ``rotations (K, 4)``, ``offsets (N+1,)``. Rows of linear tracks and rows straddling two
    tracks are zero."""
    k = max(len(ts) - 1, 0)
    mt = np.zeros((k, _MOTION_COLS))
    if k == 0 or not np.any(modes):
        return mt
    track_of = np.repeat(np.arange(len(modes)), np.diff(offsets))[:k]
    inside = np.ones(k, bool)
    inside[offsets[1:-1][offsets[1:-1] <= k] - 1] = False  # last key of a track → next track
    dt = np.diff(ts).astype(np.float64) * 1e-9
    d = centers[1:] - centers[:k]
    psi = heading(rotations)
    rows = np.flatnonzero(inside & (modes[track_of] == INTERPOLATION["ctrv"]))
    dpsi = _wrap(psi[rows + 1] - psi[rows])
    chord = np.hypot(d[rows, 0], d[rows, 1])
    start = np.arctan2(d[rows, 1], d[rows, 0]) - 0.5 * dpsi
    radius = np.divide(chord, 2.0 * np.sin(0.5 * dpsi), out=np.zeros_like(chord), where=dpsi != 0.0)
    mt[rows, _DPSI] = np.where(np.abs(dpsi) > 1e-12, dpsi, 0.0)
    mt[rows, _A] = radius * np.cos(start)
    mt[rows, _B] = radius * np.sin(start)
    rows = np.flatnonzero(inside & (modes[track_of] == INTERPOLATION["hermite"]))
    if len(rows):
        m = _tangents(ts, centers, offsets)
        t0 = m[rows] * dt[rows, None]
        t1 = m[rows + 1] * dt[rows, None]
        mt[rows, _T0:_T0 + 3] = t0
        mt[rows, _T1:_T1 + 3] = t1
        slow = MIN_HEADING_SPEED_MPS * dt[rows]
        fwd = (np.einsum("ij,ij->i", t0[:, :2], d[rows, :2]) > 0) & (np.einsum("ij,ij->i", t1[:, :2], d[rows, :2]) > 0)
        follow = fwd & (np.hypot(t0[:, 0], t0[:, 1]) >= slow) & (np.hypot(t1[:, 0], t1[:, 1]) >= slow)
        h0 = np.arctan2(t0[:, 1], t0[:, 0])
        mt[rows, _FOLLOW] = follow
        mt[rows, _COS_H0] = np.cos(h0)
        mt[rows, _SIN_H0] = np.sin(h0)
        mt[rows, _DH] = _wrap(np.arctan2(t1[:, 1], t1[:, 0]) - h0)
    return mt


@inline
def _half_turn(x):
    """``(cos x, sin x)`` for ``|x| <= π/2`` by :func:`engine.pose_track.sin_quadrant`."""
    a = abs(x)
    s = sin_quadrant(a)
    return sin_quadrant(0.5 * math.pi - a), (s if x >= 0.0 else -s)


@inline
def motion_box(iv, mt, mode, k, u, s0, s1, box, out_c, out_q):
    """Overwrite the centre (and for hermite the rotation) of output box ``box`` with fraction
    ``u`` of interval ``k`` of a ``mode`` (1 ctrv, 2 hermite) track; ``iv`` is
    :mod:`engine.cuboid_interp`'s interval table, ``mt`` :func:`motion_table`'s, ``s0, s1``
    the interval's slerp weights at ``u`` (the linear box's, computed once)."""
    if mode == 1:  # ctrv: the arc in x, y; z linear
        c, s = _half_turn(0.5 * u * mt[k, _DPSI])  # |Δψ| <= π
        sin_a = 2.0 * s * c
        vers = 2.0 * s * s  # 1 − cos a
        out_c[box, 0] = iv[k, _C0] + (mt[k, _A] * sin_a - mt[k, _B] * vers if mt[k, _DPSI] != 0.0
                                      else u * iv[k, _DC])
        out_c[box, 1] = iv[k, _C0 + 1] + (mt[k, _B] * sin_a + mt[k, _A] * vers if mt[k, _DPSI] != 0.0
                                          else u * iv[k, _DC + 1])
        out_c[box, 2] = iv[k, _C0 + 2] + u * iv[k, _DC + 2]
        return
    # hermite: p0 + d (3u² − 2u³) + T0 (u³ − 2u² + u) + T1 (u³ − u²)
    u2 = u * u
    u3 = u2 * u
    hd = 3.0 * u2 - 2.0 * u3
    h0 = u3 - 2.0 * u2 + u
    h1 = u3 - u2
    for c in range(3):
        out_c[box, c] = iv[k, _C0 + c] + hd * iv[k, _DC + c] + h0 * mt[k, _T0 + c] + h1 * mt[k, _T1 + c]
    w, x, y, z = slerp_combine(
        s0, s1, iv[k, _TH], iv[k, _Q0], iv[k, _Q0 + 1], iv[k, _Q0 + 2], iv[k, _Q0 + 3],
        iv[k, _Q1], iv[k, _Q1 + 1], iv[k, _Q1 + 2], iv[k, _Q1 + 3],
    )
    if mt[k, _FOLLOW] != 0.0:
        # the curve's direction d (6u − 6u²) + T0 (3u² − 4u + 1) + T1 (3u² − 2u), turned by −h0
        gd = 6.0 * u - 6.0 * u2
        g0 = 3.0 * u2 - 4.0 * u + 1.0
        g1 = 3.0 * u2 - 2.0 * u
        vx = gd * iv[k, _DC] + g0 * mt[k, _T0] + g1 * mt[k, _T1]
        vy = gd * iv[k, _DC + 1] + g0 * mt[k, _T0 + 1] + g1 * mt[k, _T1 + 1]
        rx = vx * mt[k, _COS_H0] + vy * mt[k, _SIN_H0]
        ry = vy * mt[k, _COS_H0] - vx * mt[k, _SIN_H0]
        # half the angle α of (rx, ry): the direction of (|r| + rx, ry)
        hx = math.sqrt(rx * rx + ry * ry) + rx
        norm = math.sqrt(hx * hx + ry * ry)
        if norm > 0.0:
            ca = hx / norm
            sa = ry / norm
            cb, sb = _half_turn(0.5 * u * mt[k, _DH])  # |Δh| <= π
            # Rz(α − u Δh) ⊗ slerp
            cz = ca * cb + sa * sb
            sz = sa * cb - ca * sb
            w, x, y, z = cz * w - sz * z, cz * x - sz * y, cz * y + sz * x, cz * z + sz * w
    out_q[box, 0] = w
    out_q[box, 1] = x
    out_q[box, 2] = y
    out_q[box, 3] = z
