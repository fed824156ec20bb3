"""Labels in SQLite: one document per scene with a revision number, and a history of writes.

WAL journal, ``synchronous=FULL`` (the WAL is fsynced at every commit) and one
``BEGIN IMMEDIATE`` transaction per write: when :meth:`LabelStore.write` returns, the write
is on disk and survives ``kill -9`` of the server. The revision check and the change happen
inside that transaction, so concurrent writers cannot lose each other's updates.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Callable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    scene_id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    body TEXT NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    scene_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    op TEXT NOT NULL,
    author TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    change TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS history_scene ON history (scene_id, revision);
"""

EMPTY_DOCUMENT: dict[str, Any] = {"tracks": []}


class StaleRevision(Exception):
    """The write named a revision that is no longer current."""

    def __init__(self, current: int):
        super().__init__(f"current revision is {current}")
        self.current = current


class LabelStore:
    """Label documents keyed by scene id. Revision 0 is the implicit empty document."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._db.executescript(_SCHEMA)

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection (opened on first use and again after :meth:`close`); hold the lock."""
        if self._conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._conn = conn
        return self._conn

    def close(self) -> None:
        """Close the connection (the app's shutdown); a later call reopens it."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _read(self, scene_id: str) -> tuple[int, dict[str, Any]]:
        row = self._db.execute("SELECT revision, body FROM documents WHERE scene_id = ?", (scene_id,)).fetchone()
        return (0, json.loads(json.dumps(EMPTY_DOCUMENT))) if row is None else (row[0], json.loads(row[1]))

    def get(self, scene_id: str) -> tuple[int, dict[str, Any]]:
        """``(revision, document)`` of a scene (``(0, {"tracks": []})`` if never written)."""
        with self._lock:
            return self._read(scene_id)

    def write(
        self,
        scene_id: str,
        expected_revision: int | None,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        op: str,
        author: str,
        record: Any,
    ) -> tuple[int, dict[str, Any]]:
        """Apply ``change(current_document) -> new_document`` atomically.

        ``expected_revision`` None skips the check (``If-Match: *``); otherwise a different
        current revision raises :class:`StaleRevision` and nothing changes. ``change`` may
        raise to abort (nothing changes). ``record`` (JSON-able) goes to the history table.
        Returns the new ``(revision, document)`` once it is durable.
        """
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                revision, doc = self._read(scene_id)
                if expected_revision is not None and expected_revision != revision:
                    raise StaleRevision(revision)
                new = change(doc)
                body = json.dumps(new, separators=(",", ":"), allow_nan=False)
                now = time.time_ns()
                self._db.execute(
                    "INSERT INTO documents (scene_id, revision, body, updated_ns) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT(scene_id) DO UPDATE SET revision = excluded.revision, "
                    "body = excluded.body, updated_ns = excluded.updated_ns",
                    (scene_id, revision + 1, body, now),
                )
                self._db.execute(
                    "INSERT INTO history (scene_id, revision, op, author, at_ns, change) VALUES (?, ?, ?, ?, ?, ?)",
                    (scene_id, revision + 1, op, author, now, json.dumps(record, separators=(",", ":"), allow_nan=False)),
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return revision + 1, new

    def history(self, scene_id: str, limit: int = 100, after_revision: int = 0) -> list[dict[str, Any]]:
        """Accepted writes of a scene, oldest first, with revision > ``after_revision``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT revision, op, author, at_ns, change FROM history WHERE scene_id = ? AND revision > ? "
                "ORDER BY revision LIMIT ?",
                (scene_id, after_revision, limit),
            ).fetchall()
        return [{"revision": r, "op": o, "author": a, "at_ns": t, "change": json.loads(c)} for r, o, a, t, c in rows]
