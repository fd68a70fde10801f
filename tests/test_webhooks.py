"""The webhook receiver on loopback, with the simulator as the API and as the sender."""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from lodresults import LabResult, LodClient, SQLiteStore, WebhookMisses, backfill
from lodresults._webhooks.inbox import Accepted, Refused, parse_push
from lodresults._webhooks.ledger import Ledger
from lodresults.cli._watch import watch
from lodresults.testing import ManualClock, Simulator, WebhookSender, generate_labs
from lodresults.webhooks import WebhookReceiver, webhook_app
from tests.test_living import assert_table_is_present, table

DAY = 86400
T0 = 1_767_254_400  # 2026-01-01T08:00:00Z
SECRET = "Basic d2ViaG9vazpzM2NyM3QtY2FuYXJ5"  # the canary: found nowhere it must not be
HEADERS = {"Authorization": SECRET}


def client_for(sim: Simulator, clock: Any = None) -> LodClient:
    return LodClient(
        sim.api_key,
        base_url=sim.base_url,
        rate_limit=None,
        retry_initial_wait=0.001,
        retry_max_wait=0.005,
        clock=clock or sim.clock,
    )


@asynccontextmanager
async def serving(app: web.Application, port: int = 0) -> AsyncIterator[str]:
    """``app`` on loopback; yields its push URL."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", port, reuse_address=True)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/webhooks/lod"
    finally:
        await runner.cleanup()


async def push(
    session: aiohttp.ClientSession,
    url: str,
    *,
    headers: Mapping[str, str] = HEADERS,
    body: Any = None,
    raw: bytes | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    data = raw if raw is not None else (None if body is None else orjson.dumps(body))
    async with session.request(method, url, data=data, headers=dict(headers)) as resp:
        text = await resp.read()
        return resp.status, orjson.loads(text) if text else {}, resp.headers


# --- parsing (pure) -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "body", "expected"),
    [
        ({"id": "42"}, b"", Accepted(42, None)),
        ({}, b'{"Id": 42, "Event": "Scored", "ExamScore": 90.5}', Accepted(42, "Scored")),
        ({}, b'{"Id": "42", "Event": "torn down"}', Accepted(42, "TornDown")),
        ({"id": "42"}, b'{"Id": 42}', Accepted(42, None)),
        ({"id": "42", "event": "TORN_DOWN"}, b"", Accepted(42, "TornDown")),
        ({"id": "42"}, b'{"Id": 43}', 400),
        ({}, b"", 400),
        ({"id": "{id}"}, b"", 400),  # the token left unreplaced
        ({"id": "-1"}, b"", 400),
        ({"id": "0"}, b"", 400),
        ({"id": "99999999999999999999"}, b"", 400),
        ({}, b'{"Id": true}', 400),
        ({}, b'{"Id": 4.5}', 400),
        ({"id": "42"}, b"not json", 400),
        ({"id": "42"}, b"[42]", 400),
        ({}, b'{"Id": 42, "Event": "Exploded"}', 400),
    ],
)
def test_parse_push(query: dict[str, str], body: bytes, expected: Accepted | int) -> None:
    got = parse_push(query, body)
    if isinstance(expected, int):
        assert isinstance(got, Refused) and got.status == expected and got.reason
    else:
        assert got == expected


@settings(max_examples=300, deadline=None)
@given(
    query=st.dictionaries(st.sampled_from(["id", "event", "x"]), st.text(max_size=30)),
    body=st.one_of(
        st.binary(max_size=100),
        st.dictionaries(
            st.sampled_from(["Id", "Event", "State"]),
            st.one_of(
                st.integers(-(2**63), 2**64 - 1), st.text(max_size=20), st.booleans(), st.none()
            ),
        ).map(orjson.dumps),
    ),
)
def test_parse_push_any_input(query: dict[str, str], body: bytes) -> None:
    got = parse_push(query, body)
    if isinstance(got, Accepted):
        assert 0 < got.lab_instance_id < 2**63
        named = {query.get("id")}
        if body.strip():
            named.add(str(orjson.loads(body).get("Id")))
        assert str(got.lab_instance_id) in named
    else:
        assert got.status == 400
        assert all(v not in got.reason for v in query.values() if len(v) > 3)


# --- the receiver ---------------------------------------------------------------------------


async def test_answers_and_nothing_stored_for_bad_input(tmp_path: Path) -> None:
    records = [dict(r) for r in generate_fixed(5)]
    async with (
        Simulator(records=records, clock=lambda: T0) as sim,
        client_for(sim) as client,
    ):
        store = await SQLiteStore.open(tmp_path / "r.db")
        app = webhook_app(client, store, secret=SECRET, max_body=2048, allow=["127.0.0.0/8"])
        try:
            async with serving(app) as url, aiohttp.ClientSession() as s:
                first = records[0]["LabInstanceId"]
                bad = [
                    (401, await push(s, f"{url}?id={first}", headers={})),
                    (401, await push(s, f"{url}?id={first}", headers={"Authorization": "x"})),
                    (401, await push(s, f"{url}?id={first}", headers={"X-Secret": SECRET})),
                    (400, await push(s, url)),
                    (400, await push(s, url, raw=b"{not json")),
                    (400, await push(s, url, body={"Id": first, "Event": "Exploded"})),
                    (400, await push(s, f"{url}?id=abc")),
                    (413, await push(s, url, body={"Id": first, "Pad": "x" * 4096})),
                    (413, await push(s, f"{url}?id={first}", raw=b" " * 3000)),
                ]
                for expected, (status, doc, _) in bad:
                    assert status == expected, doc
                    assert doc["error"] and SECRET not in orjson.dumps(doc).decode()
                receiver = app[_receiver_key()]
                await receiver.drain()
                assert await store.count() == 0
                assert sim.stats.requests["Result"] == 0
                assert receiver.stats.refused == {401: 3, 400: 4, 413: 2}
                status, doc, _ = await push(s, f"{url}?id={first}", method="GET")
                assert (status, doc["queue"]) == (202, "queued")
                status, _, _ = await push(s, url, body={"Id": records[1]["LabInstanceId"]})
                assert status == 202
                await receiver.drain()
                assert await store.count() == 2
        finally:
            await store.close()
    rows = await table(tmp_path / "r.db")
    assert sorted(rows) == sorted(r["LabInstanceId"] for r in records[:2])


async def test_allow_list_refuses_other_addresses(tmp_path: Path) -> None:
    async with Simulator(records=[], clock=lambda: T0) as sim, client_for(sim) as client:
        store = await SQLiteStore.open(tmp_path / "r.db")
        app = webhook_app(client, store, secret=SECRET, allow=["203.0.113.0/24"])
        try:
            async with serving(app) as url, aiohttp.ClientSession() as s:
                status, doc, _ = await push(s, f"{url}?id=1")
                assert status == 403 and "not allowed" in doc["error"]
        finally:
            await store.close()


def _receiver_key() -> Any:
    from lodresults.webhooks import RECEIVER

    return RECEIVER


def generate_fixed(n: int) -> list[Mapping[str, Any]]:
    labs = generate_labs(seed=3, start=T0 - 5 * DAY, end=T0 - 4 * DAY, labs_per_day=n)
    return [lab.at(T0) or {} for lab in labs]


async def test_coalesces_pushes_and_a_full_queue_survives_a_restart(tmp_path: Path) -> None:
    """
    No workers: three labs fill the queue, a repeat is coalesced, a fourth gets 503 with
    Retry-After; stopping saves the three in the database, and the next start (with
    workers) fetches each once.
    """
    records = [dict(r) for r in generate_fixed(10)][:4]
    ids = [r["LabInstanceId"] for r in records]
    db = tmp_path / "r.db"
    async with Simulator(records=records, clock=lambda: T0) as sim, client_for(sim) as client:
        store = await SQLiteStore.open(db)
        try:
            first = WebhookReceiver(client, store, secret=SECRET, queue_size=3, workers=0, db=db)
            async with serving(first.app()) as url, aiohttp.ClientSession() as s:
                answers = [await push(s, f"{url}?id={i}") for i in ids[:3]]
                assert [(a[0], a[1]["queue"]) for a in answers] == [(202, "queued")] * 3
                status, doc, _ = await push(s, url, body={"Id": ids[0], "Event": "Scored"})
                assert (status, doc["queue"]) == (202, "coalesced")
                status, doc, headers = await push(s, f"{url}?id={ids[3]}")
                assert status == 503 and headers["Retry-After"] == "5" and "full" in doc["error"]
                first.grace = 0.0
            assert first.stats.saved == 3
            assert (first.stats.queued, first.stats.coalesced, first.stats.busy) == (3, 1, 1)
            assert sim.stats.requests["Result"] == 0 and await store.count() == 0

            second = WebhookReceiver(client, store, secret=SECRET, db=db)
            async with serving(second.app()):
                assert second.stats.resumed == 3
                await second.drain()
            assert second.stats.saved == 0
            assert sim.stats.requests["Result"] == 3
            assert second.stats.applied == second.stats.changed == 3
        finally:
            await store.close()
    assert sorted(await table(db)) == sorted(ids[:3])
    ledger = await Ledger.open(db)
    try:
        assert await ledger.take_pending() == []
        assert (await ledger.counts_after((0, 0)))[:2] == (3, 0)
    finally:
        await ledger.close()


async def test_a_burst_of_duplicates_fetches_each_lab_at_most_twice(tmp_path: Path) -> None:
    records = [dict(r) for r in generate_fixed(60)]
    ids = [r["LabInstanceId"] for r in records]
    async with Simulator(records=records, clock=lambda: T0) as sim, client_for(sim) as client:
        store = await SQLiteStore.open(tmp_path / "r.db")
        try:
            receiver = WebhookReceiver(client, store, secret=SECRET)
            async with serving(receiver.app()) as url, aiohttp.ClientSession() as s:
                bodies = [{"Id": i, "Event": e} for i in ids for e in ("TornDown", "Scored")] * 3
                answers = await asyncio.gather(*(push(s, url, body=b) for b in bodies))
                assert {a[0] for a in answers} == {202}
                await receiver.drain()
            stats = receiver.stats
            assert stats.queued + stats.coalesced == len(bodies) == 6 * len(ids)
            # A push for a lab being fetched queues it again, at most once more.
            assert len(ids) <= sim.stats.requests["Result"] == stats.applied <= 2 * len(ids)
            assert stats.changed == len(ids)
        finally:
            await store.close()
    assert sorted(await table(tmp_path / "r.db")) == sorted(ids)


async def test_secret_and_key_never_logged_nor_shown(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    records = [dict(r) for r in generate_fixed(5)]
    async with Simulator(records=records, clock=lambda: T0) as sim, client_for(sim) as client:
        store = await SQLiteStore.open(tmp_path / "r.db")
        try:
            receiver = WebhookReceiver(client, store, secret=SECRET)
            async with serving(receiver.app()) as url, aiohttp.ClientSession() as s:
                texts = []
                for headers in (HEADERS, {"Authorization": SECRET[:-1]}, {}):
                    for target in (f"{url}?id={records[0]['LabInstanceId']}", f"{url}?id=x"):
                        texts.append(repr(await push(s, target, headers=headers)))
                await receiver.drain()
        finally:
            await store.close()
    shown = "\n".join([caplog.text, repr(receiver), repr(vars(receiver)), *texts])
    for secret in (SECRET, SECRET.split()[1], sim.api_key):
        assert secret not in shown
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(receiver._secret)


# --- end to end: the simulator pushes, the receiver applies, a reconciliation repairs -------


async def test_drops_duplicates_and_downtime_then_one_reconciliation(tmp_path: Path) -> None:
    """
    Ten minutes of virtual time: the simulator's labs end and get graded, 20 % of the
    pushes are lost, 10 % come twice, and the receiver is down for 30 s (the vendor retries
    5 times, 1-5 s apart, then gives up). One reconciliation then makes the store equal to
    the server, and its miss rate is what was really missed.
    """
    clock = ManualClock(T0, auto=False)
    labs = generate_labs(seed=9, start=T0 - DAY, end=T0 + 600, labs_per_day=20_000)
    db = tmp_path / "r.db"
    since = T0 - 3 * DAY
    async with Simulator(records=labs, clock=clock) as sim, client_for(sim, clock) as client:
        store = await SQLiteStore.open(db)
        try:
            await backfill(client, store, since, T0)  # the store as of T0
            receiver = WebhookReceiver(client, store, secret=SECRET, db=db)
            port = 0
            down = (T0 + 180, T0 + 210)
            async with (
                WebhookSender(
                    sim.dataset,
                    "http://127.0.0.1:{port}/webhooks/lod?id={id}",
                    clock=clock,
                    headers=HEADERS,
                    drop_rate=0.2,
                    duplicate_rate=0.1,
                    seed=4,
                ) as sender,
            ):
                app = receiver.app()
                runner = web.AppRunner(app, access_log=None, handle_signals=False)
                await runner.setup()
                site = web.TCPSite(runner, "127.0.0.1", 0, reuse_address=True)
                await site.start()
                port = runner.addresses[0][1]
                sender.url = sender.url.replace("{port}", str(port))
                up = True
                for t in range(T0 + 1, T0 + 660):
                    clock.set(t)
                    if up and down[0] <= t < down[1]:
                        await runner.cleanup()  # stop: finish the queue, refuse meanwhile
                        up = False
                    elif not up and t >= down[1]:
                        runner = web.AppRunner(receiver.app(), handle_signals=False)
                        await runner.setup()
                        await web.TCPSite(runner, "127.0.0.1", port, reuse_address=True).start()
                        up = True
                    await sender.pump()
                    if up:
                        await receiver.drain()
                await runner.cleanup()
            assert sender.dropped and sender.given_up  # lost on the way, lost to downtime
            refused_while_down = [d for d in sender.log if d.status is None]
            assert refused_while_down
            assert any(d.duplicate for d in sender.log)
            # What webhooks missed, measured independently: ended labs whose stored copy
            # is not the server's present one.
            now = int(clock())
            present = sim.present(since, now)
            rows = await table(db)
            missed = sum(
                1
                for i, rec in present.items()
                if rec["End"] is not None and _differs(rows.get(i), rec)
            )
            assert missed > 0

        finally:
            await store.close()
        # One watch tick: the poll and the reconciliation bring what webhooks missed.
        events: list[Any] = []
        out = io.StringIO()
        await watch(
            lambda **kw: client_for(sim, clock),
            db=db,
            interval=60,
            out=out,
            iterations=1,
            clock=clock,
            on_event=events.append,
        )
        assert_table_is_present(await table(db), sim.present(since, now))
    (report,) = [e for e in events if isinstance(e, WebhookMisses)]
    assert str(report) in out.getvalue()
    assert report.missed == missed
    assert report.brought == receiver.stats.changed > 0
    assert report.rate == pytest.approx(missed / (missed + receiver.stats.changed))
    assert 0.1 < report.rate < 0.6  # 20 % dropped, plus the downtime's share
    assert "miss rate" in str(report)


def _differs(row: LabResult | None, rec: Mapping[str, Any]) -> bool:
    from lodresults._records.wire import structure_record

    return row is None or row != structure_record(dict(rec))


# --- the command ---------------------------------------------------------------------------


async def test_serve_webhooks_command(tmp_path: Path) -> None:
    """The real entry point: listens, applies a push, refuses a wrong secret, stops on SIGTERM
    with a summary, and never prints the secret or the key."""
    from click.testing import CliRunner

    from lodresults.cli._app import cli
    from tests.test_cli import _env, start

    records = [dict(r) for r in generate_fixed(5)]
    lab = records[0]["LabInstanceId"]
    db = tmp_path / "r.db"
    async with Simulator(records=records) as sim:  # on real time, as the command is
        args = ["serve-webhooks", "--db", str(db)]
        missing = CliRunner().invoke(cli, args, env=_env(sim, LOD_WEBHOOK_SECRET=""))
        assert missing.exit_code == 2 and "LOD_WEBHOOK_SECRET" in missing.output
        bad = CliRunner().invoke(
            cli, [*args, "--allow", "nope"], env=_env(sim, LOD_WEBHOOK_SECRET=SECRET)
        )
        assert bad.exit_code == 2 and "--allow" in bad.output and not db.exists()
        proc = await start(
            ["serve-webhooks", "--db", str(db), "--port", "0"], _env(sim, LOD_WEBHOOK_SECRET=SECRET)
        )
        assert proc.stderr is not None
        try:
            first = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            url = first.split("listening on ")[1].strip().replace("{id}", str(lab))
            async with aiohttp.ClientSession() as s:
                assert (await push(s, url, headers={"Authorization": "wrong"}))[0] == 401
                assert (await push(s, url))[0] == 202
            while sim.stats.requests["Result"] < 1:  # noqa: ASYNC110 - another process applies it
                await asyncio.sleep(0.02)
        finally:
            proc.terminate()
            _, err = await asyncio.wait_for(proc.communicate(), 30)
        text = first + err.decode()
        assert proc.returncode == 130
        assert "2 pushes, 1 labs applied (1 changed)\nserve-webhooks: 0 labs saved" in text
        assert SECRET not in text and SECRET.split()[1] not in text and sim.api_key not in text
        assert all(len(line) <= 80 for line in text.splitlines()), text
    assert list(await table(db)) == [lab]


# --- the simulator as a sender ---------------------------------------------------------------


async def test_sender_shapes_and_the_vendors_retry_schedule() -> None:
    """
    The URL token, verb, static headers and JSON body as configured; a receiver that never
    answers gets the event 6 times (5 retries, each 1-5 s after the failure), then never
    again; a delay holds the first delivery back.
    """
    clock = ManualClock(T0, auto=False)
    lab = generate_labs(seed=1, start=T0 - DAY, end=T0 - 600, labs_per_day=3)[:1]
    got: list[tuple[str, str, dict[str, str], bytes]] = []

    async def capture(request: web.Request) -> web.Response:
        got.append((request.method, request.path_qs, dict(request.headers), await request.read()))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", capture)
    async with Simulator(records=lab, clock=clock) as sim, serving(app) as url:
        lab_id = lab[0].lab_instance_id
        base = url.rsplit("/webhooks/lod", 1)[0]
        async with WebhookSender(
            sim.dataset, f"{base}/hook/{{id}}?id={{id}}", clock=clock, method="PUT",
            headers={"X-Token": "t0k"}, delay=(2.0, 2.0),
        ) as ok:  # fmt: skip
            ok.notify(lab_id, "Scored")
            assert await ok.pump() == 0  # held back by the delay
            clock.advance(2)
            assert await ok.pump() == 1
        ((method, path, headers, body),) = got
        assert (method, path) == ("PUT", f"/hook/{lab_id}?id={lab_id}")
        assert headers["X-Token"] == "t0k" and headers["Content-Type"] == "application/json"
        doc = orjson.loads(body)
        assert doc["Id"] == lab_id and doc["Event"] == "Scored" and doc["State"] == "Off"
        assert "LabInstanceId" not in doc and "CompletionStatus" in doc

        async with WebhookSender(
            sim.dataset, "http://127.0.0.1:9/nowhere?id={id}", clock=clock, body=False
        ) as lost:
            lost.notify(lab_id, "TornDown")
            for _ in range(80):  # 40 s in half seconds: past any retry schedule
                await lost.pump()
                clock.advance(0.5)
    sent = [d.sent_at for d in lost.log]
    assert [d.attempt for d in lost.log] == [1, 2, 3, 4, 5, 6]
    assert all(d.status is None for d in lost.log)
    assert all(1.0 <= b - a <= 5.5 for a, b in itertools.pairwise(sent))
    assert lost.given_up == [(lab_id, "TornDown")] and lost.next_due is None


async def test_mounted_in_a_larger_application(tmp_path: Path) -> None:
    """A service mounts the receiver with add_subapp; its startup and cleanup still run."""
    records = [dict(r) for r in generate_fixed(5)]
    async with Simulator(records=records, clock=lambda: T0) as sim, client_for(sim) as client:
        store = await SQLiteStore.open(tmp_path / "r.db")
        try:
            receiver = WebhookReceiver(client, store, secret=SECRET, db=tmp_path / "r.db")
            service = web.Application()
            service.add_subapp("/hooks", receiver.app())
            async with serving(service) as url, aiohttp.ClientSession() as s:
                base = url.rsplit("/webhooks/lod", 1)[0]
                lab = records[0]["LabInstanceId"]
                status, _, _ = await push(s, f"{base}/hooks/webhooks/lod?id={lab}")
                assert status == 202
                await receiver.drain()
            assert receiver.ledger is None  # closed by the cleanup
            assert receiver.stats.applied == 1 and await store.count() == 1
        finally:
            await store.close()


# --- the queue (a state machine over any sequence of pushes and fetches) ----------------------


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 4),
    ops=st.lists(
        st.tuples(st.sampled_from(["offer", "take", "done", "again"]), st.integers(1, 6)),
        max_size=60,
    ),
)
def test_queue_holds_each_lab_once_and_loses_none(limit: int, ops: list[tuple[str, int]]) -> None:
    """
    Whatever the order of pushes, takes, completions and failures: a lab waits at most
    once, is held by at most one worker, a full queue refuses only new labs, and every
    lab accepted and not yet done is in the snapshot a stop would save.
    """
    from lodresults._webhooks.queue import LabQueue, Offer

    async def run() -> None:
        q = LabQueue(limit)
        waiting: set[int] = set()  # the model: accepted and not taken
        held: set[int] = set()  # taken by a worker, not done
        for op, lab in ops:
            if op == "offer":
                outcome = q.offer(lab, 0.0)
                if lab in waiting:
                    assert outcome is Offer.COALESCED
                elif len(waiting) >= limit:
                    assert outcome is Offer.FULL
                else:
                    assert outcome is Offer.QUEUED
                    waiting.add(lab)
            elif op == "take" and waiting - held:
                got, _ = await asyncio.wait_for(q.take(), 1)
                assert got in waiting and got not in held
                waiting.discard(got)
                held.add(got)
            elif op == "done" and held:
                lab = min(held)
                held.discard(lab)
                q.done(lab)
            elif op == "again" and held:
                lab = min(held)
                held.discard(lab)
                waiting.add(lab)
                q.again(lab)
            ids = [i for i, _ in q.snapshot()]
            assert len(ids) == len(set(ids))
            assert set(ids) == waiting | held  # what a stop saves: nothing lost
            assert (len(q), q.busy) == (len(waiting), len(held))
            assert q.idle == (not waiting and not held)

    asyncio.run(run())
