"""
The dlt source under an orchestrator and across destinations: the interval an orchestrator
sets (``DLT_INTERVAL_START``/``END``, as dlt's launcher and Airflow set it) is what loads,
whole; and the settled state follows the destination, not the local pipeline folder.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lodresults.testing import Simulator
from tests.test_dlt import DAY, home, pipeline, rows, run, truth

dlt = pytest.importorskip("dlt")

from lodresults.dlt import lab_results  # noqa: E402

__all__ = ["home"]  # the fixture, used by name


def iso(t: int) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def resource(sim: Simulator, since: int, until: int | None = None) -> Any:
    return lab_results(
        since, until, api_key=sim.api_key, base_url=sim.base_url, settle=0, rate_limit=None
    )


async def test_the_orchestrators_interval_is_loaded_whole(
    home: Path, sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """
    With DLT_INTERVAL_START/END set, a run loads exactly ``[start, end)`` (cut to
    ``since``), and a run for an interval its state calls settled fetches it again.
    """
    a = sim.span[0] + 100 * DAY
    start, end = a + 3 * DAY, a + 17 * DAY
    p = pipeline(home)
    await run(p, resource(sim, a, a + 30 * DAY))  # settles the whole month
    first = sim.stats.requests["Results"]

    monkeypatch.setenv("DLT_INTERVAL_START", iso(start))
    monkeypatch.setenv("DLT_INTERVAL_END", iso(end))
    fresh = pipeline(home, "interval")
    await run(fresh, resource(sim, a))
    assert rows(home / "interval.duckdb") == truth(sim, start, end - 1)
    # The first pipeline's state settled that month; the interval is fetched regardless.
    before = sim.stats.requests["Results"]
    assert before > first
    await run(p, resource(sim, a))
    per_run = before - first  # the windows of 14 days
    assert sim.stats.requests["Results"] == before + per_run
    # An interval before ``since`` loads nothing and asks nothing.
    await run(p, resource(sim, end + DAY))
    assert sim.stats.requests["Results"] == before + per_run


async def test_a_new_empty_destination_gets_everything_despite_old_local_state(
    home: Path, sim: Simulator
) -> None:
    """
    dlt keeps the pipeline's state in its local folder and in the destination. Pointed
    at a new, empty database (same pipeline name, same local folder, whose state calls
    the range settled), the run loads the whole range: dlt drops a local state whose
    dataset the destination does not have.
    """
    a = sim.span[0] + 200 * DAY
    b = a + 21 * DAY
    await run(pipeline(home), resource(sim, a, b))
    first = sim.stats.requests["Results"]
    (home / "lodresults.duckdb").unlink()  # the warehouse is new and empty
    again = pipeline(home)
    assert again.state["sources"]["lodresults"]["resources"]["lab_results"]["settled"]
    await run(again, resource(sim, a, b))
    assert sim.stats.requests["Results"] == 2 * first
    assert rows(home / "lodresults.duckdb") == truth(sim, a, b)


async def test_the_destinations_state_wins_over_a_stale_local_one(
    home: Path, sim: Simulator
) -> None:
    """
    The local folder lost (a new machine, a container): the state is restored from the
    destination, so settled windows are not fetched again and nothing is duplicated.
    """
    import shutil

    a = sim.span[0] + 300 * DAY
    b = a + 21 * DAY
    await run(pipeline(home), resource(sim, a, b))
    first = sim.stats.requests["Results"]
    shutil.rmtree(home / "pipelines")
    await run(pipeline(home), resource(sim, a, b))
    assert sim.stats.requests["Results"] == first
    assert rows(home / "lodresults.duckdb") == truth(sim, a, b)
