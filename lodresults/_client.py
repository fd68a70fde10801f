"""
``LodClient``: the three result commands and ``iter_results``, wiring the modules together.

Data flows one way: client -> stream -> transport -> aiohttp. Option checks happen here,
before anything is sent.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Final, TypeVar, cast

import aiohttp
import attrs

from lodresults._clock import Clock, race, sleep_unless, timer_for
from lodresults._dedup import Deduplicator
from lodresults._events import (
    Event,
    EventHook,
    RequestRetried,
    Throttled,
    WindowCompleted,
    WindowFailed,
    WindowsPlanned,
    WindowSplit,
)
from lodresults._exceptions import (
    LodClientClosed,
    LodDeadlineError,
    LodError,
    LodInvalidArgument,
    LodRateLimitError,
)
from lodresults._models import LabResult
from lodresults._ratelimit import AdaptiveRateLimiter, Ticket
from lodresults._retry import RetryPolicy, is_retryable
from lodresults._stream import stream_windows
from lodresults._transport import ApiKey, Transport, check_base_url
from lodresults._windows import (
    MAX_WINDOW_SECONDS,
    TimeLike,
    Window,
    WindowPlanner,
    gaps,
    validate_range,
)
from lodresults._wire import decode_json, decode_results, structure_result

__all__ = ["DEFAULT_BASE_URL", "LodClient", "WindowBatch"]

logger = logging.getLogger("lodresults")

DEFAULT_BASE_URL: Final = "https://labondemand.com/api/v3"
DEFAULT_MAX_CONCURRENCY: Final = 4
DEFAULT_RATE_LIMIT: Final = 5.0
DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_MAX_RETRIES: Final = 5
#: 256 MiB: a 7-day window of 100,000 labs is about 50 MB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
MAX_LATEST_MINUTES: Final = 10080

T = TypeVar("T")


@attrs.frozen
class WindowBatch:
    """
    One window's answer, sorted, as ``iter_windows`` yields it.

    ``records``: labs not yielded before in this iteration, each once, in the server's
    order (within the window, an ended copy beats a running one, otherwise the later copy
    wins). ``updates``: changed copies of labs yielded in an earlier batch of this
    iteration, from a response received after the copy yielded; apply them after
    ``records`` (the newest state wins). ``fetched_at``: epoch seconds at or before the
    moment the window's request was sent (for a split window, its earliest part): the
    answer shows every lab as it was at that moment or later.

    .. versionadded:: 0.1.0
    """

    window: Window
    records: list[LabResult]
    updates: list[LabResult] = attrs.field(factory=list)
    fetched_at: float = 0.0


#: One request's share of a window: (receive sequence, sent at, records).
_Part = tuple[int, float, list[LabResult]]


class LodClient:
    """
    Async client for the Lab on Demand API v3 result commands.

    Use it as ``async with LodClient(api_key) as client: ...`` or call ``await
    client.close()``. One client holds one connection pool; its ``max_concurrency`` and
    ``rate_limit`` hold for every request it makes, shared by all concurrent callers.

    Args:
        api_key: The key sent in the ``api_key`` header. Never logged or shown.
        base_url: The API root. Must be ``https://``; ``http://`` only to loopback.
        max_concurrency: Requests in flight at once (also windows in flight).
        rate_limit: Request starts per second, or None for no limit. Adapts down on 429.
        timeout: Seconds for one request, connect to last byte.
        max_retries: Retries of a transient failure (so ``max_retries + 1`` attempts).
        session: A caller-owned ``aiohttp.ClientSession`` to use (never closed here).
        max_response_bytes: Bodies larger than this are refused.
        on_event: Called with every ``Event`` (retries, throttling, window progress).
        retry_initial_wait: First backoff ceiling in seconds (doubles per attempt).
        retry_max_wait: Largest backoff between attempts, in seconds.
        deadline: Seconds each call may take in all, retries and waits included (like
            stamina's ``timeout``); None for no limit. Past it the call raises
            ``LodDeadlineError`` naming what was left. ``iter_results`` takes its own.
        clock: Epoch seconds now, for ``WindowBatch.fetched_at`` (``time.time``). Tests
            pass a ``lodresults.testing.ManualClock``: the client's waits (pacing,
            backoff, deadlines) then run in its virtual time too.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        session: aiohttp.ClientSession | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        on_event: EventHook | None = None,
        retry_initial_wait: float = 0.5,
        retry_max_wait: float = 30.0,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = ApiKey.checked(api_key)
        del api_key  # the ApiKey hides it; a plain str local would show in tracebacks
        if isinstance(key, LodInvalidArgument):
            raise key
        url = check_base_url(base_url)
        _check_int("max_concurrency", max_concurrency, 1, 1000)
        _check_int("max_retries", max_retries, 0, 100)
        _check_int("max_response_bytes", max_response_bytes, 1, 2**40)
        if rate_limit is not None:
            _check_positive("rate_limit", rate_limit)
        _check_positive("timeout", timeout)
        _check_positive("retry_initial_wait", retry_initial_wait, allow_zero=True)
        _check_positive("retry_max_wait", retry_max_wait, allow_zero=True)
        if deadline is not None:
            _check_positive("deadline", deadline)
        if not callable(clock):
            raise LodInvalidArgument("clock must be a callable returning epoch seconds")
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise LodInvalidArgument("session must be an aiohttp.ClientSession or None")
        self._key = key
        self.base_url = str(url)
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.deadline = deadline
        self._transport = Transport(
            url, key, timeout=timeout, max_response_bytes=max_response_bytes, session=session
        )
        self._policy = RetryPolicy(
            max_retries=max_retries, initial_wait=retry_initial_wait, max_wait=retry_max_wait
        )
        self._clock = clock
        # Where waits happen: real time, or the virtual time of a ManualClock.
        self._timer: Clock = timer_for(clock)
        self._limiter = AdaptiveRateLimiter(rate_limit, clock=self._timer)
        self._semaphore = asyncio.Semaphore(max_concurrency)
        self._hooks: list[EventHook] = [on_event] if on_event is not None else []
        self._closed = False
        # Set by close(): wakes every request waiting for a rate slot or a retry.
        self._stop = asyncio.Event()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> LodClient:
        self._ensure_open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """
        Close the connection pool (unless the session is the caller's). Idempotent.

        Requests still waiting for a rate slot or sleeping before a retry raise
        ``LodClientClosed`` at once; none of them is sent afterwards.
        """
        self._closed = True
        self._stop.set()
        self._limiter.close()
        await self._transport.close()

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._closed

    def __repr__(self) -> str:
        # Also for a client whose __init__ failed: a traceback formatter may show it.
        options = ("base_url", "max_concurrency", "rate_limit", "timeout", "max_retries")
        shown = ", ".join(f"{n}={getattr(self, n, '?')!r}" for n in options)
        return f"LodClient({shown})"

    @property
    def clock(self) -> Callable[[], float]:
        """The clock this client stamps ``WindowBatch.fetched_at`` with (epoch seconds)."""
        return self._clock

    @property
    def current_rate(self) -> float | None:
        """The adaptive pace in requests per second right now (None = unpaced)."""
        return self._limiter.rate

    def _ensure_open(self) -> None:
        if self._closed:
            raise LodClientClosed("this LodClient is closed; create a new one")

    # --- events --------------------------------------------------------------------------

    def _emit(self, event: Event, extra: EventHook | None = None) -> None:
        for hook in (*self._hooks, extra) if extra is not None else self._hooks:
            try:
                hook(event)
            except Exception:
                logger.exception("lodresults: event hook failed on %s", type(event).__name__)

    # --- the one request path ------------------------------------------------------------

    async def _request(
        self,
        command: str,
        params: dict[str, str],
        label: str,
        parse: Callable[[bytes], T],
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> T:
        self._ensure_open()
        failures: list[str] = []
        attempts = self._attempts(command, params, label, parse, on_event, failures)
        if deadline is None:
            return await attempts
        task, _ = await race(attempts, self._timer.sleep(deadline))
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
        parse: Callable[[bytes], T],
        on_event: EventHook | None,
        failures: list[str],
    ) -> T:
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            ticket: Ticket | None = None
            status: int | str = "-"
            try:
                async with self._semaphore:
                    ticket = await self._limiter.acquire()
                    # close() may have run while this request waited: never send then
                    # (the transport would open a new session that nobody closes).
                    self._ensure_open()
                    answer = await self._transport.get(command, params)
                status = answer.status
                value = await self._transport.decode(command, answer, parse)
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
                    self._emit(Throttled(command, retry_after, self._limiter.rate), on_event)
                if not is_retryable(error) or attempt > self.max_retries:
                    raise
                delay = self._policy.delay(attempt, retry_after)
                self._emit(RequestRetried(command, attempt, delay, failures[-1]), on_event)
                if await sleep_unless(self._timer, delay, self._stop):
                    raise LodClientClosed(
                        f"{command} {label}: the LodClient was closed while waiting to retry"
                    ) from None
                continue
            self._limiter.on_success(ticket)
            logger.debug(
                "%s %s status=%s attempt=%d elapsed=%.3fs",
                command, label, status, attempt, time.perf_counter() - started,
            )  # fmt: skip
            return value

    # --- commands ------------------------------------------------------------------------

    async def result(self, lab_instance_id: int) -> LabResult:
        """
        The ``Result`` command: one lab instance by id.

        Raises:
            LodInvalidArgument: ``lab_instance_id`` is not a positive int.
            LodApiError: the server answered ``Status: 0`` (e.g. unknown id).
        """
        if (
            not isinstance(lab_instance_id, int)
            or isinstance(lab_instance_id, bool)
            or not 0 < lab_instance_id < 2**63
        ):
            raise LodInvalidArgument(
                f"lab_instance_id must be a positive int, got {lab_instance_id!r}"
            )
        return await self._request(
            "Result",
            {"labInstanceId": str(lab_instance_id)},
            f"id={lab_instance_id}",
            lambda body: structure_result(decode_json(body, command="Result"), lab_instance_id),
            deadline=self.deadline,
        )

    async def results(self, start: TimeLike, end: TimeLike) -> list[LabResult]:
        """
        The ``Results`` command: one request for labs that started or ended in
        ``[start, end]`` (inclusive, at most 7 days). Use ``iter_results`` for longer ranges.

        ``start``/``end``: aware ``datetime``, ``date`` (midnight UTC) or int epoch seconds.
        """
        s, e = validate_range(start, end)
        if e - s > MAX_WINDOW_SECONDS:
            raise LodInvalidArgument(
                f"results() sends one request and the server allows at most 7 days; this range "
                f"is {(e - s) / 86400:.2f} days. Use iter_results() for longer ranges"
            )
        return await self._fetch_window(Window(s, e), deadline=self.deadline)

    async def _fetch_window(
        self, window: Window, on_event: EventHook | None = None, deadline: float | None = None
    ) -> list[LabResult]:
        return await self._request(
            "Results",
            {"start": str(window.start), "end": str(window.end)},
            str(window),
            decode_results,
            on_event,
            deadline,
        )

    async def latest_results(self, minutes: int = 60) -> list[LabResult]:
        """
        The ``LatestResults`` command: labs that changed state in the last ``minutes``
        (1..10080).
        """
        if not isinstance(minutes, int) or isinstance(minutes, bool):
            raise LodInvalidArgument(f"minutes must be an int, got {type(minutes).__name__}")
        if not 1 <= minutes <= MAX_LATEST_MINUTES:
            raise LodInvalidArgument(
                f"minutes must be within 1..{MAX_LATEST_MINUTES} (7 days), got {minutes}"
            )
        return await self._request(
            "LatestResults",
            {"minutes": str(minutes)},
            f"minutes={minutes}",
            lambda body: decode_results(body, command="LatestResults"),
            deadline=self.deadline,
        )

    # --- ranges of any length --------------------------------------------------------------

    def iter_windows(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        ordered: bool = True,
        skip: Sequence[tuple[int, int]] = (),
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[WindowBatch, None]:
        """
        Like ``iter_results``, but yields each window as a ``WindowBatch``: its new records,
        the changed copies of labs yielded earlier (``updates``), and when it was fetched.

        To keep a table equal to the server, upsert each batch's ``records`` and then its
        ``updates``, batch after batch in the order they come.

        ``skip`` lists ``(start, end)`` epoch intervals already fetched (a resumed
        backfill's checkpoints); only the gaps between them are planned. ``deadline``
        as for ``iter_results``.

        .. versionadded:: 0.1.0
        """
        s, e = validate_range(start, end)
        if not isinstance(ordered, bool):
            raise LodInvalidArgument("ordered must be a bool")
        if deadline is not None:
            _check_positive("deadline", deadline)
        self._ensure_open()
        limit = deadline if deadline is not None else self.deadline
        return self._iter_windows(s, e, ordered, gaps(s, e, skip), on_event, deadline=limit)

    async def _iter_windows(
        self,
        start: int,
        end: int,
        ordered: bool,
        ranges: list[tuple[int, int]],
        on_event: EventHook | None,
        *,
        deadline: float | None = None,
    ) -> AsyncGenerator[WindowBatch, None]:
        planner = WindowPlanner(ranges)
        self._emit(WindowsPlanned(planner.estimate_total(), start, end), on_event)
        dedup = Deduplicator(start, end, ordered=ordered)
        received = itertools.count()
        clock = self._clock

        async def fetch(window: Window) -> list[_Part]:
            sent = clock()
            records = await self._fetch_window(window, on_event)
            # The order responses complete in is the order their copies are newest in.
            return [(next(received), sent, records)]

        def split(window: Window, parts: int, limit: int) -> None:
            logger.debug(
                "Results %s refused as too long: split in %d (limit %d s)", window, parts, limit
            )
            self._emit(WindowSplit(window, parts, limit), on_event)

        def failed(window: Window, error: LodError) -> None:
            self._emit(WindowFailed(window, f"{type(error).__name__}: {error}"), on_event)

        stream = stream_windows(
            planner,
            fetch,
            concurrency=self.max_concurrency,
            ordered=ordered,
            on_split=split,
            on_failed=failed,
            deadline=deadline,
            timer=self._timer,
        )
        async with aclosing(stream):
            async for done in stream:
                parts = done.items
                fresh, updates = dedup.take(done.window, [(seq, recs) for seq, _, recs in parts])
                if done.watermark is not None:
                    dedup.passed(done.watermark)
                count = sum(len(recs) for _, _, recs in parts)
                self._emit(WindowCompleted(done.window, count, len(fresh), len(updates)), on_event)
                logger.debug(
                    "window %s: %d records, %d new, %d updates, dedup holds %d ids",
                    done.window, count, len(fresh), len(updates), len(dedup),
                )  # fmt: skip
                fetched_at = min(sent for _, sent, _ in parts)
                yield WindowBatch(done.window, fresh, updates, fetched_at)

    def iter_results(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        ordered: bool = True,
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[LabResult, None]:
        """
        Every lab that started or ended in ``[start, end]``, each exactly once, streaming.

        Each lab comes as the first window that returned it had it (the newest copy within
        that window). A lab that changed before a later window returned it again is not
        yielded twice: use ``iter_windows`` and its ``updates`` to follow such changes.
        Records the server returns although neither their start nor their end lies in
        ``[start, end]`` are dropped.

        The range may be any length: it is cut into windows the server accepts (at most
        7 days; narrower if the server says so), fetched ``max_concurrency`` at a time
        under the rate limit with retries. With ``ordered=True`` windows come in
        chronological order (records within a window in the server's order); with
        ``ordered=False`` each window as soon as it arrives. Memory stays bounded: only a
        few windows are ever held, and a slow consumer stops the fetching ahead.

        Iterate under ``contextlib.aclosing(...)`` if you may stop early, so that
        in-flight requests are cancelled at once rather than when the iterator is
        collected.

        Raises:
            LodInvalidArgument: bad bounds (raised here, before anything is sent).
            LodWindowError: a window still failed after retries; ``.start``/``.end`` name
                it and ``.error`` is the cause. It is also an instance of the cause's
                class (``except LodAuthError`` catches it). With ``ordered=True`` all
                records of earlier windows were yielded first, and later windows are
                cancelled as soon as it fails (a permanent failure ends the call in about
                the time one request takes to give up).
            LodDeadlineError: ``deadline`` seconds (the client's by default) passed
                before the end, the consumer's time included; ``.unfinished`` lists the
                epoch ranges left (with ``ordered=True``, everything before them was
                yielded).

        .. versionadded:: 0.1.0
        """
        windows = self.iter_windows(
            start, end, ordered=ordered, on_event=on_event, deadline=deadline
        )
        return self._flatten(windows)

    @staticmethod
    async def _flatten(
        windows: AsyncGenerator[WindowBatch, None],
    ) -> AsyncGenerator[LabResult, None]:
        async with aclosing(windows):
            async for batch in windows:
                for record in batch.records:
                    yield record


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LodInvalidArgument(f"{name} must be an int within {lo}..{hi}, got {value!r}")


def _check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and (value > 0 or (allow_zero and value == 0)) and value != float("inf"):  # type: ignore[operator]
        return
    raise LodInvalidArgument(f"{name} must be a positive number, got {value!r}")
