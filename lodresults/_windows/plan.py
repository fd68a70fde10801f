"""
Pure window planning: normalise a time range and split it into windows the server accepts.

No asyncio, no I/O, no clock. All times are integer Unix epoch seconds (UTC).

The ``Results`` command matches labs that *started or ended* in ``[start, end]``, both
bounds inclusive. Consecutive windows share their boundary second (``[a, b]``, ``[b, c]``):
the server may keep sub-second times, so a lab at ``b + 0.4`` s would fall between
``[a, b]`` and ``[b + 1, c]``. The shared seconds cost a few duplicate records, which the
stream's dedup removes.

A server's filter may be off by some seconds either way: ``widen`` makes the first and
last window of each range reach that far beyond it, so a lab near either end is still
asked for by a window the skewed filter returns it for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime, timedelta, timezone
from typing import Final

import attrs

from lodresults._exceptions import LodInvalidArgument
from lodresults._records.schema import MAX_EPOCH

__all__ = [
    "ISO_FORMAT",
    "MAX_WINDOW_SECONDS",
    "TimeLike",
    "Window",
    "WindowPlanner",
    "count_windows",
    "gaps",
    "iso",
    "iso_datetime",
    "narrower_limit",
    "plan_windows",
    "to_epoch",
    "union",
    "validate_range",
    "widen",
]

#: The documented limit of one ``Results`` request: 7 days.
MAX_WINDOW_SECONDS: Final = 7 * 24 * 3600

TimeLike = datetime | date | int

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
_SECOND: Final = timedelta(seconds=1)


#: How lodresults spells an instant: ISO-8601 UTC to the second.
ISO_FORMAT: Final = "%Y-%m-%dT%H:%M:%SZ"


def iso(epoch: int) -> str:
    """``epoch`` seconds as ISO-8601 UTC (``2024-01-01T00:00:00Z``)."""
    return iso_datetime(datetime.fromtimestamp(epoch, timezone.utc))


def iso_datetime(when: datetime) -> str:
    """
    An aware ``datetime`` as ISO-8601 UTC to the second, four-digit year always
    (``strftime("%Y")`` writes year 1 as ``1`` on glibc: ``1-01-01T00:00:00Z``).
    """
    utc = when.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0)
    return utc.isoformat() + "Z"


def to_epoch(value: object, name: str = "time") -> int:
    """
    Normalise an aware ``datetime``, a ``date`` (midnight UTC) or ``int`` epoch seconds.

    Raises ``LodInvalidArgument`` (a ``ValueError``) for naive datetimes, other types and
    times before 1970 or after 9999.
    """
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise LodInvalidArgument(
                f"{name} is a naive datetime ({value.isoformat()}); pass an aware one, "
                f"e.g. datetime(..., tzinfo=timezone.utc)"
            )
        # Exact integer arithmetic: value.timestamp() is a float, which rounds
        # 23:59:59.999997 up to the next second for dates far from 1970.
        epoch = (value - _EPOCH) // _SECOND
    elif isinstance(value, date):
        epoch = int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp())
    elif isinstance(value, int) and not isinstance(value, bool):
        epoch = value
    else:
        raise LodInvalidArgument(
            f"{name} must be an aware datetime, a date or int epoch seconds, "
            f"not {type(value).__name__}"
        )
    if not 0 <= epoch <= MAX_EPOCH:
        raise LodInvalidArgument(
            f"{name} ({epoch}) is outside 1970-01-01..9999-12-31; pass epoch seconds in "
            f"0..{MAX_EPOCH}"
        )
    return epoch


def validate_range(start: object, end: object) -> tuple[int, int]:
    """Normalise both bounds and require ``start <= end``."""
    s = to_epoch(start, "start")
    e = to_epoch(end, "end")
    if e < s:
        raise LodInvalidArgument(f"end ({iso(e)}) is before start ({iso(s)}); swap them")
    return s, e


@attrs.frozen(slots=True, order=True)
class Window:
    """
    A time window ``[start, end]`` in epoch seconds, both bounds inclusive.

    .. versionadded:: 0.1.0
    """

    start: int
    end: int

    @property
    def span(self) -> int:
        """Length in seconds (``end - start``)."""
        return self.end - self.start

    @property
    def start_iso(self) -> str:
        """``start`` as ISO-8601 UTC."""
        return iso(self.start)

    @property
    def end_iso(self) -> str:
        """``end`` as ISO-8601 UTC."""
        return iso(self.end)

    def __str__(self) -> str:
        return f"{self.start_iso}..{self.end_iso}"

    def clip(self, start: int, end: int) -> Window:
        """
        The part of this window inside ``[start, end]``; if they do not meet, the point
        ``[x, x]`` at the bound nearer to this window.
        """
        lo = min(max(self.start, start), end)
        return Window(lo, max(min(self.end, end), lo))


def plan_windows(start: int, end: int, max_span: int = MAX_WINDOW_SECONDS) -> Iterator[Window]:
    """
    Split ``[start, end]`` into consecutive windows of at most ``max_span`` seconds.

    Lazy, so a range of any length costs no memory. Consecutive windows share their
    boundary second; the first starts at ``start`` and the last ends at ``end``. An empty
    range (``start == end``) is one window.
    """
    if max_span < 1:
        raise ValueError("max_span must be at least 1 second")
    if end < start:
        raise ValueError("end is before start")
    s = start
    while True:
        e = min(s + max_span, end)
        yield Window(s, e)
        if e >= end:
            return
        s = e


def count_windows(start: int, end: int, max_span: int = MAX_WINDOW_SECONDS) -> int:
    """How many windows ``plan_windows`` yields for the same arguments."""
    return max(1, -(-(end - start) // max_span))


def narrower_limit(refused_span: int) -> int:
    """
    The window limit to use after the server refused a window of ``refused_span`` seconds.

    A refused window of 7 days or more means the server reads "cannot exceed 7 days" as
    strictly less: one second less is enough. A shorter refused window means the server's
    limit is lower than documented, so halve.
    """
    if refused_span >= MAX_WINDOW_SECONDS:
        return MAX_WINDOW_SECONDS - 1
    return max(1, refused_span // 2)


def union(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """``intervals`` in order, those that overlap or share a second joined into one."""
    joined: list[list[int]] = []
    for a, b in sorted(intervals):
        if joined and a <= joined[-1][1]:
            joined[-1][1] = max(joined[-1][1], b)
        else:
            joined.append([a, b])
    return [(a, b) for a, b in joined]


def gaps(start: int, end: int, done: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """
    The parts of ``[start, end]`` not covered by the ``done`` intervals, in order.

    Each gap keeps the bounding seconds of its neighbours (fetching a boundary second twice
    is harmless; missing it is not). A gap of zero length between two adjacent done
    intervals is dropped, since both of them cover that second.
    """
    clipped = ((max(a, start), min(b, end)) for a, b in done)
    merged = union(r for r in clipped if r[0] <= r[1])
    if not merged:
        return [(start, end)]
    out: list[tuple[int, int]] = []
    cursor = start
    for a, b in merged:
        if a > cursor:
            out.append((cursor, a))
        cursor = max(cursor, b)
    if cursor < end:
        out.append((cursor, end))
    return out


def widen(
    ranges: Iterable[tuple[int, int]], margin: int, *, latest: int = MAX_EPOCH
) -> list[tuple[int, int]]:
    """
    ``ranges`` each reaching ``margin`` seconds further on both sides, merged where they
    meet, in order: what to ask a server whose filter may be off by up to ``margin``.

    A range is never cut: its start goes no lower than 0 and its end no later than
    ``latest`` (nor ``MAX_EPOCH``), unless it already ends later. Ranges closer than
    ``2 * margin`` merge, so no two windows planned over the result overlap (by more
    than their shared boundary second).
    """
    if margin < 0:
        raise ValueError("margin must not be negative")
    far = min(latest, MAX_EPOCH)
    return union((max(0, a - margin), max(b, min(b + margin, far))) for a, b in ranges)


class WindowPlanner:
    """
    Plans windows over one or more ranges, lazily, with a limit that may shrink mid-way.

    ``shrink`` is called when the server refuses a window as too long: later windows are
    planned with the narrower limit, and ``split`` cuts the refused one.
    """

    def __init__(
        self, ranges: Sequence[tuple[int, int]], max_span: int = MAX_WINDOW_SECONDS
    ) -> None:
        self._ranges = list(ranges)
        self._index = 0
        self._cursor: int | None = None
        self.max_span = max_span

    def estimate_total(self) -> int:
        """Windows this plan will produce if the limit does not shrink."""
        return sum(count_windows(a, b, self.max_span) for a, b in self._ranges)

    def __iter__(self) -> Iterator[Window]:
        return self

    def __next__(self) -> Window:
        while self._index < len(self._ranges):
            a, b = self._ranges[self._index]
            s = a if self._cursor is None else self._cursor
            e = min(s + self.max_span, b)
            if e >= b:
                self._index += 1
                self._cursor = None
            else:
                self._cursor = e
            return Window(s, e)
        raise StopIteration

    def shrink(self, refused_span: int, *, too_large: bool = False) -> int:
        """
        Narrow the limit after a refusal of ``refused_span``; returns the new limit.
        ``too_large``: the answer was over ``max_response_bytes``: halve.
        """
        narrower = max(1, refused_span // 2) if too_large else narrower_limit(refused_span)
        self.max_span = min(self.max_span, narrower)
        return self.max_span

    def split(self, window: Window) -> list[Window]:
        """Cut ``window`` into windows within the current limit."""
        return list(plan_windows(window.start, window.end, self.max_span))
