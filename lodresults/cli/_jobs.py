"""
The CLI's jobs as plain async functions (the click layer only parses and reports).
"""

from __future__ import annotations

import asyncio
import csv
import io
import logging
import math
import os
import secrets
import stat
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final

import attrs
import orjson

from lodresults._backfill import backfill
from lodresults._client import MAX_LATEST_MINUTES, LodClient
from lodresults._exceptions import (
    LodAuthError,
    LodError,
    LodInvalidArgument,
    LodRedirectError,
    LodWindowError,
)
from lodresults._models import CompletionStatus, LabResult, field_types
from lodresults._settle import DEFAULT_SETTLE
from lodresults._store import COLUMNS, Store, StoreError
from lodresults._windows import MAX_WINDOW_SECONDS
from lodresults._wire import dump_record
from lodresults.cli._progress import Progress

__all__ = [
    "BackfillSummary",
    "atomic_output",
    "export",
    "run_backfill",
    "run_demo",
    "serve_simulator",
    "watch",
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
    refreshed: int = 0


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
    store = await Store.open(db)
    try:
        started = time.monotonic()
        async with make_client(on_event=progress.on_event) as client:
            result = await backfill(client, store, since, until, settle=settle, refresh=refresh)
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
            refreshed=result.refreshed,
        )
    finally:
        await store.close()


def format_status_counts(counts: dict[int, int]) -> str:
    """``Complete 812, Incomplete 201, ...`` for a summary line."""
    parts = []
    for code, n in sorted(counts.items(), key=lambda kv: -kv[1]):
        name = CompletionStatus(code).name.replace("_", " ").title()
        parts.append(f"{name} {n:,}")
    return ", ".join(parts) or "none"


_DEMO_STAMP: Final = "demo.dataset"


async def _claim_for_demo(db: Path, identity: str, out: IO[str]) -> None:
    """
    Make sure ``db`` holds nothing but this demo dataset: a database of another demo
    dataset is emptied (saying so), one that holds other data is refused.
    """
    store = await Store.open(db)
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

        summary = await run_backfill(
            make, since=now - days * 86400, until=now, db=db, progress=progress
        )
        return summary, len(sim.ids_between(now - days * 86400, now))


async def export(db: Path, fmt: str, out: IO[str]) -> int:
    """
    Write every row of ``db`` as JSON lines (the API's shape) or CSV; returns the count.

    The database is opened read-only. Rows are read and written a chunk at a time, so a
    cancellation (Ctrl-C) stops the export within one chunk.
    """
    store = await Store.open(db, readonly=True)
    try:
        n = await store.for_each_chunk(_EXPORT_WRITERS[fmt](out))
        await store.run_sync(lambda _: out.flush())
        return n
    finally:
        await store.close()


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """
    A text file that appears at ``path`` only once complete: written beside it under a
    temporary name and renamed over ``path`` on success, removed on any failure or
    interruption (an existing ``path`` is then left untouched).

    The file gets the permissions a plain ``open(path, "w")`` would give it: those of
    an existing ``path``, else 0666 less the umask (``mkstemp`` would make it 0600).
    """
    fd, tmp = _create_beside(path)
    try:
        with suppress(FileNotFoundError):
            os.chmod(fd, stat.S_IMODE(path.stat().st_mode))
        with open(fd, "w", newline="", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _create_beside(path: Path) -> tuple[int, Path]:
    """A new, empty file next to ``path`` (created 0666 less the umask) and its name."""
    while True:
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.part")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue


def _iso(d: datetime | None) -> str:
    return "" if d is None else d.strftime("%Y-%m-%dT%H:%M:%SZ")


def csv_value(value: Any) -> str:
    """How one LabResult field is spelled in the CSV export."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, CompletionStatus):
        return str(int(value))
    return str(value)


def _jsonl_writer(out: IO[str]) -> Callable[[list[LabResult]], None]:
    def write(chunk: list[LabResult]) -> None:
        out.write("".join(dump_record(r).decode() + "\n" for r in chunk))

    return write


def _csv_writer(out: IO[str]) -> Callable[[list[LabResult]], None]:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)

    def write(chunk: list[LabResult]) -> None:
        writer.writerows([csv_value(getattr(r, c)) for c in COLUMNS] for r in chunk)

    return write


_EXPORT_WRITERS: Final[dict[str, Callable[[IO[str]], Callable[[list[LabResult]], None]]]] = {
    "jsonl": _jsonl_writer,
    "csv": _csv_writer,
}


def _from_iso(v: str) -> datetime:
    return datetime.strptime(v, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


_CSV_PARSERS: Final[dict[Any, Callable[[str], Any]]] = {
    int: int,
    str: str,
    bool: lambda v: v == "true",
    datetime: _from_iso,
    Decimal: Decimal,
    CompletionStatus: lambda v: CompletionStatus(int(v)),
}


_CSV_FIELDS: Final = [
    (name, nullable, _CSV_PARSERS[base]) for name, (base, nullable) in field_types().items()
]


def record_from_csv(row: dict[str, str]) -> LabResult:
    """
    Parse one exported CSV row back into a LabResult (the inverse of the export).

    An empty cell is null for nullable fields (CSV cannot tell an empty string apart).
    """
    values: dict[str, Any] = {
        name: None if nullable and row[name] == "" else parse(row[name])
        for name, nullable, parse in _CSV_FIELDS
    }
    return LabResult(**values)


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
    store = await Store.open(db)
    try:
        async with make_client(clock=clock) as client:
            n = 0
            while iterations is None or n < iterations:
                n += 1
                try:
                    line = await _watch_tick(client, store, interval, settle, reconcile)
                    stamp = _iso(datetime.fromtimestamp(client.clock(), timezone.utc))
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
    client: LodClient, store: Store, interval: float, settle: int, reconcile: float
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
        parts.append(f"upserted {count} records")
    if gap > MAX_WINDOW_SECONDS or reconciled is None or tick - reconciled >= reconcile:
        # Beyond LatestResults' reach, or time to settle the tail: windowed Results.
        result = await backfill(client, store, since, int(tick), settle=settle)
        await store.set_meta(_LAST_RECONCILE, repr(tick))
        parts.append(
            f"upserted {result.records + result.updates} records from the unsettled tail "
            f"({result.windows} windows, {result.updates} updates)"
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
    """Pretty JSON to ``out``."""
    out.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
    out.write("\n")


def read_csv(text: str) -> list[LabResult]:
    """Parse a whole CSV export (used by tests and for re-import)."""
    return [record_from_csv(row) for row in csv.DictReader(io.StringIO(text))]
