"""The synthetic drive prepared with its true tracks as labels, for the segmentation tests,
and the simulator's truth per prepared point."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from formats.raw_log import write_labels
from server.prepare import PrepareOptions, prepare
from server.simulate import write_drive_log

TOKENS = {"viewer-token": "viewer", "annotator-token": "annotator", "admin-token": "admin"}
ANNOTATOR = {"Authorization": "Bearer annotator-token"}
ADMIN = {"Authorization": "Bearer admin-token"}


def labelled_scene(drive, root: Path, scene_id: str = "road-0") -> Path:
    """``root/scenes/scene_id``: the drive's raw log with its static and actor tracks as
    ``labels.json``, prepared (colour off: not needed here)."""
    log = write_drive_log(root / "log", drive)
    write_labels(log, [*drive.static_tracks, *drive.actor_tracks])
    doc = json.loads((log / "log.json").read_text())
    (log / "log.json").write_text(json.dumps(dict(doc, labels="labels.json")))
    out = root / "scenes" / scene_id
    summary = prepare(log, out, options=PrepareOptions(colorize=False))
    assert summary.prepared == summary.frames and not summary.failed
    return out


def true_objects(drive, frame: int) -> np.ndarray:
    """``(N,) int32`` object id each prepared point of ``frame`` hit (0: the ground)."""
    return np.concatenate([drive.sweeps[l.name][frame].extra["object_id"] for l in drive.lidars])


def category_classes(drive) -> list[dict]:
    """A class list: 0 unlabelled, then one class per category of the simulated world."""
    names = sorted(set(drive.objects.category))
    return [{"id": 0, "name": "unlabelled", "color": [0, 0, 0]}] + [
        {"id": k + 1, "name": n, "color": [40 * k % 256, 90, 200]} for k, n in enumerate(names)]
