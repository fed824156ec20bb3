"""``fathom prepare`` on the synthetic rig's raw log: ground truth, resumability, failures,
parallel execution (processes and a Dask LocalCluster) with byte-identical output."""

from __future__ import annotations

import filecmp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from engine.motion import motion_compensate
from formats.raw_log import read_log
from formats.scene_store import Scene
from server.prepare import prepare
from server.simulate import write_drive_log

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw_log(drive, tmp_path_factory) -> Path:
    return write_drive_log(tmp_path_factory.mktemp("log"), drive)


@pytest.fixture(scope="module")
def reference_scene(raw_log, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scene") / "road-0"
    summary = prepare(raw_log, out)
    assert summary.prepared == len(read_log(raw_log).frames) and not summary.failed
    return out


def _files(scene: Path) -> list[str]:
    return sorted(str(p.relative_to(scene)) for p in scene.rglob("*") if p.is_file())


def assert_identical(a: Path, b: Path) -> None:
    assert _files(a) == _files(b)
    match, mismatch, errors = filecmp.cmpfiles(a, b, _files(a), shallow=False)
    assert not mismatch and not errors


def test_points_land_where_the_simulator_put_them(drive, reference_scene):
    scene = Scene.open(reference_scene)
    assert len(scene.frames) == len(drive.frame_times_ns)
    for i in (0, len(drive.frame_times_ns) - 1):
        truth = []
        for lidar in drive.lidars:
            sweep = drive.sweeps[lidar.name][i]
            times = sweep.time_offset_ns + np.int64(sweep.timestamp_ns)
            truth.append(motion_compensate(sweep.xyz, times, drive.world_from_ego, lidar.ego_from_lidar,
                                           out_frame="world"))
        truth = np.concatenate(truth)
        table = scene.points(i)
        stored = np.stack([table[c].to_numpy() for c in "xyz"], axis=1)
        # prepared from the 100 Hz GNSS/INS log, checked against the 1 kHz true trajectory
        assert np.abs(stored - truth).max() < 0.005
        sensor = table["sensor_id"].to_numpy()
        expect = np.concatenate([np.full(len(drive.sweeps[l.name][i]), l.sensor_id) for l in drive.lidars])
        np.testing.assert_array_equal(sensor, expect)


def test_points_take_the_colour_of_the_object_they_hit(drive, reference_scene):
    scene = Scene.open(reference_scene)
    hits = agree = 0
    for i in range(len(scene.frames)):
        table = scene.points(i)
        rgb = np.stack([table[c].to_numpy() for c in "rgb"], axis=1).astype(int)
        ids = np.concatenate([drive.sweeps[l.name][i].extra["object_id"] for l in drive.lidars])
        coloured = rgb.any(axis=1)
        expect = drive.objects.color_rgb[ids].astype(int)
        close = np.abs(rgb - expect).max(axis=1) <= 24  # JPEG ringing on flat colours
        hits += coloured.sum()
        agree += (close & coloured).sum()
    assert hits > 1000
    # small test cameras (192×108 px): JPEG blocks and object edges cost a few per cent
    assert agree / hits >= 0.95


def test_level_of_detail_grids_are_subsets(reference_scene):
    scene = Scene.open(reference_scene)
    full = scene.points(0)
    sizes = [len(full)] + [len(scene.points(0, lod)) for lod in (1, 2)]
    assert sizes[0] > sizes[1] > sizes[2] > 0
    keys = set(zip(*(full[c].to_numpy() for c in ("xq", "yq", "zq"))))
    lod = scene.points(0, 2)
    assert set(zip(*(lod[c].to_numpy() for c in ("xq", "yq", "zq")))) <= keys


def test_rerun_skips_finished_frames(raw_log, reference_scene, tmp_path):
    summary = prepare(raw_log, reference_scene)
    assert summary.prepared == 0 and summary.skipped == summary.frames


def test_killed_run_resumes_to_a_byte_identical_scene(raw_log, reference_scene, tmp_path):
    out = tmp_path / "road-0"
    cmd = [sys.executable, "-m", "server.cli", "prepare", str(raw_log), "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list((out / "frames").glob("*.json"))) < 3:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(list((out / "frames").glob("*.json")))
    assert 3 <= done < len(read_log(raw_log).frames), "the kill should land mid-way"
    # a temporary file as a write cut short by the kill leaves it (whether or not this kill did)
    (out / "frames" / ".000009.arrow.killed.tmp").write_bytes(b"half a frame")
    summary = prepare(raw_log, out)
    assert summary.skipped >= 3 and not summary.failed
    assert_identical(reference_scene, out)


def test_a_corrupt_frame_fails_alone_with_a_clear_report(raw_log, tmp_path):
    import shutil

    log = tmp_path / "log"
    shutil.copytree(raw_log, log)
    victim = log / "lidar" / "LIDAR_TOP" / "000002.pcd"
    victim.write_bytes(victim.read_bytes()[:-100])
    summary = prepare(log, tmp_path / "scene")
    assert [r.index for r in summary.failed] == [2]
    assert "FormatError" in summary.failed[0].error and "000002.pcd" in summary.failed[0].error
    assert summary.prepared == summary.frames - 1
    assert [f.index for f in Scene.open(tmp_path / "scene").frames] == [
        i for i in range(summary.frames) if i != 2
    ]


def test_worker_processes_and_dask_give_identical_output(raw_log, reference_scene, tmp_path):
    pytest.importorskip("distributed")
    for name, kwargs in (("procs", {"workers": 2}), ("dask", {"workers": 2, "dask": "local"})):
        out = tmp_path / name / "road-0"
        summary = prepare(raw_log, out, **kwargs)
        assert summary.prepared == summary.frames and not summary.failed
        assert_identical(reference_scene, out)


def test_missing_or_broken_manifest_is_a_format_error(tmp_path):
    from formats.errors import FormatError

    with pytest.raises(FormatError, match="log.json"):
        prepare(tmp_path, tmp_path / "scene")
    (tmp_path / "log.json").write_text('{"format": "fathom-log", "version": 1, "poses": {"kind": "table", '
                                       '"path": "../../etc/passwd"}}')
    with pytest.raises(FormatError, match="leaves it"):
        prepare(tmp_path, tmp_path / "scene")
