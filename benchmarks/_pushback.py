"""
A server that pushes back, for the rate-adaptation benchmarks (run in its own process).

    python -m benchmarks._pushback '{"mode": "storm", "seconds": 6}'

Every ``Results`` request gets an empty window (``Status: 1``) unless the mode refuses it
with 429 and a ``Retry-After``:

- ``storm``: every request within ``seconds`` of the first one (Retry-After 1);
- ``sporadic``: each request with probability ``p`` (seeded; Retry-After 1);
- ``bucket``: beyond a token bucket of ``allowance`` requests per second, burst 1
  (Retry-After the whole seconds until a token, at least 1), as the simulator does;
- ``permanent``: every request (Retry-After ``retry_after``).

``GET /stats`` returns ``{"arrivals": [[seconds since the first request, status], ...]}``;
``GET /reset`` starts a new run (the storm, the bucket and the draws start afresh).
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import sys
import time
from typing import Any

import orjson
from aiohttp import web


class Pushback:
    """The refusal rule of one mode, and the log of what arrived."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.mode = options["mode"]
        self.options = options
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next request starts a new run."""
        options = self.options
        self.first: float | None = None
        self.arrivals: list[tuple[float, int]] = []
        self.rng = random.Random(options.get("seed", 1))
        self.tokens = 1.0
        self.refilled = time.monotonic()

    def refuse(self, now: float) -> str | None:
        """The Retry-After to answer with, or None to accept."""
        o = self.options
        assert self.first is not None
        if self.mode == "storm":
            return "1" if now - self.first < o["seconds"] else None
        if self.mode == "sporadic":
            return "1" if self.rng.random() < o["p"] else None
        if self.mode == "permanent":
            return str(o["retry_after"])
        rate = o["allowance"]
        self.tokens = min(1.0, self.tokens + (now - self.refilled) * rate)
        self.refilled = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return str(max(1, math.ceil((1.0 - self.tokens) / rate)))

    async def results(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        if self.first is None:
            self.first = now
        retry_after = self.refuse(now)
        status = 200 if retry_after is None else 429
        self.arrivals.append((now - self.first, status))
        if retry_after is not None:
            body = {"Error": "Too many requests", "Status": 0}
            return web.Response(
                status=429, body=orjson.dumps(body), content_type="application/json",
                headers={"Retry-After": retry_after},
            )  # fmt: skip
        body = {"Results": [], "Status": 1, "Error": None}
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    async def restart(self, request: web.Request) -> web.Response:
        self.reset()
        return web.Response(text="ok")

    async def stats(self, request: web.Request) -> web.Response:
        return web.Response(
            body=orjson.dumps({"arrivals": self.arrivals}), content_type="application/json"
        )


async def main(options: dict[str, Any]) -> None:
    server = Pushback(options)
    app = web.Application()
    app.router.add_get("/api/v3/Results", server.results)
    app.router.add_get("/stats", server.stats)
    app.router.add_get("/reset", server.restart)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    print(f"serving on http://127.0.0.1:{port}/api/v3", flush=True)
    print("api key: any", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
