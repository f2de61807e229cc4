"""The gateway's aiohttp application: chat completions over the package's own chat model and pool."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import aclosing, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from aiohttp import web
from langchain_core.messages import AIMessageChunk, BaseMessage
from pydantic import SecretStr

from langchain_pplx_labs.chat_models import ChatPerplexityLabs
from langchain_pplx_labs.gateway import anthropic, responses_api
from langchain_pplx_labs.gateway.errors import GatewayError, internal, next_chunk
from langchain_pplx_labs.gateway.responses import Completion, Ending, ReasoningMode, Translator
from langchain_pplx_labs.gateway.schema import ChatRequest, parse_request, to_langchain
from langchain_pplx_labs.gateway.streaming import dumps, event_stream, sse_event
from langchain_pplx_labs.gateway.threads import Threads
from langchain_pplx_labs.protocol import KNOWN_MODELS, LabsProtocol

logger = logging.getLogger("langchain_pplx_labs.gateway")

PerplexityStream = Literal["sources-first", "live"]
PERPLEXITY_STREAMS: tuple[PerplexityStream, ...] = ("sources-first", "live")
REASONING_MODES: tuple[ReasoningMode, ...] = ("separate", "inline", "drop")
_DONE = b"data: [DONE]\n\n"
_OPEN_PATHS = frozenset({"/healthz"})


@dataclass(frozen=True)
class GatewaySettings:
    """How the gateway reaches Labs and what it accepts; fixed by the operator, never by a request."""

    base_url: str | None = None
    """Labs server root; ``None``: the model's default (``PPLX_LABS_BASE_URL`` or the live site)."""
    api_key: str | None = field(default=None, repr=False)
    """Bearer token clients must send; ``None`` accepts any (loopback only, see the CLI)."""
    reasoning: ReasoningMode = "separate"
    """``separate``: thinking in ``reasoning_content``; ``inline``: ``<think>…</think>`` in content; ``drop``."""
    perplexity_stream: PerplexityStream = "sources-first"
    """On ``/chat/completions`` (Perplexity clients): hold a stream until its sources are known, or stream live."""
    max_body_bytes: int = 4 * 1024 * 1024
    max_messages: int = 512
    max_connections: int = 64
    """Answers in flight per process (the pool may hold as many more sockets draining abandoned answers)."""
    queue_timeout: float = 30.0
    """Seconds a request may wait for a socket before it gets a 503."""
    model_options: dict[str, Any] = field(default_factory=dict, repr=False)
    """Further ``ChatPerplexityLabs`` fields (timeouts, proxy, cookies, headers): operator settings."""

    @classmethod
    def from_env(cls) -> GatewaySettings:
        """Settings from ``PPLX_LABS_GATEWAY_*`` variables, for app factories (gunicorn); bad values raise."""
        env = os.environ
        return cls(
            base_url=env.get("PPLX_LABS_BASE_URL") or None,
            api_key=env.get("PPLX_LABS_GATEWAY_API_KEY") or None,
            reasoning=cast("ReasoningMode", _choice(env, "PPLX_LABS_GATEWAY_REASONING", REASONING_MODES)),
            perplexity_stream=cast(
                "PerplexityStream", _choice(env, "PPLX_LABS_GATEWAY_PERPLEXITY_STREAM", PERPLEXITY_STREAMS)
            ),
            max_connections=_count(env, "PPLX_LABS_GATEWAY_MAX_CONNECTIONS", 64),
            model_options=_protocol_option(env.get("PPLX_LABS_GATEWAY_PROTOCOL")),
        )

    def secrets(self) -> list[str]:
        """Values that must never appear in a response or a log line."""
        values = [self.api_key]
        for name in ("cookies", "default_headers", "proxy"):
            value = self.model_options.get(name)
            if isinstance(value, dict):
                values.extend(value.values())
            elif isinstance(value, SecretStr):
                values.append(value.get_secret_value())
            elif value is not None:
                values.append(str(value))
        return [value for value in values if isinstance(value, str) and len(value) >= 4]


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ValueError(f"{name}={value!r}: use one of {', '.join(choices)}")
    return value


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name) or str(default)
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{name}={text!r}: use a whole number of 1 or more")
    return int(text)


def _protocol_option(path: str | None) -> dict[str, Any]:
    return {} if not path else {"protocol": LabsProtocol.from_file(path)}


class Gateway:
    """One chat model (so one Labs client and one pool per loop) and the admission limit in front of it."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        options: dict[str, Any] = {
            # Twice the answers admitted: a socket whose client left keeps its pool slot while the rest
            # of its answer is drained, and an admitted request must not wait behind that drain.
            "max_connections": 2 * settings.max_connections,
            "reasoning": False if settings.reasoning == "drop" else None,
            **settings.model_options,
        }
        if settings.base_url is not None:
            options["base_url"] = settings.base_url
        self.model = ChatPerplexityLabs(**options)
        self._secrets = settings.secrets()
        self._slots: asyncio.Semaphore | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self.threads = Threads()
        """The web threads of this process's answers, so a client's next turn continues its thread."""

    @property
    def in_flight(self) -> int:
        """Requests whose handler is running now."""
        return len(self._in_flight)

    def cancel_in_flight(self) -> int:
        """Cancel every request being answered, for a server that stops without waiting; how many there were.

        Each one's chunk stream is closed as it unwinds, which gives its Labs socket back, and its client's
        connection is closed without an answer.
        """
        tasks = list(self._in_flight)
        for task in tasks:
            task.cancel()
        return len(tasks)

    @contextmanager
    def answering(self) -> Iterator[None]:
        """Count the current task (a request's handler) as a request in flight while the block runs."""
        task = asyncio.current_task()
        assert task is not None, "aiohttp handles every request in a task"
        self._in_flight.add(task)
        try:
            yield
        finally:
            self._in_flight.discard(task)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    @asynccontextmanager
    async def admission(self) -> AsyncIterator[None]:
        """A place among ``max_connections`` answers in flight, or a 503 after ``queue_timeout``."""
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.settings.max_connections)
        try:
            async with asyncio.timeout(self.settings.queue_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise GatewayError(
                503,
                f"All {self.settings.max_connections} Labs connections stayed busy for "
                f"{self.settings.queue_timeout:g}s; try again later",
                type="server_error",
                code="overloaded",
            ) from None
        try:
            yield
        finally:
            self._slots.release()

    def stream(
        self, request: ChatRequest, messages: list[BaseMessage]
    ) -> AsyncGenerator[AIMessageChunk, None]:
        """The answer's chunks; a history this process answered continues that answer's web thread."""
        asked = self.threads.continued(messages)
        chunks = self.model.astream(asked, stop=request.stop_list(), **request.model_kwargs())
        return self.threads.kept(messages, cast("AsyncGenerator[AIMessageChunk, None]", chunks))


GATEWAY = web.AppKey("gateway", Gateway)


def create_app(settings: GatewaySettings | None = None) -> web.Application:
    """The gateway as an aiohttp application (settings from the environment when not given)."""
    gateway = Gateway(settings or GatewaySettings.from_env())
    app = web.Application(
        middlewares=[_in_flight, _errors, anthropic.errors_and_key, _auth],
        client_max_size=gateway.settings.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/chat/completions", chat_completions)
    app.router.add_get("/v1/models", models)
    anthropic.register(app, gateway)
    responses_api.register(app, gateway)
    app.router.add_get("/healthz", healthz)
    app.on_cleanup.append(_close_model)
    return app


async def app_factory() -> web.Application:
    """For gunicorn's aiohttp worker: ``gunicorn langchain_pplx_labs.gateway.app:app_factory -k aiohttp.GunicornWebWorker``."""
    return create_app()


async def _close_model(app: web.Application) -> None:
    await app[GATEWAY].model.aclose()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _in_flight(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every request is counted while it is answered, so a stopping server can cancel what is left."""
    with request.app[GATEWAY].answering():
        return await handler(request)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure answers in OpenAI's error shape; one log line per request, without secrets."""
    gateway = request.app[GATEWAY]
    started = time.monotonic()
    try:
        response = await handler(request)
    except GatewayError as exc:
        response = _error_response(gateway, exc)
    except web.HTTPException as exc:
        response = _error_response(gateway, _http_error(exc, gateway.settings))
    except Exception:
        logger.exception("gateway bug while answering %s %s", request.method, request.path)
        response = _error_response(gateway, internal())
    logger.info(
        "%s %s -> %d in %.3fs", request.method, request.path, response.status, time.monotonic() - started
    )
    return response


def _http_error(exc: web.HTTPException, settings: GatewaySettings) -> GatewayError:
    if exc.status == 413:
        return GatewayError(
            413, f"The request body is larger than {settings.max_body_bytes} bytes", code="request_too_large"
        )
    if exc.status == 404:
        return GatewayError(404, f"No such endpoint: {exc.reason}", code="not_found")
    return GatewayError(exc.status, exc.reason, code=exc.reason.lower().replace(" ", "_"))


def _error_response(gateway: Gateway, exc: GatewayError) -> web.Response:
    if exc.status >= 500:
        logger.warning("answered %d: %s", exc.status, gateway.scrub(exc.message))
    body = exc.body()
    body["error"]["message"] = gateway.scrub(exc.message)
    headers = None if exc.retry else {"x-should-retry": "false"}
    return web.json_response(body, status=exc.status, dumps=dumps, headers=headers)


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.app[GATEWAY].settings.api_key
    if key is None or request.path in _OPEN_PATHS:
        return await handler(request)
    if not bearer_accepted(request.headers.get("Authorization", ""), key):
        # The token sent is not echoed back, not even masked.
        raise GatewayError(
            401, "Missing or incorrect API key (send Authorization: Bearer KEY)", code="invalid_api_key"
        )
    return await handler(request)


def bearer_accepted(authorization: str, key: str) -> bool:
    """Whether an ``Authorization`` header value is ``Bearer KEY``, compared in constant time."""
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def models(request: web.Request) -> web.Response:
    """The models of the transport the gateway's model speaks: Labs' names, or the web app's list (read live
    once, the record's when it cannot be: ``ChatPerplexityLabs.alist_models``)."""
    model = request.app[GATEWAY].model
    if model.transport == "web":
        names, owner = (await model.alist_models()).identifiers, "perplexity"
    else:
        names, owner = KNOWN_MODELS, "perplexity-labs"
    data = [{"id": name, "object": "model", "created": 0, "owned_by": owner} for name in names]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    chat = parse_request(await request.read(), max_messages=gateway.settings.max_messages)
    messages = to_langchain(chat)
    translator = Translator(chat.model, gateway.settings.reasoning, max_tokens=chat.output_limit)
    async with gateway.admission(), aclosing(gateway.stream(chat, messages)) as chunks:
        # The first chunk comes before any byte is sent, so failing to start is a plain HTTP error.
        first = await next_chunk(chunks)
        if not chat.stream:
            return await _complete(translator, first, chunks)
        hold = gateway.settings.perplexity_stream == "sources-first" and not request.path.startswith("/v1/")
        return await _serve_events(request, gateway, chat, translator, first, chunks, hold=hold)


async def _complete(
    translator: Translator, first: AIMessageChunk | None, chunks: AsyncGenerator[AIMessageChunk, None]
) -> web.Response:
    completion = Completion(translator)
    message = first
    while message is not None:
        completion.add(translator.delta(message))
        message = None if translator.cut else await next_chunk(chunks)
    return web.json_response(completion.body(), dumps=dumps)


async def _serve_events(
    request: web.Request,
    gateway: Gateway,
    chat: ChatRequest,
    translator: Translator,
    first: AIMessageChunk | None,
    chunks: AsyncGenerator[AIMessageChunk, None],
    *,
    hold: bool,
) -> web.StreamResponse:
    response = await event_stream(request)
    events = _Events(response, translator, hold=hold)
    try:
        await _send_all(gateway, events, first, chunks, include_usage=chat.include_usage)
        await response.write_eof()
    except ConnectionResetError:
        # The client left: closing the chunk stream (aclosing above) releases the Labs socket.
        logger.info("client left mid-stream; Labs socket released")
    return response


async def _send_all(
    gateway: Gateway,
    events: _Events,
    first: AIMessageChunk | None,
    chunks: AsyncGenerator[AIMessageChunk, None],
    *,
    include_usage: bool,
) -> None:
    try:
        message = first
        while message is not None:
            await events.send(events.translator.delta(message))
            # Cut at the client's limit: the rest is not read (closing the stream gives its socket back).
            message = None if events.translator.cut else await next_chunk(chunks)
        await events.finish(include_usage=include_usage)
    except GatewayError as exc:
        await _end_with_error(gateway, events, exc)
    except ConnectionResetError:
        raise  # the client left: nobody to tell
    except Exception:
        logger.exception("gateway bug while streaming")
        await _end_with_error(gateway, events, internal())


async def _end_with_error(gateway: Gateway, events: _Events, exc: GatewayError) -> None:
    # Never a silent truncation: the stream ends with the error, as OpenAI's API does.
    await events.flush()
    logger.warning("stream failed with %d: %s", exc.status, gateway.scrub(exc.message))
    body = exc.body()
    body["error"]["message"] = gateway.scrub(exc.message)
    await events.response.write(sse_event(body))


class _Events:
    """Writes deltas as SSE chunks; in ``hold`` mode keeps them until the sources are known."""

    def __init__(self, response: web.StreamResponse, translator: Translator, *, hold: bool) -> None:
        self.response = response
        self.translator = translator
        self.hold = hold
        self._held: list[dict[str, Any]] = []
        self._first = True

    async def send(self, delta: dict[str, Any]) -> None:
        ended = self.translator.ending is not None
        if not delta and not ended:
            return
        if self.hold and not ended:
            self._held.append(delta)
            return
        await self.flush(sources=ended)
        await self._write(self.translator.chunk(delta, first=self._first, sources=ended))

    async def flush(self, *, sources: bool = False) -> None:
        held, self._held = self._held, []
        for delta in held:
            chunk = self.translator.chunk(delta, first=self._first)
            if sources and self.translator.ending is not None:
                chunk.update(self.translator.ending.sources())
            await self._write(chunk)

    async def finish(self, *, include_usage: bool) -> None:
        if self.translator.ending is None:
            # The stream ended without its closing chunk: close it here rather than leave it open.
            self.translator.ending = Ending()
            await self.send({})
        if include_usage:
            await self._write(self.translator.usage_chunk())
        await self.response.write(_DONE)

    async def _write(self, chunk: dict[str, Any]) -> None:
        self._first = False
        await self.response.write(sse_event(chunk))
