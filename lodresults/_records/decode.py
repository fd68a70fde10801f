"""
The fast path: a ``Results``/``LatestResults`` body straight from bytes to LabResults,
in bounded steps.

A body is cut, not parsed, into pieces of about ``STEP_BYTES`` at the boundaries between
records (a ``},{`` followed by the first record's first key), and each piece, made an
array, is decoded by msgspec into a struct of the plain documented types and bounds,
decimals straight to ``Decimal`` (exact, PITFALLS 20); a generated loop builds the records
with the conversions of ``_values``. A cut is never trusted: every piece must decode as a
JSON array of at least one value, and the envelope's tail (``Status``, ``Error``, and no
second ``Results``) must decode on its own, which together prove the body one valid
document with exactly these records (what msgspec skips unread, a field taken as
``Raw``, the tail's other members, is checked to be UTF-8 as the careful path requires).
A body that cannot be cut so (another layout, a bad cut) is first checked to be UTF-8, a
piece a step, then decoded as before: one msgspec pass finds the records (``Results`` as a list
of ``msgspec.Raw``), then ``SLICE`` records a step. ``RecordDecoder.steps`` is a generator
that yields between steps, so that the transport can give the event loop a turn: no step
holds it for more than one piece (a few milliseconds), whatever the size of the body,
but for the one pass over a body that is not cut (about 50 ms for 48 MB).

Whatever msgspec does not take (a ``Status: 0`` answer, a tolerated spelling such as a
numeric UserId, a field that does not fit, a ``-0`` whose sign msgspec drops) goes
through the careful path (``_wire``), a piece at a time, which gives the same records or
the precise error. The test suite proves the two paths equal on generated bodies, valid
and damaged, envelopes included, cut into pieces of a few bytes.

The records the fast path builds are taken off the cyclic garbage collector's lists (see
``_untracker``): a record holds only immutable values, so it can be in no reference
cycle, and a collector that rescans every record alive costs a third of decoding and,
with hundreds of thousands alive, full collections of a few hundred milliseconds.

Fields the API added since this lodresults was written are tolerated (the vendor adds
fields and advises against strict mapping) and reported once per decoder through
``on_unknown``, once the body that brings them has decoded: msgspec refuses them in a
strict struct, the name is read from its error, and the struct is built again with that
field taken as ``msgspec.Raw`` and ignored.

Knows no HTTP, no windows.
"""

from __future__ import annotations

import codecs
import functools
import linecache
import re
import sys
import types
from collections.abc import Callable, Generator, Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Final, Union

import attrs
import msgspec

from lodresults._exceptions import LodError
from lodresults._records.models import FIELDS, LabResult
from lodresults._records.schema import FieldSpec, Kind
from lodresults._records.values import UTC
from lodresults._records.wire import (
    Body,
    decode_json,
    structure_record,
    structure_result,
    structure_results,
    succeeded,
)

__all__ = ["SLICE", "STEP_BYTES", "RecordDecoder", "Steps", "decode_results", "run_steps"]

#: A decode in steps: a generator that yields between steps and returns the records.
Steps = Generator[None, None, Any]

#: Records decoded (and, in ``_windows``, deduplicated) per step where a body is not cut
#: by bytes: about 2-4 ms of work on this project's machines, so that a step is short next
#: to the ~50 ms a loop may be held, and the per-slice overhead small.
SLICE: Final = 1024

#: The longest piece, in steps, before a body is no longer cut (see ``_pieces``).
_LONGEST_PIECE: Final = 4

#: Bytes of a body decoded per step where it is cut into pieces: about 500 records of the
#: usual size (some 480 bytes each), the same few milliseconds as ``SLICE``.
STEP_BYTES: Final = 1 << 18


def run_steps(steps: Generator[None, None, Any]) -> Any:
    """Run a decode in steps to its end, at once (no event loop involved)."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value


def _wire_type(f: FieldSpec) -> Any:
    """The plain documented type of one field, with its bounds, for msgspec."""
    if f.bounds is not None:  # int, enum, timestamp: an integer in range
        return Annotated[int, msgspec.Meta(ge=f.bounds[0], le=f.bounds[1])]
    return {"text": str, "bool": bool, "decimal": Decimal}[f.kind]


def _wire_struct(fields: tuple[FieldSpec, ...], extras: frozenset[str]) -> type:
    """
    The struct of one wire record: ``fields`` under their wire names, ``extras`` (field
    names met and reported before) taken raw and ignored, any other name refused.
    """
    spec: list[Any] = [
        (f.wire, _wire_type(f)) if not f.nullable else (f.wire, Union[_wire_type(f), None], None)  # noqa: UP007
        for f in fields
    ]
    # Attribute names of our own: a field the API adds may be named anything.
    rename = {f"_extra{i}": name for i, name in enumerate(sorted(extras))}
    spec += [(attr, msgspec.Raw, msgspec.field(default=None)) for attr in rename]
    return msgspec.defstruct(
        "_WireRecord",
        spec,
        kw_only=True,
        gc=False,
        forbid_unknown_fields=True,
        rename={**{f.wire: f.wire for f in fields}, **rename},
    )


_Envelope: Final = msgspec.defstruct(
    "_WireEnvelope",
    [
        ("Results", Union[list[msgspec.Raw], None, msgspec.UnsetType], msgspec.UNSET),  # noqa: UP007
        ("Status", Union[int, None], None),  # noqa: UP007
        ("Error", Union[str, None], None),  # noqa: UP007
    ],
    gc=False,
)
_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
#: A piece of the records array, checked to be JSON values and nothing else.
_VALUES: Final = msgspec.json.Decoder(list[msgspec.Raw])
#: How a body the fast path cuts begins (what the API and the simulator send).
_HEAD: Final = b'{"Results":['


@functools.lru_cache(maxsize=32)
def _slice_decoder(
    fields: tuple[FieldSpec, ...], extras: frozenset[str]
) -> msgspec.json.Decoder[list[Any]]:
    return msgspec.json.Decoder(types.GenericAlias(list, (_wire_struct(fields, extras),)))


#: New field names learnt from msgspec's errors per slice, and in all: past these, a slice
#: with unknown fields is decoded the careful way (the names are still reported, once).
_NEW_NAMES_PER_SLICE: Final = 4
_EXTRAS_MAX: Final = 64
#: What msgspec refuses in a field name it renames (a lone surrogate: it has no UTF-8).
_UNFIT_NAME: Final = re.compile(r'["\\\x00-\x1f\ud800-\udfff]')
#: Names remembered as reported, per decoder.
_REPORTED_MAX: Final = 4096
#: msgspec's words for a field it refuses as unknown (``forbid_unknown_fields``).
_UNKNOWN: Final = re.compile(r"^Object contains unknown field `(.*)` - at `\$\[\d+\]`$", re.S)
#: ``-0`` not followed by more of a number: if it is a JSON number, msgspec decodes it as
#: ``Decimal("0")`` while the careful path keeps the sign. (A literal first: re scans fast.)
_MINUS_ZERO: Final = re.compile(rb"-0(?![0-9.eE])")
#: The same where it follows its ``:``, ``[`` or ``,`` after any whitespace.
_SPACED_MINUS_ZERO: Final = re.compile(rb"[:\[,][ \t\r\n]*-0(?![0-9.eE])")


def _negative_zero(chunk: bytes) -> bool:
    """Whether ``chunk`` may hold the JSON number ``-0`` (a ``-0`` in a string may match)."""
    # One scan by the pattern: ``-0`` itself begins most negative coordinates near zero
    # (``-0.12``), so a plain substring test first would rarely spare it.
    if _MINUS_ZERO.search(chunk) is None:
        return False
    for m in _MINUS_ZERO.finditer(chunk):
        before = chunk[max(0, m.start() - 16) : m.start()].rstrip()
        if before.endswith((b":", b"[", b",")):
            return True
        if not before and m.start() > 16:  # more whitespace than that: the slow pattern
            return _SPACED_MINUS_ZERO.search(chunk) is not None
    return False


def _is_array(chunk: bytes) -> bool:
    """Whether ``chunk`` is one JSON array (of any values) and nothing more."""
    try:
        _VALUES.decode(chunk)
    except (msgspec.DecodeError, RecursionError):
        return False
    return True


def _utf8(chunk: Body) -> bool:
    """
    Whether ``chunk`` is text as the careful path's parser reads a body (UTF-8, a
    surrogate let through). msgspec checks the UTF-8 of what it decodes but not of what it
    skips (a field taken as ``Raw``, an envelope member it does not read), where the
    careful path refuses the body.
    """
    if chunk.isascii():
        return True
    try:
        codecs.utf_8_decode(chunk, "surrogatepass", True)
    except UnicodeDecodeError:
        return False
    return True


def _utf8_steps(body: Body, step: int) -> Generator[None, None, bool]:
    """``_utf8`` of a whole body, ``step`` bytes a step."""
    if body.isascii():
        return True
    decode = codecs.getincrementaldecoder("utf-8")("surrogatepass").decode
    try:
        for at in range(0, len(body), step):
            yield
            decode(body[at : at + step], at + step >= len(body))
    except UnicodeDecodeError:
        return False
    return True


# --- building the records -----------------------------------------------------------------


def _untracker() -> Callable[[int], None] | None:
    """
    CPython's ``PyObject_GC_UnTrack`` (a documented C API function), called with an
    object's address; None on other interpreters, where records stay tracked.

    Why by hand: Python offers no way to build an instance of a slotted class that the
    cyclic collector does not track, and no library does it. A record the fast path
    builds holds only immutable values (ints, str, datetime, Decimal, enum members), so it
    is in no cycle and the collector has nothing to find in it, yet it rescans every one
    at each collection: a third of decoding, and full collections of 100-200 ms once a
    few hundred thousand records are alive. Untracking one costs about 0.15 us. The same
    object is freed by reference counting as any other; only the collector skips it.
    """
    if sys.implementation.name != "cpython":
        return None
    try:
        import ctypes  # here: a CPython built without libffi has none, and decodes anyway
    except ImportError:
        return None
    # Called by address (``id``): a quarter quicker than a ``py_object`` argument.
    address = ctypes.cast(ctypes.pythonapi.PyObject_GC_UnTrack, ctypes.c_void_p).value
    if address is None:
        return None
    untrack: Callable[[int], None] = ctypes.PYFUNCTYPE(None, ctypes.c_void_p)(address)
    return untrack


def _enum_get(base: Any) -> Callable[[int], Any]:
    return base._value2member_map_.get  # type: ignore[no-any-return]


def _nonfinite() -> Any:
    # A decimal given as the string "NaN" or "Infinity": msgspec takes it, the careful
    # path refuses it with the field's name.
    raise ValueError("not a finite number")


#: How the generated loop computes a field's value from its wire value ``x`` (never null
#: there), with the names ``_builder`` binds; ``x`` alone is stored as it is.
_CONVERSIONS: Final[dict[Kind, str]] = {
    "int": "x",
    "text": "x",
    "bool": "x",
    "timestamp": "fromts(x, UTC)",
    "decimal": "(x if x.is_finite() else nonfinite())",
    "enum": "(e if (e := get_{name}(x)) is not None else enum_{name}(x))",
}


def _value(f: FieldSpec) -> str:
    """The statements that set field ``f`` of ``o`` from the wire struct ``w``."""
    wire = f"w.{f.wire}"
    one = _CONVERSIONS[f.kind].replace("{name}", f.name)
    if one == "x":
        return f"o.{f.name} = {wire}"
    if f.nullable:
        return f"o.{f.name} = None if (x := {wire}) is None else {one}"
    return f"x = {wire}; o.{f.name} = {one}"


def _source(cls: type, fields: tuple[FieldSpec, ...], names: list[str]) -> str:
    # ``make`` binds ``names`` as the closure's variables (faster to read than globals).
    lines = [
        f"def make({', '.join(names)}):",
        "  def build(records):",
        "    out = []",
        "    append = out.append",
        "    for w in records:",
        "        o = new(Building)",
    ]
    if "untrack" in names:  # before the collector can meet it (see ``_untracker``)
        lines.append("        untrack(id(o))")
    lines += [f"        {_value(f)}" for f in fields]
    lines += [f"        o.__class__ = {cls.__name__}", "        append(o)", "    return out"]
    lines += ["  return build", ""]
    return "\n".join(lines)


@functools.cache
def _builder(cls: type, fields: tuple[FieldSpec, ...]) -> Callable[[list[Any]], list[Any]]:
    """
    Generate the loop that turns wire structs into records (and, as attrs does for the
    methods it generates, register its source with ``linecache`` for tracebacks).

    Each record is made as an instance of ``Building``, a subclass of ``cls`` that adds
    nothing but an ordinary ``__setattr__``, its slots filled by plain attribute stores
    (which the interpreter specialises), and then given its class ``cls``: the same
    object the frozen ``__init__`` would make. Measured per record (benchmarks/README.md):
    the frozen ``__init__`` about 2-4 us, slot descriptors called one by one 1.7 us, this
    0.5-0.7 us. Valid only while the class has no validators, converters or
    ``__attrs_post_init__``, which is checked here.
    """
    if not (
        all(a.validator is None and a.converter is None for a in attrs.fields(cls))
        and not hasattr(cls, "__attrs_post_init__")
        and "__slots__" in vars(cls)
    ):
        raise TypeError(f"{cls.__name__}: the fast path needs a plain slotted attrs class")
    building = type(
        f"_Building{cls.__name__}",
        (cls,),
        {
            "__slots__": (),
            # Both: they share one type slot, which is the generic one only when neither
            # is overridden (and only then are the stores specialised).
            "__setattr__": object.__setattr__,
            "__delattr__": object.__delattr__,
            "__module__": __name__,
        },
    )
    filename = f"<lodresults generated build {cls.__module__}.{cls.__qualname__}>"
    bound: dict[str, Any] = {
        "new": object.__new__,
        "Building": building,
        cls.__name__: cls,
        "fromts": datetime.fromtimestamp,
        "UTC": UTC,
        "nonfinite": _nonfinite,
    }
    if (untrack := _untracker()) is not None:
        bound["untrack"] = untrack
    for f in fields:
        if f.kind == "enum":
            bound[f"get_{f.name}"] = _enum_get(f.base)
            bound[f"enum_{f.name}"] = f.base
    source = _source(cls, fields, list(bound))
    namespace: dict[str, Any] = {}
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    build: Callable[[list[Any]], list[Any]] = namespace["make"](**bound)
    return build


# --- the decoder ----------------------------------------------------------------------------


class RecordDecoder:
    """
    Decodes bodies into records of ``cls`` (fields ``fields``), fast and in steps.

    Record field names the API sends that ``fields`` do not declare are tolerated and
    ignored, and reported once per decoder (a client has one): the first decode that
    brings one calls its ``on_unknown(name)`` once it has decoded (not if it fails).
    """

    def __init__(
        self,
        cls: type = LabResult,
        fields: tuple[FieldSpec, ...] = FIELDS,
        *,
        step_bytes: int = STEP_BYTES,
    ) -> None:
        self._fields = fields
        self._known = frozenset(f.wire for f in fields)
        self._reported: set[str] = set()
        # The new names the fast path's struct takes (and ignores): at most _EXTRAS_MAX.
        self._extras: frozenset[str] = frozenset()
        self._build = _builder(cls, fields)
        self._step_bytes = step_bytes

    def _note(self, names: Iterable[str], on_unknown: Callable[[str], None] | None) -> None:
        """Report each name not declared and not reported before."""
        new = set(names) - self._known - self._reported
        if not new:
            return
        if len(self._reported) < _REPORTED_MAX:  # a hostile server cannot grow it for good
            self._reported |= new
        room = _EXTRAS_MAX - len(self._extras)
        if room > 0:
            # msgspec cannot take a name with '\\', '"', a control character or a lone
            # surrogate as a field (its struct would fail to build, and every slice after
            # would go the careful way); records that bring one go the careful way.
            fit = sorted(n for n in new if not _UNFIT_NAME.search(n))
            self._extras |= set(fit[:room])
        for name in sorted(new):
            if on_unknown is not None:
                on_unknown(name)

    def steps(
        self,
        body: Body,
        command: str = "Results",
        on_unknown: Callable[[str], None] | None = None,
    ) -> Steps:
        """
        Decode a ``Results``/``LatestResults`` body, yielding between steps; returns the
        records (``run_steps`` runs it at once).

        Raises ``LodApiError`` for ``Status: 0``, ``LodJSONError``/``LodDecodeError`` for a
        body that is not JSON, ``LodSchemaError`` naming ``Results[i].Field`` otherwise.
        New field names are reported once the body has decoded, as the careful path
        finds them: none from a body that fails (a later body reports them).
        """
        new: list[str] = []
        try:
            records = yield from self._steps(body, command, new.append)
        except BaseException:  # forgotten, to be met (and reported) again
            self._reported.difference_update(new)
            self._extras = self._extras.difference(new)
            raise
        if on_unknown is not None:
            for name in new:
                on_unknown(name)
        return records

    def _steps(self, body: Body, command: str, on_unknown: Callable[[str], None]) -> Steps:
        cut = self._cut(body)
        if cut is not None:
            out: list[Any] = []
            for piece in cut:
                if piece is None:  # no record boundary found within reach: not cut
                    break
                yield
                try:
                    records = self._slice(piece, len(out), command, on_unknown, cut=True)
                except LodError:  # said only once the whole body is known to say success
                    records = None
                if records is None:  # not cut between records after all, or an error
                    break
                out += records
            else:
                return out
        return (yield from self._whole(body, command, on_unknown))

    def _cut(self, body: Body) -> Iterable[bytes | None] | None:
        """
        The records array of ``body`` in pieces of about ``step_bytes``, each made an
        array, or None where the body is not laid out as the API sends it or the
        envelope's tail does not say success (the whole-body path decides).
        """
        first = len(_HEAD)
        close = body.rfind(b"]")
        if not body.startswith(_HEAD) or close < first:
            return None
        try:  # the tail on its own, with a member of our own in place of the array
            # (an array too: a number there could be continued by the tail, "0" + ".5")
            tail: Any = _ENVELOPE.decode(b'{"":[]' + body[close + 1 :])
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            return None
        if tail.Results is not msgspec.UNSET or not succeeded(tail.Status, tail.Error):
            return None  # a second "Results" (it would win), or a failure to report
        if not _utf8(body[close + 1 :]):
            return None
        # Records are cut where one ends and the next begins with the first one's key.
        key = body[first : body.find(b'"', first + 2) + 2]
        if not (key.startswith(b'{"') and key.endswith(b'":')):
            return None if close - first > self._step_bytes else [b"[" + body[first:close] + b"]"]
        return self._pieces(body, first, close, b"}," + key)

    def _pieces(self, body: Body, at: int, close: int, sep: bytes) -> Iterator[bytes | None]:
        """
        The pieces, then None if the rest is longer than a few steps but holds no ``sep``
        (spaced records, another first key): one piece of it would be one long step.
        """
        step = self._step_bytes
        while at < close or at == len(_HEAD):  # an empty array is one (empty) piece
            found = body.find(sep, at + step, close) if close - at > step else -1
            if found < 0 and close - at > _LONGEST_PIECE * step:
                yield None
                return
            end = close if found < 0 else found + 1
            yield b"[" + body[at:end] + b"]"
            at = end + 1

    def _whole(self, body: Body, command: str, on_unknown: Callable[[str], None] | None) -> Steps:
        """``steps`` for a body not cut: one pass finds the records, then slices."""
        utf8 = yield from _utf8_steps(body, self._step_bytes)
        raws = self._records_of(body) if utf8 else None
        if raws is None:  # the careful path decides, for the whole body
            doc = decode_json(body, command=command)
            careful = structure_results(doc, command=command)
            self._note((k for r in doc["Results"] or () for k in r), on_unknown)
            return careful
        whole: list[Any] = []
        for start in range(0, len(raws), SLICE):
            yield
            chunk = b"[" + b",".join(raws[start : start + SLICE]) + b"]"  # Raws: the body's
            part = self._slice(chunk, start, command, on_unknown)
            assert part is not None  # only a cut piece is refused
            whole += part
        return whole

    def _records_of(self, body: Body) -> list[msgspec.Raw] | None:
        """The records of a successful envelope, or None where the careful path decides."""
        try:
            env: Any = _ENVELOPE.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
            # RecursionError: msgspec gives up on values nested ~1,000 deep; the careful
            # path names the problem as a LodDecodeError.
            return None
        if not succeeded(env.Status, env.Error) or env.Results is msgspec.UNSET:
            return None
        return [] if env.Results is None else env.Results

    def _slice(
        self,
        chunk: bytes,
        start: int,
        command: str,
        on_unknown: Callable[[str], None] | None,
        *,
        cut: bool = False,
    ) -> list[Any] | None:
        """
        The records of ``chunk``, an array (``Results[start:]``), fast or else carefully;
        None if it is a piece the body was ``cut`` into that is no array of JSON values.
        """
        # A piece is not yet known to be an array of JSON values (a whole body's slice is).
        unchecked = cut
        if _negative_zero(chunk):
            return (
                None
                if unchecked and not _is_array(chunk)
                else self._careful(chunk, start, command, on_unknown)
            )
        # msgspec names one unknown field per attempt: a few new names are learnt here,
        # more (a hostile body) go the careful way, which reads every name at once.
        for _ in range(_NEW_NAMES_PER_SLICE):
            extras = self._extras
            try:
                structs = _slice_decoder(self._fields, extras).decode(chunk)
                # A field taken as Raw was skipped unchecked (a body decoded whole is
                # checked first): the whole body decides.
                if cut and extras and not _utf8(chunk):
                    return None
                return self._build(structs)
            except msgspec.ValidationError as exc:
                unknown = _UNKNOWN.match(str(exc))
                if unknown is None:
                    break
                if unchecked:  # a name read from a piece that is no array is no field
                    if not _is_array(chunk):
                        return None
                    unchecked = False
                self._note([unknown.group(1)], on_unknown)
                if self._extras == extras:  # not a new name after all: let the careful path say
                    break
            # OverflowError, OSError: a timestamp the platform's ``fromtimestamp`` refuses
            # (on Windows, any before 1970); the careful path names the field.
            except (msgspec.DecodeError, ValueError, OverflowError, OSError, RecursionError):
                break
        if unchecked and not _is_array(chunk):
            return None
        return self._careful(chunk, start, command, on_unknown)

    def _careful(
        self,
        chunk: bytes,
        start: int,
        command: str,
        on_unknown: Callable[[str], None] | None,
    ) -> list[Any]:
        records = decode_json(chunk, command=command)
        out = []
        for i, rec in enumerate(records, start):
            if isinstance(rec, dict):
                self._note(rec, on_unknown)
            out.append(structure_record(rec, where=f"Results[{i}]", command=command))
        return out

    def result_steps(
        self,
        body: Body,
        lab_instance_id: int,
        on_unknown: Callable[[str], None] | None = None,
    ) -> Steps:
        """Decode a ``Result`` body (one record, the careful path) as one step."""
        doc = decode_json(body, command="Result")
        record = structure_result(doc, lab_instance_id)
        self._note((k for k in doc if k not in ("Status", "Error", "LabInstanceId")), on_unknown)
        return record
        yield  # a generator, like ``steps``


_DEFAULT: Final = RecordDecoder()


def decode_results(body: Body, *, command: str = "Results") -> list[LabResult]:
    """
    Decode a ``Results``/``LatestResults`` body straight from bytes to LabResults, at once.

    Raises ``LodApiError`` for ``Status: 0``, ``LodJSONError``/``LodDecodeError`` for a
    body that is not JSON, ``LodSchemaError`` naming ``Results[i].Field`` otherwise.
    """
    records: list[LabResult] = run_steps(_DEFAULT.steps(body, command))
    return records
