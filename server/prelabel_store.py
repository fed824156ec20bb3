"""Pre-labels: tracks proposed from a detector's output, kept apart from the human labels.

A scene's pre-labels are one set (an upload replaces the previous one): tracks built from
per-frame detections (:mod:`formats.detections`) by the 3D tracker
(:func:`engine.tracker.track_detections`), or grouped by the detections' own track ids when
every detection has one (KITTI tracking, nuScenes tracking, SFS results). Each is a label
track body (:class:`server.schemas.Track`, ids ``pre-…``) with its mean detection score and
detection count. They never enter the label document by themselves: accepting one copies it
into the labels as a new revision through :class:`server.label_store.LabelStore` (the
route does), and the pre-label records which label track and revision it became.

Storage: two tables in the label database (the same SQLite file as the labels, its own
connection; WAL, ``synchronous=FULL``, one transaction per write):

- ``prelabel_sets``: scene id → source (format and file name), time, detections read,
  whether the tracker built the tracks;
- ``prelabels``: (scene id, track id) → position, body (compact JSON), score, detections,
  ``accepted_as`` / ``accepted_revision`` (NULL while pending).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from engine.tracker import Detections, TrackerParams, TrackingResult, track_detections, tracks_from_source_ids
from formats.detections import SceneFrames
from formats.raw_log import labels_document
from server.schemas import Track
from server.sqlite_db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS prelabel_sets (
    scene_id TEXT PRIMARY KEY, source TEXT NOT NULL, at_ns INTEGER NOT NULL,
    detections INTEGER NOT NULL, tracked INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS prelabels (
    scene_id TEXT NOT NULL, track_id TEXT NOT NULL, position INTEGER NOT NULL, body TEXT NOT NULL,
    score REAL NOT NULL, detections INTEGER NOT NULL, accepted_as TEXT, accepted_revision INTEGER,
    PRIMARY KEY (scene_id, track_id));
"""
PREFIX = "pre-"
_NOT_ID = re.compile(r"[^A-Za-z0-9_.:-]")


class PrelabelError(ValueError):
    """Pre-labels that cannot be built from the detections (the message names the track)."""


@dataclass(frozen=True)
class Prelabel:
    """One stored pre-label: ``body`` a label track (JSON object)."""

    track_id: str
    body: dict[str, Any]
    score: float
    detections: int
    accepted_as: str | None = None
    accepted_revision: int | None = None


@dataclass(frozen=True)
class PrelabelSet:
    """A scene's pre-labels and where they came from."""

    source: str
    at_ns: int
    detections: int
    tracked: bool
    prelabels: list[Prelabel]


def build_prelabels(frames: SceneFrames, detections: Detections, track: bool | None = None,
                    params: TrackerParams | None = None) -> tuple[list[Prelabel], bool]:
    """Pre-label tracks of ``detections`` on the scene ``frames``: by the tracker (``track``
    True, or None and some detection without a source track id) or grouped by source ids.
    Returns the pre-labels and whether the tracker made them. :class:`PrelabelError` when a
    track is no valid label track (e.g. a centre beyond the API's bounds)."""
    use_tracker = track if track is not None else detections.source_ids is None or None in detections.source_ids
    try:
        if use_tracker:
            result: TrackingResult = track_detections(detections, frames.timestamps_ns, params, id_prefix=PREFIX)
        else:  # the tracker's score threshold applies here too
            kept = detections.select(detections.scores >= (params or TrackerParams()).min_score)
            result = tracks_from_source_ids(kept, frames.timestamps_ns)
    except ValueError as exc:
        raise PrelabelError(str(exc)) from None
    out = []
    for t, body, score, hits in zip(result.tracks, labels_document(result.tracks)["tracks"], result.scores,
                                    result.hits):
        if not use_tracker:
            body["id"] = (PREFIX + _NOT_ID.sub("_", t.track_id))[:128]
        try:
            body = Track.model_validate(body).model_dump(mode="json")
        except ValidationError as exc:
            raise PrelabelError(f"track {body['id']!r} (source {t.track_id!r}): {exc.errors()[0]['msg']}") from None
        out.append(Prelabel(body["id"], body, float(score), int(hits)))
    ids = [p.track_id for p in out]
    if len(set(ids)) != len(ids):
        raise PrelabelError(f"source track ids {sorted({i for i in ids if ids.count(i) > 1})} collide once made ids")
    return out, use_tracker


class PrelabelStore:
    """Pre-labels by scene id in the SQLite file ``path`` (the label database)."""

    def __init__(self, path: str | Path):
        self._db = Database(path, SCHEMA)
        self.path = self._db.path

    def close(self) -> None:
        self._db.close()

    def _write(self, sql: list[tuple[str, Any]]) -> int:
        """Run the statements in one write transaction; rows the last one changed."""

        def run(db: sqlite3.Connection) -> int:
            changed = 0
            for statement, args in sql:
                cur = db.executemany(statement, args) if isinstance(args, list) else db.execute(statement, args)
                changed = cur.rowcount
            return changed

        return self._db.write(run)

    def replace(self, scene_id: str, prelabels: list[Prelabel], source: str, detections: int, tracked: bool) -> None:
        """Make ``prelabels`` the scene's pre-labels (the previous set is dropped)."""
        self._write([
            ("DELETE FROM prelabels WHERE scene_id = ?", (scene_id,)),
            ("INSERT OR REPLACE INTO prelabel_sets VALUES (?, ?, ?, ?, ?)",
             (scene_id, source, time.time_ns(), detections, int(tracked))),
            ("INSERT INTO prelabels (scene_id, track_id, position, body, score, detections) VALUES (?, ?, ?, ?, ?, ?)",
             [(scene_id, p.track_id, i, json.dumps(p.body, separators=(",", ":"), allow_nan=False), p.score,
               p.detections) for i, p in enumerate(prelabels)]),
        ])

    def get(self, scene_id: str) -> PrelabelSet | None:
        """The scene's pre-labels in track order, None if it never had any."""
        def read(db: sqlite3.Connection) -> tuple[Any, list[Any]]:
            head = db.execute("SELECT source, at_ns, detections, tracked FROM prelabel_sets WHERE scene_id = ?",
                              (scene_id,)).fetchone()
            rows = db.execute("SELECT track_id, body, score, detections, accepted_as, accepted_revision FROM prelabels "
                              "WHERE scene_id = ? ORDER BY position", (scene_id,)).fetchall()
            return head, rows

        head, rows = self._db.read(read)
        if head is None:
            return None
        return PrelabelSet(head[0], head[1], head[2], bool(head[3]),
                           [Prelabel(t, json.loads(b), s, d, a, r) for t, b, s, d, a, r in rows])

    def prelabel(self, scene_id: str, track_id: str) -> Prelabel | None:
        row = self._db.read(lambda db: db.execute(
            "SELECT track_id, body, score, detections, accepted_as, accepted_revision FROM prelabels "
            "WHERE scene_id = ? AND track_id = ?", (scene_id, track_id)).fetchone())
        return None if row is None else Prelabel(row[0], json.loads(row[1]), *row[2:])

    def mark_accepted(self, scene_id: str, track_id: str, label_id: str, revision: int) -> None:
        """Record that the pre-label became label track ``label_id`` at label ``revision``."""
        self._write([("UPDATE prelabels SET accepted_as = ?, accepted_revision = ? WHERE scene_id = ? AND track_id = ?",
                      (label_id, revision, scene_id, track_id))])

    def delete(self, scene_id: str, track_id: str) -> bool:
        """Drop one pre-label (rejected); False if there was none."""
        return self._write([("DELETE FROM prelabels WHERE scene_id = ? AND track_id = ?", (scene_id, track_id))]) > 0
