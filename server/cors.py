"""Cross-origin browser clients: Starlette's CORS middleware over the settings' allow-list.

Requests carry bearer tokens, never cookies, so credentials are not allowed; preflights are
answered by the middleware (no token needed) and cached by browsers for ``MAX_AGE_S``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
REQUEST_HEADERS = ["Authorization", "Content-Type", "If-Match", "If-None-Match", "If-Range", "Range", "Last-Event-ID"]
# response headers a cross-origin script may read besides the CORS-safelisted ones
EXPOSED = ["ETag", "Accept-Ranges", "Content-Range", "Content-Disposition", "X-Point-Count", "X-Frame",
           "X-Timestamp-Ns", "X-Export-Warnings"]
MAX_AGE_S = 600


def add_cors(app: FastAPI, origins: list[str]) -> None:
    """Answer cross-origin requests from ``origins`` (``["*"]``: any); none: no CORS headers at all."""
    if origins:
        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=METHODS,
                           allow_headers=REQUEST_HEADERS, expose_headers=EXPOSED, max_age=MAX_AGE_S)
