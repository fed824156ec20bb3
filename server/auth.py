"""Bearer tokens with roles: viewer < annotator < admin.

No ``Authorization: Bearer <token>`` header (or an unknown token) → 401; a known token whose
role is below the one an endpoint needs → 403. Tokens are compared by their SHA-256, so the
lookup time does not depend on how much of a guess matches.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROLES = ("viewer", "annotator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name (for the history table) and a role."""

    name: str
    role: str

    def allows(self, needed: str) -> bool:
        return _RANK[self.role] >= _RANK[needed]


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def parse_tokens(doc: Any, source: str) -> dict[bytes, Principal]:
    """Token table from a parsed mapping ``{token: role}`` or list of ``{token, role, name}``."""
    if isinstance(doc, dict) and "tokens" in doc:
        doc = doc["tokens"]
    if isinstance(doc, dict):
        items = [{"token": k, "role": v} for k, v in doc.items()]
    elif isinstance(doc, list):
        items = doc
    else:
        raise ValueError(f"{source}: tokens must be a mapping or a list, got {type(doc).__name__}")
    table: dict[bytes, Principal] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("token"), str) or len(item["token"]) < 8:
            raise ValueError(f"{source}: entry {i} needs a 'token' string of at least 8 characters")
        role = item.get("role")
        if role not in _RANK:
            raise ValueError(f"{source}: entry {i} role must be one of {ROLES}, got {role!r}")
        name = str(item.get("name") or f"{role}-{hashlib.sha256(item['token'].encode()).hexdigest()[:8]}")
        table[_digest(item["token"])] = Principal(name, role)
    return table


def load_tokens(tokens_file: Path | None, tokens_env: str | None) -> dict[bytes, Principal]:
    """Merge the tokens of a JSON/YAML file and of a JSON string (the env variable)."""
    table: dict[bytes, Principal] = {}
    if tokens_file is not None:
        text = Path(tokens_file).read_text()
        doc = json.loads(text) if str(tokens_file).endswith(".json") else yaml.safe_load(text)
        table.update(parse_tokens(doc, str(tokens_file)))
    if tokens_env:
        table.update(parse_tokens(json.loads(tokens_env), "FATHOM_TOKENS"))
    return table


def authenticate(table: dict[bytes, Principal], authorization: str | None) -> Principal | None:
    """The principal of an ``Authorization`` header value, or None."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return table.get(_digest(token.strip()))
