"""
The engine: one run that keeps a destination equal to the server for a date range, in
three phases -- the change feed, the windows of the gaps, the refresh of labs no window
returns again (see ``backfill``). Every time is the server's (``LodClient.clock``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import aclosing
from typing import Final

import attrs

from lodresults._client import LodClient
from lodresults._destinations.base import Applied, Destination, OpenLab
from lodresults._engine.feed import feed_minutes, read_feed
from lodresults._engine.refresh import fetch_again, plan_refresh
from lodresults._events import EventHook, PhaseCompleted, PhaseProgress
from lodresults._records.models import LabResult
from lodresults._records.schema import MAX_EPOCH
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults._windows.plan import TimeLike, gaps, validate_range
from lodresults._windows.settle import DEFAULT_SETTLE, settle_seconds, settled_end

__all__ = ["BackfillResult", "backfill"]

logger = logging.getLogger("lodresults")

#: Stored times up to this many seconds past the server's present are a clock's jitter,
#: not a clock ahead.
_SLACK: Final = 60
#: The same, judged by our own clock before the server's is known.
_LOCAL_SLACK: Final = 3600


@attrs.frozen
class BackfillResult:
    """
    What one run did.

    ``windows``: windows fetched; ``records``: labs they returned (each once per run);
    ``updates``: changed copies of those labs from later windows; ``skipped``: settled
    stretches not fetched; ``settled_until``: every second of ``[since, settled_until]``
    is checkpointed (None if none is); ``complete``: the whole range is settled, so
    another run has no window to fetch; ``refreshed``: stored labs fetched again because
    no window of the range returns them (see ``backfill``).

    Per phase, what applying the copies did (new, changed, unchanged): ``fetched`` for
    the windows, ``feed`` for the change feed (None if it was not asked), ``refresh``
    for the refresh; ``requests``: requests sent by the run (retries not counted), of
    which ``feed_requests`` (two when the first only told the server's time) and
    ``refresh_requests``.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 ``fetched``, ``feed``, ``refresh``, ``requests``.
    """

    windows: int
    records: int
    updates: int
    skipped: int
    settled_until: int | None
    complete: bool
    refreshed: int = 0
    fetched: Applied = attrs.field(factory=Applied)
    feed: Applied | None = None
    refresh: Applied = attrs.field(factory=Applied)
    requests: int = 0
    feed_requests: int = 0
    refresh_requests: int = 0


@attrs.define
class _Run:
    """One run: what it fetched (ids, and when), and what each phase did."""

    client: LodClient
    destination: Destination
    start: int
    end: int
    on_event: EventHook | None
    fetched: set[int] = attrs.Factory(set)
    stamps: list[float] = attrs.Factory(list)
    windows: int = 0
    records: int = 0
    updates: int = 0
    applied: Applied = attrs.Factory(Applied)
    feed: Applied | None = None
    feed_requests: int = 0
    refreshed: int = 0
    refresh: Applied = attrs.Factory(Applied)
    refresh_requests: int = 0

    def done(self, phase: str, requests: int, a: Applied) -> None:
        event = PhaseCompleted(phase, requests, a.new, a.changed, a.unchanged)
        self.client.emit(event, self.on_event)

    async def read_feed(self, minutes: int) -> None:
        copies, at = await read_feed(self.client, minutes)
        self.feed_requests += 1
        applied = await self.apply_outside(copies, at)
        self.feed = applied + (self.feed or Applied())
        self.done("feed", 1, applied)

    async def apply_outside(self, copies: Sequence[LabResult], fetched_at: float) -> Applied:
        """Apply copies from outside the range's windows: those of the range or stored."""
        stored = await self.destination.stored([r.lab_instance_id for r in copies])
        mine = [r for r in copies if r.lab_instance_id in stored or self._in_range(r)]
        self.fetched.update(r.lab_instance_id for r in mine)
        self.stamps.append(fetched_at)
        return await self.destination.apply(mine, fetched_at=fetched_at)

    def _in_range(self, r: LabResult) -> bool:
        s, e = self.start, self.end
        return s <= int(r.start.timestamp()) <= e or (
            r.end is not None and s <= int(r.end.timestamp()) <= e
        )

    async def fetch_windows(self, done: list[tuple[int, int]], upto: int, settle: int) -> None:
        """The windows of the gaps of ``[start, upto]``; each checkpointed once settled."""
        batches = self.client.iter_windows(self.start, upto, skip=done, on_event=self.on_event)
        async with aclosing(batches):
            async for batch in batches:
                w = batch.window
                settled = settled_end(w.start, w.end, batch.fetched_at, settle)
                copies = [*batch.records, *batch.updates]
                self.applied += await self.destination.apply(
                    copies,
                    fetched_at=batch.fetched_at,
                    checkpoint=None if settled is None else (w.start, settled),
                )
                self.fetched.update(r.lab_instance_id for r in copies)
                self.stamps.append(batch.fetched_at)
                self.windows += 1
                self.records += len(batch.records)
                self.updates += len(batch.updates)
        self.done("windows", self.windows, self.applied)

    async def fetch_again(self, labs: list[OpenLab]) -> None:
        """``labs`` again, by the cheaper of their windows and one Result each."""
        plan = plan_refresh(labs, latest=int(self.client.clock.time()) + SKEW_TOLERANCE)

        def report(done: int) -> None:
            self.client.emit(PhaseProgress("refresh", done, len(labs)), self.on_event)

        async with aclosing(fetch_again(self.client, plan, report)) as chunks:
            async for copies, at in chunks:
                self.refresh += await self.apply_outside(copies, at)
        self.refreshed, self.refresh_requests = len(labs), plan.requests
        self.done("refresh", plan.requests, self.refresh)

    def result(self, done: list[tuple[int, int]], left: list[tuple[int, int]]) -> BackfillResult:
        # [start, settled_until] is checkpointed whole: up to the first gap.
        settled_until = self.end if not left else left[0][0] if left[0][0] > self.start else None
        return BackfillResult(
            windows=self.windows,
            records=self.records,
            updates=self.updates,
            skipped=len(done),
            settled_until=settled_until,
            complete=not left,
            refreshed=self.refreshed,
            fetched=self.applied,
            feed=self.feed,
            refresh=self.refresh,
            requests=self.windows + self.feed_requests + self.refresh_requests,
            feed_requests=self.feed_requests,
            refresh_requests=self.refresh_requests,
        )


async def backfill(
    client: LodClient,
    destination: Destination,
    since: TimeLike,
    until: TimeLike,
    *,
    settle: float = DEFAULT_SETTLE,
    refresh: bool = False,
    feed_only: bool = False,
    on_event: EventHook | None = None,
) -> BackfillResult:
    """
    Keep ``destination`` equal to the server for every lab that started or ended in
    ``[since, until]``: the engine behind ``lodresults backfill``, ``watch`` and the dlt
    source. Resumable: an interrupted run loses at most the windows in flight.

    What it promises: after a run the destination holds every lab of the range in the
    state the server showed during the run (a lab that started in the range and ends
    after ``until`` included), and checkpoints only stretches whose answers can no
    longer change (ended ``settle`` seconds before they were fetched, on the server's
    clock). ``until`` may lie in the future: nothing later than the server's present is
    fetched, and the unsettled tail is fetched again by the next run.

    What a run costs: the first, its windows and nothing more. A rerun: one
    ``LatestResults`` call (the change feed, when the last run lies within its 7 days),
    the windows of the unsettled tail, and a window for the labs whose grade may still
    land. Beyond the feed's reach, the labs still running are fetched again by the
    windows that hold them or with one ``Result`` each, whichever is fewer requests.

    ``refresh`` fetches checkpointed stretches again. ``feed_only`` skips the windows
    and the refresh when the feed covers the time since the last run (a watch's poll).
    Progress goes to ``on_event`` (window events, ``PhaseProgress``, ``PhaseCompleted``)
    as well as to the client's hook.

    Raises what the client raises (``LodWindowError`` for a window, the ``LodError``
    family otherwise) and ``StoreError``; nothing fetched before the failure is lost.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0 Any ``Destination``; the change feed; server time.
    """
    start, end = validate_range(since, until)
    settle_s = settle_seconds(settle)
    run = _Run(client, destination, start, end, on_event)
    clock = client.clock

    # 1. The change feed, when labs are stored as running or the range has not settled
    #    (new labs may still come). A feed asked for is the run's first answer, so the
    #    server's clock is known before what a clock ahead may have stored is trusted.
    if not clock.observed:
        # Before any answer, our clock: times an hour past it were stored by a clock
        # ahead (a small lead waits for the server's own time, below).
        await _distrust(destination, clock.time(), _LOCAL_SLACK)
    last = await destination.last_run()
    running = bool(await destination.open_labs(0, MAX_EPOCH, settle=0))
    done = [] if refresh else await destination.checkpoints(start, end)
    minutes = None
    if last is not None and (running or gaps(start, end, done) or last > clock.time() + _SLACK):
        minutes = feed_minutes(clock.time(), last)
        if minutes is None and not clock.observed:
            # Beyond reach by our clock, which may run ahead: a minute of the feed tells
            # the server's time.
            await run.read_feed(1)
            minutes = feed_minutes(clock.time(), last)
    if minutes is not None:
        await run.read_feed(minutes)
    # Nothing running: nothing the feed could tell of the stored labs.
    covered = minutes is not None or not running
    if clock.observed and await _distrust(destination, clock.time()):
        covered = covered and (last is None or last <= clock.time() + _SLACK)
        done = [] if refresh else await destination.checkpoints(start, end)
    if feed_only and covered and minutes is not None:
        return run.result(done, gaps(start, end, done))

    # 2. The windows of the gaps: up to the present, and the day a skewed server (or one
    #    whose clock runs ahead of ours) may already show.
    upto = min(end, int(clock.time()) + SKEW_TOLERANCE)
    if upto >= start and gaps(start, upto, done):
        await run.fetch_windows(done, upto, settle_s)
        covered = covered and not await _distrust(destination, clock.time())

    # 3. The labs no window returns again, but those this run fetched. Without the feed,
    #    also those stored as running for other ranges: the last run is the destination's.
    labs = await destination.open_labs(start, end, settle=settle_s)
    if not covered:
        labs += await destination.open_labs(0, MAX_EPOCH, settle=0)
    todo = list(
        {
            lab.lab_instance_id: lab
            for lab in labs
            if lab.lab_instance_id not in run.fetched and (not covered or lab.end is not None)
        }.values()
    )
    if todo:
        await run.fetch_again(todo)
    if run.stamps:
        await destination.set_last_run(min(run.stamps))
    return run.result(done, gaps(start, end, await destination.checkpoints(start, end)))


async def _distrust(destination: Destination, now: float, slack: int = _SLACK) -> bool:
    """Repair what a clock ahead of the server's stored; True if anything was."""
    repaired = await destination.distrust_after(now + slack)
    if repaired:
        logger.warning(
            "lodresults: %d times stored in the destination lie in the future of the "
            "server's clock (written by a machine whose clock ran ahead); they are "
            "distrusted, and what they covered is fetched again",
            repaired,
        )
    return bool(repaired)
