"""The adaptive pacer, driven by a fake clock (no real sleeping)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from lodresults._ratelimit import AdaptiveRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


async def test_paces_requests_evenly() -> None:
    """At rate 5, ten requests are granted 0.2 s apart."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(5.0, clock=clock, sleep=clock.sleep)
    slots = []
    for _ in range(10):
        await lim.acquire()
        slots.append(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(slots)]
    assert gaps == pytest.approx([0.2] * 9)


async def test_concurrent_callers_share_the_rate() -> None:
    """Slots are handed out in order without overlap even when asked concurrently."""
    clock = FakeClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    lim = AdaptiveRateLimiter(10.0, clock=clock, sleep=sleep)
    await asyncio.gather(*(lim.acquire() for _ in range(20)))
    assert sorted(waits) == pytest.approx([i * 0.1 for i in range(1, 20)])


async def test_unlimited_never_waits() -> None:
    """rate=None grants at once."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(None, clock=clock, sleep=clock.sleep)
    for _ in range(100):
        await lim.acquire()
    assert clock.now == 0.0


async def test_throttle_pauses_everyone_and_halves_once_per_overshoot() -> None:
    """A burst of 429s from one overshoot halves the rate once and pauses for Retry-After."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(8.0, clock=clock, sleep=clock.sleep)
    sent = [await lim.acquire() for _ in range(4)]
    clock.now = 1.0
    for s in sent:
        lim.on_throttled(s, retry_after=2.0)
    assert lim.rate == 4.0
    assert lim.throttled == 4
    await lim.acquire()
    assert clock.now >= 3.0  # paused until now + Retry-After


async def test_additive_increase_recovers_to_the_ceiling() -> None:
    """Successes raise the rate back, never above the configured one."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(10.0, clock=clock, sleep=clock.sleep)
    lim.on_throttled(await lim.acquire(), retry_after=None)
    assert lim.rate == 5.0
    for _ in range(200):
        lim.on_success()
    assert lim.rate == 10.0


async def test_unlimited_client_learns_a_rate_from_a_429() -> None:
    """Without a configured rate, a 429 sets one from the measured recent rate."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(None, clock=clock, sleep=clock.sleep)
    for i in range(40):
        clock.now = i * 0.05  # 20 requests per second
        last = await lim.acquire()
    lim.on_throttled(last, retry_after=None)
    assert lim.rate is not None
    assert 5.0 <= lim.rate <= 11.0


async def test_converges_under_a_server_allowance() -> None:
    """Against a server allowing 4 req/s, a client set to 50 settles near 4 (AIMD)."""
    clock = FakeClock()
    lim = AdaptiveRateLimiter(50.0, clock=clock, sleep=clock.sleep)
    allowance, tokens, last = 4.0, 1.0, 0.0
    ok_times: list[float] = []
    throttled = late_throttled = 0
    while clock.now < 120:
        generation = await lim.acquire()
        t = clock.now
        tokens = min(1.0, tokens + (t - last) * allowance)
        last = t
        if tokens >= 1:
            tokens -= 1
            lim.on_success()
            ok_times.append(t)
        else:
            throttled += 1
            lim.on_throttled(generation, retry_after=1.0)
            if t > 60:
                late_throttled += 1
    late = [t for t in ok_times if t > 60]
    achieved = len(late) / 60
    assert 3.0 <= achieved <= 4.05  # settles just under the allowance
    assert late_throttled <= 20  # probing is gentle: a 429 every few seconds at most


def test_rejects_non_positive_rate() -> None:
    """A zero or negative rate is a programming error."""
    with pytest.raises(ValueError):
        AdaptiveRateLimiter(0)
