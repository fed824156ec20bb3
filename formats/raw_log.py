"""Fathom's raw-log layout: what ``fathom simulate`` writes and ``fathom prepare`` reads.

One log is a directory::

    LOG_DIR/
      log.json              the manifest (below)
      poses.csv             world_from_ego samples: timestamp_ns,tx,ty,tz,qw,qx,qy,qz (ENU, m)
      lidar/NAME/NNNNNN.pcd one sweep per frame and LiDAR, in the sensor frame, with a
                            per-point time_offset_ns column (any reader of formats.registry)
      lidar/NAME.pcap       or one Velodyne, Ouster or Hesai pcap/pcapng per LiDAR for the whole log
      lidar/NAME.yaml       its calibration: Velodyne ROS YAML (optional), Ouster metadata JSON,
                            Hesai angle correction CSV or AT128 .dat
      sonar/NAME.kmall      or one KMALL file per multibeam for the whole log (version 2)
      radar/NAME/NNNNNN.pcd one radar scan per frame and radar, in the sensor frame (formats.radar)
      camera/NAME/NNNNNN.jpg one image per frame and camera
      camera/NAME.mp4       or one video per camera (H.264/H.265 in MP4/MKV, or MCAP)
      acoustic/NAME.wav     one multi-channel hydrophone recording per array (WAV, FLAC or
                            raw PCM, formats.hydrophone)

``log.json``::

    {"format": "fathom-log", "version": 2, "log_id": "road-0",
     "origin": {"enu_offset_m": [e, n, u], "geodetic": [lat, lon, alt] | null},
     "poses": {"kind": "table", "path": "poses.csv"}
            | {"kind": "kmall_skm", "path": "sonar/MBES.kmall"},
     "lidars": [{"name", "sensor_id", "ego_from_sensor": [qw qx qy qz tx ty tz], "format": "pcd"}
              | {..., "format": "velodyne_pcap", "path": "lidar/NAME.pcap", "model": "VLP-16",
                 "calibration": "lidar/NAME.yaml"}        # calibration optional
              | {..., "format": "ouster_pcap", "path": "lidar/NAME.pcap", "calibration": "lidar/NAME.json"}
              | {..., "format": "hesai_pcap", "path": "lidar/NAME.pcap",
                 "calibration": "lidar/NAME.csv"}         # AT128: its .dat correction
              | {..., "format": "kmall", "path": "sonar/NAME.kmall"}],
     "cameras": [CAMERA],                      # as formats.rig.camera_to_json
     "radars": [{"name", "ego_from_sensor": [qw qx qy qz tx ty tz],
                 "format": "nuscenes_radar" | "radar_pcd"}],   # optional
     "hydrophones": [HYDROPHONE_ARRAY],        # optional, as formats.hydrophone.array_from_json
     "videos": [VIDEO],                        # optional, as formats.video_log.video_from_json
     "frames": [{"timestamp_ns",
                 "lidar": {NAME: "lidar/NAME/000000.pcd"            # a per-frame file
                           | {"start_ns": a, "end_ns": b}},          # a stream sensor's window
                 "images": {NAME: {"path": "camera/NAME/000000.jpg", "timestamp_ns"}},
                 "radar": {NAME: {"path": "radar/NAME/000000.pcd", "timestamp_ns"}}}],  # optional
     "labels": "labels.json"}                  # optional: world-frame tracks (below)

``lidars`` lists every point sensor (a multibeam echosounder too: its soundings are points).
A per-frame file sensor names one file per frame. A stream sensor (``velodyne_pcap``,
``ouster_pcap``, ``hesai_pcap``, ``kmall``) has one file for the whole log and each frame
names a half-open time window ``[start_ns, end_ns)``: the frame holds the LiDAR data packets
whose pcap record time lies in it (their points timed by the sensor's clock over the whole
stream, see the decoders' "auto" time source), or the ``#MRZ`` pings whose time lies in it.
Windows of consecutive frames of a simulated log tile time, so every packet/ping belongs to
exactly one frame. A Velodyne entry names the model (``formats.velodyne.MODELS``) and
optionally a calibration YAML (else the model's default table); an Ouster entry needs the
sensor's metadata JSON and a Hesai entry its angle correction as ``calibration``. A ``kmall`` sensor's
soundings are georeferenced from each ping's own position and heading (its extrinsic is
informative only) and need ``origin.geodetic``, the scene origin: soundings and poses are
georeferenced straight into the ENU frame tangent there. ``poses.kind`` ``"kmall_skm"`` takes
the ego poses from that file's ``#SKM`` attitude/position samples (ellipsoid heights).

``radars`` lists the radars (:mod:`formats.radar`: ``nuscenes_radar`` is nuScenes' 18-field
radar PCD, ``radar_pcd`` a PCD with ``x y z radial_velocity rcs``); a radar's id is its
position in the list. A frame names each radar's scan of that frame and the scan's own time
(radars run unsynchronised with the LiDARs; a bare path means the frame's ``timestamp_ns``).

``hydrophones`` lists the passive arrays: each names one recording for the whole log, the
time of its first sample, its sample rate, per-element gains and where the elements sit
(hull-mounted positions, or a towed line's tow point, cable and element offsets) in the
vessel frame (:mod:`formats.hydrophone`); frames name no hydrophone data.

``videos`` makes declared cameras video streams (:mod:`formats.video_log`: the file and its
frame-time rule); frames name no images for such a camera, ``prepare`` takes the video frame
nearest each frame's middle.

Version 1 manifests (per-frame files and a pose table only) are still read; the writer
writes version 2.

``labels.json`` (optional, e.g. written by an importer or the simulator) is a label document in
the schema the server stores (``server.schemas.LabelDocument``): ``{"tracks": [{"id", "category",
"attributes", "stationary", "keyframes": [{"timestamp_ns", "center", "size", "rotation",
"attributes"}]}]}``, centres in the log's ENU frame **minus** ``origin.enu_offset_m`` (the
scene frame), sizes (l, w, h), rotations wxyz box → world.

Pose translations are in the log's ENU frame; the prepared scene subtracts
``origin.enu_offset_m``. A sweep file's timestamp is the frame's ``timestamp_ns``; its points'
firing times are ``timestamp_ns + time_offset_ns``. Paths are relative to LOG_DIR and may not
leave it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol

import numpy as np

from engine.camera import Camera
from engine.cuboid import CuboidTrack
from engine.geodesy import Origin
from engine.pose_sources import from_pose_table
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.errors import FormatError, load_json
from formats.hydrophone import HydrophoneArray, array_from_json, array_to_json
from formats.radar import LogRadar, radar_from_json, radar_to_json
from formats.registry import READERS
from formats.rig import Lidar, SceneOrigin, camera_from_json, camera_to_json, lidar_to_json, pose_from_json
from formats.video_log import LogVideo, video_from_json, video_to_json

FORMAT = "fathom-log"
VERSION = 2
READ_VERSIONS = (1, 2)
PCAP_FORMATS = ("velodyne_pcap", "ouster_pcap", "hesai_pcap")
STREAM_FORMATS = (*PCAP_FORMATS, "kmall")
MESSAGE_FORMAT = "rosbag"  # a LiDAR whose frames' sweeps are SweepSource objects (never in log.json)
POSE_KINDS = ("table", "kmall_skm")
MANIFEST = "log.json"
POSE_COLUMNS = "timestamp_ns,tx,ty,tz,qw,qx,qy,qz"


@dataclass(frozen=True)
class LogLidar:
    """A point sensor of the log: name, ``sensor_id`` (uint8), extrinsic, format name (a reader
    of ``formats.registry`` for per-frame files, or one of :data:`STREAM_FORMATS`); a stream
    sensor has its file ``path``, a Velodyne one its ``model`` and optional ``calibration``."""

    name: str
    sensor_id: int
    ego_from_sensor: SE3
    format: str
    path: Path | None = None
    model: str | None = None
    calibration: Path | None = None

    @property
    def is_stream(self) -> bool:
        return self.format in STREAM_FORMATS


class SweepSource(Protocol):
    """A frame's sweep held elsewhere than in a file of its own (a bag's message, read
    directly: ``formats.ros.source``); the LiDAR's format is :data:`MESSAGE_FORMAT`."""

    def sweep(self) -> Sweep: ...


class ImageSource(Protocol):
    """A frame's image: a ``Path``, or a bag's message (``formats.ros.source``); its JPEG
    bytes, and a name for errors."""

    def read_bytes(self) -> bytes: ...

    def __fspath__(self) -> str: ...


@dataclass(frozen=True)
class LogFrame:
    """One frame: its timestamp, per LiDAR a sweep file, a stream's ``(start_ns, end_ns)``
    window or a :class:`SweepSource`, an image (path or source, time) per camera, a scan
    (path, time) per radar."""

    timestamp_ns: int
    lidar: Mapping[str, Path | tuple[int, int] | SweepSource]
    images: Mapping[str, tuple[ImageSource, int]]
    radar: Mapping[str, tuple[Path, int]] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class RawLog:
    """A parsed raw-log manifest (files are read on demand)."""

    root: Path
    log_id: str
    origin: SceneOrigin
    poses_path: Path
    lidars: tuple[LogLidar, ...]
    cameras: tuple[Camera, ...]
    frames: tuple[LogFrame, ...]
    labels_path: Path | None = None
    poses_kind: str = "table"
    radars: tuple[LogRadar, ...] = ()
    hydrophones: tuple[HydrophoneArray, ...] = ()
    videos: tuple[LogVideo, ...] = ()
    pose_track: PoseTrack | None = None  # the ego poses themselves (a bag read directly), else read from poses_path

    def labels(self) -> list[CuboidTrack]:
        """The tracks of ``labels.json`` (empty without one)."""
        return [] if self.labels_path is None else read_labels(self.labels_path)

    def world_from_ego(self) -> PoseTrack:
        """The ego pose track (``poses.csv``, or a KMALL file's ``#SKM`` samples), translations
        relative to the scene origin."""
        if self.pose_track is not None:
            return self.pose_track
        path = self.poses_path
        if self.poses_kind == "kmall_skm":
            return self._skm_track()
        try:
            lines = path.read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise FormatError(path, None, f"a readable text pose table ({exc})") from None
        header = lines[0].strip() if lines else ""
        if header != POSE_COLUMNS:
            raise FormatError(path, 0, f"the header line {POSE_COLUMNS!r}, found {header[:80]!r}")
        # int64 timestamps (a float64 column would round epoch nanoseconds), float64 poses
        dtype = [("timestamp_ns", np.int64)] + [(c, np.float64) for c in POSE_COLUMNS.split(",")[1:]]
        try:
            rows = np.loadtxt(lines[1:], delimiter=",", dtype=dtype, ndmin=1)
        except ValueError as exc:
            raise FormatError(path, None, f"8 numeric columns per row ({exc})") from None
        if len(rows) == 0:
            raise FormatError(path, None, "at least one pose row after the header")
        table = np.stack([rows[c] for c in POSE_COLUMNS.split(",")[1:]], axis=1)
        table[:, :3] -= np.asarray(self.origin.enu_offset_m)
        try:
            return from_pose_table(rows["timestamp_ns"], table)
        except ValueError as exc:
            raise FormatError(path, None, f"a valid pose table: {exc}") from None


    def _skm_track(self) -> PoseTrack:
        """The valid ``#SKM`` samples only (status bits and position checked, see
        :func:`formats.kmall_sensors.skm_pose_track`)."""
        from formats.kmall import read_kmall
        from formats.kmall_sensors import skm_pose_track

        path = self.poses_path
        if self.origin.geodetic is None:
            raise FormatError(self.root / MANIFEST, None, 'origin.geodetic for poses.kind "kmall_skm"')
        a = read_kmall(path).attitude
        if len(a.time_ns) == 0:
            raise FormatError(path, None, "at least one #SKM attitude/position sample")
        try:
            track = skm_pose_track(a, Origin(*self.origin.geodetic), path)
        except FormatError:
            raise
        except ValueError as exc:
            raise FormatError(path, None, f"valid #SKM samples: {exc}") from None
        return track


def _inside(root: Path, rel: Any, manifest: Path, what: str) -> Path:
    if not isinstance(rel, str) or not rel:
        raise FormatError(manifest, None, f"{what}: a relative path string, got {rel!r}")
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise FormatError(manifest, None, f"{what}: a path inside the log directory, {rel!r} leaves it")
    return full


def read_log(log_dir: str | os.PathLike) -> RawLog:
    """Parse and validate ``LOG_DIR/log.json``; ``FormatError`` names the offending field."""
    root = Path(log_dir).resolve()
    manifest = root / MANIFEST
    doc = load_json(manifest, "raw-log manifest")
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("version") not in READ_VERSIONS:
        raise FormatError(manifest, None, f'"format": "{FORMAT}" and "version" one of {READ_VERSIONS}')
    try:
        origin_doc = doc.get("origin") or {}
        origin = SceneOrigin(tuple(origin_doc.get("enu_offset_m", (0.0, 0.0, 0.0))),
                             None if origin_doc.get("geodetic") is None else tuple(origin_doc["geodetic"]))
        poses = doc["poses"]
        if poses.get("kind") not in POSE_KINDS:
            raise FormatError(manifest, None, f"poses.kind one of {POSE_KINDS}, got {poses.get('kind')!r}")
        poses_path = _inside(root, poses.get("path"), manifest, "poses.path")
        lidars = [_lidar_from_json(root, manifest, i, d) for i, d in enumerate(doc.get("lidars", []))]
        cameras = tuple(camera_from_json(d, manifest) for d in doc.get("cameras", []))
        radars = tuple(radar_from_json(d, manifest, f"radars[{i}]") for i, d in enumerate(doc.get("radars", [])))
        radar_names = {r.name for r in radars}
        hydrophones = tuple(array_from_json(d, root, manifest, f"hydrophones[{i}]")
                            for i, d in enumerate(doc.get("hydrophones", [])))
        if len({h.name for h in hydrophones}) != len(hydrophones):
            raise FormatError(manifest, None, "hydrophones with unique names")
        by_name = {l.name: l for l in lidars}
        lidar_names = set(by_name)
        camera_names = {c.name for c in cameras}
        videos = tuple(video_from_json(d, root, manifest, f"videos[{i}]") for i, d in enumerate(doc.get("videos", [])))
        video_names = [v.camera for v in videos]
        if set(video_names) - camera_names or len(set(video_names)) != len(video_names):
            raise FormatError(manifest, None, "videos of declared cameras, one video per camera")
        frames = []
        for i, f in enumerate(doc.get("frames", [])):
            ts = f.get("timestamp_ns")
            if not isinstance(ts, int):
                raise FormatError(manifest, None, f"frames[{i}].timestamp_ns an integer, got {ts!r}")
            if (set(f.get("lidar", {})) - lidar_names or set(f.get("images", {})) - (camera_names - set(video_names))
                    or set(f.get("radar", {})) - radar_names):
                raise FormatError(manifest, None, f"frames[{i}] to name only declared sensors")
            lidar = {n: _frame_source(root, manifest, f"frames[{i}].lidar.{n}", by_name[n], p)
                     for n, p in f.get("lidar", {}).items()}
            images = {
                n: (_inside(root, im.get("path"), manifest, f"frames[{i}].images.{n}"), int(im["timestamp_ns"]))
                for n, im in f.get("images", {}).items()
            }
            radar = {n: _radar_scan(root, manifest, f"frames[{i}].radar.{n}", r, ts)
                     for n, r in f.get("radar", {}).items()}
            frames.append(LogFrame(ts, lidar, images, radar))
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(manifest, None, f"a complete raw-log manifest ({type(exc).__name__}: {exc})") from None
    stamps = [f.timestamp_ns for f in frames]
    if any(b <= a for a, b in zip(stamps, stamps[1:])):
        raise FormatError(manifest, None, "frames in strictly increasing timestamp_ns order")
    labels = None if doc.get("labels") is None else _inside(root, doc["labels"], manifest, "labels")
    return RawLog(root, str(doc.get("log_id", root.name)), origin, poses_path, tuple(lidars), cameras, tuple(frames),
                  labels, poses["kind"], radars, hydrophones, videos)


def _lidar_from_json(root: Path, manifest: Path, i: int, d: dict[str, Any]) -> LogLidar:
    fmt = d.get("format")
    if fmt not in READERS and fmt not in STREAM_FORMATS:
        raise FormatError(manifest, None, f"lidars[{i}].format one of {sorted(READERS) + list(STREAM_FORMATS)}, "
                                          f"got {fmt!r}")
    sid = d.get("sensor_id")
    if not isinstance(sid, int) or not 0 <= sid < 256:
        raise FormatError(manifest, None, f"lidars[{i}].sensor_id an integer in [0, 255], got {sid!r}")
    path = model = calibration = None
    if fmt in STREAM_FORMATS:
        path = _inside(root, d.get("path"), manifest, f"lidars[{i}].path")
    if fmt == "velodyne_pcap":
        from formats.velodyne import get_model

        try:
            model = get_model(str(d.get("model"))).name
        except ValueError as exc:
            raise FormatError(manifest, None, f"lidars[{i}].model: {exc}") from None
        if d.get("calibration") is not None:
            calibration = _inside(root, d["calibration"], manifest, f"lidars[{i}].calibration")
    elif fmt in ("ouster_pcap", "hesai_pcap"):  # the sensor's metadata JSON / angle correction: required
        calibration = _inside(root, d.get("calibration"), manifest, f"lidars[{i}].calibration")
    pose = pose_from_json(d.get("ego_from_sensor"), manifest, f"lidars[{i}].ego_from_sensor")
    return LogLidar(str(d["name"]), sid, pose, fmt, path, model, calibration)


def _frame_source(root: Path, manifest: Path, what: str, lidar: LogLidar, value: Any) -> Path | tuple[int, int]:
    """A frame's per-frame file (a path inside the log) or a stream sensor's ``(start_ns, end_ns)``."""
    if not lidar.is_stream:
        return _inside(root, value, manifest, what)
    a, b = (value.get("start_ns"), value.get("end_ns")) if isinstance(value, dict) else (None, None)
    if not (isinstance(a, int) and isinstance(b, int) and a < b):
        raise FormatError(manifest, None, f'{what}: a window {{"start_ns": a, "end_ns": b}} of integers a < b, '
                                          f"got {value!r}")
    return a, b


def _radar_scan(root: Path, manifest: Path, what: str, value: Any, frame_ns: int) -> tuple[Path, int]:
    """A frame's radar scan: ``"path"`` (at the frame time) or ``{"path", "timestamp_ns"}``."""
    if isinstance(value, str):
        return _inside(root, value, manifest, what), frame_ns
    ts = value.get("timestamp_ns") if isinstance(value, dict) else None
    if not isinstance(ts, int):
        raise FormatError(manifest, None, f'{what}: a path or {{"path", "timestamp_ns": integer}}, got {value!r}')
    return _inside(root, value.get("path"), manifest, f"{what}.path"), ts


def write_log_manifest(
    log_dir: str | os.PathLike,
    *,
    log_id: str,
    origin: SceneOrigin,
    lidars: list[LogLidar],
    cameras: list[Camera],
    frames: list[dict[str, Any]],
    labels: str | None = None,
    poses: dict[str, str] | None = None,
    radars: list[LogRadar] | tuple[LogRadar, ...] = (),
    hydrophones: list[HydrophoneArray] | tuple[HydrophoneArray, ...] = (),
    videos: list[LogVideo] | tuple[LogVideo, ...] = (),
) -> Path:
    """Write ``log.json`` (paths in ``frames``, ``labels``, ``poses`` and the lidars' ``path``
    / ``calibration`` relative to ``log_dir``); ``poses`` defaults to the ``poses.csv`` table;
    ``radars`` (listed when there are any) as :func:`formats.radar.radar_to_json`, ``hydrophones``
    (likewise) as :func:`formats.hydrophone.array_to_json`, ``videos`` as
    :func:`formats.video_log.video_to_json`."""
    root = Path(log_dir)
    doc = {
        "format": FORMAT, "version": VERSION, "log_id": log_id,
        "origin": {"enu_offset_m": list(origin.enu_offset_m),
                   "geodetic": None if origin.geodetic is None else list(origin.geodetic)},
        "poses": poses or {"kind": "table", "path": "poses.csv"},
        "lidars": [_lidar_to_json(l) for l in lidars],
        "cameras": [camera_to_json(c) for c in cameras],
        "frames": frames,
    }
    if radars:
        doc["radars"] = [radar_to_json(r) for r in radars]
    if hydrophones:
        doc["hydrophones"] = [array_to_json(h, root) for h in hydrophones]
    if videos:
        doc["videos"] = [video_to_json(v, root) for v in videos]
    if labels is not None:
        doc["labels"] = labels
    path = root / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
    return path


def _lidar_to_json(lidar: LogLidar) -> dict[str, Any]:
    out = dict(lidar_to_json(Lidar(lidar.name, lidar.ego_from_sensor), lidar.sensor_id), format=lidar.format)
    for key in ("path", "model", "calibration"):
        value = getattr(lidar, key)
        if value is not None:
            out[key] = Path(value).as_posix() if key != "model" else value
    return out


def write_pose_table(log_dir: str | os.PathLike, track: PoseTrack) -> Path:
    """Write ``poses.csv`` from a ``world_from_ego`` track (ENU, full float64 precision)."""
    path = Path(log_dir) / "poses.csv"
    rows = [POSE_COLUMNS]
    for ts, t, q in zip(track.timestamps_ns, track.translation, track.rotation):
        rows.append(",".join([str(int(ts)), *(repr(float(v)) for v in (*t, *q))]))
    path.write_text("\n".join(rows) + "\n")
    return path


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put ``src`` at ``dst`` inside a log: a hard link where the filesystem allows, else a copy
    (a symlink would resolve outside the log directory, which :func:`read_log` refuses).
    ``FormatError`` names ``src`` when it cannot be read."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        try:
            shutil.copyfile(src, dst)
        except OSError as exc:
            raise FormatError(src, None, f"a readable file ({exc.strerror})") from None


def labels_document(tracks: list[CuboidTrack]) -> dict[str, Any]:
    """The label document (schema of ``labels.json``) of world-frame tracks."""
    out = []
    for t in tracks:
        kfa = t.keyframe_attributes or [{} for _ in range(len(t))]
        out.append({
            "id": t.track_id, "category": t.category, "attributes": dict(t.attributes),
            "stationary": bool(t.stationary),
            "keyframes": [{"timestamp_ns": int(ts), "center": c.tolist(), "size": s.tolist(), "rotation": q.tolist(),
                           "attributes": dict(a)}
                          for ts, c, s, q, a in zip(t.timestamps_ns, t.centers, t.sizes, t.rotations, kfa)],
        })
    return {"tracks": out}


def write_labels(log_dir: str | os.PathLike, tracks: list[CuboidTrack], name: str = "labels.json") -> Path:
    """Write ``labels.json`` (see :func:`labels_document`); returns its path."""
    path = Path(log_dir) / name
    path.write_text(json.dumps(labels_document(tracks), allow_nan=False))
    return path


def read_labels(path: str | os.PathLike) -> list[CuboidTrack]:
    """Tracks from a ``labels.json``; ``FormatError`` names the track and field at fault."""
    doc = load_json(path, "label document")
    if not isinstance(doc, dict) or not isinstance(doc.get("tracks"), list):
        raise FormatError(path, None, 'a label document {"tracks": [...]}')
    tracks, seen = [], set()
    for i, t in enumerate(doc["tracks"]):
        try:
            kf = t["keyframes"]
            track = CuboidTrack(
                str(t["id"]), str(t["category"]),
                np.array([k["timestamp_ns"] for k in kf], dtype=np.int64),
                np.array([k["center"] for k in kf], dtype=np.float64).reshape(-1, 3),
                np.array([k["size"] for k in kf], dtype=np.float64).reshape(-1, 3),
                np.array([k["rotation"] for k in kf], dtype=np.float64).reshape(-1, 4),
                stationary=bool(t.get("stationary", False)), attributes=dict(t.get("attributes", {})),
                keyframe_attributes=[dict(k.get("attributes", {})) for k in kf],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise FormatError(path, None, f"tracks[{i}]: a valid track ({type(exc).__name__}: {exc})") from None
        if track.track_id in seen:
            raise FormatError(path, None, f"tracks[{i}].id {track.track_id!r} unique, it repeats")
        seen.add(track.track_id)
        tracks.append(track)
    return tracks
