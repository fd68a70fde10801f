"""iter_results against the simulator: exactly-once, windows, faults, order, cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
from typing import Any

import attrs
import pytest

from lodresults import (
    Event,
    LabResult,
    LodServerError,
    LodWindowError,
    Throttled,
    WindowCompleted,
    WindowsPlanned,
    WindowSplit,
    unstructure_record,
)
from lodresults.testing import Faults, ManualClock, Simulator
from tests.conftest import FIXED_SPAN, NOW, fast_client, make_fixed_sim, make_sim

DAY = 86400


def _range(sim: Simulator, days: int, offset_days: int = 30) -> tuple[int, int]:
    a = sim.span[0] + offset_days * DAY + 12345  # not aligned to anything
    return a, a + days * DAY


def _client_tasks() -> set[asyncio.Task[object]]:
    """Tasks still alive other than this test's own and the in-process server's."""
    me = asyncio.current_task()
    return {
        t
        for t in asyncio.all_tasks()
        if t is not me and "aiohttp/web_" not in t.get_coro().cr_code.co_filename  # type: ignore[union-attr]
    }


async def _collect(client, a: int, b: int, **kw) -> list[LabResult]:  # type: ignore[no-untyped-def]
    async with contextlib.aclosing(client.iter_results(a, b, **kw)) as it:
        return [r async for r in it]


async def test_multi_month_exactly_once(sim: Simulator) -> None:
    """Six months: every lab the server has is yielded once, equal to the server's record."""
    a, b = _range(sim, 183)
    async with fast_client(sim, max_concurrency=4) as c:
        got = await _collect(c, a, b)
    ids = [r.lab_instance_id for r in got]
    assert len(ids) == len(set(ids))
    assert set(ids) == sim.ids_between(a, b)
    truth = {r["LabInstanceId"]: r for r in sim.between(a, b)}
    assert all(unstructure_record(r) == truth[r.lab_instance_id] for r in got)
    # labs crossing window boundaries exist in this range, so dedup was exercised
    assert sum(1 for r in truth.values() if r["End"] and r["End"] - r["Start"] > 7 * DAY) > 0


async def test_boundary_seconds_and_spanning_labs() -> None:
    """Labs exactly on window boundaries and labs spanning many windows come once."""
    a = 1_700_000_000
    w = 7 * DAY
    recs = []
    for i, (s, e) in enumerate(
        [
            (a, a + 10),
            (a + w, a + w),
            (a + w - 5, a + w),
            (a + 3, a + 3 * w),
            (a + w, None),
            (a - 100, a),
            (a + 2 * w, a + 5 * w),
            (a - 10, a + 10 * w),
        ]
    ):
        recs.append(_record(1000 + i, s, e))
    async with make_sim(records=recs, span=(a - DAY, a + 6 * w)) as sim, fast_client(sim) as c:
        got = await _collect(c, a, a + 4 * w)
        ids = [r.lab_instance_id for r in got]
        assert sorted(ids) == sorted(sim.ids_between(a, a + 4 * w))
        assert len(ids) == len(set(ids))
        assert 1007 not in ids  # starts before and ends after the range: not "within"


@pytest.mark.parametrize("strict", [False, True])
async def test_both_seven_day_readings(strict: bool) -> None:
    """Whether exactly 7 days is allowed or not, the caller gets the exact set."""
    events: list[Event] = []
    async with make_sim(strict_seven_days=strict) as sim, fast_client(sim) as c:
        a, b = _range(sim, 90)
        got = await _collect(c, a, b, on_event=events.append)
        assert {r.lab_instance_id for r in got} == sim.ids_between(a, b)
        assert len(got) == len(sim.ids_between(a, b))
    splits = [e for e in events if isinstance(e, WindowSplit)]
    if strict:
        assert splits and splits[0].new_limit == 7 * DAY - 1
        # later windows were planned under the learned limit: only the first few split
        assert len(splits) <= c.max_concurrency
    else:
        assert not splits


async def test_server_with_a_lower_limit_than_documented() -> None:
    """A server that allows only 2 days still yields the exact set (limit halves)."""
    async with make_sim(max_window_seconds=2 * DAY) as sim, fast_client(sim) as c:
        a, b = _range(sim, 40)
        got = await _collect(c, a, b)
        assert sorted(r.lab_instance_id for r in got) == sorted(sim.ids_between(a, b))


TRANSIENT = ("http500", "http502", "http503", "reset", "reset_body", "truncate", "malformed")


@pytest.mark.parametrize("kind", [*TRANSIENT, "all"])
async def test_transient_faults_at_a_high_rate_yield_the_exact_set(kind: str) -> None:
    """40 % of requests fail (one kind, or all transient kinds): nothing lost, nothing twice."""
    kinds = TRANSIENT if kind == "all" else (kind,)
    async with make_fixed_sim(faults=Faults(rate=0.4, kinds=kinds, retry_after="0")) as sim:
        async with fast_client(sim, max_retries=12) as c:
            a, b = _range(sim, 120)
            got = await _collect(c, a, b)
        ids = [r.lab_instance_id for r in got]
        assert len(ids) == len(set(ids))
        assert set(ids) == sim.ids_between(a, b)
        assert sum(sim.stats.faults.values()) > 0


async def test_slow_answers_past_the_timeout_are_retried() -> None:
    """Answers slower than the client's timeout are abandoned and retried."""
    faults = Faults(rate=0.3, kinds=("slow",), slow_seconds=1.0)
    async with (
        make_fixed_sim(faults=faults) as sim,
        fast_client(sim, timeout=0.3, max_retries=10) as c,
    ):
        a, b = _range(sim, 40)
        got = await _collect(c, a, b)
        assert sorted(r.lab_instance_id for r in got) == sorted(sim.ids_between(a, b))
        assert sim.stats.faults["slow"] > 0


async def test_429_storm_converges_and_completes() -> None:
    """
    A server allowing 20 req/s and a client set to 500 req/s: exact set, rate adapts.

    Client and server share a ManualClock: pacing, Retry-After waits and the server's
    token bucket all run in virtual time, so no outcome depends on the machine's speed;
    the retries' jitter is drawn from a seeded generator, so the run is the same every
    time. The pace ends within 2 % of the allowance: a probe above it is the design
    (``_ratelimit``), and unseeded, 40 runs ended between 19.95 and 20.01.
    """
    events: list[Event] = []
    clock = ManualClock(NOW)
    async with make_sim(rate_limit=20.0, burst=2, clock=clock) as sim:
        async with fast_client(
            sim, rate_limit=500.0, max_concurrency=8, max_retries=20, clock=clock
        ) as c:
            caller = c._caller
            caller._policy = attrs.evolve(caller._policy, rand=random.Random(12).random)
            a, b = _range(sim, 300)
            got = await _collect(c, a, b, on_event=events.append)
            final_rate = c.current_rate
        assert sorted(r.lab_instance_id for r in got) == sorted(sim.ids_between(a, b))
    assert sim.stats.throttled > 0
    assert any(isinstance(e, Throttled) for e in events)
    assert final_rate is not None and 16.0 <= final_rate <= 20.4  # at the allowance


@pytest.mark.parametrize("fmt", ["seconds", "http-date"])
async def test_retry_after_both_forms(fmt: str) -> None:
    """429 with Retry-After as seconds or as an HTTP-date is honoured."""
    async with make_sim(rate_limit=5.0, retry_after_format=fmt) as sim:
        async with fast_client(sim, max_concurrency=4, max_retries=10) as c:
            a, b = _range(sim, 21)
            got = await _collect(c, a, b)
        assert sorted(r.lab_instance_id for r in got) == sorted(sim.ids_between(a, b))
        assert sim.stats.throttled > 0


async def test_permanent_failure_names_the_window_after_earlier_windows() -> None:
    """A window that always fails raises LodWindowError naming it; earlier ones came first."""
    async with make_sim() as sim0:
        a, _ = _range(sim0, 1)
    bad = (a + 30 * DAY, a + 30 * DAY + 10)
    async with make_sim(fail_range=bad) as sim, fast_client(sim, max_retries=2) as c:
        got: list[LabResult] = []
        with pytest.raises(LodWindowError) as info:
            async with contextlib.aclosing(c.iter_results(a, a + 90 * DAY)) as it:
                async for r in it:
                    got.append(r)
    err = info.value
    assert err.start <= bad[1] and err.end >= bad[0]
    assert isinstance(err.error, LodServerError) and err.__cause__ is err.error
    assert err.start_iso in str(err) and str(err.start) in str(err) and str(err.end) in str(err)
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", str(err))
    assert {r.lab_instance_id for r in got} == sim.ids_between(a, err.start)
    assert len(got) == len({r.lab_instance_id for r in got})


async def test_status0_is_permanent_and_named() -> None:
    """A Status 0 answer is not retried and fails its window."""
    async with make_sim(faults=Faults(rate=1.0, kinds=("status0",))) as sim, fast_client(sim) as c:
        a, b = _range(sim, 20)
        with pytest.raises(LodWindowError, match="Status 0"):
            await _collect(c, a, b)


async def test_ordered_yields_windows_chronologically() -> None:
    """ordered=True: windows in order even when some answers are slow."""
    events: list[Event] = []
    faults = Faults(rate=0.3, kinds=("slow",), slow_seconds=0.15)
    async with make_fixed_sim(faults=faults) as sim, fast_client(sim, max_concurrency=6) as c:
        a, b = _range(sim, 120)
        got = await _collect(c, a, b, on_event=events.append)
    done = [e.window.start for e in events if isinstance(e, WindowCompleted)]
    assert done == sorted(done)
    # The simulator answers in start order and a lab starting in the range is yielded by
    # the window holding its start: with windows in order and each window's records in
    # the server's order, the starts come out sorted (and there are many of them).
    starts = [r.start for r in got if a <= r.start.timestamp()]
    assert len(starts) > 100 and starts == sorted(starts)


async def test_unordered_yields_as_they_arrive_with_the_same_set() -> None:
    """ordered=False: same exact set, windows in arrival order (not necessarily sorted)."""
    events: list[Event] = []
    faults = Faults(rate=0.3, kinds=("slow",), slow_seconds=0.15)
    async with make_fixed_sim(faults=faults) as sim, fast_client(sim, max_concurrency=6) as c:
        a, b = _range(sim, 120)
        got = await _collect(c, a, b, ordered=False, on_event=events.append)
        ids = [r.lab_instance_id for r in got]
        assert len(ids) == len(set(ids)) and set(ids) == sim.ids_between(a, b)
    done = [e.window.start for e in events if isinstance(e, WindowCompleted)]
    assert done != sorted(done)


async def test_concurrency_and_rate_are_never_exceeded() -> None:
    """
    The simulator counts: in-flight <= max_concurrency; arrivals within the rate.

    Arrival times are virtual (a ManualClock shared with the client), so the bound is
    exact: starts are 0.1 s apart, and an arrival can only be later than its start, by
    at most the requests in flight. Unpaced, all 29 would arrive at once.
    """
    clock = ManualClock(NOW)
    async with make_sim(latency=0.01, clock=clock) as sim:
        async with fast_client(sim, max_concurrency=3, rate_limit=10.0, clock=clock) as c:
            a, b = _range(sim, 200)
            await _collect(c, a, b)
        assert sim.stats.max_in_flight <= 3
        assert sim.stats.total == 29
        assert sim.stats.max_rate(1.0) <= 10 + 1 + 3
        assert max(sim.stats.arrivals) - min(sim.stats.arrivals) >= 2.8 - 1e-3


async def test_break_with_aclosing_leaves_nothing_running(sim: Simulator) -> None:
    """Breaking out early cancels in-flight requests; no task is left behind."""
    sim.latency = 0.05
    async with fast_client(sim, max_concurrency=4) as c:
        a, b = _range(sim, 300)
        async with contextlib.aclosing(c.iter_results(a, b)) as it:
            async for _ in it:
                break
        assert _client_tasks() == set()
    requests_at_break = sim.stats.total
    await asyncio.sleep(0.2)
    assert sim.stats.total == requests_at_break


async def test_break_without_aclosing_cleans_up_soon(sim: Simulator) -> None:
    """Even without aclosing, the iterator's collection cancels its tasks."""
    sim.latency = 0.05
    async with fast_client(sim, max_concurrency=4) as c:
        a, b = _range(sim, 300)
        async for _ in c.iter_results(a, b):
            break
        for _ in range(20):
            if not _client_tasks():
                break
            await asyncio.sleep(0.01)
        assert _client_tasks() == set()


async def test_cancelling_the_consumer_cancels_the_fetches(sim: Simulator) -> None:
    """Task cancellation propagates: nothing pending afterwards, no warnings."""
    sim.latency = 0.1
    async with fast_client(sim, max_concurrency=4) as c:
        a, b = _range(sim, 300)
        started = asyncio.Event()

        async def consume() -> None:
            async with contextlib.aclosing(c.iter_results(a, b)) as it:
                async for _ in it:
                    started.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert _client_tasks() == set()


async def test_exception_in_consumer_cancels_the_fetches(sim: Simulator) -> None:
    """An exception raised by the consumer closes the stream and its tasks."""
    sim.latency = 0.05
    async with fast_client(sim) as c:
        a, b = _range(sim, 300)
        with pytest.raises(RuntimeError, match="consumer"):
            async with contextlib.aclosing(c.iter_results(a, b)) as it:
                async for _ in it:
                    raise RuntimeError("consumer failed")
        assert _client_tasks() == set()


async def test_slow_consumer_applies_back_pressure(sim: Simulator) -> None:
    """A consumer that stalls stops the fetching ahead after a few windows."""
    async with fast_client(sim, max_concurrency=2) as c:
        a, b = _range(sim, 600)
        async with contextlib.aclosing(c.iter_results(a, b)) as it:
            await it.__anext__()
            await asyncio.sleep(0.3)  # the consumer is busy; fetches must not run ahead
            fetched = sim.stats.total
    assert fetched <= 2 * 2 + 2  # lookahead (2 x concurrency) plus the yielded window


async def test_progress_events_and_dedup_stays_bounded(
    sim: Simulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Events count every window; the dedup state stays far below the record count."""
    events: list[Event] = []
    caplog.set_level(logging.DEBUG, logger="lodresults")
    async with fast_client(sim, max_concurrency=4) as c:
        a, b = sim.span
        got = await _collect(c, a, b, on_event=events.append)
    planned = [e for e in events if isinstance(e, WindowsPlanned)]
    completed = [e for e in events if isinstance(e, WindowCompleted)]
    assert len(planned) == 1 and planned[0].total == len(completed)
    assert sum(e.new_records for e in completed) == len(got)
    held = [int(m) for m in re.findall(r"dedup holds (\d+) ids", caplog.text)]
    assert held and max(held) < len(got) / 20


def _record(lab_id: int, start: int, end: int | None) -> dict[str, object]:
    return {
        "LabInstanceId": lab_id,
        "LabProfileId": 1,
        "Start": start,
        "End": end,
        "LastActivity": None,
        "UserId": "u",
        "ClassId": None,
        "CompletionStatus": 4 if end else 3,
        "TotalRunTimeSeconds": 0 if end is None else end - start,
        "TaskCompletePercent": 0,
        "IsExam": False,
        "ExamPassed": None,
        "ExamScore": None,
        "ExamMaxPossibleScore": None,
        "ExamPassingScore": None,
        "IpAddress": None,
        "Country": None,
        "Region": None,
        "City": None,
        "Latitude": None,
        "Longitude": None,
        "LabHostId": 1,
        "DatacenterId": 1,
        "DeliveryRegionId": 1,
    }


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_the_next_request_is_sent_before_a_body_is_decoded(
    monkeypatch: pytest.MonkeyPatch, concurrency: int
) -> None:
    """
    Decoding overlaps the network: when a window's body is decoded, the request of the
    window that took its slot has already gone out (seen by aiohttp's request tracing),
    and never more than ``max_concurrency`` requests are out at once.
    """
    import aiohttp

    from lodresults._records.decode import RecordDecoder, Steps

    sent = 0
    seen_at_decode: list[int] = []
    real = RecordDecoder.steps

    def steps(self: RecordDecoder, body: bytes, *args: Any) -> Steps:
        seen_at_decode.append(sent)
        return real(self, body, *args)

    async def on_sent(*_: object) -> None:
        nonlocal sent
        sent += 1

    monkeypatch.setattr(RecordDecoder, "steps", steps)
    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_sent)
    async with make_sim(latency=0.01) as sim, aiohttp.ClientSession(trace_configs=[trace]) as s:
        async with fast_client(sim, max_concurrency=concurrency, session=s) as c:
            a, b = _range(sim, 70)
            got = await _collect(c, a, b)
        assert {r.lab_instance_id for r in got} == sim.ids_between(a, b)
        assert sim.stats.max_in_flight <= concurrency
    windows = len(seen_at_decode)
    assert windows == 11  # 70 days, asked from a day before to a day after: 72 days
    # Decoding the k-th answer, the next requests were already sent, as far as slots
    # allow (without the overlap: k + concurrency). Not so in the first round: until a
    # whole window has come back, an answer may yet refuse the window's length.
    assert seen_at_decode[0] == concurrency, seen_at_decode
    for k, out in enumerate(seen_at_decode[concurrency:], start=concurrency):
        assert out >= min(k + 1 + concurrency, windows), seen_at_decode


@pytest.mark.parametrize(("concurrency", "ordered"), [(1, True), (4, True), (4, False)])
async def test_bodies_that_stop_decoding_mid_run_cost_no_more_windows(
    concurrency: int, ordered: bool
) -> None:
    """
    Ten weeks decode, then every body is malformed (a retryable failure, seen only after
    the slot was handed on for the decode). A window waiting to retry keeps its claim on
    a slot, so no new window starts in its place: the failure reaches at most one window
    more than there are slots (the one sent while the first bad body decoded), each
    tried ``max_retries + 1`` times, as before slots were handed on early.
    """
    a, b = FIXED_SPAN[0], FIXED_SPAN[0] + 40 * 7 * DAY
    clock = ManualClock(FIXED_SPAN[1])
    bad = (a + 10 * 7 * DAY + 1, b)
    async with make_fixed_sim(fail_range=bad, fail_kind="malformed", clock=clock) as sim:
        client = fast_client(sim, max_concurrency=concurrency, max_retries=3, clock=clock)
        async with client as c:
            with pytest.raises(LodWindowError):
                await _collect(c, a, b, ordered=ordered)
        failed = [log for log in sim.log if log.fault is not None]
        windows = {(log.query["start"], log.query["end"]) for log in failed}
    assert len(windows) <= concurrency + 1, sorted(windows)
    assert len(failed) <= (concurrency + 1) * 4
    assert sim.stats.max_in_flight <= concurrency


async def test_records_handed_over_are_not_held_by_the_iterator() -> None:
    """A record the consumer lets go is freed then: iter_results keeps no reference to the
    records it handed over (but those the dedup remembers near a window's edges), so a
    window's records are not all freed in one step of the loop when it ends."""
    import gc
    import weakref

    from tests.test_store import lab

    a = 1_700_000_000
    day = 86400
    # One week-long window; 3,000 labs well inside it (none near an edge, all ended).
    recs = [
        lab(i, Start=a + 2 * day + i * 60, End=a + 2 * day + i * 60 + 30) for i in range(1, 3001)
    ]
    sim = Simulator(records=recs, span=(a - 30 * day, a + 30 * day), api_key="k" * 20)
    alive: list[weakref.ref[LabResult]] = []
    async with sim, fast_client(sim) as client:
        n = 0
        async with contextlib.aclosing(client.iter_results(a, a + 7 * day)) as it:
            async for record in it:
                alive.append(weakref.ref(record))
                del record
                n += 1
                if n == 2500:
                    gc.collect()
                    held = sum(r() is not None for r in alive)
                    assert held <= 1, held  # the one in the loop's variable at most
    assert n == 3000
