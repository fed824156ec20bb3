"""Multibeam water column: the per-beam amplitude samples of a ping, as KMALL ``#MWC``
(:mod:`formats.water_column_kmall`) and ``.all`` datagram 'k' (:mod:`formats.water_column_all`)
store them, and their conversion to a labelable point cloud.

Both formats store, per beam, a small header (pointing angle, first sample's range, sample
count, ...) followed by that beam's samples, so beam ``k + 1`` starts where beam ``k``'s
samples end. :func:`walk_beams` follows that chain in a compiled loop, checking every step
against the datagram's end; :func:`gather_samples` then copies all samples into one array.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine._jit import jit
from engine.geodesy import Origin
from engine.georeference import soundings_to_world
from engine.sweep import Sweep
from engine.water_column import sample_points, select_samples
from formats.errors import FormatError
from formats.sonar_world import PingPoses, SonarWorld, check_pose_values

AMPLITUDE_DB_PER_UNIT = 0.5  # both formats store amplitudes as int8 in 0.5 dB


@dataclass
class WaterColumn:
    """Water-column pings in CSR form (pings → beams → samples).

    Per ping ``(P,)``: ``time_ns int64``, ``ping_counter uint16``, ``head uint16`` (KMALL
    ``rxFanIndex``, ``.all`` system serial number), ``sound_speed_m_s`` and
    ``sample_rate_hz float32``, ``datagram_offset int64`` (the ping's first datagram),
    ``beam_start (P + 1,) int64``. Per beam ``(B,)``: ``beam_angle_deg float32`` (re
    vertical, positive port), ``tilt_deg float32`` (its tx sector's along-ship tilt),
    ``start_sample uint16`` (range of its sample 0, in samples), ``detected_range_samples
    float32`` (bottom detection, 0 = none), ``tx_sector uint8``, ``sample_start (B + 1,)
    int64``. Per sample ``(S,)``: ``amplitude int8`` in 0.5 dB units. ``path``: the file
    read (None for bytes); ``corrupt``: ``(offset, reason)`` of datagrams or pings skipped
    (only when read with ``recover=True``).
    """

    time_ns: np.ndarray
    ping_counter: np.ndarray
    head: np.ndarray
    sound_speed_m_s: np.ndarray
    sample_rate_hz: np.ndarray
    datagram_offset: np.ndarray
    beam_start: np.ndarray
    beam_angle_deg: np.ndarray
    tilt_deg: np.ndarray
    start_sample: np.ndarray
    detected_range_samples: np.ndarray
    tx_sector: np.ndarray
    sample_start: np.ndarray
    amplitude: np.ndarray
    path: str | os.PathLike | None = None
    corrupt: list[tuple[int, str]] = field(default_factory=list)

    @property
    def num_pings(self) -> int:
        return len(self.time_ns)

    @property
    def metres_per_sample(self) -> np.ndarray:
        """``(P,) float64``: one sample of two-way range, ``c / (2 fs)``."""
        return self.sound_speed_m_s.astype(np.float64) / (2.0 * self.sample_rate_hz.astype(np.float64))

    @property
    def ping_sample_start(self) -> np.ndarray:
        """``(P + 1,) int64``: ping p owns samples ``[start[p], start[p + 1])``."""
        return self.sample_start[self.beam_start]

    def amplitude_db(self) -> np.ndarray:
        """``(S,) float32`` amplitudes in dB."""
        return self.amplitude.astype(np.float32) * np.float32(AMPLITUDE_DB_PER_UNIT)


@jit
def _walk_kernel(buf, at, end, num_beams, header_bytes, count_at, sample_bytes, big_endian, sector_at, sector_bytes,
                 sector_ids, sector_tilts, beam_at, counts, tilt):
    """Follow ``num_beams`` beam records from ``at``: fill their offsets, sample counts and
    their tx sector's tilt (NaN for a sector number not in ``sector_ids``). Returns the
    offset after the last beam's samples, or ``-1 - k`` if beam k overruns ``end``."""
    for k in range(num_beams):
        beam_at[k] = at
        if at + header_bytes > end:
            return -1 - k
        lo = np.int64(buf[at + count_at])
        hi = np.int64(buf[at + count_at + 1])
        counts[k] = hi * 256 + lo if not big_endian else lo * 256 + hi
        sector = np.int64(buf[at + sector_at])
        if sector_bytes == 2:
            other = np.int64(buf[at + sector_at + 1])
            sector = other * 256 + sector if not big_endian else sector * 256 + other
        tilt[k] = np.nan
        for j in range(sector_ids.shape[0]):
            if sector_ids[j] == sector:
                tilt[k] = sector_tilts[j]
                break
        at += header_bytes + counts[k] * sample_bytes
        if at > end:
            return -1 - k
    return at


@dataclass
class BeamWalk:
    """One datagram's beam records: ``beam_at`` (header offsets), ``sample_at``, ``counts``
    (samples) ``(n,) int64``, ``tilt (n,) float32`` (their tx sector's), ``header_bytes``
    and ``after`` (the offset after the last record)."""

    beam_at: np.ndarray
    sample_at: np.ndarray
    counts: np.ndarray
    tilt: np.ndarray
    header_bytes: int
    after: int


def walk_beams(buf: np.ndarray, at: int, end: int, num_beams: int, header_bytes: int, count_at: int,
               sample_bytes: int, big_endian: bool, sectors: tuple[np.ndarray, np.ndarray, int, int], path,
               what: str) -> BeamWalk:
    """Follow the beam records starting at ``at``: each a ``header_bytes`` header with its
    ``uint16`` sample count at ``count_at``, then that many samples of ``sample_bytes``.
    ``sectors``: the datagram's tx sector numbers and tilts, and where (offset, 1 or 2
    bytes) a beam header names its sector. :class:`FormatError` where a beam overruns
    ``end`` or names a sector the datagram does not have."""
    beam_at = np.empty(num_beams, np.int64)
    counts = np.empty(num_beams, np.int64)
    tilt = np.empty(num_beams, np.float32)
    ids, tilts, sector_at, sector_bytes = sectors
    after = _walk_kernel(buf, at, end, num_beams, header_bytes, count_at, sample_bytes, big_endian, sector_at,
                         sector_bytes, ids, tilts, beam_at, counts, tilt)
    if after < 0:
        k = -1 - after
        raise FormatError(path, int(beam_at[k]), f"{what}: beam {k} of {num_beams} (header and samples) inside the "
                                                 f"datagram, which ends at byte {end}")
    missing = np.flatnonzero(np.isnan(tilt))
    if len(missing):
        k = int(missing[0])
        raise FormatError(path, int(beam_at[k]) + sector_at, f"{what} beam {k}: a tx sector number of the "
                                                             f"datagram's {sorted(ids.tolist())}")
    return BeamWalk(beam_at, beam_at + header_bytes, counts, tilt, header_bytes, after)


@jit
def _gather_kernel(buf, src, counts, dst, out):
    # serial: a few hundred short copies per ping; waking parallel workers costs more
    for k in range(src.shape[0]):
        out[dst[k]:dst[k] + counts[k]] = buf[src[k]:src[k] + counts[k]]


HeaderReader = Callable[[np.ndarray, np.ndarray, np.ndarray], dict[str, np.ndarray]]


def assemble(rows: list[tuple], walks: list[list[tuple[int, BeamWalk]]], buffers: list[np.ndarray],
             read_headers: HeaderReader, path) -> WaterColumn:
    """A :class:`WaterColumn` from per-ping ``rows`` ``(time_ns, counter, head, sound speed,
    sample rate, datagram offset)`` and, per ping, its datagrams' ``(buffer index, walk)``
    in order. ``read_headers(buffer, beam_at, header_bytes)`` returns the beams'
    ``beam_angle_deg``, ``start_sample``, ``detected_range_samples`` and ``tx_sector``.
    Headers are gathered and samples copied once per buffer, straight into the result."""
    flat = [w for ping in walks for w in ping]
    counts = np.concatenate([w.counts for _, w in flat]) if flat else np.zeros(0, np.int64)
    walk_start = np.zeros(len(flat) + 1, np.int64)
    np.cumsum([len(w.counts) for _, w in flat], out=walk_start[1:])
    beam_start = walk_start[np.concatenate([[0], np.cumsum([len(ping) for ping in walks])]).astype(np.int64)]
    sample_start = np.zeros(len(counts) + 1, np.int64)
    np.cumsum(counts, out=sample_start[1:])
    amplitude = np.empty(int(sample_start[-1]), np.uint8)
    columns: dict[str, np.ndarray] = {}
    which = np.array([b for b, _ in flat], np.int64)
    for b, buf in enumerate(buffers):
        idx = np.flatnonzero(which == b).tolist()
        if not idx:
            continue
        part = [flat[i][1] for i in idx]
        dest = np.concatenate([np.arange(walk_start[i], walk_start[i + 1]) for i in idx])
        beam_at = np.concatenate([w.beam_at for w in part])
        header_bytes = np.repeat([w.header_bytes for w in part], [len(w.counts) for w in part])
        for name, col in read_headers(buf, beam_at, header_bytes).items():
            columns.setdefault(name, np.empty(len(counts), col.dtype))[dest] = col
        _gather_kernel(buf, np.concatenate([w.sample_at for w in part]), counts[dest], sample_start[dest], amplitude)
    cols = list(zip(*rows)) if rows else [()] * 6
    empty = {"beam_angle_deg": np.float32, "start_sample": np.uint16, "detected_range_samples": np.float32,
             "tx_sector": np.uint8}
    beam: dict[str, Any] = {name: columns.get(name, np.zeros(0, dtype)) for name, dtype in empty.items()}
    return WaterColumn(
        time_ns=np.asarray(cols[0], np.int64), ping_counter=np.asarray(cols[1], np.uint16),
        head=np.asarray(cols[2], np.uint16), sound_speed_m_s=np.asarray(cols[3], np.float32),
        sample_rate_hz=np.asarray(cols[4], np.float32), datagram_offset=np.asarray(cols[5], np.int64),
        beam_start=beam_start, tilt_deg=np.concatenate([w.tilt for _, w in flat]) if flat else np.zeros(0, np.float32),
        sample_start=sample_start, amplitude=amplitude.view(np.int8), path=path, **beam,
    )


def water_column_world(wc: WaterColumn, poses: PingPoses, origin_m: np.ndarray, origin: Origin,
                       threshold_db: float | None = None, top_k: int | None = None) -> SonarWorld:
    """The selected samples of the placed pings as world points.

    ``poses`` (rows aligned with ``wc``'s pings) places each ping as for its soundings;
    ``origin_m (P, 3)`` is the beams' acoustic origin in the soundings' frame (x fwd,
    y stbd, z down). Samples with ``amplitude_db >= threshold_db`` are kept (all when
    None), with ``top_k`` only each ping's ``top_k`` strongest of those. The sweep's
    intensity is the amplitude in dB; extras ``ping_index``, ``pose_extrapolated``,
    ``beam_index`` (within the ping), ``sample_index`` (within the beam), ``range_m``.
    """
    check_pose_values(wc.path, poses)
    origin_m = np.array(origin_m, np.float64)
    bad = np.flatnonzero(poses.placed & ~np.isfinite(origin_m).all(axis=1))
    if len(bad):
        raise FormatError(wc.path, int(poses.offset[bad[0]]), f"ping {bad[0]}: a finite acoustic origin (transducer "
                                                              f"depth and offsets), found {origin_m[bad[0]]}")
    origin_m[~poses.placed] = 0.0
    thr = None if threshold_db is None else threshold_db / AMPLITUDE_DB_PER_UNIT
    pss = wc.ping_sample_start
    placed_samples = np.repeat(poses.placed, np.diff(pss))
    samples = select_samples(wc.amplitude, pss, thr, top_k)
    samples = samples[placed_samples[samples]]
    xyz, beam = sample_points(samples, wc.sample_start, wc.beam_start, wc.start_sample, wc.beam_angle_deg,
                              wc.tilt_deg, wc.metres_per_sample, origin_m)
    ping = np.repeat(np.arange(wc.num_pings), np.diff(wc.beam_start))[beam]
    sel = np.flatnonzero(poses.placed)
    counts = np.bincount(ping, minlength=wc.num_pings)[sel]
    start = np.zeros(len(sel) + 1, np.int64)
    np.cumsum(counts, out=start[1:])
    pick = lambda a: np.asarray(a)[sel]
    world = soundings_to_world(pick(poses.lat_deg), pick(poses.lon_deg), pick(poses.heading_deg),
                               pick(poses.base_height_m), pick(poses.z_offset_m), start, xyz[:, 0], xyz[:, 1],
                               xyz[:, 2], origin)
    t = np.asarray(poses.time_ns, np.int64)
    t0 = int(t[sel[0]]) if len(sel) else 0
    in_beam = samples - wc.sample_start[beam]
    sweep = Sweep(
        xyz=world, timestamp_ns=t0,
        intensity=wc.amplitude[samples].astype(np.float32) * np.float32(AMPLITUDE_DB_PER_UNIT),
        time_offset_ns=t[ping] - t0, frame="world",
        extra={"ping_index": ping.astype(np.int32), "pose_extrapolated": np.asarray(poses.extrapolated, bool)[ping],
               "beam_index": (beam - wc.beam_start[ping]).astype(np.int32), "sample_index": in_beam.astype(np.int32),
               "range_m": ((wc.start_sample[beam] + in_beam) * wc.metres_per_sample[ping]).astype(np.float32)},
    )
    return SonarWorld(sweep=sweep, xyz_world=world, unplaced=list(poses.unplaced))


def ping_rows(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    """For each ``keys[i]`` (a structured/tuple key per water-column ping), the row of
    ``table`` with the same key, or -1."""
    index = {tuple(k): i for i, k in enumerate(table.tolist())}
    return np.array([index.get(tuple(k), -1) for k in keys.tolist()], np.int64)


def poses_for(poses: PingPoses, rows: np.ndarray, time_ns: np.ndarray, offset: np.ndarray,
              missing: str) -> PingPoses:
    """``poses`` of the sounding pings at ``rows`` (-1: none), re-indexed for the water-column
    pings (their ``time_ns`` and ``offset``); a ping without a row is unplaced with ``missing``,
    one whose sounding ping is unplaced with that ping's reason."""
    rows = np.asarray(rows, np.int64)
    n = len(rows)
    has = rows >= 0
    r = np.where(has, rows, 0)
    if len(poses.placed) == 0:
        has[:] = False
    lat, lon, heading, base, z_offset = [
        np.where(has, np.asarray(a, np.float64)[r], np.nan) if has.any() else np.full(n, np.nan)
        for a in (poses.lat_deg, poses.lon_deg, poses.heading_deg, poses.base_height_m, poses.z_offset_m)]
    placed = has & np.asarray(poses.placed, bool)[r] if has.any() else np.zeros(n, bool)
    extrapolated = has & np.asarray(poses.extrapolated, bool)[r] if has.any() else np.zeros(n, bool)
    reasons = dict(poses.unplaced)
    unplaced = [(int(i), reasons.get(int(rows[i]), "") if has[i] else missing) for i in np.flatnonzero(~placed)]
    return PingPoses(lat, lon, heading, base, z_offset, np.asarray(time_ns, np.int64), np.asarray(offset, np.int64),
                     placed, extrapolated, unplaced)


def _warmup() -> None:
    buf = np.zeros(16, np.uint8)
    buf[2] = 2
    walk = walk_beams(buf, 0, 16, 1, 4, 2, 1, False, (np.zeros(1, np.int64), np.zeros(1, np.float32), 3, 1), None,
                      "warmup")
    _gather_kernel(buf, walk.sample_at, walk.counts, np.zeros(1, np.int64), np.empty(2, np.uint8))
