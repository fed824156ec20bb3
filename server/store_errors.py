"""Damaged stored data is the server's fault, not the request's: reads of a scene's files
raise :class:`DamagedScene`, answered 500 naming the scene, the frame and the kind of file
(never a server path); the server log gets the path and the cause."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fastapi import Request
from fastapi.responses import JSONResponse

from formats.errors import FormatError
from formats.scene_store import FrameEntry, Scene

log = logging.getLogger("fathom.server")
DAMAGED = "a stored file of the scene is damaged or unreadable (the body names the scene, frame and file)"


class DamagedScene(Exception):
    """A stored file of frame ``frame_index`` of scene ``scene_id`` could not be read.

    Attributes: scene_id, frame_index, kind (e.g. ``"points file"``, ``"CAM_FRONT image"``).
    The cause (with its path) is the exception's ``__cause__``.
    """

    def __init__(self, scene_id: str, frame_index: int, kind: str):
        self.scene_id, self.frame_index, self.kind = scene_id, frame_index, kind
        super().__init__(f"scene {scene_id!r} frame {frame_index}: the stored {kind} is damaged or unreadable "
                         "(the server log has the details)")


def _kind(scene: Scene, entry: FrameEntry, exc: Exception, default: str) -> str:
    """Which of the frame's files ``exc`` is about (a :class:`FormatError` names its path), else ``default``."""
    if not isinstance(exc, FormatError):
        return default
    kinds = {entry.points.file: "points file", **({entry.boxes.file: "boxes file"} if entry.boxes else {})}
    kinds.update({f.file: f"level-of-detail {level} rows file" for level, f in enumerate(entry.lods, 1)})
    kinds.update({f.file: f"{camera} image" for camera, f in entry.images.items()})
    failed = Path(exc.path).resolve()
    for rel, kind in kinds.items():
        if (scene.dir / rel).resolve() == failed:
            return kind
    return default


@contextmanager
def reading(scene: Scene, entry: FrameEntry, default: str = "points file") -> Iterator[None]:
    """Turn what reading the frame's stored files raises (``FormatError``, another
    ``ValueError``, ``OSError``, a ``KeyError`` for a missing column) into :class:`DamagedScene`;
    ``default`` names the file when the error does not."""
    try:
        yield
    except (ValueError, OSError, KeyError) as exc:
        raise DamagedScene(scene.scene_id, entry.index, _kind(scene, entry, exc, default)) from exc


async def damaged_scene(request: Request, exc: DamagedScene) -> JSONResponse:
    """The app's handler: 500 with :class:`DamagedScene`'s message, the cause logged in full."""
    log.error("%s %s: %s", request.method, request.url.path, exc, exc_info=exc.__cause__)
    return JSONResponse({"detail": str(exc)}, status_code=500)
