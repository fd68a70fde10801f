"""The fan-out engine with a fake fetch: back-pressure, fail-fast and deadlines, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import unittest.mock
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import LodDeadlineError, LodServerError, LodWindowError
from lodresults._exceptions import LodWindowTooLongError
from lodresults._windows.plan import Window, WindowPlanner
from lodresults._windows.slots import Lease, Slots
from lodresults._windows.stream import Finished, stream_windows
from lodresults.testing import ManualClock

WEEK = 7 * 86400
A = 1_700_000_000


def _planner(weeks: int) -> WindowPlanner:
    return WindowPlanner([(A, A + weeks * WEEK)])


async def _settle() -> None:
    for _ in range(100):
        await asyncio.sleep(0)


@pytest.mark.parametrize(("concurrency", "lookahead"), [(3, None), (2, 5), (1, 1)])
async def test_a_stalled_oldest_window_stops_the_fetching_ahead(
    concurrency: int, lookahead: int | None
) -> None:
    """While the oldest window is outstanding, exactly `lookahead` windows are started."""
    ahead = lookahead if lookahead is not None else 2 * concurrency
    started: list[int] = []
    release = asyncio.Event()

    async def fetch(w: Window, _: Lease) -> list[int]:
        started.append(w.start)
        if w.start == A:
            await release.wait()
        return [w.start]

    stream = stream_windows(_planner(30), fetch, concurrency=concurrency, lookahead=lookahead)
    async with contextlib.aclosing(stream):
        first = asyncio.ensure_future(stream.__anext__())
        await _settle()
        assert not first.done()
        assert len(started) == ahead  # not one more, however long the consumer waits
        release.set()
        got = [(await first).window.start] + [f.window.start async for f in stream]
    assert got == sorted(set(started)) and len(started) == len(got) == 30


async def test_a_slow_consumer_holds_the_fetching_at_the_lookahead() -> None:
    """A consumer that does not pull: at most `lookahead` windows beyond what it took."""
    started: list[int] = []

    async def fetch(w: Window, _: Lease) -> list[int]:
        started.append(w.start)
        return [w.start]

    stream = stream_windows(_planner(40), fetch, concurrency=4)
    async with contextlib.aclosing(stream):
        taken = [await stream.__anext__() for _ in range(3)]
        await _settle()  # the consumer is busy elsewhere
        assert len(started) <= len(taken) + 2 * 4


async def test_ordered_failure_cancels_the_windows_after_it() -> None:
    """Window 2 fails: 0 and 1 are yielded, 3.. are cancelled, and nothing new starts."""
    started: list[int] = []
    cancelled: list[int] = []
    gate = asyncio.Event()

    async def fetch(w: Window, _: Lease) -> list[int]:
        index = (w.start - A) // WEEK
        started.append(index)
        if index == 2:
            raise LodServerError("HTTP 500", status=500)
        try:
            if index < 2:
                await gate.wait()  # earlier windows still running when 2 fails
            else:
                await asyncio.Event().wait()  # later ones never finish on their own
        except asyncio.CancelledError:
            cancelled.append(index)
            raise
        return [index]

    got: list[Finished[int]] = []
    stream = stream_windows(_planner(20), fetch, concurrency=4)
    with pytest.raises(LodWindowError) as info:
        async with contextlib.aclosing(stream):
            pending = asyncio.ensure_future(stream.__anext__())
            await _settle()
            assert sorted(cancelled) == [3]  # cancelled at once, before 0 and 1 finish
            assert sorted(started) == [0, 1, 2, 3]  # nothing started after the failure
            gate.set()
            got.append(await pending)
            async for f in stream:
                got.append(f)
    assert [f.items for f in got] == [[0], [1]]
    assert info.value.start == A + 2 * WEEK


async def test_unordered_failure_is_raised_at_once() -> None:
    """ordered=False: a failure is raised before windows that finished with it are yielded."""

    async def fetch(w: Window, _: Lease) -> list[int]:
        if w.start == A + WEEK:
            raise LodServerError("HTTP 500", status=500)
        if w.start > A + WEEK:
            await asyncio.Event().wait()
        return [w.start]

    stream = stream_windows(_planner(10), fetch, concurrency=4, ordered=False)
    with pytest.raises(LodWindowError) as info:
        async with contextlib.aclosing(stream):
            await _settle()
            await stream.__anext__()
    assert info.value.start == A + WEEK


async def test_deadline_names_the_unfinished_windows() -> None:
    """Past the deadline everything is cancelled; the error lists the ranges left."""
    clock = ManualClock()

    async def fetch(w: Window, _: Lease) -> list[int]:
        await clock.sleep(10.0 if w.start < A + 3 * WEEK else 1000.0)
        return [w.start]

    got: list[int] = []
    stream = stream_windows(_planner(8), fetch, concurrency=4, deadline=25.0, timer=clock)
    with pytest.raises(LodDeadlineError) as info:
        async with contextlib.aclosing(stream):
            async for f in stream:
                got.extend(f.items)
    assert clock.now() == 25.0
    assert got == [A, A + WEEK, A + 2 * WEEK]
    assert info.value.unfinished == ((A + 3 * WEEK, A + 8 * WEEK),)
    assert info.value.deadline == 25.0
    assert "5 windows unfinished" in str(info.value)
    assert isinstance(info.value, TimeoutError)


async def test_a_window_decoding_leaves_its_slot_to_the_next_one() -> None:
    """
    A window that released its lease (its answer read, its body decoding) is not
    counted: the next windows start at once, up to the lookahead. The first round keeps
    its slots to the end (an answer may refuse the window's length), and its windows
    release in vain.
    """
    started: list[int] = []
    decoded = asyncio.Event()

    async def fetch(w: Window, lease: Lease) -> list[int]:
        index = (w.start - A) // WEEK
        started.append(index)
        lease.release()  # answer read
        if index >= 2:
            await decoded.wait()  # a long decode
        return [index]

    stream = stream_windows(_planner(20), fetch, concurrency=2, lookahead=6)
    async with contextlib.aclosing(stream):
        assert (await stream.__anext__()).items == [0]
        await _settle()
        # Window 1 is the oldest not yielded: windows 2..6 started (without the early
        # release, 2 and 3 would hold both slots and nothing more would start).
        assert started == list(range(7))
        decoded.set()
        got = [f.items[0] async for f in stream]
    assert got == list(range(1, 20))


@pytest.mark.parametrize("concurrency", [1, 2, 3])
async def test_windows_sending_again_never_exceed_the_slots(concurrency: int) -> None:
    """
    Every window sends three times (a retry after a body that did not decode, parts of a
    split), releasing its lease while it 'decodes': never more than `concurrency` send
    at once (that a window sending again goes first is test_slots').
    """
    clock = ManualClock()
    sending = 0
    most = 0

    async def fetch(w: Window, lease: Lease) -> list[int]:
        nonlocal sending, most
        index = (w.start - A) // WEEK
        for _ in range(3):
            await lease.acquire()
            sending += 1
            most = max(most, sending)
            await clock.sleep(1.0 + index % 3)  # the request
            sending -= 1
            lease.release()
            await clock.sleep(0.5)  # the decode, slot free
        return [index]

    stream = stream_windows(_planner(12), fetch, concurrency=concurrency, timer=clock)
    async with contextlib.aclosing(stream):
        got = [f.items[0] async for f in stream]
    assert got == list(range(12))
    assert most == concurrency


#: What one attempt of a window meets, as the client's caller handles it.
_OUTCOMES = ("ok", "ok", "ok", "retry_before", "retry_after", "too_long", "fatal", "slow")


@given(
    concurrency=st.integers(1, 4),
    weeks=st.integers(1, 12),
    ordered=st.booleans(),
    stop_after=st.one_of(st.none(), st.integers(0, 10)),
    deadline=st.one_of(st.none(), st.floats(0.5, 40.0)),
    draws=st.lists(st.sampled_from(_OUTCOMES), min_size=1, max_size=64),
)
def test_any_mix_of_outcomes_keeps_the_slots(
    concurrency: int,
    weeks: int,
    ordered: bool,
    stop_after: int | None,
    deadline: float | None,
    draws: list[str],
) -> None:
    """
    Windows answer, fail before or after handing their slot on (and retry, reserving
    their slot again at once, as the caller does), are refused as too long (and split),
    fail for good, or are slow, in any mix; the consumer may stop early, a deadline may
    pass. Never more than
    `concurrency` send at once, every window is yielded once and in order (up to the
    failure or the stop), and when the stream is closed no slot is held or claimed.
    """
    made: list[Slots] = []

    class Recorded(Slots):
        def __init__(self, size: int, on_free: Callable[[], None], *, early: bool) -> None:
            super().__init__(size, on_free, early=early)
            made.append(self)

    async def run() -> None:
        clock = ManualClock()
        outcomes = itertools.cycle(draws)
        sending = most = 0
        leases: list[Lease] = []

        async def fetch(w: Window, lease: Lease) -> list[Window]:
            nonlocal sending, most
            leases.append(lease)
            for _ in range(4):
                await lease.acquire()
                sending += 1
                most = max(most, sending)
                outcome = next(outcomes)
                try:
                    await clock.sleep(5.0 if outcome == "slow" else 1.0)
                finally:  # answered, or cancelled (a request is then abandoned)
                    sending -= 1
                if outcome == "retry_before":  # a 5xx: the slot is kept through the backoff
                    lease.reserve()
                    await clock.sleep(0.5)
                    continue
                lease.release()  # answer read: decoding
                await clock.sleep(0.25)
                if outcome == "retry_after":  # the body did not decode
                    lease.reserve()
                    await clock.sleep(0.5)
                    continue
                if outcome == "too_long" and w.span > 86400:  # a server limit of a day
                    raise LodWindowTooLongError("too long", error_text="too long")
                if outcome == "fatal":
                    raise LodServerError("HTTP 500", status=500)
                return [w]
            raise LodServerError("HTTP 503 (out of retries)", status=503)

        planner = _planner(weeks)
        got: list[Window] = []
        stream = stream_windows(
            planner, fetch, concurrency=concurrency, ordered=ordered, deadline=deadline,
            timer=clock,
        )  # fmt: skip
        with contextlib.suppress(LodWindowError, LodDeadlineError):
            async with contextlib.aclosing(stream):
                async for f in stream:
                    assert f.items and sum(w.span for w in f.items) == f.window.span
                    got.append(f.window)
                    if stop_after is not None and len(got) > stop_after:
                        break
        assert most <= concurrency
        if ordered:  # a contiguous prefix of the range
            assert all(x.end == y.start for x, y in itertools.pairwise(got))
            assert not got or got[0].start == A
        assert len({w.start for w in got}) == len(got)
        assert all(not lease.held for lease in leases)
        (slots,) = made
        assert slots.used == 0 and not slots._waiting

    with unittest.mock.patch("lodresults._windows.stream.Slots", Recorded):
        asyncio.run(run())


@pytest.mark.parametrize("concurrency", [1, 3])
async def test_a_limit_that_shrinks_mid_run_stops_the_early_release_at_once(
    concurrency: int,
) -> None:
    """
    Six weeks came back whole (slots are handed on early), then the server's limit falls
    to two days. The first refusal ends the early release for every window, those under
    way included, and a part planned before the limit fell again is planned anew before
    it is sent: each window out when the limit fell (one more than the slots: the one
    sent while the first refusal decoded) is refused at most twice.
    """
    clock = ManualClock()
    limit = WEEK
    refused: list[int] = []

    async def fetch(w: Window, lease: Lease) -> list[int]:
        nonlocal limit
        await lease.acquire()
        await clock.sleep(1.0)  # the request
        if clock.now() >= 6.5:
            limit = 2 * 86400
        lease.release()
        await clock.sleep(0.25)  # the decode
        if w.span > limit:
            refused.append(w.span)
            raise LodWindowTooLongError("too long", error_text="too long")
        return [w.start]

    planner = _planner(20)
    stream = stream_windows(planner, fetch, concurrency=concurrency, timer=clock)
    async with contextlib.aclosing(stream):
        got = [f.window async for f in stream]
    assert got[0].start == A and got[-1].end == A + 20 * WEEK
    assert all(x.end == y.start for x, y in itertools.pairwise(got))
    assert len(refused) <= 2 * (concurrency + 1), refused
