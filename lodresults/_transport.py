"""
The only aiohttp code: one HTTP GET for one command, with the key handled safely.

It sends the ``api_key`` header built at the moment of sending (never a session default,
never in the URL), refuses redirects instead of following them (aiohttp would forward a
custom header to another host), caps the body size, and maps every aiohttp error to a
key-free ``LodError`` without chaining it (aiohttp's ``repr`` of some errors shows the
request headers). Knows no records, no retries, no windows.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Mapping
from typing import Final

import aiohttp
import attrs
from yarl import URL

from lodresults._exceptions import (
    LodConnectionError,
    LodInvalidArgument,
    LodResponseTooLarge,
    LodTimeoutError,
)

__all__ = ["ApiKey", "RawResponse", "Transport", "check_base_url", "is_loopback"]

_CHUNK: Final = 1 << 20


class ApiKey:
    """
    Holds the key; ``str``/``repr`` show ``***`` so it cannot leak by formatting.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str) or not value.strip():
            raise LodInvalidArgument("api_key must be a non-empty string")
        if any(c in value for c in "\r\n\0"):
            raise LodInvalidArgument("api_key contains a control character")
        self._value = value

    def reveal(self) -> str:
        """The key itself, for the one header that carries it."""
        return self._value

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("ApiKey cannot be pickled")


def is_loopback(host: str | None) -> bool:
    """True for ``localhost`` and addresses in 127.0.0.0/8 or ``::1``."""
    if not host:
        return False
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(base_url: str) -> URL:
    """
    Validate where the key will be sent: https, or plain http only to a loopback host.
    """
    if not isinstance(base_url, str):
        raise LodInvalidArgument("base_url must be a string")
    url = URL(base_url)
    if url.scheme not in ("https", "http") or not url.host:
        raise LodInvalidArgument(f"base_url must be an absolute https:// URL, got {base_url!r}")
    if url.scheme == "http" and not is_loopback(url.host):
        raise LodInvalidArgument(
            "base_url uses plain http:// to a non-loopback host; the api_key would travel "
            "unencrypted. Use https:// (http:// is allowed for localhost only)"
        )
    if url.user or url.password or url.query_string or url.fragment:
        raise LodInvalidArgument(
            "base_url must not carry credentials, a query or a fragment; pass the key as api_key"
        )
    return url.with_path(url.path.rstrip("/"))


@attrs.frozen
class RawResponse:
    """The parts of an HTTP answer the client needs: status, body, two headers."""

    status: int
    body: bytes
    retry_after: str | None = None
    location: str | None = None


class Transport:
    """
    Sends one GET per call over one ``aiohttp.ClientSession`` (owned or borrowed).
    """

    def __init__(
        self,
        base_url: URL,
        api_key: ApiKey,
        *,
        timeout: float,
        max_response_bytes: int,
        session: aiohttp.ClientSession | None = None,
        user_agent: str = "lodresults",
    ) -> None:
        self.base_url = base_url
        self._key = api_key
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_response_bytes
        self._session = session
        self._owns_session = session is None
        self._user_agent = user_agent

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession needs a running event loop.
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=100, enable_cleanup_closed=True),
                auto_decompress=True,
                trust_env=False,
            )
        return self._session

    def url_for(self, command: str) -> URL:
        """The absolute URL of ``command`` below the base URL."""
        return self.base_url.with_path(f"{self.base_url.path}/{command}")

    async def get(self, command: str, params: Mapping[str, str]) -> RawResponse:
        """
        One GET; raises ``LodConnectionError``, ``LodTimeoutError`` or ``LodResponseTooLarge``.
        """
        session = self._session_now()
        headers = {
            "api_key": self._key.reveal(),
            "Accept": "application/json",
            "Accept-Encoding": "gzip, deflate",
            "User-Agent": self._user_agent,
        }
        try:
            async with session.get(
                self.url_for(command),
                params=dict(params),
                headers=headers,
                allow_redirects=False,
                raise_for_status=False,
                timeout=self._timeout,
            ) as resp:
                length = resp.content_length
                if length is not None and length > self._max_bytes:
                    raise LodResponseTooLarge(
                        f"{command}: response of {length} bytes exceeds max_response_bytes="
                        f"{self._max_bytes}",
                        command=command,
                    )
                if length is not None:
                    # Size known and within the cap: one read (aiohttp checks the length).
                    body = await resp.read()
                else:
                    body = await self._read_capped(resp, command)
                return RawResponse(
                    status=resp.status,
                    body=body,
                    retry_after=resp.headers.get("Retry-After"),
                    location=resp.headers.get("Location"),
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            raise LodTimeoutError(
                f"{command}: no complete answer within {self._timeout.total} s", command=command
            ) from None
        except aiohttp.ClientPayloadError as exc:
            raise LodConnectionError(
                f"{command}: response body cut short ({_describe(exc)})", command=command
            ) from None
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            raise LodConnectionError(
                f"{command}: TLS failure ({_describe(exc)})", command=command, retryable=False
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise LodConnectionError(
                f"{command}: connection failed ({_describe(exc)})", command=command
            ) from None

    async def _read_capped(self, resp: aiohttp.ClientResponse, command: str) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self._max_bytes:
                raise LodResponseTooLarge(
                    f"{command}: response exceeds max_response_bytes={self._max_bytes}; "
                    "stopped reading",
                    command=command,
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def close(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _describe(exc: BaseException) -> str:
    # str() only: repr() of aiohttp's response errors includes the request headers.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
