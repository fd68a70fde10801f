"""
The only aiohttp code, and the one boundary where server bytes and the key meet our code.

One GET for one command: the ``api_key`` header is built at the moment of sending (never a
session default, never in the URL, and its value a ``str`` whose ``repr`` is ``'***'``);
redirects are refused, never followed (aiohttp would forward a custom header to another
host); the body is counted as it is inflated and refused past ``max_response_bytes``;
every HTTP status but 200 is mapped to the error tree here (by ``_status``); decoding
errors pass through here too. The key itself and the check of where it may go are
``_key``'s. Whatever leaves this module is key-free:

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
import os
import socket
from collections.abc import Callable, Generator, Mapping
from typing import Any, Final, Generic, TypeVar

import aiohttp
import attrs
from yarl import URL

from lodresults._exceptions import (
    EXCERPT_CHARS,
    LodConnectionError,
    LodDecodeError,
    LodError,
    LodInvalidArgument,
    LodResponseTooLarge,
    LodStatusError,
    LodTimeoutError,
)
from lodresults._request.key import ApiKey, check_proxy
from lodresults._request.status import origin_of, status_error
from lodresults._version import USER_AGENT

__all__ = ["Answer", "Transport"]

T = TypeVar("T")

_CHUNK: Final = 1 << 16
#: An error body is read this far at most (only an excerpt of it is shown).
_ERROR_BODY_BYTES: Final = 1 << 16
#: Scrubbed before the excerpt is cut: longer than any spelling of a key (≤ 150 chars).
_SCRUB_CHARS: Final = 4096
_TEXT: Final = 300
#: A body read past this many bytes holds one of ``_LARGE_BODIES`` permits until it is
#: decoded: the bodies held at once are then at most that many, however many requests
#: are in flight (``max_concurrency`` x ``max_response_bytes`` otherwise).
_LARGE_BODY_BYTES: Final = 8 << 20
_LARGE_BODIES: Final = 2


class _Permit:
    """A claim on one of the large-body permits, released once (idempotent)."""

    __slots__ = ("_held", "_pool")

    def __init__(self, pool: asyncio.Semaphore) -> None:
        self._pool = pool
        self._held = False

    async def take(self) -> None:
        if not self._held:
            await self._pool.acquire()
            self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._pool.release()


@attrs.frozen
class Answer:
    """
    A 200 answer: its (inflated) body, kept out of ``repr`` (it may echo the key), and
    its ``Date`` header (the server's clock), if any.
    """

    status: int
    body: bytes | bytearray = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    date: str | None = None
    #: Held while the body is large, until it has been decoded.
    permit: _Permit | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class _Reply:
    """Any HTTP answer, its header values already scrubbed."""

    status: int
    body: bytes | bytearray = attrs.field(repr=lambda b: f"<{len(b)} bytes>")
    retry_after: str | None
    location: str | None
    date: str | None = None
    permit: _Permit | None = attrs.field(default=None, repr=False, eq=False)


@attrs.frozen
class _Failed(Generic[T]):
    """An error built where an exception was being handled, to be raised outside it."""

    error: LodError


@attrs.frozen
class _Done(Generic[T]):
    """The value a decode in steps returned."""

    value: T


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
        user_agent: str = USER_AGENT,
        pool_size: int = 100,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> None:
        if session is not None and not isinstance(session, aiohttp.ClientSession):
            raise LodInvalidArgument("session must be an aiohttp.ClientSession or None")
        limit = session.connector.limit if session is not None and session.connector else 0
        if 0 < limit < pool_size:
            raise LodInvalidArgument(
                f"the session's connector holds {limit} connections, fewer than "
                f"max_concurrency={pool_size}: requests would wait for a connection inside "
                "their timeout. Raise its limit or lower max_concurrency"
            )
        # The proxy is resolved here, once, and passed with every request (the session
        # itself never reads the environment): one place checks where the key may go.
        trust = trust_env or (session is not None and session.trust_env)
        self._proxy, self._proxy_headers = proxy_for(base_url, proxy, trust_env=trust)
        self._pool_size = pool_size
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
        self._large_bodies = asyncio.Semaphore(_LARGE_BODIES)

    def _session_now(self) -> aiohttp.ClientSession:
        # Created lazily: a ClientSession needs a running event loop.
        if self._session is None:
            # One connection per request in flight: the client's own semaphore holds
            # requests to max_concurrency, so none ever waits for the pool.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._pool_size, enable_cleanup_closed=True),
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
        return Answer(reply.status, reply.body, reply.date, reply.permit)

    async def decode(
        self,
        command: str,
        answer: Answer,
        parse: Callable[[bytes | bytearray], Generator[None, None, T]],
        ready: Callable[[], None] | None = None,
    ) -> T:
        """
        ``parse(answer.body)``, a decode in steps (a generator that yields between steps
        and returns the value), run on the event loop with a turn for the loop's other
        tasks after each step: a large body never holds the loop for long (a step is a
        slice of records; a worker thread would not help, as the decoders hold the GIL).
        A ``LodError`` it raises comes out scrubbed, with no chain and a traceback
        starting here.

        ``ready`` is called when this body is next (the client's decoder is free), and the
        event loop then runs one turn before the decode starts, so what ``ready`` started
        (the next request) goes out first. Bodies waiting for the decoder wait unannounced:
        while decoding is the bottleneck, nothing more is fetched.
        """
        try:
            async with self._decoding:
                if ready is not None:
                    ready()
                # A turn before the first step too: the read that completed this body (aiohttp
                # joins its chunks) ran in this same turn of the loop.
                await asyncio.sleep(0)
                steps = parse(answer.body)
                try:
                    # A turn for the loop's other tasks, not a wait:
                    while (outcome := _step(steps, command)) is None:  # noqa: ASYNC110
                        await asyncio.sleep(0)
                finally:
                    steps.close()
        finally:
            if answer.permit is not None:
                answer.permit.release()
        if isinstance(outcome, _Failed):
            raise self._clean(outcome.error)
        return outcome.value

    async def _exchange(self, command: str, params: Mapping[str, str]) -> _Reply | _Failed[Any]:
        """The HTTP exchange. Never raises a LodError: returns it, to be raised outside."""
        session = self._session_now()
        permit: _Permit | None = _Permit(self._large_bodies)
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
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
                # Inflate here whatever the session says, so that the cap counts the
                # inflated bytes (Content-Length counts the compressed ones).
                auto_decompress=True,
            ) as resp:
                if resp.status == 200:
                    body = await self._read(resp, self._max_bytes, permit=permit)
                    if body is None:
                        return _Failed(self._too_large(command, resp))
                else:
                    body = await self._read(resp, _ERROR_BODY_BYTES, truncate=True) or bytearray()
                reply = _Reply(
                    status=resp.status,
                    body=body,
                    retry_after=self._header(resp, "Retry-After"),
                    location=self._header(resp, "Location"),
                    date=self._header(resp, "Date"),
                    permit=permit,
                )
                permit = None  # handed on with the body (released once it is decoded)
                return reply
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
        except aiohttp.ClientConnectorError as exc:
            return _Failed(self._connect_error(command, exc))
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
        finally:
            if permit is not None:  # not handed on: failed, or cancelled
                permit.release()

    @staticmethod
    async def _read(
        resp: aiohttp.ClientResponse,
        limit: int,
        *,
        truncate: bool = False,
        permit: _Permit | None = None,
    ) -> bytearray | None:
        """
        The inflated body, or None once it passes ``limit`` (the rest is not read).

        With ``truncate``, the first ``limit`` bytes instead. aiohttp inflates as the
        chunks are read, so memory stays within ``limit`` plus one chunk. ``permit`` is
        taken before more than ``_LARGE_BODY_BYTES`` are read.

        The body grows chunk by chunk in one ``bytearray`` (every reader of a body takes
        any bytes-like object): joining the chunks at the end (``resp.read()``) copies a
        48 MB body into fresh memory in one step of the loop, 35 ms here, most of it the
        kernel mapping the new pages; grown as it arrives, that cost is spread over the
        reads.
        """
        length = resp.content_length
        if length is not None and length > limit and not truncate:
            return None  # refused before reading
        if permit is not None and length is not None and length > _LARGE_BODY_BYTES:
            await permit.take()
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if permit is not None and len(body) > _LARGE_BODY_BYTES:
                await permit.take()
            if len(body) > limit:
                if not truncate:
                    return None
                del body[limit:]
                break
        return body

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

    def _connect_error(self, command: str, exc: aiohttp.ClientConnectorError) -> LodError:
        """
        No connection: the host and port and the system's reason, in plain words (aiohttp's
        text names its own connection key, "ssl:default"). A name that does not resolve is
        not retried: it will not resolve on the next attempt either; a resolver that says
        its failure is temporary (EAI_AGAIN) is.
        """
        where = f"{exc.host}:{exc.port}"
        reason = _os_reason(exc.os_error)
        if isinstance(exc, aiohttp.ClientConnectorDNSError):
            temporary = getattr(exc.os_error, "errno", None) == socket.EAI_AGAIN
            return LodConnectionError(
                f"{command}: cannot resolve host {exc.host} ({reason})",
                command=command,
                retryable=temporary,
            )
        return LodConnectionError(
            f"{command}: cannot connect to {where} ({reason})", command=command
        )

    def _describe(self, exc: BaseException) -> str:
        # str() only: repr() of aiohttp's response errors includes the request headers,
        # and str() may quote what the server sent (a bad status line, a header).
        text = self._redact.text(str(exc)[:_SCRUB_CHARS])[:_TEXT]
        return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

    def _excerpt(self, body: bytes | bytearray) -> str:
        # Scrubbed before it is cut: a cut could leave a piece too short to recognise.
        text = body[: _SCRUB_CHARS * 4].decode("utf-8", "replace")[:_SCRUB_CHARS]
        return self._redact.text(text)[:EXCERPT_CHARS].strip()

    def _status_error(self, command: str, reply: _Reply) -> LodStatusError:
        """The error for an HTTP status other than 200 (its texts scrubbed)."""
        return status_error(
            command,
            reply.status,
            excerpt=self._excerpt(reply.body),
            retry_after=reply.retry_after,
            target=origin_of(reply.location, self.base_url.scheme, scrub=self._redact.text),
            base_url=str(self.base_url),
        )

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


def _os_reason(error: OSError) -> str:
    """The system's words for ``error`` ("Connection refused"), without aiohttp's decoration."""
    code = error.errno
    if isinstance(error, socket.gaierror) and error.strerror:
        return error.strerror
    if isinstance(code, int) and code > 0:
        return os.strerror(code)
    return type(error).__name__


def proxy_for(
    base_url: URL, proxy: str | None, *, trust_env: bool
) -> tuple[URL | None, dict[str, str] | None]:
    """
    The proxy for ``base_url``: ``proxy``, else with ``trust_env`` the one the
    environment names (``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``, as aiohttp reads
    them), checked by ``check_proxy``; and the headers with its credentials, if any.

    Credentials travel in the ``Proxy-Authorization`` header, never in the URL:
    aiohttp's error messages quote the proxy URL, and the password must not reach ours.
    """
    login: tuple[str, str] | None = None
    if proxy is None and trust_env:
        try:
            found, auth = aiohttp.helpers.get_env_proxy_for_url(base_url)
        except LookupError:
            return None, None
        proxy = str(found)
        login = None if auth is None else (auth.login, auth.password)
    url = check_proxy(base_url, proxy)
    if url is not None and url.user is not None:
        login = (url.user, url.password or "")
        url = url.with_user(None)
    if login is None:
        return url, None
    return url, {"Proxy-Authorization": aiohttp.encode_basic_auth(*login)}


def _step(steps: Generator[None, None, T], command: str) -> _Done[T] | _Failed[Any] | None:
    """
    One step of a decode: None if more follow, else its value or the error it raised,
    returned (not raised) to the boundary.
    """
    try:
        next(steps)
    except StopIteration as done:
        return _Done(done.value)
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
    return None
