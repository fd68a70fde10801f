"""
Window slots: how many windows of one iteration may be sending at once.

A window takes a slot when it starts and gives it back (``Lease.release``) as soon as its
answer has been read, before the body is decoded: the next window's request is then on
the wire while this one decodes, so decoding overlaps the network instead of adding to
each round trip. A window that must send again (a retry after a body that did not
decode, the next part of a split window) takes a slot back first (``Lease.acquire``),
ahead of windows not started yet. So the windows of one iteration never have more
requests under way than there are slots, whatever fails and however long decoding takes.

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
    """

    def __init__(self, size: int, on_free: Callable[[], None]) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
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

    def lease(self, *, early: bool = True) -> Lease:
        """
        A lease holding a slot; only when ``can_start()``. With ``early=False`` its
        holder's ``release()`` is ignored: the slot comes back only with ``end()``.
        """
        if not self.can_start():
            raise RuntimeError("no free slot")
        self._used += 1
        return Lease(self, early)

    async def _take(self) -> None:
        if self.can_start():
            self._used += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._give_back()  # granted just as it was cancelled: pass it on
            elif waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

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

    __slots__ = ("_early", "_held", "_slots")

    def __init__(self, slots: Slots, early: bool) -> None:
        self._slots = slots
        self._early = early
        self._held = True

    @property
    def held(self) -> bool:
        """True while this lease holds a slot."""
        return self._held

    def release(self) -> None:
        """Give the slot back before the holder is done (no-op if not held or not early)."""
        if self._early:
            self.end()

    def end(self) -> None:
        """Give the slot back for good: the holder is done (no-op if not held)."""
        if self._held:
            self._held = False
            self._slots._give_back()

    async def acquire(self) -> None:
        """Hold a slot again, waiting ahead of new holders (no-op if held)."""
        if not self._held:
            await self._slots._take()
            self._held = True
