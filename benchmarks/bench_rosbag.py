"""ROS bags: reading a recorded drive, and ``prepare`` from a bag against ``prepare`` from its raw log.

The bag: the rig's ``road`` preset (two LiDARs as ``sensor_msgs/PointCloud2`` at 10 Hz in
Ouster's 48-byte point layout, ~170 k points per frame; six 1920×1080 cameras as JPEG
``CompressedImage``; ``/tf_static``; ``nav_msgs/Odometry`` at 100 Hz), written by rosbags'
own writer (``tests/rosbag_rig.py``) in ``FATHOM_BENCH_ROSBAG_STORAGE`` (``mcap``, default;
``sqlite3``; ``ros1``), about ``FATHOM_BENCH_ROSBAG_MB`` MB of it (default 100, ~8.6 MB a
frame; the issue's goal size is ``FATHOM_BENCH_ROSBAG_MB=1000``). The drive's raw log
(``bench_prepare.cached_road_log``) is rendered once and kept under ``benchmarks/.cache/``
with the bag written from it (its JPEGs are the log's files, byte for byte); delete that
folder to start afresh.

- ``rosbag_container_pass``: every message of the bag read in log-time order, goal ≥ 300 MB/s
  of bag on 2 cores (the unit: MB of bag files).

  - Fathom: ``formats.ros.Bag.messages`` (rosbags' storage readers, raw bytes); the large
    messages parsed up to their payload (``formats.ros.wire``) and each PointCloud2's points
    taken as the structured view of its bytes (``cloud_records``) with its ``x`` ``y`` ``z``
    field views; CompressedImage data as a view; the small messages (tf, Odometry) deserialised.
  - Peer: rosbags' ``AnyReader`` loop deserialising every message (``typestore.deserialize_cdr``
    / ``deserialize_ros1``), its PointCloud2 ``data`` a uint8 array.
  - Untimed check: per message, both give the same stamp and payload bytes (xxhash digests).
- ``rosbag_to_raw_log``: ``bag_to_raw_log`` (both passes, PCD and JPEG files written):
  frames/s and MB/s, no peer.
- ``prepare_from_bag``: ``fathom prepare BAG`` (the bag read directly: its first pass, then
  each frame's messages read from the bag as the frame is prepared, ``formats.ros.source``)
  against ``prepare`` of the equivalent raw log, ``FATHOM_BENCH_WORKERS`` threads (default 2),
  each writing a fresh scene with its map; goal: within 10 % (ratio ≥ 0.91). Each side runs
  once untimed (its kernels loaded from numba's cache, the process warm), then two timed
  rounds (minutes at the goal size); before each, the bag's files are touched so that its
  first pass, kept per process for an unchanged bag, is timed every round. The bag's
  topics come in name order, the log's sensors in the rig's: the scenes hold the same points
  and images with the sensors numbered differently.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import xxhash

from benchmarks.bench_prepare import CACHE, SEED, cached_road_log
from engine.sim.road import FRAME_PERIOD_NS, simulate_drive
from formats.ros import Bag, BagOptions, bag_to_raw_log
from formats.ros.pointcloud import cloud_records
from formats.ros.wire import read_compressed_image, read_pointcloud2
from server.prepare import PrepareOptions, prepare
from tests.rosbag_rig import write_drive_bag

BAG_MB = float(os.environ.get("FATHOM_BENCH_ROSBAG_MB", "100"))
STORAGE = os.environ.get("FATHOM_BENCH_ROSBAG_STORAGE", "mcap")
WORKERS = int(os.environ.get("FATHOM_BENCH_WORKERS", "2"))
MB_PER_FRAME = 8.6  # two PointCloud2 (48-byte points) + six JPEGs of the road preset
POINTS = "sensor_msgs/msg/PointCloud2"
IMAGES = "sensor_msgs/msg/CompressedImage"


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def drive_bag() -> tuple[Path, Path, int]:
    """(raw log without labels, bag, bag bytes): the cached road log and the bag written from it."""
    frames = max(2, math.ceil(BAG_MB / MB_PER_FRAME))
    duration_s = frames * FRAME_PERIOD_NS / 1e9
    source = cached_road_log(duration_s)
    base = CACHE / f"rosbag-{STORAGE}-seed{SEED}-{duration_s:g}s"
    log, bag = base / "log", base / ("drive.bag" if STORAGE == "ros1" else "drive")
    if not (base / "done").exists():
        shutil.rmtree(base, ignore_errors=True)
        shutil.copytree(source, log)
        doc = json.loads((log / "log.json").read_text())
        doc.pop("labels", None)  # the bag records neither labels nor radar: both sides prepare without them
        doc.pop("radars", None)
        for frame in doc["frames"]:
            frame.pop("radar", None)
        (log / "log.json").write_text(json.dumps(doc))
        drive = simulate_drive(seed=SEED, duration_s=duration_s, preset="road")
        write_drive_bag(bag, drive, STORAGE, jpegs=lambda cam, i: (log / f"camera/{cam}/{i:06d}.jpg").read_bytes())
        (base / "done").touch()
    return log, bag, _size(bag)


def fathom_pass(bag_path: Path, digest: bool = False) -> list:
    """Every message once: views of the large ones, the small ones deserialised."""
    out = []
    with Bag(bag_path) as bag:
        types = {t: i.msgtype for t, i in bag.topics.items()}
        for topic, k, _, raw in bag.messages(types):
            ty = types[topic]
            if ty == POINTS:
                m = read_pointcloud2(raw, bag.ros1)
                rec = cloud_records(m)
                x, y, z = rec["x"], rec["y"], rec["z"]
                item = (m.stamp_ns, m.data, len(x) + len(y) + len(z))
            elif ty == IMAGES:
                c = read_compressed_image(raw, bag.ros1)
                item = (c.stamp_ns, c.data, len(c.data))
            else:
                bag.deserialize(raw, ty)
                continue
            if digest:
                out.append((topic, item[0], xxhash.xxh3_64_hexdigest(item[1])))
    return out


def rosbags_pass(bag_path: Path, digest: bool = False) -> list:
    """rosbags' own loop: AnyReader, every message deserialised."""
    from rosbags.highlevel import AnyReader

    out = []
    with AnyReader([bag_path]) as reader:
        for conn, _, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            if digest and conn.msgtype in (POINTS, IMAGES):
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                out.append((conn.topic, stamp, xxhash.xxh3_64_hexdigest(np.ascontiguousarray(msg.data))))
    return out


def test_outputs_agree(drive_bag):
    _, bag, _ = drive_bag
    ours, theirs = fathom_pass(bag, digest=True), rosbags_pass(bag, digest=True)
    assert len(ours) > 0 and sorted(ours) == sorted(theirs)


@pytest.mark.parametrize("role", ["fathom", "peer"])
def test_container_pass(benchmark, drive_bag, role):
    _, bag, size = drive_bag
    run = fathom_pass if role == "fathom" else rosbags_pass
    benchmark.group = "rosbag_container_pass"
    benchmark.extra_info.update(role=role, items=size, unit="B of bag")
    if role == "fathom":
        benchmark.extra_info.update(
            summary=lambda s: f"{STORAGE} bag of {size / 1e6:.0f} MB: {size / s / 1e6:.0f} MB/s "
                              f"(goal >= 300 MB/s: {'met' if size / s >= 300e6 else 'NOT met'})")
    benchmark.pedantic(run, args=(bag,), rounds=3, iterations=1, warmup_rounds=1)


def test_bag_to_raw_log(benchmark, drive_bag, tmp_path):
    log, bag, size = drive_bag
    frames = len(json.loads((log / "log.json").read_text())["frames"])
    benchmark.group = "rosbag_to_raw_log"
    benchmark.extra_info.update(role="fathom", summary=lambda s: f"{frames} frames, {size / 1e6:.0f} MB of {STORAGE} "
                                                                 f"bag in {s:.2f} s: {frames / s:.1f} frames/s, "
                                                                 f"{size / s / 1e6:.0f} MB/s")
    result = benchmark.pedantic(bag_to_raw_log, args=(bag, tmp_path / "log", BagOptions()), rounds=1, iterations=1)
    assert result.frames == frames and not result.issues


@pytest.mark.parametrize("role", ["fathom", "peer"])
def test_prepare_from_bag(benchmark, drive_bag, tmp_path, role):
    log, bag, _ = drive_bag
    scene = tmp_path / "scene"
    files = [bag] if bag.is_file() else sorted(p for p in bag.iterdir() if p.is_file())

    def fresh():
        shutil.rmtree(scene, ignore_errors=True)
        for f in files:  # a bag that changed: its first pass is run again, not taken from the process's cache
            st = f.stat()
            os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
        return (), {}

    def from_bag():
        return prepare(bag, scene, options=PrepareOptions(rosbag=BagOptions()), workers=WORKERS)

    def from_log():
        return prepare(log, scene, workers=WORKERS)

    benchmark.group = "prepare_from_bag"
    benchmark.extra_info.update(role=role, **({"goal": 0.91} if role == "fathom" else {}))
    summary = benchmark.pedantic(from_bag if role == "fathom" else from_log, setup=fresh, rounds=2, iterations=1,
                                 warmup_rounds=1)
    assert not summary.failed and summary.prepared == summary.frames
