"""Reading the CSV export back into records (the inverse of ``lodresults export``)."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Final

from lodresults import LabResult
from lodresults._records.models import FIELDS
from lodresults._records.schema import Kind
from lodresults._windows.plan import ISO_FORMAT


def _from_iso(v: str) -> datetime:
    return datetime.strptime(v, ISO_FORMAT).replace(tzinfo=timezone.utc)


#: How each kind is read back from its CSV spelling.
CSV_PARSERS: Final[dict[Kind, Callable[[str], Any]]] = {
    "int": int,
    "text": str,
    "bool": lambda v: v == "true",
    "timestamp": _from_iso,
    "decimal": Decimal,
    "enum": int,
}


def record_from_csv(row: dict[str, str]) -> LabResult:
    """
    One exported CSV row as a LabResult. An empty cell is null for nullable fields (CSV
    cannot tell an empty string apart).
    """
    values: dict[str, Any] = {}
    for f in FIELDS:
        text = row[f.name]
        value = None if f.nullable and text == "" else CSV_PARSERS[f.kind](text)
        values[f.name] = f.base(value) if f.kind == "enum" and value is not None else value
    return LabResult(**values)


def read_csv(text: str) -> list[LabResult]:
    """A whole CSV export as records."""
    return [record_from_csv(row) for row in csv.DictReader(io.StringIO(text))]
