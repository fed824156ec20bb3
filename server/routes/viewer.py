"""The viewer page: static HTML + JS (no build step, nothing fetched from outside)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from server.deps import SceneIdParam

router = APIRouter(tags=["viewer"])
STATIC = Path(__file__).resolve().parents[1] / "static"
# Only this origin's scripts and data; images may be blob: URLs made from fetched JPEGs.
CSP = ("default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")


@router.get("/viewer/{scene_id}", response_class=FileResponse)
def viewer(scene_id: SceneIdParam) -> FileResponse:
    """Bird's-eye view of a scene's frames with cuboids and a camera image. The page reads the
    token from ``?token=`` (or asks for it), keeps it in the tab's sessionStorage, removes it
    from the address bar and sends it as a bearer header; the access log shows ``token=***``."""
    return FileResponse(STATIC / "viewer.html", media_type="text/html",
                        headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache",
                                 "Referrer-Policy": "no-referrer"})
