"""
An adaptive request pacer shared by every request of one client. Knows nothing of HTTP.

Algorithm (AIMD, as TCP congestion control, applied to a request rate):

* **Pacing.** Requests are given start slots ``1 / rate`` seconds apart, in the order they
  ask (a virtual-time scheduler: no bursts, no lock, fair under concurrency). ``rate=None``
  means no pacing until the server first pushes back.
* **Pause.** A 429 with ``Retry-After: t`` (already capped by the retry policy) holds every
  request back until ``now + t``, not just the one that was refused.
* **Multiplicative decrease.** The same 429 halves the current rate (from the configured
  rate, or from the rate measured over the last seconds when unlimited), never below
  ``min_rate``. 429s answered to requests that were sent before the last decrease are the
  same overshoot seen late and do not halve again.
* **Additive increase.** Every success adds ``step / rate`` to the rate, so a second of
  successes raises it by ``step`` requests per second, where ``step`` is a tenth of the
  rate at which the server last pushed back (at least 0.5). The rate never exceeds the
  configured ``rate``.

A client configured faster than the server allows thus settles just under the server's
allowance, with the occasional 429 as the probe, instead of hammering it.
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
        self._last_decrease = float("-inf")
        self._step = 0.5
        self._recent: collections.deque[float] = collections.deque(maxlen=512)
        self.throttled = 0

    async def acquire(self) -> float:
        """Wait for this request's slot; returns the time (clock) it was granted."""
        now = self._clock()
        slot = max(now, self._pause_until)
        if self.rate is not None:
            slot = max(slot, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await self._sleep(slot - now)
        self._recent.append(slot)
        return slot

    def _measured_rate(self, now: float) -> float:
        window = 2.0
        n = sum(1 for t in self._recent if now - t <= window)
        return n / window

    def on_throttled(self, sent_at: float, retry_after: float | None) -> None:
        """Record a 429 for a request granted at ``sent_at``."""
        now = self._clock()
        self.throttled += 1
        if retry_after is not None:
            self._pause_until = max(self._pause_until, now + retry_after)
        if sent_at < self._last_decrease:
            return
        current = self.rate if self.rate is not None else self._measured_rate(now)
        self.rate = max(self.min_rate, current / 2.0)
        self._step = max(0.5, current / 10.0)
        self._last_decrease = now
        # Re-space the queue at the new rate from the end of the pause.
        self._next_slot = max(self._pause_until, now)

    def on_success(self) -> None:
        """Record a successful answer: raise the rate a little, up to the ceiling."""
        if self.rate is None:
            return
        rate = self.rate + self._step / self.rate
        self.rate = rate if self.ceiling is None else min(self.ceiling, rate)
