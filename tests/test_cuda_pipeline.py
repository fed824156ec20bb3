"""The GPU frame pipeline (engine.cuda.pipeline.DeviceFrame) against the CPU stages
(engine.frame_stages.FrameStages), and ``fathom prepare --device`` end to end: the scene
prepared on the device equals the CPU's (byte for byte on the simulator)."""

from __future__ import annotations

import filecmp
import functools
import json
from pathlib import Path

import numpy as np
import pytest

import engine.cuda as backend
from engine.camera import Camera, CameraIntrinsics
from engine.frame_stages import FrameStages, frame_stages
from engine.motion import motion_compensate
from formats.scene_store import Scene
from server import frame_points
from server.cli import main
from server.prepare import PrepareOptions, prepare
from tests.cuda_backend import SIMULATOR, sizes
from tests.cuda_scenes import cameras, points, timed_boxes, track

_QUERY = ("step_ns", "centers", "sizes", "rotations", "moving", "steps", "moving_centers", "moving_sizes",
          "moving_rotations", "moving_valid")


def _half_size(cam: Camera) -> Camera:
    """The camera of its image decoded at half size (formats.jpeg.scaled_intrinsics)."""
    i = cam.intrinsics
    intr = CameraIntrinsics(i.width // 2, i.height // 2, i.fx / 2, i.fy / 2, (i.cx + 0.5) / 2 - 0.5,
                            (i.cy + 0.5) / 2 - 0.5, i.skew / 2, i.model, i.distortion)
    return Camera(cam.name, intr, cam.ego_from_camera, cam.near_m)


def _run(stages: FrameStages, cams, ego, images, query) -> dict:
    stages.project(cams, world_from_ego=ego, camera_times_ns=[150_000_000] * len(cams))
    stages.zbuffer()
    stages.camera_mask([0, 3, 5, 7, 30, 31])
    stages.colorize([_half_size(c) if k % 2 else c for k, c in enumerate(cams)], images,
                    [0.5 if k % 2 else 1.0 for k in range(len(cams))])
    stages.box_ids(**query, margin=0.02)
    stages.lods([0.2, 0.5])
    return stages.fetch()


@pytest.mark.parametrize("n", sizes(1500, 170_000))
def test_device_frame_equals_the_cpu_stages(n):
    rng = np.random.default_rng(n)
    width, height = (1920, 1080) if n > 10_000 else (160, 120)
    cams = cameras(width, height)
    ego = track(rng)
    xyz = points(rng, n)[3:] + ego.translation[15]  # world points, finite
    offsets = rng.integers(-50_000_000, 50_000_000, len(xyz))
    query = dict(zip(_QUERY, timed_boxes(rng, 10)[2:]))
    images = [rng.integers(0, 256, ((height, height // 2)[k % 2], (width, width // 2)[k % 2], 3), dtype=np.uint8)
              for k in range(len(cams))]
    cpu = _run(frame_stages(xyz, offsets, "cpu"), cams, ego, images, query)
    gpu = _run(frame_stages(xyz, offsets, "cuda"), cams, ego, images, query)
    assert type(frame_stages(xyz[:1], offsets[:1], "cuda")).__name__ == "DeviceFrame"
    assert cpu.keys() == gpu.keys() == {"camera_mask", "rgb", "box_id", "lods"}
    for name in ("camera_mask", "rgb", "box_id"):
        assert gpu[name].dtype == cpu[name].dtype
        np.testing.assert_array_equal(gpu[name], cpu[name])
    for a, b in zip(cpu["lods"], gpu["lods"]):
        np.testing.assert_array_equal(b, a)
    assert np.count_nonzero(cpu["camera_mask"] & (1 << 31)) and np.count_nonzero(cpu["rgb"].any(axis=1))


def test_stages_check_their_order_and_arguments():
    frame = frame_stages(np.zeros((2, 3)), np.zeros(2, np.int64), "cuda")
    with pytest.raises(ValueError, match=r"project\(\) must run first"):
        frame.zbuffer()
    frame.project(cameras(160, 120)[:1], frame="sensor")
    with pytest.raises(ValueError, match=r"zbuffer\(\) must run first"):
        frame.camera_mask([0])
    frame.zbuffer()
    with pytest.raises(ValueError, match="distinct camera bits"):
        frame.camera_mask([32])
    with pytest.raises(ValueError, match="offsets_ns must have shape"):
        frame_stages(np.zeros((2, 3)), np.zeros(3, np.int64), "cuda")


@pytest.fixture(scope="module")
def one_frame_log(tmp_path_factory) -> Path:
    """One frame of the test rig's drive (two LiDARs, ~6 k points; three cameras) with its
    true tracks as labels."""
    from engine.sim.road import simulate_drive
    from formats.raw_log import write_labels
    from server.simulate import write_drive_log

    drive = simulate_drive(seed=0, duration_s=0.1, preset="test")
    log = write_drive_log(tmp_path_factory.mktemp("log") / "log", drive)
    if "labels" not in json.loads((log / "log.json").read_text()):
        write_labels(log, [*drive.static_tracks, *drive.actor_tracks])
        doc = json.loads((log / "log.json").read_text())
        (log / "log.json").write_text(json.dumps(dict(doc, labels="labels.json")))
    return log


def _files(scene: Path) -> list[str]:
    return sorted(str(p.relative_to(scene)) for p in scene.rglob("*") if p.is_file())


def test_prepare_on_the_device_writes_the_cpu_scene(one_frame_log, tmp_path, capsys, monkeypatch):
    # the GPU deskews with the exact slerp chain; the CPU's default table is within 1 µm of it,
    # enough to move a point across a millimetre step now and then: the reference is exact too
    with monkeypatch.context() as patch:
        patch.setattr(frame_points, "motion_compensate", functools.partial(motion_compensate, max_error_m=0.0))
        cpu = prepare(one_frame_log, tmp_path / "cpu", options=PrepareOptions(device="cpu"))
    assert main(["prepare", str(one_frame_log), "--out", str(tmp_path / "gpu"), "--device", "cuda",
                 "--workers", "1"]) == 0
    assert f"device cuda (CUDA: {backend.describe()})" in capsys.readouterr().err
    assert cpu.prepared == 1 and not cpu.failed
    a, b = Scene.open(tmp_path / "cpu"), Scene.open(tmp_path / "gpu")
    table_a, table_b = a.stored_points(0), b.stored_points(0)
    assert {"camera_mask", "r", "box_id"} <= set(table_a.column_names)
    assert (table_a["box_id"].to_numpy() >= 0).any() and table_a["camera_mask"].to_numpy().any()
    if SIMULATOR:  # IEEE float64 as the CPU: every frame file byte for byte
        files = [f for f in _files(tmp_path / "cpu") if f.startswith("frames/")]
        assert files == [f for f in _files(tmp_path / "gpu") if f.startswith("frames/")] and len(files) >= 3
        assert not filecmp.cmpfiles(tmp_path / "cpu", tmp_path / "gpu", files, shallow=False)[1]
    else:  # a GPU's last-place differences may move a point across a millimetre or an 8-bit colour step
        for name in ("camera_mask", "box_id", "time_offset_ns"):
            np.testing.assert_array_equal(table_b[name].to_numpy(), table_a[name].to_numpy())
        for name in ("x", "y", "z", "r", "g", "b"):
            assert np.abs(table_b[name].to_numpy().astype(np.int64) - table_a[name].to_numpy()).max() <= 1


def test_device_auto_says_what_it_picked_and_cuda_without_a_gpu_is_an_error(one_frame_log, tmp_path, capsys,
                                                                           monkeypatch):
    assert main(["prepare", str(one_frame_log), "--out", str(tmp_path / "auto"), "--device", "auto",
                 "--workers", "1", "--no-colorize"]) == 0
    picked = "cuda" if backend.gpu_usable() else "cpu"  # auto never picks the simulator
    assert f"fathom prepare: device {picked} (CUDA: {backend.describe()})" in capsys.readouterr().err
    monkeypatch.setattr(backend, "cuda_status", lambda: (False, False, "no usable CUDA GPU (test)"))
    assert main(["prepare", str(one_frame_log), "--out", str(tmp_path / "none"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "fathom prepare: error: device 'cuda' asked for, but no usable CUDA GPU (test)" in err
    assert not (tmp_path / "none").exists()
