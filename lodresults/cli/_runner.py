"""
How a command runs: one line on stderr for every failure, and its exit code.

Exit codes: 0 ok, 2 usage error, 1 API / auth / network / database failure (one line on
stderr, no traceback unless ``--debug``), 130 interrupted (Ctrl-C or SIGTERM).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from lodresults._exceptions import LodError
from lodresults._text import printable

__all__ = ["EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_USAGE", "Cli", "run"]

T = TypeVar("T")

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class Interrupted(Exception):
    """The job was stopped by a signal."""


#: click >= 8.2 raises this for a bare group (earlier versions print the help and exit 0).
_NO_ARGS_IS_HELP: tuple[type[click.ClickException], ...] = tuple(
    t for t in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if t is not None
)


class Cli(click.Group):
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


def run(job: Callable[[], Awaitable[T]], *, on_interrupt: str | None = None) -> T:
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
    text = printable(" ".join(str(exc).split()))
    return text if len(text) <= 400 else text[:397] + "..."
