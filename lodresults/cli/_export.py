"""
``lodresults export``: every row of a backfill database as JSON lines or CSV, and the
file that appears only once complete (``atomic_output``).

The CSV spelling is one rule per kind of field (``CSV_SPELLING``), applied to ``FIELDS``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Final

from lodresults._destinations.output import create_beside, resolve_output
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._destinations.sqlite_schema import COLUMNS
from lodresults._exceptions import StoreError
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import Kind
from lodresults._records.values import decimal_text
from lodresults._records.wire import dump_record
from lodresults._windows.plan import iso_datetime

__all__ = ["CSV_SPELLING", "atomic_output", "csv_row", "export", "tenant_view"]


async def tenant_view(store: SQLiteStore, tenant: str | None) -> SQLiteStore:
    """
    ``store`` as ``tenant``'s rows; with None, as its one tenant's. StoreError naming the
    tenants if the database holds several (a lab id may be in two of them) or not this one.
    """
    names = await store.tenants()
    held = ", ".join(names) or "none"
    if tenant is None:
        if len(names) > 1:
            raise StoreError(
                f"database {store.path} holds the results of {len(names)} tenants ({held}); "
                "export one at a time with --tenant NAME"
            )
        return store.for_tenant(names[0]) if names else store
    if tenant not in names:
        raise StoreError(f"database {store.path} holds no tenant {tenant!r} (it holds: {held})")
    return store.for_tenant(tenant)


async def export(db: Path, fmt: str, out: IO[str], tenant: str | None = None) -> int:
    """
    Write every row of ``db`` (of ``tenant``, see ``tenant_view``) as JSON lines (the
    API's shape) or CSV; returns the count.

    The database is opened read-only. Rows are read and written a chunk at a time, so a
    cancellation (Ctrl-C) stops the export within one chunk.
    """
    store = await SQLiteStore.open(db, readonly=True)
    try:
        view = await tenant_view(store, tenant)
        n = await view.for_each_chunk(_EXPORT_WRITERS[fmt](out))
        await store.run_sync(lambda _: out.flush())
        return n
    finally:
        await store.close()


@contextmanager
def atomic_output(path: Path) -> Iterator[IO[str]]:
    """
    A text file that appears at ``path`` only once complete: written beside it under a
    temporary name and renamed over ``path`` on success, removed on any failure or
    interruption (an existing ``path`` is then left untouched).

    A symlink is written through (its target replaced, the link kept), and anything
    that is not a regular file (``/dev/null``, a FIFO, ``/dev/stdout``) is written
    straight into (``resolve_output``). The file gets the permissions a plain
    ``open(path, "w")`` would give it.
    """
    target = resolve_output(path)
    if target.direct:
        with open(target.path, "w", newline="", encoding="utf-8") as f:
            yield f
        return
    fd, tmp = create_beside(target.path)
    try:
        with open(fd, "w", newline="", encoding="utf-8") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target.path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


#: How each kind of field is spelled in the CSV export (null is an empty cell).
CSV_SPELLING: Final[dict[Kind, Callable[[Any], str]]] = {
    "int": str,
    "text": str,
    "bool": lambda v: "true" if v else "false",
    "timestamp": iso_datetime,
    "decimal": decimal_text,
    "enum": lambda v: str(int(v)),
}

_CSV_FIELDS: Final = tuple((f.name, CSV_SPELLING[f.kind]) for f in FIELDS)


def csv_row(r: LabResult) -> list[str]:
    """One record as the CSV export spells it (columns in ``COLUMNS`` order)."""
    return ["" if (v := getattr(r, name)) is None else spell(v) for name, spell in _CSV_FIELDS]


def _jsonl_writer(out: IO[str]) -> Callable[[list[LabResult]], None]:
    def write(chunk: list[LabResult]) -> None:
        out.write("".join(dump_record(r).decode() + "\n" for r in chunk))

    return write


def _csv_writer(out: IO[str]) -> Callable[[list[LabResult]], None]:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)

    def write(chunk: list[LabResult]) -> None:
        writer.writerows(csv_row(r) for r in chunk)

    return write


_EXPORT_WRITERS: Final[dict[str, Callable[[IO[str]], Callable[[list[LabResult]], None]]]] = {
    "jsonl": _jsonl_writer,
    "csv": _csv_writer,
}
