"""KITTI object layout import: frames of the synthetic drive written as ``training/{velodyne,
image_2,calib,label_2}`` (calibration, sweeps and images from the tracking fixture), checked
against the devkit's own formulas in NumPy: ``compute_box_3d`` for the boxes and
``P2 · R0_rect · Tr_velo_to_cam`` for the camera."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine import quaternion as quat
from engine.cuboid import box_corners
from engine.cuboid_interp import interpolate_tracks
from engine.se3 import SE3
from formats.conventions import kitti_from_camera_boxes
from formats.errors import FormatError
from formats.import_kitti_object import import_kitti_object
from formats.raw_log import read_log
from tests.naive import same_corner_set
from tests.test_interop_kitti import BASELINE, devkit_corners, write_kitti_tracking_fixture

FRAMES = (0, 4, 9)  # KITTI frame indices = frames of the drive
OBJECT_KEYS = {"R_rect": "R0_rect", "Tr_velo_cam": "Tr_velo_to_cam", "Tr_imu_velo": "Tr_imu_to_velo"}
DONTCARE = "DontCare -1 -1 -10 503.89 169.71 590.61 190.13 -1 -1 -1 -1000 -1000 -1000 -10"  # as KITTI writes it


def write_kitti_object_fixture(drive, root) -> dict[int, list[str]]:
    """``root/object/training`` with the frames FRAMES of the drive; returns each frame's label lines.

    Labels: the drive's boxes in the ego (= KITTI IMU) frame at the frame time, moved to the
    rectified camera 0 as the tracking fixture places it, KITTI fields at full precision,
    random truncated / occluded / 2D boxes, one DontCare row per file."""
    tracking = write_kitti_tracking_fixture(drive, root / "tracking", labels=False)
    base = root / "object" / "training"
    for sub in ("velodyne", "image_2", "calib", "label_2"):
        (base / sub).mkdir(parents=True)
    calib = []
    for line in (tracking / "calib" / "0003.txt").read_text().splitlines():
        key, *values = line.split()
        calib.append(f"{OBJECT_KEYS.get(key.rstrip(':'), key.rstrip(':'))}: {' '.join(values)}")
    ref_from_ego = SE3(np.array([1.0, 0, 0, 0]), -BASELINE) @ drive.cameras[0].ego_from_camera.inverse()
    times = drive.frame_times_ns
    boxes = interpolate_tracks(list(drive.actor_tracks), times).to_ego(drive.gnss)
    rng = np.random.default_rng(1)
    lines = {}
    for i in FRAMES:
        shutil.copyfile(tracking / "velodyne" / "0003" / f"{i:06d}.bin", base / "velodyne" / f"{i:06d}.bin")
        shutil.copyfile(tracking / "image_02" / "0003" / f"{i:06d}.png", base / "image_2" / f"{i:06d}.png")
        (base / "calib" / f"{i:06d}.txt").write_text("\n".join(calib) + "\n")
        live = np.flatnonzero(boxes.valid[i])
        q = boxes.rotations[i, live]
        k = kitti_from_camera_boxes(ref_from_ego.apply(boxes.centers[i, live]), boxes.sizes[i, live],
                                    quat.multiply(np.broadcast_to(ref_from_ego.rotation, q.shape), q))
        lines[i] = []
        for j, n in enumerate(live):
            kind = {"car": "Car", "pedestrian": "Pedestrian"}[drive.actor_tracks[n].category]
            bbox = np.round(rng.uniform(0, 1200, 4), 2)
            values = [k["alpha"][j], *bbox] + [k[c][j] for c in ("h", "w", "l", "x", "y", "z", "rotation_y")]
            lines[i].append(f"{kind} {rng.integers(0, 100) / 100} {rng.integers(0, 4)} "
                            + " ".join(repr(float(v)) for v in values))
        lines[i].insert(len(lines[i]) // 2, DONTCARE)
        (base / "label_2" / f"{i:06d}.txt").write_text("\n".join(lines[i]) + "\n")
    assert sum(len(v) for v in lines.values()) > 6
    return lines


def _calib(path) -> dict[str, np.ndarray]:
    """The devkit's reading: ``KEY: numbers`` → 3×4 (R0_rect 3×3) float64."""
    out = {}
    for line in path.read_text().splitlines():
        key, *v = line.split()
        out[key.rstrip(":")] = np.array(v, float).reshape(3, -1)
    return out


def _hom(m: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[: m.shape[0], : m.shape[1]] = m
    return out


def test_import_matches_devkit(drive, tmp_path):
    import cv2

    from engine.projection import project_points
    from formats.jpeg import read_jpeg
    from formats.registry import read_points
    from server.prepare import prepare

    lines = write_kitti_object_fixture(drive, tmp_path)
    base = tmp_path / "object" / "training"
    logs = import_kitti_object(tmp_path / "object", tmp_path / "logs", start_ns=int(drive.start_ns))
    assert [p.name for p in logs] == [f"{i:06d}" for i in FRAMES]
    for i, log_dir in zip(FRAMES, logs):
        log = read_log(log_dir)
        c = _calib(base / "calib" / f"{i:06d}.txt")
        velo_from_ego = _hom(c["Tr_imu_to_velo"])
        ref_from_ego = _hom(c["R0_rect"]) @ _hom(c["Tr_velo_to_cam"]) @ velo_from_ego
        (frame,) = log.frames
        assert frame.timestamp_ns == int(drive.start_ns) + i * 100_000_000
        # points: the .bin itself
        rec = np.fromfile(base / "velodyne" / f"{i:06d}.bin", "<f4").reshape(-1, 4)
        sweep = read_points(frame.lidar["velodyne"], format="kitti")
        np.testing.assert_array_equal(sweep.xyz, rec[:, :3])
        np.testing.assert_array_equal(sweep.intensity, rec[:, 3])
        np.testing.assert_allclose(log.lidars[0].ego_from_sensor.as_matrix(), np.linalg.inv(velo_from_ego), atol=1e-12)
        # labels: devkit corners (rectified camera 0) moved to the ego frame = the world frame
        rows = [r.split() for r in lines[i] if not r.startswith("DontCare")]
        tracks = log.labels()
        assert [t.track_id for t in tracks] == [str(n) for n in range(len(rows))]
        ego_from_ref = np.linalg.inv(ref_from_ego)
        for t, f in zip(tracks, rows):
            v = [float(x) for x in f[3:]]
            h, w, l, x, y, z, ry = v[5:]
            ref = devkit_corners(h, w, l, x, y, z, ry) @ ego_from_ref[:3, :3].T + ego_from_ref[:3, 3]
            assert t.category == f[0].lower() and t.timestamps_ns.tolist() == [frame.timestamp_ns]
            np.testing.assert_allclose(t.centers[0], ref.mean(axis=0), rtol=0, atol=1e-6)
            np.testing.assert_allclose(t.sizes[0], [l, w, h], rtol=0, atol=1e-12)
            same_corner_set(box_corners(t.centers[0], t.sizes[0], t.rotations[0]), ref, 1e-6)
            fwd = ref[[0, 1, 4, 5]].mean(axis=0) - ref[[2, 3, 6, 7]].mean(axis=0)  # devkit: +l/2 corners first
            ours = quat.rotate(t.rotations[0], np.array([[1.0, 0, 0]]))[0]
            assert abs(np.angle(np.exp(1j * (np.arctan2(ours[1], ours[0]) - np.arctan2(fwd[1], fwd[0]))))) < 1e-9
            assert t.keyframe_attributes == [{"truncated": float(f[1]), "occluded": int(f[2]), "alpha": v[0],
                                              "bbox": v[1:5]}]
        # camera 2: the devkit's P2 · R0_rect · Tr_velo_to_cam on the Velodyne-frame box corners
        cam = log.cameras[0]
        png = cv2.imread(str(base / "image_2" / f"{i:06d}.png"))
        assert (cam.intrinsics.height, cam.intrinsics.width) == png.shape[:2] and cam.intrinsics.model == "pinhole"
        assert np.abs(read_jpeg(frame.images["image_02"][0]).astype(int) - png[:, :, ::-1]).mean() < 2
        corners = np.vstack([box_corners(t.centers[0], t.sizes[0], t.rotations[0]) for t in tracks])
        velo = (velo_from_ego @ np.c_[corners, np.ones(len(corners))].T)
        uvw = c["P2"] @ _hom(c["R0_rect"]) @ _hom(c["Tr_velo_to_cam"]) @ velo
        front = uvw[2] > cam.near_m
        assert front.sum() > 8
        uv = project_points(corners, [cam]).uv[0]
        np.testing.assert_allclose(uv[front], (uvw[:2] / uvw[2]).T[front], rtol=0, atol=1e-6)
    summary = prepare(logs[0], tmp_path / "scene")
    assert summary.prepared == 1 and not summary.failed


def test_sequence_layout(drive, tmp_path):
    lines = write_kitti_object_fixture(drive, tmp_path)
    (log_dir,) = import_kitti_object(tmp_path / "object", tmp_path / "log", layout="sequence", start_ns=5, images=False)
    log = read_log(log_dir)
    times = [5 + i * 100_000_000 for i in FRAMES]
    assert [f.timestamp_ns for f in log.frames] == times and not log.cameras
    assert log.world_from_ego().translation.tolist() == [[0.0, 0.0, 0.0]] * len(FRAMES)
    tracks = log.labels()
    expect = [(t, r.split()[0].lower()) for i, t in zip(FRAMES, times) for r in lines[i]
              if not r.startswith("DontCare")]
    assert [(int(t.timestamps_ns[0]), t.category) for t in tracks] == expect
    assert [t.track_id for t in tracks] == [str(n) for n in range(len(expect))]
    # one frame of its own is the same box as in the per-frame log
    per_frame = read_log(import_kitti_object(tmp_path / "object", tmp_path / "one", frames=[FRAMES[1]])[0]).labels()
    ours = [t for t in tracks if t.timestamps_ns[0] == times[1]]
    np.testing.assert_array_equal([t.centers for t in ours], [t.centers for t in per_frame])
    # frames from two calibrations cannot share one log
    calib = tmp_path / "object" / "training" / "calib" / f"{FRAMES[2]:06d}.txt"
    calib.write_text(calib.read_text().replace("P2: ", "P2: 1", 1))
    with pytest.raises(FormatError, match="one calibration") as err:
        import_kitti_object(tmp_path / "object", tmp_path / "log2", layout="sequence")
    assert err.value.path == str(calib)


def test_testing_split_has_no_labels(drive, tmp_path):
    write_kitti_object_fixture(drive, tmp_path)
    training, testing = tmp_path / "object" / "training", tmp_path / "object" / "testing"
    for sub in ("velodyne", "image_2", "calib"):
        shutil.copytree(training / sub, testing / sub)
    logs = import_kitti_object(tmp_path / "object", tmp_path / "logs", split="testing", frames=[FRAMES[0]])
    log = read_log(logs[0])
    assert log.labels_path is None and log.log_id == f"kitti-object-testing-{FRAMES[0]:06d}"


@pytest.mark.parametrize("what", ["label", "calib", "bin"])
def test_bad_input_raises_format_error(drive, tmp_path, what):
    write_kitti_object_fixture(drive, tmp_path)
    base = tmp_path / "object" / "training"
    name = f"{FRAMES[1]:06d}"
    if what == "label":
        path = base / "label_2" / f"{name}.txt"
        text = path.read_text()
        first, rest = text.split("\n", 1)
        path.write_text(first + "\n" + " ".join(rest.split("\n", 1)[0].split()[:14]) + "\n")
        offset, match = len(first) + 1, "15 fields"
    elif what == "calib":
        path = base / "calib" / f"{name}.txt"
        kept = [line for line in path.read_text().splitlines() if not line.startswith("Tr_velo_to_cam")]
        path.write_text("\n".join(kept) + "\n")
        offset, match = None, "Tr_velo_to_cam"
    else:
        path = base / "velodyne" / f"{name}.bin"
        size = path.stat().st_size
        with open(path, "ab") as f:
            f.write(b"\0" * 12)
        offset, match = size, "16-byte records"
    with pytest.raises(FormatError, match=match) as err:
        import_kitti_object(tmp_path / "object", tmp_path / "logs")
    assert (err.value.path, err.value.offset) == (str(path), offset)
    assert not (tmp_path / "logs").exists()  # every frame is checked before anything is written


def test_png_images_read_as_rgb_like_opencv(tmp_path):
    import cv2

    from formats.import_kitti import read_png_rgb

    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[:, :, ::-1])
    np.testing.assert_array_equal(read_png_rgb(tmp_path / "c.png"), rgb)
    gray = rng.integers(0, 256, (4, 6), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "g.png"), gray)
    np.testing.assert_array_equal(read_png_rgb(tmp_path / "g.png"), np.repeat(gray[:, :, None], 3, axis=2))
    (tmp_path / "bad.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(FormatError, match="8-bit PNG"):
        read_png_rgb(tmp_path / "bad.png")
