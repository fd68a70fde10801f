"""
The simulator: a real ``aiohttp.web`` server that answers Result, Results and LatestResults.

Its dataset is ``_dataset``'s; the faults it injects and the counters it keeps are
``_knobs``'.
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

import orjson
from aiohttp import web

from lodresults._windows.plan import TimeLike, to_epoch
from lodresults.testing._dataset import Dataset, Lab, generate_labs
from lodresults.testing._knobs import (
    FAULT_KINDS,
    Faults,
    RequestLog,
    SimulatorStats,
    Sloppiness,
    fault_response,
    json_response,
)

__all__ = ["TOO_LONG_TEXT", "Simulator"]

SEVEN_DAYS: Final = 7 * 24 * 3600
TOO_LONG_TEXT: Final = "Timeframe cannot exceed 7 days"


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
        app.on_response_prepare.append(self._date)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _date(self, request: web.Request, response: web.StreamResponse) -> None:
        # Every answer's Date is the simulator's clock (a ManualClock's virtual time).
        response.headers["Date"] = email.utils.formatdate(self.clock(), usegmt=True)

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
                return json_response({"Error": "Invalid API key", "Status": 0}, status=401)
            if command is None:
                status = 404
                return json_response({"Error": "Unknown command", "Status": 0}, status=404)
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
                response = await fault_response(
                    request,
                    fault,
                    self.faults,
                    echo_headers=self.echo_headers,
                    answer=lambda: self._answer(command, params),
                )
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
        return json_response(
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

    def _answer(self, command: str, params: Mapping[str, str]) -> web.Response:
        try:
            if command == "Result":
                lab_id = int(params["labinstanceid"])
                record = self.dataset.get(lab_id)
                if record is None:
                    return json_response({"Error": f"Lab instance {lab_id} not found", "Status": 0})
                body = {k: v for k, v in record.items() if k != "LabInstanceId"}
                body.update(Status=1, Error=None)
                return json_response(body)
            if command == "Results":
                a, b = int(params["start"]), int(params["end"])
                if b < a:
                    return json_response({"Error": "End must be after start", "Status": 0})
                if b - a > self.max_window_seconds:
                    return json_response({"Error": TOO_LONG_TEXT, "Status": 0})
                return json_response({"Results": self._results(a, b), "Status": 1, "Error": None})
            minutes = int(params["minutes"])
            if not 1 <= minutes <= 10080:
                return json_response({"Error": "Minutes cannot exceed 10,080", "Status": 0})
            since = self.now - minutes * 60
            return json_response(
                {"Results": self.dataset.changed_since(since), "Status": 1, "Error": None}
            )
        except (KeyError, ValueError):
            return json_response({"Error": "Missing or invalid parameter", "Status": 0})

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
