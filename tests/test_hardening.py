"""
Hardening against a hostile file system, caller and server: each test names the item of
``docs/limits.md`` it proves.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator
from datetime import datetime, timezone
from pathlib import Path

import pytest
from aiohttp import web

from lodresults import (
    LodClient,
    LodDeadlineError,
    LodInvalidArgument,
    LodRateLimitError,
    SQLiteStore,
)
from lodresults._records.wire import structure_record
from lodresults._request.retry import MAX_PACED_WAIT
from lodresults._windows.dedup import Deduplicator
from lodresults._windows.plan import Window
from lodresults.cli._export import csv_row
from lodresults.testing import ManualClock
from tests.conftest import KEY
from tests.test_cli import _env, run
from tests.test_dedup import lab as dedup_lab
from tests.test_store import lab, make_db, names

DAY = 86400
OK, USAGE, FAILURE = 0, 2, 1


# --- 1. export writes through symlinks, into devices; Parquet permissions -----------------


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
async def test_export_writes_through_a_symlink_to_its_target(tmp_path: Path, fmt: str) -> None:
    """``--out link`` replaces the target's content and keeps the link (a rename over the
    link made it a regular file and left the target as it was)."""
    pytest.importorskip("pyarrow")
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 30)])
    target = tmp_path / "data" / f"target.{fmt}"
    target.parent.mkdir()
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / f"link.{fmt}"
    link.symlink_to(target)
    r = await run(["export", "--db", str(db), "--format", fmt, "--out", str(link)], _env(None))
    assert r.code == OK, r.err
    assert link.is_symlink() and link.resolve() == target
    assert target.read_bytes() != b"old" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
async def test_export_into_a_device_node_writes_to_it_and_keeps_it(
    tmp_path: Path, fmt: str
) -> None:
    """A real character device (``/dev/null``'s numbers, made with mknod in a temp dir)
    stays a device: the export is written into it, not renamed over it."""
    pytest.importorskip("pyarrow")
    node = tmp_path / "null"
    try:
        os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("mknod is not permitted here (needs root or CAP_MKNOD)")
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 30)])
    r = await run(["export", "--db", str(db), "--format", fmt, "--out", str(node)], _env(None))
    assert r.code == OK, r.err
    assert stat.S_ISCHR(node.stat().st_mode)
    assert names(tmp_path) == ["null", "r.db"]


async def test_export_to_dev_stdout_reaches_stdout(tmp_path: Path) -> None:
    """``--out /dev/stdout`` writes to the process's stdout (the pipe the test reads)."""
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 30)])
    r = await run(["export", "--db", str(db), "--out", "/dev/stdout"], _env(None))
    assert r.code == OK, r.err
    assert len(r.out.splitlines()) == 29


async def test_parquet_export_gets_the_permissions_of_csv(tmp_path: Path) -> None:
    """A new Parquet file is 0666 less the umask, like CSV/JSON lines (mkstemp made 0600)."""
    pytest.importorskip("pyarrow")
    from lodresults._destinations.parquet import write_parquet

    out = tmp_path / "x.parquet"
    old = os.umask(0o022)
    try:
        write_parquet([structure_record(lab(1))], out)
    finally:
        os.umask(old)
    assert stat.S_IMODE(out.stat().st_mode) == 0o644


# --- 2. a read-only open reads the WAL ----------------------------------------------------

_WRITER = """
import asyncio, os, signal, sys
from lodresults import SQLiteStore
from lodresults._records.wire import structure_record
from tests.test_store import lab

async def main():
    store = await SQLiteStore.open(sys.argv[1])
    await store.write_window(0, 10, [structure_record(lab(i)) for i in range(1, 4204)])
    print("written", flush=True)
    if sys.argv[2] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    sys.stdin.readline()  # hold the database open until told

asyncio.run(main())
"""


@pytest.mark.parametrize("how", ["racing", "killed"])
async def test_export_reads_rows_that_live_only_in_the_wal(tmp_path: Path, how: str) -> None:
    """A backfill still writing, or killed with SIGKILL before any checkpoint: its schema
    and rows are in the ``-wal`` file only, and export reads all 4,203 of them."""
    db = tmp_path / "r.db"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _WRITER, str(db), "kill" if how == "killed" else "hold",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert writer.stdout is not None and writer.stdin is not None
    assert await asyncio.wait_for(writer.stdout.readline(), 60) == b"written\n"
    if how == "killed":
        assert await writer.wait() == -signal.SIGKILL
    assert (tmp_path / "r.db-wal").stat().st_size > 0
    try:
        r = await run(["export", "--db", str(db)], _env(None))
    finally:
        if writer.returncode is None:
            writer.stdin.write(b"\n")
            await writer.wait()
    assert r.code == OK, r.err
    assert len(r.out.splitlines()) == 4203


async def test_a_foreign_file_is_never_advised_to_be_removed(tmp_path: Path) -> None:
    """A file that is not SQLite at all: the error says so and does not say "remove"."""
    db = tmp_path / "notes.db"
    db.write_bytes(b"my notes, not a database" * 100)
    r = await run(["export", "--db", str(db)], _env(None))
    assert r.code == FAILURE
    assert "not a usable SQLite database" in r.err and "remove" not in r.err
    assert db.read_bytes() == b"my notes, not a database" * 100


# --- 7. a key outside printable ASCII is refused by the library too --------------------------


@pytest.mark.parametrize("key", ["clé-secrète-0123456789", "key\x7f0123456789", "ключ0123456789"])
def test_a_non_ascii_key_is_refused_before_any_request(key: str) -> None:
    """Such a key would go out as UTF-8 bytes that a 401 may echo as latin-1 mojibake,
    which no scrubber recognises; the error quotes none of it."""
    with pytest.raises(LodInvalidArgument, match="printable ASCII") as info:
        LodClient(key, base_url="http://127.0.0.1:9/api/v3")
    text = str(info.value)
    assert key not in text and key.encode().decode("latin-1") not in text


# --- 8. a key file is read a few KB at most ------------------------------------------------


@pytest.mark.parametrize("source", ["big", "/dev/zero"])
async def test_a_huge_key_file_is_refused_after_a_few_kb(tmp_path: Path, source: str) -> None:
    """``--api-key-file /dev/zero`` (or a log given by mistake) is refused at once."""
    path = Path(source)
    if source == "big":
        path = tmp_path / "big.txt"
        path.write_text("k" * 1_000_000)
    env = _env(None, LOD_BASE_URL="http://127.0.0.1:9/api/v3")
    r = await run(["latest", "--api-key-file", str(path)], env, timeout=30)
    assert r.code == USAGE
    assert "more than 4096 bytes" in r.err


# --- 11. the small ones ----------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.localhost", "a.b.localhost", "localhost.attacker.net"])
def test_plain_http_to_a_localhost_subdomain_is_refused(host: str) -> None:
    """``*.localhost`` is loopback only where the resolver says so: not trusted blindly."""
    with pytest.raises(LodInvalidArgument, match="plain http"):
        LodClient(KEY, base_url=f"http://{host}/api/v3")


def test_a_change_between_values_with_equal_hashes_is_an_update() -> None:
    """``hash(-1) == hash(-2)``: a fingerprint by hash missed this change; values do not."""
    w1, w2 = Window(0, 7 * DAY), Window(7 * DAY, 14 * DAY)
    d = Deduplicator(w1.start, w2.end)
    first = dedup_lab(1, w1.end - 60, w2.start + 60, -1)
    second = dedup_lab(1, w1.end - 60, w2.start + 60, -2)
    assert hash(first) == hash(second)
    fresh, _ = d.take(w1, [(0, [first])])
    assert fresh == [first]
    fresh, updates = d.take(w2, [(1, [second])])
    assert fresh == [] and updates == [second]


async def test_sqlite_store_close_twice_and_async_with(tmp_path: Path) -> None:
    """``close()`` is idempotent, and the store is an async context manager both ways."""
    db = tmp_path / "r.db"
    store = await SQLiteStore.open(db)
    await store.close()
    await store.close()
    async with SQLiteStore.open(db) as opened:
        assert await opened.count() == 0
    async with await SQLiteStore.open(db, readonly=True) as again:
        assert await again.count() == 0
    await again.close()


def test_csv_spells_year_one_with_four_digits() -> None:
    """``strftime("%Y")`` wrote year 1 as ``1-01-01T00:00:00Z``."""
    record = structure_record(lab(1))
    import attrs

    early = attrs.evolve(record, start=datetime(1, 1, 1, tzinfo=timezone.utc))
    assert "0001-01-01T00:00:00Z" in csv_row(early)


# --- 3 and 4. 429s with Retry-After are pacing, not failures ---------------------------------


class _Storm:
    """A server on loopback that answers 429 (Retry-After: 1) until ``until`` on ``clock``
    (or only to the first ``first`` requests), then empty ``Results``."""

    def __init__(self, clock: ManualClock, *, until: float = 0.0, first: int = 0) -> None:
        self.clock, self.until, self.first = clock, until, first
        self.requests = 0
        self.refused = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        if self.clock() < self.until or self.requests <= self.first:
            self.refused += 1
            return web.json_response(
                {"Error": "Too many requests", "Status": 0}, status=429,
                headers={"Retry-After": "1"},
            )  # fmt: skip
        return web.json_response({"Results": [], "Status": 1, "Error": None})

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        app = web.Application()
        app.router.add_get("/api/v3/{command}", self.handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            yield f"http://127.0.0.1:{port}/api/v3"
        finally:
            await runner.cleanup()


T0 = 1_700_000_000.0


async def test_a_15_second_429_storm_completes_with_the_defaults() -> None:
    """Every request refused with Retry-After for 15 s (virtual), then answered: a call
    and an iteration with nothing but the defaults both complete (max_retries=5 counted
    the 429s as failures and gave up after about 6 s)."""
    clock = ManualClock(T0)
    storm = _Storm(clock, until=T0 + 15)
    async with storm.serving() as url, LodClient(KEY, url, clock=clock) as client:
        assert await client.results(0, DAY) == []
        assert clock() >= T0 + 15
        storm.until = clock() + 15
        got = [r async for r in client.iter_results(0, 21 * DAY)]
    assert got == [] and storm.refused > 30


async def test_a_storm_that_never_ends_stops_at_the_documented_bound() -> None:
    """Without a deadline a call rides out 429s for MAX_PACED_WAIT seconds, no longer; with
    one, the deadline is the bound."""
    clock = ManualClock(T0)
    storm = _Storm(clock, until=math.inf)
    async with storm.serving() as url, LodClient(KEY, url, clock=clock) as client:
        with pytest.raises(LodRateLimitError):
            await client.results(0, DAY)
        assert T0 + MAX_PACED_WAIT - 2 <= clock() <= T0 + MAX_PACED_WAIT
    async with storm.serving() as url, LodClient(KEY, url, clock=clock, deadline=30) as client:
        started = clock()
        with pytest.raises(LodDeadlineError):
            await client.results(0, DAY)
        assert clock() - started == pytest.approx(30)


async def test_one_early_429_costs_its_retry_after_when_unpaced() -> None:
    """``rate_limit=None``, single calls, the first one refused with Retry-After 1: the
    next 30 calls go out unpaced (the pace fell to 0.2/s and took minutes to climb)."""
    clock = ManualClock(T0)
    storm = _Storm(clock, first=1)
    async with storm.serving() as url, LodClient(KEY, url, clock=clock, rate_limit=None) as c:
        for _ in range(31):
            await c.results(0, DAY)
        assert clock() - T0 <= 1.1 + 0.01  # the Retry-After and its jitter, nothing more
        assert c.current_rate is None
