"""
A database file that a failed run created is not left behind empty: a first run that
fails at its first request (a refused key, a wrong URL, Ctrl-C) leaves no file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import click

from lodresults._destinations.sqlite import SQLiteStore
from lodresults._exceptions import StoreError

__all__ = ["removed_if_left_empty"]

#: The files SQLite keeps beside a database.
_COMPANIONS: Final = ("-wal", "-shm", "-journal")
#: Every epoch second a checkpoint could cover.
_ALL_TIME: Final = (0, 2**62)


@contextlib.contextmanager
def removed_if_left_empty(db: Path) -> Iterator[None]:
    """
    Run the body (a command's ``run``); if it fails or is interrupted and ``db`` did not
    exist before, remove the file it created as long as it holds no row and no checkpoint.
    """
    existed = db.exists() or db.is_symlink()
    try:
        yield
    except BaseException as exc:
        succeeded = isinstance(exc, click.exceptions.Exit) and exc.exit_code == 0
        if not existed and not succeeded and db.exists() and asyncio.run(_holds_nothing(db)):
            for path in (db, *(db.with_name(db.name + s) for s in _COMPANIONS)):
                path.unlink(missing_ok=True)
        raise


async def _holds_nothing(db: Path) -> bool:
    try:
        store = await SQLiteStore.open(db, readonly=True)
    except StoreError:
        return False  # not ours to judge, nor to remove
    try:
        return await store.count() == 0 and not await store.checkpoints(*_ALL_TIME)
    finally:
        await store.close()
