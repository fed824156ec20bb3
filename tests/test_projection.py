"""engine.projection: lens models vs OpenCV, guards, motion compensation, rolling shutter."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine import quaternion as quat
from engine.camera import Camera, CameraIntrinsics, cameras_from_ego, lens_project
from engine.motion import motion_compensate
from engine.pose_track import OutOfRangeError, PoseTrack
from engine.projection import project_points
from engine.se3 import SE3
from tests import naive

# camera frame (x right, y down, z forward) looking along ego +x
_CAM_IN_EGO = quat.from_euler_zyx(-np.pi / 2, 0.0, -np.pi / 2)


def _camera(intr: CameraIntrinsics, yaw: float = 0.0, **kw) -> Camera:
    q = quat.multiply(quat.from_yaw(yaw), _CAM_IN_EGO)
    return Camera("cam", intr, SE3(q, [1.2, -0.3, 1.6]), **kw)


def _random_ego_points(rng, n=4000):
    return rng.uniform([-5.0, -40.0, -4.0], [60.0, 40.0, 6.0], (n, 3))


_LENSES = [
    CameraIntrinsics(1920, 1080, 1000.0, 1005.0, 958.3, 541.7),
    CameraIntrinsics(1920, 1080, 1000.0, 1005.0, 958.3, 541.7, model="brown_conrady", distortion=(-0.28, 0.07)),
    CameraIntrinsics(
        1920, 1080, 1200.0, 1190.0, 955.0, 530.0, model="brown_conrady",
        distortion=(-0.31, 0.11, 1.2e-3, -8e-4, -0.02),
    ),
    CameraIntrinsics(  # rational k4..k6 + tangential
        1600, 1200, 800.0, 810.0, 801.0, 598.0, model="brown_conrady",
        distortion=(0.42, -0.05, 5e-4, 9e-4, 0.003, 0.75, -0.02, 0.012),
    ),
    CameraIntrinsics(
        1280, 960, 420.0, 418.0, 640.5, 481.0, model="kannala_brandt", distortion=(0.05, -0.01, 0.004, -0.0007),
    ),
    CameraIntrinsics(
        1280, 960, 420.0, 418.0, 640.5, 481.0, skew=0.8, model="kannala_brandt", distortion=(-0.02, 0.003),
    ),
]


@pytest.mark.parametrize("intr", _LENSES, ids=lambda i: f"{i.model}{len(i.distortion)}-skew{i.skew}")
def test_matches_opencv(intr):
    rng = np.random.default_rng(3)
    cam = _camera(intr)
    ego = _random_ego_points(rng)
    proj = project_points(ego, [cam])
    pts_cam = cam.ego_from_camera.inverse().apply(ego)
    ref = naive.opencv_project(pts_cam, intr)
    ok = proj.in_image[0]
    assert ok.sum() > 500
    np.testing.assert_allclose(proj.uv[0][ok], ref[ok], rtol=0, atol=1e-6)
    np.testing.assert_allclose(proj.depth[0], pts_cam[:, 2].astype(np.float32), rtol=1e-6)
    # the in-image test is exactly the pixel-area test on OpenCV's pixels (where defined)
    front = np.isfinite(proj.uv[0, :, 0])
    np.testing.assert_array_equal(ok, front & naive.in_image(ref, intr.width, intr.height))


def test_extrinsic_matches_opencv_rvec_tvec():
    intr = _LENSES[2]
    cam = _camera(intr, yaw=0.7)
    rng = np.random.default_rng(5)
    ego = rng.uniform([-40, -40, -3], [40, 40, 5], (3000, 3))
    proj = project_points(ego, [cam])
    cfe = cam.ego_from_camera.inverse()
    rvec, _ = cv2.Rodrigues(quat.to_matrix(cfe.rotation))
    ref, _ = cv2.projectPoints(ego.reshape(-1, 1, 3), rvec, cfe.translation, intr.K, np.array(intr.distortion))
    ok = proj.in_image[0]
    assert ok.sum() > 300
    np.testing.assert_allclose(proj.uv[0][ok], ref.reshape(-1, 2)[ok], atol=1e-6)


def test_behind_and_near_plane_never_project():
    intr = CameraIntrinsics(1920, 1080, 150.0, 150.0, 960.0, 540.0)  # very wide pinhole
    cam = Camera("c", intr, SE3.identity(), near_m=0.5)
    off = np.deg2rad(100.0)  # 100° off the optical axis: behind the camera
    pts = np.array([
        [np.sin(off) * 10, 0.0, np.cos(off) * 10],
        [0.0, 0.0, -5.0],
        [0.0, 0.0, 0.5],           # exactly on the near plane
        [0.01, 0.0, 0.5 + 1e-9],   # just beyond it
        [0.0, 0.0, 0.0],
    ])
    proj = project_points(pts, [cam])
    assert proj.in_image[0].tolist() == [False, False, False, True, False]
    assert np.isnan(proj.uv[0, [0, 1, 2, 4]]).all()
    # OpenCV happily "projects" the point behind the camera (mirrored) into the image
    ref = naive.opencv_project(pts[:1], intr)[0]
    assert 0 <= ref[0] < intr.width and 0 <= ref[1] < intr.height


def test_brown_conrady_fold_back_rejected():
    # k1 = -0.5: r_d = r (1 - r²/2) peaks at r² = 2/3 and folds back beyond
    intr = CameraIntrinsics(1920, 1080, 500.0, 500.0, 960.0, 540.0, model="brown_conrady", distortion=(-0.5,))
    cam = Camera("c", intr, SE3.identity())
    assert cam.params[13] == pytest.approx(2.0 / 3.0, rel=1e-3)
    pts = np.array([[1.2, 0.0, 1.0], [0.0, 1.0, 1.0], [0.5, 0.3, 1.0]])
    ref = naive.opencv_project(pts, intr)
    # OpenCV folds the far points back into the image ...
    assert np.all((ref[:2, 0] > 0) & (ref[:2, 0] < 1920) & (ref[:2, 1] > 0) & (ref[:2, 1] < 1080))
    proj = project_points(pts, [cam])
    # ... Fathom rejects them and keeps the valid one identical to OpenCV
    assert proj.in_image[0].tolist() == [False, False, True]
    np.testing.assert_allclose(proj.uv[0, 2], ref[2], atol=1e-6)


def test_kannala_brandt_fold_back_rejected():
    # θ_d = θ (1 - 0.3 θ²) peaks at θ = 1/√0.9 ≈ 1.054 rad
    intr = CameraIntrinsics(1280, 960, 300.0, 300.0, 640.0, 480.0, model="kannala_brandt", distortion=(-0.3,))
    cam = Camera("c", intr, SE3.identity())
    assert cam.params[13] == pytest.approx(1.0 / np.sqrt(0.9), rel=1e-3)
    theta = np.array([1.3, 0.8])
    pts = np.stack([np.sin(theta), np.zeros(2), np.cos(theta)], axis=1)
    ref = naive.opencv_project(pts, intr)
    assert 0 < ref[0, 0] < 1280  # folded back inside
    proj = project_points(pts, [cam])
    assert proj.in_image[0].tolist() == [False, True]
    np.testing.assert_allclose(proj.uv[0, 1], ref[1], atol=1e-6)


def test_empty_and_nan_points():
    cams = [_camera(_LENSES[1]), _camera(_LENSES[4], yaw=1.0)]
    proj = project_points(np.zeros((0, 3)), cams)
    assert proj.uv.shape == (2, 0, 2) and proj.depth.shape == (2, 0) and proj.in_image.shape == (2, 0)
    pts = np.array([[10.0, 0.0, 1.0], [np.nan, 0.0, 1.0], [10.0, np.nan, 1.0], [10.0, 0.0, np.nan]], np.float32)
    proj = project_points(pts, cams)
    assert proj.in_image[0, 0]
    assert not proj.in_image[:, 1:].any()
    none = project_points(pts, [])
    assert none.uv.shape == (0, 4, 2)


def test_every_point_equals_the_scalar_lens():
    """The batch kernel (two-pass pinhole / Brown-Conrady path, generic fisheye path) gives
    bit for bit what ``lens_project`` gives: points in front, behind, on the near plane,
    beyond the fold-back limit and NaN, shuffled over several parallel work chunks."""
    rng = np.random.default_rng(11)
    n = 5000
    pts = rng.uniform([-30.0, -30.0, -10.0], [30.0, 30.0, 40.0], (n, 3))
    pts[::89, 1] = np.nan
    cams = [_camera(intr, yaw=0.4 * k) for k, intr in enumerate(_LENSES)]
    cam_from_src = cameras_from_ego(cams) @ SE3.identity()
    rot = quat.to_matrix(cam_from_src.rotation)
    pts[::97] = cam_from_src[0].inverse().apply(np.array([[0.0, 0.0, cams[0].near_m]]))  # z = near ± rounding
    proj = project_points(pts, cams)
    assert 0 < proj.in_image.sum() < proj.in_image.size
    for c, cam in enumerate(cams):
        r, t = rot[c], cam_from_src.translation[c]
        for i in range(n):
            px, py, pz = (float(x) for x in pts[i])
            x = r[0, 0] * px + r[0, 1] * py + r[0, 2] * pz + t[0]
            y = r[1, 0] * px + r[1, 1] * py + r[1, 2] * pz + t[1]
            z = r[2, 0] * px + r[2, 1] * py + r[2, 2] * pz + t[2]
            u, v, ok = lens_project(cam.model_code, cam.params, x, y, z)
            np.testing.assert_array_equal(proj.depth[c, i], np.float32(z))
            if ok:
                assert (proj.uv[c, i, 0], proj.uv[c, i, 1]) == (u, v)
                w, h = cam.intrinsics.width, cam.intrinsics.height
                assert proj.in_image[c, i] == (-0.5 <= u < w - 0.5 and -0.5 <= v < h - 0.5)
                assert proj.cos_view[c, i] == np.float32(z / np.sqrt(x * x + y * y + z * z))
            else:
                assert np.isnan(proj.uv[c, i]).all() and np.isnan(proj.cos_view[c, i])
                assert not proj.in_image[c, i]


def test_bad_input():
    cam = _camera(_LENSES[0])
    track = PoseTrack(np.array([0, 100]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"\(N, 3\).*\(5, 2\)"):
        project_points(np.zeros((5, 2)), [cam])
    with pytest.raises(ValueError, match="Camera objects"):
        project_points(np.zeros((1, 3)), ["cam"])
    with pytest.raises(ValueError, match="camera_times_ns"):
        project_points(np.zeros((1, 3)), [cam], world_from_ego=track, times_ns=[5])
    with pytest.raises(ValueError, match="times_ns"):
        project_points(np.zeros((1, 3)), [cam], world_from_ego=track, camera_times_ns=[5])
    with pytest.raises(ValueError, match=r"camera_times_ns must have shape \(1,\)"):
        project_points(np.zeros((1, 3)), [cam], world_from_ego=track, times_ns=[5], camera_times_ns=[5, 6])
    with pytest.raises(OutOfRangeError):
        project_points(np.zeros((1, 3)), [cam], world_from_ego=track, times_ns=[500], camera_times_ns=[5])
    with pytest.raises(ValueError, match="frame"):
        project_points(np.zeros((1, 3)), [cam], frame="ego")


def _moving_track() -> PoseTrack:
    """Ego driving at ~15 m/s while yawing at ~0.6 rad/s, sampled at 100 Hz."""
    ts = np.arange(0, 200_000_000, 10_000_000, dtype=np.int64) + 1_000_000_000
    s = (ts - ts[0]) * 1e-9
    yaw = 0.6 * s + 0.1 * np.sin(5 * s)
    pos = np.stack([15 * s, 2 * s * s, 0.05 * np.sin(3 * s)], axis=1) + [1000.0, -2000.0, 30.0]
    q = quat.multiply(quat.from_yaw(yaw), quat.from_euler_zyx(0.02 * np.sin(7 * s), 0.01 * s, 0.0))
    return PoseTrack(ts, q, pos)


def _reference_camera_points(xyz_world, track, cam, time_ns):
    """World points → camera frame at ``time_ns`` with SE3 algebra (float64)."""
    cam_from_world = cam.ego_from_camera.inverse() @ track.interpolate(int(time_ns)).inverse()
    return cam_from_world.apply(xyz_world)


def test_motion_compensation_matches_motion_chain():
    track = _moving_track()
    rng = np.random.default_rng(11)
    lidar = SE3(quat.from_yaw(0.03), [0.9, 0.0, 1.9])
    xyz = rng.uniform([-5, -30, -2], [50, 30, 3], (3000, 3)).astype(np.float32)
    times = rng.integers(track.start_ns + 10_000_000, track.start_ns + 110_000_000, len(xyz))
    cams = [_camera(_LENSES[2]), _camera(_LENSES[4], yaw=0.4)]
    cam_times = np.array([track.start_ns + 60_000_000, track.start_ns + 95_000_000])
    proj = project_points(
        xyz, cams, world_from_ego=track, times_ns=times, camera_times_ns=cam_times, ego_from_sensor=lidar
    )
    world = motion_compensate(xyz, times, track, lidar, out_frame="world", max_error_m=0.0)  # the exact chain
    proj_w = project_points(world, cams, world_from_ego=track, camera_times_ns=cam_times, frame="world")
    for c, cam in enumerate(cams):
        pc = _reference_camera_points(world, track, cam, cam_times[c])
        ref = naive.opencv_project(pc, cam.intrinsics)
        ok = proj.in_image[c]
        assert ok.sum() > 200
        np.testing.assert_allclose(proj.uv[c][ok], ref[ok], atol=1e-6)
        np.testing.assert_allclose(proj.depth[c], pc[:, 2].astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(proj_w.in_image[c], ok)
        np.testing.assert_allclose(proj_w.uv[c][ok], ref[ok], atol=1e-6)


def test_static_scene_ignores_times():
    cam = _camera(_LENSES[1])
    ego = _random_ego_points(np.random.default_rng(2), 500)
    a = project_points(ego, [cam])
    b = project_points(
        ego, [cam], world_from_ego=PoseTrack(np.array([0, 10]), np.array([[1.0, 0, 0, 0]] * 2), np.zeros((2, 3))),
        times_ns=np.full(len(ego), 3), camera_times_ns=[7],
    )
    np.testing.assert_array_equal(a.in_image, b.in_image)
    np.testing.assert_allclose(a.uv[a.in_image], b.uv[b.in_image], atol=1e-9)


def _lens_numpy(pc: np.ndarray, intr: CameraIntrinsics) -> np.ndarray:
    """Pixels ``(..., 2)`` of camera-frame points ``(..., 3)`` in front of the camera."""
    return naive.brown_conrady(pc[..., 0] / pc[..., 2], pc[..., 1] / pc[..., 2], intr)


def test_rolling_shutter_matches_brute_force_row_search():
    track = _moving_track()
    intr = CameraIntrinsics(1920, 1080, 1000.0, 1000.0, 960.0, 540.0, model="brown_conrady", distortion=(-0.1, 0.01))
    row_ns = 30_000
    cam = _camera(intr, yaw=1.2, shutter="rolling", row_readout_ns=row_ns)  # side camera: fast image motion
    t_cam = track.start_ns + 50_000_000
    rng = np.random.default_rng(4)
    world = track.interpolate(t_cam).apply(rng.uniform([-10, -25, -2], [25, 25, 4], (4000, 3)))
    proj = project_points(world, [cam], world_from_ego=track, camera_times_ns=[t_cam], frame="world")
    ok = proj.in_image[0]
    assert ok.sum() > 300
    idx = np.flatnonzero(ok)[:400]

    # brute force: v at every row time, then the crossing v(r) = r refined by bisection
    rows = np.arange(intr.height, dtype=np.float64)

    def v_at(r):  # (R,) rows → (R, P) image rows of the points seen at those rows' times
        out = np.empty((len(r), len(idx)))
        for j, rr in enumerate(r):
            pc = _reference_camera_points(world[idx], track, cam, t_cam + int(round(rr * row_ns)))
            out[j] = _lens_numpy(pc, intr)[:, 1]
        return out

    g = v_at(rows) - rows[:, None]
    crossing = np.argmax(np.diff(np.sign(g), axis=0) != 0, axis=0)
    assert np.all(np.sign(g[crossing, np.arange(len(idx))]) != np.sign(g[crossing + 1, np.arange(len(idx))]))

    def uv_at_rows(r):  # point idx[k] seen at row time r[k]
        times = t_cam + np.round(r * row_ns).astype(np.int64)
        cam_from_world = cam.ego_from_camera.inverse() @ track.interpolate(times).inverse()
        return _lens_numpy(cam_from_world.apply(world[idx]), intr)

    lo, hi = rows[crossing], rows[crossing + 1]
    g_lo = uv_at_rows(lo)[:, 1] - lo
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        g_mid = uv_at_rows(mid)[:, 1] - mid
        same = np.sign(g_mid) == np.sign(g_lo)
        lo, g_lo = np.where(same, mid, lo), np.where(same, g_mid, g_lo)
        hi = np.where(same, hi, mid)
    ref = uv_at_rows(0.5 * (lo + hi))
    # 3 iterations converge where the error contracts fast (all but the nearest points) ...
    far = proj.depth[0, idx] > 2.0
    assert far.sum() > 300
    np.testing.assert_allclose(proj.uv[0, idx[far]], ref[far], atol=2e-3)
    # ... and more iterations converge for points a few decimetres from the lens too
    proj8 = project_points(world, [cam], world_from_ego=track, camera_times_ns=[t_cam], frame="world",
                           rolling_iterations=8)
    np.testing.assert_allclose(proj8.uv[0, idx], ref, atol=2e-3)
    # the effect is real: a global shutter at the image timestamp is pixels off
    glob = _camera(intr, yaw=1.2)
    proj_g = project_points(world, [glob], world_from_ego=track, camera_times_ns=[t_cam], frame="world")
    assert np.abs(proj_g.uv[0, idx] - ref).max() > 2.0


_WINDOW_LENSES = [
    CameraIntrinsics(1920, 1080, 1000.0, 1005.0, 958.3, 541.7),
    CameraIntrinsics(1920, 1080, 1000.0, 1005.0, 958.3, 541.7, skew=2.5),
    CameraIntrinsics(1920, 1080, 1000.0, 1005.0, 958.3, 541.7, model="brown_conrady"),  # no distortion: K alone
    _LENSES[2],
    _LENSES[4],
]


@pytest.mark.parametrize("shutter", ["global", "rolling"])
@pytest.mark.parametrize("intr", _WINDOW_LENSES, ids=lambda i: f"{i.model}{len(i.distortion)}-skew{i.skew}")
def test_project_window_is_project_points_within_the_window(intr, shutter):
    """The points a window keeps, and their projections, bit for bit: whether the lens is
    ``K`` alone (points outside the window's cone are passed over before the lens) or not,
    with points exactly on the window's edges."""
    from engine.projection_window import project_window

    rng = np.random.default_rng(11)
    cam = _camera(intr, yaw=0.3, shutter=shutter, row_readout_ns=20_000 if shutter == "rolling" else 0)
    t = np.array([0, 1_000_000_000])
    track = PoseTrack(t, quat.from_yaw(np.array([0.0, 0.2])), np.array([[0.0, 0, 0], [12.0, 1.0, 0]]))
    t_cam = 400_000_000
    lo, hi = np.array([300.25, 200.0]), np.array([1500.0, 860.5])
    # points on the window's edges: rays through edge pixels (K alone) at random depths
    world_from_cam = track.at(t_cam) @ cam.ego_from_camera
    u = np.concatenate([np.full(500, lo[0]), np.full(500, hi[0]), rng.uniform(lo[0], hi[0], 1000)])
    v = np.concatenate([rng.uniform(lo[1], hi[1], 1000), np.full(500, lo[1]), np.full(500, hi[1])])
    k = intr
    yn = (v - k.cy) / k.fy
    xn = (u - k.cx - k.skew * yn) / k.fx
    z = rng.uniform(1.0, 50.0, len(u))
    edge = world_from_cam.apply(np.column_stack([xn * z, yn * z, z]))
    p = np.vstack([track.at(t_cam).apply(_random_ego_points(rng, 20_000)), edge])
    for pts in (p, p.astype(np.float32)):
        rows, got = project_window(pts, cam, track, t_cam, lo, hi)
        full = project_points(pts, [cam], world_from_ego=track, camera_times_ns=[t_cam], frame="world")
        uv = full.uv[0]
        with np.errstate(invalid="ignore"):
            keep = full.in_image[0] & np.all((uv >= lo) & (uv <= hi), axis=1)
        np.testing.assert_array_equal(rows, np.flatnonzero(keep))
        np.testing.assert_array_equal(got.uv[0], uv[keep])
        np.testing.assert_array_equal(got.depth[0], full.depth[0][keep])
        np.testing.assert_array_equal(got.cos_view[0], full.cos_view[0][keep])
        assert keep.sum() > 2000 and got.in_image.all()
        if shutter == "global" and not any(k.distortion):  # within rounding of the edges, on both sides
            near_edge = np.abs(uv - lo)[:, 0] < 1e-4
            assert (near_edge & keep).sum() > 50 and (near_edge & ~keep).sum() > 50
