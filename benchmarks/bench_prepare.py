"""End-to-end ``fathom prepare`` on the synthetic road log, against real time.

The log: the rig's ``road`` preset (two LiDARs, ~170 k points per frame; six 1920×1080
cameras) at 10 Hz for ``FATHOM_BENCH_DRIVE_S`` seconds (default 20, as the issue asks), on
``FATHOM_BENCH_WORKERS`` local workers (default 2, the target machine's cores): threads, or
spawned processes with ``FATHOM_BENCH_PROCESSES=1``. Goals, for the frames (the scene map
off): ≥ 2.5× real time with colourisation (and per-camera visibility), ≥ 5× without cameras
(LiDAR only: no colour, no visibility column). A third run adds the scene map (``prepare``'s
default for a LiDAR log: the whole-sequence map, its octree and COPC file, built once the
frames are done), reported without a goal; ``bench_map.py`` times the map's build alone.

``FATHOM_BENCH_OUT`` names the directory the scenes are written to (default: pytest's
``tmp_path``); the summary names its filesystem. Without colour the job writes ~0.9 GB per 20 s
of log and makes it durable before returning, so on a slow disk the disk, not the CPU, sets
the pace: compare a run on ``/dev/shm`` (RAM) to see the compute alone.

Timed: the whole ``prepare`` call, including its final ``finalize`` (the one sync that makes
every frame durable before the manifest names it); untimed: an ``os.sync()`` before it, so
that dirty pages of earlier work (the render, the other variant) are not flushed inside it.

The stage profile printed is ms per frame and worker summed over the run, so it includes
the first frame's kernel loads (and, with processes, each spawned worker's imports, numba
cache loads and pyarrow initialisation: seconds under load); ``finalize`` is the job's final sync and manifest,
divided by the frames. Bytes per frame are given by file and, for the first frame's points
file, by column (as stored: quantised positions, narrow integer columns); bytes per point are
the points files' and, separately, the level-of-detail rows files' bytes over the frames'
full-resolution points.

Rendering the log is not timed and takes long (about 12 s per second of drive on 2 busy cores),
so the rendered log is kept under ``benchmarks/.cache/`` and reused by later runs; delete
that folder to render afresh.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from formats.raw_log import read_log
from formats.scene_store import Scene
from server.prepare import PrepareOptions, prepare
from server.simulate import write_road_log

DRIVE_S = float(os.environ.get("FATHOM_BENCH_DRIVE_S", "20"))
WORKERS = int(os.environ.get("FATHOM_BENCH_WORKERS", "2"))
PROCESSES = os.environ.get("FATHOM_BENCH_PROCESSES", "0") == "1"
OUT_DIR = os.environ.get("FATHOM_BENCH_OUT")  # where scenes are written (default: pytest's tmp_path)
CACHE = Path(__file__).resolve().parent / ".cache"
SEED = 1


def cached_road_log(duration_s: float, seed: int = SEED) -> Path:
    """The rendered road log of ``duration_s`` seconds, rendered once and kept in :data:`CACHE`."""
    final = CACHE / f"road-seed{seed}-{duration_s:g}s"
    if (final / "log.json").is_file():
        return final
    partial = CACHE / f".{final.name}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    write_road_log(partial, seed=seed, duration_s=duration_s, preset="road")
    os.replace(partial, final)  # log.json exists only once the whole log is rendered
    return final


def bytes_per_frame(scene_dir: Path) -> dict[str, float]:
    """Mean bytes per frame of each kind of file the scene stores, and the first frame's
    points file by column (its buffers' bytes; the rest is IPC framing)."""
    scene = Scene.open(scene_dir)
    n = len(scene.frames)
    out = {"points": sum(f.points.bytes for f in scene.frames) / n}
    for level in range(1, 1 + max((len(f.lods) for f in scene.frames), default=0)):
        out[f"lod{level}"] = sum(f.lods[level - 1].bytes for f in scene.frames if len(f.lods) >= level) / n
    out["images"] = sum(sum(i.bytes for i in f.images.values()) for f in scene.frames) / n
    out["boxes"] = sum(f.boxes.bytes for f in scene.frames if f.boxes) / n
    out["total"] = sum(out.values())
    table = scene.stored_points(scene.frames[0].index)
    out.update({f"points.{c}": table[c].nbytes for c in table.column_names})
    return out


def bytes_per_point(scene_dir: Path) -> dict[str, float]:
    """Bytes on disk per full-resolution point: the points files, and the level-of-detail rows
    files (4 bytes per row of a level) as their own share."""
    scene = Scene.open(scene_dir)
    n = sum(f.n_points for f in scene.frames)
    return {"points": sum(f.points.bytes for f in scene.frames) / n,
            "lod_rows": sum(l.bytes for f in scene.frames for l in f.lods) / n}


def filesystem(path: Path) -> str:
    """The type of the filesystem holding ``path`` (the mount with the longest matching prefix
    in /proc/mounts), e.g. ``ext4`` or ``tmpfs``; ``unknown`` where that cannot be read."""
    path.mkdir(parents=True, exist_ok=True)
    real = str(path.resolve())
    try:
        mounts = [line.split()[1:3] for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = max((m for m in mounts if real == m[0] or real.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return f"{best[1]} ({best[0]})" if best else "unknown"


@pytest.fixture(scope="module")
def road_log() -> Path:
    return cached_road_log(DRIVE_S)


@pytest.mark.parametrize("colour, with_map", [(True, False), (False, False), (False, True)],
                         ids=["with-colour", "no-colour", "no-colour-and-map"])
def test_prepare_road_log(benchmark, road_log, tmp_path, colour, with_map):
    frames = len(read_log(road_log).frames)
    out = (Path(OUT_DIR) / f"bench-prepare-{os.getpid()}-{colour}-{with_map}" if OUT_DIR else tmp_path) / "scene"
    options = PrepareOptions(colorize=colour, visibility=colour, map=with_map)

    def fresh():
        shutil.rmtree(out, ignore_errors=True)
        os.sync()  # start with no dirty pages of earlier work (the render, the other variant)
        return (), {}

    def run():
        return prepare(road_log, out, options=options, workers=WORKERS, processes=PROCESSES)

    benchmark.group = f"prepare_road_{'colour' if colour else 'no_colour'}{'_and_map' if with_map else ''}"
    goal = 2.5 if colour else None if with_map else 5.0
    stages: dict[str, float] = {}  # ms of one worker per frame, filled after the run

    def line(s: float) -> str:
        profile = ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
        sizes = ", ".join(f"{k} {v / 1e6:.2f}" for k, v in benchmark.extra_info.get("bytes_per_frame", {}).items())
        per_point = ", ".join(f"{k} {v:.2f}" for k, v in benchmark.extra_info.get("bytes_per_point", {}).items())
        return (f"{frames} frames in {s:.1f} s on {WORKERS} {'processes' if PROCESSES else 'threads'}, "
                f"written to {benchmark.extra_info['filesystem']} = "
                f"{frames / s:.2f} frames/s, "
                f"{DRIVE_S / s:.2f}x real time"
                + (f" (goal >= {goal:g}x: {'met' if DRIVE_S / s >= goal else 'NOT met'})" if goal else "") + "; "
                f"ms per frame and worker: {profile} (finalize: the job's, per frame); MB per frame: {sizes}; "
                f"bytes per point: {per_point}")

    benchmark.extra_info.update(role="fathom", frames=frames, drive_s=DRIVE_S, workers=WORKERS, summary=line,
                                filesystem=filesystem(out.parent))
    summary = benchmark.pedantic(run, setup=fresh, rounds=1, iterations=1)
    assert summary.prepared == frames and not summary.failed
    stages.update({k: 1e3 * v / frames for k, v in summary.stage_seconds.items()})
    stages["total"] = sum(stages.values())
    benchmark.extra_info["stage_ms_per_frame"] = dict(stages)
    benchmark.extra_info["bytes_per_frame"] = bytes_per_frame(out)
    benchmark.extra_info["bytes_per_point"] = bytes_per_point(out)
    if OUT_DIR:
        shutil.rmtree(out.parent, ignore_errors=True)
