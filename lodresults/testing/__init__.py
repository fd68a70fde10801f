"""
Test doubles for lodresults users: a real local API server with fault knobs.

::

    from lodresults.testing import Simulator

    async with Simulator(seed=1, latency=0.01) as sim:
        async with LodClient(sim.api_key, base_url=sim.base_url) as client:
            ...

Its labs live on a clock (real time by default): they start, end and get graded while it
runs. Give it a ``ManualClock`` (and the same to ``LodClient(clock=...)``) to move time in
a test.

``WebhookSender`` pushes the simulator's lab events (Launched, TornDown, Scored) to a
webhook receiver as Lab on Demand does, with drops, duplicates, delays and the vendor's
retries, on the simulator's clock.

For pytest, add ``pytest_plugins = ["lodresults.testing.pytest_plugin"]`` to a
``conftest.py`` and take the ``lod_simulator`` fixture (needs pytest-asyncio).
"""

from __future__ import annotations

from lodresults._clock import ManualClock
from lodresults.testing._dataset import (
    GRADING_DELAY_MAX,
    Dataset,
    Lab,
    generate,
    generate_labs,
)
from lodresults.testing._knobs import (
    FAULT_KINDS,
    TRANSIENT_FAULT_KINDS,
    Faults,
    RequestLog,
    SimulatorStats,
    Sloppiness,
)
from lodresults.testing._server import TOO_LONG_TEXT, Simulator
from lodresults.testing._webhooks import EVENTS, Delivery, WebhookSender

__all__ = [
    "EVENTS",
    "FAULT_KINDS",
    "GRADING_DELAY_MAX",
    "TOO_LONG_TEXT",
    "TRANSIENT_FAULT_KINDS",
    "Dataset",
    "Delivery",
    "Faults",
    "Lab",
    "ManualClock",
    "RequestLog",
    "Simulator",
    "SimulatorStats",
    "Sloppiness",
    "WebhookSender",
    "generate",
    "generate_labs",
]
