"""
How a LabResult is spelled on the wire: the one cattrs converter, both directions.

The converter (``converter``) is the single authority for the JSON format: its structure
hooks are the per-kind rules of ``_values`` applied to the fields of ``FIELDS``, under
the wire names declared there. This is the careful path, whose detailed validation names
the offending field; ``_decode.decode_results`` is the fast path for large bodies, built
from the same ``FIELDS`` and rules and proven equal to this one by the test suite. Both
read the same envelope rule (``succeeded``).

The converter is private on purpose: the fast path builds records without it (that is
where its speed comes from), so a change made to it would apply to some bodies and not
to others.

Knows no HTTP, no windows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import cattrs
import msgspec
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from lodresults._exceptions import (
    EXCERPT_CHARS,
    LodApiError,
    LodDecodeError,
    LodJSONError,
    LodNotFoundError,
    LodSchemaError,
    LodWindowTooLongError,
)
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import FieldSpec
from lodresults._records.values import (
    decimal_text,
    describe,
    field_hook,
    json_float,
    json_int,
    number_of,
)

#: A response body as the transport reads it (grown in a ``bytearray``) or as a caller
#: passes it: every reader here takes either.
Body = bytes | bytearray

__all__ = [
    "WIRE_NAMES",
    "Body",
    "converter",
    "decode_json",
    "dump_record",
    "dumps_records",
    "encode_json",
    "make_converter",
    "record_doc",
    "results_envelope",
    "structure_record",
    "structure_result",
    "structure_results",
    "succeeded",
    "unstructure_record",
]

#: snake_case attribute -> the API's PascalCase key.
WIRE_NAMES: Final[dict[str, str]] = {f.name: f.wire for f in FIELDS}


def make_converter(cls: type, fields: tuple[FieldSpec, ...]) -> cattrs.Converter:
    """The converter for the record class ``cls`` whose fields are ``fields``."""
    conv = cattrs.Converter(detailed_validation=True)
    hooks: dict[str, Any] = {
        f.name: override(rename=f.wire, struct_hook=field_hook(f)) for f in fields
    }
    structure: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls,
        conv,
        _cattrs_forbid_extra_keys=False,
        _cattrs_detailed_validation=True,
        **hooks,
    )
    nullable = [f.wire for f in fields if f.nullable]

    def structure_with_defaults(obj: Any, target: Any) -> Any:
        if not isinstance(obj, Mapping):
            raise TypeError(f"expected a JSON object, got {describe(obj)}")
        # Absent nullable keys mean null; absent required keys stay absent (cattrs names them).
        filled = dict(obj)
        for wire in nullable:
            if wire not in filled:
                filled[wire] = None
        return structure(filled, target)

    conv.register_structure_hook(cls, structure_with_defaults)

    conv.register_unstructure_hook(datetime, lambda d: int(d.timestamp()))
    # Decimals stay Decimal (exact); ``encode_json`` writes them as JSON numbers.
    conv.register_unstructure_hook(Decimal, lambda d: d)
    renames: dict[str, Any] = {f.name: override(rename=f.wire) for f in fields}
    for f in fields:
        if f.kind == "enum":
            conv.register_unstructure_hook(f.base, int)
    conv.register_unstructure_hook(
        cls,
        make_dict_unstructure_fn(cls, conv, **renames),
    )
    return conv


#: The converter that owns the wire format (JSON-ready dicts <-> LabResult).
converter: Final = make_converter(LabResult, FIELDS)


# msgspec, the one JSON library of the package: it encodes what it decodes, and a
# ``Raw`` value is written as it is (the exact spelling of a decimal).
_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")


def _exact_numbers(doc: Any) -> Any:
    """``doc`` with every Decimal replaced by its exact JSON spelling (``decimal_text``)."""
    if type(doc) is Decimal:
        return msgspec.Raw(decimal_text(doc).encode())
    if type(doc) is dict:
        return {k: _exact_numbers(v) for k, v in doc.items()}
    if type(doc) is list:
        return [_exact_numbers(v) for v in doc]
    return doc


def encode_json(doc: Any, *, indent: int = 0) -> bytes:
    """
    ``doc`` (JSON-ready values and ``Decimal``) as JSON bytes; decimals are JSON numbers
    spelled with ``decimal_text``. ``indent``: spaces per level (0: compact).
    """
    raw = _ENCODER.encode(_exact_numbers(doc))
    return msgspec.json.format(raw, indent=indent) if indent else raw


# --- errors -----------------------------------------------------------------------------


def _excerpt(obj: Any) -> str:
    try:
        text = _ENCODER.encode(_exact_numbers(obj)).decode()
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError):
        # nested too deeply, a lone surrogate, a value JSON has no spelling for
        try:
            text = repr(obj)
        except RecursionError:
            text = f"(a {describe(obj)} nested too deeply to show)"
    return text if len(text) <= EXCERPT_CHARS else text[: EXCERPT_CHARS - 3] + "..."


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


def decode_json(body: Body, *, command: str | None = None) -> Any:
    """
    Parse a body, raising ``LodJSONError`` with a short excerpt when it is not JSON.

    Numbers other than plain integers come out as exact ``Decimal`` values (never a float,
    which keeps 17 digits), as msgspec decodes them on the fast path. The stdlib parser:
    this is the careful path, where every tolerated spelling must reach the field rules.
    """
    try:
        return json.loads(
            body, parse_constant=_no_constants, parse_float=json_float, parse_int=json_int
        )
    except ValueError as exc:
        reason = str(exc).split(":")[0]
        deep = False
    except RecursionError:
        reason = "nested too deeply to decode"
        deep = True
    # Raised outside the except block: no parser exception stays on __context__.
    snippet = body[:EXCERPT_CHARS].decode("utf-8", "replace")
    # Nesting beyond the parser's depth is the same on every attempt: a LodDecodeError
    # that is not retried (a LodJSONError is, as a cut body usually is transient).
    cls = LodDecodeError if deep else LodJSONError
    raise cls(
        f"{command or 'response'}: body is not valid JSON ({reason}); starts: {snippet!r}",
        excerpt=snippet,
        command=command,
    )


_TOO_LONG = re.compile(r"(cannot|can't|may not|must not)\s+exceed|too (long|large)", re.I)
#: How a server says it does not know a lab id ("Lab instance 7 not found").
_NOT_FOUND = re.compile(r"\bnot\s+found\b|does\s*n[o']t\s+exist|\bno\s+such\b", re.I)


def succeeded(status: Any, error: Any) -> bool:
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
            f"{command}: expected a JSON object, got {describe(doc)}: {_excerpt(doc)}",
            excerpt=_excerpt(doc),
            command=command,
        )
    status = doc.get("Status")
    error = doc.get("Error")
    if succeeded(status, error):
        return doc
    if (type(status) is int and status == 0) or status is None:
        text = error if isinstance(error, str) else "(no error text)"
        # A lone surrogate cannot be printed or logged: keep it visible but escaped.
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        cls = LodApiError
        if command == "Results" and _TOO_LONG.search(text):
            cls = LodWindowTooLongError
        elif command == "Result" and _NOT_FOUND.search(text):
            cls = LodNotFoundError
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
            f"{command}: Results must be an array or null, got {describe(records)}",
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


def structure_result(doc: Any, lab_instance_id: int) -> LabResult:
    """
    Check a ``Result`` envelope and return its record with ``lab_instance_id`` filled in.
    """
    envelope = _check_envelope(doc, "Result")
    record = {k: v for k, v in envelope.items() if k not in ("Status", "Error")}
    record["LabInstanceId"] = lab_instance_id
    return structure_record(record, where="Result", command="Result")


def record_doc(record: LabResult) -> dict[str, Any]:
    """
    A LabResult as the API's JSON object, exactly: PascalCase keys, epoch seconds, the
    completion status as its code, decimals as ``Decimal`` (``encode_json`` writes them).
    """
    out: dict[str, Any] = converter.unstructure(record)
    return out


_DECIMAL_WIRES: Final = tuple(f.wire for f in FIELDS if f.kind == "decimal")


def unstructure_record(record: LabResult) -> dict[str, Any]:
    """
    A LabResult as the API's JSON object in plain Python values (PascalCase keys, epoch
    seconds, the status as its code, decimals as int or float, which any JSON library
    writes). A float keeps 17 significant digits: ``dump_record`` writes every decimal
    exactly, as the API sent it.
    """
    doc = record_doc(record)
    for wire in _DECIMAL_WIRES:
        d = doc[wire]
        if d is not None:
            doc[wire] = number_of(d)
    return doc


def dump_record(record: LabResult) -> bytes:
    """One record as compact JSON bytes, in the API's shape, decimals spelled as sent."""
    doc = record_doc(record)
    for wire in _DECIMAL_WIRES:
        d = doc[wire]
        if d is not None:
            doc[wire] = msgspec.Raw(decimal_text(d).encode())
    return _ENCODER.encode(doc)


def results_envelope(records: Iterable[LabResult], *, exact: bool = False) -> dict[str, Any]:
    """
    A ``Results`` envelope (``Status: 1``) holding ``records``: as ``unstructure_record``
    gives them, or with ``exact`` as ``record_doc`` does (for ``encode_json``).
    """
    doc = record_doc if exact else unstructure_record
    return {"Results": [doc(r) for r in records], "Status": 1, "Error": None}


def dumps_records(records: Iterable[LabResult]) -> bytes:
    """A ``Results`` envelope (``Status: 1``) holding ``records``, as exact JSON bytes."""
    return encode_json(results_envelope(records, exact=True))
