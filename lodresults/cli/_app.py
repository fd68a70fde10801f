"""
The ``lodresults`` commands: click parses here, the jobs (``_jobs``, ``_export``,
``_watch``) work, ``_runner`` reports failures and sets the exit code.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click

from lodresults import __version__
from lodresults._client import MAX_LATEST_MINUTES, LodClient
from lodresults._records.schema import INT64_MAX
from lodresults._records.wire import results_envelope, unstructure_record
from lodresults._windows.plan import iso
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.cli import _export, _jobs, _watch
from lodresults.cli._options import (
    api_key,
    client_factory,
    connection_options,
    duration,
    make_from_options,
    when,
)
from lodresults.cli._progress import Progress
from lodresults.cli._runner import Cli, run

_DEFAULT_SETTLE = f"{DEFAULT_SETTLE // 3600}h"


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="lodresults")
@click.option("--debug", is_flag=True, help="Debug logging and tracebacks on errors.")
def cli(debug: bool) -> None:
    """Lab on Demand API v3 results: backfill into SQLite, watch, export, and more."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )


@cli.command()
@click.option("--since", required=True, help="First day (YYYY-MM-DD, ISO datetime or epoch).")
@click.option("--until", default="now", show_default=True, help="Last day, included.")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.db"),
    show_default=True, help="SQLite file (created if missing).",
)  # fmt: skip
@click.option("--refresh", is_flag=True, help="Fetch windows already done again.")
@click.option(
    "--settle", default=_DEFAULT_SETTLE, show_default=True, metavar="DURATION",
    help="How long after its end a window is final (36h, 2d, 90m); younger ones are "
    "stored but fetched again by the next run.",
)  # fmt: skip
@connection_options
def backfill(
    since: str,
    until: str,
    db: Path,
    refresh: bool,
    settle: str,
    base_url: str,
    api_key_file: Path | None,
    concurrency: int,
    rate_limit: float,
    timeout: float,
    max_retries: int,
    proxy: str | None,
    trust_env: bool,
) -> None:
    """Fetch every result in a date range into SQLite; resumable and idempotent."""
    start = when("--since", since)
    end = when("--until", until, end_of_day=True)
    if end < start:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    settle_s = duration("--settle", settle)
    make = client_factory(
        api_key(api_key_file), base_url, concurrency, rate_limit, timeout, max_retries,
        proxy, trust_env,
    )  # fmt: skip
    resume = f"Progress is saved; run the same command again to resume:\n  {_argv()}"

    async def job() -> _jobs.BackfillSummary:
        with Progress("backfill") as progress:
            return await _jobs.run_backfill(
                make, since=start, until=end, db=db, refresh=refresh, settle=settle_s,
                progress=progress,
            )  # fmt: skip

    summary = run(job, on_interrupt=resume)
    if summary.requests == 0 and summary.complete:
        click.echo(
            f"nothing to do: {db} already holds this range, settled, with nothing "
            f"running ({summary.rows_in_db:,} rows); pass --refresh to fetch it again",
            err=True,
        )
        return
    for line in summary.phases:
        click.echo(f"backfill: {line}", err=True)
    click.echo(
        f"backfill: {summary.requests:,} requests in {summary.seconds:.1f} s "
        f"({summary.skipped_windows} already done); {summary.rows_in_db:,} rows",
        err=True,
    )
    if not summary.complete:
        upto = (
            "nothing yet" if summary.settled_until is None
            else f"up to {iso(summary.settled_until)}"
        )  # fmt: skip
        click.echo(
            f"backfill: settled {upto}; run it again later (e.g. nightly) to fetch the "
            f"unsettled rest, which may still change",
            err=True,
        )


def _argv() -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["lodresults", *sys.argv[1:]])


@cli.command()
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("demo.db"),
    show_default=True,
)  # fmt: skip
@click.option("--days", type=click.IntRange(1, 3650), default=90, show_default=True)
@click.option("--latency-ms", type=click.FloatRange(0, 5000), default=50.0, show_default=True)
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--labs-per-day", type=click.FloatRange(0, 1e6), default=300.0, show_default=True)
def demo(db: Path, days: int, latency_ms: float, seed: int, labs_per_day: float) -> None:
    """Backfill a few months from the built-in simulator (no account, no network)."""

    async def job() -> tuple[_jobs.BackfillSummary, int]:
        with Progress("demo backfill", interval=2.0) as progress:
            return await _jobs.run_demo(
                db=db,
                days=days,
                latency=latency_ms / 1000,
                seed=seed,
                labs_per_day=labs_per_day,
                progress=progress,
                out=sys.stdout,
            )

    summary, expected = run(job, on_interrupt="Run the demo again to resume.")
    click.echo(
        f"demo: {summary.records:,} records from {summary.windows} windows "
        f"in {summary.seconds:.1f} s"
    )
    # The check a newcomer wants: the table holds every lab the server has for the days.
    match = "all" if summary.rows_in_db == expected else f"the server has {expected:,}"
    click.echo(f"demo: {db} holds {summary.rows_in_db:,} rows ({match} for those days)")
    click.echo(f"demo: completion status: {_jobs.format_status_counts(summary.status_counts)}")
    click.echo(f"demo: try  lodresults export --db {db} --format csv | head")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), default=8080, show_default=True)
@click.option("--latency-ms", type=click.FloatRange(0, 60_000), default=0.0, show_default=True)
@click.option("--rate-limit", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--fault-rate", type=click.FloatRange(0, 1), default=0.0, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--labs-per-day", type=click.FloatRange(0, 1e6), default=40.0, show_default=True)
@click.option(
    "--days", type=click.IntRange(1, 36500), default=730, show_default=True,
    help="Span of the generated data, ending now.",
)  # fmt: skip
def simulate(
    host: str,
    port: int,
    latency_ms: float,
    rate_limit: float | None,
    fault_rate: float,
    seed: int,
    labs_per_day: float,
    days: int,
) -> None:
    """Serve the API simulator (for trying things out, tests and benchmarks)."""
    run(
        lambda: _jobs.serve_simulator(
            host=host,
            port=port,
            latency=latency_ms / 1000,
            rate_limit=rate_limit,
            fault_rate=fault_rate,
            seed=seed,
            labs_per_day=labs_per_day,
            days=days,
            out=sys.stdout,
        )
    )


def _print_json(options: dict[str, Any], fetch: Callable[[LodClient], Awaitable[Any]]) -> None:
    make = make_from_options(options)

    async def job() -> None:
        async with make() as client:
            doc = await fetch(client)
        _jobs.json_dump(doc)

    run(job)


@cli.command()
# Ids are positive int64 values (LodClient.result refuses any other).
@click.argument("lab_instance_id", type=click.IntRange(1, INT64_MAX))
@connection_options
def get(lab_instance_id: int, **options: Any) -> None:
    """Print one lab instance result as JSON."""

    async def fetch(client: LodClient) -> Any:
        return unstructure_record(await client.result(lab_instance_id))

    _print_json(options, fetch)


@cli.command()
@click.option(
    "--minutes", type=click.IntRange(1, MAX_LATEST_MINUTES), default=60, show_default=True
)
@connection_options
def latest(minutes: int, **options: Any) -> None:
    """Print the results that changed in the last MINUTES as JSON."""

    async def fetch(client: LodClient) -> Any:
        return results_envelope(await client.latest_results(minutes))

    _print_json(options, fetch)


@cli.command(name="export")
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.db"),
    show_default=True,
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["jsonl", "csv", "parquet"]), default="jsonl"
)  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def export_cmd(db: Path, fmt: str, out: Path | None) -> None:
    """
    Write the table as JSON lines (the API's shape), CSV or Parquet (needs --out).

    Opens the database read-only; with --out, the file appears only once complete.
    """
    if not db.exists():
        raise click.BadParameter(f"{db} does not exist", param_hint="--db")
    if out is not None and not out.parent.is_dir():
        raise click.BadParameter(f"directory {out.parent} does not exist", param_hint="--out")
    if out is not None and out.exists() and out.samefile(db):
        raise click.BadParameter("is the database itself", param_hint="--out")
    if fmt == "parquet":
        _export_parquet(db, out)
        return

    async def job() -> int:
        if out is None:
            return await _export.export(db, fmt, sys.stdout)
        with _export.atomic_output(out) as f:
            return await _export.export(db, fmt, f)

    n = run(job)
    click.echo(f"export: {n:,} records", err=True)


def _export_parquet(db: Path, out: Path | None) -> None:
    if out is None:
        raise click.UsageError("--format parquet writes a file: pass --out FILE")
    try:
        from lodresults.cli._export_parquet import export_parquet
    except ImportError as exc:
        raise click.UsageError(
            f"--format parquet needs pyarrow ({exc}); install it with "
            "pip install 'lodresults[parquet]'"
        ) from None
    n = run(lambda: export_parquet(db, out))
    click.echo(f"export: {n:,} records", err=True)


@cli.command()
@click.option(
    "--db", type=click.Path(dir_okay=False, path_type=Path), default=Path("results.db"),
    show_default=True,
)  # fmt: skip
@click.option("--interval", type=click.FloatRange(1), default=60.0, show_default=True)
@click.option(
    "--settle", default=_DEFAULT_SETTLE, show_default=True, metavar="DURATION",
    help="How long after its end a window is final (as for backfill).",
)  # fmt: skip
@click.option(
    "--reconcile", default="1h", show_default=True, metavar="DURATION",
    help="How often to fetch the unsettled tail with windowed Results.",
)  # fmt: skip
@connection_options
def watch(db: Path, interval: float, settle: str, reconcile: str, **options: Any) -> None:
    """Keep the table equal to the server (recent changes, and the unsettled tail)."""
    settle_s = duration("--settle", settle)
    reconcile_s = duration("--reconcile", reconcile)
    make = make_from_options(options)
    run(
        lambda: _watch.watch(
            make, db=db, interval=interval, out=sys.stderr, settle=settle_s,
            reconcile=reconcile_s,
        ),
        on_interrupt="watch stopped.",
    )  # fmt: skip
