"""The single timer of a running query: which timeout applies now, and when it runs out."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any


class Deadline:
    """Tells a query's inbox when the timeout that applies now has run out.

    Moving the deadline after each frame is a float store: the one timer re-arms itself
    when it fires early, instead of a new timer (``asyncio.timeout``) per awaited frame.
    The ``total`` budget, counted from ``started`` (``time.monotonic``), caps every wait.
    """

    ITEM = ("deadline", None)

    def __init__(self, inbox: asyncio.Queue[tuple[str, Any]], started: float, total: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._inbox = inbox
        self._total = total
        # On the loop's clock, which need not be time.monotonic (uvloop has its own).
        self._total_at = (
            math.inf if total is None else self._loop.time() + total - (time.monotonic() - started)
        )
        self.which = "total"
        self.limit = 0.0
        self._at = math.inf
        self._timer: asyncio.TimerHandle | None = None

    def wait(self, which: str, limit: float | None) -> None:
        """From now on, ``which`` (``limit`` seconds, ``None`` for no limit) applies."""
        at = math.inf if limit is None else self._loop.time() + limit
        if self._total_at <= at:
            which, limit, at = "total", self._total, self._total_at
        self.which, self.limit, self._at = which, limit or 0.0, at
        if self._timer is not None and self._timer.when() > at:
            self._timer.cancel()
            self._timer = None
        if self._timer is None and at < math.inf:
            self._timer = self._loop.call_at(at, self._fire)

    @property
    def expired(self) -> bool:
        return self._loop.time() >= self._at

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _fire(self) -> None:
        self._timer = None
        if self.expired:
            self._inbox.put_nowait(self.ITEM)
        elif self._at < math.inf:
            self._timer = self._loop.call_at(self._at, self._fire)
