"""OpenAI's Responses API on the gateway: ``POST /v1/responses`` over the same model, pool and limits.

A Responses request becomes a chat-completions request (so ``schema.py`` validates and maps it, prompted
tools included); the model's chunks go through the same ``Translator`` and come out as the Responses API's
stream events, or folded into one response. Sources become ``url_citation`` annotations whose spans are
the v1 citation spans of the answer's ``[n]`` markers. Errors keep OpenAI's shape (the app's middleware).
(Not ``responses.py``: that one makes chat-completions chunks.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Any, Literal

import orjson
from aiohttp import web
from langchain_core.messages import AIMessageChunk
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from langchain_pplx_labs._chunks import estimate_tokens
from langchain_pplx_labs._content_blocks import citation_annotations
from langchain_pplx_labs.gateway.anthropic import GATEWAY, Gateway
from langchain_pplx_labs.gateway.errors import GatewayError, field_error, internal, invalid, next_chunk
from langchain_pplx_labs.gateway.responses import Ending, ReasoningMode, Translator
from langchain_pplx_labs.gateway.schema import (
    TEXT_PARTS,
    ChatRequest,
    joined_text,
    parse_request,
    to_langchain,
)
from langchain_pplx_labs.gateway.stored_responses import ChatMessages, StoredResponses
from langchain_pplx_labs.gateway.streaming import dumps, event_stream, sse_event

logger = logging.getLogger("langchain_pplx_labs.gateway")

PATH = "/v1/responses"

Event = dict[str, Any]


class _Open(BaseModel):
    # Fields Labs has no use for (temperature, store, reasoning, include...) are accepted and ignored.
    model_config = ConfigDict(extra="allow")


class Part(_Open):
    type: str
    text: str | None = None


class Item(_Open):
    type: str = "message"
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[Part] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[Part] | None = None


class FunctionTool(_Open):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ResponsesRequest(_Open):
    """The fields of a Responses API request the gateway acts on."""

    model: str = Field(min_length=1)
    input: str | list[Item]
    instructions: str | None = None
    stream: StrictBool = False
    tools: list[FunctionTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    previous_response_id: str | None = None
    reasoning: dict[str, Any] | None = None
    store: StrictBool | None = None

    @property
    def summarises(self) -> bool:
        """Whether the request asks for the reasoning's summary (``reasoning: {"summary": ...}``)."""
        return bool(self.reasoning and self.reasoning.get("summary"))


STORED = web.AppKey("stored_responses", StoredResponses)


def register(app: web.Application, gateway: Gateway) -> None:
    """Add ``POST /v1/responses`` over ``gateway`` to its application (its errors: the app's OpenAI shape)."""
    if GATEWAY not in app:
        app[GATEWAY] = gateway
    app[STORED] = StoredResponses()
    app.router.add_post(PATH, responses)


# -- requests -------------------------------------------------------------------------------------


def parse(
    body: bytes, *, max_messages: int, stored: StoredResponses | None = None
) -> tuple[ResponsesRequest, ChatRequest, ChatMessages]:
    """The Responses request, the chat-completions request it means (validated as the OpenAI door's), and
    its conversation without the instructions (a ``previous_response_id``'s turns first), to store."""
    try:
        request = ResponsesRequest.model_validate_json(body)
    except ValidationError as exc:
        raise field_error(exc) from None
    conversation = [*_previous(request, stored), *_chat_messages(request)]
    # As OpenAI's API does, the instructions are this request's: a previous response's are not carried over.
    system = [{"role": "system", "content": request.instructions}] if request.instructions else []
    chat: dict[str, Any] = {"model": request.model, "messages": [*system, *conversation]}
    if request.tools:
        chat["tools"] = [_tool(tool, index) for index, tool in enumerate(request.tools)]
        chat["tool_choice"] = _tool_choice(request.tool_choice)
    return request, parse_request(orjson.dumps(chat), max_messages=max_messages), conversation


def _previous(request: ResponsesRequest, stored: StoredResponses | None) -> ChatMessages:
    if request.previous_response_id is None:
        return []
    turns = None if stored is None else stored.get(request.previous_response_id)
    if turns is None:
        raise GatewayError(
            400,
            f"Previous response with id {request.previous_response_id!r} not found: this gateway process "
            "keeps the latest responses stored with it (store not false); send the turns as input instead",
            param="previous_response_id",
            code="previous_response_not_found",
        )
    return turns


def _tool(tool: FunctionTool, index: int) -> dict[str, Any]:
    if tool.type != "function" or not tool.name:
        raise invalid(
            f"tools.{index}: only function tools are supported (Perplexity searches the web itself)",
            f"tools.{index}.type",
        )
    parameters = tool.parameters or {"type": "object", "properties": {}}
    function = {"name": tool.name, "description": tool.description, "parameters": parameters}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any] | None) -> str | dict[str, Any]:
    if choice is None or isinstance(choice, str):
        return choice or "auto"
    if choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name") or ""}}
    return "auto"


def _chat_messages(request: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if isinstance(request.input, str):
        messages.append({"role": "user", "content": request.input})
        return messages
    for index, item in enumerate(request.input):
        where = f"input.{index}"
        if item.type == "message":
            if item.role is None:
                raise invalid(f"{where}.role: Field required", f"{where}.role")
            messages.append({"role": item.role, "content": _text(item.content or "", f"{where}.content")})
        elif item.type == "function_call":
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments or "{}"},
            }
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif item.type == "function_call_output":
            content = _text(item.output or "", f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.call_id, "content": content})
        elif item.type != "reasoning":
            raise invalid(
                f"{where}: items of type {item.type!r} are not supported; Perplexity takes text",
                f"{where}.type",
            )
    return messages


def _text(content: str | list[Part], where: str) -> str:
    return joined_text(content, where, kinds=TEXT_PARTS, noun="text parts")


# -- answers --------------------------------------------------------------------------------------


def url_citations(text: str, ending: Ending) -> list[dict[str, Any]]:
    """The sources as ``url_citation`` annotations, spanning each ``[n]`` marker of ``text`` (the v1 spans)."""
    sources = ending.search_results or [{"url": url} for url in ending.citations]
    return [
        {
            "type": "url_citation",
            "url": citation["url"],
            "title": citation.get("title") or citation["url"],
            "start_index": citation.get("start_index", 0),
            "end_index": citation.get("end_index", 0),
        }
        for citation in citation_annotations(text, sources)
    ]


class Answer:
    """The model's chunks as the Responses API's stream events (``response`` is the whole of them)."""

    def __init__(self, request: ResponsesRequest) -> None:
        self.request = request
        self.id = f"resp_{uuid.uuid4().hex}"
        self.message_id = f"msg_{uuid.uuid4().hex}"
        self.created_at = int(time.time())
        # The reasoning (the web answer's plan) becomes a ``reasoning`` item when the request asks for its summary.
        reasoning: ReasoningMode = "separate" if request.summarises else "drop"
        self.translator = Translator(request.model, reasoning, max_tokens=request.max_output_tokens)
        self.text = ""
        self.output: list[dict[str, Any]] = []
        self._sequence = 0
        self._text_open = False
        self._reasoning_id = f"rs_{uuid.uuid4().hex}"
        self._summary: list[str] | None = None  # the reasoning summary's text while its item is open

    @property
    def status(self) -> str:
        """``incomplete`` when cut at ``max_output_tokens``, else ``completed``."""
        return "incomplete" if self.translator.cut else "completed"

    def conversation(self) -> ChatMessages:
        """The output as the chat message a later turn has in its history (for ``previous_response_id``)."""
        calls = [
            {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item["arguments"]},
            }
            for item in self.output
            if item["type"] == "function_call"
        ]
        message: dict[str, Any] = {"role": "assistant", "content": self.text}
        if calls:
            message["tool_calls"] = calls
        return [message]

    def response(self, status: str = "completed") -> dict[str, Any]:
        done = status != "in_progress"
        ending = self.translator.ending or Ending()
        usage = None
        if done:
            counts = ending.usage or {}
            output_tokens = counts.get("completion_tokens", estimate_tokens(len(self.text)))
            input_tokens = counts.get("prompt_tokens", 0)
            usage = {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": counts.get("total_tokens", input_tokens + output_tokens),
            }
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": self.request.instructions,
            "max_output_tokens": self.request.max_output_tokens,
            "metadata": {},
            "model": self.request.model,
            "output": self.output if done else [],
            "parallel_tool_calls": True,
            "previous_response_id": self.request.previous_response_id,
            "temperature": None,
            "tool_choice": self.request.tool_choice or "auto",
            "tools": [tool.model_dump(exclude_none=True) for tool in self.request.tools or ()],
            "top_p": None,
            "usage": usage,
        }
        if done and ending.citations:
            body.update(ending.sources())  # Perplexity's own fields, as the chat completions carry them
        return body

    def start(self) -> list[Event]:
        return [
            self.event("response.created", response=self.response("in_progress")),
            self.event("response.in_progress", response=self.response("in_progress")),
        ]

    def add(self, chunk: AIMessageChunk) -> list[Event]:
        delta = self.translator.delta(chunk)
        text = delta.get("content", "")
        events = self._summarise(delta.get("reasoning_content", ""))
        if text or self.translator.ending is not None:
            events += self._close_summary()
        if text:
            events += self._open_text()
            self.text += text
            events.append(
                self.event(
                    "response.output_text.delta",
                    item_id=self.message_id,
                    output_index=0,
                    content_index=0,
                    delta=text,
                    logprobs=[],
                )
            )
        if self.translator.ending is not None:
            calls = delta.get("tool_calls", ())
            events += self._close_text(self.translator.ending, empty=not calls)
            for call in calls:
                events += self._function_call(call)
        return events

    def finish(self) -> list[Event]:
        events = self._close_summary()
        if self.translator.ending is None:
            # Ended without its closing chunk: no sources came.
            self.translator.ending = Ending()
            events += self._close_text(self.translator.ending, empty=True)
        status = self.status
        return [*events, self.event(f"response.{status}", response=self.response(status))]

    def event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _summarise(self, reasoning: str) -> list[Event]:
        if not reasoning:
            return []
        events: list[Event] = []
        where = {"item_id": self._reasoning_id, "output_index": len(self.output), "summary_index": 0}
        if self._summary is None:
            self._summary = []
            item = {"id": self._reasoning_id, "type": "reasoning", "summary": [], "status": "in_progress"}
            part = {"type": "summary_text", "text": ""}
            events += [
                self.event("response.output_item.added", output_index=len(self.output), item=item),
                self.event("response.reasoning_summary_part.added", **where, part=part),
            ]
        self._summary.append(reasoning)
        events.append(self.event("response.reasoning_summary_text.delta", **where, delta=reasoning))
        return events

    def _close_summary(self) -> list[Event]:
        if self._summary is None:
            return []
        text, self._summary = "".join(self._summary), None
        index = len(self.output)
        where = {"item_id": self._reasoning_id, "output_index": index, "summary_index": 0}
        part = {"type": "summary_text", "text": text}
        item = {"id": self._reasoning_id, "type": "reasoning", "summary": [part], "status": "completed"}
        self.output.append(item)
        return [
            self.event("response.reasoning_summary_text.done", **where, text=text),
            self.event("response.reasoning_summary_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]

    def _message(self, status: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.message_id,
            "type": "message",
            "status": status,
            "role": "assistant",
            "content": parts,
        }

    def _open_text(self) -> list[Event]:
        if self._text_open:
            return []
        self._text_open = True
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        index = len(self.output)
        return [
            self.event(
                "response.output_item.added", output_index=index, item=self._message("in_progress", [])
            ),
            self.event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=index,
                content_index=0,
                part=part,
            ),
        ]

    def _close_text(self, ending: Ending, *, empty: bool) -> list[Event]:
        if not self._text_open and not empty:
            return []  # only tool calls: no message item
        events = self._open_text()
        index = len(self.output)
        found = url_citations(self.text, ending)
        where = {"item_id": self.message_id, "output_index": index, "content_index": 0}
        for number, annotation in enumerate(found):
            events.append(
                self.event(
                    "response.output_text.annotation.added",
                    **where,
                    annotation_index=number,
                    annotation=annotation,
                )
            )
        part = {"type": "output_text", "text": self.text, "annotations": found, "logprobs": []}
        item = self._message(self.status, [part])
        events += [
            self.event("response.output_text.done", **where, text=self.text, logprobs=[]),
            self.event("response.content_part.done", **where, part=part),
            self.event("response.output_item.done", output_index=index, item=item),
        ]
        self.output.append(item)
        self._text_open = False
        return events

    def _function_call(self, call: dict[str, Any]) -> list[Event]:
        index = len(self.output)
        function = call["function"]
        item = {
            "id": f"fc_{uuid.uuid4().hex}",
            "type": "function_call",
            "status": "in_progress",
            "call_id": call["id"],
            "name": function["name"],
            "arguments": "",
        }
        arguments = function["arguments"] or "{}"
        done = dict(item, status="completed", arguments=arguments)
        self.output.append(done)
        where = {"item_id": item["id"], "output_index": index}
        return [
            self.event("response.output_item.added", output_index=index, item=item),
            self.event("response.function_call_arguments.delta", **where, delta=arguments),
            self.event("response.function_call_arguments.done", **where, arguments=arguments),
            self.event("response.output_item.done", output_index=index, item=done),
        ]


# -- the handler ----------------------------------------------------------------------------------


async def responses(request: web.Request) -> web.StreamResponse:
    gateway, stored = request.app[GATEWAY], request.app[STORED]
    asked, chat, conversation = parse(
        await request.read(), max_messages=gateway.settings.max_messages, stored=stored
    )
    answer = Answer(asked)
    async with gateway.admission(), aclosing(gateway.stream(chat, to_langchain(chat))) as chunks:
        # The first chunk comes before any byte is sent, so failing to start is a plain HTTP error.
        first = await next_chunk(chunks)
        if not asked.stream:
            chunk = first
            while chunk is not None:
                answer.add(chunk)
                # Cut at max_output_tokens: the rest is not read (closing the stream gives its socket back).
                chunk = None if answer.translator.cut else await next_chunk(chunks)
            answer.finish()
            _store(stored, asked, answer, conversation)
            return web.json_response(answer.response(answer.status), dumps=dumps)
        return await _serve(
            request, gateway, answer, first, chunks, lambda: _store(stored, asked, answer, conversation)
        )


def _store(
    stored: StoredResponses, asked: ResponsesRequest, answer: Answer, conversation: ChatMessages
) -> None:
    """Keep a finished response for ``previous_response_id`` unless the request said ``store: false``."""
    if asked.store is not False:
        stored.put(answer.id, [*conversation, *answer.conversation()])


async def _serve(
    request: web.Request,
    gateway: Gateway,
    answer: Answer,
    first: AIMessageChunk | None,
    chunks: AsyncGenerator[AIMessageChunk, None],
    finished: Callable[[], None],
) -> web.StreamResponse:
    response = await event_stream(request)
    try:
        await _write(response, answer.start())
        chunk = first
        try:
            while chunk is not None:
                await _write(response, answer.add(chunk))
                chunk = None if answer.translator.cut else await next_chunk(chunks)
            events = answer.finish()
            finished()  # stored before its last event: a client may continue it as soon as it has the id
            await _write(response, events)
        except GatewayError as exc:
            await _write_error(response, gateway, answer, exc)
        except ConnectionResetError:
            raise
        except Exception:
            logger.exception("gateway bug while streaming")
            await _write_error(response, gateway, answer, internal())
        await response.write_eof()
    except ConnectionResetError:
        # The client left: closing the chunk stream (aclosing above) releases the Labs socket.
        logger.info("client left mid-stream; Labs socket released")
    return response


async def _write_error(
    response: web.StreamResponse, gateway: Gateway, answer: Answer, exc: GatewayError
) -> None:
    # Never a silent truncation: the stream ends with an ``error`` event. Its ``error`` field (OpenAI's
    # error body) makes the openai SDK raise an ``APIError`` rather than hand on an event nobody reads.
    message = gateway.scrub(exc.message)
    logger.warning("stream failed with %d: %s", exc.status, message)
    body = exc.body()["error"]
    body["message"] = message
    event = answer.event("error", code=exc.code, message=message, param=exc.param, error=body)
    await _write(response, [event])


async def _write(response: web.StreamResponse, events: list[Event]) -> None:
    if events:
        await response.write(b"".join(sse_event(event, event["type"]) for event in events))
