"""
Rate adaptation against servers that push back (``benchmarks._pushback``), side by side
with peers that obey Retry-After (``benchmarks.peers.obeying``). Each returns Markdown.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.request
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any

import attrs

from benchmarks._harness import Server, pushback, table
from benchmarks._results import KEPT
from benchmarks.peers import obeying
from lodresults import LodClient, LodError
from lodresults._windows.dedup import SKEW_TOLERANCE

DAY = 86400
WEEK = 7 * DAY
CONCURRENCY = 4  # lodresults' default max_concurrency, and the peers'


@attrs.frozen
class Run:
    """One client against one fresh server: wall time, outcome, what the server saw."""

    seconds: float
    error: str | None
    arrivals: list[tuple[float, int]]

    def accepted(self, since: float = 0.0, until: float = math.inf) -> int:
        return sum(1 for t, s in self.arrivals if s == 200 and since <= t < until)

    def refused(self, since: float = 0.0, until: float = math.inf) -> int:
        return sum(1 for t, s in self.arrivals if s == 429 and since <= t < until)

    def per_second(self, since: float, until: float) -> float:
        return sum(1 for t, _ in self.arrivals if since <= t < until) / (until - since)


Client = Callable[[Server, int, int], Awaitable[Any]]


def _get(srv: Server, path: str) -> bytes:
    with urllib.request.urlopen(srv.base_url.replace("/api/v3", path)) as r:  # loopback
        return r.read()  # type: ignore[no-any-return]


def _measure(srv: Server, client: Client, windows: int) -> Run:
    """Run ``client`` over ``windows`` windows against ``srv`` afresh; read its log."""
    _get(srv, "/reset")
    end = int(time.time())
    # lodresults asks SKEW_TOLERANCE beyond both ends of a range (README, "The range's own
    # two ends"): two days shorter, it sends ``windows`` requests, as the peers do.
    start = end - windows * WEEK + 2 * SKEW_TOLERANCE
    t0 = time.perf_counter()
    error = None
    try:
        asyncio.run(client(srv, start, end))  # type: ignore[arg-type]
    except (LodError, obeying.GaveUp) as exc:
        error = type(exc).__name__
    seconds = time.perf_counter() - t0
    arrivals = [(float(t), int(s)) for t, s in json.loads(_get(srv, "/stats"))["arrivals"]]
    return Run(seconds, error, arrivals)


def lodresults_client(rate: float, max_retries: int, deadline: float | None = None) -> Client:
    """lodresults ``iter_results`` with its defaults but ``rate_limit``, retries, deadline."""

    async def run(srv: Server, start: int, end: int) -> None:
        client = LodClient(
            srv.api_key, base_url=srv.base_url, rate_limit=rate, max_retries=max_retries,
            max_concurrency=CONCURRENCY,
        )  # fmt: skip
        async with client, aclosing(client.iter_results(start, end, deadline=deadline)) as it:
            async for _ in it:
                pass

    return run


def sequential_peer(max_retries: int) -> Client:
    """The hand-written loop that obeys Retry-After."""
    return lambda srv, a, b: obeying.sequential(srv.base_url, srv.api_key, a, b, max_retries)


def gather_peer(max_retries: int, rate: float | None = None) -> Client:
    """gather + semaphore obeying Retry-After, unpaced or at a fixed pace."""
    return lambda srv, a, b: obeying.gather(
        srv.base_url, srv.api_key, a, b, CONCURRENCY, max_retries, rate
    )


def _fmt(run: Run) -> str:
    return f"{run.seconds:.1f} s" + (f" ({run.error})" if run.error else "")


def storm(seconds: float, windows: int, rate: float) -> str:
    """429 to everything for ``seconds``, then everything accepted."""
    options = {"mode": "storm", "seconds": seconds}
    retries = 30
    clients = [
        (f"lodresults, rate_limit={rate:g}", lodresults_client(rate, retries)),
        ("peer: sequential, obeys Retry-After", sequential_peer(retries)),
        ("peer: gather, obeys Retry-After", gather_peer(retries)),
        (f"peer: gather at a fixed {rate:g} req/s", gather_peer(retries, rate)),
    ]
    ideal = seconds + windows / rate
    rows = []
    with pushback(**options) as srv:
        runs = [(name, _measure(srv, client, windows)) for name, client in clients]
    KEPT.keep(
        "storm",
        {"storm_s": seconds, "windows": windows, "rate": rate,
         "clients": [{"name": name, "seconds": run.seconds, "error": run.error,
                      "arrivals": [[round(t, 4), s] for t, s in run.arrivals]}
                     for name, run in runs]},
    )  # fmt: skip
    for name, run in runs:
        last = max(t for t, _ in run.arrivals)
        bins = [
            f"{run.per_second(a, a + 2):.1f}"
            for a in (seconds + 2 * i for i in range(5))
            if a + 2 <= last + 1e-9
        ]
        rows.append([name, _fmt(run), str(run.refused()), " / ".join(bins) or "(done within 2 s)"])
    return (
        f"429 (Retry-After 1) to every request during the first {seconds:g} s, then all "
        f"accepted; {windows} windows, {CONCURRENCY} in flight, {retries} retries. Ideal "
        f"for a client paced at {rate:g} req/s: {ideal:.1f} s. Requests per second in each "
        "2 s after the storm, as the server saw them (full 2 s spans only).\n\n"
        + table(["client", "time to finish", "429s", "req/s per 2 s after the storm"], rows)
    )


def sporadic(p: float, windows: int, rate: float) -> str:
    """A share ``p`` of answers refused at random (seeded)."""
    options = {"mode": "sporadic", "p": p, "seed": 12}
    retries = 5
    clients = [
        (f"lodresults, rate_limit={rate:g}", lodresults_client(rate, retries), rate),
        (f"peer: gather at a fixed {rate:g} req/s", gather_peer(retries, rate), rate),
        ("peer: gather, obeys Retry-After (unpaced)", gather_peer(retries), None),
    ]
    rows = []
    with pushback(**options) as srv:
        runs = [(name, _measure(srv, client, windows), paced) for name, client, paced in clients]
    for name, run, paced in runs:
        throughput = windows / run.seconds
        versus = f"{throughput / paced:.2f}" if paced else "—"
        rows.append([name, _fmt(run), str(run.refused()), f"{throughput:.2f}", versus])
    return (
        f"{p:.0%} of answers 429 (Retry-After 1) at random; {windows} windows, "
        f"{CONCURRENCY} in flight, {retries} retries (the default). Throughput = windows "
        f"/ time; ideal for a client paced at {rate:g} req/s: {windows / rate:.1f} s.\n\n"
        + table(
            ["client", "time", "429s", "windows/s", "vs configured"],
            rows,
        )
    )


def bucket(allowance: float, seconds: float, rate: float) -> str:
    """A token bucket (burst 1) allowing less than the client's configured rate."""
    options = {"mode": "bucket", "allowance": allowance}
    windows = math.ceil(seconds * allowance)
    retries = 30
    clients = [
        (f"lodresults, rate_limit={rate:g}", lodresults_client(rate, retries)),
        (f"peer: gather at a fixed {rate:g} req/s", gather_peer(retries, rate)),
    ]
    rows = []
    with pushback(**options) as srv:
        runs = [(name, _measure(srv, client, windows)) for name, client in clients]
    for name, run in runs:
        half = run.seconds / 2
        settled = run.accepted(half, run.seconds) / (run.seconds - half)
        late = run.accepted(half) + run.refused(half)
        rows.append(
            [
                name,
                _fmt(run),
                f"{settled:.2f} ({settled / allowance:.2f})",
                f"{run.refused() / len(run.arrivals):.1%}",
                f"{run.refused(half) / max(1, late):.1%}",
            ]
        )
    return (
        f"A token bucket allowing {allowance:g} req/s (burst 1; 429 with Retry-After), "
        f"clients configured at {rate:g} req/s, {windows} windows, {CONCURRENCY} in flight. "
        "Settled rate: requests accepted per second over the second half of the run (and "
        "its ratio to the allowance); share of requests refused with 429.\n\n"
        + table(
            ["client", "time", "settled req/s (/ allowance)", "429s, all", "429s, 2nd half"],
            rows,
        )
    )


def permanent(windows: tuple[int, ...], retry_after: float, max_retries: int) -> str:
    """Every request refused: how long until the call fails."""
    options = {"mode": "permanent", "retry_after": retry_after}
    rows = []
    first: float | None = None
    # A 429 with Retry-After is pacing, not a failure: lodresults waits it out up to the
    # deadline (10 minutes without one), here the time the peers take to give up.
    deadline = retry_after * max_retries
    with pushback(**options) as srv:
        for n in windows:
            ours = _measure(srv, lodresults_client(5.0, max_retries, deadline), n)
            first = first or ours.seconds
            seq = _measure(srv, sequential_peer(max_retries), n)
            gat = _measure(srv, gather_peer(max_retries), n)
            rows.append(
                [
                    str(n),
                    _fmt(ours),
                    f"{ours.seconds / first:.2f}",
                    str(len(ours.arrivals)),
                    _fmt(seq),
                    _fmt(gat),
                ]
            )
    return (
        f"Every request answered 429 with Retry-After {retry_after:g}; max_retries="
        f"{max_retries}, {CONCURRENCY} in flight, lodresults at its default rate_limit=5 "
        f"with deadline={deadline:g} s (it waits out a 429 with Retry-After up to the "
        "deadline, 10 minutes without one; the peers count it as a failure). Time until "
        "the call raised.\n\n"
        + table(
            [
                "windows",
                "lodresults",
                "vs 1 window",
                "requests sent",
                "peer: sequential",
                "peer: gather",
            ],
            rows,
        )
    )


def run(sizes: Any) -> str:
    """Every scenario, at the sizes of ``benchmarks.suite.FULL`` or ``QUICK``."""
    retry_after = sizes.permanent_retry_after
    parts = [
        ("A storm, then recovery", storm(sizes.storm_seconds, sizes.storm_windows, 10.0)),
        ("Sporadic 429s", sporadic(0.05, sizes.sporadic_windows, 5.0)),
        ("A token bucket below the configured rate", bucket(3.0, sizes.bucket_seconds, 5.0)),
        ("A permanent 429", permanent(sizes.permanent_windows, retry_after, 2)),
    ]
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in parts)
