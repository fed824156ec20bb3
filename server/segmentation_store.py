"""Per-point segmentation labels in SQLite: one revisioned document per scene.

A scene's segmentation document is its *header* (the class list, the map's voxel size, the
track → instance id table; JSON) and its *layers*: one per frame that has labels of its own
(layer = frame index) and the map (layer :data:`MAP_LAYER`), each stored as the bytes of
:mod:`formats.segmentation`. Every write is one revision, whatever it changes (a bulk edit
over many frames is one atomic revision). Layers are stored per ``(scene, layer, revision)``
and never overwritten: a write inserts a row for each layer it changes (NULL: the layer was
removed), so the document at revision k is the header recorded with k and, per layer, its
newest row at or before k (one index seek each); the history costs the changed layers'
bytes only (a few tens of kB per labelled frame). Tables:

- ``seg_scenes``: scene id → current revision;
- ``seg_revisions``: (scene id, revision) → op, author, time (ns), note (JSON), the header
  (JSON) and the layers it changed (JSON list);
- ``seg_layers``: (scene id, layer, revision) → bytes or NULL.

Durability as :mod:`server.sqlite_db` says: WAL journal, ``synchronous=FULL``, one ``BEGIN
IMMEDIATE`` transaction per write with the revision check inside it (a stale ``expected``
raises :class:`~server.label_store.StaleRevision`, which the app answers with 412), so a write
that returned survives ``kill -9`` and concurrent writers never lose each other's updates.
Reads use a second connection (WAL readers see the last commit, never wait for a writer).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.label_store import StaleRevision, UnknownRevision
from server.sqlite_db import Database

__all__ = ["MAP_LAYER", "Change", "Frozen", "SegmentationStore", "Snapshot", "StaleRevision", "UnknownRevision",
           "default_header"]

MAP_LAYER = -1

SCHEMA = """
CREATE TABLE IF NOT EXISTS seg_scenes (scene_id TEXT PRIMARY KEY, revision INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seg_revisions (
    scene_id TEXT NOT NULL, revision INTEGER NOT NULL, op TEXT NOT NULL, author TEXT NOT NULL,
    at_ns INTEGER NOT NULL, note TEXT, header TEXT NOT NULL, layers TEXT NOT NULL,
    PRIMARY KEY (scene_id, revision)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seg_layers (
    scene_id TEXT NOT NULL, layer INTEGER NOT NULL, revision INTEGER NOT NULL, data BLOB,
    PRIMARY KEY (scene_id, layer, revision)) WITHOUT ROWID;
"""


def default_header() -> dict[str, Any]:
    """The header of a scene never written: class 0 only, 0.1 m voxels, no instances."""
    return {"classes": [{"id": 0, "name": "unlabelled", "color": [0, 0, 0]}], "voxel_m": 0.1, "instances": {}}


@dataclass(frozen=True)
class Change:
    """What a write changes: the new header (None: unchanged) and layer → bytes (None: remove)."""

    header: dict[str, Any] | None
    layers: dict[int, bytes | None]


class Snapshot:
    """The document at one revision, read inside one transaction: ``revision``, ``header``,
    :meth:`layer` bytes and :meth:`layer_revisions`."""

    def __init__(self, db: sqlite3.Connection, scene_id: str, revision: int, header: dict[str, Any]):
        self._db, self.scene_id, self.revision, self.header = db, scene_id, revision, header

    def layer(self, layer: int) -> bytes | None:
        row = self._db.execute("SELECT data FROM seg_layers WHERE scene_id = ? AND layer = ? AND revision <= ? "
                               "ORDER BY revision DESC LIMIT 1", (self.scene_id, layer, self.revision)).fetchone()
        return None if row is None else row[0]

    def layer_revisions(self) -> dict[int, int]:
        """Layer → the revision that last wrote it, for the layers present (not removed)."""
        rows = self._db.execute(
            "SELECT l.layer, l.revision FROM seg_layers l JOIN (SELECT layer, MAX(revision) AS r FROM seg_layers "
            "WHERE scene_id = ? AND revision <= ? GROUP BY layer) m ON l.layer = m.layer AND l.revision = m.r "
            "WHERE l.scene_id = ? AND l.data IS NOT NULL", (self.scene_id, self.revision, self.scene_id)).fetchall()
        return dict(rows)

    def freeze(self, layers: list[int]) -> Frozen:
        """The header and the bytes of ``layers``, usable after the transaction."""
        return Frozen(self.scene_id, self.revision, self.header, {k: self.layer(k) for k in layers})


@dataclass(frozen=True)
class Frozen:
    """Some layers of a snapshot, read out of its transaction (:meth:`Snapshot.freeze`)."""

    scene_id: str
    revision: int
    header: dict[str, Any]
    layers: dict[int, bytes | None]

    def layer(self, layer: int) -> bytes | None:
        return self.layers[layer]


def _snapshot(db: sqlite3.Connection, scene_id: str, at: int | None) -> Snapshot:
    row = db.execute("SELECT revision FROM seg_scenes WHERE scene_id = ?", (scene_id,)).fetchone()
    current = 0 if row is None else row[0]
    revision = current if at is None else at
    if not 0 <= revision <= current:
        raise UnknownRevision(revision, 0, current)
    if revision == 0:
        return Snapshot(db, scene_id, 0, default_header())
    header = db.execute("SELECT header FROM seg_revisions WHERE scene_id = ? AND revision = ?",
                        (scene_id, revision)).fetchone()[0]
    return Snapshot(db, scene_id, revision, json.loads(header))


class SegmentationStore:
    """Segmentation documents keyed by scene id (revision 0: the empty document)."""

    def __init__(self, path: str | Path):
        self._db = Database(path, SCHEMA)
        self.path = self._db.path

    def close(self) -> None:
        """Close the connections; a later call reopens them."""
        self._db.close()

    def read(self, scene_id: str, fn: Callable[[Snapshot], Any], at: int | None = None) -> Any:
        """``fn(snapshot)`` of the document now or at revision ``at``, in one read transaction;
        :class:`UnknownRevision` for an ``at`` outside ``0..current``."""
        return self._db.read(lambda db: fn(_snapshot(db, scene_id, at)))

    def revision(self, scene_id: str) -> int:
        return self.read(scene_id, lambda s: s.revision)

    def history(self, scene_id: str, limit: int = 100, after_revision: int = 0) -> list[dict[str, Any]]:
        """Revisions oldest first, after ``after_revision``: op, author, time, note, layers changed."""
        rows = self._db.read(lambda db: db.execute(
            "SELECT revision, op, author, at_ns, note, layers FROM seg_revisions WHERE scene_id = ? AND "
            "revision > ? ORDER BY revision LIMIT ?", (scene_id, after_revision, limit)).fetchall())
        return [{"revision": r, "op": o, "author": a, "at_ns": t, "note": None if n is None else json.loads(n),
                 "layers": json.loads(ls)} for r, o, a, t, n, ls in rows]

    def write(self, scene_id: str, expected_revision: int | None, change: Callable[[Snapshot], Change], *,
              op: str, author: str, note: Any = None) -> int:
        """One revision: ``change(current snapshot)`` → :class:`Change`, stored atomically.

        ``expected_revision`` None skips the check; otherwise another current revision raises
        :class:`StaleRevision` and nothing is written. ``change`` may raise to abort. Returns
        the new revision once it is durable."""

        def transaction(db: sqlite3.Connection) -> int:
            snap = _snapshot(db, scene_id, None)
            if expected_revision is not None and expected_revision != snap.revision:
                raise StaleRevision(snap.revision, expected_revision)
            out = change(snap)
            revision = snap.revision + 1
            header = snap.header if out.header is None else out.header
            layers = sorted(out.layers)
            db.executemany("INSERT INTO seg_layers VALUES (?, ?, ?, ?)",
                           [(scene_id, k, revision, out.layers[k]) for k in layers])
            db.execute("INSERT INTO seg_revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                       (scene_id, revision, op, author, time.time_ns(),
                        None if note is None else json.dumps(note, separators=(",", ":")),
                        json.dumps(header, separators=(",", ":")), json.dumps(layers)))
            db.execute("INSERT INTO seg_scenes VALUES (?, ?) ON CONFLICT(scene_id) DO UPDATE SET "
                       "revision = excluded.revision", (scene_id, revision))
            return revision

        return self._db.write(transaction)
