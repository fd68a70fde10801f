"""
Exactly-once bookkeeping for a stream of windows, with the newest copy of each lab.

Pure: windows of ``LabResult`` in, ``(records, updates)`` out; no I/O, no clock.

A lab is returned by every window that contains its start or its end. A real server is
also sloppy: its filter may be off by up to ``SKEW_TOLERANCE`` (so a lab near a boundary
comes only from the neighbour window), one answer may hold two copies of a lab (a
running and an ended one), and a lab may come from a window it does not belong to.

- A lab whose start and end both lie more than the tolerance inside the window that
  returned it, and that is not remembered from a window handed earlier, cannot come from
  any other window: it is only checked against the window's own records (the fast path:
  most labs, no bookkeeping). When windows are handed in chronological order the margin
  is needed only before the window's end: a window before it was handed first.
- Every other lab is remembered with its *horizon* (its latest time), the copy passed on
  and the receive sequence of that copy. Once every window up to a
  *watermark* has been handed on, no window can return a lab whose horizon lies more than
  the tolerance before it: such ids are forgotten, and a copy arriving for one later is a
  stray (the region it lies in was already covered) and is dropped. Running labs (no end
  yet) are remembered until they are seen ended. The state is bounded by the labs in
  flight, not by the range's length.
- A copy of a lab already passed on whose state differs, from a response received later
  than the copy passed on, is an *update*. Within one window an ended copy beats a running
  one; otherwise the later copy in the answer wins.
- Records outside the requested range (neither start nor end inside it) are dropped,
  also from windows that reach beyond the range (its first and last, widened by the
  tolerance so that a skewed filter loses nothing at the range's own ends).
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Generator, Iterator, Sequence
from datetime import datetime, timezone
from typing import Final

import attrs

from lodresults._records.decode import SLICE, run_steps
from lodresults._records.models import LabResult
from lodresults._records.schema import MAX_EPOCH
from lodresults._windows.plan import Window

__all__ = ["SKEW_TOLERANCE", "Deduplicator"]

#: How far off a server's ``Results`` filter may be, in seconds (one day).
SKEW_TOLERANCE: Final = 86400

# Per remembered id, beside the copy passed on: (its receive sequence, horizon).
# The horizon is None while the lab runs. Times are kept as the records' own aware
# datetimes: comparing them is four times cheaper than converting each to epoch seconds.
# Kept apart from the copy so that the cyclic collector untracks the tuple (it holds no
# container) and the state adds nothing to the collector's work: records are untracked,
# but a tuple holding one stays tracked, and tens of thousands of them made the
# collector's full collections of 40-60 ms.
_Known = tuple[int, datetime | None]

_EPOCH_DT: Final = datetime(1970, 1, 1, tzinfo=timezone.utc)
#: Every field, in one C call: comparing these tuples is cheaper than the generated
#: ``LabResult.__eq__`` and covers the same fields.
_FIELDS: Final = operator.attrgetter(*(a.name for a in attrs.fields(LabResult)))


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(min(max(epoch, 0), MAX_EPOCH), timezone.utc)


def _changed(r: LabResult, held: LabResult) -> bool:
    """
    Whether two copies of a lab differ in any field. Values are compared, not hashes:
    ``hash(-1) == hash(-2)``, and a hash match would hide a real change. The copies kept
    for it are those of the labs remembered (near a window's edge, or running), which
    ``passed`` bounds anyway.
    """
    return r is not held and _FIELDS(r) != _FIELDS(held)


def _slices(
    parts: Sequence[tuple[int, Sequence[LabResult]]],
) -> Iterator[tuple[int, Sequence[LabResult]]]:
    """Each part's records in slices of at most ``SLICE``, with the part's sequence."""
    for seq, items in parts:
        for at in range(0, len(items), SLICE):
            yield seq, items[at : at + SLICE]


def _newer_in_window(r: LabResult, held: LabResult) -> bool:
    """Within one window: an ended copy beats a running one, otherwise the later wins."""
    return not (r.end is None and held.end is not None)


class Deduplicator:
    """
    Sorts each window's records into new ones and updates, for one iteration over
    ``[start, end]``.

    Call ``take`` for each window in the order the windows are handed on, then ``passed``
    with the watermark (every window up to it handed on). ``ordered``: windows are handed
    on in chronological order (the fast path then covers more labs).
    """

    __slots__ = (
        "_copies", "_end", "_heap", "_known", "_open", "_ordered", "_released", "_start",
        "_tolerance",
    )  # fmt: skip

    def __init__(
        self, start: int, end: int, tolerance: int = SKEW_TOLERANCE, *, ordered: bool = True
    ) -> None:
        self._ordered = ordered
        self._start = _dt(start)
        self._end = _dt(end)
        self._tolerance = tolerance
        self._known: dict[int, _Known] = {}
        self._copies: dict[int, LabResult] = {}  # the copy passed on, per remembered id
        self._heap: list[tuple[datetime, int]] = []
        # Interiors (beyond the tolerance) of the windows handed on beyond the watermark,
        # with their ends (more than one only when unordered).
        self._open: list[tuple[datetime, datetime, int]] = []
        self._released = _EPOCH_DT  # horizons before this are covered

    def take(
        self, window: Window, parts: Sequence[tuple[int, Sequence[LabResult]]]
    ) -> tuple[list[LabResult], list[LabResult]]:
        """
        Sort one window's answer: ``parts`` are ``(receive sequence, records)`` per request
        (one, or several when the window was split), in the order they were sent.

        Returns ``(records, updates)``: labs never passed on before in this iteration (one
        copy each, the newest of this window, in the server's order), and changed copies of
        labs passed on in an earlier window, received after the copy passed on.
        """
        result: tuple[list[LabResult], list[LabResult]] = run_steps(self.take_steps(window, parts))
        return result

    def take_steps(
        self, window: Window, parts: Sequence[tuple[int, Sequence[LabResult]]]
    ) -> Generator[None, None, tuple[list[LabResult], list[LabResult]]]:
        """
        ``take`` in steps: a generator that yields after each ``SLICE`` records (so that
        an event loop can run between them) and returns what ``take`` returns. Run it to
        its end before the next ``take`` or ``passed``: its state is shared.
        """
        # The fast path: labs more than the tolerance inside the window. In order, the
        # start edge needs no margin: an earlier window that returned such a lab (a skewed
        # filter) was handed first and remembered it, and the shared state is consulted.
        # A window may reach beyond the range (the first and last are widened by the
        # tolerance): its interior counts only inside the range, whose labs alone pass.
        start, end_of_range = self._start, self._end
        lo = max(start, _dt(window.start if self._ordered else window.start + self._tolerance))
        hi = min(end_of_range, _dt(window.end - self._tolerance))
        known = self._known
        copies = self._copies
        remember = self._remember
        heap = self._heap
        push = heapq.heappush
        released = self._released
        opened = self._open
        fresh: list[LabResult] = []
        # id -> index in fresh, for this window only.
        local: dict[int, int] = {}
        local_get = local.get
        append = fresh.append
        n = 0
        # Copies of ids passed on in earlier windows: the newest of this window, and its seq.
        # (Two dicts, not one of pairs: see ``_Known``.)
        again: dict[int, LabResult] = {}
        again_seq: dict[int, int] = {}
        for step, (seq, items) in enumerate(_slices(parts)):
            if step:
                yield  # a turn for the loop between slices
            for r in items:
                lab_id = r.lab_instance_id
                s = r.start
                e = r.end
                if e is not None and lo < s and e < hi and lab_id not in known:
                    # Interior: no other window can return it. Later copy in the window wins.
                    i = local_get(lab_id)
                    if i is None:
                        local[lab_id] = n
                        n += 1
                        append(r)
                    else:
                        fresh[i] = r
                    continue
                # Near an edge, spanning, running, known, or not this window's at all.
                if not (
                    start <= s <= end_of_range or (e is not None and start <= e <= end_of_range)
                ):
                    continue  # outside the requested range
                i = local_get(lab_id)
                if i is not None:  # new in this window, and met again in it
                    if _newer_in_window(r, fresh[i]):
                        fresh[i] = r
                        remember(lab_id, seq, r)
                    continue
                if lab_id in known:
                    held = again.get(lab_id)
                    if held is None or _newer_in_window(r, held):
                        again[lab_id] = r
                        again_seq[lab_id] = seq
                    continue
                # New here. A stray if its region was covered already: its horizon lies
                # before the released region's end, or inside a window handed on (also a
                # running copy: its window returned the lab, in this state or later).
                horizon = s if e is None or e < s else e
                if horizon < released or (
                    opened and any(a < s and horizon < b for a, b, _ in opened)
                ):
                    continue
                local[lab_id] = n
                n += 1
                append(r)
                known[lab_id] = (seq, None if e is None else horizon)
                copies[lab_id] = r
                if e is not None:
                    push(heap, (horizon, lab_id))
        updates: list[LabResult] = []
        for k, (lab_id, r) in enumerate(again.items(), 1):
            if k % SLICE == 0:
                yield
            seq = again_seq[lab_id]
            known_seq, _ = known[lab_id]
            if seq <= known_seq:
                continue  # received before the copy passed on: stale
            if _changed(r, copies[lab_id]):
                updates.append(r)
            remember(lab_id, seq, r)
        self._open.append((lo, hi, window.end))
        return fresh, updates

    def _remember(self, lab_id: int, seq: int, r: LabResult) -> None:
        e = r.end
        horizon = None if e is None else max(r.start, e)
        self._known[lab_id] = (seq, horizon)
        self._copies[lab_id] = r
        if horizon is not None:
            heapq.heappush(self._heap, (horizon, lab_id))

    def passed(self, watermark: int) -> int:
        """
        Every window up to ``watermark`` has been handed on: forget the ids no window can
        return any more. Returns how many were forgotten.
        """
        released: int = run_steps(self.passed_steps(watermark))
        return released

    def passed_steps(self, watermark: int) -> Generator[None, None, int]:
        """``passed`` in steps: yields after each ``SLICE`` ids let go, as ``take_steps``."""
        self._open = [w for w in self._open if w[2] > watermark]
        limit = _dt(watermark - self._tolerance)
        self._released = max(self._released, limit)
        released = 0
        heap = self._heap
        known = self._known
        popped = 0
        while heap and heap[0][0] < limit:
            popped += 1
            if popped % SLICE == 0:
                yield
            horizon, lab_id = heapq.heappop(heap)
            entry = known.get(lab_id)
            if entry is not None and entry[1] == horizon:
                del known[lab_id]
                del self._copies[lab_id]
                released += 1
        return released

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, lab_id: object) -> bool:
        return lab_id in self._known
