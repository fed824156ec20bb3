"""engine.colorize: camera choice, sampling, and fusion on the synthetic rig."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from engine import quaternion as quat
from engine._jit import jit
from engine.camera import Camera, CameraIntrinsics, lens_unproject
from engine.colorize import colorize
from engine.motion import motion_compensate
from engine.projection import project_points
from engine.se3 import SE3
from engine.zbuffer import zbuffer

_INTR = CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5)


def _cam(name, yaw, intr=_INTR):
    return Camera(name, intr, SE3(quat.from_yaw(yaw), np.zeros(3)))


def bilinear_numpy(img, uv):
    h, w = img.shape[:2]
    x0, y0 = np.floor(uv[:, 0]), np.floor(uv[:, 1])
    fx, fy = (uv[:, 0] - x0)[:, None], (uv[:, 1] - y0)[:, None]
    xa, xb = np.clip(x0, 0, w - 1).astype(int), np.clip(x0 + 1, 0, w - 1).astype(int)
    ya, yb = np.clip(y0, 0, h - 1).astype(int), np.clip(y0 + 1, 0, h - 1).astype(int)
    f = img.astype(np.float64)
    top = (1 - fx) * f[ya, xa] + fx * f[ya, xb]
    bot = (1 - fx) * f[yb, xa] + fx * f[yb, xb]
    return (1 - fy) * top + fy * bot


def test_most_frontal_camera_is_chosen():
    # a pinhole and a distorted camera turned 0.4 rad apart about the vertical (camera y)
    # axis: each point picks the camera whose optical axis is closest to its ray
    lens = CameraIntrinsics(64, 48, 40.0, 40.0, 31.5, 23.5, model="brown_conrady", distortion=(-0.05,))
    cams = [Camera("a", _INTR, SE3.identity()),
            Camera("b", lens, SE3(quat.from_euler_zyx(0.0, 0.4, 0.0), np.zeros(3)))]
    rng = np.random.default_rng(0)
    pts = np.column_stack([rng.uniform(-3, 6, 400), rng.uniform(-2, 2, 400), rng.uniform(4, 8, 400)])
    proj = project_points(pts, cams)
    col = colorize(proj, proj.in_image, cams, [np.zeros((48, 64, 3), np.uint8)] * 2)
    # reference: angle between the camera-frame ray and +z, from the 3D points directly
    ang = np.full((2, len(pts)), np.inf)
    for c, cam in enumerate(cams):
        pc = cam.ego_from_camera.inverse().apply(pts)
        a = np.arccos(pc[:, 2] / np.linalg.norm(pc, axis=1))
        ang[c] = np.where(proj.in_image[c], a, np.inf)
    expect = np.where(np.isinf(ang.min(0)), -1, np.argmin(ang, 0))
    both = proj.in_image.all(0)
    assert both.sum() > 50 and (expect[both] == 1).any() and (expect[both] == 0).any()
    np.testing.assert_array_equal(col.camera_index, expect)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_bilinear_and_nearest_match_reference(dtype):
    rng = np.random.default_rng(1)
    cam = _cam("a", 0.0)
    img = rng.integers(0, 255, (48, 64, 3)).astype(dtype)
    pts = np.column_stack([rng.uniform(-3, 3, 500), rng.uniform(-2, 2, 500), np.full(500, 4.0)])
    proj = project_points(pts, [cam])
    ok = proj.in_image[0]
    bil = colorize(proj, ok[None], [cam], [img], "bilinear")
    ref = bilinear_numpy(img, proj.uv[0][ok])
    if dtype == np.uint8:
        ref = np.floor(ref + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(bil.colors[ok], ref)
    else:
        np.testing.assert_allclose(bil.colors[ok], ref, rtol=1e-6)
    near = colorize(proj, ok[None], [cam], [img], "nearest")
    px = np.round(proj.uv[0][ok]).astype(int)
    np.testing.assert_array_equal(near.colors[ok], img[px[:, 1], px[:, 0]])
    assert (bil.camera_index[~ok] == -1).all() and (bil.colors[~ok] == 0).all()


def test_missing_images_and_bad_input():
    cams = [_cam("a", 0.0), _cam("b", 0.0)]
    proj = project_points(np.array([[0.0, 0.0, 5.0], [np.nan, 0, 5]]), cams)
    ids = np.full((48, 64), 7, np.int32)
    col = colorize(proj, proj.in_image, cams, [None, ids], "nearest")
    assert col.camera_index.tolist() == [1, -1] and col.colors.tolist() == [7, 0]
    empty = project_points(np.zeros((0, 3)), cams)
    assert colorize(empty, empty.in_image, cams, [ids, ids]).colors.shape == (0,)
    with pytest.raises(ValueError, match=r"\(48, 64\)"):
        colorize(proj, proj.in_image, cams, [np.zeros((10, 10, 3), np.uint8), None])
    with pytest.raises(ValueError, match="visible must have shape"):
        colorize(proj, proj.in_image[:1], cams, [None, ids])
    with pytest.raises(ValueError, match="differ"):
        colorize(proj, proj.in_image, cams, [ids, ids.astype(np.uint8)])
    with pytest.raises(ValueError, match="interpolation"):
        colorize(proj, proj.in_image, cams, [ids, ids], "cubic")


@jit
def _unproject_cos(models, params, uv, visible, out):
    for c in range(uv.shape[0]):
        for i in range(uv.shape[1]):
            out[c, i] = -2.0
            if visible[c, i]:
                _, _, dz, ok = lens_unproject(models[c], params[c], uv[c, i, 0], uv[c, i, 1])
                if ok:
                    out[c, i] = dz


def unproject_choice(uv, visible, cams):
    """The former metric: the viewing angle from the pixel through the inverse lens."""
    cos = np.empty(visible.shape)
    _unproject_cos(np.array([c.model_code for c in cams]), np.stack([c.params for c in cams]), uv, visible, cos)
    return np.where(visible.any(0), np.argmax(cos, 0), -1)


# ---------------------------------------------------------------- the synthetic rig

# The rig's own cameras are 192×108: one pixel is ~0.5°, so a large share of LiDAR points
# lie within half a pixel of an object silhouette and the nearest pixel centre shows the
# neighbour. The fusion tests use the same mounts and lenses at twice the resolution.
_SCALE = 2
_SPLAT_PX = 4  # ~ the LiDAR's point spacing in these images


def _scaled(cam: Camera, k: int) -> Camera:
    i = cam.intrinsics
    intr = dataclasses.replace(i, width=i.width * k, height=i.height * k, fx=i.fx * k, fy=i.fy * k,
                               cx=(i.cx + 0.5) * k - 0.5, cy=(i.cy + 0.5) * k - 0.5)
    return Camera(cam.name, intr, cam.ego_from_camera, cam.near_m, cam.shutter,
                  cam.row_readout_ns // k if cam.shutter == "rolling" else 0)


@pytest.fixture(scope="module")
def fused(drive):
    from engine.sim.camera_render import render_camera

    cams = [_scaled(c, _SCALE) for c in drive.cameras]
    actors = np.isin(np.array(drive.objects.category), ["car", "pedestrian"])
    frames = []
    for f, t_frame in enumerate(drive.frame_times_ns):
        world, ids = [], []
        for lidar in drive.lidars:
            s = drive.sweeps[lidar.name][f]
            world.append(motion_compensate(s.xyz, s.time_offset_ns + s.timestamp_ns, drive.world_from_ego,
                                           lidar.ego_from_lidar, out_frame="world"))
            ids.append(s.extra["object_id"])
        world, oid = np.vstack(world), np.concatenate(ids)
        t_cam = int(t_frame) + 50_000_000
        images = [render_camera(drive.world, drive.world_from_ego, c, t_cam) for c in cams]
        proj = project_points(world, cams, world_from_ego=drive.world_from_ego,
                              camera_times_ns=[t_cam] * len(cams), frame="world")
        occ = zbuffer(proj, radius_px=_SPLAT_PX)
        id_images = [im.object_id for im in images]
        col = colorize(proj, occ.visible, cams, [im.rgb for im in images], "nearest")
        col_id = colorize(proj, occ.visible, cams, id_images, "nearest")
        old_choice = unproject_choice(proj.uv, occ.visible, cams)
        naive_id = colorize(proj, proj.in_image, cams, id_images, "nearest")
        # actor points another object clearly hides in some camera (renderer ground truth)
        occluder = np.full(len(world), -1)
        for c, (cam, im) in enumerate(zip(cams, images)):
            ii = np.flatnonzero(proj.in_image[c] & actors[oid])
            px = np.round(proj.uv[c, ii]).astype(int)
            seen = im.object_id[px[:, 1], px[:, 0]]
            cam_from_world = cam.ego_from_camera.inverse() @ drive.world_from_ego.interpolate(t_cam).inverse()
            dist = np.linalg.norm(cam_from_world.apply(world[ii]), axis=1)
            hidden = (seen >= 0) & (seen != oid[ii]) & (im.range_m[px[:, 1], px[:, 0]] < dist - 1.0)
            occluder[ii[hidden]] = seen[hidden]
        frames.append((oid, col, col_id, naive_id, occluder, old_choice))
    return drive, frames


def test_rig_points_take_the_colour_of_the_object_they_hit(fused):
    drive, frames = fused
    n = same_id = same_rgb = 0
    for oid, col, col_id, *_ in frames:
        m = col.camera_index >= 0
        np.testing.assert_array_equal(col.camera_index, col_id.camera_index)
        n += m.sum()
        same_id += (col_id.colors[m] == oid[m]).sum()
        same_rgb += (col.colors[m] == drive.objects.color_rgb[oid[m]]).all(axis=1).sum()
    assert n > 10_000
    assert same_id / n >= 0.99
    assert same_rgb / n >= 0.99


def test_rig_occluded_actor_points_not_coloured_by_occluder(fused):
    _, frames = fused
    hidden = by_occluder = naive_by_occluder = 0
    for oid, _, col_id, naive_id, occluder, _ in frames:
        o = occluder >= 0
        hidden += o.sum()
        by_occluder += (col_id.colors[o] == occluder[o]).sum()
        naive_by_occluder += (naive_id.colors[o] == occluder[o]).sum()
    assert hidden > 0 and naive_by_occluder > 0
    # the z-buffer removes the occluded points it has LiDAR evidence for; points the roof
    # LiDAR sees over an occluder that hides them from the lower camera (parallax) remain
    assert by_occluder < naive_by_occluder


def test_rig_choice_identical_to_unprojected_angle(fused):
    # the camera-frame direction gives the same choice as unprojecting the pixel
    _, frames = fused
    n = 0
    for _, _, col_id, *_, old_choice in frames:
        np.testing.assert_array_equal(col_id.camera_index, old_choice)
        n += (old_choice >= 0).sum()
    assert n > 10_000


def test_occluder_in_front_of_far_box_seen_from_a_lower_camera():
    # a roof LiDAR (3 m) sees over a low near box onto the far box behind it; a camera at
    # 0.8 m sees the near box hide the lower part of the far box. The LiDAR's near-box
    # points must block the far-box points hidden behind it in the camera's z-buffer.
    from engine.pose_track import PoseTrack
    from engine.sim.camera_render import render_camera
    from engine.sim.lidar import BeamPattern, Lidar, simulate_sweep
    from engine.sim.road import camera_mount, lidar_mount
    from engine.sim.world import ObjectTable, World

    near_id, far_id = 1, 2
    objects = ObjectTable(("ground", "building", "building"),
                          np.array([[90, 90, 90], [200, 30, 30], [30, 30, 200]], np.uint8), np.ones(3, np.float32))
    world = World(np.array([[8.0, 0.0, 0.8], [16.0, 0.0, 2.0]]), np.array([[1.0, 4.0, 1.6], [1.0, 10.0, 4.0]]),
                  np.zeros(2), 0, 10**9, np.zeros((0, 2, 3)), np.zeros((0, 2)), np.zeros((0, 3)), objects,
                  np.array([0, 0, 0]))
    track = PoseTrack(np.array([0, 10**9]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    lidar = Lidar("top", BeamPattern.uniform(48, -22.0, 2.0, 1800, max_range_m=60.0), lidar_mount(0.0, 0.0, 3.0))
    sweep = simulate_sweep(world, track, lidar, 0)
    oid = sweep.extra["object_id"]
    cam = Camera("low", CameraIntrinsics(320, 240, 200.0, 200.0, 159.5, 119.5), camera_mount(0.0, 0.0, 0.8, 0.0))
    image = render_camera(world, track, cam, 0)
    proj = project_points(sweep.xyz, [cam], ego_from_sensor=lidar.ego_from_lidar)
    occ = zbuffer(proj, radius_px=3)
    col = colorize(proj, occ.visible, [cam], [image.object_id], "nearest")
    naive = colorize(proj, proj.in_image, [cam], [image.object_id], "nearest")

    # renderer ground truth: the pixel shows the near box, well inside its silhouette
    # (3 px from any other object) and nearer than the point
    ok = proj.in_image[0]
    px = np.round(np.where(ok[:, None], proj.uv[0], 0.0)).astype(int)
    shown = image.object_id[px[:, 1], px[:, 0]]
    inner = image.object_id == near_id
    for axis in (0, 1):
        for step in (1, 2, 3):
            inner &= np.roll(image.object_id, step, axis) == near_id
            inner &= np.roll(image.object_id, -step, axis) == near_id
    dist = np.linalg.norm(cam.ego_from_camera.inverse().apply(lidar.ego_from_lidar.apply(sweep.xyz)), axis=1)
    hidden = ok & (oid == far_id) & inner[px[:, 1], px[:, 0]] & (image.range_m[px[:, 1], px[:, 0]] < dist - 1.0)
    assert hidden.sum() > 100  # the LiDAR really sees far-box points the camera cannot
    assert (naive.colors[hidden] == near_id).all()  # without the z-buffer they take the occluder
    assert not (col.colors[hidden] == near_id).any()
    assert (col.camera_index[hidden] == -1).all()
    # near-box points the camera sees (front face) keep the near box's colour
    front = ok & (oid == near_id) & (shown == near_id) & (np.abs(image.range_m[px[:, 1], px[:, 0]] - dist) < 0.05)
    assert front.sum() > 200
    assert (col.colors[front] == near_id).mean() >= 0.99
