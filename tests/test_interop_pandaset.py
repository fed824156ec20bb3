"""PandaSet import: a sequence laid out as the dataset (gzip-pickled DataFrames, JSON poses
and timestamps) built from the synthetic drive; boxes checked against a NumPy copy of the
devkit's ``geometry.center_box_to_corners`` (width/length swap, yaw 0 = front along +y)."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pandas as pd
import pytest

from engine import quaternion as quat
from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from formats.errors import FormatError
from formats.import_pandaset import import_pandaset


def devkit_corners(box) -> np.ndarray:
    """pandaset-devkit ``center_box_to_corners([x, y, z, dim_x, dim_y, dim_z, yaw])``: ``(8, 3)``."""
    x, y, z, dx, dy, dz, yaw = box
    hx, hy, hz = dx / 2, dy / 2, dz / 2
    corners = np.array([[hx, hy, -hz], [hx, -hy, -hz], [-hx, -hy, -hz], [-hx, hy, -hz],
                        [hx, hy, hz], [hx, -hy, hz], [-hx, -hy, hz], [-hx, hy, hz]])
    r = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    return corners @ r.T + [x, y, z]


def _pickle(path, df) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as fh:
        pickle.dump(df, fh)


def _pose_json(poses) -> list[dict]:
    return [{"position": dict(zip("xyz", t.tolist())), "heading": dict(zip("wxyz", q.tolist()))}
            for t, q in zip(poses.translation, poses.rotation)]


OFFSET = np.array([1234.4, -567.8, 3.0])  # PandaSet world coordinates are far from 0


def write_pandaset_fixture(drive, seq):
    """The drive's first LiDAR as the Pandar64 (d = 0) and the second as the PandarGT (d = 1),
    points in the world frame; the front camera; actors as cuboids (with a sensor_id 1 duplicate)."""
    from formats.jpeg import encode_jpeg

    times = drive.frame_times_ns
    lidar0 = drive.lidars[0]
    world_from_lidar = drive.gnss.interpolate(times) @ lidar0.ego_from_lidar
    shift = lambda p: p + OFFSET  # noqa: E731
    (seq / "lidar").mkdir(parents=True)
    (seq / "lidar" / "poses.json").write_text(json.dumps(
        [{"position": dict(zip("xyz", shift(t).tolist())), "heading": dict(zip("wxyz", q.tolist()))}
         for t, q in zip(world_from_lidar.translation, world_from_lidar.rotation)]))
    (seq / "lidar" / "timestamps.json").write_text(json.dumps([int(t) / 1e9 for t in times]))
    world_points = []
    for i, t in enumerate(times):
        parts = []
        for d, lidar in enumerate(drive.lidars):
            sweep = drive.sweeps[lidar.name][i]
            w = shift((drive.gnss.at(int(t)) @ lidar.ego_from_lidar).apply(sweep.xyz))
            parts.append(pd.DataFrame({"x": w[:, 0], "y": w[:, 1], "z": w[:, 2], "i": sweep.intensity,
                                       "t": int(t) / 1e9, "d": d}))
        df = pd.concat(parts, ignore_index=True)
        world_points.append(df[["x", "y", "z"]].to_numpy())
        _pickle(seq / "lidar" / f"{i:02d}.pkl.gz", df)
    cam = drive.cameras[0]
    cdir = seq / "camera" / "front_camera"
    cdir.mkdir(parents=True)
    k = cam.intrinsics
    (cdir / "intrinsics.json").write_text(json.dumps({"fx": k.fx, "fy": k.fy, "cx": k.cx, "cy": k.cy}))
    cam_times = times + 50_000_000
    cam_times[3] = times[3]  # one exposure synchronous with a sweep: the rig extrinsic is exact there
    world_from_cam = drive.gnss.interpolate(cam_times) @ cam.ego_from_camera
    (cdir / "poses.json").write_text(json.dumps(
        [{"position": dict(zip("xyz", shift(t).tolist())), "heading": dict(zip("wxyz", q.tolist()))}
         for t, q in zip(world_from_cam.translation, world_from_cam.rotation)]))
    (cdir / "timestamps.json").write_text(json.dumps([int(t) / 1e9 for t in cam_times]))
    for i in range(len(times)):
        (cdir / f"{i:02d}.jpg").write_bytes(encode_jpeg(np.full((k.height, k.width, 3), 10 * i, np.uint8)))
    boxes = interpolate_tracks(list(drive.actor_tracks), times)
    yaw = quat.to_euler_zyx(boxes.rotations)[..., 2]
    cuboid_rows = []
    for i in range(len(times)):
        rows = []
        for n, track in enumerate(drive.actor_tracks):
            if not boxes.valid[i, n]:
                continue
            c, s = shift(boxes.centers[i, n]), boxes.sizes[i, n]
            row = {"uuid": f"u-{track.track_id}", "label": track.category.title(), "yaw": yaw[i, n] - np.pi / 2,
                   "stationary": False, "camera_used": 0, "position.x": c[0], "position.y": c[1], "position.z": c[2],
                   "dimensions.x": s[1], "dimensions.y": s[0], "dimensions.z": s[2], "cuboids.sensor_id": -1}
            rows.append(row)
        if rows:  # the PandarGT overlap duplicate of the first cuboid, shifted: must be dropped
            rows.append({**rows[0], "position.x": rows[0]["position.x"] + 5.0, "cuboids.sensor_id": 1})
        cuboid_rows.append(rows)
        _pickle(seq / "annotations" / "cuboids" / f"{i:02d}.pkl.gz", pd.DataFrame(rows, columns=list(
            rows[0]) if rows else ["uuid", "label", "yaw", "stationary", "position.x", "position.y", "position.z",
                                   "dimensions.x", "dimensions.y", "dimensions.z", "cuboids.sensor_id"]))
    return world_points, cuboid_rows


def test_import_pandaset(drive, tmp_path):
    from formats.raw_log import read_log
    from formats.registry import read_points
    from server.prepare import prepare

    world_points, cuboid_rows = write_pandaset_fixture(drive, tmp_path / "002")
    log = read_log(import_pandaset(tmp_path / "002", tmp_path / "log"))
    times = drive.frame_times_ns
    offset = np.asarray(log.origin.enu_offset_m)
    np.testing.assert_allclose([f.timestamp_ns for f in log.frames], times, atol=1000)
    assert [l.name for l in log.lidars] == ["pandar64", "pandar_gt"]
    # points: ego-frame sweeps put back into the world equal the world-frame input
    track = log.world_from_ego()
    for f, w in zip(log.frames, world_points):
        parts = [read_points(f.lidar[name], format="pcd").xyz for name in ("pandar64", "pandar_gt")]
        back = track.at(f.timestamp_ns).apply(np.vstack(parts)) + offset
        np.testing.assert_allclose(back, w, atol=5e-4)  # float32 sweeps at ~40 m
    # the camera rig: ego_from_camera = lidar0 ← ego ← camera
    expect = drive.lidars[0].ego_from_lidar.inverse() @ drive.cameras[0].ego_from_camera
    assert log.cameras[0].ego_from_camera.allclose(expect, atol=1e-9)
    # camera poses extend world_from_ego to the exposure times (the last one is after the last sweep)
    t_img = log.frames[-1].images["front_camera"][1]
    truth = drive.gnss.at(int(drive.frame_times_ns[-1]) + 50_000_000) @ drive.lidars[0].ego_from_lidar
    np.testing.assert_allclose(track.at(t_img).translation + offset, truth.translation + OFFSET, atol=1e-4)
    # boxes equal the devkit's corners of the rows (sensor_id 1 duplicates dropped)
    tracks = {t.track_id: t for t in log.labels()}
    n_boxes = 0
    for i, rows in enumerate(cuboid_rows):
        for row in rows:
            if row["cuboids.sensor_id"] == 1:
                continue
            t = tracks[row["uuid"]]
            k = int(np.flatnonzero(np.abs(t.timestamps_ns - log.frames[i].timestamp_ns) == 0)[0])
            ours = box_corners(t.centers[k] + offset, t.sizes[k], t.rotations[k])
            ref = devkit_corners([row[c] for c in ("position.x", "position.y", "position.z", "dimensions.x",
                                                    "dimensions.y", "dimensions.z", "yaw")])
            d = np.linalg.norm(ours[:, None] - ref[None], axis=-1)
            assert d.min(axis=0).max() < 1e-9 and d.min(axis=1).max() < 1e-9
            assert t.category == row["label"]
            n_boxes += 1
    assert n_boxes == sum(len(t) for t in tracks.values()) > 5
    summary = prepare(log.root, tmp_path / "scene")
    assert summary.prepared == len(times) and not summary.failed


def test_bad_inputs_raise_format_error(drive, tmp_path):
    seq = tmp_path / "002"
    with pytest.raises(FormatError, match="NN.pkl.gz"):
        import_pandaset(seq, tmp_path / "log")
    write_pandaset_fixture(drive, seq)
    (seq / "lidar" / "timestamps.json").write_text("[1.0, 2.0]")
    with pytest.raises(FormatError, match="10 of finite timestamps"):
        import_pandaset(seq, tmp_path / "log")
    (seq / "lidar" / "timestamps.json").write_text(json.dumps([float(i) for i in range(10)]))
    (seq / "lidar" / "03.pkl.gz").write_bytes(b"not gzip")
    with pytest.raises(FormatError, match="gzip-pickled") as err:
        import_pandaset(seq, tmp_path / "log")
    assert err.value.path.endswith("03.pkl.gz")
    _pickle(seq / "lidar" / "03.pkl.gz", pd.DataFrame({"x": [1.0]}))
    with pytest.raises(FormatError, match="missing"):
        import_pandaset(seq, tmp_path / "log")
