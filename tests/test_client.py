"""LodClient against the real simulator on loopback: commands, validation, lifecycle."""

from __future__ import annotations

import asyncio
import gc
import itertools
import warnings
from datetime import date, datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from lodresults import (
    MAX_WINDOW_SECONDS,
    Event,
    LodApiError,
    LodAuthError,
    LodClient,
    LodClientClosed,
    LodInvalidArgument,
    RequestRetried,
    unstructure_record,
)
from lodresults.testing import Faults, ManualClock, Simulator
from tests.conftest import NOW, fast_client, make_sim


async def test_result_matches_the_server_record(sim: Simulator) -> None:
    """result(id) returns the server's record with lab_instance_id filled."""
    truth = sim.records[123]
    async with fast_client(sim) as c:
        r = await c.result(truth["LabInstanceId"])
    assert unstructure_record(r) == truth


async def test_results_one_window(sim: Simulator) -> None:
    """results() over 3 days returns exactly the server's labs for that range."""
    a = sim.span[0] + 100 * 86400
    b = a + 3 * 86400
    async with fast_client(sim) as c:
        got = await c.results(a, b)
    assert [unstructure_record(r) for r in got] == sim.between(a, b)
    assert sim.stats.requests["Results"] == 1


async def test_results_accepts_datetimes_and_dates(sim: Simulator) -> None:
    """Aware datetimes and dates are accepted as bounds."""
    d = datetime.fromtimestamp(sim.span[0], timezone.utc).date() + timedelta(days=30)
    start = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
    async with fast_client(sim) as c:
        a = await c.results(start, start + timedelta(days=2))
        b = await c.results(d, d + timedelta(days=2))
    assert a == b and a


async def test_exactly_seven_days_is_one_request(sim: Simulator) -> None:
    """A range of exactly 7 days is allowed by results()."""
    a = sim.span[0]
    async with fast_client(sim) as c:
        await c.results(a, a + MAX_WINDOW_SECONDS)
    assert sim.stats.total == 1


async def test_latest_results(sim: Simulator) -> None:
    """latest_results returns the labs that changed in the last N minutes."""
    async with fast_client(sim) as c:
        got = await c.latest_results(minutes=24 * 60)
    since = sim.now - 24 * 3600
    expected = {r["LabInstanceId"] for r in sim.dataset.changed_since(since)}
    assert {r.lab_instance_id for r in got} <= expected
    assert len(got) >= len(expected) - 5  # a few may cross the edge while the test runs


@pytest.mark.parametrize(
    ("call", "needle"),
    [
        (lambda c: c.results(datetime(2024, 1, 1), datetime(2024, 1, 2)), "naive"),
        (lambda c: c.results(100, 50), "swap"),
        (lambda c: c.results(0, MAX_WINDOW_SECONDS + 1), "iter_results"),
        (lambda c: c.results(-5, 10), "outside"),
        (lambda c: c.latest_results(0), "1..10080"),
        (lambda c: c.latest_results(10081), "1..10080"),
        (lambda c: c.latest_results(-3), "1..10080"),
        (lambda c: c.latest_results(5.0), "int"),
        (lambda c: c.result(0), "positive"),
        (lambda c: c.result("12"), "positive"),
        (lambda c: c.result(True), "positive"),
        (lambda c: c.iter_results(date(2024, 2, 1), date(2024, 1, 1)), "swap"),
        (lambda c: c.iter_results("2024-01-01", date(2024, 1, 1)), "start must be"),
    ],
)
async def test_bad_input_raises_before_sending(sim: Simulator, call, needle: str) -> None:  # type: ignore[no-untyped-def]
    """Every bad argument is a ValueError that says what to do; nothing reaches the server."""
    async with fast_client(sim) as c:
        with pytest.raises(ValueError, match=needle) as info:
            result = call(c)
            if asyncio.iscoroutine(result):
                await result
    assert isinstance(info.value, LodInvalidArgument)
    assert sim.stats.total == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_concurrency": 0},
        {"max_concurrency": 2.5},
        {"rate_limit": 0},
        {"rate_limit": -1.0},
        {"timeout": 0},
        {"timeout": float("nan")},
        {"max_retries": -1},
        {"session": "not a session"},
        {"base_url": "http://10.1.2.3/api/v3"},
    ],
)
def test_bad_options(kwargs: dict[str, object]) -> None:
    """Invalid constructor options are refused up front."""
    with pytest.raises(LodInvalidArgument):
        LodClient("k", **kwargs)  # type: ignore[arg-type]


def test_empty_key_is_refused() -> None:
    """An empty key is a usage error."""
    with pytest.raises(LodInvalidArgument, match="api_key"):
        LodClient("  ")


async def test_wrong_key_is_an_auth_error(sim: Simulator) -> None:
    """401 maps to LodAuthError and is not retried."""
    async with LodClient("wrong-key", base_url=sim.base_url, rate_limit=None) as c:
        with pytest.raises(LodAuthError) as info:
            await c.latest_results(5)
    assert info.value.status == 401
    assert sim.stats.unauthorized == 1


async def test_unknown_id_is_an_api_error(sim: Simulator) -> None:
    """Status 0 answers raise LodApiError with the server's text, without retrying."""
    async with fast_client(sim) as c:
        with pytest.raises(LodApiError, match="not found") as info:
            await c.result(42)
    assert "42" in info.value.error_text
    assert sim.stats.total == 1


async def test_caller_owned_session_is_left_open(sim: Simulator) -> None:
    """A session passed in is used and never closed by the client."""
    async with aiohttp.ClientSession() as session:
        async with LodClient(
            sim.api_key, base_url=sim.base_url, session=session, rate_limit=None
        ) as c:
            await c.latest_results(5)
        assert not session.closed
        async with session.get(
            sim.base_url + "/LatestResults?minutes=1", headers={"api_key": sim.api_key}
        ) as resp:
            assert resp.status == 200


async def test_close_without_context_manager_and_use_after_close(sim: Simulator) -> None:
    """close() works alone, is idempotent, and a closed client refuses work."""
    c = fast_client(sim)
    await c.latest_results(5)
    await c.close()
    await c.close()
    assert c.closed
    with pytest.raises(LodClientClosed):
        await c.latest_results(5)
    with pytest.raises(LodClientClosed):
        c.iter_results(0, 10)


async def test_no_unclosed_session_warning(sim: Simulator) -> None:
    """Owned sessions are closed: no ResourceWarning when the client is collected."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with fast_client(sim) as c:
            await c.latest_results(5)
        del c
        gc.collect()
    assert not [w for w in caught if "nclosed" in str(w.message)]


def test_client_can_be_built_outside_a_loop() -> None:
    """Constructing needs no running loop; the session is made on first use."""
    c = LodClient("k", base_url="http://127.0.0.1:9/api/v3")

    async def go() -> None:
        await c.close()

    asyncio.run(go())


async def test_concurrency_is_shared_across_callers(sim: Simulator) -> None:
    """Twenty concurrent calls on a max_concurrency=3 client: at most 3 in flight."""
    sim.latency = 0.02
    async with fast_client(sim, max_concurrency=3) as c:
        await asyncio.gather(*(c.latest_results(5) for _ in range(20)))
    assert sim.stats.max_in_flight == 3


async def test_rate_limit_is_enforced() -> None:
    """
    At rate_limit=10, 30 concurrent calls start 0.1 s apart (in virtual time): never
    more than 11 arrivals in a second, plus at most the 8 that may be in flight.
    """
    clock = ManualClock(NOW)
    async with (
        make_sim(clock=clock) as sim,
        fast_client(sim, rate_limit=10.0, max_concurrency=8, clock=clock) as c,
    ):
        await asyncio.gather(*(c.latest_results(5) for _ in range(30)))
    assert sim.stats.total == 30
    assert sim.stats.max_rate(1.0) <= 10 + 1 + 8
    assert max(sim.stats.arrivals) - min(sim.stats.arrivals) >= 2.9 - 1e-3


async def test_gzip_answers_are_decoded() -> None:
    """A gzip-compressed answer decodes the same."""
    async with Simulator(seed=3, compress=True) as sim, fast_client(sim) as c:
        a = sim.span[0]
        got = await c.results(a, a + 86400 * 3)
        assert [unstructure_record(r) for r in got] == sim.between(a, a + 86400 * 3)
        assert "gzip" in sim.log[-1].headers.get("Accept-Encoding", "")


def test_repr_shows_options_not_the_key(api_key: str) -> None:
    """repr(client) has the base URL and options only."""
    c = LodClient(api_key)
    assert api_key not in repr(c)
    assert "labondemand.com" in repr(c)


async def test_large_bodies_do_not_block_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big body is decoded a piece at a time, and the loop serves its other tasks between
    pieces (checked by counting a probe task's turns, not by time)."""
    from lodresults._records.decode import STEP_BYTES, RecordDecoder

    turns = 0
    at_piece: list[int] = []  # the probe's turns when each piece started
    sizes: list[int] = []  # each piece's bytes
    real = RecordDecoder._slice

    def spy(self: RecordDecoder, chunk: bytes, *args: Any, **kwargs: Any) -> Any:
        at_piece.append(turns)
        sizes.append(len(chunk))
        return real(self, chunk, *args, **kwargs)

    async def probe() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(RecordDecoder, "_slice", spy)
    now = 1_700_000_000
    sim = make_sim(span=(now - 8 * 86400, now), records=None, labs_per_day=2000)
    async with sim, fast_client(sim) as c:
        task = asyncio.ensure_future(probe())
        records = await c.results(now - 7 * 86400, now)
        task.cancel()
    assert len(records) > 8000 and sum(sizes) > 3 * STEP_BYTES
    assert all(STEP_BYTES <= n <= STEP_BYTES + 2048 for n in sizes[:-1])
    assert len(at_piece) >= sum(sizes) // (STEP_BYTES + 2048)
    assert all(b > a for a, b in itertools.pairwise(at_piece))


async def _settle() -> None:
    for _ in range(50):
        await asyncio.sleep(0)


async def test_close_fails_requests_waiting_for_a_rate_slot() -> None:
    """Requests queued in the rate limiter raise LodClientClosed at close(); none is sent."""
    clock = ManualClock(NOW, auto=False)  # time moves only when the test says so
    async with make_sim(clock=clock) as sim:
        c = fast_client(sim, rate_limit=1.0, clock=clock)
        await c.latest_results(5)
        waiting = [asyncio.ensure_future(c.latest_results(5)) for _ in range(3)]
        await _settle()
        assert sim.stats.total == 1 and not any(w.done() for w in waiting)
        await c.close()
        await _settle()
        assert all(w.done() for w in waiting)  # woken at once, not at their slot
        assert all(isinstance(w.exception(), LodClientClosed) for w in waiting)
        clock.advance(100.0)
        await _settle()
        assert sim.stats.total == 1
        assert c._transport._session is None  # no new session was opened


async def test_close_fails_requests_sleeping_before_a_retry() -> None:
    """A request waiting out a Retry-After raises LodClientClosed at close(), unsent."""
    clock = ManualClock(NOW, auto=False)
    faults = Faults(rate=1.0, kinds=("http429",), retry_after="30")
    async with make_sim(clock=clock, faults=faults) as sim:
        retrying = asyncio.Event()

        def hook(event: Event) -> None:
            if isinstance(event, RequestRetried):
                retrying.set()

        c = fast_client(sim, clock=clock, max_retries=5, on_event=hook)
        pending = asyncio.ensure_future(c.latest_results(5))
        await retrying.wait()
        await _settle()
        assert not pending.done()
        await c.close()
        await _settle()
        assert pending.done() and isinstance(pending.exception(), LodClientClosed)
        clock.advance(100.0)
        await _settle()
        assert sim.stats.total == 1
