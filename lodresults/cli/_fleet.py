"""
``backfill --tenants`` and ``watch --tenants``: one database, one client per tenant (its
own connection pool and adaptive rate limiter), every tenant's run side by side.

The runs share nothing but the database, whose one thread takes their writes in turn.
A tenant whose run fails (a revoked key, an outage) is reported by name; the others go
on at their own pace.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

import attrs

from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import backfill
from lodresults._engine.watch import DEFAULT_RECONCILE
from lodresults._exceptions import LodError
from lodresults._tenant import Tenant
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.cli._jobs import BackfillSummary, summarize
from lodresults.cli._progress import Progress
from lodresults.cli._watch import watch_store

__all__ = ["TenantOutcome", "backfill_tenants", "one_line", "watch_tenants"]


@attrs.frozen
class TenantOutcome:
    """One tenant's run: its summary, or why it failed (one line)."""

    name: str
    summary: BackfillSummary | None = None
    error: str | None = None


def one_line(exc: BaseException) -> str:
    """``exc`` as one line (lodresults' errors never quote a key)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


async def backfill_tenants(
    tenants: Mapping[str, Tenant],
    client_options: Mapping[str, Any],
    *,
    since: int,
    until: int,
    db: Path,
    refresh: bool = False,
    settle: int = DEFAULT_SETTLE,
    stream: IO[str],
) -> list[TenantOutcome]:
    """
    Backfill ``[since, until]`` for every tenant into ``db`` at once, each resuming from
    its own checkpoints; progress lines per tenant on ``stream``. Returns each tenant's
    outcome, in the order of ``tenants``.
    """
    store = await SQLiteStore.open(db)
    try:
        runs = [
            _backfill_one(
                name,
                tenant,
                store.for_tenant(name),
                client_options,
                since=since,
                until=until,
                refresh=refresh,
                settle=settle,
                stream=stream,
            )
            for name, tenant in tenants.items()
        ]
        return list(await asyncio.gather(*runs))
    finally:
        await store.close()


async def _backfill_one(
    name: str,
    tenant: Tenant,
    store: SQLiteStore,
    client_options: Mapping[str, Any],
    *,
    since: int,
    until: int,
    refresh: bool,
    settle: int,
    stream: IO[str],
) -> TenantOutcome:
    started = time.monotonic()
    try:
        # Plain lines, one set per tenant: live bars of several runs would overwrite
        # each other.
        with Progress(f"backfill {name}", stream=stream, tty=False) as progress:
            async with tenant.client(on_event=progress.on_event, **client_options) as client:
                result = await backfill(client, store, since, until, settle=settle, refresh=refresh)
    except (LodError, OSError) as exc:
        return TenantOutcome(name, error=one_line(exc))
    return TenantOutcome(name, summary=await summarize(result, store, started))


async def watch_tenants(
    tenants: Mapping[str, Tenant],
    client_options: Mapping[str, Any],
    *,
    db: Path,
    interval: float,
    out: IO[str],
    settle: int = DEFAULT_SETTLE,
    reconcile: float = DEFAULT_RECONCILE,
    clock: Callable[[], float] = time.time,
    iterations: int | None = None,
) -> list[TenantOutcome]:
    """
    Watch every tenant into ``db`` at once, one line per run led by ``watch NAME``. A
    tenant whose watch stops (a failure another poll cannot fix) is reported at once and
    the others go on. Returns the tenants that stopped so (when all have ended).
    """
    store = await SQLiteStore.open(db)
    try:
        watches = [
            _watch_one(
                name,
                tenant,
                store.for_tenant(name),
                client_options,
                interval=interval,
                out=out,
                settle=settle,
                reconcile=reconcile,
                clock=clock,
                iterations=iterations,
            )
            for name, tenant in tenants.items()
        ]
        return [o for o in await asyncio.gather(*watches) if o.error is not None]
    finally:
        await store.close()


async def _watch_one(
    name: str,
    tenant: Tenant,
    store: SQLiteStore,
    client_options: Mapping[str, Any],
    *,
    out: IO[str],
    **options: Any,
) -> TenantOutcome:
    make = functools.partial(tenant.client, **client_options)
    try:
        await watch_store(make, store, out=out, label=f"watch {name}", **options)
    except (LodError, OSError) as exc:
        outcome = TenantOutcome(name, error=one_line(exc))
        print(f"watch {name}: stopped: {outcome.error}", file=out, flush=True)
        return outcome
    return TenantOutcome(name)
