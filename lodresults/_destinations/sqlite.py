"""
The backfill database: the ``lab_results`` table and per-window checkpoints, in SQLite.

Stdlib ``sqlite3`` on one dedicated thread (one connection, used by one thread, so the
event loop never blocks on disk and never shares a connection across threads). Each
completed window is written in one transaction together with its checkpoint, so a crash
at any instant leaves either the whole window (rows and checkpoint) or none of it.
aiosqlite would give the same thread hop; a single-worker executor is a few lines and
keeps the transaction boundaries explicit. The schema and rows are ``_store_schema``'s;
opening (and migrating) is ``_store_open``'s.

Knows no HTTP and no wire names.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import logging
import math
import sqlite3
import threading
import time
from collections.abc import (
    Callable,
    Collection,
    Coroutine,
    Generator,
    Iterable,
    Iterator,
    Sequence,
)
from pathlib import Path
from typing import Any, Final, TypeVar

from lodresults._destinations.base import Applied, OpenLab
from lodresults._destinations.sqlite_open import connect, connect_readonly, describe
from lodresults._destinations.sqlite_schema import (
    UPSERT,
    columns_in,
    compare,
    record_from_row,
    row_of,
    select_all,
    select_by_id,
)
from lodresults._exceptions import StoreError
from lodresults._records.models import LabResult

__all__ = ["CHUNK_ROWS", "SQLiteStore"]

T = TypeVar("T")

logger = logging.getLogger("lodresults.store")

#: Rows per job when reading the whole table (``for_each_chunk``): the most a cancelled
#: export still processes.
CHUNK_ROWS: Final = 2000
#: Rows compared (and ids looked up) per query when applying copies.
_COMPARE_ROWS: Final = 500
#: The ``meta`` key of ``last_run``.
_LAST_RUN: Final = "engine.last_run"


class SQLiteStore:
    """
    The backfill database, a ``Destination``. Open with ``await SQLiteStore.open(path)``
    and ``close()`` it (idempotent), or use ``async with SQLiteStore.open(path) as store:``
    (``async with await SQLiteStore.open(path)`` works too).

    Every operation runs in its own transaction on the database thread; any exception in
    one (including ``KeyboardInterrupt`` and ``CancelledError``) rolls it back, so the
    connection stays usable.
    """

    def __init__(self, path: Path, conn: sqlite3.Connection, pool: concurrent.futures.Executor):
        self.path = path
        self._conn = conn
        self._pool = pool
        # Read on the database thread at open (``_opened``): the file's own columns.
        self._select = ""
        # Set by the database thread to the running job's cancel flag (see ``_run``).
        self._job_cancelled: threading.Event | None = None
        self._closed = False

    @classmethod
    def open(cls, path: str | Path, *, readonly: bool = False) -> _Opening:
        """
        Open and check the database; raises ``StoreError``. Await it, or use it as
        ``async with SQLiteStore.open(path) as store:`` (closed on leaving).

        For writing (the default) a missing file is created and an older lodresults
        schema migrated. With ``readonly`` nothing is ever written: the file must exist
        and be a lodresults database of this version or an older one.
        """
        return _Opening(lambda: cls._open(path, readonly))

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @classmethod
    async def _open(cls, path: str | Path, readonly: bool) -> SQLiteStore:
        p = Path(path)
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="lod-sqlite")
        loop = asyncio.get_running_loop()
        opener = connect_readonly if readonly else connect
        try:
            conn = await loop.run_in_executor(pool, opener, p)
        except BaseException:
            pool.shutdown(wait=True)
            raise
        store = cls(p, conn, pool)
        try:
            store._select = await store._run(lambda: select_all(columns_in(conn)))
        except BaseException:
            await store.close()
            raise
        return store

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
            raise StoreError(describe(self.path, exc)) from None
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

    async def apply(
        self,
        records: Sequence[LabResult],
        *,
        fetched_at: float | None = None,
        checkpoint: tuple[int, int] | None = None,
    ) -> Applied:
        """
        Upsert ``records`` in their order and, if given, checkpoint ``checkpoint = (start,
        end)``, in one transaction. Newest fetch wins: a copy replaces a stored row only if
        ``fetched_at`` (epoch seconds; now by default) is not earlier than the row's; on
        equal times the later write wins (so a later copy in ``records`` replaces an
        earlier one).
        """
        stamp = int(time.time() if fetched_at is None else fetched_at)
        rows = [row_of(r, stamp) for r in records]
        return await self._run(self._apply, rows, checkpoint, stamp)

    def _apply(
        self, rows: Iterable[tuple[Any, ...]], checkpoint: tuple[int, int] | None, stamp: int = 0
    ) -> Applied:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        applied = Applied()
        it = iter(rows)
        while chunk := list(itertools.islice(it, _COMPARE_ROWS)):
            applied += compare(self._stored_rows(chunk), chunk)
            c.executemany(UPSERT, chunk)
        if checkpoint is not None:
            c.execute(
                'INSERT OR REPLACE INTO backfill_windows ("start", "end", records, completed_at) '
                "VALUES (?, ?, ?, ?)",
                (*checkpoint, applied.total, stamp),
            )
        c.execute("COMMIT")
        return applied

    def _stored_rows(self, rows: list[tuple[Any, ...]]) -> dict[Any, tuple[Any, ...]]:
        ids = list({r[0] for r in rows})
        found = self._conn.execute(select_by_id(len(ids)), ids).fetchall()
        return {r[0]: tuple(r) for r in found}

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

    async def upsert(self, records: Sequence[LabResult]) -> Applied:
        """Upsert ``records`` fetched now (no checkpoint), in one transaction."""
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

    async def checkpoints(self, start: int, end: int) -> list[tuple[int, int]]:
        """Checkpointed (settled) stretches overlapping ``[start, end]``, in order."""
        return await self._run(self._checkpoints, start, end)

    def _checkpoints(self, start: int, end: int) -> list[tuple[int, int]]:
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

    async def open_labs(self, start: int, end: int, *, settle: int) -> list[OpenLab]:
        """
        The labs that started in ``[start, end]`` and are stored as running (no end), or
        that ended after ``end`` in a copy fetched less than ``settle`` seconds after their
        end (an exam still to be graded): no window of the range returns them.
        """
        return await self._run(self._open_labs, start, end, settle)

    def _open_labs(self, start: int, end: int, settle: int) -> list[OpenLab]:
        rows = self._conn.execute(
            'SELECT lab_instance_id, "start", "end" FROM lab_results WHERE "start" BETWEEN ? AND ? '
            'AND ("end" IS NULL OR ("end" > ? AND fetched_at < "end" + ?)) '
            "ORDER BY lab_instance_id",
            (start, end, end, settle),
        ).fetchall()
        where = "lab_results"
        return [
            OpenLab(
                self._int(where, i), self._int(where, s), None if e is None else self._int(where, e)
            )
            for i, s, e in rows
        ]

    async def stored(self, ids: Collection[int]) -> set[int]:
        """Those of ``ids`` the table holds."""
        return await self._run(self._stored, list(ids))

    def _stored(self, ids: list[int]) -> set[int]:
        found: set[int] = set()
        for i in range(0, len(ids), _COMPARE_ROWS):
            chunk = ids[i : i + _COMPARE_ROWS]
            marks = ", ".join("?" for _ in chunk)
            sql = f"SELECT lab_instance_id FROM lab_results WHERE lab_instance_id IN ({marks})"  # noqa: S608
            found.update(int(r[0]) for r in self._conn.execute(sql, chunk))
        return found

    async def last_run(self) -> float | None:
        """When the last successful run of the engine began (``set_last_run``), or None."""
        return await self.get_meta_number(_LAST_RUN)

    async def set_last_run(self, at: float) -> None:
        """Record that every change up to ``at`` (epoch seconds, server clock) is applied."""
        await self.set_meta(_LAST_RUN, repr(float(at)))

    async def distrust_after(self, now: float) -> int:
        """
        Repair what a clock ahead of ``now`` stored: checkpoints completed after it are
        dropped (their windows are fetched again), rows fetched after it get
        ``fetched_at`` 0 (any fetch replaces them; a range keeps them current), and a
        ``last_run`` after it is forgotten. Returns how many were repaired.
        """
        return await self._run(self._distrust_after, int(now))

    def _distrust_after(self, now: int) -> int:
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        n = c.execute("DELETE FROM backfill_windows WHERE completed_at > ?", (now,)).rowcount
        n += c.execute(
            "UPDATE lab_results SET fetched_at = 0 WHERE fetched_at > ?", (now,)
        ).rowcount
        n += c.execute(
            "DELETE FROM meta WHERE key = ? AND CAST(value AS REAL) > ?", (_LAST_RUN, now)
        ).rowcount
        c.execute("COMMIT")
        return n

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
        cur = self._conn.execute(self._select)
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
        cur = await self._run(self._conn.execute, self._select)
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

    async def run_sync(self, fn: Callable[[SQLiteStore], T]) -> T:
        """
        Run ``fn(self)`` on the database thread (for streaming exports); if this call is
        cancelled, ``iter_records_sync`` inside ``fn`` stops at its next batch.
        """
        return await self._run(fn, self)

    async def close(self) -> None:
        """Wait for pending writes, then close the connection. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._conn.close)
        self._pool.shutdown(wait=True)


class _Opening(Coroutine[Any, Any, SQLiteStore]):
    """
    ``SQLiteStore.open(...)``: a coroutine (await it, or hand it to ``asyncio.run``), or
    an async context manager that closes the store on leaving.
    """

    __slots__ = ("_coro", "_open", "_store")

    def __init__(self, open_: Callable[[], Coroutine[Any, Any, SQLiteStore]]) -> None:
        self._open = open_
        self._coro: Coroutine[Any, Any, SQLiteStore] | None = None
        self._store: SQLiteStore | None = None

    def _started(self) -> Coroutine[Any, Any, SQLiteStore]:
        if self._coro is None:
            self._coro = self._open()
        return self._coro

    def __await__(self) -> Generator[Any, None, SQLiteStore]:
        return self._started().__await__()

    def send(self, value: Any) -> Any:
        return self._started().send(value)

    def throw(self, *args: Any) -> Any:
        return self._started().throw(*args)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    async def __aenter__(self) -> SQLiteStore:
        self._store = await self._started()
        return self._store

    async def __aexit__(self, *exc_info: object) -> None:
        if self._store is not None:
            await self._store.close()
