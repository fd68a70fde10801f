"""
The only aiohttp code, and the one boundary where server bytes and the key meet our code.

One GET for one command: the ``api_key`` header is built at the moment of sending (never a
session default, never in the URL, and its value a ``str`` whose ``repr`` is ``'***'``);
redirects are refused, never followed (aiohttp would forward a custom header to another
host); the body is counted as it is inflated and refused past ``max_response_bytes``;
every HTTP status but 200 is mapped to the error tree here; decoding errors pass through
here too. Whatever leaves this module is key-free:

- every text that came from the server (error bodies, headers, aiohttp's messages, decode
  excerpts) is scrubbed of every piece of the key in any spelling (``_redact``);
- errors are raised outside ``except`` blocks and with no chain, so no aiohttp exception
  (whose ``request_info`` holds the headers) stays on ``__context__``;
- a decode error's traceback is cut at this boundary, so no frame that held the raw body
  is reachable from it, and no local of the frames that remain holds a body or a header.

Knows no records, no retries, no windows.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Final, Generic, TypeVar

import aiohttp
import attrs
from yarl import URL

from lodresults._exceptions import (
    LodAuthError,
    LodConnectionError,
    LodDecodeError,
    LodError,
    LodInvalidArgument,
    LodRateLimitError,
    LodRedirectError,
    LodResponseTooLarge,
    LodServerError,
    LodStatusError,
    LodTimeoutError,
)
from lodresults._redact import Redactor
from lodresults._retry import parse_retry_after

__all__ = ["Answer", "ApiKey", "Transport", "check_base_url", "is_loopback"]

T = TypeVar("T")

_CHUNK: Final = 1 << 16
#: An error body is read this far at most (only an excerpt of it is shown).
_ERROR_BODY_BYTES: Final = 1 << 16
#: Scrubbed before the excerpt is cut: longer than any spelling of a key (≤ 150 chars).
_SCRUB_CHARS: Final = 4096
_EXCERPT: Final = 200
_TEXT: Final = 300
#: Bodies larger than this are decoded on a worker thread (about 2,000 records).
_THREAD_DECODE_BYTES: Final = 1 << 20


class _Secret(str):
    """The key as the header value: a ``str`` whose ``repr`` hides it (dict reprs, locals)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "'***'"

    def __reduce__(self) -> str:
        raise TypeError("the api_key cannot be pickled")


class ApiKey:
    """
    Holds the key; ``str``/``repr`` show ``***`` so it cannot leak by formatting.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        problem = _key_problem(value)
        if problem is not None:
            del value  # not a local of the frame the error's traceback shows
            raise LodInvalidArgument(problem)
        self._value = _Secret(value)

    @classmethod
    def checked(cls, value: object) -> ApiKey | LodInvalidArgument:
        """
        The key, or the error to raise once the caller has dropped its own plain-text
        copy (``del``): raised from here, the caller's frame would still hold the key as
        a local, and a traceback formatted with locals would show it.
        """
        problem = _key_problem(value)
        return cls(value) if problem is None else LodInvalidArgument(problem)  # type: ignore[arg-type]

    def reveal(self) -> str:
        """The key itself, for the one header that carries it (its ``repr`` is ``'***'``)."""
        return self._value

    def redactor(self) -> Redactor:
        """A ``Redactor`` that removes every piece of this key from a text."""
        return Redactor(self._value)

    def __repr__(self) -> str:
        return "ApiKey('***')"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("ApiKey cannot be pickled")


def _key_problem(value: object) -> str | None:
    if not isinstance(value, str) or not value.strip():
        return "api_key must be a non-empty string"
    if any(c in value for c in "\r\n\0"):
        return "api_key contains a control character"
    return None


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
class Answer:
    """A 200 answer: its (inflated) body, kept out of ``repr`` (it may echo the key)."""

    status: int
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")


@attrs.frozen
class _Reply:
    """Any HTTP answer, its header values already scrubbed."""

    status: int
    body: bytes = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    retry_after: str | None
    location: str | None


@attrs.frozen
class _Failed(Generic[T]):
    """An error built where an exception was being handled, to be raised outside it."""

    error: LodError


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
        self._redact = api_key.redactor()
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._max_bytes = max_response_bytes
        self._session = session
        self._owns_session = session is None
        self._user_agent = user_agent
        # One body decoded at a time: decodes that overlap (several worker threads, or one
        # beside the event loop) each hold a body's wire structs and records, and the peak
        # is then their sum, reached more often the longer the range (benchmarks/memory.py).
        self._decoding = asyncio.Lock()

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

    async def get(self, command: str, params: Mapping[str, str]) -> Answer:
        """
        One GET answered with HTTP 200.

        Raises ``LodConnectionError``, ``LodTimeoutError``, ``LodResponseTooLarge``, or the
        ``LodStatusError`` family for any other status (3xx is ``LodRedirectError``).
        """
        try:
            reply = await self._exchange(command, params)
        except asyncio.CancelledError as exc:
            message = exc.args
            cancelled = True
        else:
            cancelled = False
        if cancelled:
            # A fresh one, raised here: the frames of the cancelled exchange held the
            # response (its headers, part of its body), and they would be on the
            # traceback of the original, and on __context__ of a caller's TimeoutError.
            raise asyncio.CancelledError(*message)
        if isinstance(reply, _Failed):
            raise reply.error
        if reply.status != 200:
            raise self._status_error(command, reply)
        return Answer(reply.status, reply.body)

    async def decode(self, command: str, answer: Answer, parse: Callable[[bytes], T]) -> T:
        """
        ``parse(answer.body)``, on a worker thread for large bodies; a ``LodError`` it
        raises comes out scrubbed, with no chain and a traceback starting here.
        """
        async with self._decoding:
            if len(answer.body) > _THREAD_DECODE_BYTES:
                # Decoding 100,000 records takes most of a second: on a worker thread the
                # event loop keeps serving the application's other tasks meanwhile.
                outcome = await asyncio.to_thread(_attempt, parse, answer.body, command)
            else:
                outcome = _attempt(parse, answer.body, command)
        if isinstance(outcome, _Failed):
            raise self._clean(outcome.error)
        return outcome

    async def _exchange(self, command: str, params: Mapping[str, str]) -> _Reply | _Failed[Any]:
        """The HTTP exchange. Never raises a LodError: returns it, to be raised outside."""
        session = self._session_now()
        try:
            async with session.get(
                self.url_for(command),
                params=dict(params),
                headers={
                    "api_key": self._key.reveal(),
                    "Accept": "application/json",
                    "Accept-Encoding": "gzip, deflate",
                    "User-Agent": self._user_agent,
                },
                allow_redirects=False,
                raise_for_status=False,
                timeout=self._timeout,
                # Inflate here whatever the session says, so that the cap counts the
                # inflated bytes (Content-Length counts the compressed ones).
                auto_decompress=True,
            ) as resp:
                if resp.status == 200:
                    body = await self._read(resp, self._max_bytes)
                    if body is None:
                        return _Failed(self._too_large(command, resp))
                else:
                    body = await self._read(resp, _ERROR_BODY_BYTES, truncate=True) or b""
                return _Reply(
                    status=resp.status,
                    body=body,
                    retry_after=self._header(resp, "Retry-After"),
                    location=self._header(resp, "Location"),
                )
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            return _Failed(
                LodTimeoutError(
                    f"{command}: no complete answer within {self._timeout.total} s",
                    command=command,
                )
            )
        except aiohttp.ClientPayloadError as exc:
            return _Failed(
                LodConnectionError(
                    f"{command}: response body cut short ({self._describe(exc)})",
                    command=command,
                )
            )
        except (aiohttp.ClientSSLError, aiohttp.ClientConnectorCertificateError) as exc:
            return _Failed(
                LodConnectionError(
                    f"{command}: TLS failure ({self._describe(exc)})",
                    command=command,
                    retryable=False,
                )
            )
        except (aiohttp.ClientError, OSError) as exc:
            return _Failed(
                LodConnectionError(
                    f"{command}: connection failed ({self._describe(exc)})", command=command
                )
            )
        except Exception as exc:  # anything else aiohttp may raise: named, not chained
            return _Failed(
                LodConnectionError(
                    f"{command}: request failed ({self._describe(exc)})",
                    command=command,
                    retryable=False,
                )
            )

    @staticmethod
    async def _read(
        resp: aiohttp.ClientResponse, limit: int, *, truncate: bool = False
    ) -> bytes | None:
        """
        The inflated body, or None once it passes ``limit`` (the rest is not read).

        With ``truncate``, the first ``limit`` bytes instead. aiohttp inflates as the
        chunks are read, so memory stays within ``limit`` plus one chunk.
        """
        length = resp.content_length
        encoding = resp.headers.get("Content-Encoding", "identity").strip().lower()
        if length is not None and length > limit and not truncate:
            return None  # refused before reading
        if length is not None and encoding in ("", "identity") and length <= limit:
            return await resp.read()  # exactly ``length`` bytes, in one call
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_chunked(_CHUNK):
            size += len(chunk)
            chunks.append(chunk)
            if size > limit:
                if not truncate:
                    return None
                break
        return b"".join(chunks)[:limit]

    def _header(self, resp: aiohttp.ClientResponse, name: str) -> str | None:
        value = resp.headers.get(name)
        return None if value is None else self._redact.text(value[:_TEXT])

    def _too_large(self, command: str, resp: aiohttp.ClientResponse) -> LodResponseTooLarge:
        length = resp.content_length
        if length is not None and length > self._max_bytes:
            what = f"response of {length} bytes (Content-Length) exceeds"
        else:
            what = "response body (counted inflated) exceeds"
        return LodResponseTooLarge(
            f"{command}: {what} max_response_bytes={self._max_bytes}; stopped reading",
            command=command,
        )

    def _describe(self, exc: BaseException) -> str:
        # str() only: repr() of aiohttp's response errors includes the request headers,
        # and str() may quote what the server sent (a bad status line, a header).
        text = self._redact.text(str(exc)[:_SCRUB_CHARS])[:_TEXT]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _excerpt(self, body: bytes) -> str:
        # Scrubbed before it is cut: a cut could leave a piece too short to recognise.
        text = body[: _SCRUB_CHARS * 4].decode("utf-8", "replace")[:_SCRUB_CHARS]
        return self._redact.text(text)[:_EXCERPT].strip()

    def _status_error(self, command: str, reply: _Reply) -> LodStatusError:
        """The error for an HTTP status other than 200 (its texts scrubbed)."""
        status = reply.status
        excerpt = self._excerpt(reply.body)
        detail = f": {excerpt!r}" if excerpt else ""
        if 300 <= status < 400:
            return LodRedirectError(
                f"{command}: HTTP {status} redirect to {self._target(reply.location)} refused; "
                "redirects are never followed so the api_key cannot leave the configured "
                "host. Fix base_url",
                status=status,
                command=command,
            )
        if status in (401, 403):
            return LodAuthError(
                f"{command}: HTTP {status}: the api_key was refused{detail}",
                status=status,
                command=command,
            )
        if status == 429:
            ra = parse_retry_after(reply.retry_after)
            return LodRateLimitError(
                f"{command}: HTTP 429 rate limited"
                + (f" (Retry-After {ra:.1f} s)" if ra is not None else ""),
                command=command,
                retry_after=ra,
            )
        if status == 408 or status >= 500:
            return LodServerError(
                f"{command}: HTTP {status}{detail}", status=status, command=command
            )
        return LodStatusError(f"{command}: HTTP {status}{detail}", status=status, command=command)

    def _target(self, location: str | None) -> str:
        """Where a redirect pointed: its origin only (a path or query may carry anything)."""
        if not location:
            return "(no Location)"
        try:
            url = URL(location)
            host = url.host
            port = url.explicit_port
        except (ValueError, TypeError):
            return "(invalid Location)"
        if not host:
            return "(same host)"
        # A protocol-relative "//host/path" keeps our scheme.
        scheme = url.scheme or self.base_url.scheme
        origin = f"{scheme}://{host}" + (f":{port}" if port is not None else "")
        return self._redact.text(origin)

    def _clean(self, error: LodError) -> LodError:
        """A decode error as it may leave: scrubbed, no chain, no traceback below here."""
        self._redact.error(error)
        error.__cause__ = None
        error.__context__ = None
        error.__suppress_context__ = False
        return error.with_traceback(None)

    async def close(self) -> None:
        """Close the session if this transport created it."""
        if self._owns_session and self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _attempt(parse: Callable[[bytes], T], body: bytes, command: str) -> T | _Failed[Any]:
    """``parse(body)``, or the error it raised, returned (not raised) to the boundary."""
    try:
        return parse(body)
    except LodError as exc:
        return _Failed(exc)
    except Exception as exc:
        # Not expected from the decoders (they raise LodDecodeError): named, never
        # quoted, and its traceback dropped, since both may hold a piece of the body.
        return _Failed(
            LodDecodeError(
                f"{command}: the body could not be decoded ({type(exc).__name__})",
                command=command,
            )
        )
