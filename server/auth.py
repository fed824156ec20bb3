"""Bearer tokens with roles: viewer < annotator < admin.

No ``Authorization: Bearer <token>`` header, an unknown token or an expired one → 401; a known
token whose role is below the one an endpoint needs → 403. Tokens are compared by their
SHA-256, so the lookup time does not depend on how much of a guess matches.

A token table entry is either plain, ``{"token": "...", "role": ..., "name": ...}`` (what
``FATHOM_TOKENS`` has always taken), or a digest, ``{"sha256": "<64 hex>", "role": ...,
"name": ..., "expires": ...}`` (what ``fathom token create`` writes: the token itself is never
stored). ``expires`` (either kind, optional) is an ISO 8601 date or time, UTC when it names
no zone; a token is refused from that instant on.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import yaml

ROLES = ("viewer", "annotator", "admin")
_RANK = {r: i for i, r in enumerate(ROLES)}
_HEX64 = re.compile(r"[0-9a-f]{64}")


class TokensError(ValueError):
    """A token table (file or ``FATHOM_TOKENS``) or token request that cannot be used; names the
    source and entry."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: a name (for the history table), a role, and when the token expires (UTC)."""

    name: str
    role: str
    expires: datetime | None = None

    def allows(self, needed: str) -> bool:
        return _RANK[self.role] >= _RANK[needed]

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires


def digest(token: str) -> bytes:
    """SHA-256 of a token's UTF-8 bytes (32 bytes)."""
    return hashlib.sha256(token.encode()).digest()


def parse_time(value: str | date) -> datetime:
    """An ISO 8601 date or date-time (or a YAML-parsed one) as an aware datetime; no zone means UTC.

    A date alone is 00:00 of that day. Raises ValueError or TypeError on anything else.
    """
    if not isinstance(value, (str, date)):
        raise TypeError(f"expected an ISO 8601 string, got {type(value).__name__}")
    when = datetime.fromisoformat(value if isinstance(value, str) else value.isoformat())
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when


def token_entries(doc: Any, source: str) -> list[Any]:
    """The entries of a parsed table: ``{"tokens": ...}``, a mapping ``{token: role}`` or a list."""
    if isinstance(doc, dict) and "tokens" in doc:
        doc = doc["tokens"]
    if isinstance(doc, dict):
        return [{"token": k, "role": v} for k, v in doc.items()]
    if isinstance(doc, list):
        return doc
    raise TokensError(f"{source}: tokens must be a mapping or a list, got {type(doc).__name__}")


def parse_entry(item: Any, where: str) -> tuple[bytes, Principal]:
    """(SHA-256 of the token, principal) of one plain or digest entry; ``where`` names it in errors."""
    if not isinstance(item, dict) or ("token" in item) == ("sha256" in item):
        raise TokensError(f"{where}: needs exactly one of 'token' (plain) or 'sha256' (digest)")
    if "token" in item:
        if not isinstance(item["token"], str) or len(item["token"]) < 8:
            raise TokensError(f"{where}: needs a 'token' string of at least 8 characters")
        key = digest(item["token"])
    else:
        if not isinstance(item["sha256"], str) or not _HEX64.fullmatch(item["sha256"]):
            raise TokensError(f"{where}: 'sha256' must be 64 lowercase hex digits")
        key = bytes.fromhex(item["sha256"])
    role = item.get("role")
    if role not in _RANK:
        raise TokensError(f"{where}: role must be one of {ROLES}, got {role!r}")
    expires = item.get("expires")
    if expires is not None:
        try:
            expires = parse_time(expires)
        except (TypeError, ValueError):
            raise TokensError(f"{where}: 'expires' must be an ISO 8601 date or time, got {expires!r}") from None
    name = str(item.get("name") or f"{role}-{key.hex()[:8]}")
    return key, Principal(name, role, expires)


def parse_tokens(doc: Any, source: str) -> dict[bytes, Principal]:
    """Token table (SHA-256 of token → principal) of a parsed document (see :func:`token_entries`)."""
    return dict(parse_entry(item, f"{source}: entry {i}") for i, item in enumerate(token_entries(doc, source)))


def read_tokens_file(path: Path) -> Any:
    """The parsed document of a tokens file: JSON when named ``*.json``, else YAML."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise TokensError(f"{path}: no such tokens file (create one with 'fathom token create')") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensError(f"{path}: cannot read the tokens file: {exc}") from None
    try:
        return json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise TokensError(f"{path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'}: {exc}") from None


def load_tokens(tokens_file: Path | None, tokens_env: str | None) -> dict[bytes, Principal]:
    """Merge the tokens of a JSON/YAML file and of a JSON string (the env variable)."""
    table: dict[bytes, Principal] = {}
    if tokens_file is not None:
        table.update(parse_tokens(read_tokens_file(tokens_file), str(tokens_file)))
    if tokens_env:
        try:
            doc = json.loads(tokens_env)
        except json.JSONDecodeError as exc:
            raise TokensError(f"FATHOM_TOKENS: not valid JSON: {exc}") from None
        table.update(parse_tokens(doc, "FATHOM_TOKENS"))
    return table


def authenticate(table: dict[bytes, Principal], authorization: str | None,
                 now: datetime | None = None) -> Principal | None:
    """The principal of an ``Authorization`` header value, or None (also when expired at ``now``,
    default the current time)."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    principal = table.get(digest(token.strip()))
    if principal is None or principal.expired(now or datetime.now(UTC)):
        return None
    return principal
