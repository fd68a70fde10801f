"""
Exactly-once bookkeeping for a stream of windows, with the newest copy of each lab.

Pure: windows of ``LabResult`` in, ``(records, updates)`` out; no I/O, no clock.

A lab is returned by every window that contains its start or its end. A real server is
also sloppy: its filter may be off by up to ``SKEW_TOLERANCE`` (so a lab near a boundary
comes only from the neighbour window), one answer may hold two copies of a lab (a
running and an ended one), and a lab may come from a window it does not belong to.

- A lab whose start and end both lie more than the tolerance inside the window that
  returned it cannot come from any other window: it is only checked against the window's
  own records (the fast path: most labs, no shared state).
- Every other lab is remembered with its *horizon* (its latest time), a fingerprint of the
  copy passed on, and the receive sequence of that copy. Once every window up to a
  *watermark* has been handed on, no window can return a lab whose horizon lies more than
  the tolerance before it: such ids are forgotten, and a copy arriving for one later is a
  stray (the region it lies in was already covered) and is dropped. Running labs (no end
  yet) are remembered until they are seen ended. The state is bounded by the labs in
  flight, not by the range's length.
- A copy of a lab already passed on whose state differs, from a response received later
  than the copy passed on, is an *update*. Within one window an ended copy beats a running
  one; otherwise the later copy in the answer wins.
- Records outside the requested range (neither start nor end inside it) are dropped.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Final

from lodresults._models import LabResult
from lodresults._schema import MAX_EPOCH
from lodresults._windows import Window

__all__ = ["SKEW_TOLERANCE", "Deduplicator"]

#: How far off a server's ``Results`` filter may be, in seconds (one day).
SKEW_TOLERANCE: Final = 86400

# Per remembered id: (fingerprint of the copy passed on, its receive sequence, horizon).
# The horizon is None while the lab runs.
_Known = tuple[int, int, int | None]


def _dt(epoch: int) -> datetime:
    return datetime.fromtimestamp(epoch, timezone.utc)


def _epoch(d: datetime) -> int:
    return int(d.timestamp())


def _newer_in_window(r: LabResult, held: LabResult) -> bool:
    """Within one window: an ended copy beats a running one, otherwise the later wins."""
    return not (r.end is None and held.end is not None)


class Deduplicator:
    """
    Sorts each window's records into new ones and updates, for one iteration over
    ``[start, end]``.

    Call ``take`` for each window in the order the windows are handed on, then ``passed``
    with the watermark (every window up to it handed on).
    """

    __slots__ = ("_end", "_heap", "_known", "_open", "_released", "_start", "_tolerance")

    def __init__(self, start: int, end: int, tolerance: int = SKEW_TOLERANCE) -> None:
        self._start = start
        self._end = end
        self._tolerance = tolerance
        self._known: dict[int, _Known] = {}
        self._heap: list[tuple[int, int]] = []
        # Windows handed on beyond the watermark (more than one only when unordered).
        self._open: list[Window] = []
        self._released = start - tolerance - 1  # horizons below this are covered

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
        tol = self._tolerance
        lo = _dt(min(window.start + tol, MAX_EPOCH))
        hi = _dt(max(window.end - tol, 0))
        known = self._known
        fresh: list[LabResult] = []
        # id -> index in fresh, for this window only.
        local: dict[int, int] = {}
        local_get = local.get
        append = fresh.append
        # Copies of ids passed on in earlier windows: the newest of this window, and its seq.
        again: dict[int, tuple[LabResult, int]] = {}
        for seq, items in parts:
            for r in items:
                lab_id = r.lab_instance_id
                end = r.end
                if end is not None and lo < r.start and end < hi and lab_id not in known:
                    # Interior: no other window can return it. Later copy in the window wins.
                    i = local_get(lab_id)
                    if i is None:
                        local[lab_id] = len(fresh)
                        append(r)
                    else:
                        fresh[i] = r
                    continue
                self._slow(r, seq, fresh, local, again)
        updates: list[LabResult] = []
        for lab_id, (r, seq) in again.items():
            fingerprint, known_seq, _ = known[lab_id]
            if seq <= known_seq:
                continue  # received before the copy passed on: stale
            f = hash(r)
            if f != fingerprint:
                updates.append(r)
            self._remember(lab_id, f, seq, r)
        self._open.append(window)
        return fresh, updates

    def _slow(
        self,
        r: LabResult,
        seq: int,
        fresh: list[LabResult],
        local: dict[int, int],
        again: dict[int, tuple[LabResult, int]],
    ) -> None:
        lab_id = r.lab_instance_id
        s = _epoch(r.start)
        e = None if r.end is None else _epoch(r.end)
        if not (self._start <= s <= self._end or (e is not None and self._start <= e <= self._end)):
            return  # outside the requested range
        i = local.get(lab_id)
        if i is not None:  # new in this window, and met again in it
            if _newer_in_window(r, fresh[i]):
                fresh[i] = r
                self._remember(lab_id, hash(r), seq, r)
            return
        if lab_id in self._known:
            held = again.get(lab_id)
            if held is None or _newer_in_window(r, held[0]):
                again[lab_id] = (r, seq)
            return
        if self._covered(s, e):
            return
        local[lab_id] = len(fresh)
        fresh.append(r)
        self._remember(lab_id, hash(r), seq, r)

    def _remember(self, lab_id: int, fingerprint: int, seq: int, r: LabResult) -> None:
        horizon = None if r.end is None else _epoch(max(r.start, r.end))
        self._known[lab_id] = (fingerprint, seq, horizon)
        if horizon is not None:
            heapq.heappush(self._heap, (horizon, lab_id))

    def _covered(self, s: int, e: int | None) -> bool:
        """True if a lab not remembered must already have been handed on (a stray copy)."""
        if (s if e is None else max(s, e)) < self._released:
            return True
        if e is None:
            return False
        tol = self._tolerance
        return any(w.start + tol < s and e < w.end - tol for w in self._open)

    def passed(self, watermark: int) -> int:
        """
        Every window up to ``watermark`` has been handed on: forget the ids no window can
        return any more. Returns how many were forgotten.
        """
        self._open = [w for w in self._open if w.end > watermark]
        limit = watermark - self._tolerance
        self._released = max(self._released, limit)
        released = 0
        heap = self._heap
        known = self._known
        while heap and heap[0][0] < limit:
            horizon, lab_id = heapq.heappop(heap)
            entry = known.get(lab_id)
            if entry is not None and entry[2] == horizon:
                del known[lab_id]
                released += 1
        return released

    def __len__(self) -> int:
        return len(self._known)

    def __contains__(self, lab_id: object) -> bool:
        return lab_id in self._known
