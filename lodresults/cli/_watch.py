"""
``lodresults watch``: keep a database equal to the server, polling LatestResults and
reconciling the unsettled tail with the backfill.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Final

from lodresults._client import MAX_LATEST_MINUTES, LodClient
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import backfill
from lodresults._exceptions import (
    LodAuthError,
    LodError,
    LodInvalidArgument,
    LodRedirectError,
    LodWindowError,
    StoreError,
)
from lodresults._windows.plan import MAX_WINDOW_SECONDS, iso
from lodresults._windows.settle import DEFAULT_SETTLE

__all__ = ["DEFAULT_RECONCILE", "watch"]

ClientFactory = Callable[..., LodClient]


_LAST_POLL: Final = "watch.last_success"
_LAST_RECONCILE: Final = "watch.last_reconcile"
_SINCE: Final = "watch.since"
#: Seconds of overlap between polls (a change at a poll's edge is seen twice, not missed).
_OVERLAP: Final = 60
#: How often ``watch`` reconciles the unsettled tail with windowed Results by default.
DEFAULT_RECONCILE: Final = 3600


async def watch(
    make_client: ClientFactory,
    *,
    db: Path,
    interval: float,
    out: IO[str],
    iterations: int | None = None,
    clock: Callable[[], float] = time.time,
    settle: int = DEFAULT_SETTLE,
    reconcile: float = DEFAULT_RECONCILE,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """
    Keep ``db`` equal to the server: poll LatestResults every ``interval`` seconds, and
    every ``reconcile`` seconds fetch the unsettled tail with windowed Results.

    The fast path asks for the minutes since the last successful poll (kept in the
    database, so a restart catches up; on a first run, since the newest change already in
    the table) plus a minute of overlap, and upserts. LatestResults shows labs that
    started or ended, but not always the grading that comes later, so the reconciliation
    runs the backfill over the tail that has not settled (from the settled checkpoints, or
    from ``settle`` before the first watch) and checkpoints what has settled. It also runs
    at once when the gap since the last success exceeds LatestResults' 7 days (a watch
    restarted after a long outage). Transient failures are reported and retried at the next
    tick; auth, redirect, bad-argument and database failures stop the watch on every path;
    the loop also ends on cancellation (SIGTERM/Ctrl-C).
    """
    store = await SQLiteStore.open(db)
    try:
        async with make_client(clock=clock) as client:
            n = 0
            while iterations is None or n < iterations:
                n += 1
                try:
                    line = await _watch_tick(client, store, interval, settle, reconcile)
                    stamp = iso(int(client.clock()))
                    print(f"watch: {stamp} {line}", file=out, flush=True)
                except LodError as exc:
                    if _is_fatal(exc):
                        raise
                    print(f"watch: poll failed, will retry: {exc}", file=out, flush=True)
                if iterations is None or n < iterations:
                    await sleep(interval)
    finally:
        await store.close()


async def _watch_tick(
    client: LodClient, store: SQLiteStore, interval: float, settle: int, reconcile: float
) -> str:
    tick = client.clock()
    last_saved = await store.get_meta_number(_LAST_POLL)
    if last_saved is not None:
        last = last_saved
    else:
        newest = await store.newest_change()
        last = min(tick - interval, newest) if newest is not None else tick - interval
    since_saved = await store.get_meta_number(_SINCE)
    if since_saved is None:
        # The tail the watch keeps settling: from the end of the settled checkpoints, or
        # from ``settle`` before the first poll.
        settled = [b for _, b in await store.completed_windows(0, int(tick))]
        since = int(min(last, tick - settle, max(settled, default=tick)))
        await store.set_meta(_SINCE, str(since))
    else:
        since = int(since_saved)
    reconciled = await store.get_meta_number(_LAST_RECONCILE)
    gap = tick - last + _OVERLAP
    parts = []
    if gap <= MAX_WINDOW_SECONDS:
        minutes = max(1, min(MAX_LATEST_MINUTES, math.ceil(gap / 60)))
        count = await store.apply(await client.latest_results(minutes), fetched_at=tick)
        parts.append(f"upserted {count:,} records")
    if gap > MAX_WINDOW_SECONDS or reconciled is None or tick - reconciled >= reconcile:
        # Beyond LatestResults' reach, or time to settle the tail: windowed Results.
        result = await backfill(client, store, since, int(tick), settle=settle)
        await store.set_meta(_LAST_RECONCILE, repr(tick))
        parts.append(
            f"upserted {result.records + result.updates} records from the unsettled tail "
            f"({result.windows:,} windows, {result.updates:,} updates)"
        )
    await store.set_meta(_LAST_POLL, repr(tick))
    return "; ".join(parts)


def _is_fatal(exc: BaseException) -> bool:
    """Failures another poll cannot fix: on any path, also inside a LodWindowError."""
    while isinstance(exc, LodWindowError):
        exc = exc.error
    return isinstance(exc, _FATAL)


#: Failures that another poll cannot fix: watch stops on these.
_FATAL: Final = (LodAuthError, LodRedirectError, LodInvalidArgument, StoreError)
