"""Sweep, camera and cuboid types: dtype conversion, validation, helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from engine import SE3, Camera, CameraIntrinsics, CuboidTrack, Sweep, box_corners
from engine import quaternion as quat
from engine.cuboid import EDGES


def test_sweep_converts_dtypes_and_checks_lengths():
    s = Sweep(np.arange(12).reshape(4, 3), timestamp_ns=5, intensity=[1, 2, 3, 4], ring=[0, 1, 2, 3])
    assert s.xyz.dtype == np.float32 and s.xyz.flags.c_contiguous
    assert s.intensity.dtype == np.float32 and s.ring.dtype == np.uint16
    assert len(s) == 4 and set(s.columns()) == {"xyz", "intensity", "ring"}
    with pytest.raises(ValueError, match=r"Sweep.intensity must have shape \(4,\), got \(3,\)"):
        Sweep(np.zeros((4, 3)), intensity=np.zeros(3))
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        Sweep(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="extra"):
        Sweep(np.zeros((4, 3)), extra={"rgb": np.zeros((3, 3))})


def test_sweep_select_and_concatenate_keep_columns():
    a = Sweep(np.ones((3, 3)), 1, intensity=[1, 2, 3], extra={"label": np.array([7, 8, 9])}, frame="ego")
    b = Sweep(np.zeros((2, 3)), 2, intensity=[4, 5], extra={"label": np.array([1, 2])}, frame="ego")
    c = Sweep.concatenate([a, b])
    np.testing.assert_array_equal(c.intensity, [1, 2, 3, 4, 5])
    np.testing.assert_array_equal(c.extra["label"], [7, 8, 9, 1, 2])
    assert c.timestamp_ns == 1 and c.ring is None
    picked = c.select(c.intensity > 2.5)
    np.testing.assert_array_equal(picked.extra["label"], [9, 1, 2])
    assert len(Sweep(np.zeros((0, 3))).select(np.zeros(0, bool))) == 0
    with pytest.raises(ValueError, match="different frames"):
        Sweep.concatenate([a, Sweep(np.zeros((1, 3)), frame="world")])


def test_camera_validation():
    with pytest.raises(ValueError, match="model"):
        CameraIntrinsics(10, 10, 1, 1, 5, 5, model="orthographic")
    with pytest.raises(ValueError, match="at most 4"):
        CameraIntrinsics(10, 10, 1, 1, 5, 5, model="kannala_brandt", distortion=(0.1,) * 5)
    with pytest.raises(ValueError, match="NaN"):
        CameraIntrinsics(10, 10, math.nan, 1, 5, 5)
    with pytest.raises(ValueError, match="positive"):
        CameraIntrinsics(10, 10, -1, 1, 5, 5)
    intr = CameraIntrinsics(10, 10, 1, 1, 5, 5)
    with pytest.raises(ValueError, match="rolling"):
        Camera("c", intr, SE3.identity(), shutter="rolling")
    with pytest.raises(ValueError, match="near_m"):
        Camera("c", intr, SE3.identity(), near_m=0)


def test_fold_back_limit_is_where_the_radial_map_turns():
    # r_d = r (1 + k1 r²) with k1 < 0 turns at r² = -1 / (3 k1)
    k1 = -0.2
    intr = CameraIntrinsics(1000, 1000, 500, 500, 500, 500, model="brown_conrady", distortion=(k1,))
    limit = intr.params(0.1)[13]
    assert limit == pytest.approx(-1 / (3 * k1), rel=1e-3)


def test_box_corners_match_rotated_reference_and_edges_have_box_lengths():
    rng = np.random.default_rng(0)
    c, s = rng.normal(size=(20, 3)), rng.uniform(0.5, 5, (20, 3))
    q = Rotation.random(20, random_state=1).as_quat(scalar_first=True)
    corners = box_corners(c, s, q)
    local = np.einsum("nij,nkj->nki", np.linalg.inv(quat.to_matrix(q)), corners - c[:, None])
    np.testing.assert_allclose(np.abs(local), np.broadcast_to(s[:, None] / 2, local.shape), atol=1e-12)
    lengths = np.linalg.norm(corners[:, EDGES[:, 0]] - corners[:, EDGES[:, 1]], axis=-1)
    np.testing.assert_allclose(lengths, np.repeat(s, 4, axis=1), atol=1e-12)


def test_cuboid_track_validation():
    ok = dict(track_id="car-1", category="car", timestamps_ns=np.array([0, 10]), centers=np.zeros((2, 3)),
              sizes=np.ones((2, 3)), rotations=np.array([[1.0, 0, 0, 0]] * 2))
    assert len(CuboidTrack(**ok)) == 2
    with pytest.raises(ValueError, match="strictly increasing"):
        CuboidTrack(**{**ok, "timestamps_ns": np.array([10, 10])})
    with pytest.raises(ValueError, match="non-negative"):
        CuboidTrack(**{**ok, "sizes": -np.ones((2, 3))})
    with pytest.raises(ValueError, match="NaN"):
        CuboidTrack(**{**ok, "centers": np.full((2, 3), np.nan)})
    with pytest.raises(ValueError, match="keyframe_attributes"):
        CuboidTrack(**ok, keyframe_attributes=[{}])
