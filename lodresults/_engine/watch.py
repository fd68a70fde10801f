"""
``watch``: keep a destination current from a moment on, for as long as a service runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

from lodresults._client import LodClient
from lodresults._clock import sleep_unless
from lodresults._destinations.base import Destination
from lodresults._engine.backfill import BackfillResult, backfill
from lodresults._events import EventHook
from lodresults._exceptions import (
    LodAuthError,
    LodError,
    LodInvalidArgument,
    LodRedirectError,
    LodWindowError,
    StoreError,
)
from lodresults._records.schema import MAX_EPOCH
from lodresults._windows.plan import TimeLike, to_epoch
from lodresults._windows.settle import DEFAULT_SETTLE, settle_seconds

__all__ = ["DEFAULT_RECONCILE", "is_fatal", "watch"]

#: How often ``watch`` fetches the unsettled tail with windowed Results by default.
DEFAULT_RECONCILE: Final = 3600

#: Failures that another poll cannot fix: watch stops on these.
_FATAL: Final = (LodAuthError, LodRedirectError, LodInvalidArgument, StoreError)


def is_fatal(exc: BaseException) -> bool:
    """A failure another poll cannot fix (also inside a ``LodWindowError``)."""
    while isinstance(exc, LodWindowError):
        exc = exc.error
    return isinstance(exc, _FATAL)


async def watch(
    client: LodClient,
    destination: Destination,
    since: TimeLike,
    *,
    interval: float = 60.0,
    settle: float = DEFAULT_SETTLE,
    reconcile: float = DEFAULT_RECONCILE,
    stop: asyncio.Event | None = None,
    on_run: Callable[[BackfillResult | LodError], None] | None = None,
    on_event: EventHook | None = None,
) -> None:
    """
    Keep ``destination`` equal to the server for every lab that starts or ends from
    ``since`` on, until ``stop`` is set (or the task awaiting it is cancelled).

    Every ``interval`` seconds one run of the engine (``backfill`` over ``[since, ...)``)
    reads the change feed: one ``LatestResults`` request while labs are stored as running.
    Every ``reconcile`` seconds (and on the first run, and whenever the last successful
    run lies beyond the feed's 7 days) the run also fetches the windows that have not
    settled and refreshes the labs whose grade may still land. Since the destination
    keeps the time of the last successful run, a restarted watch catches up.

    ``on_run`` is called after each run with its ``BackfillResult``, or with the
    ``LodError`` of a run that failed transiently (retried at the next interval). Auth,
    redirect, bad-argument and store failures are raised: another poll cannot fix them.
    ``stop`` ends the watch between runs (a run in progress finishes first, so nothing
    half-done is left); cancelling the task ends it at once (a window's transaction is
    never left half-written).

    .. versionadded:: 0.2.0
    """
    start = to_epoch(since, "since")
    settle_s = settle_seconds(settle)
    stop = stop if stop is not None else asyncio.Event()
    clock = client.clock
    reconciled: float | None = None
    while not stop.is_set():
        began = clock.now()
        full = reconciled is None or began - reconciled >= reconcile
        outcome: BackfillResult | LodError
        try:
            outcome = await backfill(
                client,
                destination,
                start,
                MAX_EPOCH,
                settle=settle_s,
                feed_only=not full,
                on_event=on_event,
            )
        except LodError as exc:
            if is_fatal(exc):
                raise
            outcome = exc
        else:
            if full or outcome.windows:
                reconciled = began
        if on_run is not None:
            on_run(outcome)
        if await sleep_unless(clock, interval, stop):
            return
