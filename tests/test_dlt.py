"""The dlt source: real dlt pipelines into a real DuckDB file, against the simulator."""

from __future__ import annotations

import asyncio
import base64
import itertools
import logging
import os
import re
import sys
import time
import traceback
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import closing
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import (
    CompletionStatus,
    LabResult,
    LodClient,
    LodInvalidArgument,
    LodWindowError,
)
from lodresults._records.models import FIELDS
from lodresults._records.wire import structure_record
from lodresults.testing import ManualClock, Simulator
from tests.conftest import make_sim, run_quick_benchmark

dlt = pytest.importorskip("dlt")
duckdb = pytest.importorskip("duckdb")
pytest.importorskip("pyarrow")

from dlt.common.configuration.container import Container  # noqa: E402
from dlt.common.pipeline import PipelineContext  # noqa: E402

from lodresults._destinations.dlt_state import merge as _merge  # noqa: E402
from lodresults.dlt import FETCHED_AT, lab_results  # noqa: E402

DAY = 86400
WAREHOUSES = Path(__file__).resolve().parent.parent / "docs/warehouses.md"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """dlt confined to ``tmp_path``: its data dir, cwd and config; no telemetry."""
    for name in list(os.environ):
        if name.startswith(("SOURCES__", "DLT_", "RUNTIME__")) or name == "API_KEY":
            monkeypatch.delenv(name)
    monkeypatch.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
    monkeypatch.setenv("DLT_DATA_DIR", str(tmp_path / "dlt-data"))
    monkeypatch.chdir(tmp_path)
    # dlt configures its logger when a pipeline starts: put it back as it was.
    log = logging.getLogger("dlt")
    saved = (log.level, list(log.handlers), log.propagate)
    yield tmp_path
    Container()[PipelineContext].deactivate()
    log.setLevel(saved[0])
    log.handlers[:] = saved[1]
    log.propagate = saved[2]


def pipeline(root: Path, name: str = "lodresults") -> Any:
    return dlt.pipeline(
        name,
        destination=dlt.destinations.duckdb(str(root / f"{name}.duckdb")),
        dataset_name="lod",
        pipelines_dir=str(root / "pipelines"),
    )


def rows(db: Path, table: str = "lod.lab_results") -> dict[int, LabResult]:
    """The table's rows as LabResults (fetched_at dropped), by id; ids must be unique."""
    names = [f.name for f in FIELDS]
    with closing(duckdb.connect(str(db), read_only=True)) as con:
        con.execute("SET TimeZone = 'UTC'")
        got = con.execute(f"SELECT {', '.join(map(repr_ident, names))} FROM {table}").fetchall()
    out: dict[int, LabResult] = {}
    for values in got:
        d = dict(zip(names, values, strict=True))
        d["completion_status"] = CompletionStatus(d["completion_status"])
        r = LabResult(**d)
        assert r.lab_instance_id not in out, f"{r.lab_instance_id} twice"
        out[r.lab_instance_id] = r
    return out


def repr_ident(name: str) -> str:
    return f'"{name}"'


def truth(sim: Simulator, a: int, b: int) -> dict[int, LabResult]:
    return {r.lab_instance_id: r for r in map(structure_record, sim.between(a, b))}


async def run(p: Any, resource: Any) -> Any:
    """``pipeline.run`` on a worker thread while the simulator serves on this loop."""
    return await asyncio.to_thread(p.run, resource)


async def test_loads_the_exact_set_with_typed_columns(home: Path, sim: Simulator) -> None:
    """The table holds the server's ids once each, typed, equal to the records."""
    a = sim.span[0] + 30 * DAY
    b = a + 60 * DAY
    p = pipeline(home)
    await run(p, lab_results(a, b, api_key=sim.api_key, base_url=sim.base_url, rate_limit=None))
    expected = truth(sim, a, b)
    assert len(expected) > 1000
    assert rows(home / "lodresults.duckdb") == expected
    assert any(r.exam_score is not None and r.exam_score % 1 for r in expected.values())
    with closing(duckdb.connect(str(home / "lodresults.duckdb"), read_only=True)) as con:
        types = dict(
            con.execute(
                "SELECT column_name, data_type || ':' || is_nullable "
                "FROM information_schema.columns WHERE table_name = 'lab_results'"
            ).fetchall()
        )
    assert types["lab_instance_id"] == "BIGINT:NO"
    assert types["start"] == "TIMESTAMP WITH TIME ZONE:NO"
    assert types["end"] == "TIMESTAMP WITH TIME ZONE:YES"
    assert types["exam_score"] == "DECIMAL(38,18):YES"
    assert types["latitude"] == "DECIMAL(38,18):YES"
    assert types["completion_status"] == "BIGINT:NO"
    assert types["exam_max_possible_score"] == "BIGINT:YES"
    assert types["is_exam"] == "BOOLEAN:NO"
    assert types[FETCHED_AT] == "TIMESTAMP WITH TIME ZONE:NO"


async def test_rerun_fetches_only_the_unsettled_tail(home: Path, sim: Simulator) -> None:
    """Run again, the pipeline skips the settled windows its dlt state remembers."""
    a = sim.span[1] - 100 * DAY
    p = pipeline(home)

    def resource() -> Any:
        return lab_results(a, api_key=sim.api_key, base_url=sim.base_url, rate_limit=None)

    await run(p, resource())
    first = sim.stats.requests["Results"]
    assert first == 15  # 100 days in 7-day windows, up to now
    settled = p.state["sources"]["lodresults"]["resources"]["lab_results"]["settled"]
    assert len(settled) == 1 and settled[0][0] == a
    # Settled up to three days (the default settle period) before the windows were fetched.
    assert sim.span[1] - 3 * DAY <= settled[0][1] <= int(time.time()) - 3 * DAY
    await run(p, resource())
    assert sim.stats.requests["Results"] - first == 1
    assert rows(home / "lodresults.duckdb") == truth(sim, a, sim.span[1])


async def test_settle_zero_and_range_in_the_past(home: Path, sim: Simulator) -> None:
    """A range that ended long ago settles whole: a second run sends no request."""
    a = sim.span[0] + 10 * DAY
    p = pipeline(home)

    def resource() -> Any:
        return lab_results(
            a, a + 20 * DAY, api_key=sim.api_key, base_url=sim.base_url, settle=0, rate_limit=None
        )

    await run(p, resource())
    before = sim.stats.total
    await run(p, resource())
    assert sim.stats.total == before
    assert rows(home / "lodresults.duckdb") == truth(sim, a, a + 20 * DAY)


async def test_since_and_until_take_what_the_client_takes(home: Path, sim: Simulator) -> None:
    """An aware datetime and a date select the same labs as epoch seconds."""
    a = sim.span[0] + 40 * DAY
    start = datetime.fromtimestamp(a, timezone(timedelta(hours=-5)))
    end = (datetime.fromtimestamp(a, timezone.utc) + timedelta(days=20)).date()
    p = pipeline(home)
    await run(p, lab_results(start, end, api_key=sim.api_key, base_url=sim.base_url))
    b = int(datetime(end.year, end.month, end.day, tzinfo=timezone.utc).timestamp())
    assert rows(home / "lodresults.duckdb") == truth(sim, a, b)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"since": datetime(2025, 1, 1)}, "naive datetime"),
        ({"since": 1_700_000_000, "until": 1_600_000_000}, "before start"),
        ({"since": 4_000_000_000}, "in the future"),
        ({"since": 1_700_000_000, "settle": -5}, "settle"),
        ({"since": 1_700_000_000, "api_key": ""}, "api_key"),
        ({"since": 1_700_000_000, "max_concurrency": 0}, "max_concurrency"),
    ],
)
async def test_bad_arguments_fail_before_any_request(
    home: Path, sim: Simulator, kwargs: dict[str, Any], message: str
) -> None:
    """Bad input: a clear LodInvalidArgument (the cause of dlt's error), nothing sent."""
    options = {"api_key": sim.api_key, "base_url": sim.base_url, **kwargs}
    with pytest.raises(Exception) as info:
        await run(pipeline(home), lab_results(**options))
    cause = info.value
    while cause is not None and not isinstance(cause, LodInvalidArgument):
        cause = cause.__cause__ or cause.__context__  # type: ignore[assignment]
    assert isinstance(cause, LodInvalidArgument), info.value
    assert message in str(cause)
    assert sim.stats.total == 0


@given(st.lists(st.tuples(st.integers(0, 100), st.integers(0, 30)), max_size=12))
def test_merge_covers_the_union(spans: list[tuple[int, int]]) -> None:
    """Settled intervals merge into disjoint sorted ones covering exactly the same seconds."""
    merged: list[list[int]] = []
    covered: set[int] = set()
    for start, length in spans:
        merged = _merge(merged, start, start + length)
        covered |= set(range(start, start + length + 1))
    assert [s for a, b in merged for s in range(a, b + 1)] == sorted(covered)
    assert all(b1 < a2 for (_, b1), (a2, _) in itertools.pairwise(merged))


# --- living data: labs start, end and get graded between and during runs -----------------

T0 = 1_750_000_000  # a fixed moment: the same labs, hence the same changes, on every run


def living(clock: Callable[[], float], **kwargs: Any) -> Simulator:
    return Simulator(
        seed=5, clock=clock, span=(T0 - 40 * DAY, T0 + 5 * DAY), labs_per_day=60, **kwargs
    )


def state(r: LabResult) -> Any:
    """A lab's whole record once it ended; while it runs, only that it runs (its run time
    grows every second, so no copy of a running lab stays the present for long)."""
    return ("running", r.start) if r.end is None else r


def states(records: dict[int, LabResult]) -> dict[int, Any]:
    return {i: state(r) for i, r in records.items()}


def present(sim: Simulator, a: int) -> dict[int, Any]:
    return {i: state(structure_record(dict(d))) for i, d in sim.present(a, sim.now).items()}


async def test_next_day_run_fetches_the_tail_and_ends_with_the_present(home: Path) -> None:
    """
    Day 1 loads 30 days; a day passes (labs start, end, get graded); day 2 fetches only
    the unsettled tail and the new day, and the table equals the server's present state.
    """
    clock = ManualClock(T0)
    a = T0 - 30 * DAY
    async with living(clock) as sim:
        p = pipeline(home)

        def resource() -> Any:
            return lab_results(
                a, api_key=sim.api_key, base_url=sim.base_url, rate_limit=None, clock=clock
            )

        await run(p, resource())
        day1 = rows(home / "lodresults.duckdb")
        assert states(day1) == present(sim, a)
        first = sim.stats.requests["Results"]
        assert first == 5  # 30 days in 7-day windows
        clock.advance(DAY)
        await run(p, resource())
        # Settled up to T0 - 3 days: day 2 asks for [T0 - 3 days, T0 + 1 day], one window.
        assert sim.stats.requests["Results"] - first == 1
        day2 = rows(home / "lodresults.duckdb")
        assert states(day2) == present(sim, a)
    assert set(day2) - set(day1), "no lab started during the day"
    assert any(day1[i].end is None and day2[i].end is not None for i in day1), "none ended"
    graded = [
        i
        for i in day1
        if day1[i].completion_status == CompletionStatus.SUBMITTED_FOR_GRADING
        and day2[i].exam_score is not None
    ]
    assert graded, "no exam was graded during the day"


async def test_changes_during_a_run_keep_the_newest_copy(home: Path) -> None:
    """
    Labs change while a run fetches its windows: a lab met again changed is loaded as an
    update in the same load, and the table keeps the copy received last for each lab.
    """
    # Each Results request sees the server six hours later than the one before, and the
    # window boundary lies just after the first request's moment: labs running then and
    # ended by the second request come back changed in the second window.
    a, b = T0 - 7 * DAY + 3 * 3600, T0 + DAY

    def ticking() -> Simulator:
        holder: list[Simulator] = []

        def clock() -> float:
            return T0 + 6 * 3600 * (holder[0].stats.requests["Results"] if holder else 0)

        holder.append(living(clock))
        return holder[0]

    # The expected table: the last copy of each lab, in the order iter_windows gives them.
    expected: dict[int, LabResult] = {}
    updates = 0
    async with ticking() as sim:
        client = LodClient(
            sim.api_key, base_url=sim.base_url, rate_limit=None, max_concurrency=1,
            clock=ManualClock(T0),
        )  # fmt: skip
        async with client:
            async for batch in client.iter_windows(a, b):
                updates += len(batch.updates)
                expected.update((r.lab_instance_id, r) for r in batch.records + batch.updates)
    assert updates > 0
    async with ticking() as sim:
        resource = lab_results(
            a, b, api_key=sim.api_key, base_url=sim.base_url, rate_limit=None,
            max_concurrency=1, clock=ManualClock(T0),
        )  # fmt: skip
        await run(pipeline(home), resource)
    assert rows(home / "lodresults.duckdb") == expected


async def test_labs_running_past_until_are_kept_current_in_the_warehouse(home: Path) -> None:
    """
    A settled range whose labs run past ``until``: a day later some ended and some were
    graded; the second load sends at most 3 requests (the feed and a window for the
    grades) and the warehouse equals the server's present state.
    """
    from tests.test_engine import SINCE, UNTIL, world
    from tests.test_engine import T0 as NIGHT

    clock = ManualClock(NIGHT)
    async with Simulator(records=world(60), clock=clock) as sim:
        p = pipeline(home)

        def resource() -> Any:
            return lab_results(SINCE, UNTIL, api_key=sim.api_key, base_url=sim.base_url,
                               rate_limit=None, clock=clock)  # fmt: skip

        await run(p, resource())
        assert sim.stats.requests["Result"] == sim.stats.requests["LatestResults"] == 0
        clock.advance(DAY)
        before = sim.stats.total
        await run(p, resource())
        assert sim.stats.total - before <= 3
        got = rows(home / "lodresults.duckdb")
        expected = {
            i: state(structure_record(dict(d))) for i, d in sim.present(SINCE, UNTIL).items()
        }
    assert states(got) == expected
    assert sum(r.end is None for r in got.values()) >= 30  # still running


# --- credentials -------------------------------------------------------------------------

CANARY = "canary-DLT-5e1f0a77c3"


def encodings(key: str) -> list[bytes]:
    raw = key.encode()
    return [
        raw,
        base64.b64encode(raw),
        raw.hex().encode(),
        urllib.parse.quote(key).encode(),
        key[4:-4].encode(),
    ]


def files_holding(root: Path, needles: list[bytes]) -> list[str]:
    hits = []
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            hits += [f"{path}: {n!r}" for n in needles if n in data]
    return hits


@pytest.mark.parametrize("how", ["argument", "secrets"])
async def test_the_key_appears_nowhere(
    home: Path,
    how: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """
    Given as an argument or through dlt's secrets: neither the pipeline's files (state,
    trace, schemas, load packages), nor the DuckDB file, nor logs, nor the exception of a
    failed run, nor its traceback with frame locals hold the key in any encoding; dlt
    logging at DEBUG (to its own handler on stderr) included.
    """
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("RUNTIME__LOG_LEVEL", "DEBUG")
    a = make_sim().span[0] + 10 * DAY
    if how == "secrets":
        monkeypatch.setenv("SOURCES__LODRESULTS__API_KEY", CANARY)

    def resource(*args: Any, **kwargs: Any) -> Any:
        # No frame local of the test itself holds the key (the traceback below shows them).
        if how == "argument":
            return lab_results(*args, api_key=CANARY, **kwargs)
        return lab_results(*args, **kwargs)

    async with make_sim(api_key=CANARY) as sim:
        p = pipeline(home)
        await run(p, resource(a, a + 20 * DAY, base_url=sim.base_url))
        assert len(rows(home / "lodresults.duckdb")) == len(sim.ids_between(a, a + 20 * DAY))
    async with make_sim(api_key=CANARY, fail_range=(a + 30 * DAY, a + 31 * DAY)) as sim:
        failing = resource(a, a + 40 * DAY, base_url=sim.base_url, max_retries=0)
        with pytest.raises(Exception) as info:
            await run(p, failing)
    chain: list[BaseException] = []
    e: BaseException | None = info.value
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, LodWindowError) for x in chain)
    te = traceback.TracebackException.from_exception(info.value, capture_locals=True)
    texts = [
        "".join(te.format()),
        *map(repr, chain),
        *map(str, chain),
        caplog.text,
        *capfd.readouterr(),
        str(p.last_trace),
        repr(p.state),
    ]
    needles = encodings(CANARY)
    for text in texts:
        for n in map(bytes.decode, needles):
            at = text.find(n)
            assert at < 0, f"{n!r} in: {text[max(0, at - 1500) : at + 100]}"
    assert files_holding(home, needles) == []


# --- the documentation's example -----------------------------------------------------------


def docs_pipeline() -> str:
    """The pipeline of docs/warehouses.md (the block its marker says this test runs)."""
    text = WAREHOUSES.read_text()
    match = re.search(r"run by tests/test_dlt.py.*?\n```python\n(.*?)```", text, re.S)
    assert match is not None
    return match.group(1)


async def test_docs_example_runs_verbatim(home: Path, sim: Simulator) -> None:
    """docs/warehouses.md's pipeline, run as written (key and API root from dlt's config)."""
    code = docs_pipeline()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    env = {
        **os.environ,
        "SOURCES__LODRESULTS__API_KEY": sim.api_key,
        "SOURCES__LODRESULTS__BASE_URL": sim.base_url,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, cwd=home, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-3000:]
    got = rows(home / "lodresults.duckdb")
    # It prints dlt's load summary, then the number of labs in the table.
    *summary, count = out.decode().splitlines()
    assert any("lodresults" in line and "duckdb" in line for line in summary), summary
    assert count == f"{len(got)} labs in lod.lab_results"
    now = int(time.time())
    # The example loads the last 30 days: every lab of the range, and nothing older.
    assert set(truth(sim, now - 29 * DAY, sim.span[1])) <= set(got)
    assert set(got) <= set(truth(sim, now - 31 * DAY, now))
    assert all(got[i] == r for i, r in truth(sim, now - 29 * DAY, sim.span[1]).items())
    assert Decimal("0") <= min(r.task_complete_percent for r in got.values())


async def test_warehouse_benchmark_runs() -> None:
    """python -m benchmarks.warehouse --quick runs every job end to end (figures not checked)."""
    text, err = await run_quick_benchmark("benchmarks.warehouse")
    assert "| dlt pipeline into DuckDB (`lab_results`): 5 windows | 1," in text
    assert "| the same pipeline run again: 1 window (the unsettled tail) |" in text
    assert "| `export --format parquet` | 4,000 |" in text
    assert "wrote " not in err  # --quick never overwrites the committed table


async def test_a_value_beyond_decimal_38_18_loads_in_the_wider_form(home: Path) -> None:
    """One lab with ExamScore 1e30 and one with Latitude 5e-324 in a window: every lab of
    the window loads, those two values are null in their DECIMAL(38, 18) column and exact
    in unfit_decimals (a text column), nothing is rounded and the run does not fail."""
    a = 1_700_000_000
    base = {
        "LabProfileId": 5, "End": None, "LastActivity": None, "UserId": "u", "ClassId": None,
        "CompletionStatus": 3, "TotalRunTimeSeconds": 0, "TaskCompletePercent": 0,
        "IsExam": True, "ExamPassed": None, "ExamScore": 87.5,
    }  # fmt: skip
    recs = [
        {**base, "LabInstanceId": 1, "Start": a + 10},
        {**base, "LabInstanceId": 2, "Start": a + 20, "ExamScore": 1e30},
        {**base, "LabInstanceId": 3, "Start": a + 30, "Latitude": 5e-324, "Longitude": 1.5},
    ]
    async with make_sim(records=recs, span=(a - DAY, a + 2 * DAY)) as sim:
        p = pipeline(home)
        await run(
            p,
            lab_results(a, a + DAY, api_key=sim.api_key, base_url=sim.base_url, rate_limit=None),
        )
    with closing(duckdb.connect(str(home / "lodresults.duckdb"), read_only=True)) as con:
        got = con.execute(
            "SELECT lab_instance_id, exam_score, latitude, longitude, unfit_decimals "
            "FROM lod.lab_results ORDER BY lab_instance_id"
        ).fetchall()
    assert got == [
        (1, Decimal("87.5"), None, None, None),
        (2, None, None, None, '{"exam_score":"1E+30"}'),
        (3, Decimal("87.5"), None, Decimal("1.5"), '{"latitude":"5E-324"}'),
    ]
