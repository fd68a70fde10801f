"""
The two ends of a range under a skewed server filter: each range (and each gap between
``skip`` intervals) is asked for up to ``SKEW_TOLERANCE`` beyond its ends, and exactly the
labs that started or ended in ``[start, end]`` come out, each once.
"""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lodresults import LabResult, LodClient, SQLiteStore, WindowsPlanned
from lodresults._clock import ServerClock
from lodresults._events import Event, EventHook
from lodresults._exceptions import LodWindowTooLongError
from lodresults._windows.batches import FanOut, WindowBatch
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults._windows.plan import MAX_WINDOW_SECONDS, Window, gaps
from lodresults._windows.slots import Lease
from lodresults.testing import Lab, ManualClock, Simulator, Sloppiness, generate_labs
from tests.test_dedup import lab
from tests.test_living import make_lab, run_backfill

DAY = 86400
T0 = 1_767_254_400  # the clock's "now" in these tests
A, B = T0 - 30 * DAY, T0 - 10 * DAY  # a historical range, settled at T0
SKEWS = [DAY, DAY - 1, -(DAY - 1), -DAY]


def edge_labs(a: int, b: int, first_id: int = 1) -> list[Lab]:
    """Labs at, just inside and just outside both ends of ``[a, b]``."""
    spans: list[tuple[int, int | None]] = [
        (a, a + 3600),  # starts on the first second
        (a + 600, a + 7200),  # just inside
        (a - 7200, a + 60),  # ends just inside
        (a - 3600, a - 1),  # just outside: never yielded
        (a - DAY + 100, a - DAY + 3000),  # wholly inside the widened first window: never
        (b - 600, b - 60),  # just inside the end
        (b, b + 3600),  # starts on the last second
        (b - 60, b + 7200),  # starts just inside
        (b + 1, b + 600),  # just outside: never yielded
        (b + 3600, b + DAY - 100),  # wholly inside the widened last window: never
        (a - 5 * DAY, b + 5 * DAY),  # spans the range, neither end in it: never
    ]
    return [make_lab(first_id + i, s, e) for i, (s, e) in enumerate(spans)]


def client_for(sim: Simulator, clock: ManualClock, **kw: Any) -> LodClient:
    return LodClient(sim.api_key, base_url=sim.base_url, rate_limit=None, clock=clock, **kw)


@pytest.mark.parametrize("skew", SKEWS, ids=["+day", "+day-1", "-day+1", "-day"])
@pytest.mark.parametrize("ordered", [True, False])
async def test_labs_at_both_ends_of_a_skewed_range_are_yielded(skew: int, ordered: bool) -> None:
    """
    A server whose filter is off by up to a day either way: the labs at both ends of the
    range come out, and nothing outside it (also from the widened first and last window).
    """
    clock = ManualClock(T0)
    background = generate_labs(seed=3, start=A - 3 * DAY, end=B + 3 * DAY, labs_per_day=12)
    async with Simulator(
        records=[*background, *edge_labs(A, B)], clock=clock, sloppy=Sloppiness(skew=skew)
    ) as sim:
        async with (
            client_for(sim, clock, max_concurrency=3) as c,
            aclosing(c.iter_results(A, B, ordered=ordered)) as it,
        ):
            got = [r.lab_instance_id async for r in it]
        truth = sim.ids_between(A, B)
    assert {1, 2, 3, 6, 7, 8} <= truth and not {4, 5, 9, 10, 11} & truth
    assert len(got) == len(set(got))
    assert set(got) == truth


async def test_batches_checkpoint_the_range_and_request_beyond_it() -> None:
    """
    ``window`` is the request cut to the range; ``requested`` reaches a day beyond each
    end; the planned count is the number of requests sent.
    """
    clock = ManualClock(T0)
    events: list[Event] = []
    a, b = A, A + 12 * DAY  # 12 days, asked as 14: two 7-day requests
    async with Simulator(records=edge_labs(a, b), clock=clock) as sim:
        async with client_for(sim, clock, on_event=events.append) as c:
            batches = [x async for x in c.iter_windows(a, b)]
        sent = sim.stats.requests["Results"]
    assert [x.requested for x in batches] == [
        Window(a - DAY, a + 6 * DAY),
        Window(a + 6 * DAY, b + DAY),
    ]
    assert [x.window for x in batches] == [Window(a, a + 6 * DAY), Window(a + 6 * DAY, b)]
    planned = [e for e in events if isinstance(e, WindowsPlanned)]
    assert [(p.total, p.start, p.end) for p in planned] == [(2, a, b)] and sent == 2


async def test_the_end_is_asked_no_later_than_a_day_after_now() -> None:
    """A range ending in the future: nothing is asked after now + the tolerance; a range
    ending now reaches exactly that far (a server a day behind reads it as now)."""
    clock = ManualClock(T0)
    async with Simulator(records=[], clock=clock) as sim, client_for(sim, clock) as c:
        ahead = [x.requested async for x in c.iter_windows(T0 - 2 * DAY, T0 + 3 * DAY)]
        now = [x.requested async for x in c.iter_windows(T0 - 2 * DAY, T0)]
        early = [x.requested async for x in c.iter_windows(0, 3600)]
    assert ahead == [Window(T0 - 3 * DAY, T0 + 3 * DAY)]
    assert now == [Window(T0 - 3 * DAY, T0 + DAY)]
    assert early == [Window(0, 3600 + DAY)]


async def test_backfill_checkpoints_only_the_range_and_its_gaps_lose_no_edge(
    tmp_path: Path,
) -> None:
    """
    A skewed server: a backfill stores exactly the range's labs and checkpoints only the
    range; widened later on both sides, the new gaps are asked for a day into the
    checkpointed stretch, so the labs at the old range's ends on their side come too.
    """
    clock = ManualClock(T0)
    db = tmp_path / "e.db"
    a2, b2 = A - 20 * DAY, B + 5 * DAY  # still settled at T0
    labs = [*edge_labs(A, B), *edge_labs(a2, b2, first_id=101)]
    # Labs of the new gaps near the old ends, which a skewed filter returns only for a
    # window on the checkpointed side.
    labs += [make_lab(201, A - 600, A - 300), make_lab(202, B + 300, B + 900)]
    for skew in (DAY - 1, -(DAY - 1)):
        db.unlink(missing_ok=True)
        async with Simulator(records=labs, clock=clock, sloppy=Sloppiness(skew=skew)) as sim:
            first, _ = await run_backfill(sim, clock, db, A, B)
            assert first.complete
            assert set(await stored_ids(db)) == sim.ids_between(A, B)
            assert await checkpoints(db) == [(A, B)]
            second, _ = await run_backfill(sim, clock, db, a2, b2)
            assert second.complete
            assert set(await stored_ids(db)) == sim.ids_between(a2, b2)
            assert await checkpoints(db) == [(a2, b2)]


async def stored_ids(db: Path) -> list[int]:
    store = await SQLiteStore.open(db)
    try:
        return await store.run_sync(lambda s: [r.lab_instance_id for r in s.iter_records_sync()])
    finally:
        await store.close()


async def checkpoints(db: Path) -> list[tuple[int, int]]:
    """The checkpointed stretches, merged."""
    store = await SQLiteStore.open(db)
    try:
        done = sorted(await store.checkpoints(0, 2**40))
    finally:
        await store.close()
    merged: list[tuple[int, int]] = []
    for a, b in done:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


async def test_a_nightly_rerun_of_a_two_year_backfill_fetches_one_window(
    tmp_path: Path,
) -> None:
    """Night 1: 730 days asked as 732 (105 windows); each later night: one request, from a
    day before the settled checkpoints to a day after now."""
    clock = ManualClock(T0)
    since = T0 - 730 * DAY
    labs = generate_labs(seed=4, start=since - DAY, end=T0 + 4 * DAY, labs_per_day=0.5)
    db = tmp_path / "n.db"
    sent: list[tuple[int, int]] = []
    async with Simulator(records=labs, clock=clock) as sim:
        for night in range(3):
            settled = max((b for _, b in await checkpoints(db)), default=None)
            seen = len(sim.log)
            result, n = await run_backfill(sim, clock, db, since, T0 + (night + 1) * DAY)
            sent.append((result.windows, n))
            if settled is not None:
                asked = [e.query for e in list(sim.log)[seen:] if e.path.endswith("/Results")]
                now = int(clock())
                assert [(int(q["start"]), int(q["end"])) for q in asked] == [
                    (settled - DAY, now + DAY)
                ]
            assert set(await stored_ids(db)) == sim.ids_between(since, int(clock()))
            clock.advance(DAY)
    assert sent == [(105, 105), (1, 1), (1, 1)]


# --- the property: random labs near the ends, skews, ranges and skip lists ---------------

LIMITS = [MAX_WINDOW_SECONDS, MAX_WINDOW_SECONDS - 1, 2 * DAY, DAY // 2]


@attrs.frozen
class Case:
    a: int
    b: int
    labs: list[tuple[int, int, int | None]]
    skip: list[tuple[int, int]]
    skew: int
    limit: int  # the longest window the server accepts
    ordered: bool
    concurrency: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    a = draw(st.sampled_from([0, 3600, 2 * DAY, T0 - 40 * DAY]))
    b = a + draw(st.sampled_from([0, 1, 3600, DAY, 6 * DAY, 7 * DAY, 16 * DAY]))
    skip: list[tuple[int, int]] = []
    for _ in range(draw(st.integers(0, 3))):
        s = draw(st.integers(a - 3 * DAY, b + 3 * DAY))
        skip.append((max(0, s), max(0, s) + draw(st.integers(0, 4 * DAY))))
    # Labs near the ends of the range and of each gap: where a skewed filter bites.
    edges = [a, b, *(x for g in gaps(a, b, skip) for x in g)]
    labs = []
    for i in range(draw(st.integers(0, 30))):
        s = max(0, draw(st.sampled_from(edges)) + draw(st.integers(-2 * DAY, 2 * DAY)))
        e = draw(st.none() | st.integers(s, s + draw(st.sampled_from([60, DAY, 9 * DAY]))))
        labs.append((i + 1, s, e))
    return Case(
        a=a, b=b, labs=labs, skip=skip,
        skew=draw(st.integers(-SKEW_TOLERANCE, SKEW_TOLERANCE)),
        limit=draw(st.sampled_from(LIMITS)), ordered=draw(st.booleans()),
        concurrency=draw(st.integers(1, 3)),
    )  # fmt: skip


def touches(lo: int, hi: int, s: int, e: int | None) -> bool:
    return lo <= s <= hi or (e is not None and lo <= e <= hi)


async def run_case(case: Case) -> tuple[list[WindowBatch], list[Window]]:
    """``FanOut.batches`` over the case's range and skips, against an in-memory server whose
    filter is off by ``case.skew`` and which refuses windows longer than ``case.limit``."""
    sent: list[Window] = []

    async def fetch(w: Window, hook: EventHook | None, lease: Lease) -> list[LabResult]:
        await asyncio.sleep(0)
        if w.span > case.limit:
            raise LodWindowTooLongError("too long", error_text="too long", command="Results")
        sent.append(w)
        lo, hi = w.start + case.skew, w.end + case.skew
        return [lab(i, s, e) for i, s, e in case.labs if touches(lo, hi, s, e)]

    fan = FanOut(fetch, case.concurrency, ServerClock(lambda: T0), emit=lambda e, h: None)
    batches = fan.batches(case.a, case.b, gaps(case.a, case.b, case.skip), ordered=case.ordered)
    async with aclosing(batches):
        return [x async for x in batches], sent


@given(cases())
@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_exactly_the_labs_of_the_range_each_once(case: Case) -> None:
    """
    Any constant skew within the tolerance, any range and skip list, a server that refuses
    7 days or less: every lab of a gap is yielded, each once, none outside the range; no
    request is longer than the server accepts, before epoch 0 or past now + tolerance;
    each batch's ``window`` lies in the range.
    """
    batches, sent = asyncio.run(run_case(case))
    a, b = case.a, case.b
    got = [r.lab_instance_id for x in batches for r in x.records]
    assert len(got) == len(set(got))
    in_range = {i for i, s, e in case.labs if touches(a, b, s, e)}
    assert set(got) <= in_range
    for lo, hi in gaps(a, b, case.skip):
        # A filter ahead by ``skew`` returns a time before ``skew`` for no request (that
        # would start before epoch 0).
        lo = max(lo, case.skew)
        assert {i for i, s, e in case.labs if touches(lo, hi, s, e)} <= set(got)
    for w in sent:
        assert max(0, a - SKEW_TOLERANCE) <= w.start and w.span <= case.limit
        assert w.end <= min(b + SKEW_TOLERANCE, max(b, T0 + SKEW_TOLERANCE))
    for x in batches:  # the request cut to the range, or a point at the nearer end
        lo, hi = max(a, x.requested.start), min(b, x.requested.end)
        assert x.window == Window(lo, hi) if lo <= hi else x.window in (Window(a, a), Window(b, b))
    # The batches' windows and the skipped stretches cover the range: checkpointing the
    # windows leaves nothing to fetch.
    assert gaps(a, b, [*case.skip, *((x.window.start, x.window.end) for x in batches)]) == []
