"""The GPU backend (``engine.cuda``) against the CPU kernels, on the same inputs in the same run.

Skipped where no CUDA GPU is usable (the reason names why). Inputs are frame 0 of the
synthetic road log of :mod:`benchmarks.bench_prepare` (two LiDARs, ~170 k points; six
1920×1080 cameras; labelled tracks), rendered once and cached under ``benchmarks/.cache/``:
the sensor-frame sweeps, the world points prepare fuses, the six cameras at their exposure
times, the JPEGs decoded at half size as prepare decodes them for colour, the frame's boxes
(moving ones per 1 ms firing step) and the two level-of-detail voxel sizes.

Groups (role ``fathom`` = GPU, ``peer`` = CPU kernels on ``FATHOM_BENCH_CPU_THREADS`` numba
threads, default 2 — the 2-core machine the goals are stated against; goal: GPU ≥ 20×):

- ``gpu_deskew``: both sweeps to the world frame (``motion_compensate``);
- ``gpu_camera_stages``: projection into the six cameras, z-buffer, colour;
- ``gpu_box_ids``: each point's box at its firing time (``points_in_boxes_at_times``);
- ``gpu_lod``: the first point of each voxel at both sizes (``first_points_levels``);
- ``gpu_prepare_road``: ``prepare --device cuda`` on the ``FATHOM_BENCH_DRIVE_S`` (default 20)
  second road log with ``FATHOM_BENCH_GPU_WORKERS`` worker threads (default: the CPUs), each
  with its own stream, against the CPU prepare on ``FATHOM_BENCH_WORKERS`` (default 2);
  goal ≥ 20× real time (200 frames/s). The CPU run takes minutes.

The GPU side of the kernel groups is the stage on data already on the device, synchronised
(what a frame pays inside the pipeline; the copies are the pipeline's, timed end to end in
``gpu_prepare_road``). ``gpu_projection_device_time`` reports the device time of projection
+ z-buffer alone, from CUDA events around the kernels (goal ≤ 0.3 ms).

Run: ``pip install -c constraints.txt -e '.[test,gpu]'`` then
``python -m pytest benchmarks/bench_gpu.py --benchmark-only -p no:cacheprovider``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numba
import numpy as np
import pytest

from benchmarks.bench_prepare import DRIVE_S, cached_road_log
from engine.cuda import describe, gpu_usable

pytestmark = pytest.mark.skipif(not gpu_usable(), reason=f"needs a CUDA GPU: {describe()}")

CPU_THREADS = int(os.environ.get("FATHOM_BENCH_CPU_THREADS", "2"))
GPU_WORKERS = int(os.environ.get("FATHOM_BENCH_GPU_WORKERS", str(os.cpu_count() or 1)))
CPU_WORKERS = int(os.environ.get("FATHOM_BENCH_WORKERS", "2"))
GOAL = 20
FRAME_LOG_S = 1.2  # the kernel groups need one frame; this short log is rendered once and cached


class Frame:
    """Frame 0 of the road log as prepare sees it (module docstring)."""

    def __init__(self, log_dir: Path) -> None:
        from formats.jpeg import decode_jpeg, scaled_camera
        from formats.raw_log import read_log
        from formats.registry import read_points
        from server.frame_points import world_points
        from server.label_boxes import LabelTracks, boxes_at, firing_time_query
        from server.prepare import PrepareOptions

        log = read_log(log_dir)
        self.track = log.world_from_ego()
        frame = log.frames[0]
        self.sweeps = []
        for lidar in log.lidars:
            sweep = read_points(frame.lidar[lidar.name], format=lidar.format)
            self.sweeps.append((sweep.xyz, sweep.time_offset_ns + np.int64(frame.timestamp_ns), lidar.ego_from_sensor))
        columns = world_points(log, self.track, 0)
        self.xyz, self.offsets = columns["xyz"], columns["time_offset_ns"]
        self.cams = [c for c in log.cameras if c.name in frame.images]
        self.camera_times = np.array([frame.images[c.name][1] for c in self.cams])
        self.scaled = [scaled_camera(c, (1, 2))[0] for c in self.cams]
        self.images = [decode_jpeg(frame.images[c.name][0].read_bytes(), scale=(1, 2)) for c in self.cams]
        labels = LabelTracks.from_tracks(log.labels(), self.track)
        boxes, rows = boxes_at(labels, frame.timestamp_ns)
        o = PrepareOptions()
        self.query = firing_time_query(labels, boxes, rows, self.offsets, o.box_time_step_ns, o.box_margin_m)
        self.lod_voxel_m = o.lod_voxel_m


@pytest.fixture(scope="module")
def frame() -> Frame:
    from engine.cuda.pipeline import warmup

    warmup()
    return Frame(cached_road_log(FRAME_LOG_S))


@pytest.fixture
def cpu_threads():
    """The CPU kernels on CPU_THREADS numba threads for the test."""
    before = numba.get_num_threads()
    numba.set_num_threads(min(CPU_THREADS, numba.config.NUMBA_NUM_THREADS))
    yield
    numba.set_num_threads(before)


def _info(benchmark, group: str, role: str, items: int, unit: str) -> None:
    benchmark.group = group
    benchmark.extra_info.update(role=role, items=items, unit=unit, device=describe())
    if role == "fathom":
        benchmark.extra_info["goal"] = GOAL


def _deskew(frame: Frame, device: str) -> None:
    from engine.motion import motion_compensate

    for xyz, times, ext in frame.sweeps:
        motion_compensate(xyz, times, frame.track, ext, out_frame="world", device=device)


def _on_device(frame: Frame):
    """The frame's world points and offsets on the device (the pipeline's first copy)."""
    from engine.cuda._jit import workspace

    ws = workspace()
    xyz, offsets = ws.upload("bench.xyz", frame.xyz), ws.upload("bench.offsets", frame.offsets)
    ws.sync()
    return ws, xyz, offsets


def test_gpu_deskew(benchmark, frame):
    from engine.cuda._jit import workspace
    from engine.cuda.motion import DeviceTrack, launch_compensate
    from engine.pose_track import EXTRAPOLATION_CODES

    ws = workspace()
    track = DeviceTrack(frame.track, "bench.track")
    up = [(ws.upload(f"bench.s{k}", xyz), ws.upload(f"bench.t{k}", t), ext,
           ws.device(f"bench.o{k}", xyz.shape, np.float64)) for k, (xyz, t, ext) in enumerate(frame.sweeps)]

    def run():
        for k, (xyz, t, ext, out) in enumerate(up):
            launch_compensate(xyz, t, track, EXTRAPOLATION_CODES["none"], ext, 0, 2, out, f"bench.d{k}")
        ws.sync()

    _info(benchmark, "gpu_deskew", "fathom", len(frame.xyz), "points")
    benchmark.pedantic(run, warmup_rounds=2, rounds=50)


def test_cpu_deskew(benchmark, frame, cpu_threads):
    _info(benchmark, "gpu_deskew", "peer", len(frame.xyz), "points")
    benchmark.pedantic(_deskew, args=(frame, "cpu"), warmup_rounds=1, rounds=10)


def _gpu_camera_stages(frame: Frame, colour: bool = True):
    from engine.colorize import colorize_inputs
    from engine.cuda.colorize import launch_colorize
    from engine.cuda.projection import launch_project
    from engine.cuda.zbuffer import launch_zbuffer
    from engine.projection import projection_inputs
    from engine.zbuffer import splat_half

    ws, xyz, _ = _on_device(frame)
    args = projection_inputs(frame.xyz, frame.cams, world_from_ego=frame.track, camera_times_ns=frame.camera_times,
                             frame="world")
    half = splat_half(2, 0.1, 0.02)
    images = colorize_inputs((len(frame.cams), len(frame.xyz)), None, frame.scaled, frame.images)

    def run():
        proj = launch_project(args, xyz, "bench.proj")
        visible = launch_zbuffer(proj, half, 0.1, 0.02, "bench.zbuf")
        if colour:
            launch_colorize(proj, visible, images, [0.5] * len(frame.cams), "bench.colour")
        ws.sync()

    return run


def _cpu_camera_stages(frame: Frame) -> None:
    from engine.frame_stages import FrameStages

    stages = FrameStages(frame.xyz, frame.offsets)
    stages.project(frame.cams, world_from_ego=frame.track, camera_times_ns=frame.camera_times)
    stages.zbuffer()
    stages.colorize(frame.scaled, frame.images, [0.5] * len(frame.cams))


def test_gpu_camera_stages(benchmark, frame):
    _info(benchmark, "gpu_camera_stages", "fathom", len(frame.xyz), "points")
    benchmark.pedantic(_gpu_camera_stages(frame), warmup_rounds=2, rounds=50)


def test_cpu_camera_stages(benchmark, frame, cpu_threads):
    _info(benchmark, "gpu_camera_stages", "peer", len(frame.xyz), "points")
    benchmark.pedantic(_cpu_camera_stages, args=(frame,), warmup_rounds=1, rounds=5)


def test_gpu_projection_device_time(benchmark, frame):
    """Projection + z-buffer between two CUDA events (device time, no launch overhead)."""
    from numba import cuda

    from engine.cuda._jit import workspace

    run = _gpu_camera_stages(frame, colour=False)
    ws = workspace()
    start, end = cuda.event(), cuda.event()
    times: list[float] = []

    def timed():
        start.record(ws.stream)
        run()
        end.record(ws.stream)
        end.synchronize()
        times.append(cuda.event_elapsed_time(start, end) * 1e-3)

    benchmark.group = "gpu_projection_device_time"

    def line(_median: float) -> str:
        device_s = float(np.median(times[2:] or times))
        return (f"projection + z-buffer of {len(frame.xyz)} points into {len(frame.cams)} cameras on {describe()}: "
                f"{device_s * 1e3:.3f} ms device time (goal <= 0.3 ms: {'met' if device_s <= 3e-4 else 'NOT met'})")

    benchmark.extra_info.update(summary=line, device=describe())
    benchmark.pedantic(timed, warmup_rounds=2, rounds=50)


def test_gpu_box_ids(benchmark, frame):
    from engine.cuda.boxes import launch_labels
    from engine.moving_boxes import at_times_inputs

    ws, xyz, offsets = _on_device(frame)

    def run():
        launch_labels(at_times_inputs(frame.xyz, frame.offsets, **frame.query), xyz, offsets, "bench.boxes")
        ws.sync()

    _info(benchmark, "gpu_box_ids", "fathom", len(frame.xyz), "points")
    benchmark.pedantic(run, warmup_rounds=2, rounds=50)


def test_cpu_box_ids(benchmark, frame, cpu_threads):
    from engine.moving_boxes import points_in_boxes_at_times

    _info(benchmark, "gpu_box_ids", "peer", len(frame.xyz), "points")
    benchmark.pedantic(lambda: points_in_boxes_at_times(frame.xyz, frame.offsets, **frame.query, device="cpu"),
                       warmup_rounds=1, rounds=10)


def test_gpu_lod(benchmark, frame):
    from engine.cuda.voxel import launch_first_points
    from engine.voxel import level_grids

    ws, xyz, _ = _on_device(frame)

    def run():
        p, grids = level_grids(frame.xyz, frame.lod_voxel_m)
        launch_first_points(p, xyz, grids, "bench.lod")
        ws.sync()

    _info(benchmark, "gpu_lod", "fathom", len(frame.xyz), "points")
    benchmark.pedantic(run, warmup_rounds=2, rounds=50)


def test_cpu_lod(benchmark, frame, cpu_threads):
    from engine.voxel import first_points_levels

    _info(benchmark, "gpu_lod", "peer", len(frame.xyz), "points")
    benchmark.pedantic(lambda: first_points_levels(frame.xyz, frame.lod_voxel_m, device="cpu"), warmup_rounds=1,
                       rounds=10)


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_gpu_prepare_road(benchmark, tmp_path, device):
    from formats.raw_log import read_log
    from server.prepare import PrepareOptions, prepare

    log = cached_road_log(DRIVE_S)
    frames = len(read_log(log).frames)
    out = tmp_path / "scene"
    workers = GPU_WORKERS if device == "cuda" else CPU_WORKERS

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        os.sync()
        return (), {}

    def run():
        summary = prepare(log, out, options=PrepareOptions(device=device), workers=workers)
        assert summary.prepared == frames and not summary.failed

    benchmark.group = "gpu_prepare_road"
    benchmark.extra_info.update(role="fathom" if device == "cuda" else "peer", device=describe())

    def line(s: float) -> str:
        return (f"prepare --device {device}: {frames} frames in {s:.1f} s on {workers} workers = {frames / s:.1f} "
                f"frames/s, {DRIVE_S / s:.1f}x real time" +
                (f" (goal >= {GOAL}x: {'met' if DRIVE_S / s >= GOAL else 'NOT met'})" if device == "cuda" else ""))

    benchmark.extra_info["summary"] = line
    if device == "cuda":
        prepare(cached_road_log(FRAME_LOG_S), tmp_path / "warm", options=PrepareOptions(device="cuda"),
                workers=workers)  # every worker thread's kernels and buffers
    benchmark.pedantic(run, setup=fresh, rounds=1, iterations=1)
