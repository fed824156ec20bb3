"""OpenAPI ``responses`` entries for the error answers, so that the schema lists every status
a route can give (``fathom`` checks this with schemathesis' status-code conformance)."""

from __future__ import annotations

from typing import Any

from server.schemas import ConflictResponse, ErrorResponse

_WHAT = {
    304: "not modified (If-None-Match)",
    400: "the body could not be parsed (not UTF-8)",
    401: "missing, unknown or expired bearer token",
    403: "the token's role is below the one this needs",
    404: "no such scene",
    412: "If-Match names a stale document revision, or tracks named in base changed since: nothing changed",
    413: "request body too large",
    428: "If-Match is required for writes",
}
WRITE = (400, 412, 413, 428)  # what every label write can answer besides 401/403/404/422


def errors(*codes: int | tuple[int, str]) -> dict[int | str, dict[str, Any]]:
    """``responses=`` of a route: each status with its body model and description, a code alone
    with the usual description, ``(code, description)`` with another."""
    out: dict[int | str, dict[str, Any]] = {}
    for item in codes:
        code, what = item if isinstance(item, tuple) else (item, _WHAT[item])
        if code == 304:
            out[code] = {"description": what}
        else:
            out[code] = {"model": ConflictResponse if code == 412 else ErrorResponse, "description": what}
    return out
