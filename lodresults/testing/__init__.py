"""
Test doubles for lodresults users: a real local API server with fault knobs.

::

    from lodresults.testing import Simulator

    async with Simulator(seed=1, latency=0.01) as sim:
        async with LodClient(sim.api_key, base_url=sim.base_url) as client:
            ...

For pytest, add ``pytest_plugins = ["lodresults.testing.pytest_plugin"]`` to a
``conftest.py`` and take the ``lod_simulator`` fixture (needs pytest-asyncio).
"""

from __future__ import annotations

from lodresults._clock import ManualClock
from lodresults.testing._dataset import Dataset, generate
from lodresults.testing._server import (
    FAULT_KINDS,
    TOO_LONG_TEXT,
    Faults,
    RequestLog,
    Simulator,
    SimulatorStats,
)

__all__ = [
    "FAULT_KINDS",
    "TOO_LONG_TEXT",
    "Dataset",
    "Faults",
    "ManualClock",
    "RequestLog",
    "Simulator",
    "SimulatorStats",
    "generate",
]
