"""Bounded dedup: exactly-once with state that does not grow with the range."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from lodresults._dedup import Deduplicator
from lodresults._windows import plan_windows
from tests.strategies import labs, touches


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
            if touches((lab_id, s, e), w.start, w.end) and d.admit(lab_id, s, e):
                admitted.append(lab_id)
        d.release_before(w.end)
        # bounded: only labs spanning the watermark or running are remembered
        for lab_id, s, e in data:
            if lab_id in d and e is not None:
                assert max(s, e) >= w.end
    expected = {lab[0] for lab in data if touches(lab, start, end)}
    assert sorted(admitted) == sorted(expected)


@st.composite
def window_runs(draw: st.DrawFn) -> tuple[list[tuple[int, int, int | None]], int, list[int], bool]:
    data = draw(labs())
    span = draw(st.integers(200, 1500))
    n = len(list(plan_windows(0, 6000, span)))
    order = draw(st.permutations(range(n)))
    split = draw(st.booleans())
    return data, span, list(order), split


@given(window_runs())
@settings(max_examples=300)
def test_new_records_exactly_once_in_any_order(
    run: tuple[list[tuple[int, int, int | None]], int, list[int], bool],
) -> None:
    """The client's per-window filter: every lab once, any window order, split windows too."""
    from lodresults._client import _new_records
    from lodresults._windows import Window
    from lodresults._wire import structure_record
    from tests.test_iter_results import _record

    data, span, order, split = run
    windows = list(plan_windows(0, 6000, span))
    d = Deduplicator()
    yielded: list[int] = []
    done: set[int] = set()
    prefix = 0
    for i in order:
        w = windows[i]
        parts = [w] if not split or w.span < 2 else [
            Window(w.start, w.start + w.span // 2), Window(w.start + w.span // 2, w.end)
        ]  # fmt: skip
        items = []
        for p in parts:
            for lab_id, s, e in data:
                if touches((lab_id, s, e), p.start, p.end):
                    items.append(structure_record(_record(lab_id, s, e)))
        yielded += [r.lab_instance_id for r in _new_records(w, items, d)]
        done.add(i)
        while prefix in done:
            prefix += 1
            d.release_before(windows[prefix - 1].end)
    expected = {lab[0] for lab in data if touches(lab, 0, 6000)}
    assert sorted(yielded) == sorted(expected)
