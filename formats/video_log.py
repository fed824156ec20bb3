"""Video cameras in a raw log and in a prepared scene.

The raw log's ``videos`` entry makes a declared camera a video stream (its frames then name no
images for it)::

    "videos": [{"camera": "CAM_FRONT", "path": "camera/CAM_FRONT.mp4", "start_ns": T}   # PTS rule
             | {"camera": ..., "path": "camera/CAM_FRONT.mkv", "sidecar": "camera/CAM_FRONT.csv"}
             | {"camera": ..., "path": "camera/rig.mcap", "topic": "/cam_front/video"}]  # MCAP

(:mod:`formats.video` for the time rules, :mod:`formats.video_mcap` for MCAP). ``prepare``
gives each LiDAR frame the video frame nearest the frame's middle: halfway to the next frame's
timestamp (the last frame: its timestamp plus half the previous interval; a one-frame log: its
timestamp), taken only within half the frame's interval of it. The prepared scene keeps the
videos in ``SCENE_DIR/videos/``: each file (hard-linked or copied) and ``CAMERA.json``, its
entry with paths relative to that folder.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Union

import numpy as np

from formats.errors import FormatError, load_json
from formats.video import VideoReader, read_sidecar
from formats.video_mcap import McapVideoReader

VIDEOS_DIR = "videos"
Reader = Union[VideoReader, McapVideoReader]


@dataclass(frozen=True)
class LogVideo:
    """A camera's video: the file, and its time rule (``start_ns``, a ``sidecar`` CSV, or an
    MCAP ``topic``)."""

    camera: str
    path: Path
    start_ns: int | None = None
    sidecar: Path | None = None
    topic: str | None = None


def _inside(root: Path, rel: Any, manifest: Path, what: str) -> Path:
    full = (root / rel).resolve() if isinstance(rel, str) and rel else None
    if full is None or not full.is_relative_to(root):
        raise FormatError(manifest, None, f"{what}: a relative path inside {root.name}/, got {rel!r}")
    return full


def video_from_json(d: Any, root: Path, manifest: Path, what: str) -> LogVideo:
    """A ``videos`` entry (paths resolved inside ``root``); FormatError names the field."""
    if not isinstance(d, dict) or not isinstance(d.get("camera"), str):
        raise FormatError(manifest, None, f"{what}: an object {{camera, path, start_ns | sidecar | topic}}")
    path = _inside(root, d.get("path"), manifest, f"{what}.path")
    mcap = path.suffix.lower() == ".mcap"
    rules = [k for k in ("start_ns", "sidecar", "topic") if d.get(k) is not None]
    if (mcap and rules not in ([], ["topic"])) or (not mcap and len(rules) != 1) or "topic" in rules and not mcap:
        raise FormatError(manifest, None, f"{what}: a video file with one of start_ns or sidecar, or an MCAP file "
                                          f"with an optional topic; got {rules}")
    start = d.get("start_ns")
    if start is not None and (not isinstance(start, int) or isinstance(start, bool)):
        raise FormatError(manifest, None, f"{what}.start_ns: an integer, got {start!r}")
    sidecar = None if d.get("sidecar") is None else _inside(root, d["sidecar"], manifest, f"{what}.sidecar")
    topic = d.get("topic")
    if topic is not None and not isinstance(topic, str):
        raise FormatError(manifest, None, f"{what}.topic: a string, got {topic!r}")
    return LogVideo(d["camera"], path, start, sidecar, topic)


def video_to_json(v: LogVideo, root: Path) -> dict[str, Any]:
    """The entry of ``v``, paths relative to ``root``."""
    def rel(p: Path) -> str:
        return (Path(p).resolve().relative_to(Path(root).resolve()) if Path(p).is_absolute() else Path(p)).as_posix()

    out: dict[str, Any] = {"camera": v.camera, "path": rel(v.path)}
    if v.start_ns is not None:
        out["start_ns"] = int(v.start_ns)
    if v.sidecar is not None:
        out["sidecar"] = rel(v.sidecar)
    if v.topic is not None:
        out["topic"] = v.topic
    return out


def open_video(v: LogVideo) -> Reader:
    """The reader of ``v`` (its keyframe index built now)."""
    if v.path.suffix.lower() == ".mcap":
        return McapVideoReader(v.path, v.topic)
    return VideoReader(v.path, start_ns=v.start_ns or 0, sidecar=None if v.sidecar is None else read_sidecar(v.sidecar))


class VideoSource:
    """A reader shared between threads (one decode at a time), frames out as JPEG."""

    def __init__(self, video: LogVideo):
        self.video = video
        self.reader = open_video(video)
        self._lock = threading.Lock()

    def jpeg_near(self, time_ns: int, within_ns: int | None = None, quality: int = 92) -> tuple[bytes, int, int] | None:
        """``(jpeg, frame time, frame index)`` of the frame nearest ``time_ns``; None when the
        video has no frame within ``within_ns`` of it."""
        from formats.jpeg import encode_jpeg

        index = self.reader.index
        if len(index) == 0:
            return None
        i = int(index.nearest(time_ns)[0])
        t = int(index.times_ns[i])
        if within_ns is not None and abs(t - time_ns) > within_ns:
            return None
        with self._lock:
            rgb = self.reader.frame(i)
        return encode_jpeg(np.ascontiguousarray(rgb), quality=quality), t, i


def frame_middles(timestamps_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(middle, half interval)`` of each frame (see the module docstring), int64 ns."""
    t = np.asarray(timestamps_ns, np.int64)
    if len(t) < 2:
        return t.copy(), np.zeros(len(t), np.int64)
    step = np.diff(t)
    half = np.append(step, step[-1]) // 2
    return t + half, half


@lru_cache(maxsize=8)
def _sources(videos: tuple[LogVideo, ...]) -> dict[str, VideoSource]:
    return {v.camera: VideoSource(v) for v in videos}


def video_images(videos: tuple[LogVideo, ...], timestamps_ns: np.ndarray, index: int) -> dict[str, tuple[bytes, int]]:
    """Frame ``index``'s image from each video camera: ``name → (jpeg, frame time)`` (readers
    opened once per log and process)."""
    mid, half = frame_middles(timestamps_ns)
    out = {}
    for name, source in _sources(tuple(videos)).items():
        found = source.jpeg_near(int(mid[index]), int(half[index]))
        if found is not None:
            out[name] = found[:2]
    return out


def store_videos(videos: tuple[LogVideo, ...], scene_dir: str | os.PathLike) -> list[Path]:
    """Put each video (and sidecar) into ``SCENE_DIR/videos/`` with its ``CAMERA.json`` entry."""
    from formats.raw_log import link_or_copy

    folder = Path(scene_dir) / VIDEOS_DIR
    written = []
    for v in videos:
        stored = LogVideo(v.camera, folder / f"{v.camera}{v.path.suffix.lower()}", v.start_ns,
                          None if v.sidecar is None else folder / f"{v.camera}.times.csv", v.topic)
        link_or_copy(v.path, stored.path)
        if v.sidecar is not None and stored.sidecar is not None:
            link_or_copy(v.sidecar, stored.sidecar)
        entry = folder / f"{v.camera}.json"
        tmp = entry.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(video_to_json(stored, folder)))
        os.replace(tmp, entry)
        written.append(entry)
    return written


def scene_videos(scene_dir: str | os.PathLike) -> dict[str, LogVideo]:
    """The videos a prepared scene keeps (camera → entry); empty without any."""
    folder = Path(scene_dir).resolve() / VIDEOS_DIR
    out = {}
    for entry in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        v = video_from_json(load_json(entry, "video entry"), folder, entry, entry.name)
        out[v.camera] = v
    return out
