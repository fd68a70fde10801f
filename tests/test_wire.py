"""The wire format: documented examples, tolerance, exactness, and fast path == converter."""

from __future__ import annotations

import contextlib
import copy
import functools
import gc
import json
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import lodresults
from lodresults import (
    CompletionStatus,
    LabResult,
    LodApiError,
    LodDecodeError,
    LodError,
    LodJSONError,
    LodSchemaError,
)
from lodresults._exceptions import LodWindowTooLongError
from lodresults._records.decode import decode_results
from lodresults._records.wire import (
    converter,
    decode_json,
    dump_record,
    dumps_records,
    encode_json,
    structure_record,
    structure_result,
    structure_results,
    unstructure_record,
)
from lodresults._request.retry import is_retryable
from tests.strategies import damaged_records, envelopes, junk, records

SPEC = Path(__file__).parent / "data" / "Skillable-lab-OpenAPI.yaml"


@functools.cache
def _spec() -> Any:
    return yaml.load(SPEC.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def _example(path: str) -> Any:
    spec = _spec()
    examples = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"][
        "examples"
    ]
    return copy.deepcopy(next(iter(examples.values()))["value"])


def test_results_example_from_the_spec() -> None:
    """The vendor's Results example decodes to typed records."""
    out = structure_results(_example("/Results"))
    assert [r.lab_instance_id for r in out] == [349744, 349745]
    first = out[0]
    assert first.start == datetime(2012, 1, 1, 0, 13, 20, tzinfo=timezone.utc)
    assert first.completion_status is CompletionStatus.CANCELLED
    assert first.class_id is None
    assert first.user_id == "555"


def test_result_example_fills_the_id() -> None:
    """Result's body has no LabInstanceId: the caller's id is filled in."""
    r = structure_result(_example("/Result"), 2393049)
    assert r.lab_instance_id == 2393049
    assert r.total_run_time_seconds == 4168
    assert r.delivery_region_id == 2


def test_result_doc_example_with_trailing_comma_is_a_json_error() -> None:
    """The Result doc's example has a trailing comma: not JSON, reported as such."""
    with pytest.raises(LodJSONError, match="not valid JSON"):
        decode_json(b'{"Status": 1, "Error": null,}', command="Result")


def test_decimal_is_exact() -> None:
    """87.5 stays 87.5; geo decimals keep their digits; ints are accepted too."""
    rec = _valid()
    rec.update(ExamScore=87.5, Latitude=47.6062, Longitude=-122.3321)
    r = structure_results({"Results": [rec], "Status": 1})[0]
    assert r.exam_score == Decimal("87.5")
    assert str(r.latitude) == "47.6062"
    assert str(r.longitude) == "-122.3321"
    rec["ExamScore"] = 88
    assert structure_results({"Results": [rec], "Status": 1})[0].exam_score == Decimal(88)


def test_unknown_completion_status_is_preserved() -> None:
    """An undocumented code (70) does not crash and keeps its value."""
    rec = _valid()
    rec["CompletionStatus"] = 70
    r = structure_results({"Results": [rec], "Status": 1})[0]
    assert int(r.completion_status) == 70
    assert r.completion_status == 70
    assert not r.completion_status.is_known
    assert CompletionStatus(70) is CompletionStatus(70)
    assert unstructure_record(r)["CompletionStatus"] == 70


def test_extra_fields_are_ignored_and_absent_nullables_are_none() -> None:
    """Unknown keys are ignored; a nullable field left out reads as None."""
    rec = {
        "LabInstanceId": 5,
        "LabProfileId": 1,
        "Start": 10,
        "CompletionStatus": 4,
        "TotalRunTimeSeconds": 1,
        "TaskCompletePercent": 0,
        "IsExam": False,
        "SomethingNew": {"x": 1},
    }
    r = structure_results({"Results": [rec], "Status": 1, "Error": None})[0]
    assert r.end is None and r.city is None


def test_status_zero_raises_api_error_with_text() -> None:
    """Status 0 carries the server's Error text; the 7-day refusal has its own class."""
    with pytest.raises(LodWindowTooLongError) as info:
        structure_results({"Error": "Timeframe cannot exceed 7 days", "Status": 0})
    assert info.value.error_text == "Timeframe cannot exceed 7 days"
    with pytest.raises(LodApiError) as info2:
        structure_results({"Error": "Bad thing", "Status": 0}, command="LatestResults")
    assert not isinstance(info2.value, LodWindowTooLongError)
    assert "Bad thing" in str(info2.value)


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("Start", "yesterday", "Start"),
        ("IsExam", "false", "IsExam"),
        ("LabProfileId", None, "LabProfileId"),
        ("End", 10**20, "End"),
        ("ExamScore", "NaN", "ExamScore"),
        ("UserId", [1], "UserId"),
        ("LabHostId", 1.5, "LabHostId"),
    ],
)
def test_schema_errors_name_the_field(field: str, value: Any, needle: str) -> None:
    """A field that does not fit raises LodSchemaError naming it and showing the record."""
    rec = _valid()
    rec[field] = value
    with pytest.raises(LodSchemaError) as info:
        structure_results({"Results": [_valid(), rec], "Status": 1})
    assert info.value.field == needle
    assert f"Results[1].{needle}" in str(info.value)
    assert info.value.excerpt and "LabInstanceId" in info.value.excerpt


def test_missing_required_field_is_named() -> None:
    """A required field left out is reported as missing."""
    rec = _valid()
    del rec["Start"]
    with pytest.raises(LodSchemaError, match=r"Start: is required but missing"):
        structure_results({"Results": [rec], "Status": 1})


@pytest.mark.parametrize("doc", [[], "x", 3, None, {"Results": {}}, {"Status": 1}])
def test_envelopes_that_are_not_documented_shapes(doc: Any) -> None:
    """Non-object bodies and a non-array Results are schema errors."""
    with pytest.raises(LodSchemaError):
        structure_results(doc)


@given(records())
@settings(max_examples=300)
def test_round_trip_json_to_record_to_json(rec: dict[str, Any]) -> None:
    """JSON -> LabResult -> JSON gives back the same JSON (numbers compare as numbers)."""
    r = structure_record(rec)
    back = unstructure_record(r)
    assert decode_json(encode_json(back)) == decode_json(json.dumps(rec).encode())
    assert structure_record(back) == r


def _body(recs: list[Any]) -> bytes:
    # stdlib json: it writes integers of any size (orjson stops at 64 bits)
    try:
        text = json.dumps({"Results": recs, "Status": 1, "Error": None}, allow_nan=False)
    except ValueError:
        assume(False)  # NaN/Infinity are not JSON; a server cannot send them
    return text.encode()


@given(st.lists(records(), max_size=5))
@settings(max_examples=200)
def test_hot_path_equals_converter_on_valid_bodies(recs: list[dict[str, Any]]) -> None:
    """decode_results (msgspec) and the cattrs converter agree record by record."""
    fast = decode_results(_body(recs))
    slow = [converter.structure(r, LabResult) for r in recs]
    assert fast == slow
    assert [unstructure_record(x) for x in fast] == [unstructure_record(x) for x in slow]


@given(st.lists(st.one_of(records(), damaged_records()), min_size=1, max_size=4))
@settings(max_examples=400)
def test_hot_path_never_accepts_what_the_converter_rejects(recs: list[dict[str, Any]]) -> None:
    """On damaged bodies: the same records, or the same LodSchemaError naming the field."""
    try:
        expected: list[LabResult] | str = [structure_record(r) for r in recs]
    except LodSchemaError:
        expected = "error"
    try:
        got: list[LabResult] | str = decode_results(_body(recs))
    except LodSchemaError as exc:
        assert exc.field is None or exc.field in str(exc)
        got = "error"
    assert got == expected


def test_hot_path_keeps_spelling_of_numbers() -> None:
    """5 stays 5 and 5.0 stays 5.0, in the record and in the JSON written back."""
    a, b = _valid(), _valid()
    a["ExamScore"], b["ExamScore"] = 5, 5.0
    a["LabInstanceId"] = 9
    out = decode_results(_body([a, b, a]))
    assert [str(r.exam_score) for r in out] == ["5", "5.0", "5"]
    assert [json.loads(dump_record(r))["ExamScore"] for r in out] == [5, 5.0, 5]
    assert [type(json.loads(dump_record(r))["ExamScore"]) for r in out] == [int, float, int]


def test_hot_path_tolerated_spellings_go_through_the_converter() -> None:
    """A numeric UserId is not a plain string: still decoded, as the converter does."""
    rec = _valid()
    rec["UserId"] = 555
    assert decode_results(_body([rec]))[0].user_id == "555"


def test_hot_path_status_zero_and_not_json() -> None:
    """Status 0 and non-JSON bodies raise the same errors as the converter path."""
    with pytest.raises(LodWindowTooLongError):
        decode_results(b'{"Error": "Timeframe cannot exceed 7 days", "Status": 0}')
    with pytest.raises(LodJSONError):
        decode_results(b'{"Results": [')
    with pytest.raises(LodSchemaError):
        decode_results(b'{"Results": 3, "Status": 1}')


@given(junk)
def test_junk_bodies_raise_only_decode_or_api_errors(doc: Any) -> None:
    """Anything JSON can hold either decodes or raises a LodError subclass."""
    with contextlib.suppress(LodSchemaError, LodApiError):
        structure_results(doc)


@given(st.binary(max_size=64))
def test_arbitrary_bytes_raise_json_error_or_decode(body: bytes) -> None:
    """Invalid UTF-8 or garbage gives LodJSONError, never another exception type."""
    try:
        doc = decode_json(body)
    except LodJSONError:
        return
    with contextlib.suppress(LodSchemaError, LodApiError):
        structure_results(doc)


def test_dumps_records_is_the_api_envelope() -> None:
    """Records written back out are a Results body that decodes to the same records."""
    r = structure_results({"Results": [_valid()], "Status": 1})
    doc = json.loads(dumps_records(r))
    assert doc["Status"] == 1 and doc["Error"] is None
    assert structure_results(doc) == r


def _outcome(decode: Any, body: bytes) -> Any:
    try:
        return decode(body)
    except LodError as exc:
        return (type(exc).__name__, getattr(exc, "field", None))


def _careful(body: bytes) -> Any:
    return structure_results(decode_json(body))


@given(envelopes(st.lists(st.one_of(records(), damaged_records()), max_size=3)))
@settings(max_examples=400)
def test_one_envelope_rule_on_both_paths(doc: dict[str, Any]) -> None:
    """Every envelope spelling: the hot path and the careful path give the same outcome."""
    body = _body_of(doc)
    assert _outcome(decode_results, body) == _outcome(_careful, body)


@pytest.mark.parametrize(
    ("doc", "count"),
    [
        ({"Results": "recs", "Status": 1}, 2),
        ({"Results": "recs", "Status": None}, 2),
        ({"Results": "recs"}, 2),
        ({"Results": "recs", "Status": None, "Error": ""}, 2),
        ({"Results": None, "Status": 1}, 0),
        ({"Results": None, "Status": 1, "Error": None}, 0),
        ({"Results": None}, 0),
    ],
)
def test_envelopes_that_mean_records(doc: dict[str, Any], count: int) -> None:
    """Status null/absent without an Error is success; Results null is an empty window."""
    if doc["Results"] == "recs":
        doc["Results"] = [_valid(), {**_valid(), "LabInstanceId": 7}]
    body = json.dumps(doc).encode()
    assert len(decode_results(body)) == count
    assert len(_careful(body)) == count


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        ({"Results": [], "Status": None, "Error": "boom"}, LodApiError),
        ({"Status": 1}, LodSchemaError),
        ({"Results": [], "Status": 2}, LodSchemaError),
        ({"Results": [], "Status": True}, LodSchemaError),
        ({"Results": [], "Status": "1"}, LodSchemaError),
    ],
)
def test_envelopes_that_mean_errors(doc: dict[str, Any], error: type[LodError]) -> None:
    """An Error text without Status, a missing Results and a wrong Status fail on both paths."""
    body = json.dumps(doc).encode()
    for decode in (decode_results, _careful):
        with pytest.raises(error):
            decode(body)


INT64 = 2**63


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("LabInstanceId", INT64),
        ("LabInstanceId", 2**70),
        ("LabInstanceId", -3),
        ("LabInstanceId", 0),
        ("LabProfileId", -1),
        ("LabHostId", 2**64),
        ("LabHostId", INT64),
        ("DatacenterId", -INT64 - 1),
        ("DeliveryRegionId", 2**64 - 1),
        ("TotalRunTimeSeconds", INT64),
        ("ExamMaxPossibleScore", INT64 + 5),
        ("CompletionStatus", INT64),
    ],
)
def test_every_integer_is_bounded_on_both_paths(field: str, value: int) -> None:
    """Integers SQLite cannot hold (ids: also zero and negatives) are schema errors naming
    the field, on the hot path and the careful one."""
    rec = _valid()
    rec[field] = value
    body = json.dumps({"Results": [_valid(), rec], "Status": 1}).encode()
    for decode in (decode_results, _careful):
        with pytest.raises(LodSchemaError) as info:
            decode(body)
        assert info.value.field == field
        assert f"Results[1].{field}" in str(info.value)


@pytest.mark.parametrize("value", [INT64, -INT64 - 1, 2**200])
def test_decimals_are_not_bounded_like_integers(value: int) -> None:
    """A decimal field holds an integer of any size, exactly, on both paths (the stores
    keep decimals as text; see test_numbers.py for the typed destinations)."""
    rec = _valid()
    rec["ExamScore"] = value
    body = json.dumps({"Results": [rec], "Status": 1}).encode()
    assert decode_results(body)[0].exam_score == Decimal(value) == _careful(body)[0].exam_score


@pytest.mark.parametrize("value", [INT64 - 1, -INT64])
def test_int64_edges_are_accepted(value: int) -> None:
    """The int64 edges themselves decode (the bounds are inclusive)."""
    rec = _valid()
    rec["LabHostId"] = value
    rec["LabInstanceId"] = INT64 - 1
    body = json.dumps({"Results": [rec], "Status": 1}).encode()
    assert decode_results(body)[0].lab_host_id == value == _careful(body)[0].lab_host_id


@pytest.mark.parametrize("field", ["UserId", "City", "IpAddress"])
def test_lone_surrogates_are_schema_errors_on_both_paths(field: str) -> None:
    """ "\\ud800" is valid JSON but no UTF-8 text: refused naming the field."""
    body = json.dumps({"Results": [{**_valid(), field: "ab\ud800c"}], "Status": 1}).encode()
    for decode in (decode_results, _careful):
        with pytest.raises(LodSchemaError) as info:
            decode(body)
        assert info.value.field == field
    pair = json.dumps({"Results": [{**_valid(), field: "\U0001f600"}], "Status": 1}).encode()
    assert getattr(decode_results(pair)[0], "user_id" if field == "UserId" else
                   "city" if field == "City" else "ip_address") == "\U0001f600"  # fmt: skip


@pytest.mark.parametrize("depth", [990, 1000, 1100, 5000])
@pytest.mark.parametrize("kind", ["list", "dict"])
def test_deep_unknown_field_is_a_decode_error_not_retried(depth: int, kind: str) -> None:
    """An unknown field nested ~1,000 deep: a LodDecodeError (never RecursionError), final."""
    inner = "[" * depth + "]" * depth if kind == "list" else '{"x":' * depth + "1" + "}" * depth
    rec = json.dumps(_valid())[:-1] + ', "Unknown": ' + inner + "}"
    body = ('{"Results": [' + rec + '], "Status": 1}').encode()
    try:
        got = decode_results(body)
    except LodDecodeError as exc:
        assert "nested too deeply" in str(exc) or exc.field is not None
        assert not is_retryable(exc)
    else:
        assert len(got) == 1  # shallow enough for the parser: the unknown field is ignored


def test_decoding_never_touches_the_garbage_collector() -> None:
    """No process-global state: the collector is neither switched off nor on."""
    body = dumps_records(structure_results({"Results": [_valid()] * 3000, "Status": 1}))
    with (
        mock.patch.object(gc, "disable", side_effect=AssertionError("gc.disable")),
        mock.patch.object(gc, "enable", side_effect=AssertionError("gc.enable")),
    ):
        assert len(decode_results(body)) == 3000


def test_the_converter_is_not_public() -> None:
    """The hot path does not read the converter, so changing it is not offered."""
    assert "converter" not in lodresults.__all__
    assert not hasattr(lodresults, "converter")


def _body_of(doc: Any) -> bytes:
    try:
        return json.dumps(doc, allow_nan=False).encode()
    except ValueError:
        assume(False)
        raise


def _valid() -> dict[str, Any]:
    return dict(_example("/Results")["Results"][0])
