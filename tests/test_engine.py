"""
The engine against the living simulator: what each run costs (requests per command) and
that it ends with the server's present state -- through the library, the CLI and dlt.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from lodresults import LodApiError, LodAuthError, SQLiteStore, backfill
from lodresults._destinations.base import OpenLab
from lodresults._engine.refresh import plan_refresh
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.testing import Lab, ManualClock, Simulator, generate_labs
from tests.test_cli import _env, run
from tests.test_living import assert_table_is_present, client_for, make_lab, table

DAY = 86400
HOUR = 3600
T0 = 1_767_254_400  # 2026-01-01T08:00:00Z
SINCE, UNTIL = T0 - 20 * DAY, T0 - 5 * DAY  # settled at T0 (three days' settle)


def runners(n: int, until: int, t0: int, ended: int = 2 * DAY) -> list[Lab]:
    """
    ``n`` labs that start in the last two days before ``until`` and run past it: a
    quarter end between the first run (at ``t0``) and a day later, a quarter are exams
    that ended ``ended`` before ``t0`` and are graded half a day after it, half still run.
    """
    first_id = 1
    out = []
    for i in range(n):
        start = until - (i % 48) * HOUR - 60
        kind = i % 4
        if kind == 0:
            out.append(make_lab(first_id + i, start, t0 + 6 * HOUR))
        elif kind == 1:
            end = t0 - ended
            out.append(make_lab(first_id + i, start, end, graded=t0 + 12 * HOUR, exam=True))
        else:
            out.append(make_lab(first_id + i, start, t0 + 30 * DAY))
    return out


def world(n: int = 200) -> list[Lab]:
    background = generate_labs(seed=3, start=SINCE - 2 * DAY, end=T0, labs_per_day=20)
    return [*background, *runners(n, UNTIL, T0)]


def sent(sim: Simulator) -> dict[str, int]:
    return {c: sim.stats.requests[c] for c in ("Results", "Result", "LatestResults")}


def since_then(sim: Simulator, before: Mapping[str, int]) -> dict[str, int]:
    return {c: n - before[c] for c, n in sent(sim).items() if n > before[c]}


async def backfill_once(
    sim: Simulator, clock: Callable[[], float], db: Path, since: int, until: int, **kw: Any
) -> dict[str, int]:
    """One run of the engine on ``db``; the requests it sent, per command."""
    before = sent(sim)
    store = await SQLiteStore.open(db)
    try:
        async with client_for(sim, clock, **kw) as client:  # type: ignore[arg-type]
            await backfill(client, store, since, until)
    finally:
        await store.close()
    return since_then(sim, before)


async def test_nightly_rerun_of_a_settled_range_costs_at_most_three_requests(
    tmp_path: Path,
) -> None:
    """
    A settled range holding 200 labs that run past ``until``: the first run sends its
    windows and nothing more; a day later, some of them ended and some were graded, and
    the rerun sends two requests (the feed, and one window for the labs whose grade may
    still land) and ends with the server's present state; so does the night after.
    """
    clock = ManualClock(T0)
    db = tmp_path / "n.db"
    async with Simulator(records=world(), clock=clock) as sim:
        first = await backfill_once(sim, clock, db, SINCE, UNTIL)
        assert first == {"Results": 3}  # 15 days, asked a day beyond each end: 17 days
        assert_table_is_present(await table(db), sim.present(SINCE, UNTIL))
        for night in (1, 2):
            clock.set(T0 + night * DAY)
            nightly = await backfill_once(sim, clock, db, SINCE, UNTIL)
            assert sum(nightly.values()) <= 3, nightly
            assert nightly["LatestResults"] == 1 and "Result" not in nightly
            assert_table_is_present(await table(db), sim.present(SINCE, UNTIL))
        rows = await table(db)
    assert sum(r.end is not None for r in rows.values()) > 100  # some ended, some graded
    assert sum(r.end is None for r in rows.values()) >= 100


async def test_a_gap_beyond_the_feeds_reach_falls_back_and_stays_correct(
    tmp_path: Path,
) -> None:
    """Ten days without a run: the feed cannot reach back; the labs stored as running are
    fetched again by the windows that hold them (fewer requests than one each)."""
    clock = ManualClock(T0)
    db = tmp_path / "g.db"
    async with Simulator(records=world(), clock=clock) as sim:
        await backfill_once(sim, clock, db, SINCE, UNTIL)
        clock.set(T0 + 10 * DAY)
        gap = await backfill_once(sim, clock, db, SINCE, UNTIL)
        # One minute of the feed tells the server's time; one window holds the labs.
        assert gap == {"LatestResults": 1, "Results": 1}, gap
        assert_table_is_present(await table(db), sim.present(SINCE, UNTIL))
        clock.set(T0 + 11 * DAY)
        assert sum((await backfill_once(sim, clock, db, SINCE, UNTIL)).values()) <= 3
        assert_table_is_present(await table(db), sim.present(SINCE, UNTIL))


def test_the_refresh_takes_the_cheaper_way() -> None:
    """Labs close together: their windows; labs a week apart each: one Result each."""
    close = [OpenLab(i, T0 + i * HOUR) for i in range(50)]
    assert plan_refresh(close, latest=T0 + DAY).requests == 1
    apart = [OpenLab(i, T0 + i * 8 * DAY) for i in range(5)]
    plan = plan_refresh(apart, latest=T0 + 50 * DAY)
    assert plan.ids == [0, 1, 2, 3, 4] and not plan.windows


class RevokingSimulator(Simulator):
    """A server that revokes the key once it has answered its first ``Result``."""

    def _answer(self, command: str, params: Mapping[str, str]) -> Any:
        if command == "Result":
            self.api_key = "revoked"
        return super()._answer(command, params)


async def test_a_revoked_key_during_the_refresh_stops_every_request_at_once(
    tmp_path: Path,
) -> None:
    """
    30 running labs a week apart, asked for one by one after a gap beyond the feed's
    reach; the key is revoked after the first answer: the refresh fails with the 401 and
    no request is sent after it (at most those already in flight get one).
    """
    clock = ManualClock(T0)
    labs = [make_lab(i, T0 - 250 * DAY + i * 8 * DAY, None) for i in range(1, 31)]
    db = tmp_path / "r.db"
    async with RevokingSimulator(records=labs, clock=clock) as sim:
        sim.api_key, key = "k" * 20, "k" * 20
        await backfill_once(sim, clock, db, T0 - 260 * DAY, T0 - 5 * DAY)
        clock.set(T0 + 10 * DAY)
        with pytest.raises(LodAuthError):
            await backfill_once(sim, clock, db, T0 - 260 * DAY, T0 - 5 * DAY, key=key,
                                max_concurrency=4)  # fmt: skip
        # The first, those in flight with it and the one that took its slot: once the
        # first 401 is in, nothing more is sent (30 labs were to be asked for).
        assert sim.stats.requests["Result"] <= 1 + 4
        assert sim.stats.unauthorized <= 4


class ForgettingSimulator(Simulator):
    """A server whose ``Result`` answers ``Status: 0`` with ``text`` for every lab."""

    text = "Lab instance 0 not found"

    def _answer(self, command: str, params: Mapping[str, str]) -> Any:
        if command == "Result":
            return web.json_response({"Error": self.text, "Status": 0})
        return super()._answer(command, params)


@pytest.mark.parametrize("text", ["Lab instance 7 not found", "Internal error: try later"])
async def test_the_refresh_keeps_a_lab_only_the_server_no_longer_knows(
    tmp_path: Path, text: str
) -> None:
    """
    After a gap beyond the feed's reach the running labs are asked for one by one: a lab
    the server answers "not found" keeps its stored copy; any other ``Status: 0`` answer
    is a failure, raised, never read as "gone".
    """
    clock = ManualClock(T0)
    labs = [make_lab(i, T0 - 250 * DAY + i * 8 * DAY, None) for i in range(1, 6)]
    db = tmp_path / "r.db"
    async with ForgettingSimulator(records=labs, clock=clock) as sim:
        sim.text = text
        await backfill_once(sim, clock, db, T0 - 260 * DAY, T0 - 5 * DAY)
        clock.set(T0 + 10 * DAY)
        if "not found" in text:
            await backfill_once(sim, clock, db, T0 - 260 * DAY, T0 - 5 * DAY)
            assert len(await table(db)) == 5
        else:
            with pytest.raises(LodApiError, match="Internal error"):
                await backfill_once(sim, clock, db, T0 - 260 * DAY, T0 - 5 * DAY)


async def test_a_clock_ten_days_ahead_loses_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """
    A run whose machine clock is ten days ahead of the server's ``Date`` checkpoints and
    stamps on the server's time; twelve days later a right one ends with nothing missing
    or stale. A file written by such a machine before (times in the server's future) is
    repaired, with a warning.
    """
    clock = ManualClock(T0)
    since, until = T0 - 30 * DAY, T0 + 60 * DAY  # until in the future: a growing range
    labs = generate_labs(seed=8, start=since - DAY, end=T0 + 20 * DAY, labs_per_day=30)
    db = tmp_path / "c.db"
    async with Simulator(records=labs, clock=clock) as sim:
        ahead = ManualClock(T0 + 10 * DAY)
        await backfill_once(sim, ahead, db, since, until)
        with closing(sqlite3.connect(db)) as c:
            newest = c.execute('SELECT MAX("end"), MAX(completed_at) FROM backfill_windows')
            end, made = newest.fetchone()
            fetched = c.execute("SELECT MAX(fetched_at) FROM lab_results").fetchone()[0]
        assert end <= T0 - DEFAULT_SETTLE and made <= T0 and fetched <= T0
        clock.set(T0 + 12 * DAY)
        await backfill_once(sim, clock, db, since, until)
        assert_table_is_present(await table(db), sim.present(since, until))

        # What an older lodresults on a machine ten days ahead would have stored: the
        # stretch up to its "now minus settle" checkpointed, its rows stamped in the future
        # (and the labs of the last week not yet there).
        with closing(sqlite3.connect(db)) as c:
            c.execute('DELETE FROM lab_results WHERE "start" > ?', (T0 + 5 * DAY,))
            c.execute("DELETE FROM backfill_windows")
            c.execute("DELETE FROM meta WHERE key = 'engine.last_run'")
            stamp = T0 + 22 * DAY
            c.execute(
                'INSERT INTO backfill_windows ("start", "end", records, completed_at) '
                "VALUES (?, ?, 0, ?)",
                (since, stamp - DEFAULT_SETTLE, stamp),
            )
            c.execute("UPDATE lab_results SET fetched_at = ?", (stamp,))
            c.commit()
        with caplog.at_level(logging.WARNING, logger="lodresults"):
            await backfill_once(sim, clock, db, since, until)
        assert "lie in the future of the server's clock" in caplog.text
        with closing(sqlite3.connect(db)) as c:
            assert (
                c.execute("SELECT MAX(fetched_at) FROM lab_results").fetchone()[0] <= T0 + 12 * DAY
            )
        assert_table_is_present(await table(db), sim.present(since, until))


# --- the same through the CLI (subprocesses, real time); dlt: tests/test_dlt.py -------


async def test_nightly_rerun_through_the_cli(tmp_path: Path) -> None:
    """
    The CLI on real time: a settled range with labs running past ``until``; between two
    runs some end and some are graded; the second run sends at most 3 requests, says
    what changed, and the table equals the server's present state.
    """
    now = int(time.time())
    since, until = now - 20 * DAY, now - 10 * DAY
    labs = runners(40, until, now, ended=HOUR)  # exams ended within the settle of 2h
    db = tmp_path / "n.db"
    args = ["backfill", "--since", str(since), "--until", str(until), "--db", str(db),
            "--rate-limit", "1000", "--settle", "2h"]  # fmt: skip
    async with Simulator(records=labs) as sim:
        r1 = await run(args, _env(sim))
        assert r1.code == 0, r1.err
        assert sent(sim)["Result"] == 0 and sent(sim)["LatestResults"] == 0
        t = int(time.time())
        for lab in labs[::4]:  # these end now
            sim.dataset.upsert(make_lab(lab.lab_instance_id, lab.start, t - 30))
        for lab in labs[1::4]:  # these are graded now
            sim.dataset.upsert(make_lab(lab.lab_instance_id, lab.start, lab.end, t - 20, True))
        before = sent(sim)
        r2 = await run(args, _env(sim))
        assert r2.code == 0, r2.err
        assert sum(since_then(sim, before).values()) <= 3, since_then(sim, before)
        assert "backfill: feed, 1 request: 0 new, 10 changed, " in r2.err
        assert all(len(line) <= 80 for line in r2.err.splitlines())
        assert_table_is_present(
            {r.lab_instance_id: r for r in await _rows(db)}, sim.present(since, until)
        )


async def _rows(db: Path) -> list[Any]:
    store = await SQLiteStore.open(db)
    try:
        return await store.run_sync(lambda s: list(s.iter_records_sync()))
    finally:
        await store.close()


@pytest.mark.parametrize("tty", [False, True])
def test_the_progress_shows_the_refresh_by_result(tty: bool) -> None:
    """Labs asked for one by one move the progress (no longer stuck at 'N/N windows')."""
    import io

    from lodresults import PhaseProgress, WindowsPlanned
    from lodresults.cli._progress import Progress

    out = io.StringIO()
    with Progress("backfill", stream=out, tty=tty, interval=0) as p:
        p.on_event(WindowsPlanned(2, 0, 10))
        p.on_event(PhaseProgress("refresh", 3, 191))
    text = out.getvalue()
    assert "refresh" in text and "labs" in text
    if not tty:  # (the bar's own columns, at 80, may squeeze the count)
        assert "refresh 3/191 labs" in text
    assert all(len(line) <= 80 for line in text.splitlines())


async def test_two_ranges_on_one_store_share_the_feed(tmp_path: Path) -> None:
    """
    The last run is the store's: a run of range A beyond the feed's reach also refreshes
    the labs range B stored as running, so B's next run, which reads the feed since A's,
    misses no end that fell in the gap.
    """
    clock = ManualClock(T0)
    a, b = (T0 - 40 * DAY, T0 - 30 * DAY), (T0 - 20 * DAY, T0 - 10 * DAY)
    labs = [make_lab(1, T0 - 31 * DAY, T0 + 5 * DAY), make_lab(2, T0 - 11 * DAY, T0 + 5 * DAY)]
    db = tmp_path / "two.db"
    async with Simulator(records=labs, clock=clock) as sim:
        await backfill_once(sim, clock, db, *a)
        await backfill_once(sim, clock, db, *b)
        clock.set(T0 + 10 * DAY)
        await backfill_once(sim, clock, db, *a)
        clock.set(T0 + 11 * DAY)
        await backfill_once(sim, clock, db, *b)
        rows = await table(db)
        assert_table_is_present({2: rows[2]}, sim.present(*b))
        assert_table_is_present({1: rows[1]}, sim.present(*a))


async def test_the_dlt_state_distrusts_times_past_the_servers_now() -> None:
    """The dlt state as a destination: stretches settled past now - settle are cut (a
    stretch wholly past it dropped), fetches stamped in the future lose their time, a
    future last run is forgotten."""
    pytest.importorskip("pyarrow")
    from lodresults._destinations.dlt_state import DltState

    state: dict[str, Any] = {
        "settled": [[0, 100], [200, 900], [950, 990]],
        "open": {"1": [10, None, 2000], "2": [20, None, 500]},
        "last_run": 1500.0,
    }
    dest = DltState(state, settle=100)
    assert await dest.distrust_after(1000) == 3  # a stretch, a fetch, the last run
    assert state["settled"] == [[0, 100], [200, 900]]
    assert state["open"] == {"1": [10, None, 0], "2": [20, None, 500]}
    assert await dest.last_run() is None
    assert await dest.distrust_after(1000) == 0


async def test_watch_is_a_coroutine_a_service_stops(tmp_path: Path) -> None:
    """
    ``lodresults.watch`` awaited by a service: the first run fetches the tail, the next
    ones read the feed only; setting ``stop`` ends it after the run in progress, and
    cancelling the task ends it at once.
    """
    from lodresults import BackfillResult, LodError, watch

    clock = ManualClock(T0)
    labs = [make_lab(1, T0 - DAY, None), make_lab(2, T0 - 2 * DAY, T0 + 1800)]
    db = tmp_path / "w.db"
    async with Simulator(records=labs, clock=clock) as sim:
        store = await SQLiteStore.open(db)
        try:
            async with client_for(sim, clock) as client:  # type: ignore[arg-type]
                stop = asyncio.Event()
                runs: list[BackfillResult | LodError] = []

                def seen(outcome: BackfillResult | LodError) -> None:
                    runs.append(outcome)
                    if len(runs) == 5:
                        stop.set()

                await watch(client, store, T0 - 3 * DAY, interval=600, stop=stop, on_run=seen)
                first, *polls = runs
                assert isinstance(first, BackfillResult) and first.windows == 1
                assert all(isinstance(p, BackfillResult) and p.windows == 0 for p in polls)
                assert sent(sim)["LatestResults"] == 4
                assert (await table(db))[2].end is not None  # it ended after half an hour

                task = asyncio.ensure_future(watch(client, store, T0 - 3 * DAY, interval=60))
                await asyncio.sleep(0)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            await store.close()
