"""
SQLite storage for backfills: the ``lab_results`` table and per-window checkpoints.

Stdlib ``sqlite3`` on one dedicated thread (one connection, used by one thread, so the
event loop never blocks on disk and never shares a connection across threads). Each
completed window is written in one transaction together with its checkpoint, so a crash
at any instant leaves either the whole window (rows and checkpoint) or none of it.
aiosqlite would give the same thread hop; a single-worker executor is a few lines and
keeps the transaction boundaries explicit.

Knows no HTTP and no wire names: columns are the snake_case LabResult fields. Decimals are
stored as TEXT, the Decimal's exact spelling (``48.0`` stays ``48.0``, ``-0.0`` stays
``-0.0``; a NUMERIC column would respell both).

The schema version is the ``meta`` row ``schema_version``. Opening for writing creates a
new database, migrates an older lodresults database in one transaction, and refuses a
newer one or a file that is not a lodresults database. ``readonly=True`` (export) opens
the file with ``mode=ro``: it never creates tables, never switches the journal mode and
never writes a byte; it reads any version up to the current one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from lodresults._exceptions import LodError
from lodresults._models import CompletionStatus, LabResult, field_types
from lodresults._wire import decimal_of

__all__ = ["CHUNK_ROWS", "COLUMNS", "Store", "StoreError"]

T = TypeVar("T")

logger = logging.getLogger("lodresults.store")

#: The version of the schema this lodresults writes (``meta.schema_version``).
#: 1: decimals in NUMERIC columns. 2: decimals as TEXT (their exact spelling).
SCHEMA_VERSION: Final = 2
#: Rows per job when reading the whole table (``for_each_chunk``): the most a cancelled
#: export still processes.
CHUNK_ROWS: Final = 2000
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
    # TEXT keeps the Decimal's exact spelling (NUMERIC would store 48.0 as 48 and -0.0 as 0).
    "exam_score": "TEXT",
    "exam_max_possible_score": "INTEGER",
    "exam_passing_score": "INTEGER",
    "ip_address": "TEXT",
    "country": "TEXT",
    "region": "TEXT",
    "city": "TEXT",
    "latitude": "TEXT",
    "longitude": "TEXT",
    "lab_host_id": "INTEGER",
    "datacenter_id": "INTEGER",
    "delivery_region_id": "INTEGER",
}
assert set(_SQL_TYPES) == set(COLUMNS)
_DECIMALS: Final = tuple(name for name, (base, _) in field_types().items() if base is Decimal)

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


def _text(d: Decimal | None) -> str | None:
    return None if d is None else str(d)


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
        _text(r.exam_score),
        r.exam_max_possible_score,
        r.exam_passing_score,
        r.ip_address,
        r.country,
        r.region,
        r.city,
        _text(r.latitude),
        _text(r.longitude),
        r.lab_host_id,
        r.datacenter_id,
        r.delivery_region_id,
        now,
    )


def _time(v: int | None) -> datetime | None:
    return None if v is None else datetime.fromtimestamp(v, timezone.utc)


def _dec(v: str | float | int | None) -> Decimal | None:
    # TEXT since schema version 2; int or float in a version 1 file opened read-only.
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


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def _schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
    """
    The lodresults schema version of ``conn``'s database, or None if it holds no table.

    Raises StoreError for a file that is not a lodresults database, or whose version
    is unreadable or newer than this lodresults knows.
    """
    tables = _tables(conn)
    if not tables:
        return None
    row = None
    if {"meta", "lab_results"} <= tables:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:
        names = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(
            f"{path} is not a lodresults database (it holds other tables: {names}); "
            "pass another --db"
        )
    text = str(row[0])
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise StoreError(f"database {path}: schema version {text[:40]!r} is not a version number")
    version = int(text)
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"database {path} has schema version {version}, newer than this lodresults "
            f"(version {SCHEMA_VERSION}); upgrade lodresults"
        )
    return version


def _connect(path: Path) -> sqlite3.Connection:
    """Open for writing: create, or check and migrate, the schema."""
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        # Identify the file before changing anything in it (journal mode included).
        _schema_version(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        version = _schema_version(conn, path)  # again, now that no one else can write
        if version is not None and version < SCHEMA_VERSION:
            _migrate(conn, version)
        for stmt in filter(str.strip, _SCHEMA.split(";")):
            conn.execute(stmt)
        if version != SCHEMA_VERSION:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        conn.execute("COMMIT")
        check = conn.execute("PRAGMA quick_check").fetchone()
        if check is None or check[0] != "ok":
            raise StoreError(f"{path} failed an integrity check: {check}")
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(_describe(path, exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """
    Open for reading only: ``mode=ro``, nothing created, the journal mode left alone.

    The file is identified first through an ``immutable`` connection, which creates no
    ``-wal``/``-shm`` file beside it, so a foreign file is refused untouched. A WAL-mode
    database in a directory this process cannot write (where SQLite cannot create its
    shared-memory file) and without a ``-wal`` or ``-journal`` file is then read as
    immutable too.
    """
    if not path.is_file():
        raise StoreError(f"database {path} does not exist or is not a file")
    uri = path.absolute().as_uri()
    try:
        probe = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        if _schema_version(probe, path) is None:
            raise StoreError(f"{path} is not a lodresults database (it holds no tables)")
    except sqlite3.Error as exc:
        raise StoreError(_describe(path, exc)) from None
    finally:
        probe.close()
    conn = None
    try:
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            _schema_version(conn, path)
        except sqlite3.OperationalError:
            # Immutable only where nothing can be half-written: no WAL content and no
            # hot rollback journal (which only a writer could roll back) beside it.
            pending = [path.with_name(path.name + s) for s in ("-wal", "-journal")]
            if os.access(path.parent, os.W_OK):
                raise
            if any(p.exists() for p in pending):
                raise StoreError(
                    f"database {path} has a {' or '.join(p.name for p in pending if p.exists())}"
                    " file that only a writer can apply, and its directory is read-only; "
                    "copy both to a writable directory, or export once with write access"
                ) from None
            conn.close()
            conn = sqlite3.connect(
                f"{uri}?mode=ro&immutable=1", uri=True, isolation_level=None,
                check_same_thread=False,
            )  # fmt: skip
            _schema_version(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StoreError(_describe(path, exc)) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _decimal_text(v: str | float | int | None) -> str | None:
    return None if v is None else str(decimal_of(v))


def _migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a lodresults database from ``version`` to SCHEMA_VERSION (inside a transaction)."""
    if version == 1:
        # Decimal columns NUMERIC -> TEXT. SQLite cannot change a column's type: copy the
        # table. A NUMERIC column had already respelled 48.0 as 48; those values stay so.
        conn.create_function("lod_decimal_text", 1, _decimal_text, deterministic=True)
        create = _SCHEMA[_SCHEMA.index("CREATE TABLE") : _SCHEMA.index(";")]
        conn.execute(create.replace("lab_results", "lab_results_v2", 1))
        cols = ", ".join(_Q[c] for c in COLUMNS)
        values = ", ".join(
            f"lod_decimal_text({_Q[c]})" if c in _DECIMALS else _Q[c] for c in COLUMNS
        )
        conn.execute(
            f"INSERT INTO lab_results_v2 ({cols}, fetched_at) "  # noqa: S608 (fixed names)
            f"SELECT {values}, fetched_at FROM lab_results"
        )
        conn.execute("DROP TABLE lab_results")
        conn.execute("ALTER TABLE lab_results_v2 RENAME TO lab_results")
        version = 2
    assert version == SCHEMA_VERSION, version


class Store:
    """
    The backfill database. Open with ``await Store.open(path)``; close with ``close()``.

    Every operation runs in its own transaction on the database thread; any exception in
    one (including ``KeyboardInterrupt`` and ``CancelledError``) rolls it back, so the
    connection stays usable.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, pool: concurrent.futures.Executor):
        self.path = path
        self._conn = conn
        self._pool = pool
        # Set by the database thread to the running job's cancel flag (see ``_run``).
        self._job_cancelled: threading.Event | None = None

    @classmethod
    async def open(cls, path: str | Path, *, readonly: bool = False) -> Store:
        """
        Open and check the database; raises ``StoreError``.

        For writing (the default) a missing file is created and an older lodresults
        schema migrated. With ``readonly`` nothing is ever written: the file must exist
        and be a lodresults database of this version or an older one.
        """
        p = Path(path)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lod-sqlite")
        loop = asyncio.get_running_loop()
        connect = _connect_readonly if readonly else _connect
        try:
            conn = await loop.run_in_executor(pool, connect, p)
        except BaseException:
            pool.shutdown(wait=True)
            raise
        return cls(p, conn, pool)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        # shield: if the caller is cancelled mid-write, the transaction still completes
        # (or rolls back) on its thread before anything else touches the connection. A
        # long read (``iter_records_sync``) sees the flag and stops at its next batch.
        cancelled = threading.Event()
        future = loop.run_in_executor(self._pool, self._guard, cancelled, fn, *args)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    def _guard(self, cancelled: threading.Event, fn: Callable[..., T], *args: Any) -> T:
        self._job_cancelled = cancelled
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            self._rollback()
            raise StoreError(_describe(self.path, exc)) from None
        except BaseException:
            # Anything else (a value SQLite cannot bind, KeyboardInterrupt, ...) must not
            # leave the transaction open either: the next write would fail to begin.
            self._rollback()
            raise
        finally:
            self._job_cancelled = None

    def _rollback(self) -> None:
        if not self._conn.in_transaction:
            return
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the original error is the one to report
            logger.warning("database %s: rollback failed: %s", self.path, exc)

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

    async def get_meta_number(self, key: str) -> float | None:
        """A number stored with ``set_meta``, or None; StoreError if it is not one."""
        text = await self.get_meta(key)
        if text is None:
            return None
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise StoreError(
                f"database {self.path}: meta value {key!r} is {text[:40]!r}, not a number; "
                "the file is damaged (delete that row to start over)"
            )
        return value

    def _int(self, where: str, v: object) -> int:
        if type(v) is int:
            return v
        raise StoreError(
            f"database {self.path}: {where} holds {str(v)[:40]!r}, not an integer; "
            "the file is damaged (restore it, or delete that row)"
        )

    async def completed_windows(self, start: int, end: int) -> list[tuple[int, int]]:
        """Checkpointed windows overlapping ``[start, end]``."""
        return await self._run(self._completed, start, end)

    def _completed(self, start: int, end: int) -> list[tuple[int, int]]:
        rows = self._conn.execute(
            'SELECT "start", "end" FROM backfill_windows WHERE "end" >= ? AND "start" <= ? '
            'ORDER BY "start"',
            (start, end),
        ).fetchall()
        return [
            (self._int("backfill_windows", a), self._int("backfill_windows", b)) for a, b in rows
        ]

    async def count(self) -> int:
        """Rows in ``lab_results``."""
        return await self._run(self._count)

    def _count(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM lab_results").fetchone()[0])

    async def running_ids(self, start: int, end: int) -> list[int]:
        """Ids of the labs stored as running (no end) that started in ``[start, end]``."""
        return await self._run(self._running_ids, start, end)

    def _running_ids(self, start: int, end: int) -> list[int]:
        rows = self._conn.execute(
            'SELECT lab_instance_id FROM lab_results WHERE "end" IS NULL '
            'AND "start" BETWEEN ? AND ? ORDER BY lab_instance_id',
            (start, end),
        ).fetchall()
        return [int(r[0]) for r in rows]

    async def newest_change(self) -> int | None:
        """The latest start, end or last activity in the table (epoch), or None if empty."""
        return await self._run(self._newest_change)

    def _newest_change(self) -> int | None:
        row = self._conn.execute(
            'SELECT MAX(MAX("start", COALESCE("end", 0), COALESCE(last_activity, 0))) '
            "FROM lab_results"
        ).fetchone()
        return None if row is None or row[0] is None else self._int("lab_results", row[0])

    async def status_counts(self) -> dict[int, int]:
        """Rows per completion status code."""
        return await self._run(self._status_counts)

    def _status_counts(self) -> dict[int, int]:
        rows = self._conn.execute(
            "SELECT completion_status, COUNT(*) FROM lab_results GROUP BY 1 ORDER BY 1"
        ).fetchall()
        return {self._int("lab_results.completion_status", a): int(b) for a, b in rows}

    def iter_records_sync(self, batch: int = 1000) -> Iterator[LabResult]:
        """
        All records in start order, read in batches (call from ``run_sync``).

        If the caller of ``run_sync`` is cancelled, raises ``CancelledError`` (on the
        database thread) before the next batch, so a long export stops within one batch.
        """
        cur = self._conn.execute(_SELECT_ALL)
        try:
            while rows := cur.fetchmany(batch):
                yield from self._records(rows)
                if self._job_cancelled is not None and self._job_cancelled.is_set():
                    raise asyncio.CancelledError(f"reading {self.path} was cancelled")
        finally:
            cur.close()

    async def for_each_chunk(
        self, fn: Callable[[list[LabResult]], None], size: int = CHUNK_ROWS
    ) -> int:
        """
        Call ``fn`` on the database thread with every record in start order, ``size``
        at a time, all from one consistent snapshot; returns the number of records.

        Each chunk (read and ``fn``) is one job, so a cancelled caller stops within one
        chunk rather than at the end of the table.
        """
        cur = await self._run(self._conn.execute, _SELECT_ALL)
        try:
            n = 0
            while count := await self._run(self._chunk_to, cur, size, fn):
                n += count
            return n
        finally:
            await self._run(cur.close)

    def _chunk_to(
        self, cur: sqlite3.Cursor, size: int, fn: Callable[[list[LabResult]], None]
    ) -> int:
        chunk = self._read_chunk(cur, size)
        if chunk:
            fn(chunk)
        return len(chunk)

    def _read_chunk(self, cur: sqlite3.Cursor, size: int) -> list[LabResult]:
        return self._records(cur.fetchmany(size))

    def _records(self, rows: list[Any]) -> list[LabResult]:
        out = []
        for row in rows:
            try:
                out.append(record_from_row(row))
            except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
                raise StoreError(
                    f"database {self.path}: the row of lab_instance_id {str(row[0])[:40]} "
                    f"cannot be read ({exc}); the file is damaged"
                ) from None
        return out

    async def run_sync(self, fn: Callable[[Store], T]) -> T:
        """
        Run ``fn(self)`` on the database thread (for streaming exports); if this call is
        cancelled, ``iter_records_sync`` inside ``fn`` stops at its next batch.
        """
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
