"""Scale Sensor Fusion Scene (SFS) cuboid paths ⇄ :class:`engine.cuboid.CuboidTrack`.

SFS semantics, as ``scale_sensor_fusion_io`` 0.5 defines them (``spec/sfs/types.py``,
``model_converters/sfs.py``, ``models/paths/cuboid_path.py``):

- ``CuboidPath.values`` rows are ``[dx, dy, dz, px, py, pz, roll, pitch, yaw]``: the box size
  along its own x, y, z (= Fathom's length, width, height), the centre, then Euler angles.
- Euler convention: ``CuboidPath.as_matrix`` builds ``Rotation.from_euler("zyx", [yaw,
  pitch, roll])`` (scipy lowercase = extrinsic), i.e. ``R = Rx(roll) · Ry(pitch) · Rz(yaw)``
  (three.js' default ``"XYZ"`` order). That is *not* the aerospace ``Rz·Ry·Rx`` of
  :func:`engine.quaternion.from_euler_zyx`; both agree for yaw-only boxes.
- Angles are radians by default (``degrees=False``); the package's ``as_matrix`` reads them
  as degrees, so pass ``degrees=True`` for data made for that code path.
- ``timestamps`` are integers in the scene's ``time_unit``: ``"microseconds"`` (the SFS
  default) or ``"nanoseconds"``. Fathom keeps int64 nanoseconds; writing microseconds rounds
  to the nearest microsecond.

Interpolation differs. Scale interpolates cuboid paths by linear interpolation of all nine
values (``CuboidPath.get_interpolation_data`` → ``interp1d``), Euler angles included; Fathom
slerps the rotation on the shortest arc (:mod:`engine.cuboid_interp`). Between keyframes
with yaw 170° and −170° Scale's lerp turns the long way through 0° (340°), Fathom turns 20°
through 180°; with several large Euler angles the lerp also leaves the great circle. Keys
written from Fathom tracks therefore replay differently in Scale's tools where a keyframe
interval crosses ±π or rotates about more than one axis: add keyframes there.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping

import numpy as np

from engine import quaternion as quat
from engine.cuboid import CuboidTrack
from formats.errors import FormatError

TimeUnit = Literal["microseconds", "nanoseconds"]
_NS_PER_UNIT = {"microseconds": 1000, "nanoseconds": 1}
_SOURCE = "<sfs>"


def _euler_to_quaternion(roll, pitch, yaw) -> np.ndarray:
    """``q = qx(roll) ⊗ qy(pitch) ⊗ qz(yaw)`` (R = Rx·Ry·Rz), ``(K, 4)``."""
    def axis(angle, k):
        q = np.zeros(np.shape(angle) + (4,))
        q[..., 0] = np.cos(0.5 * angle)
        q[..., k] = np.sin(0.5 * angle)
        return q

    q = quat.multiply(quat.multiply(axis(roll, 1), axis(pitch, 2)), axis(yaw, 3))
    return q / np.linalg.norm(q, axis=-1, keepdims=True)


def _quaternion_to_euler(q: np.ndarray) -> np.ndarray:
    """Inverse of :func:`_euler_to_quaternion`: ``(K, 3)`` roll, pitch, yaw; roll = 0 at gimbal lock."""
    r = quat.to_matrix(q)
    pitch = np.arcsin(np.clip(r[:, 0, 2], -1.0, 1.0))
    lock = np.hypot(r[:, 0, 0], r[:, 0, 1]) < 1e-12
    roll = np.where(lock, 0.0, np.arctan2(-r[:, 1, 2], r[:, 2, 2]))
    yaw = np.where(lock, np.arctan2(r[:, 1, 0], r[:, 1, 1]), np.arctan2(-r[:, 0, 1], r[:, 0, 0]))
    return np.stack([roll, pitch, yaw], axis=1)


def cuboids_to_sfs_values(
    centers: np.ndarray, sizes: np.ndarray, rotations: np.ndarray, degrees: bool = False
) -> np.ndarray:
    """SFS rows ``(K, 9) float64`` ``[dx dy dz px py pz roll pitch yaw]`` from boxes
    ``centers (K, 3)``, ``sizes (K, 3)`` (l, w, h), ``rotations (K, 4)`` wxyz."""
    c = np.asarray(centers, dtype=np.float64).reshape(-1, 3)
    s = np.asarray(sizes, dtype=np.float64).reshape(-1, 3)
    q = quat.as_quaternions(rotations, "rotations").reshape(-1, 4)
    if not (len(c) == len(s) == len(q)):
        raise ValueError(f"need as many centers, sizes, rotations; got {len(c)}, {len(s)}, {len(q)}")
    euler = _quaternion_to_euler(q)
    return np.hstack([s, c, np.rad2deg(euler) if degrees else euler])


def cuboids_from_sfs_values(
    values: Any, degrees: bool = False, source: str = _SOURCE
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centers (K, 3), sizes (K, 3), rotations (K, 4))`` from SFS rows ``(K, 9)``.

    Raises :class:`FormatError` (``source``, no byte offset) for a wrong shape, non-numeric,
    non-finite values or negative sizes, naming the row.
    """
    try:
        v = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise FormatError(source, None, f"CuboidPath.values as rows of 9 numbers ({exc})") from None
    if v.size == 0:
        v = v.reshape(0, 9)
    if v.ndim != 2 or v.shape[1] != 9:
        raise FormatError(source, None, f"CuboidPath.values of shape (K, 9), got {v.shape}")
    bad = np.flatnonzero(~np.all(np.isfinite(v), axis=1))
    if len(bad):
        raise FormatError(source, None, f"finite CuboidPath.values, row {bad[0]} is {v[bad[0]].tolist()}")
    bad = np.flatnonzero(np.any(v[:, :3] < 0, axis=1))
    if len(bad):
        raise FormatError(source, None, f"non-negative dx dy dz, row {bad[0]} has {v[bad[0], :3].tolist()}")
    angles = np.deg2rad(v[:, 6:]) if degrees else v[:, 6:]
    rotations = _euler_to_quaternion(angles[:, 0], angles[:, 1], angles[:, 2])
    return v[:, 3:6].copy(), v[:, :3].copy(), rotations


def _timestamps_to_ns(timestamps: Any, time_unit: TimeUnit, source: str) -> np.ndarray:
    ts = np.asarray(timestamps)
    if ts.ndim != 1 or len(ts) == 0 or not np.issubdtype(ts.dtype, np.integer):
        raise FormatError(source, None,
                          f"CuboidPath.timestamps as a non-empty list of integers, got {ts.dtype} {ts.shape}")
    bad = np.flatnonzero(np.diff(ts) <= 0)
    if len(bad):
        i = int(bad[0])
        raise FormatError(source, None, f"strictly increasing timestamps, [{i}]={ts[i]} >= [{i + 1}]={ts[i + 1]}")
    return ts.astype(np.int64) * _NS_PER_UNIT[time_unit]


def _check_unit(time_unit: str) -> None:
    if time_unit not in _NS_PER_UNIT:
        raise ValueError(f"time_unit must be one of {sorted(_NS_PER_UNIT)}, got {time_unit!r}")


def track_to_sfs(track: CuboidTrack, time_unit: TimeUnit = "microseconds", degrees: bool = False) -> dict:
    """An SFS ``CuboidAnnotation`` as a plain dict (JSON-ready) from a world-frame track.

    Static attributes become ``static`` attribute paths at the first keyframe time; per
    keyframe attributes become attribute paths sampled at the keyframes that set them.
    Raises ``ValueError`` if rounding to ``time_unit`` merges two keyframe times.
    """
    _check_unit(time_unit)
    unit = _NS_PER_UNIT[time_unit]
    ts = (track.timestamps_ns + unit // 2) // unit
    if np.any(np.diff(ts) <= 0):
        raise ValueError(f"track {track.track_id}: keyframes closer than one {time_unit[:-1]} merge in SFS")
    stamps = ts.tolist()
    attributes = [
        {"name": name, "timestamps": stamps[:1], "values": [value], "static": True}
        for name, value in track.attributes.items()
    ]
    keyframe_attributes = track.keyframe_attributes or []
    for name in dict.fromkeys(k for kf in keyframe_attributes for k in kf):
        keys = [i for i, kf in enumerate(keyframe_attributes) if name in kf]
        attributes.append({
            "name": name, "timestamps": [stamps[i] for i in keys],
            "values": [keyframe_attributes[i][name] for i in keys], "static": False,
        })
    annotation = {
        "id": track.track_id,
        "type": "cuboid",
        "label": track.category,
        "stationary": bool(track.stationary),
        "path": {
            "timestamps": stamps,
            "values": cuboids_to_sfs_values(track.centers, track.sizes, track.rotations, degrees).tolist(),
        },
    }
    if attributes:
        annotation["attributes"] = attributes
    return annotation


def track_from_sfs(
    annotation: Mapping[str, Any], time_unit: TimeUnit = "microseconds", degrees: bool = False,
    source: str = _SOURCE,
) -> CuboidTrack:
    """A :class:`CuboidTrack` from an SFS ``CuboidAnnotation`` (a dict as in the JSON, or the
    ``scale_sensor_fusion_io`` dataclass). Raises :class:`FormatError` on malformed input."""
    _check_unit(time_unit)
    get = annotation.get if isinstance(annotation, Mapping) else lambda k, d=None: getattr(annotation, k, d)
    ann_id = get("id")
    if not isinstance(ann_id, str) or not ann_id:
        raise FormatError(source, None, f"a non-empty string CuboidAnnotation.id, got {ann_id!r}")
    where = f"{source} annotation {ann_id!r}"
    path = get("path")
    pget = path.get if isinstance(path, Mapping) else lambda k, d=None: getattr(path, k, d)
    if path is None or pget("timestamps") is None or pget("values") is None:
        raise FormatError(where, None, "a path with timestamps and values")
    ts = _timestamps_to_ns(pget("timestamps"), time_unit, where)
    centers, sizes, rotations = cuboids_from_sfs_values(pget("values"), degrees, where)
    if len(centers) != len(ts):
        raise FormatError(where, None, f"one value row per timestamp: {len(ts)} timestamps, {len(centers)} rows")
    static: dict[str, Any] = {}
    per_key: list[dict[str, Any]] = [{} for _ in ts]
    for attr in get("attributes") or []:
        aget = attr.get if isinstance(attr, Mapping) else lambda k, d=None: getattr(attr, k, d)
        name, a_ts, a_values = aget("name"), aget("timestamps") or [], aget("values") or []
        if not isinstance(name, str):
            raise FormatError(where, None, f"attribute names as strings, got {name!r}")
        if len(a_ts) != len(a_values):
            raise FormatError(where, None, f"attribute {name!r}: as many timestamps as values")
        if aget("static", False):
            static[name] = a_values[0] if a_values else None
            continue
        a_ns = np.asarray(a_ts, dtype=np.int64) * _NS_PER_UNIT[time_unit]
        rows = np.searchsorted(ts, a_ns)
        for r, t_ns, value in zip(rows, a_ns, a_values):
            if r >= len(ts) or ts[r] != t_ns:
                raise FormatError(where, None, f"attribute {name!r} timestamps on keyframes, {int(t_ns)} ns is not one")
            per_key[r][name] = value
    return CuboidTrack(
        track_id=ann_id,
        category=get("label") or "",
        timestamps_ns=ts,
        centers=centers,
        sizes=sizes,
        rotations=rotations,
        stationary=bool(get("stationary") or False),
        attributes=static,
        keyframe_attributes=per_key if any(per_key) else None,
    )
