"""OpenTelemetry: the span tree, its attributes, metrics, and no secret anywhere in them."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from contextlib import aclosing
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from lodresults import LodApiError, LodRateLimitError, SQLiteStore, backfill
from lodresults.testing import Faults, ManualClock
from tests.conftest import FIXED_SPAN, KEY, fast_client, make_fixed_sim

DAY = 86400
A = FIXED_SPAN[0] + 30 * DAY
B = FIXED_SPAN[1]  # the clients' virtual now: waits take no real time


class _Switch(SpanExporter):
    """Forwards finished spans to the test that listens (the provider is set once)."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] | None = None

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.spans is not None:
            self.spans.extend(spans)
        return SpanExportResult.SUCCESS


@functools.cache
def _providers() -> tuple[_Switch, InMemoryMetricReader]:
    # The global providers can be set once per process: set here, on first use, for the
    # tests of this module; other tests then make spans that nobody keeps.
    switch = _Switch()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(switch))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return switch, reader


class Otel:
    def __init__(self, switch: _Switch, reader: InMemoryMetricReader) -> None:
        self.spans: list[ReadableSpan] = []
        self._reader = reader
        self._before = self.metric_points()
        switch.spans = self.spans

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans if s.name == name]

    def metric_points(self) -> dict[tuple[str, str], float]:
        data = self._reader.get_metrics_data()
        out: dict[tuple[str, str], float] = {}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                if sm.scope.name != "lodresults":
                    continue
                for m in sm.metrics:
                    for p in m.data.data_points:
                        attrs = json.dumps(dict(p.attributes or {}), sort_keys=True)
                        out[(m.name, attrs)] = p.value  # type: ignore[union-attr]
        return out

    def metric_delta(self, name: str, **attributes: Any) -> float:
        key = (name, json.dumps(attributes, sort_keys=True))
        now = self.metric_points()
        return now.get(key, 0) - self._before.get(key, 0)

    def gauge(self, name: str) -> float | None:
        values = [v for (n, _), v in self.metric_points().items() if n == name]
        return values[-1] if values else None


@pytest.fixture
def otel() -> Iterator[Otel]:
    switch, reader = _providers()
    o = Otel(switch, reader)
    try:
        yield o
    finally:
        switch.spans = None


def _text_of(span: ReadableSpan) -> str:
    """Everything a span exports: name, attributes, events, status."""
    parts = [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
    for event in span.events:
        parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


async def test_span_tree_attributes_and_window_figures(otel: Otel) -> None:
    async with make_fixed_sim() as sim, fast_client(sim, max_concurrency=2) as c:
        batches = [b async for b in c.iter_windows(A, A + 20 * DAY)]
    (call,) = otel.named("lodresults.iter_windows")
    windows = otel.named("lodresults.window")
    gets = otel.named("GET")
    assert len(windows) == len(batches) == len(gets) >= 3
    assert call.status.status_code is StatusCode.UNSET
    assert call.attributes is not None
    assert (call.attributes["lodresults.start"], call.attributes["lodresults.end"]) == (
        A,
        A + 20 * DAY,
    )
    by_id = {s.context.span_id: s for s in otel.spans if s.context is not None}
    for w in windows:
        assert w.parent is not None and w.parent.span_id == call.context.span_id  # type: ignore[union-attr]
        assert w.attributes is not None
        assert w.attributes["lodresults.window.attempts"] == 1
        assert w.attributes["lodresults.window.throttled"] == 0
    sent = {(w.attributes or {})["lodresults.window.start"] for w in windows}
    assert sent == {b.requested.start for b in batches}
    for g in gets:
        assert g.kind is SpanKind.CLIENT
        assert g.parent is not None
        parent = by_id[g.parent.span_id]
        assert parent.name == "lodresults.window"
        attrs = dict(g.attributes or {})
        assert attrs["http.request.method"] == "GET"
        assert attrs["server.address"] == "127.0.0.1"
        assert attrs["server.port"] == sim.port
        assert attrs["http.response.status_code"] == 200
        assert "http.request.resend_count" not in attrs
        pa = dict(parent.attributes or {})
        assert attrs["url.full"] == (
            f"{sim.base_url}/Results?start={pa['lodresults.window.start']}"
            f"&end={pa['lodresults.window.end']}"
        )
    # Per window, after dedup: an event on the call span; totals on the call span.
    done = [e for e in call.events if e.name == "lodresults.window.done"]
    assert len(done) == len(batches)
    total = sum(len(b.records) + len(b.updates) for b in batches)
    attrs = dict(call.attributes)
    assert attrs["lodresults.new_records"] + attrs["lodresults.updates"] == total
    received = sum((e.attributes or {})["lodresults.window.records"] for e in done)
    assert attrs["lodresults.records"] == received
    assert attrs["lodresults.duplicates_dropped"] == received - total > 0  # windows overlap
    assert otel.metric_delta("lodresults.records", **{"lodresults.command": "Results"}) == (
        received
    )


async def test_retries_count_resends_and_429s(otel: Otel) -> None:
    faults = Faults(rate=1.0, kinds=("http429",), retry_after="0")
    async with (
        make_fixed_sim(faults=faults) as sim,
        fast_client(sim, max_retries=2, clock=ManualClock(B)) as c,
    ):
        with pytest.raises(LodRateLimitError):
            await c.results(A, A + DAY)
    gets = otel.named("GET")
    assert [(g.attributes or {}).get("http.request.resend_count") for g in gets] == [None, 1, 2]
    for g in gets:
        assert g.status.status_code is StatusCode.ERROR
        assert (g.attributes or {})["error.type"] == "429"
        assert (g.attributes or {})["http.response.status_code"] == 429
    (window,) = otel.named("lodresults.results")
    assert window.status.status_code is StatusCode.ERROR
    labels = {"lodresults.command": "Results"}
    assert otel.metric_delta("lodresults.client.throttled", **labels) == 3
    assert (
        otel.metric_delta(
            "lodresults.client.requests", **labels, **{"http.response.status_code": 429}
        )
        == 3
    )
    assert otel.gauge("lodresults.client.rate") == c.current_rate


async def test_window_span_counts_attempts_and_throttles(otel: Otel) -> None:
    # Half of the requests fail at first (seeded by the request itself: the same ones on
    # every run); every window gets through on a later attempt.
    faults = Faults(rate=0.5, kinds=("http429",), retry_after="0")
    async with (
        make_fixed_sim(faults=faults) as sim,
        fast_client(sim, max_retries=8, clock=ManualClock(B)) as c,
        aclosing(c.iter_windows(A, A + 60 * DAY)) as it,
    ):
        async for _ in it:
            pass
    windows = otel.named("lodresults.window")
    gets = otel.named("GET")
    assert sum((w.attributes or {})["lodresults.window.attempts"] for w in windows) == len(gets)
    throttled = sum((w.attributes or {})["lodresults.window.throttled"] for w in windows)
    assert throttled == sum(1 for g in gets if g.status.status_code is StatusCode.ERROR) > 0
    for w in windows:
        kids = [g for g in gets if g.parent and g.parent.span_id == w.context.span_id]  # type: ignore[union-attr]
        resends = sorted((g.attributes or {}).get("http.request.resend_count", 0) for g in kids)
        assert resends == list(range(len(kids)))
        assert len(kids) == (w.attributes or {})["lodresults.window.attempts"]


async def test_status_0_marks_the_span_as_an_error(otel: Otel) -> None:
    async with make_fixed_sim() as sim, fast_client(sim) as c:
        with pytest.raises(LodApiError):
            await c.result(1)
    (get,) = otel.named("GET")
    assert get.status.status_code is StatusCode.ERROR
    attrs = dict(get.attributes or {})
    assert attrs["error.type"] == "LodNotFoundError"  # a LodApiError: Status 0, "not found"
    assert attrs["http.response.status_code"] == 200
    assert attrs["url.full"].endswith("/Result?labInstanceId=1")
    (call,) = otel.named("lodresults.result")
    assert call.status.status_code is StatusCode.ERROR
    assert get.parent is not None and get.parent.span_id == call.context.span_id  # type: ignore[union-attr]


async def test_settled_windows_are_counted(otel: Otel, tmp_path: Path) -> None:
    async with make_fixed_sim() as sim, fast_client(sim) as c:
        store = await SQLiteStore.open(tmp_path / "lod.db")
        try:
            result = await backfill(c, store, A, A + 20 * DAY)
        finally:
            await store.close()
    assert result.windows >= 3
    assert otel.metric_delta("lodresults.windows.settled") == result.windows


async def test_no_key_in_any_span_even_with_header_capture(
    otel: Otel, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor

    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_REQUEST", ".*")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_HTTP_CAPTURE_HEADERS_CLIENT_RESPONSE", ".*")
    instrumentor = AioHttpClientInstrumentor()
    instrumentor.instrument()
    try:
        async with make_fixed_sim() as sim:
            # The capture is on: a request of the application's own shows its headers.
            async with (
                aiohttp.ClientSession() as session,
                session.get(f"{sim.base_url}/Nothing", headers={"X-Probe": "p1"}),
            ):
                pass
            async with fast_client(sim) as c:
                await c.results(A, A + DAY)
                with pytest.raises(LodApiError):
                    await c.result(1)
                async with aclosing(c.iter_results(A, A + 10 * DAY)) as it:
                    async for _ in it:
                        pass
    finally:
        instrumentor.uninstrument()
    probe = [s for s in otel.spans if "p1" in _text_of(s)]
    assert probe, "header capture was not on: this test proves nothing"
    ours = [s for s in otel.spans if s not in probe]
    assert len(otel.named("GET")) >= 5
    for span in ours:
        text = _text_of(span)
        assert KEY not in text and "api_key" not in text, span.name


def test_nothing_imported_without_the_extra(tmp_path: Path) -> None:
    # A process in which opentelemetry cannot be imported (as without the extra): the
    # client works and nothing of it is loaded; with it installed, importing lodresults
    # alone loads nothing either.
    script = textwrap.dedent(
        f"""
        import asyncio, sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "opentelemetry" or name.startswith("opentelemetry."):
                    raise ImportError("blocked: " + name)
                return None

        if sys.argv[1] == "blocked":
            sys.meta_path.insert(0, Block())
        import lodresults
        from lodresults.testing import Simulator
        assert not [m for m in sys.modules if m.startswith("opentelemetry")]
        if sys.argv[1] == "import-only":
            raise SystemExit(0)

        async def main():
            async with Simulator(seed=1, labs_per_day=5) as sim:
                async with lodresults.LodClient(sim.api_key, base_url=sim.base_url) as c:
                    got = await c.latest_results(600)
                    await c.results({FIXED_SPAN[0]}, {FIXED_SPAN[0] + DAY})
            return got

        asyncio.run(main())
        print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
        """
    )
    path = tmp_path / "probe.py"
    path.write_text(script)
    for mode in ("blocked", "import-only"):
        out = subprocess.run(
            [sys.executable, str(path), mode], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, out.stderr
        if mode == "blocked":
            assert out.stdout.strip() == "[]"


async def test_a_split_window_is_an_event_and_its_refused_span_an_error(otel: Otel) -> None:
    async with (
        make_fixed_sim(max_window_seconds=3 * DAY) as sim,
        fast_client(sim) as c,
        aclosing(c.iter_windows(A, A + 12 * DAY)) as it,
    ):
        async for _ in it:
            pass
    (call,) = otel.named("lodresults.iter_windows")
    splits = [e for e in call.events if e.name == "lodresults.window.split"]
    assert splits and all((e.attributes or {})["lodresults.window.parts"] >= 2 for e in splits)
    refused = [
        w for w in otel.named("lodresults.window") if w.status.status_code is StatusCode.ERROR
    ]
    assert len(refused) == len(splits)
    assert {(w.attributes or {})["error.type"] for w in refused} == {"LodWindowTooLongError"}
    assert call.status.status_code is StatusCode.UNSET
