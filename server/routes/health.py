"""Liveness: no authentication, no scene data."""

from __future__ import annotations

from fastapi import APIRouter

from server.deps import State
from server.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def health(state: State) -> Health:
    return Health(status="ok", scenes=len(state.scenes.all()))
