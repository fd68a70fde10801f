"""
What the engine needs of a destination: the ``Destination`` protocol and its small values.

A destination holds lab results and remembers what it holds: the stretches of time whose
answer has settled (checkpoints), which stored labs may still change (running, or ended
but not yet graded), and when the engine last brought it up to date. The SQLite store
(``SQLiteStore``) and the dlt source's state are two destinations; a new one implements
these seven methods and the engine (``lodresults.keep_current``) does the rest.

The rule every destination keeps: **newest fetch wins**. A copy replaces the stored row
only if it was fetched at or after the stored one (``fetched_at``, epoch seconds on the
server's clock); on equal times the later write wins. So two writers on one destination
(a nightly ``backfill`` and a ``watch``) cannot put an older state over a newer one,
whatever order their writes land in.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Protocol, runtime_checkable

import attrs

from lodresults._records.models import LabResult

__all__ = ["Applied", "Destination", "OpenLab"]


@attrs.frozen
class Applied:
    """
    What applying copies did: ``new`` labs the destination did not hold, ``changed`` rows
    now holding another state, ``unchanged`` copies equal to the stored row or older than
    it (a newer fetch was already stored). Add two with ``+``.

    .. versionadded:: 0.2.0
    """

    new: int = 0
    changed: int = 0
    unchanged: int = 0

    def __add__(self, other: Applied) -> Applied:
        return Applied(
            self.new + other.new,
            self.changed + other.changed,
            self.unchanged + other.unchanged,
        )

    @property
    def total(self) -> int:
        """Copies applied (``new + changed + unchanged``)."""
        return self.new + self.changed + self.unchanged

    def __str__(self) -> str:
        return f"{self.new:,} new, {self.changed:,} changed, {self.unchanged:,} unchanged"


@attrs.frozen
class OpenLab:
    """
    A stored lab that may still change although no window of its range returns it again:
    running (``end`` None), or ended but fetched before its end had settled. A window
    holding its ``end`` (or, while it runs, its ``start``) returns it.

    .. versionadded:: 0.2.0
    """

    lab_instance_id: int
    start: int
    end: int | None = None


@runtime_checkable
class Destination(Protocol):
    """
    Where the engine keeps lab results current. Every method is a coroutine; times are
    int epoch seconds on the server's clock.

    .. versionadded:: 0.2.0
    """

    async def checkpoints(self, start: int, end: int) -> list[tuple[int, int]]:
        """The settled stretches ``(a, b)`` overlapping ``[start, end]``, in order."""
        ...

    async def apply(
        self,
        records: Sequence[LabResult],
        *,
        fetched_at: float,
        checkpoint: tuple[int, int] | None = None,
    ) -> Applied:
        """
        Store ``records`` (copies fetched at ``fetched_at``) in their order, newest fetch
        wins, and, if given, record ``checkpoint`` as settled, all or nothing.
        """
        ...

    async def open_labs(self, start: int, end: int, *, settle: int) -> list[OpenLab]:
        """
        Stored labs that started in ``[start, end]`` and are running, or ended after
        ``end`` in a copy fetched less than ``settle`` seconds after their end (a grade may
        still land): no window of the range returns them again.
        """
        ...

    async def stored(self, ids: Collection[int]) -> set[int]:
        """Those of ``ids`` the destination holds (a change feed's copies of them apply)."""
        ...

    async def last_run(self) -> float | None:
        """When the last successful run began (its changes are all applied), or None."""
        ...

    async def set_last_run(self, at: float) -> None:
        """Record that every change up to ``at`` is applied."""
        ...

    async def distrust_after(self, now: float) -> int:
        """
        Repair what was stored with a clock ahead of ``now`` (the server's present):
        checkpoints made later than it are dropped, rows fetched later than it lose their
        ``fetched_at`` (any fetch then replaces them), a later ``last_run`` is forgotten.
        Returns how many stored times were repaired.
        """
        ...
