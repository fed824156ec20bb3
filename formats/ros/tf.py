"""The transform tree of ``tf2_msgs/TFMessage``: ``/tf_static`` edges (the rig's extrinsics)
and ``/tf`` edges (time-varying, e.g. ``odom → base_link``).

Every ``TransformStamped`` is an edge ``parent (header.frame_id) ← child (child_frame_id)``
holding ``parent_from_child``. A frame has at most one parent; a static edge published again
with another transform takes the last one (the change is reported by the caller).

:meth:`TransformTree.static_transform` composes ``target_from_frame`` over static edges of
any depth, through the frames' lowest common ancestor (so ``base_link`` need not be an
ancestor of the sensor frame: ``base_footprint → base_link`` beside ``base_footprint →
lidar`` works). :meth:`TransformTree.dynamic_chain` finds the ``/tf`` chain from a root frame
down to the vehicle frame for :mod:`formats.ros.poses`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.pose_track import PoseTrack
from engine.se3 import SE3


class TransformError(ValueError):
    """No transform between two frames (the message lists what the tree holds)."""


def transform_se3(t: Any) -> SE3:
    """``geometry_msgs/Transform`` or ``Pose`` → SE3 (quaternion reordered to w, x, y, z)."""
    pos = t.translation if hasattr(t, "translation") else t.position
    q = t.rotation if hasattr(t, "rotation") else t.orientation
    return SE3(np.array([q.w, q.x, q.y, q.z], float), np.array([pos.x, pos.y, pos.z], float))


def stamp_ns(stamp: Any) -> int:
    """A deserialised ``builtin_interfaces/Time`` as int64 ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


@dataclass
class _Dynamic:
    parent: str
    times: list[int] = field(default_factory=list)
    poses: list[SE3] = field(default_factory=list)


def _name(frame: str) -> str:
    """tf2 frame ids have no leading slash (ROS 1 tf allowed one)."""
    return frame.lstrip("/")


class TransformTree:
    """Static and dynamic edges, child frame → (parent, transform)."""

    def __init__(self) -> None:
        self.static: dict[str, tuple[str, SE3]] = {}
        self.dynamic: dict[str, _Dynamic] = {}

    def add(self, msg: Any, static: bool) -> list[str]:
        """Add a TFMessage's transforms; returns the static child frames whose transform changed."""
        changed = []
        for ts in msg.transforms:
            parent, child, pose = _name(ts.header.frame_id), _name(ts.child_frame_id), transform_se3(ts.transform)
            if static:
                old = self.static.get(child)
                if old is not None and (old[0] != parent or not _same(old[1], pose)):
                    changed.append(child)
                self.static[child] = (parent, pose)
            else:
                edge = self.dynamic.setdefault(child, _Dynamic(parent))
                if edge.parent == parent:
                    edge.times.append(stamp_ns(ts.header.stamp))
                    edge.poses.append(pose)
        return changed

    def _parent(self, frame: str) -> tuple[str, bool] | None:
        if frame in self.static:
            return self.static[frame][0], True
        if frame in self.dynamic:
            return self.dynamic[frame].parent, False
        return None

    def ancestors(self, frame: str) -> list[tuple[str, bool]]:
        """``[(frame, True), (parent, edge static?), ..., (root, ...)]`` walking up the tree."""
        out, seen = [(frame, True)], {frame}
        while (up := self._parent(out[-1][0])) is not None and up[0] not in seen:
            out.append(up)
            seen.add(up[0])
        return out

    def frames(self) -> list[str]:
        every = set(self.static) | set(self.dynamic)
        every |= {p for p, _ in self.static.values()} | {d.parent for d in self.dynamic.values()}
        return sorted(every)

    def static_transform(self, target: str, frame: str) -> SE3:
        """``target_from_frame`` over static edges; TransformError when the frames are not
        connected, or only through a ``/tf`` (moving) edge."""
        target, frame = _name(target), _name(frame)
        up_f, up_t = self.ancestors(frame), self.ancestors(target)
        common = next((f for f, _ in up_f if f in {g for g, _ in up_t}), None)
        if common is None:
            roots = sorted({self.ancestors(f)[-1][0] for f in self.frames()})
            raise TransformError(f"no transform chain from frame {frame!r} to {target!r}: {frame!r} reaches "
                                 f"{[f for f, _ in up_f]}, {target!r} reaches {[f for f, _ in up_t]} "
                                 f"(tree roots: {roots})")
        common_from_frame = self._down_from(up_f, common)
        common_from_target = self._down_from(up_t, common)
        if common_from_target is None:
            return SE3.identity() if common_from_frame is None else common_from_frame
        target_from_common = common_from_target.inverse()
        return target_from_common if common_from_frame is None else target_from_common @ common_from_frame

    def _down_from(self, chain: list[tuple[str, bool]], top: str) -> SE3 | None:
        """``top_from_chain[0]`` composing the static edges up to ``top`` (None: the same frame;
        a single edge is returned as published, not recomposed)."""
        out = None
        for (child, _), (parent, static) in zip(chain, chain[1:]):
            if child == top:
                break
            if not static:
                raise TransformError(f"a static chain: the edge {parent!r} → {child!r} is on /tf (it moves)")
            edge = self.static[child][1]
            out = edge if out is None else edge @ out
        return out

    def dynamic_chain(self, frame: str) -> list[tuple[str, str, bool]]:
        """The edges ``(parent, child, static)`` from ``frame`` up to its root; empty when no
        ``/tf`` edge is among them (``frame`` does not move in the tree)."""
        up = self.ancestors(_name(frame))
        edges = [(p, c, s) for (c, _), (p, s) in zip(up, up[1:])]
        return edges if any(not s for _, _, s in edges) else []

    def edge_track(self, child: str) -> PoseTrack:
        """The ``/tf`` samples of ``child``'s edge as a track (time-sorted, repeats dropped)."""
        from engine.pose_sources import from_pose_table

        e = self.dynamic[child]
        rows = np.array([[*p.translation, *p.rotation] for p in e.poses], float).reshape(-1, 7)
        return from_pose_table(np.array(e.times, np.int64), rows)


def _same(a: SE3, b: SE3) -> bool:
    return bool(np.allclose(a.translation, b.translation, atol=1e-9) and
                (np.allclose(a.rotation, b.rotation, atol=1e-9) or np.allclose(a.rotation, -b.rotation, atol=1e-9)))
