"""Bounded dedup: exactly-once with state that does not grow with the range."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lodresults._dedup import Deduplicator
from lodresults._windows import plan_windows


def test_admits_once() -> None:
    """The second offer of an id is refused."""
    d = Deduplicator()
    assert d.admit(1, 10, 20)
    assert not d.admit(1, 10, 20)
    assert 1 in d


def test_release_forgets_only_what_cannot_return() -> None:
    """Ids ending before the watermark go; spanning and running ones stay."""
    d = Deduplicator()
    d.admit(1, 10, 20)
    d.admit(2, 10, 500)
    d.admit(3, 10, None)
    assert d.release_before(100) == 1
    assert 1 not in d and 2 in d and 3 in d
    assert not d.admit(2, 10, 500)
    assert not d.admit(3, 10, 200)  # the running lab ended: still a duplicate


def test_a_lab_seen_running_then_ended_is_kept_forever() -> None:
    """Once seen running, a lab is never yielded again even after it ends."""
    d = Deduplicator()
    d.admit(9, 0, 100)
    assert not d.admit(9, 0, None)
    d.release_before(10**9)
    assert 9 in d


@st.composite
def labs(draw: st.DrawFn) -> list[tuple[int, int, int | None]]:
    n = draw(st.integers(0, 60))
    out = []
    for i in range(n):
        s = draw(st.integers(0, 5000))
        e = draw(st.none() | st.integers(s, s + 1500))
        out.append((i, s, e))
    return out


@given(labs(), st.integers(50, 700))
@settings(max_examples=300)
def test_exactly_once_over_windows_with_bounded_state(
    data: list[tuple[int, int, int | None]], span: int
) -> None:
    """Simulate windows in order: every lab that touches the range is admitted once."""
    start, end = 0, 6000
    d = Deduplicator()
    admitted: list[int] = []
    for w in plan_windows(start, end, span):
        for lab_id, s, e in data:
            touches = w.start <= s <= w.end or (e is not None and w.start <= e <= w.end)
            if touches and d.admit(lab_id, s, e):
                admitted.append(lab_id)
        d.release_before(w.end)
        # bounded: only labs spanning the watermark or running are remembered
        for lab_id, s, e in data:
            if lab_id in d and e is not None:
                assert max(s, e) >= w.end
    expected = {i for i, s, e in data if s <= end or (e is not None and e <= end)}
    assert sorted(admitted) == sorted(expected)
