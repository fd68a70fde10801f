"""
``lodresults export --format parquet``: stream the SQLite table into a Parquet file.

Imports pyarrow (through ``_parquet``): the CLI imports this module only for that format.
"""

from __future__ import annotations

from pathlib import Path

from lodresults._parquet import write_parquet
from lodresults._store import Store

__all__ = ["export_parquet"]


async def export_parquet(db: Path, out: Path) -> int:
    """Write every row of ``db`` to ``out`` as Parquet, in row groups; returns the count."""
    store = await Store.open(db, readonly=True)
    try:
        return await store.run_sync(lambda s: write_parquet(s.iter_records_sync(), out))
    finally:
        await store.close()
