"""
``lodresults.sync``: the blocking client, from plain code and from inside a running event
loop (as in Jupyter), against the simulator served from a thread of its own.
"""

from __future__ import annotations

import asyncio
import gc
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import lodresults
from lodresults import LodAuthError, LodClientClosed, LodInvalidArgument, LodWindowError
from lodresults._records.wire import structure_record
from lodresults.sync import LodClient, backfill
from lodresults.testing import Simulator
from tests.conftest import KEY, SPAN, make_sim, threaded

A, B = SPAN[0] + 30 * 86400, SPAN[0] + 90 * 86400


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    """A simulator on its own loop and thread: blocking tests must not wait on their own."""
    with threaded(make_sim(latency=0.002)) as server:
        yield server


def expected(sim: Simulator, start: int, end: int) -> list[lodresults.LabResult]:
    return sorted(
        (structure_record(r) for r in sim.between(start, end)), key=lambda r: r.lab_instance_id
    )


def _sync_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lodresults.sync"]


def _tasks_left(client: LodClient) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks()) - 1  # not this one

    return client._loop.run(count())


def test_every_method_blocks_and_answers(sim: Simulator) -> None:
    with LodClient(KEY, base_url=sim.base_url, rate_limit=None) as client:
        got = list(client.iter_results(A, B))
        assert len(got) > 1000
        assert sorted(got, key=lambda r: r.lab_instance_id) == expected(sim, A, B)
        assert len({r.lab_instance_id for r in got}) == len(got)
        batches = list(client.iter_windows(A, B))
        assert [r for b in batches for r in b.records] == got
        week = client.results(A, A + 7 * 86400)
        assert {r.lab_instance_id for r in week} == sim.ids_between(A, A + 7 * 86400)
        one = week[0]
        assert client.result(one.lab_instance_id).lab_instance_id == one.lab_instance_id
        assert isinstance(client.latest_results(10), list)
        assert "lodresults.sync.LodClient(base_url=" in repr(client)


async def test_works_inside_a_running_event_loop(sim: Simulator) -> None:
    # As in a notebook cell: a loop runs in this thread, and the calls block it.
    outer = asyncio.get_running_loop()
    with LodClient(KEY, base_url=sim.base_url, rate_limit=None) as client:
        got = list(client.iter_results(A, A + 20 * 86400))
        assert len(got) == len(sim.ids_between(A, A + 20 * 86400))
        assert client.result(got[0].lab_instance_id) == client.result(got[0].lab_instance_id)
    assert asyncio.get_running_loop() is outer
    assert not outer.is_closed()


def test_breaking_early_cancels_what_is_in_flight(sim: Simulator) -> None:
    seen = len(sim.log)
    with LodClient(KEY, base_url=sim.base_url, rate_limit=None, max_concurrency=4) as client:
        far = A + 300 * 86400  # some 43 windows
        for _ in client.iter_results(A, far):
            break
        # The async generator was closed on the loop at once: nothing runs there now.
        assert _tasks_left(client) == 0
        sent = len(sim.log) - seen
        assert sent <= 12  # the windows in flight and a few ahead, not the range
        # The client is still usable afterwards.
        assert client.results(A, A + 86400) is not None


def test_errors_keep_their_types(sim: Simulator) -> None:
    with LodClient("wrong-key-0123456789", base_url=sim.base_url, max_retries=0) as bad:
        with pytest.raises(LodAuthError) as auth:
            bad.results(A, A + 86400)
        assert type(auth.value) is LodAuthError
        with pytest.raises(LodWindowError) as window:
            list(bad.iter_results(A, B))
        assert isinstance(window.value, LodAuthError)
        assert window.value.start <= A
    with LodClient(KEY, base_url=sim.base_url) as client:
        with pytest.raises(lodresults.LodNotFoundError):
            client.result(2**40)
        with pytest.raises(LodInvalidArgument):
            client.iter_results(B, A)  # before anything is sent, at the call
        with pytest.raises(LodInvalidArgument):
            client.latest_results(0)


def test_bad_options_raise_before_a_thread_starts() -> None:
    before = len(_sync_threads())
    with pytest.raises(LodInvalidArgument):
        LodClient(KEY, base_url="http://example.com/api/v3")
    assert len(_sync_threads()) == before


def test_close_is_idempotent_and_ends_the_thread(sim: Simulator) -> None:
    client = LodClient(KEY, base_url=sim.base_url)
    thread = client._loop.thread
    assert thread.is_alive()
    client.results(A, A + 86400)
    client.close()
    client.close()
    assert client.closed
    assert not thread.is_alive()
    with pytest.raises(LodClientClosed):
        client.results(A, A + 86400)
    with pytest.raises(LodClientClosed), client:
        pass


def test_a_client_dropped_without_close_ends_its_thread(sim: Simulator) -> None:
    client = LodClient(KEY, base_url=sim.base_url)
    client.results(A, A + 86400)
    thread = client._loop.thread
    del client
    gc.collect()
    assert not thread.is_alive()


def test_close_while_iterating_ends_the_iteration(sim: Simulator) -> None:
    client = LodClient(KEY, base_url=sim.base_url, rate_limit=None)
    it = client.iter_results(A, B)
    next(it)
    client.close()
    with pytest.raises(LodClientClosed):
        for _ in it:
            pass


def test_a_hook_that_calls_back_in_is_refused(sim: Simulator) -> None:
    errors: list[BaseException] = []

    def hook(event: Any) -> None:
        try:
            client.results(A, A + 86400)
        except RuntimeError as exc:
            errors.append(exc)

    with LodClient(KEY, base_url=sim.base_url, on_event=hook) as client:
        client.results(A, A + 86400)
        list(client.iter_windows(A, A + 86400))
    assert errors and "its own event loop" in str(errors[0])


def test_blocking_backfill(sim: Simulator, tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with LodClient(KEY, base_url=sim.base_url, rate_limit=None) as client:
        first = backfill(client, db, A, A + 30 * 86400)
        again = backfill(client, str(db), A, A + 30 * 86400)
    assert first.complete and first.windows > 0
    assert again.windows == 0


def test_no_process_wide_state_changes(sim: Simulator) -> None:
    import signal
    import sys

    before = (asyncio.get_event_loop_policy(), signal.getsignal(signal.SIGINT))
    hooks = sys.get_asyncgen_hooks()
    with LodClient(KEY, base_url=sim.base_url) as client:
        client.results(A, A + 86400)
    assert (asyncio.get_event_loop_policy(), signal.getsignal(signal.SIGINT)) == before
    assert sys.get_asyncgen_hooks() == hooks


@pytest.mark.parametrize(
    "name",
    ["__init__", "result", "results", "latest_results", "iter_results", "iter_windows", "close"],
)
def test_same_signatures_as_the_async_client(name: str) -> None:
    import inspect

    def params(cls: type, exclude: tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
        sig = inspect.signature(getattr(cls, name))
        return [
            (p.name, p.kind, p.default) for p in sig.parameters.values() if p.name not in exclude
        ]

    # The blocking client takes every option but a session (bound to another loop).
    assert params(LodClient) == params(lodresults.LodClient, exclude=("session",))


def test_blocking_backfill_takes_the_options_of_backfill() -> None:
    import inspect

    ours = inspect.signature(backfill).parameters
    theirs = inspect.signature(lodresults.backfill).parameters
    # A path to a SQLite file where the library takes a destination.
    assert [(p.name, p.default) for p in ours.values() if p.name != "db"] == [
        (p.name, p.default) for p in theirs.values() if p.name != "destination"
    ]


def test_the_docs_example_runs(sim: Simulator, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    from tests.test_readme import _RUNNER, ROOT, readme_blocks

    blocks = [
        b for b in readme_blocks((ROOT / "docs" / "sync.md").read_text()) if b.lang == "python"
    ]
    assert blocks
    env = {**os.environ, "LOD_API_KEY": KEY, "LOD_BASE_URL": sim.base_url}

    def last_30_days() -> int:
        return len(sim.ids_between(sim.now - 30 * 86400, sim.now))

    for block in blocks:
        path = tmp_path / "example.py"
        before = last_30_days()
        path.write_text(block.code)
        done = subprocess.run(
            [sys.executable, "-c", _RUNNER, str(path)],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        after = last_30_days()  # a lab may have left or entered the range meanwhile
        printed = re.search(
            r"^([\d,]+) labs started or ended in the last 30 days$", done.stdout, re.M
        )
        assert printed is not None, done.stdout
        assert min(before, after) <= int(printed[1].replace(",", "")) <= max(before, after)
        assert "labs changed in the last hour" in done.stdout


def test_every_public_name_of_the_async_client_is_offered() -> None:
    names = {n for n in dir(lodresults.LodClient) if not n.startswith("_")}
    assert names <= {n for n in dir(LodClient) if not n.startswith("_")}


def test_closing_from_a_hook_ends_the_thread_afterwards(sim: Simulator) -> None:
    closed: list[bool] = []

    def hook(event: Any) -> None:
        if not closed:
            closed.append(True)
            client.close()

    client = LodClient(KEY, base_url=sim.base_url, on_event=hook)
    thread = client._loop.thread
    with pytest.raises(LodClientClosed):
        list(client.iter_windows(A, B))
    thread.join(10)
    assert not thread.is_alive() and client.closed
