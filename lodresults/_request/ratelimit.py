"""
An adaptive request pacer shared by every request of one client. Knows nothing of HTTP.

Design: CUBIC, as botocore's adaptive retry mode applies it to a request rate
(``botocore/retries/adaptive.py``, ``throttling.py`` and ``bucket.py``: on a throttle the
rate drops to ``beta = 0.7`` of the rate measured, then climbs back along a cubic curve to
``W_max``, the rate at which the server last pushed back, flat near it and steeper beyond).
CUBIC, rather than the AIMD lodresults had before, because its growth depends on the time
since the last throttle, not on how many requests succeeded: a client that sent almost
nothing during an outage climbs back as fast as one that kept sending. Changes, each
measured in ``benchmarks/`` (Rate adaptation) and tested in virtual time:

* **The climb back to ``W_max`` always takes ``recovery`` seconds** (2 s), however deep
  the fall (CUBIC's ``K`` grows with it). That is TCP's fast recovery: a loss halves the
  window, yet the sender is back at speed within a round trip or two instead of crawling
  up from the floor. Beyond ``W_max`` the pace grows as ``W_max * (1 + (t / P)**3)`` with
  ``P`` the time of ``probe_requests`` (90) requests at ``W_max``: a 2 % rise takes about a
  quarter of ``P``, so one probe (one 429 against a strict token bucket) costs one request
  in twenty or more, at any rate.
* **``W_max`` is set just under what was refused** (2 % under, and never above the
  highest rate the server accepted lately), not at it: against a token bucket at exactly
  the allowance, returning to the refused rate would be refused again within a second.
  A rate counts as accepted once ten requests in a row passed at it (within the last
  10 s): one or two may pass on a bucket's saved-up tokens.
* **A storm keeps ``W_max``.** A throttle is an overshoot only if the server accepted
  something since the previous decrease; refusals with nothing accepted in between (the
  server pausing everyone, a deployment) say nothing of its allowance. The pace drops
  (fewer probes while it lasts) but the estimate stays, the way TCP keeps ``ssthresh``
  across a retransmission timeout, so the client is back at its remembered pace within
  ``recovery`` seconds of the storm's end.
* **Noise keeps ``W_max``.** A 429 at a rate the server accepted lately (within 2 %) is a
  hiccup, not the allowance: the pace steps back to 0.85 (not 0.7) and the estimate
  stays, so a few random 429s do not ratchet the pace down.
* **A Retry-After holds back only the request it answered** (its retry waits that long),
  never the others: a long Retry-After cannot queue every request behind the others.
* Throttles answered to requests sent before the last decrease are the same overshoot
  seen late and do not decrease again (botocore measures the send rate for the same
  reason; a refusal while sending well below the pace counts at the rate sent).

Pacing gives starts ``1 / rate`` apart in the order they ask, through a FIFO lock: a
cancelled waiter leaves the queue and keeps no slot. ``close()`` makes every waiter and
every later ``acquire`` raise ``LodClientClosed`` at once.

Why hand-written and not aiolimiter: aiolimiter is a leaky bucket at a fixed rate, with no
way to slow down on a 429 or remember an allowance, and its waiters cannot be failed by a
``close()``. Measured against a server allowing 3 req/s with clients set to 5 req/s (the
default), a fixed-rate pacer had about half of its requests refused for the whole run,
where this one settled within 10 % of the allowance with a few % refused
(``benchmarks/README.md``, Rate adaptation). Adaptive pacing is the part that matters and
no well-kept asyncio library offers it.
"""

from __future__ import annotations

import asyncio
import collections
import math
from typing import NamedTuple

from lodresults._clock import Clock, ServerClock, sleep_unless
from lodresults._exceptions import LodClientClosed

__all__ = ["AdaptiveRateLimiter", "Ticket"]

#: Seconds of history used to measure the send rate.
_WINDOW = 2.0
#: Seconds a rate the server accepted is remembered as safe.
_MEMORY = 10.0
#: A rate within this fraction above one accepted lately counts as accepted.
_TOLERANCE = 0.02
#: Consecutive requests accepted that make the rate they ended at one the server accepts
#: (one or two may pass on a bucket's saved-up tokens, not ten).
_CONFIRM = 10


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
        self._clock: Clock = clock if clock is not None else ServerClock()
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
        # Rates of the requests accepted since the last refusal (the last _CONFIRM), and
        # the rates so confirmed, with when.
        self._streak: collections.deque[float] = collections.deque(maxlen=_CONFIRM)
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
        """The earliest start allowed for the next request (may lie in the past)."""
        rate = self.rate_at(now)
        if rate is None:
            return -math.inf
        due = self._last_grant + 1.0 / rate
        # The pace only grows between decreases: a later instant may allow an earlier
        # start. A few fixed-point steps find it (each step can only move it earlier).
        for _ in range(3):
            if due <= now:
                break
            later = self.rate_at(due)
            assert later is not None
            due = self._last_grant + 1.0 / later
        return due

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
            # At the configured pace, count the start from its slot when woken a little
            # late (sleeps overshoot), so that lateness does not add up over a run. Once
            # the server has pushed back, from now: no two starts closer than 1 / rate,
            # which a token bucket with no burst would refuse.
            rate = self.rate_at(now)
            on_time = self._w_max is None and rate is not None and now - due < 0.5 / rate
            self._last_grant = due if on_time else now
            return self._grant(now)

    def _grant(self, now: float) -> Ticket:
        self._sends.append(now)
        pace = self.rate_at(now)
        if self._w_max is None:
            return Ticket(self._epoch, pace)  # not adapting yet: nothing to measure
        sending = self._rate_of(self._sends, now)
        rate = pace if sending is None else sending if pace is None else min(pace, sending)
        return Ticket(self._epoch, rate)

    def on_success(self, ticket: Ticket) -> None:
        """Record that the request started with ``ticket`` was accepted."""
        self._accepted_since_decrease = True
        if ticket.rate is None or self._w_max is None:
            return
        self._streak.append(ticket.rate)
        if len(self._streak) == _CONFIRM:
            # The pace rises along a streak: what it confirms is where it ended.
            self._accepted.append((self._clock.now(), min(list(self._streak)[-3:])))

    def on_throttled(self, ticket: Ticket) -> None:
        """Record a 429 for the request that ``acquire`` started with ``ticket``."""
        self.throttled += 1
        self._streak.clear()
        if ticket.epoch != self._epoch:
            return  # sent before the last decrease: the same overshoot, seen late
        now = self._clock.now()
        sending = self._rate_of(self._sends, now)
        if sending is None and self._w_max is None and self.ceiling is None:
            # Unpaced and sending too little to measure (a few calls, a slow server): the
            # rate refused is unknown, and guessing min_rate would crawl back for minutes.
            # The refused request waits its Retry-After; pacing starts once measurable.
            return
        pace = self.rate_at(now)
        current = pace if pace is not None else sending if sending is not None else self.min_rate
        if sending is not None and sending < self.beta * current:
            # Sending well below the pace (held back by concurrency or by retries
            # waiting): the refusal happened at the rate actually sent (botocore
            # measures it the same way).
            current = sending
        w = self._w_max
        safe = max((r for t, r in self._accepted if now - t <= _MEMORY), default=0.0)
        tol = 1.0 + _TOLERANCE
        beta = self.beta
        if w is None:
            w = current * (1.0 - self.margin)
        elif not self._accepted_since_decrease:
            pass  # a storm: nothing accepted since the last decrease says nothing of the allowance
        elif current > safe * tol or (current < w and safe * tol < w):
            # An overshoot: refused above every rate accepted lately, or before the pace
            # was back at an estimate the server has not confirmed. The allowance lies
            # between the highest rate accepted and the rate refused: aim under both.
            w = (1.0 - self.margin) * (min(current, safe) if safe > 0 else current)
        else:
            # Refused at a rate the server accepted moments ago (noise, a hiccup): keep
            # the estimate and step back less.
            beta = (1.0 + self.beta) / 2.0
        w = max(self.min_rate, w)
        self._w_max = w
        self._probe_time = max(1.0, self.probe_requests / w)
        self._r0 = max(self.min_rate, beta * current)
        self._decreased_at = now
        self._epoch += 1
        self._accepted_since_decrease = False

    def _rate_of(self, times: collections.deque[float], now: float) -> float | None:
        """Events per second in ``times`` over the last seconds (None: too few)."""
        count = 0
        first = now
        for t in reversed(times):
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
