"""Synthetic rig speed: 1920×1080 camera renders, LiDAR frames and drive generation.

Peer: Open3D's ``RaycastingScene`` (Embree BVH) casting the same rays against the same
boxes and ground, as a triangle mesh snapshot of the world at one time (it cannot move
actors per ray or per row; its scene build is timed, its rays are handed to it ready-made).
Each peer run also checks that it sees the same object ids as Fathom (for the LiDAR, on
the static surfaces, where a snapshot is exact: ≥ 99 % of Fathom's returns there).
"""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest

from engine import quaternion as quat
from engine.camera import lens_unproject
from engine.cuboid import box_corners
from engine.sim.camera_render import render_camera
from engine.sim.lidar import simulate_sweep
from engine.sim.road import simulate_drive

# 12 triangles of a box in CORNER_SIGNS order (bit 0 → +x, bit 1 → +y, bit 2 → +z)
_BOX_TRIS = np.array([[0, 2, 1], [1, 2, 3], [4, 5, 6], [5, 7, 6], [0, 1, 4], [1, 5, 4],
                      [2, 6, 3], [3, 6, 7], [0, 4, 2], [2, 4, 6], [1, 3, 5], [3, 7, 5]])


@pytest.fixture(scope="module")
def road():
    return simulate_drive(seed=0, duration_s=0.3, preset="road")


def _scene(drive, time_ns):
    """Open3D scene of the world at ``time_ns`` and the object id of each triangle."""
    w = drive.world
    centers = [w.static_center] + [w.actor_pose(j, np.array([time_ns]))[0] for j in range(w.n_actors)]
    yaws = [w.static_yaw] + [w.actor_pose(j, np.array([time_ns]))[1] for j in range(w.n_actors)]
    sizes = np.vstack([w.static_size, w.actor_size])
    corners = box_corners(np.vstack(centers), sizes, quat.from_yaw(np.concatenate(yaws))).reshape(-1, 3)
    n_box = len(sizes)
    tris = (_BOX_TRIS[None] + 8 * np.arange(n_box)[:, None, None]).reshape(-1, 3)
    c = drive.world_from_ego.at(time_ns).translation
    ground = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], float) * [2000, 2000, 0] + [c[0], c[1], 0]
    verts = np.vstack([corners, ground]).astype(np.float32)
    tris = np.vstack([tris, [[8 * n_box, 8 * n_box + 1, 8 * n_box + 2], [8 * n_box, 8 * n_box + 2, 8 * n_box + 3]]])
    tri_id = np.concatenate([np.repeat(np.arange(1, n_box + 1), 12), [0, 0]]).astype(np.int32)
    scene = o3d.t.geometry.RaycastingScene()
    scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris.astype(np.uint32)))
    return scene, tri_id


def _peer_cast(drive, time_ns, origins, dirs):
    scene, tri_id = _scene(drive, time_ns)
    rays = o3d.core.Tensor(np.hstack([origins, dirs]).astype(np.float32))
    ans = scene.cast_rays(rays)
    prim = ans["primitive_ids"].numpy().astype(np.int64)
    hit = np.isfinite(ans["t_hit"].numpy())
    return np.where(hit, tri_id[np.where(hit, prim, 0)], -1)


def _camera_rays(drive, cam, time_ns):
    h, w = cam.intrinsics.height, cam.intrinsics.width
    vv, uu = np.mgrid[0:h, 0:w]
    unproject = np.vectorize(lambda u, v: lens_unproject(cam.model_code, cam.params, float(u), float(v))[:3])
    d = np.stack(unproject(uu.ravel(), vv.ravel()), axis=1)
    pose = drive.world_from_ego.at(time_ns) @ cam.ego_from_camera
    return np.broadcast_to(pose.translation, d.shape), quat.rotate(pose.rotation, d)


@pytest.mark.parametrize("camera", ["CAM_FRONT", "CAM_LEFT_FISHEYE"])
def test_fathom_render_1080p(benchmark, road, camera):
    cam = road.camera(camera)
    t = road.start_ns + 150_000_000
    benchmark.group = f"sim_render_1080p_{camera}"
    benchmark.extra_info.update(role="fathom", items=cam.intrinsics.width * cam.intrinsics.height, unit="px")
    render_camera(road.world, road.world_from_ego, cam, t)  # lens tile cones cached, as in use
    img = benchmark(render_camera, road.world, road.world_from_ego, cam, t)
    assert img.rgb.shape == (1080, 1920, 3)


@pytest.mark.parametrize("camera", ["CAM_FRONT", "CAM_LEFT_FISHEYE"])
def test_open3d_render_1080p(benchmark, road, camera):
    cam = road.camera(camera)
    t = road.start_ns + 150_000_000
    benchmark.group = f"sim_render_1080p_{camera}"
    benchmark.extra_info.update(role="peer")
    origins, dirs = _camera_rays(road, cam, t)
    ids = benchmark(_peer_cast, road, t, origins, dirs)
    ours = render_camera(road.world, road.world_from_ego, cam, t).object_id.ravel()
    valid = np.linalg.norm(dirs, axis=1) > 0
    assert np.mean(ids[valid] == ours[valid]) > 0.99


def _both_lidars(drive, frame):
    t_ns = int(drive.frame_times_ns[frame])
    return [simulate_sweep(drive.world, drive.world_from_ego, l, t_ns) for l in drive.lidars]


def test_fathom_lidar_frame(benchmark, road):
    benchmark.group = "sim_lidar_frame_road"
    n = sum(len(road.sweeps[l.name][1]) for l in road.lidars)
    benchmark.extra_info.update(role="fathom", items=n, unit="pts")
    sweeps = benchmark(_both_lidars, road, 1)
    assert sum(len(s) for s in sweeps) == n


def test_open3d_lidar_frame(benchmark, road):
    """Open3D casts the frame's rays from the per-ray origins against the mid-sweep snapshot."""
    benchmark.group = "sim_lidar_frame_road"
    benchmark.extra_info.update(role="peer")
    t0 = int(road.frame_times_ns[1])
    origins, dirs = [], []
    for lidar in road.lidars:
        pat = lidar.pattern
        times = t0 + pat.firing_times_ns()
        pose = road.world_from_ego.interpolate(times) @ lidar.ego_from_lidar
        spin = -1.0 if pat.clockwise else 1.0
        beam = np.tile(np.arange(pat.n_beams), pat.n_sequences)
        az = (pat.start_azimuth_rad + spin * 2 * np.pi * (times - t0) / pat.sweep_period_ns
              + pat.azimuth_offset_rad[beam])
        el = pat.elevation_rad[beam]
        d = np.column_stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        origins.append(pose.translation)
        dirs.append(quat.rotate(pose.rotation, d))
    ids = benchmark(_peer_cast, road, t0 + 50_000_000, np.vstack(origins), np.vstack(dirs))
    # Fathom's returns against the peer's rays: ray = sequence × beams + beam; on static
    # surfaces (ground, buildings: the snapshot is exact there) both see the same object
    first, agree, static = 0, 0, 0
    for lidar, sweep in zip(road.lidars, _both_lidars(road, 1)):
        pat = lidar.pattern
        seq = (sweep.time_offset_ns - pat.firing_offset_ns[sweep.ring]) // pat.sequence_period_ns
        ours = sweep.extra["object_id"]
        fixed = ours <= road.world.n_static
        theirs = ids[first + seq * pat.n_beams + sweep.ring]
        agree += int(np.count_nonzero(theirs[fixed] == ours[fixed]))
        static += int(np.count_nonzero(fixed))
        first += pat.n_sequences * pat.n_beams
    assert first == len(ids) and static > 100_000 and agree > 0.99 * static


def test_fathom_drive_generation(benchmark, road):
    """A 1 s road drive: trajectory, world, 10 frames of both LiDARs, GNSS (per-frame = median / 10)."""
    benchmark.group = "sim_drive_1s_road"
    benchmark.extra_info.update(role="fathom", items=10, unit="frames")
    drive = benchmark.pedantic(simulate_drive, kwargs={"seed": 0, "duration_s": 1.0, "preset": "road"}, rounds=3)
    assert len(drive.frame_times_ns) == 10
