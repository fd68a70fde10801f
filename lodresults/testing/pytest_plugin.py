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

Works in pytest-asyncio's default strict mode: an ``async def`` test that takes one of
these fixtures is marked ``asyncio`` by this plugin, so it runs without a marker of its own.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Generator
from typing import Any, Final

import pytest
import pytest_asyncio

from lodresults import LodClient
from lodresults.testing._server import Simulator

__all__ = ["lod_client", "lod_simulator"]

_FIXTURES: Final = frozenset({"lod_simulator", "lod_client"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "lod_simulator(**kwargs): keyword arguments for the lod_simulator fixture"
    )


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_pycollect_makeitem(
    collector: pytest.Collector, name: str, obj: object
) -> Generator[None, Any, None]:
    """Mark coroutine tests that use these fixtures ``asyncio`` (strict mode needs it)."""
    outcome = yield
    if not inspect.iscoroutinefunction(obj):
        return
    result = outcome.get_result()
    for node in result if isinstance(result, list) else [result]:
        if (
            isinstance(node, pytest.Function)
            and node.get_closest_marker("asyncio") is None
            and _FIXTURES & set(node.fixturenames)
        ):
            node.add_marker(pytest.mark.asyncio)


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
