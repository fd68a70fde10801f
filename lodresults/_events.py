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
    "UnknownField",
    "WebhookMisses",
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
class WebhookMisses:
    """
    A run that keeps a destination current (``watch``'s) compared what it found with
    what webhooks brought since the run before: ``brought`` changes came by webhook,
    ``missed`` ones only by a pull (see ``lodresults.webhooks.MissCounter``). ``rate`` is
    None when nothing changed.

    .. versionadded:: 0.2.0
    """

    brought: int
    missed: int

    @property
    def rate(self) -> float | None:
        """``missed / (brought + missed)``, or None when there was no change."""
        total = self.brought + self.missed
        return None if total == 0 else self.missed / total

    def __str__(self) -> str:
        total = self.brought + self.missed
        rate = "n/a" if self.rate is None else f"{self.rate:.1%}"
        return f"webhooks brought {self.brought:,} of {total:,} changes (miss rate {rate})"


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


@attrs.frozen
class UnknownField:
    """
    The API sent a record field this lodresults does not declare (``name``, as sent but
    for any piece of the api_key, which is masked, in an answer to ``command``). Reported
    once per client and name; the field is ignored and the records are decoded as usual
    (the API adds fields, it does not remove any).
    """

    command: str
    name: str


Event = (
    WindowsPlanned
    | WindowCompleted
    | WindowSplit
    | WindowFailed
    | RequestRetried
    | Throttled
    | WebhookMisses
    | PhaseProgress
    | PhaseCompleted
    | UnknownField
)
EventHook = Callable[[Event], None]
