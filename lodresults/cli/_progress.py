"""Progress reporting for long jobs: a rich bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

from lodresults._events import (
    Event,
    PhaseProgress,
    RequestRetried,
    Throttled,
    WindowCompleted,
    WindowsPlanned,
    WindowSplit,
)

__all__ = ["Progress"]


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """
    Counts windows, records, retries and 429s from client events and shows them.

    On a TTY it draws a rich progress bar (windows done/total, records, rate, ETA,
    retries); otherwise it writes one plain line every ``interval`` seconds to ``stream``.
    Use as a context manager; pass ``progress.on_event`` as the client's event hook.
    """

    def __init__(
        self,
        label: str,
        *,
        stream: IO[str] | None = None,
        tty: bool | None = None,
        interval: float = 5.0,
    ) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval = interval
        self.total = 0
        self.done = 0
        self.records = 0
        self.new_records = 0
        self.retries = 0
        self.throttled = 0
        self.splits = 0
        # A phase that sends no windows (the refresh by Result): (name, done, total).
        self.phase: tuple[str, int, int] | None = None
        self.started = time.monotonic()
        self._last_line = 0.0
        self._bar: Any = None
        self._task: Any = None

    def __enter__(self) -> Progress:
        # The first plain line after one interval: a job that fails at once reports only
        # its error line.
        self.started = self._last_line = time.monotonic()
        if self.tty:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                SpinnerColumn,
                TextColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                SpinnerColumn(),
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"),
                TextColumn("{task.fields[records]:>9,} records"),
                TextColumn("{task.fields[rate]:>7,.0f}/s"),
                TimeRemainingColumn(),
                TextColumn("retries {task.fields[retries]} · 429s {task.fields[throttled]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task(
                self.label, total=None, records=0, rate=0.0, retries=0, throttled=0,
                unit="windows",
            )  # fmt: skip
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # A failure is reported in one line by the caller: no final status line then.
        if exc_type is None:
            self._refresh(force=True)
        if self._bar is not None:
            self._bar.stop()

    @property
    def elapsed(self) -> float:
        """Seconds since the job started."""
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        """New records per second so far."""
        return self.new_records / self.elapsed if self.elapsed > 0 else 0.0

    def on_event(self, event: Event) -> None:
        """The event hook: update counters and the display."""
        if isinstance(event, WindowsPlanned):
            self.total += event.total
        elif isinstance(event, WindowCompleted):
            self.done += 1
            self.records += event.records
            self.new_records += event.new_records
        elif isinstance(event, RequestRetried):
            self.retries += 1
        elif isinstance(event, Throttled):
            self.throttled += 1
        elif isinstance(event, WindowSplit):
            self.splits += 1
        elif isinstance(event, PhaseProgress):
            self.phase = (event.phase, event.done, event.total)
        self._refresh()

    def line(self) -> str:
        """The plain status line."""
        eta = ""
        if self.done and self.total > self.done:
            eta = f", ETA {_duration(self.elapsed / self.done * (self.total - self.done))}"
        if self.phase is not None:
            name, done, total = self.phase
            return (
                f"{self.label}: {name} {done:,}/{total:,} labs, elapsed {_duration(self.elapsed)}"
            )
        return (
            f"{self.label}: {self.done}/{self.total} windows, {self.new_records:,} records, "
            f"{self.rate:,.0f} records/s{eta}, retries {self.retries}, 429s {self.throttled}, "
            f"elapsed {_duration(self.elapsed)}"
        )

    def _refresh(self, force: bool = False) -> None:
        if self._bar is not None and self.phase is not None:
            name, done, total = self.phase
            self._bar.update(
                self._task, description=f"{self.label}: {name}", total=total,
                completed=done, unit="labs",
            )  # fmt: skip
            return
        if self._bar is not None:
            self._bar.update(
                self._task,
                total=max(self.total, self.done) or None,
                completed=self.done,
                records=self.new_records,
                rate=self.rate,
                retries=self.retries,
                throttled=self.throttled,
            )
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.interval:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)
