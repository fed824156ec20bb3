"""Pose files → :class:`PoseTrack` ``world_from_ego``, through :mod:`engine.pose_sources`.

- **GNSS/INS CSV** (:func:`read_gnss_csv`): UTF-8/ASCII text, comma-separated, the first
  non-blank line a header naming the columns (any order; other columns are ignored; blank
  lines are skipped). Required columns:

  ========================== ==============================================================
  time, exactly one of       ``timestamp_ns`` (integer ns, UNIX epoch) or ``time_s``
                             (decimal seconds, at most 9 decimals, read exactly to ns)
  position                   ``lat_deg``, ``lon_deg`` (WGS84 degrees), ``alt_m`` (metres
                             above the ellipsoid)
  attitude, each ``_deg`` or ``roll_deg``/``roll_rad``, ``pitch_deg``/``pitch_rad``,
  ``_rad`` (exactly one)     ``yaw_deg``/``yaw_rad``
  ========================== ==============================================================

  The angle convention is the caller's ``yaw_convention`` (no default: a file does not say):
  ``"enu"`` = yaw counter-clockwise from east, pitch positive nose down, roll positive left
  side up (ROS REP 103, KITTI oxts); ``"ned"`` = heading clockwise from north, pitch positive
  nose up, roll positive right side down (most INS). Both are intrinsic z-y'-x''; see
  :mod:`engine.pose_sources`. Times must strictly increase down the file.
- **KITTI oxts directory** (:func:`read_kitti_oxts`): ``oxts/timestamps.txt`` (one
  ``YYYY-MM-DD HH:MM:SS.fffffffff`` per line, read as UTC) and ``oxts/data/NNNNNNNNNN.txt``
  (10-digit names from 0, one line of the 30 oxts values each); fields 0-5 are lat, lon
  (deg), alt (m), roll, pitch, yaw (rad, ``"enu"``). Times must strictly increase.
- **nuScenes** ``ego_pose.json`` (:func:`read_nuscenes_ego_poses`): a JSON list of records
  ``{"token", "timestamp" (integer µs), "rotation" [w, x, y, z], "translation" [x, y, z] (m)}``.
  The file is a database table (records of every log, in no time order): the track is
  sorted by time, records sharing a timestamp merge when their poses agree (1e-9), and
  differing poses at one timestamp are an error; ``tokens`` selects one log's records.

Every reader raises :class:`FormatError` naming the file, the byte offset and line (or the
record index and token) and the column or field at fault. The GNSS and oxts readers return
``(track, origin)``; the origin defaults to the earliest sample (see :mod:`engine.geodesy`).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from engine.geodesy import Origin
from engine.pose_sources import (
    KITTI_OXTS_FIELDS,
    YawConvention,
    from_gnss_ins,
    from_kitti_oxts,
    from_nuscenes_ego_poses,
)
from engine.pose_track import PoseTrack
from formats.errors import FormatError, ascii_lines, load_source

TIME_COLUMNS = ("timestamp_ns", "time_s")
POSITION_COLUMNS = ("lat_deg", "lon_deg", "alt_m")
ANGLE_COLUMNS = ("roll", "pitch", "yaw")  # each with the suffix _deg or _rad


def read_text_lines(path: str | os.PathLike) -> list[tuple[int, str]]:
    """``(byte offset, stripped line)`` of every non-blank line of an ASCII text file.

    ``FormatError`` for an unreadable file or a non-ASCII line.
    """
    _, data = load_source(Path(path))
    return ascii_lines(data, path)


def parse_floats(path: str | os.PathLike, offset: int, fields: list[str], what: str) -> np.ndarray:
    """``fields`` as finite float64 numbers; ``FormatError`` at ``offset`` naming ``what`` otherwise."""
    try:
        v = np.array([float(f) for f in fields])
    except ValueError:
        raise FormatError(path, offset, f"{what}: numbers, got {' '.join(fields)[:80]!r}") from None
    if not np.all(np.isfinite(v)):
        raise FormatError(path, offset, f"{what}: finite numbers, got {' '.join(fields)[:80]!r}")
    return v


def _check_increasing(path, times: np.ndarray, offsets: list[int], lines: list[int]) -> None:
    bad = np.flatnonzero(np.diff(times) <= 0)
    if len(bad):
        k = int(bad[0]) + 1
        what = "a duplicate time" if times[k] == times[k - 1] else "a time earlier than the line before"
        raise FormatError(path, offsets[k], f"line {lines[k]}: times strictly increasing, got {what} "
                                            f"({int(times[k])} ns after {int(times[k - 1])} ns)")


# ---------------------------------------------------------------- GNSS/INS CSV


def _seconds_to_ns(text: str) -> int:
    """Decimal seconds (``123.456789012``, at most 9 decimals, no sign or exponent) → int ns, exactly."""
    whole, dot, frac = text.partition(".")
    if not whole.isdigit() or (dot and not frac.isdigit()) or len(frac) > 9:
        raise ValueError(text)
    return int(whole) * 1_000_000_000 + int(frac.ljust(9, "0") or "0")


def _pick(path, offset: int, header: list[str], names: tuple[str, ...], what: str) -> str:
    found = [n for n in names if n in header]
    if len(found) != 1:
        raise FormatError(path, offset, f"line 1 (header): exactly one {what} column of {list(names)}, "
                                        f"got {found or 'none'} in {header}")
    return found[0]


def read_gnss_csv(
    path: str | os.PathLike, yaw_convention: YawConvention, origin: Origin | None = None
) -> tuple[PoseTrack, Origin]:
    """A GNSS/INS CSV (columns in the module docstring) → ``(world_from_ego track, origin)``."""
    if yaw_convention not in ("enu", "ned"):
        raise ValueError(f"yaw_convention must be 'enu' or 'ned', got {yaw_convention!r}")
    _, data = load_source(Path(path))
    offset, line_no = (3, 1) if data.startswith(b"\xef\xbb\xbf") else (0, 1)
    rows: list[tuple[int, int, list[str]]] = []
    for raw in data[offset:].split(b"\n"):
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            raise FormatError(path, offset, f"line {line_no}: UTF-8 text") from None
        if text:
            rows.append((offset, line_no, [f.strip() for f in text.split(",")]))
        offset += len(raw) + 1
        line_no += 1
    if not rows:
        raise FormatError(path, 0, "a header line naming the columns")
    h_off, _, header = rows[0]
    if len(set(header)) != len(header):
        raise FormatError(path, h_off, f"line 1 (header): distinct column names, got {header}")
    time_col = _pick(path, h_off, header, TIME_COLUMNS, "time")
    for name in POSITION_COLUMNS:
        _pick(path, h_off, header, (name,), "position")
    angle_cols = [_pick(path, h_off, header, (f"{a}_deg", f"{a}_rad"), a) for a in ANGLE_COLUMNS]
    if len(rows) == 1:
        raise FormatError(path, offset, "at least one data line after the header")
    index = {name: header.index(name) for name in (time_col, *POSITION_COLUMNS, *angle_cols)}
    k = len(rows) - 1
    times = np.empty(k, dtype=np.int64)
    values = {name: np.empty(k) for name in (*POSITION_COLUMNS, *angle_cols)}
    for r, (off, line, fields) in enumerate(rows[1:]):
        if len(fields) != len(header):
            raise FormatError(path, off, f"line {line}: {len(header)} comma-separated values, got {len(fields)}")
        text = fields[index[time_col]]
        try:
            times[r] = int(text) if time_col == "timestamp_ns" else _seconds_to_ns(text)
        except (ValueError, OverflowError):
            unit = "integer nanoseconds" if time_col == "timestamp_ns" else "decimal seconds (≤ 9 decimals)"
            raise FormatError(path, off, f"line {line}, column {time_col!r}: {unit}, got {text[:40]!r}") from None
        for name, arr in values.items():
            text = fields[index[name]]
            try:
                v = float(text)
            except ValueError:
                raise FormatError(path, off, f"line {line}, column {name!r}: a number, got {text[:40]!r}") from None
            if not math.isfinite(v):
                raise FormatError(path, off, f"line {line}, column {name!r}: a finite number, got {text[:40]!r}")
            if name == "lat_deg" and abs(v) > 90.0:
                raise FormatError(path, off, f"line {line}, column 'lat_deg': a latitude in [-90, 90], got {v}")
            arr[r] = v
    _check_increasing(path, times, [o for o, _, _ in rows[1:]], [ln for _, ln, _ in rows[1:]])
    columns = {"timestamp_ns": times, **{n: values[n] for n in POSITION_COLUMNS}}
    for a, col in zip(ANGLE_COLUMNS, angle_cols):
        columns[f"{a}_deg"] = values[col] if col.endswith("_deg") else np.degrees(values[col])
    try:
        return from_gnss_ins(columns, yaw_convention, origin)
    except ValueError as exc:
        raise FormatError(path, None, f"valid GNSS/INS poses: {exc}") from None


# ---------------------------------------------------------------- KITTI oxts


def read_oxts(path: str | os.PathLike) -> np.ndarray:
    """An oxts text file (one line of 30 numbers per frame) → ``(K, 30) float64``."""
    rows = []
    for offset, line in read_text_lines(path):
        fields = line.split()
        if len(fields) != KITTI_OXTS_FIELDS:
            raise FormatError(path, offset, f"{KITTI_OXTS_FIELDS} oxts fields, got {len(fields)}")
        rows.append(parse_floats(path, offset, fields, "oxts row"))
    if not rows:
        raise FormatError(path, 0, "at least one oxts row")
    return np.array(rows)


def _kitti_timestamps(path: str | os.PathLike) -> tuple[np.ndarray, list[int]]:
    out, offsets = [], []
    for offset, line in read_text_lines(path):
        try:
            day_time, _, frac = line.partition(".")
            whole = datetime.strptime(day_time, "%Y-%m-%d %H:%M:%S").replace(tzinfo=timezone.utc)
            if not frac.isdigit() or len(frac) > 9:
                raise ValueError(frac)
        except ValueError:
            raise FormatError(path, offset, f"a timestamp YYYY-MM-DD HH:MM:SS.fffffffff, got {line[:40]!r}") from None
        out.append(int(whole.timestamp()) * 1_000_000_000 + int(frac.ljust(9, "0")))
        offsets.append(offset)
    if not out:
        raise FormatError(path, 0, "at least one timestamp")
    return np.array(out, dtype=np.int64), offsets


def read_kitti_timestamps(path: str | os.PathLike) -> np.ndarray:
    """A KITTI raw ``timestamps.txt`` (``YYYY-MM-DD HH:MM:SS.fffffffff`` per line, taken as UTC) → ``(K,) int64`` ns."""
    return _kitti_timestamps(path)[0]


def read_kitti_oxts(oxts_dir: str | os.PathLike, origin: Origin | None = None) -> tuple[PoseTrack, Origin]:
    """A KITTI raw ``oxts`` directory (``timestamps.txt``, ``data/NNNNNNNNNN.txt``) →
    ``(world_from_ego track, origin)``; ego = KITTI's IMU frame (x forward, y left, z up)."""
    d = Path(oxts_dir)
    stamps = d / "timestamps.txt"
    times, offsets = _kitti_timestamps(stamps)
    _check_increasing(stamps, times, offsets, [i + 1 for i in range(len(times))])
    files = sorted((d / "data").glob("*.txt"))
    if len(files) != len(times):
        raise FormatError(stamps, None, f"one timestamp per oxts file: {len(files)} files in {d / 'data'}, "
                                        f"{len(times)} timestamps")
    rows = np.empty((len(files), KITTI_OXTS_FIELDS))
    for i, p in enumerate(files):
        if p.name != f"{i:010d}.txt":
            raise FormatError(p, None, f"consecutive oxts file names from 0, expected {i:010d}.txt")
        one = read_oxts(p)
        if len(one) != 1:
            raise FormatError(p, None, f"one oxts line, got {len(one)}")
        rows[i] = one[0]
    for i, row in enumerate(rows):
        if abs(row[0]) > 90.0:
            raise FormatError(files[i], 0, f"field 0 (lat): a latitude in [-90, 90], got {row[0]}")
    try:
        return from_kitti_oxts(rows, times, origin)
    except ValueError as exc:
        raise FormatError(d, None, f"valid oxts poses: {exc}") from None


# ---------------------------------------------------------------- nuScenes ego_pose


def _numbers(path, i: int, rec: Mapping, field: str, count: int) -> list[float]:
    v = rec.get(field)
    if (not isinstance(v, list) or len(v) != count
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v)):
        raise FormatError(path, None, f"record {i} (token {rec.get('token')!r}), field {field!r}: "
                                      f"a list of {count} finite numbers, got {str(v)[:60]}")
    return v


def nuscenes_ego_pose_track(records: Iterable[Mapping], path: str | os.PathLike) -> PoseTrack:
    """nuScenes ``ego_pose`` records (from ``path``, named in errors) → world_from_ego.

    Sorted by time; records sharing a timestamp merge when their poses agree.
    """
    recs = list(records)
    if not recs:
        raise FormatError(path, None, "at least one ego_pose record")
    by_time: dict[int, int] = {}
    for i, rec in enumerate(recs):
        if not isinstance(rec, Mapping):
            raise FormatError(path, None, f"record {i}: a JSON object, got {type(rec).__name__}")
        ts = rec.get("timestamp")
        if not isinstance(ts, int) or isinstance(ts, bool) or ts < 0:
            raise FormatError(path, None, f"record {i} (token {rec.get('token')!r}), field 'timestamp': "
                                          f"non-negative integer microseconds, got {str(ts)[:40]}")
        _numbers(path, i, rec, "translation", 3)
        q = _numbers(path, i, rec, "rotation", 4)
        if abs(math.sqrt(sum(x * x for x in q)) - 1.0) > 1e-6:
            raise FormatError(path, None, f"record {i} (token {rec.get('token')!r}), field 'rotation': "
                                          f"a unit quaternion (w, x, y, z), got {q}")
        j = by_time.setdefault(ts, i)
        if j != i and not (np.allclose(recs[j]["translation"], rec["translation"], rtol=0, atol=1e-9)
                           and np.allclose(recs[j]["rotation"], rec["rotation"], rtol=0, atol=1e-9)):
            raise FormatError(path, None, f"record {i} (token {rec.get('token')!r}), field 'timestamp': one pose "
                                          f"per time, but record {j} (token {recs[j].get('token')!r}) has "
                                          f"another pose at {ts} µs")
    return from_nuscenes_ego_poses(recs)


def read_nuscenes_ego_poses(path: str | os.PathLike, tokens: Collection[str] | None = None) -> PoseTrack:
    """A nuScenes ``ego_pose.json`` → world_from_ego (the map frame); ``tokens`` keeps only
    those records (one log's), each of which must be present."""
    _, data = load_source(Path(path))
    try:
        records = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise FormatError(path, getattr(exc, "pos", None), f"valid JSON ({exc})") from None
    if not isinstance(records, list):
        raise FormatError(path, 0, f"a JSON list of ego_pose records, got {type(records).__name__}")
    if tokens is not None:
        wanted = set(tokens)
        records = [r for r in records if isinstance(r, Mapping) and r.get("token") in wanted]
        missing = wanted - {r["token"] for r in records}
        if missing:
            raise FormatError(path, None, f"records with tokens {sorted(missing)[:5]}")
    return nuscenes_ego_pose_track(records, path)
