"""
Blocking use of lodresults, for scripts and notebooks: no ``async``, no ``await``.

``lodresults.sync.LodClient`` has the methods of ``lodresults.LodClient``, blocking; its
``iter_results`` and ``iter_windows`` are plain iterators. Each client runs the async
client on an event loop of its own, in a thread of its own, so it works the same from a
plain script and from inside a running event loop (a Jupyter notebook), and never touches
the caller's loop::

    from datetime import date

    from lodresults.sync import LodClient

    with LodClient(api_key) as client:
        for lab in client.iter_results(date(2024, 1, 1), date(2024, 3, 31)):
            print(lab.lab_instance_id, lab.completion_status)

Errors are the same objects the async client raises (``except LodAuthError`` works
as there). Leaving a loop early (``break``) cancels the requests in flight at once.
``close()`` (or leaving the ``with`` block) ends the thread.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from pathlib import Path

from lodresults._client import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_CONCURRENCY,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RATE_LIMIT,
    DEFAULT_RETRY_INITIAL_WAIT,
    DEFAULT_RETRY_MAX_WAIT,
    DEFAULT_TIMEOUT,
)
from lodresults._client import LodClient as AsyncLodClient
from lodresults._clock import ServerClock
from lodresults._destinations.sqlite import SQLiteStore
from lodresults._engine.backfill import BackfillResult
from lodresults._engine.backfill import backfill as async_backfill
from lodresults._events import Event, EventHook
from lodresults._exceptions import LodInvalidArgument
from lodresults._loop_thread import LoopThread
from lodresults._records.models import LabResult
from lodresults._request.key import ApiKey
from lodresults._windows.batches import WindowBatch
from lodresults._windows.plan import TimeLike
from lodresults._windows.settle import DEFAULT_SETTLE

__all__ = ["LodClient", "backfill"]


class LodClient:
    """
    A blocking ``lodresults.LodClient``: same options (but ``session``), same methods.

    Use it as ``with LodClient(api_key) as client: ...`` or call ``close()``. Creating
    it starts a daemon thread that runs the client's own event loop; ``close()`` ends
    it. ``on_event`` hooks run in that thread. One client may be shared by threads.

    Args: as for ``lodresults.LodClient``.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        api_key: str,
        base_url: str = DEFAULT_BASE_URL,
        *,
        max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
        rate_limit: float | None = DEFAULT_RATE_LIMIT,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        on_event: EventHook | None = None,
        retry_initial_wait: float = DEFAULT_RETRY_INITIAL_WAIT,
        retry_max_wait: float = DEFAULT_RETRY_MAX_WAIT,
        deadline: float | None = None,
        clock: Callable[[], float] = time.time,
        proxy: str | None = None,
        trust_env: bool = False,
    ) -> None:
        key = ApiKey.checked(api_key)
        del api_key  # the ApiKey hides it; a plain str local would show in tracebacks
        if isinstance(key, LodInvalidArgument):
            raise key
        # Built here, in the caller's thread: a bad option raises before a thread starts.
        # Nothing in it is bound to an event loop until its first request.
        client = AsyncLodClient(
            key.reveal(),
            base_url,
            max_concurrency=max_concurrency,
            rate_limit=rate_limit,
            timeout=timeout,
            max_retries=max_retries,
            max_response_bytes=max_response_bytes,
            on_event=on_event,
            retry_initial_wait=retry_initial_wait,
            retry_max_wait=retry_max_wait,
            deadline=deadline,
            clock=clock,
            proxy=proxy,
            trust_env=trust_env,
        )
        self._client = client
        self._loop = LoopThread("lodresults.sync")
        # A client dropped without close() still ends its thread and closes its pool.
        self._finalizer = weakref.finalize(self, _stop, self._loop, client)

    # --- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> LodClient:
        self._client._ensure_open()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool and end the thread. Idempotent."""
        self._finalizer()

    @property
    def closed(self) -> bool:
        """True after ``close()``."""
        return self._client.closed

    def __repr__(self) -> str:
        # Also for a client whose __init__ failed: a traceback formatter may show it.
        client = getattr(self, "_client", None)
        return (
            f"lodresults.sync.{client!r}" if client is not None else "lodresults.sync.LodClient()"
        )

    @property
    def base_url(self) -> str:
        """The API root."""
        return self._client.base_url

    @property
    def clock(self) -> ServerClock:
        """The server's present as this client knows it (see ``LodClient.clock``)."""
        return self._client.clock

    def emit(self, event: Event, extra: EventHook | None = None) -> None:
        """Report ``event`` to the client's hook (and ``extra``), in the calling thread."""
        self._client.emit(event, extra)

    @property
    def current_rate(self) -> float | None:
        """The adaptive pace in requests per second right now (None = unpaced)."""
        return self._client.current_rate

    # --- commands ------------------------------------------------------------------------

    def result(self, lab_instance_id: int) -> LabResult:
        """The ``Result`` command: one lab instance by id (see ``LodClient.result``)."""
        return self._loop.run(self._client.result(lab_instance_id))

    def results(self, start: TimeLike, end: TimeLike) -> list[LabResult]:
        """The ``Results`` command: one request, at most 7 days (see ``LodClient.results``)."""
        return self._loop.run(self._client.results(start, end))

    def latest_results(self, minutes: int = 60) -> list[LabResult]:
        """The ``LatestResults`` command (see ``LodClient.latest_results``)."""
        return self._loop.run(self._client.latest_results(minutes))

    def iter_windows(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        ordered: bool = True,
        skip: Sequence[tuple[int, int]] = (),
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> Generator[WindowBatch, None, None]:
        """
        Each window of ``[start, end]`` as a ``WindowBatch`` (see
        ``LodClient.iter_windows``), as a plain iterator. Bad arguments raise here.
        """
        windows = self._client.iter_windows(
            start, end, ordered=ordered, skip=skip, on_event=on_event, deadline=deadline
        )
        return self._loop.iterate(windows)

    def iter_results(
        self,
        start: TimeLike,
        end: TimeLike,
        *,
        ordered: bool = True,
        on_event: EventHook | None = None,
        deadline: float | None = None,
    ) -> Iterator[LabResult]:
        """
        Every lab that started or ended in ``[start, end]``, each exactly once (see
        ``LodClient.iter_results``), as a plain iterator. Bad arguments raise here.

        ``break`` out of the loop at any time: the requests in flight are cancelled then.
        """
        # A window per round trip to the loop, not a record: the records of each batch
        # are what the async iter_results yields, in the same order.
        windows = self.iter_windows(
            start, end, ordered=ordered, on_event=on_event, deadline=deadline
        )
        return _records_of(windows)


def _records_of(windows: Generator[WindowBatch, None, None]) -> Iterator[LabResult]:
    with contextlib.closing(windows):  # left early: the windows' requests end at once
        for batch in windows:
            yield from batch.records


def _stop(loop: LoopThread, client: AsyncLodClient) -> None:
    loop.stop(client.close())


def backfill(
    client: LodClient,
    db: str | Path,
    since: TimeLike,
    until: TimeLike,
    *,
    settle: float = DEFAULT_SETTLE,
    refresh: bool = False,
    feed_only: bool = False,
    on_event: EventHook | None = None,
) -> BackfillResult:
    """
    ``lodresults.backfill`` into the SQLite file ``db`` (created if missing), blocking:
    every lab that started or ended in ``[since, until]``, resuming from the file's
    checkpoints. The file is closed before it returns.

    .. versionadded:: 0.1.0
    """
    path = Path(db)

    async def job() -> BackfillResult:
        store = await SQLiteStore.open(path)
        try:
            return await async_backfill(
                client._client, store, since, until, settle=settle, refresh=refresh,
                feed_only=feed_only, on_event=on_event,
            )  # fmt: skip
        finally:
            await store.close()

    return client._loop.run(job())
