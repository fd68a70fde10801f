"""Exactly once against a sloppy server, the newest copy of each lab, bounded state."""

from __future__ import annotations

import asyncio
from contextlib import aclosing
from datetime import datetime, timezone

import attrs
from hypothesis import example, given, settings
from hypothesis import strategies as st

from lodresults import CompletionStatus, LabResult
from lodresults._clock import ServerClock
from lodresults._events import EventHook
from lodresults._records.decode import SLICE
from lodresults._windows.batches import FanOut
from lodresults._windows.dedup import SKEW_TOLERANCE, Deduplicator
from lodresults._windows.plan import Window, plan_windows, widen
from lodresults._windows.slots import Lease

DAY = 86400
T0 = 1_700_006_400  # a midnight UTC


def lab(lab_id: int, s: int, e: int | None, version: int = 0) -> LabResult:
    """A record whose ``total_run_time_seconds`` says which response it came from."""
    return LabResult(
        lab_instance_id=lab_id, lab_profile_id=1,
        start=datetime.fromtimestamp(s, timezone.utc),
        end=None if e is None else datetime.fromtimestamp(e, timezone.utc),
        last_activity=None, user_id=None, class_id=None,
        completion_status=CompletionStatus(3 if e is None else 4),
        total_run_time_seconds=version, task_complete_percent=0, is_exam=False,
        exam_passed=None, exam_score=None, exam_max_possible_score=None,
        exam_passing_score=None, ip_address=None, country=None, region=None, city=None,
        latitude=None, longitude=None, lab_host_id=None, datacenter_id=None,
        delivery_region_id=None,
    )  # fmt: skip


W1 = Window(T0, T0 + 7 * DAY)
W2 = Window(T0 + 7 * DAY, T0 + 14 * DAY)


def ids(records: list[LabResult]) -> list[int]:
    return [r.lab_instance_id for r in records]


def test_a_stale_running_stray_of_a_lab_handed_out_of_order_is_dropped() -> None:
    """
    Out of order, a lab ended well inside a window handed first, then returned by an
    earlier window (a server that returns a lab everywhere) as an ended and a stale
    running copy: neither is yielded again (found by the property test below).
    """
    week = 7 * DAY
    d = Deduplicator(T0, T0 + 40 * DAY, ordered=False)
    inner = T0 + 2 * week + DAY + 1
    third, first = Window(T0 + 2 * week, T0 + 3 * week), Window(T0, T0 + week)
    fresh, _ = d.take(third, [(0, [lab(4, inner, inner, 0)])])
    assert ids(fresh) == [4]
    fresh, updates = d.take(first, [(1, [lab(4, inner, inner, 1), lab(4, inner, None, 1)])])
    assert fresh == [] and updates == []


def test_two_copies_in_one_window_yield_the_ended_one_once() -> None:
    """A running and an ended copy in one answer: one record, the ended copy, either order."""
    for first, second in ((None, T0 + DAY), (T0 + DAY, None)):
        d = Deduplicator(W1.start, W2.end)
        fresh, updates = d.take(W1, [(0, [lab(1, T0 + 60, first), lab(1, T0 + 60, second)])])
        assert [r.end for r in fresh] == [datetime.fromtimestamp(T0 + DAY, timezone.utc)]
        assert updates == []


def test_a_changed_copy_received_later_is_an_update() -> None:
    """Running when its start window came, ended when its end window came: an update."""
    d = Deduplicator(W1.start, W2.end)
    fresh, _ = d.take(W1, [(0, [lab(1, W1.end - 60, None, 0)])])
    assert ids(fresh) == [1]
    fresh, updates = d.take(W2, [(1, [lab(1, W1.end - 60, W2.start + 60, 1)])])
    assert fresh == [] and updates == [lab(1, W1.end - 60, W2.start + 60, 1)]


def test_a_copy_received_before_the_one_passed_on_is_not_an_update() -> None:
    """With windows in order but responses out of order, a stale copy is dropped."""
    d = Deduplicator(W1.start, W2.end)
    d.take(W1, [(5, [lab(1, W1.end - 60, W2.start + 60, 5)])])
    fresh, updates = d.take(W2, [(4, [lab(1, W1.end - 60, W2.start + 60, 4)])])
    assert fresh == [] and updates == []


def test_an_unchanged_copy_is_not_an_update() -> None:
    """Same state again: nothing to write."""
    d = Deduplicator(W1.start, W2.end)
    d.take(W1, [(0, [lab(1, W1.end - 60, W2.start + 60)])])
    assert d.take(W2, [(1, [lab(1, W1.end - 60, W2.start + 60)])]) == ([], [])


def test_records_outside_the_range_are_dropped() -> None:
    """A lab neither starting nor ending in the range asked for is never yielded."""
    d = Deduplicator(W1.start, W1.end)
    outside = lab(9, W1.end + 5 * DAY, W1.end + 6 * DAY)
    assert d.take(W1, [(0, [outside, lab(1, T0 + 3 * DAY, T0 + 4 * DAY)])]) == (
        [lab(1, T0 + 3 * DAY, T0 + 4 * DAY)],
        [],
    )


def test_a_lab_returned_by_every_window_is_yielded_once() -> None:
    """Inside the range: once; outside: never; either way the state does not keep it."""
    windows = list(plan_windows(T0, T0 + 70 * DAY))
    d = Deduplicator(T0, T0 + 70 * DAY)
    inside, outside = lab(1, T0 + 30 * DAY, T0 + 31 * DAY), lab(2, T0 - 99 * DAY, None)
    got = []
    for seq, w in enumerate(windows):
        fresh, updates = d.take(w, [(seq, [inside, outside])])
        got += ids(fresh) + ids(updates)
        d.passed(w.end)
    assert got == [1] and len(d) == 0


def test_skewed_filter_near_a_boundary() -> None:
    """A lab near W2's start returned only by W1 (filter off by hours): yielded once."""
    d = Deduplicator(W1.start, W2.end)
    near = lab(1, W2.start + 3600, W2.start + 7200)
    fresh, _ = d.take(W1, [(0, [near])])
    d.passed(W1.end)
    assert ids(fresh) == [1]
    assert d.take(W2, [(1, [near])]) == ([], [])  # and if W2 returns it too


def test_a_stray_of_a_window_handed_out_of_order_is_dropped() -> None:
    """Unordered: W2 is handed before W1; a stray copy of a lab inside W2 comes with W3."""
    w3 = Window(W2.end, W2.end + 7 * DAY)
    d = Deduplicator(W1.start, w3.end)
    inside = lab(1, W2.start + 3 * DAY, W2.start + 3 * DAY + 3600)
    assert ids(d.take(W2, [(0, [inside])])[0]) == [1]  # watermark stays before W1
    assert d.take(w3, [(1, [inside])]) == ([], [])
    assert d.take(W1, [(2, [])]) == ([], [])


# --- the property: any labs, windows, skews, duplicates, strays, orders -------------------


@attrs.frozen
class Run:
    labs: list[tuple[int, int, int | None]]
    span: int
    skews: list[int]
    dup_rate: float
    strays: list[tuple[int, int]]  # (window index, lab index): returned there wrongly
    everywhere: list[int]  # lab indexes returned by every window
    recv: list[int]  # receive sequence of each window
    ordered: bool
    split: bool
    widened: bool  # windows reach the tolerance beyond the range, as iter_windows plans


RANGE = (T0, T0 + 40 * DAY)


@st.composite
def runs(draw: st.DrawFn) -> Run:
    a, b = RANGE
    n = draw(st.integers(0, 40))
    labs = []
    for i in range(n):
        s = draw(st.integers(a - 12 * DAY, b + 3 * DAY))
        e = draw(st.none() | st.integers(s, s + 12 * DAY))
        labs.append((i, s, e))
    span = draw(st.sampled_from([2 * DAY, 3 * DAY, 7 * DAY]))
    widened = draw(st.booleans())
    nw = len(_windows(span, widened))
    tol = SKEW_TOLERANCE
    skews = draw(st.lists(st.integers(-tol, tol), min_size=nw, max_size=nw))
    strays = draw(
        st.lists(st.tuples(st.integers(0, nw - 1), st.integers(0, max(0, n - 1))), max_size=8)
        if n
        else st.just([])
    )
    everywhere = draw(st.lists(st.integers(0, n - 1), max_size=2)) if n else []
    return Run(
        labs=labs, span=span, skews=skews, dup_rate=draw(st.sampled_from([0.0, 0.5])),
        strays=strays, everywhere=everywhere, recv=list(draw(st.permutations(range(nw)))),
        ordered=draw(st.booleans()), split=draw(st.booleans()), widened=widened,
    )  # fmt: skip


def _windows(span: int, widened: bool) -> list[Window]:
    """The windows over ``RANGE``, or over it widened by the tolerance at both ends."""
    ((a, b),) = widen([RANGE], SKEW_TOLERANCE) if widened else [RANGE]
    return list(plan_windows(a, b, span))


def _touches(lo: int, hi: int, s: int, e: int | None) -> bool:
    return lo <= s <= hi or (e is not None and lo <= e <= hi)


@given(runs())
@settings(max_examples=400)
@example(
    Run(
        labs=[(0, T0 - 12 * DAY, None), (1, T0 + 15 * DAY + 1, T0 + 15 * DAY + 1)],
        span=7 * DAY, skews=[0] * 6, dup_rate=0.5, strays=[], everywhere=[1],
        recv=[1, 2, 0, 3, 4, 5], ordered=False, split=False, widened=False,
    )
)  # fmt: skip
def test_exactly_once_newest_copy_bounded_state(run: Run) -> None:
    """
    Every id at most once; every lab its own windows returned is yielded; the table ends
    with the newest copy (later responses win, an ended copy beats a running one within an
    answer; no stale update is ever applied); the state forgets what cannot return.
    """
    a, b = RANGE
    windows = _windows(run.span, run.widened)
    tol = SKEW_TOLERANCE
    answers: list[list[tuple[int, list[LabResult]]]] = []
    for i, w in enumerate(windows):
        seq = run.recv[i]
        lo, hi = w.start + run.skews[i], w.end + run.skews[i]
        cuts = [w] if not run.split else [Window(w.start, w.start + w.span // 2),
                                         Window(w.start + w.span // 2, w.end)]  # fmt: skip
        parts = []
        for k, c in enumerate(cuts):
            clo, chi = c.start + run.skews[i], c.end + run.skews[i]
            part_seq = seq * 2 + k
            items = []
            for lab_id, s, e in run.labs:
                if _touches(clo, chi, s, e) or (k == 0 and lab_id in run.everywhere):
                    copy = lab(lab_id, s, e, part_seq)
                    if e is not None and (lab_id * 7 + i) % 2 < run.dup_rate * 2:
                        running = lab(lab_id, s, None, part_seq)
                        items += [running, copy] if lab_id % 2 else [copy, running]
                    else:
                        items.append(copy)
            if k == 0:
                for wi, li in run.strays:
                    if wi == i and li < len(run.labs):
                        lab_id, s, e = run.labs[li]
                        items.append(lab(lab_id, s, e, part_seq))
            parts.append((part_seq, items))
        answers.append(parts)
        assert lo <= hi

    order = sorted(range(len(windows)), key=lambda i: i if run.ordered else run.recv[i])
    d = Deduplicator(a, b, ordered=run.ordered)
    table: dict[int, LabResult] = {}
    yielded: list[int] = []
    handed: set[int] = set()
    prefix = 0
    for i in order:
        fresh, updates = d.take(windows[i], answers[i])
        yielded += ids(fresh)
        for r in fresh:
            assert r.lab_instance_id not in table
            table[r.lab_instance_id] = r
        for r in updates:
            old = table[r.lab_instance_id]
            assert r.total_run_time_seconds > old.total_run_time_seconds  # never stale
            table[r.lab_instance_id] = r
        handed.add(i)
        while prefix in handed:
            prefix += 1
        if prefix:
            released = d.passed(windows[prefix - 1].end)
            assert released >= 0
            limit = datetime.fromtimestamp(windows[prefix - 1].end - tol, timezone.utc)
            for _seq, horizon in d._known.values():
                assert horizon is None or horizon >= limit  # bounded

    assert len(yielded) == len(set(yielded))  # exactly once
    in_range = {i for i, s, e in run.labs if _touches(a, b, s, e)}
    assert set(yielded) <= in_range
    # Every lab that a window's (skewed) filter matched is yielded, with the newest copy
    # of those: including a lab near a boundary that only the neighbour window returned.
    for lab_id, s, e in run.labs:
        own = [
            (p_seq, x)
            for i, w in enumerate(windows)
            if _touches(w.start + run.skews[i], w.end + run.skews[i], s, e)
            for p_seq, items in answers[i]
            for x in items
            if x.lab_instance_id == lab_id
        ]
        if not own or lab_id not in in_range:
            continue
        assert lab_id in table
        final = table[lab_id]
        assert final.total_run_time_seconds >= max(p for p, _ in own)
        if e is not None:
            assert final.end is not None


async def test_a_100k_record_window_gives_the_loop_a_turn_every_slice() -> None:
    """The stall probe: while a window of 100,000 records is deduplicated between its
    fetch and its batch (a third of them sent twice, half of them starting on the range's
    first second, so remembered and then let go once the window is handed on), another
    task on the loop gets a turn at least once per slice of SLICE records (counted, not
    timed)."""
    n = 100_000
    a, b = T0, T0 + DAY

    def start(i: int) -> int:
        return a if i % 2 else a + i % (DAY - 120)

    labs = [lab(i, start(i), start(i) + 60) for i in range(1, n + 1)]
    copies = labs[: n // 3]
    turns = 0
    fetched_at_turn: list[int] = []

    async def fetch(w: Window, hook: EventHook | None, lease: Lease) -> list[LabResult]:
        await asyncio.sleep(0)
        fetched_at_turn.append(turns)
        return labs + copies

    done = False

    async def probe() -> None:
        nonlocal turns
        while not done:
            turns += 1
            await asyncio.sleep(0)

    task = asyncio.ensure_future(probe())
    fan = FanOut(fetch, 1, ServerClock(lambda: b + 30 * DAY), emit=lambda e, h: None)
    batches = fan.batches(a, b, [(a, b)])
    async with aclosing(batches):
        batch = await anext(batches)
        sorted_in = turns - fetched_at_turn[0]
        rest = [x async for x in batches]
    done = True
    await task
    assert len(fetched_at_turn) == 1 and rest == []  # one window, one request
    assert batch.records == labs and batch.updates == []
    # Slices of the window's records, then of the remembered ids let go.
    assert sorted_in >= (n + n // 3) // SLICE + (n // 2) // SLICE - 2
