"""
One command call as the client makes it: a concurrency slot, a rate-limit slot, the
transport's request, retries with backoff, a deadline, and events on the way.

The transport sends one request and maps what came back; this module decides when to
send it and whether to send it again (``_retry``'s policy), and reports what happened
(``_events``). Knows no records and no windows.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Generator
from typing import Protocol, TypeVar, cast

from lodresults._clock import ServerClock, race, sleep_unless
from lodresults._events import Event, EventHook, RequestRetried, Throttled
from lodresults._exceptions import LodClientClosed, LodDeadlineError, LodError, LodRateLimitError
from lodresults._request.ratelimit import AdaptiveRateLimiter, Ticket
from lodresults._request.retry import RetryPolicy, is_retryable
from lodresults._request.telemetry import RequestTrace, begin_request
from lodresults._request.transport import Transport

__all__ = ["Caller"]

logger = logging.getLogger("lodresults")

T = TypeVar("T")


class Lease(Protocol):
    """A claim on a slot of a larger job (``_slots.Lease``): let go while decoding."""

    def release(self) -> None: ...

    def reserve(self) -> None: ...

    async def acquire(self) -> None: ...


class Caller:
    """
    Makes the calls of one client: at most ``max_concurrency`` at once, paced by
    ``limiter``, retried by ``policy``, waiting on ``clock``, which learns the server's
    time from every answer's ``Date``. ``close()`` wakes every call
    waiting for a slot or a retry, which then raises ``LodClientClosed``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        policy: RetryPolicy,
        limiter: AdaptiveRateLimiter,
        max_concurrency: int,
        clock: ServerClock,
        hooks: list[EventHook],
    ) -> None:
        self._transport = transport
        self._policy = policy
        self._limiter = limiter
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._clock = clock
        self._hooks = hooks
        self.closed = False
        # Set by close(): wakes every request waiting for a rate slot or a retry.
        self._stop = asyncio.Event()

    def ensure_open(self) -> None:
        """Raise ``LodClientClosed`` after ``close()``."""
        if self.closed:
            raise LodClientClosed("this LodClient is closed; create a new one")

    async def close(self) -> None:
        """Stop every waiting call, then close the transport."""
        self.closed = True
        self._stop.set()
        self._limiter.close()
        await self._transport.close()

    def emit(self, event: Event, extra: EventHook | None = None) -> None:
        """Call every hook (and ``extra``) with ``event``; a failing hook is logged only."""
        for hook in (*self._hooks, extra) if extra is not None else self._hooks:
            try:
                hook(event)
            except Exception:
                logger.exception("lodresults: event hook failed on %s", type(event).__name__)

    async def call(
        self,
        command: str,
        params: dict[str, str],
        label: str,
        parse: Callable[[bytes | bytearray], Generator[None, None, T]],
        on_event: EventHook | None = None,
        deadline: float | None = None,
        lease: Lease | None = None,
    ) -> T:
        """
        ``command`` with ``params``, its body parsed by ``parse``, retried as needed.

        ``lease``: held for every attempt until its answer is read, released while the
        body is decoded, reserved again as soon as an attempt failed (it is held through
        the backoff once granted) and acquired before the next attempt.
        """
        self.ensure_open()
        failures: list[str] = []
        attempts = self._attempts(
            command, params, label, parse, on_event, failures, lease, paced=deadline is None
        )
        if deadline is None:
            return await attempts
        task, _ = await race(attempts, self._clock.sleep(deadline))
        if not task.cancelled():  # it finished (or failed) before the deadline
            return cast(T, task.result())
        last = f"; last failure: {failures[-1]}" if failures else ""
        raise LodDeadlineError(
            f"{command} {label}: deadline of {deadline:g} s passed before it finished "
            f"({len(failures)} failed attempts{last})",
            deadline=deadline,
        )

    async def _attempts(
        self,
        command: str,
        params: dict[str, str],
        label: str,
        parse: Callable[[bytes | bytearray], Generator[None, None, T]],
        on_event: EventHook | None,
        failures: list[str],
        lease: Lease | None,
        paced: bool = True,
    ) -> T:
        # A 429 with Retry-After is the server pacing us, not a failure: only failures
        # count against max_retries. Without a deadline (``paced``) the time waited on
        # Retry-After is bounded by the policy's max_paced_wait instead.
        attempt = failed = 0
        paced_since: float | None = None  # monotonic time of the first paced 429
        while True:
            attempt += 1
            started = time.perf_counter()
            ticket: Ticket | None = None
            status: int | str = "-"
            trace: RequestTrace | None = None
            try:
                if lease is not None:
                    await lease.acquire()
                async with self._semaphore:
                    ticket = await self._limiter.acquire()
                    # close() may have run while this request waited: never send then
                    # (the transport would open a new session that nobody closes).
                    self.ensure_open()
                    trace = begin_request(self._transport.base_url, command, params, attempt)
                    with trace.quiet():
                        answer = await self._transport.get(command, params)
                self._clock.observe(answer.date)
                status = answer.status
                # Once the decoder is free for this body, the slot goes to the next window
                # (or one sending again), whose request then overlaps this decode.
                release = lease.release if lease is not None else None
                value = await self._transport.decode(command, answer, parse, release)
            except LodError as error:
                retry_after = error.retry_after if isinstance(error, LodRateLimitError) else None
                logger.debug(
                    "%s %s status=%s attempt=%d elapsed=%.3fs error=%s",
                    command, label, status, attempt, time.perf_counter() - started,
                    type(error).__name__,
                )  # fmt: skip
                failures.append(f"{type(error).__name__}: {error}")
                if isinstance(error, LodRateLimitError) and ticket is not None:
                    self._limiter.on_throttled(ticket)
                    self.emit(Throttled(command, retry_after, self._limiter.rate), on_event)
                if trace is not None:
                    trace.finish(error, self._limiter.rate)
                # Retry-After: 0 (or a date already past) asks for nothing but a retry
                # at once: refused that way forever, the call would never end. Only a
                # positive wait is pacing.
                pacing = retry_after is not None and retry_after > 0
                if not pacing:
                    failed += 1
                if not is_retryable(error) or failed > self._policy.max_retries:
                    raise
                delay = self._policy.delay(max(failed, 1), retry_after)
                if pacing and paced:
                    # The bound is time since the first paced 429 (pacing by the limiter
                    # in between included), not the Retry-After waits added up.
                    if paced_since is None:
                        paced_since = self._clock.now()
                    if self._clock.now() - paced_since + delay > self._policy.max_paced_wait:
                        raise
                if lease is not None:
                    # Claim a slot back for the retry now, not after the backoff: the next
                    # one handed on waits for this window instead of starting a new one,
                    # so a failing server meets no more windows than there are slots.
                    lease.reserve()
                self.emit(RequestRetried(command, attempt, delay, failures[-1]), on_event)
                if await sleep_unless(self._clock, delay, self._stop):
                    raise LodClientClosed(
                        f"{command} {label}: the LodClient was closed while waiting to retry"
                    ) from None
                continue
            except BaseException as error:  # cancelled: the attempt's span ends too
                if trace is not None:
                    trace.finish(error, self._limiter.rate)
                raise
            self._limiter.on_success(ticket)
            if trace is not None:
                trace.finish(None, self._limiter.rate, answer.status)
            logger.debug(
                "%s %s status=%s attempt=%d elapsed=%.3fs",
                command, label, status, attempt, time.perf_counter() - started,
            )  # fmt: skip
            return value
