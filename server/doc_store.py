"""Revisioned JSON label documents in SQLite, one per ``(scene, kind)``: the bearing tracks of a
passive-sonar contact list (``kind="bearing_tracks"``) and the 2D tracks of the camera streams
(``kind="tracks2d"``).

Every save stores the whole document as a new revision (1, 2, ...) with its author and time;
nothing is overwritten, so any revision can be read back. A save names the revision it was
based on (``expected``; 0 before the first); a stale one raises
:class:`~server.label_store.StaleRevision` (the app answers 412). Table::

    documents(scene_id, kind, revision, author, at_ns, body)   PRIMARY KEY (scene_id, kind, revision)

Durability as :mod:`server.label_store`: WAL journal, ``synchronous=FULL``, the revision check
and the insert in one ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from server.label_store import StaleRevision, UnknownRevision

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    scene_id TEXT NOT NULL, kind TEXT NOT NULL, revision INTEGER NOT NULL, author TEXT NOT NULL,
    at_ns INTEGER NOT NULL, body TEXT NOT NULL, PRIMARY KEY (scene_id, kind, revision)) WITHOUT ROWID;
"""


class DocumentStore:
    """Revisioned documents in the SQLite file ``path`` (created on first use)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._db.executescript(SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection, opened on first use and again after :meth:`close` (an app that is
        started again after its shutdown); hold the lock."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _newest(self, scene_id: str, kind: str) -> int:
        row = self._db.execute("SELECT MAX(revision) FROM documents WHERE scene_id = ? AND kind = ?",
                               (scene_id, kind)).fetchone()
        return int(row[0] or 0)

    def get(self, scene_id: str, kind: str, revision: int | None = None) -> tuple[int, dict[str, Any] | None]:
        """``(revision, body)`` now or at ``revision``: ``(0, None)`` before the first save;
        :class:`UnknownRevision` for a revision that does not exist."""
        with self._lock:
            current = self._newest(scene_id, kind)
            want = current if revision is None else revision
            if want == 0:
                return 0, None
            row = self._db.execute("SELECT body FROM documents WHERE scene_id = ? AND kind = ? AND revision = ?",
                                   (scene_id, kind, want)).fetchone()
        if row is None:
            raise UnknownRevision(want, 1, current)
        return want, json.loads(row[0])

    def save(self, scene_id: str, kind: str, body: dict[str, Any], expected: int, author: str) -> int:
        """Store ``body`` as the revision after ``expected``; returns it."""
        text = json.dumps(body, allow_nan=False, separators=(",", ":"))
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                current = self._newest(scene_id, kind)
                if current != expected:
                    raise StaleRevision(current, expected)
                self._db.execute("INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?)",
                                 (scene_id, kind, current + 1, author, time.time_ns(), text))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return current + 1

    def history(self, scene_id: str, kind: str, limit: int = 100) -> list[dict[str, Any]]:
        """The newest ``limit`` revisions, newest first: ``{revision, author, at_ns}``."""
        with self._lock:
            rows = self._db.execute("SELECT revision, author, at_ns FROM documents WHERE scene_id = ? AND kind = ? "
                                    "ORDER BY revision DESC LIMIT ?", (scene_id, kind, limit)).fetchall()
        return [{"revision": r, "author": a, "at_ns": t} for r, a, t in rows]


def app_store(app: Any, label_db_path: Path) -> DocumentStore:
    """The app's store (``documents.sqlite3`` beside the label database), opened on first use
    and kept in ``app.state.documents``."""
    store = getattr(app.state, "documents", None)
    if store is None:
        store = DocumentStore(Path(label_db_path).with_name("documents.sqlite3"))
        app.state.documents = store
    return store
