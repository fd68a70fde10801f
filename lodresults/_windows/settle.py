"""
Settling: when the answer for a window stops changing. Pure: ints in, ints out; no clock.

The server's answer for a window keeps changing after the window's end has passed: a lab
that ended inside it may still be graded (``CompletionStatus`` 50 or 60, then the final
status with ``ExamScore``). A lab that starts in a window and ends in a later one is no
concern here: the later window returns it again, ended. So an answer is *final* for the
part of its window that ended at least a *settle period* before the moment the request was
sent. A backfill stores every answer but checkpoints only that settled part; the rest is
fetched again by the next run.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from lodresults._exceptions import LodInvalidArgument

__all__ = ["DEFAULT_SETTLE", "parse_duration", "settle_seconds", "settled_end"]

#: Three days. Grading may be done by people: an exam submitted on a Friday evening and
#: scored on the Monday morning changes about 60 hours after it ended. A nightly run
#: re-reads ``settle`` plus one day, asked for ``SKEW_TOLERANCE`` (a day) beyond both
#: ends: six days, still one request within the 7-day limit of one window.
DEFAULT_SETTLE: Final = 3 * 86400

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PART: Final = re.compile(r"(\d+)([smhdw])")
#: Settle periods beyond a year make no sense (and would overflow nothing useful).
_MAX_SETTLE: Final = 366 * 86400


def parse_duration(text: str) -> int:
    """
    Seconds in a duration such as ``"36h"``, ``"2d"``, ``"90m"``, ``"1d12h"`` or ``"0"``.

    Units: ``s``, ``m``, ``h``, ``d``, ``w``. Raises ``LodInvalidArgument`` otherwise.
    """
    s = text.strip().lower()
    if s == "0":
        return 0
    if not s or _PART.sub("", s):
        raise LodInvalidArgument(
            f"duration {text!r} is not like 36h, 2d, 90m or 1d12h (units s, m, h, d, w)"
        )
    return settle_seconds(sum(int(n) * _UNITS[u] for n, u in _PART.findall(s)))


def settle_seconds(value: object) -> int:
    """Normalise a settle period given as int/float seconds or ``timedelta``; whole seconds."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise LodInvalidArgument(
            f"settle must be seconds or a timedelta, not {type(value).__name__}"
        )
    if not 0 <= seconds <= _MAX_SETTLE:
        raise LodInvalidArgument(f"settle must be within 0..366 days, got {seconds:g} s")
    return int(seconds)


def settled_end(start: int, end: int, fetched_at: float, settle: int) -> int | None:
    """
    The end of the settled part ``[start, x]`` of a window ``[start, end]`` whose answer was
    requested at ``fetched_at``, or None if no part of it has settled.

    A window is wholly settled when ``end <= fetched_at - settle``.
    """
    limit = int(fetched_at) - settle
    if limit <= start:
        return None
    return min(end, limit)
