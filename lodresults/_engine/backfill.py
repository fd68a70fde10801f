"""
The main job as one call: keep a store equal to the server for a date range, resumably.

Plans the gaps left by the store's checkpoints, iterates their windows, writes each
window's new records and then its updates, and checkpoints the part of the window that
has settled, all in one transaction per window. A window's rows are written whether or
not it has settled; only the checkpoint waits, so the next run fetches the unsettled tail
again (and the new days), never the settled range.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from typing import Final

import attrs

from lodresults._client import LodClient
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._events import EventHook
from lodresults._exceptions import LodApiError
from lodresults._records.models import LabResult
from lodresults._windows.plan import TimeLike, gaps, validate_range
from lodresults._windows.settle import DEFAULT_SETTLE, settle_seconds, settled_end

__all__ = ["BackfillResult", "backfill"]

#: Labs refreshed one by one are fetched and written this many at a time (the client's
#: ``max_concurrency`` and rate limit still pace the requests).
_REFRESH_CHUNK: Final = 200


@attrs.frozen
class BackfillResult:
    """
    What one backfill run did.

    ``windows``: windows fetched; ``records``: labs written (each once per run, also those
    the table held already); ``updates``: changed copies written after them; ``skipped``:
    checkpointed stretches not fetched; ``settled_until``: every second of ``[since,
    settled_until]`` is checkpointed (None if none is); ``complete``: the whole range is
    settled, so another run has no window to fetch; ``refreshed``: labs of a settled range
    stored as running, or ended after ``until`` but not yet settled, fetched one by one
    (``Result``) since no window returns them again.
    """

    windows: int
    records: int
    updates: int
    skipped: int
    settled_until: int | None
    complete: bool
    refreshed: int = 0


async def backfill(
    client: LodClient,
    store: SQLiteStore,
    since: TimeLike,
    until: TimeLike,
    *,
    settle: float = DEFAULT_SETTLE,
    refresh: bool = False,
    on_event: EventHook | None = None,
) -> BackfillResult:
    """
    Fetch every lab that started or ended in ``[since, until]`` into ``store``, resuming
    from its checkpoints, and leave the unsettled tail for the next run.

    ``until`` may lie in the future: the range is fetched up to the client's clock, and
    nothing later than that clock minus ``settle`` seconds is checkpointed. ``refresh``
    fetches checkpointed stretches again. Each window is committed (rows and checkpoint
    together) before the next is taken, so an interruption loses at most the windows in
    flight. Once the whole range has settled, labs still stored as running are fetched
    with ``Result`` (no window of the range returns a lab that ends after ``until``).
    """
    start, end = validate_range(since, until)
    settle_s = settle_seconds(settle)
    done = [] if refresh else await store.checkpoints(start, end)
    fetch_end = min(end, int(client.clock()))
    windows = records = updates = 0
    if fetch_end >= start and gaps(start, fetch_end, done):
        batches = client.iter_windows(start, fetch_end, skip=done, on_event=on_event)
        async with aclosing(batches):
            async for batch in batches:
                w = batch.window
                settled = settled_end(w.start, w.end, batch.fetched_at, settle_s)
                await store.apply(
                    [*batch.records, *batch.updates],
                    checkpoint=None if settled is None else (w.start, settled),
                    fetched_at=batch.fetched_at,
                )
                windows += 1
                records += len(batch.records)
                updates += len(batch.updates)
    left = gaps(start, end, await store.checkpoints(start, end))
    # Once the whole range has settled no window of it is fetched again, so a lab stored
    # as running, or ended after ``until`` but not yet settled (an exam still to be
    # graded), would keep that state for good: ask for it.
    refreshed = 0 if left else await _refresh_running(client, store, start, end, settle_s)
    return BackfillResult(
        windows=windows,
        records=records,
        updates=updates,
        skipped=len(done),
        settled_until=end if not left else None if left[0][0] == start else left[0][0],
        complete=not left,
        refreshed=refreshed,
    )


async def _refresh_running(
    client: LodClient, store: SQLiteStore, start: int, end: int, settle: int
) -> int:
    """
    Fetch with ``Result`` each lab that started in the range and is stored as running, or
    ended after ``end`` but was last fetched before its end had settled (its grade may
    still land, and no window of the range returns it).
    """
    ids = [lab.lab_instance_id for lab in await store.open_labs(start, end, settle=settle)]
    count = 0
    for i in range(0, len(ids), _REFRESH_CHUNK):
        chunk = ids[i : i + _REFRESH_CHUNK]
        sent = client.clock()
        got = await asyncio.gather(*(_current(client, lab_id) for lab_id in chunk))
        applied = await store.apply([r for r in got if r is not None], fetched_at=sent)
        count += applied.total
    return count


async def _current(client: LodClient, lab_id: int) -> LabResult | None:
    try:
        return await client.result(lab_id)
    except LodApiError:
        return None  # the server no longer knows it (Status 0): keep the stored copy
