"""
SQLite storage for backfills: the ``lab_results`` table and per-window checkpoints.

Stdlib ``sqlite3`` on one dedicated thread (one connection, used by one thread, so the
event loop never blocks on disk and never shares a connection across threads). Each
completed window is written in one transaction together with its checkpoint, so a crash
at any instant leaves either the whole window (rows and checkpoint) or none of it.
aiosqlite would give the same thread hop; a single-worker executor is a few lines and
keeps the transaction boundaries explicit.

Knows no HTTP and no wire names: columns are the snake_case LabResult fields (decimals are
stored as the numbers they came as, by the wire module's one rule for that).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from lodresults._exceptions import LodError
from lodresults._models import CompletionStatus, LabResult
from lodresults._wire import decimal_of, number_of

__all__ = ["COLUMNS", "Store", "StoreError"]

T = TypeVar("T")

SCHEMA_VERSION: Final = 1
COLUMNS: Final = tuple(a.name for a in attrs.fields(LabResult))

_SQL_TYPES: Final = {
    "lab_instance_id": "INTEGER PRIMARY KEY",
    "lab_profile_id": "INTEGER NOT NULL",
    "start": "INTEGER NOT NULL",
    "end": "INTEGER",
    "last_activity": "INTEGER",
    "user_id": "TEXT",
    "class_id": "TEXT",
    "completion_status": "INTEGER NOT NULL",
    "total_run_time_seconds": "INTEGER NOT NULL",
    "task_complete_percent": "INTEGER NOT NULL",
    "is_exam": "INTEGER NOT NULL CHECK (is_exam IN (0, 1))",
    "exam_passed": "INTEGER CHECK (exam_passed IN (0, 1))",
    # NUMERIC keeps integers as INTEGER and decimals as REAL. Exact here: the API sends
    # JSON numbers, so each Decimal came from an int or a double in the first place.
    "exam_score": "NUMERIC",
    "exam_max_possible_score": "INTEGER",
    "exam_passing_score": "INTEGER",
    "ip_address": "TEXT",
    "country": "TEXT",
    "region": "TEXT",
    "city": "TEXT",
    "latitude": "NUMERIC",
    "longitude": "NUMERIC",
    "lab_host_id": "INTEGER",
    "datacenter_id": "INTEGER",
    "delivery_region_id": "INTEGER",
}
assert set(_SQL_TYPES) == set(COLUMNS)

_Q: Final = {c: f'"{c}"' for c in COLUMNS}

_SCHEMA: Final = f"""
CREATE TABLE IF NOT EXISTS lab_results (
    {", ".join(f"{_Q[c]} {_SQL_TYPES[c]}" for c in COLUMNS)},
    fetched_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ix_lab_results_start ON lab_results ("start");
CREATE INDEX IF NOT EXISTS ix_lab_results_user_id ON lab_results (user_id);
CREATE TABLE IF NOT EXISTS backfill_windows (
    "start" INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    records INTEGER NOT NULL,
    completed_at INTEGER NOT NULL,
    PRIMARY KEY ("start", "end")
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# The newest state wins, by fetch order: the copy written last replaces the row, whatever
# its last_activity or end say (callers write copies in the order they were received).
# The SQL below is built from the fixed column names above, never from input.
_UPSERT: Final = f"""
INSERT INTO lab_results ({", ".join(_Q[c] for c in COLUMNS)}, fetched_at)
VALUES ({", ".join("?" for _ in COLUMNS)}, ?)
ON CONFLICT (lab_instance_id) DO UPDATE SET
    {", ".join(f"{_Q[c]} = excluded.{_Q[c]}" for c in COLUMNS[1:])},
    fetched_at = excluded.fetched_at
"""  # noqa: S608


_SELECT_ALL: Final = (
    f"SELECT {', '.join(_Q[c] for c in COLUMNS)} FROM lab_results "  # noqa: S608
    'ORDER BY "start", lab_instance_id'
)


class StoreError(LodError):
    """The SQLite file cannot be used (corrupt, locked, not a database, wrong schema)."""


def _number(d: Decimal | None) -> int | float | None:
    return None if d is None else number_of(d)


def _epoch(d: datetime | None) -> int | None:
    return None if d is None else int(d.timestamp())


def _row(r: LabResult, now: int) -> tuple[Any, ...]:
    return (
        r.lab_instance_id,
        r.lab_profile_id,
        int(r.start.timestamp()),
        _epoch(r.end),
        _epoch(r.last_activity),
        r.user_id,
        r.class_id,
        int(r.completion_status),
        r.total_run_time_seconds,
        r.task_complete_percent,
        int(r.is_exam),
        None if r.exam_passed is None else int(r.exam_passed),
        _number(r.exam_score),
        r.exam_max_possible_score,
        r.exam_passing_score,
        r.ip_address,
        r.country,
        r.region,
        r.city,
        _number(r.latitude),
        _number(r.longitude),
        r.lab_host_id,
        r.datacenter_id,
        r.delivery_region_id,
        now,
    )


def _time(v: int | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, timezone.utc)


def _dec(v: float | int | None) -> Decimal | None:
    return None if v is None else decimal_of(v)


def record_from_row(row: Sequence[Any]) -> LabResult:
    """A ``lab_results`` row (columns in ``COLUMNS`` order) as a LabResult."""
    d = dict(zip(COLUMNS, row, strict=True))
    return LabResult(
        lab_instance_id=d["lab_instance_id"],
        lab_profile_id=d["lab_profile_id"],
        start=datetime.fromtimestamp(d["start"], timezone.utc),
        end=_time(d["end"]),
        last_activity=_time(d["last_activity"]),
        user_id=d["user_id"],
        class_id=d["class_id"],
        completion_status=CompletionStatus(d["completion_status"]),
        total_run_time_seconds=d["total_run_time_seconds"],
        task_complete_percent=d["task_complete_percent"],
        is_exam=bool(d["is_exam"]),
        exam_passed=None if d["exam_passed"] is None else bool(d["exam_passed"]),
        exam_score=_dec(d["exam_score"]),
        exam_max_possible_score=d["exam_max_possible_score"],
        exam_passing_score=d["exam_passing_score"],
        ip_address=d["ip_address"],
        country=d["country"],
        region=d["region"],
        city=d["city"],
        latitude=_dec(d["latitude"]),
        longitude=_dec(d["longitude"]),
        lab_host_id=d["lab_host_id"],
        datacenter_id=d["datacenter_id"],
        delivery_region_id=d["delivery_region_id"],
    )


class Store:
    """
    The backfill database. Open with ``await Store.open(path)``; close with ``close()``.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, pool: concurrent.futures.Executor):
        self.path = path
        self._conn = conn
        self._pool = pool

    @classmethod
    async def open(cls, path: str | Path) -> Store:
        """Open (creating if needed) and check the database; raises ``StoreError``."""
        p = Path(path)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lod-sqlite")
        loop = asyncio.get_running_loop()
        try:
            conn = await loop.run_in_executor(pool, cls._connect, p)
        except BaseException:
            pool.shutdown(wait=True)
            raise
        return cls(p, conn, pool)

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("BEGIN IMMEDIATE")
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(SCHEMA_VERSION),),
                )
            elif row[0] != str(SCHEMA_VERSION):
                raise StoreError(
                    f"{path} has schema version {row[0]}; this lodresults writes "
                    f"version {SCHEMA_VERSION}"
                )
            conn.execute("COMMIT")
            check = conn.execute("PRAGMA quick_check").fetchone()
            if check is None or check[0] != "ok":
                raise StoreError(f"{path} failed an integrity check: {check}")
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(_describe(path, exc)) from None
        except StoreError:
            conn.close()
            raise
        return conn

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # shield: if the caller is cancelled mid-write, the transaction still completes
        # (or rolls back) on its thread before anything else touches the connection.
        future = loop.run_in_executor(self._pool, self._guard, fn, *args)
        return await asyncio.shield(future)

    def _guard(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise StoreError(_describe(self.path, exc)) from None

    # --- writes -------------------------------------------------------------------------

    async def write_window(self, start: int, end: int, records: Iterable[LabResult]) -> int:
        """Upsert ``records`` and checkpoint ``[start, end]`` in one transaction."""
        return await self.apply(records, checkpoint=(start, end))

    async def apply(
        self,
        records: Iterable[LabResult],
        *,
        checkpoint: tuple[int, int] | None = None,
        fetched_at: float | None = None,
    ) -> int:
        """
        Upsert ``records`` in their order (a later copy of a lab replaces an earlier one)
        and, if given, checkpoint ``checkpoint = (start, end)``, in one transaction.

        ``fetched_at``: when the copies were requested (epoch seconds; now by default),
        kept in each row's ``fetched_at``.
        """
        stamp = int(time.time() if fetched_at is None else fetched_at)
        rows = [_row(r, stamp) for r in records]
        return await self._run(self._apply, rows, checkpoint)

    def _apply(self, rows: list[tuple[Any, ...]], checkpoint: tuple[int, int] | None) -> int:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.executemany(_UPSERT, rows)
        if checkpoint is not None:
            c.execute(
                'INSERT OR REPLACE INTO backfill_windows ("start", "end", records, completed_at) '
                "VALUES (?, ?, ?, ?)",
                (*checkpoint, len(rows), int(time.time())),
            )
        c.execute("COMMIT")
        return len(rows)

    async def reset(self) -> None:
        """Delete every row, checkpoint and piece of state but the schema version."""
        await self._run(self._reset)

    def _reset(self) -> None:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        c.execute("DELETE FROM lab_results")
        c.execute("DELETE FROM backfill_windows")
        c.execute("DELETE FROM meta WHERE key != 'schema_version'")
        c.execute("COMMIT")

    async def upsert(self, records: Iterable[LabResult]) -> int:
        """Upsert ``records`` (no checkpoint), in one transaction."""
        return await self.apply(records)

    async def set_meta(self, key: str, value: str) -> None:
        """Store a small piece of state (e.g. the last successful poll)."""
        await self._run(self._set_meta, key, value)

    def _set_meta(self, key: str, value: str) -> None:
        self._conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    # --- reads --------------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        """A value stored with ``set_meta``, or None."""
        return await self._run(self._get_meta, key)

    def _get_meta(self, key: str) -> str | None:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    async def completed_windows(self, start: int, end: int) -> list[tuple[int, int]]:
        """Checkpointed windows overlapping ``[start, end]``."""
        return await self._run(self._completed, start, end)

    def _completed(self, start: int, end: int) -> list[tuple[int, int]]:
        rows = self._conn.execute(
            'SELECT "start", "end" FROM backfill_windows WHERE "end" >= ? AND "start" <= ? '
            'ORDER BY "start"',
            (start, end),
        ).fetchall()
        return [(int(a), int(b)) for a, b in rows]

    async def count(self) -> int:
        """Rows in ``lab_results``."""
        return await self._run(self._count)

    def _count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM lab_results").fetchone()[0])

    async def newest_change(self) -> int | None:
        """The latest start, end or last activity in the table (epoch), or None if empty."""
        return await self._run(self._newest_change)

    def _newest_change(self) -> int | None:
        row = self._conn.execute(
            'SELECT MAX(MAX("start", COALESCE("end", 0), COALESCE(last_activity, 0))) '
            "FROM lab_results"
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    async def status_counts(self) -> dict[int, int]:
        """Rows per completion status code."""
        return await self._run(self._status_counts)

    def _status_counts(self) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT completion_status, COUNT(*) FROM lab_results GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return {int(a): int(b) for a, b in rows}

    def iter_records_sync(self, batch: int = 1000) -> Iterator[LabResult]:
        """All records in start order, read in batches (call from a worker thread)."""
        cur = self._conn.execute(_SELECT_ALL)
        while rows := cur.fetchmany(batch):
            for row in rows:
                yield record_from_row(row)

    async def run_sync(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(self)`` on the database thread (for streaming exports)."""
        return await self._run(fn, self)

    async def close(self) -> None:
        """Wait for pending writes, then close the connection."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._conn.close)
        self._pool.shutdown(wait=True)


def _describe(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database {path} is locked by another process ({text}); stop it and retry"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return f"database {path} is not a usable SQLite file ({text}); restore or remove it"
    return f"database {path}: {text}"
