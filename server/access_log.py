"""Keep bearer tokens out of the access log: uvicorn logs each request's path with its query
string, and a viewer link carries ``?token=``. :data:`REDACT_TOKENS` rewrites the value of
every query parameter whose name ends in ``token`` to ``***`` before any handler sees it."""

from __future__ import annotations

import logging
import re

_TOKEN_PARAM = re.compile(r"([?&][^=&#\s]*token=)[^&#\s\"]*", re.IGNORECASE)
ACCESS_LOGGER = "uvicorn.access"


def redact(text: str) -> str:
    """``text`` with each ``…token=VALUE`` query parameter's value replaced by ``***``."""
    return _TOKEN_PARAM.sub(r"\1***", text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message and string arguments with :func:`redact` (keeps the record)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


REDACT_TOKENS = RedactTokens()


def install() -> None:
    """Attach :data:`REDACT_TOKENS` to uvicorn's access logger (idempotent: one instance). A
    logger's filters survive uvicorn's ``dictConfig``, which only replaces its handlers."""
    logging.getLogger(ACCESS_LOGGER).addFilter(REDACT_TOKENS)
