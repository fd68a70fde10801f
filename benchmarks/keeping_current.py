"""
What each run of the engine costs, in requests per command, against the simulator.

    python -m benchmarks.keeping_current            # one year, 200 labs past `until`
    python -m benchmarks.keeping_current --quick    # a month, 40 labs: checks that it runs

A range ending five days before the first run, 20 labs a day, plus labs that started in
the range's last two days and run past ``until``: a quarter end the next morning, a
quarter are exams that ended two days before the first run and are graded half a day
after it, half keep running. Runs on a ManualClock shared with the simulator, so "a day
later" takes no time; the client keeps its default pacing (5 requests/s), and the time a
run would take at that pace is its virtual time.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from lodresults import LodClient, SQLiteStore, backfill
from lodresults.testing import Lab, ManualClock, Simulator, generate_labs

DAY, HOUR = 86400, 3600
T0 = 1_767_254_400  # 2026-01-01T08:00:00Z


def _lab(i: int, start: int, end: int | None, graded: int | None = None) -> Lab:
    final = end if end is not None else start + HOUR
    exam = graded is not None
    record = {
        "LabInstanceId": i, "LabProfileId": 1, "Start": start, "End": final,
        "LastActivity": final - 5, "UserId": "u", "ClassId": None, "CompletionStatus": 4,
        "TotalRunTimeSeconds": final - start, "TaskCompletePercent": 100, "IsExam": exam,
        "ExamPassed": True if exam else None, "ExamScore": 91.5 if exam else None,
        "ExamMaxPossibleScore": 100 if exam else None, "ExamPassingScore": 70 if exam else None,
        "IpAddress": None, "Country": None, "Region": None, "City": None, "Latitude": None,
        "Longitude": None, "LabHostId": 1, "DatacenterId": 1, "DeliveryRegionId": 1,
    }  # fmt: skip
    return Lab(record, start, end, graded)


def world(since: int, until: int, running: int) -> list[Lab]:
    """The background labs of the range and ``running`` labs past ``until``."""
    labs = generate_labs(seed=3, start=since - 2 * DAY, end=T0 + 12 * DAY, labs_per_day=20)
    for i in range(running):
        start = until - (i % 48) * HOUR - 60
        kind = i % 4
        if kind == 0:
            labs.append(_lab(i + 1, start, T0 + 6 * HOUR))
        elif kind == 1:
            labs.append(_lab(i + 1, start, T0 - 2 * DAY, graded=T0 + 12 * HOUR))
        else:
            labs.append(_lab(i + 1, start, T0 + 30 * DAY))
    return labs


#: Each run and its moment.
RUNS = [
    ("first run", T0),
    ("nightly rerun", T0 + DAY),
    ("the night after", T0 + 2 * DAY),
    ("after a 10-day gap", T0 + 12 * DAY),
]


async def measure(days: int, running: int) -> list[tuple[str, dict[str, int], float]]:
    """(run, requests per command, seconds of virtual time) for each run."""
    since, until = T0 - days * DAY, T0 - 5 * DAY
    clock = ManualClock(T0)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "k.db"
        async with Simulator(records=world(since, until, running), clock=clock) as sim:
            for name, t in RUNS:
                clock.set(t)
                before = dict(sim.stats.requests)
                store = await SQLiteStore.open(db)
                try:
                    async with LodClient(sim.api_key, base_url=sim.base_url, clock=clock) as c:
                        await backfill(c, store, since, until)
                finally:
                    await store.close()
                sent = {k: v - before.get(k, 0) for k, v in sim.stats.requests.items()}
                out.append((name, {k: v for k, v in sent.items() if v}, clock() - t))
    return out


def main(argv: list[str] | None = None) -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.keeping_current")
    parser.add_argument("--quick", action="store_true", help="a month, 40 labs past until")
    args = parser.parse_args(argv)
    days, running = (30, 40) if args.quick else (365, 200)
    print(f"{days} days, 20 labs a day, {running} labs running past until")
    print("| run | requests | per command | seconds at 5/s |")
    print("|---|---|---|---|")
    for name, sent, seconds in asyncio.run(measure(days, running)):
        per = ", ".join(f"{n} {c}" for c, n in sorted(sent.items()))
        print(f"| {name} | {sum(sent.values())} | {per} | {seconds:.0f} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
