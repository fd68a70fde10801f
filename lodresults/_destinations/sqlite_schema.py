"""
The SQLite schema of a backfill database, and how a LabResult becomes a row and back.

Columns are the snake_case fields of ``FIELDS``, one SQL type per kind. Decimals are
stored as TEXT, the Decimal's exact spelling (``48.0`` stays ``48.0``, ``-0.0`` stays
``-0.0``; a NUMERIC column would respell both); times as epoch seconds; booleans as
0/1; enums as their code.

The schema version is the ``meta`` row ``schema_version``: a new database is created at
``SCHEMA_VERSION``, an older lodresults database migrated in one transaction, a newer one
or a file that is not a lodresults database refused. Pure SQL over a connection: no
threads, no asyncio.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from lodresults._destinations.base import Applied
from lodresults._exceptions import StoreError
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import FieldSpec, Kind
from lodresults._records.values import UTC, decimal_of

__all__ = [
    "COLUMNS",
    "SCHEMA",
    "SCHEMA_VERSION",
    "UPSERT",
    "add_new_columns",
    "columns_in",
    "compare",
    "migrate",
    "record_from_row",
    "row_of",
    "row_reader",
    "row_writer",
    "schema_version",
    "select_all",
    "select_by_id",
    "table_sql",
]

T = TypeVar("T")

#: The version of the schema this lodresults writes (``meta.schema_version``).
#: 1: decimals in NUMERIC columns. 2: decimals as TEXT (their exact spelling).
SCHEMA_VERSION: Final = 2
COLUMNS: Final = tuple(f.name for f in FIELDS)

#: The SQL type of each kind of field.
_SQL_TYPES: Final[dict[Kind, str]] = {
    "int": "INTEGER",
    "enum": "INTEGER",
    "timestamp": "INTEGER",
    "bool": "INTEGER",
    "text": "TEXT",
    # TEXT keeps the Decimal's exact spelling (NUMERIC would store 48.0 as 48 and -0.0 as 0).
    "decimal": "TEXT",
}

#: A field's value -> its column value (None stays None). Absent: stored as it is.
_TO_SQL: Final[dict[Kind, Callable[[Any], Any]]] = {
    "timestamp": lambda d: int(d.timestamp()),
    "bool": int,
    "enum": int,
    "decimal": str,
}

#: A column value -> the field's value (None stays None). Absent: read as it is.
#: Decimals: TEXT since schema version 2; int or float in a version 1 file opened read-only.
_FROM_SQL: Final[dict[Kind, Callable[[Any], Any]]] = {
    "timestamp": lambda v: datetime.fromtimestamp(v, UTC),
    "bool": bool,
    "decimal": decimal_of,
}


def _quote(name: str) -> str:
    return f'"{name}"'


def column_sql(f: FieldSpec) -> str:
    """The column definition of one field (``"name" TYPE [NOT NULL] [CHECK ...]``)."""
    sql = f"{_quote(f.name)} {_SQL_TYPES[f.kind]}"
    if f.key:
        return f"{sql} PRIMARY KEY"
    if not f.nullable:
        sql += " NOT NULL"
    if f.kind == "bool":
        sql += f" CHECK ({_quote(f.name)} IN (0, 1))"
    return sql


def table_sql(name: str, fields: Sequence[FieldSpec] = FIELDS) -> str:
    """``CREATE TABLE`` for a table of records (plus ``fetched_at``)."""
    cols = ",\n    ".join(column_sql(f) for f in fields)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    {cols},\n    fetched_at INTEGER NOT NULL\n)"


SCHEMA: Final = f"""
{table_sql("lab_results")};
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

_KEY: Final = next(f.name for f in FIELDS if f.key)
_COLS: Final = ", ".join(_quote(c) for c in COLUMNS)

# Newest fetch wins, whoever writes: a copy replaces the row only if it was fetched at or
# after the stored copy (on equal times the later write wins). Two writers on one file
# (a cron backfill and a watch) thus never put an older state over a newer one.
# The SQL below is built from the fixed column names above, never from input.
UPSERT: Final = f"""
INSERT INTO lab_results ({_COLS}, fetched_at)
VALUES ({", ".join("?" for _ in COLUMNS)}, ?)
ON CONFLICT ({_quote(_KEY)}) DO UPDATE SET
    {", ".join(f"{_quote(c)} = excluded.{_quote(c)}" for c in COLUMNS if c != _KEY)},
    fetched_at = excluded.fetched_at
WHERE excluded.fetched_at >= lab_results.fetched_at
"""  # noqa: S608


def select_by_id(n: int) -> str:
    """The stored rows (``COLUMNS`` then ``fetched_at``) of ``n`` ids given as parameters."""
    marks = ", ".join("?" for _ in range(n))
    return f"SELECT {_COLS}, fetched_at FROM lab_results WHERE {_quote(_KEY)} IN ({marks})"  # noqa: S608


def compare(stored: dict[Any, tuple[Any, ...]], rows: Sequence[tuple[Any, ...]]) -> Applied:
    """
    What upserting ``rows`` (in order, rows as ``row_of`` makes them) over ``stored``
    (their rows by id, as ``select_by_id`` reads them) does: new, changed, unchanged
    (an equal copy, or one older than the stored). Updates ``stored`` as ``UPSERT`` would.
    """
    new = changed = unchanged = 0
    for row in rows:
        old = stored.get(row[0])
        if old is None:
            new += 1
        elif row[-1] < old[-1] or row[:-1] == old[:-1]:
            unchanged += 1
        else:
            changed += 1
        if old is None or row[-1] >= old[-1]:
            stored[row[0]] = row
    return Applied(new, changed, unchanged)


def columns_in(conn: sqlite3.Connection) -> set[str]:
    """The columns the file's ``lab_results`` table has."""
    return {str(r[1]) for r in conn.execute("PRAGMA table_info(lab_results)")}


def add_new_columns(conn: sqlite3.Connection, path: Path) -> None:
    """
    Add the columns of fields LabResult gained since the file was written (inside a
    transaction): null in the rows written before, until a run fetches them again
    (``--refresh`` for checkpointed windows). A field that may not be null cannot be
    added to rows that lack it: StoreError.
    """
    have = columns_in(conn)
    for f in FIELDS:
        if f.name in have:
            continue
        if not f.nullable:
            raise StoreError(
                f"database {path} has no column {f.name}, which every lab result now "
                "requires; backfill into a new database"
            )
        conn.execute(f"ALTER TABLE lab_results ADD COLUMN {column_sql(f)}")


def select_all(have: set[str]) -> str:
    """Every row in start order; a column the file lacks (an older file) reads as null."""
    cols = ", ".join(_quote(c) if c in have else f"NULL AS {_quote(c)}" for c in COLUMNS)
    return f'SELECT {cols} FROM lab_results ORDER BY "start", {_quote(_KEY)}'  # noqa: S608


def row_writer(fields: Sequence[FieldSpec]) -> Callable[[Any, int], tuple[Any, ...]]:
    """The function that turns a record and its ``fetched_at`` into a row of ``fields``."""
    plan = tuple((f.name, _TO_SQL.get(f.kind)) for f in fields)

    def row(r: Any, fetched_at: int) -> tuple[Any, ...]:
        out = []
        for name, conv in plan:
            v = getattr(r, name)
            out.append(v if conv is None or v is None else conv(v))
        out.append(fetched_at)
        return tuple(out)

    return row


def row_reader(cls: type[T], fields: Sequence[FieldSpec]) -> Callable[[Sequence[Any]], T]:
    """The function that turns a row of ``fields`` (``fetched_at`` left out) into a ``cls``."""
    plan = tuple(f.base if f.kind == "enum" else _FROM_SQL.get(f.kind) for f in fields)

    def record(row: Sequence[Any]) -> T:
        values = zip(row, plan, strict=True)
        return cls(*(v if conv is None or v is None else conv(v) for v, conv in values))

    return record


#: The ``lab_results`` row of a LabResult (``COLUMNS`` order, then ``fetched_at``).
row_of: Final = row_writer(FIELDS)
#: A ``lab_results`` row (columns in ``COLUMNS`` order) as a LabResult.
record_from_row: Final = row_reader(LabResult, FIELDS)


def _tables(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {str(r[0]) for r in rows}


def schema_version(conn: sqlite3.Connection, path: Path) -> int | None:
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


def _decimal_text(v: str | float | int | None) -> str | None:
    return None if v is None else str(decimal_of(v))


def migrate(conn: sqlite3.Connection, version: int) -> None:
    """Bring a lodresults database from ``version`` to SCHEMA_VERSION (inside a transaction)."""
    if version == 1:
        # Decimal columns NUMERIC -> TEXT. SQLite cannot change a column's type: copy the
        # table. A NUMERIC column had already respelled 48.0 as 48; those values stay so.
        conn.create_function("lod_decimal_text", 1, _decimal_text, deterministic=True)
        conn.execute(table_sql("lab_results_v2"))
        values = ", ".join(
            f"lod_decimal_text({_quote(f.name)})" if f.kind == "decimal" else _quote(f.name)
            for f in FIELDS
        )
        conn.execute(
            f"INSERT INTO lab_results_v2 ({_COLS}, fetched_at) "  # noqa: S608 (fixed names)
            f"SELECT {values}, fetched_at FROM lab_results"
        )
        conn.execute("DROP TABLE lab_results")
        conn.execute("ALTER TABLE lab_results_v2 RENAME TO lab_results")
        version = 2
    assert version == SCHEMA_VERSION, version
