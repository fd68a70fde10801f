"""The adaptive pacer in virtual time (a ManualClock): no real sleeping, same result every run."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import LodClientClosed
from lodresults._request.ratelimit import AdaptiveRateLimiter
from lodresults.testing import ManualClock


async def test_paces_requests_evenly() -> None:
    """At rate 5, ten requests are granted 0.2 s apart."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock)
    slots = []
    for _ in range(10):
        await lim.acquire()
        slots.append(clock.now())
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([0.2] * 9)


async def test_concurrent_callers_share_the_rate() -> None:
    """Slots are handed out 1/rate apart even when asked concurrently."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(10.0, clock=clock)
    granted: list[float] = []

    async def one() -> None:
        await lim.acquire()
        granted.append(clock.now())

    await asyncio.gather(*(one() for _ in range(20)))
    assert granted == pytest.approx([i * 0.1 for i in range(20)])


async def test_unlimited_never_waits() -> None:
    """rate=None grants at once."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(None, clock=clock)
    for _ in range(100):
        await lim.acquire()
    assert clock.now() == 0.0


async def test_cancelled_waiters_keep_no_slot() -> None:
    """Eight waiters cancelled at 2 req/s: the next request waits one interval, not five."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(2.0, clock=clock)
    await lim.acquire()  # t=0; the next slot is t=0.5
    waiters = [asyncio.ensure_future(lim.acquire()) for _ in range(8)]
    for _ in range(5):
        await asyncio.sleep(0)  # all queued, the first asleep until 0.5
    for w in waiters:
        w.cancel()
    await asyncio.gather(*waiters, return_exceptions=True)
    await lim.acquire()
    assert clock.now() == pytest.approx(0.5)


async def test_close_wakes_every_waiter_at_once() -> None:
    """close(): waiters raise LodClientClosed without waiting for their slot; later too."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(0.5, clock=clock)
    await lim.acquire()
    waiters = [asyncio.ensure_future(lim.acquire()) for _ in range(4)]
    for _ in range(5):
        await asyncio.sleep(0)
    lim.close()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(r, LodClientClosed) for r in results)
    assert clock.now() == 0.0  # nobody slept until a slot
    with pytest.raises(LodClientClosed):
        await lim.acquire()


async def test_one_overshoot_decreases_once() -> None:
    """Requests sent before a decrease and refused after it do not decrease again."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(8.0, clock=clock)
    tickets = [await lim.acquire() for _ in range(4)]
    for t in tickets:
        lim.on_throttled(t)
    assert lim.rate == pytest.approx(0.7 * 8.0)
    assert lim.throttled == 4
    lim.on_throttled(await lim.acquire())  # sent after the decrease: a new overshoot
    assert (lim.rate or 0) < 0.8 * 5.6


async def test_back_at_the_estimate_after_the_recovery_time() -> None:
    """After a decrease the pace climbs back to just under the refused rate in 2 s."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(20.0, clock=clock)
    lim.on_throttled(await lim.acquire())
    assert lim.rate == pytest.approx(14.0)
    clock.advance(1.0)
    assert 14.0 < (lim.rate or 0) < 19.6
    clock.advance(1.0)
    assert lim.rate == pytest.approx(19.6)  # 2 % under the refused 20


async def test_probe_beyond_the_estimate_is_gentle_then_grows() -> None:
    """Above the estimate w the pace grows as w * (1 + (t / (90 / w))**3)."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(None, clock=clock)
    for _ in range(21):
        await lim.acquire()
        clock.advance(0.1)  # sending 10 req/s
    lim.on_throttled(await lim.acquire())
    w = lim.rate_at(clock.now() + 2.0)
    assert w is not None and 9.0 < w < 11.0
    p = 90 / w
    assert lim.rate_at(clock.now() + 2.0 + p / 4) == pytest.approx(w * (1 + 1 / 64))
    assert lim.rate_at(clock.now() + 2.0 + p) == pytest.approx(2 * w)


async def test_a_storm_keeps_the_estimate() -> None:
    """Refusals with nothing accepted between them lower the pace, not the estimate."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock)
    for _ in range(30):  # 30 s of refusals, one fresh probe a second
        clock.advance(1.0)
        lim.on_throttled(await lim.acquire())
        assert (lim.rate or 0) < 4.0
    clock.advance(2.0)
    assert lim.rate == pytest.approx(4.9)


async def test_a_refusal_at_a_rate_just_accepted_keeps_the_estimate() -> None:
    """Noise (a 429 at a rate the server accepted moments ago) does not ratchet down."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock)
    lim.on_throttled(await lim.acquire())  # the estimate becomes 4.9
    clock.advance(2.0)
    for _ in range(10):
        lim.on_success(await lim.acquire())  # accepted at 4.9 req/s
    lim.on_throttled(await lim.acquire())
    clock.advance(2.0)
    assert lim.rate == pytest.approx(4.9)


async def test_one_request_let_through_does_not_confirm_a_rate() -> None:
    """
    A single request accepted at a rate (a bucket's saved-up token) does not make a later
    429 at that rate noise: ten in a row do.
    """
    clock = ManualClock()
    lim = AdaptiveRateLimiter(20.0, clock=clock)
    lim.on_throttled(await lim.acquire())  # estimate 19.6
    clock.advance(2.0)
    lim.on_success(await lim.acquire())  # one accepted at 19.6
    lim.on_throttled(await lim.acquire())  # then refused at about that rate
    clock.advance(2.0)
    assert lim.rate == pytest.approx(0.98 * 19.6, rel=0.01)  # an overshoot: lowered


async def test_a_refusal_breaks_the_run_of_acceptances() -> None:
    """Nine accepted, one refused, one accepted: not ten in a row, so no rate confirmed."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(20.0, clock=clock)
    stale = await lim.acquire()
    lim.on_throttled(await lim.acquire())  # estimate 19.6; `stale` predates it
    clock.advance(2.0)
    for _ in range(9):
        lim.on_success(await lim.acquire())
    lim.on_throttled(stale)  # a late refusal: no decrease, but the run is broken
    lim.on_success(await lim.acquire())
    lim.on_throttled(await lim.acquire())
    clock.advance(2.0)
    assert (lim.rate or 0) < 0.99 * 19.6  # an overshoot: lowered


async def test_never_faster_than_configured() -> None:
    """Whatever happens, grants are at least 1/ceiling apart."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(4.0, clock=clock)
    granted = []
    for i in range(60):
        t = await lim.acquire()
        granted.append(clock.now())
        if i % 7 == 3:
            lim.on_throttled(t)
        else:
            lim.on_success(t)
    assert min(b - a for a, b in itertools.pairwise(granted)) >= 0.25 - 1e-9


@given(
    st.lists(
        st.tuples(st.floats(0, 5), st.sampled_from(["ok", "429", "acquire"])),
        min_size=1,
        max_size=40,
    )
)
def test_pace_stays_within_floor_and_ceiling(steps: list[tuple[float, str]]) -> None:
    """Any sequence of waits, successes and throttles keeps the pace in [min_rate, rate]."""

    async def run() -> None:
        clock = ManualClock()
        lim = AdaptiveRateLimiter(6.0, clock=clock, min_rate=0.5)
        ticket = await lim.acquire()
        for wait, what in steps:
            clock.advance(wait)
            if what == "acquire":
                ticket = await lim.acquire()
            elif what == "ok":
                lim.on_success(ticket)
            else:
                lim.on_throttled(ticket)
            rate = lim.rate
            assert rate is not None and 0.5 - 1e-9 <= rate <= 6.0 + 1e-9

    asyncio.run(run())


# --- whole scenarios: workers, a server model and virtual time ---------------------------


async def _scenario(
    lim: AdaptiveRateLimiter,
    clock: ManualClock,
    accept: Callable[[float], float | None],
    *,
    workers: int,
    until: float,
    latency: float = 0.05,
) -> tuple[list[float], list[float]]:
    """
    ``workers`` loops sending through ``lim`` until ``until``; ``accept(t)`` returns None
    for a success or the Retry-After of a 429. A refused request is retried after its
    Retry-After (plus the pacing). Returns the times of successes and of refusals.
    """
    ok: list[float] = []
    refused: list[float] = []

    async def worker() -> None:
        while clock.now() < until:
            ticket = await lim.acquire()
            sent = clock.now()
            retry_after = accept(sent)
            await clock.sleep(latency)
            if retry_after is None:
                ok.append(sent)
                lim.on_success(ticket)
            else:
                refused.append(sent)
                lim.on_throttled(ticket)
                await clock.sleep(retry_after)

    await asyncio.gather(*(worker() for _ in range(workers)))
    return ok, refused


def _token_bucket(allowance: float, burst: float = 1.0) -> Callable[[float], float | None]:
    state = {"tokens": burst, "at": 0.0}

    def accept(t: float) -> float | None:
        state["tokens"] = min(burst, state["tokens"] + (t - state["at"]) * allowance)
        state["at"] = t
        if state["tokens"] >= 1.0:
            state["tokens"] -= 1.0
            return None
        return 1.0

    return accept


@pytest.mark.parametrize(
    ("allowance", "configured", "burst", "workers"),
    [(3.0, 5.0, 1.0, 4), (10.0, 100.0, 1.0, 4), (10.0, 100.0, 3.0, 8)],
)
async def test_settles_near_a_token_bucket_below_the_configured_rate(
    allowance: float, configured: float, burst: float, workers: int
) -> None:
    """
    Within 10 % of the allowance, under 5 % of requests refused, once settled; a few
    requests let through by a burst do not pass for a rate the server sustains.
    """
    clock = ManualClock()
    lim = AdaptiveRateLimiter(configured, clock=clock)
    ok, refused = await _scenario(
        lim, clock, _token_bucket(allowance, burst), workers=workers, until=180
    )
    late_ok = [t for t in ok if 60 <= t < 180]
    late_refused = [t for t in refused if 60 <= t < 180]
    settled = len(late_ok) / 120
    assert 0.9 * allowance <= settled <= allowance + burst / 120  # tokens saved at 60 s
    assert len(late_refused) / (len(late_ok) + len(late_refused)) < 0.05


async def test_back_at_pace_within_seconds_of_a_storm() -> None:
    """429 for everything during 10 s, then all accepted: at 5 req/s again by 15 s."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock)
    ok, refused = await _scenario(
        lim, clock, lambda t: 1.0 if t < 10 else None, workers=4, until=30
    )
    assert refused and max(refused) < 10
    per_2s = [sum(1 for t in ok if a <= t < a + 2) / 2 for a in range(16, 30, 2)]
    assert min(per_2s) >= 0.9 * 5.0
    assert sum(1 for t in ok if 15 <= t < 30) / 15 >= 0.9 * 5.0


async def test_sporadic_refusals_cost_little_throughput() -> None:
    """5 % of answers 429 at random (seeded): at least 85 % of the configured rate."""
    clock = ManualClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock)
    rng = random.Random(12)
    ok, refused = await _scenario(
        lim, clock, lambda t: 1.0 if rng.random() < 0.05 else None, workers=4, until=120
    )
    assert len(refused) > 10
    assert len(ok) / 120 >= 0.85 * 5.0


def test_rejects_non_positive_rate() -> None:
    """A zero or negative rate is a programming error."""
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(0)
