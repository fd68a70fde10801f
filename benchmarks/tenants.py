"""
Tenants: ``lodresults backfill --tenants`` with one key, then with two, each server
allowing 5 requests/s per key. The limiters are per key, so two tenants take about the
time of one.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack, closing
from pathlib import Path

from benchmarks._harness import Timing, simulator, table
from benchmarks.suite import DAY, Sizes

RATE = 5.0


def run(sizes: Sizes) -> str:
    """Wall time of one tenant against two, each at its own server's 5 requests/s."""
    days = sizes.backfill_days
    rows = []
    with ExitStack() as stack:
        servers = [
            stack.enter_context(
                simulator(
                    seed=seed, latency_ms=20, days=days + 10, labs_per_day=40, rate_limit=RATE
                )
            )
            for seed in (1, 2)
        ]
        now = int(time.time())
        single: Timing | None = None
        for count in (1, 2):
            chosen = servers[:count]
            values = []
            records = 0
            for _ in range(sizes.repeats):
                with tempfile.TemporaryDirectory() as tmp:
                    root = Path(tmp)
                    env = dict(os.environ)
                    lines = []
                    for i, srv in enumerate(chosen):
                        env[f"KEY_{i}"] = srv.api_key
                        lines.append(
                            f'[tenants.t{i}]\napi_key_env = "KEY_{i}"\n'
                            f'base_url = "{srv.base_url}"\n'
                        )
                    (root / "tenants.toml").write_text("\n".join(lines))
                    db = root / "t.db"
                    t0 = time.perf_counter()
                    subprocess.run(
                        [sys.executable, "-m", "lodresults", "backfill", "--since",
                         str(now - days * DAY), "--until", str(now), "--db", str(db),
                         "--tenants", str(root / "tenants.toml"),
                         "--rate-limit", str(RATE), "--concurrency", "4"],
                        env=env, capture_output=True, text=True, check=True,
                    )  # fmt: skip
                    values.append(time.perf_counter() - t0)
                    with closing(sqlite3.connect(db)) as conn:
                        records = conn.execute("SELECT COUNT(*) FROM lab_results").fetchone()[0]
            t = Timing(tuple(values))
            single = single or t
            rows.append([
                f"{count} tenant{'s' if count > 1 else ''}", f"{records:,}", t.fmt(),
                f"{t.median / single.median:.2f}",
            ])  # fmt: skip
    return (
        f"`lodresults backfill --tenants FILE` over {days} days in a subprocess (start-up "
        f"included); each tenant's simulator (its own process, 20 ms latency) allows "
        f"{RATE:g} requests/s per key, and the client paces each key at {RATE:g}/s. "
        f"Median of {sizes.repeats}.\n\n"
        + table(["tenants", "records", "wall time", "vs one tenant"], rows)
    )
