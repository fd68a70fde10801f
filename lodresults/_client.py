"""
``LodClient``: the three result commands and ``iter_results``, wiring the modules together.

Data flows one way: client -> batches -> stream, and client -> caller -> transport ->
aiohttp. Option checks happen here, before anything is sent; HTTP is the transport's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Final

from lodresults._clock import ServerClock
from lodresults._events import Event, EventHook, UnknownField
from lodresults._exceptions import LodInvalidArgument
from lodresults._logging import configure_from_env
from lodresults._records.decode import SLICE, RecordDecoder, Steps
from lodresults._records.models import LabResult
from lodresults._records.schema import INT64_MAX
from lodresults._records.wire import Body
from lodresults._request.caller import Caller, Lease
from lodresults._request.key import ApiKey, check_base_url
from lodresults._request.ratelimit import AdaptiveRateLimiter
from lodresults._request.retry import RetryPolicy
from lodresults._request.telemetry import call_span, count_records
from lodresults._request.transport import Transport
from lodresults._windows.batches import FanOut, WindowBatch
from lodresults._windows.plan import MAX_WINDOW_SECONDS, TimeLike, Window, gaps, validate_range

if TYPE_CHECKING:
    import aiohttp

__all__ = ["DEFAULT_BASE_URL", "LodClient"]

DEFAULT_BASE_URL: Final = "https://labondemand.com/api/v3"
DEFAULT_MAX_CONCURRENCY: Final = 4
DEFAULT_RATE_LIMIT: Final = 5.0
DEFAULT_TIMEOUT: Final = 60.0
DEFAULT_MAX_RETRIES: Final = 5
DEFAULT_RETRY_INITIAL_WAIT: Final = 0.5
DEFAULT_RETRY_MAX_WAIT: Final = 30.0
#: 256 MiB: a 7-day window of 100,000 labs is about 50 MB.
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024
MAX_LATEST_MINUTES: Final = 10080


logger = logging.getLogger("lodresults")

#: A field name in a log line is cut to this many characters.
_NAME_CHARS: Final = 100


def _printable(text: str) -> str:
    """``text`` for a log line: control and other unprintable characters escaped, cut."""
    cut = text[:_NAME_CHARS]
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in cut)
    return shown + ("..." if len(text) > _NAME_CHARS else "")


class LodClient:
    """
    Async client for the Lab on Demand API v3 result commands.

    Use it as ``async with LodClient(api_key) as client: ...`` or call ``await
    client.close()``. One client holds one connection pool; its ``max_concurrency`` and
    ``rate_limit`` hold for every request it makes, shared by all concurrent callers.

    Args:
        api_key: The key sent in the ``api_key`` header. Never logged or shown.
        base_url: The API root. Must be ``https://``; ``http://`` only to loopback.
        max_concurrency: Requests in flight at once. ``iter_results`` sends this many
            windows at a time; a window whose answer has been read is decoded while the
            next one's request is out.
        rate_limit: Request starts per second, or None for no limit. Adapts down on 429.
        timeout: Seconds for one request, connect to last byte.
        max_retries: Retries of a transient failure (so ``max_retries + 1`` attempts). A
            429 with Retry-After is the server pacing us, not a failure: it is waited
            out within ``deadline`` (10 minutes per call without one) and not counted.
        session: A caller-owned ``aiohttp.ClientSession`` to use (never closed here). Its
            connector must hold at least ``max_concurrency`` connections.
        max_response_bytes: Bodies larger than this are refused; ``iter_results`` and
            ``iter_windows`` then split the window (as for the 7-day rule).
        proxy: An ``http://`` or ``https://`` proxy URL for every request. An https
            ``base_url`` is reached through it by a CONNECT tunnel (the proxy never sees
            the key); a plain-http ``base_url`` only through a proxy on loopback.
        trust_env: Use the proxy ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY`` name (read
            once, here), as aiohttp's ``trust_env``; False by default, as aiohttp's.
        on_event: Called with every ``Event`` (retries, throttling, window progress).
        retry_initial_wait: First backoff ceiling in seconds (doubles per attempt).
        retry_max_wait: Largest backoff between attempts, in seconds.
        deadline: Seconds each call may take in all, retries and waits included (like
            stamina's ``timeout``); None for no limit. Past it the call raises
            ``LodDeadlineError`` naming what was left. ``iter_results`` takes its own.
        clock: Our epoch seconds now (``time.time``). The client's clock (``.clock``)
            is this, moved back to the server's (its answers' ``Date`` header) when ours
            runs ahead: it stamps ``WindowBatch.fetched_at`` and so decides what has
            settled. Tests pass a ``lodresults.testing.ManualClock``: the client's waits
            (pacing, backoff, deadlines) then run in its virtual time too.

    With the environment variable ``LODRESULTS_LOG`` set to ``debug``, ``info``,
    ``warning`` or ``error``, creating a client adds a stderr handler to the
    ``lodresults`` logger at that level (once; other loggers are left alone).

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
        retry_initial_wait: float = DEFAULT_RETRY_INITIAL_WAIT,
        retry_max_wait: float = DEFAULT_RETRY_MAX_WAIT,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> None:
        key = ApiKey.checked(api_key)
        del api_key  # the ApiKey hides it; a plain str local would show in tracebacks
        if isinstance(key, LodInvalidArgument):
            raise key
        configure_from_env()
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
        if proxy is not None and not isinstance(proxy, str):
            raise LodInvalidArgument("proxy must be a URL string or None")
        if not isinstance(trust_env, bool):
            raise LodInvalidArgument("trust_env must be a bool")
        self._key = key
        self.base_url = str(url)
        self.max_concurrency = max_concurrency
        self.rate_limit = rate_limit
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.deadline = deadline
        self._transport = Transport(
            url, key, timeout=timeout, max_response_bytes=max_response_bytes, session=session,
            pool_size=max_concurrency, proxy=proxy, trust_env=trust_env,
        )  # fmt: skip
        # The server's present, and where waits happen (real time, or the virtual time
        # of a ManualClock).
        self._clock = ServerClock(clock)
        self._limiter = AdaptiveRateLimiter(rate_limit, clock=self._clock)
        # One per client: each field the API adds is reported once per client.
        self._decoder = RecordDecoder()
        # Field names come from the server: scrubbed of the key before they are shown.
        self._redact = key.redactor()
        self._caller = Caller(
            self._transport,
            policy=RetryPolicy(
                max_retries=max_retries, initial_wait=retry_initial_wait, max_wait=retry_max_wait
            ),
            limiter=self._limiter,
            max_concurrency=max_concurrency,
            clock=self._clock,
            hooks=[on_event] if on_event is not None else [],
        )
        self._fan_out = FanOut(self._fetch_window, max_concurrency, self._clock, self._caller.emit)

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
        await self._caller.close()

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._caller.closed

    def __repr__(self) -> str:
        # Also for a client whose __init__ failed: a traceback formatter may show it.
        options = ("base_url", "max_concurrency", "rate_limit", "timeout", "max_retries")
        shown = ", ".join(f"{n}={getattr(self, n, '?')!r}" for n in options)
        return f"LodClient({shown})"

    @property
    def clock(self) -> ServerClock:
        """
        The server's present as this client knows it: ``clock()`` is epoch seconds, our
        clock's or, when ours runs ahead, the server's (from its answers' ``Date``).
        It stamps ``WindowBatch.fetched_at``.
        """
        return self._clock

    def emit(self, event: Event, extra: EventHook | None = None) -> None:
        """Report ``event`` to the client's hook (and ``extra``), as the client's own are."""
        self._caller.emit(event, extra)

    @property
    def current_rate(self) -> float | None:
        """The adaptive pace in requests per second right now (None = unpaced)."""
        return self._limiter.rate

    def _ensure_open(self) -> None:
        self._caller.ensure_open()

    # --- commands ------------------------------------------------------------------------

    async def result(self, lab_instance_id: int) -> LabResult:
        """
        The ``Result`` command: one lab instance by id.

        Raises:
            LodInvalidArgument: ``lab_instance_id`` is not a positive int.
            LodNotFoundError: the server does not know ``lab_instance_id``.
            LodApiError: the server answered ``Status: 0`` for another reason.
        """
        if (
            not isinstance(lab_instance_id, int)
            or isinstance(lab_instance_id, bool)
            or not 0 < lab_instance_id <= INT64_MAX
        ):
            raise LodInvalidArgument(
                f"lab_instance_id must be a positive int, got {lab_instance_id!r}"
            )
        with call_span("result", {"lodresults.lab_instance_id": lab_instance_id}):
            record: LabResult = await self._caller.call(
                "Result",
                {"labInstanceId": str(lab_instance_id)},
                f"id={lab_instance_id}",
                lambda body: self._decoder.result_steps(
                    body, lab_instance_id, self._reporter("Result", None)
                ),
                deadline=self.deadline,
            )
        count_records("Result", 1)
        return record

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
        with call_span("results", {"lodresults.start": s, "lodresults.end": e}):
            records = await self._fetch_window(Window(s, e), deadline=self.deadline)
        count_records("Results", len(records))
        return records

    async def _fetch_window(
        self,
        window: Window,
        on_event: EventHook | None = None,
        lease: Lease | None = None,
        deadline: float | None = None,
    ) -> list[LabResult]:
        return await self._caller.call(
            "Results",
            {"start": str(window.start), "end": str(window.end)},
            str(window),
            self._parser("Results", on_event),
            on_event,
            deadline,
            lease,
        )

    async def latest_results(self, minutes: int = 60) -> list[LabResult]:
        """
        The ``LatestResults`` command: labs that changed state in the last ``minutes``
        (1..``MAX_LATEST_MINUTES``, 7 days).
        """
        if not isinstance(minutes, int) or isinstance(minutes, bool):
            raise LodInvalidArgument(f"minutes must be an int, got {type(minutes).__name__}")
        if not 1 <= minutes <= MAX_LATEST_MINUTES:
            raise LodInvalidArgument(
                f"minutes must be within 1..{MAX_LATEST_MINUTES} (7 days), got {minutes}"
            )
        with call_span("latest_results", {"lodresults.minutes": minutes}):
            records: list[LabResult] = await self._caller.call(
                "LatestResults",
                {"minutes": str(minutes)},
                f"minutes={minutes}",
                self._parser("LatestResults", None),
                deadline=self.deadline,
            )
        count_records("LatestResults", len(records))
        return records

    def _parser(self, command: str, on_event: EventHook | None) -> Callable[[Body], Steps]:
        report = self._reporter(command, on_event)
        return lambda body: self._decoder.steps(body, command, report)

    def _reporter(self, command: str, on_event: EventHook | None) -> Callable[[str], None]:
        def report(sent: str) -> None:
            name = self._redact.text(sent)
            logger.info(
                "%s: the API sent a field this lodresults does not know, ignored: %s",
                command,
                _printable(name),
            )
            self._caller.emit(UnknownField(command, name), on_event)

        return report

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
        return self._fan_out.batches(
            s, e, gaps(s, e, skip), ordered=ordered, on_event=on_event, deadline=limit
        )

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
        ``[start, end]`` are dropped. The first and last window reach up to
        ``SKEW_TOLERANCE`` (a day) beyond the range, so that a server whose filter is off
        by that much still returns the labs at its two ends.

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
                # Handed over one by one, in order, and no longer held here: a record the
                # consumer lets go is freed then, so a window's records are not all freed
                # in one step (60 ms for 100,000 on this project's machines).
                records = batch.records[::-1]
                batch.records.clear()
                del batch
                i = 0
                while records:
                    yield records.pop()
                    i += 1
                    if i % SLICE == 0:
                        # A consumer's ``async for`` does not give the loop a turn by
                        # itself: without this, a 100,000-record window is one long step.
                        await asyncio.sleep(0)


def _check_int(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise LodInvalidArgument(f"{name} must be an int within {lo}..{hi}, got {value!r}")


def _check_positive(name: str, value: object, *, allow_zero: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and (value > 0 or (allow_zero and value == 0)) and value != float("inf"):  # type: ignore[operator]
        return
    raise LodInvalidArgument(f"{name} must be a positive number, got {value!r}")
