"""GPU projection, z-buffer and colourisation (engine.cuda.projection / zbuffer / colorize)
against the CPU kernels: every lens model, rolling shutter, static / sensor-frame / world-frame
points; integer outputs identical, pixels within 1e-4 px, depths and cosines within float32
rounding."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.colorize import colorize
from engine.projection import project_points
from engine.se3 import SE3
from engine.zbuffer import zbuffer
from tests.cuda_backend import SIMULATOR, assert_same, sizes
from tests.cuda_scenes import cameras, points, track

PIXEL_BOUND = 1e-4  # engine.cuda: GPU pixels within 1e-4 px of the CPU kernel's





def _image_size(n):
    return (1920, 1080) if n > 10_000 else (160, 120)


def _assert_projections_equal(cpu, gpu):
    np.testing.assert_array_equal(gpu.in_image, cpu.in_image)
    np.testing.assert_array_equal(np.isnan(gpu.uv), np.isnan(cpu.uv))
    assert_same(cpu.uv, gpu.uv, atol=PIXEL_BOUND)
    assert_same(cpu.depth, gpu.depth, atol=1e-5)
    assert_same(cpu.cos_view, gpu.cos_view, atol=1e-6)
    np.testing.assert_array_equal(gpu.image_sizes, cpu.image_sizes)


@pytest.mark.parametrize("n", sizes(1500, 170_000))
@pytest.mark.parametrize("source", ["static", "sensor", "world"])
def test_projection_equals_the_cpu_kernel(n, source):
    rng = np.random.default_rng(n)
    cams = cameras(*_image_size(n), rolling=source != "static")
    xyz = points(rng, n)
    kw: dict = {}
    if source != "static":
        ego = track(rng)
        kw = dict(world_from_ego=ego, camera_times_ns=rng.integers(150_000_000, 200_000_000, len(cams)))
        if source == "sensor":
            kw.update(times_ns=np.sort(rng.integers(100_000_000, 200_000_000, n)),
                      ego_from_sensor=SE3(quat.from_yaw(0.1), [0.5, 0.0, 1.9]))
        else:
            kw.update(frame="world")
            xyz = xyz + ego.translation[15]
    xyz = xyz.astype(np.float32) if source == "sensor" else xyz
    cpu = project_points(xyz, cams, device="cpu", **kw)
    gpu = project_points(xyz, cams, device="cuda", **kw)
    assert cpu.in_image.sum(axis=1).min() > n // 100  # every camera sees points
    _assert_projections_equal(cpu, gpu)


@pytest.mark.parametrize("n", sizes(1500, 170_000))
def test_zbuffer_and_colour_equal_the_cpu_kernels(n):
    rng = np.random.default_rng(n + 1)
    width, height = _image_size(n)
    cams = cameras(width, height, rolling=False)
    proj = project_points(points(rng, n), cams, device="cpu")
    for radius, tol in ((2, 0.1), (0, 0.5), (4, 0.0)):
        cpu = zbuffer(proj, radius, tol, 0.02, device="cpu")
        gpu = zbuffer(proj, radius, tol, 0.02, device="cuda")
        np.testing.assert_array_equal(gpu.visible, cpu.visible)
        assert 0 < cpu.visible.sum() < proj.in_image.sum()  # some points are hidden
    np.testing.assert_array_equal(gpu.depth_images[0], cpu.depth_images[0])
    visible = cpu.visible
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in cams]
    images[2] = None  # a camera without an image colours nothing
    for interpolation in ("bilinear", "nearest"):
        a = colorize(proj, visible, cams, images, interpolation, device="cpu")
        b = colorize(proj, visible, cams, images, interpolation, device="cuda")
        np.testing.assert_array_equal(b.camera_index, a.camera_index)
        np.testing.assert_array_equal(b.colors, a.colors)
        assert b.colors.dtype == np.uint8 and not np.any(b.camera_index == 2)
        assert (a.camera_index >= 0).sum() > n // 20
    gray = [None if im is None else im[:, :, 0].astype(np.float32) / 7 for im in images]
    a = colorize(proj, visible, cams, gray, device="cpu")
    b = colorize(proj, visible, cams, gray, device="cuda")
    assert b.colors.shape == (n,) and b.colors.dtype == np.float32
    assert_same(a.colors, b.colors, atol=1e-4)


def test_bad_input_raises_as_on_the_cpu():
    cams = cameras(160, 120)
    xyz = np.zeros((4, 3))
    with pytest.raises(ValueError, match="times_ns .* is needed with world_from_ego"):
        project_points(xyz, cams, world_from_ego=track(np.random.default_rng(0)), camera_times_ns=[0] * 6,
                       device="cuda")
    proj = project_points(xyz, cams, device="cuda")
    _assert_projections_equal(project_points(xyz, cams, device="cpu"), proj)
    with pytest.raises(ValueError, match="radius_px must be a non-negative integer"):
        zbuffer(proj, radius_px=-1, device="cuda")
    with pytest.raises(ValueError, match="visible must have shape"):
        colorize(proj, np.zeros((6, 3), bool), cams, [None] * 6, device="cuda")
    empty = project_points(np.zeros((0, 3)), cams, device="cuda")
    assert empty.uv.shape == (6, 0, 2) and zbuffer(empty, device="cuda").visible.shape == (6, 0)


@pytest.mark.skipif(not SIMULATOR, reason="a GPU's fused multiply-adds may decide a point exactly on an edge "
                                           "differently (engine.cuda); the simulator must not")
def test_points_on_the_image_edges_decide_as_on_the_cpu():
    cam = cameras(160, 120, rolling=False)[0]
    u = np.array([-0.5, 159.5 - 1e-12, 80.0, -0.5 - 1e-12])
    xyz_cam = np.stack([(u - cam.intrinsics.cx) / cam.intrinsics.fx * 10, np.zeros(4), np.full(4, 10.0)], axis=1)
    xyz = cam.ego_from_camera.apply(xyz_cam)
    cpu = project_points(xyz, [cam], device="cpu")
    gpu = project_points(xyz, [cam], device="cuda")
    np.testing.assert_array_equal(gpu.uv, cpu.uv)
    np.testing.assert_array_equal(gpu.in_image, cpu.in_image)
