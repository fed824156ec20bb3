"""End-to-end ``fathom prepare`` on the synthetic road log, against real time.

The log: the rig's ``road`` preset (two LiDARs, ~170 k points per frame; six 1920×1080
cameras) at 10 Hz for ``FATHOM_BENCH_DRIVE_S`` seconds (default 20). Goal: faster than
real time with colourisation, ≥ 5× real time without. Generating the log is not timed.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from formats.raw_log import read_log
from server.prepare import PrepareOptions, prepare
from server.simulate import write_road_log

DRIVE_S = float(os.environ.get("FATHOM_BENCH_DRIVE_S", "20"))


@pytest.fixture(scope="module")
def road_log(tmp_path_factory) -> Path:
    return write_road_log(tmp_path_factory.mktemp("road-log"), seed=1, duration_s=DRIVE_S, preset="road")


@pytest.mark.parametrize("colour", [True, False], ids=["with-colour", "no-colour"])
def test_prepare_road_log(benchmark, road_log, tmp_path, colour):
    frames = len(read_log(road_log).frames)
    out = tmp_path / "scene"

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        return (), {}

    def run():
        return prepare(road_log, out, options=PrepareOptions(colorize=colour))

    benchmark.group = f"prepare_road_{'colour' if colour else 'no_colour'}"
    goal = 1.0 if colour else 5.0
    benchmark.extra_info.update(
        role="fathom", frames=frames, drive_s=DRIVE_S,
        summary=lambda s: (f"{frames} frames in {s:.1f} s = {frames / s:.2f} frames/s, "
                           f"{DRIVE_S / s:.2f}x real time (goal >= {goal:g}x: "
                           f"{'met' if DRIVE_S / s >= goal else 'NOT met'})"),
    )
    summary = benchmark.pedantic(run, setup=fresh, rounds=1, iterations=1)
    assert summary.prepared == frames and not summary.failed
