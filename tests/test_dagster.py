"""
``lodresults.dagster``: real Dagster in-process (one instance in a temp DAGSTER_HOME)
loading real DuckDB through dlt, against two living simulators (two keys, one dataset)
on one ManualClock.

The tests of this module run in order and share one instance and one database, as a
deployment does: backfill, re-materialize, a revoked key, then the nightly schedule.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import closing
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from lodresults import LodInvalidArgument, Tenant
from lodresults._records.wire import structure_record
from lodresults.testing import ManualClock, Simulator
from tests.test_dlt import encodings, files_holding, repr_ident, state

dg = pytest.importorskip("dagster")
dlt = pytest.importorskip("dlt")
duckdb = pytest.importorskip("duckdb")

from dlt.common.configuration.container import Container  # noqa: E402
from dlt.common.pipeline import PipelineContext  # noqa: E402

from lodresults._records.models import FIELDS  # noqa: E402
from lodresults.dagster import (  # noqa: E402
    ASSET,
    RUN_CONCURRENCY,
    TENANT_TAG,
    lab_results_definitions,
)

# Dagster warns about the partition tags it puts on a scheduled run itself
# (dagster/partition/<dimension> has two slashes); nothing here sets them.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Non-compliant tag keys like \['dagster/partition/:DeprecationWarning"
)

DAY = 86400
T0 = 1_750_345_600  # Thursday 2025-06-19 15:06:40 UTC: the same labs on every run
START = date(2025, 6, 8)  # a Sunday: weeks 06-08 (settled at T0) and 06-15 (the current one)
WEEKS = ["2025-06-08", "2025-06-15"]
KEYS = {"acme": "acme-KEY-5d1f0c9a7e", "globex": "globex-KEY-2b8e4a6c0d"}


class World:
    """Two simulators served from a background loop; one Dagster instance; one DuckDB."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.clock = ManualClock(T0)
        self.sims = {
            name: Simulator(
                seed=seed, api_key=key, clock=self.clock, labs_per_day=25,
                span=(T0 - 20 * DAY, T0 + 10 * DAY),
            )
            for seed, (name, key) in enumerate(KEYS.items(), start=11)
        }  # fmt: skip
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        for sim in self.sims.values():
            asyncio.run_coroutine_threadsafe(sim.start(), self.loop).result()
        self.db = root / "lod.duckdb"
        self.defs = lab_results_definitions(
            {name: Tenant(KEYS[name], sim.base_url) for name, sim in self.sims.items()},
            start=START,
            destination=dlt.destinations.duckdb(str(self.db)),
            pipelines_dir=str(root / "pipelines"),
            client_options={"clock": self.clock, "rate_limit": None, "max_retries": 1,
                            "retry_initial_wait": 0.001, "retry_max_wait": 0.001},
        )  # fmt: skip
        self.asset = self.defs.resolve_assets_def("lab_results")
        # A real instance in the temp DAGSTER_HOME (SQLite storage): the schedule's
        # context needs an instance it can reload, which an ephemeral one is not.
        self.instance = dg.DagsterInstance.local_temp(
            str(root / "dagster-home"),
            overrides={
                "compute_logs": {
                    "module": "dagster._core.storage.noop_compute_log_manager",
                    "class": "NoOpComputeLogManager",
                },
                "telemetry": {"enabled": False},
                "concurrency": dict(RUN_CONCURRENCY),
            },
        )

    def close(self) -> None:
        self.instance.dispose()
        for sim in self.sims.values():
            asyncio.run_coroutine_threadsafe(sim.close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()

    def materialize(self, tenant: str, week: str) -> Any:
        key = dg.MultiPartitionKey({"tenant": tenant, "week": week})
        return dg.materialize(
            [self.asset], instance=self.instance, partition_key=str(key), raise_on_error=False
        )

    def table(self) -> dict[str, dict[int, Any]]:
        """The table's rows, by tenant then id (each (tenant, id) once), as lab states."""
        names = [f.name for f in FIELDS]
        with closing(duckdb.connect(str(self.db), read_only=True)) as con:
            con.execute("SET TimeZone = 'UTC'")
            got = con.execute(
                f"SELECT tenant, {', '.join(map(repr_ident, names))} FROM lodresults.lab_results"
            ).fetchall()
        out: dict[str, dict[int, Any]] = {name: {} for name in KEYS}
        for tenant, *values in got:
            d = dict(zip(names, values, strict=True))
            assert d["lab_instance_id"] not in out[tenant], f"{tenant} {d['lab_instance_id']} twice"
            out[tenant][d["lab_instance_id"]] = _state(d)
        return out

    def still_open(self, tenant: str, week: str) -> bool:
        """
        Whether a lab that started in ``week`` may still change now, by the server's
        records: running, or ended less than the settle time (3 days) ago.
        """
        a = _epoch(week)
        now = self.clock()
        for d in self.sims[tenant].present(a, a + 7 * DAY - 1).values():
            r = structure_record(dict(d))
            start = r.start.timestamp()
            if a <= start < a + 7 * DAY and (r.end is None or now < r.end.timestamp() + 3 * DAY):
                return True
        return False

    def truth(self, tenant: str) -> dict[int, Any]:
        """The server's present: labs that started or ended since START, as lab states."""
        a = int(datetime(START.year, START.month, START.day, tzinfo=timezone.utc).timestamp())
        sim = self.sims[tenant]
        return {i: state(structure_record(dict(d))) for i, d in sim.present(a, sim.now).items()}


def _epoch(day: str) -> int:
    return int(datetime.fromisoformat(day).replace(tzinfo=timezone.utc).timestamp())


def _state(d: dict[str, Any]) -> Any:
    from lodresults import CompletionStatus, LabResult

    d["completion_status"] = CompletionStatus(d["completion_status"])
    return state(LabResult(**d))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    # In memory where the machine has it: Dagster's and DuckDB's storage commit every
    # event, and on a disk that doubles the time of each run.
    shm = Path("/dev/shm")
    with contextlib.ExitStack() as stack:
        if shm.is_dir() and os.access(shm, os.W_OK):
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=shm)))
        else:
            root = tmp_path_factory.mktemp("dagster")
        yield from _world(root)


def _world(root: Path) -> Iterator[World]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster-home"))
        mp.setenv("DLT_DATA_DIR", str(root / "dlt-data"))
        mp.setenv("RUNTIME__DLTHUB_TELEMETRY", "false")
        (root / "dagster-home").mkdir()
        log = logging.getLogger("dlt")
        saved = (log.level, list(log.handlers), log.propagate)
        w = World(root)
        try:
            yield w
        finally:
            w.close()
            Container()[PipelineContext].deactivate()
            log.setLevel(saved[0])
            log.handlers[:] = saved[1]
            log.propagate = saved[2]


def test_definitions_shape(world: World) -> None:
    """One asset, (tenant, week) partitions from START on Sunday, one run per partition."""
    asset = world.asset
    parts = asset.partitions_def
    assert isinstance(parts, dg.MultiPartitionsDefinition)
    assert {d.name for d in parts.partitions_defs} == {"tenant", "week"}
    now = datetime.fromtimestamp(T0, timezone.utc)
    weeks = parts.get_partitions_def_for_dimension("week").get_partition_keys(current_time=now)
    assert weeks == WEEKS
    assert asset.backfill_policy is None  # one run per partition
    assert world.defs.resolve_schedule_def("lab_results_nightly") is not None


def test_each_tenant_gets_exactly_its_labs(world: World) -> None:
    """Every (tenant, week) materialized: the table holds each tenant's labs, exactly."""
    for tenant in KEYS:
        for week in WEEKS:
            result = world.materialize(tenant, week)
            assert result.success
            tags = world.instance.get_run_by_id(result.run_id).tags
            assert tags[TENANT_TAG] == tenant  # what the run concurrency limit keys on
    # A week is settled once it ended 3 days before its run and none of its labs may
    # still change (the server's records say which): the current week is not; the first
    # one is unless a lab of it runs on.
    meta = {
        r.asset_materialization.partition: r.asset_materialization.metadata
        for r in world.instance.fetch_materializations(ASSET, limit=10).records
    }
    for tenant in KEYS:
        current = meta[str(dg.MultiPartitionKey({"tenant": tenant, "week": WEEKS[1]}))]
        assert current["open_labs"].value > 0 and current["settled"].value is False
        first = meta[str(dg.MultiPartitionKey({"tenant": tenant, "week": WEEKS[0]}))]
        assert first["settled"].value is not world.still_open(tenant, WEEKS[0])
        assert (first["open_labs"].value > 0) is world.still_open(tenant, WEEKS[0])
    table = world.table()
    for tenant in KEYS:
        assert len(table[tenant]) > 200
        assert table[tenant] == world.truth(tenant)
    # Both servers number labs alike: one id in two tenants is two rows (the key is
    # (tenant, lab_instance_id)), each with its own tenant's data.
    assert table["acme"].keys() & table["globex"].keys()


def test_a_revoked_key_fails_only_its_tenants_runs(world: World) -> None:
    """
    globex's key revoked: its run fails, naming the cause and never a key; acme's run of
    a week it loaded before succeeds, fetches the week again (the partition, not dlt's
    state, decides) and duplicates nothing.
    """
    before = world.table()
    sim = world.sims["globex"]
    sim.api_key = "revoked"
    requests = len([e for e in world.sims["acme"].log if e.path.lower().endswith("/results")])
    try:
        failed = world.materialize("globex", WEEKS[1])
        ok = world.materialize("acme", WEEKS[0])
    finally:
        sim.api_key = KEYS["globex"]
    assert not failed.success
    assert ok.success
    # The week, fetched again whole (the partition, not dlt's settled state, decides),
    # and nothing outside it.
    a = _epoch(WEEKS[0])
    windows = [
        (int(q["start"]), int(q["end"]))
        for q in ({k.lower(): v for k, v in e.query.items()} for e in world.sims["acme"].log)
        if "start" in q
    ][requests:]
    assert windows and min(s for s, _ in windows) <= a
    # (the SDK widens a range by a day each side: labs seen from both windows)
    assert a + 7 * DAY - 1 <= max(e for _, e in windows) < a + 8 * DAY
    assert world.table() == before
    logs = world.instance.all_logs(failed.run_id)
    text = "\n".join(str(e.dagster_event) + str(e.user_message) for e in logs)
    assert "LodAuthError" in text
    for key in KEYS.values():
        assert key not in text


def test_the_schedule_requests_only_what_is_not_settled(world: World) -> None:
    """
    At T0 the nightly run asks for the current week of each tenant (globex's failed run
    changes nothing) and for a first week whose labs run on. A week on, it asks for the
    week that ended and the new one; once they ran, only the new current week is left
    (and a week whose labs still run), and the table equals each server's present.
    """
    schedule = world.defs.resolve_schedule_def("lab_results_nightly")

    def requested() -> list[tuple[str, str]]:
        ctx = dg.build_schedule_context(
            instance=world.instance,
            scheduled_execution_time=datetime.fromtimestamp(world.clock(), timezone.utc),
            repository_def=world.defs.get_repository_def(),
        )
        data = schedule.evaluate_tick(ctx)
        out = []
        for r in data.run_requests or []:
            k = r.partition_key
            out.append((k.keys_by_dimension["tenant"], k.keys_by_dimension["week"]))
        return sorted(out)

    def running_on(weeks: list[str]) -> list[tuple[str, str]]:
        return [(t, w) for t in KEYS for w in weeks if world.still_open(t, w)]

    assert requested() == sorted([(t, WEEKS[1]) for t in KEYS] + running_on(WEEKS[:1]))
    unsettled_before = running_on(WEEKS[:1])
    world.clock.advance(7 * DAY)  # labs start, end and are graded meanwhile
    unsettled = sorted(
        {(t, w) for t in KEYS for w in (WEEKS[1], "2025-06-22")} | set(unsettled_before)
    )
    assert requested() == unsettled
    for tenant, week in unsettled:
        assert world.materialize(tenant, week).success
    assert requested() == sorted(
        [(t, "2025-06-22") for t in KEYS] + running_on(WEEKS), key=lambda p: (p[0], p[1])
    )
    table = world.table()
    for tenant in KEYS:
        assert table[tenant] == world.truth(tenant)
    # After all these runs, no file of Dagster's or dlt's (state, traces, logs, the
    # database) holds a key in any spelling.
    assert files_holding(world.root, [e for k in KEYS.values() for e in encodings(k)]) == []


def test_run_concurrency_config_is_dagsters_own(world: World) -> None:
    """RUN_CONCURRENCY is a dagster.yaml section Dagster reads: one run per tenant."""
    queue = world.instance.get_concurrency_config().run_queue_config
    assert queue is not None
    assert queue.tag_concurrency_limits == [
        {"key": TENANT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
    ]


def test_bad_arguments_fail_at_definition() -> None:
    t = Tenant("k-1", "http://127.0.0.1:1")
    d = dlt.destinations.duckdb(":memory:")
    with pytest.raises(LodInvalidArgument, match="share one api_key"):
        lab_results_definitions({"a": t, "b": Tenant("k-1")}, start=START, destination=d)
    with pytest.raises(LodInvalidArgument, match="tenant name 'a b'"):
        lab_results_definitions({"a b": t}, start=START, destination=d)
    with pytest.raises(LodInvalidArgument, match="start"):
        lab_results_definitions({"a": t}, start="June", destination=d)


DOCS = Path(__file__).resolve().parent.parent / "docs" / "dagster.md"


def test_the_docs_example_runs(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/dagster.md's definitions, run as a script against two simulators."""
    block = re.search(r"```python\n(.*?)```", DOCS.read_text(), re.DOTALL)
    assert block is not None
    week = _epoch("2025-01-05")
    sims = {
        name: Simulator(seed=seed, api_key=KEYS[name], span=(week - 3 * DAY, week + 9 * DAY),
                        labs_per_day=20)
        for seed, name in enumerate(KEYS, start=31)
    }  # fmt: skip
    for sim in sims.values():
        asyncio.run_coroutine_threadsafe(sim.start(), world.loop).result()
    try:
        for name, sim in sims.items():
            monkeypatch.setenv(f"{name.upper()}_LOD_KEY", KEYS[name])
            monkeypatch.setenv(f"{name.upper()}_LOD_URL", sim.base_url)
        monkeypatch.chdir(tmp_path)
        exec(compile(block.group(1), str(DOCS), "exec"), {"__name__": "__main__"})
    finally:
        for sim in sims.values():
            asyncio.run_coroutine_threadsafe(sim.close(), world.loop).result()
    with closing(duckdb.connect(str(tmp_path / "lod.duckdb"), read_only=True)) as con:
        got = con.execute("SELECT tenant, lab_instance_id FROM lodresults.lab_results").fetchall()
    for name, sim in sims.items():
        ids = [i for t, i in got if t == name]
        assert sorted(ids) == sorted(sim.ids_between(week, week + 7 * DAY - 1)) != []
