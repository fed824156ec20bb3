"""Single byte ranges of a response body (RFC 9110 §14): ``Range: bytes=a-b``, ``bytes=a-``,
``bytes=-n`` and the ``If-Range`` precondition, for :func:`server.payloads.respond`.

Only one range per request is served; a header with several ranges, another unit or a
malformed spec is ignored (the whole body, 200), as RFC 9110 allows.
"""

from __future__ import annotations

import re
from typing import Literal

_SPEC = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)", re.ASCII | re.IGNORECASE)
UNSATISFIABLE: Literal["unsatisfiable"] = "unsatisfiable"
_HUGE = 1 << 62  # any offset with more than 18 digits (past every body)


def _offset(digits: str) -> int:
    """A byte offset from its decimal digits, without converting thousands of them."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else _HUGE


def byte_range(header: str, size: int) -> tuple[int, int] | Literal["unsatisfiable"] | None:
    """The inclusive ``(first, last)`` byte offsets that ``header`` asks of a ``size``-byte
    body, :data:`UNSATISFIABLE` (answer 416) when no byte of it lies in the body, or None
    when the header is to be ignored (several ranges, another unit, malformed, ``a > b``).

    ``bytes=a-b``: bytes a..b, ``b`` clipped to the last byte; ``bytes=a-``: from a to the
    end; ``bytes=-n``: the last n bytes (the whole body when it is shorter). A first byte at
    or past the end, or a suffix of length 0, is unsatisfiable; so is any range of an empty body.
    """
    m = _SPEC.fullmatch(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix: the last n bytes
        n = _offset(m[2])
        return UNSATISFIABLE if n == 0 or size == 0 else (max(size - n, 0), size - 1)
    first = _offset(m[1])
    last = _offset(m[2]) if m[2] else size - 1
    if m[2] and last < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    return first, min(last, size - 1)


def if_range_holds(header: str | None, etag: str) -> bool:
    """Whether a ``Range`` may be served under ``If-Range: header``: no header, or the same
    strong entity tag (a weak tag or a date never matches: these bodies have no Last-Modified)."""
    return header is None or header.strip() == etag
