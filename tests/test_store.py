"""The SQLite store: transactions, read-only opening, schema versions, exact decimals."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import attrs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lodresults import LabResult, SQLiteStore, StoreError
from lodresults._destinations.sqlite_schema import COLUMNS, SCHEMA_VERSION, column_sql
from lodresults._records.decode import decode_results
from lodresults._records.models import FIELDS
from lodresults._records.wire import WIRE_NAMES, dump_record, structure_record
from lodresults.cli._export import atomic_output, export


def lab(i: int = 77, **changes: Any) -> dict[str, Any]:
    """One record as the API spells it, every key in the API's order (null where not set)."""
    doc: dict[str, Any] = dict.fromkeys(WIRE_NAMES.values())
    doc.update(
        LabInstanceId=i, LabProfileId=1, Start=1_700_000_000 + i,
        LastActivity=1_700_000_050 + i, UserId="u", CompletionStatus=3,
        TotalRunTimeSeconds=50, TaskCompletePercent=10, IsExam=False, LabHostId=1,
        DatacenterId=1, DeliveryRegionId=1,
    )  # fmt: skip
    unknown = set(changes) - set(doc)
    assert not unknown, unknown
    doc.update(changes)
    return doc


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def names(directory: Path) -> list[str]:
    """The files in ``directory``, but SQLite's own ``-wal``/``-shm`` files (a read-only
    connection to a WAL database where the directory is writable creates them)."""
    return sorted(p.name for p in directory.iterdir() if not p.name.endswith(("-wal", "-shm")))


def every_name(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def parts(directory: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p.name.endswith(".part")]


async def make_db(path: Path, records: list[LabResult]) -> None:
    store = await SQLiteStore.open(path)
    try:
        await store.upsert(records)
    finally:
        await store.close()


async def read_all(path: Path, *, readonly: bool = False) -> list[LabResult]:
    store = await SQLiteStore.open(path, readonly=readonly)
    try:
        out: list[LabResult] = []
        await store.for_each_chunk(out.extend, size=7)
        return out
    finally:
        await store.close()


# --- transactions ------------------------------------------------------------------------


def _rows_then(exc: BaseException, good: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
    yield good
    raise exc


@pytest.mark.parametrize(
    "exc", [KeyboardInterrupt(), asyncio.CancelledError(), RuntimeError("boom")]
)
def test_any_exception_mid_transaction_rolls_back(tmp_path: Path, exc: BaseException) -> None:
    """An exception of any kind inside a write rolls it back; the next write works."""
    from lodresults._destinations.sqlite_schema import row_of

    async def go() -> list[int]:
        store = await SQLiteStore.open(tmp_path / "s.db")
        try:
            rows = _rows_then(exc, row_of(structure_record(lab(1)), 0))
            with pytest.raises(type(exc)):
                await store._run(store._apply, rows, None)
            await store.upsert([structure_record(lab(2))])
            got: list[LabResult] = []
            await store.for_each_chunk(got.extend)
            return [r.lab_instance_id for r in got]
        finally:
            await store.close()

    assert asyncio.run(go()) == [2]  # the first write left nothing behind


async def test_a_value_sqlite_cannot_store_rolls_back(tmp_path: Path) -> None:
    """A record SQLite refuses (an int beyond int64: OverflowError) leaves no open transaction."""
    store = await SQLiteStore.open(tmp_path / "s.db")
    try:
        ok = structure_record(lab(1))
        huge = attrs.evolve(structure_record(lab(2)), lab_host_id=2**64)
        with pytest.raises(OverflowError):
            await store.upsert([ok, huge])
        assert (await store.upsert([structure_record(lab(3))])).new == 1
        assert await store.count() == 1
    finally:
        await store.close()


# --- read-only opening -------------------------------------------------------------------


async def test_readonly_open_changes_nothing(tmp_path: Path) -> None:
    """Export opens with mode=ro: same bytes, no journal switch, no -wal/-shm left for a
    rollback-journal file, and writes are refused by SQLite itself."""
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 30)])
    with closing(sqlite3.connect(db)) as c:
        c.execute("PRAGMA journal_mode=DELETE")
    before, files = sha(db), names(tmp_path)
    store = await SQLiteStore.open(db, readonly=True)
    try:
        with pytest.raises(StoreError, match="readonly"):
            await store.upsert([structure_record(lab(99))])
        with pytest.raises(StoreError, match="readonly"):
            await store.set_meta("k", "v")
        assert await store.count() == 29
    finally:
        await store.close()
    assert sha(db) == before
    assert names(tmp_path) == files


@pytest.mark.parametrize("wal", [False, True])
async def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path, wal: bool) -> None:
    """Neither export nor backfill adds tables to, or switches the journal of, another
    application's database; the error names it; no file is created beside it."""
    db = tmp_path / "app.db"
    with closing(sqlite3.connect(db)) as c:
        if wal:
            c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE notes (body TEXT)")
        c.execute("INSERT INTO notes VALUES ('mine')")
        c.commit()
    before = sha(db)
    for readonly in (True, False):
        with pytest.raises(StoreError, match=r"app\.db is not a lodresults database.*notes"):
            await SQLiteStore.open(db, readonly=readonly)
        assert sha(db) == before
        assert every_name(tmp_path) == ["app.db"]


async def test_readonly_refuses_an_empty_file(tmp_path: Path) -> None:
    """An empty file is not a database to export (and stays empty)."""
    db = tmp_path / "empty.db"
    db.touch()
    with pytest.raises(StoreError, match="not a lodresults database"):
        await SQLiteStore.open(db, readonly=True)
    assert db.read_bytes() == b""


# --- schema versions ---------------------------------------------------------------------

_V1_SCHEMA = """
CREATE TABLE lab_results (
    "lab_instance_id" INTEGER PRIMARY KEY, "lab_profile_id" INTEGER NOT NULL,
    "start" INTEGER NOT NULL, "end" INTEGER, "last_activity" INTEGER, "user_id" TEXT,
    "class_id" TEXT, "completion_status" INTEGER NOT NULL,
    "total_run_time_seconds" INTEGER NOT NULL, "task_complete_percent" INTEGER NOT NULL,
    "is_exam" INTEGER NOT NULL CHECK (is_exam IN (0, 1)),
    "exam_passed" INTEGER CHECK (exam_passed IN (0, 1)), "exam_score" NUMERIC,
    "exam_max_possible_score" INTEGER, "exam_passing_score" INTEGER, "ip_address" TEXT,
    "country" TEXT, "region" TEXT, "city" TEXT, "latitude" NUMERIC, "longitude" NUMERIC,
    "lab_host_id" INTEGER, "datacenter_id" INTEGER, "delivery_region_id" INTEGER,
    fetched_at INTEGER NOT NULL
);
CREATE INDEX ix_lab_results_start ON lab_results ("start");
CREATE INDEX ix_lab_results_user_id ON lab_results (user_id);
CREATE TABLE backfill_windows ("start" INTEGER NOT NULL, "end" INTEGER NOT NULL,
    records INTEGER NOT NULL, completed_at INTEGER NOT NULL, PRIMARY KEY ("start", "end"));
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta VALUES ('schema_version', '1');
INSERT INTO backfill_windows VALUES (0, 10, 2, 5);
"""


def make_v1(path: Path) -> None:
    """A database as lodresults 0.1 wrote it (NUMERIC decimals)."""
    with closing(sqlite3.connect(path)) as c:
        c.executescript(_V1_SCHEMA)
        row = [None] * len(COLUMNS)
        base = dict(zip(COLUMNS, row, strict=True))
        base.update(lab_profile_id=1, start=1, completion_status=4, total_run_time_seconds=1,
                    task_complete_percent=100, is_exam=1)  # fmt: skip
        for i, score, lat in ((1, 87.5, 47.6062), (2, 48, -0.1278)):
            vals = {**base, "lab_instance_id": i, "exam_score": score, "latitude": lat}
            c.execute(
                f"INSERT INTO lab_results VALUES ({', '.join('?' * (len(COLUMNS) + 1))})",
                [*vals.values(), 0],
            )
        c.commit()


def _types(path: Path) -> dict[str, str]:
    with closing(sqlite3.connect(path)) as c:
        return {r[1]: r[2] for r in c.execute("PRAGMA table_info(lab_results)")}


async def test_a_version_1_database_is_migrated_when_opened_for_writing(tmp_path: Path) -> None:
    """NUMERIC decimal columns become TEXT, values and checkpoints kept, version recorded."""
    db = tmp_path / "v1.db"
    make_v1(db)
    store = await SQLiteStore.open(db)
    try:
        assert await store.get_meta("schema_version") == str(SCHEMA_VERSION) == "2"
        assert await store.checkpoints(0, 100) == [(0, 10)]
    finally:
        await store.close()
    assert {c: _types(db)[c] for c in ("exam_score", "latitude", "longitude")} == dict.fromkeys(
        ("exam_score", "latitude", "longitude"), "TEXT"
    )
    assert _types(db) == {
        **{f.name: column_sql(f).split()[1] for f in FIELDS},
        "fetched_at": "INTEGER",
    }
    with closing(sqlite3.connect(db)) as c:
        assert c.execute("SELECT exam_score, latitude FROM lab_results ORDER BY 1").fetchall() == [
            ("48", "-0.1278"),
            ("87.5", "47.6062"),
        ]
        indexes = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"ix_lab_results_start", "ix_lab_results_user_id"} <= indexes
    # and the migrated file reads back exactly
    got = {r.lab_instance_id: r for r in await read_all(db)}
    assert str(got[1].exam_score) == "87.5" and str(got[2].latitude) == "-0.1278"


async def test_a_version_1_database_is_read_as_it_is_for_export(tmp_path: Path) -> None:
    """Read-only, an older version is read without migrating it (the file is unchanged)."""
    db = tmp_path / "v1.db"
    make_v1(db)
    before = sha(db)
    got = {r.lab_instance_id: r for r in await read_all(db, readonly=True)}
    assert str(got[1].exam_score) == "87.5" and str(got[2].exam_score) == "48"
    assert sha(db) == before


@pytest.mark.parametrize("readonly", [True, False])
@pytest.mark.parametrize(
    ("version", "needle"),
    [("3", "newer than this lodresults"), ("two", "not a version number"), ("0", "not a version")],
)
async def test_an_unknown_schema_version_is_refused(
    tmp_path: Path, readonly: bool, version: str, needle: str
) -> None:
    """A newer or unreadable version is refused, naming the file, and the file is unchanged."""
    db = tmp_path / "x.db"
    await make_db(db, [structure_record(lab(1))])
    with closing(sqlite3.connect(db)) as c:
        c.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
        c.commit()
    before = sha(db)
    with pytest.raises(StoreError, match=f"{db}.*{needle}"):
        await SQLiteStore.open(db, readonly=readonly)
    assert sha(db) == before


# --- corrupt values ----------------------------------------------------------------------


async def test_corrupt_meta_and_checkpoint_values_are_store_errors(tmp_path: Path) -> None:
    """Damaged values read back are StoreErrors naming the database and what is wrong."""
    db = tmp_path / "c.db"
    await make_db(db, [structure_record(lab(1))])
    with closing(sqlite3.connect(db)) as c:
        c.execute("INSERT INTO meta VALUES ('watch.last_success', 'yesterday')")
        c.execute("INSERT INTO meta VALUES ('other', 'nan')")
        c.execute("INSERT INTO backfill_windows VALUES (0, 'b', 0, 0)")
        c.execute("UPDATE lab_results SET \"start\" = 'soon'")
        c.commit()
    store = await SQLiteStore.open(db)
    try:
        with pytest.raises(StoreError, match=f"{db}: meta value 'watch.last_success'.*yesterday"):
            await store.get_meta_number("watch.last_success")
        with pytest.raises(StoreError, match="'other' is 'nan', not a number"):
            await store.get_meta_number("other")
        assert await store.get_meta_number("absent") is None
        with pytest.raises(StoreError, match=f"{db}: backfill_windows holds 'b'"):
            await store.checkpoints(-(2**62), 2**62)
        with pytest.raises(StoreError, match="row of lab_instance_id 1 cannot be read"):
            await store.for_each_chunk(lambda chunk: None)
        # the connection is still usable afterwards
        await store.set_meta("other", "1.5")
        assert await store.get_meta_number("other") == 1.5
    finally:
        await store.close()


# --- decimals keep their spelling --------------------------------------------------------

# The API sends JSON numbers: ints, and doubles in their shortest spelling.
_numbers = st.one_of(
    st.none(),
    st.integers(-(10**6), 10**6),
    st.floats(-180, 180, allow_nan=False, allow_infinity=False),
    st.sampled_from([48.0, -0.0, 0.0, 1e-07, 87.5, -12.25, 100.0]),
)


def _spelled(line: bytes | str) -> Any:
    """JSON with each number kept as its text (48.0 and 48 differ, -0.0 and 0.0 too)."""
    return json.loads(line, parse_float=lambda s: ("float", s), parse_int=lambda s: ("int", s))


@settings(max_examples=40)
@given(st.lists(st.tuples(_numbers, _numbers, _numbers), min_size=1, max_size=8))
def test_decimals_round_trip_through_the_store_as_the_api_spelled_them(
    tmp_path_factory: pytest.TempPathFactory, values: list[tuple[Any, Any, Any]]
) -> None:
    """API body -> records -> SQLite -> JSON lines gives back the API's very spelling."""
    sent = [
        lab(i + 1, ExamScore=s, Latitude=la, Longitude=lo) for i, (s, la, lo) in enumerate(values)
    ]
    body = orjson.dumps({"Results": sent, "Status": 1, "Error": None})
    db = tmp_path_factory.mktemp("dec") / "d.db"

    async def go() -> list[LabResult]:
        await make_db(db, decode_results(body))
        return await read_all(db, readonly=True)

    back = asyncio.run(go())
    assert [_spelled(dump_record(r)) for r in back] == [_spelled(orjson.dumps(d)) for d in sent]


# --- export: chunks, cancellation, atomic output -----------------------------------------


async def test_a_cancelled_export_to_a_file_leaves_nothing(tmp_path: Path) -> None:
    """Cancelled between chunks: the partial file is removed, the target never appears,
    and an existing target is left as it was."""
    db = tmp_path / "big.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 20_001)])
    out = tmp_path / "out.jsonl"
    out.write_text("previous export\n")

    async def run() -> None:
        with atomic_output(out) as f:
            await export(db, "jsonl", f)

    task = asyncio.create_task(run())
    partial: list[Path] = []
    while not task.done():
        partial = parts(tmp_path)
        if partial and partial[0].stat().st_size > 0:
            break
        await asyncio.sleep(0)
    assert partial, "the export finished before a chunk was seen"
    written = partial[0].read_bytes().count(b"\n")
    assert 0 < written < 20_000
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert names(tmp_path) == ["big.db", "out.jsonl"]
    assert out.read_text() == "previous export\n"


async def test_a_completed_export_replaces_the_target(tmp_path: Path) -> None:
    """On success the file holds every record, and no temporary file remains."""
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(i, ExamScore=48.0)) for i in range(1, 5000)])
    out = tmp_path / "out.jsonl"
    out.write_text("previous export\n")
    with atomic_output(out) as f:
        assert await export(db, "jsonl", f) == 4999
    lines = out.read_text().splitlines()
    assert len(lines) == 4999 and all('"ExamScore":48.0,' in x for x in lines)
    assert names(tmp_path) == ["out.jsonl", "r.db"]


async def test_an_export_file_gets_the_permissions_open_would_give(tmp_path: Path) -> None:
    """An existing target keeps its mode; a new one gets 0666 less the umask (a plain
    temporary file would be 0600, unreadable to the group that reads exports)."""
    db = tmp_path / "r.db"
    await make_db(db, [structure_record(lab(1))])
    kept = tmp_path / "kept.jsonl"
    kept.write_text("")
    kept.chmod(0o640)
    fresh = tmp_path / "fresh.jsonl"
    for target in (kept, fresh):
        with atomic_output(target) as f:
            await export(db, "jsonl", f)
    assert mode(kept) == 0o640
    assert mode(fresh) == 0o666 & ~umask()


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def umask() -> int:
    """The process umask, read without setting it (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Umask:"):
            return int(line.split()[1], 8)
    pytest.skip("no /proc/self/status")


async def test_a_cancelled_reader_stops_within_one_batch(tmp_path: Path) -> None:
    """run_sync over iter_records_sync (the Parquet export's shape): cancelling the
    caller stops the read at the next batch of 1,000 rows, not at the end of the table;
    the store stays usable."""
    import threading

    db = tmp_path / "big.db"
    await make_db(db, [structure_record(lab(i)) for i in range(1, 10_001)])
    store = await SQLiteStore.open(db, readonly=True)
    started, proceed = threading.Event(), threading.Event()
    seen: list[int] = []

    def read(s: SQLiteStore) -> int:
        started.set()
        proceed.wait()  # the caller is cancelled before the first row is read
        for r in s.iter_records_sync():
            seen.append(r.lab_instance_id)
        return len(seen)

    try:
        task = asyncio.create_task(store.run_sync(read))
        await asyncio.get_running_loop().run_in_executor(None, started.wait)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        proceed.set()
        assert await store.count() == 10_000  # queued behind the read: it has ended
        assert len(seen) == 1000
    finally:
        proceed.set()
        await store.close()


# --- newest fetch wins -------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    writes=st.lists(
        st.tuples(st.sampled_from([0, 1]), st.integers(0, 5), st.integers(0, 4)),
        min_size=1,
        max_size=12,
    )
)
def test_two_writers_the_later_fetch_wins(tmp_path_factory: Any, writes: list[Any]) -> None:
    """
    Two connections (a cron backfill and a watch) write copies of one lab in any order,
    with interleaved fetch times: the row holds the copy fetched last (on equal fetch
    times, the one written last), and each apply counts new / changed / unchanged.
    """
    path = tmp_path_factory.mktemp("w") / "s.db"

    async def go() -> tuple[int, list[Any]]:
        stores = [await SQLiteStore.open(path), await SQLiteStore.open(path)]
        counts = []
        try:
            for writer, fetched, score in writes:
                copy = structure_record(lab(1, TaskCompletePercent=score * 10))
                counts.append(await stores[writer].apply([copy], fetched_at=1000 + fetched))
            got: list[LabResult] = []
            await stores[0].for_each_chunk(got.extend)
            assert len(got) == 1
            return got[0].task_complete_percent or 0, counts
        finally:
            for s in stores:
                await s.close()

    stored, counts = asyncio.run(go())
    newest = max(range(len(writes)), key=lambda i: (writes[i][1], i))
    assert stored == writes[newest][2] * 10
    # The model: what the row held before each write decides its count.
    held: tuple[int, int] | None = None
    for (_, fetched, score), applied in zip(writes, counts, strict=True):
        if held is None:
            assert (applied.new, applied.changed, applied.unchanged) == (1, 0, 0)
        elif fetched < held[0] or score == held[1]:
            assert (applied.new, applied.changed, applied.unchanged) == (0, 0, 1)
        else:
            assert (applied.new, applied.changed, applied.unchanged) == (0, 1, 0)
        if held is None or fetched >= held[0]:
            held = (fetched, score)
