"""Closes that outlive their caller, and bounded waits for them and for a wire's tasks to end."""

from __future__ import annotations

import asyncio
from typing import Any

# How long a polite close may wait for the server's goodbye before the socket is dropped: a
# close runs in the lease's ``finally``, so every error would otherwise reach the caller late.
GRACEFUL_CLOSE_SECONDS = 1.0

# Closes that outlived a cancelled caller: referenced so the loop does not drop them mid-way.
closing_tasks: set[asyncio.Future[None]] = set()


def track(future: asyncio.Future[None]) -> asyncio.Future[None]:
    """Keep ``future`` referenced until it is done (and visible to :func:`settle_closes`)."""
    closing_tasks.add(future)
    future.add_done_callback(closing_tasks.discard)
    return future


async def stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    """Cancel a wire's background tasks (engine.io's loops, a reader) and wait (bounded) for them to end.

    The cancel is repeated: on Python 3.11 a ``wait_for`` whose inner wait finishes just
    as the cancel lands swallows it, and the write loop would then idle on for 30 s.
    """
    deadline = asyncio.get_running_loop().time() + GRACEFUL_CLOSE_SECONDS
    pending = {task for task in tasks if not task.done()}
    while pending and asyncio.get_running_loop().time() < deadline:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.05)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a loop that failed must not log "never retrieved"


async def settle_closes() -> None:
    """Wait (bounded) for this loop's background closes and goodbyes, before their session closes.

    Closes start goodbyes as they go, so the set is read again until nothing new is pending.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GRACEFUL_CLOSE_SECONDS
    while mine := [task for task in closing_tasks if task.get_loop() is loop and not task.done()]:
        left = deadline - loop.time()
        if left <= 0:
            return
        await asyncio.wait(mine, timeout=left)


def being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
