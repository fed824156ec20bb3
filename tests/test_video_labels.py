"""2D tracks on camera streams (interpolation against NumPy references) and 2D boxes derived
from cuboids (against the cuboid corners projected with the NumPy camera reference)."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.boxes2d import derive_boxes
from engine.camera import Camera, CameraIntrinsics
from engine.cuboid import box_corners
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from engine.tracks2d import Track2D, boxes_at, resample_outline
from tests.naive import brown_conrady

# ---------------------------------------------------------------- interpolation


def naive_lerp(times, shapes, t):
    """Linear interpolation of equal-size arrays between the keyframes around ``t``; None outside."""
    if t < times[0] or t > times[-1]:
        return None
    for k in range(len(times)):
        if times[k] == t:
            return shapes[k]
        if times[k] < t < times[k + 1]:
            u = (t - times[k]) / (times[k + 1] - times[k])
            return shapes[k] + u * (shapes[k + 1] - shapes[k])


def test_boxes_at_equals_a_loop_reference():
    rng = np.random.default_rng(0)
    tracks = []
    for n in range(40):
        k = int(rng.integers(1, 6))
        t = np.sort(rng.choice(np.arange(0, 10_000, 7), k, replace=False)).astype(np.int64)
        lo = rng.uniform(0, 500, (k, 2))
        corners = np.stack([lo, lo + rng.uniform(1, 90, (k, 2))], 1)
        tracks.append(Track2D(f"t{n}", "car", "cam", "box", t, tuple(corners)))
    query = np.concatenate([rng.integers(-100, 10_100, 300), tracks[0].timestamps_ns]).astype(np.int64)
    boxes, valid = boxes_at(tracks, query)
    for j, tr in enumerate(tracks):
        for i, t in enumerate(query.tolist()):
            want = naive_lerp(tr.timestamps_ns.tolist(), [p.ravel() for p in tr.points], t)
            assert valid[i, j] == (want is not None)
            if want is None:
                assert np.isnan(boxes[i, j]).all()
            else:
                np.testing.assert_allclose(boxes[i, j], want, rtol=0, atol=1e-9)
                np.testing.assert_allclose(tr.at(t)[0].ravel(), want, rtol=0, atol=1e-9)


def test_polygons_with_equal_vertex_counts_move_vertex_by_vertex():
    t = np.array([100, 300], np.int64)
    a = np.array([[0.0, 0], [10, 0], [10, 10], [0, 10]])
    b = a * 2 + 5
    track = Track2D("p", "lane", "cam", "polygon", t, (a, b))
    got = track.at(np.array([99, 100, 150, 300, 301]))
    assert got[0] is None and got[4] is None
    np.testing.assert_array_equal(got[1], a)
    np.testing.assert_allclose(got[2], 0.75 * a + 0.25 * b)
    np.testing.assert_array_equal(got[3], b)


def naive_resample(points, count, closed):
    """Walk the outline segment by segment, emitting a point every ``length / steps``."""
    pts = [np.asarray(p, float) for p in points] + ([np.asarray(points[0], float)] if closed else [])
    lengths = [np.linalg.norm(pts[i + 1] - pts[i]) for i in range(len(pts) - 1)]
    total = sum(lengths)
    out = []
    for j in range(count):
        d = j * total / (count if closed else count - 1)
        for i, seg in enumerate(lengths):
            if d <= seg or i == len(lengths) - 1:
                out.append(pts[i] + (pts[i + 1] - pts[i]) * (min(d, seg) / seg if seg else 0.0))
                break
            d -= seg
    return np.array(out)


@pytest.mark.parametrize("shape,closed", [("polygon", True), ("polyline", False)])
def test_different_vertex_counts_are_resampled_by_arc_length(shape, closed):
    rng = np.random.default_rng(1)
    a = rng.uniform(0, 100, (4, 2))
    b = rng.uniform(0, 100, (7, 2))
    for pts, n in ((a, 7), (b, 7), (a, 11), (b, 3)):
        np.testing.assert_allclose(resample_outline(pts, n, closed), naive_resample(pts, n, closed), atol=1e-9)
    track = Track2D("p", "curb", "cam", shape, np.array([0, 1000]), (a, b))
    mid = track.at(np.array([250]))[0]
    want = 0.75 * naive_resample(a, 7, closed) + 0.25 * naive_resample(b, 7, closed)
    np.testing.assert_allclose(mid, want, atol=1e-9)
    if not closed:  # an open line keeps its ends
        np.testing.assert_allclose(mid[[0, -1]], 0.75 * a[[0, -1]] + 0.25 * b[[0, -1]], atol=1e-9)


@pytest.mark.parametrize("kwargs,words", [
    (dict(shape="circle"), "shape"), (dict(timestamps_ns=np.array([5, 5])), "strictly increasing"),
    (dict(points=(np.array([[0.0, 0], [1, 1]]),)), "2 keyframes but 1"),
    (dict(points=(np.array([[5.0, 0], [1, 1]]),) * 2), "u0 <= u1"),
    (dict(points=(np.array([[0.0, np.nan], [1, 1]]),) * 2), "finite"),
    (dict(shape="polygon"), "V >= 3"),
])
def test_bad_tracks_are_refused(kwargs, words):
    args = dict(track_id="x", category="car", camera="cam", shape="box", timestamps_ns=np.array([0, 10]),
                points=(np.array([[0.0, 0], [1, 1]]),) * 2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=words):
        Track2D(**args)


# ---------------------------------------------------------------- derived from cuboids


CAM_FROM_EGO_ROT = np.array([0.5, -0.5, 0.5, -0.5])  # camera x right = −ego y, y down = −ego z, z fwd = ego x


def _camera(lens: str) -> Camera:
    distortion = (-0.25, 0.08, 0.001, -0.002, -0.01) if lens == "brown_conrady" else ()
    return Camera("CAM", CameraIntrinsics(800, 600, 600.0, 610.0, 401.3, 297.7, model=lens, distortion=distortion),
                  SE3(CAM_FROM_EGO_ROT, np.array([1.5, 0.2, 1.6])))


def naive_boxes(centers, sizes, rotations, camera, ego_from_world, edge_samples):
    """Bounding boxes of the cuboids' edges (``edge_samples`` points each) projected with the
    NumPy lens, clipped to the image; every sample must lie in the lens' valid field of view
    (in front, inside the fold-back cone ``x² + y² <= limit · z²``, where Fathom clips edges)."""
    k = camera.intrinsics
    cam_from_world = camera.ego_from_camera.inverse() @ ego_from_world
    corners = box_corners(centers, sizes, rotations).reshape(-1, 8, 3)
    edges = [(0, 1), (1, 2), (2, 3), (3, 0), (4, 5), (5, 6), (6, 7), (7, 4), (0, 4), (1, 5), (2, 6), (3, 7)]
    out = []
    for c in corners:
        s = np.linspace(0, 1, edge_samples)[:, None]
        pts = np.concatenate([c[i] + s * (c[j] - c[i]) for i, j in edges])
        p = cam_from_world.apply(pts)
        assert (p[:, 2] > 0.5).all() and (p[:, 0] ** 2 + p[:, 1] ** 2 < camera.params[13] * p[:, 2] ** 2).all()
        uv = brown_conrady(p[:, 0] / p[:, 2], p[:, 1] / p[:, 2], k)
        full = np.array([uv[:, 0].min(), uv[:, 1].min(), uv[:, 0].max(), uv[:, 1].max()])
        clip = np.clip(full, [-0.5, -0.5, -0.5, -0.5], [k.width - 0.5, k.height - 0.5] * 2)
        area = lambda b: max(b[2] - b[0], 0) * max(b[3] - b[1], 0)  # noqa: E731
        out.append((clip, 1 - area(clip) / area(full)))
    return out


@pytest.mark.parametrize("lens", ["pinhole", "brown_conrady"])
def test_derived_boxes_match_projected_cuboid_edges(lens):
    rng = np.random.default_rng(2)
    cam = _camera(lens)
    pose = SE3(quat.from_yaw(0.3), np.array([100.0, -40.0, 0.5]))
    track = PoseTrack(np.array([0, 10**9]), np.stack([pose.rotation] * 2), np.stack([pose.translation] * 2))
    n = 12
    ego = np.column_stack([rng.uniform(16, 40, n), np.linspace(-9, 9, n), rng.uniform(-0.3, 0.8, n)])
    ego[-1] = [16.0, 11.5, 0.5]  # partly out of the image on the left: truncated
    sizes = np.column_stack([rng.uniform(3, 5, n), rng.uniform(1.6, 2.1, n), rng.uniform(1.4, 2.0, n)])
    yaw = rng.uniform(-np.pi, np.pi, n)
    yaw[-1] = 0.0
    rotations = quat.multiply(np.broadcast_to(pose.rotation, (n, 4)), quat.from_yaw(yaw))
    centers = pose.apply(ego)
    d = derive_boxes(centers, sizes, rotations, cam, world_from_ego=track, camera_time_ns=5 * 10**8,
                     samples_per_edge=64)
    want = naive_boxes(centers, sizes, rotations, cam, pose.inverse(), 65 if lens != "pinhole" else 2)
    tol = 1e-6 if lens == "pinhole" else 0.05  # a distorted edge is sampled: both sides at 1/64 of its length
    for m, (box, trunc) in enumerate(want):
        if not d.visible[m]:  # hidden behind another cuboid: the reference does not know occlusion
            continue
        np.testing.assert_allclose(d.boxes[m], box, atol=tol * 20 if lens != "pinhole" else tol)
        assert abs(d.truncation[m] - trunc) < (1e-9 if lens == "pinhole" else 2e-3)
    assert d.visible[-1] and 0.1 < d.truncation[-1] < 0.9
    assert d.visible.sum() >= n - 3


def test_occlusion_is_the_hidden_share_of_the_silhouette():
    cam = Camera("CAM", CameraIntrinsics(640, 480, 500.0, 500.0, 319.5, 239.5), SE3.identity())  # ego = camera
    q = np.array([[1.0, 0, 0, 0]] * 4)
    # a 2 m cube 20 m ahead; a thin board 10 m ahead covering its left half (u < centre); one
    # far behind the first and smaller (hidden); one off to the side (clear)
    centers = np.array([[0.0, 0, 20], [-0.5, 0, 10], [0.0, 0, 40], [6.0, 0, 20]])
    sizes = np.array([[2.0, 2, 2], [1.0, 1.2, 0.1], [1.0, 1.0, 1.0], [2.0, 2, 2]])
    d = derive_boxes(centers, sizes, q, cam, samples=32)
    # the cube's front face spans u in ±1 m at 19 m: the board hides x < 0 of it (its half),
    # the side faces behind it are out of view of a camera on the axis... except the margins
    assert abs(d.occlusion[0] - 0.5) < 0.06, d.occlusion[0]
    assert d.occlusion[1] == 0.0 and d.occlusion[3] == 0.0
    assert not d.visible[2] and np.isnan(d.boxes[2]).all()
    # the visible part starts at the board's right edge: u = 319.5 + 500·0 / z
    assert abs(d.visible_boxes[0, 0] - 319.5) < 500 * 2 / 19 / 32 + 0.5
    np.testing.assert_allclose(d.visible_boxes[0, 2:], d.boxes[0, 2:], atol=500 * 2 / 19 / 32)
    behind = derive_boxes(np.array([[0.0, 0, -5]]), np.ones((1, 3)), q[:1], cam)
    assert not behind.visible[0] and np.isnan(behind.truncation[0])
