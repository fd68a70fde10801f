"""
Living data through the CLI in subprocesses, on real time (a process cannot share a manual
clock): the world is changed between runs by replacing labs in the running simulator.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from lodresults._destinations.sqlite_schema import COLUMNS, record_from_row
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults.testing import Simulator
from tests.test_cli import _env, db_ids, run
from tests.test_living import assert_table_is_present, make_lab

DAY = 86400
HOUR = 3600


def rows(db: Path) -> dict[int, object]:
    cols = ", ".join(f'"{c}"' for c in COLUMNS)
    with closing(sqlite3.connect(db)) as c:
        got = [record_from_row(r) for r in c.execute(f"SELECT {cols} FROM lab_results")]
    return {r.lab_instance_id: r for r in got}


def checkpoint_end(db: Path) -> int:
    with closing(sqlite3.connect(db)) as c:
        return int(c.execute('SELECT MAX("end") FROM backfill_windows').fetchone()[0])


async def test_nightly_cron_through_the_cli(tmp_path: Path) -> None:
    """
    Run 1 stores a running lab and an exam awaiting its grade; then the lab ends, the exam
    is graded and a new lab starts; run 2 fetches one window, from where run 1's settled
    checkpoints end, and the table equals the server's present state.
    """
    now = int(time.time())
    since = now - 20 * DAY
    until = now + DAY  # --until the end of "today": in the future
    running = make_lab(1, now - 2 * HOUR, now + 30 * DAY)
    submitted = make_lab(2, now - 3 * HOUR, now - HOUR, graded=now + 30 * DAY, exam=True)
    old = make_lab(3, now - 15 * DAY, now - 15 * DAY + HOUR)
    db = tmp_path / "n.db"
    args = ["backfill", "--since", str(since), "--until", str(until), "--db", str(db),
            "--rate-limit", "1000", "--settle", "2h"]  # fmt: skip
    async with Simulator(records=[running, submitted, old]) as sim:
        r1 = await run(args, _env(sim))
        assert r1.code == 0, r1.err
        assert "settled up to" in r1.err and "run it again later" in r1.err
        got = rows(db)
        assert got[1].end is None and int(got[2].completion_status) == 50
        horizon = checkpoint_end(db)
        assert horizon <= int(time.time()) - 2 * HOUR

        # Meanwhile: the lab ends, the exam is graded, a new lab starts.
        t = int(time.time())
        sim.dataset.upsert(make_lab(1, now - 2 * HOUR, t - 60))
        sim.dataset.upsert(make_lab(2, now - 3 * HOUR, now - HOUR, graded=t - 30, exam=True))
        sim.dataset.upsert(make_lab(4, t - 120, t + 30 * DAY))
        seen = len(sim.log)
        r2 = await run(args, _env(sim))
        assert r2.code == 0, r2.err
        fetched = [e.query for e in list(sim.log)[seen:] if e.path.endswith("/Results")]
        # only the tail, one window (asked from a day before it: SKEW_TOLERANCE)
        assert [int(q["start"]) for q in fetched] == [horizon - SKEW_TOLERANCE]
        got = rows(db)
        assert got[1].end is not None and int(got[2].completion_status) == 4
        assert 4 in got
        assert_table_is_present(got, sim.present(since, until))  # type: ignore[arg-type]


async def test_bad_settle_is_a_usage_error(tmp_path: Path) -> None:
    """--settle that is not a duration exits 2 before anything is sent."""
    r = await run(
        ["backfill", "--since", "2026-01-01", "--settle", "3 days", "--db", str(tmp_path / "x")],
        _env(None, LOD_API_KEY="k", LOD_BASE_URL="http://127.0.0.1:9/api/v3"),
    )
    assert r.code == 2 and "--settle" in r.err and "36h" in r.err


async def test_demo_twice_never_mixes_two_datasets(tmp_path: Path) -> None:
    """Another seed: the demo database is started afresh, saying so; rows match the server."""
    db = tmp_path / "demo.db"
    base = ["demo", "--db", str(db), "--days", "7", "--latency-ms", "0", "--labs-per-day", "40"]
    r1 = await run([*base, "--seed", "1"], _env(None))
    assert r1.code == 0, r1.err
    r2 = await run([*base, "--seed", "2"], _env(None))
    assert r2.code == 0, r2.err
    assert "held another demo dataset (seed=1" in r2.out
    n = len(db_ids(db))
    assert f"holds {n:,} rows (all for those days)" in r2.out


async def test_demo_refuses_a_database_of_real_results(tmp_path: Path) -> None:
    """A database that holds other results is never touched by the demo."""
    db = tmp_path / "real.db"
    async with Simulator(records=[make_lab(1, 1_700_000_000, 1_700_003_600)]) as sim:
        args = ["backfill", "--since", "1699990000", "--until", "1700010000", "--db", str(db)]
        assert (await run(args, _env(sim))).code == 0
    r = await run(["demo", "--db", str(db), "--days", "1", "--latency-ms", "0"], _env(None))
    assert r.code == 1 and "not from the demo" in r.err
    assert db_ids(db) == [1]
