"""
Permanent failures and deadlines against the simulator, in virtual time.

Client and simulator share a ManualClock: Retry-After waits and backoff cost no real
time, and the figures asserted (virtual seconds, request counts) are the same on every
machine.
"""

from __future__ import annotations

import contextlib

import pytest

from lodresults import LabResult, LodDeadlineError, LodRateLimitError, LodWindowError
from lodresults._request.retry import MAX_PACED_WAIT
from lodresults.testing import Faults, ManualClock
from tests.conftest import NOW, fast_client, make_sim

DAY = 86400


def _always_429(retry_after: str) -> Faults:
    return Faults(rate=1.0, kinds=("http429",), retry_after=retry_after)


async def _fail_time(windows: int, retry_after: str = "3") -> tuple[float, int]:
    """Virtual seconds until iter_results over ``windows`` windows fails, and requests sent."""
    clock = ManualClock(NOW)
    async with make_sim(clock=clock, faults=_always_429(retry_after)) as sim:
        a = sim.span[0] + 30 * DAY
        async with fast_client(
            sim, clock=clock, max_concurrency=4, max_retries=2, rate_limit=5.0
        ) as c:
            with pytest.raises(LodWindowError) as info:
                # Asked a day beyond each end (SKEW_TOLERANCE): ``windows`` 7-day requests.
                b = a + windows * 7 * DAY - 2 * DAY
                async with contextlib.aclosing(c.iter_results(a, b)) as it:
                    async for _ in it:
                        pass
        assert isinstance(info.value, LodRateLimitError)
        return clock.now() - NOW, sim.stats.total


async def test_a_permanent_429_fails_all_windows_in_about_one_requests_time() -> None:
    """
    Retry-After 3 s, forever: a 429 with Retry-After is pacing, not one of the 2 retries,
    so one window rides it out for MAX_PACED_WAIT (10 minutes) and then gives up; 16
    windows at concurrency 4 take no longer (no pause queues requests behind each other,
    and the windows after a failed one are cancelled).
    """
    one, sent_one = await _fail_time(1)
    many, sent_many = await _fail_time(16)
    assert MAX_PACED_WAIT - 3.3 <= one <= MAX_PACED_WAIT
    assert sent_one > MAX_PACED_WAIT / 3.3
    assert many <= one + 3.3
    assert sent_many <= 4 * (sent_one + 1)  # only the first 4 windows were ever tried


async def test_a_capped_retry_after_does_not_multiply_by_the_windows() -> None:
    """Retry-After 100000 (capped at 60 s) over 4 windows: about 10 minutes, not 4 x 10."""
    elapsed, sent = await _fail_time(4, retry_after="100000")
    assert MAX_PACED_WAIT - 66.0 <= elapsed <= MAX_PACED_WAIT
    assert sent <= 4 * (MAX_PACED_WAIT / 60 + 1)


async def test_iter_results_deadline_names_what_was_left() -> None:
    """A deadline of 20 s over a server that keeps refusing: raised at 20 s, range named."""
    clock = ManualClock(NOW)
    async with make_sim(clock=clock, faults=_always_429("30")) as sim:
        a = sim.span[0] + 30 * DAY
        b = a + 60 * DAY
        got: list[LabResult] = []
        async with fast_client(sim, clock=clock, max_retries=10) as c:
            with pytest.raises(LodDeadlineError) as info:
                async with contextlib.aclosing(c.iter_results(a, b, deadline=20.0)) as it:
                    async for r in it:
                        got.append(r)
    assert clock.now() - NOW == pytest.approx(20.0)
    assert got == []
    assert info.value.unfinished == ((a, b),)
    assert "deadline of 20 s passed with 9 windows unfinished" in str(info.value)


async def test_client_deadline_bounds_a_single_call() -> None:
    """LodClient(deadline=5): results() gives up at 5 s, naming its last failure."""
    clock = ManualClock(NOW)
    async with make_sim(clock=clock, faults=_always_429("30")) as sim:
        a = sim.span[0] + 30 * DAY
        async with fast_client(sim, clock=clock, max_retries=10, deadline=5.0) as c:
            with pytest.raises(LodDeadlineError, match="last failure: LodRateLimitError"):
                await c.results(a, a + DAY)
        assert sim.stats.total == 1
    assert clock.now() - NOW == pytest.approx(5.0)


async def test_a_deadline_that_is_not_reached_changes_nothing() -> None:
    """With time to spare, the call returns its records."""
    clock = ManualClock(NOW)
    async with make_sim(clock=clock) as sim:
        a = sim.span[0] + 30 * DAY
        async with fast_client(sim, clock=clock, deadline=5.0) as c:
            got = await c.results(a, a + DAY)
            ids = {r.lab_instance_id async for r in c.iter_results(a, a + 30 * DAY)}
        assert {r.lab_instance_id for r in got} == sim.ids_between(a, a + DAY)
        assert ids == sim.ids_between(a, a + 30 * DAY)
