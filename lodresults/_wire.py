"""
How a LabResult is spelled on the wire: the one cattrs converter, both directions.

The converter (``converter``) is the single source of truth for the JSON format. Decoding
a large ``Results`` body through cattrs' generated functions costs about five times the
JSON parse itself, so the hot path (``decode_results``) lets msgspec decode the bytes into
a struct of the plain documented types and builds the records with the very same
per-type rules; the test suite proves the two equal on generated bodies, valid and
invalid. When the hot path meets anything unusual, the body goes through the converter,
whose detailed validation names the offending field.

The converter is private on purpose: the hot path builds records without it (that is
where its speed comes from), so a change made to it would apply to some bodies and not
to others. Both paths read the same tables (``field_types``, ``INT_RANGES``,
``_REQUIRED``) and the same envelope rule (``_succeeded``) instead.

Knows no HTTP, no windows.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Final, Union

import attrs
import cattrs
import msgspec
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from lodresults._exceptions import (
    LodApiError,
    LodDecodeError,
    LodJSONError,
    LodSchemaError,
    LodWindowTooLongError,
)
from lodresults._models import CompletionStatus, LabResult, field_types

__all__ = [
    "WIRE_NAMES",
    "converter",
    "decimal_of",
    "decode_json",
    "decode_results",
    "dump_record",
    "dumps_records",
    "number_of",
    "results_envelope",
    "structure_record",
    "structure_result",
    "structure_results",
    "unstructure_record",
]

_UTC: Final = timezone.utc
# datetime supports years 1..9999; anything outside cannot be a lab's time.
_MIN_EPOCH: Final = -62135596800
_MAX_EPOCH: Final = 253402300799
_EXCERPT: Final = 120
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1

# Fields the documents mark as not nullable. A null or a missing value is a schema error.
_REQUIRED: Final = frozenset(
    {
        "lab_instance_id",
        "lab_profile_id",
        "start",
        "completion_status",
        "total_run_time_seconds",
        "task_complete_percent",
        "is_exam",
    }
)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


#: snake_case attribute -> the API's PascalCase key.
WIRE_NAMES: Final[dict[str, str]] = {a.name: _pascal(a.name) for a in attrs.fields(LabResult)}

#: The integers each integer field may hold: ids are positive, and every integer fits the
#: int64 that SQLite (and the API's own int64 columns) can store. Fields not listed here
#: hold any int64. Both decode paths read this table.
INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "lab_instance_id": (1, INT64_MAX),
    "lab_profile_id": (1, INT64_MAX),
}


# --- per-type rules (shared by the converter and the fast path) -----------------------


def _int(v: Any, _: Any = None) -> int:
    if type(v) is int:
        n = v
    # Tolerated: an integral float (some serializers write 5.0). Never bools or strings.
    elif type(v) is float and v.is_integer():
        n = int(v)
    else:
        raise TypeError(f"expected an integer, got {_kind(v)}")
    if not INT64_MIN <= n <= INT64_MAX:
        raise ValueError(f"integer {_short(n)} out of the int64 range")
    return n


def _bounded(lo: int, hi: int) -> Callable[[Any, Any], int]:
    def hook(v: Any, _: Any = None) -> int:
        n = _int(v)
        if not lo <= n <= hi:
            raise ValueError(f"integer {_short(n)} out of range {lo}..{hi}")
        return n

    return hook


def _short(n: int) -> str:
    text = str(n)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} digits)"


def _str(v: Any, _: Any = None) -> str:
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
    raise TypeError(f"expected a string, got {_kind(v)}")


def _bool(v: Any, _: Any = None) -> bool:
    if type(v) is bool:
        return v
    raise TypeError(f"expected a boolean, got {_kind(v)}")


def _epoch(v: Any, _: Any = None) -> datetime:
    n = _int(v)
    if not _MIN_EPOCH <= n <= _MAX_EPOCH:
        raise ValueError(f"epoch seconds {n} out of range")
    return datetime.fromtimestamp(n, _UTC)


def _decimal(v: Any, _: Any = None) -> Decimal:
    # Decimal(str(v)): a JSON 87.5 parsed as float 87.5 becomes Decimal("87.5"), exactly.
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
    raise TypeError(f"expected a number, got {_kind(v)}")


def _status(v: Any, _: Any = None) -> CompletionStatus:
    return CompletionStatus(_int(v))


def _kind(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _optional(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(v: Any, t: Any = None) -> Any:
        return None if v is None else fn(v, t)

    return hook


def _required(fn: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def hook(v: Any, t: Any = None) -> Any:
        if v is None:
            raise TypeError("is required and may not be null")
        return fn(v, t)

    return hook


_BASE_HOOKS: Final[dict[type, Callable[[Any, Any], Any]]] = {
    int: _int,
    str: _str,
    bool: _bool,
    datetime: _epoch,
    Decimal: _decimal,
    CompletionStatus: _status,
}


def _field_hook(name: str, base: type) -> Callable[[Any, Any], Any]:
    hook = _bounded(*INT_RANGES[name]) if name in INT_RANGES else _BASE_HOOKS[base]
    return _required(hook) if name in _REQUIRED else _optional(hook)


_FIELD_HOOKS: Final = {name: _field_hook(name, base) for name, (base, _) in field_types().items()}


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


def _renames() -> dict[str, Any]:
    return {n: override(rename=w) for n, w in WIRE_NAMES.items()}


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True)
    overrides: dict[str, Any] = {}
    for a in attrs.fields(LabResult):
        overrides[a.name] = override(
            rename=WIRE_NAMES[a.name],
            struct_hook=_FIELD_HOOKS[a.name],
        )
    structure = make_dict_structure_fn(
        LabResult,
        conv,
        _cattrs_forbid_extra_keys=False,
        _cattrs_detailed_validation=True,
        **overrides,
    )

    def structure_with_defaults(obj: Any, cls: Any) -> LabResult:
        if not isinstance(obj, Mapping):
            raise TypeError(f"expected a JSON object, got {_kind(obj)}")
        # Absent nullable keys mean null; absent required keys stay absent (cattrs names them).
        filled = dict(obj)
        for name, wire in WIRE_NAMES.items():
            if name not in _REQUIRED and wire not in filled:
                filled[wire] = None
        return structure(filled, cls)

    conv.register_structure_hook(LabResult, structure_with_defaults)

    conv.register_unstructure_hook(datetime, lambda d: int(d.timestamp()))
    # JSON has one number type. The Decimal came from the shortest repr of a float (or an
    # int), so float(d) gives back the very value the server sent.
    conv.register_unstructure_hook(Decimal, number_of)
    conv.register_unstructure_hook(CompletionStatus, int)
    conv.register_unstructure_hook(
        LabResult,
        make_dict_unstructure_fn(LabResult, conv, **_renames()),
    )
    return conv


#: The converter that owns the wire format (JSON-ready dicts <-> LabResult).
converter: Final = _make_converter()


# --- errors -----------------------------------------------------------------------------


def _excerpt(obj: Any) -> str:
    try:
        text = orjson.dumps(obj, default=str).decode()
    except TypeError:  # nested deeper than orjson goes, or a lone surrogate
        try:
            text = repr(obj)
        except RecursionError:
            text = f"(a {_kind(obj)} nested too deeply to show)"
    return text if len(text) <= _EXCERPT else text[: _EXCERPT - 3] + "..."


def _first_field_error(exc: BaseException) -> tuple[str | None, str]:
    """Walk a cattrs validation error down to the first field that failed."""
    if isinstance(exc, cattrs.ClassValidationError):
        for inner in exc.exceptions:
            for note in getattr(inner, "__notes__", ()):
                if isinstance(note, cattrs.AttributeValidationNote):
                    if isinstance(inner, KeyError):
                        return WIRE_NAMES.get(note.name, note.name), "is required but missing"
                    return WIRE_NAMES.get(note.name, note.name), str(inner)
        if exc.exceptions:
            return _first_field_error(exc.exceptions[0])
    return None, str(exc)


def _schema_error(exc: Exception, record: Any, where: str, command: str | None) -> LodSchemaError:
    field, reason = _first_field_error(exc)
    name = f"{where}.{field}" if field else where
    return LodSchemaError(
        f"{command or 'response'}: {name}: {reason}; record: {_excerpt(record)}",
        field=field,
        excerpt=_excerpt(record),
        command=command,
    )


# --- decoding -------------------------------------------------------------------------


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode_json(body: bytes, *, command: str | None = None) -> Any:
    """
    Parse a body, raising ``LodJSONError`` with a short excerpt when it is not JSON.

    The stdlib parser, not orjson: this is the careful path (the hot path is msgspec in
    ``decode_results``), and orjson silently turns integers beyond 64 bits into floats.
    """
    try:
        return json.loads(body, parse_constant=_no_constants)
    except ValueError as exc:
        reason = str(exc).split(":")[0]
        deep = False
    except RecursionError:
        reason = "nested too deeply to decode"
        deep = True
    # Raised outside the except block: no parser exception stays on __context__.
    snippet = body[:_EXCERPT].decode("utf-8", "replace")
    # Nesting beyond the parser's depth is the same on every attempt: a LodDecodeError
    # that is not retried (a LodJSONError is, as a cut body usually is transient).
    cls = LodDecodeError if deep else LodJSONError
    raise cls(
        f"{command or 'response'}: body is not valid JSON ({reason}); starts: {snippet!r}",
        excerpt=snippet,
        command=command,
    )


_TOO_LONG = re.compile(r"(cannot|can't|may not|must not)\s+exceed|too (long|large)", re.I)


def _succeeded(status: Any, error: Any) -> bool:
    """
    The one envelope rule, for both decode paths: ``Status: 1`` is success; a ``Status``
    absent or ``null`` is success unless an ``Error`` text says otherwise.
    """
    if status is None:
        return error is None or error == ""
    return type(status) is int and status == 1


def _check_envelope(doc: Any, command: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise LodSchemaError(
            f"{command}: expected a JSON object, got {_kind(doc)}: {_excerpt(doc)}",
            excerpt=_excerpt(doc),
            command=command,
        )
    status = doc.get("Status")
    error = doc.get("Error")
    if _succeeded(status, error):
        return doc
    if (type(status) is int and status == 0) or status is None:
        text = error if isinstance(error, str) else "(no error text)"
        # A lone surrogate cannot be printed or logged: keep it visible but escaped.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        cls = LodApiError
        if command == "Results" and _TOO_LONG.search(text):
            cls = LodWindowTooLongError
        raise cls(f"{command}: the API answered Status 0: {text}", error_text=text, command=command)
    raise LodSchemaError(
        f"{command}: Status must be 0 or 1, got {_excerpt(status)}",
        field="Status",
        excerpt=_excerpt(status),
        command=command,
    )


def structure_record(obj: Any, *, where: str = "record", command: str | None = None) -> LabResult:
    """
    Turn one decoded JSON record into a LabResult through the converter.

    Raises ``LodSchemaError`` naming the field (wire name) that does not fit.
    """
    try:
        return converter.structure(obj, LabResult)
    except Exception as exc:
        error = _schema_error(exc, obj, where, command)
    raise error  # outside the except block: no cattrs error stays on __context__


def _records_of(doc: Mapping[str, Any], command: str) -> list[Any]:
    if "Results" not in doc:
        raise LodSchemaError(
            f"{command}: Results is required but missing", field="Results", command=command
        )
    records = doc["Results"]
    if records is None:
        # A .NET serializer writes an uninitialised list as null: no records.
        return []
    if not isinstance(records, list):
        raise LodSchemaError(
            f"{command}: Results must be an array or null, got {_kind(records)}",
            field="Results",
            excerpt=_excerpt(records),
            command=command,
        )
    return records


def structure_results(doc: Any, *, command: str = "Results") -> list[LabResult]:
    """
    Check a decoded ``Results``/``LatestResults`` envelope and convert its records.

    Raises ``LodApiError`` for ``Status: 0`` (``LodWindowTooLongError`` for the 7-day
    rule) and ``LodSchemaError`` naming ``Results[i].Field`` for a record that does not fit.
    """
    records = _records_of(_check_envelope(doc, command), command)
    return [
        structure_record(rec, where=f"Results[{i}]", command=command)
        for i, rec in enumerate(records)
    ]


# --- the hot path -------------------------------------------------------------------------


def _wire_type(name: str, base: type) -> Any:
    """The plain documented type of one field, with its bounds, for msgspec."""
    if base is int:
        lo, hi = INT_RANGES.get(name, (INT64_MIN, INT64_MAX))
        return Annotated[int, msgspec.Meta(ge=lo, le=hi)]
    if base is datetime:
        return Annotated[int, msgspec.Meta(ge=_MIN_EPOCH, le=_MAX_EPOCH)]
    if base is CompletionStatus:
        return Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
    if base is Decimal:
        return Union[Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)], float]  # noqa: UP007
    return base  # str, bool


def _wire_record() -> type[msgspec.Struct]:
    """
    The documented record with the plain documented types and bounds, nothing tolerated,
    made from the same tables as the converter (``field_types``, ``INT_RANGES``).
    """
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for name, (base, _nullable) in field_types().items():
        t = _wire_type(name, base)
        if name in _REQUIRED:
            fields.append((WIRE_NAMES[name], t))
        else:
            fields.append((WIRE_NAMES[name], Union[t, None], None))  # noqa: UP007
    return msgspec.defstruct("_WireRecord", fields, kw_only=True, gc=False)


_WireRecord: Final = _wire_record()


_WireEnvelope: Final = msgspec.defstruct(
    "_WireEnvelope",
    [
        ("Results", Union[list[_WireRecord], None, msgspec.UnsetType], msgspec.UNSET),  # type: ignore[valid-type]  # noqa: UP007
        ("Status", Union[int, None], None),  # noqa: UP007
        ("Error", Union[str, None], None),  # noqa: UP007
    ],
    gc=False,
)

_ENVELOPE_DECODER: Final = msgspec.json.Decoder(_WireEnvelope)
_status_map: Final = CompletionStatus._value2member_map_
# Decimals are immutable, and scores and coordinates repeat a lot: convert each value once.
# ints and floats are cached apart, since 5 == 5.0 but Decimal(5) is spelled "5" and
# Decimal("5.0") "5.0".
_DEC_INT: Final[dict[int, Decimal]] = {}
_DEC_FLOAT: Final[dict[float, Decimal]] = {}
_DEC_CACHE_MAX: Final = 4096  # a few hundred kB at most; scores and city coordinates repeat


def _number(v: int | float) -> Decimal:
    cache: dict[Any, Decimal] = _DEC_INT if type(v) is int else _DEC_FLOAT
    d = cache.get(v)
    if d is None:
        if v == 0 or (type(v) is float and not math.isfinite(v)):
            return _decimal(v)  # -0.0 vs 0.0 are equal keys; inf raises ValueError
        if len(cache) >= _DEC_CACHE_MAX:
            cache.clear()
        d = cache[v] = _decimal(v)
    return d


def _status_of(v: int) -> CompletionStatus:
    m = _status_map.get(v)
    return m if m is not None else CompletionStatus(v)  # type: ignore[return-value]


# How each LabResult field is computed from a _WireRecord ``w`` (with the locals that
# _make_builder binds first). The same per-type rules as the converter's hooks above.
_BUILD_EXPRESSIONS: Final = {
    "lab_instance_id": "w.LabInstanceId",
    "lab_profile_id": "w.LabProfileId",
    "start": "fromts(w.Start, UTC)",
    "end": "None if en is None else fromts(en, UTC)",
    "last_activity": "None if la is None else fromts(la, UTC)",
    "user_id": "w.UserId",
    "class_id": "w.ClassId",
    "completion_status": "status(w.CompletionStatus)",
    "total_run_time_seconds": "w.TotalRunTimeSeconds",
    "task_complete_percent": "w.TaskCompletePercent",
    "is_exam": "w.IsExam",
    "exam_passed": "w.ExamPassed",
    "exam_score": "None if (x := w.ExamScore) is None else number(x)",
    "exam_max_possible_score": "w.ExamMaxPossibleScore",
    "exam_passing_score": "w.ExamPassingScore",
    "ip_address": "w.IpAddress",
    "country": "w.Country",
    "region": "w.Region",
    "city": "w.City",
    "latitude": "None if (x := w.Latitude) is None else number(x)",
    "longitude": "None if (x := w.Longitude) is None else number(x)",
    "lab_host_id": "w.LabHostId",
    "datacenter_id": "w.DatacenterId",
    "delivery_region_id": "w.DeliveryRegionId",
}


def _make_builder() -> Callable[[list[Any]], list[LabResult]]:
    """
    Generate the loop that turns wire structs into LabResults, as attrs generates __init__.

    It fills each instance's slots through their descriptors instead of calling the
    frozen class's ``__init__`` (which goes through ``object.__setattr__`` by name for each
    of the 24 fields): the records are the same, built about a third faster, and that is
    the largest single cost of decoding. Valid only while LabResult has no validators,
    converters or ``__attrs_post_init__``, which is checked here at import.
    """
    fields = attrs.fields(LabResult)
    assert set(_BUILD_EXPRESSIONS) == {a.name for a in fields}
    assert all(a.validator is None and a.converter is None for a in fields)
    assert not hasattr(LabResult, "__attrs_post_init__") and "__slots__" in vars(LabResult)
    lines = [
        "def build(records):",
        "    out = []",
        "    append = out.append",
        "    for w in records:",
        "        en = w.End",
        "        la = w.LastActivity",
        "        o = new(LabResult)",
        *(f"        set_{a.name}(o, {_BUILD_EXPRESSIONS[a.name]})" for a in fields),
        "        append(o)",
        "    return out",
    ]
    namespace: dict[str, Any] = {
        "new": object.__new__,
        "LabResult": LabResult,
        "fromts": datetime.fromtimestamp,
        "UTC": _UTC,
        "status": _status_of,
        "number": _number,
    }
    for a in fields:
        namespace[f"set_{a.name}"] = vars(LabResult)[a.name].__set__
    exec(compile("\n".join(lines), "<lodresults._wire build>", "exec"), namespace)  # noqa: S102
    build: Callable[[list[Any]], list[LabResult]] = namespace["build"]
    return build


_build: Final = _make_builder()

#: Records built per step. Each step's wire structs are dropped once built, so a body's
#: structs and its LabResults are never all alive together: this lowers peak memory when
#: several windows are decoded at once (benchmarks/memory.py), at no measurable speed cost.
_BUILD_CHUNK: Final = 1024


def _build_releasing(structs: list[Any]) -> list[LabResult]:
    """``_build(structs)``, emptying ``structs`` chunk by chunk as it goes."""
    out: list[LabResult] = []
    while structs:
        out += _build(structs[:_BUILD_CHUNK])
        del structs[:_BUILD_CHUNK]
    return out


def decode_results(body: bytes, *, command: str = "Results") -> list[LabResult]:
    """
    Decode a ``Results``/``LatestResults`` body straight from bytes to LabResults.

    The hot path: msgspec decodes into a struct of the plain documented types, then the
    records are built with the converter's own per-type rules. Anything else (a
    ``Status: 0`` answer, a tolerated spelling such as a numeric UserId, a field that does
    not fit) goes through ``decode_json`` and the converter, which give the same records or
    the precise error.
    """
    try:
        env: Any = _ENVELOPE_DECODER.decode(body)
        if _succeeded(env.Status, env.Error):
            if env.Results is None:
                return []
            if env.Results is not msgspec.UNSET:
                return _build_releasing(env.Results)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        # RecursionError: msgspec gives up on unknown fields nested ~1,000 deep; the
        # careful path names the problem as a LodDecodeError.
        pass
    return structure_results(decode_json(body, command=command), command=command)


def structure_result(doc: Any, lab_instance_id: int) -> LabResult:
    """
    Check a ``Result`` envelope and return its record with ``lab_instance_id`` filled in.
    """
    envelope = _check_envelope(doc, "Result")
    record = {k: v for k, v in envelope.items() if k not in ("Status", "Error")}
    record["LabInstanceId"] = lab_instance_id
    return structure_record(record, where="Result", command="Result")


def unstructure_record(record: LabResult) -> dict[str, Any]:
    """
    A LabResult as the API's JSON object (PascalCase keys, epoch seconds, plain numbers).
    """
    out: dict[str, Any] = converter.unstructure(record)
    return out


def dump_record(record: LabResult) -> bytes:
    """One record as compact JSON bytes, in the API's shape."""
    return orjson.dumps(unstructure_record(record))


def results_envelope(records: Iterable[LabResult]) -> dict[str, Any]:
    """A ``Results`` envelope (``Status: 1``) holding ``records``, JSON-ready."""
    return {"Results": [unstructure_record(r) for r in records], "Status": 1, "Error": None}


def dumps_records(records: Iterable[LabResult]) -> bytes:
    """A ``Results`` envelope (``Status: 1``) holding ``records``, as JSON bytes."""
    return orjson.dumps(results_envelope(records))
