"""
A seeded, generated set of lab results in the API's wire shape (PascalCase dicts).

Written from its own key list, never through ``lodresults._wire``, so that a bug in the
client's converter cannot be mirrored here and go unnoticed.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Iterable, Iterator
from typing import Any

__all__ = ["Dataset", "generate"]

_PLACES = [
    ("US", "Washington", "Seattle", 47.6062, -122.3321),
    ("US", "New York", "New York", 40.7128, -74.006),
    ("GB", "England", "London", 51.5074, -0.1278),
    ("DE", "Bavaria", "Munich", 48.1351, 11.582),
    ("IN", "Karnataka", "Bengaluru", 12.9716, 77.5946),
    ("JP", "Tokyo", "Tokyo", 35.6762, 139.6503),
    ("BR", "Sao Paulo", "Sao Paulo", -23.5505, -46.6333),
    ("AU", "New South Wales", "Sydney", -33.8688, 151.2093),
]
_FINISHED = [(4, 60), (3, 15), (1, 8), (2, 6), (10, 1), (20, 1), (30, 1), (40, 1)]


def _pick(rng: random.Random, weighted: list[tuple[int, int]]) -> int:
    total = sum(w for _, w in weighted)
    x = rng.randrange(total)
    for value, w in weighted:
        if x < w:
            return value
        x -= w
    return weighted[-1][0]  # pragma: no cover


def generate(
    *,
    seed: int,
    start: int,
    end: int,
    labs_per_day: float,
    now: int,
    first_id: int = 1_000_000,
    unknown_status_rate: float = 0.002,
) -> list[dict[str, Any]]:
    """
    Labs whose start lies in ``[start, end]``, sorted by start, ids ascending with start.

    A realistic mix: most labs last minutes to hours, some span several days (so they cross
    window boundaries), labs still running at ``now`` have ``End: null``, a fifth are exams
    with decimal scores, most carry geo fields, and a few have a status code no document
    lists yet.
    """
    rng = random.Random(seed)
    count = max(0, round((end - start) / 86400 * labs_per_day))
    starts = sorted(rng.randint(start, end) for _ in range(count))
    out: list[dict[str, Any]] = []
    for i, s in enumerate(starts):
        roll = rng.random()
        if roll < 0.85:
            duration = rng.randint(300, 3 * 3600)
        elif roll < 0.97:
            duration = rng.randint(3 * 3600, 2 * 86400)
        else:
            duration = rng.randint(2 * 86400, 10 * 86400)
        e: int | None = s + duration
        assert e is not None
        running = e > now
        if running:
            e = None
        is_exam = rng.random() < 0.2
        if running:
            status = 3
        elif rng.random() < unknown_status_rate:
            status = 70
        elif is_exam and rng.random() < 0.1:
            status = rng.choice((50, 60))
        else:
            status = _pick(rng, _FINISHED)
        scored = is_exam and not running and status == 4
        halves = rng.randint(0, 200)
        # Whole scores as JSON integers, others as decimals: both spellings occur.
        score: float | int | None = (
            (halves // 2 if halves % 2 == 0 else halves / 2) if scored else None
        )
        place = rng.choice(_PLACES) if rng.random() < 0.7 else None
        stop = now if e is None else e
        last = None if rng.random() < 0.05 else rng.randint(s, max(s, stop))
        out.append(
            {
                "LabInstanceId": first_id + i,
                "LabProfileId": rng.randint(1000, 1400),
                "Start": s,
                "End": e,
                "LastActivity": last,
                "UserId": None if rng.random() < 0.03 else str(rng.randint(1, 50_000)),
                "ClassId": None if rng.random() < 0.6 else f"class-{rng.randint(1, 300)}",
                "CompletionStatus": status,
                "TotalRunTimeSeconds": stop - s,
                "TaskCompletePercent": rng.randint(0, 100),
                "IsExam": is_exam,
                "ExamPassed": None if score is None else score >= 70,
                "ExamScore": score,
                "ExamMaxPossibleScore": 100 if scored else None,
                "ExamPassingScore": 70 if scored else None,
                "IpAddress": (
                    None if place is None else f"203.0.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
                ),
                "Country": None if place is None else place[0],
                "Region": None if place is None else place[1],
                "City": None if place is None else place[2],
                "Latitude": None if place is None else round(place[3] + rng.uniform(-0.2, 0.2), 4),
                "Longitude": None if place is None else round(place[4] + rng.uniform(-0.2, 0.2), 4),
                "LabHostId": rng.randint(1, 400),
                "DatacenterId": rng.randint(1, 12),
                "DeliveryRegionId": rng.randint(1, 8),
            }
        )
    return out


class Dataset:
    """
    The simulator's records with indexes for ``started or ended within [a, b]`` queries.
    """

    def __init__(self, records: Iterable[dict[str, Any]]) -> None:
        self._by_id: dict[int, dict[str, Any]] = {}
        for r in records:
            self._by_id[r["LabInstanceId"]] = r
        self._dirty = True
        self._by_start: list[dict[str, Any]] = []
        self._starts: list[int] = []
        self._ends: list[tuple[int, int]] = []

    def _reindex(self) -> None:
        if not self._dirty:
            return
        self._by_start = sorted(
            self._by_id.values(), key=lambda r: (r["Start"], r["LabInstanceId"])
        )
        self._starts = [r["Start"] for r in self._by_start]
        self._ends = sorted(
            (r["End"], i) for i, r in enumerate(self._by_start) if r["End"] is not None
        )
        self._dirty = False

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._reindex()
        return iter(self._by_start)

    def get(self, lab_instance_id: int) -> dict[str, Any] | None:
        """The record with this id, or None."""
        return self._by_id.get(lab_instance_id)

    def upsert(self, record: dict[str, Any]) -> None:
        """Add or replace a record (by ``LabInstanceId``)."""
        self._by_id[record["LabInstanceId"]] = dict(record)
        self._dirty = True

    def between(self, a: int, b: int) -> list[dict[str, Any]]:
        """Records that started or ended in ``[a, b]`` (inclusive), in start order."""
        self._reindex()
        lo = bisect.bisect_left(self._starts, a)
        hi = bisect.bisect_right(self._starts, b)
        picked = set(range(lo, hi))
        elo = bisect.bisect_left(self._ends, (a, -1))
        ehi = bisect.bisect_right(self._ends, (b, len(self._by_start)))
        picked.update(i for _, i in self._ends[elo:ehi])
        return [self._by_start[i] for i in sorted(picked)]

    def changed_since(self, t: int) -> list[dict[str, Any]]:
        """Records that started or ended at or after ``t``."""
        self._reindex()
        lo = bisect.bisect_left(self._starts, t)
        picked = set(range(lo, len(self._by_start)))
        elo = bisect.bisect_left(self._ends, (t, -1))
        picked.update(i for _, i in self._ends[elo:])
        return [self._by_start[i] for i in sorted(picked)]
