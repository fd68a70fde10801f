"""
What the webhook receiver keeps in the database beside the store's tables.

``webhook_pending``: the lab ids queued but not yet applied when the receiver stopped (a
restart resumes them). ``webhook_applied``: each lab a webhook brought, when, and
whether that changed what was stored; ``webhook_missed``: the changes other writers
(``watch``'s poll and reconciliation) found that no webhook had brought (``MissCounter``).

Its own connection to the store's file (WAL: the store's writes and these do not block
each other for long), used from one worker thread at a time. Knows no HTTP.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Final, TypeVar

from lodresults._exceptions import StoreError

__all__ = ["Ledger"]

T = TypeVar("T")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS webhook_pending (
    lab_instance_id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS webhook_applied (
    lab_instance_id INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    changed INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_applied_at ON webhook_applied (applied_at);
CREATE TABLE IF NOT EXISTS webhook_missed (
    found_at REAL NOT NULL,
    changes INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhook_missed_at ON webhook_missed (found_at)
"""
#: Applies older than this (seconds before the newest) are forgotten when the ledger opens:
#: a reconciliation looks back to the one before it, hours or a day.
KEEP_APPLIED: Final = 30 * 86400


class Ledger:
    """The receiver's tables in the database at ``path`` (open with ``await Ledger.open``)."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()

    @classmethod
    async def open(cls, path: str | Path) -> Ledger:
        """Open (creating the tables); the store must have created the file first."""
        p = Path(path)

        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(p, timeout=10.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)
                conn.execute(
                    "DELETE FROM webhook_applied WHERE applied_at < "
                    "(SELECT MAX(applied_at) FROM webhook_applied) - ?",
                    (KEEP_APPLIED,),
                )
                conn.execute(
                    "DELETE FROM webhook_missed WHERE found_at < "
                    "(SELECT MAX(found_at) FROM webhook_missed) - ?",
                    (KEEP_APPLIED,),
                )
            except BaseException:
                conn.close()
                raise
            return conn

        try:
            conn = await asyncio.to_thread(connect)
        except sqlite3.Error as exc:
            raise StoreError(f"database {p}: cannot keep the webhook queue: {exc}") from None
        return cls(p, conn)

    @classmethod
    async def open_existing(cls, path: str | Path) -> Ledger | None:
        """The ledger of ``path`` if a receiver ever kept one there, else None."""
        p = Path(path)

        def has_tables() -> bool:
            conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10.0)
            try:
                row = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'webhook_applied'"
                ).fetchone()
                return row is not None
            finally:
                conn.close()

        try:
            found = await asyncio.to_thread(has_tables)
        except sqlite3.Error as exc:
            raise StoreError(f"database {p}: cannot read the webhook ledger: {exc}") from None
        return await cls.open(p) if found else None

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def job() -> T:
            with self._lock:
                try:
                    return fn(self._conn)
                except sqlite3.Error as exc:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise StoreError(f"database {self.path}: webhook ledger: {exc}") from None

        # shielded: a cancelled caller still lets the transaction finish on its thread
        return await asyncio.shield(asyncio.to_thread(job))

    async def save_pending(self, pending: Iterable[tuple[int, float]]) -> int:
        """Replace the persisted queue with ``pending`` (id, received at); returns its size."""
        rows = list(pending)

        def save(c: sqlite3.Connection) -> int:
            c.execute("BEGIN IMMEDIATE")
            c.execute("DELETE FROM webhook_pending")
            c.executemany("INSERT OR REPLACE INTO webhook_pending VALUES (?, ?)", rows)
            c.execute("COMMIT")
            return len(rows)

        return await self._run(save)

    async def take_pending(self) -> list[tuple[int, float]]:
        """The persisted queue, oldest first (it stays persisted until saved again)."""

        def load(c: sqlite3.Connection) -> list[tuple[int, float]]:
            rows = c.execute(
                "SELECT lab_instance_id, received_at FROM webhook_pending ORDER BY received_at"
            ).fetchall()
            return [(int(a), float(b)) for a, b in rows]

        return await self._run(load)

    async def record_applied(self, lab_instance_id: int, at: float, changed: bool) -> None:
        """A webhook brought this lab at ``at``; ``changed``: the store held another state."""

        def record(c: sqlite3.Connection) -> None:
            c.execute(
                "INSERT INTO webhook_applied VALUES (?, ?, ?)",
                (lab_instance_id, at, int(changed)),
            )

        await self._run(record)

    async def record_missed(self, at: float, changes: int) -> None:
        """A writer other than the receiver found ``changes`` no webhook had brought."""

        def record(c: sqlite3.Connection) -> None:
            c.execute("INSERT INTO webhook_missed VALUES (?, ?)", (at, changes))

        await self._run(record)

    async def cursor(self, at: float | None) -> tuple[int, int]:
        """A place in the ledger just after everything recorded at or before ``at``."""

        def last_rows(c: sqlite3.Connection) -> tuple[int, int]:
            if at is None:
                return (0, 0)
            a = c.execute(
                "SELECT COALESCE(MAX(rowid), 0) FROM webhook_applied WHERE applied_at <= ?", (at,)
            ).fetchone()
            m = c.execute(
                "SELECT COALESCE(MAX(rowid), 0) FROM webhook_missed WHERE found_at <= ?", (at,)
            ).fetchone()
            return int(a[0]), int(m[0])

        return await self._run(last_rows)

    async def counts_after(self, cursor: tuple[int, int]) -> tuple[int, int, tuple[int, int]]:
        """
        Changes webhooks brought and changes found without them, recorded after
        ``cursor``, and the cursor after them.
        """

        def count(c: sqlite3.Connection) -> tuple[int, int, tuple[int, int]]:
            a = c.execute(
                "SELECT COALESCE(SUM(changed), 0), COALESCE(MAX(rowid), ?) FROM webhook_applied "
                "WHERE rowid > ?",
                (cursor[0], cursor[0]),
            ).fetchone()
            m = c.execute(
                "SELECT COALESCE(SUM(changes), 0), COALESCE(MAX(rowid), ?) FROM webhook_missed "
                "WHERE rowid > ?",
                (cursor[1], cursor[1]),
            ).fetchone()
            return int(a[0]), int(m[0]), (int(a[1]), int(m[1]))

        return await self._run(count)

    async def close(self) -> None:
        """Close the connection."""
        await asyncio.to_thread(self._conn.close)
