"""A test-double HTTP transport: a handler answers each request, its body a scripted stream (httpx's ``MockTransport``)."""

from __future__ import annotations

import asyncio
import inspect
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson

from langchain_pplx_labs.transports.base import ReadError, Request, Response
from langchain_pplx_labs.web.sse import sse_message

Handler = Callable[[Request], Response | Awaitable[Response]]


class ScriptedStream:
    """A body giving its chunks one per read, then its end; ``hold``: no end, it stays open until closed.

    An exception among the chunks breaks the stream there (the read raises :class:`ReadError`).
    """

    def __init__(self, chunks: Iterable[bytes | BaseException] = (), *, hold: bool = False) -> None:
        self._chunks = deque(chunks)
        self._hold = hold
        self._ended = False
        self.closed = False
        self.dropped = False
        """Closed before its end: the reader left, and a real transport would have dropped the connection."""

    async def receive(self) -> bytes:
        if self.closed:
            raise ReadError("the body was closed")
        if self._chunks:
            chunk = self._chunks.popleft()
            if isinstance(chunk, BaseException):
                raise ReadError(str(chunk)) from chunk
            await asyncio.sleep(0)  # each read yields to the loop, as a socket's does
            return chunk
        if self._hold:
            await asyncio.Event().wait()
        self._ended = True
        return b""

    @property
    def ended(self) -> bool:
        return self._ended

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.dropped = not self._ended


class MockTransport:
    """An ``HTTPTransport`` that asks ``handler`` for each response and keeps every request it was given.

    ``handler`` may return a response (or a coroutine of one) or raise the seam's errors
    (``ConnectError``, ``ConnectTimeout``, ``ReadError``) as a real transport would.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.closed = False

    async def handle_request(self, request: Request) -> Response:
        self.requests.append(request)
        if request.on_connected is not None:
            request.on_connected()
        answer = self.handler(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def aclose(self) -> None:
        self.closed = True


def json_response(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    head = {"Content-Type": "application/json", **(headers or {})}
    return Response(status, head.items(), ScriptedStream([orjson.dumps(data)]))


def sse_response(
    messages: Iterable[Mapping[str, Any] | bytes | BaseException], *, hold: bool = False
) -> tuple[Response, ScriptedStream]:
    """An event-stream answer: each mapping one SSE message of JSON data, bytes as they are; and its body."""
    stream = ScriptedStream(
        (sse_message(orjson.dumps(m).decode()) if isinstance(m, Mapping) else m for m in messages), hold=hold
    )
    return Response(200, [("Content-Type", "text/event-stream")], stream), stream
