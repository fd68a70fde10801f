"""Every number exactly as sent: both decode paths, every export, and the typed wider form."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lodresults import LabResult, dump_record
from lodresults._records.decode import decode_results
from lodresults._records.values import decimal_text
from lodresults._records.wire import decode_json, structure_results
from lodresults.cli._export import export
from tests.test_store import lab, make_db

DECIMALS = ("ExamScore", "Latitude", "Longitude")
NAMES = ("exam_score", "latitude", "longitude")

#: The numbers the issue named, and the edges of every rule: those DECIMAL(38, 18) holds
#: exactly, and those it does not (they go to unfit_decimals).
FIT = [
    "12345678901234567890.5",
    "48.50",
    "1e2",
    "-0",
    "-0.0",
    "0E-30",
    "0.0000001",
    "99999999999999999999.999999999999999999",
]
UNFIT = [
    "87.12345678901234567891",
    "1.0000000000000000000000001",
    "1e-400",
    "1e400",
    "5e-324",
    "1e30",
    "1E+30",
    "0.0000000000000000000000000001",
    "100000000000000000000",
    "-1e-999999",
    "7.9228162514264337593543950335E+28",
    "123456789012345678901234567890123456789012345",
]
EXTREMES = FIT + UNFIT


@st.composite
def number_texts(draw: st.DrawFn) -> str:
    """A JSON number as a server may spell it: long mantissas, trailing zeros, exponents."""
    sign = draw(st.sampled_from(["", "-"]))
    whole = draw(st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,39}", fullmatch=True)))
    fraction = draw(st.one_of(st.just(""), st.from_regex(r"\.[0-9]{1,40}", fullmatch=True)))
    exponent = draw(
        st.one_of(
            st.just(""),
            st.tuples(
                st.sampled_from("eE"),
                st.sampled_from(["", "+", "-"]),
                st.one_of(st.integers(0, 40).map(str), st.sampled_from(["324", "400", "0005"])),
            ).map("".join),
        )
    )
    return sign + whole + fraction + exponent


numbers = st.one_of(st.sampled_from(EXTREMES), number_texts(), st.none())
triples = st.lists(st.tuples(numbers, numbers, numbers), min_size=1, max_size=5)


def body_of(values: list[tuple[str | None, ...]]) -> bytes:
    """A Results body whose decimal fields carry these very texts."""
    recs = []
    for i, texts in enumerate(values, start=1):
        doc = json.dumps(lab(i, **{w: f"@{w}@" for w in DECIMALS}))
        for wire, text in zip(DECIMALS, texts, strict=True):
            doc = doc.replace(f'"@{wire}@"', "null" if text is None else text)
        recs.append(doc)
    return ('{"Results": [' + ", ".join(recs) + '], "Status": 1, "Error": null}').encode()


def exact(d: Decimal | None) -> Any:
    """A decimal as sign, digits and exponent (== alone takes -0 for 0 and 48.5 for 48.50)."""
    return None if d is None else d.as_tuple()


def sent(values: list[tuple[str | None, ...]]) -> list[tuple[Any, ...]]:
    return [tuple(None if t is None else exact(Decimal(t)) for t in v) for v in values]


def held(records: list[LabResult]) -> list[tuple[Any, ...]]:
    return [tuple(exact(getattr(r, n)) for n in NAMES) for r in records]


def verbatim(text: str | None) -> bool:
    """Whether the exports write ``text`` as it came: numbers .NET writes for a decimal."""
    return text is not None and "e" not in text.lower() and Decimal(text).adjusted() >= -28


@given(triples)
@settings(max_examples=300)
def test_every_decimal_is_the_decimal_of_its_text_on_both_paths(
    values: list[tuple[str | None, ...]],
) -> None:
    """Whatever its length or exponent, each decimal equals Decimal(its text on the wire),
    digit for digit, sign of zero included, on the fast path and the careful one."""
    body = body_of(values)
    fast = decode_results(body)
    careful = structure_results(decode_json(body))
    assert fast == careful
    assert held(fast) == held(careful) == sent(values)


@pytest.mark.parametrize("space", ["", " " * 16, " " * 17, "\n" * 40, " \t\r\n" * 300])
@pytest.mark.parametrize("layout", ["compact", "spaced"])
def test_negative_zero_keeps_its_sign_after_any_whitespace(space: str, layout: str) -> None:
    """``-0`` however much whitespace JSON puts before it (after ``:``, ``[`` or ``,``),
    cut into pieces or decoded whole: the sign is kept, as the careful path keeps it."""
    rec = json.dumps(lab(1), separators=(",", ":")).replace(
        '"Latitude":null', '"Latitude":' + space + "-0"
    )
    head = '{"Results":[' if layout == "compact" else '{ "Results": ['
    body = (head + rec + "]}").encode()
    fast = decode_results(body)
    careful = structure_results(decode_json(body))
    assert exact(fast[0].latitude) == exact(careful[0].latitude) == exact(Decimal("-0"))


@given(triples)
@settings(max_examples=25, deadline=None)
def test_every_export_keeps_every_decimal(
    tmp_path_factory: pytest.TempPathFactory, values: list[tuple[str | None, ...]]
) -> None:
    """Body -> records -> SQLite -> JSON lines / CSV: every decimal comes back exactly, and
    a number written without an exponent (as .NET writes a decimal) in its very spelling."""
    records = decode_results(body_of(values))
    db = tmp_path_factory.mktemp("numbers") / "n.db"

    async def exports() -> tuple[str, str]:
        await make_db(db, records)
        jsonl, table = io.StringIO(), io.StringIO()
        await export(db, "jsonl", jsonl)
        await export(db, "csv", table)
        return jsonl.getvalue(), table.getvalue()

    jsonl, table = asyncio.run(exports())
    lines = [json.loads(line, parse_float=Decimal, parse_int=Decimal) for line in jsonl.split()]
    assert [tuple(exact(doc[w]) for w in DECIMALS) for doc in lines] == sent(values)
    rows = list(csv.DictReader(io.StringIO(table)))
    assert [tuple(exact(Decimal(r[n])) if r[n] else None for n in NAMES) for r in rows] == sent(
        values
    )
    for line, row, texts in zip(jsonl.split(), rows, values, strict=True):
        for wire, name, text in zip(DECIMALS, NAMES, texts, strict=True):
            if verbatim(text):
                assert f'"{wire}":{text},' in line
                assert row[name] == text
    # The one-record dump agrees with the export.
    assert [dump_record(r).decode() for r in records] == jsonl.split()


@pytest.mark.parametrize("text", EXTREMES)
def test_decimal_text_is_exact_and_plain_where_net_would_be(text: str) -> None:
    """``decimal_text`` gives back the same decimal; plain notation within 28 places."""
    d = Decimal(text)
    assert exact(Decimal(decimal_text(d))) == exact(d)
    if verbatim(text):
        assert decimal_text(d) == text


def test_careful_path_names_a_number_beyond_any_decimal() -> None:
    """An exponent beyond what Decimal holds fails the record naming the field, on both
    paths (it is valid JSON, so not a JSON error)."""
    from lodresults import LodSchemaError

    body = body_of([("1e999999999999999999999", None, None)])
    for decode in (decode_results, lambda b: structure_results(decode_json(b))):
        with pytest.raises(LodSchemaError) as info:
            decode(body)
        assert info.value.field == "ExamScore"


def test_parquet_keeps_what_fits_and_the_rest_in_the_wider_form(tmp_path: Path) -> None:
    """Values DECIMAL(38, 18) holds are written as their value; the others are null in their
    column and exact in unfit_decimals; the other records and fields load as usual."""
    pq = pytest.importorskip("pyarrow.parquet")
    from lodresults._destinations.parquet import write_parquet

    values: list[tuple[str | None, ...]] = [(t, "48.50", None) for t in EXTREMES]
    records = decode_results(body_of(values))
    out = tmp_path / "n.parquet"
    assert write_parquet(records, out) == len(records)
    rows = pq.read_table(out).to_pylist()
    for row, (text, _, _) in zip(rows, values, strict=True):
        assert text is not None
        assert row["latitude"] == Decimal("48.50")
        d = Decimal(text)
        if row["exam_score"] is not None:
            assert row["exam_score"] == d and row["unfit_decimals"] is None
        else:
            wide = json.loads(row["unfit_decimals"])
            assert exact(Decimal(wide["exam_score"])) == exact(d)
    stored = {r["lab_instance_id"] for r in rows if r["unfit_decimals"]}
    assert stored == {i for i, (t, _, _) in enumerate(values, 1) if t in UNFIT}
