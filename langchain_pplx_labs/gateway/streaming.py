"""The gateway's wire form: an event stream's head, each server-sent event as one JSON object, JSON bodies."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

# No caching, and no buffering by a proxy (nginx's header) that would hold the deltas back.
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def event_stream(request: web.Request) -> web.StreamResponse:
    """The response to ``request`` as a ``text/event-stream``, its head sent."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    return response


def sse_event(data: Any, event: str = "") -> bytes:
    """One event: an ``event:`` line when named, then ``data`` as one line of JSON (which holds no raw newline)."""
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(data) + b"\n\n"


def dumps(value: Any) -> str:
    """``value`` as JSON text, for ``web.json_response``."""
    return orjson.dumps(value).decode()
