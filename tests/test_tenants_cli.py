"""
``backfill --tenants`` / ``watch --tenants`` / ``export --tenant`` through the real entry
point, against two simulators (two keys) into one database; and an old single-tenant
database opened and extended.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import time
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import orjson
import pytest_asyncio

from lodresults import Tenant
from lodresults._destinations.sqlite_schema import table_sql
from lodresults.cli._fleet import backfill_tenants, watch_tenants
from lodresults.testing import Simulator
from tests.conftest import FIXED_SPAN
from tests.test_cli import _env, backfill_args, run

DAY = 86400
KEYS = {"acme": "acme-CLI-KEY-4f1a2b", "globex": "globex-CLI-KEY-9c3d7e"}
A = FIXED_SPAN[0] + 10 * DAY
B = A + 30 * DAY


@pytest_asyncio.fixture
async def sims() -> AsyncIterator[dict[str, Simulator]]:
    out = {
        name: Simulator(seed=seed, api_key=key, span=FIXED_SPAN, labs_per_day=30)
        for seed, (name, key) in enumerate(KEYS.items(), start=21)
    }
    for sim in out.values():
        await sim.start()
    try:
        yield out
    finally:
        for sim in out.values():
            await sim.close()


def tenants_file(tmp_path: Path, sims: dict[str, Simulator]) -> Path:
    path = tmp_path / "tenants.toml"
    path.write_text(
        "".join(
            f'[tenants.{name}]\napi_key_env = "{name.upper()}_KEY"\nbase_url = "{s.base_url}"\n\n'
            for name, s in sims.items()
        )
    )
    return path


def env(**extra: str) -> dict[str, str]:
    return _env(None, ACME_KEY=KEYS["acme"], GLOBEX_KEY=KEYS["globex"], **extra)


def ids_by_tenant(db: Path) -> dict[str, set[int]]:
    out: dict[str, set[int]] = {}
    with closing(sqlite3.connect(db)) as c:
        for tenant, i in c.execute("SELECT tenant, lab_instance_id FROM lab_results"):
            out.setdefault(tenant, set()).add(i)
    return out


def checkpoints(db: Path) -> dict[str, int]:
    with closing(sqlite3.connect(db)) as c:
        rows = c.execute("SELECT tenant, COUNT(*) FROM backfill_windows GROUP BY 1").fetchall()
    return dict(rows)


async def test_a_revoked_key_fails_only_its_tenant(
    sims: dict[str, Simulator], tmp_path: Path
) -> None:
    """
    globex's key revoked: acme's range is loaded whole, globex's run fails by name, the
    exit code is 1. The key restored, the next run completes globex and skips acme.
    """
    db = tmp_path / "t.db"
    args = [*backfill_args(db, A, B), "--tenants", str(tenants_file(tmp_path, sims))]
    sims["globex"].api_key = "revoked"
    r = await run(args, env())
    assert r.code == 1, r.err
    assert "backfill globex: failed:" in r.err
    assert "1 of 2 tenants failed: globex" in r.err
    assert "backfill acme: " in r.err and "acme: failed" not in r.err
    assert ids_by_tenant(db) == {"acme": sims["acme"].ids_between(A, B)}
    assert checkpoints(db).keys() == {"acme"}
    for key in KEYS.values():
        assert key not in r.err + r.out

    sims["globex"].api_key = KEYS["globex"]
    acme_requests = sims["acme"].stats.requests["Results"]
    r = await run(args, env())
    assert r.code == 0, r.err
    assert sims["acme"].stats.requests["Results"] == acme_requests  # settled: skipped
    assert ids_by_tenant(db) == {name: s.ids_between(A, B) for name, s in sims.items()}
    # The two servers number labs alike: one id is two rows, one per tenant.
    assert sims["acme"].ids_between(A, B) & sims["globex"].ids_between(A, B)
    assert set(checkpoints(db)) == {"acme", "globex"}


def make_v2(db: Path, rows: int) -> None:
    """A single-tenant database as lodresults wrote it before tenants (schema 2)."""
    from lodresults._destinations.sqlite_schema import row_of
    from lodresults._records.wire import structure_record
    from lodresults.testing import generate

    made = generate(seed=3, start=A - 5 * DAY, end=A - 4 * DAY, labs_per_day=30, now=B)
    records = [structure_record(r) for r in made][:rows]
    with closing(sqlite3.connect(db)) as c:
        c.execute(table_sql("lab_results"))
        c.execute(
            'CREATE TABLE backfill_windows ("start" INTEGER NOT NULL, "end" INTEGER NOT NULL, '
            'records INTEGER NOT NULL, completed_at INTEGER NOT NULL, PRIMARY KEY ("start", "end"))'
        )
        c.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        c.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        marks = ", ".join("?" * (len(row_of(records[0], 0))))
        c.executemany(f"INSERT INTO lab_results VALUES ({marks})", [row_of(r, 1) for r in records])
        c.execute("INSERT INTO backfill_windows VALUES (?, ?, 5, 1)", (A - 9 * DAY, A - DAY))
        c.commit()


async def test_an_old_single_tenant_database_is_extended(
    sims: dict[str, Simulator], tmp_path: Path
) -> None:
    """
    A schema-2 database: its rows and checkpoint become tenant ``default``'s; a plain
    backfill extends them; ``--tenants`` adds tenants beside them; export then asks which.
    """
    db = tmp_path / "old.db"
    make_v2(db, rows=7)
    old = ids_by_tenant_raw(db)
    sim = sims["acme"]
    r = await run(backfill_args(db, A, B), _env(sim))  # the single-key form, as before
    assert r.code == 0, r.err
    got = ids_by_tenant(db)
    assert got.keys() == {"default"} and got["default"] == old | sim.ids_between(A, B)
    assert checkpoints(db)["default"] > 1  # the old checkpoint kept, new ones added

    r = await run([*backfill_args(db, A, B), "--tenants", str(tenants_file(tmp_path, sims))], env())
    assert r.code == 0, r.err
    assert set(ids_by_tenant(db)) == {"default", "acme", "globex"}

    r = await run(["export", "--db", str(db)], env())
    assert r.code == 1 and "holds the results of 3 tenants (acme, default, globex)" in r.err
    assert "--tenant NAME" in r.err
    r = await run(["export", "--db", str(db), "--tenant", "globex"], env())
    assert r.code == 0, r.err
    exported = {orjson.loads(line)["LabInstanceId"] for line in r.out.splitlines()}
    assert exported == sims["globex"].ids_between(A, B)
    r = await run(["export", "--db", str(db), "--tenant", "nobody"], env())
    assert r.code == 1 and "no tenant 'nobody'" in r.err


def ids_by_tenant_raw(db: Path) -> set[int]:
    with closing(sqlite3.connect(db)) as c:
        return {r[0] for r in c.execute("SELECT lab_instance_id FROM lab_results")}


async def test_watch_tenants_goes_on_when_one_stops(tmp_path: Path) -> None:
    """One tenant's key refused: its watch stops, named; the other's runs go on."""
    db = tmp_path / "w.db"
    now = int(time.time())
    sims = {
        name: Simulator(seed=seed, api_key=KEYS[name], span=(now - 5 * DAY, now))
        for seed, name in enumerate(KEYS)
    }
    sims["globex"].api_key = "revoked"
    out = io.StringIO()
    async with sims["acme"], sims["globex"]:
        tenants = {name: Tenant(KEYS[name], s.base_url) for name, s in sims.items()}
        stopped = await asyncio.wait_for(
            watch_tenants(
                tenants, {"rate_limit": None}, db=db, interval=0.01, out=out, iterations=3
            ),
            60,
        )
    assert [o.name for o in stopped] == ["globex"]
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("watch acme ") for line in lines) == 3
    assert any(line.startswith("watch globex: stopped:") for line in lines)
    assert set(ids_by_tenant(db)) == {"acme"}


async def test_tenants_file_errors_are_usage_errors(
    sims: dict[str, Simulator], tmp_path: Path
) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[tenants.acme]\napi_key_env = 'NOPE'\n")
    r = await run([*backfill_args(tmp_path / "x.db", A, B), "--tenants", str(bad)], env())
    assert r.code == 2 and f"{bad}: tenant 'acme': environment variable NOPE" in r.err
    assert not (tmp_path / "x.db").exists()


async def test_an_outage_of_one_tenant_leaves_the_other_whole(
    sims: dict[str, Simulator], tmp_path: Path
) -> None:
    """globex's server down (connection refused, retried): acme's range is loaded whole."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api/v3"  # closed again below
    tenants = {"acme": Tenant(KEYS["acme"], sims["acme"].base_url), "globex": Tenant("k", dead)}
    options = {"rate_limit": None, "max_retries": 2, "retry_initial_wait": 0.001,
               "retry_max_wait": 0.01}  # fmt: skip
    outcomes = await backfill_tenants(
        tenants, options, since=A, until=B, db=tmp_path / "o.db", stream=io.StringIO()
    )
    assert [(o.name, o.error is None) for o in outcomes] == [("acme", True), ("globex", False)]
    assert "LodConnectionError" in (outcomes[1].error or "")
    assert ids_by_tenant(tmp_path / "o.db") == {"acme": sims["acme"].ids_between(A, B)}
