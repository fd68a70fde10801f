"""The measurements. Each returns Markdown for benchmarks/README.md."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import tracemalloc
from contextlib import aclosing, closing
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import orjson

from benchmarks import construction
from benchmarks._harness import Timing, alternate, repeat, simulator, table
from benchmarks._results import KEPT
from benchmarks.peers import decode, gather, sequential
from lodresults import LodClient, Throttled, WindowCompleted
from lodresults._records.decode import decode_results
from lodresults._windows.dedup import SKEW_TOLERANCE
from lodresults.testing import generate

DAY = 86400
WEEK = 7 * DAY


@attrs.frozen
class Sizes:
    """How big each measurement is (``quick`` for the smoke test)."""

    repeats: int
    fanout_years: tuple[int, ...]
    fanout_concurrency: tuple[int, ...]
    latency_ms: float
    throughput_per_window: int
    throughput_windows: int
    memory_years: tuple[int, int]
    rate_targets: tuple[float, ...]
    convergence_server_rate: float
    convergence_days: int
    backfill_days: int
    backfill_labs_per_day: float
    close_repeats: int  # turns where lodresults and its peer are close
    storm_seconds: float
    storm_windows: int
    sporadic_windows: int
    bucket_seconds: float
    permanent_windows: tuple[int, ...]
    permanent_retry_after: float


FULL = Sizes(
    repeats=3,
    fanout_years=(1, 5),
    fanout_concurrency=(1, 4, 8, 16),
    latency_ms=100.0,
    throughput_per_window=100_000,
    throughput_windows=4,
    memory_years=(1, 10),
    rate_targets=(5.0, 20.0, 50.0),
    convergence_server_rate=10.0,
    convergence_days=730,
    backfill_days=365,
    backfill_labs_per_day=400.0,
    close_repeats=5,
    storm_seconds=6.0,
    storm_windows=60,
    sporadic_windows=105,
    bucket_seconds=40.0,
    permanent_windows=(1, 4, 16),
    permanent_retry_after=3.0,
)

QUICK = Sizes(
    repeats=1,
    fanout_years=(1,),
    fanout_concurrency=(1, 8),
    latency_ms=5.0,
    throughput_per_window=2_000,
    throughput_windows=2,
    memory_years=(1, 2),
    rate_targets=(50.0,),
    convergence_server_rate=40.0,
    convergence_days=120,
    backfill_days=30,
    backfill_labs_per_day=50.0,
    close_repeats=1,
    storm_seconds=0.5,
    storm_windows=5,
    sporadic_windows=5,
    bucket_seconds=1.5,
    permanent_windows=(1,),
    permanent_retry_after=0.3,
)


async def _lod_count(
    base_url: str, key: str, start: int, end: int, concurrency: int, rate: float | None = None
) -> int:
    n = 0
    client = LodClient(key, base_url=base_url, max_concurrency=concurrency, rate_limit=rate)
    async with client, aclosing(client.iter_results(start, end)) as it:
        async for _ in it:
            n += 1
    return n


def fanout(sizes: Sizes) -> str:
    """Wall time of N-year ranges at 100 ms latency vs the ideal and the peers."""
    years = max(sizes.fanout_years)
    rows = []
    data: list[dict[str, Any]] = []
    with simulator(latency_ms=sizes.latency_ms, days=years * 365 + 30, labs_per_day=40) as srv:
        now = int(time.time())
        for y in sizes.fanout_years:
            start, end = now - y * 365 * DAY, now
            windows = math.ceil((end - start) / WEEK)
            for c in sizes.fanout_concurrency:
                if y >= 5 and c == 1 and sizes is FULL:
                    continue  # 261 sequential round trips x 3 repeats x 2 clients: minutes
                ideal = math.ceil(windows / c) * sizes.latency_ms / 1000
                url, key = srv.base_url, srv.api_key
                # Taken in turns (ours, the peer, ours...) so that the load of the shared
                # machine falls on both alike; more turns where the two are close.
                turns = sizes.close_repeats if c >= 8 else sizes.repeats
                (ours, n_ours), (peer2, p2) = alternate(
                    partial(_lod_count, url, key, start, end, c),
                    partial(gather.fetch_all, url, key, start, end, c),
                    turns,
                )
                assert n_ours == len(p2), (n_ours, len(p2))
                peer1 = "—"
                sequential_s: list[float] | None = None
                if c == 1:
                    t1, p1 = repeat(
                        partial(sequential.fetch_all, url, key, start, end), sizes.repeats
                    )
                    assert len(p1) == n_ours
                    peer1 = f"{t1.fmt()} ({t1.median / ours.median:.2f}x)"
                    sequential_s = list(t1.values)
                data.append(
                    {"years": y, "windows": windows, "concurrency": c, "ideal_s": ideal,
                     "lodresults_s": list(ours.values), "gather_s": list(peer2.values),
                     "sequential_s": sequential_s, "records": n_ours}
                )  # fmt: skip
                rows.append(
                    [
                        f"{y} y",
                        str(windows),
                        str(c),
                        f"{ideal:.2f} s",
                        ours.fmt(),
                        f"{ours.median / ideal:.2f}",
                        f"{peer2.fmt()} ({peer2.median / ours.median:.2f}x)",
                        peer1,
                        f"{n_ours:,}",
                    ]
                )
    KEPT.keep("fanout", {"latency_ms": sizes.latency_ms, "rows": data})
    head = [
        "range", "windows", "concurrency", "ideal", "lodresults", "vs ideal",
        "peer 2 gather (its time / ours)", "peer 1 sequential (its time / ours)", "records",
    ]  # fmt: skip
    return (
        f"Simulator in its own process with {sizes.latency_ms:.0f} ms latency per request, "
        "no rate limit (`rate_limit=None`), 40 labs/day. Ideal = ceil(windows / concurrency) "
        "x latency. Median of "
        f"{sizes.repeats} runs (min-max), {sizes.close_repeats} at concurrency 8 and "
        "16, lodresults and the gather peer taking turns.\n\n" + table(head, rows)
    )


def _big_body(per_window: int) -> bytes:
    recs = generate(
        seed=3, start=1_700_000_000, end=1_700_000_000 + WEEK,
        labs_per_day=per_window / 7, now=1_800_000_000,
    )  # fmt: skip
    return orjson.dumps({"Results": recs, "Status": 1, "Error": None})


def _best_of(fn: Any, arg: Any, times: int) -> Timing:
    values = []
    for _ in range(times):
        gc.collect()
        t0 = time.perf_counter()
        fn(arg)
        values.append(time.perf_counter() - t0)
    return Timing(tuple(values))


class _Probe:
    """
    How long the event loop was held: the most CPU time the process spent between two
    turns of a task that asks for a turn every millisecond (a worker thread holding the
    GIL counts). CPU time, not wall time: on a shared machine the OS may pause the whole
    process for longer than any stall of ours, and that is no stall of the loop's making.
    """

    TICK = 0.001

    def __init__(self) -> None:
        self.longest = 0.0
        self.stop = False

    async def run(self) -> None:
        last = time.process_time()
        while not self.stop:
            await asyncio.sleep(self.TICK)
            now = time.process_time()
            self.longest = max(self.longest, now - last)
            last = now


def _probed(fn: Any, stalls: list[float]) -> Any:
    """``fn`` (an async function) with a probe beside it; its longest stall is appended."""

    async def run() -> Any:
        probe = _Probe()
        task = asyncio.ensure_future(probe.run())
        await asyncio.sleep(0)
        try:
            return await fn()
        finally:
            probe.stop = True
            await task
            stalls.append(probe.longest)

    return run


async def _lod_results(base_url: str, key: str, start: int, end: int) -> int:
    async with LodClient(key, base_url=base_url, rate_limit=None) as client:
        return len(await client.results(start, end))


def _counted(fn: Any, *args: Any) -> Any:
    """
    ``fn(*args)`` (a peer), giving how many records it returned, not the records: kept
    from run to run, 400,000 dicts in lists made the collector's passes in the next runs
    (lodresults' too) rescan them, 30-110 ms a collection.
    """

    async def run() -> int:
        return len(await fn(*args))

    return run


def _stall(values: list[float]) -> str:
    return f"{max(values) * 1000:.0f} ms"


def throughput(sizes: Sizes) -> str:
    """Records per second end to end on big windows, the loop's longest stall, and
    decode-only ceilings."""
    per = sizes.throughput_per_window
    nwin = sizes.throughput_windows
    days = nwin * 7
    rows = []
    with simulator(latency_ms=0, days=days + 1, labs_per_day=per / 7) as srv:
        now = int(time.time())
        url, key = srv.base_url, srv.api_key
        # One body, typed results() against aiohttp + orjson, in turns.
        s7, stalls_one, stalls_peer1 = now - WEEK, [], []  # type: list[float]
        turns = sizes.close_repeats
        (one, n1), (peer1, p1) = alternate(
            _probed(partial(_lod_results, url, key, s7, now), stalls_one),
            _probed(_counted(gather.fetch_one, url, key, s7, now), stalls_peer1),
            turns,
            warm_up=True,
        )
        assert n1 == p1, (n1, p1)
        rows.append(["lodresults `results()` → LabResult (typed), one body", one.fmt(),
                     f"{n1 / one.median:,.0f}", f"{peer1.median / one.median:.2f}",
                     _stall(stalls_one)])  # fmt: skip
        rows.append(["peer: aiohttp + orjson → dicts (untyped), one body", peer1.fmt(),
                     f"{n1 / peer1.median:,.0f}", "1.00", _stall(stalls_peer1)])  # fmt: skip
        # A range of windows, iter_results against gather.
        start, end = now - days * DAY, now
        c = 2
        stalls_ours, stalls_peer2 = [], []  # type: list[float]
        (ours, n), (peer2, p2) = alternate(
            _probed(partial(_lod_count, url, key, start, end, c), stalls_ours),
            _probed(_counted(gather.fetch_all, url, key, start, end, c), stalls_peer2),
            turns,
            warm_up=True,
        )
        assert n == p2, (n, p2)
        rate_ours = n / ours.median
        rate_peer = n / peer2.median
        rows.append([f"lodresults `iter_results` → LabResult (typed, dedup), {nwin} weeks",
                     ours.fmt(), f"{rate_ours:,.0f}", f"{rate_ours / rate_peer:.2f}",
                     _stall(stalls_ours)])  # fmt: skip
        rows.append([f"peer 2: gather + orjson → dicts (untyped), {nwin} weeks", peer2.fmt(),
                     f"{rate_peer:,.0f}", "1.00", _stall(stalls_peer2)])  # fmt: skip
    body = _big_body(per)
    count = len(orjson.loads(body)["Results"])
    ceilings = [
        ("decode only: orjson.loads → dicts", decode.orjson_dicts),
        ("decode only: msgspec → typed structs", decode.msgspec_typed),
        ("decode only: lodresults `decode_results` → LabResult", decode_results),
    ]
    base = None
    for name, fn in ceilings:
        t = _best_of(fn, body, max(3, sizes.repeats))
        base = base or t.median
        rows.append([name, t.fmt(), f"{count / t.median:,.0f}", f"{base / t.median:.2f}", "—"])
    head = ["path", "time", "records/s", "vs its peer", "longest loop stall"]
    return (
        f"Simulator with no latency in its own process; bodies of about {per:,} labs "
        f"({len(body) / 1e6:.1f} MB) a week. Median of {turns} runs (min-max), "
        "lodresults and its peer taking turns (which goes first alternating by round) "
        "after one untimed run of each; "
        '"vs its peer" is the peer\'s time over ours '
        "(the one-body peer for `results()`, the gather peer for `iter_results`, orjson for "
        "the decode-only rows). The iter_results range is asked from a day before to a day "
        "after, as lodresults does (5 requests, 3 rounds at concurrency 2, against the "
        "peer's 4 and 2). Longest loop stall: the most CPU time the process spent between "
        "two turns of a task asking for one every millisecond, over all runs. Decode-only "
        f"rows: one {count:,}-record body in-process, best of 3. The machine is shared "
        "with other work: compare within one run.\n\n"
        + table(head, rows)
        + "\n\n"
        + construction.run(body, count, 3)
    )


def memory(sizes: Sizes) -> str:
    """Peak RSS streaming a long range vs a short one, and bytes per record held."""
    short, long_ = sizes.memory_years
    rows = []
    runs = []
    with simulator(latency_ms=0, days=long_ * 365 + 30, labs_per_day=40) as srv:
        for years in (short, long_):
            out = subprocess.run(
                [sys.executable, "-m", "benchmarks._memory_child", srv.base_url, srv.api_key,
                 str(years)],
                check=True, capture_output=True, text=True,
            ).stdout  # fmt: skip
            doc = json.loads(out)
            runs.append({"years": years, **doc})
            rows.append([f"{years} y", f"{doc['records']:,}", f"{doc['windows']}",
                         f"{doc['baseline_mb']:.1f} MB", f"{doc['peak_mb']:.1f} MB",
                         f"{doc['peak_mb'] - doc['baseline_mb']:.1f} MB",
                         f"{doc['dedup_max']}"])  # fmt: skip
    KEPT.keep("memory", {"runs": runs})
    held = _bytes_per_record(sizes)
    return (
        "Peak RSS of a fresh process that imports lodresults (baseline) and then streams "
        "`iter_results` over the range (concurrency 4, no rate limit), counting records "
        "without keeping them.\n\n"
        + table(
            [
                "range",
                "records",
                "windows",
                "baseline RSS",
                "peak RSS",
                "growth",
                "dedup ids held (max)",
            ],
            rows,
        )
        + "\n\n"
        + held
    )


def _bytes_per_record(sizes: Sizes) -> str:
    body = _big_body(min(sizes.throughput_per_window, 50_000))
    rows = []
    for name, fn in [
        ("LabResult (attrs, slots)", decode_results),
        ("dict from orjson", decode.orjson_dicts),
        ("msgspec struct", decode.msgspec_typed),
    ]:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        held = fn(body)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rows.append([name, f"{(after - before) / len(held):,.0f}"])
        del held
    return "Bytes held per record, fields included (tracemalloc):\n\n" + table(
        ["record", "bytes"], rows
    )


def ratelimit(sizes: Sizes) -> str:
    """Achieved rate vs configured, and convergence of the adaptive rate."""
    rows = []
    with simulator(latency_ms=0, days=3 * 365, labs_per_day=1) as srv:
        now = int(time.time())
        for target in sizes.rate_targets:
            n = int(target * 3) + 1
            # n windows once lodresults has widened both ends by SKEW_TOLERANCE.
            start = now - n * WEEK + 1 + 2 * SKEW_TOLERANCE

            async def run(target: float = target, start: int = start) -> float:
                t0 = time.perf_counter()
                await _lod_count(srv.base_url, srv.api_key, start, now, 8, rate=target)
                return time.perf_counter() - t0

            _, elapsed = repeat(run, sizes.repeats)
            achieved = (n - 1) / elapsed
            rows.append([f"{target:g}", str(n), f"{achieved:.2f}", f"{achieved / target:.3f}"])
    conv = asyncio.run(_convergence(sizes))
    return (
        "Client pacing against an unlimited server (8 in flight, requests of a few "
        "records): achieved = (requests - 1) / elapsed.\n\n"
        + table(["configured req/s", "requests", "achieved req/s", "ratio"], rows)
        + "\n\n"
        + conv
    )


async def _convergence(sizes: Sizes) -> str:
    allowance = sizes.convergence_server_rate
    with simulator(latency_ms=0, days=sizes.convergence_days + 30, labs_per_day=1,
                   rate_limit=allowance) as srv:  # fmt: skip
        now = int(time.time())
        start = now - sizes.convergence_days * DAY
        throttled: list[float] = []
        done: list[float] = []
        samples: list[tuple[float, float | None]] = []
        t0 = time.perf_counter()

        def hook(e: Any) -> None:
            if isinstance(e, Throttled):
                throttled.append(time.perf_counter() - t0)
            elif isinstance(e, WindowCompleted):
                done.append(time.perf_counter() - t0)

        async with LodClient(
            srv.api_key,
            base_url=srv.base_url,
            max_concurrency=8,
            rate_limit=10 * allowance,
            max_retries=50,
            on_event=hook,
        ) as c:

            async def sample() -> None:
                while True:
                    samples.append((time.perf_counter() - t0, c.current_rate))
                    await asyncio.sleep(0.1)

            sampler = asyncio.create_task(sample())
            try:
                async with aclosing(c.iter_results(start, now)) as it:
                    async for _ in it:
                        pass
            finally:
                sampler.cancel()
        total = time.perf_counter() - t0
    over = [t for t, r in samples if r is not None and r > 1.5 * allowance]
    converged = over[-1] if over else 0.0
    half = [t for t in done if t > total / 2]
    steady = len(half) / (total / 2) if half else 0.0
    late_429 = sum(1 for t in throttled if t > converged)
    return (
        f"Adaptive rate against a server allowing {allowance:g} req/s (token bucket, burst 1, "
        f"429 with Retry-After), client configured at {10 * allowance:g} req/s, 8 in flight, "
        f"{len(done)} windows:\n\n"
        + table(
            [
                "convergence time",
                "429s in all",
                "429s after convergence",
                "windows/s (2nd half)",
                "total time",
            ],
            [
                [
                    f"{converged:.1f} s",
                    str(len(throttled)),
                    str(late_429),
                    f"{steady:.2f}",
                    f"{total:.1f} s",
                ]
            ],
        )
        + "\n\nConvergence time: the last moment the client's rate was above 1.5x the "
        "allowance. Windows/s counts completed windows (each one request when not refused)."
    )


def backfill(sizes: Sizes) -> str:
    """Records per second into SQLite through the CLI."""
    rows = []
    with simulator(latency_ms=0, days=sizes.backfill_days + 10,
                   labs_per_day=sizes.backfill_labs_per_day) as srv:  # fmt: skip
        now = int(time.time())
        values = []
        records = 0
        for _ in range(sizes.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                db = Path(tmp) / "b.db"
                env = {**os.environ, "LOD_API_KEY": srv.api_key, "LOD_BASE_URL": srv.base_url}
                t0 = time.perf_counter()
                proc = subprocess.run(
                    [sys.executable, "-m", "lodresults", "backfill", "--since",
                     str(now - sizes.backfill_days * DAY), "--until", str(now), "--db", str(db),
                     "--concurrency", "4", "--rate-limit", "1000"],
                    env=env, capture_output=True, text=True, check=True,
                )  # fmt: skip
                values.append(time.perf_counter() - t0)
                with closing(sqlite3.connect(db)) as conn:
                    records = conn.execute("SELECT COUNT(*) FROM lab_results").fetchone()[0]
                assert "backfill:" in proc.stderr
        t = Timing(tuple(values))
        rows.append([f"{sizes.backfill_days} days", f"{records:,}", t.fmt(),
                     f"{records / t.median:,.0f}"])  # fmt: skip
    return (
        "`lodresults backfill` in a subprocess (start-up included) against the simulator "
        "with no latency, concurrency 4, into a fresh SQLite file.\n\n"
        + table(["range", "records", "wall time", "records/s"], rows)
    )
