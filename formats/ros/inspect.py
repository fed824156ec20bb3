"""``fathom inspect BAG``: the bag's topics and what a conversion would do with each.

One line per topic: name, type, messages, rate (from the log times), first and last log time
(seconds from the bag's start) and Fathom's use of it — a LiDAR or camera with its name and
what it will read, the reference cutting frames, a CameraInfo's lens, the extrinsic frames,
the pose source — or why it is left alone. Then the frames a conversion would make and every
issue of the first pass (gaps, clock jumps, unreadable messages), without writing anything.
"""

from __future__ import annotations

import os

from formats.errors import FormatError
from formats.ros.bag import Bag
from formats.ros.convert import camera, ego_poses, sensor_pose
from formats.ros.frames import plan_frames
from formats.ros.index import BagIndex, index_bag
from formats.ros.options import CAMERA_INFO, IMU, TF_MESSAGE, BagOptions
from formats.ros.poses import POSE_TYPES


def _sensor_use(idx: BagIndex, topic: str) -> str:
    s = idx.sensors[topic]
    role = "LiDAR" if s.is_lidar else "camera"
    ref = ", reference: cuts the frames" if topic == idx.reference else ""
    try:
        if s.is_lidar:
            sensor_pose(idx, s)
            what = s.rule.describe() if s.rule is not None else "Velodyne packets (decoded by formats.velodyne)"
        else:
            k = camera(idx, s).intrinsics
            what = f"{k.model} {k.width}x{k.height}"
        return f"{role} {s.name!r}{ref}; frame {s.frame_id!r}; {what}"
    except FormatError as exc:
        return f"{role} {s.name!r}{ref}; NOT USABLE: {exc.expected}"


def inspect_lines(bag_path: str | os.PathLike, options: BagOptions = BagOptions()) -> list[str]:
    """The report of the module docstring, line by line."""
    with Bag(bag_path) as bag:
        idx = index_bag(bag, options, every_topic=True)
        start = bag.start_ns
        out = [f"bag {bag.path} ({bag.storage}): {len(bag.topics)} topics, "
               f"{sum(t.count for t in bag.topics.values())} messages, {(bag.end_ns - start) / 1e9:.3f} s "
               f"from {start / 1e9:.3f} s"]
        notes: list[str] = []
        try:
            poses = ego_poses(idx, notes).source
        except FormatError as exc:
            poses = f"NOT USABLE: {exc.expected}"
        rows = [("TOPIC", "TYPE", "COUNT", "RATE_HZ", "FIRST_S", "LAST_S", "FATHOM")]
        for name, topic in bag.topics.items():
            count, first, last = idx.seen.get(name, (0, start, start))
            rate = f"{(count - 1) / ((last - first) / 1e9):.2f}" if count > 1 and last > first else "-"
            if topic.definition_error:
                use = f"ignored: {topic.definition_error}"
            elif name in idx.sensors:
                use = _sensor_use(idx, name)
            elif topic.msgtype == CAMERA_INFO:
                use = "camera lens (CameraInfo)"
            elif topic.msgtype == TF_MESSAGE:
                use = "extrinsics (static transforms)" if name.rstrip("/").endswith("tf_static") else "transforms"
            elif topic.msgtype in POSE_TYPES or topic.msgtype == IMU:
                use = "pose candidate"
            else:
                use = "ignored: not a type Fathom reads"
            rows.append((name, topic.msgtype, str(count), rate, f"{(first - start) / 1e9:.3f}",
                         f"{(last - start) / 1e9:.3f}", use))
        widths = [max(len(r[c]) for r in rows) for c in range(6)]
        out += ["  ".join(v.ljust(w) for v, w in zip(r[:6], widths)) + "  " + r[6] for r in rows]
        plan, frame_issues = plan_frames(idx)
        out.append(f"poses: {poses}")
        out.append(f"frames: {len(plan.times_ns)} cut by {idx.reference} every {plan.period_ns / 1e6:g} ms"
                   if idx.reference else "frames: none (no LiDAR or camera topic Fathom reads)")
        issues = idx.issues + frame_issues
        out.append(f"issues: {len(issues) + len(notes)}")
        out += [f"  {i.line(start)}" for i in issues] + [f"  (poses): {n}" for n in notes]
    return out
