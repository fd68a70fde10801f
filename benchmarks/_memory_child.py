"""Child process for the memory benchmark: stream a range, report peak RSS as JSON."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import resource
import sys
import time
from contextlib import aclosing

from lodresults import LodClient, WindowCompleted


def _now_rss_mb() -> float:
    """Resident set size of this process now, in MB (0 where /proc is missing)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def _rss_mb() -> float:
    """Peak RSS of this process in MB (VmHWM: ru_maxrss would carry the parent's over exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _DedupSize(logging.Handler):
    """Reads the largest dedup state from the per-window debug lines."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.largest = 0

    def emit(self, record: logging.LogRecord) -> None:
        m = re.search(r"dedup holds (\d+) ids", record.getMessage())
        if m:
            self.largest = max(self.largest, int(m.group(1)))


async def main(base_url: str, key: str, years: int) -> dict[str, object]:
    dedup = _DedupSize()
    logger = logging.getLogger("lodresults")
    logger.addHandler(dedup)
    logger.setLevel(logging.DEBUG)
    baseline = _rss_mb()
    now = int(time.time())
    records = 0
    windows = 0
    # (windows fetched, records streamed, RSS in MB) after each window: the memory plot.
    trace: list[tuple[int, int, float]] = []

    def hook(e: object) -> None:
        nonlocal windows
        if isinstance(e, WindowCompleted):
            windows += 1
            trace.append((windows, records, round(_now_rss_mb(), 2)))

    client = LodClient(key, base_url=base_url, max_concurrency=4, rate_limit=None, on_event=hook)
    async with client, aclosing(client.iter_results(now - years * 365 * 86400, now)) as it:
        async for _ in it:
            records += 1
    return {
        "records": records,
        "windows": windows,
        "baseline_mb": baseline,
        "peak_mb": _rss_mb(),
        "dedup_max": dedup.largest,
        "trace": trace,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))))
