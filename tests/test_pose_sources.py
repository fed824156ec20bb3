"""Pose sources → PoseTrack: GNSS/INS conventions, KITTI oxts, nuScenes ego_pose, tables."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.geodesy import Origin, enu_to_geodetic
from engine.pose_sources import (
    from_gnss_ins,
    from_kitti_oxts,
    from_nuscenes_ego_poses,
    from_pose_table,
    local_orientation,
    with_extra_samples,
)
from engine.se3 import SE3

ORIGIN = Origin(48.98, 8.39, 115.0)  # Karlsruhe, where KITTI drove


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _ecef_axes(lat_deg, lon_deg):
    """Columns: east, north, up unit vectors at (lat, lon) in ECEF (textbook)."""
    la, lo = np.radians(lat_deg), np.radians(lon_deg)
    e = [-np.sin(lo), np.cos(lo), 0.0]
    n = [-np.sin(la) * np.cos(lo), -np.sin(la) * np.sin(lo), np.cos(la)]
    u = [np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)]
    return np.array([e, n, u]).T


def _drive(n=50, seed=0, extent_m=3000.0):
    rng = np.random.default_rng(seed)
    enu = np.cumsum(rng.uniform(-1, 1, (n, 3)) * [extent_m / n, extent_m / n, 2.0], axis=0)
    lat, lon, alt = enu_to_geodetic(enu, ORIGIN)
    angles = rng.uniform([-0.1, -0.1, -np.pi], [0.1, 0.1, np.pi], (n, 3))
    ts = 1_600_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 10_000_000
    return ts, enu, lat, lon, alt, angles


def test_ned_convention_matches_matrix_reference():
    rng = np.random.default_rng(1)
    r, p, h = rng.uniform(-np.pi / 3, np.pi / 3, (3, 20))
    q = local_orientation(r, p, h, "ned")
    enu_from_ned = np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]])
    frd_from_flu = np.diag([1.0, -1, -1])
    for i in range(20):
        ref = enu_from_ned @ _rz(h[i]) @ _ry(p[i]) @ _rx(r[i]) @ frd_from_flu
        np.testing.assert_allclose(quat.to_matrix(q[i]), ref, atol=1e-12)
    # the closed form: yaw_enu = 90° - heading, pitch and roll about flipped axes
    np.testing.assert_allclose(quat.angle_between(q, quat.from_euler_zyx(r, -p, np.pi / 2 - h)), 0, atol=1e-7)


def test_enu_convention_is_zyx_euler():
    q = local_orientation(0.1, -0.2, 0.3, "enu")
    np.testing.assert_allclose(quat.to_matrix(q), _rz(0.3) @ _ry(-0.2) @ _rx(0.1), atol=1e-12)
    with pytest.raises(ValueError, match="yaw_convention"):
        local_orientation(0, 0, 0, "nwu")


@pytest.mark.parametrize("convention", ["enu", "ned"])
def test_gnss_ins_positions_and_orientations(convention):
    ts, enu, lat, lon, alt, ang = _drive()
    cols = dict(timestamp_ns=ts, lat_deg=lat, lon_deg=lon, alt_m=alt,
                roll_deg=np.degrees(ang[:, 0]), pitch_deg=np.degrees(ang[:, 1]), yaw_deg=np.degrees(ang[:, 2]))
    track, origin = from_gnss_ins(cols, convention, origin=ORIGIN)
    assert origin == ORIGIN
    np.testing.assert_allclose(track.translation, enu, atol=1e-6)
    np.testing.assert_array_equal(track.timestamps_ns, ts)
    # reference: local-level orientation carried through ECEF into the origin's ENU axes
    r0 = _ecef_axes(ORIGIN.lat_deg, ORIGIN.lon_deg).T
    for i in range(len(ts)):
        if convention == "enu":
            local = _rz(ang[i, 2]) @ _ry(ang[i, 1]) @ _rx(ang[i, 0])
        else:
            local = (np.array([[0, 1, 0], [1, 0, 0], [0, 0, -1.0]]) @ _rz(ang[i, 2]) @ _ry(ang[i, 1])
                     @ _rx(ang[i, 0]) @ np.diag([1.0, -1, -1]))
        ref = r0 @ _ecef_axes(lat[i], lon[i]) @ local
        np.testing.assert_allclose(quat.to_matrix(track.rotation[i]), ref, atol=1e-9)


def test_heading_north_drives_along_world_y():
    # heading 0 (north, NED) → ego x axis points along world +y; yaw 0 (ENU) → along +x
    ts = np.array([0, 1], dtype=np.int64)
    cols = dict(timestamp_ns=ts, lat_deg=[10.0, 10.0], lon_deg=[20.0, 20.0], alt_m=[0.0, 0.0],
                roll_deg=[0.0, 0.0], pitch_deg=[5.0, 5.0], yaw_deg=[0.0, 0.0])
    ned, _ = from_gnss_ins(cols, "ned")
    fwd = quat.rotate(ned.rotation[0], np.array([[1.0, 0, 0]]))[0]
    assert fwd[1] > 0.99 and fwd[2] > 0.08  # pitch up 5° in NED: nose up
    enu, _ = from_gnss_ins(cols, "enu")
    fwd = quat.rotate(enu.rotation[0], np.array([[1.0, 0, 0]]))[0]
    assert fwd[0] > 0.99 and fwd[2] < -0.08  # pitch 5° in ENU/FLU: nose down


def test_gnss_default_origin_is_earliest_sample():
    ts, enu, lat, lon, alt, ang = _drive(n=5)
    order = np.array([3, 0, 4, 1, 2])
    cols = dict(timestamp_ns=ts[order], lat_deg=lat[order], lon_deg=lon[order], alt_m=alt[order],
                roll_deg=ang[order, 0], pitch_deg=ang[order, 1], yaw_deg=ang[order, 2])
    track, origin = from_gnss_ins(cols, "enu")
    assert (origin.lat_deg, origin.lon_deg) == (lat[0], lon[0])
    np.testing.assert_array_equal(track.timestamps_ns, ts)
    np.testing.assert_allclose(track.translation[0], 0, atol=1e-9)
    # another tangent frame is a rigid motion of this one: all distances are kept
    d_ours = np.linalg.norm(track.translation[:, None] - track.translation[None], axis=-1)
    d_ref = np.linalg.norm(enu[:, None] - enu[None], axis=-1)
    np.testing.assert_allclose(d_ours, d_ref, atol=1e-6)


def test_gnss_bad_columns():
    ts, enu, lat, lon, alt, ang = _drive(n=3)
    good = dict(timestamp_ns=ts, lat_deg=lat, lon_deg=lon, alt_m=alt, roll_deg=ang[:, 0],
                pitch_deg=ang[:, 1], yaw_deg=ang[:, 2])
    with pytest.raises(ValueError, match="missing column 'yaw_deg'"):
        from_gnss_ins({k: v for k, v in good.items() if k != "yaw_deg"}, "enu")
    with pytest.raises(ValueError, match="'alt_m' must have shape"):
        from_gnss_ins({**good, "alt_m": alt[:2]}, "enu")
    with pytest.raises(ValueError, match="'roll_deg' has a NaN .* row 1"):
        from_gnss_ins({**good, "roll_deg": np.array([0.0, np.nan, 0.0])}, "enu")
    with pytest.raises(ValueError, match="integer nanoseconds"):
        from_gnss_ins({**good, "timestamp_ns": ts.astype(float)}, "enu")
    with pytest.raises(ValueError, match="missing column 'timestamp_ns'"):
        from_gnss_ins({k: v for k, v in good.items() if k != "timestamp_ns"}, "enu")


def _kitti_devkit_poses(oxts: np.ndarray) -> np.ndarray:
    """KITTI devkit convertOxtsToPose (Mercator), as 4×4 matrices relative to the first."""
    er = 6378137.0
    scale = np.cos(oxts[0, 0] * np.pi / 180.0)
    poses = []
    for row in oxts:
        lat, lon, alt, roll, pitch, yaw = row[:6]
        tx = scale * lon * np.pi * er / 180
        ty = scale * er * np.log(np.tan((90 + lat) * np.pi / 360))
        m = np.eye(4)
        m[:3, :3] = _rz(yaw) @ _ry(pitch) @ _rx(roll)
        m[:3, 3] = [tx, ty, alt]
        poses.append(m)
    first_inv = np.linalg.inv(poses[0])
    return np.array([first_inv @ p for p in poses])


def test_kitti_oxts_against_devkit_mercator():
    ts, enu, lat, lon, alt, ang = _drive(n=40, extent_m=400.0)
    oxts = np.zeros((40, 30))
    oxts[:, :3] = np.column_stack([lat, lon, alt])
    oxts[:, 3:6] = ang
    track, origin = from_kitti_oxts(oxts, ts)
    assert origin.lat_deg == lat[0]
    ours = track.poses
    first_inv = ours[0].inverse()
    rel = (first_inv @ ours).as_matrix()
    ref = _kitti_devkit_poses(oxts)
    dist = np.linalg.norm(ref[:, :3, 3], axis=1)
    # Mercator on a sphere differs from WGS84 ENU by ~0.1-0.2 % of the distance
    err = np.linalg.norm(rel[:, :3, 3] - ref[:, :3, 3], axis=1)
    assert np.all(err <= 0.003 * dist + 1e-6), err.max()
    assert err.max() > 1e-4  # and the two really are different methods
    # orientations agree up to the tiny tilt between local-level frames (< 1e-4 rad at 400 m)
    ang_err = quat.angle_between(_rotations(rel), _rotations(ref))
    assert ang_err.max() < 1e-4


def _rotations(m):
    return quat.from_matrix(m[:, :3, :3])


def test_kitti_bad_input():
    with pytest.raises(ValueError, match=r"\(K, 30\)"):
        from_kitti_oxts(np.zeros((3, 29)), np.arange(3))
    with pytest.raises(ValueError, match="3 oxts rows but 2 timestamps"):
        from_kitti_oxts(np.zeros((3, 30)), np.arange(2))
    bad = np.zeros((2, 30))
    bad[1, 4] = np.nan
    with pytest.raises(ValueError, match="row 1"):
        from_kitti_oxts(bad, np.arange(2))


def _ego_pose(ts_us, t, q):
    return {"token": "x", "timestamp": ts_us, "translation": list(t), "rotation": list(q)}


def test_nuscenes_ego_poses_sorted_and_converted():
    rng = np.random.default_rng(2)
    q = quat.as_quaternions(rng.normal(size=(6, 4)))
    t = rng.normal(size=(6, 3)) * 100
    ts_us = np.array([1532402927647951, 1532402927697546, 1532402927747234, 1532402927797421,
                      1532402927847017, 1532402927897134])
    order = [2, 0, 5, 1, 4, 3]
    recs = [_ego_pose(int(ts_us[i]), t[i], q[i]) for i in order]
    recs.append(_ego_pose(int(ts_us[1]), t[1], q[1]))  # exact repeat: dropped
    track = from_nuscenes_ego_poses(recs)
    np.testing.assert_array_equal(track.timestamps_ns, ts_us * 1000)
    np.testing.assert_allclose(track.translation, t)
    np.testing.assert_allclose(track.rotation, q, atol=1e-15)
    pose = track.at(int(ts_us[3]) * 1000)
    np.testing.assert_allclose(pose.translation, t[3])


def test_nuscenes_bad_records():
    with pytest.raises(ValueError, match="lacks field 'rotation'"):
        from_nuscenes_ego_poses([{"timestamp": 1, "translation": [0, 0, 0]}])
    with pytest.raises(ValueError, match="different poses share timestamp 1000"):
        from_nuscenes_ego_poses([_ego_pose(1, [0, 0, 0], [1, 0, 0, 0]), _ego_pose(1, [0, 1, 0], [1, 0, 0, 0])])
    with pytest.raises(ValueError, match="at least one"):
        from_nuscenes_ego_poses([])
    with pytest.raises(ValueError, match="3 and rotation 4"):
        from_nuscenes_ego_poses([_ego_pose(1, [0, 0], [1, 0, 0, 0])])


def test_pose_table():
    rng = np.random.default_rng(4)
    q = quat.as_quaternions(rng.normal(size=(4, 4)))
    t = rng.normal(size=(4, 3))
    ts = np.array([30, 10, 20, 40], dtype=np.int64) + 1_700_000_000_000_000_000
    track = from_pose_table(ts, np.column_stack([t, q]))
    order = np.argsort(ts)
    np.testing.assert_array_equal(track.timestamps_ns, ts[order])
    np.testing.assert_allclose(track.translation, t[order])
    np.testing.assert_allclose(track.rotation, q[order])
    with pytest.raises(ValueError, match=r"\(4, 7\)"):
        from_pose_table(ts, np.zeros((4, 6)))
    with pytest.raises(ValueError, match="integer nanoseconds"):
        from_pose_table(ts.astype(np.float64), np.column_stack([t, q]))
    with pytest.raises(ValueError, match="zero-norm"):
        from_pose_table(ts, np.column_stack([t, np.zeros((4, 4))]))


def test_extra_samples_fill_only_missing_times_and_the_first_source_wins():
    base = from_pose_table(np.array([0, 200], np.int64),
                           np.array([[0, 0, 0, 1, 0, 0, 0], [2, 0, 0, 1, 0, 0, 0]], float))
    q = quat.from_yaw(np.array([0.3, 0.6]))
    extra = (np.array([200, 100], np.int64), SE3(q, np.array([[9.0, 9, 9], [1.0, 5, 0]])))
    got = with_extra_samples(base, [extra])
    assert got.timestamps_ns.tolist() == [0, 100, 200]
    np.testing.assert_array_equal(got.translation, [[0, 0, 0], [1, 5, 0], [2, 0, 0]])  # 200 kept from base
    np.testing.assert_allclose(got.rotation[1], q[1], atol=1e-15)
