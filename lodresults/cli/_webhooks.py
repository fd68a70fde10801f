"""
``lodresults serve-webhooks``: receive Lab on Demand's pushes and keep a database current.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO

import click
from aiohttp import web

from lodresults._client import LodClient
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._request.key import is_loopback
from lodresults._webhooks.receiver import DEFAULT_PATH, WebhookReceiver

__all__ = ["secret_from_env", "serve_webhooks"]

SECRET_ENV = "LOD_WEBHOOK_SECRET"  # noqa: S105 - the variable's name


def secret_from_env() -> str:
    """The shared secret from ``LOD_WEBHOOK_SECRET``; a usage error if unset."""
    secret = os.environ.get(SECRET_ENV, "").strip()
    if not secret:
        raise click.UsageError(
            f"no webhook secret: set {SECRET_ENV} to the exact header value the vendor sends"
        )
    return secret


async def serve_webhooks(
    make_client: Callable[..., LodClient],
    *,
    db: Path,
    host: str,
    port: int,
    secret: str,
    secret_header: str,
    allow: Sequence[str],
    out: IO[str],
) -> None:
    """Serve until cancelled; then finish the queue or save it in ``db``."""
    store = await SQLiteStore.open(db)
    try:
        async with make_client() as client:
            receiver = WebhookReceiver(
                client,
                store,
                secret=secret,
                secret_header=secret_header,
                allow=allow,
                db=db,
            )
            del secret
            runner = web.AppRunner(receiver.app(), access_log=None, handle_signals=False)
            await runner.setup()
            try:
                site = web.TCPSite(runner, host, port)
                await site.start()
                bound = runner.addresses[0][1] if runner.addresses else port
                shown = f"[{host}]" if ":" in host else host
                print(
                    f"serve-webhooks: listening on http://{shown}:{bound}{DEFAULT_PATH}?id={{id}}"
                    f"\nserve-webhooks: {receiver.stats.resumed:,} labs resumed from the last stop",
                    file=out,
                    flush=True,
                )
                if not is_loopback(host):
                    print(
                        "serve-webhooks: warning: plain HTTP on a public address; put a "
                        "TLS proxy in front (the secret travels in a header)",
                        file=out,
                        flush=True,
                    )
                await asyncio.Event().wait()
            finally:
                await runner.cleanup()  # stops the receiver: finish, or save the queue
                s = receiver.stats
                print(
                    f"serve-webhooks: {s.received:,} pushes, {s.applied:,} labs applied "
                    f"({s.changed:,} changed)\nserve-webhooks: {s.saved:,} labs saved for the "
                    "next start",
                    file=out,
                    flush=True,
                )
    finally:
        await store.close()
