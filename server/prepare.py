"""``fathom prepare``: raw log → prepared scene, frame by frame, resumable, in parallel.

Per frame: decode each LiDAR sweep → move every point to the world frame with the ego pose
at its own firing time (deskew and world transform in one pass, ``engine.motion``) →
project into every camera at its exposure time, z-buffer, colour from the most frontal
camera → level-of-detail voxel grids → write atomically into the scene store. Frames are
independent, so they run on local processes (``workers``) or a dask.distributed cluster;
the output is byte-identical either way. Finished frames are skipped on a rerun; a frame
that fails is reported and the others complete.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from engine.colorize import colorize
from engine.projection import project_points
from engine.voxel import voxelize
from engine.zbuffer import zbuffer
from formats.jpeg import decode_jpeg
from formats.raw_log import RawLog, read_log
from formats.scene_store import Lidar, SceneWriter, points_table
from server.frame_points import world_points


@dataclass(frozen=True)
class PrepareOptions:
    """What a prepared frame contains.

    Attributes:
        colorize: colour points from the camera images.
        lod_voxel_m: voxel sizes of the level-of-detail grids (level 1, 2, ...), metres.
        quantum_m: step of the int32 quantised positions.
    """

    colorize: bool = True
    lod_voxel_m: tuple[float, ...] = (0.2, 0.5)
    quantum_m: float = 1e-3


@dataclass(frozen=True)
class FrameResult:
    index: int
    ok: bool
    skipped: bool = False
    n_points: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass
class Summary:
    """What a prepare job did (printed at its end)."""

    scene_dir: Path
    frames: int = 0
    prepared: int = 0
    skipped: int = 0
    failed: list[FrameResult] = field(default_factory=list)
    points: int = 0
    seconds: float = 0.0

    def lines(self) -> list[str]:
        rate = self.prepared / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"scene {self.scene_dir}: {self.frames} frames, {self.prepared} prepared, "
            f"{self.skipped} already finished, {len(self.failed)} failed; {self.points} points; "
            f"{self.seconds:.1f} s ({rate:.2f} frames/s)"
        ]
        out += [f"  frame {r.index} FAILED: {r.error}" for r in self.failed]
        return out


def scene_writer(log: RawLog, scene_dir: Path) -> SceneWriter:
    return SceneWriter(
        scene_dir, scene_id=log.log_id, origin=log.origin,
        lidars=[Lidar(l.name, l.ego_from_sensor) for l in log.lidars], cameras=log.cameras,
    )


@lru_cache(maxsize=4)
def _job(log_dir: str, scene_dir: str):
    """Per process: the parsed log, its pose track and a writer (built once, reused per frame)."""
    log = read_log(log_dir)
    return log, log.world_from_ego(), scene_writer(log, Path(scene_dir))


def prepare_frame(log_dir: str, scene_dir: str, index: int, options: PrepareOptions) -> FrameResult:
    """Prepare frame ``index`` of the log into the scene; never raises (errors are reported)."""
    start = time.perf_counter()
    try:
        log, track, writer = _job(log_dir, scene_dir)
        frame = log.frames[index]
        columns = world_points(log, track, index)
        xyz = columns.pop("xyz")
        images, image_times, jpegs = {}, {}, {}
        for cam in log.cameras:
            if cam.name in frame.images:
                path, t_ns = frame.images[cam.name]
                jpegs[cam.name] = path.read_bytes()
                image_times[cam.name] = t_ns
                if options.colorize:
                    images[cam.name] = decode_jpeg(jpegs[cam.name], path)
        if images:
            cams = [c for c in log.cameras if c.name in images]
            proj = project_points(xyz, cams, world_from_ego=track, frame="world",
                                  camera_times_ns=np.array([image_times[c.name] for c in cams]))
            colors = colorize(proj, zbuffer(proj).visible, cams, [images[c.name] for c in cams])
            columns["rgb"] = colors.colors
        table = points_table(xyz, quantum_m=options.quantum_m, **columns)
        lods = []
        for size in options.lod_voxel_m:
            keep = voxelize(xyz, size).first_index
            lods.append(points_table(xyz[keep], quantum_m=options.quantum_m,
                                     **{k: v[keep] for k, v in columns.items()}))
        writer.write_frame(index, frame.timestamp_ns, track.at(frame.timestamp_ns), table, lods,
                           images=jpegs, image_timestamps_ns=image_times)
        return FrameResult(index, True, n_points=len(xyz), seconds=time.perf_counter() - start)
    except Exception as exc:  # one frame's failure must not stop the job
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return FrameResult(index, False, seconds=time.perf_counter() - start, error=detail)


class Progress:
    """A progress bar with frames/s on a terminal; plain log lines otherwise."""

    def __init__(self, total: int, stream=None) -> None:
        self.total, self.done, self.start = total, 0, time.perf_counter()
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()

    def update(self, result: FrameResult) -> None:
        self.done += 1
        rate = self.done / max(time.perf_counter() - self.start, 1e-9)
        state = "skipped" if result.skipped else ("ok" if result.ok else "FAILED")
        if self.tty:
            width = 30
            fill = int(width * self.done / max(self.total, 1))
            self.stream.write(f"\r[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {rate:.2f} frames/s")
            if self.done == self.total:
                self.stream.write("\n")
        else:
            self.stream.write(f"frame {result.index} {state} ({self.done}/{self.total}, {rate:.2f} frames/s)\n")
        self.stream.flush()


def prepare(
    log_dir: str | os.PathLike,
    scene_dir: str | os.PathLike,
    *,
    options: PrepareOptions = PrepareOptions(),
    workers: int = 1,
    dask: str | None = None,
    progress: Callable[[FrameResult], None] | None = None,
) -> Summary:
    """Prepare one raw log into ``scene_dir``; rerunning skips finished frames.

    ``workers`` > 1 uses local processes; ``dask`` is a scheduler address
    (``tcp://host:port``) or ``"local"`` for a LocalCluster of ``workers`` processes.
    """
    log_dir, scene_dir = str(Path(log_dir).resolve()), str(Path(scene_dir).resolve())
    start = time.perf_counter()
    log = read_log(log_dir)
    writer = scene_writer(log, Path(scene_dir))
    writer.remove_stale_temporaries()  # left by a killed run; no worker is running yet
    finished = writer.finished_frames()
    todo = [i for i in range(len(log.frames)) if i not in finished]
    summary = Summary(Path(scene_dir), frames=len(log.frames), skipped=len(finished))
    report = progress or (lambda r: None)
    for i in sorted(finished):
        report(FrameResult(i, True, skipped=True))
    for result in _run(log_dir, scene_dir, todo, options, workers, dask):
        report(result)
        if result.ok:
            summary.prepared += 1
            summary.points += result.n_points
        else:
            summary.failed.append(result)
    writer.finalize()
    summary.failed.sort(key=lambda r: r.index)
    summary.seconds = time.perf_counter() - start
    return summary


def _run(log_dir: str, scene_dir: str, todo: Sequence[int], options: PrepareOptions, workers: int,
         dask: str | None) -> Iterable[FrameResult]:
    if dask is not None:
        from distributed import Client, LocalCluster, as_completed

        cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                               dashboard_address=None) if dask == "local" else None
        client = Client(cluster if cluster is not None else dask)
        try:
            futures = client.map(prepare_frame, [log_dir] * len(todo), [scene_dir] * len(todo), todo,
                                 [options] * len(todo), pure=False)
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.close()
            if cluster is not None:
                cluster.close()
    elif workers > 1:
        # spawn, not fork: OpenMP threads of numba kernels do not survive a fork
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            futures = [pool.submit(prepare_frame, log_dir, scene_dir, i, options) for i in todo]
            for fut in futures:
                yield fut.result()
    else:
        for i in todo:
            yield prepare_frame(log_dir, scene_dir, i, options)
