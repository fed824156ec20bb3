"""Radar sweeps: nuScenes' 18-field radar PCD and a generic per-point radar PCD, read and written.

Both are PCD files (the container of :mod:`formats.pcd`); readers return an
:class:`engine.radar.RadarSweep` in the sensor frame (x forward, y left, z up on nuScenes
radars).

**nuScenes radar** (``"nuscenes_radar"``, Continental ARS408 clusters, ``DATA binary``), the
layout of nuscenes-devkit's ``RadarPointCloud.from_file`` (each header line split in two here)::

    FIELDS x y z dyn_prop id rcs vx vy vx_comp vy_comp
    SIZE   4 4 4 1        2  4   4  4  4       4
    TYPE   F F F I        I  F   F  F  F       F
           ... is_quality_valid ambig_state x_rms y_rms invalid_state pdh0 vx_rms vy_rms
           ... 1                1           1     1     1             1    1      1
           ... I                I           I     I     I             I    I      I

``x y z`` metres, ``rcs`` dBsm, ``vx vy`` the radial velocity's components along x and y
(m/s, relative to the sensor), ``vx_comp vy_comp`` the same compensated by the sensor for the
ego motion; the state fields are described in the devkit. The devkit's default filters are
applied unless told otherwise: ``invalid_state`` in ``{0}``, ``dyn_prop`` in ``0..6``,
``ambig_state`` in ``{3}``. As in the devkit, a first point holding a NaN marks an empty sweep.
The sweep's ``radial_velocity_mps`` is ``(vx, vy) · (x, y) / |(x, y)|`` (the ARS408 is a
planar radar: its Doppler is measured in the x-y plane; NaN at ``x = y = 0``); the kept
records themselves, all 18 fields as read, are ``extra["nuscenes"]`` (one structured column of
:data:`NUSCENES_RADAR_DTYPE`, e.g. ``sweep.extra["nuscenes"]["dyn_prop"]``). The timestamp comes from a nuScenes file
name ``…__<µs>.pcd`` unless given.

**Generic radar PCD** (``"radar_pcd"``): any PCD encoding with float fields ``x y z``
(metres), ``radial_velocity`` (m/s, range rate, positive receding, not ego-compensated) and
``rcs`` (dBsm); further fields go to ``extra``.

:class:`LogRadar` is a raw log's radar entry (:mod:`formats.raw_log`).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from engine._jit import jit
from engine.radar import RadarSweep
from engine.se3 import SE3
from engine.sweep import Sweep
from formats.errors import FormatError, load_source
from formats.pcd import PcdHeader, parse_pcd_header, read_pcd, write_pcd
from formats.rig import checked_name, pose_from_json, pose_to_json

# (name, PCD TYPE, SIZE) of the 18 fields, in file order
NUSCENES_RADAR_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("x", "F", 4), ("y", "F", 4), ("z", "F", 4), ("dyn_prop", "I", 1), ("id", "I", 2), ("rcs", "F", 4),
    ("vx", "F", 4), ("vy", "F", 4), ("vx_comp", "F", 4), ("vy_comp", "F", 4), ("is_quality_valid", "I", 1),
    ("ambig_state", "I", 1), ("x_rms", "I", 1), ("y_rms", "I", 1), ("invalid_state", "I", 1), ("pdh0", "I", 1),
    ("vx_rms", "I", 1), ("vy_rms", "I", 1),
)
NUSCENES_RADAR_DTYPE = np.dtype([(n, f"<{'f' if t == 'F' else 'i'}{s}") for n, t, s in NUSCENES_RADAR_FIELDS])
RECORDS = "nuscenes"  # RadarSweep.extra key of the file's records (NUSCENES_RADAR_DTYPE)
# nuscenes-devkit RadarPointCloud's default filters
DEFAULT_INVALID_STATES = (0,)
DEFAULT_DYNPROP_STATES = tuple(range(7))
DEFAULT_AMBIG_STATES = (3,)
# what the writer puts in the state fields it is not given: dyn_prop 4 = unknown, ambig_state
# 3 = unambiguous, invalid_state 0 = valid, is_quality_valid 1, pdh0 1 = false-alarm probability < 25 %
WRITE_DEFAULTS = {"dyn_prop": 4, "is_quality_valid": 1, "ambig_state": 3, "invalid_state": 0, "pdh0": 1,
                  "x_rms": 0, "y_rms": 0, "vx_rms": 0, "vy_rms": 0}
_STAMP = re.compile(r"__(\d+)\.pcd$")
_headers: dict[bytes, PcdHeader] = {}  # parsed headers by their bytes (a log's files share a few)

GENERIC_FIELDS = ("radial_velocity", "rcs")


def _nuscenes_header(path: str | None, data: bytes) -> PcdHeader:
    """The PCD header of ``data`` (parsed by :mod:`formats.pcd`), checked to be the nuScenes
    radar layout; valid headers are cached by their bytes (a log's files share a few)."""
    end = data.find(b"\n", data.find(b"\nDATA") + 1)
    key = data[:end + 1] if end > 0 else b""
    hdr = _headers.get(key)
    if hdr is not None:
        return hdr
    hdr = parse_pcd_header(path or "<bytes>", data)
    want = [(n, t, s, 1) for n, t, s in NUSCENES_RADAR_FIELDS]
    have = list(zip(hdr.fields, hdr.types, hdr.sizes, hdr.counts))
    if len(have) != len(want):
        raise FormatError(path, 0, f"the 18 nuScenes radar fields, found {len(have)}: {' '.join(hdr.fields)}")
    for k, (w, h) in enumerate(zip(want, have)):
        if w != h:
            raise FormatError(path, 0, f"field {k} {w[0]!r} TYPE {w[1]} SIZE {w[2]} COUNT 1 (the nuScenes radar "
                                       f"layout), found {h[0]!r} TYPE {h[1]} SIZE {h[2]} COUNT {h[3]}")
    if hdr.data != "binary" or hdr.height != 1:
        raise FormatError(path, hdr.data_offset, f"DATA binary and HEIGHT 1 (nuScenes radar), found DATA {hdr.data} "
                                                 f"HEIGHT {hdr.height}")
    if key and len(_headers) < 64:
        _headers[key] = hdr
    return hdr


def _timestamp(path: str | None, timestamp_ns: int | None) -> int:
    if timestamp_ns is not None:
        return int(timestamp_ns)
    m = _STAMP.search(path or "")
    return int(m.group(1)) * 1000 if m else 0


@lru_cache(maxsize=32)
def _filter(invalid: tuple[int, ...] | None, dynprop: tuple[int, ...] | None, ambig: tuple[int, ...] | None
            ) -> np.ndarray:
    """``(3, 256) bool``: row k says which values of state field k (``invalid_state``,
    ``dyn_prop``, ``ambig_state``; an int8 value v at v & 0xFF) are kept (all, for None)."""
    lut = np.ones((3, 256), np.bool_)
    for k, values in enumerate((invalid, dynprop, ambig)):
        if values is not None:
            lut[k] = False
            lut[k, [v & 0xFF for v in values if -128 <= v < 128]] = True
    return lut


def _records(source: str | os.PathLike | bytes) -> tuple[str | None, int, memoryview]:
    """``(path, byte offset of the records, the records' bytes)`` of one nuScenes radar file."""
    path, data = load_source(source)
    p = None if path is None else os.fspath(path)
    hdr = _nuscenes_header(p, data)
    n, row, start = hdr.points, NUSCENES_RADAR_DTYPE.itemsize, hdr.data_offset
    if len(data) - start < n * row:
        raise FormatError(p, len(data), f"{n} points x {row} bytes of binary data, found {len(data) - start}")
    return p, start, memoryview(data)[start:start + n * row]


def read_nuscenes_radar_sweeps(
    sources: Sequence[str | os.PathLike | bytes],
    *,
    invalid_states: Iterable[int] | None = DEFAULT_INVALID_STATES,
    dynprop_states: Iterable[int] | None = DEFAULT_DYNPROP_STATES,
    ambig_states: Iterable[int] | None = DEFAULT_AMBIG_STATES,
    timestamps_ns: Sequence[int | None] | None = None,
) -> list[RadarSweep]:
    """Read nuScenes radar ``.pcd`` files (paths or bytes) into sensor-frame sweeps, decoded
    together in one pass (what a multi-sweep accumulation reads).

    The state filters keep the points whose field is one of the given values (``None``: keep
    all); the defaults are the devkit's. ``timestamps_ns`` overrides, per file, the name's
    ``__<µs>.pcd``. FormatError (naming the file) for another layout, short data or a
    non-finite position of a kept point.
    """
    files = [_records(s) for s in sources]
    stamps = timestamps_ns if timestamps_ns is not None else [None] * len(files)
    if len(stamps) != len(files):
        raise ValueError(f"{len(files)} files but {len(stamps)} timestamps")
    row = NUSCENES_RADAR_DTYPE.itemsize
    raw = np.frombuffer(b"".join(f[2] for f in files), np.uint8).reshape(-1, row)  # a point per row
    starts = np.array([0, *accumulate(len(f[2]) // row for f in files)], np.int64)
    n = len(raw)
    rows, xyz = np.empty(n, np.int64), np.empty((n, 3), np.float32)
    radial, rcs, bounds = np.empty(n, np.float32), np.empty(n, np.float32), np.empty(len(files) + 1, np.int64)
    lut = _filter(*(None if v is None else tuple(v) for v in (invalid_states, dynprop_states, ambig_states)))
    rec = raw.view(NUSCENES_RADAR_DTYPE).reshape(-1)
    m, bad = _decode_kernel(rec, lut, starts, rows, xyz, radial, rcs, bounds)
    if bad >= 0:
        f = int(np.searchsorted(starts, bad, side="right")) - 1
        k = bad - int(starts[f])
        raise FormatError(files[f][0], files[f][1] + k * row, f"finite x y z (point {k})")
    if m < n:  # gathered as raw bytes (NumPy copies structured rows field by field)
        rec = raw.take(rows[:m], axis=0).view(NUSCENES_RADAR_DTYPE).reshape(-1)
    return [RadarSweep.unchecked(xyz[a:b], radial[a:b], rcs[a:b], _timestamp(f[0], t), "radar", {RECORDS: rec[a:b]})
            for f, t, a, b in zip(files, stamps, bounds[:-1].tolist(), bounds[1:].tolist())]


@jit
def _decode_kernel(rec, lut, starts, rows, xyz, radial, rcs, bounds):
    """The records ``rec`` (:data:`NUSCENES_RADAR_DTYPE`) kept by the state filters (``lut``,
    :func:`_filter`), file by file (``starts``): their rows, positions, radial velocities
    ``(vx, vy) · (x, y) / |(x, y)|`` (in float64; NaN at x = y = 0) and RCS, and where each
    file's kept points start; a file whose first record holds a NaN in a float field (the
    devkit's empty-sweep marker) keeps none. Returns ``(kept count, first kept record with a
    non-finite position or -1)``."""
    m = 0
    for s in range(starts.shape[0] - 1):
        bounds[s] = m
        if starts[s] < starts[s + 1]:
            r = rec[starts[s]]
            if (math.isnan(r.x) or math.isnan(r.y) or math.isnan(r.z) or math.isnan(r.rcs) or math.isnan(r.vx)
                    or math.isnan(r.vy) or math.isnan(r.vx_comp) or math.isnan(r.vy_comp)):
                continue
        for i in range(starts[s], starts[s + 1]):
            r = rec[i]
            if not (lut[0, r.invalid_state & 0xFF] and lut[1, r.dyn_prop & 0xFF] and lut[2, r.ambig_state & 0xFF]):
                continue
            x, y, z = float(r.x), float(r.y), float(r.z)
            if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(z)):
                return m, i
            xyz[m, 0], xyz[m, 1], xyz[m, 2] = r.x, r.y, r.z
            rcs[m] = r.rcs
            h = math.hypot(x, y)
            radial[m] = (float(r.vx) * x + float(r.vy) * y) / h if h > 0.0 else np.nan
            rows[m] = i
            m += 1
    bounds[starts.shape[0] - 1] = m
    return m, -1


def read_nuscenes_radar(
    source: str | os.PathLike | bytes,
    *,
    invalid_states: Iterable[int] | None = DEFAULT_INVALID_STATES,
    dynprop_states: Iterable[int] | None = DEFAULT_DYNPROP_STATES,
    ambig_states: Iterable[int] | None = DEFAULT_AMBIG_STATES,
    timestamp_ns: int | None = None,
) -> RadarSweep:
    """Read one nuScenes radar ``.pcd`` (path or bytes): :func:`read_nuscenes_radar_sweeps`."""
    return read_nuscenes_radar_sweeps([source], invalid_states=invalid_states, dynprop_states=dynprop_states,
                                      ambig_states=ambig_states, timestamps_ns=[timestamp_ns])[0]


def _planar(values: np.ndarray, xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radial speeds ``(N,)`` as components along x and y: ``v (x, y) / |(x, y)|`` (0 at x = y = 0)."""
    xy = xyz[:, :2].astype(np.float64)
    norm = np.hypot(xy[:, 0], xy[:, 1])
    unit = np.divide(xy, norm[:, None], out=np.zeros_like(xy), where=norm[:, None] > 0)
    v = np.asarray(values, np.float64)[:, None] * unit
    return v[:, 0], v[:, 1]


def nuscenes_radar_bytes(sweep: RadarSweep, compensated_mps: np.ndarray | None = None) -> bytes:
    """A sensor-frame sweep as nuScenes radar PCD bytes (the header lines in the order the
    devkit parses them, a trailing newline after the records, which its reader needs).

    ``x y z rcs`` are the sweep's. The other 14 fields are those of ``extra["nuscenes"]``
    when the sweep has it (a sweep read by :func:`read_nuscenes_radar` is written back as
    read, filters aside); otherwise ``vx vy`` from ``radial_velocity_mps`` and ``vx_comp
    vy_comp`` from ``compensated_mps`` ``(N,)`` (required then), each the radial speed along
    the line of sight in the x-y plane, ``id`` the row number, the states
    :data:`WRITE_DEFAULTS`. An empty sweep is one NaN point (the devkit's marker).
    ValueError for more than 32768 points (``id`` is int16).
    """
    n = len(sweep)
    if n > 32768:
        raise ValueError(f"a nuScenes radar sweep holds at most 32768 points (int16 id), got {n}")
    records = sweep.extra.get(RECORDS)
    if records is not None and records.dtype != NUSCENES_RADAR_DTYPE:
        raise ValueError(f"extra[{RECORDS!r}] must have dtype {NUSCENES_RADAR_DTYPE}, got {records.dtype}")
    if n and records is None and compensated_mps is None:
        raise ValueError(f"vx_comp / vy_comp: pass compensated_mps or a sweep with extra[{RECORDS!r}]")
    rec = np.zeros(max(n, 1), NUSCENES_RADAR_DTYPE)
    if n == 0:
        for name, t, _ in NUSCENES_RADAR_FIELDS:
            if t == "F":
                rec[name] = np.nan
    elif records is not None:
        rec[:] = records
    else:
        comp = np.asarray(compensated_mps, np.float64)
        if comp.shape != (n,):
            raise ValueError(f"compensated_mps must have shape ({n},), got {comp.shape}")
        rec["vx"], rec["vy"] = _planar(sweep.radial_velocity_mps, sweep.xyz)
        rec["vx_comp"], rec["vy_comp"] = _planar(comp, sweep.xyz)
        rec["id"] = np.arange(n)
        for name, value in WRITE_DEFAULTS.items():
            rec[name] = value
    if n:
        rec["x"], rec["y"], rec["z"] = sweep.xyz.T
        rec["rcs"] = sweep.rcs_dbsm
    header = "\n".join([
        "# .PCD v0.7 - Point Cloud Data file format", "VERSION 0.7",
        "FIELDS " + " ".join(n for n, _, _ in NUSCENES_RADAR_FIELDS),
        "SIZE " + " ".join(str(s) for _, _, s in NUSCENES_RADAR_FIELDS),
        "TYPE " + " ".join(t for _, t, _ in NUSCENES_RADAR_FIELDS),
        "COUNT " + " ".join("1" for _ in NUSCENES_RADAR_FIELDS),
        f"WIDTH {len(rec)}", "HEIGHT 1", "VIEWPOINT 0 0 0 1 0 0 0", f"POINTS {len(rec)}", "DATA binary", "",
    ])
    return header.encode("ascii") + rec.tobytes() + b"\n"


def write_nuscenes_radar(path: str | os.PathLike, sweep: RadarSweep, compensated_mps: np.ndarray | None = None
                         ) -> None:
    """Write :func:`nuscenes_radar_bytes` to ``path``."""
    Path(path).write_bytes(nuscenes_radar_bytes(sweep, compensated_mps))


def read_radar_pcd(path: str | os.PathLike, *, timestamp_ns: int | None = None) -> RadarSweep:
    """Read a generic radar PCD (module docstring); FormatError naming a missing field."""
    sweep = read_pcd(path)
    p = os.fspath(path)
    extra = dict(sweep.extra)
    if sweep.intensity is not None:
        extra["intensity"] = sweep.intensity
    for name in GENERIC_FIELDS:
        if name not in extra or extra[name].ndim != 1 or extra[name].dtype.kind != "f":
            raise FormatError(p, 0, f"a float field {name!r} (radar PCD: x y z radial_velocity rcs), found "
                                    f"{sorted(['x', 'y', 'z', *extra])}")
    if not np.all(np.isfinite(sweep.xyz)):
        raise FormatError(p, None, "finite x y z")
    radial, rcs = (extra.pop(name) for name in GENERIC_FIELDS)
    return RadarSweep(sweep.xyz, radial, rcs, _timestamp(p, timestamp_ns), "radar", extra)


def write_radar_pcd(path: str | os.PathLike, sweep: RadarSweep, encoding: str = "binary") -> None:
    """Write ``sweep`` as a generic radar PCD (F4 ``x y z radial_velocity rcs``, then its extras)."""
    extra = {"radial_velocity": sweep.radial_velocity_mps, "rcs": sweep.rcs_dbsm, **sweep.extra}
    write_pcd(path, Sweep(sweep.xyz, sweep.timestamp_ns, extra=extra), encoding)


RADAR_FORMATS: dict[str, Callable[..., RadarSweep]] = {"nuscenes_radar": read_nuscenes_radar,
                                                       "radar_pcd": read_radar_pcd}


def read_radar(path: str | os.PathLike, format: str, *, timestamp_ns: int | None = None) -> RadarSweep:
    """Read a radar sweep in ``format`` (a key of :data:`RADAR_FORMATS`)."""
    if format not in RADAR_FORMATS:
        raise ValueError(f"unknown radar format {format!r}; known: {sorted(RADAR_FORMATS)}")
    return RADAR_FORMATS[format](path, timestamp_ns=timestamp_ns)


# ---------------------------------------------------------------- raw-log entry


@dataclass(frozen=True)
class LogRadar:
    """A radar of a raw log: name, extrinsic ``ego_from_sensor``, file format (a key of
    :data:`RADAR_FORMATS`). Its id is its position in the log's ``radars`` list."""

    name: str
    ego_from_sensor: SE3
    format: str


def radar_to_json(radar: LogRadar) -> dict[str, Any]:
    """``{"name", "ego_from_sensor": [qw qx qy qz tx ty tz], "format"}``."""
    return {"name": radar.name, "ego_from_sensor": pose_to_json(radar.ego_from_sensor), "format": radar.format}


def radar_from_json(d: Any, path: str | os.PathLike, what: str) -> LogRadar:
    """The :class:`LogRadar` of an entry; FormatError naming ``what`` and the field at fault."""
    if not isinstance(d, Mapping):
        raise FormatError(path, None, f"{what}: an object {{name, ego_from_sensor, format}}, got {d!r}")
    fmt = d.get("format")
    if fmt not in RADAR_FORMATS:
        raise FormatError(path, None, f"{what}.format one of {sorted(RADAR_FORMATS)}, got {fmt!r}")
    return LogRadar(checked_name(d.get("name"), path, f"{what}.name"),
                    pose_from_json(d.get("ego_from_sensor"), path, f"{what}.ego_from_sensor"), fmt)


def _warmup() -> None:
    read_nuscenes_radar(nuscenes_radar_bytes(RadarSweep(np.ones((1, 3)), np.zeros(1), np.zeros(1)), np.zeros(1)))
