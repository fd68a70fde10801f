"""
The dlt source's state as a ``Destination``: the rows go to the warehouse as Arrow tables
(the resource yields them), the state remembers the rest. Knows no dlt: the state is the
JSON-able dict dlt keeps for the resource.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from typing import Any, Final

import pyarrow as pa

from lodresults._destinations.arrow import to_arrow
from lodresults._destinations.base import Applied, OpenLab
from lodresults._records.models import LabResult
from lodresults._windows.plan import union

__all__ = ["FETCHED_AT", "DltState", "merge"]

#: The column that records when each row's copy was received. Within one load the merge
#: keeps, for each ``lab_instance_id``, the copy with the latest ``fetched_at``.
FETCHED_AT: Final = "fetched_at"


def merge(intervals: list[list[int]], start: int, end: int) -> list[list[int]]:
    """``intervals`` with ``[start, end]`` added, merged where they touch (sorted)."""
    joined = union([*((a, b) for a, b in intervals), (start, end)])
    return [[a, b] for a, b in joined]  # lists: dlt keeps its state as JSON


class _ReceiveOrder:
    """
    ``fetched_at`` for each yielded table: the batch's own time, nudged a microsecond past
    the previous one when needed, so that yield order (the order of newest copies) and
    ``fetched_at`` order agree, and the merge keeps the copy yielded last.
    """

    def __init__(self) -> None:
        self._last = 0

    def __call__(self, fetched_at: float) -> int:
        now = max(int(fetched_at * 1_000_000), self._last + 1)
        self._last = now
        return now


def _table(records: Sequence[LabResult], fetched_us: int) -> pa.Table:
    table = to_arrow(list(records))
    stamp = pa.array([fetched_us] * len(records), pa.timestamp("us", tz="UTC"))
    return table.append_column(pa.field(FETCHED_AT, stamp.type, nullable=False), stamp)


class DltState:
    """
    The dlt resource's state as a ``Destination``: the rows go to the warehouse as Arrow
    tables (handed to the resource through ``tables``, one at a time), the state keeps
    the settled stretches (``settled``), the labs that may still change (``open``: id ->
    start, end, fetched_at) and the last run (``last_run``). The warehouse's merge keeps
    the newest fetch of each lab (the tables' ``fetched_at``). What the warehouse holds
    is not known here: every copy counts as new.
    """

    def __init__(self, state: dict[str, Any], settle: int) -> None:
        self._settled: list[list[int]] = state.setdefault("settled", [])
        self._open: dict[str, list[int | None]] = state.setdefault("open", {})
        self._state = state
        self._settle = settle
        self._order = _ReceiveOrder()
        self.tables: asyncio.Queue[pa.Table] = asyncio.Queue(maxsize=1)

    async def checkpoints(self, start: int, end: int) -> list[tuple[int, int]]:
        return [(a, b) for a, b in self._settled if b >= start and a <= end]

    async def apply(
        self,
        records: Sequence[LabResult],
        *,
        fetched_at: float,
        checkpoint: tuple[int, int] | None = None,
    ) -> Applied:
        if records:
            await self.tables.put(_table(records, self._order(fetched_at)))
        for r in records:
            key, start = str(r.lab_instance_id), int(r.start.timestamp())
            end = None if r.end is None else int(r.end.timestamp())
            held = self._open.get(key)
            if held is not None and (held[2] or 0) > fetched_at:
                continue  # a newer fetch is held: newest fetch wins
            if end is None or fetched_at < end + self._settle:
                self._open[key] = [start, end, int(fetched_at)]
            else:
                self._open.pop(key, None)
        if checkpoint is not None:
            self._settled[:] = merge(self._settled, *checkpoint)
        return Applied(new=len(records))

    async def open_labs(self, start: int, end: int, *, settle: int) -> list[OpenLab]:
        return [
            OpenLab(int(i), s, e)
            for i, (s, e, f) in self._open.items()
            if s is not None
            and f is not None
            and start <= s <= end
            and (e is None or (e > end and f < e + settle))
        ]

    async def stored(self, ids: Collection[int]) -> set[int]:
        return {i for i in ids if str(i) in self._open}

    async def last_run(self) -> float | None:
        value = self._state.get("last_run")
        return None if value is None else float(value)

    async def set_last_run(self, at: float) -> None:
        self._state["last_run"] = at

    async def distrust_after(self, now: float) -> int:
        n = 0
        limit = int(now) - self._settle  # nothing settles later than this
        kept = []
        for a, b in self._settled:
            if b > limit:
                n, b = n + 1, limit
            if b > a:
                kept.append([a, b])
        self._settled[:] = kept
        for lab in self._open.values():
            if lab[2] is not None and lab[2] > now:
                n, lab[2] = n + 1, 0
        if (await self.last_run() or 0) > now:
            n += 1
            del self._state["last_run"]
        return n
