"""
``lodresults watch``: the library's ``watch`` on a SQLite database, one line per run.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Final

from lodresults._client import LodClient
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import BackfillResult
from lodresults._engine.watch import DEFAULT_RECONCILE
from lodresults._engine.watch import watch as watch_destination
from lodresults._events import EventHook
from lodresults._exceptions import LodError
from lodresults._webhooks.ledger import Ledger
from lodresults._webhooks.misses import MissCounter
from lodresults._windows.plan import iso
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.cli._summary import phase_lines

__all__ = ["watch", "watch_store"]

ClientFactory = Callable[..., LodClient]

#: Where the watched range begins, kept in the database so a restart resumes it.
_SINCE: Final = "watch.since"


async def watch(
    make_client: ClientFactory,
    *,
    db: Path,
    interval: float,
    out: IO[str],
    settle: int = DEFAULT_SETTLE,
    reconcile: float = DEFAULT_RECONCILE,
    clock: Callable[[], float] = time.time,
    iterations: int | None = None,
    on_event: EventHook | None = None,
) -> None:
    """
    Keep ``db`` equal to the server from the watch's first run on (``settle`` before it,
    or the end of the settled checkpoints if earlier), printing one line per run to
    ``out``; ``iterations`` runs at most (None: until cancelled).

    On a database a webhook receiver (``serve-webhooks``) writes to, each run also
    reports what the webhooks missed since the run before (a line, and a
    ``WebhookMisses`` event to ``on_event``).
    """
    store = await SQLiteStore.open(db)
    ledger = await _ledger(store)
    try:
        await watch_store(
            make_client, store, interval=interval, out=out, settle=settle,
            reconcile=reconcile, clock=clock, iterations=iterations, ledger=ledger,
            on_event=on_event,
        )  # fmt: skip
    finally:
        if ledger is not None:
            await ledger.close()
        await store.close()


async def _ledger(store: SQLiteStore) -> Ledger | None:
    """The webhook receiver's ledger in the store's file, if a receiver ever wrote there."""
    try:
        return await Ledger.open_existing(store.path)
    except BaseException:
        await store.close()
        raise


async def watch_store(
    make_client: ClientFactory,
    store: SQLiteStore,
    *,
    interval: float,
    out: IO[str],
    settle: int = DEFAULT_SETTLE,
    reconcile: float = DEFAULT_RECONCILE,
    clock: Callable[[], float] = time.time,
    iterations: int | None = None,
    label: str = "watch",
    ledger: Ledger | None = None,
    on_event: EventHook | None = None,
) -> None:
    """
    ``watch`` on an open store (one tenant's view of it), its lines led by ``label``;
    with a webhook receiver's ``ledger``, each run also reports what webhooks missed.
    """
    async with make_client(clock=clock) as client:
        since = await store.get_meta_number(store.meta_key(_SINCE))
        await store.last_run()  # a damaged value refuses the file before any write
        if since is None:
            now = client.clock.time()
            ends = [b for _, b in await store.checkpoints(0, int(now))]
            since = min(now - settle, max(ends, default=now))
            await store.set_meta(store.meta_key(_SINCE), str(int(since)))
        stop = asyncio.Event()
        runs = 0

        def report(outcome: BackfillResult | LodError) -> None:
            nonlocal runs
            runs += 1
            stamp = iso(int(client.clock.time()))[11:]  # the time of day, e.g. 08:00:00Z
            if isinstance(outcome, LodError):
                lines = [f"run failed, will retry: {outcome}"]
            else:
                lines = phase_lines(outcome) or ["nothing to do"]
            if counter is not None and counter.last is not None:
                misses, counter.last = counter.last, None
                if misses.brought or misses.missed:
                    lines.append(str(misses))
            for line in lines:
                print(f"{label} {stamp} {line}", file=out, flush=True)
            if iterations is not None and runs >= iterations:
                stop.set()

        counter = None if ledger is None else MissCounter(store, ledger, on_event=on_event)
        await watch_destination(
            client, store if counter is None else counter, int(since), interval=interval,
            settle=settle, reconcile=reconcile, stop=stop, on_run=report, on_event=on_event,
        )  # fmt: skip
