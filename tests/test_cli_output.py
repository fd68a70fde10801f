"""
What the CLI shows: a progress bar that fits the terminal without cutting a number, the
last frame once after Ctrl-C, help text on every option, and options after the command.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults.cli._app import cli
from lodresults.cli._progress import BAR_MIN, Part, Progress, fit

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def screen(written: str, width: int) -> list[str]:
    """The rows a terminal of ``width`` columns shows for ``written`` (the codes rich uses)."""
    rows = [""]
    row = col = 0
    for token in re.split(r"(\x1b\[[0-9;?]*[A-Za-z]|\r|\n)", written):
        if token == "\n":
            row, col = row + 1, 0
        elif token == "\r":
            col = 0
        elif token == "\x1b[2K":
            rows[row] = ""
        elif m := re.fullmatch(r"\x1b\[(\d*)A", token):
            row = max(0, row - int(m[1] or 1))
        elif token.startswith("\x1b"):
            continue
        else:
            for ch in token:
                if col == width:  # the terminal wraps
                    row, col = row + 1, 0
                while len(rows) <= row:
                    rows.append("")
                line = rows[row].ljust(col)
                rows[row] = line[:col] + ch + line[col + 1 :]
                col += 1
        while len(rows) <= row:
            rows.append("")
    return [r.rstrip() for r in rows]


@pytest.fixture
def big(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    yield {
        "total": 67_890, "done": 12_345, "new_records": 12_345_678, "retries": 12,
        "throttled": 3,
    }  # fmt: skip


def _draw(values: dict[str, Any], width: int, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.setenv("COLUMNS", str(width))
    out = _Tty()
    with Progress("backfill", stream=out) as p:
        for k, v in values.items():
            setattr(p, k, v)
        p.started -= 3600  # an hour in: a rate and an ETA to show
        p._refresh()
    return [r for r in screen(out.getvalue(), width) if r]


@pytest.mark.parametrize("width", [60, 80, 120])
def test_the_bar_fits_and_never_cuts_a_number(
    width: int, big: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _draw(big, width, monkeypatch)
    assert len(rows) == 1, rows  # one line, not wrapped
    line = rows[0]
    assert len(line) <= width and "…" not in line
    # Every number shown is one of the real ones, whole.
    p = Progress("x")
    p.started -= 3600
    for k, v in big.items():
        setattr(p, k, v)
    whole = {f"{v:,}" for v in big.values()} | {f"{p.rate:,.0f}"}
    shown = re.findall(r"\d[\d,]*", re.sub(r"ETA \S+|429s", "", line))
    assert set(shown) <= whole, (shown, line)
    # The counts never go; at 120 columns nothing does.
    assert "12,345/67,890 windows" in line and "12,345,678 records" in line
    if width >= 120:
        assert "retries 12 · 429s 3" in line and "ETA " in line and "/s" in line
        assert "backfill" in line and "━" in line


def test_a_small_run_shows_everything_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {"total": 150, "done": 20, "new_records": 41_622, "retries": 0, "throttled": 0}
    (line,) = _draw(values, 80, monkeypatch)
    for text in ("backfill", "━", "20/150 windows", "41,622 records", "/s", "ETA"):
        assert text in line
    assert "retries" not in line  # none: their room goes to the bar


@given(
    st.lists(
        st.tuples(st.text("ab1,", min_size=1, max_size=30), st.none() | st.integers(0, 9)),
        unique_by=lambda t: t[0],
    ),
    st.integers(0, 200),
)
def test_fit_drops_whole_parts_lowest_first(
    parts: list[tuple[str, int | None]], width: int
) -> None:
    given_parts = [Part(t, d) for t, d in parts]
    texts, bar = fit(given_parts, width)
    assert all(t in [p.text for p in given_parts] for t in texts)  # whole texts only
    kept = [p for p in given_parts if p.text in texts]
    assert all(p in kept for p in given_parts if p.drop is None)
    used = sum(map(len, texts)) + max(0, len(texts) - 1)
    droppable = [p for p in kept if p.drop is not None]
    if droppable:
        assert used <= width  # it fits unless only undroppable parts are left
    dropped = [p for p in given_parts if p not in kept]
    if dropped and droppable:
        assert max(p.drop or 0 for p in dropped) <= min(p.drop or 0 for p in droppable)
    assert bar == 0 or (bar >= BAR_MIN and used + 1 + bar <= width)


def test_ctrl_c_leaves_the_last_frame_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    out = _Tty()
    progress = Progress("backfill", stream=out)
    progress.__enter__()
    progress.total, progress.done, progress.new_records = 100, 5, 1000
    progress._refresh()
    progress._bar.refresh()
    out.write("^C\n")  # the terminal echoes Ctrl-C; at the end of a full line it wraps
    progress.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None)
    rows = screen(out.getvalue(), 80)
    assert len([r for r in rows if "windows" in r]) == 1, rows


def test_success_leaves_the_final_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = _draw({"total": 3, "done": 3, "new_records": 7}, 80, monkeypatch)
    assert len([r for r in rows if "3/3 windows" in r]) == 1, rows


def test_the_plain_line_has_thousands_separators() -> None:
    p = Progress("backfill", stream=io.StringIO(), tty=False)
    p.total, p.done = 12_000, 9_872
    assert "9,872/12,000 windows" in p.line()


@pytest.mark.parametrize("label", ["backfill", "backfill acme-" + "x" * 60])
@pytest.mark.parametrize("phase", [False, True])
def test_the_plain_line_fits_80_columns(label: str, phase: bool) -> None:
    """Large counts, retries, an ETA, a long tenant label, a refresh phase: the plain line
    (logs, pipes) keeps to 80 columns by dropping whole parts, never the counts."""
    p = Progress(label, stream=io.StringIO(), tty=False)
    p.total, p.done, p.new_records = 123_456, 98_765, 98_765_432
    p.retries, p.throttled = 12_345, 6_789
    p.started -= 3 * 3600
    if phase:
        p.phase = ("refresh by Result", 54_321, 98_765)
    line = p.line()
    assert len(line) <= 80, line
    assert ("54,321/98,765 labs" if phase else "98,765/123,456 windows") in line
    if not phase:
        assert "98,765,432 records" in line


# --- help ------------------------------------------------------------------------------


def _commands(group: click.Group) -> Iterator[click.Command]:
    yield group
    for command in group.commands.values():
        if isinstance(command, click.Group):
            yield from _commands(command)
        else:
            yield command


@pytest.mark.parametrize("command", list(_commands(cli)), ids=lambda c: c.name)
def test_every_option_has_help_and_shows_its_default(command: click.Command) -> None:
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        name = param.opts[-1]
        assert param.help, f"{command.name} {name} has no help text"
        # click 8.3+ spells "no default" as a sentinel, earlier versions as None.
        unset = param.default is None or "UNSET" in repr(param.default)
        if param.is_flag or unset or name in ("--help", "--version"):
            continue
        assert param.show_default, f"{command.name} {name} does not show its default"


@pytest.mark.parametrize("width", [60, 80])
def test_a_phase_without_windows_shows_its_labs(
    width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    (line,) = _draw({"phase": ("refresh", 1_234, 56_789), "retries": 2}, width, monkeypatch)
    assert "1,234/56,789 labs" in line and len(line) <= width
