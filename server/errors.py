"""422s for checks that need the scene (outside pydantic), in FastAPI's error shape."""

from __future__ import annotations

from typing import Any

from fastapi.exceptions import RequestValidationError


def invalid(loc: tuple[str | int, ...], msg: str, value: Any = None) -> RequestValidationError:
    """A ``RequestValidationError`` (→ 422) naming the field at ``loc``."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": msg, "input": value}])
