"""The ego pose track of a bag: ``world_from_ego`` with ego the vehicle frame (``base_link``).

Sources, in this order of preference (``--pose-topic`` names one and skips the order; within
a kind, the topic with the most messages, then the first by name):

1. ``nav_msgs/Odometry``: the pose of ``child_frame_id`` in ``header.frame_id`` at
   ``header.stamp``; a child frame other than the vehicle frame is moved to it through
   ``/tf_static`` (``world_from_base = world_from_child · child_from_base``).
2. ``geometry_msgs/PoseStamped`` / ``PoseWithCovarianceStamped``: the vehicle frame's pose
   in ``header.frame_id`` (the message names no child frame).
3. ``/tf``: a chain of transforms from a root frame (``map``, ``odom``, ``world``) down to
   the vehicle frame holding at least one ``/tf`` edge; sampled at the stamps of the moving
   edge nearest the vehicle, the other moving edges interpolated there (held at their ends).
4. ``sensor_msgs/NavSatFix`` fixes (status ≥ 0) with the orientation of a
   ``sensor_msgs/Imu`` topic (ENU, REP 103; samples without orientation skipped),
   interpolated at the fix times: positions WGS84 → the ENU frame tangent at the first fix
   (the scene's geodetic origin), the Imu orientation moved to the vehicle frame and the
   antenna's lever arm removed through ``/tf_static``. A NavSatFix without an Imu is no
   pose source.

With none, the vehicle is at rest (the identity pose), and the caller says so.

The world frame of sources 1-3 is their frame; poses far from its origin (a UTM map) are
kept exact by the scene origin: ``origin.enu_offset_m`` is the first position rounded to
the kilometre (zero for a frame starting within 500 m of its origin).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import quaternion as quat
from engine.pose_sources import from_gnss_ins, from_pose_table
from engine.pose_track import PoseTrack
from engine.se3 import SE3
from formats.rig import SceneOrigin
from formats.ros.options import IMU, NAV_SAT_FIX, ODOMETRY, POSE_STAMPED, TF_MESSAGE
from formats.ros.tf import TransformTree, stamp_ns, transform_se3

POSE_TYPES = (ODOMETRY, *POSE_STAMPED, TF_MESSAGE, NAV_SAT_FIX)
_ORIGIN_GRID_M = 1000.0


@dataclass(frozen=True, eq=False)
class EgoPoses:
    """``track`` world_from_ego, the scene ``origin`` (``track`` is in the log's frame, the
    offset not yet removed) and a line saying where it came from."""

    track: PoseTrack
    origin: SceneOrigin
    source: str


def choose_pose_topic(types: dict[str, str], counts: dict[str, int], pose_topic: str | None,
                      dynamic_tf: bool) -> str | None:
    """The pose topic by the module's order (``"/tf"`` for the ``/tf`` chain; None: at rest).
    ``dynamic_tf``: whether ``/tf`` holds a moving chain to the vehicle frame."""
    if pose_topic is not None:
        if types.get(pose_topic) not in POSE_TYPES:
            raise ValueError(f"--pose-topic {pose_topic}: a topic of one of {', '.join(POSE_TYPES)}, "
                             f"found {types.get(pose_topic, 'no such topic')}")
        return pose_topic
    for kinds in ((ODOMETRY,), POSE_STAMPED):
        found = sorted((t for t, ty in types.items() if ty in kinds), key=lambda t: (-counts.get(t, 0), t))
        if found:
            return found[0]
    if dynamic_tf:
        return "/tf"
    fixes = sorted((t for t, ty in types.items() if ty == NAV_SAT_FIX), key=lambda t: (-counts.get(t, 0), t))
    has_imu = any(ty == IMU for ty in types.values())
    return fixes[0] if fixes and has_imu else None


def _local(times: list[int], poses: list[SE3], source: str) -> EgoPoses:
    rows = np.array([[*p.translation, *p.rotation] for p in poses], float).reshape(-1, 7)
    track = from_pose_table(np.array(times, np.int64), rows)
    x, y, z = (float(v) for v in np.round(track.translation[0] / _ORIGIN_GRID_M) * _ORIGIN_GRID_M)
    return EgoPoses(track, SceneOrigin((x, y, z)), source)


def odometry_poses(msgs: list[Any], tree: TransformTree, base: str, topic: str) -> EgoPoses:
    """Odometry messages → poses of ``base`` (see the module docstring)."""
    times, poses, child_from_base = [], [], {}
    for m in msgs:
        child = m.child_frame_id.lstrip("/") or base
        if child not in child_from_base:
            child_from_base[child] = None if child == base.lstrip("/") else tree.static_transform(child, base)
        pose = transform_se3(m.pose.pose)
        extra = child_from_base[child]
        times.append(stamp_ns(m.header.stamp))
        poses.append(pose if extra is None else pose @ extra)
    frame = msgs[0].header.frame_id if msgs else "?"
    return _local(times, poses, f"nav_msgs/Odometry {topic} (world frame {frame!r})")


def pose_stamped_poses(msgs: list[Any], topic: str) -> EgoPoses:
    """PoseStamped / PoseWithCovarianceStamped messages → poses of the vehicle frame."""
    times = [stamp_ns(m.header.stamp) for m in msgs]
    poses = [transform_se3(m.pose.pose if hasattr(m.pose, "pose") else m.pose) for m in msgs]
    frame = msgs[0].header.frame_id if msgs else "?"
    return _local(times, poses, f"pose topic {topic} (world frame {frame!r})")


def tf_poses(tree: TransformTree, base: str) -> EgoPoses:
    """The ``/tf`` chain from its root down to ``base`` (see the module docstring)."""
    edges = tree.dynamic_chain(base)
    if not edges:
        raise ValueError(f"a /tf chain from a root frame down to {base!r} with a moving edge (the tree holds "
                         f"{tree.frames()})")
    lowest = next(c for _, c, s in edges if not s)
    times = tree.edge_track(lowest).timestamps_ns
    out = SE3.identity(len(times))
    for parent, child, static in edges:  # child first: compose parent_from_child on the left
        step = tree.static[child][1] if static else tree.edge_track(child).interpolate(times, "hold")
        out = step @ out
    root = edges[-1][0]
    return _local(list(times), [out[i] for i in range(len(times))], f"/tf chain {root!r} → {base!r}")


def navsat_poses(fixes: list[Any], imus: list[Any], tree: TransformTree, base: str, topic: str,
                 notes: list[str]) -> EgoPoses:
    """NavSatFix + Imu → poses in the ENU frame at the first fix (module docstring). Lever
    arms missing from ``/tf_static`` are taken as zero and noted in ``notes``."""
    good = [f for f in fixes if int(f.status.status) >= 0 and np.isfinite([f.latitude, f.longitude, f.altitude]).all()]
    oriented = [m for m in imus if float(m.orientation_covariance[0]) != -1.0]
    if not good or not oriented:
        raise ValueError(f"{topic}: fixes with status >= 0 ({len(good)}) and Imu samples with an orientation "
                         f"({len(oriented)})")
    q_imu = np.array([[m.orientation.w, m.orientation.x, m.orientation.y, m.orientation.z] for m in oriented])
    imu_track = from_pose_table(np.array([stamp_ns(m.header.stamp) for m in oriented], np.int64),
                                np.hstack([np.zeros((len(oriented), 3)), q_imu]))

    def lever(frame: str) -> SE3:
        try:
            return tree.static_transform(base, frame)
        except ValueError as exc:
            notes.append(f"{frame!r} taken at the vehicle frame: {exc}")
            return SE3.identity()

    base_from_imu = lever(oriented[0].header.frame_id or base)
    base_from_antenna = lever(good[0].header.frame_id or base)
    times = np.array([stamp_ns(f.header.stamp) for f in good], np.int64)
    world_from_imu = imu_track.interpolate(times, "hold").rotation
    q_base = quat.multiply(world_from_imu, quat.conjugate(base_from_imu.rotation))
    roll, pitch, yaw = np.degrees(quat.to_euler_zyx(q_base)).T
    columns = {"timestamp_ns": times, "lat_deg": np.array([f.latitude for f in good]),
               "lon_deg": np.array([f.longitude for f in good]), "alt_m": np.array([f.altitude for f in good]),
               "roll_deg": roll, "pitch_deg": pitch, "yaw_deg": yaw}
    track, origin = from_gnss_ins(columns, "enu")
    arm = quat.rotate(track.rotation, np.broadcast_to(base_from_antenna.translation, track.translation.shape))
    track = PoseTrack(track.timestamps_ns, track.rotation, track.translation - arm)
    return EgoPoses(track, SceneOrigin((0.0, 0.0, 0.0), (origin.lat_deg, origin.lon_deg, origin.alt_m)),
                    f"sensor_msgs/NavSatFix {topic} + Imu orientation (ENU at the first fix)")


def at_rest(start_ns: int, end_ns: int) -> EgoPoses:
    """The vehicle at rest at the identity pose over ``[start_ns, end_ns]``."""
    times = np.array([start_ns, max(end_ns, start_ns + 1)], np.int64)
    track = PoseTrack(times, np.tile([1.0, 0.0, 0.0, 0.0], (2, 1)), np.zeros((2, 3)))
    return EgoPoses(track, SceneOrigin(), "none: no pose source in the bag, the vehicle is at rest")

