"""
Freshness in seconds: receive Lab on Demand's webhooks and apply the labs they name.

Lab on Demand pushes lab events (Scored, Torn Down ...) to an "API consumer" URL. Each
push only says which lab changed: the receiver answers at once (202), then fetches the
lab with ``Result`` under the client's limits and applies it to the store, newest fetch
wins, exactly as ``backfill`` and ``watch`` write. Pushes get lost (the vendor gives up
after about 15 s of retries), so keep a reconciliation running (``watch``, or a nightly
``backfill``): it brings what webhooks missed and reports the miss rate.

::

    import os
    from aiohttp import web
    from lodresults import LodClient, SQLiteStore
    from lodresults.webhooks import webhook_app

    async def make_app() -> web.Application:
        client = LodClient(os.environ["LOD_API_KEY"])
        store = await SQLiteStore.open("results.db")
        return webhook_app(client, store, secret=os.environ["LOD_WEBHOOK_SECRET"])

The command ``lodresults serve-webhooks --db results.db`` does the same.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from lodresults._client import LodClient
from lodresults._destinations.base import Destination
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._events import WebhookMisses
from lodresults._webhooks.inbox import KNOWN_EVENTS
from lodresults._webhooks.misses import MissCounter
from lodresults._webhooks.receiver import (
    DEFAULT_MAX_BODY,
    DEFAULT_PATH,
    DEFAULT_QUEUE,
    DEFAULT_SECRET_HEADER,
    ReceiverStats,
    WebhookReceiver,
    apply_lab,
)

__all__ = [
    "DEFAULT_MAX_BODY",
    "DEFAULT_PATH",
    "DEFAULT_QUEUE",
    "DEFAULT_SECRET_HEADER",
    "KNOWN_EVENTS",
    "RECEIVER",
    "MissCounter",
    "ReceiverStats",
    "WebhookMisses",
    "WebhookReceiver",
    "apply_lab",
    "webhook_app",
]

#: The key under which ``webhook_app`` keeps its ``WebhookReceiver``.
RECEIVER: web.AppKey[WebhookReceiver] = web.AppKey("lodresults_receiver", WebhookReceiver)


def webhook_app(
    client: LodClient,
    destination: Destination,
    *,
    secret: str,
    secret_header: str = DEFAULT_SECRET_HEADER,
    allow: Sequence[str] = (),
    path: str = DEFAULT_PATH,
    max_body: int = DEFAULT_MAX_BODY,
    queue_size: int = DEFAULT_QUEUE,
    grace: float = 10.0,
) -> web.Application:
    """
    An ``aiohttp.web.Application`` receiving pushes at ``path`` and applying the labs they
    name to ``destination`` through ``client`` (both owned by the caller).

    ``secret`` is the exact value the vendor sends in the ``secret_header`` header (its
    form takes static ``name=value`` headers: ``Authorization=Basic ...`` or a token);
    ``allow``: CIDR blocks the pushes may come from (all if empty). With an
    ``SQLiteStore`` the ids still queued at shutdown are kept in its database and resumed
    at the next start. The receiver is ``app[RECEIVER]`` (see ``WebhookReceiver``).

    .. versionadded:: 0.2.0
    """
    receiver = WebhookReceiver(
        client,
        destination,
        secret=secret,
        secret_header=secret_header,
        allow=allow,
        max_body=max_body,
        queue_size=queue_size,
        grace=grace,
        db=destination.path if isinstance(destination, SQLiteStore) else None,
    )
    app = receiver.app(path)
    app[RECEIVER] = receiver
    return app
