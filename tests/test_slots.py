"""Window slots: release before decoding, take back ahead of new windows."""

from __future__ import annotations

import asyncio

import pytest

from lodresults._windows.slots import Slots


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


def test_a_free_slot_is_announced_and_counted() -> None:
    freed: list[int] = []
    slots = Slots(2, lambda: freed.append(slots.used))
    a, b = slots.lease(), slots.lease()
    assert not slots.can_start() and slots.used == 2
    with pytest.raises(RuntimeError):
        slots.lease()
    a.release()
    a.release()  # a second release gives nothing back
    assert freed == [1] and slots.can_start()
    assert not a.held and b.held
    with pytest.raises(ValueError, match="at least 1"):
        Slots(0, lambda: None)


async def test_a_holder_sending_again_goes_before_new_holders() -> None:
    freed: list[int] = []
    slots = Slots(1, lambda: freed.append(slots.used))
    first = slots.lease()
    first.release()
    second = slots.lease()  # started while the first decoded
    again = asyncio.ensure_future(first.acquire())
    await _settle()
    assert not again.done() and not slots.can_start()  # no new holder may jump the queue
    second.release()
    await again
    assert first.held and not second.held and slots.used == 1
    assert freed == [0]  # the slot went straight to the waiter, never free


async def test_a_cancelled_waiter_keeps_no_slot() -> None:
    freed: list[int] = []
    slots = Slots(1, lambda: freed.append(slots.used))
    first = slots.lease()
    first.release()
    second = slots.lease()
    first_again = asyncio.ensure_future(first.acquire())
    await _settle()
    first_again.cancel()
    await asyncio.gather(first_again, return_exceptions=True)
    assert not first.held
    second.release()
    assert slots.used == 0 and slots.can_start() and freed == [0, 0]


async def test_a_waiter_cancelled_as_it_is_granted_passes_the_slot_on() -> None:
    slots = Slots(1, lambda: None)
    a = slots.lease()
    a.release()
    b = slots.lease()
    a_again = asyncio.ensure_future(a.acquire())
    await _settle()
    b_again_started = False

    async def b_sends_again() -> None:
        nonlocal b_again_started
        await b.acquire()
        b_again_started = True

    b.release()  # grants the slot to a's waiter ...
    a_again.cancel()  # ... which is cancelled before it runs
    await asyncio.gather(a_again, return_exceptions=True)
    assert slots.used == 0 and slots.can_start()
    await b_sends_again()
    assert b_again_started and slots.used == 1


async def test_a_reserved_slot_is_kept_through_the_backoff_and_withdrawn_at_the_end() -> None:
    """
    ``reserve()`` (a failed attempt that will retry) claims the next slot handed on at
    once: the holder keeps it while it sleeps, no new holder starts in its place. A
    holder that ends while its claim waits, or after it was granted, leaves no slot used.
    """
    freed: list[int] = []
    slots = Slots(2, lambda: freed.append(slots.used))
    a, b = slots.lease(), slots.lease()
    a.release()  # a's body decodes ...
    c = slots.lease()  # ... and c takes its slot
    a.reserve()  # a's body did not decode: it will retry after a backoff
    a.reserve()  # asking twice claims once
    b.release()  # b's answer read: its slot goes to a, not to a new holder
    assert not slots.can_start() and freed == [1]
    await a.acquire()  # a's backoff is over: its slot is there
    assert a.held and slots.used == 2
    b.reserve()  # b's body did not decode either; then b is cancelled in its backoff
    b.end()
    c.end()  # c's slot would have gone to b: it is free instead
    a.end()
    assert slots.used == 0 and freed == [1, 1, 0]
    d = slots.lease()
    d.release()
    d.reserve()  # granted at once (a slot is free) ...
    assert slots.used == 1
    d.end()  # ... and handed back when d ends before sending
    assert slots.used == 0 and not slots._waiting
