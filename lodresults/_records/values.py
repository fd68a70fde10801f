"""
How one JSON value becomes a field's value: one rule per kind, with the field's bounds.

Both decode paths apply these rules (the converter through its hooks, the fast path by
letting msgspec check the same bounds and building with the same conversions), and the
store reads decimals back with ``decimal_of``. Numbers are exact: JSON numbers reach
these rules as ``Decimal`` (the careful path parses them with ``json_float``/``json_int``,
msgspec decodes them straight to ``Decimal``), never through a float, and every destination
spells a decimal with ``decimal_text``. Pure: no JSON parsing, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from lodresults._records.schema import INT64_MAX, INT64_MIN, FieldSpec, Kind

__all__ = [
    "UTC",
    "Unrepresentable",
    "decimal_of",
    "decimal_text",
    "describe",
    "field_hook",
    "json_float",
    "json_int",
    "number_of",
]

UTC: Final = timezone.utc

Hook = Callable[[Any, Any], Any]


#: The digits an int64 can have: an integral number with more is out of range, whatever
#: its exponent (checked before ``int()``, which would build a 10**999999 integer).
_INT64_DIGITS: Final = 19
#: A decimal whose point is at most this many places left of its first digit is spelled
#: without an exponent (``0.0000001``, as .NET writes a ``decimal``, which has at most 28
#: places); beyond that, or with a positive exponent (``1E+2``), in scientific notation.
_PLAIN_PLACES: Final = 28


class Unrepresentable(str):
    """A JSON number too large for ``Decimal`` (exponent beyond 10**18): refused by field."""


def json_float(text: str) -> Decimal:
    """``parse_float`` for the careful path: a JSON number with a point or exponent."""
    try:
        return Decimal(text)
    except InvalidOperation:
        # Raised by the field's rule, where the error can name the field.
        return Unrepresentable(text)  # type: ignore[return-value]


def json_int(text: str) -> int | Decimal:
    """
    ``parse_int`` for the careful path: an int, except ``-0`` (``Decimal("-0")``, whose
    sign an int cannot keep) and integers longer than ``int()`` takes (a ``Decimal``).
    """
    if text == "-0":
        return Decimal(text)
    try:
        return int(text)
    except ValueError:  # beyond sys.get_int_max_str_digits()
        return json_float(text)


def describe(v: Any) -> str:
    """The JSON kind of ``v`` as an error message names it (``null``, ``str``...)."""
    if v is None:
        return "null"
    return "number" if isinstance(v, (Decimal, float, Unrepresentable)) else type(v).__name__


def _short(n: int) -> str:
    text = str(n)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _int(v: Any) -> int:
    if type(v) is int:
        n = v
    # Tolerated: an integral number written with a point or exponent (some serializers
    # write 5.0). Never bools or strings.
    elif type(v) is Decimal and v.is_finite() and v == v.to_integral_value():
        if v.adjusted() > _INT64_DIGITS:
            raise ValueError(f"integer {v} out of the int64 range")
        n = int(v)
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
    if type(v) is Decimal:  # a JSON number, parsed exactly
        if not v.is_finite():
            raise ValueError("expected a finite number")
        return v
    if type(v) is int:
        return Decimal(v)
    if type(v) is Unrepresentable:
        raise ValueError(f"number {v[:40]} is beyond what a decimal can hold")
    # A float only from an older store (NUMERIC columns): Decimal(repr(v)) is its shortest
    # spelling, the one it was written from.
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


def decimal_text(d: Decimal) -> str:
    """
    The one spelling of a decimal in every export (JSON, CSV, SQLite TEXT): the same
    digits and exponent as the number sent (``48.50`` stays ``48.50``, ``-0.0`` stays
    ``-0.0``), so ``Decimal(decimal_text(d))`` gives back ``d`` exactly, digit for digit.
    Plain (``0.0000001``) when the point is within 28 places, else scientific (``1E+2``,
    ``5E-324``): the letter case, a ``+`` and where the point sits in an exponent form
    sent by the server are not kept (``1.5e1`` is the same decimal as ``15``).
    """
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and exponent <= 0 and d.adjusted() >= -_PLAIN_PLACES:
        return format(d, "f")
    return str(d)


def number_of(d: Decimal) -> int | float:
    """
    A Decimal as a plain JSON-ready number: an int when written without a point or
    exponent, else a float (which keeps 17 significant digits: ``decimal_text`` is exact).
    """
    return int(d) if d.as_tuple().exponent == 0 else float(d)


def decimal_of(v: int | float | str) -> Decimal:
    """An exact Decimal of a stored decimal (TEXT, or a number from an older store)."""
    return _decimal(v)
