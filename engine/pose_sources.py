"""Ego pose sources → :class:`PoseTrack` ``world_from_ego`` (world: the scene's local ENU frame).

Sources take already-parsed columns (a CSV or JSON reader in ``formats/`` produces them):

- **GNSS/INS tables** (:func:`from_gnss_ins`) with columns :data:`GNSS_INS_COLUMNS`:
  ``timestamp_ns`` (int64), ``lat_deg``, ``lon_deg`` (WGS84 degrees), ``alt_m`` (metres
  above the WGS84 ellipsoid; an MSL altitude only shifts the scene by the local geoid
  height), ``roll_deg``, ``pitch_deg``, ``yaw_deg`` (degrees). The angles follow one of
  two conventions, both intrinsic z-y'-x'' (yaw, then pitch, then roll):

  * ``"enu"``: body x forward, y left, z up; yaw counter-clockwise from east, pitch
    positive nose **down**, roll positive left side up (ROS REP 103, KITTI oxts).
  * ``"ned"``: body x forward, y right, z down in the local north-east-down frame; yaw is
    the heading clockwise from north, pitch positive nose **up**, roll positive right side
    down (most INS: aerospace convention). Converted exactly as
    ``q_enu_ned ⊗ q_ned_body(roll, pitch, heading) ⊗ q_frd_flu``, which amounts to
    ``yaw_enu = 90° − heading``, ``pitch_enu = −pitch``, ``roll_enu = roll``.

  Positions go through :mod:`engine.geodesy` (WGS84 → ECEF → ENU at the scene origin),
  and each orientation, given in the local-level frame at its own lat/lon, is rotated
  into the origin's ENU axes (the frames tilt ~1.6e-4 rad per km).
- **KITTI oxts** (:func:`from_kitti_oxts`): the 30 whitespace-separated fields per frame;
  fields 0-5 are lat, lon (deg), alt (m), roll, pitch, yaw (rad) in the ``"enu"``
  convention above (yaw 0 = east, counter-clockwise). The KITTI devkit places poses with
  a spherical Mercator projection scaled by ``cos(lat0)``; we use exact geodetic → ENU
  instead, which differs from it by ~0.1-0.2 % of the distance travelled (the devkit
  ignores the ellipsoid) and keeps world z up at the origin.
- **nuScenes ego_pose records** (:func:`from_nuscenes_ego_poses`): ``timestamp`` (µs),
  ``translation`` (m, the map frame), ``rotation`` (w, x, y, z).
- **Plain world_from_ego tables** (:func:`from_pose_table`): ``timestamp_ns`` plus
  ``(tx, ty, tz, qw, qx, qy, qz)`` per row.

Samples are sorted by time; repeated timestamps with the same pose are dropped, repeated
timestamps with different poses raise ``ValueError``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from engine import quaternion as quat
from engine.geodesy import Origin, enu_rotation, geodetic_to_enu
from engine.pose_track import PoseTrack
from engine.se3 import SE3

YawConvention = Literal["enu", "ned"]

GNSS_INS_COLUMNS = ("timestamp_ns", "lat_deg", "lon_deg", "alt_m", "roll_deg", "pitch_deg", "yaw_deg")
POSE_TABLE_COLUMNS = ("tx", "ty", "tz", "qw", "qx", "qy", "qz")
KITTI_OXTS_FIELDS = 30

_H = math.sqrt(0.5)
# ENU ← NED: swap x/y, flip z (180° about (1, 1, 0)/√2); FRD ← FLU: 180° about x.
Q_ENU_FROM_NED = np.array([0.0, _H, _H, 0.0])
Q_FRD_FROM_FLU = np.array([0.0, 1.0, 0.0, 0.0])


def _timestamps(timestamps_ns, name: str = "timestamp_ns") -> np.ndarray:
    ts = np.asarray(timestamps_ns)
    if ts.ndim != 1:
        raise ValueError(f"{name} must have shape (K,), got {ts.shape}")
    if not np.issubdtype(ts.dtype, np.integer):
        raise ValueError(f"{name} must be integer nanoseconds (float loses ns at epoch scale), got {ts.dtype}")
    return ts.astype(np.int64)


def _column(columns: Mapping[str, np.ndarray], name: str, k: int) -> np.ndarray:
    if name not in columns:
        raise ValueError(f"missing column {name!r}; need {list(GNSS_INS_COLUMNS)}, got {sorted(columns)}")
    arr = np.asarray(columns[name], dtype=np.float64)
    if arr.shape != (k,):
        raise ValueError(f"column {name!r} must have shape ({k},), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"column {name!r} has a NaN or infinite value at row {bad}")
    return arr


def _sorted_track(ts: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> PoseTrack:
    """A track from unordered samples: sort by time, drop exact repeats, reject conflicts."""
    if len(ts) == 0:
        raise ValueError("a pose source needs at least one sample")
    q = quat.as_quaternions(rotation, "rotation")
    t = np.asarray(translation, dtype=np.float64)
    order = np.argsort(ts, kind="stable")
    ts, q, t = ts[order], q[order], t[order]
    dup = np.flatnonzero(np.diff(ts) == 0)
    if len(dup):
        same = (quat.angle_between(q[dup], q[dup + 1]) < 1e-9) & np.all(np.abs(t[dup] - t[dup + 1]) < 1e-9, axis=1)
        if not np.all(same):
            i = int(dup[~same][0])
            raise ValueError(f"two different poses share timestamp {int(ts[i])} ns")
        keep = np.ones(len(ts), dtype=bool)
        keep[dup + 1] = False
        ts, q, t = ts[keep], q[keep], t[keep]
    return PoseTrack(ts, q, t)


def _geodetic_track(
    ts: np.ndarray,
    lat_deg: np.ndarray,
    lon_deg: np.ndarray,
    alt_m: np.ndarray,
    q_local: np.ndarray,
    origin: Origin | None,
) -> tuple[PoseTrack, Origin]:
    """Poses from geodetic positions and orientations in each sample's local ENU frame."""
    if origin is None:
        i0 = int(np.argmin(ts))
        origin = Origin(float(lat_deg[i0]), float(lon_deg[i0]), float(alt_m[i0]))
    translation = geodetic_to_enu(lat_deg, lon_deg, alt_m, origin)
    # world_from_local_i = enu_from_ecef(origin) · ecef_from_enu(sample i)
    r0 = origin.enu_from_ecef
    tilt = np.stack([r0 @ enu_rotation(la, lo).T for la, lo in zip(lat_deg, lon_deg)])
    q = quat.multiply(quat.from_matrix(tilt), q_local)
    return _sorted_track(ts, q, translation), origin


def local_orientation(roll_rad, pitch_rad, yaw_rad, yaw_convention: YawConvention) -> np.ndarray:
    """``(K, 4)`` quaternions local-ENU ← ego (x fwd, y left, z up) from Euler angles in radians.

    See the module docstring for the ``"enu"`` and ``"ned"`` conventions.
    """
    if yaw_convention == "enu":
        return quat.from_euler_zyx(roll_rad, pitch_rad, yaw_rad)
    if yaw_convention == "ned":
        q_ned_frd = quat.from_euler_zyx(roll_rad, pitch_rad, yaw_rad)
        return quat.multiply(quat.multiply(Q_ENU_FROM_NED, q_ned_frd), Q_FRD_FROM_FLU)
    raise ValueError(f"yaw_convention must be 'enu' or 'ned', got {yaw_convention!r}")


def from_gnss_ins(
    columns: Mapping[str, np.ndarray],
    yaw_convention: YawConvention,
    origin: Origin | None = None,
) -> tuple[PoseTrack, Origin]:
    """GNSS/INS samples (columns :data:`GNSS_INS_COLUMNS`, angles in degrees) → world_from_ego.

    ``origin`` defaults to the earliest sample. Returns the track and the origin used.
    """
    if "timestamp_ns" not in columns:
        raise ValueError(f"missing column 'timestamp_ns'; need {list(GNSS_INS_COLUMNS)}, got {sorted(columns)}")
    ts = _timestamps(columns["timestamp_ns"])
    k = len(ts)
    lat, lon, alt, roll, pitch, yaw = (_column(columns, name, k) for name in GNSS_INS_COLUMNS[1:])
    q_local = local_orientation(np.radians(roll), np.radians(pitch), np.radians(yaw), yaw_convention)
    return _geodetic_track(ts, lat, lon, alt, q_local, origin)


def from_kitti_oxts(
    oxts: np.ndarray, timestamps_ns: np.ndarray, origin: Origin | None = None
) -> tuple[PoseTrack, Origin]:
    """KITTI oxts rows ``(K, 30)`` (lat, lon, alt, roll, pitch, yaw, ...) → world_from_ego.

    ``world_from_ego`` here is world ← IMU (KITTI's oxts frame: x forward, y left, z up).
    ``timestamps_ns`` ``(K,) int64`` come from ``oxts/timestamps.txt``. ``origin``
    defaults to the earliest frame.
    """
    rows = np.asarray(oxts, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != KITTI_OXTS_FIELDS:
        raise ValueError(f"KITTI oxts must have shape (K, {KITTI_OXTS_FIELDS}), got {rows.shape}")
    ts = _timestamps(timestamps_ns, "timestamps_ns")
    if len(ts) != len(rows):
        raise ValueError(f"{len(rows)} oxts rows but {len(ts)} timestamps")
    if not np.all(np.isfinite(rows[:, :6])):
        bad = int(np.flatnonzero(~np.all(np.isfinite(rows[:, :6]), axis=1))[0])
        raise ValueError(f"KITTI oxts row {bad} has a NaN or infinite pose field")
    q_local = local_orientation(rows[:, 3], rows[:, 4], rows[:, 5], "enu")
    return _geodetic_track(ts, rows[:, 0], rows[:, 1], rows[:, 2], q_local, origin)


def from_nuscenes_ego_poses(records: Iterable[Mapping]) -> PoseTrack:
    """nuScenes ``ego_pose`` records (``timestamp`` µs, ``translation``, ``rotation`` wxyz) → track.

    The records' global (map) frame is the world frame; order does not matter.
    """
    recs = list(records)
    if not recs:
        raise ValueError("a pose source needs at least one sample")
    try:
        ts = np.array([int(r["timestamp"]) for r in recs], dtype=np.int64) * 1000
        t = np.array([r["translation"] for r in recs], dtype=np.float64).reshape(len(recs), -1)
        q = np.array([r["rotation"] for r in recs], dtype=np.float64).reshape(len(recs), -1)
    except KeyError as err:
        raise ValueError(f"nuScenes ego_pose record lacks field {err.args[0]!r}") from None
    if (t.shape[1] != 3 or q.shape[1] != 4):
        raise ValueError(f"ego_pose translation must have 3 and rotation 4 values, got {t.shape[1]} and {q.shape[1]}")
    return _sorted_track(ts, q, t)


def from_pose_table(timestamps_ns: np.ndarray, table: np.ndarray) -> PoseTrack:
    """``world_from_ego`` rows ``(K, 7)`` = (tx, ty, tz, qw, qx, qy, qz) at ``(K,) int64`` times."""
    ts = _timestamps(timestamps_ns, "timestamps_ns")
    rows = np.asarray(table, dtype=np.float64)
    if rows.shape != (len(ts), 7):
        raise ValueError(f"pose table must have shape ({len(ts)}, 7) {POSE_TABLE_COLUMNS}, got {rows.shape}")
    return _sorted_track(ts, rows[:, 3:], rows[:, :3])


def with_extra_samples(track: PoseTrack, extra: Iterable[tuple[np.ndarray, SE3]]) -> PoseTrack:
    """``track`` plus the samples ``(timestamps_ns (K,) int64, world_from_ego SE3 (K,))`` of
    ``extra`` at the times it lacks (earlier sources win a shared timestamp), e.g. ego poses
    derived from camera poses between LiDAR poses."""
    ts, t, q = [track.timestamps_ns], [track.translation], [track.rotation]
    seen = set(track.timestamps_ns.tolist())
    for times, poses in extra:
        new = np.array([x not in seen for x in times.tolist()], dtype=bool)
        seen.update(times[new].tolist())
        ts.append(times[new])
        t.append(poses.translation[new])
        q.append(poses.rotation[new])
    return from_pose_table(np.concatenate(ts), np.hstack([np.vstack(t), np.vstack(q)]))
