"""
The simulator's knobs: the faults it injects and how, the documented rules it bends
(``Sloppiness``), and what it records (``RequestLog``, ``SimulatorStats``).
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import time
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs
import orjson
from aiohttp import web

__all__ = [
    "FAULT_KINDS",
    "TRANSIENT_FAULT_KINDS",
    "Faults",
    "RequestLog",
    "SimulatorStats",
    "Sloppiness",
    "fault_response",
    "json_response",
]

#: Every fault the simulator can inject.
FAULT_KINDS: Final = (
    "http500",  # 500 with an HTML body
    "http502",  # 502 with an HTML body
    "http503",  # 503 with an HTML body and Retry-After
    "http429",  # 429 with Retry-After in seconds, regardless of the rate limit
    "http429_date",  # 429 with Retry-After as an HTTP-date
    "reset",  # connection closed before any response
    "reset_body",  # headers and part of the body, then the connection is closed
    "truncate",  # Content-Length says more than is sent
    "malformed",  # 200 with a body that is not JSON
    "slow",  # answers after ``slow_seconds`` (past a short client timeout)
    "status0",  # 200 with Status 0 and an error text (not transient for a client)
)

#: The faults another attempt can get past (all but the permanent ``status0``).
TRANSIENT_FAULT_KINDS: Final = tuple(k for k in FAULT_KINDS if k != "status0")

_HTML = (
    b"<!DOCTYPE html><html><head><title>{code}</title></head>"
    b"<body><h1>{code}</h1><p>The service is temporarily unavailable.</p></body></html>"
)


@attrs.define
class Faults:
    """
    Injected faults: each request fails with probability ``rate``, with a kind drawn from
    ``kinds`` (the transient ones unless told: ``status0`` is permanent for a client, so it
    is drawn only when named). Seeded by the request itself (command, parameters, how many
    times it was asked before), so a run is reproducible whatever the order requests
    arrive in.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = TRANSIENT_FAULT_KINDS
    slow_seconds: float = 2.0
    retry_after: str = "1"

    def __attrs_post_init__(self) -> None:
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}; choose from {FAULT_KINDS}")
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError("fault rate must be within 0..1")


@attrs.define
class Sloppiness:
    """
    A server that bends the documented rules, as real ones do.

    Args:
        duplicate_rate: Share of the ended labs in a ``Results`` answer that also appear as
            a running copy (the lab as it was at its start), before or after the ended one.
        skew: Seconds the ``Results`` filter is off by: it matches ``[start + skew,
            end + skew]`` instead of the range asked for.
        everywhere: Ids every ``Results`` answer includes, wherever their times lie.
    """

    duplicate_rate: float = 0.0
    skew: int = 0
    everywhere: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.duplicate_rate <= 1.0:
            raise ValueError("duplicate_rate must be within 0..1")


@attrs.frozen
class RequestLog:
    """One request as the simulator saw it (headers included, for leak tests)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    arrived: float
    status: int | None
    fault: str | None


@attrs.define
class SimulatorStats:
    """Counters the tests and benchmarks read."""

    requests: collections.Counter[str] = attrs.field(factory=collections.Counter)
    faults: collections.Counter[str] = attrs.field(factory=collections.Counter)
    throttled: int = 0
    unauthorized: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    arrivals: list[float] = attrs.field(factory=list)

    @property
    def total(self) -> int:
        """All requests received."""
        return sum(self.requests.values())

    def max_rate(self, window: float = 1.0) -> float:
        """The most requests that arrived within any ``window`` seconds, per second."""
        best = 0
        times = sorted(self.arrivals)
        j = 0
        for i, t in enumerate(times):
            while t - times[j] > window:
                j += 1
            best = max(best, i - j + 1)
        return best / window


def json_response(
    doc: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """``doc`` as a JSON response."""
    return web.Response(
        status=status,
        body=orjson.dumps(doc),
        content_type="application/json",
        headers=headers,
    )


async def fault_response(
    request: web.Request,
    kind: str,
    faults: Faults,
    *,
    echo_headers: bool,
    answer: Callable[[], web.Response],
) -> web.StreamResponse | None:
    """
    The response of the injected fault ``kind`` (``answer()``: the response it spoils),
    or None once the connection was dropped.
    """
    if kind in ("http500", "http502", "http503"):
        code = int(kind[4:])
        headers = {"Retry-After": faults.retry_after} if code == 503 else {}
        body = _HTML.replace(b"{code}", str(code).encode())
        if echo_headers:
            dump = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
            body += f"<pre>{dump}</pre>".encode()
        return web.Response(status=code, body=body, content_type="text/html", headers=headers)
    if kind in ("http429", "http429_date"):
        value = faults.retry_after
        if kind == "http429_date":
            value = email.utils.formatdate(time.time() + float(value), usegmt=True)
        return json_response(
            {"Error": "Too many requests", "Status": 0},
            status=429,
            headers={"Retry-After": value},
        )
    if kind == "status0":
        return json_response({"Error": "An internal error occurred. (sim)", "Status": 0})
    if kind == "malformed":
        return web.Response(
            status=200,
            body=b'{"Results": [{"LabInstanceId": 1,,',
            content_type="application/json",
        )
    if kind == "slow":
        await asyncio.sleep(faults.slow_seconds)
        return answer()
    transport = request.transport
    if kind == "reset":
        if transport is not None:
            transport.abort()
        return None
    # truncate / reset_body: promise the whole body, send part of it, hang up.
    full = answer().body
    assert isinstance(full, bytes)
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
    response.content_length = len(full) + (0 if kind == "reset_body" else 100)
    await response.prepare(request)
    await response.write(full[: max(1, len(full) // 2)])
    if transport is not None:
        transport.abort() if kind == "reset_body" else transport.close()
    return response
