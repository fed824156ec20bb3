"""The boundary conventions of formats.conventions against independent definitions."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import box_corners
from formats.conventions import (
    camera_boxes_from_kitti,
    kitti_from_camera_boxes,
    lwh_from_nuscenes_wlh,
    lwh_from_pandaset_dimensions,
    nuscenes_wlh_from_lwh,
    pose_from_sfs_row,
    quaternion_from_legacy_heading,
    sfs_pose_row,
)
from formats.errors import FormatError
from formats.raw_log import link_or_copy


def test_nuscenes_wlh_swap():
    wlh = np.array([[1.8, 4.5, 1.5], [0.6, 0.7, 1.8]])
    np.testing.assert_array_equal(lwh_from_nuscenes_wlh(wlh), [[4.5, 1.8, 1.5], [0.7, 0.6, 1.8]])
    np.testing.assert_array_equal(nuscenes_wlh_from_lwh(lwh_from_nuscenes_wlh(wlh)), wlh)


def test_pandaset_dimensions_are_width_length_height():
    np.testing.assert_array_equal(lwh_from_pandaset_dimensions(1.8, 4.5, 1.5), [4.5, 1.8, 1.5])


def test_legacy_heading_object_and_yaw():
    np.testing.assert_array_equal(quaternion_from_legacy_heading({"x": 0.1, "w": 0.9, "z": 0.3, "y": 0.2}),
                                  [0.9, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(quaternion_from_legacy_heading(np.pi / 2), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)])


def test_sfs_pose_rows_round_trip():
    q = quat.from_euler_zyx(np.array([0.1, -0.2]), np.array([0.3, 0.05]), np.array([2.0, -3.0]))
    t = np.array([[1.0, 2.0, 3.0], [-4.0, 5.0, 6.0]])
    rows = sfs_pose_row(t, q)
    np.testing.assert_array_equal(rows[:, 6], q[:, 0])
    t2, q2 = pose_from_sfs_row(rows)
    np.testing.assert_array_equal(q2, q)
    np.testing.assert_array_equal(t2, t)


@pytest.mark.parametrize("ry", [-np.pi, -2.0, -0.3, 0.0, 0.7, 1.9, np.pi - 1e-9])
def test_kitti_rotation_y_round_trip_and_corners(ry):
    """KITTI's box (devkit roty, bottom centre) has the same 8 corners as the Fathom box."""
    h, w, l, x, y, z = 1.6, 1.9, 4.4, -2.0, 1.7, 14.0
    c, s, q = camera_boxes_from_kitti(h, w, l, x, y, z, ry)
    k = kitti_from_camera_boxes(c, s, q)
    assert np.isclose(np.angle(np.exp(1j * (k["rotation_y"][0] - ry))), 0, atol=1e-12)
    np.testing.assert_allclose([k["h"][0], k["w"][0], k["l"][0], k["x"][0], k["y"][0], k["z"][0]], [h, w, l, x, y, z])
    r = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    corners = (r @ np.array([[l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2],
                             [0, 0, 0, 0, -h, -h, -h, -h],
                             [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]])).T + [x, y, z]
    ours = box_corners(c[0], s[0], q[0])
    d = np.linalg.norm(ours[:, None] - corners[None], axis=-1)
    assert d.min(axis=0).max() < 1e-12 and d.min(axis=1).max() < 1e-12


def test_kitti_alpha_is_observation_angle():
    """alpha = rotation_y - atan2(x, z): a box straight ahead has alpha = rotation_y."""
    c, s, q = camera_boxes_from_kitti([1.5, 1.5], [1.8, 1.8], [4.0, 4.0], [0.0, 10.0], [1.0, 1.0], [10.0, 10.0],
                                      [0.5, 0.5])
    k = kitti_from_camera_boxes(c, s, q)
    np.testing.assert_allclose(k["alpha"], [0.5, 0.5 - np.pi / 4])


def test_link_or_copy_missing_source(tmp_path):
    with pytest.raises(FormatError, match="readable file") as err:
        link_or_copy(tmp_path / "nope.bin", tmp_path / "log" / "a.bin")
    assert err.value.path.endswith("nope.bin")
    (tmp_path / "a.bin").write_bytes(b"x")
    link_or_copy(tmp_path / "a.bin", tmp_path / "log" / "a.bin")
    link_or_copy(tmp_path / "a.bin", tmp_path / "log" / "a.bin")  # replaces
    assert (tmp_path / "log" / "a.bin").read_bytes() == b"x"
