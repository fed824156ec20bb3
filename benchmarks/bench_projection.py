"""170 k points into six 1920×1080 Brown-Conrady cameras with a z-buffer, transform included.

The points are one real-shaped LiDAR frame: the synthetic rig's ``road`` preset (a 64-beam
roof and a 32-beam bumper LiDAR, 1800 firings each) ray-cast against its street at the
first frame (``simulate_drive(seed=0, duration_s=0.1, preset="road")``: 169 k returns),
each sweep mapped to the ego frame by its mount, both concatenated, float32, in firing
order (azimuth-major, as a LiDAR stores a sweep — which is what branch predictors and
caches see in use). All sides get exactly these points and the same cameras.

``projection_170k_6cams``: Fathom (``project_points`` + ``zbuffer``) against a vectorised
NumPy implementation doing the same work (goal ≥ 5×). Per camera: float32 ego points →
float64 camera frame (rotation + translation), near plane, fold-back guard, Brown-Conrady
distortion, float64 pixels, in-image test, a radius-1 splatted depth buffer and the
nearest-surface test (visibility out). The NumPy z-buffer splats with ``np.minimum.at``
into a dense per-camera image (the vectorised way); Fathom's sweeps the rows with a small
ring buffer and builds dense depth images only when asked. Fathom also computes the
viewing-angle cosine for colourisation, which NumPy does not. The NumPy lens, in-image
test and z-buffer are the references of ``tests/naive.py`` the tests hold Fathom to.
Asserted: the same in-image points, pixels to 1e-9 px, the same visible points.

``projection_170k_6cams_opencv`` is information, not a comparison (no ratio): per camera
``cv2.Rodrigues`` + ``cv2.projectPoints`` (transform and lens inside OpenCV), the depth as a
separate ``p @ r[2] + t[2]``, then the NumPy z-buffer. ``cv2.projectPoints`` does more work:
from Python it always computes and returns the 2N×15 Jacobian (OpenCV skips it only for a
C++ caller passing ``noArray()``), and OpenCV has no projection-only path for this lens
(``cv2.fisheye`` is another model, ``undistortPoints`` the inverse). It also has no fold-back
guard. Asserted: its pixels equal Fathom's to 1e-9 px where both are in the image, and its
extra in-image points are exactly those past Fathom's fold-back radius.

The z-buffer alone (radius 1 and 2, on Fathom's projection of the same points) is a
separate group against the same NumPy z-buffer, with identical visibility asserted.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.projection import project_points
from engine.se3 import SE3
from engine.sim.road import simulate_drive
from engine.zbuffer import zbuffer
from tests import naive

W, H = 1920, 1080
RADIUS = 1
TOL_M, TOL_REL = 0.1, 0.02


def road_sweep() -> np.ndarray:
    """Both LiDARs' first road-preset sweep in the ego frame, ``(169 k, 3) float32``, firing order."""
    drive = simulate_drive(seed=0, duration_s=0.1, preset="road")
    parts = [l.ego_from_lidar.apply(drive.sweeps[l.name][0].xyz.astype(np.float64)) for l in drive.lidars]
    return np.vstack(parts).astype(np.float32)


@pytest.fixture(scope="module")
def scene():
    xyz = road_sweep()
    assert 165_000 < len(xyz) < 175_000
    intr = CameraIntrinsics(W, H, 1266.0, 1266.0, 959.5, 539.5, model="brown_conrady",
                            distortion=(-0.12, 0.03, 2e-4, -3e-4, -0.002))
    axes = quat.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2)
    cams = [
        Camera(f"cam{k}", intr, SE3(quat.multiply(quat.from_yaw(np.deg2rad(yaw)), axes), [1.5, 0.0, 1.6]))
        for k, yaw in enumerate((0, 55, -55, 110, -110, 180))
    ]
    return xyz, cams


def _extrinsics(cam):
    cfe = cam.ego_from_camera.inverse()
    return quat.to_matrix(cfe.rotation), cfe.translation


def _numpy_zbuffer(uv, depth, ok, radius=RADIUS):
    """Visibility ``(N,) bool``: the np.minimum.at z-buffer of ``tests.naive`` (the tests' reference)."""
    return naive.zbuffer(uv, depth, ok, W, H, radius, TOL_M, TOL_REL)[1]


def _in_image(uv, front):
    return front & naive.in_image(uv, W, H)


def numpy_pipeline(xyz, cams):
    """Per camera ``(uv (N, 2) float64, in_image (N,) bool, visible (N,) bool)``."""
    p = xyz.astype(np.float64)
    out = []
    for cam in cams:
        r, t = _extrinsics(cam)
        pc = p @ r.T + t
        z = pc[:, 2]
        front = z > cam.near_m
        zs = np.where(front, z, 1.0)
        x, y = pc[:, 0] / zs, pc[:, 1] / zs
        front &= x * x + y * y <= cam.params[13]  # fold-back guard: beyond it the lens polynomial turns back
        uv = naive.brown_conrady(x, y, cam.intrinsics)
        ok = _in_image(uv, front)
        out.append((uv, ok, _numpy_zbuffer(uv, z, ok)))
    return out


def opencv_pipeline(xyz, cams):
    """Per camera ``(uv (N, 2) float64, in_image (N,) bool, visible (N,) bool)``."""
    p = xyz.astype(np.float64)
    out = []
    for cam in cams:
        r, t = _extrinsics(cam)
        rvec, _ = cv2.Rodrigues(r)
        uv, _jacobian = cv2.projectPoints(p, rvec, t, cam.intrinsics.K, np.array(cam.intrinsics.distortion))
        uv = uv.reshape(-1, 2)
        z = p @ r[2] + t[2]
        ok = _in_image(uv, z > cam.near_m)
        out.append((uv, ok, _numpy_zbuffer(uv, z, ok)))
    return out


def fathom_pipeline(xyz, cams):
    proj = project_points(xyz, cams)
    return proj, zbuffer(proj, radius_px=RADIUS, tolerance_m=TOL_M, tolerance_rel=TOL_REL)


def test_fathom_project_zbuffer(benchmark, scene):
    xyz, cams = scene
    benchmark.group = "projection_170k_6cams"
    benchmark.extra_info.update(role="fathom", goal=5, items=len(xyz) * len(cams), unit="point-cameras")
    _, occ = benchmark(fathom_pipeline, xyz, cams)
    assert occ.visible.sum() > 0.2 * len(xyz)


def test_numpy_project_zbuffer(benchmark, scene):
    xyz, cams = scene
    benchmark.group = "projection_170k_6cams"
    benchmark.extra_info.update(role="peer")
    out = benchmark.pedantic(numpy_pipeline, args=(xyz, cams), rounds=5, iterations=1, warmup_rounds=1)
    proj, occ = fathom_pipeline(xyz, cams)
    for c, (uv, ok, visible) in enumerate(out):
        np.testing.assert_array_equal(ok, proj.in_image[c])
        np.testing.assert_allclose(uv[ok], proj.uv[c][ok], atol=1e-9, rtol=0)
        np.testing.assert_array_equal(visible, occ.visible[c])


def test_opencv_project_zbuffer(benchmark, scene):
    xyz, cams = scene
    benchmark.group = "projection_170k_6cams_opencv"
    benchmark.extra_info.update(
        role="information", summary=lambda median: f"cv2.projectPoints + NumPy z-buffer {median * 1e3:.1f} ms "
        "(computes a 2N×15 Jacobian per camera besides the projection: no ratio)")
    out = benchmark.pedantic(opencv_pipeline, args=(xyz, cams), rounds=5, iterations=1, warmup_rounds=1)
    proj = project_points(xyz, cams)
    p = xyz.astype(np.float64)
    for c, (uv, ok, _) in enumerate(out):
        both = ok & proj.in_image[c]
        np.testing.assert_array_equal(both, proj.in_image[c])
        np.testing.assert_allclose(uv[both], proj.uv[c][both], atol=1e-9, rtol=0)
        r, t = _extrinsics(cams[c])
        pc = p @ r.T + t
        folded = (pc[:, 0] ** 2 + pc[:, 1] ** 2) > cams[c].params[13] * pc[:, 2] ** 2
        np.testing.assert_array_equal(ok & ~both, ok & folded)


@pytest.fixture(scope="module")
def projection(scene):
    xyz, cams = scene
    return project_points(xyz, cams)


@pytest.mark.parametrize("radius", [1, 2])
def test_fathom_zbuffer(benchmark, projection, radius):
    benchmark.group = f"zbuffer_170k_6cams_r{radius}"
    benchmark.extra_info.update(role="fathom", items=projection.in_image.size, unit="point-cameras")
    occ = benchmark(zbuffer, projection, radius_px=radius, tolerance_m=TOL_M, tolerance_rel=TOL_REL)
    for c in range(len(projection.image_sizes)):
        vis = _numpy_zbuffer(projection.uv[c], projection.depth[c], projection.in_image[c], radius)
        np.testing.assert_array_equal(occ.visible[c], vis)


@pytest.mark.parametrize("radius", [1, 2])
def test_numpy_zbuffer(benchmark, projection, radius):
    benchmark.group = f"zbuffer_170k_6cams_r{radius}"
    benchmark.extra_info.update(role="peer")
    p = projection

    def run():
        return [_numpy_zbuffer(p.uv[c], p.depth[c], p.in_image[c], radius) for c in range(len(p.image_sizes))]

    benchmark.pedantic(run, rounds=5, iterations=1, warmup_rounds=1)
