"""
The simulator's webhooks: lab events pushed to a receiver the way Lab on Demand does it.

An "API consumer" in Lab on Demand names a URL (with tokens such as ``{id}``), a verb,
static headers (a shared secret, say) and the events to send; the JSON body, if asked
for, describes the lab (``Id``, ``Event``, ``State``, ``CompletionStatus``,
``ExamScore`` ...), not in the ``Result`` shape. A delivery that fails is sent again at
most 5 times, 1-5 s apart (about 15 s in all), then given up.

``WebhookSender`` reads the events off the simulator's labs (a lab starts: ``Launched``;
ends: ``TornDown``; is graded: ``Scored``) as its clock passes them, and sends them with
drops, duplicates and delays drawn from its seed. It is driven by that clock: ``pump()``
sends whatever is due now (a test moves a ``ManualClock`` and pumps), ``run()`` does so
until cancelled.
"""

from __future__ import annotations

import asyncio
import bisect
import heapq
import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import aiohttp
import attrs
import orjson

from lodresults._clock import ServerClock
from lodresults.testing._dataset import Dataset, Lab

__all__ = ["EVENTS", "Delivery", "WebhookSender"]

#: The events the simulator knows, in the order of a lab's life.
EVENTS: Final = ("Launched", "TornDown", "Scored")
#: The vendor's retry schedule: at most this many retries of a failed delivery ...
VENDOR_RETRIES: Final = 5
#: ... each this many seconds after the failure (drawn uniformly).
VENDOR_RETRY_WAIT: Final = (1.0, 5.0)
_STATES: Final = {"Launched": "Running", "TornDown": "Off", "Scored": "Off"}


@attrs.frozen
class Delivery:
    """One attempt to deliver an event: ``status`` None when no answer came."""

    lab_instance_id: int
    event: str
    happened: float
    attempt: int
    sent_at: float
    status: int | None
    duplicate: bool = False


@attrs.frozen(order=True)
class _Due:
    at: float
    seq: int
    lab_instance_id: int = attrs.field(order=False)
    event: str = attrs.field(order=False)
    happened: float = attrs.field(order=False)
    attempt: int = attrs.field(order=False, default=1)
    duplicate: bool = attrs.field(order=False, default=False)


class WebhookSender:
    """
    Sends the simulator's lab events to ``url`` as Lab on Demand would.

    Args:
        dataset: The labs (``sim.dataset``); their events are read off it.
        url: Where to send; ``{id}`` is replaced by the lab instance id.
        clock: The simulator's clock (a ``ManualClock`` in tests).
        events: The events sent (others are not).
        method: The verb.
        headers: Static headers sent with every delivery (the shared secret).
        body: Send a JSON body describing the lab (else none).
        drop_rate: Share of events never sent at all (lost by the sender).
        duplicate_rate: Share of events sent twice.
        delay: ``(low, high)`` seconds between an event and its first delivery.
        retries, retry_wait: The retry schedule of a failed delivery (the vendor's).
        timeout: Seconds one delivery may take.
        seed: Seeds the drops, duplicates, delays and retry waits.
        since: Events at or before this time are not sent (default: the clock at start).
    """

    def __init__(
        self,
        dataset: Dataset,
        url: str,
        *,
        clock: Callable[[], float],
        events: Sequence[str] = ("TornDown", "Scored"),
        method: str = "POST",
        headers: Mapping[str, str] | None = None,
        body: bool = True,
        drop_rate: float = 0.0,
        duplicate_rate: float = 0.0,
        delay: tuple[float, float] = (0.0, 0.0),
        retries: int = VENDOR_RETRIES,
        retry_wait: tuple[float, float] = VENDOR_RETRY_WAIT,
        timeout: float = 10.0,
        seed: int = 0,
        since: float | None = None,
    ) -> None:
        unknown = set(events) - set(EVENTS)
        if unknown:
            raise ValueError(f"unknown events {sorted(unknown)}; choose from {EVENTS}")
        for name, rate in (("drop_rate", drop_rate), ("duplicate_rate", duplicate_rate)):
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        self.dataset = dataset
        self.url = url
        self.clock = clock
        self.events = tuple(events)
        self.method = method.upper()
        self.headers = dict(headers or {})
        self.body = body
        self.drop_rate = drop_rate
        self.duplicate_rate = duplicate_rate
        self.delay = delay
        self.retries = retries
        self.retry_wait = retry_wait
        self.timeout = timeout
        self.seed = seed
        self._timer = ServerClock(clock)  # sleeps in virtual time on a ManualClock
        self._scanned = clock() if since is None else since
        self._due: list[_Due] = []
        self._timeline: list[tuple[float, int, str]] | None = None
        self._seq = itertools.count()
        self._session: aiohttp.ClientSession | None = None
        #: Every attempt, in the order sent.
        self.log: list[Delivery] = []
        #: Events drawn as lost: (id, event), never sent.
        self.dropped: list[tuple[int, str]] = []
        #: Events whose every attempt failed: (id, event).
        self.given_up: list[tuple[int, str]] = []

    # --- what is sent -----------------------------------------------------------------------

    def _happenings(self, lab: Lab) -> list[tuple[float, str]]:
        out: list[tuple[float, str]] = [(lab.start, "Launched")]
        if lab.end is not None:
            out.append((lab.end, "TornDown"))
            if lab.record.get("ExamScore") is not None:
                out.append((lab.graded if lab.graded is not None else lab.end, "Scored"))
        return out

    def _scan(self, now: float) -> None:
        """Queue the events that happened in ``(scanned, now]``."""
        if now <= self._scanned:
            return
        if self._timeline is None:
            self._timeline = sorted(
                (t, lab.lab_instance_id, event)
                for lab in self.dataset.labs
                if not lab.fixed
                for t, event in self._happenings(lab)
                if event in self.events
            )
        lo = bisect.bisect_right(self._timeline, (self._scanned, math.inf, ""))
        hi = bisect.bisect_right(self._timeline, (now, math.inf, ""))
        for t, lab_id, event in self._timeline[lo:hi]:
            self.notify(lab_id, event, t)
        self._scanned = now

    def notify(self, lab_instance_id: int, event: str, happened: float | None = None) -> None:
        """An event of a lab (also one the dataset cannot show: a fixed record changed)."""
        at = self.clock() if happened is None else happened
        rng = random.Random(f"{self.seed}:{lab_instance_id}:{event}:{at}")
        if rng.random() < self.drop_rate:
            self.dropped.append((lab_instance_id, event))
            return
        copies = 2 if rng.random() < self.duplicate_rate else 1
        for copy in range(copies):
            due = at + rng.uniform(*self.delay)
            heapq.heappush(
                self._due,
                _Due(due, next(self._seq), lab_instance_id, event, at, duplicate=copy > 0),
            )

    def _payload(self, lab_instance_id: int, event: str) -> dict[str, Any]:
        record = self.dataset.get(lab_instance_id) or {}
        return {
            "Id": lab_instance_id,
            "Event": event,
            "State": _STATES[event],
            "LabProfileId": record.get("LabProfileId"),
            "UserId": record.get("UserId"),
            "CompletionStatus": record.get("CompletionStatus"),
            "ExamScore": record.get("ExamScore"),
            "ExamPassed": record.get("ExamPassed"),
        }

    # --- sending --------------------------------------------------------------------------

    @property
    def next_due(self) -> float | None:
        """When the next queued delivery is due (None: nothing queued)."""
        return self._due[0].at if self._due else None

    async def pump(self) -> int:
        """
        Send every delivery due by now (events that happened since the last pump
        included), concurrently; failures are queued again on the retry schedule.
        Returns how many attempts were made.
        """
        now = self.clock()
        self._scan(now)
        batch: list[_Due] = []
        while self._due and self._due[0].at <= now:
            batch.append(heapq.heappop(self._due))
        if batch:
            await asyncio.gather(*(self._attempt(d) for d in batch))
        return len(batch)

    async def run(self, interval: float = 0.5) -> None:
        """Pump until cancelled, waking at the next due delivery or every ``interval``."""
        while True:
            await self.pump()
            wait = interval
            if self._due:
                wait = max(0.0, min(interval, self._due[0].at - self.clock()))
            await self._timer.sleep(wait)

    async def _attempt(self, due: _Due) -> None:
        status = await self._send(due.lab_instance_id, due.event)
        self.log.append(
            Delivery(
                due.lab_instance_id,
                due.event,
                due.happened,
                due.attempt,
                self.clock(),
                status,
                due.duplicate,
            )
        )
        if status is not None and 200 <= status < 300:
            return
        if due.attempt > self.retries:
            self.given_up.append((due.lab_instance_id, due.event))
            return
        rng = random.Random(f"{self.seed}:{due.seq}:{due.attempt}")
        heapq.heappush(
            self._due,
            attrs.evolve(
                due,
                at=self.clock() + rng.uniform(*self.retry_wait),
                seq=next(self._seq),
                attempt=due.attempt + 1,
            ),
        )

    async def _send(self, lab_instance_id: int, event: str) -> int | None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        url = self.url.replace("{id}", str(lab_instance_id))
        data = orjson.dumps(self._payload(lab_instance_id, event)) if self.body else None
        headers = dict(self.headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with self._session.request(
                self.method,
                url,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                return resp.status
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return None

    async def close(self) -> None:
        """Close the HTTP session (queued deliveries stay queued)."""
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> WebhookSender:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
