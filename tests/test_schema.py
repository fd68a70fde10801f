"""One declaration of a lab result's fields: every layer derives from it; a field is one line."""

from __future__ import annotations

import sqlite3
import traceback
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import cattrs
import msgspec
import orjson
import pytest

from lodresults import LabResult, LodSchemaError, SQLiteStore
from lodresults._destinations.sqlite_schema import _SQL_TYPES, row_reader, row_writer, table_sql
from lodresults._records.decode import _CONVERSIONS, _builder, _slice_decoder
from lodresults._records.models import FIELDS
from lodresults._records.schema import INT64_MAX, KINDS, column, fields_of
from lodresults._records.wire import (
    WIRE_NAMES,
    make_converter,
    structure_record,
    unstructure_record,
)
from lodresults.cli._export import CSV_SPELLING
from tests.csv_records import CSV_PARSERS
from tests.test_store import lab

NAMES = [a.name for a in attrs.fields(LabResult)]


async def test_every_layer_covers_exactly_the_fields(tmp_path: Path) -> None:
    """The wire names, the SQLite columns, the JSON shape and the Arrow columns list
    LabResult's fields, no more, no less, in its order."""
    assert [f.name for f in FIELDS] == NAMES
    assert list(WIRE_NAMES) == NAMES
    assert list(unstructure_record(structure_record(lab(1)))) == [f.wire for f in FIELDS]
    store = await SQLiteStore.open(tmp_path / "s.db")
    await store.close()
    with closing(sqlite3.connect(tmp_path / "s.db")) as c:
        cols = [r[1] for r in c.execute("PRAGMA table_info(lab_results)")]
    assert cols == ["tenant", *NAMES, "fetched_at"]
    arrow = pytest.importorskip("lodresults._destinations.arrow")
    assert arrow.ARROW_SCHEMA.names == [*NAMES, arrow.UNFIT_DECIMALS]


def test_every_kind_has_a_rule_in_every_layer() -> None:
    """A new kind of field cannot be half supported: each layer has a rule for each kind."""
    layers: dict[str, Any] = {
        "fast path": _CONVERSIONS,
        "SQLite": _SQL_TYPES,
        "CSV export": CSV_SPELLING,
        "CSV reader (tests)": CSV_PARSERS,
    }
    arrow = pytest.importorskip("lodresults._destinations.arrow")
    layers["Arrow"] = arrow._ARROW_TYPES
    for name, table in layers.items():
        assert set(table) == set(KINDS), name


def _plus(extra: dict[str, Any]) -> type:
    """A copy of LabResult with ``extra`` fields added: what adding a line to it makes."""
    these = {a.name: attrs.field(type=a.type, metadata=a.metadata) for a in attrs.fields(LabResult)}
    return attrs.make_class("LabResultPlus", {**these, **extra}, frozen=True, slots=True)


def _fast(cls: type, fields: tuple[Any, ...], recs: list[dict[str, Any]]) -> list[Any] | None:
    """The fast path alone: the records, or None where it leaves the body to the converter."""
    try:
        return _builder(cls, fields)(_slice_decoder(fields, frozenset()).decode(orjson.dumps(recs)))
    except (msgspec.ValidationError, ValueError):
        return None


def test_a_new_field_is_one_line_in_every_layer() -> None:
    """Adding ``seat_count: int | None`` (and a required bounded ``tenant_id``) to a copy of
    LabResult: both decode paths, the JSON shape and the SQLite table and rows carry them,
    with nothing else written."""
    cls = _plus(
        {
            "seat_count": attrs.field(type=int | None),
            "tenant_id": attrs.field(type=int, metadata=column(ge=1)),
        }
    )
    fields = fields_of(cls)
    converter = make_converter(cls, fields)
    rec = {**lab(1), "SeatCount": 12, "TenantId": 3}
    decoded = _fast(cls, fields, [rec, {**rec, "SeatCount": None}])
    assert decoded is not None and type(decoded[0]) is cls
    assert [(r.seat_count, r.tenant_id) for r in decoded] == [(12, 3), (None, 3)]
    assert decoded[0] == converter.structure(rec, cls)
    assert converter.unstructure(decoded[0]) == rec
    # Bounds and required-ness come with the line: both paths refuse what does not fit.
    for bad in ({**rec, "TenantId": 0}, {**rec, "SeatCount": INT64_MAX + 1}):
        assert _fast(cls, fields, [bad]) is None
        with pytest.raises(cattrs.ClassValidationError):
            converter.structure(bad, cls)
    missing = {k: v for k, v in rec.items() if k != "TenantId"}
    assert _fast(cls, fields, [missing]) is None
    # SQLite: the column, its constraint, and the row both ways.
    with closing(sqlite3.connect(":memory:")) as c:
        c.execute(table_sql("t", fields))
        info = {r[1]: (r[2], r[3]) for r in c.execute("PRAGMA table_info(t)")}
        assert info["seat_count"] == ("INTEGER", 0) and info["tenant_id"] == ("INTEGER", 1)
        c.execute(f"INSERT INTO t VALUES ({', '.join('?' * (len(fields) + 1))})",
                  row_writer(fields)(decoded[0], 5))  # fmt: skip
        row = c.execute(f"SELECT {', '.join(f.name for f in fields)} FROM t").fetchone()
    assert row_reader(cls, fields)(row) == decoded[0]


def test_the_generated_build_shows_in_tracebacks() -> None:
    """A failure inside the generated loop shows its source line, as attrs' code does."""
    body = orjson.dumps([{**lab(1), "ExamScore": "NaN"}])
    wire = _slice_decoder(FIELDS, frozenset()).decode(body)  # msgspec takes the string
    with pytest.raises(ValueError, match="not a finite number") as info:
        _builder(LabResult, FIELDS)(wire)
    text = "".join(traceback.format_exception(info.value))
    assert "o.exam_score = None if (x := w.ExamScore) is None else (x if x.is_finite()" in text


def test_a_field_of_an_unknown_type_is_refused_at_declaration() -> None:
    """A field no layer has a rule for fails when the class is read, not when it is used."""
    cls = _plus({"blob": attrs.field(type=bytes | None)})
    with pytest.raises(TypeError, match="no rule for fields of type"):
        fields_of(cls)


def test_schema_errors_still_name_the_wire_field() -> None:
    """The converter built from the declaration names the API's field on failure."""
    with pytest.raises(LodSchemaError) as info:
        structure_record({**lab(1), "LabProfileId": 0})
    assert info.value.field == "LabProfileId"


async def test_an_older_file_gains_the_columns_of_new_fields(tmp_path: Path) -> None:
    """A database written before a nullable field existed (here: without ``city``): read
    only, the field reads as null; opened for writing, the column is added and kept."""
    db = tmp_path / "old.db"
    store = await SQLiteStore.open(db)
    await store.upsert([structure_record(lab(1, City="Oslo"))])
    await store.close()
    with closing(sqlite3.connect(db)) as c:
        c.execute("ALTER TABLE lab_results DROP COLUMN city")
        c.commit()

    async def read(readonly: bool) -> list[LabResult]:
        s = await SQLiteStore.open(db, readonly=readonly)
        try:
            got: list[LabResult] = []
            await s.for_each_chunk(got.extend)
            return got
        finally:
            await s.close()

    assert [r.city for r in await read(readonly=True)] == [None]
    store = await SQLiteStore.open(db)
    await store.upsert([structure_record(lab(2, City="Bergen"))])
    await store.close()
    assert [r.city for r in await read(readonly=False)] == [None, "Bergen"]
