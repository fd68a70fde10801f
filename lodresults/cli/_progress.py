"""Progress reporting for long jobs: a rich bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import IO, Any, Final

import attrs
from rich.console import Console, RenderableType
from rich.progress import Progress as RichProgress
from rich.progress import ProgressColumn, SpinnerColumn, Task
from rich.progress_bar import ProgressBar
from rich.table import Column, Table

from lodresults._events import (
    Event,
    PhaseProgress,
    RequestRetried,
    Throttled,
    WindowCompleted,
    WindowsPlanned,
    WindowSplit,
)

__all__ = ["BAR_MIN", "PLAIN_WIDTH", "Part", "Progress", "fit"]

#: The bar is drawn only if it gets at least this many columns.
BAR_MIN: Final = 10
#: The plain line (not a terminal: a log, a pipe) fits this many columns.
PLAIN_WIDTH: Final = 80


@attrs.frozen
class Part:
    """One part of the status line; ``drop``: parts with lower numbers go first (None: never)."""

    text: str
    drop: int | None = None


def fit(parts: list[Part], width: int, *, sep: str = " ") -> tuple[list[str], int]:
    """
    The texts of ``parts`` that fit in ``width`` columns, dropping whole parts (lowest
    ``drop`` first, never a part without one), and the columns left for a bar (0 when
    under ``BAR_MIN``, for it is dropped before any part).
    """
    kept = [p for p in parts if p.text]
    for victim in sorted((p for p in kept if p.drop is not None), key=lambda p: p.drop or 0):
        if _width(kept, sep) <= width:
            break
        kept.remove(victim)
    texts = [p.text for p in kept]
    # The bar goes after the label (the first part), with one more separator.
    left = width - _width(kept, sep) - len(sep)
    return texts, left if left >= BAR_MIN else 0


def _width(parts: list[Part], sep: str) -> int:
    return sum(len(p.text) for p in parts) + len(sep) * max(0, len(parts) - 1)


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
            console = Console(file=self.stream)
            # One column that fits the terminal by dropping whole parts: rich's own
            # columns would cut numbers ("7… windows") when the line is too long.
            self._bar = RichProgress(
                SpinnerColumn(), _StatusColumn(self, console), console=console, transient=False
            )
            self._bar.start()
            self._task = self._bar.add_task(self.label, total=None)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        # A failure is reported in one line by the caller: no final status line then.
        if exc_type is None:
            self._refresh(force=True)
        if self._bar is not None:
            if exc_type is not None:
                # Interrupted or failed: erase the live line instead of drawing it once
                # more (after Ctrl-C the terminal's "^C" may have wrapped it: a redraw
                # would then show the last frame twice).
                self._bar.live.transient = True
            self._bar.stop()

    def parts(self) -> list[Part]:
        """What the bar shows, each part with the order it is dropped in when too wide."""
        if self.phase is not None:  # a phase that sends no windows: its labs done of total
            name, done, total = self.phase
            return [
                Part(f"{self.label}: {name}", drop=3),
                Part(f"{done:,}/{total:,} labs"),
                Part(f"retries {self.retries:,} · 429s {self.throttled:,}", drop=4),
            ]
        eta = self.eta
        # Retries and 429s when there are some: a quiet run gives their room to the bar.
        trouble = self.retries or self.throttled
        return [
            Part(self.label, drop=3),
            Part(
                f"{self.done:,}/{self.total:,} windows" if self.total else f"{self.done:,} windows"
            ),
            Part(f"{self.new_records:,} records"),
            Part(f"{self.rate:,.0f}/s", drop=2),
            Part(f"ETA {_duration(eta)}" if eta is not None else "", drop=5),
            Part(f"retries {self.retries:,} · 429s {self.throttled:,}" if trouble else "", drop=4),
        ]

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace so far (None before the first window)."""
        if self.done and self.total > self.done:
            return self.elapsed / self.done * (self.total - self.done)
        return None

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
        """
        The plain status line: the bar's parts and the time elapsed, fitted to
        ``PLAIN_WIDTH`` columns by dropping whole parts as the bar does (the time elapsed
        first, then the rate, then the label), as ``label: part, part, ...``.
        """
        parts = [*self.parts(), Part(f"elapsed {_duration(self.elapsed)}", drop=1)]
        texts, _ = fit(parts, PLAIN_WIDTH, sep=", ")
        if texts and texts[0] == parts[0].text:  # "label: 3/9 windows", "label: refresh 3/9 labs"
            return texts[0] + (" " if self.phase else ": ") + ", ".join(texts[1:])
        return ", ".join(texts)

    def _refresh(self, force: bool = False) -> None:
        if self._bar is not None:
            total, done = (self.phase[2], self.phase[1]) if self.phase else (self.total, self.done)
            self._bar.update(self._task, total=max(total, done) or None, completed=done)
            return
        now = time.monotonic()
        if force or now - self._last_line >= self.interval:
            self._last_line = now
            print(self.line(), file=self.stream, flush=True)


class _StatusColumn(ProgressColumn):
    """
    The whole status as one rich column, fitted to the terminal by ``fit``: the label, a
    bar in the room that is left, then the counts.
    """

    def __init__(self, progress: Progress, console: Console) -> None:
        super().__init__(Column(no_wrap=True))
        self._progress = progress
        self._console = console

    def render(self, task: Task) -> RenderableType:
        # The spinner and the padding after it take two columns; two more are kept free so
        # that the "^C" a terminal echoes never wraps the line.
        texts, bar = fit(self._progress.parts(), self._console.width - 4)
        grid = Table.grid(padding=(0, 0))
        cells: list[RenderableType] = []
        for i, text in enumerate(texts):
            if i:
                grid.add_column(no_wrap=True)
                cells.append(" ")
            grid.add_column(no_wrap=True)
            cells.append(text)
            if i == 0 and bar:
                grid.add_column(no_wrap=True)
                grid.add_column(width=bar, no_wrap=True)
                cells += [" ", ProgressBar(total=task.total, completed=task.completed, width=bar)]
        grid.add_row(*cells)
        return grid
