"""The fan-out engine with a fake fetch: back-pressure, fail-fast and deadlines, in virtual time."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from lodresults import LodDeadlineError, LodServerError, LodWindowError
from lodresults._slots import Lease
from lodresults._stream import Finished, stream_windows
from lodresults._windows import Window, WindowPlanner
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
