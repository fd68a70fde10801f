"""
The simulator's labs: each one's life (start, end, grading) and its wire record at any time.

Written from its own key list, never through ``lodresults._records.wire``, so that a bug in the
client's converter cannot be mirrored here and go unnoticed.

A generated lab *lives*: before its start it does not exist; while it runs it shows
``End: null``, ``CompletionStatus`` 3 and no score; an exam that ended and awaits grading
shows status 50 without a score until it is graded, when its final status and
``ExamScore`` appear. Records given as they are (``Dataset(records)``, ``upsert``) are
*fixed*: shown exactly as given at any time.
"""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import attrs

__all__ = ["GRADING_DELAY_MAX", "Dataset", "Lab", "generate", "generate_labs"]

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

#: The longest an exam waits for its grade after it ends: 60 hours (scored by a person,
#: submitted on a Friday evening, graded on the Monday morning).
GRADING_DELAY_MAX: Final = 60 * 3600
#: Status shown by a running lab and by an ended exam awaiting its grade.
RUNNING: Final = 3
SUBMITTED_FOR_GRADING: Final = 50
_SCORE_FIELDS: Final = ("ExamPassed", "ExamScore", "ExamMaxPossibleScore", "ExamPassingScore")


@attrs.frozen
class Lab:
    """
    One lab's life: its final wire record, and when it starts, ends and is graded.

    ``end=None``: it runs past the simulation. ``graded=None``: its final record shows as
    soon as it ends. ``fixed``: ``record`` is shown as it is at any time (no life).
    """

    record: Mapping[str, Any]
    start: int
    end: int | None
    graded: int | None = None
    fixed: bool = False

    @property
    def lab_instance_id(self) -> int:
        """The lab's id."""
        return int(self.record["LabInstanceId"])

    @classmethod
    def as_given(cls, record: Mapping[str, Any]) -> Lab:
        """A fixed lab: ``record`` shown as it is, whatever the time."""
        return cls(dict(record), int(record["Start"]), record["End"], None, fixed=True)

    def at(self, t: int) -> Mapping[str, Any] | None:
        """The wire record as the server shows it at ``t``; None before the lab starts."""
        if self.fixed:
            return self.record
        if t < self.start:
            return None
        if self.end is None or t < self.end:
            view = dict(self.record)
            view.update(End=None, CompletionStatus=RUNNING, TotalRunTimeSeconds=t - self.start)
            last = view["LastActivity"]
            if last is not None and last > t:
                view["LastActivity"] = t
            view.update(dict.fromkeys(_SCORE_FIELDS))
            return view
        if self.graded is not None and t < self.graded:
            view = dict(self.record)
            view["CompletionStatus"] = SUBMITTED_FOR_GRADING
            view.update(dict.fromkeys(_SCORE_FIELDS))
            return view
        return self.record

    def changes(self) -> tuple[int, ...]:
        """When the lab starts and ends (what ``LatestResults`` reports; grading is not)."""
        return (self.start,) if self.end is None else (self.start, self.end)


def _pick(rng: random.Random, weighted: list[tuple[int, int]]) -> int:
    total = sum(w for _, w in weighted)
    x = rng.randrange(total)
    for value, w in weighted:
        if x < w:
            return value
        x -= w
    return weighted[-1][0]  # pragma: no cover


def _grading_delay(rng: random.Random) -> int:
    roll = rng.random()
    if roll < 0.6:
        return rng.randint(60, 1800)  # scored automatically within minutes
    if roll < 0.9:
        return rng.randint(1800, 12 * 3600)
    return rng.randint(12 * 3600, GRADING_DELAY_MAX)  # scored by a person


def generate_labs(
    *,
    seed: int,
    start: int,
    end: int,
    labs_per_day: float,
    first_id: int = 1_000_000,
    unknown_status_rate: float = 0.002,
) -> list[Lab]:
    """
    Labs whose start lies in ``[start, end]``, sorted by start, ids ascending with start.

    A realistic mix: most labs last minutes to hours, some span several days (so they cross
    window boundaries), a fifth are exams with decimal scores graded minutes to
    ``GRADING_DELAY_MAX`` after they end (a few stay submitted for grading for good), most
    carry geo fields, and a few end with a status code no document lists yet.
    """
    rng = random.Random(seed)
    count = max(0, round((end - start) / 86400 * labs_per_day))
    starts = sorted(rng.randint(start, end) for _ in range(count))
    out: list[Lab] = []
    for i, s in enumerate(starts):
        roll = rng.random()
        if roll < 0.85:
            duration = rng.randint(300, 3 * 3600)
        elif roll < 0.97:
            duration = rng.randint(3 * 3600, 2 * 86400)
        else:
            duration = rng.randint(2 * 86400, 10 * 86400)
        e = s + duration
        is_exam = rng.random() < 0.2
        if rng.random() < unknown_status_rate:
            status = 70
        elif is_exam and rng.random() < 0.1:
            status = rng.choice((50, 60))  # never graded
        else:
            status = _pick(rng, _FINISHED)
        scored = is_exam and status == 4
        graded = e + _grading_delay(rng) if scored else None
        halves = rng.randint(0, 200)
        # Whole scores as JSON integers, others as decimals: both spellings occur.
        score: float | int | None = (
            (halves // 2 if halves % 2 == 0 else halves / 2) if scored else None
        )
        place = rng.choice(_PLACES) if rng.random() < 0.7 else None
        last = None if rng.random() < 0.05 else rng.randint(s, e)
        record = {
            "LabInstanceId": first_id + i,
            "LabProfileId": rng.randint(1000, 1400),
            "Start": s,
            "End": e,
            "LastActivity": last,
            "UserId": None if rng.random() < 0.03 else str(rng.randint(1, 50_000)),
            "ClassId": None if rng.random() < 0.6 else f"class-{rng.randint(1, 300)}",
            "CompletionStatus": status,
            "TotalRunTimeSeconds": duration,
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
        out.append(Lab(record, s, e, graded))
    return out


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
    The wire records of ``generate_labs(...)`` as the server shows them at ``now`` (labs
    not started by then left out), sorted by start.
    """
    labs = generate_labs(
        seed=seed,
        start=start,
        end=end,
        labs_per_day=labs_per_day,
        first_id=first_id,
        unknown_status_rate=unknown_status_rate,
    )
    return [dict(v) for lab in labs if (v := lab.at(now)) is not None]


class Dataset:
    """
    The simulator's labs, answering ``started or ended within [a, b]`` as of its clock.

    Accepts ``Lab`` objects (living) or wire-shape dicts (fixed: shown as given).
    """

    def __init__(
        self,
        labs: Iterable[Lab | Mapping[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._by_id: dict[int, Lab] = {}
        for item in labs:
            lab = item if isinstance(item, Lab) else Lab.as_given(item)
            self._by_id[lab.lab_instance_id] = lab
        self._dirty = True
        self._by_start: list[Lab] = []
        self._starts: list[int] = []
        self._ends: list[tuple[int, int]] = []
        self._changes: list[tuple[int, int]] = []

    def _reindex(self) -> None:
        if not self._dirty:
            return
        self._by_start = sorted(self._by_id.values(), key=lambda b: (b.start, b.lab_instance_id))
        self._starts = [b.start for b in self._by_start]
        self._ends = sorted((b.end, i) for i, b in enumerate(self._by_start) if b.end is not None)
        self._changes = sorted((t, i) for i, b in enumerate(self._by_start) for t in b.changes())
        self._dirty = False

    def _now(self) -> int:
        return int(self.clock())

    def __len__(self) -> int:
        """Every lab, started or not."""
        return len(self._by_id)

    def __iter__(self) -> Iterator[Mapping[str, Any]]:
        """The records of the labs started by now, as they are now, in start order."""
        return iter(self.at(self._now()))

    @property
    def labs(self) -> list[Lab]:
        """Every lab (started or not), in start order."""
        self._reindex()
        return list(self._by_start)

    def at(self, t: int) -> list[Mapping[str, Any]]:
        """Every record as the server shows it at ``t``, in start order."""
        self._reindex()
        return [v for b in self._by_start if (v := b.at(t)) is not None]

    def get(self, lab_instance_id: int) -> Mapping[str, Any] | None:
        """The record with this id as it is now, or None (unknown or not started)."""
        lab = self._by_id.get(lab_instance_id)
        return None if lab is None else lab.at(self._now())

    def lab(self, lab_instance_id: int) -> Lab | None:
        """The ``Lab`` with this id, or None."""
        return self._by_id.get(lab_instance_id)

    def upsert(self, record: Mapping[str, Any] | Lab) -> None:
        """Add or replace a lab (by ``LabInstanceId``); a dict is fixed, shown as given."""
        lab = record if isinstance(record, Lab) else Lab.as_given(record)
        self._by_id[lab.lab_instance_id] = lab
        self._dirty = True

    def between(self, a: int, b: int) -> list[Mapping[str, Any]]:
        """Records that started or ended in ``[a, b]`` (inclusive) by now, in start order."""
        self._reindex()
        t = self._now()
        labs = self._by_start
        lo = bisect.bisect_left(self._starts, a)
        hi = bisect.bisect_right(self._starts, b)
        picked = {i for i in range(lo, hi) if labs[i].fixed or labs[i].start <= t}
        elo = bisect.bisect_left(self._ends, (a, -1))
        ehi = bisect.bisect_right(self._ends, (b, len(labs)))
        picked.update(i for e, i in self._ends[elo:ehi] if e <= t or labs[i].fixed)
        return [v for i in sorted(picked) if (v := labs[i].at(t)) is not None]

    def changed_since(self, since: int) -> list[Mapping[str, Any]]:
        """
        Records that started or ended at or after ``since``, up to now. As the vendor's
        example says ("started or ended in the last 60 minutes"): a grade that lands later
        is not a change here, so only ``Results`` and ``Result`` show it.
        """
        self._reindex()
        t = self._now()
        labs = self._by_start
        lo = bisect.bisect_left(self._changes, (since, -1))
        picked = {i for c, i in self._changes[lo:] if c <= t or labs[i].fixed}
        return [v for i in sorted(picked) if (v := labs[i].at(t)) is not None]
