"""
The webhook receiver: an ``aiohttp.web`` application that answers each push at once
(202, queued) and lets workers fetch the labs it names with ``Result`` and apply them to
a destination, newest fetch wins, like every other writer of it.

The push itself is never trusted as data: it only says which lab to fetch. Answers:
202 queued (or coalesced into a lab already waiting), 401 wrong or missing secret, 403
an address outside the allow list, 400 no readable id, a body that is not a JSON object
or an unknown event, 413 a body over ``max_body``, 503 with ``Retry-After`` while the
queue is full or the receiver is stopping. Nothing is stored for a refused push.

Stopping (``stop``, or the application's cleanup) refuses new pushes, lets the workers
finish for up to ``grace`` seconds, and saves the ids still queued in the database
(``Ledger``, beside the store's tables in ``db``), from which the next start resumes
them. Neither the secret nor the key is
ever logged: log lines name lab ids, statuses and counts only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from aiohttp import web

from lodresults._client import LodClient
from lodresults._destinations.base import Applied, Destination
from lodresults._exceptions import LodApiError, LodError, LodInvalidArgument, StoreError
from lodresults._webhooks.inbox import (
    Accepted,
    Refused,
    check_sender,
    parse_networks,
    parse_push,
)
from lodresults._webhooks.ledger import Ledger
from lodresults._webhooks.queue import LabQueue, Offer

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PATH",
    "DEFAULT_QUEUE",
    "DEFAULT_SECRET_HEADER",
    "ReceiverStats",
    "WebhookReceiver",
    "apply_lab",
]

logger = logging.getLogger("lodresults.webhooks")

#: A push is a few hundred bytes; anything much larger is not one.
DEFAULT_MAX_BODY: Final = 16 * 1024
DEFAULT_QUEUE: Final = 10_000
DEFAULT_PATH: Final = "/webhooks/lod"
#: The header whose exact value is the shared secret (a name, not a secret).
DEFAULT_SECRET_HEADER: Final = "Authorization"  # noqa: S105
#: A lab whose fetch failed this many times (after the client's own retries) is dropped
#: from the queue; the next reconciliation brings it.
MAX_FAILURES: Final = 3


@attrs.define
class ReceiverStats:
    """
    What a receiver did: pushes ``received``; ``queued`` (a new id), ``coalesced`` (its lab
    waited already), ``refused`` by status, ``busy`` (503: full or stopping); labs
    ``applied`` and how many of those ``changed`` the store; ``unknown`` labs the server
    does not know; ``failed`` labs dropped after repeated failures; ``resumed`` ids
    loaded from the last stop; ``saved`` ids saved at stop.
    """

    received: int = 0
    queued: int = 0
    coalesced: int = 0
    refused: dict[int, int] = attrs.field(factory=dict)
    busy: int = 0
    applied: int = 0
    changed: int = 0
    unknown: int = 0
    failed: int = 0
    resumed: int = 0
    saved: int = 0


async def apply_lab(client: LodClient, destination: Destination, lab_instance_id: int) -> Applied:
    """
    Fetch one lab with ``Result`` and apply it, newest fetch wins: the one place the
    receiver writes. Raises ``LodApiError`` when the server does not know the lab.
    """
    stamp = client.clock.stamp()
    record = await client.result(lab_instance_id)
    return await destination.apply([record], fetched_at=client.clock.sent_at(stamp))


class _Secret:
    """The shared secret as bytes, never shown (``repr`` is ``***``)."""

    __slots__ = ("_value",)

    def __init__(self, value: bytes) -> None:
        self._value = value

    def reveal(self) -> bytes:
        return self._value

    def __repr__(self) -> str:
        return "***"

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("a webhook secret cannot be pickled")


class WebhookReceiver:
    """
    Receives Lab on Demand's pushes and keeps ``destination`` current with the labs
    they name (see the module's docstring; ``lodresults.webhooks`` is the public face).
    """

    def __init__(
        self,
        client: LodClient,
        destination: Destination,
        *,
        secret: str,
        secret_header: str = DEFAULT_SECRET_HEADER,
        allow: Sequence[str] = (),
        max_body: int = DEFAULT_MAX_BODY,
        queue_size: int = DEFAULT_QUEUE,
        workers: int | None = None,
        retry_after: int = 5,
        grace: float = 10.0,
        db: str | Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if not isinstance(secret, str) or not secret.strip():
            raise LodInvalidArgument("the webhook secret must be a non-empty string")
        secret_bytes = secret.encode("utf-8")
        del secret  # a plain str local would show in a traceback's frame locals
        if not isinstance(secret_header, str) or not secret_header.strip():
            raise LodInvalidArgument("secret_header must name a header")
        try:
            networks = parse_networks(list(allow))
        except ValueError as exc:
            raise LodInvalidArgument(f"allow: {exc}") from None
        for name, value in (("max_body", max_body), ("queue_size", queue_size)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LodInvalidArgument(f"{name} must be a positive int, got {value!r}")
        self.client = client
        self.destination = destination
        self.secret_header = secret_header.strip()
        self._secret = _Secret(secret_bytes)
        self.allow = networks
        self.max_body = max_body
        self.workers = workers if workers is not None else client.max_concurrency
        self.retry_after = retry_after
        self.grace = grace
        self.db = None if db is None else Path(db)
        self.ledger: Ledger | None = None
        self.clock = clock if clock is not None else client.clock
        self.queue = LabQueue(queue_size)
        self.stats = ReceiverStats()
        self._failures: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def __repr__(self) -> str:
        return (
            f"WebhookReceiver(secret_header={self.secret_header!r}, queued={len(self.queue)}, "
            f"applied={self.stats.applied})"
        )

    # --- the application -------------------------------------------------------------------

    def app(self, path: str = DEFAULT_PATH) -> web.Application:
        """
        An ``aiohttp.web.Application`` answering pushes at ``path`` (any verb); its
        startup starts this receiver and its cleanup stops it (mount it in a larger
        application with ``add_subapp``, or serve it alone).
        """
        app = web.Application(client_max_size=self.max_body)
        app.router.add_route("*", path, self._handle)
        app.cleanup_ctx.append(self._lifetime)
        return app

    async def _lifetime(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        yield
        await self.stop()

    async def _handle(self, request: web.Request) -> web.Response:
        self.stats.received += 1
        outcome = await self._read_push(request)
        if isinstance(outcome, Accepted):
            return self._offer(outcome)
        if outcome is None:
            return self._busy("the receiver is stopping")
        self.stats.refused[outcome.status] = self.stats.refused.get(outcome.status, 0) + 1
        logger.info("webhook refused: %d %s", outcome.status, outcome.reason)
        return web.json_response({"error": outcome.reason}, status=outcome.status)

    async def _read_push(self, request: web.Request) -> Accepted | Refused | None:
        """The push's lab, or why it is refused; None while stopping (a sender's retry)."""
        refused = check_sender(
            request.remote,
            request.headers,
            secret=self._secret.reveal(),
            header=self.secret_header,
            allow=self.allow,
        )
        if refused is not None:
            return refused
        if self._stopping:
            return None
        length = request.content_length
        too_long = Refused(413, f"the body exceeds {self.max_body} bytes")
        if length is not None and length > self.max_body:
            return too_long
        body = await _read(request, self.max_body)
        return too_long if body is None else parse_push(request.query, body)

    def _offer(self, push: Accepted) -> web.Response:
        outcome = self.queue.offer(push.lab_instance_id, self.clock())
        if outcome is Offer.FULL:
            return self._busy(f"the queue is full ({self.queue.limit} labs)")
        if outcome is Offer.COALESCED:
            self.stats.coalesced += 1
        else:
            self.stats.queued += 1
        logger.debug(
            "webhook: lab %d %s (%s)", push.lab_instance_id, outcome.value, push.event or "-"
        )
        return web.json_response(
            {"lab_instance_id": push.lab_instance_id, "queue": outcome.value}, status=202
        )

    def _busy(self, reason: str) -> web.Response:
        self.stats.busy += 1
        return web.json_response(
            {"error": reason}, status=503, headers={"Retry-After": str(self.retry_after)}
        )

    # --- the workers -----------------------------------------------------------------------

    async def start(self) -> None:
        """Resume the ids saved at the last stop, and start the workers."""
        self._stopping = False
        if self.db is not None and self.ledger is None:
            self.ledger = await Ledger.open(self.db)
        if self.ledger is not None:
            for lab_id, at in await self.ledger.take_pending():
                if self.queue.offer(lab_id, at) is Offer.QUEUED:
                    self.stats.resumed += 1
        self._tasks = [asyncio.ensure_future(self._work()) for _ in range(self.workers)]

    async def drain(self) -> None:
        """Wait until every queued lab is applied (or dropped)."""
        await self.queue.wait_idle()

    async def stop(self, grace: float | None = None) -> int:
        """
        Refuse new pushes (503), let the workers finish for up to ``grace`` seconds (the
        receiver's by default), then stop them and save what is left in the database.
        Returns how many ids were saved.
        """
        self._stopping = True
        wait = self.grace if grace is None else grace
        if wait > 0 and not self.queue.idle:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.drain(), wait)
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        left = self.queue.snapshot()
        if self.ledger is not None:
            ledger, self.ledger = self.ledger, None
            try:
                self.stats.saved = await ledger.save_pending(left)
            finally:
                await ledger.close()
        elif left:
            logger.warning(
                "webhook receiver stopped with %d labs queued and no database to keep them; "
                "the next reconciliation brings them",
                len(left),
            )
        return self.stats.saved

    async def _work(self) -> None:
        while True:
            lab_id, _ = await self.queue.take()
            try:
                applied = await apply_lab(self.client, self.destination, lab_id)
            except LodApiError:
                self.stats.unknown += 1
                logger.info("webhook: lab %d is not known to the server; skipped", lab_id)
                self.queue.done(lab_id)
                continue
            except (LodError, StoreError) as exc:
                n = self._failures[lab_id] = self._failures.get(lab_id, 0) + 1
                if n >= MAX_FAILURES:
                    self.stats.failed += 1
                    self._failures.pop(lab_id, None)
                    self.queue.done(lab_id)
                    logger.warning(
                        "webhook: lab %d failed %d times (%s); left to the reconciliation",
                        lab_id, n, type(exc).__name__,
                    )  # fmt: skip
                else:
                    self.queue.again(lab_id)
                continue
            except BaseException:
                self.queue.again(lab_id)  # cancelled: saved at stop with the rest
                raise
            self._failures.pop(lab_id, None)
            changed = applied.new + applied.changed > 0
            self.stats.applied += 1
            self.stats.changed += changed
            if self.ledger is not None:
                await self.ledger.record_applied(lab_id, self.clock(), changed)
            self.queue.done(lab_id)


async def _read(request: web.Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (the rest is not read)."""
    chunks: list[bytes] = []
    size = 0
    while chunk := await request.content.read(limit + 1 - size if size <= limit else 1):
        size += len(chunk)
        chunks.append(chunk)
        if size > limit:
            return None
    return b"".join(chunks)
