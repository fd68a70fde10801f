"""
The CLI's jobs as plain async functions (the click layer only parses and reports).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Final

import attrs

from lodresults._client import LodClient
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import BackfillResult, backfill
from lodresults._exceptions import (
    StoreError,
)
from lodresults._records.models import CompletionStatus
from lodresults._records.wire import encode_json
from lodresults._text import printable
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.cli._progress import Progress
from lodresults.cli._summary import phase_lines

__all__ = [
    "BackfillSummary",
    "run_backfill",
    "run_demo",
    "serve_simulator",
    "summarize",
]

logger = logging.getLogger("lodresults.cli")

ClientFactory = Callable[..., LodClient]


@attrs.frozen
class BackfillSummary:
    """What a backfill did."""

    windows: int
    records: int
    rows_in_db: int
    seconds: float
    skipped_windows: int
    status_counts: dict[int, int]
    updates: int = 0
    settled_until: int | None = None
    complete: bool = False
    #: Requests the run sent, and one line per phase that sent any (``phase_lines``).
    requests: int = 0
    phases: list[str] = attrs.field(factory=list)


async def run_backfill(
    make_client: ClientFactory,
    *,
    since: int,
    until: int,
    db: Path,
    refresh: bool = False,
    settle: int = DEFAULT_SETTLE,
    progress: Progress,
) -> BackfillSummary:
    """
    Fetch every result in ``[since, until]`` into ``db``, resuming from its checkpoints
    (the library's ``backfill``; see there). Windows that have not settled are stored but
    left for the next run.
    """
    store = await SQLiteStore.open(db)
    try:
        started = time.monotonic()
        async with make_client(on_event=progress.on_event) as client:
            result = await backfill(client, store, since, until, settle=settle, refresh=refresh)
        return await summarize(result, store, started)
    finally:
        await store.close()


async def summarize(result: BackfillResult, store: SQLiteStore, started: float) -> BackfillSummary:
    """The summary of ``result``, a run into ``store`` begun at ``started`` (monotonic)."""
    return BackfillSummary(
        windows=result.windows,
        records=result.records,
        rows_in_db=await store.count(),
        seconds=time.monotonic() - started,
        skipped_windows=result.skipped,
        status_counts=await store.status_counts(),
        updates=result.updates,
        settled_until=result.settled_until,
        complete=result.complete,
        requests=result.requests,
        phases=phase_lines(result),
    )


def format_status_counts(counts: dict[int, int]) -> str:
    """``Complete: 812, Incomplete: 201, code 70 (undocumented): 51`` for a summary line."""
    parts = []
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        status = CompletionStatus(code)
        name = (
            status.name.replace("_", " ").capitalize()
            if status.is_known
            else f"code {int(status)} (undocumented)"
        )
        parts.append(f"{name}: {n:,}")
    return ", ".join(parts) or "none"


_DEMO_STAMP: Final = "demo.dataset"


async def _claim_for_demo(db: Path, identity: str, out: IO[str]) -> None:
    """
    Make sure ``db`` holds nothing but this demo dataset: a database of another demo
    dataset is emptied (saying so), one that holds other data is refused.
    """
    store = await SQLiteStore.open(db)
    try:
        stamp = await store.get_meta(_DEMO_STAMP)
        if stamp is None and await store.count():
            raise StoreError(
                f"{db} holds results that are not from the demo; pass another --db "
                "(the demo never writes into a database of real results)"
            )
        if stamp is not None and stamp != identity:
            print(
                f"demo: {db} held another demo dataset ({stamp}); starting it afresh "
                f"with {identity}",
                file=out,
                flush=True,
            )
            await store.reset()
        await store.set_meta(_DEMO_STAMP, identity)
    finally:
        await store.close()


async def run_demo(
    *,
    db: Path,
    days: int,
    latency: float,
    seed: int,
    labs_per_day: float,
    progress: Progress,
    out: IO[str],
) -> tuple[BackfillSummary, int]:
    """
    Start the built-in simulator and backfill its last ``days`` into ``db``.

    The simulated labs live in real time (the day's labs keep starting, ending and being
    graded). The dataset is fixed by the seed, the density, ``days`` and the UTC day, and
    stamped in ``db``: running the demo again the same day resumes; with other options (or
    on another day) the demo database is emptied first, so two datasets never mix.

    Returns the summary and how many labs the server held for the range.
    """
    from lodresults.testing import Simulator

    now = int(time.time())
    today = now - now % 86400
    day = datetime.fromtimestamp(today, timezone.utc).strftime("%Y-%m-%d")
    identity = f"seed={seed} labs_per_day={labs_per_day:g} days={days} day={day}"
    await _claim_for_demo(db, identity, out)
    span = (today - (days + 10) * 86400, today + 86400)
    async with Simulator(seed=seed, latency=latency, labs_per_day=labs_per_day, span=span) as sim:
        print(
            f"demo: simulator on {sim.base_url} ({len(sim.between(span[0], now)):,} labs so "
            f"far, {latency * 1000:.0f} ms latency); backfilling the last {days} days into {db}",
            file=out,
            flush=True,
        )

        def make(**kw: Any) -> LodClient:
            return LodClient(
                sim.api_key, base_url=sim.base_url, max_concurrency=4, rate_limit=20.0, **kw
            )

        # From midnight (UTC) ``days`` ago, not ``now - days``: a second run the same day
        # starts where the first did, so the rows the first stored near the start still
        # belong to the range the server's count covers.
        since = today - days * 86400
        summary = await run_backfill(make, since=since, until=now, db=db, progress=progress)
        return summary, len(sim.ids_between(since, now))


async def serve_simulator(
    *,
    host: str,
    port: int,
    latency: float,
    rate_limit: float | None,
    fault_rate: float,
    seed: int,
    labs_per_day: float,
    days: int,
    out: IO[str],
) -> None:
    """Serve the simulator until cancelled."""
    from lodresults.testing import FAULT_KINDS, Faults, Simulator

    transient = tuple(k for k in FAULT_KINDS if k not in ("status0", "slow"))
    now = int(time.time())
    sim = Simulator(
        span=(now - days * 86400, now),
        seed=seed,
        host=host,
        port=port,
        latency=latency,
        rate_limit=rate_limit,
        faults=Faults(rate=fault_rate, kinds=transient),
        labs_per_day=labs_per_day,
        log_requests=False,
    )
    async with sim:
        print(
            f"simulator: {len(sim.dataset):,} labs on {sim.base_url}\n"
            f"simulator: api key: {sim.api_key} (a test key; use it as LOD_API_KEY)\n"
            f"simulator: try  LOD_BASE_URL={sim.base_url} LOD_API_KEY={sim.api_key} "
            "lodresults latest --minutes 600",
            file=out,
            flush=True,
        )
        await asyncio.Event().wait()


def json_dump(doc: Any, out: IO[str] = sys.stdout) -> None:
    """Pretty JSON to ``out``: decimals as the API sent them, control characters escaped."""
    out.write(printable(encode_json(doc, indent=2).decode(), json=True))
    out.write("\n")
