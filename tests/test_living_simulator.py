"""The simulator lives on a clock: labs start, run, end and are graded; knobs for sloppiness."""

from __future__ import annotations

import subprocess
import sys
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from lodresults import CompletionStatus, LodApiError
from lodresults.testing import (
    FAULT_KINDS,
    Faults,
    Lab,
    ManualClock,
    Simulator,
    Sloppiness,
    generate_labs,
)
from tests.conftest import fast_client

DAY = 86400
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z


def exam(lab_id: int, start: int, end: int, graded: int) -> Lab:
    record = {
        "LabInstanceId": lab_id, "LabProfileId": 1, "Start": start, "End": end,
        "LastActivity": end - 10, "UserId": "u", "ClassId": None, "CompletionStatus": 4,
        "TotalRunTimeSeconds": end - start, "TaskCompletePercent": 100, "IsExam": True,
        "ExamPassed": True, "ExamScore": 87.5, "ExamMaxPossibleScore": 100,
        "ExamPassingScore": 70, "IpAddress": None, "Country": None, "Region": None,
        "City": None, "Latitude": None, "Longitude": None, "LabHostId": 1,
        "DatacenterId": 1, "DeliveryRegionId": 1,
    }  # fmt: skip
    return Lab(record, start, end, graded)


async def test_a_lab_as_it_is_at_each_moment() -> None:
    """Absent, running, submitted for grading, graded: through Results, Result, Latest."""
    clock = ManualClock(T0)
    lab = exam(7, T0 + 100, T0 + 200, T0 + 300)
    async with Simulator(records=[lab], clock=clock) as sim, fast_client(sim) as c:
        seen = []
        for t in (T0 + 50, T0 + 150, T0 + 250, T0 + 350):
            clock.set(t)
            got = await c.results(T0, T0 + DAY)
            assert [r.lab_instance_id for r in got] == sorted(sim.ids_between(T0, T0 + DAY))
            seen.append(got[0] if got else None)
        assert seen[0] is None
        running, submitted, graded = seen[1:]
        assert running is not None and submitted is not None and graded is not None
        assert (running.end, running.completion_status, running.exam_score) == (
            None, CompletionStatus.INCOMPLETE, None
        )  # fmt: skip
        assert running.total_run_time_seconds == 50
        assert submitted.end is not None and submitted.exam_score is None
        assert submitted.completion_status == CompletionStatus.SUBMITTED_FOR_GRADING
        assert graded.completion_status == CompletionStatus.COMPLETE
        assert str(graded.exam_score) == "87.5"
        assert await c.result(7) == graded
        # the grade at T0 + 300 is no start or end: LatestResults does not list it
        assert [r.lab_instance_id for r in await c.latest_results(1)] == []
        assert [r.lab_instance_id for r in await c.latest_results(5)] == [7]
        clock.set(T0 + 99)
        with pytest.raises(LodApiError):
            await c.result(7)  # not started yet


async def test_latest_results_lists_what_started_or_ended_lately() -> None:
    """LatestResults: labs that started or ended within the minutes, as of the clock."""
    clock = ManualClock(T0 + 10 * DAY)
    labs = [exam(1, T0, T0 + 600, T0 + 900), exam(2, T0 + 10 * DAY - 300, T0 + 11 * DAY,
            T0 + 11 * DAY + 60)]  # fmt: skip
    async with Simulator(records=labs, clock=clock) as sim, fast_client(sim) as c:
        got = await c.latest_results(10)
        assert [(r.lab_instance_id, r.end) for r in got] == [(2, None)]
        clock.advance(DAY + 30)
        got = await c.latest_results(10)
        assert [(r.lab_instance_id, r.completion_status) for r in got] == [
            (2, CompletionStatus.SUBMITTED_FOR_GRADING)
        ]


def test_ground_truth_takes_the_clients_time_types_and_answers_as_of_the_clock() -> None:
    """ids_between accepts datetime, date and epoch; labs not started yet are absent."""
    clock = ManualClock(T0 + DAY // 2)
    labs = [exam(1, T0 + 3600, T0 + 7200, T0 + 7300), exam(2, T0 + DAY - 60, T0 + DAY, T0 + DAY)]
    sim = Simulator(records=labs, clock=clock)
    day = date(2026, 1, 1)
    assert sim.ids_between(day, date(2026, 1, 2)) == {1}
    assert sim.ids_between(datetime(2026, 1, 1, tzinfo=timezone.utc), T0 + DAY) == {1}
    clock.advance(DAY)
    assert sim.ids_between(T0, T0 + DAY) == {1, 2}
    assert sim.present(T0, T0 + DAY)[2]["CompletionStatus"] == 4
    assert sim.now == T0 + DAY + DAY // 2


def test_generated_labs_live_and_grading_follows_the_end() -> None:
    """Every generated exam scored 4 is graded after it ends, within the declared maximum."""
    from lodresults.testing import GRADING_DELAY_MAX

    labs = generate_labs(seed=3, start=T0, end=T0 + 30 * DAY, labs_per_day=200)
    graded = [b for b in labs if b.graded is not None]
    assert graded and all(
        b.end is not None and b.end < b.graded <= b.end + GRADING_DELAY_MAX for b in graded
    )
    assert all(b.record["IsExam"] and b.record["CompletionStatus"] == 4 for b in graded)


def test_faults_default_to_transient_kinds() -> None:
    """Faults() never draws the permanent status0 unless asked."""
    assert "status0" not in Faults().kinds
    assert set(Faults().kinds) == set(FAULT_KINDS) - {"status0"}
    assert "status0" in Faults(kinds=("status0",)).kinds


async def test_sloppy_server_knobs() -> None:
    """Duplicated copies, a skewed filter and a lab in every answer, as configured."""
    clock = ManualClock(T0 + 30 * DAY)
    labs = [exam(i, T0 + i * DAY, T0 + i * DAY + 600, T0 + i * DAY + 900) for i in range(1, 20)]
    sloppy = Sloppiness(duplicate_rate=1.0, skew=DAY, everywhere=(19,))
    async with Simulator(records=labs, clock=clock, sloppy=sloppy) as sim, fast_client(sim) as c:
        got = await c.results(T0 + 2 * DAY, T0 + 3 * DAY)
    # skewed one day later: labs 3 and 4; each twice (running and ended); and lab 19
    assert sorted((r.lab_instance_id, r.end is None) for r in got) == [
        (3, False), (3, True), (4, False), (4, True), (19, False), (19, True)
    ]  # fmt: skip


def test_pytest_plugin_works_in_strict_mode(tmp_path: Path) -> None:
    """docs/testing.md's pytest example, verbatim in a fresh project, passes in strict mode."""
    page = (Path(__file__).parent.parent / "docs/testing.md").read_text()
    block = page.split("# conftest.py\n", 1)[1].split("```", 1)[0]
    conftest, test = block.split("# test_report.py\n")
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_report.py").write_text(test)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = strict\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout  # the fixtures, and the marker's keywords
