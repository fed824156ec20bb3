"""The tokens file behind ``fathom token create|list|revoke`` (and ``fathom serve --tokens-file``).

The file is JSON, ``{"tokens": [entry, ...]}``. Entries written here are digest entries
``{"sha256": "<64 hex>", "name", "role", "created", "expires"}`` (times ISO 8601 UTC, ``expires``
null for never): the token itself is printed once by :func:`create_token` and never stored.
Plain ``{"token": ...}`` entries already in a file are kept as they are. An entry's id is the
first 8 hex digits of its SHA-256. Reading and validating the entries is :mod:`server.auth`'s.

Every write replaces the file atomically (a temporary file in the same directory, fsync,
``os.replace``, fsync of the directory) with mode 0600. Two writers at the same instant are not
serialised: the later one wins.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from server.auth import ROLES, TokensError, digest, parse_entry, parse_time, read_tokens_file, token_entries

DEFAULT_TOKENS_FILE = Path("fathom-tokens.json")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")
_DURATION = re.compile(r"(\d{1,5})([smhdw])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def default_tokens_file() -> Path:
    """``$FATHOM_TOKENS_FILE`` (what the server reads too), else ``./fathom-tokens.json``."""
    return Path(os.environ.get("FATHOM_TOKENS_FILE") or DEFAULT_TOKENS_FILE)


@dataclass(frozen=True)
class TokenInfo:
    """One entry as listed: id (8 hex digits of the SHA-256), name, role, created (ISO 8601 as
    stored, None if not recorded), expires (UTC, None for never), plain (the token is in the file)."""

    id: str
    sha256: str
    name: str
    role: str
    created: str | None
    expires: datetime | None
    plain: bool


def parse_expires(text: str, now: datetime) -> datetime:
    """``--expires``: a duration from ``now`` (``90m``, ``12h``, ``30d``, ``2w``; units s m h d w)
    or an ISO 8601 date / date-time (UTC when it names no zone; a date alone is 00:00 of it).

    Raises TokensError for anything else or for an instant not after ``now``.
    """
    duration = _DURATION.fullmatch(text.strip())
    try:
        if duration:
            when = now + timedelta(seconds=int(duration[1]) * _UNIT_S[duration[2]])
        else:
            when = parse_time(text.strip())
    except ValueError:
        raise TokensError(f"--expires {text!r}: expected a duration like 30d / 12h / 90m or an "
                          "ISO 8601 date or time like 2030-01-31 or 2030-01-31T18:00:00+01:00") from None
    if when <= now:
        raise TokensError(f"--expires {text!r}: {when.isoformat()} is not in the future")
    return when.astimezone(UTC)


def _load(path: Path) -> list[tuple[dict[str, Any], TokenInfo]]:
    """The file's raw entries with their parsed view; a missing file has none."""
    if not path.exists():
        return []
    source = str(path)
    loaded = []
    for i, item in enumerate(token_entries(read_tokens_file(path), source)):
        key, principal = parse_entry(item, f"{source}: entry {i}")
        loaded.append((item, TokenInfo(key.hex()[:8], key.hex(), principal.name, principal.role,
                                       str(item["created"]) if item.get("created") else None,
                                       principal.expires, "token" in item)))
    return loaded


def _write(path: Path, entries: list[dict[str, Any]]) -> None:
    """Atomically replace ``path`` with ``{"tokens": entries}`` (mode 0600, fsynced)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            json.dump({"tokens": entries}, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def list_tokens(path: Path) -> list[TokenInfo]:
    """The entries of the tokens file at ``path`` (none when it does not exist), in file order."""
    return [info for _, info in _load(path)]


def create_token(path: Path, role: str, name: str | None = None, expires: datetime | None = None,
                 *, replace: bool = False, now: datetime | None = None) -> tuple[str, TokenInfo]:
    """Add a new random token (``secrets.token_urlsafe(32)``) to the tokens file; returns it and its entry.

    ``name`` defaults to ``<role>-<id>``. A name already in the file is an error unless
    ``replace``, which drops the entries of that name first. ``now`` (UTC) stamps ``created``.
    """
    if role not in ROLES:
        raise TokensError(f"role must be one of {ROLES}, got {role!r}")
    if name is not None and not _NAME.fullmatch(name):
        raise TokensError(f"token name {name!r}: 1-64 characters of letters, digits and _ . @ -, "
                          "starting with a letter or digit")
    now = now or datetime.now(UTC)
    token = secrets.token_urlsafe(32)
    sha = digest(token).hex()
    name = name or f"{role}-{sha[:8]}"
    loaded = _load(path)
    same = [info for _, info in loaded if info.name == name]
    if same and not replace:
        raise TokensError(f"{path}: a token named {name!r} exists already (id {same[0].id}); "
                          "revoke it first or pick another --name")
    entry = {"sha256": sha, "name": name, "role": role, "created": now.isoformat(timespec="seconds"),
             "expires": expires.astimezone(UTC).isoformat(timespec="seconds") if expires else None}
    _write(path, [item for item, info in loaded if info.name != name] + [entry])
    return token, _load(path)[-1][1]


def revoke_token(path: Path, name_or_id: str) -> TokenInfo:
    """Remove the one entry whose name, id or full SHA-256 is ``name_or_id``; returns it.

    Raises TokensError when none or several entries match.
    """
    loaded = _load(path)
    hits = [i for i, (_, info) in enumerate(loaded) if name_or_id in (info.name, info.id, info.sha256)]
    if not hits:
        raise TokensError(f"{path}: no token named or with id {name_or_id!r}")
    if len(hits) > 1:
        ids = ", ".join(loaded[i][1].id for i in hits)
        raise TokensError(f"{path}: {len(hits)} tokens match {name_or_id!r} (ids {ids}); revoke one by its id")
    _write(path, [item for i, (item, _) in enumerate(loaded) if i != hits[0]])
    return loaded[hits[0]][1]
