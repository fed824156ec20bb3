"""``sensor_msgs/PointCloud2`` → a :class:`~engine.sweep.Sweep`, through a NumPy structured
view of the message bytes (one record per point, the ``point_step`` as its itemsize, the
fields at their offsets, big-endian when ``is_bigendian``).

Columns:

- ``x``, ``y``, ``z`` (float32 or float64, required) → ``xyz (N, 3) float32`` in the
  message's frame. Points with a non-finite coordinate (``is_dense=false`` clouds, organized
  clouds' empty cells) or exactly at the origin (Ouster's "no return") are dropped.
- intensity: the first of :data:`INTENSITY_FIELDS` → float32.
- ring: the first of :data:`RING_FIELDS` (integer) → uint16.
- per-point time: the first of :data:`TIME_FIELDS`, read by the rule of :func:`detect_time`
  unless a topic gives its own :class:`PointTime`; it becomes ``time_offset_ns`` from the
  message's header stamp (the sweep's ``timestamp_ns``).

A layout that does not fit — a field beyond ``point_step``, overlapping fields, an unknown
datatype, ``row_step < width * point_step``, data not ``row_step * height`` bytes — raises
:class:`~formats.ros.wire.MessageError`, which the caller turns into a FormatError naming
the topic and message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from engine._jit import jit
from engine.sweep import Sweep
from formats.ros.wire import POINT_FIELD_TYPES, MessageError, PointCloud2

TIME_FIELDS = ("t", "time", "timestamp", "offset_time", "time_stamp")
INTENSITY_FIELDS = ("intensity", "reflectivity", "i")
RING_FIELDS = ("ring", "channel", "laser_id", "line")
TimeUnit = Literal["s", "ms", "us", "ns"]
_NS_PER = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
# absolute-time magnitude thresholds: a median at or above them is a UNIX time in that unit
_ABSOLUTE_S = 1e8          # floats: 1973 onwards in seconds; relative offsets are far smaller
_INT_ABSOLUTE = ((1e17, "ns"), (1e14, "us"))
_INT_RELATIVE_MAX = 1e9    # integer offsets below 1e9 are ns (a sweep under a second)


@dataclass(frozen=True)
class PointTime:
    """How a cloud's per-point time reads: ``field`` (None: no per-point time, every point at
    the header stamp), its ``unit`` and whether it is ``relative`` to the header stamp or an
    absolute UNIX time."""

    field: str | None
    unit: TimeUnit = "ns"
    relative: bool = True

    def describe(self) -> str:
        if self.field is None:
            return "no per-point time (every point at the header stamp)"
        reference = "relative to the header stamp" if self.relative else "absolute"
        return f"per-point time {self.field!r} {reference}, {self.unit}"


def parse_point_time(text: str) -> PointTime:
    """``"none"`` or ``"FIELD:UNIT:relative|absolute"`` (UNIT one of s, ms, us, ns)."""
    if text.strip().lower() == "none":
        return PointTime(None)
    parts = text.split(":")
    if len(parts) != 3 or parts[1] not in _NS_PER or parts[2] not in ("relative", "absolute") or not parts[0]:
        raise ValueError(f"a point time is 'none' or 'FIELD:UNIT:relative|absolute' with UNIT one of "
                         f"{sorted(_NS_PER)}, got {text!r}")
    return PointTime(parts[0], parts[1], parts[2] == "relative")  # type: ignore[arg-type]


def cloud_dtype(msg: PointCloud2) -> np.dtype:
    """The structured dtype of one point record (itemsize ``point_step``); MessageError when
    the fields do not fit."""
    names, formats, offsets = [], [], []
    order = ">" if msg.big_endian else "<"
    spans = []
    for name, offset, datatype, count in msg.fields:
        if datatype not in POINT_FIELD_TYPES:
            raise MessageError(f"field {name!r}: datatype {datatype} is none of PointField's 1..8")
        base = np.dtype(order + POINT_FIELD_TYPES[datatype])
        size = base.itemsize * max(count, 1)
        if offset + size > msg.point_step:
            raise MessageError(f"field {name!r} at offset {offset} + {size} bytes inside point_step "
                               f"{msg.point_step}")
        if name in names:
            raise MessageError(f"one field named {name!r}, found two")
        spans.append((offset, offset + size, name))
        names.append(name)
        formats.append(base if count <= 1 else (base, (count,)))
        offsets.append(offset)
    spans.sort()
    for (a0, a1, a), (b0, _, b) in zip(spans, spans[1:]):
        if b0 < a1:
            raise MessageError(f"fields {a!r} [{a0}, {a1}) and {b!r} (from {b0}) not to overlap")
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": msg.point_step})


def cloud_records(msg: PointCloud2) -> np.ndarray:
    """``(width * height,)`` structured records of the cloud: a view of the message bytes when
    rows are packed (``row_step == width * point_step``), else the rows gathered."""
    dt = cloud_dtype(msg)
    n = msg.width * msg.height
    if msg.row_step < msg.width * msg.point_step:
        raise MessageError(f"row_step {msg.row_step} >= width {msg.width} x point_step {msg.point_step}")
    if len(msg.data) != msg.row_step * msg.height:
        raise MessageError(f"data of row_step {msg.row_step} x height {msg.height} = {msg.row_step * msg.height} "
                           f"bytes, found {len(msg.data)}")
    if n == 0:
        return np.zeros(0, dt)
    if msg.row_step == msg.width * msg.point_step:
        return np.frombuffer(msg.data, dt, n)
    rows = np.ndarray((msg.height, msg.width), dt, msg.data, 0, (msg.row_step, msg.point_step))
    return rows.reshape(n)


def _first(rec: np.ndarray, candidates: tuple[str, ...]) -> str | None:
    names = rec.dtype.names or ()
    return next((c for c in candidates if c in names and rec.dtype[c].shape == ()), None)


def detect_time(rec: np.ndarray, stamp_ns: int) -> PointTime:
    """The per-point time rule of a cloud's records.

    The field is the first of :data:`TIME_FIELDS` present (scalar). A float field is in
    seconds: absolute UNIX time when its median magnitude is at least 1e8 s, else an offset
    from the header stamp (Velodyne ``time``, Hesai/RoboSense ``timestamp``). An integer field
    is absolute ns from 1e17, absolute µs from 1e14, else (median below 1e9) an offset in ns
    (Ouster ``t``, Livox ``offset_time``); medians between 1e9 and 1e14 are ambiguous and
    raise MessageError (name the unit with a :class:`PointTime`). ``stamp_ns`` is unused by
    the rule and kept for the error message.
    """
    name = _first(rec, TIME_FIELDS)
    if name is None:
        return PointTime(None)
    values = rec[name]
    if values.dtype.kind == "f":
        finite = values[np.isfinite(values)]
        med = float(np.median(np.abs(finite))) if len(finite) else 0.0
        return PointTime(name, "s", med < _ABSOLUTE_S)
    med = float(np.median(values)) if len(values) else 0.0
    for threshold, unit in _INT_ABSOLUTE:
        if med >= threshold:
            return PointTime(name, unit, False)  # type: ignore[arg-type]
    if med < _INT_RELATIVE_MAX:
        return PointTime(name, "ns", True)
    raise MessageError(f"per-point time {name!r} ({values.dtype}) with median {med:.6g} is neither an offset "
                       f"under 1 s in ns nor a UNIX time in µs or ns (header stamp {stamp_ns} ns): give its unit")


def _field(rec: np.ndarray, rule: PointTime) -> np.ndarray:
    if rule.field not in (rec.dtype.names or ()):
        raise MessageError(f"the per-point time field {rule.field!r} (fields: {list(rec.dtype.names or ())})")
    return rec[rule.field]


def _offsets_ns(v: np.ndarray, rule: PointTime, stamp_ns: int) -> np.ndarray:
    """Per-point times ``v`` (the field's values) → int64 ns from ``stamp_ns``."""
    scale = _NS_PER[rule.unit]
    if v.dtype.kind == "f":
        v = v.astype(np.float64)
        if not np.all(np.isfinite(v)):
            raise MessageError(f"finite per-point times in {rule.field!r}")
        whole = np.floor(v)  # exact split: float64 seconds near 1.7e9 keep ~0.2 µs, ns would overflow 2^53
        ns = whole.astype(np.int64) * scale + np.rint((v - whole) * scale).astype(np.int64)
    else:
        ns = v.astype(np.int64) * scale
    return ns if rule.relative else ns - np.int64(stamp_ns)


def time_offsets_ns(rec: np.ndarray, rule: PointTime, stamp_ns: int) -> np.ndarray | None:
    """``(N,) int64`` per-point time minus ``stamp_ns`` by ``rule`` (None without a time field)."""
    return None if rule.field is None else _offsets_ns(_field(rec, rule), rule, stamp_ns)


def _points(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray]:
    """The records of the points with a return and their ``(N, 3) float32`` positions."""
    rec = cloud_records(msg)
    names = rec.dtype.names or ()
    for axis in "xyz":
        if axis not in names or rec.dtype[axis].kind != "f" or rec.dtype[axis].shape != ():
            raise MessageError(f"a float32/float64 scalar field {axis!r} (fields: {list(names)})")
    xyz = np.empty((len(rec), 3), np.float32)
    for k, axis in enumerate("xyz"):
        xyz[:, k] = rec[axis]
    keep = np.empty(len(rec), np.bool_)
    n = _with_return(xyz, keep)
    return (rec, xyz) if n == len(rec) else (rec[keep], xyz[keep])


@jit
def _with_return(xyz, keep):
    """``keep[i]``: point ``i`` has finite coordinates and is not the origin; returns how many."""
    n = 0
    for i in range(xyz.shape[0]):
        x, y, z = xyz[i, 0], xyz[i, 1], xyz[i, 2]
        ok = math.isfinite(x) and math.isfinite(y) and math.isfinite(z) and (x != 0.0 or y != 0.0 or z != 0.0)
        keep[i] = ok
        n += ok
    return n


def cloud_sweep(msg: PointCloud2, rule: PointTime | None = None) -> Sweep:
    """The cloud as a Sweep in its own frame (``timestamp_ns`` the header stamp): see the
    module docstring for the columns; ``rule`` defaults to :func:`detect_time`."""
    rec, xyz = _points(msg)
    offsets = time_offsets_ns(rec, rule if rule is not None else detect_time(rec, msg.stamp_ns), msg.stamp_ns)
    inten, ring = _first(rec, INTENSITY_FIELDS), _first(rec, RING_FIELDS)
    if ring is not None and rec.dtype[ring].kind not in "iu":
        ring = None
    return Sweep(
        xyz, msg.stamp_ns,
        intensity=None if inten is None else rec[inten].astype(np.float32),
        time_offset_ns=offsets,
        ring=None if ring is None else rec[ring].astype(np.uint16),
        frame="lidar",
    )


def cloud_time_rule(msg: PointCloud2) -> PointTime:
    """:func:`detect_time` on the cloud's records."""
    return detect_time(cloud_records(msg), msg.stamp_ns)


def time_span_ns(msg: PointCloud2, rule: PointTime) -> tuple[int, int]:
    """``(first, last)`` absolute per-point time of the cloud (the header stamp twice without
    per-point times or points); rows whose time is not finite are left out. One strided pass
    over the time field: no point is copied."""
    if rule.field is None:
        return msg.stamp_ns, msg.stamp_ns
    v = _field(cloud_records(msg), rule)
    if v.dtype.kind == "f":
        v = v[np.isfinite(v)]
    if len(v) == 0:
        return msg.stamp_ns, msg.stamp_ns
    lo, hi = _offsets_ns(np.array([v.min(), v.max()], v.dtype), rule, msg.stamp_ns)
    return msg.stamp_ns + int(lo), msg.stamp_ns + int(hi)


def _warmup() -> None:
    _with_return(np.zeros((2, 3), np.float32), np.empty(2, np.bool_))
