"""engine.cuboid_projection: corners, near-plane / field-of-view clipping, boxes, visibility."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import EDGES, box_corners
from engine.cuboid_projection import project_cuboids
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from tests import naive

_PIN = CameraIntrinsics(1280, 720, 700.0, 700.0, 639.5, 359.5)
_BC = CameraIntrinsics(1280, 720, 700.0, 705.0, 641.0, 357.0, model="brown_conrady",
                       distortion=(-0.3, 0.09, 1e-3, -5e-4, -0.01))
_CAM_IN_EGO = quat.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2)


def _cam(intr, yaw=0.0, name="c"):
    return Camera(name, intr, SE3(quat.multiply(quat.from_yaw(yaw), _CAM_IN_EGO), [1.5, 0.0, 1.5]))


def _box(center, size=(4.5, 1.9, 1.6), yaw=0.3):
    return np.array([center], float), np.array([size], float), quat.from_yaw(np.array([yaw]))


@pytest.mark.parametrize("intr", [_PIN, _BC], ids=["pinhole", "brown_conrady"])
def test_box_in_front_matches_opencv(intr):
    cam = _cam(intr)
    c, s, r = _box([15.0, 1.0, 0.8])
    res = project_cuboids(c, s, r, [cam, _cam(intr, yaw=np.pi, name="back")], samples_per_edge=8)
    corners_cam = cam.ego_from_camera.inverse().apply(box_corners(c, s, r)[0])
    np.testing.assert_allclose(res.corners_uv[0, 0], naive.opencv_project(corners_cam, intr), atol=1e-6)
    # every edge sample is the projection of the matching point of the 3D edge
    n_seg = res.edges_uv.shape[3] - 1
    assert n_seg == (1 if intr.model == "pinhole" else 8)
    t = np.linspace(0, 1, n_seg + 1)[:, None]
    for e, (a, b) in enumerate(EDGES):
        pts = corners_cam[a] + t * (corners_cam[b] - corners_cam[a])
        np.testing.assert_allclose(res.edges_uv[0, 0, e], naive.opencv_project(pts, intr), atol=1e-6)
    # fully inside the image: the box is the bbox of the edge samples (pinhole: of the corners)
    ref = res.edges_uv[0, 0].reshape(-1, 2)
    np.testing.assert_allclose(res.boxes[0, 0], [*ref.min(0), *ref.max(0)], atol=1e-9)
    if intr.model == "pinhole":
        cv = naive.opencv_project(corners_cam, intr)
        np.testing.assert_allclose(res.boxes[0, 0], [*cv.min(0), *cv.max(0)], atol=1e-6)
    assert res.visible[0].tolist() == [True, False]
    assert np.isnan(res.boxes[0, 1]).all() and np.isnan(res.corners_uv[0, 1]).all()
    assert len(res.paths(0, 0)) == 12 and res.paths(0, 1) == []


def test_near_plane_clipping_is_exact():
    cam = Camera("c", _PIN, SE3.identity(), near_m=0.5)
    # box straddling the camera plane (z from -1 to 3), narrow enough that its cut at the
    # near plane stays inside the pinhole's field-of-view cone
    c, s, r = np.array([[0.3, 0.1, 1.0]]), np.array([[0.6, 0.4, 4.0]]), np.array([[1.0, 0, 0, 0]])
    res = project_cuboids(c, s, r, [cam])
    corners = box_corners(c, s, r)[0]
    assert np.isnan(res.corners_uv[0, 0, corners[:, 2] < 0.5]).all()
    assert res.visible[0, 0]
    for e, (a, b) in enumerate(EDGES):
        za, zb = corners[a, 2], corners[b, 2]
        uv = res.edges_uv[0, 0, e]
        if za < 0.5 < zb or zb < 0.5 < za:
            # the clipped end is the pinhole image of the edge's intersection with z = near
            tn = (0.5 - za) / (zb - za)
            p = corners[a] + tn * (corners[b] - corners[a])
            end = uv[0] if za < zb else uv[-1]
            np.testing.assert_allclose(end, naive.opencv_project(p[None], _PIN)[0], rtol=1e-6)
        elif max(za, zb) < 0.5:
            assert np.isnan(uv).all()
    # the box is clipped to the image area
    assert res.boxes[0, 0, 0] >= -0.5 and res.boxes[0, 0, 2] <= _PIN.width - 0.5


def test_field_of_view_clipping_brown_conrady():
    # k1 = -0.5 folds back at r² = 2/3: an edge running far off-axis is cut at that cone
    intr = CameraIntrinsics(1920, 1080, 500.0, 500.0, 959.5, 539.5, model="brown_conrady", distortion=(-0.5,))
    cam = Camera("c", intr, SE3.identity())
    lim = cam.params[13]
    c, s, r = np.array([[3.0, 0.0, 4.0]]), np.array([[6.0, 0.5, 0.5]]), np.array([[1.0, 0, 0, 0]])
    res = project_cuboids(c, s, r, [cam], samples_per_edge=32)
    x_edge = res.edges_uv[0, 0, 0]  # corners 0 → 1 run along x from 0 to 6 m at z = 3.75
    assert np.isfinite(x_edge).all()
    # the far end sits on the cone x² + y² = lim z²: its image radius is the fold radius
    xn = np.sqrt(lim) * np.array([1.0, 0.0])
    r_fold = np.hypot(*((1 - 0.5 * lim) * xn))
    end = x_edge[-1]
    radius = np.hypot((end[0] - 959.5) / 500.0, (end[1] - 539.5) / 500.0)
    assert radius == pytest.approx(r_fold, rel=1e-6)
    # every sample stays on the unfolded side: image radius increases along the edge
    rad = np.hypot(x_edge[:, 0] - 959.5, x_edge[:, 1] - 539.5)
    assert np.all(np.diff(rad[np.argmin(rad):]) > 0)


def test_world_frame_boxes_with_pose_track_and_bad_input():
    cam = _cam(_PIN)
    track = PoseTrack(np.array([0, 1_000_000_000]), quat.from_yaw(np.array([0.0, 0.5])),
                      np.array([[100.0, 50.0, 0.0], [110.0, 50.0, 0.0]]))
    pose = track.interpolate(400_000_000)
    ego_center = np.array([15.0, 1.0, 0.8])
    world_center = pose.apply(ego_center[None])
    world_rot = quat.multiply(pose.rotation, quat.from_yaw(0.3))
    a = project_cuboids(world_center, np.array([[4.5, 1.9, 1.6]]), world_rot[None], [cam],
                        world_from_ego=track, camera_times_ns=[400_000_000])
    b = project_cuboids(*_box(ego_center), [cam])
    np.testing.assert_allclose(a.corners_uv, b.corners_uv, atol=1e-6)
    with pytest.raises(ValueError, match="camera_times_ns"):
        project_cuboids(world_center, np.ones((1, 3)), world_rot[None], [cam], world_from_ego=track)
    with pytest.raises(ValueError, match=r"\(M, 3\)"):
        project_cuboids(np.zeros(3), np.ones(3), np.array([1.0, 0, 0, 0]), [cam])
    with pytest.raises(ValueError, match="samples_per_edge"):
        project_cuboids(*_box(ego_center), [cam], samples_per_edge=0)
    empty = project_cuboids(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)) + [1, 0, 0, 0], [cam])
    assert empty.visible.shape == (0, 1)
