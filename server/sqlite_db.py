"""One SQLite database file, the way every store of the server uses it.

WAL journal and ``synchronous=FULL``: a commit's WAL frames are fsynced before it returns,
so a write that returned survives ``kill -9`` of the server (and a power cut). One write
connection and one read connection, each behind its own lock, opened on first use and again
after :meth:`Database.close` (an app started again after its shutdown). A write is one
``BEGIN IMMEDIATE`` transaction, rolled back on any exception: revision checks made inside
it cannot race another writer. A read is one deferred transaction: a consistent snapshot of
the last commit that never waits for the writer.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


class Database:
    """The SQLite file ``path`` (its folder and the file are created on first use), with
    ``schema`` (``CREATE ... IF NOT EXISTS`` statements) applied when opened."""

    def __init__(self, path: str | Path, schema: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._locks = (threading.Lock(), threading.Lock())  # writer, reader
        self._conns: list[sqlite3.Connection | None] = [None, None]
        with self._locks[0]:
            self._conn(0).executescript(schema)

    def _conn(self, role: int) -> sqlite3.Connection:
        """Connection ``role`` (0 writer, 1 reader), opened if needed; hold its lock."""
        conn = self._conns[role]
        if conn is None:
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            self._conns[role] = conn
        return conn

    def write(self, fn: Callable[[sqlite3.Connection], T], then: Callable[[T], None] | None = None) -> T:
        """``fn(connection)`` in one write transaction, committed (durable) when it returns,
        rolled back if it raises. ``then(result)`` runs after the commit, still holding the
        write lock (so what it does follows the commit order)."""
        with self._locks[0]:
            db = self._conn(0)
            db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(db)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if then is not None:
                then(out)
        return out

    def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` in one read transaction (a consistent snapshot)."""
        with self._locks[1]:
            db = self._conn(1)
            db.execute("BEGIN")
            try:
                return fn(db)
            finally:
                db.execute("COMMIT")

    def close(self) -> None:
        """Close both connections; a later call reopens them."""
        for role, lock in enumerate(self._locks):
            with lock:
                conn = self._conns[role]
                if conn is not None:
                    conn.close()
                    self._conns[role] = None
