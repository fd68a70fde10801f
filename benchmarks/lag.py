"""
Lag from a lab's change on the server to the store: the webhook path against pulling.

The webhook rows are measured in real time on loopback: a lab of the simulator ends
(its record changes), the simulator pushes its TornDown webhook to a real receiver, and
the lag runs until the receiver has fetched the lab with ``Result`` and committed it to
SQLite. The API answers after ``latency`` (a real API's round trip). One change at a
time, then a burst of changes at once.

The pull rows follow from when a pull runs: a change waits for the next one (uniform
over the interval for changes at random times) plus the pull's own duration, taken as
measured for one window here. A lost push waits for the reconciliation likewise.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks._harness import table
from benchmarks.suite import QUICK, Sizes
from lodresults import LodClient, SQLiteStore, backfill
from lodresults.testing import Simulator, WebhookSender, generate_labs
from lodresults.webhooks import WebhookReceiver

SECRET = "bench-secret"
DAY = 86400


def _quantiles(values: list[float]) -> tuple[float, float, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


def _seconds(s: float) -> str:
    if s < 1:
        return f"{s * 1000:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


async def _measure(changes: int, burst: int, latency: float) -> dict[str, Any]:
    now = int(time.time())
    labs = generate_labs(seed=3, start=now - DAY, end=now - 3600, labs_per_day=changes * 4)
    records = [dict(lab.at(now) or {}) for lab in labs][: changes + burst]
    running = [{**r, "End": None, "CompletionStatus": 3} for r in records]
    async with (
        Simulator(records=running, latency=latency) as sim,
        LodClient(sim.api_key, base_url=sim.base_url, rate_limit=None) as client,
    ):
        db = Path(tempfile.mkdtemp()) / "lag.db"
        store = await SQLiteStore.open(db)
        receiver = WebhookReceiver(client, store, secret=SECRET)
        runner = web.AppRunner(receiver.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/lod?id={{id}}"
        sender = WebhookSender(sim.dataset, url, clock=time.time, headers={"Authorization": SECRET})
        try:
            single = []
            for rec in records[:changes]:
                t0 = time.perf_counter()
                sim.dataset.upsert(rec)  # the lab ends on the server
                sender.notify(rec["LabInstanceId"], "TornDown")
                await sender.pump()
                await receiver.drain()
                single.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for rec in records[changes:]:
                sim.dataset.upsert(rec)
                sender.notify(rec["LabInstanceId"], "TornDown")
            await sender.pump()
            await receiver.drain()
            burst_s = time.perf_counter() - t0
            rows = await store.count()
            t0 = time.perf_counter()
            await backfill(client, store, now - DAY, now)  # one nightly pull's duration
            pull_s = time.perf_counter() - t0
        finally:
            await sender.close()
            await runner.cleanup()
            await store.close()
    assert rows == len(records), "a change did not reach the store"
    return {"single": single, "burst": burst_s, "pull": pull_s}


def run(sizes: Sizes) -> str:
    """The lag table (``python -m benchmarks --only lag``)."""
    quick = sizes is QUICK
    changes, burst, latency = (5, 20, 0.01) if quick else (100, 500, sizes.latency_ms / 1000)
    got = asyncio.run(_measure(changes, burst, latency))
    med, p95, worst = _quantiles(got["single"])
    pull = got["pull"]
    rows = [
        [
            "webhook, one change at a time (measured)",
            _seconds(med),
            _seconds(p95),
            _seconds(worst),
        ],
        [
            f"webhook, a burst of {burst} changes (measured: until the last is stored)",
            "-",
            "-",
            _seconds(got["burst"]),
        ],
        [
            "webhook, a lost push (hourly reconciliation)",
            _seconds(1800 + pull),
            _seconds(0.95 * 3600 + pull),
            _seconds(3600 + pull),
        ],
        [
            "watch, polling every 60 s",
            _seconds(30 + pull),
            _seconds(57 + pull),
            _seconds(60 + pull),
        ],
        [
            "nightly backfill",
            _seconds(DAY / 2 + pull),
            _seconds(0.95 * DAY + pull),
            _seconds(DAY + pull),
        ],
    ]
    text = table(["path from a lab's change to the store", "median", "p95", "worst"], rows)
    return (
        f"{text}\n\nAPI latency {latency * 1000:.0f} ms per request; {changes} changes one at "
        f"a time through a real receiver and SQLite on loopback. Pull rows: the wait for the "
        f"next run (changes at random times) plus one run's duration, {_seconds(pull)} here."
    )


if __name__ == "__main__":
    print(run(QUICK))
