"""Credential safety: the key appears nowhere but in the api_key header to the configured origin."""

from __future__ import annotations

import contextlib
import logging
import pickle
import traceback

import pytest

from lodresults import (
    LodAuthError,
    LodClient,
    LodError,
    LodInvalidArgument,
    LodRedirectError,
    LodWindowError,
)
from lodresults.testing import Faults, Simulator
from tests.conftest import KEY, fast_client, make_sim

DAY = 86400


def _everything_about(exc: BaseException) -> str:
    """All the text an error can show: str, repr, args, attributes, the formatted chain."""
    parts = [str(exc), repr(exc), repr(exc.args), repr(vars(exc))]
    parts += traceback.format_exception(type(exc), exc, exc.__traceback__)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not exc.__suppress_context__:
        parts.append(_everything_about(cause))
    if isinstance(exc, LodWindowError):
        parts.append(_everything_about(exc.error))
    return "\n".join(parts)


def _assert_key_only_in_header(sim: Simulator) -> None:
    assert sim.log, "the simulator saw no request"
    for entry in sim.log:
        assert KEY not in entry.path and KEY not in repr(entry.query)
        for name, value in entry.headers.items():
            if name.lower() != "api_key":
                assert KEY not in value, name
        assert entry.headers.get("api_key") in (KEY, "wrong-key")


async def _failures(sim: Simulator) -> list[BaseException]:
    """Drive every failure path once and collect what was raised."""
    errors: list[BaseException] = []
    a = sim.span[0] + 10 * DAY
    async with fast_client(sim, max_retries=1) as c:
        for coro in (
            c.results(a, a + DAY),
            c.result(1),  # Status 0: not found
            c.latest_results(60),
            _drain(c, a, a + 30 * DAY),
        ):
            try:
                await coro
            except LodError as exc:
                errors.append(exc)
    async with LodClient("wrong-key", base_url=sim.base_url, rate_limit=None) as c:
        with contextlib.suppress(LodAuthError):
            await c.latest_results(5)
    return errors


async def _drain(c: LodClient, a: int, b: int) -> None:
    async with contextlib.aclosing(c.iter_results(a, b)) as it:
        async for _ in it:
            pass


async def test_key_never_in_errors_logs_or_urls(caplog: pytest.LogCaptureFixture) -> None:
    """Every failure path with DEBUG logs on: the key shows nowhere but the header."""
    caplog.set_level(logging.DEBUG)
    kinds = ("http500", "http502", "http503", "reset", "truncate", "malformed", "status0")
    async with make_sim(faults=Faults(rate=1.0, kinds=kinds), echo_headers=True) as sim:
        errors = await _failures(sim)
        _assert_key_only_in_header(sim)
        assert any(KEY in (entry.headers.get("api_key") or "") for entry in sim.log)
    assert len(errors) >= 3
    for exc in errors:
        assert KEY not in _everything_about(exc)
        pickle.loads(pickle.dumps(exc))  # errors survive pickling (no live objects on them)
    assert KEY not in caplog.text
    assert "lodresults" in caplog.text  # debug lines were in fact emitted


async def test_server_error_bodies_echoing_the_key_are_scrubbed() -> None:
    """A 500 whose body quotes the request headers: the error text shows *** instead."""
    faults = Faults(rate=1.0, kinds=("http500",))
    async with make_sim(faults=faults, echo_headers=True) as sim, fast_client(sim) as c:
        with pytest.raises(LodError) as info:
            await c.latest_results(5)
    text = _everything_about(info.value)
    assert KEY not in text
    assert "api_key" in str(info.value) or "HTTP 500" in str(info.value)


@pytest.mark.parametrize("status_target", ["other-host", "other-scheme"])
async def test_redirects_never_carry_the_key(status_target: str) -> None:
    """A 307 to another origin is refused: the other server sees no request at all."""
    async with make_sim() as other:
        target = other.base_url.rsplit("/api/v3", 1)[0]
        if status_target == "other-scheme":
            target = target.replace("http://", "https://")
        async with make_sim(redirect_to=target) as sim, fast_client(sim) as c:
            with pytest.raises(LodRedirectError) as info:
                await c.latest_results(5)
            with pytest.raises(LodWindowError) as info2:
                await _drain(c, sim.span[0], sim.span[0] + 20 * DAY)
        assert other.stats.total == 0
        assert sim.stats.requests["LatestResults"] == 1  # not retried either
    assert KEY not in _everything_about(info.value) + _everything_about(info2.value)


@pytest.mark.parametrize(
    "url",
    ["http://lod.example.com/api/v3", "http://10.0.0.5/api/v3", "http://192.168.1.10/api/v3"],
)
async def test_plain_http_to_non_loopback_is_refused_before_sending(url: str) -> None:
    """The key would travel unencrypted: refused at construction."""
    with pytest.raises(LodInvalidArgument, match="unencrypted") as info:
        LodClient(KEY, base_url=url)
    assert KEY not in _everything_about(info.value)


def test_reprs_hide_the_key() -> None:
    """repr/str of the client and its internals never show the key."""
    c = LodClient(KEY, base_url="http://127.0.0.1:1/api/v3")
    assert KEY not in repr(c) and KEY not in str(c)
    assert KEY not in repr(vars(c)).replace(repr(c._key.reveal()), "")  # only inside ApiKey
    assert KEY not in repr(c._transport.__dict__)


async def test_cli_debug_output_never_shows_the_key(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Even --debug tracebacks and logs of a failing CLI run keep the key out."""
    from tests.test_cli import _env, run

    async with make_sim(faults=Faults(rate=1.0, kinds=("http500",)), echo_headers=True) as sim:
        r = await run(["--debug", "latest", "--max-retries", "1"], _env(sim))
        r2 = await run(
            ["--debug", "backfill", "--since", str(sim.span[0]), "--until",
             str(sim.span[0] + 10 * DAY), "--db", str(tmp_path / "x.db"), "--max-retries", "0"],
            _env(sim),
        )  # fmt: skip
    for res in (r, r2):
        assert res.code == 1
        assert "Traceback" in res.err
        assert KEY not in res.out + res.err
