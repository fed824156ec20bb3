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


@pytest.fixture(scope="session")
def drive():
    """A short synthetic drive for tests: ``engine.sim.road.simulate_drive(seed=0,
    duration_s=1.0, preset="test")``.

    Ten 10 Hz frames from two cheap LiDARs (16 + 8 beams, ~6 k points per frame together,
    sweeps in ``drive.sweeps[name][frame]``), three small cameras (render lazily with
    ``drive.render(name, time_ns)``), the true ``drive.world_from_ego`` pose track (1 kHz),
    ``drive.gnss`` (100 Hz), actor/static ``CuboidTrack``s and the object table. The ego
    starts at 10 m/s, accelerates at 2.5 m/s² and turns at up to 30°/s. Shared: do not mutate.
    """
    from engine.sim.road import simulate_drive

    return simulate_drive(seed=0, duration_s=1.0, preset="test")
