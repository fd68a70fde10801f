"""
An adaptive request pacer shared by every request of one client. Knows nothing of HTTP.

Algorithm (AIMD, as TCP congestion control, applied to a request rate):

* **Pacing.** Requests are given start slots ``1 / rate`` seconds apart, in the order they
  ask (a virtual-time scheduler: no bursts, no lock, fair under concurrency). ``rate=None``
  means no pacing until the server first pushes back.
* **Pause.** A 429 with ``Retry-After: t`` (already capped by the retry policy) holds every
  request back until ``now + t``, not just the one that was refused.
* **Multiplicative decrease.** The same 429 halves the current rate (from the configured
  rate, or from the rate measured over the last seconds when unlimited), but never below
  90 % of the rate of *successful* requests over the last two seconds (what the server
  demonstrably accepts), nor below ``min_rate``: far above the allowance it descends fast,
  near it gently. 429s answered to requests that were sent before the last decrease are the
  same overshoot seen late and do not halve again.
* **Additive increase, in two speeds.** Every success adds ``step / rate`` to the rate,
  so a second of successes raises it by ``step`` requests per second. The rate at which
  the server last pushed back is remembered as an estimate of its allowance (as TCP's
  slow-start threshold): the larger of the rate after the decrease and the rate the server
  accepted over the last two seconds. Below 90 % of it, ``step`` is a fifth of the
  estimate, so the rate climbs back within seconds; above, ``step`` is a twentieth of it
  (5 % a second), so the probe for more capacity is gentle and 429s stay rare. The rate
  never exceeds the configured one.

A client configured faster than the server allows thus settles just under the server's
allowance, with an occasional 429 as the probe, instead of hammering it. Each 429 is
costly when a server rounds Retry-After up to whole seconds, hence the slow probe.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable

__all__ = ["AdaptiveRateLimiter"]


class AdaptiveRateLimiter:
    """
    Paces request starts at an adaptive rate (requests per second).
    """

    def __init__(
        self,
        rate: float | None,
        *,
        min_rate: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        self.ceiling = rate
        self.rate = rate
        self.min_rate = min(min_rate, rate) if rate is not None else min_rate
        self._clock = clock
        self._sleep = sleep
        self._next_slot = 0.0
        self._pause_until = 0.0
        self._generation = 0
        self._allowance: float | None = None
        self._recent: collections.deque[float] = collections.deque(maxlen=512)
        self._successes: collections.deque[float] = collections.deque(maxlen=512)
        self.throttled = 0

    async def acquire(self) -> int:
        """
        Wait for this request's slot; returns the pacing generation it was scheduled in
        (pass it back to ``on_throttled``). A request whose wait is overtaken by a 429
        (a new generation: new rate, maybe a pause) is scheduled again under the new terms.
        """
        while True:
            generation = self._generation
            now = self._clock()
            slot = max(now, self._pause_until)
            if self.rate is not None:
                slot = max(slot, self._next_slot)
                self._next_slot = slot + 1.0 / self.rate
            if slot > now:
                await self._sleep(slot - now)
            if generation == self._generation:
                break
        self._recent.append(slot)
        return generation

    @staticmethod
    def _rate_in(times: collections.deque[float], now: float, window: float = 2.0) -> float:
        return sum(1 for t in times if now - t <= window) / window

    def on_throttled(self, generation: int, retry_after: float | None) -> None:
        """Record a 429 for a request that ``acquire`` scheduled in ``generation``."""
        now = self._clock()
        self.throttled += 1
        if retry_after is not None:
            self._pause_until = max(self._pause_until, now + retry_after)
        if generation != self._generation:
            return
        current = self.rate if self.rate is not None else self._rate_in(self._recent, now)
        accepted = self._rate_in(self._successes, now)
        self.rate = max(self.min_rate, min(current, max(current / 2.0, 0.9 * accepted)))
        self._allowance = max(self.rate, accepted)
        self._generation += 1
        # Re-space the queue at the new rate from the end of the pause.
        self._next_slot = max(self._pause_until, now)

    def on_success(self) -> None:
        """Record a successful answer: raise the rate a little, up to the ceiling."""
        self._successes.append(self._clock())
        if self.rate is None or self._allowance is None:
            return
        allowance = self._allowance
        step = allowance / 5.0 if self.rate < 0.9 * allowance else allowance / 20.0
        rate = self.rate + step / self.rate
        self.rate = rate if self.ceiling is None else min(self.ceiling, rate)
