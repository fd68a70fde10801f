"""
Write LabResult records to a Parquet file, streaming, one row group at a time.

Memory holds one row group (``row_group_size`` records) at most, whatever the total. The
file appears under its name only once complete: it is written next to it under a
temporary name and renamed at the end, so a failure or an interrupt never leaves a
truncated file where a complete one is expected (an existing file stays as it was). A
symlink is written through, and a path that is not a regular file (a device, a FIFO) is
written straight into (``output.resolve_output``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import IO, Final

import pyarrow.parquet as pq

from lodresults._destinations.arrow import ARROW_SCHEMA, to_arrow
from lodresults._destinations.output import create_beside, resolve_output
from lodresults._records.models import LabResult

__all__ = ["DEFAULT_ROW_GROUP_SIZE", "ParquetSink", "write_parquet"]

#: 64k rows per group: a few MB of memory, and large enough for fast column scans.
DEFAULT_ROW_GROUP_SIZE: Final = 65_536


class ParquetSink:
    """
    A Parquet file being written: ``write`` records in any pieces, then ``commit`` (or
    ``abort``). Rows are written a full row group at a time. Not thread-safe: call it from
    one thread at a time.

    Raises (from ``write``/``commit``):
        ArrowConversionError: a value does not fit its column.
        OSError: the file cannot be written.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
        compression: str = "zstd",
    ) -> None:
        if row_group_size < 1:
            raise ValueError("row_group_size must be at least 1")
        self.path = Path(path)
        self.row_group_size = row_group_size
        target = resolve_output(self.path)
        self._final = target.path
        self._tmp: Path | None = None
        self._file: IO[bytes] | None = None
        if target.direct:
            self._file = open(target.path, "wb")  # noqa: SIM115 - closed by commit/abort
        else:
            fd, self._tmp = create_beside(target.path)
            os.close(fd)
        try:
            self._writer = pq.ParquetWriter(
                self._file if self._file is not None else self._tmp,
                ARROW_SCHEMA,
                compression=compression,
            )
        except BaseException:
            self._release()
            raise
        self._pending: list[LabResult] = []
        self.count = 0

    def write(self, records: Iterable[LabResult]) -> None:
        """Add ``records``; every full row group is written out at once."""
        it = iter(records)
        while chunk := list(islice(it, self.row_group_size - len(self._pending))):
            self._pending += chunk
            if len(self._pending) == self.row_group_size:
                self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._writer.write_table(to_arrow(self._pending), row_group_size=self.row_group_size)
            self.count += len(self._pending)
            self._pending = []

    def commit(self) -> int:
        """Write what is left, close, and move the file into place; returns the count."""
        try:
            self._flush()
            self._writer.close()
            if self._tmp is not None:
                os.replace(self._tmp, self._final)
                self._tmp = None
            self._release()
        except BaseException:
            self.abort()
            raise
        return self.count

    def abort(self) -> None:
        """Close and remove the unfinished file (the target path is not touched)."""
        self._pending = []
        try:
            self._writer.close()
        finally:
            self._release()

    def _release(self) -> None:
        """Remove the temporary file (if any is left) and close a file opened directly."""
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
        if self._file is not None:
            self._file.close()


def write_parquet(
    records: Iterable[LabResult],
    path: str | os.PathLike[str],
    *,
    row_group_size: int = DEFAULT_ROW_GROUP_SIZE,
    compression: str = "zstd",
) -> int:
    """
    Write ``records`` to ``path`` as Parquet (schema ``ARROW_SCHEMA``); returns the count.

    Raises:
        ArrowConversionError: a value does not fit its column (the file is not written).
        OSError: the file cannot be written.
    """
    sink = ParquetSink(path, row_group_size=row_group_size, compression=compression)
    try:
        sink.write(records)
    except BaseException:
        sink.abort()
        raise
    return sink.commit()
