"""
The one exception tree of lodresults.

::

    LodError
    ├── LodInvalidArgument (also ValueError)   bad input; raised before anything is sent
    ├── LodClientClosed                        the client was used after close()
    ├── LodDeadlineError (also TimeoutError)   a call's deadline passed (has .unfinished)
    ├── LodTransportError                      no usable HTTP answer
    │   ├── LodConnectionError                 connect failed, reset, truncated body
    │   ├── LodTimeoutError                    no complete answer within the timeout
    │   └── LodResponseTooLarge                body above the configured cap
    ├── LodStatusError                         an HTTP status we do not accept (has .status)
    │   ├── LodAuthError                       401 / 403: the api_key was refused
    │   ├── LodRateLimitError                  429 past the pacing bound (has .retry_after)
    │   ├── LodServerError                     5xx after all retries
    │   └── LodRedirectError                   3xx: never followed (the key must not travel)
    ├── LodApiError                            HTTP 200 with ``Status: 0`` (has .error_text)
    │   └── LodWindowTooLongError              the server refused the range as over 7 days
    ├── LodDecodeError                         the body is not what the API documents
    │   ├── LodJSONError                       not JSON at all (retried: usually a cut body)
    │   └── LodSchemaError                     JSON, but a field does not fit (has .field)
    ├── LodWindowError                         iter_results gave up on one window (has .window);
    │                                          also an instance of its cause's class
    └── StoreError                             the SQLite file cannot be used (SQLiteStore)

Every error stores plain fields only (no aiohttp objects, no headers), so ``str`` and
``repr`` can never show the ``api_key``. aiohttp exceptions are translated in one place
(``_transport``) and never chained, because their ``repr`` carries request headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from lodresults._text import printable

if TYPE_CHECKING:
    from lodresults._windows.plan import Window

__all__ = [
    "LodApiError",
    "LodAuthError",
    "LodClientClosed",
    "LodConnectionError",
    "LodDeadlineError",
    "LodDecodeError",
    "LodError",
    "LodInvalidArgument",
    "LodJSONError",
    "LodRateLimitError",
    "LodRedirectError",
    "LodResponseTooLarge",
    "LodSchemaError",
    "LodServerError",
    "LodStatusError",
    "LodTimeoutError",
    "LodTransportError",
    "LodWindowError",
    "LodWindowTooLongError",
    "StoreError",
]

#: The most characters of what the server sent (a body, a record) an error message quotes.
EXCERPT_CHARS: Final = 200


class LodError(Exception):
    """
    Base class of every error lodresults raises.

    ``str()`` escapes control characters (``_text.printable``): messages quote what a
    server sent, and are printed to terminals and written to logs.
    """

    def __str__(self) -> str:
        return printable(super().__str__())

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only fields live in __dict__; rebuild without calling __init__ so that
        # errors cross process boundaries (multiprocessing, pickled task results).
        return (_rebuild, (type(self), self.args, dict(vars(self))))


def _rebuild(cls: type[LodError], args: tuple[Any, ...], state: dict[str, Any]) -> LodError:
    error = Exception.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class LodInvalidArgument(LodError, ValueError):
    """
    An argument is invalid; raised before any request is sent.
    """


class LodClientClosed(LodError, RuntimeError):
    """
    The client was used after ``close()``.
    """


class LodDeadlineError(LodError, TimeoutError):
    """
    A call's ``deadline`` (seconds, retries and waits included) passed before it
    finished; what was in flight was cancelled. Not retried.

    ``unfinished``: the ``(start, end)`` epoch ranges not fetched, within the range asked
    for (for ``iter_results`` and ``iter_windows``; empty for a single request).
    """

    def __init__(
        self, message: str, *, deadline: float, unfinished: tuple[tuple[int, int], ...] = ()
    ) -> None:
        super().__init__(message)
        self.deadline = deadline
        self.unfinished = unfinished


# --- transport -------------------------------------------------------------------------


class LodTransportError(LodError):
    """
    No usable HTTP answer was received for ``command``.
    """

    def __init__(self, message: str, *, command: str | None = None) -> None:
        super().__init__(message)
        self.command = command


class LodConnectionError(LodTransportError):
    """
    The connection failed, was reset, or the body ended early (retried, but for TLS).
    """

    def __init__(self, message: str, *, command: str | None = None, retryable: bool = True) -> None:
        super().__init__(message, command=command)
        self.retryable = retryable


class LodTimeoutError(LodTransportError):
    """
    No complete answer arrived within the timeout (retried).
    """


class LodResponseTooLarge(LodTransportError):
    """
    The body exceeded ``max_response_bytes``; it was not read further (not retried).
    """


# --- HTTP status -----------------------------------------------------------------------


class LodStatusError(LodError):
    """
    The server answered with an HTTP status that is not 200.
    """

    def __init__(self, message: str, *, status: int, command: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.command = command


class LodAuthError(LodStatusError):
    """
    HTTP 401 or 403: the ``api_key`` was refused (not retried).
    """


class LodRateLimitError(LodStatusError):
    """
    HTTP 429: still rate limited once the call's deadline (or 10 minutes of waiting out
    ``Retry-After``) passed, or, without ``Retry-After``, after all retries.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 429,
        command: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, status=status, command=command)
        self.retry_after = retry_after


class LodServerError(LodStatusError):
    """
    HTTP 5xx (or 408): the server failed after all retries.
    """


class LodRedirectError(LodStatusError):
    """
    HTTP 3xx: redirects are never followed, so the key cannot travel to another origin.
    """


# --- API-level -------------------------------------------------------------------------


class LodApiError(LodError):
    """
    HTTP 200 with ``Status: 0``; ``error_text`` is the server's ``Error`` field.
    """

    def __init__(self, message: str, *, error_text: str, command: str | None = None) -> None:
        super().__init__(message)
        self.error_text = error_text
        self.command = command


class LodWindowTooLongError(LodApiError):
    """
    The server refused a ``Results`` range as longer than it allows (7 days).
    """


# --- decoding --------------------------------------------------------------------------


class LodDecodeError(LodError):
    """
    The body does not match the documented format.
    """

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        excerpt: str | None = None,
        command: str | None = None,
    ) -> None:
        super().__init__(message)
        self.field = field
        self.excerpt = excerpt
        self.command = command


class LodJSONError(LodDecodeError):
    """
    The body is not valid JSON (retried: usually a body cut short on the way).
    """


class LodSchemaError(LodDecodeError):
    """
    The JSON does not fit the schema; ``field`` names the offending field.
    """


# --- windows ---------------------------------------------------------------------------


class LodWindowError(LodError):
    """
    ``iter_results`` gave up on ``window`` (its ``start``/``end`` in epoch seconds, both
    inclusive, are also attributes of the error).

    The error that made it give up is ``__cause__`` and ``error``. The raised object is
    also an instance of the cause's class, with the cause's fields (``status``,
    ``retry_after``, ``field``...): ``except LodAuthError`` catches a window that failed
    on authentication as it catches ``results()`` failing on it, and ``except
    LodWindowError`` still catches every window failure.
    """

    window: Window
    error: LodError

    def __new__(cls, window: Window, error: LodError) -> LodWindowError:
        if cls is LodWindowError:
            cls = _window_class(type(error))
        instance: LodWindowError = Exception.__new__(cls)
        return instance

    def __init__(self, window: Window, error: LodError) -> None:
        # Not super().__init__: the next class in the MRO is the cause's, whose
        # constructor wants its own fields; those are copied from the cause instead.
        Exception.__init__(
            self,
            f"window {window} (epoch {window.start}..{window.end}) failed: "
            f"{type(error).__name__}: {error}",
        )
        vars(self).update(vars(error))
        self.window = window
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        # The derived class is made at run time: pickle the cause's (importable) class.
        cause = _WINDOW_CAUSES.get(type(self))
        if cause is None:
            return super().__reduce__()
        return (_rebuild_window, (cause, self.args, dict(vars(self))))

    @property
    def start(self) -> int:
        """The window's first second (epoch)."""
        return self.window.start

    @property
    def end(self) -> int:
        """The window's last second (epoch)."""
        return self.window.end

    @property
    def start_iso(self) -> str:
        """The window's first second as ISO-8601 UTC."""
        return self.window.start_iso

    @property
    def end_iso(self) -> str:
        """The window's last second as ISO-8601 UTC."""
        return self.window.end_iso


# --- storage ---------------------------------------------------------------------------


class StoreError(LodError):
    """
    The SQLite file cannot be used (corrupt, locked, not a database, wrong schema).
    """


_WINDOW_CLASSES: dict[type[LodError], type[LodWindowError]] = {}
_WINDOW_CAUSES: dict[type[LodWindowError], type[LodError]] = {}


def _window_class(cause: type[LodError]) -> type[LodWindowError]:
    """
    The class of a window error caused by ``cause``: both ``LodWindowError`` and
    ``cause``, made once per cause class (so ``type(a) is type(b)`` for equal causes).
    """
    if issubclass(cause, LodWindowError):
        return cause
    cls = _WINDOW_CLASSES.get(cause)
    if cls is None:
        # Same name as the base: messages and tracebacks read "LodWindowError: window ...".
        namespace = {"__module__": __name__, "__qualname__": "LodWindowError"}
        cls = type("LodWindowError", (LodWindowError, cause), namespace)
        cls.__doc__ = LodWindowError.__doc__
        cls = _WINDOW_CLASSES.setdefault(cause, cls)
        _WINDOW_CAUSES[cls] = cause
    return cls


def _rebuild_window(
    cause: type[LodError], args: tuple[Any, ...], state: dict[str, Any]
) -> LodError:
    return _rebuild(_window_class(cause), args, state)
