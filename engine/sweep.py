"""Columnar LiDAR / sonar sweep: the engine type every point-cloud reader returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.arrays import coerce_columns

# name -> (dtype, per-point trailing shape)
_COLUMNS: dict[str, tuple[np.dtype, tuple[int, ...]]] = {
    "xyz": (np.dtype(np.float32), (3,)),
    "intensity": (np.dtype(np.float32), ()),
    "time_offset_ns": (np.dtype(np.int64), ()),
    "ring": (np.dtype(np.uint16), ()),
    "return_index": (np.dtype(np.uint8), ()),
    "sensor_id": (np.dtype(np.uint8), ()),
}


@dataclass(eq=False)
class Sweep:
    """One sweep of points as a structure of arrays.

    Attributes:
        xyz: ``(N, 3) float32`` C-contiguous positions in metres, in ``frame``.
        timestamp_ns: sweep timestamp, ``int64`` ns (UNIX epoch unless the source has none).
        intensity: ``(N,) float32`` return strength as the sensor reports it, or None.
        time_offset_ns: ``(N,) int64`` firing time of each point minus ``timestamp_ns``, or None.
        ring: ``(N,) uint16`` laser/beam index, or None.
        return_index: ``(N,) uint8`` 0 strongest/first, 1 last/second, or None.
        sensor_id: ``(N,) uint8`` which sensor produced the point, or None.
        frame: name of the frame ``xyz`` is expressed in (``"lidar"``, ``"ego"``, ``"world"``).
        extra: further per-point columns (a PCD ``rgb``, LAS ``classification``...), each
            with N rows.

    Columns are converted to their dtype once at construction; a column of the wrong
    length raises ``ValueError`` naming it.
    """

    xyz: np.ndarray
    timestamp_ns: int = 0
    intensity: np.ndarray | None = None
    time_offset_ns: np.ndarray | None = None
    ring: np.ndarray | None = None
    return_index: np.ndarray | None = None
    sensor_id: np.ndarray | None = None
    frame: str = "sensor"
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.timestamp_ns = int(self.timestamp_ns)
        coerce_columns("Sweep", self, {k: v for k, v in _COLUMNS.items() if k != "xyz"})

    def __len__(self) -> int:
        return len(self.xyz)

    def columns(self) -> dict[str, np.ndarray]:
        """All present per-point columns by name (core columns first, then ``extra``)."""
        out = {name: getattr(self, name) for name in _COLUMNS if getattr(self, name) is not None}
        out.update(self.extra)
        return out

    def select(self, index: np.ndarray) -> "Sweep":
        """A new sweep with the rows picked by a boolean mask or an integer index array."""
        idx = np.asarray(index)
        if idx.dtype == np.bool_:
            if idx.shape != (len(self),):
                raise ValueError(f"Sweep.select mask must have shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        # take() is several times faster than fancy indexing for (N, 3) rows
        kwargs: dict[str, Any] = {
            name: (None if getattr(self, name) is None else getattr(self, name).take(idx, axis=0))
            for name in _COLUMNS
        }
        extra = {k: v.take(idx, axis=0) for k, v in self.extra.items()}
        return Sweep(timestamp_ns=self.timestamp_ns, frame=self.frame, extra=extra, **kwargs)

    def with_xyz(self, xyz: np.ndarray, frame: str) -> "Sweep":
        """The same sweep with positions replaced (e.g. after a transform) and a new frame name."""
        kwargs = {name: getattr(self, name) for name in _COLUMNS if name != "xyz"}
        return Sweep(xyz=xyz, timestamp_ns=self.timestamp_ns, frame=frame, extra=dict(self.extra), **kwargs)

    @staticmethod
    def concatenate(sweeps: list["Sweep"], timestamp_ns: int | None = None) -> "Sweep":
        """Stack sweeps in one frame. A column is kept only if every sweep has it."""
        if not sweeps:
            raise ValueError("Sweep.concatenate needs at least one sweep")
        frames = {s.frame for s in sweeps}
        if len(frames) != 1:
            raise ValueError(f"Sweep.concatenate: sweeps are in different frames {sorted(frames)}")
        kwargs: dict[str, Any] = {}
        for name in _COLUMNS:
            parts = [getattr(s, name) for s in sweeps]
            kwargs[name] = None if any(p is None for p in parts) else np.concatenate(parts)
        common = set.intersection(*(set(s.extra) for s in sweeps))
        extra = {k: np.concatenate([s.extra[k] for s in sweeps]) for k in sorted(common)}
        ts = sweeps[0].timestamp_ns if timestamp_ns is None else timestamp_ns
        return Sweep(timestamp_ns=ts, frame=sweeps[0].frame, extra=extra, **kwargs)
