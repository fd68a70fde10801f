"""
pytest fixtures for code that uses lodresults. Needs pytest-asyncio.

In ``conftest.py``::

    pytest_plugins = ["lodresults.testing.pytest_plugin"]

then::

    async def test_my_report(lod_simulator, lod_client):
        rows = await lod_client.latest_results(minutes=600)

``lod_simulator`` is a fresh seeded ``Simulator`` on a loopback port; parametrize it with
``@pytest.mark.lod_simulator(seed=3, latency=0.01, ...)`` (any ``Simulator`` keyword).
``lod_client`` is a ``LodClient`` pointed at it with no rate limit and fast retries.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from lodresults import LodClient
from lodresults.testing._server import Simulator

__all__ = ["lod_client", "lod_simulator"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lod_simulator(**kwargs): keyword arguments for the lod_simulator fixture"
    )


@pytest_asyncio.fixture
async def lod_simulator(request: pytest.FixtureRequest) -> AsyncIterator[Simulator]:
    """A running ``Simulator`` (seed 0 unless the ``lod_simulator`` marker says otherwise)."""
    marker = request.node.get_closest_marker("lod_simulator")
    kwargs: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    async with Simulator(**kwargs) as sim:
        yield sim


@pytest_asyncio.fixture
async def lod_client(lod_simulator: Simulator) -> AsyncIterator[LodClient]:
    """A ``LodClient`` for ``lod_simulator``: unpaced, retries with millisecond waits."""
    async with LodClient(
        lod_simulator.api_key,
        base_url=lod_simulator.base_url,
        rate_limit=None,
        retry_initial_wait=0.001,
        retry_max_wait=0.01,
    ) as client:
        yield client
