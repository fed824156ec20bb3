"""GPU deskew (engine.cuda.motion) against the CPU kernel: every output frame, float32 and
float64 points, extrapolation, ``out=``, the device choice; the stated bound 1e-6 m."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine import quaternion as quat
from engine.cuda import CudaUnavailableError, get_device, use_device
from engine.motion import deskew, motion_compensate
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from engine.sweep import Sweep
from tests.cuda_backend import assert_same, sizes

BOUND_M = 1e-6  # engine.cuda: GPU points within 1e-6 m of the CPU kernel's


def _track(rng, k=30, dt=10_000_000):
    """A drive turning and pitching at up to ~2 rad/s, 10 m/s."""
    ts = np.arange(k, dtype=np.int64) * dt + 1_700_000_000_000_000_000
    yaw = np.cumsum(rng.uniform(-0.02, 0.02, k))
    q = quat.multiply(quat.from_yaw(yaw), quat.from_euler_zyx(0.0, rng.uniform(-0.05, 0.05, k), 0.0))
    return PoseTrack(ts, q, np.cumsum(rng.uniform(0.05, 0.15, (k, 3)), axis=0))


def _case(rng, n, dtype=np.float32):
    track = _track(rng)
    ext = SE3(quat.from_euler_zyx(0.3, 0.02, -0.01), [1.2, -0.4, 1.9])
    xyz = (rng.normal(size=(n, 3)) * 40).astype(dtype)
    times = np.sort(rng.integers(track.start_ns, track.end_ns, n))
    return xyz, times, track, ext


@pytest.mark.parametrize("n", sizes(2000, 300_000))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("frame", ["sensor", "ego", "world"])
def test_equals_the_cpu_kernel(n, dtype, frame):
    rng = np.random.default_rng(n)
    xyz, times, track, ext = _case(rng, n, dtype)
    ref_ns = int(times[n // 3])
    gpu = motion_compensate(xyz, times, track, ext, ref_ns, frame, device="cuda")
    exact = motion_compensate(xyz, times, track, ext, ref_ns, frame, max_error_m=0.0, device="cpu")
    assert gpu.dtype == (np.float64 if frame == "world" else np.float32)
    assert_same(exact, gpu, atol=BOUND_M if frame == "world" else 1e-5)  # float32 output: its own rounding
    # the CPU's default (tabulated, 1 µm) path: the GPU is the exact chain
    table = motion_compensate(xyz, times, track, ext, ref_ns, frame, device="cpu")
    assert np.abs(table.astype(np.float64) - gpu).max() <= 2 * BOUND_M + (0 if frame == "world" else 1e-5)


@pytest.mark.parametrize("extrapolate", ["hold", "linear"])
def test_times_outside_the_track(extrapolate):
    rng = np.random.default_rng(1)
    xyz, times, track, ext = _case(rng, 500, np.float64)
    times = times + (track.end_ns - track.start_ns) // 2  # half of them past the end
    ref_ns = track.start_ns - 5_000_000
    for frame in ("sensor", "world"):
        gpu = motion_compensate(xyz, times, track, ext, ref_ns, frame, extrapolate=extrapolate, device="cuda")
        cpu = motion_compensate(xyz, times, track, ext, ref_ns, frame, extrapolate=extrapolate, max_error_m=0.0)
        assert_same(cpu, gpu, atol=BOUND_M if frame == "world" else 1e-5)


def test_out_nan_points_and_empty_input():
    rng = np.random.default_rng(2)
    xyz, times, track, ext = _case(rng, 300, np.float64)
    xyz[:3] = [np.nan, 0, 0]
    out = np.full((300, 3), 7.0)
    got = motion_compensate(xyz, times, track, ext, out_frame="world", out=out, device="cuda")
    assert got is out and np.all(np.isnan(out[:3, 0]))
    assert_same(motion_compensate(xyz, times, track, ext, out_frame="world", max_error_m=0.0), out, BOUND_M)
    empty = motion_compensate(xyz[:0], times[:0], track, ext, out_frame="world", device="cuda")
    assert empty.shape == (0, 3) and empty.dtype == np.float64


def test_the_device_choice():
    rng = np.random.default_rng(3)
    xyz, times, track, ext = _case(rng, 200)
    sweep = Sweep(xyz, int(times[0]), time_offset_ns=times - times[0])
    with use_device("cuda"):
        assert get_device() == "cuda"
        on_gpu = deskew(sweep, track, ext)  # deskew has no device argument: the thread's default
    assert get_device() == "cpu"
    assert_same(deskew(sweep, track, ext).xyz, on_gpu.xyz, atol=1e-5)
    assert engine.set_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        motion_compensate(xyz, times, track, ext, int(times[0]), device="gpu")
    with pytest.raises(ValueError, match="times_ns must have shape"):  # checked before the device runs
        motion_compensate(xyz, times[:5], track, ext, int(times[0]), device="cuda")


def test_cuda_without_a_gpu_is_an_error_not_a_cpu_run(monkeypatch):
    import engine.cuda as backend

    monkeypatch.setattr(backend, "cuda_status", lambda: (False, False, "no usable CUDA GPU (test)"))
    rng = np.random.default_rng(4)
    xyz, times, track, ext = _case(rng, 10)
    with pytest.raises(CudaUnavailableError, match="device 'cuda' asked for, but no usable CUDA GPU"):
        motion_compensate(xyz, times, track, ext, int(times[0]), device="cuda")
    with pytest.raises(CudaUnavailableError):
        engine.set_device("cuda")
    assert engine.get_device() == "cpu"
    # auto falls back to the CPU, and never picks the simulator
    assert backend.resolve("auto") == "cpu"
    monkeypatch.setattr(backend, "cuda_status", lambda: (True, True, "numba-cuda simulator"))
    assert backend.resolve("auto") == "cpu" and backend.resolve("cuda") == "cuda"
