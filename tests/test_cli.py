"""The CLI through its real entry point (a subprocess) against the simulator on loopback."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest

from lodresults import LabResult, unstructure_record
from lodresults._records.wire import structure_record
from lodresults.cli._dates import parse_when
from lodresults.cli._watch import watch
from lodresults.testing import Faults, ManualClock, Simulator
from tests.conftest import fast_client, make_sim
from tests.csv_records import read_csv

DAY = 86400


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err


def _env(sim: Simulator | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOD_")}
    env["COLUMNS"] = "200"
    if sim is not None:
        env["LOD_API_KEY"] = sim.api_key
        env["LOD_BASE_URL"] = sim.base_url
    env.update(extra)
    return env


async def start(args: Sequence[str], env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lodresults", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL, env=env,
    )  # fmt: skip


async def run(args: Sequence[str], env: dict[str, str], timeout: float = 60) -> Run:
    proc = await start(args, env)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def db_ids(db: Path) -> list[int]:
    with closing(sqlite3.connect(db)) as c:
        return [r[0] for r in c.execute("SELECT lab_instance_id FROM lab_results")]


def windows_done(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with closing(sqlite3.connect(db)) as c:
            return int(c.execute("SELECT COUNT(*) FROM backfill_windows").fetchone()[0])
    except sqlite3.Error:
        return 0


def backfill_args(db: Path, a: int, b: int, *extra: str) -> list[str]:
    return ["backfill", "--since", str(a), "--until", str(b), "--db", str(db),
            "--rate-limit", "1000", *extra]  # fmt: skip


async def test_backfill_fetches_the_exact_set_and_rerun_is_a_no_op(
    sim: Simulator, tmp_path: Path
) -> None:
    """A backfill stores exactly the server's labs; running it again sends nothing."""
    db = tmp_path / "r.db"
    a = sim.span[0] + 40 * DAY
    b = a + 70 * DAY
    r = await run(backfill_args(db, a, b), _env(sim))
    assert r.code == 0, r.err
    ids = db_ids(db)
    assert len(ids) == len(set(ids))
    assert set(ids) == sim.ids_between(a, b)
    assert "backfill:" in r.err and "windows" in r.err
    sent = sim.stats.total
    r2 = await run(backfill_args(db, a, b), _env(sim))
    assert r2.code == 0 and "nothing to do" in r2.err
    assert sim.stats.total == sent
    r3 = await run(backfill_args(db, a, b, "--refresh"), _env(sim))
    assert r3.code == 0 and sim.stats.total > sent
    assert sorted(db_ids(db)) == sorted(ids)


async def test_stored_rows_equal_the_server_records(sim: Simulator, tmp_path: Path) -> None:
    """Rows read back (via export jsonl) equal the server's records field by field."""
    db = tmp_path / "r.db"
    a = sim.span[0] + 10 * DAY
    b = a + 20 * DAY
    assert (await run(backfill_args(db, a, b), _env(sim))).code == 0
    r = await run(["export", "--db", str(db), "--format", "jsonl"], _env(None))
    assert r.code == 0
    got = {d["LabInstanceId"]: d for d in map(orjson.loads, r.out.splitlines())}
    truth = {d["LabInstanceId"]: d for d in sim.between(a, b)}
    assert got == truth
    assert "export: " in r.err


async def test_export_csv_round_trips(sim: Simulator, tmp_path: Path) -> None:
    """CSV export parses back to the same records as the JSON lines export."""
    db = tmp_path / "r.db"
    a = sim.span[0] + 10 * DAY
    assert (await run(backfill_args(db, a, a + 15 * DAY), _env(sim))).code == 0
    out = tmp_path / "x.csv"
    r = await run(["export", "--db", str(db), "--format", "csv", "--out", str(out)], _env(None))
    assert r.code == 0
    from_csv = read_csv(out.read_text())
    r2 = await run(["export", "--db", str(db)], _env(None))
    from_jsonl = [structure_record(orjson.loads(line)) for line in r2.out.splitlines()]
    assert from_csv == from_jsonl and len(from_csv) > 100


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_mid_run_then_resume_is_exact(tmp_path: Path, seed: int) -> None:
    """SIGKILL at a random point, then the same command again: the exact set, once each."""
    import random

    rng = random.Random(seed)
    db = tmp_path / "r.db"
    async with make_sim(latency=0.03) as sim:
        a = sim.span[0] + 5 * DAY + rng.randint(0, DAY)
        b = a + 250 * DAY
        args = backfill_args(db, a, b, "--concurrency", "2")
        proc = await start(args, _env(sim))
        target = rng.randint(2, 20)
        for _ in range(2000):
            if windows_done(db) >= target or proc.returncode is not None:
                break
            await asyncio.sleep(0.005)
        proc.kill()
        await proc.communicate()
        assert proc.returncode == -signal.SIGKILL
        done_before = windows_done(db)
        assert 0 < done_before < 36
        r = await run(args, _env(sim))
        assert r.code == 0, r.err
        ids = db_ids(db)
        assert len(ids) == len(set(ids))
        assert set(ids) == sim.ids_between(a, b)
        assert f"({done_before} already done)" in r.err


async def test_ctrl_c_stops_cleanly_and_says_how_to_resume(tmp_path: Path) -> None:
    """SIGINT: exit 130, a resume hint, committed windows kept; the rerun completes."""
    db = tmp_path / "r.db"
    async with make_sim(latency=0.05) as sim:
        a = sim.span[0] + 5 * DAY
        b = a + 300 * DAY
        args = backfill_args(db, a, b, "--concurrency", "1")
        proc = await start(args, _env(sim))
        for _ in range(2000):
            if windows_done(db) >= 3:
                break
            await asyncio.sleep(0.005)
        proc.send_signal(signal.SIGINT)
        _out, err = await asyncio.wait_for(proc.communicate(), 20)
        assert proc.returncode == 130
        text = err.decode()
        assert "interrupted (SIGINT)" in text and "run the same command again" in text
        assert "Traceback" not in text
        assert windows_done(db) >= 3
        r = await run(args, _env(sim))
        assert r.code == 0
        assert set(db_ids(db)) == sim.ids_between(a, b)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["backfill", "--since", "yesterday-ish"], "not a date"),
        (["backfill", "--since", "2024-02-30"], "not a valid date"),
        (["backfill", "--since", "2024-03-01", "--until", "2024-01-01"], "before --since"),
        (["backfill", "--since", "1800-01-01"], "outside 1970"),
        (["backfill", "--since", "2024-01-01", "--concurrency", "0"], "concurrency"),
        (["latest", "--minutes", "0"], "minutes"),
        (["get", "abc"], "abc"),
        (["export", "--db", "/nonexistent/x.db"], "does not exist"),
        (["backfill", "--since", "2024-01-01", "--base-url", "http://example.com/api"], "http"),
    ],
)
async def test_usage_errors_exit_2(sim: Simulator, args: list[str], needle: str) -> None:
    """Bad flags give a clear message and exit code 2; nothing is sent."""
    r = await run(args, _env(sim))
    assert r.code == 2, (r.code, r.err)
    assert needle in r.err
    assert "Traceback" not in r.err
    assert sim.stats.total == 0


async def test_missing_key_exits_2(sim: Simulator, tmp_path: Path) -> None:
    """No LOD_API_KEY and no --api-key-file: exit 2 explaining both."""
    env = _env(sim)
    del env["LOD_API_KEY"]
    r = await run(["backfill", "--since", "2024-01-01", "--db", str(tmp_path / "x.db")], env)
    assert r.code == 2 and "LOD_API_KEY" in r.err and "--api-key-file" in r.err


async def test_key_file_and_wrong_key(sim: Simulator, tmp_path: Path) -> None:
    """--api-key-file works; a wrong key is one line, exit 1, and never echoed."""
    key_file = tmp_path / "key"
    key_file.write_text(sim.api_key + "\n")
    env = _env(sim)
    del env["LOD_API_KEY"]
    r = await run(["latest", "--minutes", "60", "--api-key-file", str(key_file)], env)
    assert r.code == 0, r.err
    assert orjson.loads(r.out)["Status"] == 1
    key_file.write_text("wrong-key-zzz")
    r = await run(["latest", "--api-key-file", str(key_file)], env)
    assert r.code == 1
    assert r.err.startswith("error: ") and r.err.count("\n") == 1
    assert "401" in r.err and "wrong-key-zzz" not in r.err + r.out


async def test_network_failure_is_one_line_and_debug_shows_traceback(tmp_path: Path) -> None:
    """Connection refused: a one-line error, exit 1; --debug adds the traceback."""
    env = _env(None, LOD_API_KEY="k", LOD_BASE_URL="http://127.0.0.1:9/api/v3")
    r = await run(["latest", "--max-retries", "0"], env)
    assert r.code == 1 and r.err.startswith("error: ") and "Traceback" not in r.err
    r = await run(["--debug", "latest", "--max-retries", "0"], env)
    assert r.code == 1 and "Traceback" in r.err


async def test_get_prints_the_api_shape(sim: Simulator) -> None:
    """get ID prints the record as the API spells it."""
    truth = sim.records[5]
    r = await run(["get", str(truth["LabInstanceId"])], _env(sim))
    assert r.code == 0
    assert orjson.loads(r.out) == truth


async def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """demo: the simulator in-process, a backfill, a summary with status counts."""
    db = tmp_path / "demo.db"
    r = await run(
        ["demo", "--db", str(db), "--days", "21", "--latency-ms", "5", "--labs-per-day", "50"],
        _env(None),
    )
    assert r.code == 0, r.err
    assert "demo: completion status: Complete" in r.out
    rows = len(db_ids(db))
    assert f"holds {rows:,} rows (all for those days)" in r.out
    # 21 days up to now, asked from a day before to a day after (SKEW_TOLERANCE): 23 days.
    assert "demo backfill: 4/4 windows" in r.err


async def test_watch_stops_on_sigterm(sim: Simulator, tmp_path: Path) -> None:
    """watch fetches the tail, then polls the feed, and exits cleanly on SIGTERM."""
    db = tmp_path / "w.db"
    proc = await start(["watch", "--db", str(db), "--interval", "1"], _env(sim))
    # The second poll of the feed: the run of the first has printed its line by then (the
    # first request alone may still be in flight when the signal lands).
    for _ in range(3000):
        if sim.stats.requests["LatestResults"] >= 2:
            break
        await asyncio.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 130
    text = err.decode()
    assert "windows, 1 request: " in text and " new, 0 changed, 0 unchanged" in text
    assert "feed, 1 request: " in text and "watch stopped" in text
    assert all(len(line) <= 80 for line in text.splitlines())
    assert _meta(db, "engine.last_run")


def _meta(db: Path, key: str) -> str | None:
    try:
        with closing(sqlite3.connect(db)) as c:
            row = c.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


async def test_watch_survives_transient_errors_and_catches_up(tmp_path: Path) -> None:
    """Failed runs are reported and retried; a watch whose clock runs ten days ahead of
    the server's stores the server's time and catches a change with the feed."""
    db = tmp_path / "w.db"
    out = io.StringIO()
    # The simulator's clock stands still (a real one could tick between two reads of
    # sim.now below), the watch's own clock jumps ten days.
    frozen = ManualClock(time.time())
    async with make_sim(faults=Faults(rate=1.0, kinds=("http500",)), clock=frozen) as sim:
        clock = [float(sim.now)]
        await watch(lambda **kw: fast_client(sim, max_retries=0, **kw), db=db, interval=0.01,
                    out=out, iterations=2, clock=lambda: clock[0])  # fmt: skip
        assert out.getvalue().count("run failed, will retry") == 2
        sim.faults = Faults()
        await watch(lambda **kw: fast_client(sim, **kw), db=db, interval=0.01, out=out,
                    iterations=1, clock=lambda: clock[0])  # fmt: skip
        assert float(_meta(db, "engine.last_run") or 0) <= sim.now
        # a lab changes state after the last run; our clock jumps ten days, not the server's
        lab: dict[str, Any] = dict(next(r for r in sim.records if r["End"] is None))
        lab.update(End=sim.now + 5, CompletionStatus=4)
        sim.dataset.upsert(lab)
        clock[0] += 10 * DAY
        before = sim.stats.requests["Results"]
        await watch(lambda **kw: fast_client(sim, **kw), db=db, interval=0.01, out=out,
                    iterations=1, clock=lambda: clock[0])  # fmt: skip
        # the feed, read after one minute of it told the server's time, and the tail up
        # to the server's present: one window, not eleven days of them
        assert sim.stats.requests["Results"] == before + 1
        assert float(_meta(db, "engine.last_run") or 0) <= sim.now + 1
    with closing(sqlite3.connect(db)) as c:
        end, status = c.execute(
            'SELECT "end", completion_status FROM lab_results WHERE lab_instance_id = ?',
            (lab["LabInstanceId"],),
        ).fetchone()
    assert (end, status) == (sim.now + 5, 4)
    assert "feed, 2 requests: " in out.getvalue()


def test_upsert_keeps_the_copy_written_last(tmp_path: Path) -> None:
    """The copy written last wins, whatever its last_activity says (equal, null, earlier)."""
    from lodresults import SQLiteStore

    base = _lab()
    ended = structure_record({**base, "End": base["Start"] + 100, "CompletionStatus": 50})
    graded_same_activity = structure_record(
        {**base, "End": base["Start"] + 100, "CompletionStatus": 4, "ExamScore": 87.5}
    )
    graded_no_activity = structure_record(
        {**base, "End": base["Start"] + 100, "CompletionStatus": 4, "LastActivity": None}
    )
    earlier_activity = structure_record(
        {**base, "End": base["Start"] + 100, "LastActivity": base["Start"] + 1}
    )

    async def go() -> list[list[LabResult]]:
        store = await SQLiteStore.open(tmp_path / "s.db")
        seen = []
        try:
            for copy in (ended, graded_same_activity, graded_no_activity, earlier_activity):
                await store.upsert([copy])
                seen.append(await store.run_sync(lambda s: list(s.iter_records_sync())))
            return seen
        finally:
            await store.close()

    assert asyncio.run(go()) == [
        [ended],
        [graded_same_activity],
        [graded_no_activity],
        [earlier_activity],
    ]


def test_corrupt_database_is_a_clear_error(tmp_path: Path) -> None:
    """A file that is not SQLite gives StoreError naming the file, not silent loss."""
    from lodresults import SQLiteStore, StoreError

    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="not a usable SQLite file"):
        asyncio.run(SQLiteStore.open(bad))


async def test_locked_database_is_a_clear_error(sim: Simulator, tmp_path: Path) -> None:
    """A database locked by another writer fails with exit 1 and says it is locked."""
    db = tmp_path / "l.db"
    assert (await run(backfill_args(db, sim.span[0], sim.span[0] + DAY), _env(sim))).code == 0
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = await run(backfill_args(db, sim.span[0], sim.span[0] + 20 * DAY), _env(sim))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert r.code == 1 and "locked" in r.err


@pytest.mark.parametrize(
    ("text", "end_of_day", "expected"),
    [
        ("2024-01-01", False, 1704067200),
        ("2024-01-01", True, 1704067200 + DAY - 1),
        ("2024-01-01T12:00:00Z", False, 1704110400),
        ("2024-01-01T14:00:00+02:00", False, 1704110400),
        ("2024-01-01T12:00:00", False, 1704110400),
        ("1704067200", False, 1704067200),
    ],
)
def test_parse_when(text: str, end_of_day: bool, expected: int) -> None:
    """Dates, datetimes with or without offset, and epoch seconds."""
    assert parse_when(text, end_of_day=end_of_day) == expected


def _lab() -> dict[str, Any]:
    return {
        "LabInstanceId": 77, "LabProfileId": 1, "Start": 1_700_000_000, "End": None,
        "LastActivity": 1_700_000_050, "UserId": "u", "ClassId": None, "CompletionStatus": 3,
        "TotalRunTimeSeconds": 50, "TaskCompletePercent": 10, "IsExam": False,
        "ExamPassed": None, "ExamScore": None, "ExamMaxPossibleScore": None,
        "ExamPassingScore": None, "IpAddress": None, "Country": None, "Region": None,
        "City": None, "Latitude": None, "Longitude": None, "LabHostId": 1,
        "DatacenterId": 1, "DeliveryRegionId": 1,
    }  # fmt: skip


def test_records_round_trip_through_the_store(tmp_path: Path) -> None:
    """Every field survives SQLite: decimals exact, ints stay ints, unknown codes kept."""
    from lodresults import SQLiteStore

    recs = [
        structure_record({**_lab(), "LabInstanceId": 1, "ExamScore": 87.5, "Latitude": 47.6062,
                          "CompletionStatus": 70, "End": 1_700_000_100}),
        structure_record({**_lab(), "LabInstanceId": 2, "ExamScore": 88, "Longitude": -0.1278}),
    ]  # fmt: skip

    async def go() -> list[LabResult]:
        store = await SQLiteStore.open(tmp_path / "s.db")
        try:
            await store.apply(recs, checkpoint=(0, 10))
            return await store.run_sync(lambda s: list(s.iter_records_sync()))
        finally:
            await store.close()

    back = asyncio.run(go())
    assert back == recs
    assert [unstructure_record(r) for r in back] == [unstructure_record(r) for r in recs]


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"LOD_BASE_URL": "ftp://example.com/api"}, "base_url"),
        ({"LOD_BASE_URL": "http://203.0.113.9/api/v3"}, "unencrypted"),
        ({"LOD_API_KEY": "   "}, "LOD_API_KEY"),
    ],
)
async def test_bad_environment_exits_2(sim: Simulator, env: dict[str, str], needle: str) -> None:
    """Bad LOD_BASE_URL / LOD_API_KEY values are usage errors; nothing is sent."""
    r = await run(["latest"], _env(sim, **env))
    assert r.code == 2, r.err
    assert needle in r.err
    assert sim.stats.total == 0
