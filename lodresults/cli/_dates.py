"""Parsing of the CLI's date arguments (pure)."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone

from lodresults._windows.plan import to_epoch

__all__ = ["parse_when"]

_ASCII_SPACE = " \t\n\r\f\v"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$", re.ASCII)


def parse_when(text: str, *, end_of_day: bool = False) -> int:
    """
    Epoch seconds from ``YYYY-MM-DD``, an ISO-8601 datetime, ``now`` or epoch seconds.

    A date alone means midnight UTC, or the day's last second with ``end_of_day`` (so
    ``--until 2025-06-30`` includes June 30). A datetime without an offset is UTC.
    Raises ValueError with a message fit for the user.
    """
    # ASCII whitespace only: str.strip() also removes U+0085 and other Unicode spaces,
    # which would let "0\x85" through as an epoch.
    t = text.strip(_ASCII_SPACE)
    if t.lower() == "now":
        return int(datetime.now(timezone.utc).timestamp())
    when: datetime | int
    if t.isascii() and t.isdigit():  # not "²" or other Unicode digits
        when = int(t)
    elif _DATE.match(t):
        try:
            d = date.fromisoformat(t)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date ({exc})") from None
        when = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        if end_of_day:
            when += timedelta(days=1, seconds=-1)
    else:
        try:
            when = datetime.fromisoformat(t.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise ValueError(
                f"{text!r} is not a date: use YYYY-MM-DD, an ISO-8601 datetime such as "
                "2024-01-31T12:00:00Z, 'now', or epoch seconds"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
    try:
        return to_epoch(when)
    except ValueError:
        raise ValueError(f"{text!r} is outside 1970-01-01..9999-12-31") from None
