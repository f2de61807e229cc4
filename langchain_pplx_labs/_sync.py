"""A private background event loop that runs async work for sync callers, even inside Jupyter."""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

# How long interpreter exit waits for closes still in flight (a dropped model's pool says
# goodbye and closes its HTTP session): each close is bounded by about two seconds itself.
EXIT_GRACE_SECONDS = 3.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def background_loop() -> asyncio.AbstractEventLoop:
    """The shared loop sync calls run on; started on first use, stopped at exit.

    One long-lived loop (rather than ``asyncio.run`` per call) lets sync callers
    reuse warm sockets, and it works when the calling thread already runs a loop.
    A process made by ``fork`` starts its own (the parent's thread does not exist there).
    """
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="pplx-labs-sync", daemon=True)
            thread.start()
            _loop = loop
            atexit.register(_shutdown, loop, thread, os.getpid())
        return _loop


def _forget_after_fork() -> None:
    # The child has the parent's loop object but not the thread running it: a sync call
    # would wait forever. Forget it (never close it: its sockets are the parent's too).
    global _loop, _lock
    _loop = None
    _lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_forget_after_fork)


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
        _close_from_sync(stream)


def _close_from_sync(stream: AsyncIterator[Any]) -> None:
    if getattr(stream, "aclose", None) is None:
        return
    try:
        on_loop = asyncio.get_running_loop() is _loop
    except RuntimeError:
        on_loop = False
    if on_loop:
        # Only the garbage collector finalises a half-read generator on the loop thread.
        # Waiting there for the loop would block it forever; the async stream is garbage
        # too, and the loop's async-generator finaliser closes it. Even creating its
        # aclose() here would race that one (Python 3.13 refuses: "already running").
        return
    run_sync(_aclose(stream))


async def _aclose(stream: Any) -> None:
    await stream.aclose()


async def _next(stream: AsyncIterator[T]) -> T:
    return await stream.__anext__()


def _shutdown(loop: asyncio.AbstractEventLoop, thread: threading.Thread, pid: int) -> None:
    if loop.is_closed() or os.getpid() != pid:
        return  # a forked child inherits this hook, not the loop's thread
    with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
        future = asyncio.run_coroutine_threadsafe(_finish_work(), loop)
        future.result(timeout=EXIT_GRACE_SECONDS + 2)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)
    if not loop.is_running():
        loop.close()


async def _finish_work() -> None:
    """Let the closes in flight end, so none is destroyed half-way when the loop stops.

    ``shutdown_asyncgens`` finalises the pools of live models; the pools of models
    dropped earlier are already closing, in tasks of their own that it does not see.
    """
    loop = asyncio.get_running_loop()
    await loop.shutdown_asyncgens()
    deadline = loop.time() + EXIT_GRACE_SECONDS
    while others := asyncio.all_tasks() - {asyncio.current_task()}:
        left = deadline - loop.time()
        if left <= 0:
            break
        # Closes start goodbyes as they go: read the set again until nothing is pending.
        await asyncio.wait(others, timeout=left)
    for task in others:
        task.cancel()  # still running at exit (a call from another thread): cut it short
    if others:
        await asyncio.wait(others, timeout=1.0)
