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
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import Kind
from lodresults._records.wire import dump_record
from lodresults._windows.plan import iso_datetime

__all__ = ["CSV_SPELLING", "atomic_output", "csv_row", "export"]


async def export(db: Path, fmt: str, out: IO[str]) -> int:
    """
    Write every row of ``db`` as JSON lines (the API's shape) or CSV; returns the count.

    The database is opened read-only. Rows are read and written a chunk at a time, so a
    cancellation (Ctrl-C) stops the export within one chunk.
    """
    store = await SQLiteStore.open(db, readonly=True)
    try:
        n = await store.for_each_chunk(_EXPORT_WRITERS[fmt](out))
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
    "decimal": str,
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
