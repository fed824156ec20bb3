"""``fathom prepare``: raw log → prepared scene, frame by frame, resumable, in parallel.

Per frame: decode each LiDAR sweep → move every point to the world frame with the ego pose
at its own firing time (deskew and world transform in one pass, ``engine.motion``) →
project into every camera at its exposure time, z-buffer (the ``camera_mask`` column: bit k
= camera k of the log's camera list sees the point) and colour from the most frontal camera
→ label boxes of a labelled log interpolated at the frame timestamp (the frame's boxes file,
world and ego frame) and each point's ``box_id`` → level-of-detail voxel grids → the radar
scans of a log with radars, each moved to the world frame at its own scan time with its radial
velocity compensated for the ego's motion (``engine.radar``; the frame's radar file, apart
from the points) → write atomically into the scene store. Frames are independent, so they run on local threads
(``workers``; every heavy step — numba kernels, Arrow, hashing, file writes, JPEG decoding —
releases the GIL, and threads start at once where a spawned process spends seconds importing
and loading kernels), local processes (``processes=True``) or a dask.distributed cluster;
the output is byte-identical either way.
The scene is named after its directory (``scene_dir``'s name is its id). A labelled log's
tracks are also kept whole in the scene (``imported_labels``), from which the server starts
the scene's label history (:mod:`server.imported_labels`).
Finished frames are skipped on a rerun; a frame that fails is reported and the others
complete.

``box_id``: a point belongs to the box of a track at the point's own firing time. The
frame's points are grouped by firing time in steps of ``box_time_step_ns``; each group is
tested against the boxes interpolated at the middle of its step, inflated by
``box_margin_m`` (a LiDAR return lies *on* the surface it hit, so the deskew error of a few
millimetres and the motion within half a step would otherwise drop half of them). Only
tracks that exist at the frame timestamp (the boxes file) are used; ``box_id`` is the row of
the boxes file.

The map (``options.map``; by default for a log with a LiDAR): once the frames are finalized,
the whole sequence's points in one level-of-detail octree per layer, ego vehicle and moving
objects removed, duplicates merged, also as COPC (:func:`server.scene_map.build_scene_map`;
``SCENE_DIR/map/``), resumable like the frames and kept while the scene does not change.

The passive layers (a log with hydrophone arrays): each array's bearing-time record over its
whole recording (:mod:`server.prepare_passive`), computed after the frames and written with
the manifest; an array that cannot be beamformed is left out with a line in the summary.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field, replace
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pyarrow as pa

from engine.cuda import Device, resolve, use_device
from engine.frame_stages import frame_stages
from engine.pose_track import PoseTrack
from engine.radar import radar_to_world
from formats.jpeg import decode_jpeg, scaled_camera
from formats.radar import read_radar
from formats.raw_log import RawLog, labels_document, read_log
from formats.ros.options import BagOptions
from formats.ros.source import bag_log
from formats.scene_store import (
    MAX_CAMERAS,
    NAME_RULE,
    FrameEntry,
    Lidar,
    SceneWriter,
    points_table,
    radar_table,
    valid_name,
)
from formats.video_log import store_videos, video_images
from server.frame_points import world_points
from server.label_boxes import LabelTracks, boxes_at, firing_time_query
from server.prepare_passive import PassiveOptions, passive_records
from server.scene_map import MapOptions, MapSummary, build_scene_map, sonar_sensors


@dataclass(frozen=True)
class PrepareOptions:
    """What a prepared frame contains.

    Attributes:
        colorize: colour points from the camera images.
        colour_min_width_px: images at least twice this wide are decoded at half size for
            colour (libjpeg-turbo scales while decoding, far cheaper than a full decode);
            visibility is always computed at full resolution.
        visibility: the per-camera ``camera_mask`` column (z-buffered visibility).
        lod_voxel_m: voxel sizes of the level-of-detail grids (level 1, 2, ...), metres.
        quantum_m: step of the int32 quantised positions.
        box_margin_m: tolerance of the ``box_id`` test (added to every half-extent), metres.
        box_time_step_ns: firing-time step at which boxes are interpolated for ``box_id``.
        device: where the per-point work runs (deskew, projection, z-buffer, colour, box ids,
            levels of detail): ``"cpu"``, ``"cuda"`` (a GPU, with each frame's data kept on it;
            :class:`engine.cuda.CudaUnavailableError` without one) or ``"auto"`` (CUDA where a
            GPU is usable); :func:`prepare` resolves it once for the job. The output is the
            same to within the GPU backend's stated bounds (``engine.cuda``).
        map: build the scene's map after the frames (None: when the log has a LiDAR, not
            for a sonar-only log). map_options: what the map keeps (:class:`MapOptions`).
        passive: each hydrophone array's bearing-time record (:mod:`server.prepare_passive`).
        rosbag: the input is a ROS bag read directly with these options (no raw log written:
            :mod:`formats.ros.source`); None: a raw log.
    """

    colorize: bool = True
    colour_min_width_px: int = 960
    visibility: bool = True
    lod_voxel_m: tuple[float, ...] = (0.2, 0.5)
    quantum_m: float = 1e-3
    box_margin_m: float = 0.02
    box_time_step_ns: int = 1_000_000
    device: Device = "cpu"
    map: bool | None = None
    map_options: MapOptions = field(default_factory=MapOptions)
    passive: PassiveOptions = field(default_factory=PassiveOptions)
    rosbag: BagOptions | None = None


@dataclass(frozen=True)
class FrameResult:
    """One frame's outcome; ``entry`` is what was written (its files' hashes), ``stages``
    the seconds spent per pipeline stage."""

    index: int
    ok: bool
    skipped: bool = False
    n_points: int = 0
    seconds: float = 0.0
    error: str = ""
    entry: FrameEntry | None = None
    stages: dict[str, float] = field(default_factory=dict)


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
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over frames; "finalize" once
    map: MapSummary | None = None
    notes: list[str] = field(default_factory=list)  # e.g. a passive layer left out, and why

    def lines(self) -> list[str]:
        rate = self.prepared / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"scene {self.scene_dir}: {self.frames} frames, {self.prepared} prepared, "
            f"{self.skipped} already finished, {len(self.failed)} failed; {self.points} points; "
            f"{self.seconds:.1f} s ({rate:.2f} frames/s)"
        ]
        out += [f"  frame {r.index} FAILED: {r.error}" for r in self.failed] + self.notes
        return out + (self.map.lines() if self.map is not None else [])


def scene_writer(log: RawLog, scene_dir: Path, durable: bool = False) -> SceneWriter:
    """The writer of ``log``'s scene in ``scene_dir``; the scene id is the directory's name."""
    if not valid_name(scene_dir.name):
        raise ValueError(f"scene directory {str(scene_dir)!r}: a scene is served under its directory's name, "
                         f"which must be {NAME_RULE}; choose another --out")
    if len(log.cameras) > MAX_CAMERAS:
        raise ValueError(f"log {log.log_id!r} has {len(log.cameras)} cameras; a scene holds at most "
                         f"{MAX_CAMERAS} (camera_mask is a uint32 bit mask)")
    return SceneWriter(
        scene_dir, scene_id=scene_dir.name, origin=log.origin,
        lidars=[Lidar(l.name, l.ego_from_sensor) for l in log.lidars], cameras=log.cameras, durable=durable,
        radars=[Lidar(r.name, r.ego_from_sensor) for r in log.radars],
    )


@dataclass(frozen=True, eq=False)
class _Job:
    """What every frame of one job shares (built once per process)."""

    log: RawLog
    track: PoseTrack
    writer: SceneWriter
    labels: LabelTracks | None


@lru_cache(maxsize=4)
def _frame_times(log: RawLog) -> np.ndarray:
    return np.array([f.timestamp_ns for f in log.frames], np.int64)


def read_source(log_dir: str | os.PathLike, rosbag: BagOptions | None = None) -> RawLog:
    """The raw log at ``log_dir``, or with ``rosbag`` the bag at ``log_dir`` read directly
    (:func:`formats.ros.source.bag_log`, its first pass once per process)."""
    return read_log(log_dir) if rosbag is None else bag_log(log_dir, rosbag)[0]


_jobs: dict[tuple[str, str, bool, int], _Job] = {}
_jobs_lock = threading.Lock()


def _job(log_dir: str, scene_dir: str, durable: bool, rosbag: BagOptions | None) -> _Job:
    """The job's shared state, built once per process (the last few jobs kept); a bag's
    job is its log's, which is new when the bag changes (:func:`formats.ros.source.bag_log`)."""
    bag = None if rosbag is None else bag_log(log_dir, rosbag)[0]
    key = (log_dir, scene_dir, durable, 0 if bag is None else id(bag))
    with _jobs_lock:
        if key not in _jobs:
            log = read_log(log_dir) if bag is None else bag
            tracks, track = log.labels(), log.world_from_ego()
            while len(_jobs) >= 4:
                del _jobs[next(iter(_jobs))]
            _jobs[key] = _Job(log, track, scene_writer(log, Path(scene_dir), durable),
                              LabelTracks.from_tracks(tracks, track) if tracks else None)
        return _jobs[key]


def _radar_table(log: RawLog, track: PoseTrack, index: int, options: PrepareOptions) -> pa.Table | None:
    """Frame ``index``'s radar scans as the scene's radar table (None without any): each read
    in its sensor frame, moved to the world frame at its scan time and its radial velocity
    compensated (:func:`engine.radar.radar_to_world`); ``sensor_id`` = position in ``log.radars``."""
    frame = log.frames[index]
    columns: tuple[list[np.ndarray], ...] = ([], [], [], [], [], [])  # radar_table's arguments in order
    for k, radar in enumerate(log.radars):
        if radar.name in frame.radar:
            path, t_ns = frame.radar[radar.name]
            sweep = read_radar(path, radar.format, timestamp_ns=t_ns)
            xyz, comp = radar_to_world(sweep, track, radar.ego_from_sensor)
            n = len(sweep)
            for column, value in zip(columns, (xyz, sweep.radial_velocity_mps, comp, sweep.rcs_dbsm,
                                               np.full(n, k, np.uint8), np.full(n, t_ns - frame.timestamp_ns))):
                column.append(value)
    if not columns[0]:
        return None
    return radar_table(*(np.concatenate(c) for c in columns), quantum_m=options.quantum_m)


def prepare_frame(log_dir: str, scene_dir: str, index: int, options: PrepareOptions, durable: bool = False
                  ) -> FrameResult:
    """Prepare frame ``index`` of the log into the scene; never raises (errors are reported).
    ``durable``: fsync the frame's files before its sidecar (``SceneWriter(durable=True)``)."""
    start = time.perf_counter()
    stages: dict[str, float] = {}
    clock = [start]

    def lap(name: str) -> None:
        now = time.perf_counter()
        stages[name] = stages.get(name, 0.0) + now - clock[0]
        clock[0] = now

    try:
        job = _job(log_dir, scene_dir, durable, options.rosbag)
        log, track = job.log, job.track
        frame = log.frames[index]
        with use_device(options.device):  # the deskew, on the job's device
            columns = world_points(log, track, index)
        xyz = columns.pop("xyz")
        fused = frame_stages(xyz, columns["time_offset_ns"], options.device)
        lap("points")
        image_times, jpegs, image_paths = {}, {}, {}
        for cam in log.cameras:
            if cam.name in frame.images:
                path, t_ns = frame.images[cam.name]
                jpegs[cam.name] = path.read_bytes()
                image_times[cam.name] = t_ns
                image_paths[cam.name] = path
        for video in log.videos:  # the video frame nearest the frame's middle (formats.video_log)
            for name, (data, t_ns) in video_images((video,), _frame_times(log), index).items():
                jpegs[name], image_times[name], image_paths[name] = data, t_ns, video.path
        lap("read_images")
        bits = [k for k, c in enumerate(log.cameras) if c.name in jpegs]
        if bits and (options.colorize or options.visibility):
            cams = [log.cameras[k] for k in bits]
            fused.project(cams, world_from_ego=track, camera_times_ns=np.array([image_times[c.name] for c in cams]))
            lap("projection")
            fused.zbuffer()
            lap("zbuffer")
            if options.visibility:
                fused.camera_mask(bits)
                lap("camera_mask")
            if options.colorize:
                scales = [(1, 2) if c.intrinsics.width >= 2 * options.colour_min_width_px else (1, 1) for c in cams]
                images = [decode_jpeg(jpegs[c.name], image_paths[c.name], scale=sc) for c, sc in zip(cams, scales)]
                lap("decode_jpeg")
                # the images' cameras; the projection's pixels move to them (u' = s (u + 0.5) - 0.5)
                fused.colorize([c if num == denom else scaled_camera(c, (num, denom))[0]
                                for c, (num, denom) in zip(cams, scales)],
                               images, [num / denom for num, denom in scales])
                lap("colorize")
        elif options.visibility:
            columns["camera_mask"] = np.zeros(len(xyz), np.uint32)
        boxes = None
        if job.labels is not None:
            boxes, rows = boxes_at(job.labels, frame.timestamp_ns)
            fused.box_ids(**firing_time_query(job.labels, boxes, rows, columns["time_offset_ns"],
                                              options.box_time_step_ns, options.box_margin_m))
            lap("labels")
        fused.lods(options.lod_voxel_m)
        lap("lod")
        columns.update(fused.fetch())
        lods = columns.pop("lods")
        lap("fetch")
        table = points_table(xyz, quantum_m=options.quantum_m, **columns)
        lap("points_table")
        radar = _radar_table(log, track, index, options) if log.radars else None
        lap("radar")
        entry = job.writer.write_frame(index, frame.timestamp_ns, track.at(frame.timestamp_ns), table, lods,
                                       images=jpegs, image_timestamps_ns=image_times, boxes=boxes, radar=radar)
        lap("write")
        return FrameResult(index, True, n_points=len(xyz), seconds=time.perf_counter() - start, entry=entry,
                           stages=stages)
    except Exception as exc:  # one frame's failure must not stop the job
        detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return FrameResult(index, False, seconds=time.perf_counter() - start, error=detail, stages=stages)


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
    durable: bool = False,
    processes: bool = False,
    progress: Callable[[FrameResult], None] | None = None,
) -> Summary:
    """Prepare one raw log into ``scene_dir``; rerunning skips finished frames.

    ``workers`` > 1 uses local threads, or spawned processes with ``processes``; ``dask`` is
    a scheduler address (``tcp://host:port``) or ``"local"`` for a LocalCluster of
    ``workers`` processes.
    ``durable``: fsync every frame's files as it is written; by default the frames are
    fsynced once, by the final ``finalize`` (see ``formats.scene_store``).
    ``options.device`` is resolved once, here (``"auto"``: CUDA where a GPU is usable).
    """
    options = replace(options, device=resolve(options.device))
    log_dir, scene_dir = str(Path(log_dir).resolve()), str(Path(scene_dir).resolve())
    start = time.perf_counter()
    log = read_source(log_dir, options.rosbag)
    writer = scene_writer(log, Path(scene_dir))
    writer.remove_stale_temporaries()  # left by a killed run; no worker is running yet
    entries = writer.finished_entries()  # verified (digests) once, here
    todo = [i for i in range(len(log.frames)) if i not in entries]
    summary = Summary(Path(scene_dir), frames=len(log.frames), skipped=len(entries))
    report = progress or (lambda r: None)
    for i in sorted(entries):
        report(FrameResult(i, True, skipped=True))
    for result in _run(log_dir, scene_dir, todo, options, workers, dask, durable, processes):
        report(result)
        for name, sec in result.stages.items():
            summary.stage_seconds[name] = summary.stage_seconds.get(name, 0.0) + sec
        if result.ok:
            summary.prepared += 1
            summary.points += result.n_points
            entries[result.index] = result.entry
        else:
            summary.failed.append(result)
    passive_start = time.perf_counter()
    passive, summary.notes = passive_records(log, options.passive)  # whole recordings, not frames
    if log.hydrophones:
        summary.stage_seconds["passive"] = time.perf_counter() - passive_start
    finalize_start = time.perf_counter()
    tracks = log.labels()
    # the commit point: fsyncs the frames (and the log's labels and passive layers), then the manifest
    writer.finalize(known=entries, imported_labels=labels_document(tracks) if tracks else None, passive=passive)
    store_videos(log.videos, scene_dir)  # SCENE_DIR/videos/: what the video route serves
    summary.stage_seconds["finalize"] = time.perf_counter() - finalize_start
    sonars = sonar_sensors(log)
    if options.map if options.map is not None else len(sonars) < len(log.lidars):
        map_start = time.perf_counter()
        summary.map = build_scene_map(scene_dir, sonar_sensors=sonars, options=options.map_options,
                                      track=log.world_from_ego())
        summary.stage_seconds["map"] = time.perf_counter() - map_start
    summary.failed.sort(key=lambda r: r.index)
    summary.seconds = time.perf_counter() - start
    return summary


def _start_worker(threads: int) -> None:
    """Workers share the cores: each runs its numba kernels on ``threads`` threads (the
    workers, not numba's threads, are the unit of parallelism)."""
    import numba

    numba.set_num_threads(threads)


def _run(log_dir: str, scene_dir: str, todo: Sequence[int], options: PrepareOptions, workers: int,
         dask: str | None, durable: bool, processes: bool) -> Iterable[FrameResult]:
    if dask is not None:
        yield from _run_dask(log_dir, scene_dir, todo, options, workers, dask, durable)
    elif workers > 1 and processes:
        yield from _run_processes(log_dir, scene_dir, todo, options, workers, durable)
    elif workers > 1:
        yield from _run_threads(log_dir, scene_dir, todo, options, workers, durable)
    else:
        for i in todo:
            yield prepare_frame(log_dir, scene_dir, i, options, durable)


def _run_dask(log_dir: str, scene_dir: str, todo: Sequence[int], options: PrepareOptions, workers: int,
              dask: str, durable: bool) -> Iterable[FrameResult]:
    from distributed import Client, LocalCluster, as_completed

    cluster = LocalCluster(n_workers=max(workers, 1), threads_per_worker=1, processes=True,
                           dashboard_address=None) if dask == "local" else None
    client = Client(cluster if cluster is not None else dask)
    try:
        futures = client.map(prepare_frame, [log_dir] * len(todo), [scene_dir] * len(todo), todo,
                             [options] * len(todo), [durable] * len(todo), pure=False)
        for fut in as_completed(futures):
            yield fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _run_threads(log_dir: str, scene_dir: str, todo: Sequence[int], options: PrepareOptions,
                 workers: int, durable: bool) -> Iterable[FrameResult]:
    """``workers`` threads of this process, each running its numba kernels on
    ``cores/workers`` threads (numba's thread count is per calling thread)."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ThreadPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(threads,)) as pool:
        futures = [pool.submit(prepare_frame, log_dir, scene_dir, i, options, durable) for i in todo]
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            for fut in futures:
                fut.cancel()


def _run_processes(log_dir: str, scene_dir: str, todo: Sequence[int], options: PrepareOptions,
                   workers: int, durable: bool) -> Iterable[FrameResult]:
    """``workers - 1`` spawned processes plus this one: this process prepares frames itself
    between collecting results, so no core idles while the others start (a spawned worker
    takes seconds to import and load its kernels). Frames go out in order to the workers,
    which keep two queued each; this process takes them from the end."""
    import numba

    threads = max(1, (os.cpu_count() or 1) // workers)
    queue = deque(todo)
    pending: set = set()
    depth = 2 * (workers - 1)
    own_threads = numba.get_num_threads()
    # spawn, not fork: OpenMP threads of numba kernels do not survive a fork
    with ProcessPoolExecutor(max_workers=workers - 1, mp_context=get_context("spawn"),
                             initializer=_start_worker, initargs=(threads,)) as pool:
        numba.set_num_threads(threads)
        try:
            while queue or pending:
                while queue and len(pending) < depth:
                    pending.add(pool.submit(prepare_frame, log_dir, scene_dir, queue.popleft(), options, durable))
                done = {f for f in pending if f.done()}
                if queue:
                    yield prepare_frame(log_dir, scene_dir, queue.pop(), options, durable)
                elif not done:
                    done = wait(pending, return_when=FIRST_COMPLETED).done
                for fut in done:
                    pending.discard(fut)
                    yield fut.result()
        finally:
            numba.set_num_threads(own_threads)
