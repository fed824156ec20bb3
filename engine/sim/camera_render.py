"""Camera images of a :class:`~engine.sim.world.World` by per-pixel ray cast.

Every pixel centre is unprojected with the camera's own lens model
(:func:`engine.camera.lens_unproject`, inlined), turned into a world ray with the true ego
pose at the row's exposure time (one time for a global shutter, ``time_ns + row ·
row_readout_ns`` for a rolling shutter) and cast against the ground and the boxes at that
time. Objects render in their flat table colour; rays that hit nothing get the sky colour;
pixels outside the lens' valid field of view are black with id ``-1``.

Culling: the image is cut into square tiles; each tile's pixel rays lie in a cone (axis and
half-angle precomputed once per lens from the tile's border pixels); per tile only boxes whose
bounding sphere meets that cone (widened for the ego and actor motion during a rolling
readout) are tested.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from engine._jit import pjit, prange
from engine.camera import Camera, CameraIntrinsics, LensModel, lens_unproject
from engine.pose_track import PoseTrack
from engine.quaternion import q_rotate
from engine.se3 import SE3
from engine.sim.world import NO_HIT, World, _tiny_world, cast_ray, object_center


@dataclass(frozen=True, eq=False)
class RenderedImage:
    """One rendered camera image.

    Attributes:
        rgb: ``(H, W, 3) uint8``.
        object_id: ``(H, W) int32`` object id seen at each pixel centre (``-1``: sky / outside the lens).
        range_m: ``(H, W) float32`` distance from the camera centre along the pixel ray (``inf``: no hit).
        time_ns: exposure time of row 0.
    """

    rgb: np.ndarray
    object_id: np.ndarray
    range_m: np.ndarray
    time_ns: int


@pjit
def _tile_cone_kernel(model, p, width, height, tile, out):
    """Per tile: camera-frame cone axis (3) and half-angle; half-angle −1 disables culling."""
    nty, ntx = out.shape[0], out.shape[1]
    for k in prange(nty * ntx):
        ty = k // ntx
        tx = k % ntx
        c0 = tx * tile
        r0 = ty * tile
        c1 = min(c0 + tile, width) - 1
        r1 = min(r0 + tile, height) - 1
        ax, ay, az, ok = lens_unproject(model, p, 0.5 * (c0 + c1), 0.5 * (r0 + r1))
        valid = ok
        max_ang = 0.0
        max_gap = 0.0
        # walk the border: top and bottom rows, left and right columns
        for side in range(4):
            n = c1 - c0 + 1 if side < 2 else r1 - r0 + 1
            px = 0.0
            py = 0.0
            pz = 0.0
            for m in range(n):
                if side == 0:
                    u, v = c0 + m, r0
                elif side == 1:
                    u, v = c0 + m, r1
                elif side == 2:
                    u, v = c0, r0 + m
                else:
                    u, v = c1, r0 + m
                x, y, z, ok = lens_unproject(model, p, float(u), float(v))
                if not ok:
                    valid = False
                    break
                max_ang = max(max_ang, math.acos(min(1.0, ax * x + ay * y + az * z)))
                if m > 0:
                    max_gap = max(max_gap, math.acos(min(1.0, px * x + py * y + pz * z)))
                px, py, pz = x, y, z
        out[ty, tx, 0] = ax
        out[ty, tx, 1] = ay
        out[ty, tx, 2] = az
        out[ty, tx, 3] = max_ang + max_gap + 1e-6 if valid else -1.0


@functools.lru_cache(maxsize=32)
def _tile_cones(intrinsics: CameraIntrinsics, params_key: bytes, tile: int) -> np.ndarray:
    params = np.frombuffer(params_key, dtype=np.float64)
    out = np.empty(((intrinsics.height + tile - 1) // tile, (intrinsics.width + tile - 1) // tile, 4))
    _tile_cone_kernel(intrinsics.model_code, params, intrinsics.width, intrinsics.height, tile, out)
    out.setflags(write=False)
    return out


@pjit
def _render_kernel(w, cand, model, p, width, height, tile, cones, row_q, row_t, row_time, colors, sky,
                   out_rgb, out_id, out_range):
    nty, ntx = cones.shape[0], cones.shape[1]
    n_static = w.s_center.shape[0]
    for k in prange(nty * ntx):
        ty = k // ntx
        tx = k % ntx
        c0 = tx * tile
        r0 = ty * tile
        c1 = min(c0 + tile, width)
        r1 = min(r0 + tile, height)
        rm = (r0 + r1 - 1) // 2
        # pose spread over the tile's rows (zero for a global shutter)
        spread = 0.0
        tilt = 0.0
        dt_s = 0.0
        for r in range(r0, r1):
            ddx = row_t[r, 0] - row_t[rm, 0]
            ddy = row_t[r, 1] - row_t[rm, 1]
            ddz = row_t[r, 2] - row_t[rm, 2]
            spread = max(spread, math.sqrt(ddx * ddx + ddy * ddy + ddz * ddz))
            d = abs(row_q[r, 0] * row_q[rm, 0] + row_q[r, 1] * row_q[rm, 1]
                    + row_q[r, 2] * row_q[rm, 2] + row_q[r, 3] * row_q[rm, 3])
            tilt = max(tilt, 2.0 * math.acos(min(1.0, d)))
            dt_s = max(dt_s, abs(row_time[r] - row_time[rm]) * 1e-9)
        half = cones[ty, tx, 3]
        n_local = 0
        local = np.empty(cand.shape[0], np.int64)
        if half < 0.0:
            for m in range(cand.shape[0]):
                local[m] = cand[m]
            n_local = cand.shape[0]
        else:
            qw, qx, qy, qz = row_q[rm, 0], row_q[rm, 1], row_q[rm, 2], row_q[rm, 3]
            axx, axy, axz = q_rotate(qw, qx, qy, qz, cones[ty, tx, 0], cones[ty, tx, 1], cones[ty, tx, 2])
            for m in range(cand.shape[0]):
                i = cand[m]
                cx, cy, cz = object_center(w, i, row_time[rm])
                r_eff = w.radius[i] + spread
                if i >= n_static:
                    r_eff += w.a_speed[i - n_static] * dt_s
                ex = cx - row_t[rm, 0]
                ey = cy - row_t[rm, 1]
                ez = cz - row_t[rm, 2]
                dist = math.sqrt(ex * ex + ey * ey + ez * ez)
                if dist > r_eff:
                    cos_a = (ex * axx + ey * axy + ez * axz) / dist
                    ang = math.acos(max(-1.0, min(1.0, cos_a)))
                    if ang > half + tilt + math.asin(r_eff / dist):
                        continue
                local[n_local] = i
                n_local += 1
        for r in range(r0, r1):
            qw, qx, qy, qz = row_q[r, 0], row_q[r, 1], row_q[r, 2], row_q[r, 3]
            for c in range(c0, c1):
                x, y, z, ok = lens_unproject(model, p, float(c), float(r))
                if not ok:
                    out_id[r, c] = NO_HIT
                    out_range[r, c] = np.inf
                    for ch in range(3):
                        out_rgb[r, c, ch] = 0
                    continue
                dx, dy, dz = q_rotate(qw, qx, qy, qz, x, y, z)
                t, oid, _ = cast_ray(w, local, n_local, row_t[r, 0], row_t[r, 1], row_t[r, 2],
                                     dx, dy, dz, row_time[r], 0.0, np.inf)
                out_id[r, c] = oid
                out_range[r, c] = t
                for ch in range(3):
                    out_rgb[r, c, ch] = sky[ch] if oid == NO_HIT else colors[oid, ch]


def render_camera(world: World, world_from_ego: PoseTrack, camera: Camera, time_ns: int,
                  tile_px: int = 16) -> RenderedImage:
    """Render ``camera`` at exposure time ``time_ns`` (row 0 for a rolling shutter).

    ``world_from_ego`` must cover every row's exposure time. ``tile_px`` is the culling tile
    size (any positive value gives the same image).
    """
    if tile_px <= 0:
        raise ValueError(f"tile_px must be positive, got {tile_px}")
    intr = camera.intrinsics
    rows = np.arange(intr.height, dtype=np.int64)
    readout = camera.row_readout_ns if camera.shutter == "rolling" else 0
    row_time = int(time_ns) + rows * readout
    poses = world_from_ego.interpolate(row_time) @ camera.ego_from_camera
    cones = _tile_cones(intr, camera.params.tobytes(), int(tile_px))
    cand = np.arange(world.n_static + world.n_actors, dtype=np.int64)
    rgb = np.empty((intr.height, intr.width, 3), np.uint8)
    oid = np.empty((intr.height, intr.width), np.int32)
    rng = np.empty((intr.height, intr.width), np.float32)
    _render_kernel(
        world.packed, cand, camera.model_code, camera.params, intr.width, intr.height, int(tile_px), cones,
        np.ascontiguousarray(poses.rotation), np.ascontiguousarray(poses.translation), row_time,
        np.ascontiguousarray(world.objects.color_rgb), world.sky_rgb, rgb, oid, rng,
    )
    return RenderedImage(rgb, oid, rng, int(time_ns))


def _warmup() -> None:
    track = PoseTrack(np.array([0, 10**9]), np.array([[1.0, 0, 0, 0]] * 2), np.array([[0, 0, 1.0], [1, 0, 1]]))
    ego_from_cam = SE3(np.array([0.5, -0.5, 0.5, -0.5]), np.zeros(3))  # z forward = ego x
    lenses: tuple[tuple[LensModel, tuple[float, ...]], ...] = (("pinhole", ()), ("kannala_brandt", (0.01,)))
    for model, dist in lenses:
        cam = Camera("warm", CameraIntrinsics(4, 3, 2.0, 2.0, 1.5, 1.0, model=model, distortion=dist), ego_from_cam)
        render_camera(_tiny_world(), track, cam, 0, tile_px=2)
