"""aiohttp request tracing that lets a connect time its phases and find what it opened."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from types import SimpleNamespace

import aiohttp


class Opening:
    """What one ``open()`` did on the shared HTTP session, reported by aiohttp's tracing.

    engine.io keeps an upgrade WebSocket in a local until the upgrade finishes, so a
    cancel or error mid-upgrade would leave it open: its response is noted here to close.
    The first TCP connection marks the end of ``connect`` and the start of ``handshake``.
    A redirect is shown to ``on_redirect`` before it is followed.
    """

    def __init__(self) -> None:
        self.active = True
        self.responses: list[aiohttp.ClientResponse] = []
        self.on_connected: Callable[[], None] | None = None
        # Called before aiohttp follows a redirect (engine.io and ws_connect follow them): raising stops it.
        self.on_redirect: Callable[[aiohttp.TraceRequestRedirectParams], None] | None = None
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


async def trace_connection(session: aiohttp.ClientSession, context: SimpleNamespace, params: object) -> None:
    opening = current_opening()
    if opening is not None:
        opening.connected()


async def trace_response(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
) -> None:
    opening = current_opening()
    if opening is not None:
        opening.responses.append(params.response)


async def trace_redirect(
    session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestRedirectParams
) -> None:
    opening = current_opening()
    if opening is not None and opening.on_redirect is not None:
        opening.on_redirect(params)


def labs_trace_config() -> aiohttp.TraceConfig:
    """Tracing for a pool's HTTP session, so ``open()`` can time and clean up its own requests."""
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(trace_connection)
    trace.on_connection_reuseconn.append(trace_connection)
    trace.on_request_end.append(trace_response)
    trace.on_request_redirect.append(trace_redirect)
    return trace


def is_traced(session: aiohttp.ClientSession) -> bool:
    """Whether ``session`` carries :func:`labs_trace_config` (the pool's sessions do)."""
    return any(
        trace_connection in config.on_connection_create_end
        for config in getattr(session, "_trace_configs", ())
    )
