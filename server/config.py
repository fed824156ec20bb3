"""Server settings (pydantic-settings): from arguments, or ``FATHOM_*`` environment variables.

Tokens come from ``tokens_file`` (``fathom serve --tokens-file`` or ``FATHOM_TOKENS_FILE``; JSON
when named ``*.json``, else YAML) and/or ``tokens`` (the ``FATHOM_TOKENS`` environment variable,
JSON). Both take a mapping ``{"<token>": "<role>"}`` or a list (bare or under ``"tokens"``) of
plain entries ``{"token", "role", "name"}`` or digest entries ``{"sha256", "role", "name",
"expires"}``; ``fathom token create`` writes digest entries, never the token (see
:mod:`server.auth`, :mod:`server.tokens`). Roles: ``viewer`` (read scenes, frames, images, labels,
exports), ``annotator`` (+ write labels), ``admin`` (+ label history and rescans).
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_ORIGIN = re.compile(r"https?://[^/?#\s]+", re.ASCII)  # an Origin header's value: no path, no trailing slash


class Settings(BaseSettings):
    """Everything the app needs; ``create_app(Settings(scenes_dir=...))``."""

    model_config = SettingsConfigDict(env_prefix="FATHOM_", extra="forbid")

    scenes_dir: Path = Field(description="directory holding one sub-directory per prepared scene")
    label_db: Path | None = Field(None, description="SQLite label database (default SCENES_DIR/labels.sqlite3)")
    tokens_file: Path | None = Field(None, description="JSON/YAML tokens file (env FATHOM_TOKENS_FILE)")
    tokens: str | None = Field(None, description="JSON token → role mapping or list (env FATHOM_TOKENS)")
    max_body_bytes: int = Field(8 << 20, gt=0, description="request bodies above this get 413")
    cache_bytes: int = Field(256 << 20, ge=0, description="LRU of serialised frame payloads")
    gzip_level: int = Field(1, ge=1, le=9, description="gzip level when a client accepts gzip")
    warmup: bool = Field(True, description="compile the engine kernels at start-up (off only for quick test servers)")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port]) allowed to call the API from another site, or [\"*\"] "
                    "for any (env FATHOM_CORS_ORIGINS, a JSON list); empty: no CORS headers")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.fullmatch(origin):
                raise ValueError(f"a CORS origin is scheme://host[:port] with no path or trailing slash (or '*'), "
                                 f"got {origin!r}")
        return origins

    @property
    def label_db_path(self) -> Path:
        return self.label_db if self.label_db is not None else self.scenes_dir / "labels.sqlite3"
