"""
Write LabResult records to a Parquet file, streaming, one row group at a time.

Memory holds one row group (``row_group_size`` records) at most, whatever the total. The
file appears under its name only once complete: it is written next to it under a
temporary name and renamed at the end, so a failure or an interrupt never leaves a
truncated file where a complete one is expected.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Final

import pyarrow.parquet as pq

from lodresults._arrow import ARROW_SCHEMA, to_arrow
from lodresults._models import LabResult

__all__ = ["DEFAULT_ROW_GROUP_SIZE", "write_parquet"]

#: 64k rows per group: a few MB of memory, and large enough for fast column scans.
DEFAULT_ROW_GROUP_SIZE: Final = 65_536


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
    if row_group_size < 1:
        raise ValueError("row_group_size must be at least 1")
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    count = 0
    try:
        with pq.ParquetWriter(tmp, ARROW_SCHEMA, compression=compression) as writer:
            it = iter(records)
            while chunk := list(islice(it, row_group_size)):
                writer.write_table(to_arrow(chunk), row_group_size=row_group_size)
                count += len(chunk)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return count
