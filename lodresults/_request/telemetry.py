"""
OpenTelemetry, as a library does it: spans and metrics through the global OpenTelemetry
API, when ``opentelemetry-api`` is installed (the ``otel`` extra), and nothing else.

The API is imported on first use, only if installed; nothing is configured here (the
application sets its tracer and meter providers, or none). Without a provider every span
is a non-recording one and costs about a microsecond per request; a span that does not
record ends at once and nothing more is set on it, nor is anything started below it.

The span tree of one call::

    lodresults.iter_windows              (or lodresults.result / .results / .latest_results)
      lodresults.window                  one per window sent (a split window's parts too)
        GET                              one per attempt (HTTP client span, stable semconv)

Attributes follow the stable HTTP semantic conventions (``http.request.method``,
``server.address``, ``server.port``, ``url.full``, ``http.response.status_code``,
``error.type``, ``http.request.resend_count``); ours are prefixed ``lodresults.``. No
header is ever recorded, and while lodresults sends a request, HTTP auto-instrumentation
below it (opentelemetry-instrumentation-aiohttp-client, which records every request
header with ``OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST=".*"``, the
``api_key`` among them) is suppressed: the ``GET`` span here is that request's span.

This module is the one place that knows OpenTelemetry.
"""

from __future__ import annotations

import contextvars
import functools
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any, Final

from yarl import URL

from lodresults._exceptions import LodApiError, LodError, LodStatusError

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span

__all__ = [
    "CallTrace",
    "RequestTrace",
    "begin_request",
    "call_span",
    "count_records",
    "count_settled",
    "start_call",
    "window_span",
]

SCOPE: Final = "lodresults"
Attributes = Mapping[str, str | int | float | bool]


class _Otel:
    """The OpenTelemetry API and our instruments, made once on first use."""

    def __init__(self) -> None:
        from importlib.metadata import PackageNotFoundError, version

        from opentelemetry import context, metrics, trace

        try:
            ours = version("lodresults")
        except PackageNotFoundError:  # pragma: no cover - run from a source tree
            ours = "0"
        self.trace = trace
        self.context = context
        self.tracer = trace.get_tracer(SCOPE, ours)
        meter = metrics.get_meter(SCOPE, ours)
        self.requests = meter.create_counter(
            "lodresults.client.requests",
            unit="{request}",
            description="HTTP requests sent (every attempt), by command and status",
        )
        self.throttled = meter.create_counter(
            "lodresults.client.throttled",
            unit="{response}",
            description="429 answers received",
        )
        self.rate = meter.create_gauge(
            "lodresults.client.rate",
            unit="{request}/s",
            description="The adaptive rate limiter's pace after the last answer",
        )
        self.records = meter.create_counter(
            "lodresults.records",
            unit="{record}",
            description="Records received from the server, by command",
        )
        self.settled = meter.create_counter(
            "lodresults.windows.settled",
            unit="{window}",
            description="Windows checkpointed as settled",
        )
        # HTTP instrumentations check this key and stay silent under it. It is private in
        # opentelemetry-api (instrumentations import it too); a test fails if it moves.
        self.suppress_http = getattr(context, "_SUPPRESS_HTTP_INSTRUMENTATION_KEY", None)


@functools.cache
def _otel() -> _Otel | None:
    """The API if installed (imported now, once), else None."""
    try:
        return _Otel()
    except ImportError:
        return None


class _Stats:
    """What happened to the requests of one window (kept in a context variable)."""

    __slots__ = ("attempts", "throttled")

    def __init__(self) -> None:
        self.attempts = 0
        self.throttled = 0


#: The window whose requests are being sent in this task, if any.
_WINDOW: contextvars.ContextVar[_Stats | None] = contextvars.ContextVar(
    "lodresults_window", default=None
)


def _error_type(error: BaseException) -> str:
    # Semantic conventions: the status code for an HTTP error, else a low-cardinality name.
    if isinstance(error, LodStatusError):
        return str(error.status)
    return type(error).__name__


def _fail(span: Span, error: BaseException) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("error.type", _error_type(error))
    # Our errors are key-free (the transport scrubs them); anything else is named only.
    text = str(error)[:300] if isinstance(error, LodError) else type(error).__name__
    span.set_status(Status(StatusCode.ERROR, text))


# --- one call ---------------------------------------------------------------------------


@contextmanager
def call_span(name: str, attributes: Attributes) -> Iterator[None]:
    """A span ``lodresults.<name>`` around one command call (a coroutine), made current."""
    otel = _otel()
    if otel is None:
        yield
        return
    span = otel.tracer.start_span(f"{SCOPE}.{name}", attributes=attributes)
    if not span.is_recording():
        span.end()
        yield
        return
    with otel.trace.use_span(span, end_on_exit=True, record_exception=False):
        try:
            yield
        except BaseException as error:
            _fail(span, error)
            raise


class CallTrace:
    """
    The span of an iteration (an async generator): never made current (a generator's
    context is its consumer's), its windows' spans started below it explicitly.
    """

    def __init__(self, otel: _Otel | None, span: Span | None) -> None:
        self._otel = otel
        self._span = span
        self.context: Context | None = (
            otel.trace.set_span_in_context(span) if otel is not None and span is not None else None
        )
        self._totals = [0, 0, 0, 0]

    def window_done(self, start: int, end: int, records: int, new: int, updates: int) -> None:
        """A window was deduplicated: an event on the call span, and running totals."""
        if self._span is None:
            return
        dropped = records - new - updates
        for i, n in enumerate((records, new, updates, dropped)):
            self._totals[i] += n
        self._span.add_event(
            "lodresults.window.done",
            {
                "lodresults.window.start": start,
                "lodresults.window.end": end,
                "lodresults.window.records": records,
                "lodresults.window.new_records": new,
                "lodresults.window.updates": updates,
                "lodresults.window.duplicates_dropped": dropped,
            },
        )

    def split(self, start: int, end: int, parts: int, limit: int) -> None:
        """The server refused a window as too long; it was cut into ``parts``."""
        if self._span is None:
            return
        self._span.add_event(
            "lodresults.window.split",
            {
                "lodresults.window.start": start,
                "lodresults.window.end": end,
                "lodresults.window.parts": parts,
                "lodresults.window.limit": limit,
            },
        )

    def end(self, error: BaseException | None = None) -> None:
        """End the span (an error marks it failed); the totals become attributes."""
        if self._span is None:
            return
        span, self._span = self._span, None
        names = ("records", "new_records", "updates", "duplicates_dropped")
        for name, n in zip(names, self._totals, strict=True):
            span.set_attribute(f"lodresults.{name}", n)
        if error is not None:
            _fail(span, error)
        span.end()


def start_call(name: str, attributes: Attributes) -> CallTrace:
    """Start the span of an iteration (see ``CallTrace``), below the current span."""
    otel = _otel()
    if otel is None:
        return CallTrace(None, None)
    span = otel.tracer.start_span(f"{SCOPE}.{name}", attributes=attributes)
    if not span.is_recording():
        span.end()
        return CallTrace(otel, None)
    return CallTrace(otel, span)


@contextmanager
def window_span(call: CallTrace, start: int, end: int) -> Iterator[None]:
    """
    A span per window sent, below ``call``'s, made current for its requests: to be
    entered inside the window's own task (so that its context is that task's alone).
    """
    otel = call._otel
    if otel is None or call.context is None:
        yield
        return
    span = otel.tracer.start_span(
        f"{SCOPE}.window",
        context=call.context,
        attributes={"lodresults.window.start": start, "lodresults.window.end": end},
    )
    stats = _Stats()
    token = _WINDOW.set(stats)
    try:
        with otel.trace.use_span(span, end_on_exit=False, record_exception=False):
            yield
    except BaseException as error:
        _fail(span, error)
        raise
    finally:
        _WINDOW.reset(token)
        span.set_attribute("lodresults.window.attempts", stats.attempts)
        span.set_attribute("lodresults.window.throttled", stats.throttled)
        span.end()


# --- one request --------------------------------------------------------------------------


class RequestTrace:
    """The HTTP client span of one attempt (its calls are no-ops when nothing records)."""

    __slots__ = ("_command", "_otel", "_span")

    def __init__(self, otel: _Otel | None, span: Span | None, command: str) -> None:
        self._otel = otel
        self._span = span
        self._command = command

    def finish(self, error: BaseException | None, rate: float | None, status: int = 200) -> None:
        """
        End the attempt: answered with ``status`` (or failed with ``error``, whose status
        is its own); ``rate`` is the limiter's pace after it. Call once.
        """
        otel = self._otel
        if otel is None:
            return
        if isinstance(error, LodStatusError):
            status = error.status
        elif error is not None and not isinstance(error, LodApiError):
            status = 0  # no HTTP answer (``Status: 0`` comes in a 200 answer)
        if status:
            otel.requests.add(
                1, {"lodresults.command": self._command, "http.response.status_code": status}
            )
        if status == 429:
            otel.throttled.add(1, {"lodresults.command": self._command})
            stats = _WINDOW.get()
            if stats is not None:
                stats.throttled += 1
        if rate is not None:
            otel.rate.set(rate)
        span, self._span = self._span, None
        if span is None:
            return
        if status:
            span.set_attribute("http.response.status_code", status)
        if error is not None:
            _fail(span, error)
        span.end()

    def quiet(self) -> AbstractContextManager[None]:
        """Suppress HTTP auto-instrumentation below (see the module's docstring)."""
        otel = self._otel
        if otel is None or otel.suppress_http is None:
            return _NOTHING
        return _suppressed(otel)


_NOTHING: Final = nullcontext()


@contextmanager
def _suppressed(otel: _Otel) -> Iterator[None]:
    token = otel.context.attach(otel.context.set_value(otel.suppress_http, True))
    try:
        yield
    finally:
        otel.context.detach(token)


def begin_request(base: URL, command: str, params: Mapping[str, str], attempt: int) -> RequestTrace:
    """
    Start the span of attempt number ``attempt`` of ``command`` (an HTTP GET below
    ``base``), below the current span. End it with ``finish``.
    """
    otel = _otel()
    if otel is None:
        return RequestTrace(None, None, command)
    stats = _WINDOW.get()
    if stats is not None:
        stats.attempts += 1
    span = otel.tracer.start_span("GET", kind=otel.trace.SpanKind.CLIENT)
    if not span.is_recording():
        span.end()
        return RequestTrace(otel, None, command)
    url = base.with_path(f"{base.path}/{command}").with_query(params)
    attributes: dict[str, Any] = {
        "http.request.method": "GET",
        "server.address": base.host or "",
        "server.port": base.port or 443,
        # The key travels in a header, never in the URL, and the base URL may carry no
        # credentials (``check_base_url``): the full URL is safe to record.
        "url.full": str(url.with_user(None)),
        "lodresults.command": command,
    }
    if attempt > 1:
        attributes["http.request.resend_count"] = attempt - 1
    span.set_attributes(attributes)
    return RequestTrace(otel, span, command)


# --- metrics without spans ----------------------------------------------------------------


def count_records(command: str, n: int) -> None:
    """``n`` records came from the server for ``command``."""
    otel = _otel()
    if otel is not None and n:
        otel.records.add(n, {"lodresults.command": command})


def count_settled(n: int = 1) -> None:
    """``n`` windows were checkpointed as settled."""
    otel = _otel()
    if otel is not None and n:
        otel.settled.add(n)
