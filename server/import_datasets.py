"""``fathom import``: a dataset as its devkit lays it out → Fathom raw logs, one per scene.

Sources and what ``SRC`` and ``--scene`` name (without ``--scene``, every scene found):

- ``nuscenes``: SRC the dataroot (holding ``v1.0-*/``; ``--version`` picks one when there are
  several); a scene is a scene name (``scene-0061``)
- ``kitti``: SRC the tracking root (``training/``, ``testing/``; ``--split``); a scene is a
  sequence number (``3`` or ``0003``)
- ``kitti-object``: SRC the object root (``training/``, ``testing/``; ``--split``); a scene is a
  frame number (``7`` or ``000007``); ``--layout sequence`` makes the chosen frames one log
- ``kitti-raw``: SRC a day directory (``2011_09_26/`` with its calibration files); a scene is a
  drive (``2011_09_26_drive_0001_sync``)
- ``av2``: SRC one sensor log, or a directory of logs; a scene is a log id
- ``pandaset``: SRC one sequence (``002/``), or the dataset root; a scene is a sequence (``002``)
- ``sfs``: SRC one ``.sfs`` file, or a directory of them; a scene is a file name without ``.sfs``
- ``scale-legacy``: SRC the directory of LidarFrame JSON files (``--annotations`` for the
  cuboids); no scenes
- ``rosbag``: SRC a ROS 1 ``.bag``, a ROS 2 bag directory (sqlite3 or MCAP) or its
  ``.db3``/``.mcap`` file (``formats.ros``; ``--topics``, ``--reference-sensor``,
  ``--frame-rate``, ``--pose-topic``, ``--base-frame``, ``--topic-option``); no scenes

One scene is written to ``--out`` itself; several go to ``--out/NAME`` each. A scene that fails
(a :class:`~formats.errors.FormatError` naming the file and field) is reported and the others
are still imported.
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, TextIO

from formats.errors import FormatError
from formats.raw_log import read_log

SOURCES = ("nuscenes", "kitti", "kitti-object", "kitti-raw", "av2", "pandaset", "sfs", "scale-legacy", "rosbag")


@dataclass(frozen=True)
class ImportOptions:
    """What the command line passes through to the importers."""

    version: str | None = None  # nuscenes
    split: str = "training"  # kitti, kitti-object
    layout: str = "per_frame"  # kitti-object: one log per frame, or "sequence"
    annotations: Path | None = None  # scale-legacy
    images: bool = True
    rosbag: Any = None  # rosbag: a formats.ros.BagOptions (None: its defaults)


@dataclass(frozen=True)
class Job:
    """One scene to import: its name (the raw log's directory name when there are several)
    and the importer call writing it into a given directory."""

    name: str
    run: Callable[[Path], Path]


@dataclass
class ImportSummary:
    """What an import did (printed at its end)."""

    done: list[tuple[str, Path, int, int]] = field(default_factory=list)  # name, log, frames, tracks
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"imported {len(self.done)} of {len(self.done) + len(self.failed)} scenes "
               f"({len(self.failed)} failed) in {self.seconds:.1f} s"]
        out += [f"  {name} FAILED: {error}" for name, error in self.failed]
        return out


def _only(names: list[str], wanted: list[str] | None, what: Path) -> list[str]:
    if not wanted:
        if not names:
            raise FormatError(what, None, "at least one scene to import")
        return names
    missing = [w for w in wanted if w not in names]
    if missing:
        raise FormatError(what, None, f"the scenes {missing} (found {names[:20]})")
    return list(wanted)


def _subdirs_with(src: Path, marker: str) -> list[Path]:
    """``src`` itself if it holds ``marker``, else its sub-directories that do."""
    if (src / marker).exists():
        return [src]
    return sorted(p for p in src.iterdir() if (p / marker).exists()) if src.is_dir() else []


def _nuscenes(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_nuscenes import import_nuscenes_scene, load_tables

    versions = sorted(p.name for p in src.glob("v1.0-*") if p.is_dir())
    version = o.version or (versions[0] if len(versions) == 1 else None)
    if version is None:
        raise FormatError(src, None, f"one v1.0-* table directory or --version (found {versions})")
    names = [s["name"] for s in load_tables(src, version)["scene"].values()]
    return [Job(n, lambda out, n=n: import_nuscenes_scene(src, version, n, out, images=o.images))
            for n in _only(names, scenes, src / version / "scene.json")]


def _kitti(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_kitti import import_kitti_tracking

    base = src / o.split / "velodyne"
    names = sorted(p.name for p in base.iterdir() if re.fullmatch(r"\d{4}", p.name)) if base.is_dir() else []
    wanted = None if not scenes else [f"{int(s):04d}" if s.isdigit() else s for s in scenes]
    return [Job(f"kitti-{n}", lambda out, n=n: import_kitti_tracking(src, int(n), out, split=o.split,
                                                                     images=o.images))
            for n in _only(names, wanted, base)]


def _kitti_object(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_kitti_object import LAYOUTS, import_kitti_object

    if o.layout not in LAYOUTS:
        raise ValueError(f"--layout must be one of {LAYOUTS}, got {o.layout!r}")
    base = src / o.split / "velodyne"
    names = sorted(p.stem for p in base.glob("*.bin") if re.fullmatch(r"\d{6}", p.stem)) if base.is_dir() else []
    wanted = _only(names, None if not scenes else [f"{int(s):06d}" if s.isdigit() else s for s in scenes], base)

    def run(out: Path, frames: list[str]) -> Path:
        [log] = import_kitti_object(src, out, split=o.split, frames=[int(n) for n in frames], layout="sequence",
                                    images=o.images)
        return log

    if o.layout == "sequence":
        return [Job(f"kitti-object-{o.split}", lambda out: run(out, wanted))]
    return [Job(f"kitti-object-{n}", lambda out, n=n: run(out, [n])) for n in wanted]


def _kitti_raw(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_kitti import import_kitti_raw

    names = sorted(p.name for p in src.glob("*_sync") if p.is_dir())
    return [Job(n, lambda out, n=n: import_kitti_raw(src, n, out, images=o.images)) for n in _only(names, scenes, src)]


def _av2(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_av2 import import_av2_log

    logs = {p.name: p for p in _subdirs_with(src, "city_SE3_egovehicle.feather")}
    return [Job(n, lambda out, n=n: import_av2_log(logs[n], out, images=o.images))
            for n in _only(sorted(logs), scenes, src)]


def _pandaset(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_pandaset import import_pandaset

    seqs = {p.name: p for p in _subdirs_with(src, "lidar")}
    return [Job(f"pandaset-{n}", lambda out, n=n: import_pandaset(seqs[n], out, images=o.images))
            for n in _only(sorted(seqs), scenes, src)]


def _sfs(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_sfs import import_sfs

    files = {p.stem: p for p in ([src] if src.is_file() else sorted(src.glob("*.sfs")))}
    return [Job(n, lambda out, n=n: import_sfs(files[n], out)) for n in _only(sorted(files), scenes, src)]


def _scale_legacy(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from formats.import_scale_legacy import import_scale_legacy

    if scenes:
        raise ValueError("scale-legacy imports one directory of frames: --scene does not apply")
    return [Job(src.name, lambda out: import_scale_legacy(src, out, annotations=o.annotations, images=o.images))]


def _rosbag(src: Path, scenes: list[str] | None, o: ImportOptions) -> list[Job]:
    from dataclasses import replace

    from formats.ros import BagOptions, bag_name, bag_to_raw_log, is_bag

    if scenes:
        raise ValueError("rosbag imports one bag as one log: --scene does not apply (choose topics with --topics)")
    if not is_bag(src):
        raise FormatError(src, None,
                          "a ROS bag: a .bag, .db3 or .mcap file, or a ROS 2 bag directory with metadata.yaml")
    options = replace(o.rosbag or BagOptions(), images=o.images)

    def run(out: Path) -> Path:
        result = bag_to_raw_log(src, out, options)
        for line in result.lines():  # the pose source, then every gap, jump and unreadable message
            sys.stderr.write(f"  {line}\n")
        return result.log_dir

    return [Job(bag_name(src), run)]


_JOBS: dict[str, Callable[[Path, list[str] | None, ImportOptions], list[Job]]] = {
    "nuscenes": _nuscenes, "kitti": _kitti, "kitti-object": _kitti_object, "kitti-raw": _kitti_raw,
    "av2": _av2, "pandaset": _pandaset, "sfs": _sfs, "scale-legacy": _scale_legacy, "rosbag": _rosbag,
}


def import_jobs(source: str, src: str | Path, scenes: list[str] | None = None,
                options: ImportOptions = ImportOptions()) -> list[Job]:
    """The scenes of ``src`` to import as ``source`` (see the module docstring); ValueError
    for an unknown source, FormatError when ``src`` holds none of the asked scenes."""
    if source not in _JOBS:
        raise ValueError(f"unknown source {source!r}; one of {', '.join(SOURCES)}")
    src = Path(src)
    if not src.exists():
        raise FormatError(src, None, f"a {source} dataset (no such file or directory)")
    return _JOBS[source](src, scenes, options)


def run_imports(jobs: list[Job], out: str | Path, stream: TextIO | None = None) -> ImportSummary:
    """Run ``jobs`` into ``out`` (one job) or ``out/NAME`` (several), printing a line per scene
    to ``stream``; a failing scene is recorded and the others go on."""
    start = time.perf_counter()
    summary = ImportSummary()
    for i, job in enumerate(jobs, 1):
        log_dir = Path(out) if len(jobs) == 1 else Path(out) / job.name
        t0 = time.perf_counter()
        try:
            log = read_log(job.run(log_dir))
        except (FormatError, ValueError, OSError) as exc:
            summary.failed.append((job.name, str(exc)))
            line = f"[{i}/{len(jobs)}] {job.name} FAILED: {exc}"
        else:
            n_tracks = len(log.labels())
            summary.done.append((job.name, log_dir, len(log.frames), n_tracks))
            line = (f"[{i}/{len(jobs)}] {job.name} → {log_dir}: {len(log.frames)} frames, {n_tracks} label tracks "
                    f"({time.perf_counter() - t0:.1f} s)")
        if stream is not None:
            stream.write(line + "\n")
            stream.flush()
    summary.seconds = time.perf_counter() - start
    return summary
