"""
The ``lodresults`` command: click parses, ``_jobs`` works, this module reports.

Exit codes: 0 ok, 2 usage error, 1 API / auth / network / database failure (one line on
stderr, no traceback unless ``--debug``), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from lodresults import __version__
from lodresults._client import DEFAULT_BASE_URL, LodClient
from lodresults._exceptions import LodError
from lodresults._settle import DEFAULT_SETTLE, parse_duration
from lodresults._wire import results_envelope, unstructure_record
from lodresults.cli import _jobs
from lodresults.cli._dates import parse_when
from lodresults.cli._keyfile import check_key, decode_key
from lodresults.cli._progress import Progress

T = TypeVar("T")

_DEFAULT_SETTLE = f"{DEFAULT_SETTLE // 3600}h"

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """The job was stopped by a signal."""


#: click >= 8.2 raises this for a bare group (earlier versions print the help and exit 0).
_NO_ARGS_IS_HELP: tuple[type[click.ClickException], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None
)


class _Cli(click.Group):
    """
    The command group, holding every failure to one line on stderr and its exit code:
    usage errors (2), anything unexpected (1; the traceback only with ``--debug``) and
    Ctrl-C outside a job (130).
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except _NO_ARGS_IS_HELP as exc:  # the bare command: its help, as click shows it
            exc.show()
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            hint = ""
            if isinstance(exc, click.UsageError) and exc.ctx is not None:
                hint = f" (see '{exc.ctx.command_path} --help')"
            click.echo(f"error: {_one_line(exc.format_message())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # click's form of KeyboardInterrupt outside a job
            click.echo("interrupted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        sys.exit(code if isinstance(code, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, KeyboardInterrupt):
            raise
        except BrokenPipeError:
            _quiet_stdout()
            ctx.exit(EXIT_FAILURE)
        except Exception as exc:
            # Expected failures are reported where they happen; this is a bug. Its
            # message is not shown: it could quote anything, the key included.
            debug = bool(ctx.params.get("debug"))
            if debug:
                traceback.print_exc()
            hint = "the traceback is above" if debug else "run with --debug for the traceback"
            click.echo(
                f"error: unexpected {type(exc).__name__} (a bug in lodresults; {hint})", err=True
            )
            ctx.exit(EXIT_FAILURE)


def _quiet_stdout() -> None:
    """The reader went away (``| head``): stop writing quietly, as Unix tools do."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def _run(job: Callable[[], Awaitable[T]], *, on_interrupt: str | None = None) -> T:
    """Run ``job`` with SIGINT/SIGTERM cancelling it cleanly; map errors to exit codes."""
    ctx = click.get_current_context()
    debug = bool(ctx.find_root().params.get("debug"))

    async def main() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        caught: list[int] = []

        def stop(sig: int) -> None:
            caught.append(sig)
            task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop, sig)
        try:
            return await job()
        except asyncio.CancelledError:
            if caught:
                raise Interrupted(signal.Signals(caught[0]).name) from None
            raise
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(main())
    except (Interrupted, KeyboardInterrupt) as exc:
        how = f" ({exc})" if isinstance(exc, Interrupted) else ""
        click.echo(f"\ninterrupted{how}. {on_interrupt or ''}".rstrip(), err=True)
        ctx.exit(EXIT_INTERRUPTED)
    except BrokenPipeError:
        _quiet_stdout()
        ctx.exit(EXIT_FAILURE)
    except (LodError, OSError) as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {_one_line(exc)}", err=True)
        ctx.exit(EXIT_FAILURE)
    raise AssertionError("unreachable")  # pragma: no cover


def _one_line(exc: BaseException | str) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 400 else text[:397] + "..."


def _api_key(key_file: Path | None) -> str:
    if key_file is not None:
        try:
            return decode_key(key_file.read_bytes())
        except OSError as exc:
            raise click.UsageError(f"cannot read --api-key-file: {exc.strerror}") from None
        except ValueError as exc:
            raise click.UsageError(f"--api-key-file {key_file} {exc}") from None
    key = os.environ.get("LOD_API_KEY", "").strip()
    if not key:
        raise click.UsageError(
            "no API key: set LOD_API_KEY or pass --api-key-file FILE "
            "(a plain --api-key option is not offered: it would land in shell history and ps)"
        )
    try:
        return check_key(key)
    except ValueError as exc:
        raise click.UsageError(f"LOD_API_KEY {exc}") from None


def _when(param: str, text: str, end_of_day: bool = False) -> int:
    try:
        return parse_when(text, end_of_day=end_of_day)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def _duration(param: str, text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=param) from None


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _client_factory(
    key: str,
    base_url: str,
    concurrency: int,
    rate_limit: float | None,
    timeout: float,
    max_retries: int,
) -> Callable[..., LodClient]:
    def make(**kw: Any) -> LodClient:
        return LodClient(
            key,
            base_url=base_url,
            max_concurrency=concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            max_retries=max_retries,
            **kw,
        )

    try:
        make()  # validate the options now, as a usage error (no session is opened)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return make


def _connection_options(f: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--base-url",
            envvar="LOD_BASE_URL",
            default=DEFAULT_BASE_URL,
            show_default=True,
            help="API root (env LOD_BASE_URL). https:// only, http:// for localhost.",
        ),
        click.option(
            "--api-key-file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Read the key from this file instead of LOD_API_KEY.",
        ),
        click.option(
            "--concurrency", type=click.IntRange(1, 64), default=4, show_default=True,
            help="Requests in flight at once.",
        ),
        click.option(
            "--rate-limit", type=click.FloatRange(0, min_open=True), default=5.0,
            show_default=True, help="Requests per second (adapts down on 429).",
        ),
        click.option(
            "--timeout", type=click.FloatRange(0, min_open=True), default=60.0,
            show_default=True, help="Seconds per request.",
        ),
        click.option(
            "--max-retries", type=click.IntRange(0, 100), default=5, show_default=True,
            help="Retries of a transient failure.",
        ),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


@click.group(cls=_Cli, context_settings={"help_option_names": ["-h", "--help"]})
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
@_connection_options
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
) -> None:
    """Fetch every result in a date range into SQLite; resumable and idempotent."""
    start = _when("--since", since)
    end = _when("--until", until, end_of_day=True)
    if end < start:
        raise click.BadParameter("--until is before --since", param_hint="--until")
    settle_s = _duration("--settle", settle)
    make = _client_factory(
        _api_key(api_key_file), base_url, concurrency, rate_limit, timeout, max_retries
    )
    resume = f"Progress is saved; run the same command again to resume:\n  {_argv()}"

    async def job() -> _jobs.BackfillSummary:
        with Progress("backfill") as progress:
            return await _jobs.run_backfill(
                make, since=start, until=end, db=db, refresh=refresh, settle=settle_s,
                progress=progress,
            )  # fmt: skip

    summary = _run(job, on_interrupt=resume)
    running = (
        f"; {summary.refreshed:,} labs still running fetched again" if summary.refreshed else ""
    )
    if summary.windows == 0 and summary.complete:
        click.echo(
            f"nothing to do: {db} already holds this range, settled "
            f"({summary.rows_in_db:,} rows{running}); pass --refresh to fetch it again",
            err=True,
        )
        return
    click.echo(
        f"backfill: {summary.records:,} records and {summary.updates:,} updates in "
        f"{summary.windows} windows ({summary.skipped_windows} already done) in "
        f"{summary.seconds:.1f} s; {db} holds {summary.rows_in_db:,} rows{running}",
        err=True,
    )
    if not summary.complete:
        upto = (
            "nothing yet" if summary.settled_until is None
            else f"up to {_iso(summary.settled_until)}"
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

    summary, expected = _run(job, on_interrupt="Run the demo again to resume.")
    click.echo(
        f"demo: {summary.records:,} new records from {summary.windows} windows in "
        f"{summary.seconds:.1f} s; {db} now holds {summary.rows_in_db:,} rows "
        f"(the server has {expected:,} labs in the range)"
    )
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
    _run(
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
    make = _make_from_options(options)

    async def job() -> None:
        async with make() as client:
            doc = await fetch(client)
        _jobs.json_dump(doc)

    _run(job)


@cli.command()
# Ids are positive int64 values (LodClient.result refuses any other).
@click.argument("lab_instance_id", type=click.IntRange(1, 2**63 - 1))
@_connection_options
def get(lab_instance_id: int, **options: Any) -> None:
    """Print one lab instance result as JSON."""

    async def fetch(client: LodClient) -> Any:
        return unstructure_record(await client.result(lab_instance_id))

    _print_json(options, fetch)


@cli.command()
@click.option("--minutes", type=click.IntRange(1, 10080), default=60, show_default=True)
@_connection_options
def latest(minutes: int, **options: Any) -> None:
    """Print the results that changed in the last MINUTES as JSON."""

    async def fetch(client: LodClient) -> Any:
        return results_envelope(await client.latest_results(minutes))

    _print_json(options, fetch)


def _make_from_options(options: dict[str, Any]) -> Callable[..., LodClient]:
    return _client_factory(
        _api_key(options["api_key_file"]),
        options["base_url"],
        options["concurrency"],
        options["rate_limit"],
        options["timeout"],
        options["max_retries"],
    )


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
            return await _jobs.export(db, fmt, sys.stdout)
        with _jobs.atomic_output(out) as f:
            return await _jobs.export(db, fmt, f)

    n = _run(job)
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
    n = _run(lambda: export_parquet(db, out))
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
@_connection_options
def watch(db: Path, interval: float, settle: str, reconcile: str, **options: Any) -> None:
    """Keep the table equal to the server (recent changes, and the unsettled tail)."""
    settle_s = _duration("--settle", settle)
    reconcile_s = _duration("--reconcile", reconcile)
    make = _make_from_options(options)
    _run(
        lambda: _jobs.watch(
            make, db=db, interval=interval, out=sys.stderr, settle=settle_s,
            reconcile=reconcile_s,
        ),
        on_interrupt="watch stopped.",
    )  # fmt: skip
