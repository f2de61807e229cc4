"""A private background event loop that runs async work for sync callers, even inside Jupyter."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop sync calls run on; started on first use, stopped at exit.

    One long-lived loop (rather than ``asyncio.run`` per call) lets sync callers
    reuse warm sockets, and it works when the calling thread already runs a loop.
    """
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="pplx-labs-sync", daemon=True)
            thread.start()
            _loop = loop
            atexit.register(_shutdown, loop, thread)
        return _loop


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the background loop and wait for its result in this thread."""
    future = asyncio.run_coroutine_threadsafe(coro, background_loop())
    try:
        return future.result()
    except BaseException:
        if not future.done():
            future.cancel()
            concurrent.futures.wait([future], timeout=5)
        raise


def iterate_sync(stream: AsyncIterator[T]) -> Iterator[T]:
    """Iterate an async iterator from sync code; breaking out closes it on its loop."""
    try:
        while True:
            try:
                item = run_sync(_next(stream))
            except StopAsyncIteration:
                return
            yield item
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            _close_on_loop(close())


def _close_on_loop(closing: Coroutine[Any, Any, Any]) -> None:
    try:
        on_loop = asyncio.get_running_loop() is background_loop()
    except RuntimeError:
        on_loop = False
    if not on_loop:
        run_sync(closing)
        return
    # Only the garbage collector finalises a half-read generator on the loop thread. Waiting
    # there for the loop would block it forever; the async stream is garbage too, and the
    # loop's async-generator finaliser closes it (a second close would race that one).
    closing.close()


async def _next(stream: AsyncIterator[T]) -> T:
    return await stream.__anext__()


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    if loop.is_closed():
        return
    # Finalises the pools' lifespan generators, which close their sockets cleanly.
    with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
        asyncio.run_coroutine_threadsafe(loop.shutdown_asyncgens(), loop).result(timeout=5)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not loop.is_running():
        loop.close()
