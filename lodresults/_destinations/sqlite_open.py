"""
Opening a backfill database: for writing (create, check, migrate) or read-only.

Stdlib ``sqlite3``. Opening for writing creates a new database, migrates an older
lodresults database in one transaction, and refuses a newer one or a file that is not a
lodresults database. Read-only (export) opens the file with ``mode=ro``: it never
creates tables, never switches the journal mode and never writes a byte; it reads any
version up to the current one.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from lodresults._destinations.sqlite_schema import (
    SCHEMA,
    SCHEMA_VERSION,
    add_new_columns,
    migrate,
    schema_version,
)
from lodresults._exceptions import StoreError

__all__ = ["connect", "connect_readonly", "describe"]


def connect(path: Path) -> sqlite3.Connection:
    """Open for writing: create, or check and migrate, the schema."""
    try:
        conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open database {path}: {exc}") from None
    try:
        # Identify the file before changing anything in it (journal mode included).
        schema_version(conn, path)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        version = schema_version(conn, path)  # again, now that no one else can write
        if version is not None and version < SCHEMA_VERSION:
            migrate(conn, version)
        for stmt in filter(str.strip, SCHEMA.split(";")):
            conn.execute(stmt)
        add_new_columns(conn, path)
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
        raise StoreError(describe(path, exc)) from None
    except BaseException:
        conn.close()
        raise
    return conn


def connect_readonly(path: Path) -> sqlite3.Connection:
    """
    Open for reading only: ``mode=ro``, nothing created, the journal mode left alone.

    ``mode=ro`` reads the ``-wal`` file too: a backfill still running, or killed before a
    checkpoint, keeps its newest rows (at first its schema too) there only.
    ``immutable=1`` would ignore it and see an empty or "malformed" file.

    Without a ``-wal`` file beside it, the file is identified first through an
    ``immutable`` connection, which creates no ``-wal``/``-shm`` file, so a foreign file
    is refused untouched. A WAL-mode database in a directory this process cannot write
    (where SQLite cannot create its shared-memory file) and without a ``-wal`` or
    ``-journal`` file is read as immutable: nothing can be writing it there.
    """
    if not path.is_file():
        raise StoreError(f"database {path} does not exist or is not a file")
    uri = path.absolute().as_uri()
    pending = [path.with_name(path.name + s) for s in ("-wal", "-journal")]
    if not pending[0].exists():
        try:
            probe = sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open database {path}: {exc}") from None
        try:
            _identify(probe, path)
        except sqlite3.Error as exc:
            raise StoreError(describe(path, exc)) from None
        finally:
            probe.close()
    conn = None
    try:
        conn = sqlite3.connect(
            f"{uri}?mode=ro", uri=True, timeout=5.0, isolation_level=None, check_same_thread=False
        )
        try:
            _identify(conn, path)
        except sqlite3.OperationalError:
            # Immutable only where nothing can be half-written: no WAL content and no
            # hot rollback journal (which only a writer could roll back) beside it.
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
            _identify(conn, path)
    except sqlite3.Error as exc:
        if conn is not None:
            conn.close()
        raise StoreError(describe(path, exc)) from None
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    return conn


def _identify(conn: sqlite3.Connection, path: Path) -> None:
    """Raise StoreError unless ``conn`` holds a lodresults database this version reads."""
    if schema_version(conn, path) is None:
        raise StoreError(
            f"{path} is not a lodresults database (it holds no tables; a backfill that is "
            "just starting creates them with its first window)"
        )


def describe(path: Path, exc: sqlite3.Error) -> str:
    """A StoreError message for ``exc`` on ``path``, saying what to do."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return f"database {path} is locked by another process ({text}); stop it and retry"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        # Never "remove it": the file may not be ours (a wrong --db).
        return (
            f"database {path} is not a usable SQLite file ({text}); check the path, "
            "or restore the file from a backup"
        )
    return f"database {path}: {text}"
