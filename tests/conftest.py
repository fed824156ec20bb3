"""Shared fixtures: kernels compiled once per session, the real sample files of ``tests/data``."""

from __future__ import annotations

from pathlib import Path

import pytest

import engine
import formats

_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    engine.warmup()
    formats.warmup()


@pytest.fixture(scope="session")
def real_data() -> Path:
    """``tests/data``: small files recorded by real sensors (origins and licences in its README)."""
    return _DATA


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
