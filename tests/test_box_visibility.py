"""engine.box_visibility: points in boxes, in some camera's image, and on its nearest surface,
counted per box, against the NumPy references of tests/naive.py (4×4 matrices, the lens in
NumPy, the np.minimum.at z-buffer), in the ego frame and in the world frame of a moving ego."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.box_visibility import box_point_visibility
from engine.camera import Camera, CameraIntrinsics
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from tests.naive import (
    brown_conrady,
    in_image,
    interpolate_poses,
    points_in_box,
    quat_to_matrix,
    transform_matrix,
    zbuffer,
)

_CAM_IN_EGO = quat.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2)
# lenses whose radial map is increasing everywhere: no fold-back guard to mirror
_CAMERAS = [
    Camera("pin", CameraIntrinsics(320, 180, 200.0, 200.0, 159.5, 89.5), SE3(_CAM_IN_EGO, [1.5, 0.0, 1.5])),
    Camera("bc", CameraIntrinsics(300, 200, 180.0, 182.0, 151.0, 98.0, model="brown_conrady",
                                  distortion=(0.05, 0.01, 1e-3, -5e-4, 0.002)),
           SE3(quat.multiply(quat.from_yaw(0.4), _CAM_IN_EGO), [1.2, 0.3, 1.6]), near_m=0.5),
]
# a car, a pedestrian in front of it (hiding part of it), a far van, a box behind the ego
CENTERS = np.array([[15.0, 1.0, 0.8], [8.0, 0.5, 0.9], [40.0, 6.0, 1.2], [-12.0, 0.0, 0.8]])
SIZES = np.array([[4.5, 1.9, 1.6], [0.6, 0.6, 1.8], [6.0, 2.2, 2.4], [4.0, 1.8, 1.6]])
ROTATIONS = quat.from_yaw(np.array([0.3, 0.0, -0.2, 1.0]))


def _points(rng) -> np.ndarray:
    """``(N, 3) float32`` ego-frame points: on and in each box, a ground plane, clutter."""
    parts = []
    for c, s, q in zip(CENTERS, SIZES, ROTATIONS):
        local = rng.uniform(-0.5, 0.5, (1500, 3)) * s
        face = rng.integers(0, 3, 1000)  # half of them pushed onto a face
        local[np.arange(1000), face] = np.sign(local[np.arange(1000), face]) * 0.499 * s[face]
        parts.append(local @ quat_to_matrix(q).T + c)
    parts.append(np.column_stack([rng.uniform(-30, 60, (4000, 2)), np.full(4000, 0.01)]))
    parts.append(rng.uniform([-30, -30, 0], [60, 30, 5], (3000, 3)))
    return np.vstack(parts).astype(np.float32)


def _reference(xyz, centers, rotations, cam_from_src):
    """Per box ``(inside, in_image, visible)`` counts of boxes ``centers``, ``SIZES``,
    ``rotations`` seen by ``_CAMERAS`` through ``cam_from_src`` ``(C, 4, 4)``."""
    p = np.asarray(xyz, np.float64)
    inside = np.array([points_in_box(p, c, s, q) for c, s, q in zip(centers, SIZES, rotations)])
    seen, visible = np.zeros(len(p), bool), np.zeros(len(p), bool)
    for cam, m in zip(_CAMERAS, cam_from_src):
        k = cam.intrinsics
        pc = p @ m[:3, :3].T + m[:3, 3]
        z = pc[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = brown_conrady(pc[:, 0] / z, pc[:, 1] / z, k)
        ok = (z > cam.near_m) & in_image(uv, k.width, k.height)
        seen |= ok
        visible |= zbuffer(uv, z, ok, k.width, k.height, 2, 0.1, 0.02)[1]
    return inside.sum(1), (inside & seen).sum(1), (inside & visible).sum(1)


def _camera_from_ego() -> np.ndarray:
    e = [c.ego_from_camera for c in _CAMERAS]
    return np.stack([transform_matrix(x.translation, x.rotation, inverse=True) for x in e])


def test_static_counts_match_numpy():
    xyz = _points(np.random.default_rng(0))
    got = box_point_visibility(xyz, CENTERS, SIZES, ROTATIONS, _CAMERAS)
    want = _reference(xyz, CENTERS, ROTATIONS, _camera_from_ego())
    for g, w in zip(got, want):
        assert g.dtype == np.int64
        np.testing.assert_array_equal(g, w)
    inside, seen, visible = got
    assert 0 < visible[0] < seen[0] <= inside[0]  # the pedestrian hides part of the car
    assert seen[3] == 0 < inside[3]  # behind the ego: in no image


def test_world_frame_counts_match_numpy():
    ts = np.arange(0, 200_000_000, 20_000_000, dtype=np.int64) + 1_700_000_000_000_000_000
    s = (ts - ts[0]) * 1e-9
    track = PoseTrack(ts, quat.from_euler_zyx(0.01 * s, 0.0, 0.5 + 0.6 * s),
                      np.column_stack([500 + 12 * s, -300 + s * s, 20 + 0.1 * s]))
    cam_times = np.array([ts[0] + 50_000_000, ts[0] + 130_000_000])
    # the scene is fixed in the world as seen from the ego at the first camera's time
    world_from_ego = track.interpolate(int(cam_times[0]))
    xyz = world_from_ego.apply(_points(np.random.default_rng(1)))
    centers = world_from_ego.apply(CENTERS)
    rotations = quat.multiply(world_from_ego.rotation, ROTATIONS)
    got = box_point_visibility(xyz, centers, SIZES, rotations, _CAMERAS, world_from_ego=track,
                               camera_times_ns=cam_times)
    q, t = interpolate_poses(track.timestamps_ns, track.rotation, track.translation, cam_times)
    cam_from_world = _camera_from_ego() @ transform_matrix(t, q, inverse=True)
    want = _reference(xyz, centers, rotations, cam_from_world)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    assert got[2].sum() > 0 and np.any(got[1] != got[0])


def test_no_cameras_and_no_boxes():
    xyz = _points(np.random.default_rng(2))
    inside, seen, visible = box_point_visibility(xyz, CENTERS, SIZES, ROTATIONS, [])
    np.testing.assert_array_equal(inside, _reference(xyz, CENTERS, ROTATIONS, _camera_from_ego())[0])
    assert seen.tolist() == visible.tolist() == [0, 0, 0, 0]
    empty = box_point_visibility(xyz, np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 4)), _CAMERAS)
    assert [e.shape for e in empty] == [(0,), (0,), (0,)]


def test_bad_input():
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        box_point_visibility(np.zeros((5, 2)), CENTERS, SIZES, ROTATIONS, _CAMERAS)
    with pytest.raises(ValueError, match="camera_times_ns"):
        box_point_visibility(
            np.zeros((5, 3)), CENTERS, SIZES, ROTATIONS, _CAMERAS,
            world_from_ego=PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3))))
