"""The FastAPI app: ``create_app(settings)``, ``app_from_env()`` (for ``uvicorn --factory``)
and ``serve(scenes_dir, host, port, ...)`` (what ``fathom serve`` runs)."""

from __future__ import annotations

import json
import logging
import math
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from formats.errors import FormatError
from server.access_log import install as redact_tokens_in_access_log
from server.auth import load_tokens
from server.config import Settings
from server.cors import add_cors
from server.deps import AppState, SceneRegistry
from server.imported_labels import seed_all
from server.label_events import LabelEvents
from server.label_http import conflict, stale
from server.label_store import LabelStore, StaleRevision, TrackConflict
from server.limits import BodySizeLimit
from server.payloads import PayloadCache
from server.prelabel_store import PrelabelStore
from server.responses import errors
from server.routes import (
    events,
    exports,
    frames,
    health,
    images,
    label_history,
    labels,
    maps,
    ontology,
    passive,
    prelabels,
    propagate,
    scenes,
    segmentation,
    video,
    viewer,
)
from server.store_errors import DamagedScene, damaged_scene

log = logging.getLogger("fathom.server")


def create_app(settings: Settings) -> FastAPI:
    """Build the app: scenes listed from ``settings.scenes_dir``, labels in SQLite, tokens loaded.

    Kernels are compiled (or loaded from numba's cache) at start-up, never on a request.
    """
    registry = SceneRegistry(settings.scenes_dir)
    registry.scan()
    state = AppState(
        settings=settings, scenes=registry, labels=LabelStore(settings.label_db_path),
        tokens=load_tokens(settings.tokens_file, settings.tokens), cache=PayloadCache(settings.cache_bytes),
    )
    seed_all(state.labels, registry.all())
    if not state.tokens:
        log.warning("no tokens configured: every API request will get 401")
    label_events = LabelEvents()
    state.labels.listeners.append(label_events.publish)
    prelabel_store = PrelabelStore(settings.label_db_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        label_events.start()
        if settings.warmup:
            import engine

            engine.warmup()
        yield
        label_events.close()
        state.labels.close()
        prelabel_store.close()
        seg.store.close()
        app.state.documents.close()

    app = FastAPI(
        title="Fathom", version="1", lifespan=lifespan,
        description="Prepared sensor-fusion scenes out, labels in. Bearer tokens: viewer < annotator < admin.",
    )
    app.state.fathom = state
    app.state.label_events = label_events
    app.state.prelabels = prelabel_store
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    add_cors(app, settings.cors_origins)  # outside the size limit: a 413 carries CORS headers too
    redact_tokens_in_access_log()  # a viewer link's ?token= never reaches the access log
    for module in (health, viewer):
        app.include_router(module.router)
    for module in (scenes, frames, images, labels, label_history, events, ontology, exports, maps, prelabels,
                   propagate):
        app.include_router(module.router, responses=errors(401))  # every /v1 route needs a token
    seg = segmentation.install(app, settings)  # per-point labels: their own store and routes
    passive.install(app, settings)  # bearing tracks: revisioned documents (server.doc_store)
    video.install(app, settings)  # video frames by time, 2D tracks on them
    app.mount("/static", StaticFiles(directory=viewer.STATIC), name="static")

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's own handler would echo a NaN input or a lone surrogate back and fail to encode it
        detail = [{k: _json_safe(v) for k, v in e.items() if k != "url"} for e in jsonable_encoder(exc.errors())]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StaleRevision)
    async def stale_revision(request: Request, exc: StaleRevision) -> JSONResponse:
        return stale(exc)

    @app.exception_handler(TrackConflict)
    async def track_conflict(request: Request, exc: TrackConflict) -> JSONResponse:
        return conflict(exc)

    app.add_exception_handler(DamagedScene, damaged_scene)

    @app.exception_handler(FormatError)
    async def store_error(request: Request, exc: FormatError) -> JSONResponse:
        # the message names a server path: the log gets it, the client does not
        log.error("scene store error on %s %s: %s", request.method, request.url.path, exc)
        return JSONResponse({"detail": "stored scene data is damaged or unreadable (the server log has the details)"},
                            status_code=500)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        state.server_errors += 1
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal server error"}, status_code=500)

    return app


def _json_safe(value: Any) -> Any:
    """``value`` with non-finite floats replaced by their names ("nan", "inf") and lone
    surrogates in strings (keys too) by "?", so that it encodes as UTF-8 JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def app_from_env() -> FastAPI:
    """The app configured from ``FATHOM_*`` environment variables (``uvicorn --factory``)."""
    logging.basicConfig(level=logging.INFO)
    return create_app(Settings())


def serve(scenes_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, **settings: Any) -> None:
    """Serve ``scenes_dir`` with uvicorn until interrupted.

    ``settings`` are further :class:`~server.config.Settings` fields (``tokens_file``,
    ``label_db``, ...). Without any token configured, a random admin token is made for this
    run and printed with the viewer URL.
    """
    import uvicorn

    logging.basicConfig(level=logging.INFO)
    config = Settings(scenes_dir=Path(scenes_dir), host=host, port=port, **settings)
    if not load_tokens(config.tokens_file, config.tokens):
        token = secrets.token_urlsafe(24)
        config = config.model_copy(update={"tokens": json.dumps({token: "admin"})})
        print(f"fathom serve: no tokens configured; this run's admin token is {token}")
        print(f"fathom serve: viewer at http://{host}:{port}/viewer/<scene>?token={token}")
        print("fathom serve: for lasting tokens: fathom token create --role viewer|annotator|admin "
              "--tokens-file PATH, then serve with --tokens-file PATH")
    uvicorn.run(create_app(config), host=host, port=port, log_level="info")
