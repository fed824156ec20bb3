"""Radar tables: the Arrow schema of a frame's radar file (``frames/NNNNNN.radar.arrow``).

One record batch, one row per radar return of the frame (every radar's scan of that frame)::

    xq yq zq                 int32    world positions quantised as the points are
                                      (x = offset + xq * scale; schema metadata fathom.quantisation)
    radial_velocity_mps      float32  range rate as measured, m/s, positive receding
    radial_velocity_comp_mps float32  the same with the ego's motion removed (engine.radar:
                                      v_r + v_sensor · line of sight; 0 for a static target)
    rcs_dbsm                 float32  radar cross-section, dBsm
    sensor_id                uint8    index into the scene's sensors.radars
    time_offset_ns           int32    the scan's time minus the frame timestamp, ns

Positions are where each return was at its scan's time, moved to the world frame with the
ego pose at that time. :func:`radar_table` builds one; :func:`check_radar_schema` checks a
file's schema; :func:`radar_with_xyz` adds float32 ``x y z`` (world, or an ego frame).
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa

from engine.arrays import as_points
from engine.se3 import SE3
from formats.errors import FormatError
from formats.scene_store.points import _table, column_values, positions
from formats.scene_store.quantise import QUANT_KEY, checked_quantisation, quantisation_metadata, quantise

RADAR_COLUMNS: dict[str, pa.DataType] = {
    "xq": pa.int32(), "yq": pa.int32(), "zq": pa.int32(),
    "radial_velocity_mps": pa.float32(), "radial_velocity_comp_mps": pa.float32(), "rcs_dbsm": pa.float32(),
    "sensor_id": pa.uint8(), "time_offset_ns": pa.int32(),
}
RADAR_TYPES = {name: (kind,) for name, kind in RADAR_COLUMNS.items()}
RADAR_XYZ_TYPES = {**{c: (pa.float32(),) for c in "xyz"}, **RADAR_TYPES}


def radar_table(xyz: np.ndarray, radial_velocity_mps: np.ndarray, radial_velocity_comp_mps: np.ndarray,
                rcs_dbsm: np.ndarray, sensor_id: np.ndarray, time_offset_ns: np.ndarray,
                quantum_m: float = 1e-3) -> pa.Table:
    """The radar table of a frame (module docstring) from ``xyz (N, 3)`` world positions
    (metres, scene origin; float64 for the most accurate quantisation) and ``(N,)`` columns;
    ValueError for a wrong shape, a non-finite position, an id over 255 or an offset beyond int32."""
    p = as_points(xyz)
    q32, offset = quantise(p, quantum_m)
    n = len(p)
    cols: dict[str, np.ndarray] = {"xq": q32[0], "yq": q32[1], "zq": q32[2]}
    for name, value in (("radial_velocity_mps", radial_velocity_mps), ("radial_velocity_comp_mps",
                        radial_velocity_comp_mps), ("rcs_dbsm", rcs_dbsm), ("sensor_id", sensor_id),
                        ("time_offset_ns", time_offset_ns)):
        a = np.asarray(value)
        if a.shape != (n,):
            raise ValueError(f"{name} must have shape ({n},), got {a.shape}")
        dtype = np.dtype(RADAR_COLUMNS[name].to_pandas_dtype())
        if dtype.kind in "iu" and n and (a.min() < np.iinfo(dtype).min or a.max() > np.iinfo(dtype).max):
            raise ValueError(f"{name} values outside {dtype} range: found [{a.min()}, {a.max()}]")
        cols[name] = np.ascontiguousarray(a, dtype=dtype)
    return _table(cols, {QUANT_KEY: quantisation_metadata(quantum_m, offset)})


def check_radar_schema(schema: pa.Schema, path: str | os.PathLike | None = None) -> None:
    """FormatError unless ``schema`` is the radar schema: exactly its columns and types, and
    the quantisation metadata."""
    found = {f.name: f.type for f in schema}
    if found != RADAR_COLUMNS:
        raise FormatError(path, None, f"radar columns {[f'{k}: {v}' for k, v in RADAR_COLUMNS.items()]}, found "
                                      f"{[f'{k}: {v}' for k, v in found.items()]}")
    checked_quantisation(schema, path)


def radar_with_xyz(table: pa.Table, ego_from_world: SE3 | None = None) -> pa.Table:
    """A radar table with float32 ``x y z`` in front: the world positions (the float32
    nearest to ``offset + q * scale``), or those moved by ``ego_from_world`` (computed in
    float64); the other columns as stored, the quantised ones only in the world frame."""
    if ego_from_world is None:
        xyz = positions(table, np.float32)
    else:
        xyz = ego_from_world.apply(positions(table)).astype(np.float32)
    cols = {c: np.ascontiguousarray(xyz[:, k]) for k, c in enumerate("xyz")}
    names = [n for n in table.schema.names if ego_from_world is None or n not in ("xq", "yq", "zq")]
    cols.update({n: column_values(table, n, RADAR_TYPES) for n in names})
    return _table(cols, table.schema.metadata if ego_from_world is None else None)


def _warmup() -> None:
    one = np.zeros(1, np.float32)
    radar_with_xyz(radar_table(np.zeros((1, 3)), one, one, one, np.zeros(1, np.uint8), np.zeros(1, np.int32)))
