"""
A record's fields as data: one ``FieldSpec`` per attribute, read from the attrs class.

``LabResult`` (``_models``) is the one declaration of a lab result's fields: each
attribute's type says its kind and nullability, and ``attrs.field(metadata=column(...))``
adds what a type cannot say (a wire name other than the PascalCase one, integer bounds,
the primary key).
Every layer derives its tables from ``fields_of``: the wire decoders (``_wire``,
``_decode``), the SQLite schema and rows (``_store_schema``), the CSV export, the Arrow,
Parquet and dlt columns. Each layer holds one entry per *kind*, none per field, so a new
field of a known kind is one line in ``LabResult``.

Pure: no I/O, no wire, no database.
"""

from __future__ import annotations

import enum
import types
from datetime import datetime
from decimal import Decimal
from typing import Any, Final, Literal, Union, get_args, get_origin

import attrs

__all__ = [
    "INT64_MAX",
    "INT64_MIN",
    "KINDS",
    "MAX_EPOCH",
    "MIN_EPOCH",
    "FieldSpec",
    "Kind",
    "column",
    "fields_of",
]

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
#: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the seconds a ``datetime`` can hold.
MIN_EPOCH: Final = -62135596800
MAX_EPOCH: Final = 253402300799

#: What a field holds, whatever its name. Every layer has one rule per kind.
Kind = Literal["int", "text", "bool", "timestamp", "decimal", "enum"]
KINDS: Final[tuple[Kind, ...]] = ("int", "text", "bool", "timestamp", "decimal", "enum")

_META: Final = "lodresults"


@attrs.frozen
class FieldSpec:
    """
    One field of a record: its attribute ``name``, the API's ``wire`` name, its ``kind``
    and ``base`` type (an ``IntEnum`` subclass for ``enum``), whether it may be null
    (``X | None``; a field that may not is required on the wire), the integer range it
    holds (``bounds``: ints and enums as numbers, timestamps as epoch seconds), and whether
    it is the primary key of a table of records.
    """

    name: str
    wire: str
    kind: Kind
    base: type
    nullable: bool
    bounds: tuple[int, int] | None
    key: bool


def column(
    *,
    wire: str | None = None,
    ge: int | None = None,
    le: int | None = None,
    key: bool = False,
) -> dict[str, Any]:
    """
    The metadata of a field (``attrs.field(metadata=column(...))``) with the facts its
    type cannot say: ``wire``, the API's name (default: the attribute's name in
    PascalCase); ``ge``/``le``, bounds of an integer (default: the int64 range); ``key``,
    the primary key.
    """
    return {_META: {"wire": wire, "ge": ge, "le": le, "key": key}}


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _split(t: Any) -> tuple[type, bool]:
    """``X | None`` -> (X, True); ``X`` -> (X, False)."""
    if get_origin(t) in (Union, types.UnionType):
        args = [a for a in get_args(t) if a is not type(None)]
        if len(args) != 1:
            raise TypeError(f"a field's type is one type or one type | None, not {t}")
        return args[0], True
    return t, False


def _kind(base: type) -> Kind:
    # bool before int (bool is an int); an IntEnum before int too.
    if base is bool:
        return "bool"
    if isinstance(base, type) and issubclass(base, enum.IntEnum):
        return "enum"
    kinds: dict[type, Kind] = {int: "int", str: "text", datetime: "timestamp", Decimal: "decimal"}
    if base not in kinds:
        raise TypeError(f"no rule for fields of type {base!r}; known kinds: {KINDS}")
    return kinds[base]


def _bounds(kind: Kind, meta: dict[str, Any]) -> tuple[int, int] | None:
    if kind in ("int", "enum"):
        lo, hi = meta.get("ge"), meta.get("le")
        return (INT64_MIN if lo is None else lo, INT64_MAX if hi is None else hi)
    if meta.get("ge") is not None or meta.get("le") is not None:
        raise TypeError("ge/le apply to integer fields only")
    return (MIN_EPOCH, MAX_EPOCH) if kind == "timestamp" else None


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The ``FieldSpec`` of every attribute of the attrs class ``cls``, in order."""
    attrs.resolve_types(cls)
    out = []
    for a in attrs.fields(cls):
        meta: dict[str, Any] = a.metadata.get(_META, {})
        base, nullable = _split(a.type)
        kind = _kind(base)
        key = bool(meta.get("key"))
        if key and nullable:
            raise TypeError(f"{a.name}: a primary key cannot be nullable")
        wire = meta.get("wire") or _pascal(a.name)
        out.append(FieldSpec(a.name, wire, kind, base, nullable, _bounds(kind, meta), key))
    if [f.key for f in out].count(True) > 1:
        raise TypeError(f"{cls.__name__}: more than one primary key")
    return tuple(out)
