"""Fixtures shared by the unit tests."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from inferfleet.sim.engine import EngineConfig, SimEngine

SIM_MODEL = "tiny"


@pytest.fixture
def start_engine() -> Iterator[Callable[..., SimEngine]]:
    """Start simulated engines on 127.0.0.1 (model "tiny", any free port, overrides by keyword);
    every one is stopped after the test."""
    engines: list[SimEngine] = []

    def start(**overrides: Any) -> SimEngine:
        config = EngineConfig(**{"model": SIM_MODEL, "host": "127.0.0.1", "port": 0, **overrides})
        engines.append(SimEngine(config).start())
        return engines[-1]

    yield start
    for engine in engines:
        engine.stop(drain_seconds=0)
