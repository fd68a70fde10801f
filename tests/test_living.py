"""
Living data, in process: backfill run again later and watch end with the server's present
state. The simulator and the client share a ManualClock, so "a day later" takes no time.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from contextlib import aclosing
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lodresults import LabResult, LodAuthError, LodClient, SQLiteStore, WindowCompleted
from lodresults._engine.backfill import BackfillResult, backfill
from lodresults._records.wire import structure_record
from lodresults._windows.settle import DEFAULT_SETTLE
from lodresults.cli._watch import watch
from lodresults.testing import Faults, Lab, ManualClock, Simulator, Sloppiness, generate_labs

DAY = 86400
T0 = 1_767_254_400  # 2026-01-01T08:00:00Z, a night's cron moment


def make_lab(
    lab_id: int, start: int, end: int | None, graded: int | None = None, exam: bool = False
) -> Lab:
    final_end = end if end is not None else start + 3600
    record = {
        "LabInstanceId": lab_id, "LabProfileId": 1, "Start": start, "End": final_end,
        "LastActivity": final_end - 5, "UserId": "u", "ClassId": None, "CompletionStatus": 4,
        "TotalRunTimeSeconds": final_end - start, "TaskCompletePercent": 100, "IsExam": exam,
        "ExamPassed": True if exam else None, "ExamScore": 91.5 if exam else None,
        "ExamMaxPossibleScore": 100 if exam else None, "ExamPassingScore": 70 if exam else None,
        "IpAddress": None, "Country": None, "Region": None, "City": None, "Latitude": None,
        "Longitude": None, "LabHostId": 1, "DatacenterId": 1, "DeliveryRegionId": 1,
    }  # fmt: skip
    return Lab(record, start, end, graded)


def client_for(sim: Simulator, clock: ManualClock | None = None, key: str | None = None,
               **kw: Any) -> LodClient:  # fmt: skip
    options: dict[str, Any] = {
        "rate_limit": None, "retry_initial_wait": 0.001, "retry_max_wait": 0.005, "clock": clock,
    }  # fmt: skip
    options.update(kw)
    return LodClient(key or sim.api_key, base_url=sim.base_url, **options)


async def run_backfill(
    sim: Simulator, clock: ManualClock, db: Path, since: int, until: int, **kw: Any
) -> tuple[BackfillResult, int]:
    """One backfill run; returns its result and how many Results requests it sent."""
    before = sim.stats.requests["Results"]
    store = await SQLiteStore.open(db)
    try:
        async with client_for(sim, clock) as client:
            result = await backfill(client, store, since, until, **kw)
    finally:
        await store.close()
    return result, sim.stats.requests["Results"] - before


async def table(db: Path) -> dict[int, LabResult]:
    store = await SQLiteStore.open(db)
    try:
        rows = await store.run_sync(lambda s: list(s.iter_records_sync()))
    finally:
        await store.close()
    return {r.lab_instance_id: r for r in rows}


def state(r: LabResult) -> Any:
    """A lab's whole record once it ended; while it runs, only that it runs (its run time
    grows every second, so a copy is never 'the present' for long)."""
    return ("running", r.start) if r.end is None else r


def assert_table_is_present(rows: Mapping[int, LabResult], present: Mapping[int, Any]) -> None:
    assert set(rows) == set(present)
    expected = {i: state(structure_record(dict(rec))) for i, rec in present.items()}
    assert {i: state(r) for i, r in rows.items()} == expected


async def test_nightly_cron_ends_with_the_servers_present_state(tmp_path: Path) -> None:
    """
    Day 1 backfill; meanwhile labs start, end and get graded; day 2 fetches only the
    unsettled tail (one window) and the table equals the server's present set and states.
    """
    clock = ManualClock(T0)
    labs = generate_labs(seed=5, start=T0 - 70 * DAY, end=T0 + 3 * DAY, labs_per_day=30)
    # An exam that ended before day 1 and is graded after it (status 50 -> 4, score).
    graded_later = make_lab(1, T0 - DAY, T0 - DAY + 3600, graded=T0 + 12 * 3600, exam=True)
    # A lab running at day 1 whose start window settles before it ends.
    long_runner = make_lab(2, T0 - 5 * DAY, T0 + 6 * 3600)
    db = tmp_path / "r.db"
    since, until1 = T0 - 60 * DAY, T0 + 16 * 3600  # --until "end of today": in the future
    async with Simulator(records=[*labs, graded_later, long_runner], clock=clock) as sim:
        day1, sent1 = await run_backfill(sim, clock, db, since, until1)
        rows = await table(db)
        assert rows[1].completion_status == 50 and rows[1].exam_score is None
        assert rows[2].end is None
        assert not day1.complete and day1.settled_until == T0 - DEFAULT_SETTLE
        assert_table_is_present(rows, sim.present(since, until1))

        clock.advance(DAY)
        until2 = until1 + DAY
        day2, sent2 = await run_backfill(sim, clock, db, since, until2)
        assert sent2 == 1 and day2.windows == 1  # only the tail and the new day
        assert day2.settled_until == T0 + DAY - DEFAULT_SETTLE
        rows = await table(db)
        assert rows[1].completion_status == 4 and str(rows[1].exam_score) == "91.5"
        assert rows[2].end is not None
        assert_table_is_present(rows, sim.present(since, until2))
    assert sent1 == 9  # 60 days and 8 hours in 7-day windows


async def test_until_in_the_future_checkpoints_nothing_after_now_minus_settle(
    tmp_path: Path,
) -> None:
    """A year ahead: the fetch stops at now; the checkpoints end at now - settle; never done."""
    clock = ManualClock(T0)
    db = tmp_path / "f.db"
    async with Simulator(records=[make_lab(1, T0 - 3 * DAY, T0 - DAY)], clock=clock) as sim:
        result, sent = await run_backfill(sim, clock, db, T0 - 10 * DAY, T0 + 365 * DAY)
        store = await SQLiteStore.open(db)
        try:
            done = await store.checkpoints(0, 2**40)
        finally:
            await store.close()
    assert sent == 2 and not result.complete
    assert max(b for _, b in done) == T0 - DEFAULT_SETTLE


async def test_a_settled_range_is_nothing_to_do(tmp_path: Path) -> None:
    """Once the whole range lies settle before the fetch, a rerun sends nothing."""
    clock = ManualClock(T0)
    db = tmp_path / "s.db"
    async with Simulator(records=[make_lab(1, T0 - 9 * DAY, T0 - 8 * DAY)], clock=clock) as sim:
        first, _ = await run_backfill(sim, clock, db, T0 - 20 * DAY, T0 - 5 * DAY)
        again, sent = await run_backfill(sim, clock, db, T0 - 20 * DAY, T0 - 5 * DAY)
    assert first.complete and again.complete and sent == 0
    assert len(await table(db)) == 1


class SlowSimulator(Simulator):
    """A server whose every answer takes ten minutes of its clock."""

    def _answer(self, command: str, params: Mapping[str, str]) -> Any:
        assert isinstance(self.clock, ManualClock)
        self.clock.advance(600)
        return super()._answer(command, params)


def sent(sim: Simulator) -> dict[str, int]:
    """Requests the simulator answered so far, per command."""
    return {c: sim.stats.requests[c] for c in ("Results", "Result", "LatestResults")}


def since_then(sim: Simulator, before: dict[str, int]) -> dict[str, int]:
    """Requests per command since ``before`` (commands not asked left out)."""
    return {c: n - before[c] for c, n in sent(sim).items() if n > before[c]}


async def test_a_lab_running_past_until_is_kept_current_by_the_feed(tmp_path: Path) -> None:
    """A historical range: a lab started in it runs past ``until``, so no window of the
    range will return its end. Its end comes with the change feed (one LatestResults); it
    is asked for by id only once, when its end has settled and its grade may have landed."""
    clock = ManualClock(T0)
    runner = make_lab(1, T0 - 2 * DAY, T0 + 5 * DAY)
    db = tmp_path / "h.db"
    since, until = T0 - 9 * DAY, T0 - DAY
    async with Simulator(records=[runner], clock=clock) as sim:
        first, _ = await run_backfill(sim, clock, db, since, until)
        assert not first.complete and (await table(db))[1].end is None
        assert first.feed is None and first.refreshed == 0
        clock.advance(4 * DAY)  # settled now, still running
        before = sent(sim)
        second, _ = await run_backfill(sim, clock, db, since, until)
        # The feed, and the tail that has settled since: the lab came with it.
        assert second.complete and second.refreshed == 0
        assert since_then(sim, before) == {"LatestResults": 1, "Results": 1}
        assert (await table(db))[1].end is None
        clock.advance(3 * DAY)  # it ended
        before = sent(sim)
        third, _ = await run_backfill(sim, clock, db, since, until)
        assert since_then(sim, before) == {"LatestResults": 1}
        assert third.windows == 0 and third.refreshed == 0 and third.feed is not None
        assert third.feed.changed == 1
        assert_table_is_present(await table(db), sim.present(since, until))
        clock.advance(DEFAULT_SETTLE)  # its end has settled since it was last fetched
        before = sent(sim)
        fourth, _ = await run_backfill(sim, clock, db, since, until)
        assert fourth.refreshed == 1  # fetched before its end had settled: once more
        # Nothing runs any more: no feed to read.
        assert since_then(sim, before) == {"Result": 1}
        before = sent(sim)
        fifth, _ = await run_backfill(sim, clock, db, since, until)
    assert fifth.refreshed == 0  # nothing is running or unsettled any more: nothing is sent
    assert fifth.requests == 0 and since_then(sim, before) == {}


async def test_an_exam_ending_past_until_is_refreshed_until_its_grade_lands(
    tmp_path: Path,
) -> None:
    """A lab started in a settled historical range ends after ``until`` and is graded two
    days later: the feed brings its end (status 50, ungraded); the grade, which the feed
    does not show, comes with a later run that asks for it, since its end had not settled
    when it was fetched."""
    clock = ManualClock(T0)
    since, until = T0 - 9 * DAY, T0 - DAY
    end = T0 + 5 * DAY
    exam = make_lab(1, until - 3600, end, graded=end + 2 * DAY, exam=True)
    db = tmp_path / "g.db"
    async with Simulator(records=[exam], clock=clock) as sim:
        await run_backfill(sim, clock, db, since, until)
        clock.set(end + 3600)  # ended, not graded yet
        ended, _ = await run_backfill(sim, clock, db, since, until)
        assert ended.complete and ended.refreshed == 0 and ended.feed is not None
        assert (await table(db))[1].completion_status == 50
        clock.set(end + 2 * DAY + 3600)  # graded now
        graded, _ = await run_backfill(sim, clock, db, since, until)
        assert graded.refreshed == 1 and graded.refresh.changed == 1
        assert_table_is_present(await table(db), sim.present(since, until))
        assert (await table(db))[1].exam_score is not None


async def test_a_lab_ending_mid_run_reaches_the_table(tmp_path: Path) -> None:
    """Running when its start window is fetched, ended when its end window is: an update.
    fetched_at is the moment before each request was sent, not when it came back."""
    clock = ManualClock(T0)
    lab = make_lab(1, T0 - 8 * DAY, T0 + 3600)

    def tick(event: object) -> None:
        if isinstance(event, WindowCompleted):
            clock.advance(2 * 3600)  # time passes while the run goes on

    async with (
        SlowSimulator(records=[lab], clock=clock) as sim,
        client_for(sim, clock, max_concurrency=1) as c,
    ):
        # 20 days, asked from a day earlier (the skew margin): three 7-day windows.
        batches = c.iter_windows(T0 - 13 * DAY, T0 + 7 * DAY, on_event=tick)
        got = [b async for b in batches]
    assert [len(b.records) for b in got] == [1, 0, 0]
    assert got[0].records[0].end is None
    assert [r.end is not None for r in got[2].updates] == [True]
    # Window 2 is sent once window 1 is handed on (600 s answer, then 2 h of the run).
    # Window 3 goes out as soon as window 2's answer is read, before its batch is handed
    # on: from then on decoding overlaps the next request.
    step = 600 + 2 * 3600
    assert [b.fetched_at for b in got] == [T0, T0 + step, T0 + step + 600]


async def test_a_grade_landing_mid_run_reaches_the_table(tmp_path: Path) -> None:
    """An exam graded between the fetch of its start window and of its end window: the
    backfill writes the update, so the table ends graded in the same run."""
    clock = ManualClock(T0)
    exam = make_lab(1, T0 - 10 * DAY, T0 - 5 * DAY, graded=T0 + 3600, exam=True)

    def tick(event: object) -> None:
        if isinstance(event, WindowCompleted):
            clock.advance(2 * 3600)

    db = tmp_path / "g.db"
    async with Simulator(records=[exam], clock=clock) as sim:
        store = await SQLiteStore.open(db)
        try:
            async with client_for(sim, clock, max_concurrency=1, on_event=tick) as c:
                result = await backfill(c, store, T0 - 14 * DAY, T0)
        finally:
            await store.close()
    assert (result.records, result.updates) == (1, 1)
    rows = await table(db)
    assert rows[1].completion_status == 4 and str(rows[1].exam_score) == "91.5"


@pytest.mark.parametrize(
    "sloppy",
    [
        Sloppiness(duplicate_rate=0.5),
        Sloppiness(skew=DAY - 1),
        Sloppiness(skew=-(DAY - 1)),
        # a lab inside the range and one outside it, returned by every window
        Sloppiness(everywhere=(8, 9)),
    ],
    ids=["duplicates", "skew+", "skew-", "everywhere"],
)
@pytest.mark.parametrize("ordered", [True, False])
async def test_exactly_once_against_a_sloppy_server(sloppy: Sloppiness, ordered: bool) -> None:
    """Same id twice in an answer, a skewed filter, a lab in every answer: each id once."""
    clock = ManualClock(T0)
    labs = generate_labs(seed=9, start=T0 - 120 * DAY, end=T0, labs_per_day=20)
    inside = make_lab(8, T0 - 50 * DAY, T0 - 49 * DAY)
    outside = make_lab(9, T0 - 400 * DAY, T0 - 399 * DAY)  # outside the range asked for
    a, b = T0 - 100 * DAY, T0 - 10 * DAY
    records = [*labs, inside, outside]
    async with Simulator(records=records, clock=clock, sloppy=sloppy) as sim:
        async with (
            client_for(sim, clock, max_concurrency=3) as c,
            aclosing(c.iter_results(a, b, ordered=ordered)) as it,
        ):
            got = [r.lab_instance_id async for r in it]
        truth = sim.ids_between(a, b)
    assert len(got) == len(set(got))
    assert set(got) == truth


# --- watch ------------------------------------------------------------------------------


async def test_watch_through_an_outage_with_labs_changing(tmp_path: Path) -> None:
    """
    Polls fail for hours while labs start, end and get graded; once the server is back the
    watch catches up, and the table equals the server's present state for its tail.
    """
    clock = ManualClock(T0)
    labs = generate_labs(seed=4, start=T0 - 10 * DAY, end=T0 + 3 * DAY, labs_per_day=40)
    exam = make_lab(1, T0 + 3600, T0 + 2 * 3600, graded=T0 + 30 * 3600, exam=True)
    db = tmp_path / "w.db"
    out = io.StringIO()
    async with Simulator(records=[*labs, exam], clock=clock) as sim:

        def make(**kw: Any) -> LodClient:
            return client_for(sim, max_retries=0, **kw)

        async def go(iterations: int) -> None:
            await watch(make, db=db, interval=600, out=out, iterations=iterations, clock=clock)

        await go(3)
        sim.faults = Faults(rate=1.0, kinds=("http503",))
        await go(24)  # four hours of failed polls
        assert out.getvalue().count("run failed") == 24
        sim.faults = Faults()
        clock.advance(2 * DAY)  # the watch was down too; labs kept changing
        await go(2)
        since = T0 - DEFAULT_SETTLE
        rows = await table(db)
        present = sim.present(since, int(clock()))
        assert rows[1].completion_status == 4
        assert_table_is_present({i: r for i, r in rows.items() if i in present}, present)


@pytest.mark.parametrize("path", ["latest", "windows"])
async def test_a_revoked_key_stops_watch_on_both_paths(tmp_path: Path, path: str) -> None:
    """LatestResults (the feed, or beyond its reach the minute that tells the server's
    time) or windowed Results (a first run): auth stops the watch at the first refusal."""
    clock = ManualClock(T0)
    db = tmp_path / "w.db"
    out = io.StringIO()
    async with Simulator(records=[make_lab(1, T0 - DAY, T0 - 3600)], clock=clock) as sim:
        key = sim.api_key

        def make(**kw: Any) -> LodClient:
            return client_for(sim, key=key, **kw)

        if path == "latest":
            await watch(make, db=db, interval=60, out=out, iterations=1, clock=clock)
        sim.api_key = "revoked"
        clock.advance(10 * DAY)
        with pytest.raises(LodAuthError) as e:
            await watch(make, db=db, interval=60, out=out, iterations=5, clock=clock)
    if path == "windows":
        assert isinstance(getattr(e.value, "error", None), LodAuthError)
        assert sim.stats.requests["LatestResults"] == 0  # a first run reads no feed
    # stopped at the first refusal, nothing retried (the unsettled tail, asked a day
    # beyond each end, is two windows, which may both have been in flight)
    assert 1 <= sim.stats.unauthorized <= (2 if path == "windows" else 1)


# --- the property: any lives against any run times --------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[Lab], list[int], int]:
    n = draw(st.integers(1, 12))
    labs = []
    for i in range(n):
        s = T0 + draw(st.integers(-20 * DAY, 10 * DAY))
        e = s + draw(st.integers(0, 9 * DAY))
        exam = draw(st.booleans())
        g = e + draw(st.integers(1, DEFAULT_SETTLE)) if exam else None
        labs.append(make_lab(100 + i, s, e, g, exam=exam))
    runs = sorted(draw(st.lists(st.integers(0, 12 * DAY), min_size=1, max_size=4)))
    since = T0 + draw(st.integers(-25 * DAY, 0))
    return labs, [T0 + r for r in runs], since


@given(histories())
@settings(
    max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None
)
def test_any_history_ends_with_the_servers_state(
    tmp_path_factory: pytest.TempPathFactory, history: tuple[list[Lab], list[int], int]
) -> None:
    """Labs start, end and get graded at any times against runs at any times: after the
    last run the table equals what the server shows for the range at that moment."""
    import asyncio

    labs, runs, since = history
    db = tmp_path_factory.mktemp("h") / "h.db"
    until = T0 + 30 * DAY  # in the future for every run

    async def go() -> tuple[dict[int, LabResult], dict[int, Any]]:
        clock = ManualClock(runs[0])
        async with Simulator(records=labs, clock=clock) as sim:
            for t in runs:
                clock.set(t)
                await run_backfill(sim, clock, db, since, until)
            return await table(db), dict(sim.present(since, until))

    rows, present = asyncio.run(go())
    assert_table_is_present(rows, present)
