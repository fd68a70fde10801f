"""Transport units with aioresponses: headers, no redirects, error mapping, size cap."""

from __future__ import annotations

import asyncio
import re

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
from lodresults._transport import ApiKey, Transport, check_base_url, is_loopback

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
    assert info.value.__suppress_context__
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
