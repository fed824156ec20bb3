"""Frames of a bag: cut by the reference sensor's messages, the other sensors matched by time.

- Frame ``k`` is a message of the reference topic (the first LiDAR topic unless one is
  chosen): its timestamp is that message's stamp (a PointCloud2's header stamp, a
  VelodyneScan's first packet stamp, an image's stamp), its *centre* the message's time
  centre (:mod:`formats.ros.index`). With ``frame_rate_hz`` the frames are the reference
  messages nearest each tick ``t0 + i / rate`` (each message once).
- ``P``, the frame period, is the median step of the reference's stamps (100 ms when it has
  a single message).
- A PointCloud2 or image topic gives frame ``k`` its message whose centre is nearest the
  frame's centre, when within the tolerance (``P / 2`` for LiDARs; ``image_tolerance_ns``,
  default ``P / 2``, for cameras); a message serves one frame at most. A frame left without
  a message of a topic is an issue naming the topic and the time.
- A VelodyneScan topic (a packet stream) gives frame ``k`` the packets stamped in
  ``[T_k, min(T_k + P, T_{k+1}))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formats.ros.index import BagIndex, Issue, SensorIndex

DEFAULT_PERIOD_NS = 100_000_000


@dataclass(frozen=True, eq=False)
class FramePlan:
    """``times_ns (F,) int64`` frame timestamps, ``centres_ns (F,)``, the period, per
    PointCloud2/image topic the chosen row of its :class:`SensorIndex` per frame (``(F,)
    int64``, -1 for none) and the ``(F, 2)`` half-open packet windows."""

    times_ns: np.ndarray
    centres_ns: np.ndarray
    period_ns: int
    rows: dict[str, np.ndarray]
    windows_ns: np.ndarray


def _reference_rows(ref: SensorIndex, rate_hz: float | None) -> np.ndarray:
    stamps = np.array(ref.stamp_ns, np.int64)
    order = np.argsort(stamps, kind="stable")
    if rate_hz is None or len(order) == 0:
        return order
    step = 1e9 / rate_hz
    s = stamps[order]
    ticks = s[0] + np.rint(np.arange(int((s[-1] - s[0]) / step) + 1) * step).astype(np.int64)
    return order[np.unique(_nearest(s, ticks))]


def _nearest(sorted_values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index into ``sorted_values`` of the value nearest each target (ties: the earlier)."""
    hi = np.clip(np.searchsorted(sorted_values, targets), 1, max(len(sorted_values) - 1, 1))
    lo = hi - 1
    if len(sorted_values) == 1:
        return np.zeros(len(targets), np.int64)
    return np.where(np.abs(sorted_values[hi] - targets) < np.abs(targets - sorted_values[lo]), hi, lo)


def match(centres_ns: np.ndarray, targets_ns: np.ndarray, tolerance_ns: int) -> np.ndarray:
    """Per target, the row of the centre nearest it within ``tolerance_ns`` (-1: none); a
    row matched by several targets goes to the nearest one (ties: the earlier), the others
    get -1."""
    out = np.full(len(targets_ns), -1, np.int64)
    if len(centres_ns) == 0 or len(targets_ns) == 0:
        return out
    order = np.argsort(centres_ns, kind="stable")
    sorted_c = centres_ns[order]
    near = _nearest(sorted_c, targets_ns)
    dist = np.abs(sorted_c[near] - targets_ns)
    ok = dist <= tolerance_ns
    best: dict[int, int] = {}
    for k in np.flatnonzero(ok):
        r = int(near[k])
        if r not in best or dist[k] < dist[best[r]]:
            best[r] = int(k)
    for r, j in best.items():
        out[j] = order[r]
    return out


def plan_frames(idx: BagIndex) -> tuple[FramePlan, list[Issue]]:
    """The frames and matches of the module docstring, and an issue per frame missing a topic
    (no frames without a reference topic)."""
    if idx.reference is None:
        none = np.zeros(0, np.int64)
        return FramePlan(none, none, DEFAULT_PERIOD_NS, {}, np.zeros((0, 2), np.int64)), []
    ref = idx.sensors[idx.reference]
    rows = _reference_rows(ref, idx.options.frame_rate_hz)
    times = np.array(ref.stamp_ns, np.int64)[rows]
    centres = np.array(ref.centre_ns, np.int64)[rows]
    period = ref.period_ns() or DEFAULT_PERIOD_NS
    tol_image = idx.options.image_tolerance_ns if idx.options.image_tolerance_ns is not None else period // 2
    nxt = np.append(times[1:], np.iinfo(np.int64).max)
    windows = np.stack([times, np.minimum(times + period, nxt)], axis=1) if len(times) else np.zeros((0, 2), np.int64)
    chosen: dict[str, np.ndarray] = {}
    issues: list[Issue] = []
    for topic, s in idx.sensors.items():
        if s.msgtype == "velodyne_msgs/msg/VelodyneScan":
            continue
        if topic == idx.reference:
            chosen[topic] = rows.astype(np.int64)
            continue
        tol = period // 2 if s.is_lidar else tol_image
        chosen[topic] = match(np.array(s.centre_ns, np.int64), centres, tol)
        for k in np.flatnonzero(chosen[topic] < 0):
            issues.append(Issue(topic, int(times[k]), f"frame {k} has no message within {tol / 1e6:g} ms of its "
                                                      f"centre; the frame goes without {s.name}"))
    return FramePlan(times, centres, int(period), chosen, windows), issues
