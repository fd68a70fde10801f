"""The decoder: records as the constructor makes them, the loop never held, new fields told."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import pickle
from collections.abc import Callable

import attrs
import orjson
import pytest

from lodresults import LabResult, LodClient, LodError, LodSchemaError, UnknownField
from lodresults._records.decode import SLICE, STEP_BYTES, RecordDecoder, decode_results, run_steps
from lodresults._records.models import FIELDS
from lodresults._records.wire import structure_record
from lodresults._request.key import ApiKey, check_base_url
from lodresults._request.transport import Answer, Transport
from lodresults.testing import Simulator
from tests.test_store import lab


def body(n: int, **changes: object) -> bytes:
    """A Results body of ``n`` labs (ids 1..n)."""
    one = orjson.dumps(lab(1, ExamScore=87.5, Latitude=-33.8688, **changes))
    recs = [
        one.replace(b'"LabInstanceId":1,', b'"LabInstanceId":%d,' % i, 1) for i in range(1, n + 1)
    ]
    return b'{"Results":[' + b",".join(recs) + b'],"Status":1,"Error":null}'


def test_built_records_are_the_constructors_records() -> None:
    """The fast path's records are LabResults in every way the constructor's are: type,
    equality, hash, repr, frozen, pickling, evolve."""
    fast = decode_results(body(3))
    one = lab(1, ExamScore=87.5, Latitude=-33.8688)
    careful = [structure_record({**one, "LabInstanceId": i}) for i in (1, 2, 3)]
    assert fast == careful
    for a, b in zip(fast, careful, strict=True):
        assert type(a) is LabResult
        assert hash(a) == hash(b) and repr(a) == repr(b)
        with pytest.raises(attrs.exceptions.FrozenInstanceError):
            a.city = "x"  # type: ignore[misc]
        assert pickle.loads(pickle.dumps(a)) == b
        assert attrs.evolve(a, city="x") == attrs.evolve(b, city="x")


async def test_a_100k_record_body_gives_the_loop_a_turn_every_slice() -> None:
    """The stall probe: while a 100,000-record body decodes through the transport, another
    task on the loop gets a turn after every piece of about STEP_BYTES (at most one record
    more), counted, not timed: a piece is a few milliseconds of work on any machine of
    ours."""
    n = 100_000
    data = body(n)
    shortest = len(body(1)) - len(body(0)) + 1  # lab 1's record and its comma
    per_step = STEP_BYTES // shortest + 2  # the records of one piece, at most
    decoder = RecordDecoder()
    built: list[int] = []  # records decoded so far, seen by the probe at each of its turns
    real = decoder._build

    def counting(structs: list[object]) -> list[object]:
        built.append(len(structs))
        return real(structs)  # type: ignore[no-any-return]

    decoder._build = counting  # type: ignore[method-assign]
    seen: list[int] = []
    done = False

    async def probe() -> None:
        while not done:
            seen.append(sum(built))
            await asyncio.sleep(0)

    t = Transport(check_base_url("http://127.0.0.1:1"), ApiKey("k" * 20), timeout=1,
                  max_response_bytes=len(data))  # fmt: skip
    task = asyncio.ensure_future(probe())
    await asyncio.sleep(0)
    records = await t.decode("Results", Answer(200, data), decoder.steps)
    done = True
    await task
    assert len(records) == n and records[-1].lab_instance_id == n
    assert max(built) <= per_step
    # Between two turns of the probe, no more than one piece was decoded.
    assert max(b - a for a, b in itertools.pairwise(seen)) <= per_step
    assert len(set(seen)) >= math.ceil(n / per_step)


@pytest.mark.parametrize("spaced", [False, True], ids=["cut", "whole"])
def test_steps_yield_between_pieces(spaced: bool) -> None:
    """A decode in steps yields once per piece (a body laid out as the API sends it) or
    per slice of SLICE records (any other), and run_steps gives the same records."""
    data = body(2 * SLICE + 1)
    if spaced:
        data = data.replace(b'{"Results":[', b'{ "Results": [', 1)
    decoder = RecordDecoder()
    steps = decoder.steps(data)
    turns = 0
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            records = stop.value
            break
        turns += 1
    pieces = 3 if spaced else math.ceil(len(data) / STEP_BYTES)
    assert turns == pieces and len(records) == 2 * SLICE + 1
    assert run_steps(decoder.steps(body(5))) == records[:5]


def _collect(events: list[UnknownField]) -> Callable[[object], None]:
    def hook(e: object) -> None:
        if isinstance(e, UnknownField):
            events.append(e)

    return hook


async def test_each_new_field_is_reported_once_per_client(caplog: pytest.LogCaptureFixture) -> None:
    """Fields the API added are tolerated, and each name is reported once per client (an
    UnknownField event and an INFO log line with control characters escaped), on the fast
    path, the careful path (a tolerated spelling) and the Result command."""
    odd = "Seat\x1b[31mCount\u202e"
    recs = [
        {**lab(1), "NewThing": {"a": [1, 2]}, odd: 3},
        {**lab(2), "NewThing": None, "Other": "x"},
        {**lab(3), "UserId": 555, "Careful": True},  # a numeric UserId: the careful path
    ]
    a, b = 1_700_000_000, 1_700_000_000 + 86400
    events: list[UnknownField] = []
    caplog.set_level(logging.INFO, logger="lodresults")
    async with Simulator(records=recs, span=(a - 86400, b + 86400), api_key="k" * 20) as sim:
        for _ in range(2):  # a second client reports again, once
            hook = _collect(events)
            async with LodClient(
                sim.api_key, base_url=sim.base_url, rate_limit=None, on_event=hook
            ) as c:
                for _ in range(2):
                    got = await c.results(a, b)
                    assert [r.lab_instance_id for r in got] == [1, 2, 3]
                await c.result(1)
    names = sorted(["NewThing", odd, "Other", "Careful"])
    assert sorted(e.name for e in events) == sorted(names * 2)
    assert {e.command for e in events} == {"Results"}
    lines = [r.getMessage() for r in caplog.records if "does not know" in r.getMessage()]
    assert len(lines) == 8
    assert any("Seat\\x1b[31mCount\\u202e" in line for line in lines)
    assert not any("\x1b" in line or "\u202e" in line for line in lines)


async def test_the_result_command_reports_new_fields() -> None:
    """The Result command (careful path only) reports its new fields too."""
    a = 1_700_000_000
    events: list[UnknownField] = []
    recs = [{**lab(7), "Brand": "new"}]
    hook = _collect(events)
    sim = Simulator(records=recs, span=(a - 86400, a + 86400), api_key="k" * 20)
    async with sim:
        client = LodClient(sim.api_key, base_url=sim.base_url, rate_limit=None, on_event=hook)
        async with client:
            assert (await client.result(7)).lab_instance_id == 7
    assert events == [UnknownField("Result", "Brand")]


def test_many_new_fields_are_each_reported_once_and_decoded() -> None:
    """A body where every record brings a field of its own (a hostile server): every record
    decodes, each name is reported once, and the fast path learns at most a few per slice
    (the rest of such a slice goes the careful way) instead of one attempt per name."""
    n = SLICE + 100
    recs = [{**lab(i), f"New{i}": i} for i in range(1, n + 1)]
    data = orjson.dumps({"Results": recs, "Status": 1})
    decoder = RecordDecoder()
    names: list[str] = []
    records = run_steps(decoder.steps(data, "Results", names.append))
    assert [r.lab_instance_id for r in records] == list(range(1, n + 1))
    assert sorted(names) == sorted(f"New{i}" for i in range(1, n + 1))
    assert len(decoder._extras) <= 64
    again: list[str] = []
    run_steps(decoder.steps(data, "Results", again.append))
    assert again == []


@pytest.mark.parametrize(
    "name", ['Bad"Name', "Back\\slash", "Ctl\x01", "Tab\tName", "Lone\ud800", "\udfff\ud800"]
)
def test_a_field_name_msgspec_cannot_rename_does_not_slow_later_bodies(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new field whose name msgspec cannot take as a struct field (a quote, a backslash,
    a control character, a lone surrogate) is reported and its records decoded carefully;
    bodies without it still take the fast path afterwards."""
    decoder = RecordDecoder()
    names: list[str] = []
    # json, not orjson: orjson cannot write a lone surrogate (the API may, escaped).
    odd = json.dumps({"Results": [{**lab(1), name: 1}, lab(2)], "Status": 1}).encode()
    assert [r.lab_instance_id for r in run_steps(decoder.steps(odd, "Results", names.append))] == [
        1,
        2,
    ]
    assert names == [name]
    careful: list[int] = []
    real = RecordDecoder._careful

    def spy(self: RecordDecoder, chunk: bytes, *args: object) -> list[object]:
        careful.append(len(chunk))
        return real(self, chunk, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(RecordDecoder, "_careful", spy)
    assert len(run_steps(decoder.steps(body(50)))) == 50
    assert careful == []


@pytest.mark.parametrize("step", [1, STEP_BYTES])
@pytest.mark.parametrize("damage", ["not json", "bad last record", "status 0"])
def test_no_new_field_is_reported_from_a_body_that_fails(step: int, damage: str) -> None:
    """A body that fails (as the careful path says) reports none of its new field names,
    even those of records decoded before the failure was found; the same names are
    reported, once, when a body that decodes brings them."""
    recs = [{**lab(1), "NewThing": 1}] + [lab(i) for i in range(2, 6)]
    good = orjson.dumps({"Results": recs, "Status": 1})
    bad = {
        "not json": good.replace(b'"LabInstanceId":5,', b'"LabInstanceId":5,,'),
        "bad last record": orjson.dumps({"Results": [*recs[:-1], {**lab(5), "UserId": []}]}),
        "status 0": orjson.dumps({"Results": recs, "Status": 0, "Error": "no"}),
    }[damage]
    decoder = RecordDecoder(step_bytes=step)
    names: list[str] = []
    with pytest.raises(LodError):
        run_steps(decoder.steps(bad, "Results", names.append))
    assert names == []
    assert len(run_steps(decoder.steps(good, "Results", names.append))) == 5
    run_steps(decoder.steps(good, "Results", names.append))
    assert names == ["NewThing"]


def test_a_timestamp_the_platform_cannot_hold_is_a_schema_error() -> None:
    """A timestamp within the declared bounds that the platform's ``fromtimestamp`` refuses
    (OSError, OverflowError: on Windows any instant before 1970) is the careful path's
    LodSchemaError naming the field, not a bare OSError from the fast path."""
    wide = tuple(
        attrs.evolve(f, bounds=(-(2**63), 2**63 - 1)) if f.kind == "timestamp" else f
        for f in FIELDS
    )
    body = orjson.dumps({"Results": [lab(1, Start=2**62)], "Status": 1})
    with pytest.raises(LodSchemaError) as caught:
        run_steps(RecordDecoder(LabResult, wide).steps(body))
    assert caught.value.field == "Start"
