"""Anthropic's Messages API on the gateway: ``POST /v1/messages`` over the same model, pool and limits.

A Messages request becomes a chat-completions request (so ``schema.py`` validates and maps it, prompted
tools included); the model's chunks go through the same ``Translator`` and come out as the Messages API's
events, or folded into one message. Sources become ``web_search_result_location`` citations on the text.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any, Literal, Protocol

import orjson
from aiohttp import web
from langchain_core.messages import AIMessageChunk, BaseMessage
from multidict import CIMultiDict, CIMultiDictProxy
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from langchain_pplx_labs._stop import StopScanner, normalise_stop
from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.gateway.errors import (
    GatewayError,
    field_error,
    from_labs,
    internal,
    invalid,
    next_chunk,
)
from langchain_pplx_labs.gateway.responses import Ending, Translator
from langchain_pplx_labs.gateway.schema import ChatRequest, joined_text, parse_request, to_langchain
from langchain_pplx_labs.gateway.streaming import dumps, event_stream, sse_event

logger = logging.getLogger("langchain_pplx_labs.gateway")

PATH = "/v1/messages"
_MARKER = re.compile(r"\[(\d+)\]")
_TEXT_BLOCKS = frozenset({"text"})  # the Messages API's one text block type
# Anthropic's error type per status; the gateway's 503 (no socket free in time) is Anthropic's 529.
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}

Event = tuple[str, dict[str, Any]]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _Settings(Protocol):
    @property
    def api_key(self) -> str | None: ...
    @property
    def max_body_bytes(self) -> int: ...
    @property
    def max_messages(self) -> int: ...


class Gateway(Protocol):
    """What this door uses of ``app.Gateway`` (the app module imports this one, not the reverse)."""

    @property
    def settings(self) -> _Settings: ...
    def scrub(self, text: str) -> str: ...
    def admission(self) -> AbstractAsyncContextManager[None]: ...
    def stream(
        self, request: ChatRequest, messages: list[BaseMessage]
    ) -> AsyncGenerator[AIMessageChunk, None]: ...


GATEWAY = web.AppKey("anthropic_gateway", Gateway)


class _Open(BaseModel):
    # Fields Labs has no use for (temperature, top_k, metadata, thinking...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class Block(_Open):
    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None


class MessageParam(_Open):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolParam(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    input_schema: dict[str, Any] | None = None


class ToolChoice(_Open):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None


class MessagesRequest(_Open):
    """The fields of a Messages API request the gateway acts on."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[MessageParam] = Field(min_length=1)
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    stream: StrictBool = False
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None

    @property
    def thinks(self) -> bool:
        """Whether the request enables thinking (``{"type": "enabled", ...}`` or ``"adaptive"``)."""
        return self.thinking is not None and self.thinking.get("type") in ("enabled", "adaptive")


def register(app: web.Application, gateway: Gateway) -> None:
    """Add ``POST /v1/messages`` over ``gateway`` to its application (``errors_and_key`` goes in its middlewares)."""
    app[GATEWAY] = gateway
    app.router.add_post(PATH, messages)


def _is_ours(request: web.Request) -> bool:
    return request.path == PATH or request.path.startswith(PATH + "/")


@web.middleware
async def errors_and_key(request: web.Request, handler: Handler) -> web.StreamResponse:
    """On ``/v1/messages``: the key as Anthropic clients send it (``x-api-key``, or a bearer token), and
    every failure in Anthropic's error shape. Elsewhere it passes the request on untouched."""
    if not _is_ours(request):
        return await handler(request)
    gateway = request.app[GATEWAY]
    try:
        return await handler(_with_bearer(request, gateway.settings.api_key))
    except GatewayError as exc:
        return error_response(gateway, exc)
    except web.HTTPException as exc:
        return error_response(gateway, _http_error(exc, gateway.settings.max_body_bytes))
    except PerplexityLabsError as exc:
        return error_response(gateway, from_labs(exc))
    except Exception:
        logger.exception("gateway bug while answering %s %s", request.method, request.path)
        return error_response(gateway, internal())


def _with_bearer(request: web.Request, key: str | None) -> web.Request:
    """The request as the gateway's key check reads it: an ``x-api-key`` that is the key becomes its bearer token."""
    if key is None:
        return request
    sent = request.headers.get("x-api-key", "").strip()
    if not sent:
        return request  # a bearer token (the SDK's auth_token), or nothing: the gateway's check judges
    if not hmac.compare_digest(sent.encode(), key.encode()):
        raise GatewayError(401, "Missing or incorrect API key (send x-api-key: KEY)", code="invalid_api_key")
    headers = CIMultiDict(request.headers)
    headers["Authorization"] = f"Bearer {key}"
    return request.clone(headers=CIMultiDictProxy(headers))


def _http_error(exc: web.HTTPException, max_body_bytes: int) -> GatewayError:
    if exc.status == 413:
        return GatewayError(413, f"The request body is larger than {max_body_bytes} bytes")
    if exc.status == 404:
        return GatewayError(404, f"No such endpoint: {exc.reason}")
    return GatewayError(exc.status, exc.reason)


def error_body(exc: GatewayError, message: str) -> tuple[int, dict[str, Any]]:
    """Anthropic's status and ``{"type": "error", "error": {"type", "message"}}`` for a gateway failure."""
    status = 529 if exc.status == 503 else exc.status
    kind = _ERROR_TYPES.get(status, "api_error")
    return status, {"type": "error", "error": {"type": kind, "message": message}}


def error_response(gateway: Gateway, exc: GatewayError) -> web.Response:
    message = gateway.scrub(exc.message)
    if exc.status >= 500:
        logger.warning("answered %d: %s", exc.status, message)
    status, body = error_body(exc, message)
    headers = None if exc.retry else {"x-should-retry": "false"}
    return web.json_response(body, status=status, dumps=dumps, headers=headers)


# -- requests -------------------------------------------------------------------------------------


def parse(body: bytes, *, max_messages: int) -> tuple[MessagesRequest, ChatRequest]:
    """The request, and the chat-completions request it is (stop sequences left to this door)."""
    try:
        request = MessagesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise field_error(exc) from None
    try:
        normalise_stop(request.stop_sequences)
    except PerplexityLabsError as exc:
        raise invalid(str(exc), "stop_sequences") from None
    chat: dict[str, Any] = {"model": request.model, "messages": _chat_messages(request)}
    if request.tools:
        chat["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.input_schema or {"type": "object", "properties": {}},
                },
            }
            for tool in request.tools
        ]
        chat["tool_choice"] = _tool_choice(request.tool_choice)
    # Validated again as a chat request: the same limits and question checks as the OpenAI door.
    return request, parse_request(orjson.dumps(chat), max_messages=max_messages)


def _tool_choice(choice: ToolChoice | None) -> str | dict[str, Any]:
    if choice is None or choice.type == "auto":
        return "auto"
    if choice.type == "any":
        return "required"
    if choice.type == "none":
        return "none"
    return {"type": "function", "function": {"name": choice.name or ""}}


def _chat_messages(request: MessagesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _text(request.system, "system")})
    for index, message in enumerate(request.messages):
        where = f"messages.{index}.content"
        if isinstance(message.content, str):
            messages.append({"role": message.role, "content": message.content})
            continue
        texts: list[str] = []
        calls: list[dict[str, Any]] = []
        for number, block in enumerate(message.content):
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use" and message.role == "assistant":
                arguments = json.dumps(block.input if block.input is not None else {})
                calls.append(
                    {
                        "id": block.id,
                        "type": "function",
                        "function": {"name": block.name, "arguments": arguments},
                    }
                )
            elif block.type == "tool_result" and message.role == "user":
                content = _text(block.content or "", f"{where}.{number}.content")
                messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": content})
            elif block.type not in ("thinking", "redacted_thinking"):
                raise invalid(
                    f"{where}.{number}: blocks of type {block.type!r} are not supported; Perplexity takes text",
                    f"{where}.{number}.type",
                )
        if texts or calls:
            entry: dict[str, Any] = {"role": message.role, "content": "\n".join(texts)}
            if calls:
                entry["tool_calls"] = calls
            messages.append(entry)
    return messages


def _text(content: str | list[Block], where: str) -> str:
    return joined_text(content, where, kinds=_TEXT_BLOCKS, noun="text blocks")


# -- answers --------------------------------------------------------------------------------------


class Answer:
    """The model's chunks as the Messages API's stream events (``fold`` makes one message of them)."""

    def __init__(
        self, model: str, stops: list[str] | None, *, max_tokens: int | None = None, thinking: bool = False
    ) -> None:
        self.model = model
        self.id = f"msg_{uuid.uuid4().hex}"
        # The thinking is the model's reasoning, as a ``thinking`` block, when the request enables it.
        self.translator = Translator(model, "separate" if thinking else "drop", max_tokens=max_tokens)
        self.stops = list(normalise_stop(stops))
        self.scanner = StopScanner(self.stops)
        self.stop_sequence: str | None = None
        self._raw = ""
        self._text = ""
        self._index = 0
        self._text_open = False
        self._thinking: list[str] | None = None  # the thinking block's text while it is open

    @property
    def done(self) -> bool:
        """Cut at a stop sequence or at ``max_tokens``: nothing more is read."""
        return self.scanner.stopped or self.translator.cut

    def start(self) -> list[Event]:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def add(self, chunk: AIMessageChunk) -> list[Event]:
        delta = self.translator.delta(chunk)
        text = delta.get("content", "")
        events: list[Event] = self._think(delta.get("reasoning_content", ""))
        if text or self.translator.ending is not None:
            events += self._close_thinking()
        if self.stops:
            self._raw += text
            text = self.scanner.feed(text)
            if self.scanner.stopped:
                rest = self._raw[self.scanner.emitted :]
                self.stop_sequence = next(stop for stop in self.stops if rest.startswith(stop))
            elif self.translator.ending is not None:
                text += self.scanner.flush()
        if text:
            events += self._open_text()
            self._text += text
            block = {
                "type": "content_block_delta",
                "index": self._index,
                "delta": {"type": "text_delta", "text": text},
            }
            events.append(("content_block_delta", block))
        if self.translator.ending is not None and not self.done:
            events += self._close_text(self.translator.ending)
            for call in delta.get("tool_calls", ()):
                events += self._tool_use(call)
        return events

    def finish(self) -> list[Event]:
        ending = self.translator.ending
        events = self._close_thinking()
        if self.done or ending is None:
            # Cut at a stop sequence or at max_tokens, or ended without its closing chunk: no sources came.
            ending = Ending()
            events += self._close_text(ending)
        if self.stop_sequence is not None:
            reason = "stop_sequence"
        elif self.translator.cut:
            reason = "max_tokens"
        elif ending.finish_reason == "tool_calls":
            reason = "tool_use"
        else:
            reason = "end_turn"
        usage = ending.usage if not self.done else None
        output = usage["completion_tokens"] if usage else self.translator.budget.tokens(len(self._text))
        message_delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": self.stop_sequence},
            "usage": {"input_tokens": usage["prompt_tokens"] if usage else 0, "output_tokens": output},
        }
        return [*events, ("message_delta", message_delta), ("message_stop", {"type": "message_stop"})]

    def _think(self, thinking: str) -> list[Event]:
        if not thinking:
            return []
        events: list[Event] = []
        if self._thinking is None:
            self._thinking = []
            block = {"type": "thinking", "thinking": "", "signature": ""}
            start = {"type": "content_block_start", "index": self._index, "content_block": block}
            events.append(("content_block_start", start))
        self._thinking.append(thinking)
        delta = {"type": "thinking_delta", "thinking": thinking}
        events.append(
            ("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
        )
        return events

    def _close_thinking(self) -> list[Event]:
        if self._thinking is None:
            return []
        # Opaque to clients, as Anthropic's is (here a digest of the thinking): clients send it back unread.
        digest = hashlib.sha256("".join(self._thinking).encode()).digest()
        delta = {"type": "signature_delta", "signature": base64.b64encode(digest).decode()}
        index, self._index, self._thinking = self._index, self._index + 1, None
        return [
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    def _open_text(self) -> list[Event]:
        if self._text_open:
            return []
        self._text_open = True
        block = {"type": "text", "text": "", "citations": None}
        return [
            (
                "content_block_start",
                {"type": "content_block_start", "index": self._index, "content_block": block},
            )
        ]

    def _close_text(self, ending: Ending) -> list[Event]:
        found = citations(self._text, ending)
        if not self._text_open and not found:
            return []
        events = self._open_text()
        for citation in found:
            delta = {"type": "citations_delta", "citation": citation}
            events.append(
                ("content_block_delta", {"type": "content_block_delta", "index": self._index, "delta": delta})
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": self._index}))
        self._index += 1
        self._text_open = False
        return events

    def _tool_use(self, call: dict[str, Any]) -> list[Event]:
        index, self._index = self._index, self._index + 1
        function = call["function"]
        block = {"type": "tool_use", "id": call["id"], "name": function["name"], "input": {}}
        delta = {"type": "input_json_delta", "partial_json": function["arguments"] or "{}"}
        return [
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}),
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}),
            ("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]


def citations(text: str, ending: Ending) -> list[dict[str, Any]]:
    """The sources as ``web_search_result_location`` citations: each ``[n]`` marker cites source n with the
    text before it (back to the previous cited passage); sources the text never marks follow, citing nothing."""
    titles = {result.get("url"): result.get("title") for result in ending.search_results or ()}
    found: list[dict[str, Any]] = []
    seen: set[tuple[int, str]] = set()
    start = 0
    for match in _MARKER.finditer(text):
        number = int(match[1])
        passage = _MARKER.sub("", text[start : match.start()]).lstrip(".,;:!?) \n").strip()
        if text[match.end() : match.end() + 1] != "[":
            start = match.end()
        if 1 <= number <= len(ending.citations) and (number, passage) not in seen:
            seen.add((number, passage))
            found.append(_citation(ending.citations[number - 1], number, passage, titles))
    cited = {number for number, _ in seen}
    for number, url in enumerate(ending.citations, start=1):
        if number not in cited:
            found.append(_citation(url, number, "", titles))
    return found


def _citation(url: str, number: int, passage: str, titles: dict[Any, Any]) -> dict[str, Any]:
    return {
        "type": "web_search_result_location",
        "url": url,
        "title": titles.get(url),
        # Opaque to clients, as Anthropic's is: here the source's number in the answer's [n] order.
        "encrypted_index": base64.b64encode(str(number).encode()).decode(),
        "cited_text": passage,
    }


def fold(events: list[Event]) -> dict[str, Any]:
    """One ``message`` from a whole answer's events, as the non-streaming API returns it."""
    message: dict[str, Any] = {}
    for _, event in events:
        kind = event["type"]
        if kind == "message_start":
            message = dict(event["message"], content=[])
        elif kind == "content_block_start":
            message["content"].append(dict(event["content_block"]))
        elif kind == "content_block_delta":
            block, delta = message["content"][event["index"]], event["delta"]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            elif delta["type"] == "signature_delta":
                block["signature"] = delta["signature"]
            elif delta["type"] == "citations_delta":
                block["citations"] = [*(block["citations"] or []), delta["citation"]]
            else:
                block["input"] = json.loads(delta["partial_json"] or "{}")
        elif kind == "message_delta":
            message.update(event["delta"], usage=event["usage"])
    return message


# -- the handler ----------------------------------------------------------------------------------


async def messages(request: web.Request) -> web.StreamResponse:
    gateway = request.app[GATEWAY]
    anthropic, chat = parse(await request.read(), max_messages=gateway.settings.max_messages)
    answer = Answer(
        anthropic.model, anthropic.stop_sequences, max_tokens=anthropic.max_tokens, thinking=anthropic.thinks
    )
    async with gateway.admission(), aclosing(gateway.stream(chat, to_langchain(chat))) as chunks:
        # The first chunk comes before any byte is sent, so failing to start is a plain HTTP error.
        first = await next_chunk(chunks)
        if not anthropic.stream:
            events = answer.start()
            chunk = first
            while chunk is not None and not answer.done:
                events += answer.add(chunk)
                chunk = None if answer.done else await next_chunk(chunks)
            events += answer.finish()
            return web.json_response(fold(events), dumps=dumps)
        return await _serve(request, gateway, answer, first, chunks)


async def _serve(
    request: web.Request,
    gateway: Gateway,
    answer: Answer,
    first: AIMessageChunk | None,
    chunks: AsyncGenerator[AIMessageChunk, None],
) -> web.StreamResponse:
    response = await event_stream(request)
    try:
        await _write(response, answer.start())
        await _write(response, [("ping", {"type": "ping"})])
        chunk = first
        try:
            while chunk is not None and not answer.done:
                await _write(response, answer.add(chunk))
                chunk = None if answer.done else await next_chunk(chunks)
            await _write(response, answer.finish())
        except GatewayError as exc:
            await _write_error(response, gateway, exc)
        except ConnectionResetError:
            raise
        except Exception:
            logger.exception("gateway bug while streaming")
            await _write_error(response, gateway, internal())
        await response.write_eof()
    except ConnectionResetError:
        # The client left: closing the chunk stream (aclosing above) releases the Labs socket.
        logger.info("client left mid-stream; Labs socket released")
    return response


async def _write_error(response: web.StreamResponse, gateway: Gateway, exc: GatewayError) -> None:
    # Never a silent truncation: the stream ends with Anthropic's error event.
    message = gateway.scrub(exc.message)
    logger.warning("stream failed with %d: %s", exc.status, message)
    await _write(response, [("error", error_body(exc, message)[1])])


async def _write(response: web.StreamResponse, events: list[Event]) -> None:
    if events:
        await response.write(b"".join(sse_event(data, name) for name, data in events))
