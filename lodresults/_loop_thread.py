"""
An event loop of its own, running in a dedicated thread, that blocking code hands
coroutines to (the engine of ``lodresults.sync``).

It never touches the caller's event loop or thread: it works from plain scripts and from
inside a running loop (Jupyter), and changes no process-wide state (no policy, no signal
handler, no ``set_event_loop`` outside its own thread).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncGenerator, Coroutine, Generator
from typing import Any, Final, TypeVar

from lodresults._exceptions import LodClientClosed

__all__ = ["LoopThread"]

T = TypeVar("T")

#: Seconds ``stop`` waits for the loop to finish its cleanup before giving up on it.
_STOP_TIMEOUT: Final = 30.0


class LoopThread:
    """A started event loop in a daemon thread; ``run`` blocks on one coroutine."""

    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._stopped = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)  # this thread's only: it is ours
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    @property
    def thread(self) -> threading.Thread:
        """The thread the loop runs in."""
        return self._thread

    @property
    def stopped(self) -> bool:
        """True once ``stop`` has run."""
        return self._stopped

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """
        Run ``coro`` on the loop and return its result, or raise what it raised (the
        same object, so its type and fields survive). An interruption of the waiting
        thread (Ctrl-C) cancels the coroutine.
        """
        if threading.current_thread() is self._thread:
            coro.close()
            raise _reentered()
        with self._lock:
            if self._stopped:
                coro.close()
                raise LodClientClosed("the lodresults.sync.LodClient is closed")
            future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._stopped:  # stop() cancelled what was still running
                raise LodClientClosed("the lodresults.sync.LodClient was closed") from None
            raise
        except BaseException:
            future.cancel()  # a no-op once done; cancels the task if we were interrupted
            raise

    def iterate(self, agen: AsyncGenerator[T, None]) -> Generator[T, None, None]:
        """
        A plain iterator over ``agen``, one item per round trip to the loop. Leaving it
        early (``break``, an exception, ``close()``) closes ``agen`` on the loop at once,
        so that what it started (requests in flight) is cancelled.
        """
        try:
            while True:
                try:
                    item = self.run(_anext(agen))
                except StopAsyncIteration:
                    return
                yield item
        finally:
            self._close_later_or_now(agen)

    def _close_later_or_now(self, agen: AsyncGenerator[Any, None]) -> None:
        if threading.current_thread() is self._thread:
            # Collected by the loop's own thread: it cannot wait for itself.
            self._loop.create_task(agen.aclose())
            return
        with contextlib.suppress(LodClientClosed):  # stop() closes every async generator
            self.run(agen.aclose())

    def stop(self, closing: Coroutine[Any, Any, None] | None = None) -> None:
        """
        Run ``closing`` (if any), close the async generators still open on the loop,
        stop it and wait for the thread to end. Idempotent.
        """
        with self._lock:
            if self._stopped:
                if closing is not None:
                    closing.close()
                return
            self._stopped = True
        if threading.current_thread() is self._thread:
            # From the loop itself (a client dropped or closed in a hook): it cannot wait
            # for itself, so the loop shuts down and stops once this callback returns.
            task = self._loop.create_task(self._shutdown(closing))
            task.add_done_callback(lambda _: self._loop.stop())
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(closing), self._loop)
        try:
            future.result(_STOP_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT)

    async def _shutdown(self, closing: Coroutine[Any, Any, None] | None) -> None:
        try:
            if closing is not None:
                await closing
        finally:
            # What another thread still waits for ends now (as LodClientClosed there).
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._loop.shutdown_asyncgens()
            await self._loop.shutdown_default_executor()


def _reentered() -> RuntimeError:
    return RuntimeError(
        "a blocking lodresults.sync call was made from its own event loop (from an "
        "on_event hook?): it would wait for itself; use the async LodClient there"
    )


async def _anext(agen: AsyncGenerator[T, None]) -> T:
    # run_coroutine_threadsafe takes coroutines only, and __anext__() is an awaitable.
    return await agen.__anext__()
