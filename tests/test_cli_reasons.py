"""
Failures told in one plain line (a refused key, a name that does not resolve, a refused
connection, a wrong base URL), fast; no empty database left by a first run that fails;
a reader that goes away (``| head``) is a quiet success.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from click.testing import CliRunner, Result

from lodresults import LodClient, LodConnectionError
from lodresults._records.wire import structure_record
from lodresults.cli._app import cli
from lodresults.cli._jobs import format_status_counts
from lodresults.testing import Simulator
from tests.conftest import KEY, make_sim, threaded
from tests.test_store import lab, make_db

DAY = 86400
REFUSED = "http://127.0.0.1:9/api/v3"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with threaded(make_sim()) as server:
        yield server


def invoke(args: list[str], sim: Simulator | None = None, **env: str) -> Result:
    environ = {"LOD_API_KEY": KEY, "COLUMNS": "80"}
    if sim is not None:
        environ["LOD_BASE_URL"] = sim.base_url
    environ.update(env)
    return CliRunner().invoke(cli, args, env=environ)


def _backfill(sim: Simulator, db: Path, *extra: str) -> list[str]:
    a = sim.span[1] - 20 * DAY
    return ["backfill", "--since", str(a), "--until", str(a + 9 * DAY), "--db", str(db), *extra]


#: A progress line (written every 5 s, which a loaded machine may reach before the error).
_PROGRESS = re.compile(r"^backfill: .*\d+/\d+ (windows|labs)")


def _error_line(result: Result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not _PROGRESS.match(ln)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# --- one plain line --------------------------------------------------------------------


def test_a_refused_key_is_not_a_window_failure(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    result = invoke(_backfill(sim, db), sim, LOD_API_KEY="wrong-key-0123456789")
    assert result.exit_code == 1
    line = _error_line(result)
    assert "HTTP 401" in line and "check LOD_API_KEY or --api-key-file" in line
    assert "window" not in line and "epoch" not in line
    assert not db.exists()  # and no empty database left behind


def test_a_wrong_base_url_says_to_check_it(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    wrong = sim.base_url.removesuffix("/api/v3") + "/api/v2"
    result = invoke(_backfill(sim, db), sim, LOD_BASE_URL=wrong)
    assert result.exit_code == 1
    line = _error_line(result)
    assert f"HTTP 404 Not Found at {wrong}" in line
    assert "check the base URL, it should end in /api/v3" in line
    assert "window" not in line
    assert not db.exists()


def test_a_refused_connection_is_plain(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    args = ["backfill", "--since", "2024-01-01", "--until", "2024-01-02", "--db", str(db)]
    result = invoke([*args, "--max-retries", "0"], LOD_BASE_URL=REFUSED)
    line = _error_line(result)
    assert "cannot connect to 127.0.0.1:9 (Connection refused)" in line
    assert "ssl:default" not in line and "window" not in line
    assert not db.exists()


def test_latest_and_get_say_the_same(tmp_path: Path) -> None:
    for args in (["latest"], ["get", "5"]):
        line = _error_line(invoke([*args, "--max-retries", "0"], LOD_BASE_URL=REFUSED))
        assert "cannot connect to 127.0.0.1:9 (Connection refused)" in line


class _Resolver(AbstractResolver):
    """Fails every lookup as the system resolver does (``socket.gaierror``), counting them."""

    def __init__(self, code: int, message: str) -> None:
        self.error = socket.gaierror(code, message)
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        raise self.error

    async def close(self) -> None:
        pass


async def _lookups(code: int, message: str) -> tuple[LodConnectionError, int]:
    resolver = _Resolver(code, message)
    connector = aiohttp.TCPConnector(resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        client = LodClient(
            KEY, base_url="https://nosuch.invalid/api/v3", session=session, max_retries=3,
            retry_initial_wait=0, retry_max_wait=0,
        )  # fmt: skip
        with pytest.raises(LodConnectionError) as caught:
            await client.latest_results(5)
        await client.close()
    return caught.value, resolver.calls


async def test_a_name_that_does_not_resolve_fails_at_once() -> None:
    error, calls = await _lookups(socket.EAI_NONAME, "Name or service not known")
    assert calls == 1  # not retried: it would not resolve on the next attempt either
    assert str(error) == (
        "LatestResults: cannot resolve host nosuch.invalid (Name or service not known)"
    )
    assert not error.retryable


async def test_a_temporary_resolver_failure_is_retried() -> None:
    error, calls = await _lookups(socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert calls == 4
    assert "cannot resolve host nosuch.invalid (Temporary failure" in str(error)


def test_undocumented_status_codes_read_plainly() -> None:
    assert format_status_counts({4: 812, 70: 51, 3: 2_000}) == (
        "Incomplete: 2,000, Complete: 812, code 70 (undocumented): 51"
    )


# --- no empty database ------------------------------------------------------------------


def test_watch_leaves_no_file_when_its_first_request_fails(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "w.db"
    result = invoke(["watch", "--db", str(db)], sim, LOD_API_KEY="wrong-key-0123456789")
    assert result.exit_code == 1 and "HTTP 401" in result.stderr
    assert not db.exists()
    assert not list(tmp_path.iterdir())  # no -wal or -shm either


def test_an_existing_database_is_never_removed(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    asyncio.run(make_db(db, []))
    result = invoke(_backfill(sim, db), sim, LOD_API_KEY="wrong-key-0123456789")
    assert result.exit_code == 1
    assert db.exists()


@pytest.mark.parametrize("what", ["rows only", "checkpoints only"])
def test_a_run_that_stored_something_keeps_its_file(
    what: str, sim: Simulator, tmp_path: Path
) -> None:
    # The first windows are stored, then the server fails every request. Rows with no
    # checkpoint: recent windows, not settled; checkpoints with no row: settled windows
    # from before the first lab.
    db = tmp_path / "r.db"
    a = sim.span[1] - 30 * DAY if what == "rows only" else sim.span[0] - 40 * DAY
    fail = Simulator(
        records=sim.records, span=sim.span, api_key=KEY,
        fail_range=(a + 20 * DAY, a + 30 * DAY), fail_kind="http500",
    )  # fmt: skip
    with threaded(fail):
        args = ["backfill", "--since", str(a), "--until", str(a + 29 * DAY), "--db", str(db)]
        settle = "60d" if what == "rows only" else "1h"
        args += ["--max-retries", "0", "--concurrency", "1", "--settle", settle]
        result = invoke(args, fail)
    assert result.exit_code == 1, result.stderr
    assert db.exists()


# --- a reader that goes away ------------------------------------------------------------


def _closed_pipe(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the CLI with a standard output nobody reads (the reader closed it at once)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run(
            [sys.executable, "-m", "lodresults", *args], stdout=write, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, env=env, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        os.close(write)


def test_a_closed_pipe_is_a_quiet_success(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    asyncio.run(make_db(db, [structure_record(lab(i)) for i in range(1, 50)]))
    env = {**os.environ, "LOD_API_KEY": KEY, "LOD_BASE_URL": sim.base_url}
    some_id = next(iter(sim.ids_between(sim.span[0], sim.span[1])))
    for args in (["export", "--db", str(db)], ["get", str(some_id)], ["latest"]):
        done = _closed_pipe(args, env)
        assert (done.returncode, done.stderr) == (0, ""), args


def test_debug_is_accepted_after_the_command(tmp_path: Path) -> None:
    env = {**os.environ, "LOD_API_KEY": KEY, "LOD_BASE_URL": REFUSED}
    done = subprocess.run(
        [sys.executable, "-m", "lodresults", "get", "5", "--max-retries", "0", "--debug"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" in done.stderr  # --debug took effect
    assert "cannot connect to 127.0.0.1:9" in done.stderr.rstrip().splitlines()[-1]


def test_single_request_commands_offer_no_concurrency() -> None:
    for name in ("get", "latest"):
        assert "--concurrency" not in [o for p in cli.commands[name].params for o in p.opts]
    for name in ("backfill", "watch"):
        assert "--concurrency" in [o for p in cli.commands[name].params for o in p.opts]
