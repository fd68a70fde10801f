"""
Bounded exactly-once bookkeeping for a stream of windows. Pure: ints in, bools out.

A lab is returned by every window that contains its start or its end. So once every
window up to a time ``W`` has been handed to the caller (the *watermark*), a lab whose
start and end both lie before ``W`` can never come back: no later window contains either.
Its id is forgotten. What stays is the ids whose end is still ahead (labs spanning the
watermark) and running labs (no end yet: they may end, and so reappear, at any later
time). The state is therefore bounded by the labs in flight, not by the range's length.
"""

from __future__ import annotations

import heapq

__all__ = ["Deduplicator"]


class Deduplicator:
    """
    Remembers which lab ids were already yielded, forgetting those that cannot return.
    """

    __slots__ = ("_forever", "_heap", "_horizon")

    def __init__(self) -> None:
        self._horizon: dict[int, int] = {}
        self._heap: list[tuple[int, int]] = []
        self._forever: set[int] = set()

    def admit(self, lab_id: int, start: int, end: int | None) -> bool:
        """
        True the first time ``lab_id`` is offered (yield it), False afterwards (drop it).

        ``start``/``end`` are the lab's epoch seconds; ``end=None`` for a running lab.
        """
        if lab_id in self._forever:
            return False
        known = self._horizon.get(lab_id)
        if end is None:
            if known is not None:
                del self._horizon[lab_id]  # its heap entry becomes stale; see release_before
            self._forever.add(lab_id)
            return known is None
        horizon = max(start, end)
        if known is not None:
            if horizon > known:
                self._horizon[lab_id] = horizon
                heapq.heappush(self._heap, (horizon, lab_id))
            return False
        self._horizon[lab_id] = horizon
        heapq.heappush(self._heap, (horizon, lab_id))
        return True

    def release_before(self, watermark: int) -> int:
        """
        Forget ids whose start and end both lie before ``watermark``; returns how many.

        Call it only once every window up to ``watermark`` has been yielded.
        """
        released = 0
        heap = self._heap
        while heap and heap[0][0] < watermark:
            horizon, lab_id = heapq.heappop(heap)
            if self._horizon.get(lab_id) == horizon:
                del self._horizon[lab_id]
                released += 1
        return released

    def __len__(self) -> int:
        return len(self._horizon) + len(self._forever)

    def __contains__(self, lab_id: object) -> bool:
        return lab_id in self._horizon or lab_id in self._forever
