"""A hand-written stand-in for Perplexity's web app on a real port, for answers the emulator has no scenario for."""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from loopback import serving_app
from multidict import CIMultiDict

from langchain_pplx_labs.web.sse import sse_message

ASK = "/rest/sse/perplexity_ask"
SESSION = "/api/auth/session"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Seen:
    """One request the fake received: what a test may check the client sent."""

    path: str
    headers: CIMultiDict[str]
    body: Any
    client_port: int


class FakeWebApp:
    """Answers ``GET /api/auth/session`` and ``POST /rest/sse/perplexity_ask`` with handlers a test sets."""

    def __init__(self) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.seen: list[Seen] = []
        self.session: Handler = anonymous
        self.ask: Handler = not_found
        self.base_url = ""

    async def _note(self, request: web.Request, kind: str) -> None:
        self.hits[kind] += 1
        raw = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.seen.append(
            Seen(
                request.path,
                CIMultiDict(request.headers),
                orjson.loads(raw) if raw else None,
                peer[1] if peer else 0,
            )
        )

    async def _session(self, request: web.Request) -> web.StreamResponse:
        await self._note(request, "session")
        return await self.session(request)

    async def _ask(self, request: web.Request) -> web.StreamResponse:
        await self._note(request, "ask")
        return await self.ask(request)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(SESSION, self._session)
        app.router.add_post(ASK, self._ask)
        return app


async def anonymous(request: web.Request) -> web.StreamResponse:
    return web.json_response({})


async def not_found(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="404: Not Found")


def answer_message(answer: str, *, final: bool = False, sources: Sequence[str] = ()) -> dict[str, Any]:
    """One message of the web app's older stream: ``text`` holding the answer so far as JSON."""
    content: dict[str, Any] = {"answer": answer, "web_results": [{"url": url} for url in sources]}
    message: dict[str, Any] = {"text": orjson.dumps(content).decode()}
    if final:
        message["final_sse_message"] = True
    return message


def streaming(
    messages: Sequence[dict[str, Any] | bytes], *, then: Callable[[], Awaitable[None]] | None = None
) -> Handler:
    """A handler sending ``messages`` (dicts as SSE data, bytes as they are), then ``then()``, then the end."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for message in messages:
            raw = message if isinstance(message, bytes) else sse_message(orjson.dumps(message).decode())
            await response.write(raw)
        if then is not None:
            await then()
        await response.write_eof()
        return response

    return handler


async def forever() -> None:
    """Hold the stream open until the client leaves (the server then cancels the handler)."""
    await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def serving() -> AsyncIterator[FakeWebApp]:
    """A fresh fake on a free port of 127.0.0.1, stopped on the way out."""
    fake = FakeWebApp()
    async with serving_app(fake.app()) as fake.base_url:
        yield fake
