"""
A range as a stream of ``WindowBatch``es: planned into windows, fetched through the
stream (fan-out, order, splits, fail-fast, deadline), deduplicated across windows. A
client wires it once, as a ``FanOut``.

Knows no HTTP: a window is fetched by the function it is given.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable, Generator
from contextlib import aclosing
from typing import TypeVar

import attrs

from lodresults._clock import ServerClock
from lodresults._events import (
    Event,
    EventHook,
    WindowCompleted,
    WindowFailed,
    WindowsPlanned,
    WindowSplit,
)
from lodresults._exceptions import LodError
from lodresults._records.models import LabResult
from lodresults._request.telemetry import count_records, start_call, window_span
from lodresults._windows.dedup import SKEW_TOLERANCE, Deduplicator
from lodresults._windows.plan import Window, WindowPlanner, widen
from lodresults._windows.slots import Lease
from lodresults._windows.stream import stream_windows

__all__ = ["FanOut", "WindowBatch"]

T = TypeVar("T")

logger = logging.getLogger("lodresults")


@attrs.frozen
class WindowBatch:
    """
    One window's answer, sorted, as ``iter_windows`` yields it.

    ``window``: the window asked for, cut to the call's ``[start, end]``: the stretch to
    checkpoint once the batch is stored. ``requested``: the window as sent to the server.
    They differ only for the first and last window of the range (or of a gap between
    ``skip`` intervals), which reach up to ``SKEW_TOLERANCE`` beyond it, so that a server
    whose filter is off by that much loses no lab at the ends; a request wholly beyond
    ``[start, end]`` (only when the server's limit is below the tolerance) has the point
    ``[x, x]`` at the nearer bound as its ``window``.

    ``records``: labs not yielded before in this iteration, each once, in the server's
    order (within the window, an ended copy beats a running one, otherwise the later copy
    wins); only labs that started or ended in ``[start, end]``. ``updates``: changed
    copies of labs yielded in an earlier batch of this iteration, from a response
    received after the copy yielded; apply them after ``records`` (the newest state
    wins). ``fetched_at``: epoch seconds at or before the moment the window's request was
    sent (for a split window, its earliest part): the answer shows every lab as it was at
    that moment or later.

    .. versionadded:: 0.1.0
    """

    window: Window
    records: list[LabResult]
    updates: list[LabResult] = attrs.field(factory=list)
    fetched_at: float = 0.0
    requested: Window = attrs.field(
        default=attrs.Factory(lambda self: self.window, takes_self=True)
    )


#: One request's share of a window: (receive sequence, sent at, records).
_Part = tuple[int, float, list[LabResult]]

#: Fetches one window: its records, reporting to the hook, holding the stream's lease.
FetchWindow = Callable[[Window, EventHook | None, Lease], Awaitable[list[LabResult]]]


@attrs.frozen
class FanOut:
    """
    How a client fetches windows, fixed for its life: ``fetch`` sends one window's
    request (through the client's caller, which holds the stream's slot lease while the
    request is out), ``concurrency`` windows at a time, stamped and paced by ``clock``
    (the server's present, monotonic time, sleep), reporting through ``emit``.
    ``batches`` streams a range.
    """

    fetch: FetchWindow
    concurrency: int
    clock: ServerClock
    emit: Callable[[Event, EventHook | None], None]

    def batches(
        self,
        start: int,
        end: int,
        ranges: list[tuple[int, int]],
        *,
        ordered: bool = True,
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> AsyncGenerator[WindowBatch, None]:
        """
        The windows of ``ranges`` (the gaps of ``[start, end]`` still to fetch), fetched
        ``concurrency`` at a time, deduplicated, as ``WindowBatch``es.

        Each range is asked for ``SKEW_TOLERANCE`` beyond both its ends (not before 0, and
        not later than a server skewed by as much could read as the present): a lab near
        an end that a skewed filter returns only for a window on the far side of it is
        still fetched, and the dedup drops what lies outside the range.
        """
        return _batches(self, start, end, ranges, ordered, on_event, deadline)


async def _batches(
    fan: FanOut,
    start: int,
    end: int,
    ranges: list[tuple[int, int]],
    ordered: bool,
    on_event: EventHook | None,
    deadline: float | None,
) -> AsyncGenerator[WindowBatch, None]:
    clock, emit = fan.clock, fan.emit
    latest = int(clock.time()) + SKEW_TOLERANCE
    planner = WindowPlanner(widen(ranges, SKEW_TOLERANCE, latest=latest))
    emit(WindowsPlanned(planner.estimate_total(), start, end), on_event)
    dedup = Deduplicator(start, end, ordered=ordered)
    received = itertools.count()
    trace = start_call(
        "iter_windows",
        {"lodresults.start": start, "lodresults.end": end, "lodresults.ordered": ordered},
    )

    async def fetch(window: Window, lease: Lease) -> list[_Part]:
        stamp = clock.stamp()
        # Inside the window's own task: the span is current for its requests alone.
        with window_span(trace, window.start, window.end):
            records = await fan.fetch(window, on_event, lease)
        sent_at = clock.sent_at(stamp)
        # The order responses complete in is the order their copies are newest in.
        return [(next(received), sent_at, records)]

    def split(window: Window, parts: int, limit: int) -> None:
        logger.debug(
            "Results %s refused as too long: split in %d (limit %d s)", window, parts, limit
        )
        emit(WindowSplit(window, parts, limit), on_event)
        trace.split(window.start, window.end, parts, limit)

    def failed(window: Window, error: LodError) -> None:
        emit(WindowFailed(window, f"{type(error).__name__}: {error}"), on_event)

    stream = stream_windows(
        planner,
        fetch,
        concurrency=fan.concurrency,
        ordered=ordered,
        on_split=split,
        on_failed=failed,
        deadline=deadline,
        timer=clock,
        bounds=(start, end),
    )
    failure: BaseException | None = None
    try:
        async with aclosing(stream):
            async for done in stream:
                window, watermark, parts = done.window, done.watermark, done.items
                del done
                steps = dedup.take_steps(window, [(seq, recs) for seq, _, recs in parts])
                fresh, updates = await _on_loop(steps)
                if watermark is not None:
                    await _on_loop(dedup.passed_steps(watermark))
                count = sum(len(recs) for _, _, recs in parts)
                emit(WindowCompleted(window, count, len(fresh), len(updates)), on_event)
                count_records("Results", count)
                trace.window_done(window.start, window.end, count, len(fresh), len(updates))
                logger.debug(
                    "window %s: %d records, %d new, %d updates, dedup holds %d ids",
                    window, count, len(fresh), len(updates), len(dedup),
                )  # fmt: skip
                fetched_at = min(sent for _, sent, _ in parts)
                # The batch alone holds the records across the yield (this frame lives
                # on): a consumer that lets each go as it is used frees them a few at a
                # time, not a window's worth in one step of the loop.
                del parts, steps
                batch = WindowBatch(
                    window.clip(start, end), fresh, updates, fetched_at, requested=window
                )
                del fresh, updates
                yield batch
                del batch
    except (Exception, asyncio.CancelledError) as error:
        failure = error
        raise
    finally:
        trace.end(failure)


async def _on_loop(steps: Generator[None, None, T]) -> T:
    """
    Run a dedup in steps with a turn for the loop's other tasks between them: a window
    of 100,000 records is otherwise one step of 100-200 ms.
    """
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]
        await asyncio.sleep(0)
