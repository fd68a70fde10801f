"""The benchmarks stay runnable, and the peers they compare with are honest."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from benchmarks.peers import decode, gather, sequential
from lodresults._records.decode import decode_results
from lodresults.testing import Simulator
from tests.conftest import fast_client, run_quick_benchmark

DAY = 86400


async def test_peers_fetch_the_same_set_as_lodresults(sim: Simulator) -> None:
    """Peer 1 and peer 2 return exactly the labs iter_results yields: a fair comparison."""
    a = sim.span[0] + 30 * DAY
    b = a + 60 * DAY
    async with fast_client(sim, max_concurrency=4) as c:
        ours = {r.lab_instance_id async for r in c.iter_results(a, b)}
    p1 = await sequential.fetch_all(sim.base_url, sim.api_key, a, b)
    p2 = await gather.fetch_all(sim.base_url, sim.api_key, a, b, 4)
    assert {r["LabInstanceId"] for r in p1} == ours == {r["LabInstanceId"] for r in p2}
    assert len(p1) == len(p2) == len(ours)


def test_decode_ceilings_parse_the_same_records(sim: Simulator) -> None:
    """The decode-only peers see the same records as decode_results."""
    import orjson

    body = orjson.dumps({"Results": sim.records[:500], "Status": 1, "Error": None})
    ours = decode_results(body)
    assert [r["LabInstanceId"] for r in decode.orjson_dicts(body)] == [
        r.lab_instance_id for r in ours
    ]
    typed = decode.msgspec_typed(body)
    assert [(t.Start, t.ExamScore) for t in typed] == [(r.start, r.exam_score) for r in ours]


async def test_quick_benchmark_suite_runs() -> None:
    """python -m benchmarks --quick runs every section end to end (figures not checked)."""
    _, text = await run_quick_benchmark("benchmarks")
    for title in (
        "Fan-out",
        "Throughput",
        "Memory",
        "Rate limiting",
        "Rate adaptation",
        "Backfill",
    ):
        assert f"== {title}" in text
    assert "wrote " not in text  # --quick never overwrites the committed table


async def test_quick_memory_benchmark_runs() -> None:
    """python -m benchmarks.memory --quick runs both clients end to end (figures not checked)."""
    text, err = await run_quick_benchmark("benchmarks.memory")
    assert "| lodresults |" in text and "| sequential peer |" in text
    assert "wrote " not in err  # --quick never overwrites the committed table


def test_one_section_rerun_keeps_the_others(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--only NAME`` replaces that section of the README and keeps every other one."""
    import benchmarks.__main__ as cli

    figures = {"a": "first", "b": "second", "c": "third"}
    sections = {
        name: (f"Section {name.upper()}", lambda sizes, n=name: f"| {figures[n]} |")
        for name in figures
    }
    monkeypatch.setattr(cli, "SECTIONS", sections)
    out = tmp_path / "README.md"
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--out", str(out)])
    cli.main()
    figures["b"] = "second, measured again"
    monkeypatch.setattr(sys, "argv", ["benchmarks", "--only", "b", "--out", str(out)])
    cli.main()
    text = out.read_text()
    assert [line for line in text.splitlines() if line.startswith(("## Section", "| "))] == [
        "## Section A", "| first |",
        "## Section B", "| second, measured again |",
        "## Section C", "| third |",
    ]  # fmt: skip
    assert text.count("## What profiling showed") == 1
    capsys.readouterr()


async def test_keeping_current_benchmark_runs() -> None:
    """The engine's cost table: a nightly rerun sends at most 3 requests."""
    text, _ = await run_quick_benchmark("benchmarks.keeping_current")
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()
            if line.startswith("| ") and not line.startswith("| run |")}  # fmt: skip
    assert int(rows["nightly rerun"]) <= 3 and int(rows["after a 10-day gap"]) <= 3
