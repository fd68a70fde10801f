"""
Hardening against a hostile file system, caller and server: each test names the item of
``docs/limits.md`` it proves.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import os
import signal
import stat
import sys
import unicodedata
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timezone
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from lodresults import (
    LodApiError,
    LodClient,
    LodConnectionError,
    LodDeadlineError,
    LodInvalidArgument,
    LodRateLimitError,
    LodResponseTooLarge,
    SQLiteStore,
    StoreError,
    WindowSplit,
)
from lodresults._records.wire import structure_record
from lodresults._request.retry import MAX_PACED_WAIT
from lodresults._text import printable
from lodresults._windows.dedup import Deduplicator
from lodresults._windows.plan import Window
from lodresults.cli._export import atomic_output, csv_row, export
from lodresults.testing import ManualClock, Simulator
from tests.conftest import FIXED_SPAN, KEY, fast_client, make_fixed_sim
from tests.test_cli import _env, backfill_args, run, start
from tests.test_dedup import lab as dedup_lab
from tests.test_store import lab, make_db, names

DAY = 86400
OK, USAGE, FAILURE = 0, 2, 1


# --- 1. export writes through symlinks, into devices; Parquet permissions -----------------


async def _export_to(db: Path, fmt: str, out: Path) -> int:
    """What ``lodresults export --format fmt --out out`` does, in this process."""
    if fmt == "parquet":
        from lodresults.cli._export_parquet import export_parquet

        return await export_parquet(db, out)
    with atomic_output(out) as f:
        return await export(db, fmt, f)


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
    assert await _export_to(db, fmt, link) == 29
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
    assert await _export_to(db, fmt, node) == 29
    assert stat.S_ISCHR(node.stat().st_mode)
    assert names(tmp_path) == ["null", "r.db"]


async def test_export_to_dev_stdout_reaches_stdout(tmp_path: Path) -> None:
    """``--out /dev/stdout`` writes to the process's stdout (the pipe the test reads).
    Through a link of our own to ``/proc/self/fd/1``, which ``/dev/stdout`` is: a
    regression must not replace the system's ``/dev/stdout`` (as root it could)."""
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 30)])
    stdout = tmp_path / "stdout"
    stdout.symlink_to("/proc/self/fd/1")
    r = await run(["export", "--db", str(db), "--out", str(stdout)], _env(None))
    assert r.code == OK, r.err
    assert len(r.out.splitlines()) == 29
    assert stdout.is_symlink()


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

_KILLED_WRITER = """
import asyncio, os, signal, sys
from lodresults import SQLiteStore
from lodresults._records.wire import structure_record
from tests.test_store import lab

async def main():
    store = await SQLiteStore.open(sys.argv[1])
    await store.upsert([structure_record(lab(i)) for i in range(1, 4204)])
    os.kill(os.getpid(), signal.SIGKILL)  # before any checkpoint

asyncio.run(main())
"""


async def _export_count(db: Path) -> int:
    out = io.StringIO()
    n = await export(db, "jsonl", out)
    assert len(out.getvalue().splitlines()) == n
    return n


async def test_export_reads_rows_of_a_backfill_still_writing(tmp_path: Path) -> None:
    """A writer holds the database open: its schema and rows are in the ``-wal`` file
    only, and export reads all 4,203 of them (immutable=1 saw no tables)."""
    db = tmp_path / "r.db"
    async with SQLiteStore.open(db) as writer:
        await writer.upsert([structure_record(lab(i)) for i in range(1, 4204)])
        assert (tmp_path / "r.db-wal").stat().st_size > 0
        assert await _export_count(db) == 4203


async def test_export_reads_rows_of_a_backfill_killed_before_a_checkpoint(tmp_path: Path) -> None:
    """SIGKILL right after a window was stored: the rows live in the ``-wal`` only."""
    db = tmp_path / "r.db"
    writer = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _KILLED_WRITER, str(db), cwd=Path(__file__).parent.parent
    )
    assert await asyncio.wait_for(writer.wait(), 60) == -signal.SIGKILL
    assert (tmp_path / "r.db-wal").stat().st_size > 0
    assert await _export_count(db) == 4203


async def test_a_foreign_file_is_never_advised_to_be_removed(tmp_path: Path) -> None:
    """A file that is not SQLite at all: the error says so and does not say "remove"."""
    db = tmp_path / "notes.db"
    db.write_bytes(b"my notes, not a database" * 100)
    for readonly in (True, False):
        with pytest.raises(StoreError, match="not a usable SQLite file") as info:
            await SQLiteStore.open(db, readonly=readonly)
        assert "remove" not in str(info.value)
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

    def serving(self) -> contextlib.AbstractAsyncContextManager[str]:
        return serving(self.handle)


@contextlib.asynccontextmanager
async def serving(
    handle: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> AsyncIterator[str]:
    """An API of one handler on loopback; yields its base URL."""
    app = web.Application()
    app.router.add_get("/api/v3/{command}", handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/api/v3"
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


# --- 6. server text is escaped in CLI output and log messages -------------------------------

#: Clear the screen, set the window title (ended by BEL), a forged log line, hidden text,
#: a bidi override and a C1 CSI.
NASTY = "\x1b[2J\x1b]0;pwned\x07\r\nwatch: forged line\x1b[8mhidden\u202eevil\x9b31m"
_RAW = ("\x1b", "\x07", "\r", "\u202e", "\x9b", "\nwatch: forged")


async def _nasty(request: web.Request) -> web.Response:
    return web.json_response({"Error": NASTY, "Status": 0})


def _assert_escaped(text: str) -> None:
    assert not any(raw in text for raw in _RAW), repr(text)
    assert "\\u001b[2J" in text  # shown, escaped: the reader sees what was sent


@pytest.mark.parametrize("command", ["get", "backfill"])
async def test_server_error_text_reaches_the_terminal_escaped(tmp_path: Path, command: str) -> None:
    """A ``Status 0`` error text full of escape sequences, through ``get`` and
    ``backfill``: one line on stderr, every control character visible as ``\\uXXXX``."""
    args = ["get", "5"] if command == "get" else backfill_args(tmp_path / "r.db", 0, DAY)
    async with serving(_nasty) as url:
        r = await run(args, _env(None, LOD_API_KEY=KEY, LOD_BASE_URL=url))
    assert r.code == FAILURE
    _assert_escaped(r.out + r.err)
    assert len(r.err.strip().splitlines()) == 1


async def test_watch_prints_no_forged_lines(tmp_path: Path) -> None:
    """``watch`` reports a failed poll in one line, the server's CR/LF escaped."""
    async with serving(_nasty) as url:
        env = _env(None, LOD_API_KEY=KEY, LOD_BASE_URL=url)
        proc = await start(["watch", "--db", str(tmp_path / "r.db")], env)
        assert proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stderr.readline(), 60)
        finally:
            proc.send_signal(signal.SIGTERM)
            rest = (await asyncio.wait_for(proc.communicate(), 60))[1]
    text = (line + rest).decode()
    assert "failed, will retry" in text
    _assert_escaped(text)
    assert not any(x.startswith("watch: forged") for x in text.splitlines())


def test_error_messages_are_escaped_for_logs(caplog: pytest.LogCaptureFixture) -> None:
    """A library error logged by an application (``%s``) carries no raw control character."""
    from lodresults._records.wire import decode_json, structure_result

    with pytest.raises(LodApiError) as info:
        structure_result(decode_json(orjson.dumps({"Error": NASTY, "Status": 0})), 5)
    logging.getLogger("app").error("lodresults failed: %s", info.value)
    _assert_escaped(caplog.text)
    assert info.value.error_text == NASTY  # the attribute keeps what the server sent


async def test_get_prints_json_with_c1_and_bidi_characters_escaped() -> None:
    """``get`` prints a record whose text fields hold a C1 CSI and a bidi override as
    valid JSON with those escaped (JSON escapes only C0 controls itself)."""
    city = "Paris\x9b31m\u202eevil"
    async with Simulator(api_key=KEY, records=[lab(5, City=city)]) as sim:
        r = await run(["get", "5"], _env(sim))
    assert r.code == OK, r.err
    assert "\x9b" not in r.out and "\u202e" not in r.out
    assert orjson.loads(r.out)["City"] == city


# --- 5. a window whose answer is over max_response_bytes is split ---------------------------


async def test_a_window_over_max_response_bytes_is_split_until_it_fits() -> None:
    """A week of labs is ~170 KB; with a 40 KB cap every window is halved until its
    answer fits, and the exact set arrives (it failed every run before)."""
    events: list[object] = []
    async with make_fixed_sim() as sim:
        a = FIXED_SPAN[0] + 30 * DAY
        b = a + 28 * DAY
        async with fast_client(sim, max_response_bytes=40_000, on_event=events.append) as c:
            got = [r.lab_instance_id async for r in c.iter_results(a, b)]
            with pytest.raises(LodResponseTooLarge):
                await c.results(a, a + 7 * DAY)  # one request: refused, not split
    assert sorted(got) == sorted(sim.ids_between(a, b)) and len(got) == len(set(got))
    assert any(isinstance(e, WindowSplit) for e in events)


# --- 9. the connection pool holds max_concurrency --------------------------------------------


async def test_max_concurrency_above_100_is_not_held_back_by_the_pool() -> None:
    """120 calls at max_concurrency=120 are all in flight at once (the pool held 100, and
    the others waited for a connection inside their timeout)."""
    async with Simulator(api_key=KEY, latency=0.5, labs_per_day=1) as sim:
        async with fast_client(sim, max_concurrency=120) as c:
            await asyncio.gather(*(c.latest_results(5) for _ in range(120)))
        assert sim.stats.max_in_flight == 120


async def test_a_borrowed_session_with_a_smaller_pool_is_refused() -> None:
    """A caller's session whose connector holds fewer connections than max_concurrency."""
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=10)) as session:
        with pytest.raises(LodInvalidArgument, match="holds 10 connections"):
            LodClient(KEY, "http://127.0.0.1:9/api/v3", session=session, max_concurrency=20)


# --- 10. proxies: proxy= and trust_env, never the key in plain text to a proxy --------------


class _RecordingProxy:
    """A proxy on loopback that records what it receives and answers every request with
    ``answer`` (a refused CONNECT by default: no tunnel, so no origin is ever reached)."""

    REFUSED = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"

    def __init__(self, answer: bytes = REFUSED) -> None:
        self.answer = answer
        self.received: list[bytes] = []

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            self.received.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(self.answer)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with server:
            yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("how", ["proxy=", "trust_env"])
async def test_an_https_origin_goes_through_the_proxy_as_a_tunnel_only(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proxy (given, or named by HTTPS_PROXY with trust_env=True) receives a CONNECT
    for the origin and nothing of the key, in any spelling."""
    from tests.hostile import spellings

    proxy = _RecordingProxy()
    async with proxy.serving() as proxy_url:
        options: dict[str, object] = {"max_retries": 0}
        if how == "proxy=":
            options["proxy"] = proxy_url
        else:
            monkeypatch.setenv("HTTPS_PROXY", proxy_url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            options["trust_env"] = True
        async with LodClient(KEY, "https://lod.example.test/api/v3", **options) as c:  # type: ignore[arg-type]
            with pytest.raises(LodConnectionError):
                await c.latest_results(5)
    assert len(proxy.received) == 1
    seen = proxy.received[0].decode("latin-1")
    assert seen.startswith("CONNECT lod.example.test:443 HTTP/1.1\r\n")
    assert not any(s in seen for s in spellings(KEY).values())
    assert "api_key" not in seen.lower()


async def test_environment_proxies_are_ignored_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """trust_env=False (aiohttp's default, and ours): HTTP(S)_PROXY are not used."""
    proxy = _RecordingProxy()
    async with proxy.serving() as proxy_url, Simulator(api_key=KEY, labs_per_day=1) as sim:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
            monkeypatch.setenv(name, proxy_url)
        async with fast_client(sim) as c:
            await c.latest_results(5)
    assert proxy.received == []


async def test_a_plain_http_origin_through_a_loopback_proxy_is_proxied() -> None:
    """A loopback http origin through a loopback proxy: the key stays on this machine."""
    ok = b'{"Results": [], "Status": 1}'
    proxy = _RecordingProxy(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(ok), ok)
    )
    async with (
        proxy.serving() as proxy_url,
        LodClient(KEY, "http://127.0.0.1:9/api/v3", proxy=proxy_url) as c,
    ):
        assert await c.latest_results(5) == []
    assert proxy.received[0].startswith(b"GET http://127.0.0.1:9/api/v3/LatestResults?")


@pytest.mark.parametrize("how", ["proxy=", "trust_env"])
def test_a_plain_http_origin_through_a_remote_proxy_is_refused(
    how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key would reach the proxy unencrypted: refused before anything is sent."""
    remote = "http://proxy.corp.example:3128"
    options: dict[str, object] = {"proxy": remote}
    if how == "trust_env":
        monkeypatch.setenv("HTTP_PROXY", remote)
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        options = {"trust_env": True}
    with pytest.raises(LodInvalidArgument, match="unencrypted"):
        LodClient(KEY, "http://127.0.0.1:9/api/v3", **options)  # type: ignore[arg-type]


async def test_bodies_held_at_once_are_bounded_by_a_few(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eight 2 MB answers in flight while the decoder is slow: bodies past the large-body
    threshold (patched to 64 KB) wait for one of two permits, so memory holds about two
    bodies, not eight."""
    import time
    import tracemalloc

    from yarl import URL

    from lodresults._request import transport
    from lodresults._request.key import ApiKey

    monkeypatch.setattr(transport, "_LARGE_BODY_BYTES", 64 * 1024)
    body = b'{"Results": [], "Status": 1, "Pad": "' + b"x" * 2_000_000 + b'"}'

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)  # chunked: no Content-Length to decide by
        for i in range(0, len(body), 256 * 1024):
            await response.write(body[i : i + 256 * 1024])
        await response.write_eof()
        return response

    def slow_parse(data: bytes) -> int:
        time.sleep(0.1)
        return len(data)

    async with serving(big) as url:
        t = transport.Transport(
            URL(url), ApiKey(KEY), timeout=60, max_response_bytes=4_000_000, pool_size=8
        )

        async def one() -> int:
            answer = await t.get("Results", {})
            return await t.decode("Results", answer, slow_parse)

        tracemalloc.start()
        try:
            sizes = await asyncio.gather(*(one() for _ in range(8)))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
            await t.close()
    assert sizes == [len(body)] * 8
    assert peak < 6.5 * len(body), f"peak {peak:,} bytes"  # 8 bodies and more without


async def test_proxy_credentials_go_as_proxy_auth_and_never_into_messages() -> None:
    """``proxy="http://user:password@host"``: the password reaches the proxy in its
    Proxy-Authorization header only; the error (aiohttp quotes the proxy URL) lacks it."""
    proxy = _RecordingProxy()
    async with proxy.serving() as proxy_url:
        with_auth = proxy_url.replace("http://", "http://bob:s3cretPW@")
        url = "https://lod.example.test/api/v3"
        async with LodClient(KEY, url, proxy=with_auth, max_retries=0) as c:
            with pytest.raises(LodConnectionError) as info:
                await c.latest_results(5)
    assert "s3cretPW" not in str(info.value) and "s3cretPW" not in repr(info.value)
    assert b"Proxy-Authorization: Basic Ym9iOnMzY3JldFBX" in proxy.received[0]


async def test_cli_proxy_option_is_checked_before_any_request() -> None:
    """``--proxy`` to a remote host for a plain-http base URL: a usage error."""
    env = _env(None, LOD_API_KEY=KEY, LOD_BASE_URL="http://127.0.0.1:9/api/v3")
    r = await run(["latest", "--proxy", "http://proxy.corp.example:3128"], env)
    assert r.code == USAGE and "unencrypted" in r.err


@pytest.mark.parametrize("hours", [1, 12, 23])
def test_a_start_moved_forward_by_less_than_the_tolerance_is_yielded_once(hours: int) -> None:
    """The documented limit (docs/limits.md): a lab whose Start moves forward across a
    window's end by less than SKEW_TOLERANCE (a day) between the two windows' fetches is
    yielded once, the later copy as an update."""
    w1, w2 = Window(0, 7 * DAY), Window(7 * DAY, 14 * DAY)
    d = Deduplicator(w1.start, w2.end)
    moved = hours * 3600
    before = dedup_lab(1, w1.end - moved // 2, w1.end - moved // 2 + 60, 0)
    after = dedup_lab(1, w2.start + moved // 2, w2.start + moved // 2 + 60, 1)
    fresh, _ = d.take(w1, [(0, [before])])
    assert fresh == [before]
    fresh, updates = d.take(w2, [(1, [after])])
    assert fresh == [] and updates == [after]


_BIDI_CONTROLS = ("LRE", "RLE", "LRO", "RLO", "PDF", "LRI", "RLI", "FSI", "PDI")


def _unsafe(c: str) -> bool:
    return (
        unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")
        or unicodedata.bidirectional(c) in _BIDI_CONTROLS
    )


#: Every such character of the BMP but the surrogates (two stand for them), drawn often:
#: plain text rarely holds one.
_UNSAFE_CHARS = [
    c for c in map(chr, range(0x10000)) if _unsafe(c) and unicodedata.category(c) != "Cs"
] + ["\ud800", "\udfff"]


def test_printable_escapes_every_unsafe_character_of_the_bmp() -> None:
    """Each of them alone, so that none depends on a random draw."""
    assert [c for c in _UNSAFE_CHARS if _unsafe_left(printable(c))] == []
    # JSON text: its encoder escapes C0 controls inside strings; the rest is its layout.
    beyond_c0 = [c for c in _UNSAFE_CHARS if c >= "\x20"]
    assert [c for c in beyond_c0 if _unsafe_left(printable(c, json=True))] == []


def _unsafe_left(text: str) -> bool:
    return any(_unsafe(c) for c in text)


@given(st.text(st.one_of(st.characters(), st.sampled_from(_UNSAFE_CHARS))))
def test_printable_leaves_no_control_character(text: str) -> None:
    """Whatever a server sends: no C0/C1 control, line or paragraph separator, bidi
    control or surrogate survives, and JSON text stays the same JSON."""
    assert not any(_unsafe(c) for c in printable(text))
    if not any(unicodedata.category(c) == "Cs" for c in text):
        doc = orjson.dumps({"Error": text}).decode()
        assert orjson.loads(printable(doc, json=True)) == {"Error": text}


def test_dev_stdout_is_written_into_even_when_redirected_to_a_file() -> None:
    """``--out /dev/stdout`` with stdout redirected to a file (``>> log``): written into,
    at the shell's offset, never replaced by a new file."""
    from lodresults._destinations.output import resolve_output

    for name in ("/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"):
        assert resolve_output(Path(name)).direct, name
