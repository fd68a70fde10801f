"""
How one JSON value becomes a field's value: one rule per kind, with the field's bounds.

Both decode paths apply these rules (the converter through its hooks, the fast path by
letting msgspec check the same bounds and building with the same conversions), and the
store reads decimals back with ``decimal_of``. Pure: no JSON parsing, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lodresults._records.schema import INT64_MAX, INT64_MIN, FieldSpec, Kind

__all__ = ["UTC", "decimal_of", "describe", "field_hook", "number_of"]

UTC: Final = timezone.utc

Hook = Callable[[Any, Any], Any]


def describe(v: Any) -> str:
    """The JSON kind of ``v`` as an error message names it (``null``, ``str``...)."""
    return "null" if v is None else type(v).__name__


def _short(n: int) -> str:
    text = str(n)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _int(v: Any) -> int:
    if type(v) is int:
        n = v
    # Tolerated: an integral float (some serializers write 5.0). Never bools or strings.
    elif type(v) is float and v.is_integer():
        n = int(v)
    else:
        raise TypeError(f"expected an integer, got {describe(v)}")
    if not INT64_MIN <= n <= INT64_MAX:
        raise ValueError(f"integer {_short(n)} out of the int64 range")
    return n


def _in(n: int, bounds: tuple[int, int] | None, what: str) -> int:
    if bounds is not None and not bounds[0] <= n <= bounds[1]:
        raise ValueError(f"{what} {_short(n)} out of range {bounds[0]}..{bounds[1]}")
    return n


def _str(v: Any) -> str:
    if type(v) is str:
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            # A lone surrogate ("\ud800" in JSON): no UTF-8 file, terminal or database
            # can hold it, so it is refused here rather than where it is written.
            raise ValueError("not valid Unicode (lone surrogate)") from None
        return v
    # Tolerated: ids that arrive as numbers ("as represented in your organization").
    if type(v) is int:
        return str(v)
    raise TypeError(f"expected a string, got {describe(v)}")


def _bool(v: Any) -> bool:
    if type(v) is bool:
        return v
    raise TypeError(f"expected a boolean, got {describe(v)}")


def _decimal(v: Any) -> Decimal:
    # Decimal(repr(v)): a JSON 87.5 parsed as float 87.5 becomes Decimal("87.5"), exactly.
    if type(v) is int:
        return Decimal(_int(v))
    if type(v) is float:
        if not math.isfinite(v):
            raise ValueError("expected a finite number")
        return Decimal(repr(v))
    if type(v) is str:
        try:
            d = Decimal(v)
        except InvalidOperation:
            raise ValueError(f"not a decimal number: {v[:40]!r}") from None
        if not d.is_finite():
            raise ValueError("expected a finite number")
        return d
    raise TypeError(f"expected a number, got {describe(v)}")


def _rule(spec: FieldSpec) -> Callable[[Any], Any]:
    """The rule for one non-null value of ``spec``'s field."""
    kind: Kind = spec.kind
    bounds = spec.bounds
    base = spec.base
    if kind == "int":
        return lambda v: _in(_int(v), bounds, "integer")
    if kind == "enum":
        return lambda v: base(_in(_int(v), bounds, "integer"))
    if kind == "timestamp":
        return lambda v: datetime.fromtimestamp(_in(_int(v), bounds, "epoch seconds"), UTC)
    rules: dict[Kind, Callable[[Any], Any]] = {"text": _str, "bool": _bool, "decimal": _decimal}
    return rules[kind]


def field_hook(spec: FieldSpec) -> Hook:
    """A cattrs structure hook for ``spec``'s field: null only where it is nullable."""
    rule = _rule(spec)
    if spec.nullable:

        def nullable(v: Any, _: Any = None) -> Any:
            return None if v is None else rule(v)

        return nullable

    def required(v: Any, _: Any = None) -> Any:
        if v is None:
            raise TypeError("is required and may not be null")
        return rule(v)

    return required


def number_of(d: Decimal) -> int | float:
    """
    A Decimal as the JSON number it came from: an int for integral values written
    without a point, a float otherwise (the Decimal came from an int or a double, so this
    gives back the very value the server sent).
    """
    return int(d) if d.as_tuple().exponent == 0 else float(d)


def decimal_of(v: int | float | str) -> Decimal:
    """The inverse of ``number_of``: an exact Decimal (raises ValueError/TypeError)."""
    return _decimal(v)
