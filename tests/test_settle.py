"""Settling (pure): which part of a fetched window is final, and duration parsing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import LodInvalidArgument
from lodresults._windows.settle import DEFAULT_SETTLE, parse_duration, settle_seconds, settled_end


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("36h", 129600), ("2d", 172800), ("90m", 5400), ("1d12h", 129600), ("45s", 45),
     ("1w", 604800), ("0", 0), (" 3D ", 259200)],
)  # fmt: skip
def test_durations(text: str, seconds: int) -> None:
    """The spellings the CLI accepts."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "3", "h", "2x", "-1d", "1.5d", "1d 2h", "d1", "400d"])
def test_bad_durations_are_clear_errors(text: str) -> None:
    """Anything else is LodInvalidArgument naming the value."""
    with pytest.raises(LodInvalidArgument):
        parse_duration(text)


def test_settle_seconds_accepts_timedelta_and_numbers() -> None:
    """The library takes seconds or a timedelta; not a bool, not negative."""
    assert settle_seconds(timedelta(hours=36)) == 129600
    assert settle_seconds(90.7) == 90
    for bad in (True, -1, "2d", None):
        with pytest.raises(LodInvalidArgument):
            settle_seconds(bad)


def test_default_covers_grading_by_a_person_over_a_weekend() -> None:
    """The default outlasts the simulator's longest grading delay (60 hours)."""
    from lodresults.testing import GRADING_DELAY_MAX

    assert DEFAULT_SETTLE >= GRADING_DELAY_MAX


def test_settled_end_examples() -> None:
    """Whole window settled, part of it, none of it."""
    assert settled_end(0, 100, fetched_at=200, settle=50) == 100
    assert settled_end(0, 100, fetched_at=120, settle=50) == 70
    assert settled_end(0, 100, fetched_at=50, settle=50) is None
    assert settled_end(0, 100, fetched_at=149.9, settle=50) == 99


@given(st.integers(0, 10**10), st.integers(0, 10**7), st.floats(0, 2e10), st.integers(0, 10**6))
def test_nothing_after_fetch_minus_settle_is_ever_settled(
    start: int, span: int, fetched_at: float, settle: int
) -> None:
    """The settled part lies in the window and ends at least ``settle`` before the fetch."""
    end = start + span
    x = settled_end(start, end, fetched_at, settle)
    if x is None:
        assert fetched_at - settle < start + 1
    else:
        assert start < x <= end or x == start == end
        assert x <= fetched_at - settle
        assert x == end or x == int(fetched_at) - settle
