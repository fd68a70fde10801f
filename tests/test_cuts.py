"""
A body cut into pieces between records decodes exactly as the whole body: same records,
same errors, whatever the cut size, and a cut that is not between records is never
trusted. Records the fast path builds are not tracked by the cyclic collector.
"""

from __future__ import annotations

import gc
import json
import sys
import weakref
from typing import Any

import orjson
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from lodresults import LabResult
from lodresults._records.decode import (
    SLICE,
    STEP_BYTES,
    RecordDecoder,
    _utf8,
    _utf8_steps,
    decode_results,
    run_steps,
)
from lodresults._records.models import FIELDS
from tests.strategies import damaged_records, envelopes, records
from tests.test_store import lab
from tests.test_wire import _careful, _outcome


def _compact(doc: Any) -> bytes:
    """The body as the API and the simulator send it: no spaces, Results first."""
    try:
        return json.dumps(doc, allow_nan=False, separators=(",", ":")).encode()
    except ValueError:
        assume(False)  # NaN/Infinity are not JSON; a server cannot send them
        raise


def _cut(step: int) -> Any:
    decoder = RecordDecoder(step_bytes=step)
    return lambda body: run_steps(decoder.steps(body))


def _pieces(body: bytes, step: int) -> list[int]:
    """The number of records each step of a decode gave (by spying on the builder)."""
    decoder = RecordDecoder(step_bytes=step)
    sizes: list[int] = []
    real = decoder._build

    def counting(structs: list[Any]) -> list[Any]:
        sizes.append(len(structs))
        return real(structs)  # type: ignore[no-any-return]

    decoder._build = counting  # type: ignore[method-assign]
    run_steps(decoder.steps(body))
    return sizes


#: Fields a future API may add, some of them objects whose first key is a record's own:
#: ``},{"LabInstanceId":`` then appears inside a record, where no cut may be made.
_NESTED = st.sampled_from(
    [
        {"Tasks": [{"LabInstanceId": 1, "x": "},{"}, {"LabInstanceId": 2}]},
        {"Notes": '},{"LabInstanceId":3,'},
        {"Deep": {"a": [[{"LabInstanceId": 4}], {"LabInstanceId": 5}]}},
        {"Empty": []},
    ]
)


@st.composite
def _records_with_extras(draw: st.DrawFn) -> dict[str, Any]:
    rec = draw(st.one_of(records(), damaged_records()))
    if isinstance(rec, dict) and draw(st.booleans()):
        rec = {**rec, **draw(_NESTED)}
    return rec


@given(
    envelopes(st.lists(_records_with_extras(), max_size=6)),
    st.sampled_from([1, 2, 50, 300, 1000, STEP_BYTES]),
)
@settings(max_examples=400)
def test_cut_bodies_decode_as_the_careful_path(doc: dict[str, Any], step: int) -> None:
    """Any envelope, valid or damaged records, fields holding record-like objects: the
    body cut every ``step`` bytes gives the careful path's records or error."""
    body = _compact(doc)
    assert _outcome(_cut(step), body) == _outcome(_careful, body)


@pytest.mark.parametrize(
    "tail",
    [
        b',"Status":1,"Error":null}',
        b',"Status":1,"Error":"a]b"}',  # the last ] is inside a string
        b',"Status":0,"Error":"Timeframe cannot exceed 7 days"}',
        b',"Status":1,"Re\\u0073ults":[]}',  # a second Results, spelt with an escape: it wins
        b',"Status":1,"Results":null}',
        b',"Status":1,"Results":[' + orjson.dumps(lab(9)) + b"]}",
        b',"Status":1}trailing',
        b',"Status":1}]',
        b"]}",
        b"}",
        b' , "Status" : 1 } ',
        b'.5,"Status":1}',  # not JSON: the tail must not continue the tail check's own member
        b"e5}",
        b"E+1 }",
        b"0}",
    ],
)
@pytest.mark.parametrize("step", [1, 100, STEP_BYTES])
def test_the_tail_decides_as_the_whole_body_does(tail: bytes, step: int) -> None:
    """What follows the records array (a status, a second Results key, junk) gives the
    same outcome cut or not."""
    recs = b",".join(orjson.dumps(lab(i)) for i in range(1, 6))
    body = b'{"Results":[' + recs + b"]" + tail
    assert _outcome(_cut(step), body) == _outcome(_careful, body)


@pytest.mark.parametrize("step", [1, 100, STEP_BYTES])
def test_a_bad_record_is_not_told_before_the_status(step: int) -> None:
    """A record that does not fit in a body whose status (after an array in the tail) is a
    failure: the failure is raised, as the whole body says, not the record's error."""
    bad = orjson.dumps({**lab(1), "City": []})
    body = b'{"Results":[' + bad + b"," + orjson.dumps(lab(2))
    body += b'],"Status":0,"Error":null,"TotalCount":[]}'
    assert _outcome(_cut(step), body) == _outcome(_careful, body) == ("LodApiError", None)


def test_records_are_cut_into_pieces_of_about_step_bytes() -> None:
    """Each step decodes one piece: at least ``step`` bytes (but the last), at most one
    record more; the pieces' records add up to the body's."""
    one = len(orjson.dumps(lab(1)))
    body = orjson.dumps({"Results": [lab(i) for i in range(1, 1001)], "Status": 1})
    sizes = _pieces(body, 10 * one)
    assert sum(sizes) == 1000
    assert all(10 <= n <= 12 for n in sizes[:-1]) and sizes[-1] <= 12
    assert len(sizes) >= 1000 // 12


def test_a_false_cut_falls_back_to_the_whole_body() -> None:
    """Records holding objects that begin like a record: the cut that lands inside one is
    refused, and the body is decoded whole, with the same records."""
    recs = [{**lab(i), "Tasks": [{"LabInstanceId": 0}, {"LabInstanceId": 1}]} for i in range(1, 51)]
    body = orjson.dumps({"Results": recs, "Status": 1})
    assert run_steps(RecordDecoder(step_bytes=1).steps(body)) == _careful(body)


def test_spaced_or_reordered_bodies_are_decoded_whole() -> None:
    """A body laid out otherwise (spaces, Status first) is not cut, and decodes the same."""
    recs = [lab(i) for i in range(1, 30)]
    for doc in ({"Status": 1, "Results": recs}, {"Results": recs, "Status": 1}):
        spaced = json.dumps(doc).encode()
        assert _pieces(spaced, 1) == [29] and decode_results(spaced) == _careful(spaced)


def test_built_records_are_not_tracked_by_the_collector() -> None:
    """The fast path's records are untracked (no collector rescans them), yet freed by
    reference counting as soon as they are dropped; the careful path's are ordinary."""
    body = orjson.dumps({"Results": [lab(i) for i in range(1, 101)], "Status": 1})
    records: list[LabResult] = run_steps(RecordDecoder().steps(body))
    assert not any(gc.is_tracked(r) for r in records)
    gone = weakref.ref(records[0])
    records.clear()
    assert gone() is None
    careful = _careful(body)
    assert all(gc.is_tracked(r) for r in careful) and careful[0] is not None


def test_many_records_leave_the_collector_nothing_to_do() -> None:
    """Decoding 20,000 records adds none to the collector's generations."""
    body = orjson.dumps({"Results": [lab(i) for i in range(1, 20_001)], "Status": 1})
    gc.collect()
    before = len(gc.get_objects())
    records = run_steps(RecordDecoder().steps(body))
    assert len(records) == 20_000
    assert len(gc.get_objects()) - before < 1_000


def _with(record: bytes, extra: bytes) -> bytes:
    return record[:-1] + b"," + extra + b"}"


@pytest.mark.parametrize(
    "body",
    [
        # Bytes that are not UTF-8 where msgspec only skips (a field it does not know, a
        # member of the envelope it does not read): the careful path refuses the body.
        b'{"Results":[' + _with(orjson.dumps(lab(1)), b'"New":"\xff"') + b"]}",
        b'{"Results":[' + _with(orjson.dumps(lab(1)), b'"New":["\xc0\x80"]') + b"]}",
        b'{"Results":[' + orjson.dumps(lab(1)) + b'],"Status":1,"X":"\xf4\x90\x80\x80"}',
        b'{ "Results": [' + orjson.dumps(lab(1)) + b'], "X": "\xff" }',  # not cut
        b'{"Status":1,"X":"\xff","Results":[' + orjson.dumps(lab(1)) + b"]}",
        # A surrogate written in UTF-8 is one the careful path takes (``surrogatepass``).
        b'{"Results":[' + _with(orjson.dumps(lab(1)), b'"New":"\xed\xa0\x80"') + b"]}",
        b'{"Results":[' + orjson.dumps(lab(1)) + b'],"X":"\xed\xa0\x80\xc3\xa9"}',
    ],
)
@pytest.mark.parametrize("step", [1, STEP_BYTES])
@pytest.mark.parametrize("seen", [False, True])
def test_bytes_that_are_not_utf8_are_refused_as_the_careful_path_does(
    body: bytes, step: int, seen: bool
) -> None:
    """msgspec skips what it does not read without checking its UTF-8; json refuses the
    body. Both paths agree, also once the field is known to the decoder (``seen``)."""
    decoder = RecordDecoder(step_bytes=step)
    if seen:
        known = orjson.dumps({"Results": [{**lab(2), "New": 1}]})
        run_steps(decoder.steps(known))
    for whole in (body, bytearray(body)):
        outcome = _outcome(lambda b: run_steps(decoder.steps(b)), whole)
        assert outcome == _outcome(_careful, body)


def test_an_interpreter_without_ctypes_decodes_with_tracked_records(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Some CPython builds have no ``ctypes`` (no libffi): the fast path then leaves its
    records to the collector, and the package still imports and decodes."""
    from lodresults._records import decode

    monkeypatch.setitem(sys.modules, "ctypes", None)  # ``import ctypes`` raises ImportError
    assert decode._untracker() is None

    class Record(LabResult):
        __slots__ = ()

    build = decode._builder(Record, FIELDS)
    structs = decode._slice_decoder(FIELDS, frozenset()).decode(orjson.dumps([lab(1)]))
    (record,) = build(structs)
    assert gc.is_tracked(record) and type(record) is Record and record.lab_instance_id == 1


@given(
    st.lists(
        st.sampled_from(
            [b"a", b"\xc3\xa9", b"\xed\xa0\x80", b"\xf0\x9f\x98\x80", b"\xff", b"\xc3", b"\x80"]
        ),
        max_size=12,
    ),
    st.integers(1, 5),
)
def test_utf8_is_checked_in_steps_as_the_careful_path_reads_it(
    parts: list[bytes], step: int
) -> None:
    """A body checked a few bytes a step (sequences cut between steps) is text exactly when
    the careful path's parser can read it."""
    data = b"".join(parts)
    try:
        data.decode("utf-8", "surrogatepass")
        text = True
    except UnicodeDecodeError:
        text = False
    assert run_steps(_utf8_steps(data, step)) is text
    assert run_steps(_utf8_steps(bytearray(data), step)) is text
    assert _utf8(data) is text


@pytest.mark.parametrize("between", [b", ", b",\n  "])
def test_records_with_no_boundary_in_reach_are_not_one_long_step(between: bytes) -> None:
    """Records spaced otherwise than the API sends them (so no cut is found): the body is
    decoded whole, SLICE records a step, not as one piece in one long step."""
    recs = [orjson.dumps(lab(i)) for i in range(1, 3001)]
    body = b'{"Results":[' + between.join(recs) + b'],"Status":1}'
    sizes = _pieces(body, 1000)
    assert sum(sizes) == 3000 and max(sizes) <= SLICE
    assert run_steps(RecordDecoder(step_bytes=1000).steps(body)) == _careful(body)
