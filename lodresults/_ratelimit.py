"""
An adaptive request pacer shared by every request of one client. Knows nothing of HTTP.

Design: CUBIC, as botocore's adaptive retry mode applies it to a request rate
(``botocore/retries/adaptive.py`` and ``throttling.py``: multiplicative decrease by
``beta = 0.7`` on a throttle, then a cubic climb back to the rate at which the server last
pushed back, ``W_max``, flat near it and faster beyond). CUBIC was chosen over the AIMD
lodresults had before because its growth depends on the time since the last throttle,
not on how many requests succeeded: after an outage, a client that sent almost nothing
climbs back as fast as one that kept sending. Two changes, both measured in
``benchmarks/``:

* **The climb back to ``W_max`` always takes ``recovery`` seconds** (2 s), however deep the
  fall (CUBIC's ``K`` grows with the gap). This is TCP's fast recovery: a loss halves the
  window but the sender is back at speed within a round trip or two, rather than
  crawling up from the floor.
* **A storm does not lower ``W_max``.** A throttle is an overshoot only if the server
  accepted something since the previous decrease; a run of refusals with nothing
  accepted (the server pausing everyone, a deployment) says nothing about its
  allowance. The pace still drops (fewer probes while it lasts), but the estimate is
  kept, the way TCP keeps ``ssthresh`` across a retransmission timeout, so the client
  is back at its remembered pace within ``recovery`` seconds of the storm's end.

Beyond ``W_max`` the pace grows as ``W_max * (1 + (t / probe_time)**3)``: about 10 % after
a quarter of ``probe_time`` (12 s), doubling after ``probe_time``. Against a token bucket
below the configured rate, the pace saw-tooths between 0.7 and about 1.05 of the allowance
with one refused request every several seconds. Throttles answered to requests sent before
the last decrease are the same overshoot seen late and do not decrease again. A
Retry-After applies to the request it was sent to (its retry waits that long); it does not
hold the other requests back, so a long Retry-After cannot queue every request behind the
others.

Pacing gives starts ``1 / rate`` apart in the order they ask, through a FIFO lock: a waiter
that is cancelled leaves the queue and keeps no slot. ``close()`` makes every waiter and
every later ``acquire`` raise ``LodClientClosed`` at once.

Why not aiolimiter: it paces at a fixed rate, with no way to lower it on a 429 or to
remember an allowance. Measured against a simulator allowing 3 req/s with a client set to
5 req/s (the default), a fixed-rate limiter had 40 % of its requests refused while this one
settled at 0.95 of the allowance with 2 % refused (``benchmarks/README.md``, Rate
limiting); adaptive pacing is the part that matters and no well-kept asyncio library
offers it, hence the hand-written scheduler (some fifty lines).
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import NamedTuple

from lodresults._clock import Clock, SystemClock, sleep_unless
from lodresults._exceptions import LodClientClosed

__all__ = ["AdaptiveRateLimiter", "Ticket"]

#: Seconds of history used to measure the send rate.
_WINDOW = 2.0
#: Seconds a rate the server accepted is remembered as safe.
_MEMORY = 10.0


class Ticket(NamedTuple):
    """What ``acquire`` knew when it let a request start."""

    epoch: int  #: decreases so far
    rate: float | None  #: the rate it was sent at (the pace, or less if sending less)


class AdaptiveRateLimiter:
    """
    Paces request starts at an adaptive rate (requests per second), never above ``rate``.

    ``rate=None`` means no pacing until the server first pushes back; the pace is then
    learnt from the measured send rate.
    """

    def __init__(
        self,
        rate: float | None,
        *,
        min_rate: float = 0.2,
        beta: float = 0.7,
        recovery: float = 2.0,
        probe_requests: float = 90.0,
        margin: float = 0.02,
        clock: Clock | None = None,
    ) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive or None")
        self.ceiling = rate
        self.min_rate = min(min_rate, rate) if rate is not None else min_rate
        self.beta = beta
        self.recovery = recovery
        self.probe_requests = probe_requests
        self.margin = margin
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        # CUBIC state: the remembered allowance, the pace right after the last decrease
        # and when that was. None until the first throttle.
        self._w_max: float | None = None
        self._r0 = 0.0
        self._probe_time = 1.0
        self._decreased_at = 0.0
        self._epoch = 0
        self._accepted_since_decrease = False
        self._last_grant = -math.inf
        self._sends: collections.deque[float] = collections.deque(maxlen=1024)
        self._accepted: collections.deque[tuple[float, float]] = collections.deque(maxlen=1024)
        self.throttled = 0

    # --- the pace ------------------------------------------------------------------------

    def rate_at(self, now: float) -> float | None:
        """The pace at time ``now`` (None: unpaced)."""
        w = self._w_max
        if w is None:
            return self.ceiling
        since = now - self._decreased_at
        if since < self.recovery:
            rate = w - (w - self._r0) * (1.0 - since / self.recovery) ** 3
        else:
            rate = w * (1.0 + ((since - self.recovery) / self._probe_time) ** 3)
        return rate if self.ceiling is None else min(self.ceiling, rate)

    @property
    def rate(self) -> float | None:
        """The pace right now (None: unpaced)."""
        if self._w_max is None:
            return self.ceiling
        return self.rate_at(self._clock.now())

    def _due(self, now: float) -> float:
        """The earliest start allowed for the next request."""
        rate = self.rate_at(now)
        if rate is None:
            return now
        due = self._last_grant + 1.0 / rate
        # The pace only grows between decreases: a later instant may allow an earlier
        # start. A few fixed-point steps find it (each step can only move it earlier).
        for _ in range(3):
            if due <= now:
                break
            later = self.rate_at(due)
            assert later is not None
            due = self._last_grant + 1.0 / later
        return max(due, now)

    # --- requests ------------------------------------------------------------------------

    async def acquire(self) -> Ticket:
        """
        Wait for this request's start; returns a ticket to pass to ``on_throttled``.

        Raises ``LodClientClosed`` once ``close()`` was called, also while waiting.
        """
        if self._stop.is_set():
            raise LodClientClosed("this LodClient is closed; create a new one")
        if self._w_max is None and self.ceiling is None and not self._lock.locked():
            return self._grant(self._clock.now())  # unpaced: no queue, no sleep
        async with self._lock:
            while True:
                if self._stop.is_set():
                    raise LodClientClosed("this LodClient is closed; create a new one")
                now = self._clock.now()
                due = self._due(now)
                if due <= now:
                    break
                if await sleep_unless(self._clock, due - now, self._stop):
                    raise LodClientClosed("this LodClient is closed; create a new one")
            self._last_grant = now
            return self._grant(now)

    def _grant(self, now: float) -> Ticket:
        self._sends.append(now)
        pace = self.rate_at(now)
        if self._w_max is None:
            return Ticket(self._epoch, pace)  # not adapting yet: nothing to measure
        sending = self._send_rate(now)
        rate = pace if sending is None else sending if pace is None else min(pace, sending)
        return Ticket(self._epoch, rate)

    def on_success(self, ticket: Ticket) -> None:
        """Record that the request started with ``ticket`` was accepted."""
        self._accepted_since_decrease = True
        if ticket.rate is not None and self._w_max is not None:
            self._accepted.append((self._clock.now(), ticket.rate))

    def on_throttled(self, ticket: Ticket) -> None:
        """Record a 429 for the request that ``acquire`` started with ``ticket``."""
        self.throttled += 1
        if ticket.epoch != self._epoch:
            return  # sent before the last decrease: the same overshoot, seen late
        now = self._clock.now()
        sending = self._send_rate(now)
        pace = self.rate_at(now)
        current = pace if pace is not None else sending if sending is not None else self.min_rate
        if sending is not None and sending < self.beta * current:
            # Sending well below the pace (held back by concurrency or by retries
            # waiting): the refusal happened at the rate actually sent (botocore
            # measures it the same way).
            current = sending
        w = self._w_max
        safe = max((r for t, r in self._accepted if now - t <= _MEMORY), default=0.0)
        tol = 1.0 + self.margin
        if w is None:
            w = current * (1.0 - self.margin)
        elif self._accepted_since_decrease and (
            current > safe * tol or (current < w and safe * tol < w)
        ):
            # An overshoot: refused above every rate accepted lately, or before the pace
            # was back at an estimate the server has not confirmed. The allowance lies
            # between the highest rate accepted and the rate refused: aim under both.
            w = (1.0 - self.margin) * (min(current, safe) if safe > 0 else current)
        # else a storm (nothing was accepted since the last decrease, which says nothing
        # of the allowance) or a refusal at a rate the server accepted moments ago
        # (noise, a server-side hiccup): the pace drops, the estimate stays.
        w = max(self.min_rate, w)
        self._w_max = w
        self._probe_time = max(1.0, self.probe_requests / w)
        # else a storm: nothing was accepted since the last decrease; keep the estimate.
        self._r0 = max(self.min_rate, self.beta * current)
        self._decreased_at = now
        self._epoch += 1
        self._accepted_since_decrease = False

    def _send_rate(self, now: float) -> float | None:
        count = 0
        first = now
        for t in reversed(self._sends):
            if now - t > _WINDOW:
                break
            count += 1
            first = t
        if count < 4:
            return None  # too few to measure
        return max(self.min_rate, (count - 1) / max(now - first, _WINDOW / 8))

    def close(self) -> None:
        """Make every waiting and later ``acquire`` raise ``LodClientClosed``."""
        self._stop.set()
