"""
lodresults in Dagster: one asset, ``lab_results``, partitioned by tenant and week, loaded
through the dlt source (``lodresults.dlt``); a nightly schedule that asks only for what is
not settled yet.

::

    import dlt
    from lodresults import Tenant
    from lodresults.dagster import lab_results_definitions

    defs = lab_results_definitions(
        {"acme": Tenant(os.environ["ACME_LOD_KEY"])},
        start="2024-01-01",
        destination=dlt.destinations.duckdb("lod.duckdb"),
    )

Needs the ``dagster`` extra (``pip install 'lodresults[dagster]'``). Two runs must never
use the same key at once: Dagster enforces that with a run tag concurrency limit on
``dagster/partition/tenant`` (see ``RUN_CONCURRENCY``), which every run of a partition
carries.
"""

# No ``from __future__ import annotations``: Dagster reads the asset's ``context``
# annotation when the asset is defined, and a string there fails to load.

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import Any, Final

import dagster as dg
import dlt
from dlt.common.configuration.container import Container
from dlt.extract.incremental.context import TimeIntervalContext

from lodresults._exceptions import LodInvalidArgument
from lodresults._tenant import Tenant, tenant_name_problem
from lodresults._windows.settle import DEFAULT_SETTLE, settle_seconds
from lodresults.dlt import TENANT, for_tenant
from lodresults.dlt import lab_results as lab_results_source

__all__ = ["ASSET", "RUN_CONCURRENCY", "TENANT_TAG", "lab_results_definitions"]

#: The asset's key.
ASSET: Final = dg.AssetKey("lab_results")

#: The run tag Dagster puts on every run of a ``(tenant, week)`` partition.
TENANT_TAG: Final = f"dagster/partition/{TENANT}"

#: The ``concurrency`` section of ``dagster.yaml`` that keeps two runs from using one key
#: at once: at most one run in progress per value of ``TENANT_TAG``.
RUN_CONCURRENCY: Final[Mapping[str, Any]] = {
    "runs": {
        "tag_concurrency_limits": [
            {"key": TENANT_TAG, "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
        ]
    }
}

_PAGE: Final = 1000


def lab_results_definitions(
    tenants: Mapping[str, Tenant],
    *,
    start: date | str,
    destination: Any,
    dataset_name: str = "lodresults",
    settle: timedelta | float = DEFAULT_SETTLE,
    day_offset: int | None = None,
    pipeline_name: str = "lodresults",
    pipelines_dir: str | None = None,
    cron_schedule: str = "0 3 * * *",
    client_options: Mapping[str, Any] | None = None,
) -> dg.Definitions:
    """
    Dagster definitions that keep ``<dataset_name>.lab_results`` equal to the server for
    every tenant, a week at a time.

    The asset ``lab_results`` is partitioned by ``tenant`` (the names of ``tenants``) and
    ``week`` (UTC weeks from ``start``, the current week included). Materializing ``(tenant,
    week)`` loads that tenant's labs that started or ended in the week through dlt, with a
    ``tenant`` column, merged on ``(tenant, lab_instance_id)``: materializing a partition
    again fetches it again and duplicates nothing. Each partition is its own run (a
    backfill of many weeks is many runs), tagged ``dagster/partition/tenant``.

    The schedule ``lab_results_nightly`` asks, per tenant, for every partition whose latest
    materialization is missing or was made less than ``settle`` after its week ended (so
    its labs may still have changed since): the current week, the weeks before it until
    they settle, and any that failed.

    Args:
        tenants: Name to ``Tenant``. Names are 1-64 letters, digits, ``_`` or ``-``; each
            tenant needs its own key (the concurrency limit is per name).
        start: The first day (``date`` or ``"YYYY-MM-DD"``), UTC.
        destination: A dlt destination (``dlt.destinations.duckdb(path)``, a name, ...).
        dataset_name: The dlt dataset (schema) of the ``lab_results`` table.
        settle: How long after a week's end its labs may still change (default 3 days).
        day_offset: The weekday weeks start on (0 Sunday ... 6 Saturday); by default the
            weekday of ``start``, so the first week starts on ``start``.
        pipeline_name: Prefix of the dlt pipeline names (one pipeline per tenant).
        pipelines_dir: Where dlt keeps its local pipeline state (its default if None).
        cron_schedule: When the nightly schedule runs (UTC).
        client_options: Passed to each tenant's ``LodClient`` (``rate_limit``, ...).
    """
    names = _check_tenants(tenants)
    first = _check_start(start)
    settle_s = settle_seconds(settle)
    if day_offset is None:
        day_offset = (first.weekday() + 1) % 7  # Dagster counts from Sunday
    weeks = dg.WeeklyPartitionsDefinition(
        start_date=first.isoformat(), day_offset=day_offset, timezone="UTC", end_offset=1
    )
    partitions = dg.MultiPartitionsDefinition(
        {TENANT: dg.StaticPartitionsDefinition(names), "week": weeks}
    )
    options = dict(client_options or {})
    clock: Callable[[], float] = options.get("clock", time.time)

    @dg.asset(
        key=ASSET,
        partitions_def=partitions,
        # No backfill policy: Dagster then runs each partition of a backfill on its own
        # (a per-tenant concurrency limit needs that; a single-run policy would put every
        # tenant's weeks into one run).
        kinds={"dlt"},
        description="Lab on Demand results: labs that started or ended in the week.",
    )
    def lab_results(context: dg.AssetExecutionContext) -> dg.MaterializeResult:  # type: ignore[type-arg]
        keys = context.partition_key.keys_by_dimension
        name = keys[TENANT]
        window = context.partition_time_window
        fetched = clock()
        pipeline = dlt.pipeline(
            pipeline_name=f"{pipeline_name}_{name}",
            destination=destination,
            dataset_name=dataset_name,
            pipelines_dir=pipelines_dir,  # type: ignore[arg-type]  # None: dlt's default
        )
        rows, running = _load(
            pipeline, name, tenants[name], window.start, window.end, settle_s, options
        )
        # Settled: the week ended ``settle`` before this fetch, and none of its labs may
        # still change (running past the week, or a grade still to land): until then the
        # schedule asks for the week again, and its run fetches those labs again.
        settled = fetched >= window.end.timestamp() + settle_s and not running
        return dg.MaterializeResult(
            metadata={"rows": rows, "settled": settled, "open_labs": running}
        )

    job = dg.define_asset_job("lab_results_job", selection=[ASSET])

    @dg.schedule(
        job=job, cron_schedule=cron_schedule, execution_timezone="UTC", name="lab_results_nightly"
    )
    def nightly(context: dg.ScheduleEvaluationContext) -> Iterator[dg.RunRequest]:
        now = context.scheduled_execution_time or datetime.fromtimestamp(clock(), timezone.utc)
        settled = _settled_partitions(context.instance)
        tick = now.strftime("%Y-%m-%dT%H:%M")
        for name in names:
            for week in weeks.get_partition_keys(current_time=now):
                key = dg.MultiPartitionKey({TENANT: name, "week": week})
                if str(key) not in settled:
                    yield dg.RunRequest(partition_key=key, run_key=f"{key}@{tick}")

    return dg.Definitions(assets=[lab_results], jobs=[job], schedules=[nightly])


def _load(
    pipeline: Any,
    name: str,
    tenant: Tenant,
    start: datetime,
    end: datetime,
    settle: int,
    options: dict[str, Any],
) -> tuple[int, int]:
    """
    Run the dlt source for ``[start, end)`` of one tenant: the rows loaded, and the labs
    that started in the interval and may still change (the source's state says which).
    """
    resource = for_tenant(
        lab_results_source(
            start, api_key=tenant.reveal_key(), base_url=tenant.base_url, settle=settle, **options
        ),
        name,
    )
    # The partition is the orchestrator's interval: the source loads it whole, whatever
    # its dlt state says (a partition materialized again is fetched again).
    with Container().injectable_context(TimeIntervalContext(interval=(start, end))):
        pipeline.run(resource)
    counts = pipeline.last_trace.last_normalize_info.row_counts
    source = pipeline.state["sources"][pipeline.default_schema_name]
    state = source["resources"]["lab_results"]
    a, b = start.timestamp(), end.timestamp()
    running = sum(1 for s, _, _ in state.get("open", {}).values() if s is not None and a <= s < b)
    return int(counts.get("lab_results", 0)), running


def _settled_partitions(instance: dg.DagsterInstance) -> set[str]:
    """The partitions whose latest materialization says ``settled``."""
    latest: dict[str, bool] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(ASSET, limit=_PAGE, cursor=cursor)
        for record in page.records:  # newest first: the first seen is the latest
            m = record.asset_materialization
            if m is not None and m.partition is not None and m.partition not in latest:
                value = m.metadata.get("settled")
                latest[m.partition] = bool(value is not None and value.value)
        if not page.has_more:
            return {p for p, settled in latest.items() if settled}
        cursor = page.cursor


def _check_tenants(tenants: Mapping[str, Tenant]) -> list[str]:
    if not isinstance(tenants, Mapping) or not tenants:
        raise LodInvalidArgument("tenants must be a non-empty mapping of name to Tenant")
    for name, tenant in tenants.items():
        problem = tenant_name_problem(name)
        if problem is not None:
            raise LodInvalidArgument(f"tenant name {name!r}: {problem}")
        if not isinstance(tenant, Tenant):
            raise LodInvalidArgument(f"tenant {name!r} must be a lodresults.Tenant")
    shared = _sharing_a_key(tenants)
    if shared is not None:
        # One limit per name cannot keep two names of one key from running at once.
        raise LodInvalidArgument(f"tenants {shared[0]!r} and {shared[1]!r} share one api_key")
    return list(tenants)


def _sharing_a_key(tenants: Mapping[str, Tenant]) -> tuple[str, str] | None:
    """Two names of one key, if any (compared here so no frame that raises holds a key)."""
    seen: dict[str, str] = {}
    for name, tenant in tenants.items():
        other = seen.setdefault(tenant.reveal_key(), name)
        if other != name:
            return other, name
    return None


def _check_start(start: date | str) -> date:
    if isinstance(start, datetime):
        raise LodInvalidArgument("start must be a date or 'YYYY-MM-DD', not a datetime")
    if isinstance(start, date):
        return start
    if isinstance(start, str):
        try:
            return date.fromisoformat(start)
        except ValueError:
            pass
    raise LodInvalidArgument(f"start must be a date or 'YYYY-MM-DD', got {start!r}")
