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
from typing import Generic, TypeVar

import attrs

from lodresults._exceptions import LodError, LodWindowError, LodWindowTooLongError
from lodresults._windows import Window, WindowPlanner

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
    fetch: Callable[[Window], Awaitable[list[T]]],
    on_split: Callable[[Window, int, int], None],
) -> list[T]:
    try:
        return await fetch(window)
    except LodWindowTooLongError:
        if window.span <= 1:
            raise
        limit = planner.shrink(window.span)
        parts = planner.split(window)
        on_split(window, len(parts), limit)
        items: list[T] = []
        for part in parts:
            items.extend(await _run_window(planner, part, fetch, on_split))
        return items


async def stream_windows(
    planner: WindowPlanner,
    fetch: Callable[[Window], Awaitable[list[T]]],
    *,
    concurrency: int,
    ordered: bool = True,
    lookahead: int | None = None,
    on_split: Callable[[Window, int, int], None] = lambda w, n, limit: None,
    on_failed: Callable[[Window, LodError], None] = lambda w, e: None,
) -> AsyncGenerator[Finished[T], None]:
    """
    Fetch every window of ``planner`` and yield each one's items once.

    Raises ``LodWindowError`` (naming the window, the cause chained) when a window fails;
    with ``ordered=True`` every earlier window has been yielded before.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    ahead = lookahead if lookahead is not None else 2 * concurrency
    tasks: dict[int, asyncio.Task[list[T]]] = {}
    windows: dict[int, Window] = {}
    next_index = 0
    exhausted = False
    # Windows yielded beyond the contiguous prefix (only ever more than one when unordered).
    yielded: dict[int, Window] = {}
    prefix = 0  # every index < prefix has been yielded
    try:
        while True:
            oldest = min(tasks) if tasks else next_index
            running = sum(1 for t in tasks.values() if not t.done())
            while not exhausted and running < concurrency and next_index - oldest < ahead:
                window = next(planner, None)
                if window is None:
                    exhausted = True
                    break
                tasks[next_index] = asyncio.ensure_future(
                    _run_window(planner, window, fetch, on_split)
                )
                windows[next_index] = window
                next_index += 1
                running += 1
            if not tasks:
                return
            if ordered:
                ready = [oldest] if tasks[oldest].done() else []
            else:
                ready = sorted(i for i, t in tasks.items() if t.done())
            if not ready:
                await asyncio.wait(
                    [t for t in tasks.values() if not t.done()],
                    return_when=asyncio.FIRST_COMPLETED,
                )
                continue
            index = ready[0]
            task = tasks.pop(index)
            window = windows.pop(index)
            error = task.exception()
            if error is not None:
                if isinstance(error, LodError):
                    on_failed(window, error)
                    raise LodWindowError(window.start, window.end, error) from error
                raise error
            # Advance the watermark: the end of the contiguous prefix of yielded windows.
            yielded[index] = window
            watermark: int | None = None
            while prefix in yielded:
                watermark = yielded.pop(prefix).end
                prefix += 1
            yield Finished(window, task.result(), watermark)
    finally:
        pending = list(tasks.values())
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.wait(pending)
            for t in pending:
                if not t.cancelled():
                    t.exception()  # mark retrieved: no "exception was never retrieved"
