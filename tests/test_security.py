"""Credential safety: the key appears nowhere but in the api_key header to the configured origin."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import pickle
import traceback
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from lodresults import (
    LodAuthError,
    LodClient,
    LodError,
    LodInvalidArgument,
    LodRedirectError,
    LodServerError,
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


# --- a hostile server echoing the key in every spelling ---------------------------------

from tests.hostile import (  # noqa: E402
    HOSTILE_KEY,
    gzip_bomb,
    hostile,
    http,
    key_pieces_in,
    spellings,
)


def _all_text(exc: BaseException) -> str:
    """
    Everything an error can show, over its whole chain (``__cause__``, ``__context__``,
    ``.error``, suppressed or not): str, repr, args, attributes, and the traceback formatted
    with every frame's locals (what error trackers such as Sentry record).
    """
    parts: list[str] = []
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        parts += [str(e), repr(e), repr(e.args), repr(vars(e))]
        tb = traceback.TracebackException(type(e), e, e.__traceback__, capture_locals=True)
        parts += tb.format()
        todo += [x for x in (e.__cause__, e.__context__, getattr(e, "error", None)) if x]
    return "\n".join(parts)


async def _every_call(base_url: str, **kw: object) -> list[BaseException]:
    """Each public call once against ``base_url``; what each raised."""
    errors: list[BaseException] = []
    opts: dict[str, object] = {"rate_limit": None, "retry_initial_wait": 0, "retry_max_wait": 0}
    opts.update(kw)
    async with LodClient(HOSTILE_KEY, base_url=base_url, **opts) as c:  # type: ignore[arg-type]
        for call in (
            lambda: c.result(5),
            lambda: c.results(0, 100),
            lambda: c.latest_results(5),
            lambda: _drain(c, 0, 20 * DAY),
        ):
            try:
                await call()
            except LodError as exc:
                errors.append(exc)
    return errors


def _cut(spelled: str) -> bytes:
    # The excerpt shown is 200 characters: the key is cut after its first 20.
    return (b"x" * 180 + spelled.encode("latin-1", "backslashreplace"))[:400]


ECHO_STATUSES = [(401, LodAuthError), (403, LodAuthError), (500, LodServerError), (404, LodError)]


@pytest.mark.parametrize("spelling", sorted(spellings("k")))
@pytest.mark.parametrize(("status", "error"), ECHO_STATUSES)
async def test_hostile_error_bodies_never_leak_a_piece_of_the_key(
    spelling: str, status: int, error: type[LodError], caplog: pytest.LogCaptureFixture
) -> None:
    """An error body echoing the key (any spelling, whole or cut by the excerpt): no piece
    of it in any error, chain, traceback local or log line, from any call."""
    caplog.set_level(logging.DEBUG)

    def answer(key: str) -> bytes:
        spelled = spellings(key)[spelling]
        body = f"denied for {spelled}; ".encode("latin-1", "backslashreplace") + _cut(spelled)
        return http(status, body, "Content-Type: text/plain")

    async with hostile(answer) as h:
        errors = await _every_call(h.base_url, max_retries=1)
    assert len(errors) == 4 and all(isinstance(e, error) for e in errors)
    assert isinstance(errors[-1], LodWindowError)
    for exc in errors:
        assert key_pieces_in(_all_text(exc)) == [], spelling
    assert key_pieces_in(caplog.text) == []
    assert "HTTP" in str(errors[0])


def _bodies_of_200(key: str, spelling: str) -> dict[str, bytes]:
    spelled = spellings(key)[spelling]
    enc = spelled.encode("latin-1", "backslashreplace")
    return {
        "not-json": b"<html>" + enc + b"</html>",
        "status0": b'{"Status": 0, "Error": "bad key ' + enc + b'"}',
        "schema": b'{"Status": 1, "Results": [{"LabInstanceId": 1, "UserId": "'
        + enc
        + b'", "Start": "' + enc + b'"}]}',
        "deep": b'{"Status": 1, "Results": [{"X": "' + enc + b'", "Y": '
        + b"[" * 3000 + b"]" * 3000 + b"}]}",
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["not-json", "status0", "schema", "deep"])
@pytest.mark.parametrize("spelling", ["raw", "json-escaped", "all-u-escapes", "percent"])
async def test_hostile_200_bodies_never_leak_a_piece_of_the_key(
    kind: str, spelling: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Decode errors quote the body: the quotes, chain and frame locals stay key-free."""
    caplog.set_level(logging.DEBUG)

    async with hostile(lambda key: http(200, _bodies_of_200(key, spelling)[kind])) as h:
        errors = await _every_call(h.base_url, max_retries=1)
    assert len(errors) == 4
    for exc in errors:
        assert key_pieces_in(_all_text(exc)) == [], (kind, spelling)
    assert key_pieces_in(caplog.text) == []


HEADER_ATTACKS = {
    "location-host": lambda k: http(302, b"", f"Location: https://{k}.evil.example/x"),
    "location-userinfo": lambda k: http(307, b"", f"Location: //{quote(k, safe='')}@evil/x"),
    "location-relative": lambda k: http(301, b"", "Location: //evil.example/path"),
    "retry-after": lambda k: http(429, b"", f"Retry-After: {k}"),
    "status-line": lambda k: f"HTTP/1.1 2{k} OK\r\n\r\n".encode(),
    "reason": lambda k: http(500, b"", reason=k),
    "header-name": lambda k: f"HTTP/1.1 200 OK\r\n{k}\r\n\r\n".encode(),
    "lying-length": lambda k: http(200, k.encode(), "Content-Length: 100000"),
    "long-header": lambda k: http(200, b"{}", f"X-{k}: {k * 400}"),
    "bad-chunk": lambda k: f"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n{k}\r\n".encode(),
    "bad-gzip": lambda k: http(200, k.encode() * 3, "Content-Encoding: gzip"),
    "bad-length": lambda k: f"HTTP/1.1 200 OK\r\nContent-Length: {k}\r\n\r\n".encode(),
    "gzip-bomb": lambda k: http(
        200, gzip_bomb(4 << 20, k.encode()), "Content-Encoding: gzip", f"X-Echo: {k}"
    ),
}


@pytest.mark.parametrize("attack", sorted(HEADER_ATTACKS))
async def test_hostile_headers_and_broken_http_never_leak_a_piece_of_the_key(
    attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Redirects to the key as a host, the key as Retry-After, as a status line, as a
    header line, with a lying length or in a gzip bomb: every error stays key-free."""
    caplog.set_level(logging.DEBUG)
    async with hostile(HEADER_ATTACKS[attack]) as h:
        errors = await _every_call(h.base_url, max_retries=1, max_response_bytes=1 << 20)
    assert len(errors) == 4
    for exc in errors:
        assert key_pieces_in(_all_text(exc)) == [], attack
    assert key_pieces_in(caplog.text) == []


@pytest.mark.parametrize(
    ("body", "args"),
    [
        (lambda k: http(401, _cut(spellings(k)["json-escaped"])), ["latest"]),
        (lambda k: http(401, _cut(k)), ["get", "5"]),
        (
            lambda k: http(
                200, b'{"Status": 0, "Error": "' + spellings(k)["json-escaped"].encode() + b'"}'
            ),
            ["latest"],
        ),
        (lambda k: f"HTTP/1.1 2{k} OK\r\n\r\n".encode(), ["latest"]),
        (lambda k: http(500, _cut(spellings(k)["json-escaped"])), ["backfill"]),
        (lambda k: http(401, _cut(spellings(k)["percent"])), ["watch"]),
    ],
    ids=[
        "401-escaped-latest",
        "401-cut-get",
        "status0-latest",
        "status-line",
        "500-backfill",
        "401-watch",
    ],
)
async def test_cli_debug_output_never_shows_a_piece_of_the_key(
    body: Callable[[str], bytes], args: list[str], tmp_path: Path
) -> None:
    """The CLI with --debug (tracebacks, debug logs) against a hostile server."""
    from tests.test_cli import _env, run

    if args == ["backfill"]:
        args = ["backfill", "--since", "0", "--until", str(20 * DAY), "--db",
                str(tmp_path / "x.db"), "--max-retries", "0"]  # fmt: skip
    if args == ["watch"]:
        args = ["watch", "--db", str(tmp_path / "w.db")]
    if args[0] != "backfill":
        args = [*args, "--max-retries", "0"]
    async with hostile(body) as h:
        env = _env(None, LOD_API_KEY=HOSTILE_KEY, LOD_BASE_URL=h.base_url)
        r = await run(["--debug", *args], env)
        plain = await run(args, env)
    assert r.code == 1 and plain.code == 1
    assert "Traceback" in r.err and "Traceback" not in plain.err
    assert key_pieces_in(r.out + r.err + plain.out + plain.err) == []


@pytest.mark.parametrize("how", ["wait_for", "cancel"])
async def test_cancelled_request_leaves_no_key_in_frames(how: str) -> None:
    """Cancelled (or timed out by the caller) mid-body, while the frames of the exchange
    held a response whose headers and body echo the key: the CancelledError or
    TimeoutError the caller gets shows none of it, even formatted with locals."""

    def answer(key: str) -> bytes:
        head = f"HTTP/1.1 200 OK\r\nX-Echo: {key}\r\nContent-Length: 100000\r\n\r\n"
        return head.encode() + b'{"Results": [{"UserId": "' + key.encode() * 50

    async with (
        hostile(answer, hang=True) as h,
        LodClient(HOSTILE_KEY, base_url=h.base_url, rate_limit=None) as c,
    ):
        if how == "wait_for":
            with pytest.raises(asyncio.TimeoutError) as info:
                await asyncio.wait_for(c.results(0, 100), 0.3)
        else:
            task = asyncio.ensure_future(c.results(0, 100))
            await h.answered.wait()
            await asyncio.sleep(0.05)  # let the client read part of it (either way, no key)
            task.cancel()
            with pytest.raises(asyncio.CancelledError) as info:
                await task
    assert key_pieces_in(_all_text(info.value)) == []


async def test_header_value_and_frames_never_show_the_key() -> None:
    """The header value's repr is '***' (a headers dict in a frame's locals shows no key)."""
    c = LodClient(HOSTILE_KEY, base_url="http://127.0.0.1:1/api/v3", max_retries=0)
    assert repr({"api_key": c._key.reveal()}) == "{'api_key': '***'}"
    with pytest.raises(LodError) as info:
        await c.latest_results(5)  # connection refused
    await c.close()
    assert key_pieces_in(_all_text(info.value)) == []


def test_invalid_key_error_has_no_key_in_its_frames() -> None:
    """A key refused at construction is not a local of the frames of the error raised."""
    with pytest.raises(LodInvalidArgument, match="control character") as info:
        LodClient(HOSTILE_KEY + "\n")  # no local of this frame holds it either
    assert key_pieces_in(_all_text(info.value)) == []


# --- the redactor, property-tested against an independent decoder -----------------------

from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lodresults._request.redact import Redactor  # noqa: E402
from tests.hostile import PIECE  # noqa: E402

_key_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E) | st.sampled_from("é€😀")


@given(
    key=st.text(_key_chars, min_size=PIECE, max_size=48),
    before=st.text(max_size=30),
    after=st.text(max_size=30),
    spelling=st.sampled_from(sorted(spellings("k"))),
    cut=st.tuples(st.integers(0, 40), st.integers(0, 40)),
)
@settings(max_examples=300)
# a cut escape ("\\u003") that a lenient reader reads as "u003", completing a piece
@example(key="0000000u00", before="", after="", spelling="all-u-escapes", cut=(0, 25))
# masking the digits of an over-long reference (&#4800000000) makes "&#48***" read as "0"
@example(key="0000000000000dd", before="", after="00000000", spelling="html-refs", cut=(1, 33))
def test_no_spelling_of_any_piece_survives(
    key: str, before: str, after: str, spelling: str, cut: tuple[int, int]
) -> None:
    """Any key, any spelling, cut anywhere, inside any text: no piece of 8+ survives."""
    spelled = spellings(key)[spelling]
    spelled = spelled[cut[0] : len(spelled) - cut[1]]
    out = Redactor(key).text(before + spelled + after)
    assert key_pieces_in(out, key) == []


@given(text=st.text(max_size=200), key=st.text(_key_chars, min_size=PIECE, max_size=40))
def test_text_without_the_key_is_left_alone(text: str, key: str) -> None:
    """A text that holds no piece of the key comes back unchanged."""
    if not key_pieces_in(text, key):
        assert Redactor(key).text(text) == text


def test_a_text_still_holding_a_piece_after_the_rounds_is_masked_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If masking kept uncovering pieces past the rounds allowed, nothing of the text is
    returned (here one round: the second reading still finds the key)."""
    import lodresults._request.redact as redact

    text = "#48;" + "&#48;" * 7 + "&#48" + "0" * 8
    assert Redactor("0" * 13 + "dd").text(text) == "#48;******"  # two rounds, two masks
    monkeypatch.setattr(redact, "_ROUNDS", 1)
    assert Redactor("0" * 13 + "dd").text(text) == "***"


async def test_the_engines_failures_never_show_the_key(tmp_path: Path) -> None:
    """
    A 401 in the change feed and in the refresh (one Result per lab, the siblings
    cancelled): the error, its chain and every frame's locals hold no piece of the key,
    and the watch's lines neither.
    """
    from lodresults import SQLiteStore, backfill
    from lodresults.cli._watch import watch
    from tests.test_engine import RevokingSimulator
    from tests.test_living import make_lab

    labs = [make_lab(i, 1_700_000_000 + i * 8 * DAY, None) for i in range(1, 9)]
    db = tmp_path / "s.db"
    async with RevokingSimulator(records=labs, api_key=KEY) as sim:
        store = await SQLiteStore.open(db)
        try:
            async with LodClient(KEY, base_url=sim.base_url, rate_limit=None) as c:
                # First run: windows only; then the labs asked for one by one (no feed
                # yet, nothing stored as running before) -- the key is revoked there.
                await backfill(c, store, 1_700_000_000, 1_700_000_000 + 70 * DAY)
                await store.set_meta("engine.last_run", "0")  # beyond the feed's reach
                with pytest.raises(LodAuthError) as refresh:
                    await backfill(c, store, 1_700_000_000, 1_700_000_000 + 70 * DAY)
        finally:
            await store.close()
        out = io.StringIO()
        with pytest.raises(LodAuthError) as feed:
            await watch(
                lambda **kw: LodClient(KEY, base_url=sim.base_url, **kw),
                db=db, interval=1, out=out,
            )  # fmt: skip
    for err in (refresh.value, feed.value):
        text = _all_text(err)
        assert KEY not in text and KEY[4:-4] not in text
    assert KEY[4:-4] not in out.getvalue()
    _assert_key_only_in_header(sim)
