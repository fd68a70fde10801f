"""
``lodresults export --format parquet``: stream the SQLite table into a Parquet file.

Imports pyarrow (through ``_parquet``): the CLI imports this module only for that format.
"""

from __future__ import annotations

from pathlib import Path

from lodresults._destinations.parquet import ParquetSink
from lodresults._destinations.sqlite import SQLiteStore
from lodresults.cli._export import tenant_view

__all__ = ["export_parquet"]


async def export_parquet(db: Path, out: Path, tenant: str | None = None) -> int:
    """
    Write every row of ``db`` (of ``tenant``, see ``tenant_view``) to ``out`` as
    Parquet, in row groups; returns the count.

    The database is opened read-only and read a chunk at a time, so a cancellation
    (Ctrl-C) stops the export within one chunk; ``out`` then stays as it was.
    """
    store = await SQLiteStore.open(db, readonly=True)
    try:
        view = await tenant_view(store, tenant)
        sink = ParquetSink(out)
        try:
            await view.for_each_chunk(sink.write)
            # On the database thread too: after any chunk still being written.
            return await store.run_sync(lambda _: sink.commit())
        except BaseException:
            await store.run_sync(lambda _: sink.abort())
            raise
    finally:
        await store.close()
