"""Passive-sonar layers: one hydrophone array's bearing-time record (``passive/NAME.arrow``).

An Arrow IPC file of one record batch, one row per record frame (the whole recording)::

    time_ns   int64                          the frame's middle (absolute, ns), strictly increasing
    power     fixed_size_list<float32>[B]    beam power per azimuth, one-sided band power in
                                             full-scale² units (engine.passive.beamform)

with the schema metadata key ``fathom.passive`` as JSON::

    {"array": NAME, "azimuth_rad": [B floats], "band_hz": [lo, hi], "centre_ego_m": [x, y, z],
     "frame_s": s, "method": "bartlett" | "mvdr", "nfft": n, "sample_rate_hz": fs}

``azimuth_rad`` are the beams' ego-frame azimuths (x forward, y left: 0 ahead, π/2 to port);
``centre_ego_m`` is the array's acoustic centre (the mean of its element positions, the point
the steering delays are relative to) in the ego frame. :func:`passive_table` builds a table
from a :class:`PassiveRecord`, :func:`read_passive` reads and checks one (FormatError naming
the file).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from formats.errors import FormatError
from formats.rig import checked_name

PASSIVE_KEY = b"fathom.passive"
METHODS = ("bartlett", "mvdr")
MAX_BEAMS = 1 << 14  # azimuths per row, at most


@dataclass(frozen=True)
class PassiveRecord:
    """One array's stored bearing-time record.

    Attributes:
        array: the hydrophone array's name. times_ns: ``(F,) int64`` frame middles.
        power: ``(F, B) float32`` band power per beam (full-scale²). azimuth_rad: ``(B,)
        float64`` ego-frame azimuths. band_hz: ``(2,) float64`` ``[lo, hi]``. centre_ego_m:
        ``(3,) float64`` acoustic centre, ego frame. frame_s, method, nfft, sample_rate_hz: how
        the record was computed.
    """

    array: str
    times_ns: np.ndarray
    power: np.ndarray
    azimuth_rad: np.ndarray
    band_hz: np.ndarray
    centre_ego_m: np.ndarray
    frame_s: float
    method: str
    nfft: int
    sample_rate_hz: float

    def nearest_row(self, time_ns: int) -> int | None:
        """The row whose middle is nearest ``time_ns`` (the earlier on a tie), None when
        ``time_ns`` lies more than half a frame beyond the first or last row's middle."""
        t = self.times_ns
        if not len(t):
            return None
        k = int(np.searchsorted(t, time_ns))
        k = min(range(max(k - 1, 0), min(k + 1, len(t))), key=lambda j: abs(int(t[j]) - time_ns))
        return k if abs(int(t[k]) - time_ns) <= self.frame_s * 5e8 else None


def passive_table(record: PassiveRecord) -> pa.Table:
    """The layer's table (module docstring); ValueError for inconsistent shapes or values."""
    _check(record)
    f, b = record.power.shape
    power = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(record.power, np.float32).ravel()), b)
    meta = {"array": record.array, "azimuth_rad": record.azimuth_rad.tolist(), "band_hz": record.band_hz.tolist(),
            "centre_ego_m": record.centre_ego_m.tolist(), "frame_s": record.frame_s, "method": record.method,
            "nfft": record.nfft, "sample_rate_hz": record.sample_rate_hz}
    schema = pa.schema([pa.field("time_ns", pa.int64(), nullable=False),
                        pa.field("power", power.type, nullable=False)],
                       metadata={PASSIVE_KEY: json.dumps(meta, allow_nan=False).encode()})
    return pa.Table.from_arrays([pa.array(np.asarray(record.times_ns, np.int64)), power], schema=schema)


def read_passive(path: str | os.PathLike) -> PassiveRecord:
    """The record in the layer file ``path`` (memory-mapped; ``power`` a read-only view of
    it); FormatError naming the file for anything but the layout of the module docstring."""
    try:
        table = ipc.open_file(pa.memory_map(os.fspath(path), "r")).read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise FormatError(path, None, f"an Arrow IPC file ({exc})") from None
    names = table.schema.names
    if names != ["time_ns", "power"] or table.schema.field("time_ns").type != pa.int64():
        raise FormatError(path, None, f"columns time_ns: int64, power: fixed_size_list<float32>, found {table.schema}")
    power_type = table.schema.field("power").type
    if not (pa.types.is_fixed_size_list(power_type) and power_type.value_type == pa.float32()
            and 1 <= power_type.list_size <= MAX_BEAMS):
        raise FormatError(path, None, f"power: fixed_size_list<float32>[1..{MAX_BEAMS}], found {power_type}")
    table = table.combine_chunks()
    b = power_type.list_size
    column = table.column("power")
    values = column.chunk(0).flatten() if column.num_chunks else pa.array([], pa.float32())
    if table.column("time_ns").null_count or column.null_count or values.null_count:
        raise FormatError(path, None, "no null values")
    meta = _metadata(table.schema.metadata or {}, path)
    times = table.column("time_ns").to_numpy()
    power = values.to_numpy(zero_copy_only=False).reshape(len(times), b)
    try:
        record = PassiveRecord(
            array=checked_name(meta.get("array"), path, "fathom.passive array"), times_ns=times, power=power,
            azimuth_rad=_floats(meta, "azimuth_rad", b), band_hz=_floats(meta, "band_hz", 2),
            centre_ego_m=_floats(meta, "centre_ego_m", 3), frame_s=float(meta["frame_s"]),
            method=str(meta["method"]), nfft=int(meta["nfft"]), sample_rate_hz=float(meta["sample_rate_hz"]))
        _check(record)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FormatError):
            raise
        raise FormatError(path, None, f"a passive layer whose metadata matches its rows ({exc})") from None
    return record


def _metadata(metadata: dict[bytes, bytes], path: str | os.PathLike) -> dict[str, Any]:
    try:
        meta = json.loads(metadata[PASSIVE_KEY])
    except (KeyError, json.JSONDecodeError, UnicodeDecodeError):
        raise FormatError(path, None, f"JSON schema metadata {PASSIVE_KEY.decode()}") from None
    if not isinstance(meta, dict):
        raise FormatError(path, None, f"a JSON object as {PASSIVE_KEY.decode()}")
    return meta


def _floats(meta: dict[str, Any], key: str, n: int) -> np.ndarray:
    """``meta[key]`` as ``(n,)`` finite float64; ValueError naming ``key`` otherwise."""
    value = meta.get(key)
    out = np.array(value, np.float64) if isinstance(value, list) and len(value) == n else None
    if out is None or out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ValueError(f"{key}: {n} finite numbers, got {str(value)[:80]}")
    return out


def _check(r: PassiveRecord) -> None:
    """ValueError unless the record's parts agree (shapes, order, finite non-negative power)."""
    t, p, az = np.asarray(r.times_ns), np.asarray(r.power), np.asarray(r.azimuth_rad)
    if t.ndim != 1 or not np.issubdtype(t.dtype, np.integer) or np.any(np.diff(t) <= 0):
        raise ValueError(f"times_ns must be strictly increasing integers (F,), got {t.dtype} {t.shape}")
    if p.shape != (len(t), len(az)) or az.ndim != 1 or not 1 <= len(az) <= MAX_BEAMS:
        raise ValueError(f"power must be (F, B) = ({len(t)}, {len(az)}) with 1 <= B <= {MAX_BEAMS}, got {p.shape}")
    if not (np.all(np.isfinite(p)) and np.all(p >= 0)):
        raise ValueError("power must be finite and >= 0")
    if not (np.all(np.isfinite(az)) and np.shape(r.band_hz) == (2,) and np.shape(r.centre_ego_m) == (3,)
            and np.all(np.isfinite(r.centre_ego_m)) and 0 <= r.band_hz[0] <= r.band_hz[1] < math.inf):
        raise ValueError("azimuths finite, band_hz [lo, hi] with 0 <= lo <= hi, centre_ego_m finite (3,)")
    if not (r.frame_s > 0 and math.isfinite(r.frame_s) and r.sample_rate_hz > 0 and math.isfinite(r.sample_rate_hz)
            and r.nfft >= 2 and r.method in METHODS):
        raise ValueError(f"frame_s and sample_rate_hz finite and > 0, nfft >= 2, method one of {METHODS}")
