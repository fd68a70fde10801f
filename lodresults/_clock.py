"""
Time as the client sees it: the server's present, monotonic time and sleep, real or
simulated.

A client has one ``ServerClock``: ``time()`` is epoch seconds as the server sees them
(from the ``Date`` header of its answers, the earlier of it and ours), which stamps
``fetched_at`` and so decides what has settled; ``now()`` and ``sleep()`` are the
monotonic time every wait (the rate limiter's pacing, backoff between attempts, the
per-call deadline) runs on: the event loop's, or a ``ManualClock``'s virtual time.
``ManualClock`` is virtual time for tests: epoch-like seconds that move when told
(``advance``/``set``) or, as sleepers wait, straight to the earliest wake-up once every
task is asleep, so timing logic runs in microseconds and the same way on every run.
Unlike a process-wide testing switch (stamina's), it belongs to the client (and the
simulator) it is given to.
"""

from __future__ import annotations

import asyncio
import email.utils
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["Clock", "ManualClock", "ServerClock", "race", "sleep_unless"]

logger = logging.getLogger("lodresults")


class Clock(Protocol):
    """A source of monotonic seconds and a way to wait for them."""

    def now(self) -> float:
        """Seconds on a monotonic scale (only differences matter)."""

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of this clock's time."""


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


class ServerClock:
    """
    A client's one clock: the server's present (``time()``), monotonic time (``now()``)
    and ``sleep()``.

    ``wall`` gives our epoch seconds (``time.time``, or a ``ManualClock``, whose virtual
    time then also drives ``now()`` and ``sleep()``). Each answer's ``Date`` header is
    passed to ``observe``: when our clock is ahead of the server's, ``time()`` is moved
    back by the difference, so what is settled, checkpointed and asked for "since" never
    lies past the server's now; when ours is behind, ours is kept (the earlier of the two).
    """

    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self._manual = wall if isinstance(wall, ManualClock) else None
        # The server's time minus ours when ours is ahead (never positive).
        self._offset = 0.0
        self._observed = False

    def time(self) -> float:
        """Epoch seconds now, as the server sees them (as far as its answers tell)."""
        return self._wall() + self._offset

    __call__ = time

    @property
    def observed(self) -> bool:
        """True once an answer's ``Date`` told the server's time."""
        return self._observed

    def now(self) -> float:
        """Monotonic seconds (only differences matter): the running event loop's time."""
        return self._manual.now() if self._manual else asyncio.get_running_loop().time()

    async def sleep(self, seconds: float) -> None:
        """Return after ``seconds`` of monotonic time."""
        await (self._manual.sleep(seconds) if self._manual else asyncio.sleep(seconds))

    def stamp(self) -> tuple[float, float]:
        """Note the moment a request is sent, for ``sent_at`` once its answer is in."""
        return self.time(), self.now()

    def sent_at(self, stamp: tuple[float, float]) -> float:
        """
        When the request of ``stamp`` was sent, on the server's clock as its answer told
        it (never later than our own clock said then).
        """
        before, sent = stamp
        return min(before, self.time() - (self.now() - sent))

    def observe(self, date: str | None) -> None:
        """Learn the server's clock from an answer's ``Date`` header (ignored if unreadable)."""
        if date is None:
            return
        try:
            server = email.utils.parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return
        # The earlier of the two: never past the server's now. Date is whole seconds,
        # so it reads up to a second behind: a later answer that reads less behind moves
        # the offset forward only by a whole second or more, so that time() does not
        # jitter back and forth within a second from one answer to the next.
        offset = min(0.0, server - self._wall())
        if offset < -60 and abs(offset - self._offset) > 60:
            logger.warning(
                "lodresults: this machine's clock is %.0f s ahead of the server's; "
                "using the server's time",
                -offset,
            )
        if not self._observed or offset < self._offset or offset >= self._offset + 1:
            self._offset = offset
        self._observed = True

    def __repr__(self) -> str:
        return f"ServerClock(offset={self._offset:g})"


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
