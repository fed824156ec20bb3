"""Project point sets into many cameras at once, with per-point motion compensation.

For point ``p_i`` (sensor frame) fired at ``t_i`` and camera ``c`` exposed at ``t_c``::

    p_world = world_from_ego(t_i) · ego_from_sensor · p_i
    p_cam   = camera_from_ego_c · world_from_ego(t_c)⁻¹ · p_world
    (u, v)  = lens_c(p_cam)

This is the chain of :mod:`engine.motion` with the camera appended; the kernel inlines the
same helpers (``q_rotate``, ``pose_at``, ``lens_project``). One parallel kernel does it all:
each chunk of points computes its source positions once (float64; the per-point pose only
when points are in the sensor frame of a moving ego), then, camera after camera, applies
the camera's rotation matrix and translation, the lens and the image bounds, writing the
camera-major outputs. Global-shutter pinhole and Brown-Conrady cameras (the common case)
take a path free of branches on where a point lies, so that points in any order (random,
or a LiDAR's firing order) cost the same; fisheye and rolling-shutter cameras use the
scalar lens per point. Without per-point poses the sensor mount is folded into each camera's
transform (one rigid transform per point and camera). Transform and lens run in float64;
depth and the viewing-angle cosine are stored as float32, pixels as float64 (they match
OpenCV to 1e-6 px, beyond float32's 1e-4 px at u ≈ 2000).

Rolling shutter: row ``r`` of a rolling-shutter camera is exposed at
``t_c + r · row_readout_ns`` (row 0 at the image timestamp). The row a point lands on
depends on the time it is seen at, so the kernel solves ``v = lens(p at t_c + v · row_ns)``
by fixed-point iteration: project at ``t_c``, take the (continuous) row ``v`` — clamped to
``[0, height − 1]`` — as the time, re-project; ``rolling_iterations`` (default 3)
re-projections. Each step contracts the error by ``|dv/dt| · row_ns`` (image-space speed
in rows per second times the row time, ≈ 0.01–0.1 for real rigs), so three steps reach
far below a pixel. Points within about a metre of a fast-moving camera contract slower
(≈ 0.15 at 0.4 m from a side camera at 15 m/s); raise ``rolling_iterations`` for those.
A static scene (no pose track) has no motion, so rolling shutter changes nothing there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, NamedTuple, Sequence

import numpy as np

from engine import quaternion as quat
from engine._jit import inline, pjit, prange
from engine.arrays import as_points
from engine.camera import (
    _P_CX,
    _P_CY,
    _P_FX,
    _P_FY,
    _P_LIMIT,
    _P_NEAR,
    _P_SKEW,
    BROWN_CONRADY,
    KANNALA_BRANDT,
    N_PARAMS,
    Camera,
    _bc_distort,
    cameras_from_ego,
    lens_project,
)
from engine.cuda import Device, resolve
from engine.pose_track import EXTRAPOLATION_CODES, Extrapolation, PoseTrack, interval_table, pose_at
from engine.quaternion import q_rotate
from engine.se3 import SE3
from engine.typing import BoolArray, Float32Array, Float64Array, Int64Array, Points3, TimesNs

PointFrame = Literal["sensor", "world"]
_CHUNK = 2048  # points per parallel work item (their float64 positions stay in L1/L2)


@dataclass(frozen=True, eq=False)
class Projection:
    """Points projected into ``C`` cameras (camera-major, C-contiguous arrays).

    Attributes:
        uv: ``(C, N, 2) float64`` pixel coordinates (pixel (0, 0) is the centre of the
            top-left pixel); NaN where the lens cannot project the point (at/behind the
            near plane, beyond the valid field of view, NaN input).
        depth: ``(C, N) float32`` camera-frame z in metres at the time the point is seen.
        in_image: ``(C, N) bool`` projected and inside the image
            (``-0.5 <= u < width - 0.5`` and likewise for v).
        image_sizes: ``(C, 2) int64`` (width, height) of each camera.
        cos_view: ``(C, N) float32`` cosine of the angle between the camera-frame ray to
            the point and the optical axis (``z / |p_cam|``); NaN where ``uv`` is NaN.
    """

    uv: Float64Array
    depth: Float32Array
    in_image: BoolArray
    image_sizes: Int64Array
    cos_view: Float32Array


@inline
def source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode):
    """Point ``i`` of ``xyz`` as float64 in the source frame: the world frame at its firing
    time ``times[i]`` with per-point poses (mount ``ext``, then the ego pose), else as given."""
    px = float(xyz[i, 0])
    py = float(xyz[i, 1])
    pz = float(xyz[i, 2])
    if per_point_pose:
        px, py, pz = q_rotate(ext_q[0], ext_q[1], ext_q[2], ext_q[3], px, py, pz)
        px += ext_t[0]
        py += ext_t[1]
        pz += ext_t[2]
        w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, times[i], mode)
        px, py, pz = q_rotate(w, x, y, z, px, py, pz)
        px += tx
        py += ty
        pz += tz
    return px, py, pz


@inline
def project_one(model, p, px, py, pz, r00, r01, r02, r10, r11, r12, r20, r21, r22, t0, t1, t2, ce_q, ce_t,
                cam_time, rns, last_row, n_iter, ts, q, t, q1, theta, inv_sin, mode):
    """Source point ``(px, py, pz)`` into one camera: ``(u, v, ok, cx, cy, cz)``, the pixel,
    whether the lens projects it and the camera-frame point. ``r··``/``t·`` map the source
    frame to the camera at its exposure time; a rolling shutter (``rns`` ns per row > 0)
    re-projects ``n_iter`` times at the time of the row found (``ce_q``/``ce_t`` the
    camera's ``camera_from_ego``, module docstring)."""
    cx = r00 * px + r01 * py + r02 * pz + t0
    cy = r10 * px + r11 * py + r12 * pz + t1
    cz = r20 * px + r21 * py + r22 * pz + t2
    u, v, ok = lens_project(model, p, cx, cy, cz)
    if ok and rns > 0.0:
        for _ in range(n_iter):
            row = min(max(v, 0.0), last_row)
            tq = cam_time + np.int64(round(row * rns))
            w, x, y, z, tx, ty, tz = pose_at(ts, q, t, q1, theta, inv_sin, tq, mode)
            ex, ey, ez = q_rotate(w, -x, -y, -z, px - tx, py - ty, pz - tz)
            cx, cy, cz = q_rotate(ce_q[0], ce_q[1], ce_q[2], ce_q[3], ex, ey, ez)
            cx += ce_t[0]
            cy += ce_t[1]
            cz += ce_t[2]
            u, v, ok = lens_project(model, p, cx, cy, cz)
            if not ok:
                break
    return u, v, ok, cx, cy, cz


@inline
def store_projection(c, i, u, v, ok, cx, cy, cz, width, height, uv, depth, in_image, cos_view):
    """Write :func:`project_one`'s result for camera ``c`` and point ``i`` into the
    :class:`Projection` arrays (NaN pixel and cosine, not in the image, where not ``ok``)."""
    depth[c, i] = cz
    if ok:
        uv[c, i, 0] = u
        uv[c, i, 1] = v
        cos_view[c, i] = cz / math.sqrt(cx * cx + cy * cy + cz * cz)
        in_image[c, i] = u >= -0.5 and u < width - 0.5 and v >= -0.5 and v < height - 0.5
    else:
        uv[c, i, 0] = np.nan
        uv[c, i, 1] = np.nan
        cos_view[c, i] = np.nan
        in_image[c, i] = False


@inline
def _pinhole_bc_rows(bc, p, src, front, back, lo, hi, c, r00, r01, r02, r10, r11, r12, r20, r21,
                     r22, t0, t1, t2, width, height, uv, depth, in_image, cos_view):
    """Points ``lo:hi`` into pinhole / Brown-Conrady camera ``c`` in passes without a branch
    on where a point lies: one writes the depth of every point and lists those beyond the
    near plane (``front``) and the others (``back``); the "not projected" outputs go to
    the back list, the lens runs on the front list only. The cost does not depend on point
    order. Same arithmetic, in the same order, as :func:`engine.camera.lens_project`."""
    near = p[_P_NEAR]
    m = 0
    for i in range(lo, hi):
        px = src[i - lo, 0]
        py = src[i - lo, 1]
        pz = src[i - lo, 2]
        cz = r20 * px + r21 * py + r22 * pz + t2
        depth[c, i] = cz
        ok = cz > near
        back[i - lo - m] = i  # both lists from one counter: the slot is overwritten
        front[m] = i  # unless the point belongs there
        m += ok
    for j in range(hi - lo - m):
        i = back[j]
        uv[c, i, 0] = np.nan
        uv[c, i, 1] = np.nan
        cos_view[c, i] = np.nan
        in_image[c, i] = False
    limit = p[_P_LIMIT]
    fx, fy, cx0, cy0, skew = p[_P_FX], p[_P_FY], p[_P_CX], p[_P_CY], p[_P_SKEW]
    hi_u = width - 0.5
    hi_v = height - 0.5
    for j in range(m):
        i = front[j]
        px = src[i - lo, 0]
        py = src[i - lo, 1]
        pz = src[i - lo, 2]
        cx = r00 * px + r01 * py + r02 * pz + t0
        cy = r10 * px + r11 * py + r12 * pz + t1
        cz = r20 * px + r21 * py + r22 * pz + t2
        xd = cx / cz
        yd = cy / cz
        if bc:
            if xd * xd + yd * yd > limit:
                uv[c, i, 0] = np.nan
                uv[c, i, 1] = np.nan
                cos_view[c, i] = np.nan
                in_image[c, i] = False
                continue
            xd, yd = _bc_distort(p, xd, yd)
        u = fx * xd + skew * yd + cx0
        v = fy * yd + cy0
        uv[c, i, 0] = u
        uv[c, i, 1] = v
        cos_view[c, i] = cz / math.sqrt(cx * cx + cy * cy + cz * cz)
        in_image[c, i] = (u >= -0.5) & (u < hi_u) & (v >= -0.5) & (v < hi_v)


@pjit
def _project_kernel(xyz, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode,
                    models, params, rot, trans, ce_q, ce_t, cam_times, row_ns, sizes, n_iter,
                    uv, depth, in_image, cos_view):
    """Project chunk × camera; ``rot``/``trans`` map the source frame (world, or the sensor
    frame without per-point poses) to each camera at its exposure time (row 0)."""
    n = xyz.shape[0]
    n_cam = models.shape[0]
    n_chunks = (n + _CHUNK - 1) // _CHUNK
    for k in prange(n_chunks):
        lo = k * _CHUNK
        hi = min(lo + _CHUNK, n)
        src = np.empty((hi - lo, 3))
        front = np.empty(hi - lo, np.int64)
        back = np.empty(hi - lo, np.int64)
        for i in range(lo, hi):
            px, py, pz = source_point(xyz, i, times, per_point_pose, ext_q, ext_t, ts, q, t, q1, theta, inv_sin, mode)
            src[i - lo, 0] = px
            src[i - lo, 1] = py
            src[i - lo, 2] = pz
        for c in range(n_cam):
            model = models[c]
            p = params[c]
            r = rot[c]
            r00, r01, r02 = r[0, 0], r[0, 1], r[0, 2]
            r10, r11, r12 = r[1, 0], r[1, 1], r[1, 2]
            r20, r21, r22 = r[2, 0], r[2, 1], r[2, 2]
            t0, t1, t2 = trans[c, 0], trans[c, 1], trans[c, 2]
            rns = row_ns[c]
            width = float(sizes[c, 0])
            height = float(sizes[c, 1])
            last_row = height - 1.0
            if rns == 0.0 and model != KANNALA_BRANDT:
                _pinhole_bc_rows(model == BROWN_CONRADY, p, src, front, back, lo, hi, c, r00, r01, r02, r10, r11, r12,
                                 r20, r21, r22, t0, t1, t2, width, height, uv, depth, in_image, cos_view)
                continue
            for i in range(lo, hi):
                u, v, ok, cx, cy, cz = project_one(
                    model, p, src[i - lo, 0], src[i - lo, 1], src[i - lo, 2], r00, r01, r02, r10, r11, r12, r20,
                    r21, r22, t0, t1, t2, ce_q[c], ce_t[c], cam_times[c], rns, last_row, n_iter,
                    ts, q, t, q1, theta, inv_sin, mode)
                store_projection(c, i, u, v, ok, cx, cy, cz, width, height, uv, depth, in_image, cos_view)


@dataclass(frozen=True, eq=False)
class CameraSetup:
    """``C`` cameras as the projection kernels take them (one set-up for points and cuboids).

    Attributes:
        cameras: the cameras, in order.
        models: ``(C,) int64`` lens model codes (:mod:`engine.camera`).
        params: ``(C, 16) float64`` lens parameters, C-contiguous.
        sizes: ``(C, 2) int64`` image (width, height) in pixels.
        camera_from_ego: ``(C,)`` inverse camera mounts.
        times_ns: ``(C,) int64`` exposure time of each camera (row 0 of a rolling shutter);
            zeros in a static scene.
        camera_from_src: ``(C,)`` transforms from the source frame into each camera at
            ``times_ns``: the world frame with a pose track (``camera_from_ego ·
            world_from_ego(t_c)⁻¹``), else the sensor frame (``camera_from_ego ·
            ego_from_sensor``).
    """

    cameras: list[Camera]
    models: Int64Array
    params: Float64Array
    sizes: Int64Array
    camera_from_ego: SE3
    times_ns: TimesNs
    camera_from_src: SE3


def camera_setup(
    cameras: Sequence[Camera],
    world_from_ego: PoseTrack | None = None,
    camera_times_ns: TimesNs | Sequence[int] | None = None,
    extrapolate: Extrapolation = "none",
    ego_from_sensor: SE3 | None = None,
) -> CameraSetup:
    """Check ``cameras`` and their exposure times, and gather their kernel arrays.

    Without ``world_from_ego`` the scene is static (``camera_times_ns`` ignored) and the
    sensor mount ``ego_from_sensor`` (default identity) folds into each camera's transform.
    With it, ``camera_times_ns`` ``(C,)`` is required and checked against the track for
    ``extrapolate``. Raises ``ValueError`` naming the bad argument.
    """
    cameras = list(cameras)
    for cam in cameras:
        if not isinstance(cam, Camera):
            raise ValueError(f"cameras must be Camera objects, got {type(cam).__name__}")
    n_cam = len(cameras)
    camera_from_ego = cameras_from_ego(cameras)
    if world_from_ego is None:
        times = np.zeros(n_cam, np.int64)
        camera_from_src = camera_from_ego @ (SE3.identity() if ego_from_sensor is None else ego_from_sensor)
    else:
        if camera_times_ns is None:
            raise ValueError("camera_times_ns is needed with world_from_ego")
        times = world_from_ego.check_times(np.asarray(camera_times_ns), extrapolate)
        if times.shape != (n_cam,):
            raise ValueError(f"camera_times_ns must have shape ({n_cam},), got {np.shape(camera_times_ns)}")
        ego_poses = world_from_ego.interpolate(times, extrapolate) if n_cam else SE3.identity(0)
        camera_from_src = camera_from_ego @ ego_poses.inverse()
    return CameraSetup(
        cameras=cameras,
        models=np.array([c.model_code for c in cameras], np.int64),
        params=np.ascontiguousarray(np.stack([c.params for c in cameras]) if n_cam else np.zeros((0, N_PARAMS))),
        sizes=np.array([[c.intrinsics.width, c.intrinsics.height] for c in cameras], np.int64).reshape(n_cam, 2),
        camera_from_ego=camera_from_ego,
        times_ns=times.astype(np.int64),
        camera_from_src=camera_from_src,
    )


class ProjectionInputs(NamedTuple):
    """The projection kernels' inputs, checked and converted by :func:`projection_inputs`
    (the CPU and the GPU kernel take them in this order, then the four outputs)."""

    xyz: np.ndarray  # (N, 3) float32/float64, C-contiguous
    times: Int64Array  # (N,) firing times with per-point poses, else (0,)
    per_point_pose: bool
    ext_q: Float64Array  # (4,) ego_from_sensor
    ext_t: Float64Array  # (3,)
    ts: Int64Array  # pose track (a single identity pose in a static scene)
    q: Float64Array
    t: Float64Array
    q1: Float64Array  # slerp tables of the track (interval_table)
    theta: Float64Array
    inv_sin: Float64Array
    mode: int  # extrapolation code
    models: Int64Array  # (C,)
    params: Float64Array  # (C, 16)
    rot: Float64Array  # (C, 3, 3) camera_from_src at each exposure time
    trans: Float64Array  # (C, 3)
    ce_q: Float64Array  # (C, 4) camera_from_ego
    ce_t: Float64Array  # (C, 3)
    cam_times: Int64Array  # (C,)
    row_ns: Float64Array  # (C,) rolling-shutter row time, 0 for a global shutter
    sizes: Int64Array  # (C, 2) width, height
    n_iter: int


def projection_inputs(
    xyz: Points3,
    cameras: Sequence[Camera],
    *,
    world_from_ego: PoseTrack | None = None,
    times_ns: TimesNs | None = None,
    camera_times_ns: TimesNs | Sequence[int] | None = None,
    ego_from_sensor: SE3 | None = None,
    frame: PointFrame = "sensor",
    extrapolate: Extrapolation = "none",
    rolling_iterations: int = 3,
) -> ProjectionInputs:
    """:func:`project_points`' checks (``ValueError`` naming the bad argument) and its
    kernels' inputs."""
    if frame not in ("sensor", "world"):
        raise ValueError(f"frame must be 'sensor' or 'world', got {frame!r}")
    p = as_points(xyz)
    n = len(p)
    if rolling_iterations < 0:
        raise ValueError(f"rolling_iterations must be >= 0, got {rolling_iterations}")
    ext = SE3.identity() if ego_from_sensor is None else ego_from_sensor
    if ext.shape != ():
        raise ValueError("ego_from_sensor must be a single SE3")
    if world_from_ego is None and frame == "world":
        raise ValueError("frame='world' needs world_from_ego")
    setup = camera_setup(cameras, world_from_ego, camera_times_ns, extrapolate, ext)
    cameras = setup.cameras
    n_cam = len(cameras)
    rolling = np.array([c.shutter == "rolling" for c in cameras], np.bool_)

    if world_from_ego is None:
        track = PoseTrack(np.zeros(1, np.int64), np.array([[1.0, 0.0, 0.0, 0.0]]), np.zeros((1, 3)))
        times = np.zeros(0, np.int64)
        rolling[:] = False  # nothing moves, so every row sees the same scene
    else:
        track = world_from_ego
        ends = [
            int(tc) + (c.row_readout_ns * (c.intrinsics.height - 1) if c.shutter == "rolling" else 0)
            for tc, c in zip(setup.times_ns, cameras)
        ]
        track.check_times(np.asarray(ends, np.int64), extrapolate)
        if frame == "sensor":
            if times_ns is None:
                raise ValueError("times_ns (per-point firing times) is needed with world_from_ego")
            times = track.check_times(times_ns, extrapolate)
            if times.shape != (n,):
                raise ValueError(f"times_ns must have shape ({n},), got {np.shape(times_ns)}")
        else:
            times = np.zeros(0, np.int64)

    row_ns = np.array([float(c.row_readout_ns) for c in cameras]) * rolling
    q1, theta, inv_sin = interval_table(track.rotation)
    cfs, cfe = setup.camera_from_src, setup.camera_from_ego
    return ProjectionInputs(
        p, np.ascontiguousarray(times, np.int64), len(times) > 0, ext.rotation, ext.translation,
        track.timestamps_ns, track.rotation, track.translation, q1, theta, inv_sin,
        EXTRAPOLATION_CODES[extrapolate], setup.models, setup.params,
        np.ascontiguousarray(quat.to_matrix(cfs.rotation).reshape(n_cam, 3, 3)),
        np.ascontiguousarray(cfs.translation),
        np.ascontiguousarray(cfe.rotation), np.ascontiguousarray(cfe.translation),
        setup.times_ns, row_ns, setup.sizes, int(rolling_iterations),
    )


def project_points(
    xyz: Points3,
    cameras: Sequence[Camera],
    *,
    world_from_ego: PoseTrack | None = None,
    times_ns: TimesNs | None = None,
    camera_times_ns: TimesNs | Sequence[int] | None = None,
    ego_from_sensor: SE3 | None = None,
    frame: PointFrame = "sensor",
    extrapolate: Extrapolation = "none",
    rolling_iterations: int = 3,
    device: Device | None = None,
) -> Projection:
    """Project ``(N, 3)`` points into every camera, each at its own exposure time.

    Args:
        xyz: ``(N, 3)`` float32/float64 metres, in the sensor frame (``frame="sensor"``,
            mounted by ``ego_from_sensor``, default the ego frame itself) or in the world
            frame (``frame="world"``). NaN points are allowed and never project.
        cameras: the ``C`` cameras.
        world_from_ego: ego poses. ``None`` means a static scene: points and cameras share
            one ego frame and no motion compensation happens (``times_ns`` and
            ``camera_times_ns`` are then ignored; ``frame`` must be ``"sensor"``).
        times_ns: ``(N,) int64`` absolute firing time of each point (needed for
            ``frame="sensor"`` with a pose track).
        camera_times_ns: ``(C,) int64`` exposure time of each camera (row 0 of a
            rolling-shutter camera); needed with a pose track.
        extrapolate: pose-track policy for times outside the track.
        rolling_iterations: fixed-point re-projections for rolling-shutter cameras.
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (default :func:`engine.cuda.get_device`).

    Returns:
        :class:`Projection` with ``(C, N)`` leading axes.
    """
    args = projection_inputs(xyz, cameras, world_from_ego=world_from_ego, times_ns=times_ns,
                             camera_times_ns=camera_times_ns, ego_from_sensor=ego_from_sensor, frame=frame,
                             extrapolate=extrapolate, rolling_iterations=rolling_iterations)
    if resolve(device) == "cuda":
        from engine.cuda.projection import project

        return project(args)
    n_cam, n = len(args.models), len(args.xyz)
    uv = np.empty((n_cam, n, 2))
    depth = np.empty((n_cam, n), np.float32)
    in_image = np.empty((n_cam, n), np.bool_)
    cos_view = np.empty((n_cam, n), np.float32)
    _project_kernel(*args, uv, depth, in_image, cos_view)
    return Projection(uv=uv, depth=depth, in_image=in_image, image_sizes=args.sizes, cos_view=cos_view)


def _warmup() -> None:
    from engine.camera import CameraIntrinsics

    cams = [
        Camera("a", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity()),
        Camera("b", CameraIntrinsics(4, 4, 2.0, 2.0, 2.0, 2.0), SE3.identity(), shutter="rolling", row_readout_ns=1),
    ]
    track = PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    for pts in (np.array([[0.0, 0.0, 1.0]], np.float32), np.array([[0.0, 0.0, 1.0]], np.float64)):
        project_points(pts, cams)
        project_points(pts, cams, world_from_ego=track, times_ns=np.array([5]), camera_times_ns=[5, 5])
        project_points(pts, cams, world_from_ego=track, camera_times_ns=[5, 5], frame="world")
