"""The emulator's web-app side: the SSE ask endpoint and the session check, answered by the same responders."""

from __future__ import annotations

import asyncio
import collections
import hashlib
import inspect
import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from langchain_pplx_labs.emulator.script import Drop, Emit, LabsRequest, Raw, Responder, Scenario, Stall, Step
from langchain_pplx_labs.protocol import IMPLICIT_THINK_MODELS, THINK_CLOSE, THINK_OPEN, LabsProtocol
from langchain_pplx_labs.web_evidence import (
    RATE_LIMITED,
    TRANSCRIPT_PREAMBLE,
    TRANSCRIPT_ROLES,
    WEB_END_EVENT,
    WEB_MODEL_ALIASES,
    WEB_SESSION_COOKIES,
)

logger = logging.getLogger(__name__)

_TICK = 0.05  # how often a paused answer looks whether its client is still there


class WebVariant(BaseModel):
    """How the emulated web app words its stream, where public clients saw it differently."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    stream: Literal["schematized", "text"] = "schematized"
    """``schematized``: ``blocks`` with ``diff_block`` patches (use_schematized_api, 2025-10 on);
    ``text``: the older ``text`` field holding JSON with ``answer``, ``chunks``, ``web_results``."""
    final_marker: Literal["final_sse_message", "status", "final"] = "final_sse_message"
    """What marks the last message: ``final_sse_message: true`` with ``status: COMPLETED``;
    ``status: COMPLETED`` alone; or the older ``final: true``."""
    end_of_stream: bool = True
    """Send an ``event: end_of_stream`` message after the last one (helallao/perplexity-ai waits for it)."""
    newline: Literal["\r\n", "\n"] = "\r\n"
    """Line ending of the stream (helallao splits messages on CRLF CRLF)."""
    sources: Literal["web_result_block", "sources_mode_block"] = "web_result_block"
    """Block the sources arrive in: ``web_results`` usage, or gpt4free's ``sources_answer_mode``."""
    comments: bool = False
    """Put a ``:`` comment line (a keep-alive) before every message."""
    anonymous: Literal["allowed", "rate_limited"] = "allowed"
    """``rate_limited``: an ask without a session cookie gets ``FREE_TIER_RATE_LIMITED``."""


class WebHost(Protocol):
    """What the web endpoint uses of the emulator it serves beside: its protocol, its responder and the
    list its questions are recorded in (``LabsEmulator`` has them; the arrow goes server -> web only)."""

    @property
    def protocol(self) -> LabsProtocol: ...

    @property
    def responder(self) -> Responder: ...

    @property
    def requests(self) -> list[dict[str, Any]]: ...


class WebEndpoint:
    """Serves ``POST <web_path>`` and ``GET <web_session_path>`` for a :class:`WebHost` (the emulator).

    An ask's ``query_str`` becomes the same :class:`LabsRequest` the Socket.IO side builds, the
    emulator's responder gives the same steps, and each Labs frame is rendered as the web app's
    messages per :attr:`variant`; pacing, silence, drops and failures play as they do on Socket.IO.
    """

    def __init__(
        self, emulator: WebHost, variant: WebVariant | None = None, *, max_recorded: int = 1000
    ) -> None:
        self.emulator = emulator
        self.max_recorded = max_recorded
        """How many questions :attr:`LabsEmulator.requests` keeps, as the Socket.IO side does."""
        self.default_variant = variant or WebVariant()
        self.variant = self.default_variant
        """How the stream is worded; set it to rehearse another variant (``reset`` restores the first)."""
        self.asks = 0
        self.session_checks = 0
        self.bodies: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        """Bodies of the latest asks, oldest first."""
        self.headers: collections.deque[dict[str, str]] = collections.deque(maxlen=64)
        """HTTP headers of the latest asks and session checks."""
        self._closing = False

    def install(self, app: web.Application) -> None:
        """Add the two routes to the emulator's application."""
        protocol = self.emulator.protocol
        app.router.add_post(protocol.web_path, self._ask)
        app.router.add_get(protocol.web_session_path, self._session)

    def paths(self) -> tuple[str, str]:
        """The ask and session paths this endpoint serves."""
        return self.emulator.protocol.web_path, self.emulator.protocol.web_session_path

    def reset(self) -> None:
        """Counters and recordings cleared, the variant back to the one the emulator was made with."""
        self.variant = self.default_variant
        self.asks = 0
        self.session_checks = 0
        self.bodies.clear()
        self.headers.clear()

    def close(self) -> None:
        """End every answer in progress: the emulator is stopping."""
        self._closing = True

    async def _session(self, request: web.Request) -> web.Response:
        self.session_checks += 1
        self.headers.append(dict(request.headers))
        token = _session_token(request)
        if not token:
            return web.json_response({})
        user_id = "emulator-user-" + hashlib.sha256(token.encode()).hexdigest()[:12]
        user = {"id": user_id, "name": "Emulator User", "email": "user@emulator.invalid"}
        return web.json_response({"user": user, "expires": "2099-01-01T00:00:00.000Z"})

    async def _ask(self, request: web.Request) -> web.StreamResponse:
        self.headers.append(dict(request.headers))
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError as exc:
            return _bad_request(f"body is not JSON: {exc}")
        problem = _body_problem(body)
        if problem:
            return _bad_request(problem)
        self.asks += 1
        self.bodies.append(body)
        params: dict[str, Any] = body["params"]
        preference = params.get("model_preference")
        payload = {
            "version": str(params.get("version", "")),
            "source": str(params.get("source", "default")),
            "model": _labs_model_name(preference if isinstance(preference, str) and preference else "turbo"),
            "messages": transcript_turns(body["query_str"]),
        }
        self._record(payload)
        labs_request = LabsRequest(payload, self.emulator.protocol, web_body=body)
        if self.variant.anonymous == "rate_limited" and not _session_token(request):
            steps: Sequence[Step] = [Emit(labs_request.progress_event, dict(RATE_LIMITED))]
        else:
            reply: Any = self.emulator.responder(labs_request)
            if inspect.isawaitable(reply):
                reply = await reply
            steps = reply.steps(labs_request) if isinstance(reply, Scenario) else list(reply)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        renderer = WebRenderer(self.variant, labs_request, params)
        try:
            await self._play(request, response, renderer, steps)
        except ConnectionError:
            logger.debug("web client went away during its answer")  # the client's choice, not an error
        return response

    def _record(self, payload: dict[str, Any]) -> None:
        # Into the emulator's own list, so tests read the questions alike for both transports.
        requests = self.emulator.requests
        requests.append(payload)
        del requests[: max(0, len(requests) - self.max_recorded)]

    async def _play(
        self, request: web.Request, response: web.StreamResponse, renderer: WebRenderer, steps: Sequence[Step]
    ) -> None:
        newline = self.variant.newline
        for step in steps:
            if isinstance(step, Stall):
                await self._pause(request, step.seconds)
                return  # a stall outlasts any client's patience: nothing follows it
            if step.delay and not await self._pause(request, step.delay):
                return
            if isinstance(step, Drop):
                if request.transport is not None:
                    request.transport.close()  # abruptly: no end of the chunked body
                return
            if isinstance(step, Raw):
                raw = step.data if isinstance(step.data, bytes) else f"data: {step.data}".encode()
                await response.write(raw + (newline * 2).encode())
                continue
            if step.event != renderer.progress_event:
                await response.write(_sse(orjson.dumps(step.data), step.event, newline))
                continue
            for message in renderer.render(step.data):
                await self._send(response, message)
        if renderer.ended and self.variant.end_of_stream:
            await response.write(_sse(b"{}", WEB_END_EVENT, newline))
        await response.write_eof()

    async def _send(self, response: web.StreamResponse, message: Mapping[str, Any]) -> None:
        newline = self.variant.newline
        comment = f": keep-alive{newline}".encode() if self.variant.comments else b""
        await response.write(comment + _sse(orjson.dumps(message), "message", newline))

    async def _pause(self, request: web.Request, seconds: float) -> bool:
        """Wait ``seconds``; ``False`` as soon as the client has gone or the emulator stops."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while (left := deadline - loop.time()) > 0:
            if self._closing or request.transport is None or request.transport.is_closing():
                return False
            await asyncio.sleep(min(left, _TICK))
        return not self._closing


class WebRenderer:
    """Renders one answer's cumulative Labs frames as the web app's SSE JSON messages."""

    def __init__(self, variant: WebVariant, request: LabsRequest, params: Mapping[str, Any]) -> None:
        self.variant = variant
        self.model = request.model
        self.progress_event = request.progress_event
        self.ended = False
        """A final or failed frame was rendered."""
        self._reasoning: str | None = None
        self._chunks: list[str] = []
        # The answer text sent so far (the chunks joined): kept, not re-joined for every frame.
        self._sent = ""
        self._citations: list[Any] = []
        question = request.question.strip()
        mode = params.get("mode")
        self._envelope: dict[str, Any] = {
            "backend_uuid": str(uuid.uuid4()),
            "context_uuid": str(uuid.uuid4()),
            "uuid": str(uuid.uuid4()),
            "frontend_context_uuid": params.get("frontend_context_uuid"),
            "display_model": params.get("model_preference"),
            "mode": mode.upper() if isinstance(mode, str) else "CONCISE",
            "thread_title": question[:80],
            "thread_url_slug": _slug(question),
        }

    def render(self, frame: Any) -> list[dict[str, Any]]:
        """The messages for one frame (none when it adds nothing the web app would send)."""
        if self.ended:
            return []
        if not isinstance(frame, Mapping) or not isinstance(frame.get("output", ""), str):
            return [dict(frame) if isinstance(frame, Mapping) else {"value": frame}]  # malformed: as it is
        if frame.get("status") == "failed":
            self.ended = True
            return [_failure(frame)]
        final = frame.get("final") is True
        citations = frame.get("citations")
        citations = list(citations) if isinstance(citations, list) else self._citations
        reasoning, answer = split_reasoning(str(frame.get("output", "")), self.model, final=final)
        if self.variant.stream == "text":
            message = self._text_message(answer, citations, final)
        else:
            message = self._schematized_message(reasoning, answer, citations, final)
        if message is None:
            return []
        self.ended = final
        return [self._marked(message, final)]

    def _schematized_message(
        self, reasoning: str, answer: str, citations: list[Any], final: bool
    ) -> dict[str, Any] | None:
        blocks: list[dict[str, Any]] = []
        started = bool(self._chunks)
        if reasoning and not started and reasoning != self._reasoning:
            patches: list[dict[str, Any]] = [{"op": "replace", "path": "/goals/0", "value": reasoning}]
            if self._reasoning is None:
                patches = [
                    {"op": "replace", "path": "", "value": {"progress": "IN_PROGRESS", "goals": []}},
                    {"op": "add", "path": "/goals/0", "value": reasoning},
                ]
            self._reasoning = reasoning
            blocks.append(_diff("pro_search_steps", "plan_block", patches))
        markdown = self._markdown_patches(answer, final)
        if markdown:
            if not started and self._reasoning is not None:
                blocks.append(
                    _diff(
                        "pro_search_steps",
                        "plan_block",
                        [{"op": "replace", "path": "/progress", "value": "DONE"}],
                    )
                )
            blocks.append(_diff("ask_text", "markdown_block", markdown))
        if citations and citations != self._citations:
            self._citations = citations
            results = {"progress": "DONE", "web_results": [_web_result(c) for c in citations]}
            if self.variant.sources == "web_result_block":
                blocks.append({"intended_usage": "web_results", "web_result_block": results})
            else:
                blocks.append({"intended_usage": "sources_answer_mode", "sources_mode_block": results})
        if not blocks and not final:
            return None
        return {"blocks": blocks}

    def _markdown_patches(self, answer: str, final: bool) -> list[dict[str, Any]]:
        """Patches that bring ``markdown_block`` to ``answer``: each new piece appended as a chunk of its own."""
        patches: list[dict[str, Any]] = []
        new = self._extend(answer)
        if new is None or (not self._chunks and final):
            self._restart(answer)  # the first text, or the answer was rewritten: send it whole
            value = {"progress": "IN_PROGRESS", "chunks": [answer], "chunk_starting_offset": 0}
            patches.append({"op": "replace", "path": "", "value": value})
        elif new:
            patches.append({"op": "add", "path": f"/chunks/{len(self._chunks) - 1}", "value": new})
        if final:
            patches.append({"op": "replace", "path": "/progress", "value": "DONE"})
            patches.append({"op": "add", "path": "/answer", "value": answer})
        return patches

    def _extend(self, answer: str) -> str | None:
        """Take ``answer`` as what was sent plus a new chunk: that chunk (``""`` if none); ``None`` when
        nothing was sent yet (and ``answer`` has text) or ``answer`` does not continue it."""
        if not self._chunks:
            return "" if not answer else None
        if not answer.startswith(self._sent):
            return None
        new = answer[len(self._sent) :]
        if new:
            self._chunks.append(new)
            self._sent = answer
        return new

    def _restart(self, answer: str) -> None:
        self._chunks = [answer]
        self._sent = answer

    def _text_message(self, answer: str, citations: list[Any], final: bool) -> dict[str, Any] | None:
        # Cumulative by the service: every ``text`` repeats the whole answer and all its chunks
        # (henrique-coder's client replaces its answer and chunks with each message's).
        changed = answer != self._sent or citations != self._citations
        if not changed and not final:
            return None
        if self._extend(answer) is None:
            self._restart(answer)
        self._citations = citations
        content = {
            "answer": answer,
            "chunks": list(self._chunks),
            "web_results": [_web_result(c) for c in citations],
        }
        return {"text": orjson.dumps(content).decode()}

    def _marked(self, message: dict[str, Any], final: bool) -> dict[str, Any]:
        marked = {**self._envelope, **message}
        marker = self.variant.final_marker
        if marker == "final":
            marked["final"] = final
            return marked
        marked["status"] = "COMPLETED" if final else "PENDING"
        marked["text_completed"] = final
        if marker == "final_sse_message":
            marked["final_sse_message"] = final
        return marked


def split_reasoning(output: str, model: str = "", *, final: bool = False) -> tuple[str, str]:
    """Split a Labs ``output`` into (reasoning, answer) as the StreamDecoder reads it.

    Text that may still become ``<think>`` (a frame shorter than the tag) is held back, as the
    decoder holds it, rather than sent as answer text that the next frame would contradict.
    """
    rest = output.lstrip()
    explicit = rest.startswith(THINK_OPEN)
    if explicit:
        rest = rest[len(THINK_OPEN) :]
    elif not final and THINK_OPEN.startswith(rest):
        return "", ""  # too short to tell whether a think section opens
    elif model not in IMPLICIT_THINK_MODELS:
        return "", output
    thinking, close, answer = rest.partition(THINK_CLOSE)
    if close:
        return thinking, answer.lstrip()
    if final and not explicit:
        return "", output  # an implicit think section that never closed was the answer after all
    # Hold back what may be the start of a closing tag split across frames.
    held = next((n for n in range(len(THINK_CLOSE) - 1, 0, -1) if thinking.endswith(THINK_CLOSE[:n])), 0)
    return thinking[: len(thinking) - held], ""


def _diff(usage: str, field: str, patches: list[dict[str, Any]]) -> dict[str, Any]:
    return {"intended_usage": usage, "diff_block": {"field": field, "patches": patches}}


def _web_result(citation: Any) -> dict[str, Any]:
    """A Labs source as the web app's ``{name, url, snippet}`` result, with the source's other fields."""
    if isinstance(citation, Mapping):
        title = citation.get("title")
        others = {key: value for key, value in citation.items() if key not in ("url", "title")}
        if "name" in others and isinstance(title, str):
            others["title"] = title  # the source's own name is not its title: send both
        return {
            "name": title if isinstance(title, str) else "",
            "url": str(citation.get("url", "")),
            "snippet": "",
            **others,
        }
    return {"name": "", "url": str(citation), "snippet": ""}


def _failure(frame: Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"status": "failed"}
    for key in ("text", "error_code", "experience"):
        if key in frame:
            message[key] = frame[key]
    if "error_code" in frame:
        message["final_sse_message"] = True  # as the web app's rate-limit message has it
    return message


def _body_problem(body: object) -> str:
    if not isinstance(body, dict):
        return f"body is a JSON {type(body).__name__}, not an object with params and query_str"
    if not isinstance(body.get("query_str"), str):
        return "body has no query_str string"
    if not isinstance(body.get("params"), dict):
        return "body has no params object"
    return ""


def _bad_request(problem: str) -> web.Response:
    return web.json_response({"error": "bad_request", "message": problem}, status=400)


def _session_token(request: web.Request) -> str:
    for name in WEB_SESSION_COOKIES:
        if request.cookies.get(name):
            return request.cookies[name]
    return ""


def _slug(question: str) -> str:
    words = "".join(c if c.isalnum() else " " for c in question.lower()).split()
    return "-".join(words[:8]) + "-" + uuid.uuid4().hex[:8] if words else uuid.uuid4().hex


def _sse(data: bytes, event: str, newline: str) -> bytes:
    """One SSE message: its ``event:`` line and one ``data:`` line (orjson never writes a line break)."""
    end = newline.encode()
    return b"event: " + event.encode() + end + b"data: " + data + end + end


_LABS_NAMES = {web: labs for labs, web in WEB_MODEL_ALIASES.items()}
_TURN_HEADER = re.compile(r"^\[(" + "|".join(TRANSCRIPT_ROLES) + r")\]$", re.MULTILINE)
_ESCAPED = re.compile(r"^\\(\\*\[(?:" + "|".join(TRANSCRIPT_ROLES) + r")\])$", re.MULTILINE)


def _labs_model_name(model_preference: str) -> str:
    """The Labs name the responder is asked for a web ``model_preference`` (the record's aliases, reversed)."""
    return _LABS_NAMES.get(model_preference, model_preference)


def transcript_turns(query: str) -> list[dict[str, str]]:
    """The turns a ``query_str`` carries, read by the emulator on its own from the transcript format
    (``docs/web_transport.md``): a lone question is one user turn; after :data:`TRANSCRIPT_PREAMBLE`, each
    ``[Label]`` line starts a turn, turns are separated by a blank line, and a text line that is a header
    had one backslash added."""
    prefix = TRANSCRIPT_PREAMBLE + "\n\n"
    if not query.startswith(prefix):
        return [{"role": "user", "content": query}]
    body = query[len(prefix) :]
    headers = list(_TURN_HEADER.finditer(body))
    if not headers or headers[0].start() != 0:
        return [{"role": "user", "content": query}]
    turns: list[dict[str, str]] = []
    for header, following in zip(headers, [*headers[1:], None], strict=True):
        end = following.start() - 2 if following is not None else len(body)
        text = _ESCAPED.sub(r"\1", body[header.end() + 1 : end])
        turns.append({"role": header.group(1).lower(), "content": text})
    return turns
