"""
LabResult records as Arrow tables: one typed column per field of ``FIELDS``, one pyarrow
type per kind.

Imports pyarrow, so only the optional features (Parquet export, the dlt source) import
this module; ``import lodresults`` never does.
"""

from __future__ import annotations

import decimal
from collections.abc import Sequence
from decimal import Decimal
from operator import attrgetter
from typing import Any, Final

import pyarrow as pa

from lodresults._exceptions import LodError
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import Kind

__all__ = [
    "ARROW_SCHEMA",
    "DECIMAL_PRECISION",
    "DECIMAL_SCALE",
    "ArrowConversionError",
    "to_arrow",
]

#: Every decimal column is DECIMAL(38, 18): 20 digits before the point, 18 after. The API
#: sends decimals as JSON numbers (doubles), whose shortest spelling has at most 17
#: significant digits, so scores and coordinates fit exactly; a value that does not fit
#: fails the write naming its column (never rounded silently).
DECIMAL_PRECISION: Final = 38
DECIMAL_SCALE: Final = 18

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
    [pa.field(f.name, _ARROW_TYPES[f.kind], nullable=f.nullable) for f in FIELDS]
)

_GETTERS: Final = tuple((f.name, attrgetter(f.name), f.kind) for f in FIELDS)

_QUANTUM: Final = Decimal(1).scaleb(-DECIMAL_SCALE)
_LIMIT: Final = Decimal(10) ** (DECIMAL_PRECISION - DECIMAL_SCALE)
#: Enough digits to quantize any value below _LIMIT to DECIMAL_SCALE places exactly.
_EXACT: Final = decimal.Context(prec=DECIMAL_PRECISION + 2)


class ArrowConversionError(LodError):
    """A record's value does not fit its typed column (e.g. a decimal beyond DECIMAL(38, 18))."""


def to_arrow(records: Sequence[LabResult]) -> pa.Table:
    """
    ``records`` as one Arrow table with ``ARROW_SCHEMA``, in the given order.

    Raises:
        ArrowConversionError: a value does not fit its column; the message names the
            column (values are never rounded or truncated).
    """
    arrays: list[pa.Array] = []
    for (name, get, kind), field in zip(_GETTERS, ARROW_SCHEMA, strict=True):
        values: list[Any] = [get(r) for r in records]
        if kind == "enum":
            values = [int(v) for v in values]
        elif kind == "decimal":
            _check_decimals(name, values)
        try:
            arrays.append(pa.array(values, type=field.type))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
            raise ArrowConversionError(f"column {name} ({field.type}): {exc}") from None
    return pa.Table.from_arrays(arrays, schema=ARROW_SCHEMA)


def _check_decimals(name: str, values: list[Decimal | None]) -> None:
    """
    Refuse values DECIMAL(38, 18) cannot hold exactly. pyarrow itself refuses most, but
    turns a very small one (such as 4.6e-233) into 0 without a word (pyarrow 21-26).
    """
    for v in values:
        if v is None:
            continue
        exponent = v.as_tuple().exponent
        if (
            not isinstance(exponent, int)
            or v.copy_abs() >= _LIMIT
            or (exponent < -DECIMAL_SCALE and _EXACT.quantize(v, _QUANTUM) != v)
        ):
            raise ArrowConversionError(
                f"column {name} ({ARROW_SCHEMA.field(name).type}): {v} does not fit exactly"
            )
