"""
The change feed: one ``LatestResults`` call brings every lab that started or ended since
the last successful run, when that run lies within the command's reach (7 days).
"""

from __future__ import annotations

import math
from typing import Final

from lodresults._client import MAX_LATEST_MINUTES, LodClient
from lodresults._records.models import LabResult

__all__ = ["FEED_OVERLAP", "feed_minutes", "read_feed"]

#: Seconds the feed reaches before the last run began: a change at the edge is seen
#: twice (the store keeps the newest fetch), never missed, also with a second of clock
#: difference between two runs.
FEED_OVERLAP: Final = 120


def feed_minutes(now: float, last_run: float) -> int | None:
    """
    The ``minutes`` to ask LatestResults for the changes since ``last_run`` (plus
    ``FEED_OVERLAP``), or None when that lies beyond its reach.
    """
    minutes = max(1, math.ceil((now - last_run + FEED_OVERLAP) / 60))
    return minutes if minutes <= MAX_LATEST_MINUTES else None


async def read_feed(client: LodClient, minutes: int) -> tuple[list[LabResult], float]:
    """The feed's copies and when the request was sent (server clock)."""
    stamp = client.clock.stamp()
    copies = await client.latest_results(minutes)
    return copies, client.clock.sent_at(stamp)
