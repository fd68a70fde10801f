"""Parquet export: typed columns, row groups, round trip through pyarrow, the CLI branch."""

from __future__ import annotations

import asyncio
import os
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lodresults import LabResult, SQLiteStore
from lodresults._destinations.arrow import DECIMAL_PRECISION, DECIMAL_SCALE
from lodresults._records.models import FIELDS
from lodresults._records.values import decimal_text
from lodresults._records.wire import encode_json, structure_record
from lodresults.testing import Simulator
from tests import strategies

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from lodresults._destinations.arrow import (  # noqa: E402
    ARROW_SCHEMA,
    UNFIT_DECIMALS,
    ArrowConversionError,
)
from lodresults._destinations.parquet import write_parquet  # noqa: E402

DAY = 86400


def as_row(r: LabResult) -> dict[str, Any]:
    """
    A record as the plain values its Parquet row must hold (status as its code, a decimal
    that does not fit DECIMAL(38, 18) null in its column and exact in unfit_decimals).
    """
    row = {f.name: getattr(r, f.name) for f in FIELDS}
    row["completion_status"] = int(r.completion_status)
    unfit = {
        n: decimal_text(row[n]) for n in ("exam_score", "latitude", "longitude") if not fits(row[n])
    }
    for name in unfit:
        row[name] = None
    row[UNFIT_DECIMALS] = encode_json(unfit).decode() if unfit else None
    return row


def read_rows(path: Path) -> list[dict[str, Any]]:
    table = pq.read_table(path)
    assert table.schema.equals(ARROW_SCHEMA)
    rows: list[dict[str, Any]] = table.to_pylist()
    return rows


def fits(d: Decimal | None) -> bool:
    """Whether a decimal is exactly representable as DECIMAL(38, 18)."""
    if d is None:
        return True
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    limit = 10 ** (DECIMAL_PRECISION - DECIMAL_SCALE)
    return abs(d) < limit and (exponent >= -DECIMAL_SCALE or d == round(d, DECIMAL_SCALE))


def test_schema_types() -> None:
    """UTC microsecond timestamps, DECIMAL(38, 18), int64 status, nullability from the model."""
    s = ARROW_SCHEMA
    assert s.field("start").type == pa.timestamp("us", tz="UTC")
    assert not s.field("start").nullable
    assert s.field("end").type == pa.timestamp("us", tz="UTC") and s.field("end").nullable
    assert s.field("exam_score").type == pa.decimal128(38, 18)
    assert s.field("latitude").type == pa.decimal128(38, 18)
    assert s.field("completion_status").type == pa.int64()
    assert s.field("exam_max_possible_score").type == pa.int64()
    assert s.field("exam_max_possible_score").nullable
    assert s.field("is_exam").type == pa.bool_() and not s.field("is_exam").nullable
    assert s.field("exam_passed").type == pa.bool_() and s.field("exam_passed").nullable
    assert s.field("user_id").type == pa.string()
    assert s.names == [f.name for f in FIELDS] + [UNFIT_DECIMALS]
    assert s.field(UNFIT_DECIMALS).type == pa.string() and s.field(UNFIT_DECIMALS).nullable


@given(st.lists(strategies.records(), max_size=6))
def test_round_trip(tmp_path_factory: pytest.TempPathFactory, docs: Any) -> None:
    """
    Any valid records: the file reads back equal (decimal values, nulls, far dates); a
    decimal DECIMAL(38, 18) cannot hold is null in its column and exact in unfit_decimals.
    """
    out = tmp_path_factory.mktemp("pq") / "r.parquet"
    records = [structure_record(d) for d in docs]
    assert write_parquet(records, out, row_group_size=4) == len(records)
    assert read_rows(out) == [as_row(r) for r in records]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("99999999999999999999.999999999999999999", True),
        ("-0.000000000000000001", True),
        ("1.50000000000000000000", True),  # more places than 18, all zero: exact
        ("0E-30", True),
        ("1E+20", False),
        ("1E-19", False),
        ("1.0000000000000000001", False),
        ("4.6445269329559015E-233", False),  # pyarrow alone would write 0 here
    ],
)
def test_decimals_exact_or_in_the_wider_form(tmp_path: Path, value: str, ok: bool) -> None:
    """A decimal is written exactly in its column, or kept exactly in unfit_decimals (the
    column null), never rounded; the record is written either way."""
    import attrs

    record = attrs.evolve(structure_record(_doc(1)), exam_score=Decimal(value))
    out = tmp_path / "r.parquet"
    write_parquet([record], out)
    row = read_rows(out)[0]
    if ok:
        assert row["exam_score"] == Decimal(value) and row[UNFIT_DECIMALS] is None
    else:
        assert row["exam_score"] is None
        assert row[UNFIT_DECIMALS] == '{"exam_score":"' + decimal_text(Decimal(value)) + '"}'


def test_a_required_decimal_that_does_not_fit_names_the_lab_and_field() -> None:
    """A decimal field that may not be null has no wider form: the write fails naming the
    lab and the field (never a rounded value)."""
    import attrs

    from lodresults._destinations import arrow

    spec = next(f for f in FIELDS if f.name == "exam_score")
    required = tuple(
        (n, g, k, False if n == spec.name else nullable) for n, g, k, nullable in arrow._GETTERS
    )
    record = attrs.evolve(structure_record(_doc(42)), exam_score=Decimal("1e30"))
    with (
        mock.patch.object(arrow, "_GETTERS", required),
        pytest.raises(ArrowConversionError, match=r"lab 42: exam_score = 1E\+30 does not fit"),
    ):
        arrow.to_arrow([record])


def test_row_groups_bound_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Records are written one row group at a time, and the iterator is consumed lazily."""
    base = structure_record(
        {**_doc(1), "ExamScore": 87.5, "Latitude": -33.8688, "Longitude": 151.2093}
    )
    pulled = 0

    def records() -> Any:
        nonlocal pulled
        for i in range(2500):
            pulled += 1
            # The writer holds at most one group: never more than 1000 pulled ahead.
            assert pulled - written() <= 1000
            yield _with_id(base, i + 1)

    out = tmp_path / "r.parquet"
    groups: list[int] = []

    def written() -> int:
        return sum(groups)

    real = pq.ParquetWriter.write_table

    def spy(self: Any, table: Any, *args: Any, **kwargs: Any) -> None:
        groups.append(table.num_rows)
        real(self, table, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", spy)
    assert write_parquet(records(), out, row_group_size=1000) == 2500
    monkeypatch.undo()
    assert groups == [1000, 1000, 500]
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    rows = read_rows(out)
    assert [r["lab_instance_id"] for r in rows] == list(range(1, 2501))
    assert rows[0]["exam_score"] == Decimal("87.5") and rows[0]["latitude"] == Decimal("-33.8688")


def test_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A value that cannot be written fails the export; an existing file stays as it was."""
    from lodresults._destinations import arrow

    out = tmp_path / "r.parquet"
    good = structure_record(_doc(1))
    write_parquet([good], out)
    before = out.read_bytes()
    bad = structure_record({**_doc(2), "UserId": "x"})

    def refuse(records: Any) -> Any:
        if any(r.user_id == "x" for r in records):
            raise ArrowConversionError("column user_id: refused")
        return real(records)

    real = arrow.to_arrow
    monkeypatch.setattr("lodresults._destinations.parquet.to_arrow", refuse)
    with pytest.raises(ArrowConversionError, match="column user_id"):
        write_parquet([good] * 3 + [bad], out, row_group_size=2)
    assert out.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.parquet"]


def _doc(lab_id: int) -> dict[str, Any]:
    return {
        "LabInstanceId": lab_id, "LabProfileId": 5, "Start": 1_700_000_000, "End": None,
        "LastActivity": None, "UserId": "u", "ClassId": None, "CompletionStatus": 3,
        "TotalRunTimeSeconds": 0, "TaskCompletePercent": 0, "IsExam": False,
        "ExamPassed": None, "ExamScore": None, "ExamMaxPossibleScore": None,
        "ExamPassingScore": None, "IpAddress": None, "Country": None, "Region": None,
        "City": None, "Latitude": None, "Longitude": None, "LabHostId": None,
        "DatacenterId": None, "DeliveryRegionId": None,
    }  # fmt: skip


def _with_id(r: LabResult, lab_id: int) -> LabResult:
    import attrs

    return attrs.evolve(r, lab_instance_id=lab_id)


# --- the CLI ---------------------------------------------------------------------------


async def _cli(*args: str, pre: str = "") -> tuple[int, str]:
    code = f"import sys; {pre}from lodresults.cli import main; sys.argv[0] = 'lodresults'; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOD_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_cli_export_parquet_equals_the_table(sim: Simulator, tmp_path: Path) -> None:
    """``export --format parquet`` writes the table's records, typed, in start order."""
    db = tmp_path / "r.db"
    a = sim.span[0] + 10 * DAY
    truth = [structure_record(d) for d in sim.between(a, a + 30 * DAY)]
    store = await SQLiteStore.open(db)
    try:
        await store.upsert(truth)
        expected = await store.run_sync(lambda s: list(s.iter_records_sync()))
    finally:
        await store.close()
    out = tmp_path / "r.parquet"
    code, err = await _cli("export", "--db", str(db), "--format", "parquet", "--out", str(out))
    assert code == 0, err
    assert f"export: {len(truth):,} records" in err
    assert read_rows(out) == [as_row(r) for r in expected]
    assert sorted(r.lab_instance_id for r in expected) == sorted(sim.ids_between(a, a + 30 * DAY))
    assert any(r.exam_score is not None for r in expected)
    assert any(r.end is None for r in expected) or any(r.latitude is not None for r in expected)


async def test_cli_parquet_needs_out_and_pyarrow(tmp_path: Path) -> None:
    """Without --out, or without pyarrow installed: a clear usage error (exit 2)."""
    db = tmp_path / "r.db"
    store = await SQLiteStore.open(db)
    await store.close()
    code, err = await _cli("export", "--db", str(db), "--format", "parquet")
    assert code == 2 and "pass --out FILE" in err
    out = tmp_path / "r.parquet"
    code, err = await _cli(
        "export", "--db", str(db), "--format", "parquet", "--out", str(out),
        pre="sys.modules['pyarrow'] = None; ",
    )  # fmt: skip
    assert code == 2
    assert "pip install 'lodresults[parquet]'" in err
    assert not out.exists()


async def test_import_lodresults_loads_neither_dlt_nor_pyarrow() -> None:
    """The optional extras stay optional: the SDK and the CLI import neither."""
    code = (
        "import sys, lodresults, lodresults.cli._app, lodresults.testing; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('dlt', 'pyarrow', 'duckdb')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


async def test_cancel_stops_within_one_chunk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled (Ctrl-C) mid-export: it stops after the chunk in hand and writes no file."""
    from lodresults._destinations.parquet import ParquetSink
    from lodresults._destinations.sqlite import CHUNK_ROWS
    from lodresults.cli._export_parquet import export_parquet

    db = tmp_path / "r.db"
    base = structure_record(_doc(1))
    store = await SQLiteStore.open(db)
    try:
        await store.upsert([_with_id(base, i) for i in range(1, 5 * CHUNK_ROWS + 1)])
    finally:
        await store.close()
    loop = asyncio.get_running_loop()
    chunks: list[int] = []
    real = ParquetSink.write

    def write(self: ParquetSink, records: Any) -> None:
        records = list(records)
        chunks.append(len(records))
        loop.call_soon_threadsafe(task.cancel)  # Ctrl-C while the first chunk is written
        real(self, records)

    monkeypatch.setattr(ParquetSink, "write", write)
    out = tmp_path / "r.parquet"
    task = asyncio.create_task(export_parquet(db, out))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert chunks == [CHUNK_ROWS]
    assert not [p for p in os.listdir(tmp_path) if "parquet" in p]
