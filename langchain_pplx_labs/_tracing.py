"""What one connect did, as its transport's tracing reports it: its first connection, the responses to close, a redirect."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Protocol


class Closable(Protocol):
    def close(self) -> None: ...


class Opening:
    """What one ``open()`` did, reported by the Labs dialer's tracing (``labs.dial``) or the web wire.

    engine.io keeps an upgrade WebSocket in a local until the upgrade finishes, so a
    cancel or error mid-upgrade would leave it open: its response is noted here to close.
    The first TCP connection marks the end of ``connect`` and the start of ``handshake``.
    A redirect is shown to ``on_redirect`` (its URL, status and Location) before it is followed.
    """

    def __init__(self) -> None:
        self.active = True
        self.responses: list[Closable] = []
        self.on_connected: Callable[[], None] | None = None
        # Called before aiohttp follows a redirect (engine.io and ws_connect follow them): raising stops it.
        self.on_redirect: Callable[[str, int, str], None] | None = None
        self.tcp_connected = False

    def connected(self) -> None:
        self.tcp_connected = True
        callback, self.on_connected = self.on_connected, None
        if callback is not None:
            callback()


# Set for the duration of an open(); engine.io's loop tasks inherit it, hence ``active``.
OPENING: contextvars.ContextVar[Opening | None] = contextvars.ContextVar("labs_opening", default=None)


def current_opening() -> Opening | None:
    opening = OPENING.get()
    return opening if opening is not None and opening.active else None
