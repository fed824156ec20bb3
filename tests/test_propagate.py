"""Box propagation on the rig's ground truth (a car over 100 frames of LiDAR at firing times),
its kernels against NumPy, its stops and errors, and the propagate route on a prepared scene
of the rig."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from engine import quaternion as quat
from engine.cuboid import Cuboid
from engine.motion import motion_compensate
from engine.propagate import FramePoints, PropagateParams, propagate_track
from engine.propagate_kernels import add_voxels, build_grid, icp, local_in_box, normals, object_points
from engine.se3 import SE3
from formats.rig import Lidar, SceneOrigin
from formats.scene_store import SceneWriter, points_table
from server.config import Settings
from server.main import create_app
from tests.server_scene import TOKENS

CAR, OTHER_CAR = 131, 130  # the rig's car seen for most of the drive, and one seen for 3 s
A = {"Authorization": "Bearer annotator-token-1"}
V = {"Authorization": "Bearer viewer-token-1"}


@pytest.fixture(scope="module")
def rig():
    """The 10 s test drive: per frame the world-frame points of both LiDARs (each placed with
    the ego pose at its firing time) with their firing times and object ids."""
    from engine.sim.road import simulate_drive

    drive = simulate_drive(seed=0, duration_s=10.0, preset="test", radars=())
    frames, ids = [], []
    for f, t in enumerate(drive.frame_times_ns):
        xyz, offsets, oid = [], [], []
        for lidar in drive.lidars:
            s = drive.sweeps[lidar.name][f]
            times = s.time_offset_ns + s.timestamp_ns
            xyz.append(motion_compensate(s.xyz, times, drive.world_from_ego, lidar.ego_from_lidar, out_frame="world"))
            offsets.append(times - t)
            oid.append(s.extra["object_id"])
        frames.append(FramePoints(int(t), np.concatenate(xyz), np.concatenate(offsets)))
        ids.append(np.concatenate(oid))
    return drive, frames, ids


def _truth(drive, oid):
    j = oid - 1 - drive.world.n_static
    c, yaw = drive.world.actor_pose(j, drive.frame_times_ns)
    return c, yaw, drive.world.actor_size[j]


def _errors(result, c, yaw):
    q = np.where(result.valid[:, None], result.rotations, [1.0, 0, 0, 0])
    d_yaw = np.abs(np.angle(np.exp(1j * (quat.to_euler_zyx(q)[:, 2] - yaw))))
    return np.linalg.norm(result.centers - c, axis=1), np.degrees(d_yaw)


@pytest.mark.parametrize("seeds", [(0,), (0, 60)])
def test_a_car_over_100_frames_stays_within_10_cm_and_2_degrees(rig, seeds):
    drive, frames, ids = rig
    c, yaw, size = _truth(drive, CAR)
    boxes = [(f, Cuboid(c[f], size, quat.from_yaw(yaw[f]))) for f in seeds]
    result = propagate_track(frames, boxes, 0, 99)  # no motion prior: bootstrapped (one seed) or the seeds'
    seen = np.array([(i == CAR).sum() for i in ids]) >= 30
    assert seen.sum() >= 70
    assert result.valid[seen].all()
    err_m, err_deg = _errors(result, c, yaw)
    assert err_m[seen].max() < 0.10 and err_deg[seen].max() < 2.0
    assert np.all(result.confidence[result.valid] > 0) and np.all(result.confidence <= 1)
    assert result.confidence[list(seeds)].tolist() == [1.0] * len(seeds)
    np.testing.assert_array_equal(result.sizes[result.valid], np.broadcast_to(size, (result.valid.sum(), 3)))
    # it stops once the car is nearly gone, and says why
    assert not result.valid[-1] and "min_points" in result.stopped["forward"]


def test_with_a_motion_prior_a_car_seen_for_3_s(rig):
    drive, frames, ids = rig
    c, yaw, size = _truth(drive, OTHER_CAR)
    seen = np.array([(i == OTHER_CAR).sum() for i in ids[:41]]) >= 30
    result = propagate_track(frames, [(0, Cuboid(c[0], size, quat.from_yaw(yaw[0])))], 0, 40,
                             velocity_mps=(c[1] - c[0]) / 0.1)
    assert result.valid[seen].all() and seen.sum() >= 20
    err_m, err_deg = _errors(result, c[:41], yaw[:41])
    assert err_m[seen].max() < 0.10 and err_deg[seen].max() < 2.0


def test_a_seed_on_empty_ground_stops_at_once(rig):
    drive, frames, _ = rig
    ego = drive.world_from_ego.at(int(frames[5].timestamp_ns)).translation
    result = propagate_track(frames, [(5, Cuboid(ego + [0, 0, 40.0], np.ones(3), quat.from_yaw(0.0)))], 3, 8)
    np.testing.assert_array_equal(result.frames, np.arange(3, 9))
    np.testing.assert_array_equal(result.valid, [False, False, True, False, False, False])
    assert result.stopped["forward"].startswith("frame 5: 0 points in the seed box")
    assert np.isnan(result.centers[0]).all() and result.points[0] == -1


def test_bad_input(rig):
    _, frames, _ = rig
    box = Cuboid(np.zeros(3), np.ones(3), quat.from_yaw(0.0))
    with pytest.raises(ValueError, match="first <= last"):
        propagate_track(frames, [(5, box)], 6, 5)
    with pytest.raises(ValueError, match="outside the range"):
        propagate_track(frames, [(9, box)], 0, 5)
    with pytest.raises(ValueError, match="one or two seed boxes"):
        propagate_track(frames, [(1, box), (2, box), (3, box)], 0, 5)
    with pytest.raises(ValueError, match="one or two seed boxes"):
        propagate_track(frames, [(1, box), (1, box)], 0, 5)
    with pytest.raises(ValueError, match="finite"):
        propagate_track(frames, [(1, box)], 0, 5, velocity_mps=[np.nan, 0, 0])
    with pytest.raises(ValueError, match="max_rmse_m"):
        PropagateParams(max_rmse_m=0.0)


# ---------------------------------------------------------------- kernels against NumPy


def _local_numpy(p, center, yaw):
    d = p - center
    return np.column_stack([np.cos(yaw) * d[:, 0] + np.sin(yaw) * d[:, 1],
                            -np.sin(yaw) * d[:, 0] + np.cos(yaw) * d[:, 1], d[:, 2]])


@pytest.mark.parametrize("moving", [False, True])
def test_object_points_and_local_in_box_match_numpy(moving):
    rng = np.random.default_rng(3)
    xyz = rng.uniform(-6, 6, (5000, 3)).astype(np.float32)
    offsets = rng.integers(-50_000_000, 50_000_000, len(xyz)) if moving else np.zeros(0, np.int64)
    velocity = np.array([12.0, -4.0, 0.0]) if moving else np.zeros(3)
    center, yaw, half = np.array([0.5, -0.3, 0.2]), 0.7, np.array([2.0, 1.0, 0.8])
    moved = xyz.astype(np.float64) - ((offsets * 1e-9)[:, None] * velocity if moving else 0.0)
    local = _local_numpy(moved, center, yaw)
    keep = (np.abs(local[:, :2]) <= half[:2]).all(axis=1) & (local[:, 2] >= -0.5) & (local[:, 2] <= half[2])
    got = object_points(xyz, offsets, velocity, center, yaw, half, -0.5)
    np.testing.assert_array_equal(got, moved[keep])
    inside = (np.abs(local) <= half).all(axis=1)
    np.testing.assert_array_equal(local_in_box(moved, center, yaw, half), local[inside])


def test_add_voxels_keeps_the_first_point_of_each_new_voxel_in_voxel_order():
    rng = np.random.default_rng(4)
    lo, voxel, vdims = np.array([-1.0, -1.0, -1.0]), 0.25, np.array([8, 8, 8])
    occupied = np.zeros(512, np.bool_)
    pts = np.zeros((1000, 3))
    n = 0
    for batch in (rng.uniform(-1.2, 1.2, (300, 3)), rng.uniform(-1.2, 1.2, (300, 3))):
        v = np.floor((batch - lo) / voxel).astype(np.int64)
        ok = np.all((v >= 0) & (v < vdims), axis=1)
        key, first = np.unique(np.ravel_multi_index(v[ok].T, vdims), return_index=True)
        new = ~occupied[key]
        want = np.concatenate([pts[:n], batch[ok][first[new]]])
        n = add_voxels(batch, lo, voxel, vdims, occupied, pts, n)
        np.testing.assert_array_equal(pts[:n], want)
        assert occupied.sum() == n


def _plane_points(rng, n=600):
    """Points on three faces of a 4 × 2 × 1.5 m box (local frame): back, left side, roof."""
    back = np.column_stack([np.full(n, -2.0), rng.uniform(-1, 1, n), rng.uniform(-0.5, 0.75, n)])
    side = np.column_stack([rng.uniform(-2, 2, n), np.full(n, 1.0), rng.uniform(-0.5, 0.75, n)])
    roof = np.column_stack([rng.uniform(-2, 2, n), rng.uniform(-1, 1, n), np.full(n, 0.75)])
    return np.vstack([back, side, roof])


def _grid(pts, half, cell=0.3):
    lo = -(half + 1.0)
    dims = np.ceil(-2 * lo / cell).astype(np.int64)
    start, items = build_grid(pts, lo, cell, dims)
    return lo, cell, dims, start, items


def test_normals_match_numpy_pca_and_fall_back_to_box_faces():
    rng = np.random.default_rng(5)
    pts = _plane_points(rng)
    half = np.array([2.0, 1.0, 0.75])
    lo, cell, dims, start, items = _grid(pts, half)
    out = np.empty_like(pts)
    normals(pts, np.arange(len(pts)), lo, cell, dims, start, items, 0.5, half, 0.15, out)
    rows = rng.choice(len(pts), 60, replace=False)
    for i in rows:
        near = pts[np.linalg.norm(pts - pts[i], axis=1) <= 0.5]
        w, v = np.linalg.eigh(np.cov(near.T, bias=True))
        if w[1] >= 0.05 * w[2] and w[0] <= 0.05 * w[1]:  # a surface: the PCA normal (sign free)
            assert abs(abs(v[:, 0] @ out[i]) - 1.0) < 1e-9
        else:  # by an edge: the face normal when one face is within 15 cm, else none
            faces = [a for a in range(3) if abs(half[a] - abs(pts[i, a])) <= 0.15 and (a < 2 or pts[i, 2] >= 0)]
            want = np.zeros(3)
            if len(faces) == 1:
                want[faces[0]] = np.sign(pts[i, faces[0]])
            np.testing.assert_array_equal(out[i], want)
    # a sparse point (no neighbours) on the roof takes the roof's normal
    lone = np.array([[0.0, 0.0, 0.74]])
    out1 = np.empty((1, 3))
    normals(lone, np.arange(1), *_grid(lone, half), 0.5, half, 0.15, out1)
    np.testing.assert_array_equal(out1[0], [0.0, 0.0, 1.0])


def test_icp_recovers_a_known_pose():
    rng = np.random.default_rng(7)
    model = _plane_points(rng)
    half = np.array([2.0, 1.0, 0.75])
    lo, cell, dims, start, items = _grid(model, half)
    mn = np.empty_like(model)
    normals(model, np.arange(len(model)), lo, cell, dims, start, items, 0.5, half, 0.15, mn)
    true = np.array([10.0, -3.0, 0.8, 0.3])  # box pose: centre, yaw
    c, s = np.cos(true[3]), np.sin(true[3])
    scan = _plane_points(rng, 150)
    world = scan @ np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]]) + true[:3]
    pose = true + [0.15, -0.1, 0.05, 0.03]
    fitness, rmse, along = icp(world, pose, pose.copy(), 1e3, 1e3, 1e3, model, mn, lo, cell, dims, start, items,
                               0.3, 30, 0.05)
    np.testing.assert_allclose(pose, true, atol=2e-4)  # PCA normals near the edges lean a little
    assert fitness == 1.0 and rmse < 1e-3
    assert 100 < along <= 150  # the back face's 150 points pin the heading direction (less those by edges)
    side_only = world[150:]  # the side and the roof leave the position along the heading free
    assert icp(side_only, true.copy(), true.copy(), 1e3, 1e3, 1e3, model, mn, lo, cell, dims, start, items,
               0.3, 30, 0.05)[2] < 5



@pytest.mark.parametrize("dmax", [0.3, 0.6])
def test_icp_scores_with_the_brute_force_nearest_model_point(dmax):
    """With a prior that pins the pose, icp's fitness, RMSE and along are those of each point's
    nearest model point within dmax by brute force (model points in the grid; some queries
    beyond it)."""
    rng = np.random.default_rng(11)
    half = np.array([2.0, 1.0, 0.75])
    model = rng.uniform(-2.5, 2.5, (800, 3)) * [1.0, 0.6, 0.5]
    lo, cell, dims, start, items = _grid(model, half)
    mn = rng.normal(size=model.shape)
    mn /= np.linalg.norm(mn, axis=1, keepdims=True)
    tp = rng.uniform(-4.0, 4.0, (400, 3)) * [1.0, 0.6, 0.5]
    pose = np.zeros(4)
    fitness, rmse, along = icp(tp, pose, np.zeros(4), 1e-12, 1e-12, 1e-12, model, mn, lo, cell, dims, start,
                               items, dmax, 3, 0.05)
    d2 = ((tp[:, None, :] - model[None]) ** 2).sum(axis=2)
    j = d2.argmin(axis=1)
    hit = d2[np.arange(len(tp)), j] <= dmax * dmax
    r = np.einsum("ij,ij->i", mn[j[hit]], tp[hit] - model[j[hit]])
    assert 0 < hit.sum() < len(tp) and np.abs(pose).max() < 1e-15
    assert fitness == hit.mean()
    np.testing.assert_allclose([rmse, along], [np.sqrt(np.mean(r * r)), (mn[j[hit], 0] ** 2).sum()], rtol=1e-12)

# ---------------------------------------------------------------- the route


@pytest.fixture(scope="module")
def rig_scene(rig, tmp_path_factory):
    """Frames 0..19 of the drive as a prepared scene (world points, firing times), with the car's
    first box as a one-keyframe label track."""
    drive, frames, _ = rig
    root = tmp_path_factory.mktemp("scenes")
    writer = SceneWriter(root / "rig", scene_id="rig", origin=SceneOrigin((0.0, 0.0, 0.0)),
                         lidars=[Lidar("LIDAR_TOP", SE3.identity())], cameras=[])
    for i in range(20):
        fp = frames[i]
        writer.write_frame(i, fp.timestamp_ns, drive.world_from_ego.at(fp.timestamp_ns),
                           points_table(fp.xyz, time_offset_ns=fp.time_offset_ns), [])
    writer.finalize()
    return root


def test_propagate_route(rig, rig_scene):
    drive, _, _ = rig
    c, yaw, size = _truth(drive, CAR)
    track = {"id": "car", "category": "car", "keyframes": [{
        "timestamp_ns": int(drive.frame_times_ns[0]), "center": c[0].tolist(), "size": size.tolist(),
        "rotation": quat.from_yaw(yaw[0]).tolist()}]}
    settings = Settings(scenes_dir=rig_scene, tokens=json.dumps(TOKENS), warmup=False)
    with TestClient(create_app(settings)) as client:
        r = client.put("/v1/scenes/rig/labels", json={"tracks": [track]}, headers={**A, "If-Match": "*"})
        assert r.status_code == 200
        url = "/v1/scenes/rig/tracks/car/propagate"
        assert client.post(url, json={"first_frame": 0, "last_frame": 19}, headers=V).status_code == 403
        r = client.post(url, json={"first_frame": 0, "last_frame": 19}, headers=A)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["seed_frames"] == [0] and out["revision"] is None and out["stopped"] == {"backward": "",
                                                                                            "forward": ""}
        got = np.array([b["center"] for b in out["boxes"]])
        assert [b["frame_index"] for b in out["boxes"]] == list(range(20))
        assert np.linalg.norm(got - c[:20], axis=1).max() < 0.10
        assert len(out["track"]["keyframes"]) == 20
        r = client.post(url, json={"first_frame": 0, "last_frame": 19, "write": True}, headers=A)
        assert r.status_code == 200 and r.json()["revision"] == 2
        labels = client.get("/v1/scenes/rig/labels", headers=V).json()
        assert len(labels["tracks"][0]["keyframes"]) == 20 and labels["track_revisions"]["car"] == 2
        assert client.post("/v1/scenes/rig/tracks/nope/propagate", json={"first_frame": 0, "last_frame": 3},
                           headers=A).status_code == 404
        assert client.post(url, json={"first_frame": 0, "last_frame": 25}, headers=A).status_code == 404
        r = client.post(url, json={"first_frame": 5, "last_frame": 2}, headers=A)
        assert r.status_code == 422 and "first_frame <= last_frame" in r.text
        r = client.post(url, json={"first_frame": 0, "last_frame": 19, "extra": 1}, headers=A)
        assert r.status_code == 422
