"""
The ``--tenants FILE`` forms of ``backfill`` and ``watch``: parse, run ``_fleet``, and
report per tenant; the exit code is 1 if any tenant failed, and the summary names it.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from lodresults._windows.plan import iso
from lodresults.cli import _fleet
from lodresults.cli._options import client_options, tenants_from
from lodresults.cli._runner import EXIT_FAILURE, run

__all__ = ["backfill", "watch"]


def backfill(options: dict[str, Any], *, since: int, until: int, settle: int, argv: str) -> None:
    """``backfill --tenants FILE``: every tenant at once, one summary line each."""
    tenants = tenants_from(options)
    db: Path = options["db"]

    async def job() -> list[_fleet.TenantOutcome]:
        return await _fleet.backfill_tenants(
            tenants, client_options(options), since=since, until=until, db=db,
            refresh=options["refresh"], settle=settle, stream=sys.stderr,
        )  # fmt: skip

    resume = f"Progress is saved; run the same command again to resume:\n  {argv}"
    outcomes = run(job, on_interrupt=resume)
    for o in outcomes:
        if o.summary is None:
            click.echo(f"backfill {o.name}: failed: {o.error}", err=True)
            continue
        s = o.summary
        click.echo(
            f"backfill {o.name}: {s.records:,} labs, {s.updates:,} updates, "
            f"{s.windows} windows ({s.skipped_windows} done); {s.rows_in_db:,} rows",
            err=True,
        )
        if not s.complete:
            upto = "nothing yet" if s.settled_until is None else f"to {iso(s.settled_until)}"
            click.echo(f"backfill {o.name}: settled {upto}; the rest next run", err=True)
    failed = [o.name for o in outcomes if o.error is not None]
    if failed:
        click.echo(
            f"backfill: {len(failed)} of {len(outcomes)} tenants failed: {', '.join(failed)} "
            "(the others are saved; run again to retry)",
            err=True,
        )
        click.get_current_context().exit(EXIT_FAILURE)
    click.echo(f"backfill: {len(outcomes)} tenants into {db}", err=True)


def watch(
    options: dict[str, Any], *, db: Path, interval: float, settle: int, reconcile: int
) -> None:
    """``watch --tenants FILE``: every tenant at once; a tenant that stops is named."""
    tenants = tenants_from(options)

    async def job() -> list[_fleet.TenantOutcome]:
        return await _fleet.watch_tenants(
            tenants, client_options(options), db=db, interval=interval, out=sys.stderr,
            settle=settle, reconcile=reconcile,
        )  # fmt: skip

    stopped = run(job, on_interrupt="watch stopped.")
    if stopped:
        names = ", ".join(o.name for o in stopped)
        click.echo(f"watch: stopped for {names}", err=True)
        click.get_current_context().exit(EXIT_FAILURE)
