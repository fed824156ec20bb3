"""The label store's tables and the queries it runs (see :mod:`server.label_store`): plain
functions on one connection; the caller holds the lock and the transaction."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS label_scenes (
    scene_id TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    history_from INTEGER NOT NULL DEFAULT 0,
    next_position INTEGER NOT NULL DEFAULT 0,
    ontology TEXT
);
CREATE TABLE IF NOT EXISTS tracks (
    scene_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    position INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (scene_id, track_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tracks_in_order ON tracks (scene_id, position);
CREATE TABLE IF NOT EXISTS revisions (
    scene_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    op TEXT NOT NULL,
    author TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    note TEXT,
    PRIMARY KEY (scene_id, revision)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS track_changes (
    scene_id TEXT NOT NULL,
    track_id TEXT NOT NULL,
    revision INTEGER NOT NULL,
    before_revision INTEGER NOT NULL,
    before_position INTEGER,
    before TEXT,
    after TEXT,
    PRIMARY KEY (scene_id, track_id, revision)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS track_changes_by_revision ON track_changes (scene_id, revision);
"""
CHUNK = 500  # ids per "IN (...)" query, below SQLite's limit on bound variables

State = tuple[int, str | None, int | None]  # a track's (revision, body JSON, position); (0, None, None): absent
ABSENT: State = (0, None, None)
Bodies = dict[str, dict[str, Any] | None]  # track id → body (None: absent / delete)
SceneRow = tuple[int, int, int]  # a scene's (document revision, history_from, next track position)


def dump(value: Any) -> str:
    """Compact JSON as stored (finite numbers only)."""
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


@dataclass(frozen=True)
class Commit:
    """An accepted write, as announced to listeners: who changed which tracks."""

    scene_id: str
    revision: int
    op: str
    author: str
    at_ns: int
    tracks: tuple[str, ...]


def scene_row(db: sqlite3.Connection, scene_id: str) -> SceneRow:
    """The scene's row (zeros if never written)."""
    row = db.execute("SELECT revision, history_from, next_position FROM label_scenes WHERE scene_id = ?",
                     (scene_id,)).fetchone()
    return (0, 0, 0) if row is None else row


def document_rows(db: sqlite3.Connection, scene_id: str) -> list[tuple[str, int, str]]:
    """``(track id, revision, body)`` of every track of the scene, in document order."""
    return db.execute("SELECT track_id, revision, body FROM tracks WHERE scene_id = ? ORDER BY position",
                      (scene_id,)).fetchall()


def track_states(db: sqlite3.Connection, scene_id: str, ids: Iterable[str]) -> dict[str, State]:
    """The stored state of the tracks ``ids`` that exist."""
    ids = list(ids)
    out: dict[str, State] = {}
    for i in range(0, len(ids), CHUNK):
        chunk = ids[i:i + CHUNK]
        out.update((tid, (rev, body, pos)) for tid, rev, body, pos in db.execute(
            f"SELECT track_id, revision, body, position FROM tracks WHERE scene_id = ? AND track_id IN "
            f"({','.join('?' * len(chunk))})", (scene_id, *chunk)))
    return out


def states_at(db: sqlite3.Connection, scene_id: str, revision: int, track_ids: list[str] | None) -> dict[str, State]:
    """The states at ``revision`` of the tracks ``track_ids`` (None: of every track changed since;
    the others are as they are now): the ``before`` of each one's first change after it."""
    if track_ids is None:
        out: dict[str, State] = {}
        for tid, rev, body, pos in db.execute(  # newest first: the first change after `revision` is set last
                "SELECT track_id, before_revision, before, before_position FROM track_changes "
                "WHERE scene_id = ? AND revision > ? ORDER BY revision DESC", (scene_id, revision)):
            out[tid] = (rev, body, pos)
        return out
    out = track_states(db, scene_id, track_ids)
    for tid in track_ids:
        row = db.execute("SELECT before_revision, before, before_position FROM track_changes WHERE scene_id = ? "
                         "AND track_id = ? AND revision > ? ORDER BY revision LIMIT 1",
                         (scene_id, tid, revision)).fetchone()
        out[tid] = row if row is not None else out.get(tid, ABSENT)
    return out


def store_revision(db: sqlite3.Connection, scene_id: str, revision: int, next_position: int,
                   old: dict[str, State], new: Bodies, op: str, author: str,
                   note: Any) -> tuple[Commit, dict[str, State]]:
    """Write revision ``revision``: the tracks of ``new`` whose body differs from ``old`` (a new
    track goes after the others: ``next_position`` on), their diffs, the revision row. Returns
    the commit and the state of each track of ``new`` after it."""
    now = time.time_ns()
    upserts, deletes, diffs, result = [], [], [], {}
    for tid, body in new.items():
        before = old.get(tid, ABSENT)
        after = None if body is None else dump(body)
        if after == before[1]:
            result[tid] = before
            continue
        if after is None:
            result[tid] = ABSENT
            deletes.append((scene_id, tid))
        else:
            position = before[2]
            if position is None:
                position, next_position = next_position, next_position + 1
            result[tid] = (revision, after, position)
            upserts.append((scene_id, tid, revision, position, after))
        diffs.append((scene_id, tid, revision, before[0], before[2], before[1], after))
    db.executemany("DELETE FROM tracks WHERE scene_id = ? AND track_id = ?", deletes)
    db.executemany("INSERT INTO tracks (scene_id, track_id, revision, position, body) VALUES (?, ?, ?, ?, ?) "
                   "ON CONFLICT(scene_id, track_id) DO UPDATE SET revision = excluded.revision, body = excluded.body",
                   upserts)
    db.executemany("INSERT INTO track_changes (scene_id, track_id, revision, before_revision, before_position, "
                   "before, after) VALUES (?, ?, ?, ?, ?, ?, ?)", diffs)
    db.execute("INSERT INTO label_scenes (scene_id, revision, next_position) VALUES (?, ?, ?) ON CONFLICT(scene_id) "
               "DO UPDATE SET revision = excluded.revision, next_position = excluded.next_position",
               (scene_id, revision, next_position))
    db.execute("INSERT INTO revisions (scene_id, revision, op, author, at_ns, note) VALUES (?, ?, ?, ?, ?, ?)",
               (scene_id, revision, op, author, now, None if note is None else dump(note)))
    return Commit(scene_id, revision, op, author, now, tuple(sorted(d[1] for d in diffs))), result


def migrate(db: sqlite3.Connection) -> bool:
    """Move a database of the one-document layout (``documents``, ``history``) into the
    per-track tables (call inside a write transaction); True if there was anything to migrate."""
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "documents" in tables:
        for scene_id, revision, body in db.execute("SELECT scene_id, revision, body FROM documents").fetchall():
            tracks = json.loads(body)["tracks"]
            db.execute("INSERT INTO label_scenes (scene_id, revision, history_from, next_position) "
                       "VALUES (?, ?, ?, ?)", (scene_id, revision, revision, len(tracks)))
            db.executemany("INSERT INTO tracks (scene_id, track_id, revision, position, body) "
                           "VALUES (?, ?, ?, ?, ?)",
                           [(scene_id, t["id"], revision, i, dump(t)) for i, t in enumerate(tracks)])
        db.execute("DROP TABLE documents")
    if "history" in tables:
        db.execute("INSERT INTO revisions (scene_id, revision, op, author, at_ns, note) "
                   "SELECT scene_id, revision, op, author, at_ns, change FROM history")
        db.execute("DROP TABLE history")
    return bool(tables & {"documents", "history"})
