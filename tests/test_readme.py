"""
Every example in README.md and in the documentation (docs/*.md) runs against the
simulator, so none can rot.

Python blocks run as they stand in a fresh interpreter (top-level ``await`` allowed, as in
``python -m asyncio``) with ``LOD_API_KEY``/``LOD_BASE_URL`` set to a simulator's; what
they print is checked against its ground truth where it matters. Shell blocks: each
``lodresults`` command of a page runs, in order and in one directory, against the page's
``lodresults simulate`` line, or a default one (on a free port, with ``--days`` reaching
back to the oldest ``--since``); its exit code, output and files are checked.
``<!-- readme: not run (why) -->`` or ``<!-- readme: run by tests/... -->`` on the line
before a fence exempts that block; blocks in a language that is not code to run (``text``
for output, ``toml``...) are never run.
"""

from __future__ import annotations

import asyncio
import csv
import os
import re
import shlex
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, closing
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path

import attrs
import click
import orjson
import pyarrow.parquet as pq
import pytest

from lodresults import CompletionStatus
from lodresults.cli._app import cli
from lodresults.testing import ManualClock, Simulator

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
DAY = 86400

#: Languages shown but never run (output, configuration); ``python`` and ``sh`` run.
SHOWN_ONLY = frozenset({"text", "toml", "yaml", "json", "ini", "sql"})

_MARKER = re.compile(r"^<!-- readme: (not run \(.+\)|run by (tests/\S+\.py).*) -->$")

#: Runs one block from a file: compiled with top-level await allowed; run in an event loop
#: only when it has one (a block with its own ``asyncio.run`` is a plain script).
_RUNNER = """
import ast, asyncio, inspect, sys
path = sys.argv[1]
code = compile(open(path).read(), path, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
ns = {"__name__": "__main__"}
if code.co_flags & inspect.CO_COROUTINE:
    asyncio.run(eval(code, ns))
else:
    exec(code, ns)
"""


@attrs.frozen
class Block:
    """One fenced code block of a page (README.md or docs/*.md)."""

    page: str
    section: str
    lang: str
    code: str
    line: int
    marker: str | None

    @property
    def name(self) -> str:
        return f"{self.page} line {self.line} ({self.section})"


def readme_blocks(text: str, page: str = "README.md") -> list[Block]:
    """Every fenced block with the heading it sits under and the marker before it."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            section = line.lstrip("#").strip()
        elif line.startswith("```"):
            lang = line[3:].strip()
            end = lines.index("```", i + 1)
            before = next((x for x in reversed(lines[:i]) if x.strip()), "")
            marker = before if before.startswith("<!-- readme:") else None
            code = "\n".join(lines[i + 1 : end]) + "\n"
            blocks.append(Block(page, section, lang, code, i + 1, marker))
            i = end
        i += 1
    return blocks


#: README.md, then every page of the documentation.
PAGES = [README, *sorted(DOCS.glob("*.md"))]
BLOCKS = [b for p in PAGES for b in readme_blocks(p.read_text(), p.relative_to(ROOT).as_posix())]
PYTHON = [b for b in BLOCKS if b.lang == "python" and b.marker is None]
SHELL = [b for b in BLOCKS if b.lang == "sh" and b.marker is None]


def test_every_block_is_run_or_marked() -> None:
    """Every block runs, is marked, or is not code; a marker names a test that reads its page."""
    assert {b.page for b in PYTHON} >= {"README.md", "docs/ranges.md", "docs/testing.md"}
    assert {b.page for b in SHELL} >= {"README.md", "docs/backfill.md", "docs/warehouses.md"}
    for block in BLOCKS:
        known = block.lang in ("python", "sh") or block.lang in SHOWN_ONLY
        assert known, f"{block.name}: unknown language {block.lang!r} (python, sh or text)"
        if block.marker is None:
            continue
        m = _MARKER.match(block.marker)
        assert m, f"{block.name}: malformed marker {block.marker!r}"
        if m.group(2):
            # The test named must really run this block: it reads the page.
            named = (ROOT / m.group(2)).read_text()
            assert block.page in named, f"{block.name}: {m.group(2)} never reads {block.page}"


# --- Python blocks ----------------------------------------------------------------------------


async def run_python(block: Block, tmp: Path, sim: Simulator) -> str:
    """Run ``block`` in a fresh interpreter; its stdout. Fails the test if it fails."""
    path = tmp / f"readme_line_{block.line}.py"
    path.write_text(block.code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOD_")}
    env.update(LOD_API_KEY=sim.api_key, LOD_BASE_URL=sim.base_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _RUNNER, str(path), cwd=tmp, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 90)
    assert proc.returncode == 0, f"{block.name} failed:\n{err.decode()[-3000:]}"
    return out.decode()


def _days_back(code: str) -> list[int]:
    """The ``timedelta(days=N)`` values an example counts back from today, in order."""
    return [int(n) for n in re.findall(r"timedelta\(days=(\d+)\)", code)]


def check_quick_start(block: Block, out: str, sim: Simulator) -> None:
    """One line per lab of the last 30 days, each once: id, status name, score, as the
    server has them; then one lab fetched by id."""
    (days,) = _days_back(block.code)
    until = date.today()
    truth = sim.present(until - timedelta(days=days), until)
    lines = [line for line in out.splitlines() if not line.startswith("latest:")]
    latest = out.splitlines()[len(lines) :]  # a lab of the last hour, if there was one
    assert len(lines) == len(truth) > 100
    ids = [int(line.split()[0]) for line in lines]
    assert len(set(ids)) == len(ids) and set(ids) == set(truth)
    for line in lines:
        lab_id, status, score = line.split()
        rec = truth[int(lab_id)]
        assert status == CompletionStatus(rec["CompletionStatus"]).name
        want = rec["ExamScore"]
        assert score == ("None" if want is None else str(Decimal(str(want))))
    for line in latest:
        _, lab_id, status = line.split()
        rec = sim.present(0, int(time.time()))[int(lab_id)]
        assert status == CompletionStatus(rec["CompletionStatus"]).name


def check_iter_results(block: Block, out: str, sim: Simulator) -> None:
    """``on_event=print`` prints the plan, then one completion per window planned."""
    lines = out.splitlines()
    planned = re.match(r"WindowsPlanned\(total=(\d+),", lines[0])
    assert planned, lines[0]
    done = sum(line.startswith("WindowCompleted(") for line in lines)
    assert done == int(planned.group(1)) >= 4


def check_labs_between(block: Block, out: str, sim: Simulator) -> None:
    """ "N labs between A and B": exactly the server's count for the range."""
    m = re.fullmatch(r"(\d+) labs between (\S+) and (\S+)\n", out)
    assert m, out
    a, b = date.fromisoformat(m.group(2)), date.fromisoformat(m.group(3))
    assert int(m.group(1)) == len(sim.present(a, b)) > 100


def check_first_script(block: Block, out: str, sim: Simulator) -> None:
    """A count of the last week's labs, then the first of them as a ``LabResult``."""
    count, record = out.splitlines()
    assert re.fullmatch(r"[1-9]\d* labs in the last 7 days", count), count
    assert record.startswith("LabResult(lab_instance_id=")


def check_backfill(block: Block, out: str, sim: Simulator) -> None:
    """ "W windows, N labs, U updates": every lab of the range stored, in 9+ windows."""
    m = re.fullmatch(r"(\d+) windows, (\d+) labs, (\d+) updates\n", out)
    assert m, out
    back, length = _days_back(block.code)
    until = date.today() - timedelta(days=back)
    truth = sim.present(until - timedelta(days=length), until)
    assert int(m.group(1)) >= length // 7 and int(m.group(2)) == len(truth) > 100


def check_events(block: Block, out: str, sim: Simulator) -> None:
    """The hook saw one ``WindowCompleted`` per window; every lab of the range came."""
    m = re.fullmatch(r"(\d+) windows, (\d+) labs\n", out)
    assert m, out
    (days,) = _days_back(block.code)
    assert int(m.group(1)) >= days // 7
    assert int(m.group(2)) == len(sim.present(date.today() - timedelta(days=days), date.today()))


#: Checks of what a block prints, by page and heading (others: it must not raise; those
#: blocks assert their own claims).
OUTPUT_CHECKS: dict[tuple[str, str], Callable[[Block, str, Simulator], None]] = {
    ("README.md", "Quick start"): check_quick_start,
    ("README.md", "Any date range: `iter_results`"): check_iter_results,
    ("docs/ranges.md", "Date ranges and windows"): check_labs_between,
    ("docs/ranges.md", "Progress, events and logging"): check_events,
    ("docs/getting-started.md", "A first script"): check_first_script,
    ("docs/backfill.md", "From your own code"): check_backfill,
}


def test_output_checks_name_real_sections() -> None:
    """A renamed heading cannot silently turn a check off."""
    sections = [(b.page, b.section) for b in PYTHON]
    assert set(OUTPUT_CHECKS) <= set(sections)


#: Examples run this many at a time: most of their time is spent waiting (pacing, latency).
PARALLEL = 4


async def run_and_check(block: Block, tmp: Path) -> None:
    """Run ``block`` against a fresh simulator and check what it printed."""
    start = int(datetime(2023, 6, 1, tzinfo=timezone.utc).timestamp())
    now = time.time()
    # The simulator's world holds still (a clock that does not move), so what the example
    # printed and the ground truth read after it are of the same moment.
    frozen = ManualClock(now)
    async with Simulator(seed=3, labs_per_day=10, span=(start, int(now)), clock=frozen) as sim:
        out = await run_python(block, tmp, sim)
        check = OUTPUT_CHECKS.get((block.page, block.section))
        if check is not None:
            check(block, out, sim)


async def run_all(jobs: dict[str, Callable[[], Awaitable[None]]]) -> dict[str, BaseException]:
    """Run every job, ``PARALLEL`` at a time; the failure of each job that failed."""
    gate = asyncio.Semaphore(PARALLEL)
    failed: dict[str, BaseException] = {}

    async def one(name: str, job: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            try:
                await job()
            except Exception as exc:
                failed[name] = exc

    await asyncio.gather(*(one(name, job) for name, job in jobs.items()))
    return failed


@pytest.fixture(scope="module")
def python_failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseException]:
    """Every Python block, run once for the module (concurrently: the suite stays quick)."""
    jobs = {b.name: partial(run_and_check, b, tmp_path_factory.mktemp("example")) for b in PYTHON}
    return asyncio.run(run_all(jobs))


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
def test_python_example_runs(block: Block, python_failures: dict[str, BaseException]) -> None:
    """The block runs as it stands against a simulator and prints what its page says."""
    if block.name in python_failures:
        raise python_failures[block.name]


# --- shell blocks -----------------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The ``lodresults`` commands of a block, as argv lists (after ``&&`` too)."""
    out = []
    for line in block.code.replace("\\\n", " ").splitlines():  # continuation lines joined
        for part in line.split("&&"):
            argv = shlex.split(part, comments=True)
            if argv and Path(argv[0]).name == "lodresults":
                out.append(["lodresults", *argv[1:]])
    return out


def option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def check_options(argv: list[str]) -> None:
    """The subcommand exists and takes every flag shown."""
    command = cli.commands.get(argv[1])
    assert isinstance(command, click.Command), f"no command {argv[1]!r}"
    known = {o for p in command.params for o in p.opts}
    for arg in argv[2:]:
        if arg.startswith("-"):
            assert arg in known, f"{' '.join(argv)}: {arg} is not an option of {argv[1]}"


@asynccontextmanager
async def simulate(argv: list[str], days: int) -> AsyncIterator[dict[str, str]]:
    """Run a page's ``simulate`` line on a free port; the environment for clients."""
    args = [a if option(argv, "--port") != a else "0" for a in argv[1:]]
    if "--days" not in args:
        args += ["--days", str(days)]
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lodresults", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        first = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        second = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        url = re.search(r"on (http://\S+)", first)
        key = re.search(r"api key: (\S+)", second)
        assert url and key, f"simulate did not start: {first!r} {second!r}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("LOD_")}
        env.update(LOD_API_KEY=key.group(1), LOD_BASE_URL=url.group(1), COLUMNS="200")
        yield env
    finally:
        proc.terminate()
        await proc.wait()


def rows(db: Path) -> dict[int, tuple[int, int | None]]:
    with closing(sqlite3.connect(db)) as c:
        return {
            r[0]: (r[1], r[2])
            for r in c.execute("SELECT lab_instance_id, start, end FROM lab_results")
        }


def check_command(argv: list[str], out: str, err: str, cwd: Path) -> None:
    """What the pages say each command does."""
    sub = argv[1]
    if sub == "demo":
        # "a demo backfill of 90 days (--days) from the built-in simulator into SQLite"
        assert f"backfilling the last {option(argv, '--days') or 90} days into demo.db" in out
        m = re.search(r"holds ([\d,]+) rows \(all for those days\)", out)
        assert m, out
        assert len(rows(cwd / "demo.db")) == int(m.group(1).replace(",", "")) > 1000
    elif sub == "backfill":
        since = int(
            datetime.fromisoformat(option(argv, "--since") or "")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
        last = option(argv, "--until")
        until = (
            int(datetime.fromisoformat(last).replace(tzinfo=timezone.utc).timestamp()) + DAY - 1
            if last is not None
            else int(time.time())
        )
        got = rows(cwd / (option(argv, "--db") or ""))
        assert len(got) > 100
        # every lab started or ended in the range, --until's whole day included
        assert all(
            since <= s <= until or (e is not None and since <= e <= until) for s, e in got.values()
        )
    elif sub == "export":
        db = rows(cwd / (option(argv, "--db") or ""))
        target = cwd / (option(argv, "--out") or "")
        fmt = option(argv, "--format")
        if fmt == "csv":
            with target.open(newline="") as f:
                ids = [int(r["lab_instance_id"]) for r in csv.DictReader(f)]
        elif fmt == "parquet":
            ids = pq.read_table(target).column("lab_instance_id").to_pylist()
        else:
            ids = [orjson.loads(line)["LabInstanceId"] for line in target.read_text().splitlines()]
        assert sorted(ids) == sorted(db)
    elif sub == "get":
        assert orjson.loads(out)["LabInstanceId"] == int(argv[2])
    elif sub == "latest":
        # the labs that started or ended in the last --minutes, in the API's envelope
        since = int(time.time()) - 60 * int(option(argv, "--minutes") or "") - 60
        doc = orjson.loads(out)
        assert doc["Status"] == 1
        assert all(r["Start"] >= since or (r["End"] or 0) >= since for r in doc["Results"])
    else:  # pragma: no cover - a new command in the README needs its check here
        raise AssertionError(f"no check for `lodresults {sub}`: add one to tests/test_readme.py")


#: Commands that run until signalled: their flags are checked, they are run elsewhere.
NOT_RUN = {"watch": "tests/test_cli.py::test_watch_stops_on_sigterm", "simulate": "the server"}


#: The pages with ``lodresults`` commands to run, and the commands each must show.
SHELL_PAGES = sorted({b.page for b in SHELL if commands(b)})
MUST_SHOW = {
    "README.md": {"demo", "backfill", "export", "get", "latest"},
    "docs/backfill.md": {"backfill", "export"},
}

#: A page that shows no ``simulate`` line runs against this one.
DEFAULT_SERVER = ["lodresults", "simulate", "--port", "0"]


def test_shell_pages_are_the_expected_ones() -> None:
    assert set(MUST_SHOW) <= set(SHELL_PAGES)


async def run_page(page: str, cwd: Path) -> None:
    """Every ``lodresults`` command of a page, in order, against its ``simulate`` line."""
    argvs = [argv for block in SHELL if block.page == page for argv in commands(block)]
    ran = {argv[1] for argv in argvs} - set(NOT_RUN)
    assert MUST_SHOW.get(page, set()) <= ran
    servers = [argv for argv in argvs if argv[1] == "simulate"]
    assert len(servers) <= 1, f"{page} should show at most one `lodresults simulate` line"
    sinces = [date.fromisoformat(since) for argv in argvs if (since := option(argv, "--since"))]
    days = (date.today() - min(sinces, default=date.today())).days + 30
    async with simulate(servers[0] if servers else DEFAULT_SERVER, days) as env:
        for argv in argvs:
            if argv[1] in NOT_RUN:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lodresults", *argv[1:], cwd=cwd, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            text = err.decode()
            assert proc.returncode == 0, f"{page}: `{shlex.join(argv)}` failed:\n{text[-3000:]}"
            assert "Traceback" not in text
            check_command(argv, out.decode(), text, cwd)


@pytest.fixture(scope="module")
def shell_failures(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BaseException]:
    """Every page's commands, run once for the module (pages concurrently, each in order)."""
    jobs = {page: partial(run_page, page, tmp_path_factory.mktemp("page")) for page in SHELL_PAGES}
    return asyncio.run(run_all(jobs))


def test_every_shell_command_exists() -> None:
    """Every ``lodresults`` line shown, run or not, names a command and its real options."""
    shown = [argv for b in BLOCKS if b.lang == "sh" for argv in commands(b)]
    assert len(shown) > 20
    for argv in shown:
        check_options(argv)


@pytest.mark.parametrize("page", SHELL_PAGES)
def test_shell_commands_run(page: str, shell_failures: dict[str, BaseException]) -> None:
    """Every ``lodresults`` command of a page, in order, against its ``simulate`` line."""
    if page in shell_failures:
        raise shell_failures[page]
