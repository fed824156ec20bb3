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
interpolation kernel (:mod:`engine.cuboid_interp`) writes the centre and rotation of a row of
motion-aware boxes in three steps (:func:`motion_turn_inputs`, :func:`motion_turn` in one
vectorised loop, :func:`motion_store`); a linear track costs one test.
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
# hermite: the curve c_k + u (A1 + u (A2 + u A3)) (3 each), 1.0 where the heading follows the
# path, the curve's x, y derivative in u as B1 + u (B2 + u B3) turned by −h0 (the path heading
# at k; 2 each), and the path heading's change Δh to k+1
_A1, _A2, _A3 = 3, 6, 9
_FOLLOW = 12
_B1, _B2, _B3 = 13, 15, 17
_DH = 19
_MOTION_COLS = 20

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
    """``(K-1, 20) float64``: per keyframe interval the ctrv arc and the hermite curve
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
        dk = d[rows]
        a2 = 3.0 * dk - 2.0 * t0 - t1
        a3 = t0 + t1 - 2.0 * dk
        mt[rows, _A1:_A1 + 3] = t0
        mt[rows, _A2:_A2 + 3] = a2
        mt[rows, _A3:_A3 + 3] = a3
        slow = MIN_HEADING_SPEED_MPS * dt[rows]
        fwd = (np.einsum("ij,ij->i", t0[:, :2], dk[:, :2]) > 0) & (np.einsum("ij,ij->i", t1[:, :2], dk[:, :2]) > 0)
        follow = fwd & (np.hypot(t0[:, 0], t0[:, 1]) >= slow) & (np.hypot(t1[:, 0], t1[:, 1]) >= slow)
        h0 = np.arctan2(t0[:, 1], t0[:, 0])
        cos_h0, sin_h0 = np.cos(h0)[:, None], np.sin(h0)[:, None]
        mt[rows, _FOLLOW] = follow
        for col, v in ((_B1, t0), (_B2, 2.0 * a2), (_B3, 3.0 * a3)):
            mt[rows, col:col + 2] = np.hstack([v[:, :1] * cos_h0 + v[:, 1:2] * sin_h0,
                                               v[:, 1:2] * cos_h0 - v[:, :1] * sin_h0])
        mt[rows, _DH] = _wrap(np.arctan2(t1[:, 1], t1[:, 0]) - h0)
    return mt


@inline
def motion_turn_inputs(iv, mt, mode, k, u):
    """The inputs of :func:`motion_turn` for fraction ``u`` of interval ``k`` of a ``mode``
    (0 linear, 1 ctrv, 2 hermite) box: ``(x, rx, ry)``, half the angle the box turns by in
    time (ctrv: ``u Δψ / 2``; hermite: ``u Δh / 2``, |x| <= π/2), and the hermite curve's
    direction relative to its heading at keyframe k (``(1, 0)`` where the heading does not
    follow the path, and for the other modes)."""
    if mode == 1:
        return 0.5 * u * mt[k, _DPSI], 1.0, 0.0
    if mode != 2 or mt[k, _FOLLOW] == 0.0:
        return 0.0, 1.0, 0.0
    # the curve's direction relative to h0
    return (0.5 * u * mt[k, _DH], mt[k, _B1] + u * (mt[k, _B2] + u * mt[k, _B3]),
            mt[k, _B1 + 1] + u * (mt[k, _B2 + 1] + u * mt[k, _B3 + 1]))


@inline
def motion_turn(x, rx, ry):
    """Branch-free (so a loop of them vectorises) from :func:`motion_turn_inputs`:
    ``(cos x, sin x)`` by :func:`engine.pose_track.sin_quadrant`, and ``(cos, sin)`` of
    ``α/2 − x`` where α is the angle of ``(rx, ry)`` (``(1, 0)``, no turn, for the zero
    vector)."""
    a = abs(x)
    s = sin_quadrant(a)
    s = s if x >= 0.0 else -s
    c = sin_quadrant(0.5 * math.pi - a)
    # half of α: the direction of (|r| + rx, ry)
    hx = math.sqrt(rx * rx + ry * ry) + rx
    norm = math.sqrt(hx * hx + ry * ry)
    some = norm > 0.0
    inv = 1.0 / norm if some else 0.0
    ca = hx * inv
    sa = ry * inv
    return c, s, (ca * c + sa * s if some else 1.0), (sa * c - ca * s if some else 0.0)


@inline
def motion_store(iv, mt, mode, k, u, s0, s1, c, s, cz, sz, box, out_c, out_q):
    """The centre and rotation of output box ``box`` at fraction ``u`` of interval ``k`` of a
    ``mode`` (1 ctrv, 2 hermite) track; ``iv`` is :mod:`engine.cuboid_interp`'s interval
    table, ``mt`` :func:`motion_table`'s, ``s0, s1`` the interval's slerp weights at ``u``
    and ``c, s, cz, sz`` :func:`motion_turn`'s."""
    if mode == 1:  # ctrv: the arc in x, y; z linear
        sin_a = 2.0 * s * c
        vers = 2.0 * s * s  # 1 − cos a
        out_c[box, 0] = iv[k, _C0] + (mt[k, _A] * sin_a - mt[k, _B] * vers if mt[k, _DPSI] != 0.0
                                      else u * iv[k, _DC])
        out_c[box, 1] = iv[k, _C0 + 1] + (mt[k, _B] * sin_a + mt[k, _A] * vers if mt[k, _DPSI] != 0.0
                                          else u * iv[k, _DC + 1])
        out_c[box, 2] = iv[k, _C0 + 2] + u * iv[k, _DC + 2]
    else:  # hermite
        for j in range(3):
            out_c[box, j] = iv[k, _C0 + j] + u * (mt[k, _A1 + j] + u * (mt[k, _A2 + j] + u * mt[k, _A3 + j]))
    w, x, y, z = slerp_combine(
        s0, s1, iv[k, _TH], iv[k, _Q0], iv[k, _Q0 + 1], iv[k, _Q0 + 2], iv[k, _Q0 + 3],
        iv[k, _Q1], iv[k, _Q1 + 1], iv[k, _Q1 + 2], iv[k, _Q1 + 3],
    )
    if mode == 2 and mt[k, _FOLLOW] != 0.0:  # Rz(α − u Δh) ⊗ slerp
        w, x, y, z = cz * w - sz * z, cz * x - sz * y, cz * y + sz * x, cz * z + sz * w
    out_q[box, 0] = w
    out_q[box, 1] = x
    out_q[box, 2] = y
    out_q[box, 3] = z
