"""
Refreshing stored labs no window of their range returns again, when the change feed
cannot: by re-fetching the windows that hold them, or with one ``Result`` per lab,
whichever sends fewer requests.

Requests go out concurrently under the client's ``max_concurrency`` and rate limit; the
first failure cancels every other request of the refresh at once (a revoked key costs
one 401 per request already in flight, not one per lab).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Sequence
from contextlib import aclosing
from typing import Final

import attrs

from lodresults._client import LodClient
from lodresults._destinations.base import OpenLab
from lodresults._exceptions import LodNotFoundError
from lodresults._records.models import LabResult
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults._windows.plan import MAX_WINDOW_SECONDS, WindowPlanner, gaps, widen

__all__ = ["RefreshPlan", "fetch_again", "plan_refresh"]

#: Labs asked for one by one are applied this many at a time.
_CHUNK: Final = 200
#: The widest stretch of labs one re-fetched window holds: a window reaches
#: ``SKEW_TOLERANCE`` beyond both ends of what it is asked for, and stays within 7 days.
_CLUSTER: Final = MAX_WINDOW_SECONDS - 2 * SKEW_TOLERANCE


@attrs.frozen
class RefreshPlan:
    """Either ``windows`` (epoch ranges) to fetch again, or ``ids`` to ask one by one."""

    windows: list[tuple[int, int]]
    ids: list[int]
    requests: int


def _key(lab: OpenLab) -> int:
    # A window returns the labs that started or ended in it: the end once there is one
    # (labs ungraded after ``until`` ended within a few days: one window holds them all).
    return lab.start if lab.end is None else lab.end


def plan_refresh(labs: Sequence[OpenLab], latest: int) -> RefreshPlan:
    """
    The cheaper way to fetch ``labs`` again: the windows holding them (grouped into as
    few as possible, none reaching past ``latest``) if that is fewer requests than one
    ``Result`` per lab, else the ids.
    """
    clusters: list[tuple[int, int]] = []
    for t in sorted({_key(lab) for lab in labs}):
        if clusters and t - clusters[-1][0] <= _CLUSTER:
            clusters[-1] = (clusters[-1][0], t)
        else:
            clusters.append((t, t))
    windows = WindowPlanner(widen(clusters, SKEW_TOLERANCE, latest=latest)).estimate_total()
    if clusters and windows < len(labs):
        return RefreshPlan(clusters, [], windows)
    return RefreshPlan([], sorted(lab.lab_instance_id for lab in labs), len(labs))


async def fetch_again(
    client: LodClient, plan: RefreshPlan, progress: Callable[[int], None]
) -> AsyncGenerator[tuple[list[LabResult], float], None]:
    """
    Fetch what ``plan`` says; yields ``(copies, fetched_at)`` to apply, in order.
    ``progress`` is called with the labs answered so far (windows report themselves).
    """
    if plan.windows:
        lo, hi = plan.windows[0][0], plan.windows[-1][1]
        batches = client.iter_windows(lo, hi, skip=gaps(lo, hi, plan.windows))
        async with aclosing(batches):
            async for batch in batches:  # window events report the progress
                yield [*batch.records, *batch.updates], batch.fetched_at
        return
    answered = 0

    def one_more() -> None:
        nonlocal answered
        answered += 1
        progress(answered)

    for i in range(0, len(plan.ids), _CHUNK):
        stamp = client.clock.stamp()
        got = await _each(client, plan.ids[i : i + _CHUNK], one_more)
        yield [r for r in got if r is not None], client.clock.sent_at(stamp)


async def _each(
    client: LodClient, ids: Sequence[int], answered: Callable[[], None]
) -> list[LabResult | None]:
    """``Result`` for each id, concurrently; the first failure cancels the rest."""

    tasks: list[asyncio.Future[LabResult | None]] = []

    async def one(lab_id: int) -> LabResult | None:
        try:
            copy: LabResult | None = await client.result(lab_id)
        except LodNotFoundError:
            # The server no longer knows it: keep the stored copy. Any other Status 0
            # answer is a failure, raised like the rest (never read as "gone").
            copy = None
        except BaseException:
            # Cancel the others now, before this task ends: a sibling woken by the slot
            # this one just gave back must not send (a 401 stops every request at once).
            for t in tasks:
                if t is not asyncio.current_task():
                    t.cancel()
            raise
        answered()
        return copy

    tasks.extend(asyncio.ensure_future(one(i)) for i in ids)
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for t in tasks:
            error = t.exception() if t in done and not t.cancelled() else None
            if error is not None:
                raise error
        return [t.result() for t in tasks]
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
