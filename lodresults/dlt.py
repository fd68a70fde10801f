"""
lodresults as a dlt source: load lab results into any warehouse dlt speaks to.

::

    import dlt
    from lodresults.dlt import lab_results

    pipeline = dlt.pipeline("lodresults", destination="duckdb", dataset_name="lod")
    pipeline.run(lab_results(since=date(2026, 1, 1)))

Needs the ``dlt`` extra (``pip install 'lodresults[dlt]'``). Importing this module imports
dlt; ``import lodresults`` does not.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any, Final, cast

import attrs
import dlt
import pyarrow as pa
from dlt.common.schema.typing import TColumnSchema

from lodresults._client import DEFAULT_BASE_URL, LodClient
from lodresults._destinations.arrow import DECIMAL_PRECISION, DECIMAL_SCALE
from lodresults._destinations.dlt_state import FETCHED_AT, DltState
from lodresults._engine.backfill import backfill
from lodresults._exceptions import LodInvalidArgument
from lodresults._records.models import FIELDS
from lodresults._records.schema import MAX_EPOCH, Kind
from lodresults._request.key import ApiKey
from lodresults._windows.plan import TimeLike, to_epoch, validate_range
from lodresults._windows.settle import DEFAULT_SETTLE, settle_seconds

__all__ = ["FETCHED_AT", "lab_results"]

#: The dlt column type of each kind of field (the same types as the Arrow columns).
_DLT_TYPES: Final[dict[Kind, dict[str, Any]]] = {
    "int": {"data_type": "bigint"},
    "enum": {"data_type": "bigint"},
    "text": {"data_type": "text"},
    "bool": {"data_type": "bool"},
    "timestamp": {"data_type": "timestamp", "timezone": True},
    "decimal": {"data_type": "decimal", "precision": DECIMAL_PRECISION, "scale": DECIMAL_SCALE},
}

_COLUMNS: Final = cast(
    dict[str, TColumnSchema],
    {
        **{f.name: {"name": f.name, **_DLT_TYPES[f.kind], "nullable": f.nullable} for f in FIELDS},
        FETCHED_AT: {
            "name": FETCHED_AT,
            "data_type": "timestamp",
            "timezone": True,
            "nullable": False,
            "dedup_sort": "desc",
        },
    },
)


@attrs.frozen
class _Plan:
    since: int
    until: int | None
    key: ApiKey
    base_url: str
    settle: int
    client_options: dict[str, Any]


@dlt.resource(
    name="lab_results",
    section="lodresults",
    primary_key="lab_instance_id",
    write_disposition="merge",
    columns=_COLUMNS,
)
async def lab_results(
    since: TimeLike,
    until: TimeLike | None = None,
    *,
    api_key: str = dlt.secrets.value,
    base_url: str | None = None,
    settle: timedelta | float = DEFAULT_SETTLE,
    **client_options: Any,
) -> AsyncIterator[pa.Table]:
    """
    Every lab that started or ended in ``[since, until]``, loaded by ``lab_instance_id``.

    A dlt resource: table ``lab_results``, primary key ``lab_instance_id``, write
    disposition ``merge`` (a lab loaded again replaces its older row), typed columns (UTC
    timestamps, DECIMAL(38, 18), the completion status as its integer code) plus
    ``fetched_at``, when the row's copy was received.

    Args:
        since, until: What ``LodClient.iter_results`` accepts (aware datetime, date, epoch
            seconds); ``until=None`` means now.
        api_key: The key; by default from dlt's secrets (``secrets.toml`` or the
            environment, e.g. ``SOURCES__LODRESULTS__API_KEY``). Never logged.
        base_url: The API root; None for the production API.
        settle: How long after a window's end its labs may still change (seconds or a
            timedelta; default three days, as for ``lodresults backfill``). The part of
            each window that ended at least ``settle`` before it was fetched is recorded
            as settled in the resource's dlt state, and a later run skips it: a pipeline
            run again (cron) fetches only the unsettled tail and the new time.
        client_options: Passed to ``LodClient`` (``max_concurrency``, ``rate_limit``, ...).

    Each run is one run of the engine (``lodresults.backfill``) on the resource's dlt
    state (``settled`` stretches, the labs that may still change, the last run): the
    first loads its windows; a later one reads the change feed (one ``LatestResults``),
    the unsettled tail, and the labs that started in the range and run (or wait for a
    grade) past ``until``, so the warehouse ends with the server's present state of
    every lab of the range. Records stream window by window (one Arrow table per window
    or phase: its new labs, then the changed copies of labs met earlier), so memory stays
    bounded whatever the range. Pass ``clock=`` (a ``LodClient`` option) to run on a test
    clock.
    """
    try:
        key = ApiKey(api_key)
    finally:
        # No frame of a traceback that passes through here shows the key.
        del api_key
    plan = _plan(since, until, key, base_url, settle, client_options)
    async for table in _extract(plan, dlt.current.resource_state()):
        yield table


def _plan(
    since: object,
    until: object,
    key: ApiKey,
    base_url: str | None,
    settle: object,
    client_options: dict[str, Any],
) -> _Plan:
    s = to_epoch(since, "since")
    u = None if until is None else validate_range(s, until)[1]
    if base_url is not None and not isinstance(base_url, str):
        raise LodInvalidArgument(f"base_url must be a string, not {type(base_url).__name__}")
    return _Plan(s, u, key, base_url or DEFAULT_BASE_URL, settle_seconds(settle), client_options)


async def _extract(plan: _Plan, state: dict[str, Any]) -> AsyncIterator[pa.Table]:
    destination = DltState(state, plan.settle)
    async with LodClient(
        plan.key.reveal(), base_url=plan.base_url, **plan.client_options
    ) as client:
        if plan.until is None and plan.since > client.clock.time():
            now = int(client.clock.time())
            raise LodInvalidArgument(f"since ({plan.since}) lies in the future (now is {now})")
        until = plan.until if plan.until is not None else MAX_EPOCH
        run = asyncio.ensure_future(
            backfill(client, destination, plan.since, until, settle=plan.settle)
        )
        try:
            while True:
                table = asyncio.ensure_future(destination.tables.get())
                await asyncio.wait({table, run}, return_when=asyncio.FIRST_COMPLETED)
                if table.done():
                    yield table.result()
                    continue
                table.cancel()
                run.result()  # raises the run's failure
                while not destination.tables.empty():
                    yield destination.tables.get_nowait()
                return
        finally:
            run.cancel()
            await asyncio.gather(run, return_exceptions=True)
