"""
Retry policy as data: which failures are retried and how long to wait. Pure, no I/O.

The client drives a plain ``for attempt in range(max_retries + 1)`` loop over this policy
instead of a retry library. stamina and tenacity were considered: stamina logs ``repr`` of
the exception and arguments at WARNING on every retry and keeps its testing switch
process-wide, neither caps a server's Retry-After, and our loop must also feed the
adaptive rate limiter on each 429. With the decisions kept here, the loop is a few lines.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Final

import attrs

from lodresults._exceptions import (
    LodConnectionError,
    LodError,
    LodJSONError,
    LodRateLimitError,
    LodServerError,
    LodTimeoutError,
)

__all__ = ["MAX_PACED_WAIT", "RetryPolicy", "is_retryable", "parse_retry_after"]

#: A Retry-After longer than this is not trusted (a hostile or buggy value could be a day).
MAX_RETRY_AFTER: Final = 60.0

#: Seconds one call may spend waiting out 429s that carry a Retry-After, when it has no
#: deadline (10 minutes). Such a 429 is the server pacing us, not a failure: it does not
#: count against ``max_retries``; this bounds a storm that never ends.
MAX_PACED_WAIT: Final = 600.0


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """
    Seconds to wait from a ``Retry-After`` header, in either form (seconds or HTTP-date).

    Returns None when the header is absent or unusable; negative values become 0.
    """
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    if seconds != seconds or seconds in (float("inf"), float("-inf")):
        return None
    return max(0.0, seconds)


def is_retryable(error: LodError) -> bool:
    """
    Transient failures: connection problems, timeouts, cut bodies, 429, 408 and 5xx.

    Everything else (auth, other 4xx, redirects, ``Status: 0``, schema errors, oversized
    bodies) fails the same way on every attempt and is raised at once.
    """
    if isinstance(error, LodConnectionError):
        return error.retryable
    return isinstance(error, (LodTimeoutError, LodRateLimitError, LodServerError, LodJSONError))


@attrs.frozen
class RetryPolicy:
    """
    Exponential backoff with full jitter, honouring (capped) Retry-After.

    ``max_retries`` counts failures only; waits on a 429's Retry-After are pacing and are
    bounded by the call's deadline, or by ``max_paced_wait`` seconds without one.

    ``delay(attempt)`` for attempt 1, 2, ... is uniform in ``[0, min(max_wait,
    initial * 2**(attempt-1))]``. A server's Retry-After is used instead when present,
    capped at ``max_retry_after`` and given up to 10 % jitter so that many throttled
    requests do not return in lockstep.
    """

    max_retries: int = 5
    initial_wait: float = 0.5
    max_wait: float = 30.0
    max_retry_after: float = MAX_RETRY_AFTER
    max_paced_wait: float = MAX_PACED_WAIT
    rand: Callable[[], float] = random.random

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number ``attempt`` (1-based)."""
        if retry_after is not None:
            capped = min(retry_after, self.max_retry_after)
            return capped + capped * 0.1 * self.rand()
        ceiling = min(self.max_wait, self.initial_wait * 2.0 ** (attempt - 1))
        return float(ceiling * self.rand())
