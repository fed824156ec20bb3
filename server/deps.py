"""Shared state and FastAPI dependencies: the scene registry, auth by role, scene lookup.

The dependencies are ``async`` because they never block (dictionary lookups, one SHA-256):
FastAPI would otherwise run each in the thread pool, one thread hop per dependency.

Scene ids reach the filesystem only through :class:`SceneRegistry`, which lists the scenes
directory once (and on an admin rescan) and keys each scene by its directory name; a request
can only name a scene that is already in that table, so no id can form a path.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from formats.errors import FormatError
from formats.scene_store import MANIFEST, NAME_RULE, FrameEntry, Scene, valid_name
from server.auth import Principal, authenticate
from server.config import Settings
from server.label_store import LabelStore
from server.payloads import PayloadCache

log = logging.getLogger("fathom.server")

SCENE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class SceneRegistry:
    """Scenes found under ``scenes_dir``: directories holding a valid ``scene.json``.

    A scene's id is its directory's name (``fathom prepare`` names the scene after the
    directory it writes); a directory renamed after preparing is served under its new name,
    with a warning naming the id its manifest records (labels are stored per id). A directory
    (or symlink) that resolves outside ``scenes_dir``, a name that is not a valid scene id
    (:data:`SCENE_ID_PATTERN`) or an invalid manifest is skipped with a warning.
    """

    def __init__(self, scenes_dir: Path):
        self.root = Path(scenes_dir).resolve()
        self._scenes: dict[str, Scene] = {}
        self._lock = threading.Lock()

    def scan(self) -> int:
        found: dict[str, Scene] = {}
        for child in sorted(self.root.iterdir()) if self.root.is_dir() else []:
            if not (child / MANIFEST).is_file():
                continue
            if not valid_name(child.name):
                log.warning("skipping scene %r: a scene id (its directory name) must be %s", child.name, NAME_RULE)
                continue
            if not child.resolve().is_relative_to(self.root):
                log.warning("skipping scene %s: resolves outside %s", child.name, self.root)
                continue
            try:
                scene = Scene.open(child)
            except FormatError as exc:
                log.warning("skipping scene %s: %s", child.name, exc)
                continue
            if scene.scene_id != child.name:
                log.warning("serving scene %s under its directory name; its manifest names it %r (labels "
                            "written under that id stay with it)", child.name, scene.scene_id)
                scene = dataclasses.replace(scene, scene_id=child.name)
            found[child.name] = scene
        with self._lock:
            self._scenes = found
        return len(found)

    def get(self, scene_id: str) -> Scene | None:
        with self._lock:
            return self._scenes.get(scene_id)

    def all(self) -> list[Scene]:
        with self._lock:
            return list(self._scenes.values())


@dataclass
class AppState:
    settings: Settings
    scenes: SceneRegistry
    labels: LabelStore
    tokens: dict[bytes, Principal]
    cache: PayloadCache
    server_errors: int = 0  # unexpected exceptions answered with 500 (tests expect 0)


async def get_state(request: Request) -> AppState:
    return request.app.state.fathom


State = Annotated[AppState, Depends(get_state)]
_bearer = HTTPBearer(auto_error=False, description="a token from the tokens file or FATHOM_TOKENS")


def require(role: str):
    """Dependency: the caller's :class:`Principal`; 401 without a known token, 403 below ``role``."""

    async def dependency(
        request: Request, state: State, _: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Principal:
        principal = authenticate(state.tokens, request.headers.get("authorization"))
        if principal is None:
            raise HTTPException(401, "missing or unknown bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not principal.allows(role):
            raise HTTPException(403, f"this needs the {role!r} role; the token has {principal.role!r}")
        return principal

    return dependency


Viewer = Annotated[Principal, Depends(require("viewer"))]
Annotator = Annotated[Principal, Depends(require("annotator"))]
Admin = Annotated[Principal, Depends(require("admin"))]

SceneIdParam = Annotated[str, PathParam(pattern=SCENE_ID_PATTERN, description="scene id (directory name)")]
FrameIndexParam = Annotated[int, PathParam(ge=0, le=999_999, description="frame index")]


async def get_scene(scene_id: SceneIdParam, state: State) -> Scene:
    scene = state.scenes.get(scene_id)
    if scene is None:
        raise HTTPException(404, f"no scene {scene_id!r}")
    return scene


SceneDep = Annotated[Scene, Depends(get_scene)]


async def get_frame(scene: SceneDep, index: FrameIndexParam) -> FrameEntry:
    try:
        return scene.frame(index)
    except KeyError:
        raise HTTPException(404, f"scene {scene.scene_id!r} has no frame {index}") from None


FrameDep = Annotated[FrameEntry, Depends(get_frame)]
