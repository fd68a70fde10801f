"""
The simulator: a real ``aiohttp.web`` server that answers Result, Results and LatestResults.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import math
import random
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

import attrs
import orjson
from aiohttp import web

from lodresults._clock import ManualClock
from lodresults._windows import TimeLike, to_epoch
from lodresults.testing._dataset import Dataset, Lab, generate_labs

__all__ = [
    "FAULT_KINDS",
    "TRANSIENT_FAULT_KINDS",
    "Faults",
    "ManualClock",
    "RequestLog",
    "Simulator",
    "SimulatorStats",
    "Sloppiness",
]

SEVEN_DAYS: Final = 7 * 24 * 3600
TOO_LONG_TEXT: Final = "Timeframe cannot exceed 7 days"

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


class Simulator:
    """
    A local Lab on Demand API for tests, demos and benchmarks, with fault knobs.

    ``async with Simulator(seed=1) as sim:`` serves on an ephemeral loopback port;
    ``sim.base_url`` and ``sim.api_key`` are what a client needs, and ``sim.between(a, b)``
    / ``sim.ids_between(a, b)`` give the ground truth for a range.

    The data lives on the simulator's ``clock`` (real time unless told): generated labs
    start, run (``End: null``, status 3), end, and exams are graded some time after they
    end (status 50 meanwhile). Every answer shows each lab as it is at that moment; the
    ground-truth methods answer as of the clock too. With a ``ManualClock`` a test moves
    time itself.

    Args:
        seed: Seeds the dataset and the fault draws.
        api_key: The key the server accepts (others get 401).
        labs_per_day: Density of the generated dataset.
        span: ``(start, end)`` epoch seconds of the generated labs' starts (may reach into
            the future: those labs start as the clock gets there); default the two years
            up to now.
        records: Use these instead of generating: ``Lab`` objects (living) or wire-shape
            dicts (fixed, shown as given whatever the time).
        clock: Epoch seconds now (``time.time`` by default; or a ``ManualClock``), also
            for the rate limit and arrival times: share a ``ManualClock`` with the client
            to test pacing in virtual time.
        sloppy: Bend the rules as real servers do (see ``Sloppiness``).
        latency: Seconds added before every answer.
        rate_limit: Requests per second allowed per key (token bucket, ``burst`` deep);
            beyond it, 429 with Retry-After.
        retry_after_format: ``"seconds"`` or ``"http-date"`` for the 429's Retry-After.
        faults: Random injected faults (see ``Faults``).
        fail_range: ``(a, b)``: every Results request overlapping it fails, forever.
        fail_kind: How requests in ``fail_range`` fail (a ``FAULT_KINDS`` name; 500 by default).
        strict_seven_days: Refuse a range of exactly 7 days too (the documents allow both
            readings of "cannot exceed 7 days").
        max_window_seconds: The longest range Results accepts.
        redirect_to: Answer every request with a 307 to this origin (leak tests).
        compress: gzip answers for clients that accept it.
        echo_headers: 5xx fault bodies quote the request headers, as some debugging
            proxies do (tests that error texts never show the key).
        log_requests: Keep a ``RequestLog`` of each request in ``sim.log``.
        host, port: Where to listen (loopback, ephemeral port by default).
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        api_key: str = "sim-api-key-0123456789",
        labs_per_day: float = 40.0,
        span: tuple[int, int] | None = None,
        records: Iterable[Mapping[str, Any] | Lab] | None = None,
        clock: Callable[[], float] = time.time,
        sloppy: Sloppiness | None = None,
        latency: float = 0.0,
        rate_limit: float | None = None,
        burst: int = 1,
        retry_after_format: str = "seconds",
        faults: Faults | None = None,
        fail_range: tuple[int, int] | None = None,
        fail_kind: str = "http500",
        strict_seven_days: bool = False,
        max_window_seconds: int = SEVEN_DAYS,
        redirect_to: str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        base_path: str = "/api/v3",
        log_requests: bool = True,
        compress: bool = False,
        echo_headers: bool = False,
    ) -> None:
        if retry_after_format not in ("seconds", "http-date"):
            raise ValueError("retry_after_format must be 'seconds' or 'http-date'")
        self.clock = clock
        now = self.now
        if span is None:
            span = (now - 2 * 365 * 86400, now)
        self.span = span
        self.seed = seed
        self.api_key = api_key
        data: Iterable[Mapping[str, Any] | Lab]
        if records is None:
            data = generate_labs(seed=seed, start=span[0], end=span[1], labs_per_day=labs_per_day)
        else:
            data = records
        self.dataset = Dataset(data, clock)
        self.sloppy = sloppy or Sloppiness()
        self.latency = latency
        self.rate_limit = rate_limit
        self.burst = burst
        self.retry_after_format = retry_after_format
        self.faults = faults or Faults()
        self.fail_range = fail_range
        if fail_kind not in FAULT_KINDS:
            raise ValueError(f"unknown fail_kind {fail_kind!r}; choose from {FAULT_KINDS}")
        self.fail_kind = fail_kind
        self.max_window_seconds = (
            max_window_seconds - 1 if strict_seven_days else max_window_seconds
        )
        self.redirect_to = redirect_to
        self.compress = compress
        self.echo_headers = echo_headers
        self.host = host
        self.port = port
        self.base_path = "/" + base_path.strip("/").lower()
        self.stats = SimulatorStats()
        self.log: collections.deque[RequestLog] = collections.deque(
            maxlen=200_000 if log_requests else 0
        )
        self._seen: collections.Counter[str] = collections.Counter()
        self._tokens = float(burst)
        self._refilled = clock()
        self._runner: web.AppRunner | None = None

    # --- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Start serving."""
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        """Stop serving."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @property
    def base_url(self) -> str:
        """The API root to give a client, e.g. ``http://127.0.0.1:54321/api/v3``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.base_path}"

    # --- ground truth (as of the clock) ------------------------------------------------------

    @property
    def now(self) -> int:
        """The simulator's clock, in whole epoch seconds."""
        return int(self.clock())

    def between(self, start: TimeLike, end: TimeLike) -> list[Mapping[str, Any]]:
        """
        Wire-shape records that started or ended in ``[start, end]`` by now, as they are
        now (what an honest ``Results`` answers), in start order. ``start``/``end`` as
        for the client: aware ``datetime``, ``date`` or int epoch seconds.
        """
        return self.dataset.between(to_epoch(start, "start"), to_epoch(end, "end"))

    def ids_between(self, start: TimeLike, end: TimeLike) -> set[int]:
        """Ids of the labs that started or ended in ``[start, end]`` by now."""
        return {r["LabInstanceId"] for r in self.between(start, end)}

    def present(self, start: TimeLike, end: TimeLike) -> dict[int, Mapping[str, Any]]:
        """``{id: record as it is now}`` for the labs that started or ended in the range."""
        return {r["LabInstanceId"]: r for r in self.between(start, end)}

    @property
    def records(self) -> list[Mapping[str, Any]]:
        """Every record the server holds now, in start order."""
        return list(self.dataset)

    # --- request handling --------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        stats = self.stats
        stats.in_flight += 1
        stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
        arrived = self.clock()
        if self.log.maxlen:
            stats.arrivals.append(arrived)
        status: int | None = None
        fault: str | None = None
        try:
            params = await self._params(request)
            command = self._command(request.path)
            stats.requests[command or request.path] += 1
            if self.latency:
                await asyncio.sleep(self.latency)
            if self.redirect_to is not None:
                status = 307
                raise web.HTTPTemporaryRedirect(self.redirect_to.rstrip("/") + request.path_qs)
            if request.headers.get("api_key") != self.api_key:
                stats.unauthorized += 1
                status = 401
                return self._json({"Error": "Invalid API key", "Status": 0}, status=401)
            if command is None:
                status = 404
                return self._json({"Error": "Unknown command", "Status": 0}, status=404)
            throttled = self._throttle()
            if throttled is not None:
                stats.throttled += 1
                status = 429
                return throttled
            fault = self._draw_fault(command, params)
            if fault is None and self._in_fail_range(command, params):
                fault = self.fail_kind
            if fault is not None:
                stats.faults[fault] += 1
                response = await self._fault(request, fault, command, params)
                status = response.status if response is not None else None
                return response if response is not None else web.Response(status=500)
            response = self._answer(command, params)
            status = response.status
            if self.compress:
                response.enable_compression()
            return response
        finally:
            stats.in_flight -= 1
            self.log.append(
                RequestLog(
                    method=request.method,
                    path=request.path,
                    query=dict(request.query),
                    headers=dict(request.headers),
                    arrived=arrived,
                    status=status,
                    fault=fault,
                )
            )

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = {k.lower(): v for k, v in request.query.items()}
        if request.method == "POST" and request.can_read_body:
            if request.content_type == "application/json":
                try:
                    body = await request.json(loads=orjson.loads)
                except ValueError:
                    body = None
                if isinstance(body, dict):
                    params.update({str(k).lower(): str(v) for k, v in body.items()})
            else:
                form = await request.post()
                params.update({k.lower(): str(v) for k, v in form.items()})
        return params

    def _command(self, path: str) -> str | None:
        p = path.lower().rstrip("/")
        if not p.startswith(self.base_path + "/"):
            return None
        tail = p[len(self.base_path) + 1 :]
        return {"result": "Result", "results": "Results", "latestresults": "LatestResults"}.get(
            tail
        )

    def _throttle(self) -> web.Response | None:
        if self.rate_limit is None:
            return None
        now = self.clock()
        self._tokens = min(
            float(self.burst), self._tokens + (now - self._refilled) * self.rate_limit
        )
        self._refilled = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        wait = (1.0 - self._tokens) / self.rate_limit
        if self.retry_after_format == "http-date":
            value = email.utils.formatdate(time.time() + max(1.0, wait), usegmt=True)
        else:
            value = str(max(1, math.ceil(wait)))
        return self._json(
            {"Error": "Too many requests", "Status": 0}, status=429, headers={"Retry-After": value}
        )

    def _draw_fault(self, command: str, params: Mapping[str, str]) -> str | None:
        f = self.faults
        if f.rate <= 0:
            return None
        key = f"{command}:{sorted(params.items())}"
        n = self._seen[key]
        self._seen[key] += 1
        rng = random.Random(f"{self.seed}:{key}:{n}")
        if rng.random() >= f.rate:
            return None
        return rng.choice(f.kinds)

    def _in_fail_range(self, command: str, params: Mapping[str, str]) -> bool:
        if self.fail_range is None or command != "Results":
            return False
        try:
            a, b = int(params["start"]), int(params["end"])
        except (KeyError, ValueError):
            return False
        return a <= self.fail_range[1] and b >= self.fail_range[0]

    async def _fault(
        self, request: web.Request, kind: str, command: str, params: Mapping[str, str]
    ) -> web.StreamResponse | None:
        if kind in ("http500", "http502", "http503"):
            code = int(kind[4:])
            headers = {"Retry-After": self.faults.retry_after} if code == 503 else {}
            body = _HTML.replace(b"{code}", str(code).encode())
            if self.echo_headers:
                dump = "".join(f"{k}: {v}\n" for k, v in request.headers.items())
                body += f"<pre>{dump}</pre>".encode()
            return web.Response(status=code, body=body, content_type="text/html", headers=headers)
        if kind in ("http429", "http429_date"):
            value = self.faults.retry_after
            if kind == "http429_date":
                value = email.utils.formatdate(time.time() + float(value), usegmt=True)
            return self._json(
                {"Error": "Too many requests", "Status": 0},
                status=429,
                headers={"Retry-After": value},
            )
        if kind == "status0":
            return self._json({"Error": "An internal error occurred. (sim)", "Status": 0})
        if kind == "malformed":
            return web.Response(
                status=200,
                body=b'{"Results": [{"LabInstanceId": 1,,',
                content_type="application/json",
            )
        if kind == "slow":
            await asyncio.sleep(self.faults.slow_seconds)
            return self._answer(command, params)
        transport = request.transport
        if kind == "reset":
            if transport is not None:
                transport.abort()
            return None
        # truncate / reset_body: promise the whole body, send part of it, hang up.
        full = self._answer(command, params).body
        assert isinstance(full, bytes)
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(full) + (0 if kind == "reset_body" else 100)
        await response.prepare(request)
        await response.write(full[: max(1, len(full) // 2)])
        if transport is not None:
            transport.abort() if kind == "reset_body" else transport.close()
        return response

    def _answer(self, command: str, params: Mapping[str, str]) -> web.Response:
        try:
            if command == "Result":
                lab_id = int(params["labinstanceid"])
                record = self.dataset.get(lab_id)
                if record is None:
                    return self._json({"Error": f"Lab instance {lab_id} not found", "Status": 0})
                body = {k: v for k, v in record.items() if k != "LabInstanceId"}
                body.update(Status=1, Error=None)
                return self._json(body)
            if command == "Results":
                a, b = int(params["start"]), int(params["end"])
                if b < a:
                    return self._json({"Error": "End must be after start", "Status": 0})
                if b - a > self.max_window_seconds:
                    return self._json({"Error": TOO_LONG_TEXT, "Status": 0})
                return self._json({"Results": self._results(a, b), "Status": 1, "Error": None})
            minutes = int(params["minutes"])
            if not 1 <= minutes <= 10080:
                return self._json({"Error": "Minutes cannot exceed 10,080", "Status": 0})
            since = self.now - minutes * 60
            return self._json(
                {"Results": self.dataset.changed_since(since), "Status": 1, "Error": None}
            )
        except (KeyError, ValueError):
            return self._json({"Error": "Missing or invalid parameter", "Status": 0})

    def _results(self, a: int, b: int) -> list[Mapping[str, Any]]:
        """What ``Results`` answers for ``[a, b]``, bent as ``self.sloppy`` says."""
        sloppy = self.sloppy
        found = self.dataset.between(a + sloppy.skew, b + sloppy.skew)
        if sloppy.everywhere:
            have = {r["LabInstanceId"] for r in found}
            for lab_id in sloppy.everywhere:
                extra = self.dataset.get(lab_id)
                if extra is not None and lab_id not in have:
                    found.append(extra)
        if sloppy.duplicate_rate <= 0:
            return found
        out: list[Mapping[str, Any]] = []
        for r in found:
            lab = self.dataset.lab(r["LabInstanceId"])
            rng = random.Random(f"{self.seed}:dup:{r['LabInstanceId']}:{a}:{b}")
            if lab is None or r["End"] is None or rng.random() >= sloppy.duplicate_rate:
                out.append(r)
                continue
            running = dict(r)
            running.update(End=None, CompletionStatus=3)
            out.extend((running, r) if rng.random() < 0.5 else (r, running))
        return out

    @staticmethod
    def _json(
        doc: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
    ) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(doc),
            content_type="application/json",
            headers=headers,
        )
