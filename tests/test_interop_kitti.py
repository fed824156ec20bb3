"""KITTI tracking export/import: label lines checked with a NumPy copy of the devkit's box
geometry (``compute_box_3d``: bottom-centre location, ``roty(rotation_y)``), calibration and
oxts built from the synthetic drive in the real dataset layout, round trips."""

from __future__ import annotations

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import CuboidTrack, box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.export_kitti import kitti_track_ids, kitti_tracking_lines


def devkit_corners(h, w, l, x, y, z, ry) -> np.ndarray:
    """KITTI devkit ``compute_box_3d``: the 8 corners ``(8, 3)`` in the rectified camera."""
    c, s = np.cos(ry), np.sin(ry)
    r = np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    xs = [l / 2, l / 2, -l / 2, -l / 2, l / 2, l / 2, -l / 2, -l / 2]
    ys = [0, 0, 0, 0, -h, -h, -h, -h]
    zs = [w / 2, -w / 2, -w / 2, w / 2, w / 2, -w / 2, -w / 2, w / 2]
    return (r @ np.array([xs, ys, zs])).T + [x, y, z]


def same_corner_set(a: np.ndarray, b: np.ndarray, atol: float) -> None:
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    assert d.min(axis=1).max() < atol and d.min(axis=0).max() < atol, d.min(axis=1)


def parse(line: str) -> dict:
    f = line.split()
    v = [float(x) for x in f[5:]]
    return {"frame": int(f[0]), "id": int(f[1]), "type": f[2], "truncated": int(f[3]), "occluded": int(f[4]),
            "alpha": v[0], "bbox": v[1:5], "h": v[5], "w": v[6], "l": v[7], "xyz": v[8:11], "ry": v[11]}


def test_export_matches_devkit_geometry(drive):
    cam = drive.cameras[0]
    tracks = list(drive.actor_tracks)
    times = drive.frame_times_ns
    lines = kitti_tracking_lines(tracks, times, drive.gnss, cam)
    assert lines, "the front camera sees some actors"
    ids = kitti_track_ids(tracks)
    by_kitti = {ids[t.track_id]: n for n, t in enumerate(tracks)}
    assert all(t.track_id.isdigit() for t in tracks) and set(ids.values()) == {int(t.track_id) for t in tracks}
    boxes = interpolate_tracks(tracks, times).to_ego(drive.gnss)
    cam_from_ego = cam.ego_from_camera.inverse()
    k = cam.intrinsics.K
    seen = set()
    for line in lines:
        r = parse(line)
        n = by_kitti[r["id"]]
        seen.add((r["frame"], r["id"]))
        assert r["type"] == {"car": "Car", "pedestrian": "Pedestrian"}[tracks[n].category]
        f = r["frame"]
        ours = cam_from_ego.apply(box_corners(boxes.centers[f, n], boxes.sizes[f, n], boxes.rotations[f, n]))
        kitti = devkit_corners(r["h"], r["w"], r["l"], *r["xyz"], r["ry"])
        same_corner_set(ours, kitti, 2e-6)
        # KITTI: rotation_y = alpha + atan2(x, z)
        x, _, z = r["xyz"]
        assert np.isclose(np.angle(np.exp(1j * (r["alpha"] + np.arctan2(x, z) - r["ry"]))), 0, atol=2e-6)
        # the 2D box: pinhole projection of the corners, clipped to the image
        if np.all(kitti[:, 2] > 0.1):
            uv = (k @ kitti.T).T
            uv = uv[:, :2] / uv[:, 2:]
            lo = np.maximum(uv.min(0), -0.5)
            hi = np.minimum(uv.max(0), [cam.intrinsics.width - 0.5, cam.intrinsics.height - 0.5])
            np.testing.assert_allclose(r["bbox"], [*lo, *hi], atol=2e-5)
            inside = np.all((uv >= -0.5) & (uv <= [cam.intrinsics.width - 0.5, cam.intrinsics.height - 0.5]))
            assert r["truncated"] == (0 if inside else 1)
    # every box with its centre well inside the view is written
    for f in range(len(times)):
        for n, t in enumerate(tracks):
            if not boxes.valid[f, n]:
                continue
            c = cam_from_ego.apply(boxes.centers[f, n][None])[0]
            uv = k @ c
            if c[2] > 2 and 5 < uv[0] / uv[2] < cam.intrinsics.width - 5 and 5 < uv[1] / uv[2] < cam.intrinsics.height - 5:
                assert (f, int(t.track_id)) in seen
    frames = [parse(line)["frame"] for line in lines]
    assert frames == sorted(frames)


def test_track_ids_kept_or_numbered():
    def t(i):
        return CuboidTrack(i, "car", np.array([0]), np.zeros((1, 3)), np.ones((1, 3)), np.array([[1.0, 0, 0, 0]]))

    assert kitti_track_ids([t("7"), t("3")]) == {"7": 7, "3": 3}
    assert kitti_track_ids([t("a"), t("7")]) == {"a": 0, "7": 1}
    assert kitti_track_ids([t("07"), t("7")]) == {"07": 0, "7": 1}


def test_export_empty(drive):
    assert kitti_tracking_lines([], drive.frame_times_ns, drive.gnss, drive.cameras[0]) == []
    assert kitti_tracking_lines(list(drive.actor_tracks), np.array([], np.int64), drive.gnss, drive.cameras[0]) == []


def test_rotation_y_convention():
    """A box facing camera +z (away from the camera) has rotation_y = -pi/2 in KITTI."""
    from formats.conventions import camera_boxes_from_kitti, kitti_from_camera_boxes

    c, s, q = camera_boxes_from_kitti(1.5, 1.8, 4.0, 1.0, 1.6, 10.0, -np.pi / 2)
    forward = quat.rotate(q, np.array([[1.0, 0, 0]]))
    np.testing.assert_allclose(forward, [[0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(quat.rotate(q, np.array([[0, 0, 1.0]])), [[0, -1, 0]], atol=1e-15)
    np.testing.assert_allclose(c, [[1.0, 1.6 - 0.75, 10.0]])
    back = kitti_from_camera_boxes(c, s, q)
    assert np.isclose(back["rotation_y"][0], -np.pi / 2) and np.isclose(back["y"][0], 1.6)
    same_corner_set(box_corners(c[0], s[0], q[0]), devkit_corners(1.5, 1.8, 4.0, 1.0, 1.6, 10.0, -np.pi / 2), 1e-12)
