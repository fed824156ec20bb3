"""Shared fixtures: kernels compiled once per session, paths to the shared real data."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
import formats

_ROOT = Path(__file__).resolve().parents[1]
# CI clones the project with shared/ beside it; the device machine copies shared/ inside it.
_CANDIDATES = [_ROOT.parent / "shared" / "data", _ROOT / "shared" / "data"]


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    engine.warmup()
    formats.warmup()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the project root (real sensor files; never copied in)."""
    for path in _CANDIDATES:
        if path.is_dir():
            return path
    pytest.fail(f"shared real-sensor data not found at any of {[str(p) for p in _CANDIDATES]}")
