"""Shared pieces: a simulator in its own process, repeated timing, result rows."""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import attrs


@attrs.frozen
class Server:
    """A running ``lodresults simulate`` process."""

    base_url: str
    api_key: str
    proc: subprocess.Popen[str]


@contextmanager
def simulator(**options: Any) -> Iterator[Server]:
    """
    Start ``lodresults simulate`` in a separate process (its own core, so the server's
    JSON encoding does not compete with the client being measured) on an ephemeral port.
    """
    args = [sys.executable, "-m", "lodresults", "simulate", "--port", "0"]
    for key, value in options.items():
        if value is not None:
            args += [f"--{key.replace('_', '-')}", str(value)]
    with _serve(args) as server:
        yield server


@contextmanager
def pushback(**options: Any) -> Iterator[Server]:
    """Start ``benchmarks._pushback`` (a server that answers 429s) in a separate process."""
    with _serve([sys.executable, "-m", "benchmarks._pushback", json.dumps(options)]) as server:
        yield server


@contextmanager
def _serve(args: list[str]) -> Iterator[Server]:
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(2)]
        url = re.search(r"on (http://\S+)", lines[0])
        key = re.search(r"api key: (\S+)", lines[1])
        if not url or not key:
            raise RuntimeError(
                f"simulator did not start: {lines} {proc.stderr.read() if proc.stderr else ''}"
            )
        yield Server(url.group(1), key.group(1), proc)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@attrs.frozen
class Timing:
    """Repeated measurements of one quantity."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> str:
        return f"{min(self.values):.3g}-{max(self.values):.3g}"

    def fmt(self, unit: str = "s", digits: int = 3) -> str:
        return f"{self.median:.{digits}g} {unit} ({self.spread})"


def repeat(fn: Callable[[], Awaitable[Any]], times: int) -> tuple[Timing, Any]:
    """Run ``fn`` ``times`` (each in a fresh event loop); wall seconds and the last result."""
    values = []
    result = None
    for _ in range(times):
        start = time.perf_counter()
        result = asyncio.run(fn())  # type: ignore[arg-type]
        values.append(time.perf_counter() - start)
    return Timing(tuple(values)), result


def alternate(
    first: Callable[[], Awaitable[Any]],
    second: Callable[[], Awaitable[Any]],
    times: int,
    *,
    warm_up: bool = False,
) -> tuple[tuple[Timing, Any], tuple[Timing, Any]]:
    """
    Like ``repeat`` for two functions run in turns, the order swapped every round (first,
    second; second, first; ...) so that neither is always the one to meet a server (or a
    machine) still warming up. ``warm_up``: one untimed run of each first (a simulator
    builds a range's records at its first request: 0.5 s more for a 100,000-lab week).
    """
    if warm_up:
        repeat(first, 1)
        repeat(second, 1)
    a: list[tuple[Timing, Any]] = []
    b: list[tuple[Timing, Any]] = []
    for i in range(times):
        pair = [(first, a), (second, b)]
        for fn, into in pair if i % 2 == 0 else pair[::-1]:
            into.append(repeat(fn, 1))
    return (
        (Timing(tuple(t.values[0] for t, _ in a)), a[-1][1]),
        (Timing(tuple(t.values[0] for t, _ in b)), b[-1][1]),
    )


def machine() -> str:
    """One line naming the machine and the versions measured."""
    pkgs = ["aiohttp", "attrs", "cattrs", "msgspec", "orjson"]
    vers = ", ".join(f"{p} {version(p)}" for p in pkgs)
    return (
        f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, "
        f"{platform.system()}; {vers}; lodresults {version('lodresults')}"
    )


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
