"""
Peers that obey Retry-After: what a user writes when the server pushes back.

- ``sequential``: one window after another; a 429 waits its Retry-After and retries.
- ``gather``: ``asyncio.gather`` over all windows under a semaphore; each 429 waits its
  own Retry-After (no shared pause, no pacing).
- ``gather`` with ``rate=``: the same under a fixed pace (starts ``1 / rate`` apart), as a
  leaky-bucket limiter such as aiolimiter gives: it cannot slow down on 429.

Each gives up on a window after ``max_retries`` retries (raising ``GaveUp``). Retry-After
is capped at 60 s, as lodresults caps it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

WEEK = 7 * 86400
MAX_RETRY_AFTER = 60.0


class GaveUp(Exception):
    """A window was still refused after ``max_retries`` retries."""


def _windows(start: int, end: int) -> list[tuple[int, int]]:
    out = []
    s = start
    while True:
        e = min(s + WEEK, end)
        out.append((s, e))
        if e >= end:
            return out
        s = e


class _Pace:
    """Fixed-rate starts, first come first served (a leaky bucket)."""

    def __init__(self, rate: float | None) -> None:
        self.interval = 0.0 if rate is None else 1.0 / rate
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        loop = asyncio.get_running_loop()
        slot = max(loop.time(), self.next)
        self.next = slot + self.interval
        await asyncio.sleep(slot - loop.time())


async def _one(
    session: aiohttp.ClientSession, url: str, s: int, e: int, max_retries: int, pace: _Pace
) -> list[dict[str, Any]]:
    for attempt in range(max_retries + 1):
        await pace.wait()
        async with session.get(url, params={"start": s, "end": e}) as r:
            body = await r.read()
            retry_after = r.headers.get("Retry-After")
        if r.status != 429:
            return orjson.loads(body)["Results"]  # type: ignore[no-any-return]
        if attempt < max_retries:
            await asyncio.sleep(min(float(retry_after or 1), MAX_RETRY_AFTER))
    raise GaveUp(f"window {s}..{e} refused {max_retries + 1} times")


async def sequential(
    base_url: str, api_key: str, start: int, end: int, max_retries: int
) -> list[dict[str, Any]]:
    """Every lab in [start, end], window after window, obeying Retry-After."""
    pace = _Pace(None)
    async with aiohttp.ClientSession(headers={"api_key": api_key}) as session:
        pages = [
            await _one(session, f"{base_url}/Results", s, e, max_retries, pace)
            for s, e in _windows(start, end)
        ]
    return [r for page in pages for r in page]


async def gather(
    base_url: str,
    api_key: str,
    start: int,
    end: int,
    concurrency: int,
    max_retries: int,
    rate: float | None = None,
) -> list[dict[str, Any]]:
    """Every lab in [start, end], all windows at once under a semaphore (and a fixed pace)."""
    sem = asyncio.Semaphore(concurrency)
    pace = _Pace(rate)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers={"api_key": api_key}, connector=connector) as session:

        async def one(s: int, e: int) -> list[dict[str, Any]]:
            async with sem:
                return await _one(session, f"{base_url}/Results", s, e, max_retries, pace)

        pages = await asyncio.gather(*(one(s, e) for s, e in _windows(start, end)))
    return [r for page in pages for r in page]
