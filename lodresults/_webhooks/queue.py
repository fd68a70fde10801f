"""
The receiver's queue of lab ids: bounded, each id once, oldest first.

A push for a lab already waiting is coalesced into it (one fetch brings the lab's latest
state, whatever number of events came). A push for a lab being fetched right now queues
it again: that fetch may have been sent before the change the push announces. A lab is
handed to one worker at a time. Knows no HTTP and no database.
"""

from __future__ import annotations

import asyncio
import enum

__all__ = ["LabQueue", "Offer"]


class Offer(enum.Enum):
    """What became of an offered id."""

    QUEUED = "queued"
    COALESCED = "coalesced"
    FULL = "full"


class LabQueue:
    """At most ``limit`` lab ids waiting, in the order they first came."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("the queue must hold at least one id")
        self.limit = limit
        self._waiting: dict[int, float] = {}
        self._busy: dict[int, float] = {}
        self._changed = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def __len__(self) -> int:
        """Ids waiting (not those being fetched)."""
        return len(self._waiting)

    @property
    def busy(self) -> int:
        """Ids being fetched now."""
        return len(self._busy)

    def offer(self, lab_instance_id: int, at: float) -> Offer:
        """Queue ``lab_instance_id`` (received at ``at``) unless it waits already or it is full."""
        if lab_instance_id in self._waiting:
            return Offer.COALESCED
        if len(self._waiting) >= self.limit:
            return Offer.FULL
        self._waiting[lab_instance_id] = at
        self._idle.clear()
        self._changed.set()
        return Offer.QUEUED

    async def take(self) -> tuple[int, float]:
        """The oldest waiting id no worker holds (now held), waiting for one if need be."""
        while True:
            for lab_id, at in self._waiting.items():
                if lab_id not in self._busy:
                    del self._waiting[lab_id]
                    self._busy[lab_id] = at
                    return lab_id, at
            self._changed.clear()
            await self._changed.wait()

    def done(self, lab_instance_id: int) -> None:
        """The worker holding ``lab_instance_id`` is done with it."""
        self._busy.pop(lab_instance_id, None)
        if self.idle:
            self._idle.set()
        self._changed.set()

    def again(self, lab_instance_id: int) -> None:
        """Put a held id back at the end (its fetch failed), whatever the limit."""
        at = self._busy.pop(lab_instance_id, None)
        if at is not None and lab_instance_id not in self._waiting:
            self._waiting[lab_instance_id] = at
        self._changed.set()

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing being fetched."""
        return not self._waiting and not self._busy

    async def wait_idle(self) -> None:
        """Return once nothing waits and nothing is being fetched."""
        await self._idle.wait()

    def snapshot(self) -> list[tuple[int, float]]:
        """Every id not yet applied (held ones first), with when it came."""
        held = list(self._busy.items())
        return held + [(i, t) for i, t in self._waiting.items() if i not in self._busy]
