"""
How a LabResult is spelled on the wire: the one cattrs converter, both directions.

The converter (``converter``) is the single source of truth for the JSON format. Decoding
a large ``Results`` body through cattrs' generated functions costs about five times the
JSON parse itself, so the hot path (``structure_results``) uses ``_fast_record``, a
hand-unrolled function with the very same per-field rules; the test suite proves the two
equal on generated bodies, valid and invalid. When the fast path meets anything unusual it
hands the record to the converter, whose detailed validation names the offending field.

Knows no HTTP, no windows.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import attrs
import cattrs
import orjson
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from lodresults._exceptions import (
    LodApiError,
    LodJSONError,
    LodSchemaError,
    LodWindowTooLongError,
)
from lodresults._models import CompletionStatus, LabResult

__all__ = [
    "WIRE_NAMES",
    "converter",
    "decode_json",
    "dump_record",
    "dumps_records",
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


# --- per-type rules (shared by the converter and the fast path) -----------------------


def _int(v: Any, _: Any = None) -> int:
    if type(v) is int:
        return v
    # Tolerated: an integral float (some serializers write 5.0). Never bools or strings.
    if type(v) is float and v.is_integer():
        return int(v)
    raise TypeError(f"expected an integer, got {_kind(v)}")


def _str(v: Any, _: Any = None) -> str:
    if type(v) is str:
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
        return Decimal(v)
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


def _field_hook(a: attrs.Attribute[Any]) -> Callable[[Any, Any], Any]:
    t: Any = a.type
    base = t
    args = getattr(t, "__args__", None)
    if args:  # X | None
        base = next(x for x in args if x is not type(None))
    hook = _BASE_HOOKS[base]
    return _required(hook) if a.name in _REQUIRED else _optional(hook)


_FIELD_HOOKS: Final = {a.name: _field_hook(a) for a in attrs.fields(LabResult)}


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
    conv.register_unstructure_hook(
        Decimal, lambda d: int(d) if d.as_tuple().exponent == 0 else float(d)
    )
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
    except TypeError:
        text = repr(obj)
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


def decode_json(body: bytes, *, command: str | None = None) -> Any:
    """
    Parse a body, raising ``LodJSONError`` with a short excerpt when it is not JSON.
    """
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        snippet = body[:_EXCERPT].decode("utf-8", "replace")
        raise LodJSONError(
            f"{command or 'response'}: body is not valid JSON ({exc}); starts: {snippet!r}",
            excerpt=snippet,
            command=command,
        ) from None


_TOO_LONG = re.compile(r"(cannot|can't|may not|must not)\s+exceed|too (long|large)", re.I)


def _check_envelope(doc: Any, command: str) -> Mapping[str, Any]:
    if not isinstance(doc, Mapping):
        raise LodSchemaError(
            f"{command}: expected a JSON object, got {_kind(doc)}: {_excerpt(doc)}",
            excerpt=_excerpt(doc),
            command=command,
        )
    status = doc.get("Status", 1)
    error = doc.get("Error")
    if status == 0 or (status is None and error):
        text = error if isinstance(error, str) else "(no error text)"
        cls = LodApiError
        if command == "Results" and _TOO_LONG.search(text):
            cls = LodWindowTooLongError
        raise cls(f"{command}: the API answered Status 0: {text}", error_text=text, command=command)
    if status != 1 or type(status) is not int:
        raise LodSchemaError(
            f"{command}: Status must be 0 or 1, got {_excerpt(status)}",
            field="Status",
            excerpt=_excerpt(status),
            command=command,
        )
    return doc


def structure_record(obj: Any, *, where: str = "record", command: str | None = None) -> LabResult:
    """
    Turn one decoded JSON record into a LabResult through the converter.

    Raises ``LodSchemaError`` naming the field (wire name) that does not fit.
    """
    try:
        return converter.structure(obj, LabResult)
    except Exception as exc:
        raise _schema_error(exc, obj, where, command) from None


_FIELDS: Final = tuple((name, WIRE_NAMES[name], _FIELD_HOOKS[name]) for name in WIRE_NAMES)


def _fast_record(d: Any) -> LabResult:
    """
    The converter's rules unrolled for the common case; raises on anything unusual.

    Every branch that is not the plain documented type raises ``_Slow`` so that the
    caller re-runs the record through the converter (which then either accepts a
    tolerated form or names the field).
    """
    if type(d) is not dict:
        raise _Slow
    g = d.get
    lid = g("LabInstanceId")
    pid = g("LabProfileId")
    st = g("Start")
    en = g("End")
    la = g("LastActivity")
    uid = g("UserId")
    cid = g("ClassId")
    cs = g("CompletionStatus")
    trs = g("TotalRunTimeSeconds")
    tcp = g("TaskCompletePercent")
    ie = g("IsExam")
    ep = g("ExamPassed")
    es = g("ExamScore")
    emx = g("ExamMaxPossibleScore")
    eps = g("ExamPassingScore")
    ip = g("IpAddress")
    co = g("Country")
    rg = g("Region")
    ci = g("City")
    lat = g("Latitude")
    lon = g("Longitude")
    lh = g("LabHostId")
    dc = g("DatacenterId")
    dr = g("DeliveryRegionId")
    if (
        type(lid) is not int
        or type(pid) is not int
        or type(st) is not int
        or type(cs) is not int
        or type(trs) is not int
        or type(tcp) is not int
        or type(ie) is not bool
        or not (_MIN_EPOCH <= st <= _MAX_EPOCH)
    ):
        raise _Slow
    for v in (uid, cid, ip, co, rg, ci):
        if v is not None and type(v) is not str:
            raise _Slow
    for v in (emx, eps, lh, dc, dr):
        if v is not None and type(v) is not int:
            raise _Slow
    if ep is not None and type(ep) is not bool:
        raise _Slow
    return LabResult(
        lid,
        pid,
        _fromts(st, _UTC),
        None if en is None else _fast_epoch(en),
        None if la is None else _fast_epoch(la),
        uid,
        cid,
        _status_of(cs),
        trs,
        tcp,
        ie,
        ep,
        None if es is None else _fast_decimal(es),
        emx,
        eps,
        ip,
        co,
        rg,
        ci,
        None if lat is None else _fast_decimal(lat),
        None if lon is None else _fast_decimal(lon),
        lh,
        dc,
        dr,
    )


class _Slow(Exception):
    """Internal: the fast path declines; use the converter."""


_fromts: Final = datetime.fromtimestamp
_status_map: Final = CompletionStatus._value2member_map_


def _status_of(v: int) -> CompletionStatus:
    m = _status_map.get(v)
    return m if m is not None else CompletionStatus(v)  # type: ignore[return-value]


def _fast_epoch(v: Any) -> datetime:
    if type(v) is not int or not (_MIN_EPOCH <= v <= _MAX_EPOCH):
        raise _Slow
    return _fromts(v, _UTC)


def _fast_decimal(v: Any) -> Decimal:
    t = type(v)
    if t is float:
        if v != v or v in (math.inf, -math.inf):
            raise _Slow
        return Decimal(repr(v))
    if t is int:
        return Decimal(v)
    raise _Slow


def _records_of(doc: Mapping[str, Any], command: str) -> list[Any]:
    records = doc.get("Results")
    if not isinstance(records, list):
        raise LodSchemaError(
            f"{command}: Results must be an array, got {_kind(records)}",
            field="Results",
            excerpt=_excerpt(records),
            command=command,
        )
    return records


def structure_results(doc: Any, *, command: str = "Results") -> list[LabResult]:
    """
    Check a ``Results``/``LatestResults`` envelope and turn its records into LabResults.

    Raises ``LodApiError`` for ``Status: 0`` (``LodWindowTooLongError`` for the 7-day
    rule) and ``LodSchemaError`` naming ``Results[i].Field`` for a record that does not fit.
    """
    records = _records_of(_check_envelope(doc, command), command)
    out: list[LabResult] = []
    append = out.append
    fast = _fast_record
    for i, rec in enumerate(records):
        try:
            append(fast(rec))
        except _Slow:
            append(structure_record(rec, where=f"Results[{i}]", command=command))
    return out


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


def dumps_records(records: Iterable[LabResult]) -> bytes:
    """A ``Results`` envelope (``Status: 1``) holding ``records``, as JSON bytes."""
    return orjson.dumps(
        {"Results": [unstructure_record(r) for r in records], "Status": 1, "Error": None}
    )
