"""
LabResult records as Arrow tables: one typed column per field of ``FIELDS``, one pyarrow
type per kind, and ``unfit_decimals``, the wider form of decimals the typed column cannot
hold (docs/numbers.md).

Imports pyarrow, so only the optional features (Parquet export, the dlt source) import
this module; ``import lodresults`` never does.
"""

from __future__ import annotations

import decimal
import logging
from collections.abc import Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

import pyarrow as pa

from lodresults._exceptions import LodError
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import Kind
from lodresults._records.values import decimal_text
from lodresults._records.wire import encode_json

__all__ = [
    "ARROW_SCHEMA",
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "UNFIT_DECIMALS",
    "ArrowConversionError",
    "to_arrow",
]

logger = logging.getLogger("lodresults")

#: Every decimal column is DECIMAL(38, 18): 20 digits before the point, 18 after, the
#: widest type every warehouse dlt loads into takes (DuckDB, Snowflake: 38 digits). Scores
#: and coordinates fit exactly. A value that does not (``1E+30``, ``5E-324``, a .NET
#: decimal with more than 18 places) is never rounded: its column is null in that row and
#: ``UNFIT_DECIMALS`` holds it exactly.
DECIMAL_PRECISION: Final = 38
DECIMAL_SCALE: Final = 18
#: The column of the decimals of a row that do not fit DECIMAL(38, 18): null when all
#: fit, else a JSON object of field name -> the exact number as a string (``decimal_text``),
#: e.g. ``{"exam_score":"1E+30"}``.
UNFIT_DECIMALS: Final = "unfit_decimals"

_ARROW_TYPES: Final[dict[Kind, pa.DataType]] = {
    "int": pa.int64(),
    "enum": pa.int64(),
    "text": pa.string(),
    "bool": pa.bool_(),
    # Microseconds: the unit every Parquet reader and warehouse takes for a UTC instant.
    "timestamp": pa.timestamp("us", tz="UTC"),
    "decimal": pa.decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
}

#: The schema of every table ``to_arrow`` builds (and of the Parquet export).
ARROW_SCHEMA: Final = pa.schema(
    [
        *(pa.field(f.name, _ARROW_TYPES[f.kind], nullable=f.nullable) for f in FIELDS),
        pa.field(UNFIT_DECIMALS, pa.string(), nullable=True),
    ]
)

_GETTERS: Final = tuple((f.name, attrgetter(f.name), f.kind, f.nullable) for f in FIELDS)
_KEY: Final = attrgetter(next(f.name for f in FIELDS if f.key))

_QUANTUM: Final = Decimal(1).scaleb(-DECIMAL_SCALE)
_LIMIT: Final = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
#: Enough digits to quantize any value below _LIMIT to DECIMAL_SCALE places exactly.
_EXACT: Final = decimal.Context(prec=DECIMAL_PRECISION + 2)


class ArrowConversionError(LodError):
    """A record's value does not fit its typed column (a required decimal too wide)."""


def to_arrow(records: Sequence[LabResult]) -> pa.Table:
    """
    ``records`` as one Arrow table with ``ARROW_SCHEMA``, in the given order.

    A decimal that DECIMAL(38, 18) cannot hold exactly is left null in its column and kept
    exactly in the row's ``unfit_decimals`` (logged at WARNING, naming the lab and field):
    the other records and fields load as usual, nothing is rounded.

    Raises:
        ArrowConversionError: a value does not fit its column and has no wider form (a
            decimal of a field that may not be null), naming the lab and the column.
    """
    arrays: list[pa.Array] = []
    # Exact texts, as JSON strings: a JSON reader (DuckDB's json_extract) may parse a
    # JSON number as a double.
    unfit: dict[int, dict[str, str]] = {}
    for name, get, kind, nullable in _GETTERS:
        field = ARROW_SCHEMA.field(name)
        values: list[Any] = [get(r) for r in records]
        if kind == "enum":
            values = [int(v) for v in values]
        elif kind == "decimal":
            for i in _unfit_rows(values):
                lab = _KEY(records[i])
                if not nullable:
                    raise ArrowConversionError(
                        f"lab {lab}: {name} = {decimal_text(values[i])} does not fit "
                        f"{field.type} exactly"
                    )
                logger.warning(
                    "lab %s: %s = %s does not fit %s exactly; stored in %s",
                    lab, name, decimal_text(values[i]), field.type, UNFIT_DECIMALS,
                )  # fmt: skip
                unfit.setdefault(i, {})[name] = decimal_text(values[i])
                values[i] = None
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ArrowConversionError(f"column {name} ({field.type}): {exc}") from None
    wide: list[str | None] = [None] * len(records)
    for i, fields in unfit.items():
        wide[i] = encode_json(fields).decode()
    arrays.append(pa.array(wide, type=pa.string()))
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def _fits(v: Decimal) -> bool:
    """Whether DECIMAL(38, 18) holds ``v`` exactly."""
    exponent = v.as_tuple().exponent
    return (
        isinstance(exponent, int)
        and v.copy_abs() < _LIMIT
        # pyarrow itself refuses most values that do not fit, but turns a very small one
        # (such as 4.6e-233) into 0 without a word (pyarrow 21-26).
        and (exponent >= -DECIMAL_SCALE or _EXACT.quantize(v, _QUANTUM) == v)
    )


def _unfit_rows(values: list[Decimal | None]) -> list[int]:
    """The rows whose decimal DECIMAL(38, 18) cannot hold exactly."""
    return [i for i, v in enumerate(values) if v is not None and not _fits(v)]
