"""
Typed columns for destinations other than SQLite (Parquet, dlt), derived from LabResult.

Pure data: no pyarrow, no dlt. Every fact comes from ``field_types()`` (the one place
that says each field's base type and nullability); this module only adds what a typed
destination needs beyond that: one precision and scale for every decimal column.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import attrs

from lodresults._models import CompletionStatus, field_types

__all__ = [
    "COLUMNS",
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "Column",
    "dlt_columns",
]

#: Every decimal column is DECIMAL(38, 18): 20 digits before the point, 18 after. The API
#: sends decimals as JSON numbers (doubles), whose shortest spelling has at most 17
#: significant digits, so scores and coordinates fit exactly; a value that does not fit
#: fails the write naming its column (never rounded silently).
DECIMAL_PRECISION: Final = 38
DECIMAL_SCALE: Final = 18

#: Base type -> the kind of column it becomes. CompletionStatus is stored as its code.
_KINDS: Final[dict[type, str]] = {
    int: "int",
    str: "text",
    bool: "bool",
    datetime: "timestamp",
    Decimal: "decimal",
    CompletionStatus: "status",
}


@attrs.frozen
class Column:
    """One typed column: the LabResult field it holds, its kind and nullability."""

    name: str
    kind: str
    nullable: bool


COLUMNS: Final = tuple(
    Column(name, _KINDS[base], nullable) for name, (base, nullable) in field_types().items()
)

_DLT_TYPES: Final[dict[str, dict[str, Any]]] = {
    "int": {"data_type": "bigint"},
    "status": {"data_type": "bigint"},
    "text": {"data_type": "text"},
    "bool": {"data_type": "bool"},
    "timestamp": {"data_type": "timestamp", "timezone": True},
    "decimal": {"data_type": "decimal", "precision": DECIMAL_PRECISION, "scale": DECIMAL_SCALE},
}


def dlt_columns() -> dict[str, dict[str, Any]]:
    """The dlt column hints (``columns=``) for the ``lab_results`` table."""
    return {c.name: {"name": c.name, **_DLT_TYPES[c.kind], "nullable": c.nullable} for c in COLUMNS}
