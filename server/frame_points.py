"""Decode one frame of a raw log into world-frame point columns (the first step of prepare).

Per-frame files are read whole. Stream files (one Velodyne, Ouster or Hesai pcap, or one KMALL
file for the whole log) are indexed once per process and file version (:func:`_pcap_index`,
:func:`_kmall_log`, cached); a frame then decodes only the packets / pings in its window.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from engine.geodesy import Origin
from engine.motion import motion_compensate
from engine.pose_track import PoseTrack
from engine.sweep import Sweep
from formats.errors import FormatError
from formats.hesai import hesai_stream_times, read_hesai_pcap
from formats.kmall import DETECTION_REJECTED, KmallLog, mrz_ping_poses, read_kmall
from formats.ouster import ouster_stream_times, read_ouster_pcap
from formats.ouster_metadata import read_ouster_metadata
from formats.pcap import UdpPayloads, index_udp, udp_pcap_bytes
from formats.raw_log import MESSAGE_FORMAT, PCAP_FORMATS, LogLidar, RawLog
from formats.registry import read_points
from formats.sonar_world import PingPoses, place_soundings
from formats.velodyne import PACKET_SIZE, read_velodyne_pcap, velodyne_stream_times
from formats.velodyne_time import position_packets


def world_points(log: RawLog, track: PoseTrack, index: int) -> dict[str, np.ndarray]:
    """All point sensors' points of frame ``index`` in the world frame (float64, scene origin).

    Columns: ``xyz (N, 3) float64``, ``intensity (N,) float32``, ``time_offset_ns (N,) int64``
    from the frame's timestamp, ``sensor_id (N,) uint8``, ``ring (N,) uint16`` (a multibeam's
    sounding index within its swath; its intensity is the reflectivity in dB).
    """
    frame = log.frames[index]
    parts: list[tuple[LogLidar, dict[str, np.ndarray] | tuple[Sweep, np.ndarray, np.ndarray]]] = []
    for lidar in log.lidars:
        source = frame.lidar.get(lidar.name)
        if source is None:
            continue
        if lidar.format == "kmall":
            parts.append((lidar, _kmall_points(log, lidar, source, frame.timestamp_ns)))
            continue
        if lidar.format in PCAP_FORMATS:
            times, sweep = _pcap_window(lidar, *source)
            offsets = times - np.int64(frame.timestamp_ns)
        else:
            sweep = source.sweep() if lidar.format == MESSAGE_FORMAT else read_points(source, format=lidar.format)
            offsets = (sweep.time_offset_ns if sweep.time_offset_ns is not None
                       else np.zeros(len(sweep), np.int64))
            times = offsets + np.int64(frame.timestamp_ns)
        parts.append((lidar, (sweep, times, offsets)))
    if not parts:
        raise ValueError(f"frame {index} has no LiDAR sweep")
    # the sensors' rows of preallocated columns: each sweep is moved straight into its rows
    sizes = [len(p["xyz"]) if isinstance(p, dict) else len(p[0]) for _, p in parts]
    n = sum(sizes)
    out = {"xyz": np.empty((n, 3)), "intensity": np.empty(n, np.float32), "time_offset_ns": np.empty(n, np.int64),
           "sensor_id": np.empty(n, np.uint8), "ring": np.empty(n, np.uint16)}
    end = 0
    for (lidar, part), size in zip(parts, sizes):
        rows = slice(end, end + size)
        end += size
        if isinstance(part, dict):
            for k, column in out.items():
                column[rows] = part[k]
            continue
        sweep, times, offsets = part
        motion_compensate(sweep.xyz, times, track, lidar.ego_from_sensor, out_frame="world", out=out["xyz"][rows])
        out["intensity"][rows] = sweep.intensity if sweep.intensity is not None else 0.0
        out["time_offset_ns"][rows] = offsets
        out["sensor_id"][rows] = lidar.sensor_id
        out["ring"][rows] = sweep.ring if sweep.ring is not None else 0
    return out


def _version(path: Path) -> tuple[str, int, int]:
    """Cache key of a file's current contents (path, size, mtime)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise FormatError(path, None, f"a readable file ({exc.strerror})") from None
    return os.fspath(path), st.st_size, st.st_mtime_ns


@lru_cache(maxsize=8)
def _pcap_index_cached(key: tuple[str, int, int], fmt: str, calibration: Path | None,
                       ) -> tuple[UdpPayloads, np.ndarray, np.ndarray]:
    index = index_udp(key[0])
    if fmt == "velodyne_pcap":
        udp = index.select(PACKET_SIZE)
        stream_ns = velodyne_stream_times(udp, position_packets(index))
    elif fmt == "ouster_pcap":
        meta = read_ouster_metadata(calibration)
        udp = index.select(meta.packet_size, meta.udp_port_lidar)
        stream_ns = ouster_stream_times(udp, meta)
    else:
        udp = index.select(None)
        stream_ns = hesai_stream_times(udp)
    return udp, np.argsort(udp.timestamps_ns, kind="stable"), stream_ns


def _pcap_index(lidar: LogLidar) -> tuple[UdpPayloads, np.ndarray, np.ndarray]:
    """The stream's data packets (file buffer, offsets, record times), their time order and each
    packet's time from the whole stream's clock (the decoders' "auto" time source)."""
    return _pcap_index_cached(_version(lidar.path), lidar.format, lidar.calibration)


def _pcap_window(lidar: LogLidar, start_ns: int, end_ns: int):
    """Decode the data packets recorded in ``[start_ns, end_ns)``: ``(absolute times (N,) int64,
    sweep in the LiDAR frame)``."""
    udp, order, stream_ns = _pcap_index(lidar)
    ts = udp.timestamps_ns[order]
    rows = order[np.searchsorted(ts, start_ns, "left"):np.searchsorted(ts, end_ns, "left")]
    rows = np.sort(rows)  # file order, as the decoders expect
    payloads = udp.buffer[udp.offsets[rows, None] + np.arange(udp.size)[None, :]]
    # the window's packets stamped with the stream's packet times, which the decoder then takes
    data = udp_pcap_bytes(payloads, stream_ns[rows], nanosecond=True, dst_port=2368)
    if lidar.format == "velodyne_pcap":
        sweeps, _ = read_velodyne_pcap(lidar.path, lidar.model, calibration=lidar.calibration, data=data,
                                       time_source="pcap")
    elif len(rows) == 0:
        sweeps = []
    elif lidar.format == "ouster_pcap":
        sweeps, _ = read_ouster_pcap(lidar.path, lidar.calibration, data=data, time_source="pcap", port=2368)
    else:
        sweeps, _ = read_hesai_pcap(lidar.path, lidar.calibration, data=data, time_source="pcap")
    if not sweeps:
        empty = Sweep(np.zeros((0, 3), np.float32), start_ns, np.zeros(0, np.float32), np.zeros(0, np.int64),
                      np.zeros(0, np.uint16), frame="lidar")
        return np.zeros(0, np.int64), empty
    times = np.concatenate([s.timestamp_ns + s.time_offset_ns for s in sweeps])
    if len(sweeps) == 1:
        return times, sweeps[0]
    cat = lambda name: np.concatenate([getattr(s, name) for s in sweeps])  # noqa: E731
    merged = Sweep(cat("xyz"), int(times[0]), cat("intensity"), times - times[0], cat("ring"), cat("return_index"),
                   frame="lidar")
    return times, merged


@lru_cache(maxsize=4)
def _kmall_cached(key: tuple[str, int, int]) -> KmallLog:
    return read_kmall(key[0])


def _kmall_log(path: Path) -> KmallLog:
    """The decoded KMALL file (once per process and file version)."""
    return _kmall_cached(_version(path))


@lru_cache(maxsize=4)
def _kmall_poses(key: tuple[str, int, int], origin: Origin) -> PingPoses:
    return mrz_ping_poses(_kmall_cached(key).pings, origin)


def _kmall_points(log: RawLog, lidar: LogLidar, window: tuple[int, int], frame_ns: int) -> dict[str, np.ndarray]:
    """The non-rejected soundings of the pings in ``window`` with a valid pose (as
    :func:`formats.kmall.read_kmall_world` places them: pings whose position or attitude the
    echosounder flagged invalid are left out), georeferenced into the scene frame with the
    waterline at the origin's height."""
    if log.origin.geodetic is None:
        raise FormatError(log.root / "log.json", None, f"origin.geodetic for the kmall sensor {lidar.name!r}")
    origin = Origin(*log.origin.geodetic)
    key = _version(lidar.path)
    p = _kmall_cached(key).pings
    poses = _kmall_poses(key, origin)
    sel = np.flatnonzero((p.time_ns >= window[0]) & (p.time_ns < window[1]))
    a, b = (int(p.sounding_start[sel[0]]), int(p.sounding_start[sel[-1] + 1])) if len(sel) else (0, 0)
    start = p.sounding_start[np.append(sel, sel[-1] + 1)] - a if len(sel) else np.zeros(1, np.int64)
    placed = place_soundings(lidar.path, poses.select(sel), start, p.x_m[a:b], p.y_m[a:b], p.z_m[a:b],
                             p.detection_type[a:b] != DETECTION_REJECTED, p.reflectivity_db[a:b],
                             {"ring": p.sounding_index[a:b]}, origin).sweep
    return {
        "xyz": placed.xyz,
        "intensity": np.asarray(placed.intensity, np.float32),
        "time_offset_ns": placed.time_offset_ns + np.int64(placed.timestamp_ns - frame_ns),
        "sensor_id": np.full(len(placed), lidar.sensor_id, np.uint8),
        "ring": np.asarray(placed.extra["ring"], np.uint16),
    }
