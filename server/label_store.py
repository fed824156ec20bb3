"""Labels in SQLite, stored per track, with a history of per-track changes.

Each scene has a document revision; each track has its own revision (the document revision
that last changed it) and its JSON body. A write touching k tracks reads and writes O(k) rows
(B-tree lookups), whatever the number of tracks in the scene. Tables:

- ``label_scenes``: scene id → document revision, ``history_from`` (the first revision whose
  changes are kept: 0, or the revision a database of the older one-document layout had when
  it was migrated), the next track position, the scene's ontology (JSON or NULL);
- ``tracks``: (scene id, track id) → revision, position (the document lists tracks in the
  order they were created; a track deleted and created again goes last), body (compact JSON);
- ``revisions``: (scene id, revision) → op, author, time, note (JSON or NULL);
- ``track_changes``: (scene id, track id, revision) → the track's revision, position and body
  before and its body after (NULL where the track did not exist). Never whole documents: the
  document at revision k ≥ ``history_from`` is the current one with each track changed after
  k put back as it was before its first change after k.

WAL journal, ``synchronous=FULL`` (the WAL is fsynced at every commit) and one
``BEGIN IMMEDIATE`` transaction per write: when a write returns, it is on disk and survives
``kill -9`` of the server. Revision checks (of the document and of tracks) happen inside that
transaction, so concurrent writers cannot lose each other's updates. Reads use a second
connection (WAL readers see the last commit and do not wait for a writer).

A database of the older layout (``documents``: one JSON document per scene; ``history``: the
request of each write) is migrated when opened: tracks from the documents, the old history as
revisions whose ``note`` is the request recorded then (they cannot be reconstructed).
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.label_sql import (
    ABSENT,
    SCHEMA,
    Bodies,
    Commit,
    SceneRow,
    State,
    document_rows,
    dump,
    loads,
    migrate,
    scene_row,
    states_at,
    store_revision,
    track_states,
)
from server.sqlite_db import Database

__all__ = ["Commit", "Conflict", "LabelStore", "StaleRevision", "TrackConflict", "UnknownRevision"]

log = logging.getLogger("fathom.server")


class StaleRevision(Exception):
    """The write named a document revision (``expected``) that is no longer current."""

    def __init__(self, current: int, expected: int | None = None):
        super().__init__(f"revision {expected} is stale; current is {current}")
        self.current, self.expected = current, expected


@dataclass(frozen=True)
class Conflict:
    """A track the write was based on (``base``) that has changed since (``revision``, 0: absent)."""

    track_id: str
    base: int
    revision: int
    track: dict[str, Any] | None


class TrackConflict(Exception):
    """Tracks changed since the revisions the write was based on; nothing was written."""

    def __init__(self, current: int, conflicts: list[Conflict]):
        super().__init__(f"tracks {[c.track_id for c in conflicts]} changed since their base revisions")
        self.current = current
        self.conflicts = conflicts


class UnknownRevision(LookupError):
    """A revision after the current one, or before the scene's per-track history starts."""

    def __init__(self, revision: int, history_from: int, current: int):
        super().__init__(f"revision {revision} is not between {history_from} and the current revision {current}")
        self.revision, self.history_from, self.current = revision, history_from, current


class LabelStore:
    """Label documents keyed by scene id. Revision 0 is the implicit empty document.

    ``listeners`` are called with a :class:`Commit` after each write is durable (in commit
    order; an exception there is logged, the write stands).
    """

    def __init__(self, path: str | Path):
        self.listeners: list[Callable[[Commit], None]] = []
        self._db = Database(path, SCHEMA)
        self.path = self._db.path
        if self._db.write(migrate):
            log.info("label store %s: migrated to per-track storage", self.path)

    def close(self) -> None:
        """Close the connections (the app's shutdown); a later call reopens them."""
        self._db.close()

    # ------------------------------------------------------------------ reads

    def revision(self, scene_id: str, track_id: str | None = None) -> int:
        """The document's revision, or with ``track_id`` that track's (0: never written, absent)."""
        if track_id is None:
            return self._db.read(lambda db: scene_row(db, scene_id)[0])
        states = self._db.read(lambda db: track_states(db, scene_id, [track_id]))
        return states[track_id][0] if states else 0

    def get(self, scene_id: str) -> tuple[int, dict[str, Any]]:
        """``(revision, document)`` of a scene (``(0, {"tracks": []})`` if never written)."""
        revision, rows = self.document(scene_id)
        return revision, {"tracks": [json.loads(body) for _, _, body in rows]}

    def document(self, scene_id: str, at: int | None = None) -> tuple[int, list[tuple[str, int, str]]]:
        """``(revision, [(track id, track revision, body JSON)])`` now or at revision ``at``, in
        document order: the order in which the tracks were created (a track deleted and created
        again goes last). Raises :class:`UnknownRevision` for an ``at`` after the current revision or before
        the scene's history starts.
        """

        def read(db: sqlite3.Connection) -> tuple[int, list[tuple[str, int, str]]]:
            current, history_from, _ = scene_row(db, scene_id)
            rows = document_rows(db, scene_id)
            if at is None or at == current:
                return current, rows
            if not history_from <= at <= current:
                raise UnknownRevision(at, history_from, current)
            states = track_states(db, scene_id, [tid for tid, _, _ in rows])
            states.update(states_at(db, scene_id, at, None))
            kept = sorted(((pos, tid, rev, body) for tid, (rev, body, pos) in states.items() if body is not None))
            return at, [(tid, rev, body) for _, tid, rev, body in kept]

        return self._db.read(read)

    def history(self, scene_id: str, limit: int = 100, after_revision: int = 0) -> list[dict[str, Any]]:
        """Revisions of a scene, oldest first, with revision > ``after_revision``: op, author,
        time, note and the ids of the tracks each changed."""

        def read(db: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = db.execute("SELECT revision, op, author, at_ns, note FROM revisions WHERE scene_id = ? AND "
                              "revision > ? ORDER BY revision LIMIT ?", (scene_id, after_revision, limit)).fetchall()
            if not rows:
                return []
            changed: dict[int, list[str]] = {}
            for rev, tid in db.execute("SELECT revision, track_id FROM track_changes WHERE scene_id = ? AND "
                                       "revision BETWEEN ? AND ? ORDER BY revision, track_id",
                                       (scene_id, rows[0][0], rows[-1][0])):
                changed.setdefault(rev, []).append(tid)
            return [{"revision": r, "op": o, "author": a, "at_ns": t, "note": loads(n), "tracks": changed.get(r, [])}
                    for r, o, a, t, n in rows]

        return self._db.read(read)

    def track_history(self, scene_id: str, track_id: str, limit: int = 100,
                      after_revision: int = 0) -> list[dict[str, Any]]:
        """Changes of one track, oldest first, with revision > ``after_revision``: op, author,
        time, its revision and body before and its body after (None: absent)."""
        rows = self._db.read(lambda db: db.execute(
            "SELECT c.revision, r.op, r.author, r.at_ns, c.before_revision, c.before, c.after FROM track_changes c "
            "JOIN revisions r ON r.scene_id = c.scene_id AND r.revision = c.revision "
            "WHERE c.scene_id = ? AND c.track_id = ? AND c.revision > ? ORDER BY c.revision LIMIT ?",
            (scene_id, track_id, after_revision, limit)).fetchall())
        return [{"revision": r, "op": o, "author": a, "at_ns": t, "before_revision": br, "before": loads(b),
                 "after": loads(af)} for r, o, a, t, br, b, af in rows]

    def ontology(self, scene_id: str) -> dict[str, Any] | None:
        """The scene's ontology (JSON object) or None."""
        row = self._db.read(lambda db: db.execute("SELECT ontology FROM label_scenes WHERE scene_id = ?",
                                               (scene_id,)).fetchone())
        return None if row is None else loads(row[0])

    # ------------------------------------------------------------------ writes

    def set_ontology(self, scene_id: str, ontology: dict[str, Any] | None) -> None:
        """Store (None: remove) the scene's ontology. Not a label revision."""
        self._db.write(lambda db: db.execute(
            "INSERT INTO label_scenes (scene_id, revision, ontology) VALUES (?, 0, ?) "
            "ON CONFLICT(scene_id) DO UPDATE SET ontology = excluded.ontology",
            (scene_id, None if ontology is None else dump(ontology))))

    def write(
        self,
        scene_id: str,
        expected_revision: int | None,
        change: Callable[[dict[str, Any]], dict[str, Any]],
        *,
        op: str,
        author: str,
        record: Any = None,
    ) -> tuple[int, dict[str, Any]]:
        """Replace the whole document by ``change(current_document)``, atomically.

        ``expected_revision`` None skips the check (``If-Match: *``); otherwise a different
        current revision raises :class:`StaleRevision` and nothing changes. ``change`` may
        raise to abort (nothing changes). Only the tracks whose body changes get a new
        revision; tracks keep their place in the document, new ones go last in the order
        given. ``record`` (JSON-able, optional) is the revision's note. Returns the new
        ``(revision, document)`` once it is durable.
        """

        def plan(db: sqlite3.Connection, scene: SceneRow) -> tuple[dict[str, State], Bodies]:
            rows = document_rows(db, scene_id)
            new_doc = change({"tracks": [json.loads(body) for _, _, body in rows]})
            new: Bodies = {tid: None for tid, _, _ in rows}
            new.update((t["id"], t) for t in new_doc["tracks"])
            return track_states(db, scene_id, new), new

        commit, states = self._commit(scene_id, expected_revision, None, plan, op, author, record)
        kept = sorted((pos, body) for rev, body, pos in states.values() if body is not None)
        return commit.revision, {"tracks": [json.loads(body) for _, body in kept]}

    def patch(
        self,
        scene_id: str,
        expected_revision: int | None,
        base: dict[str, int] | None,
        ids: Iterable[str],
        change: Callable[[Bodies], Bodies],
        *,
        op: str,
        author: str,
        note: Any = None,
    ) -> tuple[int, dict[str, tuple[int, str | None]]]:
        """Change some tracks: ``change({id: current body or None})`` → ``{id: new body or None
        (delete)}`` for the tracks ``ids``, atomically.

        ``expected_revision`` as for :meth:`write`; ``base`` (track id → revision, 0: absent):
        if any of these tracks has another revision now, :class:`TrackConflict` is raised and
        nothing changes. Returns the new revision and, for each id, ``(track revision, body
        JSON or None)`` after the write.
        """
        ids = list(ids)

        def plan(db: sqlite3.Connection, scene: SceneRow) -> tuple[dict[str, State], Bodies]:
            old = track_states(db, scene_id, ids)
            return old, change({tid: json.loads(old[tid][1]) if tid in old else None for tid in ids})

        commit, states = self._commit(scene_id, expected_revision, base, plan, op, author, note)
        return commit.revision, {tid: states[tid][:2] for tid in ids}

    def revert(
        self,
        scene_id: str,
        expected_revision: int | None,
        base: dict[str, int] | None,
        to_revision: int,
        track_ids: list[str] | None,
        check: Callable[[Bodies], None],
        *,
        author: str,
    ) -> tuple[int, dict[str, tuple[int, str | None]]]:
        """Make the tracks ``track_ids`` (None: all) what they were at ``to_revision``: a new
        revision, op ``revert``, note ``{"revision": to_revision}``. ``check(new bodies)`` may
        raise to refuse them. Raises :class:`UnknownRevision` outside the scene's history;
        otherwise as :meth:`patch` (returns the tracks ``track_ids``, or those it changed)."""

        def plan(db: sqlite3.Connection, scene: SceneRow) -> tuple[dict[str, State], Bodies]:
            current, history_from, _ = scene
            if not history_from <= to_revision <= current:
                raise UnknownRevision(to_revision, history_from, current)
            at = states_at(db, scene_id, to_revision, track_ids)
            new = {tid: loads(body) for tid, (_, body, _) in at.items()}
            check(new)
            return track_states(db, scene_id, at), new

        commit, states = self._commit(scene_id, expected_revision, base, plan, "revert", author,
                                      {"revision": to_revision})
        named = commit.tracks if track_ids is None else track_ids
        return commit.revision, {tid: states[tid][:2] for tid in named}

    def _commit(
        self,
        scene_id: str,
        expected_revision: int | None,
        base: dict[str, int] | None,
        plan: Callable[[sqlite3.Connection, SceneRow], tuple[dict[str, State], Bodies]],
        op: str,
        author: str,
        note: Any,
    ) -> tuple[Commit, dict[str, State]]:
        """One write transaction: check the document revision and ``base``, ``plan(db, scene
        row)`` → (states of the tracks it changes, their new bodies), store the tracks whose
        body changed and their diffs, commit, tell the listeners. Returns the commit and the
        state of each planned track after it."""

        def transaction(db: sqlite3.Connection) -> tuple[Commit, dict[str, State]]:
            scene = scene_row(db, scene_id)
            if expected_revision is not None and expected_revision != scene[0]:
                raise StaleRevision(scene[0], expected_revision)
            if base:
                _check_base(db, scene_id, scene[0], base)
            old, new = plan(db, scene)
            return store_revision(db, scene_id, scene[0] + 1, scene[2], old, new, op, author, note)

        def tell(done: tuple[Commit, dict[str, State]]) -> None:
            for listener in self.listeners:
                try:
                    listener(done[0])
                except Exception:
                    log.exception("label listener failed on %s revision %d", scene_id, done[0].revision)

        return self._db.write(transaction, tell)


def _check_base(db: sqlite3.Connection, scene_id: str, revision: int, base: dict[str, int]) -> None:
    now = track_states(db, scene_id, base)
    conflicts = []
    for tid, rev in base.items():
        current, body, _ = now.get(tid, ABSENT)
        if current != rev:
            conflicts.append(Conflict(tid, rev, current, loads(body)))
    if conflicts:
        raise TrackConflict(revision, conflicts)
