"""The simulated world: a ground plane, static boxes and moving boxes with exact tracks.

Object ids: ``0`` is the ground plane ``z = 0``; ``1 .. S`` the static boxes (buildings,
poles); ``S + 1 .. S + A`` the actors (cars, pedestrians); ``-1`` (:data:`NO_HIT`) means a
ray hit nothing. Every box is yaw-only (rotation about the world z axis), its centre at
the middle of the box, its size ``(length, width, height)`` along its own x, y, z.

Actors move on a uniform keyframe grid (``actor_t0_ns + k * actor_dt_ns``) with constant
velocity and constant yaw rate between keyframes, so the keyframes' own interpolation
(position linear, rotation slerp) reproduces the motion exactly: :meth:`World.actor_pose` and
:meth:`World.cuboid_tracks` describe the very boxes the LiDAR and cameras see. Outside the
grid the motion extrapolates the first/last interval.

:func:`cast_ray` is the one ray caster; the LiDAR and camera kernels inline it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from engine import quaternion as quat
from engine._jit import inline, jit
from engine.cuboid import CuboidTrack

GROUND_ID = 0
NO_HIT = -1


@dataclass(frozen=True, eq=False)
class ObjectTable:
    """What each object id is. Row ``i`` describes object id ``i``.

    Attributes:
        category: ``(N,)`` names (``"ground"``, ``"building"``, ``"pole"``, ``"car"``, ``"pedestrian"``).
        color_rgb: ``(N, 3) uint8`` flat colour the cameras render.
        reflectivity: ``(N,) float32`` in ``[0, 1]``, scales LiDAR intensity.
    """

    category: tuple[str, ...]
    color_rgb: np.ndarray
    reflectivity: np.ndarray

    def __len__(self) -> int:
        return len(self.category)


class _Packed(NamedTuple):
    """The world as kernel arrays (C-contiguous, fixed dtypes)."""

    s_center: np.ndarray  # (S, 3) float64
    s_half: np.ndarray  # (S, 3) float64 half sizes
    s_cos: np.ndarray  # (S,) float64 cos(yaw)
    s_sin: np.ndarray  # (S,) float64
    a_time: np.ndarray  # (2,) int64: t0_ns, dt_ns
    a_center: np.ndarray  # (A, K, 3) float64
    a_yaw: np.ndarray  # (A, K) float64, unwrapped
    a_half: np.ndarray  # (A, 3) float64
    radius: np.ndarray  # (S + A,) float64 bounding-sphere radius (static first)
    a_speed: np.ndarray  # (A,) float64 highest keyframe-to-keyframe speed


@dataclass(frozen=True, eq=False)
class World:
    """Ground plane, static boxes and keyframed actors, all in the ENU world frame.

    Attributes:
        static_center: ``(S, 3) float64`` m. static_size: ``(S, 3) float64`` m (l, w, h).
        static_yaw: ``(S,) float64`` rad.
        actor_t0_ns, actor_dt_ns: the keyframe grid (``int64`` ns).
        actor_center: ``(A, K, 3) float64`` m. actor_yaw: ``(A, K) float64`` rad, consecutive
            keyframes less than π apart. actor_size: ``(A, 3) float64`` m.
        objects: the object table, ``1 + S + A`` rows.
        sky_rgb: ``(3,) uint8`` colour of rays that hit nothing.
    """

    static_center: np.ndarray
    static_size: np.ndarray
    static_yaw: np.ndarray
    actor_t0_ns: int
    actor_dt_ns: int
    actor_center: np.ndarray
    actor_yaw: np.ndarray
    actor_size: np.ndarray
    objects: ObjectTable
    sky_rgb: np.ndarray

    def __post_init__(self) -> None:
        sc = np.ascontiguousarray(self.static_center, dtype=np.float64).reshape(-1, 3)
        ss = np.ascontiguousarray(self.static_size, dtype=np.float64).reshape(-1, 3)
        sy = np.ascontiguousarray(self.static_yaw, dtype=np.float64).reshape(-1)
        if not (len(sc) == len(ss) == len(sy)):
            raise ValueError(f"static boxes: centers {sc.shape}, sizes {ss.shape}, yaws {sy.shape} differ")
        ac = np.ascontiguousarray(self.actor_center, dtype=np.float64)
        ay = np.ascontiguousarray(self.actor_yaw, dtype=np.float64)
        asz = np.ascontiguousarray(self.actor_size, dtype=np.float64).reshape(-1, 3)
        if ac.ndim != 3 or ac.shape[2] != 3 or ay.shape != ac.shape[:2] or len(asz) != len(ac):
            raise ValueError(
                f"actors need centers (A, K, 3), yaws (A, K), sizes (A, 3); got {ac.shape}, {ay.shape}, {asz.shape}"
            )
        if len(ac) and ac.shape[1] < 2:
            raise ValueError(f"actors need at least 2 keyframes, got {ac.shape[1]}")
        if int(self.actor_dt_ns) <= 0:
            raise ValueError(f"actor_dt_ns must be positive, got {self.actor_dt_ns}")
        if len(ac) and np.any(np.abs(np.diff(ay, axis=1)) >= math.pi):
            raise ValueError("actor yaw changes by π or more between keyframes (slerp would be ambiguous)")
        for name, boxes in (("static", (sc, ss, sy)), ("actor", (ac, ay, asz))):
            if not all(np.all(np.isfinite(a)) for a in boxes):
                raise ValueError(f"{name} boxes contain NaN or infinite values")
        if np.any(ss <= 0) or np.any(asz <= 0):
            raise ValueError("box sizes must be positive")
        n = 1 + len(sc) + len(ac)
        obj = self.objects
        if len(obj) != n or obj.color_rgb.shape != (n, 3) or obj.reflectivity.shape != (n,):
            raise ValueError(
                f"object table needs {n} rows (ground + {len(sc)} static + {len(ac)} actors), got "
                f"{len(obj)} categories, colours {obj.color_rgb.shape}, reflectivity {obj.reflectivity.shape}"
            )
        for name, arr in (("static_center", sc), ("static_size", ss), ("static_yaw", sy),
                          ("actor_center", ac), ("actor_yaw", ay), ("actor_size", asz)):
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        object.__setattr__(self, "actor_t0_ns", int(self.actor_t0_ns))
        object.__setattr__(self, "actor_dt_ns", int(self.actor_dt_ns))
        object.__setattr__(self, "sky_rgb", np.asarray(self.sky_rgb, dtype=np.uint8).reshape(3))
        object.__setattr__(self, "_packed", self._pack())

    # ---------------------------------------------------------------- ids and ground truth

    @property
    def n_static(self) -> int:
        return len(self.static_center)

    @property
    def n_actors(self) -> int:
        return len(self.actor_center)

    @property
    def actor_ids(self) -> np.ndarray:
        """``(A,) int32`` object ids of the actors."""
        return np.arange(1 + self.n_static, 1 + self.n_static + self.n_actors, dtype=np.int32)

    @property
    def keyframe_times_ns(self) -> np.ndarray:
        """``(K,) int64`` actor keyframe times."""
        return self.actor_t0_ns + np.arange(self.actor_center.shape[1], dtype=np.int64) * self.actor_dt_ns

    def actor_pose(self, actor: int, times_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact centre ``(M, 3)`` and yaw ``(M,)`` of actor index ``actor`` (0-based) at ``times_ns``."""
        if not 0 <= actor < self.n_actors:
            raise ValueError(f"actor index {actor} out of range [0, {self.n_actors})")
        t = np.atleast_1d(np.asarray(times_ns, dtype=np.int64))
        k_max = self.actor_center.shape[1] - 2
        rel = t - self.actor_t0_ns
        k = np.clip(rel // self.actor_dt_ns, 0, k_max)
        u = (rel - k * self.actor_dt_ns) / self.actor_dt_ns
        c = self.actor_center[actor]
        y = self.actor_yaw[actor]
        return c[k] + u[:, None] * (c[k + 1] - c[k]), y[k] + u * (y[k + 1] - y[k])

    def box_at(self, object_id: int, time_ns: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Centre ``(3,)``, size ``(3,)`` and yaw of box object ``object_id`` at ``time_ns``."""
        if 1 <= object_id <= self.n_static:
            i = object_id - 1
            return self.static_center[i], self.static_size[i], float(self.static_yaw[i])
        j = object_id - 1 - self.n_static
        if not 0 <= j < self.n_actors:
            raise ValueError(f"object id {object_id} is not a box (1..{self.n_static + self.n_actors})")
        c, y = self.actor_pose(j, np.array([time_ns]))
        return c[0], self.actor_size[j], float(y[0])

    def cuboid_tracks(self) -> tuple[list[CuboidTrack], list[CuboidTrack]]:
        """``(static, actors)`` as world-frame :class:`CuboidTrack` (track id = object id).

        Static boxes have one keyframe at ``actor_t0_ns`` and ``stationary=True``; actor
        keyframes are the motion grid, so interpolating them is exact.
        """
        cat = self.objects.category
        static = [
            CuboidTrack(str(1 + i), cat[1 + i], np.array([self.actor_t0_ns]), self.static_center[i : i + 1],
                        self.static_size[i : i + 1], quat.from_yaw(self.static_yaw[i : i + 1]), stationary=True)
            for i in range(self.n_static)
        ]
        times = self.keyframe_times_ns
        actors = [
            CuboidTrack(str(oid), cat[oid], times, self.actor_center[j],
                        np.repeat(self.actor_size[j : j + 1], len(times), axis=0), quat.from_yaw(self.actor_yaw[j]))
            for j, oid in enumerate(self.actor_ids)
        ]
        return static, actors

    # ---------------------------------------------------------------- kernel view

    def _pack(self) -> _Packed:
        half_s = 0.5 * self.static_size
        half_a = 0.5 * self.actor_size
        radius = np.concatenate([np.linalg.norm(half_s, axis=1), np.linalg.norm(half_a, axis=1)])
        if self.n_actors:
            step = np.linalg.norm(np.diff(self.actor_center, axis=1), axis=2)
            speed = step.max(axis=1) / (self.actor_dt_ns * 1e-9)
        else:
            speed = np.zeros(0)
        c = np.ascontiguousarray
        return _Packed(
            c(self.static_center), c(half_s), c(np.cos(self.static_yaw)), c(np.sin(self.static_yaw)),
            np.array([self.actor_t0_ns, self.actor_dt_ns], dtype=np.int64),
            self.actor_center, self.actor_yaw, c(half_a), c(radius), c(speed),
        )

    @property
    def packed(self) -> _Packed:
        return self._packed  # type: ignore[attr-defined]

    def sector_candidates(self, positions: np.ndarray, t0_ns: int, t1_ns: int, reach_m: float,
                          n_sectors: int = 720) -> tuple[np.ndarray, np.ndarray]:
        """Boxes each world-azimuth sector of rays may hit, for a sensor moving through
        ``positions`` ``(P, 3)`` (sampled evenly over ``[t0_ns, t1_ns]``) and rays up to ``reach_m``.

        Sector ``k`` covers ray azimuths ``[k, k + 1) · 2π / n_sectors`` (``atan2(dy, dx)``
        wrapped to ``[0, 2π)``); its candidates are ``items[starts[k]:starts[k + 1]]``, box
        indices (object id − 1) sorted by distance from the sensor. Conservative: a box whose
        bounding sphere (widened by the sensor's and the actor's motion) can meet a ray is listed.
        Returns ``(starts (n_sectors + 1,) int64, items (M,) int64)``.
        """
        p = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        mid = p[len(p) // 2]
        pk = self.packed
        t_mid = (int(t0_ns) + int(t1_ns)) // 2
        centers = [self.static_center] + [self.actor_pose(j, np.array([t_mid]))[0] for j in range(self.n_actors)]
        c = np.vstack(centers).reshape(-1, 3)
        half_window_s = 0.5 * (int(t1_ns) - int(t0_ns)) * 1e-9
        step = float(np.max(np.linalg.norm(np.diff(p, axis=0), axis=1))) if len(p) > 1 else 0.0
        spread = float(np.max(np.linalg.norm(p - mid, axis=1))) + step
        slack = pk.radius + spread + np.concatenate([np.zeros(self.n_static), pk.a_speed * half_window_s])
        dist = np.linalg.norm(c - mid, axis=1)
        order = np.argsort(dist, kind="stable")
        order = order[dist[order] <= reach_m + slack[order]]
        dh = np.linalg.norm((c - mid)[:, :2], axis=1)
        az = np.arctan2(c[:, 1] - mid[1], c[:, 0] - mid[0])
        width = 2 * np.pi / n_sectors
        members: list[list[int]] = [[] for _ in range(n_sectors)]
        for i in order:
            sectors: Iterable[int]
            if dh[i] <= slack[i] * 1.000001:
                sectors = range(n_sectors)
            else:
                hw = np.arcsin(slack[i] / dh[i])
                k0 = int(np.floor((az[i] - hw) / width))
                k1 = int(np.floor((az[i] + hw) / width))
                covers_all = k1 - k0 + 3 >= n_sectors
                sectors = range(n_sectors) if covers_all else (k % n_sectors for k in range(k0 - 1, k1 + 2))
            for k in sectors:
                members[k].append(int(i))
        starts = np.zeros(n_sectors + 1, np.int64)
        starts[1:] = np.cumsum([len(m) for m in members])
        items = np.array([i for m in members for i in m], dtype=np.int64)
        return starts, items


# ---------------------------------------------------------------- numba ray caster


@inline
def actor_state(w, j, t_ns):
    """Centre (x, y, z) and yaw of actor ``j`` at ``t_ns`` (linear on the keyframe grid)."""
    k_max = w.a_center.shape[1] - 2
    rel = t_ns - w.a_time[0]
    k = rel // w.a_time[1]
    if k < 0:
        k = 0
    elif k > k_max:
        k = k_max
    u = float(rel - k * w.a_time[1]) / float(w.a_time[1])
    c = w.a_center[j]
    return (
        c[k, 0] + u * (c[k + 1, 0] - c[k, 0]),
        c[k, 1] + u * (c[k + 1, 1] - c[k, 1]),
        c[k, 2] + u * (c[k + 1, 2] - c[k, 2]),
        w.a_yaw[j, k] + u * (w.a_yaw[j, k + 1] - w.a_yaw[j, k]),
    )


@inline
def object_center(w, i, t_ns):
    """Bounding-sphere centre of box index ``i`` (static first, then actors) at ``t_ns``."""
    n_static = w.s_center.shape[0]
    if i < n_static:
        return w.s_center[i, 0], w.s_center[i, 1], w.s_center[i, 2]
    cx, cy, cz, _ = actor_state(w, i - n_static, t_ns)
    return cx, cy, cz


@inline
def _slab(lo, ld, h, t_near, t_far, axis, best_axis):
    """Clip the ray interval to one slab |x| <= h of the box frame."""
    if ld == 0.0:
        if lo < -h or lo > h:
            return 1.0, 0.0, best_axis  # empty interval
        return t_near, t_far, best_axis
    inv = 1.0 / ld
    ta = (-h - lo) * inv
    tb = (h - lo) * inv
    if ta > tb:
        ta, tb = tb, ta
    if ta > t_near:
        t_near = ta
        best_axis = axis
    if tb < t_far:
        t_far = tb
    return t_near, t_far, best_axis


@inline
def _box_hit(ox, oy, oz, dx, dy, dz, cx, cy, cz, cs, sn, hx, hy, hz, t_min, t_max):
    """Entry distance and |cos incidence| of a ray with a yaw-only box, or (inf, 0)."""
    px = ox - cx
    py = oy - cy
    lox = cs * px + sn * py
    loy = -sn * px + cs * py
    loz = oz - cz
    ldx = cs * dx + sn * dy
    ldy = -sn * dx + cs * dy
    ldz = dz
    t_near = -np.inf
    t_far = np.inf
    axis = -1
    t_near, t_far, axis = _slab(lox, ldx, hx, t_near, t_far, 0, axis)
    t_near, t_far, axis = _slab(loy, ldy, hy, t_near, t_far, 1, axis)
    t_near, t_far, axis = _slab(loz, ldz, hz, t_near, t_far, 2, axis)
    if t_near > t_far or t_near < t_min or t_near > t_max:
        return np.inf, 0.0
    cos_inc = abs(ldx) if axis == 0 else (abs(ldy) if axis == 1 else abs(ldz))
    return t_near, cos_inc


@inline
def cast_ray(w, cand, n_cand, ox, oy, oz, dx, dy, dz, t_ns, t_min, t_max):
    """Nearest hit of the unit ray ``o + t d``, ``t_min < t <= t_max``, at time ``t_ns``.

    Tests the ground plane and the boxes ``cand[:n_cand]`` (index = object id − 1), each
    first against its bounding sphere. Returns ``(t, object_id, |cos incidence|)``;
    ``(inf, NO_HIT, 0)`` when nothing is hit.
    """
    best_t = np.inf
    best_id = NO_HIT
    best_cos = 0.0
    if dz < 0.0:
        tg = -oz / dz
        if t_min < tg <= t_max:
            best_t = tg
            best_id = GROUND_ID
            best_cos = -dz
    n_static = w.s_center.shape[0]
    for m in range(n_cand):
        i = cand[m]
        r = w.radius[i]
        cx, cy, cz = object_center(w, i, t_ns)
        ex = cx - ox
        ey = cy - oy
        ez = cz - oz
        b = ex * dx + ey * dy + ez * dz
        if b - r > best_t or b + r < t_min:
            continue
        if ex * ex + ey * ey + ez * ez - b * b > r * r:
            continue
        if i < n_static:
            cs = w.s_cos[i]
            sn = w.s_sin[i]
            hx, hy, hz = w.s_half[i, 0], w.s_half[i, 1], w.s_half[i, 2]
        else:
            j = i - n_static
            _, _, _, yaw = actor_state(w, j, t_ns)
            cs = math.cos(yaw)
            sn = math.sin(yaw)
            hx, hy, hz = w.a_half[j, 0], w.a_half[j, 1], w.a_half[j, 2]
        t, c = _box_hit(ox, oy, oz, dx, dy, dz, cx, cy, cz, cs, sn, hx, hy, hz, t_min, min(t_max, best_t))
        if t < best_t:
            best_t = t
            best_id = i + 1
            best_cos = c
    return best_t, best_id, best_cos


@jit
def _cast_kernel(w, cand, origins, dirs, times, t_max, out_t, out_id):
    for i in range(origins.shape[0]):
        t, oid, _ = cast_ray(w, cand, cand.shape[0], origins[i, 0], origins[i, 1], origins[i, 2],
                             dirs[i, 0], dirs[i, 1], dirs[i, 2], times[i], 0.0, t_max)
        out_t[i] = t
        out_id[i] = oid


def cast_rays(world: World, origins: np.ndarray, dirs: np.ndarray, times_ns: np.ndarray,
              max_range_m: float = np.inf) -> tuple[np.ndarray, np.ndarray]:
    """Cast world-frame rays ``origins (N, 3)``, unit ``dirs (N, 3)`` at ``times_ns (N,)``.

    Returns ``(range_m (N,) float64, object_id (N,) int32)``; misses are ``inf`` / ``NO_HIT``.
    """
    o = np.ascontiguousarray(origins, dtype=np.float64)
    d = np.ascontiguousarray(dirs, dtype=np.float64)
    t = np.ascontiguousarray(times_ns, dtype=np.int64)
    if o.ndim != 2 or o.shape[1] != 3 or d.shape != o.shape or t.shape != (len(o),):
        raise ValueError(
            f"cast_rays needs origins (N, 3), dirs (N, 3), times (N,); got {o.shape}, {d.shape}, {t.shape}"
        )
    if not (max_range_m > 0):
        raise ValueError(f"max_range_m must be positive, got {max_range_m}")
    out_t = np.empty(len(o))
    out_id = np.empty(len(o), dtype=np.int32)
    cand = np.arange(world.n_static + world.n_actors, dtype=np.int64)
    _cast_kernel(world.packed, cand, o, d, t, float(max_range_m), out_t, out_id)
    return out_t, out_id


def _tiny_world() -> World:
    objects = ObjectTable(("ground", "building", "car"), np.zeros((3, 3), np.uint8), np.ones(3, np.float32))
    return World(np.array([[5.0, 0, 1]]), np.ones((1, 3)), np.zeros(1), 0, 100, np.zeros((1, 2, 3)) + [0, 5, 1],
                 np.zeros((1, 2)), np.ones((1, 3)), objects, np.zeros(3))


def _warmup() -> None:
    cast_rays(_tiny_world(), np.zeros((1, 3)), np.array([[1.0, 0, 0]]), np.zeros(1, np.int64))
