"""
Beyond SQLite: a one-year load into DuckDB through dlt next to ``lodresults backfill``.

    python -m benchmarks.warehouse            # 365 days x 400 labs/day; writes warehouse.md
    python -m benchmarks.warehouse --quick    # tiny sizes: checks that everything runs

Needs the ``dlt`` and ``parquet`` extras (``pip install -e '.[test]'`` has both). Every
figure comes from one run against one simulator process with no latency; each job runs
in its own subprocess, start-up included, so the rows compare like with like.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from importlib.metadata import version
from pathlib import Path

from benchmarks._harness import machine, simulator, table

DAY = 86400

_DLT_JOB = """
import sys
import dlt
from lodresults import WindowCompleted
from lodresults.dlt import lab_results

windows = []

def count(event):
    if isinstance(event, WindowCompleted):
        windows.append(event)

since, until = int(sys.argv[1]), int(sys.argv[2])
pipeline = dlt.pipeline("bench", destination="duckdb", dataset_name="lod")
pipeline.extract(lab_results(since, until, max_concurrency=4, rate_limit=1000.0, on_event=count))
print("windows:", len(windows))
with open("/proc/self/status") as status:
    print(next(line for line in status if line.startswith("VmHWM")), flush=True)
pipeline.normalize()
pipeline.load().raise_on_failed_jobs()
"""


def _timed(args: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """
    Run ``args``; its wall seconds, peak RSS in MiB (from ``wait4``, this child only) and
    what it printed.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(args, env=env, cwd=cwd, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"{args[:4]} failed: {err.read()[-2000:].decode()}")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read().decode()


def _windows(printed: str) -> str:
    """How many windows the dlt job fetched, as it printed."""
    n = int(printed.split("windows:", 1)[1].split()[0])
    return f"{n} window{'s' if n != 1 else ''}"


def _extract_peak(printed: str) -> str:
    """The peak RSS the dlt job printed after its extract step (VmHWM, kB), in MiB."""
    kib = int(printed.split("VmHWM:", 1)[1].split()[0])
    return f"{kib / 1024:.0f} MiB"


def _count_duckdb(path: Path) -> int:
    import duckdb

    with closing(duckdb.connect(str(path), read_only=True)) as con:
        row = con.execute("SELECT COUNT(*) FROM lod.lab_results").fetchone()
    assert row is not None
    return int(row[0])


def _count_sqlite(path: Path) -> int:
    with closing(sqlite3.connect(path)) as con:
        return int(con.execute("SELECT COUNT(*) FROM lab_results").fetchone()[0])


def run(days: int, labs_per_day: float) -> str:
    """Measure each job once; return a Markdown section."""
    rows: list[list[str]] = []
    with simulator(latency_ms=0, days=days + 10, labs_per_day=labs_per_day) as srv:
        now = int(time.time())
        since = now - days * DAY
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = _env(srv.api_key, srv.base_url, root)
            db = root / "b.db"
            backfill = [
                sys.executable, "-m", "lodresults", "backfill", "--since", str(since),
                "--until", str(now), "--db", str(db), "--concurrency", "4",
                "--rate-limit", "1000",
            ]  # fmt: skip
            t, rss, _ = _timed(backfill, env, root)
            n = _count_sqlite(db)
            rows.append(_row("`lodresults backfill` into SQLite", n, t, rss))
            dlt_job = [sys.executable, "-c", _DLT_JOB, str(since), str(now)]
            t, rss, printed = _timed(dlt_job, env, root)
            n = _count_duckdb(root / "bench.duckdb")
            first = f"dlt pipeline into DuckDB (`lab_results`): {_windows(printed)}"
            rows.append(_row(first, n, t, rss))
            t, rss, printed = _timed(dlt_job, env, root)
            again = f"the same pipeline run again: {_windows(printed)} (the unsettled tail)"
            rows.append(_row(again, None, t, rss))
            out = root / "b.parquet"
            export = [sys.executable, "-m", "lodresults", "export", "--db", str(db),
                      "--format", "parquet", "--out", str(out)]  # fmt: skip
            t, rss, _ = _timed(export, env, root)
            rows.append(_row("`lodresults export --format parquet` from SQLite", n, t, rss))
    return (
        f"{days} days at {labs_per_day:g} labs/day, one run, each job a subprocess "
        "(start-up included) against `lodresults simulate` with no latency; concurrency 4, "
        "rate limit 1000/s.\n\n"
        + table(["job", "records", "wall time", "records/s", "peak RSS"], rows)
    )


def memory(years: tuple[int, ...], labs_per_day: float) -> str:
    """Peak RSS of the dlt pipeline over ranges of different lengths, same density."""
    rows: list[list[str]] = []
    for y in years:
        days = 365 * y
        with simulator(latency_ms=0, days=days + 10, labs_per_day=labs_per_day) as srv:
            now = int(time.time())
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                job = [sys.executable, "-c", _DLT_JOB, str(now - days * DAY), str(now)]
                t, rss, printed = _timed(job, _env(srv.api_key, srv.base_url, root), root)
                n = _count_duckdb(root / "bench.duckdb")
                label = f"{y} year{'s' if y > 1 else ''}"
                rows.append([*_row(label, n, t, rss), _extract_peak(printed)])
    return (
        f"The dlt pipeline into DuckDB at {labs_per_day:g} labs/day over ranges of different "
        "lengths. The peak while extracting (fetching and writing dlt's files) stays flat: "
        "records stream one window at a time. The whole run's peak includes DuckDB's merge "
        "in the load step, which grows with the rows loaded (DuckDB spills to disk past "
        "its memory limit).\n\n"
        + table(["range", "records", "wall time", "records/s", "peak RSS", "peak extracting"], rows)
    )


def parquet_memory(db_rows: tuple[int, ...], labs_per_day: float) -> str:
    """Peak RSS of the Parquet export as the table grows (rows copied with new ids)."""
    rows: list[list[str]] = []
    with simulator(latency_ms=0, days=40, labs_per_day=labs_per_day) as srv:
        now = int(time.time())
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            env = _env(srv.api_key, srv.base_url, root)
            db = root / "b.db"
            backfill = [
                sys.executable, "-m", "lodresults", "backfill", "--since",
                str(now - 30 * DAY), "--until", str(now), "--db", str(db),
                "--rate-limit", "1000",
            ]  # fmt: skip
            _timed(backfill, env, root)
            for target in db_rows:
                _grow(db, target)
                out = root / "b.parquet"
                export = [sys.executable, "-m", "lodresults", "export", "--db", str(db),
                          "--format", "parquet", "--out", str(out)]  # fmt: skip
                t, rss, _ = _timed(export, env, root)
                rows.append(_row("`export --format parquet`", _count_sqlite(db), t, rss))
    return (
        "The Parquet export as the table grows (30 days of simulated labs, copied under "
        "new ids up to the row count): memory holds one row group, whatever the total.\n\n"
        + table(["job", "rows", "wall time", "rows/s", "peak RSS"], rows)
    )


def _grow(db: Path, target: int) -> None:
    """Copy rows under new ids until ``db`` holds ``target`` rows (or more)."""
    with closing(sqlite3.connect(db)) as con:
        while (n := _count_sqlite(db)) < target:
            top = con.execute("SELECT MAX(lab_instance_id) FROM lab_results").fetchone()[0]
            cols = [r[1] for r in con.execute("PRAGMA table_info(lab_results)")]
            rest = ", ".join(f'"{c}"' for c in cols if c != "lab_instance_id")
            con.execute(
                f"INSERT INTO lab_results (lab_instance_id, {rest}) "  # the table's own columns
                f"SELECT lab_instance_id + ?, {rest} FROM lab_results LIMIT ?",
                (top, target - n),
            )
            con.commit()


def _env(key: str, base_url: str, root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "LOD_API_KEY": key,
        "LOD_BASE_URL": base_url,
        "SOURCES__LODRESULTS__API_KEY": key,
        "SOURCES__LODRESULTS__BASE_URL": base_url,
        "RUNTIME__DLTHUB_TELEMETRY": "false",
        "DLT_DATA_DIR": str(root / "dlt-data"),
    }


def _row(job: str, records: int | None, seconds: float, rss: float) -> list[str]:
    if records is None:
        return [job, "", f"{seconds:.2f} s", "", f"{rss:.0f} MiB"]
    rate = records / seconds
    return [job, f"{records:,}", f"{seconds:.2f} s", f"{rate:,.0f}", f"{rss:.0f} MiB"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.warehouse")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("warehouse.md"))
    args = parser.parse_args()
    days, per_day = (30, 50.0) if args.quick else (365, 400.0)
    years, sparse = ((1,), 20.0) if args.quick else ((1, 10), 40.0)
    sizes, dense = ((2_000, 4_000), 50.0) if args.quick else ((250_000, 1_000_000), 400.0)
    body = "\n\n".join([run(days, per_day), memory(years, sparse), parquet_memory(sizes, dense)])
    print(body)
    if not args.quick:
        title = "# Beyond SQLite: DuckDB through dlt, and Parquet\n\n"
        extras = ", ".join(f"{p} {version(p)}" for p in ("dlt", "duckdb", "pyarrow"))
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
        args.out.write_text(
            f"{title}Machine: {machine()}; {extras}. Load average at the end of the run "
            f"(1, 5, 15 min): {load} (other work shares the machine).\n\n{body}\n"
        )
        print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
