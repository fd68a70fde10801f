"""
Events a client reports while it works, for progress bars, metrics and logs.

Subscribe with ``LodClient(on_event=...)`` or per call with ``iter_results(on_event=...)``.
A hook is a plain callable; it runs in the event loop, so it must be quick and must not
block. An exception raised by a hook is logged and otherwise ignored.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lodresults._windows.plan import Window

__all__ = [
    "Event",
    "EventHook",
    "PhaseCompleted",
    "PhaseProgress",
    "RequestRetried",
    "Throttled",
    "WindowCompleted",
    "WindowFailed",
    "WindowSplit",
    "WindowsPlanned",
]


@attrs.frozen
class WindowsPlanned:
    """
    An iteration over ``[start, end]`` planned ``total`` windows, one request each (an
    estimate if the server later splits): the first and last window of each range reach
    up to ``SKEW_TOLERANCE`` beyond it (see ``WindowBatch.requested``).
    """

    total: int
    start: int
    end: int


@attrs.frozen
class WindowCompleted:
    """
    A window was fetched (``window`` as requested, see ``WindowBatch.requested``);
    ``records`` came back, ``new_records`` survived dedup (labs of the range not yielded
    before) and ``updates`` are changed copies of labs met in an earlier window.
    """

    window: Window
    records: int
    new_records: int
    updates: int = 0


@attrs.frozen
class WindowSplit:
    """The server refused ``window`` as too long; it was cut into ``parts`` windows."""

    window: Window
    parts: int
    new_limit: int


@attrs.frozen
class WindowFailed:
    """A window failed for good after retries; the iteration raises next."""

    window: Window
    error: str


@attrs.frozen
class RequestRetried:
    """A request failed transiently and is retried after ``delay`` seconds."""

    command: str
    attempt: int
    delay: float
    error: str


@attrs.frozen
class Throttled:
    """The server answered 429; ``rate`` is the client's new pace (None = unpaced)."""

    command: str
    retry_after: float | None
    rate: float | None


@attrs.frozen
class PhaseProgress:
    """
    A phase of a run that keeps a destination current (``"feed"`` or ``"refresh"``)
    has ``done`` of ``total`` requests answered.
    """

    phase: str
    done: int
    total: int


@attrs.frozen
class PhaseCompleted:
    """
    A phase of a run (``"windows"``, ``"feed"``, ``"refresh"``) ended after ``requests``
    requests: of the copies it applied, ``new`` labs were not stored before, ``changed``
    replaced another state and ``unchanged`` equalled (or were older than) the stored one.
    """

    phase: str
    requests: int
    new: int
    changed: int
    unchanged: int


Event = (
    WindowsPlanned
    | WindowCompleted
    | WindowSplit
    | WindowFailed
    | RequestRetried
    | Throttled
    | PhaseProgress
    | PhaseCompleted
)
EventHook = Callable[[Event], None]
