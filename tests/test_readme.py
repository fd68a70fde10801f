"""
Every example in README.md runs against the simulator, so the README cannot rot.

Python blocks run as they stand in a fresh interpreter (top-level ``await`` allowed, as in
``python -m asyncio``) with ``LOD_API_KEY``/``LOD_BASE_URL`` set to a simulator's; what
they print is checked against its ground truth. Shell blocks: each ``lodresults`` command
runs, in README order and in one directory, against the block's ``lodresults simulate``
line (on a free port, with ``--days`` reaching back to the oldest ``--since``); its exit
code, output and files are checked. ``<!-- readme: not run (why) -->`` or
``<!-- readme: run by tests/... -->`` on the line before a fence exempts that block.
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
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, closing
from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path

import attrs
import click
import orjson
import pyarrow.parquet as pq
import pytest

from lodresults import CompletionStatus
from lodresults.cli._app import cli
from lodresults.testing import Simulator

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DAY = 86400

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
    """One fenced code block of the README."""

    section: str
    lang: str
    code: str
    line: int
    marker: str | None

    @property
    def name(self) -> str:
        return f"line {self.line} ({self.section})"


def readme_blocks(text: str) -> list[Block]:
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
            blocks.append(Block(section, lang, "\n".join(lines[i + 1 : end]) + "\n", i + 1, marker))
            i = end
        i += 1
    return blocks


BLOCKS = readme_blocks(README.read_text())
PYTHON = [b for b in BLOCKS if b.lang == "python" and b.marker is None]
SHELL = [b for b in BLOCKS if b.lang == "sh" and b.marker is None]


def test_every_block_is_run_or_marked() -> None:
    """Python and shell blocks only; every marker is well formed, and names a test that exists."""
    assert PYTHON and SHELL
    for block in BLOCKS:
        assert block.lang in ("python", "sh"), f"{block.name}: unknown language {block.lang!r}"
        if block.marker is None:
            continue
        m = _MARKER.match(block.marker)
        assert m, f"{block.name}: malformed marker {block.marker!r}"
        if m.group(2):
            # The test named must really run this block: it reads the README.
            assert "README" in (ROOT / m.group(2)).read_text(), block.name


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
    assert proc.returncode == 0, f"README {block.name} failed:\n{err.decode()[-3000:]}"
    return out.decode()


def _date_range(code: str) -> tuple[date, date]:
    """The ``date(...)`` pair an example iterates over."""
    found = re.findall(r"date\((\d+), (\d+), (\d+)\)", code)
    assert len(found) == 2, "the example should name its range as two date(...) values"
    a, b = (date(int(y), int(m), int(d)) for y, m, d in found)
    return a, b


def check_quick_start(block: Block, out: str, sim: Simulator) -> None:
    """One line per lab of the range, each once: id, status name, score, as the server has it."""
    a, b = _date_range(block.code)
    truth = sim.present(a, b)
    lines = out.splitlines()
    assert len(lines) == len(truth) > 100
    ids = [int(line.split()[0]) for line in lines]
    assert len(set(ids)) == len(ids) and set(ids) == set(truth)
    for line in lines:
        lab_id, status, score = line.split()
        rec = truth[int(lab_id)]
        assert status == CompletionStatus(rec["CompletionStatus"]).name
        want = rec["ExamScore"]
        assert score == ("None" if want is None else str(Decimal(str(want))))


def check_iter_results(block: Block, out: str, sim: Simulator) -> None:
    """``on_event=print`` prints the plan, then one completion per window."""
    a, b = _date_range(block.code)
    lines = out.splitlines()
    assert lines[0].startswith("WindowsPlanned(")
    weeks = -(-(b - a).days // 7)
    assert sum(line.startswith("WindowCompleted(") for line in lines) == weeks


#: Checks of what a block prints, by the heading it sits under (others: it must not raise;
#: those blocks assert their own claims).
OUTPUT_CHECKS: dict[str, Callable[[Block, str, Simulator], None]] = {
    "Quick start": check_quick_start,
    "Any date range: `iter_results`": check_iter_results,
}


def test_output_checks_name_real_sections() -> None:
    """A renamed heading cannot silently turn a check off."""
    assert set(OUTPUT_CHECKS) <= {b.section for b in PYTHON}


@pytest.mark.parametrize("block", PYTHON, ids=[b.name for b in PYTHON])
async def test_python_example_runs(block: Block, tmp_path: Path) -> None:
    """The block runs as it stands against a simulator and prints what the README says."""
    start = int(datetime(2023, 6, 1, tzinfo=timezone.utc).timestamp())
    async with Simulator(seed=3, labs_per_day=10, span=(start, int(time.time()))) as sim:
        out = await run_python(block, tmp_path, sim)
    check = OUTPUT_CHECKS.get(block.section)
    if check is not None:
        check(block, out, sim)


# --- shell blocks -----------------------------------------------------------------------------


def commands(block: Block) -> list[list[str]]:
    """The ``lodresults`` commands of a block, as argv lists (after ``&&`` too)."""
    out = []
    for line in block.code.splitlines():
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
    """Run the README's ``simulate`` line on a free port; the environment for clients."""
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
    """What the README says each command does."""
    sub = argv[1]
    if sub == "demo":
        # "a demo backfill of 90 days from the built-in simulator into SQLite"
        assert "backfilling the last 90 days into demo.db" in out
        m = re.search(r"holds ([\d,]+) rows \(all for those days\)", out)
        assert m, out
        assert len(rows(cwd / "demo.db")) == int(m.group(1).replace(",", ""))
    elif sub == "backfill":
        since = int(
            datetime.fromisoformat(option(argv, "--since") or "")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
        until = (
            int(
                datetime.fromisoformat(option(argv, "--until") or "")
                .replace(tzinfo=timezone.utc)
                .timestamp()
            )
            + DAY
            - 1
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


async def test_shell_commands_run(tmp_path: Path) -> None:
    """Every ``lodresults`` command of the README, in order, against its ``simulate`` line."""
    argvs = [argv for block in SHELL for argv in commands(block)]
    for argv in argvs:
        check_options(argv)
    ran = {argv[1] for argv in argvs} - set(NOT_RUN)
    assert {"demo", "backfill", "export", "get", "latest"} <= ran
    servers = [argv for argv in argvs if argv[1] == "simulate"]
    assert len(servers) == 1, "the README should show one `lodresults simulate` line"
    oldest = min(date.fromisoformat(since) for argv in argvs if (since := option(argv, "--since")))
    days = (date.today() - oldest).days + 30
    async with simulate(servers[0], days) as env:
        for argv in argvs:
            if argv[1] in NOT_RUN:
                continue
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "lodresults", *argv[1:], cwd=tmp_path, env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                stdin=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 120)
            text = err.decode()
            assert proc.returncode == 0, f"`{shlex.join(argv)}` failed:\n{text[-3000:]}"
            assert "Traceback" not in text
            check_command(argv, out.decode(), text, tmp_path)
