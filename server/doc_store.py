"""Revisioned JSON label documents in SQLite, one per ``(scene, kind)``: the bearing tracks of a
passive-sonar contact list (``kind="bearing_tracks"``) and the 2D tracks of the camera streams
(``kind="tracks2d"``).

Every save stores the whole document as a new revision (1, 2, ...) with its author and time;
nothing is overwritten, so any revision can be read back. A save names the revision it was
based on (``expected``; 0 before the first); a stale one raises
:class:`~server.label_store.StaleRevision` (the app answers 412). Table::

    documents(scene_id, kind, revision, author, at_ns, body)   PRIMARY KEY (scene_id, kind, revision)

Durability as :mod:`server.sqlite_db` says: WAL journal, ``synchronous=FULL``, the revision check
and the insert in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from server.label_store import StaleRevision, UnknownRevision
from server.sqlite_db import Database

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    scene_id TEXT NOT NULL, kind TEXT NOT NULL, revision INTEGER NOT NULL, author TEXT NOT NULL,
    at_ns INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (scene_id, kind, revision)) WITHOUT ROWID;
"""


class DocumentStore:
    """Revisioned documents in the SQLite file ``path`` (created on first use)."""

    def __init__(self, path: str | Path):
        self._db = Database(path, SCHEMA)
        self.path = self._db.path

    def close(self) -> None:
        self._db.close()

    def get(self, scene_id: str, kind: str, revision: int | None = None) -> tuple[int, dict[str, Any] | None]:
        """``(revision, body)`` now or at ``revision``: ``(0, None)`` before the first save;
        :class:`UnknownRevision` for a revision that does not exist."""

        def read(db: sqlite3.Connection) -> tuple[int, dict[str, Any] | None]:
            current = _newest(db, scene_id, kind)
            want = current if revision is None else revision
            if want == 0:
                return 0, None
            row = db.execute("SELECT body FROM documents WHERE scene_id = ? AND kind = ? AND revision = ?",
                             (scene_id, kind, want)).fetchone()
            if row is None:
                raise UnknownRevision(want, 1, current)
            return want, json.loads(row[0])

        return self._db.read(read)

    def save(self, scene_id: str, kind: str, body: dict[str, Any], expected: int, author: str) -> int:
        """Store ``body`` as the revision after ``expected``; returns it."""
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))

        def insert(db: sqlite3.Connection) -> int:
            current = _newest(db, scene_id, kind)
            if current != expected:
                raise StaleRevision(current, expected)
            db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                       (scene_id, kind, current + 1, author, time.time_ns(), text))
            return current + 1

        return self._db.write(insert)

    def history(self, scene_id: str, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` revisions, newest first: ``{revision, author, at_ns}``."""
        rows = self._db.read(lambda db: db.execute(
            "SELECT revision, author, at_ns FROM documents WHERE scene_id = ? AND kind = ? "
            "ORDER BY revision DESC LIMIT ?", (scene_id, kind, limit)).fetchall())
        return [{"revision": r, "author": a, "at_ns": t} for r, a, t in rows]


def _newest(db: sqlite3.Connection, scene_id: str, kind: str) -> int:
    row = db.execute("SELECT MAX(revision) FROM documents WHERE scene_id = ? AND kind = ?",
                     (scene_id, kind)).fetchone()
    return int(row[0] or 0)


def documents_path(label_db_path: str | Path) -> Path:
    """The document store's file: ``documents.sqlite3`` beside the label database."""
    return Path(label_db_path).with_name("documents.sqlite3")


def app_store(app: Any, label_db_path: Path) -> DocumentStore:
    """The app's store (``documents.sqlite3`` beside the label database), opened on first use
    and kept in ``app.state.documents``."""
    store = getattr(app.state, "documents", None)
    if store is None:
        store = DocumentStore(documents_path(label_db_path))
        app.state.documents = store
    return store
