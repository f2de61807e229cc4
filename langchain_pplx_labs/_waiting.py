"""What a running query waits on: its inbox of items, and the one deadline that bounds the wait."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from langchain_pplx_labs.errors import LABS, PerplexityLabsTimeoutError

T = TypeVar("T")
Item = tuple[str, Any]


class Inbox:
    """What a wire reported during a query, in order: a deque, awaitable only when asked to be.

    A query that reads the socket inline never awaits the inbox, so a frame costs an
    append and a popleft, not asyncio.Queue's waiter bookkeeping.
    """

    def __init__(self) -> None:
        self._items: deque[Item] = deque()
        self._waiter: asyncio.Future[None] | None = None

    def __bool__(self) -> bool:
        return bool(self._items)

    def put(self, item: Item) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> Item:
        return self._items.popleft()

    async def get(self) -> Item:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class Deadline:
    """Bounds a query's waits by the timeout that applies now (``handshake``, ``idle``...).

    Moving the deadline after each frame is a float store: the one timer re-arms itself
    when it fires early, instead of a new timer (``asyncio.timeout``) per awaited frame.
    Like ``asyncio.timeout``, an expiry cancels the waiting task and ``wait`` turns that
    cancel, and only that one, into :class:`PerplexityLabsTimeoutError`. The ``total``
    budget, counted from ``started`` (``time.monotonic``), caps every wait.
    """

    def __init__(self, started: float, total: float | None, *, service: str = LABS) -> None:
        self._loop = asyncio.get_running_loop()
        self._service = service  # who the timeout names as silent
        self._total = total
        self._total_at = math.inf if total is None else started + total  # time.monotonic() clock
        self.which = "total"
        self.limit = 0.0
        self._at = math.inf
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = math.inf  # when the armed timer fires, on the time.monotonic() clock
        # The task in wait() now: a sync caller steps the query from a new task each frame.
        self._waiter: asyncio.Task[Any] | None = None
        self._cancelled = False
        self._passed = False  # expired while nobody waited: the next wait raises

    def applies(self, which: str, limit: float | None) -> None:
        """From now on, ``which`` (``limit`` seconds from now; ``None``: no limit) applies."""
        now = time.monotonic()
        at = math.inf if limit is None else now + limit
        if self._total_at <= at:
            which, limit, at = "total", self._total, self._total_at
        self.which, self.limit, self._at = which, limit or 0.0, at
        self._passed = at <= now
        if self._timer is not None and self._timer_at > at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and at < math.inf:
            self._arm(at, now)

    def _arm(self, at: float, now: float) -> None:
        self._timer_at = at
        self._timer = self._loop.call_later(at - now, self._fire)

    def error(self) -> PerplexityLabsTimeoutError:
        return PerplexityLabsTimeoutError(self.which, self.limit, service=self._service)

    async def wait(self, start: Callable[[], Awaitable[T]]) -> T:
        """Await what ``start()`` returns, raising :meth:`error` if the deadline passes first."""
        if self._passed:
            raise self.error()
        task = self._waiter = asyncio.current_task()
        assert task is not None, "Deadline.wait runs in a task"
        cancelling = task.cancelling()
        try:
            return await start()
        except asyncio.CancelledError:
            if self._cancelled and task.uncancel() <= cancelling:
                raise self.error() from None
            raise
        finally:
            self._waiter = None
            self._cancelled = False

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        now = time.monotonic()
        if self._at > now:
            if self._at < math.inf:
                self._arm(self._at, now)
        elif self._waiter is None:
            self._passed = True
        elif not self._cancelled:
            self._cancelled = True
            self._waiter.cancel()
