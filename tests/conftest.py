"""
Shared fixtures.

The aioresponses compatibility shim: aioresponses 0.7.9 builds ``ClientResponse``
without the ``stream_writer`` argument that aiohttp 3.14 requires, so every mocked
response fails with a TypeError (upstream aioresponses issue 289; the fix is pending
in 288). aiohttp stays >= 3.14 for its security fix. Until a fixed aioresponses is
released, ``aioresponses.core.ClientResponse`` is swapped for a subclass that supplies a
stand-in writer. The shim switches itself off once aioresponses passes the argument.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import aioresponses.core
import pytest
import pytest_asyncio
from hypothesis import HealthCheck, settings

from lodresults import LodClient
from lodresults.testing import Simulator, generate

pytest_plugins = ["lodresults.testing.pytest_plugin"]

# Wall-clock deadlines make property tests flaky on a loaded 2-core machine; speed is
# measured in benchmarks/, not asserted here.
settings.register_profile("lodresults", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("lodresults")


def _needs_shim() -> bool:
    params = inspect.signature(aiohttp.ClientResponse.__init__).parameters
    source = inspect.getsource(aioresponses.core.RequestMatch._build_response)
    return "stream_writer" in params and "stream_writer" not in source


if _needs_shim():

    class _CompatClientResponse(aiohttp.ClientResponse):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.setdefault("stream_writer", mock.Mock(output_size=0))
            super().__init__(*args, **kwargs)

    aioresponses.core.ClientResponse = _CompatClientResponse  # type: ignore[misc]


KEY = "canary-KEY-7f3a9c1e5b"


NOW = int(time.time())
SPAN = (NOW - 2 * 365 * 86400, NOW)


@functools.cache
def two_years() -> tuple[dict[str, Any], ...]:
    """Two years of generated records (made once per test run)."""
    return tuple(generate(seed=7, start=SPAN[0], end=SPAN[1], labs_per_day=40, now=NOW))


def make_sim(**kwargs: Any) -> Simulator:
    """A simulator over the shared two-year dataset (kwargs override the knobs)."""
    options: dict[str, Any] = {"seed": 7, "api_key": KEY, "records": two_years(), "span": SPAN}
    options.update(kwargs)
    return Simulator(**options)


#: A fixed historical span (2024-01-01 plus 400 days). Fault draws are seeded by the
#: request itself, so tests that count injected faults use it: the same requests, hence
#: the same faults, on every run.
FIXED_SPAN = (1_704_067_200, 1_704_067_200 + 400 * 86400)


@functools.cache
def fixed_history() -> tuple[dict[str, Any], ...]:
    """Records over FIXED_SPAN (made once per test run)."""
    a, b = FIXED_SPAN
    return tuple(generate(seed=11, start=a, end=b, labs_per_day=40, now=b))


def make_fixed_sim(**kwargs: Any) -> Simulator:
    """A simulator over FIXED_SPAN: reproducible fault draws whatever the date."""
    return make_sim(records=fixed_history(), span=FIXED_SPAN, **kwargs)


@pytest_asyncio.fixture
async def sim() -> AsyncIterator[Simulator]:
    """A default simulator: two years of data, no latency, no faults."""
    async with make_sim() as s:
        yield s


def fast_client(sim: Simulator, **kwargs: Any) -> LodClient:
    """A client for ``sim`` with no pacing and millisecond retry waits."""
    options: dict[str, Any] = {
        "rate_limit": None,
        "retry_initial_wait": 0.001,
        "retry_max_wait": 0.005,
    }
    options.update(kwargs)
    return LodClient(sim.api_key, base_url=sim.base_url, **options)


@pytest.fixture
def api_key() -> str:
    """The canary key used by tests that check it never leaks."""
    return KEY


#: Rows of the fault matrix (fault, rate, requests, faults injected, retries, outcome),
#: filled by tests/test_fault_matrix.py and printed at the end of the run.
MATRIX: list[tuple[str, str, int, int, int, str]] = []


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault matrix table after the run."""
    if not MATRIX:
        return
    tr = terminalreporter
    tr.section("fault matrix (multi-month iter_results against the simulator)")
    tr.write_line(
        f"{'fault':<22} {'rate':>8} {'requests':>9} {'injected':>9} {'retries':>8}  outcome"
    )
    for fault, rate, requests, injected, retries, outcome in MATRIX:
        tr.write_line(f"{fault:<22} {rate:>8} {requests:>9} {injected:>9} {retries:>8}  {outcome}")


#: The repository's root (where ``python -m benchmarks`` runs).
ROOT = Path(__file__).resolve().parent.parent


async def run_quick_benchmark(module: str) -> tuple[str, str]:
    """``python -m <module> --quick`` from the root; its (stdout, stderr), exit 0 asserted."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", module, "--quick", cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    assert proc.returncode == 0, err.decode()[-2000:]
    return out.decode(), err.decode()


@contextlib.contextmanager
def threaded(sim: Simulator) -> Iterator[Simulator]:
    """``sim`` served from an event loop in a thread of its own, for blocking tests."""
    from lodresults._loop_thread import LoopThread

    host = LoopThread("test-simulator")
    host.run(sim.start())
    try:
        yield sim
    finally:
        host.stop(sim.close())
