"""Placing swath soundings in the world frame, shared by the KMALL, ``.all`` and GSF readers.

A ping is placed only when its pose can be trusted: each reader decides which pings have a
valid pose (sensor status bits, unavailable markers, position fixes near enough in time)
and passes the others here with a reason; they are listed in :attr:`SonarWorld.unplaced`
and none of their soundings is returned. A value the file gives for a ping that is meant
to be valid but is impossible (NaN heading, latitude beyond ±90°, infinite waterline) is a
damaged file: :class:`FormatError` names the file and the ping's datagram offset.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from engine.geodesy import Origin
from engine.georeference import soundings_to_world
from engine.sweep import Sweep
from formats.errors import FormatError


@dataclass
class SonarWorld:
    """Soundings in the scene's ENU world frame.

    Attributes:
        sweep: frame ``"world"``; ``xyz (N, 3) float32`` metres relative to the origin,
            ``timestamp_ns`` the first placed ping's time, ``time_offset_ns`` each
            sounding's ping time minus it; extras ``ping_index (N,) int32`` (row in the
            log's pings), ``pose_extrapolated (N,) bool`` (the ping lies beyond the span of
            position fixes and its position was extrapolated, see the reader) and the
            reader's per-sounding columns.
        xyz_world: the same positions ``(N, 3) float64``.
        unplaced: ``(ping index, reason)`` of every ping that was not placed.
    """

    sweep: Sweep
    xyz_world: np.ndarray
    unplaced: list[tuple[int, str]] = field(default_factory=list)


@dataclass
class PingPoses:
    """Per ping ``(P,)``: reference-point ``lat_deg``/``lon_deg``, ``heading_deg``, the
    vertical base (``base_height_m`` where ``z == z_offset_m``, see
    :func:`engine.georeference.soundings_to_world`), ``time_ns int64``, ``offset int64``
    (the ping's datagram offset in the file, for errors), ``placed bool`` and
    ``extrapolated bool``; ``unplaced`` the reasons of the pings not placed."""

    lat_deg: np.ndarray
    lon_deg: np.ndarray
    heading_deg: np.ndarray
    base_height_m: np.ndarray
    z_offset_m: np.ndarray
    time_ns: np.ndarray
    offset: np.ndarray
    placed: np.ndarray
    extrapolated: np.ndarray
    unplaced: list[tuple[int, str]]

    def select(self, index: np.ndarray) -> "PingPoses":
        """The poses of the pings ``index`` (in that order); ``unplaced`` left empty."""
        per_ping = (self.lat_deg, self.lon_deg, self.heading_deg, self.base_height_m, self.z_offset_m,
                    self.time_ns, self.offset, self.placed, self.extrapolated)
        lat, lon, heading, base, z_offset, time_ns, offset, placed, extrapolated = (
            np.asarray(v)[index] for v in per_ping)
        return PingPoses(lat, lon, heading, base, z_offset, time_ns, offset, placed, extrapolated, unplaced=[])


def check_pose_values(path: str | os.PathLike | None, poses: PingPoses) -> None:
    """:class:`FormatError` at the datagram of the first placed ping with an impossible pose value."""
    checks = (("latitude", poses.lat_deg, 90.0), ("longitude", poses.lon_deg, 360.0),
              ("heading", poses.heading_deg, None), ("vertical base height", poses.base_height_m, None),
              ("waterline z", poses.z_offset_m, None))
    for what, values, limit in checks:
        v = np.asarray(values, np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(v) if limit is None else ~(np.abs(v) <= limit)
        bad &= poses.placed
        if bad.any():
            p = int(np.flatnonzero(bad)[0])
            rule = "a finite value" if limit is None else f"a finite value within ±{limit:g}°"
            raise FormatError(path, int(poses.offset[p]), f"ping {p}: {what} {rule}, found {v[p]}")


def place_soundings(path: str | os.PathLike | None, poses: PingPoses, start: np.ndarray, x_m: np.ndarray,
                    y_m: np.ndarray, z_m: np.ndarray, keep: np.ndarray, intensity: np.ndarray,
                    extra: dict[str, np.ndarray], origin: Origin) -> SonarWorld:
    """Georeference the soundings of the placed pings.

    ``start (P + 1,)`` splits the soundings ``(N,)`` by ping; ``x_m`` forward, ``y_m``
    starboard, ``z_m`` down, levelled and heading-aligned (Kongsberg SCS); ``keep (N,) bool``
    the soundings to return (e.g. not rejected); ``intensity (N,)`` and ``extra`` per
    sounding. Raises :class:`FormatError` for an impossible pose value of a placed ping.
    """
    check_pose_values(path, poses)
    start = np.asarray(start, np.int64)
    counts = np.diff(start)
    ping = np.repeat(np.arange(len(counts), dtype=np.int32), counts)
    sel = np.flatnonzero(poses.placed)
    sub_start = np.zeros(len(sel) + 1, np.int64)
    np.cumsum(counts[sel], out=sub_start[1:])
    in_placed = np.repeat(poses.placed, counts)
    pick = lambda a: np.asarray(a)[sel]
    world = soundings_to_world(pick(poses.lat_deg), pick(poses.lon_deg), pick(poses.heading_deg),
                               pick(poses.base_height_m), pick(poses.z_offset_m), sub_start,
                               np.asarray(x_m)[in_placed], np.asarray(y_m)[in_placed], np.asarray(z_m)[in_placed],
                               origin)
    k = np.asarray(keep, bool)[in_placed]
    rows = np.flatnonzero(in_placed)[k]
    t = np.asarray(poses.time_ns, np.int64)
    t0 = int(t[sel[0]]) if len(sel) else 0
    xyz = np.ascontiguousarray(world[k])
    sweep = Sweep(
        xyz=xyz, timestamp_ns=t0, intensity=np.asarray(intensity)[rows], time_offset_ns=t[ping[rows]] - t0,
        frame="world",
        extra={"ping_index": ping[rows], "pose_extrapolated": np.asarray(poses.extrapolated, bool)[ping[rows]],
               **{name: np.asarray(v)[rows] for name, v in extra.items()}},
    )
    return SonarWorld(sweep=sweep, xyz_world=xyz, unplaced=list(poses.unplaced))
