"""The emulator's web-app side: the SSE ask endpoint and the session check, answered by the same responders."""

from __future__ import annotations

import asyncio
import collections
import copy
import hashlib
import inspect
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict

from langchain_pplx_labs.emulator.accounts import Accounts, session_token
from langchain_pplx_labs.emulator.script import Drop, Emit, LabsRequest, Raw, Responder, Scenario, Stall, Step
from langchain_pplx_labs.emulator.uploads import UploadsEndpoint
from langchain_pplx_labs.protocol import IMPLICIT_THINK_MODELS, THINK_CLOSE, THINK_OPEN, LabsProtocol
from langchain_pplx_labs.web_evidence import (
    RATE_LIMITED,
    TRANSCRIPT_PREAMBLE,
    TRANSCRIPT_ROLES,
    WEB_END_EVENT,
    WEB_MODEL_ALIASES,
    diff_form,
    text_form,
)

logger = logging.getLogger(__name__)

_TICK = 0.05
SEARCH_NEW = "/search/new"
USER_SETTINGS = "/rest/user/settings"
MODELS_CONFIG = "/rest/models/config"
RATE_LIMITS = "/rest/rate-limit/all"
THREAD = "/rest/thread"
ROUTES = (SEARCH_NEW, USER_SETTINGS, MODELS_CONFIG, RATE_LIMITS)
"""The routes clients call beside the ask (perplexity-webui-scraper 1.2.1, perplexity-web-mcp-cli 0.16.1)."""
SEARCH_PAGE = "<!DOCTYPE html><html><head><title>{title} - Perplexity</title></head><body></body></html>"
USER_SETTINGS_BODY: dict[str, Any] = {
    "subscription_status": "active",
    "subscription_source": "stripe",
    "subscription_tier": "pro",
    "stripe_status": "active",
    "default_model": "turbo",
    "query_count": 0,
    "query_count_copilot": 0,
    "query_count_mobile": 0,
    "is_verified": True,
    "pages_limit": 100,
    "upload_limit": 500,
    "create_limit": 50,
    "max_files_per_user": 5000,
    "max_files_per_repository": 500,
    "connector_limits": {
        "max_file_size_mb": 50,
        "daily_attachment_limit": 500,
        "weekly_attachment_limit": None,
        "global_file_count": 500,
    },
}
"""``/rest/user/settings`` with the fields clients read (values ours: a Pro account)."""
MODELS_CONFIG_BODY: dict[str, Any] = {
    "models": {
        "turbo": {"label": "Best", "mode": "copilot", "provider": "perplexity"},
        "pplx_pro": {"label": "Pro", "mode": "copilot", "provider": "perplexity"},
        "experimental": {"label": "Sonar", "mode": "copilot", "provider": "perplexity"},
        "pplx_reasoning": {"label": "Reasoning", "mode": "copilot", "provider": "perplexity"},
        "claude45sonnet": {"label": "Claude Sonnet 4.5", "mode": "copilot", "provider": "anthropic"},
        "claude45sonnetthinking": {
            "label": "Claude Sonnet 4.5 Thinking",
            "mode": "copilot",
            "provider": "anthropic",
        },
    },
    "config": [
        {"label": "Best", "non_reasoning_model": "turbo", "subscription_tier": None, "is_default": True},
        {"label": "Sonar", "non_reasoning_model": "experimental", "subscription_tier": "pro"},
        {
            "label": "Claude Sonnet 4.5",
            "non_reasoning_model": "claude45sonnet",
            "reasoning_model": "claude45sonnetthinking",
            "subscription_tier": "pro",
        },
        {"label": "Reasoning", "reasoning_model": "pplx_reasoning", "subscription_tier": "pro"},
    ],
}
"""``/rest/models/config``: ``models`` by identifier and the picker's ``config`` rows (models ours)."""
RATE_LIMITS_BODY: dict[str, Any] = {
    "remaining_pro": 300,
    "remaining_research": 20,
    "remaining_labs": 50,
    "remaining_agentic_research": 10,
    "model_specific_limits": {},
    "sources": {"source_to_limit": {"web": {"monthly_limit": None, "remaining": None}}},
}
"""``/rest/rate-limit/all`` with the fields perplexity-web-mcp-cli reads (numbers ours)."""  # how often a paused answer looks whether its client is still there


class WebVariant(BaseModel):
    """How the emulated web app words its stream, only where public clients saw it differently.

    The form itself is the request's choice, as on the live service (:mod:`langchain_pplx_labs.web_evidence`):
    ``use_schematized_api: true`` gets ``blocks``, with ``diff_block`` patches when the ask lists
    ``diff_blocks`` in ``supported_block_use_cases`` and whole block snapshots when it does not;
    ``send_back_text_in_streaming_api: true``, ``use_schematized_api: false`` or neither flag gets the
    ``text`` form (a ``text`` field in every message, with block snapshots beside it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    final_marker: Literal["final_sse_message", "status", "final"] = "final_sse_message"
    """What marks the last message: ``final_sse_message: true`` with ``status: COMPLETED``;
    ``status: COMPLETED`` alone; or the older ``final: true``."""
    end_of_stream: bool = True
    """Send an ``event: end_of_stream`` message after the last one (helallao/perplexity-ai waits for it)."""
    newline: Literal["\r\n", "\n"] = "\r\n"
    """Line ending of the stream (helallao splits messages on CRLF CRLF)."""
    sources: Literal["both", "web_result_block", "sources_mode_block"] = "both"
    """Blocks the sources arrive in: both (current clients read one or the other and all work: gpt4free
    8.8.6 ``sources_answer_mode`` / ``sources_mode_block``, the others ``web_results`` /
    ``web_result_block``), or only one, as each client saw it earlier."""
    text: Literal["steps", "answer"] = "steps"
    """What the ``text`` form's ``text`` holds: a step list (``SEARCH_RESULTS`` steps, then a ``FINAL`` step
    whose ``content.answer`` is JSON again: perplexity-notebooklm 0.5.0, perplexity-subscription-mcp 0.1.2,
    perplexity-web-mcp-cli 0.16.1), or the older cumulative ``{answer, chunks, web_results}`` of every
    message (henrique-coder 2025-12)."""
    answer_block: Literal["markdown_block", "workflow_block"] = "markdown_block"
    """Where ``blocks`` carry the answer: an ``ask_text`` ``markdown_block`` (pxcli, gpt4free,
    henrique-coder's tests), or a ``workflow_block`` step payload patched by ``diff_block`` (henrique-coder's
    tests at 0ff78647, perplexity-webui-scraper 1.2.1)."""
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
    """Serves ``POST <web_path>``, ``GET <web_session_path>`` and the routes clients call beside them
    (:data:`ROUTES`) for a :class:`WebHost` (the emulator).

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
        self.calls: collections.Counter[str] = collections.Counter()
        """GET requests per route of :data:`ROUTES` (``/search/new``, ``/rest/user/settings``, ...)."""
        self.models_config_status = 200
        """The HTTP status ``/rest/models/config`` answers: another rehearses a list that failed or moved."""
        self.threads: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        """Answered asks by ``thread_url_slug``, as ``GET /rest/thread/<slug>`` gives them (the latest 64)."""
        self.bodies: collections.deque[dict[str, Any]] = collections.deque(maxlen=64)
        """Bodies of the latest asks, oldest first."""
        self.conversations: collections.OrderedDict[str, tuple[str, str, list[dict[str, str]]]] = (
            collections.OrderedDict()
        )
        """Answered asks by ``backend_uuid``: the thread's ``read_write_token``, its slug and its turns so far
        (a follow-up names the last one with ``last_backend_uuid``; the latest 256 kept)."""
        self.headers: collections.deque[dict[str, str]] = collections.deque(maxlen=64)
        """HTTP headers of the latest asks and session checks."""
        self.uploads = UploadsEndpoint(lambda request: bool(session_token(request)))
        """The upload routes (:mod:`langchain_pplx_labs.emulator.uploads`): what arrived, to read back."""
        self.accounts = Accounts()
        """The email sign-in (``accounts.last_code``) and sessions that expire (``accounts.expire()``)."""
        self._closing = False

    def install(self, app: web.Application) -> None:
        """Add the routes to the emulator's application."""
        protocol = self.emulator.protocol
        app.router.add_post(protocol.web_path, self._ask)
        app.router.add_get(protocol.web_session_path, self._session)
        app.router.add_get(SEARCH_NEW, self._search_new)
        app.router.add_get(USER_SETTINGS, self._user_settings)
        app.router.add_get(MODELS_CONFIG, self._models_config)
        app.router.add_get(RATE_LIMITS, self._rate_limits)
        app.router.add_get(THREAD + "/{slug}", self._thread)
        self.uploads.install(app)
        self.accounts.install(app, protocol)

    def paths(self) -> tuple[str, ...]:
        """The paths this endpoint serves (a thread's path is :data:`THREAD` and its slug)."""
        protocol = self.emulator.protocol
        return (protocol.web_path, protocol.web_session_path, *ROUTES, *self.accounts.paths())

    def serves(self, path: str) -> bool:
        """Whether ``path`` is one of this endpoint's (the server's faults apply to them)."""
        return path in self.paths() or path.startswith(THREAD + "/")

    def reset(self) -> None:
        """Counters and recordings cleared, the variant back to the one the emulator was made with."""
        self.variant = self.default_variant
        self.asks = 0
        self.session_checks = 0
        self.calls.clear()
        self.models_config_status = 200
        self.threads.clear()
        self.conversations.clear()
        self.bodies.clear()
        self.headers.clear()
        self.uploads.reset()
        self.accounts.reset()

    def close(self) -> None:
        """End every answer in progress: the emulator is stopping."""
        self._closing = True

    async def _session(self, request: web.Request) -> web.Response:
        self.session_checks += 1
        self.headers.append(dict(request.headers))
        token = session_token(request)
        if not token:
            return web.json_response({})
        return web.json_response({"user": _user(token), "expires": "2099-01-01T00:00:00.000Z"})

    async def _search_new(self, request: web.Request) -> web.Response:
        """``GET /search/new?q=``: the search page clients load before an ask (henrique-coder since
        fa19c65, perplexity-web-mcp-cli raising on anything but 2xx); the emulator's page is a stub."""
        self.calls[SEARCH_NEW] += 1
        self.headers.append(dict(request.headers))
        query = request.query.get("q", "")
        title = query[:80].replace("<", "&lt;").replace("&", "&amp;")
        return web.Response(text=SEARCH_PAGE.format(title=title), content_type="text/html")

    async def _user_settings(self, request: web.Request) -> web.Response:
        """``GET /rest/user/settings``: the signed-in account's settings (the fields henrique-coder 1.2.1
        and perplexity-web-mcp-cli 0.16.1 read); without a session, 401 (not in the record: our choice)."""
        self.calls[USER_SETTINGS] += 1
        if not session_token(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(USER_SETTINGS_BODY)

    async def _models_config(self, request: web.Request) -> web.Response:
        """``GET /rest/models/config``: the model picker, in the shape perplexity-web-mcp-cli 0.16.1 parses."""
        self.calls[MODELS_CONFIG] += 1
        if self.models_config_status != 200:
            return web.json_response({"error": "models config failed"}, status=self.models_config_status)
        return web.json_response(MODELS_CONFIG_BODY)

    async def _rate_limits(self, request: web.Request) -> web.Response:
        """``GET /rest/rate-limit/all``: remaining quotas, in the shape perplexity-web-mcp-cli 0.16.1 parses."""
        self.calls[RATE_LIMITS] += 1
        if not session_token(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response(RATE_LIMITS_BODY)

    async def _thread(self, request: web.Request) -> web.Response:
        """``GET /rest/thread/<slug>``: an answered ask's stored entry (perplexity-web-mcp-cli reads its
        ``text`` steps' ``FINAL`` for the sources' order); an unknown slug is a 404."""
        self.calls[THREAD] += 1
        thread = self.threads.get(request.match_info["slug"])
        if thread is None:
            return web.json_response({"error": "not_found"}, status=404)
        return web.json_response(thread)

    def _store_thread(self, body: Mapping[str, Any], renderer: WebRenderer) -> None:
        envelope = renderer.envelope
        web_results = [_web_result(c) for c in renderer.citations]
        final = {"answer": renderer.answer, "web_results": web_results, "chunks": [renderer.answer]}
        steps = [
            {"step_type": "SEARCH_RESULTS", "content": {"web_results": web_results}},
            {"step_type": "FINAL", "content": {"answer": orjson.dumps(final).decode()}},
        ]
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        entry = {
            "backend_uuid": envelope["backend_uuid"],
            "query_str": body["query_str"],
            "display_model": envelope["display_model"],
            "thread_title": envelope["thread_title"],
            "created_at": created,
            "text": orjson.dumps(steps).decode(),
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "markdown_block": {
                        "progress": "DONE",
                        "chunks": [renderer.answer],
                        "answer": renderer.answer,
                    },
                }
            ],
        }
        slug = envelope["thread_url_slug"]
        metadata = {"title": envelope["thread_title"], "slug": slug, "uuid": slug, "created_at": created}
        self.threads[slug] = {"entries": [entry], "thread_metadata": metadata}
        while len(self.threads) > 64:
            self.threads.popitem(last=False)

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
        turns = transcript_turns(body["query_str"])
        thread: tuple[str, str, list[dict[str, str]]] | None = None
        if params.get("query_source") == "followup":
            # A follow-up: ``query_str`` is the new turn alone, the thread holds the rest.
            thread = self.conversations.get(str(params.get("last_backend_uuid")))
            if thread is None or params.get("read_write_token") != thread[0]:
                return _bad_request("follow-up to an unknown thread, or with another read_write_token")
            turns = [*thread[2], *turns]
        payload = {
            "version": str(params.get("version", "")),
            "source": str(params.get("source", "default")),
            "model": _labs_model_name(preference if isinstance(preference, str) and preference else "turbo"),
            "messages": turns,
        }
        self._record(payload)
        labs_request = LabsRequest(payload, self.emulator.protocol, web_body=body)
        if self.variant.anonymous == "rate_limited" and not session_token(request):
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
        renderer = WebRenderer(self.variant, labs_request, params, thread=thread[:2] if thread else None)
        try:
            await self._play(request, response, renderer, steps)
        except ConnectionError:
            logger.debug("web client went away during its answer")  # the client's choice, not an error
        if renderer.ended and renderer.answer:
            self._store_thread(body, renderer)
            envelope = renderer.envelope
            answered = [*turns, {"role": "assistant", "content": renderer.answer}]
            self.conversations[envelope["backend_uuid"]] = (
                envelope["read_write_token"],
                envelope["thread_url_slug"],
                answered,
            )
            while len(self.conversations) > 256:
                self.conversations.popitem(last=False)
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
    """Renders one answer's cumulative Labs frames as the web app's SSE JSON messages, in the form the
    ask's ``params`` chose (:func:`~langchain_pplx_labs.web_evidence.text_form`, ``diff_form``)."""

    def __init__(
        self,
        variant: WebVariant,
        request: LabsRequest,
        params: Mapping[str, Any],
        *,
        thread: tuple[str, str] | None = None,
    ) -> None:
        self.variant = variant
        self.model = request.model
        self.progress_event = request.progress_event
        self.form: Literal["diff", "snapshot", "text"] = (
            "text" if text_form(params) else "diff" if diff_form(params) else "snapshot"
        )
        """``diff``: ``diff_block`` patches; ``snapshot``: whole blocks; ``text``: a ``text`` field beside snapshots."""
        self.ended = False
        """A final or failed frame was rendered."""
        self.answer = ""
        """The answer text sent so far."""
        self.citations: list[Any] = []
        """The sources sent so far."""
        self.steps: list[dict[str, Any]] = []
        """The ``text`` form's steps so far (also what a stored thread's entry holds)."""
        self._reasoning: str | None = None
        self._chunks: list[str] = []
        self._planned = False  # the plan's block was sent
        self._plan_done = False
        question = request.question.strip()
        mode = params.get("mode")
        self.envelope: dict[str, Any] = {
            "backend_uuid": str(uuid.uuid4()),
            "context_uuid": str(uuid.uuid4()),
            "uuid": str(uuid.uuid4()),
            "frontend_context_uuid": params.get("frontend_context_uuid"),
            "display_model": params.get("model_preference"),
            "mode": mode.upper() if isinstance(mode, str) else "CONCISE",
            "thread_title": question[:80],
            "thread_url_slug": thread[1] if thread else _slug(question),
            # The thread's write token (jamiemills' messages carry it), kept by its follow-ups.
            "read_write_token": thread[0] if thread else uuid.uuid4().hex,
        }
        self.question = question

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
        citations = list(citations) if isinstance(citations, list) else self.citations
        reasoning, answer = split_reasoning(str(frame.get("output", "")), self.model, final=final)
        new_sources = bool(citations) and citations != self.citations
        blocks = self._plan_blocks(reasoning, answer)
        blocks += self._answer_blocks(answer, final)
        if new_sources:
            self.citations = citations
            blocks += self._source_blocks()
        if final and self.citations and self.form != "text":
            blocks.append(self._media_block())
        if not blocks and not final:
            return []
        message: dict[str, Any] = {}
        if final:
            # Suggested next questions with the answer's end (gpt4free 35e3fa95, 8.8.6 ``related_query_items``).
            message["related_query_items"] = [
                {"text": f"Tell me more about {self.question[:60]}"},
                {"text": "What are the sources?"},
            ]
        if self.form == "text":
            message["text"] = self._text(new_sources, final)
            if self.variant.text == "answer":
                blocks = []  # the older text form: the text alone
        message["blocks"] = blocks
        self.ended = final
        return [self._marked(message, final)]

    # The plan: goals while the model reasons, DONE when the answer begins.

    def _plan_blocks(self, reasoning: str, answer: str) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        if reasoning and not self._chunks and reasoning != self._reasoning:
            if self.form == "diff":
                patches: list[dict[str, Any]] = [{"op": "replace", "path": "/goals/0", "value": reasoning}]
                if self._reasoning is None:
                    patches = [
                        {"op": "replace", "path": "", "value": {"progress": "IN_PROGRESS", "goals": []}},
                        {"op": "add", "path": "/goals/0", "value": reasoning},
                    ]
                blocks.append(_diff("pro_search_steps", "plan_block", patches))
            else:
                plan = {"progress": "IN_PROGRESS", "goals": [reasoning]}
                blocks.append({"intended_usage": "pro_search_steps", "plan_block": plan})
            self._reasoning = reasoning
        if answer and self._reasoning is not None and not self._plan_done:
            self._plan_done = True
            if self.form == "diff":
                done = [{"op": "replace", "path": "/progress", "value": "DONE"}]
                blocks.append(_diff("pro_search_steps", "plan_block", done))
            else:
                plan = {"progress": "DONE", "goals": [self._reasoning]}
                blocks.append({"intended_usage": "pro_search_steps", "plan_block": plan})
        return blocks

    # The answer: one new chunk per frame that continues it; a rewrite is sent whole.

    def _answer_blocks(self, answer: str, final: bool) -> list[dict[str, Any]]:
        new = self._extend(answer)
        whole = new is None or (final and not self._chunks)
        if whole:
            self._chunks = [answer]
        elif not new and not final:
            return []
        if self.variant.answer_block == "workflow_block" and self.form != "text":
            return [self._workflow(answer, new, whole, final)]
        if self.form != "diff":
            markdown: dict[str, Any] = {
                "progress": "DONE" if final else "IN_PROGRESS",
                "chunks": list(self._chunks),
                "chunk_starting_offset": 0,
            }
            if final:
                markdown["answer"] = answer
            return [{"intended_usage": "ask_text", "markdown_block": markdown}]
        patches: list[dict[str, Any]] = []
        if whole:
            value = {"progress": "IN_PROGRESS", "chunks": [answer], "chunk_starting_offset": 0}
            patches.append({"op": "replace", "path": "", "value": value})
        elif new:
            patches.append({"op": "add", "path": f"/chunks/{len(self._chunks) - 1}", "value": new})
        if final:
            patches.append({"op": "replace", "path": "/progress", "value": "DONE"})
            patches.append({"op": "add", "path": "/answer", "value": answer})
        return [_diff("ask_text", "markdown_block", patches)]

    def _workflow(self, answer: str, new: str | None, whole: bool, final: bool) -> dict[str, Any]:
        """The answer as henrique-coder's tests have it: a ``workflow_block`` snapshot, then patches on it."""
        payload = "/steps/0/items/0/payload/text_payload"
        if whole:
            text_payload = {"text": answer if final else "", "chunks": [answer]}
            status = "WORKFLOW_COMPLETED" if final else "WORKFLOW_EXECUTING_STEPS"
            workflow = {"status": status, "steps": [{"items": [{"payload": {"text_payload": text_payload}}]}]}
            return {"intended_usage": "workflow_root", "workflow_block": workflow}
        patches: list[dict[str, Any]] = []
        if new:
            patches.append({"op": "add", "path": f"{payload}/chunks/{len(self._chunks) - 1}", "value": new})
        if final:
            patches.append({"op": "replace", "path": "/status", "value": "WORKFLOW_COMPLETED"})
            patches.append({"op": "replace", "path": f"{payload}/text", "value": answer})
        return _diff("workflow_root", "workflow_block", patches)

    def _extend(self, answer: str) -> str | None:
        """Take ``answer`` as what was sent plus one new chunk: that chunk (``""`` if none); ``None`` when
        it does not continue what was sent (or is the first text): then it is the only chunk."""
        if answer.startswith(self.answer) and (self._chunks or not answer):
            new = answer[len(self.answer) :]
            if new:
                self._chunks.append(new)
                self.answer = answer
            return new
        self._chunks = [answer]
        self.answer = answer
        return None

    # Sources: a web results block per the variant (both by default), or the text form's step.

    def _source_blocks(self) -> list[dict[str, Any]]:
        results = {"progress": "DONE", "web_results": [_web_result(c) for c in self.citations]}
        blocks: list[dict[str, Any]] = []
        if self.variant.sources in ("both", "web_result_block"):
            blocks.append({"intended_usage": "web_results", "web_result_block": results})
        if self.variant.sources in ("both", "sources_mode_block"):
            blocks.append(
                {"intended_usage": "sources_answer_mode", "sources_mode_block": copy.deepcopy(results)}
            )
        return blocks

    def _media_block(self) -> dict[str, Any]:
        """An image per source, as a ``media_items`` block (gpt4free 35e3fa95 reads ``media_block.media_items``)."""
        items = [
            {"medium": "image", "image": _web_result(c)["url"] + "/image.png", "url": _web_result(c)["url"]}
            for c in self.citations
        ]
        return {"intended_usage": "media_items", "media_block": {"media_items": items}}

    def _text(self, new_sources: bool, final: bool) -> str:
        """The ``text`` field of this message: every message of the ``text`` form has one."""
        web_results = [_web_result(c) for c in self.citations]
        if self.variant.text == "answer":
            # Cumulative by the service: every ``text`` repeats the whole answer and all its chunks
            # (henrique-coder's client, 2025-12, replaces its answer and chunks with each message's).
            content = {"answer": self.answer, "chunks": list(self._chunks), "web_results": web_results}
            return orjson.dumps(content).decode()
        if new_sources:
            self.steps = [s for s in self.steps if s["step_type"] != "SEARCH_RESULTS"]
            self.steps.append({"step_type": "SEARCH_RESULTS", "content": {"web_results": web_results}})
        if final:
            inner = {"answer": self.answer, "web_results": web_results, "chunks": list(self._chunks)}
            self.steps.append({"step_type": "FINAL", "content": {"answer": orjson.dumps(inner).decode()}})
        return orjson.dumps(self.steps).decode()

    def _marked(self, message: dict[str, Any], final: bool) -> dict[str, Any]:
        marked = {**self.envelope, **message}
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
    """A Labs source as the web app's ``{name, url, snippet}`` result (the three every client reads), with
    the source's other fields. A source with a title is named by it, and its snippet is sent; a bare URL
    has neither, so both stay ``""``, and the web answer's sources are the Labs answer's."""
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


def _user(token: str) -> dict[str, Any]:
    """The signed-in user of ``/api/auth/session``: who, and the subscription fields clients read
    (perplexity-webui-scraper 1.2.1 ``AccountUser``: ``subscription_tier``, ``payment_tier``,
    ``subscription_status``, ``subscription_source``); the emulator's user is on Pro."""
    user_id = "emulator-user-" + hashlib.sha256(token.encode()).hexdigest()[:12]
    return {
        "id": user_id,
        "name": "Emulator User",
        "email": "user@emulator.invalid",
        "image": None,
        "username": "emulator-user",
        "subscription_tier": "pro",
        "payment_tier": "pro",
        "subscription_status": "active",
        "subscription_source": "stripe",
    }
