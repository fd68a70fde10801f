"""
Time as the client sees it: ``now()`` and ``sleep()``, real or simulated.

Every wait of a client (the rate limiter's pacing, backoff between attempts, the per-call
deadline) goes through one ``Clock``. ``SystemClock`` is the event loop's monotonic time.
``ManualClock`` is virtual time for tests: epoch-like seconds that move when told
(``advance``/``set``) or, as sleepers wait, straight to the earliest wake-up once every
task is asleep, so timing logic runs in microseconds and the same way on every run.
Unlike a process-wide testing switch (stamina's), it belongs to the client (and the
simulator) it is given to.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "SystemClock", "race", "sleep_unless", "timer_for"]


class Clock(Protocol):
    """A source of monotonic seconds and a way to wait for them."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences matter)."""

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""


class SystemClock:
    """The running event loop's monotonic clock and ``asyncio.sleep``."""

    def now(self) -> float:
        """``loop.time()`` of the running loop."""
        return asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """``asyncio.sleep``."""
        await asyncio.sleep(seconds)


class ManualClock:
    """
    Virtual time for tests: ``sleep`` never waits for real.

    ``ManualClock(t)`` reads ``t`` (epoch seconds, say) until it moves. Pass the same one
    as ``Simulator(clock=...)`` and ``LodClient(clock=...)``: the server's rate limit and
    data, and the client's pacing, retries and deadlines, then share one virtual time.

    With ``auto=True`` (the default) sleepers are woken in deadline order: before each
    jump the clock lets every task that is ready run (``settle_rounds`` passes of the
    event loop), so time moves only when all of them are asleep. Without real I/O in
    between, a run is the same on every machine. With ``auto=False`` time moves only by
    ``advance``, which wakes the sleepers that are then due.
    """

    def __init__(self, start: float = 0.0, *, auto: bool = True, settle_rounds: int = 20) -> None:
        self._now = float(start)
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._driver: asyncio.Task[None] | None = None
        self._auto = auto
        self._settle = settle_rounds

    def now(self) -> float:
        """The virtual time."""
        return self._now

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """
        Move forward by ``seconds`` (not backward); returns the new time. With
        ``auto=False``, wakes the sleepers then due.
        """
        if seconds < 0:
            raise ValueError("a clock does not go back; use set() to jump")
        self._now += seconds
        self._wake_due()
        return self._now

    def set(self, t: float) -> None:
        """Jump to ``t``."""
        self._now = float(t)
        self._wake_due()

    def _wake_due(self) -> None:
        if self._auto:
            return
        while self._timers and self._timers[0][0] <= self._now:
            _, _, fut = heapq.heappop(self._timers)
            if not fut.done():
                fut.set_result(None)

    def __repr__(self) -> str:
        return f"ManualClock({self._now!r})"

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` of virtual time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._timers, (self._now + max(0.0, seconds), next(self._seq), fut))
        if self._auto and (self._driver is None or self._driver.done()):
            self._driver = loop.create_task(self._drive())
        await fut

    async def _drive(self) -> None:
        while self._timers:
            for _ in range(self._settle):
                await asyncio.sleep(0)
            if not self._timers:
                break
            deadline, _, fut = heapq.heappop(self._timers)
            if fut.done():
                continue  # its sleeper was cancelled
            self._now = max(self._now, deadline)
            fut.set_result(None)


def timer_for(clock: Callable[[], float]) -> Clock:
    """Where a client with this ``clock`` waits: in virtual time for a ManualClock."""
    return clock if isinstance(clock, ManualClock) else SystemClock()


async def race(*awaitables: Awaitable[Any]) -> list[asyncio.Future[Any]]:
    """
    Run ``awaitables`` until the first one finishes, then cancel and await the others
    (also when the caller is cancelled). Returns their futures, in order.
    """
    futures: list[asyncio.Future[Any]] = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for f in futures:
            f.cancel()
        await asyncio.gather(*futures, return_exceptions=True)
    return futures


async def sleep_unless(clock: Clock, seconds: float, stop: asyncio.Event) -> bool:
    """Sleep ``seconds`` on ``clock`` unless ``stop`` is set first; True if it was."""
    if stop.is_set():
        return True
    if seconds > 0:
        await race(clock.sleep(seconds), stop.wait())
    return stop.is_set()
