"""
The fast path: a ``Results``/``LatestResults`` body straight from bytes to LabResults.

Decoding a large body through cattrs' generated functions costs about five times the
JSON parse itself. Here msgspec decodes the bytes into a struct of the plain documented
types and bounds, and a generated loop builds the records with the conversions of
``_values``; both are made from ``FIELDS``, like the converter. Whatever msgspec does not
take (a ``Status: 0`` answer, a tolerated spelling such as a numeric UserId, a field that
does not fit) goes through the careful path (``_wire``), which gives the same records or
the precise error. The test suite proves the two paths equal on generated bodies, valid
and damaged, envelopes included.

Knows no HTTP, no windows.
"""

from __future__ import annotations

import linecache
import math
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Union

import attrs
import msgspec

from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import INT64_MAX, INT64_MIN, FieldSpec
from lodresults._records.values import UTC, decimal_of
from lodresults._records.wire import decode_json, structure_results, succeeded

__all__ = ["FastDecoder", "decode_results"]

_INT64: Final = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]


def _wire_type(f: FieldSpec) -> Any:
    """The plain documented type of one field, with its bounds, for msgspec."""
    if f.bounds is not None:  # int, enum, timestamp: an integer in range
        return Annotated[int, msgspec.Meta(ge=f.bounds[0], le=f.bounds[1])]
    if f.kind == "decimal":
        return Union[_INT64, float]  # noqa: UP007
    return {"text": str, "bool": bool}[f.kind]


#: How the generated loop computes a field's value from its wire value ``{}`` (never
#: null there), with the names ``_make_builder`` binds.
_CONVERSIONS: Final = {
    "int": "{}",
    "text": "{}",
    "bool": "{}",
    "timestamp": "fromts({}, UTC)",
    "decimal": "number({})",
    "enum": "enum_{name}({})",
}


#: Decimals converted and kept per decoder: a few hundred kB at most (scores and city
#: coordinates repeat).
_DECIMALS_KEPT: Final = 4096


def _decimal_cache() -> Callable[[int | float], Decimal]:
    """
    ``decimal_of`` with memory: Decimals are immutable, and scores and coordinates repeat
    a lot, so each value is converted once per decoder. ints and floats are cached apart,
    since 5 == 5.0 but Decimal(5) is spelled "5" and Decimal("5.0") "5.0". A closure, not
    an object with ``__call__``: it is called for every decimal of every record.
    """
    ints: dict[int, Decimal] = {}
    floats: dict[float, Decimal] = {}

    def number(v: int | float) -> Decimal:
        cache: dict[Any, Decimal] = ints if type(v) is int else floats
        d = cache.get(v)
        if d is None:
            if v == 0 or (type(v) is float and not math.isfinite(v)):
                return decimal_of(v)  # -0.0 vs 0.0 are equal keys; inf raises ValueError
            if len(cache) >= _DECIMALS_KEPT:
                cache.clear()
            d = cache[v] = decimal_of(v)
        return d

    return number


def _enum_of(base: Any) -> Callable[[int], Any]:
    members = base._value2member_map_

    def of(v: int) -> Any:
        m = members.get(v)
        return m if m is not None else base(v)

    return of


def _source(cls: type, fields: tuple[FieldSpec, ...], names: list[str]) -> str:
    # ``make`` binds ``names`` as the closure's variables (faster to read than globals).
    lines = [
        f"def make({', '.join(names)}):",
        "  def build(records):",
        "    out = []",
        "    append = out.append",
        "    for w in records:",
        f"        o = new({cls.__name__})",
    ]
    for f in fields:
        value = _CONVERSIONS[f.kind].replace("{name}", f.name)
        if value == "{}":
            expr = f"w.{f.wire}"
        elif f.nullable:
            expr = f"None if (x := w.{f.wire}) is None else {value.format('x')}"
        else:
            expr = value.format(f"w.{f.wire}")
        lines.append(f"        set_{f.name}(o, {expr})")
    lines += ["        append(o)", "    return out", "  return build", ""]
    return "\n".join(lines)


def _make_builder(
    cls: type, fields: tuple[FieldSpec, ...], number: Callable[[int | float], Decimal]
) -> Callable[[list[Any]], list[Any]]:
    """
    Generate the loop that turns wire structs into records, as attrs generates __init__
    (and, like attrs, register its source with ``linecache`` so tracebacks show it).

    It fills each instance's slots through their descriptors instead of calling the
    frozen class's ``__init__`` (which goes through ``object.__setattr__`` by name for each
    field): the records are the same, built about a third faster, and that is the largest
    single cost of decoding. Valid only while the class has no validators, converters or
    ``__attrs_post_init__``, which is checked here.
    """
    if not (
        all(a.validator is None and a.converter is None for a in attrs.fields(cls))
        and not hasattr(cls, "__attrs_post_init__")
        and "__slots__" in vars(cls)
    ):
        raise TypeError(f"{cls.__name__}: the fast path needs a plain slotted attrs class")
    filename = f"<lodresults generated build {cls.__module__}.{cls.__qualname__}>"
    bound: dict[str, Any] = {
        "new": object.__new__,
        cls.__name__: cls,
        "fromts": datetime.fromtimestamp,
        "UTC": UTC,
        "number": number,
    }
    for f in fields:
        bound[f"set_{f.name}"] = vars(cls)[f.name].__set__
        if f.kind == "enum":
            bound[f"enum_{f.name}"] = _enum_of(f.base)
    source = _source(cls, fields, list(bound))
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    # The same registration attrs makes for the methods it generates.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    build: Callable[[list[Any]], list[Any]] = namespace["make"](**bound)
    return build


#: Records built per step. Each step's wire structs are dropped once built, so a body's
#: structs and its records are never all alive together: this lowers peak memory when
#: several windows are decoded at once (benchmarks/memory.py), at no measurable speed cost.
_BUILD_CHUNK: Final = 1024


class FastDecoder:
    """``decode`` turns a body into records of ``cls`` (fields ``fields``), fast."""

    def __init__(self, cls: type, fields: tuple[FieldSpec, ...]) -> None:
        record = msgspec.defstruct(
            "_WireRecord",
            [
                (f.wire, _wire_type(f))
                if not f.nullable
                else (f.wire, Union[_wire_type(f), None], None)  # noqa: UP007
                for f in fields
            ],
            kw_only=True,
            gc=False,
        )
        envelope = msgspec.defstruct(
            "_WireEnvelope",
            [
                ("Results", Union[list[record], None, msgspec.UnsetType], msgspec.UNSET),  # type: ignore[valid-type]  # noqa: UP007
                ("Status", Union[int, None], None),  # noqa: UP007
                ("Error", Union[str, None], None),  # noqa: UP007
            ],
            gc=False,
        )
        self._decoder = msgspec.json.Decoder(envelope)
        self._build = _make_builder(cls, fields, _decimal_cache())

    def decode(self, body: bytes) -> list[Any] | None:
        """The records, or None where the careful path must decide."""
        try:
            env: Any = self._decoder.decode(body)
            if succeeded(env.Status, env.Error):
                if env.Results is None:
                    return []
                if env.Results is not msgspec.UNSET:
                    return self._build_releasing(env.Results)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
            # RecursionError: msgspec gives up on unknown fields nested ~1,000 deep; the
            # careful path names the problem as a LodDecodeError.
            pass
        return None

    def _build_releasing(self, structs: list[Any]) -> list[Any]:
        """``self._build(structs)``, emptying ``structs`` chunk by chunk as it goes."""
        out: list[Any] = []
        while structs:
            out += self._build(structs[:_BUILD_CHUNK])
            del structs[:_BUILD_CHUNK]
        return out


_FAST: Final = FastDecoder(LabResult, FIELDS)


def decode_results(body: bytes, *, command: str = "Results") -> list[LabResult]:
    """
    Decode a ``Results``/``LatestResults`` body straight from bytes to LabResults.

    Raises ``LodApiError`` for ``Status: 0``, ``LodJSONError``/``LodDecodeError`` for a
    body that is not JSON, ``LodSchemaError`` naming ``Results[i].Field`` otherwise.
    """
    records = _FAST.decode(body)
    if records is not None:
        return records
    return structure_results(decode_json(body, command=command), command=command)
