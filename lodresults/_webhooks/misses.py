"""
How many changes the webhooks missed: counted by the reconciliation that brings them.

A change a webhook brought is already stored when another writer (``watch``'s poll and
reconciliation, a nightly ``backfill``) fetches the lab again, so the store finds that
copy unchanged; a change no webhook brought (the push was lost, the receiver was down
past the vendor's 15 s of retries) is new or changed there. ``MissCounter`` wraps the
destination such a writer writes to and records those in the receiver's ledger, among the
changes webhooks announce (ended labs for TornDown and Scored; every change once Launched
is subscribed too); the ledger also holds the changes webhooks brought. Miss rate =
missed / (brought + missed) over what was recorded since the writer's previous run (each
engine run ends with ``set_last_run``, which reports it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

from lodresults._destinations.base import Applied, Destination, OpenLab
from lodresults._events import EventHook, WebhookMisses
from lodresults._records.models import LabResult
from lodresults._webhooks.ledger import Ledger

__all__ = ["MissCounter", "WebhookMisses"]

#: Events that announce a lab's start: with one of them, running labs are covered too.
_START_EVENTS = frozenset({"Launched", "Started"})


class MissCounter:
    """
    A ``Destination`` that writes through to ``inner`` and records in ``ledger`` the
    announced changes it applies (``missed``: this one's count), and at the end of each
    run reports the miss rate since the previous one (``set_last_run``). ``events``:
    those the receiver is sent.

    .. versionadded:: 0.2.0
    """

    def __init__(
        self,
        inner: Destination,
        ledger: Ledger,
        *,
        events: Sequence[str] = ("TornDown", "Scored"),
        on_event: EventHook | None = None,
    ) -> None:
        self.inner = inner
        self.ledger = ledger
        self.on_event = on_event
        #: What the last run's ``set_last_run`` reported (None before the first).
        self.last: WebhookMisses | None = None
        self._cursor: tuple[int, int] | None = None
        self.running_covered = bool(_START_EVENTS & set(events))
        self.missed = 0

    def _covered(self, record: LabResult) -> bool:
        return self.running_covered or record.end is not None

    async def apply(
        self,
        records: Sequence[LabResult],
        *,
        fetched_at: float,
        checkpoint: tuple[int, int] | None = None,
    ) -> Applied:
        """Apply ``records`` to ``inner``; the covered ones first, counted (ids are unique)."""
        covered = [r for r in records if self._covered(r)]
        if not covered:
            return await self.inner.apply(records, fetched_at=fetched_at, checkpoint=checkpoint)
        rest = [r for r in records if not self._covered(r)]
        first = await self.inner.apply(covered, fetched_at=fetched_at)
        missed = first.new + first.changed
        if missed:
            self.missed += missed
            await self.ledger.record_missed(fetched_at, missed)
        # The checkpoint goes with the second part: if this stops between the two, the
        # window is fetched again (its first part then applies unchanged).
        second = await self.inner.apply(rest, fetched_at=fetched_at, checkpoint=checkpoint)
        return first + second

    async def checkpoints(self, start: int, end: int) -> list[tuple[int, int]]:
        """As ``inner``'s."""
        return await self.inner.checkpoints(start, end)

    async def open_labs(self, start: int, end: int, *, settle: int) -> list[OpenLab]:
        """As ``inner``'s."""
        return await self.inner.open_labs(start, end, settle=settle)

    async def stored(self, ids: Collection[int]) -> set[int]:
        """As ``inner``'s."""
        return await self.inner.stored(ids)

    async def last_run(self) -> float | None:
        """As ``inner``'s."""
        return await self.inner.last_run()

    async def set_last_run(self, at: float) -> None:
        """
        As ``inner``'s; then report (``last``, and a ``WebhookMisses`` event to
        ``on_event``) the changes webhooks brought and missed since the previous run
        (the first time: since the run before, as ``inner`` recorded it).
        """
        if self._cursor is None:
            self._cursor = await self.ledger.cursor(await self.inner.last_run())
        await self.inner.set_last_run(at)
        brought, missed, self._cursor = await self.ledger.counts_after(self._cursor)
        self.last = WebhookMisses(brought, missed)
        if self.on_event is not None:
            self.on_event(self.last)

    async def distrust_after(self, now: float) -> int:
        """As ``inner``'s."""
        return await self.inner.distrust_after(now)
