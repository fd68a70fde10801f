"""Transport units with aioresponses: headers, no redirects, error mapping, size cap."""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import Generator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from lodresults import (
    LodAuthError,
    LodClient,
    LodConnectionError,
    LodInvalidArgument,
    LodRedirectError,
    LodResponseTooLarge,
    LodServerError,
    LodTimeoutError,
)
from lodresults._request.key import ApiKey, check_base_url, is_loopback
from lodresults._request.transport import Transport

BASE = "https://lod.example.test/api/v3"
KEY = "unit-KEY-secret-123"
RESULTS = re.compile(r"^https://lod\.example\.test/api/v3/Results\?.*$")
OK = {"Results": [], "Status": 1, "Error": None}


def client(**kw: object) -> LodClient:
    opts: dict[str, object] = {"rate_limit": None, "retry_initial_wait": 0.0, "retry_max_wait": 0.0}
    opts.update(kw)
    return LodClient(KEY, base_url=BASE, **opts)  # type: ignore[arg-type]


async def test_sends_key_header_and_params_without_following_redirects() -> None:
    """api_key goes in the header, never the URL; redirects are not followed."""
    with aioresponses() as m:
        m.get(RESULTS, payload=OK)
        async with client() as c:
            assert await c.results(0, 100) == []
        ((key, calls),) = m.requests.items()
        method, url = key
        assert method == "GET"
        assert url.query == {"start": "0", "end": "100"}
        assert KEY not in str(url)
        kwargs = calls[0].kwargs
        assert kwargs["headers"]["api_key"] == KEY
        assert kwargs["headers"]["Accept"] == "application/json"
        assert "gzip" in kwargs["headers"]["Accept-Encoding"]
        assert kwargs["allow_redirects"] is False
        assert kwargs["raise_for_status"] is False


@pytest.mark.parametrize(
    ("status", "error"),
    [(401, LodAuthError), (403, LodAuthError), (302, LodRedirectError), (500, LodServerError)],
)
async def test_status_mapping(status: int, error: type[Exception]) -> None:
    """HTTP statuses map to the error tree; the body's text is quoted (key scrubbed)."""
    with aioresponses() as m:
        m.get(
            RESULTS,
            status=status,
            body=f"echo {KEY}",
            repeat=True,
            headers={"Location": "https://evil.example/steal"},
        )
        async with client(max_retries=1) as c:
            with pytest.raises(error) as info:
                await c.results(0, 100)
    assert KEY not in str(info.value) and KEY not in repr(info.value)
    assert info.value.status == status  # type: ignore[attr-defined]


async def test_redirect_names_only_the_origin() -> None:
    """A refused redirect names where it pointed (origin only)."""
    with aioresponses() as m:
        m.get(RESULTS, status=307, headers={"Location": "https://evil.example/steal?x=1"})
        async with client() as c:
            with pytest.raises(LodRedirectError, match=r"https://evil\.example refused"):
                await c.results(0, 100)


async def test_connection_errors_are_mapped_and_not_chained() -> None:
    """aiohttp errors become LodConnectionError with no aiohttp cause attached."""
    with aioresponses() as m:
        m.get(RESULTS, exception=aiohttp.ClientConnectionError("boom"), repeat=True)
        async with client(max_retries=2) as c:
            with pytest.raises(LodConnectionError) as info:
                await c.results(0, 100)
    assert info.value.__cause__ is None
    assert info.value.__context__ is None  # not merely hidden: no aiohttp error on the chain
    assert [len(v) for v in m.requests.values()] == [3]


async def test_timeout_is_mapped() -> None:
    """asyncio timeouts become LodTimeoutError after the retries."""
    with aioresponses() as m:
        m.get(RESULTS, exception=asyncio.TimeoutError(), repeat=True)
        async with client(max_retries=0) as c:
            with pytest.raises(LodTimeoutError):
                await c.results(0, 100)


async def test_oversized_body_is_refused() -> None:
    """A body above max_response_bytes is refused, not retried."""
    with aioresponses() as m:
        m.get(RESULTS, body=b"x" * 5000)
        async with client(max_response_bytes=1000) as c:
            with pytest.raises(LodResponseTooLarge, match="max_response_bytes=1000"):
                await c.results(0, 100)


async def test_retry_then_success() -> None:
    """A 503 then a 200: the caller sees the records."""
    with aioresponses() as m:
        m.get(RESULTS, status=503, body="<html>down</html>")
        m.get(RESULTS, payload=OK)
        async with client() as c:
            assert await c.results(0, 100) == []


@pytest.mark.parametrize(
    "url",
    [
        "http://lod.example.test/api/v3",
        "ftp://x/y",
        "labondemand.com/api/v3",
        "https://user:pw@lod.example.test/",
        "https://lod.example.test/api/v3?api_key=x",
    ],
)
def test_base_url_rules(url: str) -> None:
    """Plain http to a non-loopback host, non-http schemes, userinfo and queries are refused."""
    with pytest.raises(LodInvalidArgument):
        check_base_url(url)


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.2.1", "::1", "[::1]"])
def test_loopback_hosts(host: str) -> None:
    """Loopback names and addresses are recognised."""
    assert is_loopback(host)
    assert not is_loopback("10.0.0.1") and not is_loopback("example.com")


def test_http_allowed_for_loopback() -> None:
    """http:// to loopback is accepted (the simulator) and trailing slashes dropped."""
    assert str(check_base_url("http://127.0.0.1:8080/api/v3/")) == "http://127.0.0.1:8080/api/v3"


def test_api_key_hides_itself() -> None:
    """The key object never formats as the key and cannot be pickled."""
    k = ApiKey(KEY)
    assert KEY not in repr(k) and KEY not in str(k) and KEY not in f"{k}"
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(k)


async def test_transport_url_building() -> None:
    """Commands are appended to the base path."""
    t = Transport(check_base_url(BASE), ApiKey(KEY), timeout=1, max_response_bytes=10)
    assert str(t.url_for("Results")) == f"{BASE}/Results"
    await t.close()


# --- bodies and limits against a hostile server on loopback -----------------------------

from tests.hostile import gzip_bomb, hostile, http  # noqa: E402

OK_PREFIX = b'{"Results": [], "Status": 1, "Pad": "'


def _deflate_bomb(inflated: int) -> bytes:
    import zlib

    return zlib.compress(OK_PREFIX + b" " * (inflated - len(OK_PREFIX)) + b'"}', 9)


@pytest.mark.parametrize(
    ("encoding", "body"),
    [
        ("gzip", lambda: gzip_bomb(40 << 20, OK_PREFIX)),
        ("deflate", lambda: _deflate_bomb(40 << 20)),
        ("gzip", lambda: gzip_bomb(40 << 20, b"not json")),
    ],
    ids=["gzip-valid-json", "deflate-valid-json", "gzip-not-json"],
)
@pytest.mark.parametrize("length", [True, False], ids=["content-length", "chunked"])
async def test_compressed_body_is_capped_by_its_inflated_size(
    encoding: str, body: Any, length: bool
) -> None:
    """A 40 KB body inflating to 40 MiB with a 1 MiB cap: refused while reading, with the
    compressed Content-Length (under the cap) or none; refused once, never retried."""
    data = body()
    assert len(data) < 1 << 20
    if length:
        answer = http(200, data, f"Content-Encoding: {encoding}")
    else:
        answer = http(200, data, f"Content-Encoding: {encoding}", "Content-Length: x")
        answer = answer.replace(b"Content-Length: x\r\n", b"")  # close-delimited
    assert await _requests_until(answer, LodResponseTooLarge, "inflated") == 1


async def _requests_until(answer: bytes, error: type[Exception], match: str, **kw: Any) -> int:
    """Call ``results`` against a server sending ``answer``: it raises ``error``; how many
    requests did the server see?"""
    opts: dict[str, Any] = {"rate_limit": None, "max_retries": 3, "max_response_bytes": 1 << 20}
    opts.update(retry_initial_wait=0, retry_max_wait=0, **kw)
    async with hostile(lambda key: answer) as h, LodClient(KEY, base_url=h.base_url, **opts) as c:
        with pytest.raises(error, match=match):
            await c.results(0, 100)
    return h.requests


async def test_declared_length_over_the_cap_is_refused_before_reading() -> None:
    """Content-Length above the cap: refused at once, not retried."""
    answer = http(200, b"{}", "Content-Length: 999999999")
    assert await _requests_until(answer, LodResponseTooLarge, "999999999") == 1


async def test_lying_content_length_is_a_cut_body_and_retried() -> None:
    """Content-Length says more than is sent: a LodConnectionError, retried."""
    answer = http(200, b'{"Results": []', "Content-Length: 5000")
    assert await _requests_until(answer, LodConnectionError, "cut short", max_retries=2) == 3


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("//evil.example/path", "http://evil.example"),
        ("//evil.example:8443/p?q=1", "http://evil.example:8443"),
        ("https://evil.example/x", "https://evil.example"),
        ("/same/host", "(same host)"),
        ("http://[::1", "(invalid Location)"),
        ("", "(no Location)"),
    ],
)
async def test_any_location_is_a_redirect_error_naming_the_origin(
    location: str, named: str
) -> None:
    """A 3xx with a protocol-relative, relative, absolute, broken or empty Location: a
    LodRedirectError naming where it pointed (origin only), never a raw ValueError."""
    header = f"Location: {location}" if location else "X-None: 1"
    async with (
        hostile(lambda key: http(302, b"", header)) as h,
        LodClient(KEY, base_url=h.base_url, rate_limit=None) as c,
    ):
        with pytest.raises(LodRedirectError) as info:
            await c.latest_results(5)
    assert f"redirect to {named} refused" in str(info.value)
    assert h.requests == 1


async def test_deep_json_is_a_decode_error_wrapped_by_its_window() -> None:
    """An unknown field nested 1,000 deep through the client: a LodDecodeError, not
    retried; through iter_results a LodWindowError that is also a LodDecodeError."""
    from lodresults import LodDecodeError, LodWindowError

    deep = b'{"Status": 1, "Results": [{"X": ' + b"[" * 1000 + b"]" * 1000 + b"}]}"
    async with (
        hostile(lambda key: http(200, deep)) as h,
        LodClient(KEY, base_url=h.base_url, rate_limit=None, max_retries=3) as c,
    ):
        with pytest.raises(LodDecodeError):
            await c.results(0, 100)
        assert h.requests == 1
        with pytest.raises(LodDecodeError) as info:
            async for _ in c.iter_results(0, 100):
                pass
    assert isinstance(info.value, LodWindowError) and info.value.start == 0


@pytest.mark.parametrize("steps", [0, 3], ids=["first-step", "later-step"])
async def test_decode_boundary_names_unexpected_errors_without_their_text(steps: int) -> None:
    """A decoder bug (any exception) leaves the transport as a LodDecodeError naming its
    type only: no text, no chain, no traceback below the boundary (they may hold the body)."""
    from lodresults import LodDecodeError
    from lodresults._request.transport import Answer

    def parse(body: bytes) -> Generator[None, None, object]:
        for _ in range(steps):
            yield
        raise KeyError(f"{KEY} {body[:5]!r}")

    t = Transport(check_base_url(BASE), ApiKey(KEY), timeout=1, max_response_bytes=10)
    with pytest.raises(LodDecodeError, match=r"could not be decoded \(KeyError\)") as info:
        await t.decode("Results", Answer(200, b"x" * 10), parse)
    e = info.value
    assert e.__cause__ is None and e.__context__ is None
    assert KEY not in repr(vars(e)) + str(e)
    assert [f.name for f in traceback.extract_tb(e.__traceback__)][-1] == "decode"


async def test_anything_else_aiohttp_raises_is_a_named_lod_error() -> None:
    """A caller's session closed under the client (aiohttp raises RuntimeError): a
    LodConnectionError naming it, not retried, with no chain."""
    session = aiohttp.ClientSession()
    await session.close()
    async with LodClient(KEY, base_url=BASE, session=session, max_retries=3) as c:
        with pytest.raises(LodConnectionError, match="RuntimeError: Session is closed") as info:
            await c.results(0, 100)
    assert not info.value.retryable and info.value.__context__ is None


async def test_one_body_is_decoded_at_a_time() -> None:
    """Decodes of one client never overlap, even though each gives the event loop turns
    between its steps: the peak memory of a long range is then one body's decode, not
    several (benchmarks/memory.py)."""
    from lodresults._request.transport import Answer

    active = peak = 0

    def parse(body: bytes) -> Generator[None, None, int]:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        for _ in range(len(body)):
            yield  # the other decodes get loop turns here: none may start
        active -= 1
        return len(body)

    t = Transport(check_base_url(BASE), ApiKey(KEY), timeout=1, max_response_bytes=10)
    bodies = [b"x" * 5, b"x" * 5, b"{}", b"x" * 5, b"{}"]
    got = await asyncio.gather(*(t.decode("Results", Answer(200, b), parse) for b in bodies))
    assert got == [len(b) for b in bodies]
    assert peak == 1


async def test_a_body_waiting_for_the_decoder_is_not_announced_ready() -> None:
    """``ready`` (which hands the client's slot to the next window) is called only once
    the decoder is free for this body: while decoding is the bottleneck, no more is
    fetched. Then the loop turns once before the decode, so what it started goes first."""
    from lodresults._request.transport import Answer

    gate = asyncio.Event()
    order: list[str] = []

    def slow(body: bytes) -> Generator[None, None, int]:
        while not gate.is_set():
            yield
        return len(body)

    def fast(body: bytes) -> Generator[None, None, int]:
        order.append("decoded")
        return len(body)
        yield

    async def next_window() -> None:
        order.append("next window ran")

    started: list[asyncio.Task[None]] = []

    def ready() -> None:
        order.append("ready")
        started.append(asyncio.ensure_future(next_window()))

    t = Transport(check_base_url(BASE), ApiKey(KEY), timeout=1, max_response_bytes=10)
    first = asyncio.ensure_future(t.decode("Results", Answer(200, b"x" * 9), slow))
    second = asyncio.ensure_future(t.decode("Results", Answer(200, b"{}"), fast, ready))
    for _ in range(20):
        await asyncio.sleep(0)
    assert order == []  # the first body is still decoding: the second waits, unannounced
    gate.set()
    assert await first == 9 and await second == 2
    assert order == ["ready", "next window ran", "decoded"]
    await asyncio.gather(*started)
