"""
The fan-out engine behind ``iter_results``: windows in, ``(window, items)`` out.

Runs up to ``concurrency`` window fetches at once, yields finished windows in
chronological order (or as they finish), and never runs more than ``lookahead`` windows
ahead of the oldest one not yet handed to the caller: that is the back-pressure that keeps
memory bounded whatever the range's length, and a slow consumer stops the fetching ahead.

It owns its tasks (no TaskGroup around a ``yield``: a consumer that stops early would
leave the generator suspended inside the group) and cancels and awaits every one of them
in ``finally``, whether the caller breaks out, calls ``aclose()``, is cancelled, or an
error is raised. Knows no aiohttp, no JSON, no dedup.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs

from lodresults._clock import Clock, ServerClock
from lodresults._exceptions import (
    LodDeadlineError,
    LodError,
    LodResponseTooLarge,
    LodWindowError,
    LodWindowTooLongError,
)
from lodresults._windows.plan import Window, WindowPlanner, union
from lodresults._windows.slots import Lease, Slots

__all__ = ["Finished", "stream_windows"]

T = TypeVar("T")


@attrs.frozen
class Finished(Generic[T]):
    """One window's items, and the watermark below which every window has been yielded."""

    window: Window
    items: list[T]
    watermark: int | None


async def _run_window(
    planner: WindowPlanner,
    window: Window,
    fetch: Callable[[Window, Lease], Awaitable[list[T]]],
    on_split: Callable[[Window, int, int], None],
    lease: Lease,
) -> list[T]:
    # A part of a split window waits for a slot; if another window was refused meanwhile
    # and the limit fell again, the part is planned anew rather than sent to be refused.
    await lease.acquire()
    if window.span > planner.max_span:
        items: list[T] = []
        for part in planner.split(window):
            items.extend(await _run_window(planner, part, fetch, on_split, lease))
        return items
    try:
        return await fetch(window, lease)
    except (LodWindowTooLongError, LodResponseTooLarge) as error:
        # A body over max_response_bytes is a window too long for this client: halved,
        # as the server's "Timeframe cannot exceed 7 days" narrows the limit.
        if window.span <= 1:
            raise
        limit = planner.shrink(window.span, too_large=isinstance(error, LodResponseTooLarge))
        parts = planner.split(window)
        on_split(window, len(parts), limit)
        items = []
        for part in parts:
            items.extend(await _run_window(planner, part, fetch, on_split, lease))
        return items


async def stream_windows(
    planner: WindowPlanner,
    fetch: Callable[[Window, Lease], Awaitable[list[T]]],
    *,
    concurrency: int,
    ordered: bool = True,
    lookahead: int | None = None,
    on_split: Callable[[Window, int, int], None] = lambda w, n, limit: None,
    on_failed: Callable[[Window, LodError], None] = lambda w, e: None,
    deadline: float | None = None,
    timer: Clock | None = None,
    bounds: tuple[int, int] | None = None,
) -> AsyncGenerator[Finished[T], None]:
    """
    Fetch every window of ``planner`` and yield each one's items once.

    ``fetch(window, lease)`` gets the window's ``Lease`` on one of ``concurrency`` slots:
    it releases the lease once its answer is read and acquires it again before sending
    anything more (``_slots``), so the next window starts while this one decodes.

    Raises ``LodWindowError`` (naming the window, the cause chained) when a window fails;
    with ``ordered=True`` every earlier window has been yielded before, and the windows
    after the failed one are cancelled as soon as it fails. ``deadline``: seconds on
    ``timer`` for the whole iteration; past it, everything in flight is cancelled and
    ``LodDeadlineError`` names the windows left (cut to ``bounds``, the range asked for,
    when the planned windows reach beyond it).
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    ahead = lookahead if lookahead is not None else 2 * concurrency
    tasks: dict[int, asyncio.Task[list[T]]] = {}
    windows: dict[int, Window] = {}
    finished: set[int] = set()  # done, not yet yielded
    newly: list[int] = []  # done since the loop last looked (filled by callbacks)
    wake = asyncio.Event()
    next_index = 0
    exhausted = False
    failed: int | None = None  # the lowest window that failed for good
    # Windows yielded beyond the contiguous prefix (only ever more than one when unordered).
    yielded: dict[int, Window] = {}
    prefix = 0  # every index < prefix has been yielded

    def fill() -> None:
        # Start windows while a slot is free and the newest stays within `ahead` of the
        # oldest not yielded. Called by the loop and whenever a slot comes free (an
        # answer read, a window ended), so it is refilled at once, not when the consumer
        # next asks.
        nonlocal next_index, exhausted
        if exhausted:
            return
        oldest = min(tasks) if tasks else next_index
        while slots.can_start() and next_index - oldest < ahead:
            window = next(planner, None)
            if window is None:
                exhausted = True
                return
            lease = slots.lease()
            task = asyncio.ensure_future(_run_window(planner, window, fetch, split, lease))
            task.add_done_callback(on_done(next_index, lease))
            tasks[next_index] = task
            windows[next_index] = window
            next_index += 1

    def on_done(index: int, lease: Lease) -> Callable[[asyncio.Task[list[T]]], None]:
        def done(task: asyncio.Task[list[T]]) -> None:
            nonlocal exhausted
            newly.append(index)
            wake.set()
            if task.cancelled() or task.exception() is not None:
                exhausted = True  # nothing new starts after a failure (the loop decides)
            elif windows[index].span >= planner.max_span:
                slots.early = True  # a window of the current limit came back whole
            lease.end()

        return done

    def split(window: Window, parts: int, limit: int) -> None:
        # The limit is new: prove it again before releasing early. Every lease, those of
        # windows under way included, is held to its end meanwhile.
        slots.early = False
        on_split(window, parts, limit)

    # Until a window of the planner's current limit has been answered in full, windows
    # keep their slots to the end: an answer read may yet be a refusal of the window's
    # length (in a 200 body), and windows started meanwhile would be planned too long.
    slots = Slots(concurrency, fill, early=False)

    clock_task: asyncio.Task[None] | None = None
    if deadline is not None:
        clock_task = asyncio.ensure_future((timer or ServerClock()).sleep(deadline))
        clock_task.add_done_callback(lambda _: wake.set())
    try:
        while True:
            if clock_task is not None and clock_task.done():
                left = [windows[i] for i in sorted(tasks)] + list(planner)
                raise _deadline_error(deadline or 0.0, left, bounds)
            for index in newly:
                finished.add(index)
                if tasks[index].cancelled() or tasks[index].exception() is None:
                    continue
                if failed is None or index < failed:
                    # Nothing after a failed window will be yielded: stop fetching it.
                    failed = index
                    exhausted = True
                    if ordered:
                        for later, other in tasks.items():
                            if later > index:
                                other.cancel()
            newly.clear()
            fill()
            if not tasks:
                return
            if ordered:
                oldest = min(tasks)
                ready = oldest if oldest in finished else None
            else:
                ready = failed if failed is not None else min(finished, default=None)
            if ready is None:
                wake.clear()
                if not newly:
                    await wake.wait()
                continue
            finished.discard(ready)
            window = windows.pop(ready)
            error = tasks[ready].exception()
            if error is not None:
                tasks.pop(ready)
                if isinstance(error, LodError):
                    on_failed(window, error)
                    raise LodWindowError(window, error) from error
                raise error
            # Advance the watermark: the end of the contiguous prefix of yielded windows.
            yielded[ready] = window
            watermark: int | None = None
            while prefix in yielded:
                watermark = yielded.pop(prefix).end
                prefix += 1
            # No local of this frame (which lives on across the yield) keeps the items:
            # the consumer's reference is the last, so it decides when they are freed.
            yield Finished(window, tasks.pop(ready).result(), watermark)
    finally:
        exhausted = True  # no callback may start a window now
        pending: list[asyncio.Future[Any]] = list(tasks.values())
        if clock_task is not None:
            pending.append(clock_task)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
            for t in pending:
                if not t.cancelled():
                    t.exception()  # mark retrieved: no "exception was never retrieved"


def _deadline_error(
    deadline: float, left: list[Window], bounds: tuple[int, int] | None
) -> LodDeadlineError:
    """The error naming the windows a deadline left unfetched, as merged ranges."""
    cut = (w if bounds is None else w.clip(*bounds) for w in left)
    ranges = union((w.start, w.end) for w in cut)
    shown = ", ".join(str(Window(a, b)) for a, b in ranges[:3])
    more = f" and {len(ranges) - 3} more ranges" if len(ranges) > 3 else ""
    return LodDeadlineError(
        f"deadline of {deadline:g} s passed with {len(left)} windows unfinished: {shown}{more}",
        deadline=deadline,
        unfinished=tuple(ranges),
    )
