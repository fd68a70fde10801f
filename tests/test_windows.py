"""Window planning: pure, property-tested."""

from __future__ import annotations

import itertools
from datetime import date, datetime, timedelta, timezone

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lodresults import LodInvalidArgument
from lodresults._records.schema import MAX_EPOCH
from lodresults._windows.plan import (
    MAX_WINDOW_SECONDS,
    Window,
    WindowPlanner,
    count_windows,
    gaps,
    narrower_limit,
    plan_windows,
    to_epoch,
    validate_range,
    widen,
)

epochs = st.integers(min_value=0, max_value=MAX_EPOCH)
spans = st.integers(min_value=1, max_value=MAX_WINDOW_SECONDS)


@st.composite
def ranges(draw: st.DrawFn) -> tuple[int, int]:
    a = draw(epochs)
    length = draw(
        st.one_of(
            st.integers(0, 10),
            st.integers(0, 3 * MAX_WINDOW_SECONDS),
            st.integers(0, 10 * 365 * 86400),
        )
    )
    return a, min(MAX_EPOCH, a + length)


def _check_cover(start: int, end: int, windows: list[Window], limit: int) -> None:
    assert windows[0].start == start
    assert windows[-1].end == end
    for w in windows:
        assert 0 <= w.span <= limit
    for a, b in itertools.pairwise(windows):
        assert b.start == a.end  # contiguous: no gap, shared boundary second
        assert b.start > a.start  # strictly monotonic


@given(ranges(), spans)
@settings(max_examples=300)
def test_plan_covers_without_gaps_within_the_limit(r: tuple[int, int], span: int) -> None:
    """Every window within the limit, contiguous, monotonic, first/last on the bounds."""
    start, end = r
    assume(count_windows(start, end, span) < 5000)
    windows = list(plan_windows(start, end, span))
    _check_cover(start, end, windows, span)
    assert len(windows) == count_windows(start, end, span)


def test_ten_years_is_lazy_and_counted() -> None:
    """A ten-year range plans 522 windows of at most 7 days without building a list."""
    start = to_epoch(date(2015, 1, 1))
    end = to_epoch(date(2025, 1, 1))
    it = plan_windows(start, end)
    first = next(it)
    assert first == Window(start, start + MAX_WINDOW_SECONDS)
    assert count_windows(start, end) == 522


def test_tiny_ranges() -> None:
    """A zero-length range is one window; a one-second range too."""
    assert list(plan_windows(5, 5)) == [Window(5, 5)]
    assert list(plan_windows(5, 6)) == [Window(5, 6)]
    assert list(plan_windows(0, MAX_WINDOW_SECONDS)) == [Window(0, MAX_WINDOW_SECONDS)]
    assert len(list(plan_windows(0, MAX_WINDOW_SECONDS + 1))) == 2


@given(ranges(), st.lists(spans, min_size=1, max_size=4))
@settings(max_examples=200)
def test_planner_with_shrinking_limit_still_covers(r: tuple[int, int], shrinks: list[int]) -> None:
    """A limit that narrows mid-way still yields a gap-free cover within each limit."""
    start, end = r
    assume(count_windows(start, end, min(shrinks)) < 3000)
    planner = WindowPlanner([(start, end)])
    out: list[Window] = []
    for w in planner:
        out.append(w)
        if shrinks and len(out) % 2 == 1:
            planner.shrink(shrinks.pop())
    _check_cover(start, end, out, MAX_WINDOW_SECONDS)


@given(spans)
def test_narrower_limit_always_narrows(span: int) -> None:
    """After a refusal the limit is below the refused span (so a split makes progress)."""
    new = narrower_limit(span)
    assert new >= 1
    assert new < span or span == 1
    assert narrower_limit(MAX_WINDOW_SECONDS) == MAX_WINDOW_SECONDS - 1


def test_split_uses_the_new_limit() -> None:
    """A refused 7-day window is cut into two pieces under the 'strictly less' reading."""
    planner = WindowPlanner([(0, 10 * MAX_WINDOW_SECONDS)])
    w = next(planner)
    planner.shrink(w.span)
    parts = planner.split(w)
    assert parts == [
        Window(0, MAX_WINDOW_SECONDS - 1),
        Window(MAX_WINDOW_SECONDS - 1, MAX_WINDOW_SECONDS),
    ]
    assert next(planner).span == MAX_WINDOW_SECONDS - 1


@given(
    ranges(),
    st.lists(st.tuples(epochs, st.integers(0, 20 * 86400)), max_size=6),
)
@settings(max_examples=300)
def test_gaps_plus_done_cover_the_range(
    r: tuple[int, int], done_raw: list[tuple[int, int]]
) -> None:
    """Every second of the range is in a done interval or in a gap; gaps avoid done interiors."""
    start, end = r
    assume(end - start < 400 * 86400)
    done = [(a, min(MAX_EPOCH, a + n)) for a, n in done_raw]
    # put some done intervals inside the range
    done += [(start + (end - start) // 3, start + (end - start) // 2)]
    out = gaps(start, end, done)
    for a, b in out:
        assert start <= a <= b <= end
    for a, b in itertools.pairwise(out):
        assert a[1] <= b[0]
    # sample points: each is covered by a gap or a done interval
    step = max(1, (end - start) // 50)
    for t in range(start, end + 1, step):
        assert any(a <= t <= b for a, b in out) or any(a <= t <= b for a, b in done)
    # a gap's interior touches no done interval's interior
    for a, b in out:
        for da, db in done:
            assert not (max(a, da) < min(b, db) and (da < a < db or da < b < db or a < da < b))


def test_gaps_simple_cases() -> None:
    """Concrete resume cases."""
    assert gaps(0, 100, []) == [(0, 100)]
    assert gaps(0, 100, [(0, 50), (50, 100)]) == []
    assert gaps(0, 100, [(0, 40), (60, 100)]) == [(40, 60)]
    assert gaps(0, 100, [(20, 30)]) == [(0, 20), (30, 100)]
    assert gaps(5, 5, []) == [(5, 5)]
    assert gaps(5, 5, [(0, 10)]) == []


@given(
    st.lists(st.tuples(epochs, st.integers(0, 30 * 86400)), max_size=6),
    st.integers(0, 2 * 86400),
    epochs,
)
@settings(max_examples=300)
def test_widen_reaches_the_margin_beyond_each_range_and_no_further(
    raw: list[tuple[int, int]], margin: int, latest: int
) -> None:
    """
    Each range is covered with ``margin`` to spare on both sides (cut only at 0, at
    ``latest`` and at MAX_EPOCH, never inside the range); every second planned lies
    within ``margin`` of a range; the results are ordered and do not meet, so windows
    planned over them never overlap.
    """
    rs = [(a, min(MAX_EPOCH, a + n)) for a, n in raw]
    out = widen(rs, margin, latest=latest)
    for (_, b), (c, _) in itertools.pairwise(out):
        assert b < c
    for a, b in rs:
        want = (max(0, a - margin), max(b, min(b + margin, latest, MAX_EPOCH)))
        assert any(lo <= want[0] and want[1] <= hi for lo, hi in out)
    for lo, hi in out:
        assert gaps(lo, hi, [(a - margin, b + margin) for a, b in rs]) == []
        assert any(lo in (max(0, a - margin), a) for a, _ in rs)  # each starts at a range
        assert any(hi in (b, min(b + margin, latest, MAX_EPOCH)) for _, b in rs)


def test_widen_simple_cases() -> None:
    """Concrete cases: cut at 0 and at ``latest``; ranges closer than two margins merge."""
    assert widen([(100, 200)], 10) == [(90, 210)]
    assert widen([(5, 200)], 10, latest=205) == [(0, 205)]
    assert widen([(5, 200)], 10, latest=150) == [(0, 200)]  # never cut inside the range
    assert widen([(100, 200), (220, 300)], 10) == [(90, 310)]
    assert widen([(100, 200), (221, 300)], 10) == [(90, 210), (211, 310)]
    assert widen([], 10) == []
    with pytest.raises(ValueError, match="margin"):
        widen([(0, 1)], -1)


def test_clip_cuts_a_window_to_a_range() -> None:
    """The part inside; a point at the nearer bound when they do not meet."""
    assert Window(0, 100).clip(10, 50) == Window(10, 50)
    assert Window(20, 30).clip(10, 50) == Window(20, 30)
    assert Window(0, 5).clip(10, 50) == Window(10, 10)
    assert Window(60, 70).clip(10, 50) == Window(50, 50)
    assert Window(50, 70).clip(10, 50) == Window(50, 50)


class TestToEpoch:
    def test_accepted_forms(self) -> None:
        """Aware datetimes (any zone), dates at midnight UTC, and ints."""
        assert to_epoch(datetime(2024, 1, 1, tzinfo=timezone.utc)) == 1704067200
        plus2 = timezone(timedelta(hours=2))
        assert to_epoch(datetime(2024, 1, 1, 2, tzinfo=plus2)) == 1704067200
        assert to_epoch(date(2024, 1, 1)) == 1704067200
        assert to_epoch(1704067200) == 1704067200

    @pytest.mark.parametrize(
        ("value", "needle"),
        [
            (datetime(2024, 1, 1), "naive"),
            (-1, "outside"),
            (MAX_EPOCH + 1, "outside"),
            (True, "not bool"),
            ("2024-01-01", "not str"),
            (1.5, "not float"),
            (None, "not NoneType"),
        ],
    )
    def test_rejected_with_a_clear_message(self, value: object, needle: str) -> None:
        """Each bad value says what is wrong and what to pass instead."""
        with pytest.raises(LodInvalidArgument, match=needle):
            to_epoch(value)

    def test_reversed_range(self) -> None:
        """end before start is refused and says to swap them."""
        with pytest.raises(ValueError, match="swap"):
            validate_range(10, 5)

    @given(
        st.datetimes(
            timezones=st.just(timezone.utc),
            min_value=datetime(1970, 1, 1),
            max_value=datetime(9999, 12, 31),
        )
    )
    def test_datetime_floor(self, dt: datetime) -> None:
        """Aware datetimes map to the second they fall in."""
        e = to_epoch(dt)
        assert (
            datetime.fromtimestamp(e, timezone.utc)
            <= dt
            < datetime.fromtimestamp(e, timezone.utc) + timedelta(seconds=1)
        )
