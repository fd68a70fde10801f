"""
Window slots: how many windows of one iteration may be sending at once.

A window takes a slot when it starts and gives it back (``Lease.release``) as soon as its
answer has been read, before the body is decoded: the next window's request is then on
the wire while this one decodes, so decoding overlaps the network instead of adding to
each round trip. A window that must send again (a retry after a body that did not
decode, the next part of a split window) takes a slot back first (``Lease.acquire``),
ahead of windows not started yet. So the windows of one iteration never have more
requests under way than there are slots, whatever fails and however long decoding takes.

A window that will retry asks for its slot back as soon as its attempt failed
(``Lease.reserve``), not after its backoff, and keeps the slot granted while it waits:
the slots handed on meanwhile go to it, not to new windows. Otherwise a server whose
bodies stop decoding mid-run would meet every window of the lookahead, each retried in
full (twice the requests, ``tests/test_iter_results.py``); this way it meets at most one
window more than there are slots (the one sent while the first bad body decoded).

``asyncio.Semaphore`` counts the same way but cannot tell the stream that a slot came
free (the stream starts the next window from that moment, not when it next looks) nor
serve windows already under way before new ones; hence this small class.

Knows no HTTP, no windows: only asyncio.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

__all__ = ["Lease", "Slots"]


class Slots:
    """
    ``size`` slots. ``on_free`` is called whenever one comes free with nobody waiting
    for it (the owner may then start something new with ``lease()``).

    ``early``: whether holders may ``release()`` before they are done. Read at each
    release, so turning it off holds every lease to its end from then on, those already
    given out included.
    """

    def __init__(self, size: int, on_free: Callable[[], None], *, early: bool = True) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.early = early
        self._size = size
        self._used = 0
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._on_free = on_free

    @property
    def used(self) -> int:
        """Slots held right now."""
        return self._used

    def can_start(self) -> bool:
        """True if a new holder may take a slot now (nobody waits while one is free)."""
        return self._used < self._size

    def lease(self) -> Lease:
        """A lease holding a slot; only when ``can_start()``."""
        if not self.can_start():
            raise RuntimeError("no free slot")
        self._used += 1
        return Lease(self)

    def _claim(self) -> asyncio.Future[None]:
        # A future done once the claimant holds a slot: at once if one is free, else
        # when one is handed on (first come, first served, ahead of new holders).
        claim: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.can_start():
            self._used += 1
            claim.set_result(None)
        else:
            self._waiting.append(claim)
        return claim

    def _drop(self, claim: asyncio.Future[None]) -> None:
        # A claim nobody will use: a slot granted to it is passed on, a wait is withdrawn.
        if claim.done() and not claim.cancelled():
            self._give_back()
        else:
            claim.cancel()
            if claim in self._waiting:
                self._waiting.remove(claim)

    def _give_back(self) -> None:
        # The slot passes straight to the first holder waiting to send again (the count
        # of used slots does not change), or becomes free.
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._used -= 1
        self._on_free()


class Lease:
    """One holder's claim on a slot: released before decoding, taken back before sending."""

    __slots__ = ("_claim", "_held", "_slots")

    def __init__(self, slots: Slots) -> None:
        self._slots = slots
        self._held = True
        self._claim: asyncio.Future[None] | None = None  # asked back, not yet taken

    @property
    def held(self) -> bool:
        """True while this lease holds a slot."""
        return self._held

    def release(self) -> None:
        """Give the slot back before the holder is done (no-op if not held, or not ``early``)."""
        if self._slots.early and self._held:
            self._held = False
            self._slots._give_back()

    def end(self) -> None:
        """Give the slot back for good, or withdraw the ``reserve()``: the holder is done."""
        claim, self._claim = self._claim, None
        if claim is not None:
            self._slots._drop(claim)
        if self._held:
            self._held = False
            self._slots._give_back()

    def reserve(self) -> None:
        """
        Ask for a slot back now, to send again later (a retry after its backoff): the
        next slot handed on is kept for this holder, not given to a new one. No-op if
        held or already asked.
        """
        if not self._held and self._claim is None:
            self._claim = self._slots._claim()

    async def acquire(self) -> None:
        """Hold a slot again, waiting ahead of new holders (no-op if held)."""
        if self._held:
            return
        self.reserve()
        claim = self._claim
        assert claim is not None
        try:
            await claim
        except asyncio.CancelledError:
            if self._claim is claim:
                self._claim = None
                self._slots._drop(claim)  # granted just as it was cancelled: pass it on
            raise
        self._claim = None
        self._held = True
