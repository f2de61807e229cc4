"""Pure codec of Perplexity's web-app ask: its SSE messages, the request body, the transcript, and answer folding (no I/O)."""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jsonpatch
import jsonpointer
import orjson
from multidict import CIMultiDict

from langchain_pplx_labs.errors import (
    WEB_APP,
    PerplexityLabsInputError,
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    excerpt_of,
)
from langchain_pplx_labs.events import ReasoningDelta, StreamEvent, TextDelta, finished
from langchain_pplx_labs.protocol import LabsMessage, LabsProtocol, Role
from langchain_pplx_labs.web.sse import SSEMessage
from langchain_pplx_labs.web_evidence import BLOCK_USE_CASES, STREAM_PARAMS
from langchain_pplx_labs.web_evidence import TRANSCRIPT_PREAMBLE as TRANSCRIPT_PREAMBLE
from langchain_pplx_labs.web_evidence import WEB_END_EVENT as WEB_END_EVENT
from langchain_pplx_labs.web_evidence import WEB_MODEL_ALIASES as WEB_MODEL_ALIASES
from langchain_pplx_labs.web_evidence import WEB_SESSION_COOKIES as WEB_SESSION_COOKIES

logger = logging.getLogger(__name__)

WEB_ASK_PATH = "/rest/sse/perplexity_ask"
WEB_SESSION_PATH = "/api/auth/session"
WEB_REQUEST_REASON = "perplexity-query-state-provider"
"""``x-perplexity-request-reason`` the web app sends with an ask."""

AUTO_MODELS = frozenset({"auto", "perplexity"})
"""Names that let the account pick: ``pplx_pro`` when signed in, ``turbo`` when anonymous (as gpt4free does)."""
_LABS_NAMES = {web: labs for labs, web in WEB_MODEL_ALIASES.items()}

THREAD_FIELDS = ("backend_uuid", "read_write_token", "thread_url_slug")
"""The thread ids every answer message's envelope carries; a follow-up sends the first two back
(gpt4free db299525, perplexity-webui-scraper 1.2.1). ``read_write_token`` is a credential: never logged."""
FOLLOWUP_FIELDS = ("last_backend_uuid", "read_write_token")

SUPPORTED_BLOCK_USE_CASES = BLOCK_USE_CASES
"""Block kinds the client says it renders (``web_evidence.BLOCK_USE_CASES``); ``diff_blocks`` asks for patches."""


# --- Server-Sent Events of the web app ----------------------------------------------------------


def is_end_marker(message: SSEMessage) -> bool:
    """True for a message that ends the stream: an ``end_of_stream`` event, or ``data: [DONE]``."""
    data = message.data
    # Looked at for every message: an answer's (a JSON object, hundreds of bytes) is never copied.
    return message.event == WEB_END_EVENT or (len(data) < 32 and data.strip() == "[DONE]")


def message_json(message: SSEMessage) -> dict[str, Any] | None:
    """The JSON object an answer message carries; ``None`` for empty data, an end marker or another event.

    Data that is not a JSON object raises :class:`PerplexityLabsProtocolError` with its start.
    """
    if message.event != "message" or (not message.data.startswith("{") and not _json_data(message)):
        return None
    try:
        data = orjson.loads(message.data)
    except orjson.JSONDecodeError:
        raise PerplexityLabsProtocolError(
            "Web answer message is not JSON", excerpt=excerpt_of(message.data)
        ) from None
    if not isinstance(data, dict):
        raise PerplexityLabsProtocolError(
            f"Web answer message is a JSON {type(data).__name__}, not an object",
            excerpt=excerpt_of(message.data),
        )
    return data


def _json_data(message: SSEMessage) -> bool:
    """Whether data that does not start an object is still to be read as JSON: not empty, not an end marker."""
    return bool(message.data.strip()) and not is_end_marker(message)


# --- Conversation transcript ----------------------------------------------------------------------

_ROLE_LABELS: Mapping[Role, str] = {"system": "System", "user": "User", "assistant": "Assistant"}
_LABEL_ROLES: Mapping[str, Role] = {label: role for role, label in _ROLE_LABELS.items()}
_HEADER = re.compile(r"^\[(System|User|Assistant)\]$", re.MULTILINE)
# A content line that looks like a header, with any backslashes already in front of it.
_HEADER_LIKE = re.compile(r"^(\\*)(\[(?:System|User|Assistant)\])$", re.MULTILINE)
_ESCAPED_HEADER = re.compile(r"^\\(\\*\[(?:System|User|Assistant)\])$", re.MULTILINE)


def query_from_messages(messages: Sequence[LabsMessage]) -> str:
    """The single ``query_str`` a conversation travels in.

    A lone user question goes as itself. Anything more (system instructions, history, tool results
    already folded into turns) becomes a transcript: :data:`TRANSCRIPT_PREAMBLE`, then one
    ``[System]`` / ``[User]`` / ``[Assistant]`` header line per turn followed by its text, turns
    separated by a blank line. A text line that is exactly a header gets one more leading backslash,
    so :func:`messages_from_query` gives the same turns back.
    """
    if not messages:
        raise PerplexityLabsInputError("Cannot send an empty conversation: give at least one message")
    for message in messages:
        if message.get("role") not in _ROLE_LABELS or not isinstance(message.get("content"), str):
            raise PerplexityLabsInputError(
                f"Not a Labs message (role system/user/assistant, string content): {dict(message)!r:.200}"
            )
    if len(messages) == 1 and messages[0]["role"] == "user":
        question = messages[0]["content"]
        if not question.startswith(TRANSCRIPT_PREAMBLE):
            return question
    turns = (f"[{_ROLE_LABELS[m['role']]}]\n{_escape_headers(m['content'])}" for m in messages)
    return TRANSCRIPT_PREAMBLE + "\n\n" + "\n\n".join(turns)


def _escape_headers(text: str) -> str:
    return _HEADER_LIKE.sub(lambda match: "\\" + match.group(1) + match.group(2), text)


def messages_from_query(query: str) -> list[LabsMessage]:
    """The conversation a ``query_str`` carries: the inverse of :func:`query_from_messages`."""
    if not query.startswith(TRANSCRIPT_PREAMBLE + "\n\n"):
        return [{"role": "user", "content": query}]
    body = query[len(TRANSCRIPT_PREAMBLE) + 2 :]
    headers = list(_HEADER.finditer(body))
    if not headers or headers[0].start() != 0:
        return [{"role": "user", "content": query}]
    messages: list[LabsMessage] = []
    for index, header in enumerate(headers):
        end = headers[index + 1].start() - 2 if index + 1 < len(headers) else len(body)
        text = body[header.end() + 1 : end]  # after the header's own line end
        role = _LABEL_ROLES[header.group(1)]
        messages.append({"role": role, "content": _ESCAPED_HEADER.sub(r"\1", text)})
    return messages


# --- Request ----------------------------------------------------------------------------------


def web_model_preference(model: str, *, signed_in: bool = False) -> str:
    """The web ``model_preference`` for a model name: aliases from the evidence, ``auto``, else unchanged."""
    if model in AUTO_MODELS:
        return "pplx_pro" if signed_in else "turbo"
    return WEB_MODEL_ALIASES.get(model, model)


def labs_model_name(model_preference: str) -> str:
    """The Labs name for a web ``model_preference`` (the inverse alias), else unchanged."""
    return _LABS_NAMES.get(model_preference, model_preference)


def web_request_body(
    payload: Mapping[str, Any],
    *,
    frontend_uuid: str,
    visitor_id: str,
    frontend_context_uuid: str,
    signed_in: bool = False,
    protocol: LabsProtocol | None = None,
    attachments: Sequence[str] = (),
) -> dict[str, Any]:
    """The web app's ask body for a Labs-shaped payload ``{"model", "messages", ...}``.

    ``params`` follow gpt4free's anonymous body (2025-10): ``mode`` is ``concise`` anonymous and
    ``copilot`` signed in; ``protocol.web_params`` is laid over them. The conversation travels in
    ``query_str`` (and ``dsl_query``) as :func:`query_from_messages` writes it. The payload's
    ``web_params`` (the model's search options) are laid over the defaults; its ``thread``
    (``last_backend_uuid``, ``read_write_token``) makes the ask a follow-up in that thread.
    ``attachments``: the uploaded files' URLs (:mod:`langchain_pplx_labs.web.uploads`), as ``params.attachments``.
    """
    protocol = protocol or LabsProtocol()
    model = payload.get("model")
    messages = payload.get("messages")
    if not isinstance(model, str) or not model:
        raise PerplexityLabsInputError(f"Labs payload has no model name: {model!r}")
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        raise PerplexityLabsInputError(f"Labs payload's messages are not a list: {type(messages).__name__}")
    query = query_from_messages(messages)
    params: dict[str, Any] = {
        "attachments": list(attachments),
        "language": "en-US",
        "timezone": "UTC",
        "search_focus": "internet",
        "sources": ["web"],
        "search_recency_filter": None,
        "frontend_uuid": frontend_uuid,
        "frontend_context_uuid": frontend_context_uuid,
        "visitor_id": visitor_id,
        "mode": "copilot" if signed_in else "concise",
        "model_preference": web_model_preference(model, signed_in=signed_in),
        "is_related_query": False,
        "is_sponsored": False,
        "prompt_source": "user",
        "query_source": "home",
        "is_incognito": True,
        "time_from_first_type": 0,
        "local_search_enabled": False,
        "use_schematized_api": STREAM_PARAMS["use_schematized_api"],
        "send_back_text_in_streaming_api": STREAM_PARAMS["send_back_text_in_streaming_api"],
        "supported_block_use_cases": list(STREAM_PARAMS["supported_block_use_cases"]),
        "client_coordinates": None,
        "mentions": [],
        "dsl_query": query,
        "skip_search_enabled": False,
        "is_nav_suggestions_disabled": False,
        "always_search_override": False,
        "override_no_search": False,
        "source": protocol.source,
        "version": protocol.web_version,
    }
    options = payload.get("web_params")
    if isinstance(options, Mapping):
        params.update(options)
    thread = payload.get("thread")
    if isinstance(thread, Mapping) and all(isinstance(thread.get(k), str) for k in FOLLOWUP_FIELDS):
        # A follow-up in the thread the ids name: ``query_str`` is the new turn alone.
        params["last_backend_uuid"] = thread["last_backend_uuid"]
        params["read_write_token"] = thread["read_write_token"]
        params["query_source"] = "followup"
        params["followup_source"] = "link"
    params.update(protocol.web_params)
    return {"params": params, "query_str": query}


def web_headers(protocol: LabsProtocol, *, request_id: str = "") -> dict[str, str]:
    """Headers of a web ask: event-stream accept, JSON body, the web origin and referer.

    The web app sends its ``frontend_uuid`` as ``x-request-id`` (gpt4free issue #3197): pass it as
    ``request_id``. No ``user-agent``: the wire sends the same browser one as the other transports.
    """
    headers = {
        "accept": "text/event-stream",
        "accept-language": "en-US,en;q=0.9",
        "cache-control": "no-cache",
        "content-type": "application/json",
        "x-perplexity-request-reason": WEB_REQUEST_REASON,
        **web_page_headers(protocol),
    }
    if request_id:
        headers["x-request-id"] = request_id
    return headers


def web_page_headers(protocol: LabsProtocol) -> dict[str, str]:
    """What every request of the web app's page carries, its session check too: the web origin and
    referer, and the web app client's own headers (``protocol.web_client_headers``)."""
    headers = {
        name: value
        for name, value in (("origin", protocol.web_origin), ("referer", protocol.web_referer))
        if value
    }
    headers.update(protocol.web_client_headers)
    return headers


def web_request_headers(
    web: Mapping[str, str], given: Iterable[tuple[str, str]], protocol: LabsProtocol
) -> CIMultiDict[str]:
    """The web app's own headers ``web``, then the ``given`` ones (User-Agent, cookies, the user's).

    Given headers carry the Labs playground's Origin and Referer by default: never sent to the web app
    (the web's own, or none when the protocol's are ``""``), while a value the user set replaces the web's.
    """
    labs_defaults = {name.lower(): value for name, value in protocol.headers.items()}
    headers: CIMultiDict[str] = CIMultiDict(web)
    for name, value in given:
        if labs_defaults.get(name.lower()) == value:
            continue
        headers[name] = value
    return headers


def session_user_id(session: object) -> str | None:
    """The signed-in user's id from an ``/api/auth/session`` answer, ``None`` when anonymous."""
    if isinstance(session, Mapping):
        user = session.get("user")
        if isinstance(user, Mapping) and user.get("id"):
            return str(user["id"])
    return None


# --- Answer -----------------------------------------------------------------------------------

Citation = str | dict[str, Any]
"""A source as the stream cites it: a bare URL, or ``{"url", "title"?, ...}`` with the web result's other fields."""


class WebDecoder:
    """Reads the web app's SSE JSON messages, one at a time, as the answer's events (sans-IO).

    Understands the schematized stream (``blocks`` with ``markdown_block`` / ``plan_block`` /
    ``web_result_block`` / ``sources_mode_block`` snapshots and ``diff_block`` JSON patches on them)
    and the older one (a ``text`` field holding JSON with ``answer``, ``chunks``, ``web_results``,
    or a list of steps ending in ``FINAL``). What it does not understand it ignores.

    A chunk appended to the answer is a :class:`TextDelta` of that chunk; a snapshot or another
    patch is diffed against the text already read. The plan's goals are :class:`ReasoningDelta`
    until the answer begins. Sources are kept as they change and sent once, with :class:`Finished`.
    A message with ``final_sse_message`` or ``final`` true ends the answer; ``status: COMPLETED``
    alone only marks it :attr:`completed`, and :meth:`finish` ends it when the stream ends.
    A failed message raises the server's error (:func:`web_failure`).
    """

    def __init__(self, model: str = "") -> None:
        self.model = model
        self._blocks: dict[tuple[str, str], Any] = {}
        # The answer's text as the stream has it (read), and what became deltas (leading space cut).
        self._read: list[str] = []
        self._read_length = 0
        self._answer_started = False
        self._reasoning = ""
        self._citations: list[Citation] = []
        self._thread: dict[str, str] = {}
        self._related: list[str] = []
        self._images: list[dict[str, Any]] = []
        self._events: list[StreamEvent] = []
        self.completed = False
        """A ``status: COMPLETED`` (or ``text_completed: true``) message arrived."""
        self.finished = False
        """The answer ended (its final message, or :meth:`finish`): later messages are ignored."""

    def feed(self, message: Mapping[str, Any]) -> list[StreamEvent]:
        """Take one SSE message's JSON; return the events it makes (none when nothing is new)."""
        # ``dict``, not ``Mapping``: an ABC's isinstance costs more than the rest of a usual message, and
        # JSON decodes to dicts.
        if self.finished or not isinstance(message, dict):
            return []
        get = message.get
        status = get("status")
        # Nearly every message is PENDING with no error code: two lookups, no string made.
        if (status != "PENDING" and status is not None) or get("error_code"):
            failure = web_failure(message, model=self.model)
            if failure is not None:
                self.finished = True
                raise failure
            if isinstance(status, str) and status.upper() == "COMPLETED":
                self.completed = True
        if get("text_completed") is True:
            self.completed = True  # the answer's text is whole (henrique-coder's reader ends there)
        if len(self._thread) < len(THREAD_FIELDS):
            self._take_thread(message)
        related = get("related_query_items")
        if isinstance(related, list) and related:
            self._related = [
                item["text"]
                for item in related
                if isinstance(item, dict) and isinstance(item.get("text"), str)
            ]
        events = self._events = []
        blocks = get("blocks")
        if isinstance(blocks, list):
            self._take_blocks(blocks)
        text = get("text")
        if isinstance(text, str) and text:
            self._take_text(text)
        if get("final_sse_message") is True or get("final") is True:
            events.extend(self.finish())
        return events

    def finish(self) -> list[StreamEvent]:
        """The stream ended (an ``end_of_stream`` event, or its close after ``COMPLETED``): the end event.

        Empty if the answer already ended.
        """
        if self.finished:
            return []
        self.finished = True
        extras: dict[str, Any] = {}
        if self._images:
            extras["images"] = self._images
        if self._related:
            extras["related_questions"] = self._related
        return [finished(self._citations, thread=dict(self._thread), extras=extras)]

    def _take_thread(self, message: Mapping[str, Any]) -> None:
        """The thread ids a message's envelope carries (``backend_uuid`` is the latest answer's)."""
        for name in THREAD_FIELDS:
            value = message.get(name)
            if isinstance(value, str) and value:
                self._thread[name] = value

    # Answer text and reasoning, as deltas.

    def _append(self, chunk: str) -> None:
        """``chunk`` continues the answer's text."""
        if not chunk:
            return
        self._read.append(chunk)
        self._read_length += len(chunk)
        if not self._answer_started:
            chunk = chunk.lstrip()  # as the answer after a think section: no leading blank
            if not chunk:
                return
            self._answer_started = True
        self._events.append(TextDelta(chunk))

    def _answer_is(self, text: str) -> None:
        """The answer's whole text is now ``text``: what it adds to the text read.

        A rewrite of text already read keeps ours (its deltas were sent) and takes the rest.
        """
        if len(text) <= self._read_length:
            return
        read = "".join(self._read)
        self._read = [read]
        if not text.startswith(read):
            logger.debug("web answer rewritten at %d chars; keeping the text read", len(read))
        self._append(text[len(read) :])

    def _plan_is(self, reasoning: str) -> None:
        if self._answer_started or len(reasoning) <= len(self._reasoning):
            return  # the plan once the answer began, or nothing new
        new = reasoning[len(self._reasoning) :]
        if not self._reasoning:
            new = new.lstrip()
        self._reasoning = reasoning
        if new:
            self._events.append(ReasoningDelta(new))

    # Schematized stream: block snapshots and JSON patches on them.

    def _take_blocks(self, blocks: list[Any]) -> None:
        for block in blocks:
            if not isinstance(block, dict):
                continue
            usage = block.get("intended_usage")
            usage = usage if isinstance(usage, str) else ""
            for name, value in block.items():
                if name == "diff_block" and isinstance(value, dict):
                    self._patch(usage, value)
                elif name.endswith("_block") and isinstance(value, dict):
                    document = copy.deepcopy(dict(value))  # our own copy, to patch
                    if name == "markdown_block":
                        document = _merged_markdown(self._blocks.get((usage, name)), document)
                    self._blocks[usage, name] = document
                    self._derive(name, document)

    def _patch(self, usage: str, diff: Mapping[str, Any]) -> None:
        field = diff.get("field")
        patches = diff.get("patches")
        if not isinstance(field, str) or not isinstance(patches, list):
            return
        document = self._blocks.get((usage, field))
        if document is None:
            # A patch whose block came under another usage (or none: henrique-coder's workflow tests).
            usage = next((key[0] for key in self._blocks if key[1] == field), usage)
            document = self._blocks.get((usage, field), {})
        others = False
        for operation in patches:
            if not isinstance(operation, dict):
                continue
            appended = _append_chunk(document, operation)
            if appended is not None and field == "markdown_block" and not others:
                self._append(appended)  # the usual message: one chunk more, and nothing else to read
            else:
                if appended is None:
                    document = _apply_patch(document, operation)
                others = True
        self._blocks[usage, field] = document
        if others:
            self._derive(field, document)

    def _derive(self, field: str, document: Any) -> None:
        if not isinstance(document, Mapping):
            return
        if field == "markdown_block":
            self._answer_is(_markdown_text(document))
        elif field == "plan_block":
            self._plan_is(_goals_text(document.get("goals")))
        elif field in ("web_result_block", "sources_mode_block"):
            self._sources_are(document.get("web_results"))
        elif field == "workflow_block":
            self._answer_is(_workflow_text(document))
        elif field == "media_block":
            images = _images_of(document.get("media_items"))
            if images:
                self._images = images

    def _sources_are(self, results: object) -> None:
        citations = _citations_of(results)
        if citations:
            self._citations = citations

    # Older stream: a ``text`` field holding JSON (or the answer itself).

    def _take_text(self, text: str) -> None:
        try:
            content: Any = orjson.loads(text)
        except orjson.JSONDecodeError:
            self._answer_is(text)
            return
        if isinstance(content, list):
            content = _final_step(content)
        if not isinstance(content, Mapping):
            return
        self._answer_is(_markdown_text(content))
        self._sources_are(content.get("web_results"))


def web_failure(message: Mapping[str, Any], *, model: str = "") -> PerplexityLabsServerError | None:
    """The server's error for a failed message (``status: failed`` or an ``error_code``), else ``None``.

    A rate limit (``error_code`` such as ``FREE_TIER_RATE_LIMITED``) is its own error, never retried.
    """
    status = message.get("status")
    error_code = message.get("error_code")
    if not (isinstance(status, str) and status.lower() == "failed") and not error_code:
        return None
    text = message.get("text")
    code = str(error_code) if error_code else ""
    said = text if isinstance(text, str) and text else code
    if "RATE_LIMIT" in code.upper():
        return PerplexityLabsRateLimitError(said, error_code=code, model=model, service=WEB_APP)
    if not said:
        said = "(the server gave no message)"
    return PerplexityLabsServerError(said, model=model, service=WEB_APP)


def _markdown_text(block: Mapping[str, Any]) -> str:
    """The answer a markdown block (or the older ``text`` JSON) holds: its ``answer``, else its chunks joined."""
    chunks = block.get("chunks")
    joined = "".join(c for c in chunks if isinstance(c, str)) if isinstance(chunks, list) else ""
    answer = block.get("answer")
    # ``answer`` is the finished text; before it arrives the chunks are all there is.
    return answer if isinstance(answer, str) and len(answer) >= len(joined) else joined


def _merged_markdown(held: Any, snapshot: dict[str, Any]) -> dict[str, Any]:
    """A ``markdown_block`` snapshot over the one held: its ``chunks`` start at ``chunk_starting_offset``
    (henrique-coder's reader; 0, the whole list, in every snapshot of the record). Without an offset, chunks
    that do not continue the text held are new ones after it (perplexity-web-mcp-cli's reading)."""
    chunks = snapshot.get("chunks")
    held_chunks = held.get("chunks") if isinstance(held, Mapping) else None
    if not isinstance(chunks, list) or not isinstance(held_chunks, list) or not held_chunks:
        return snapshot
    offset = snapshot.get("chunk_starting_offset")
    if isinstance(offset, int) and offset > 0:
        snapshot["chunks"] = held_chunks[:offset] + [""] * (offset - len(held_chunks)) + chunks
    elif offset is None and not isinstance(snapshot.get("answer"), str):
        text, before = _joined(chunks), _joined(held_chunks)
        if not text.startswith(before) and not before.startswith(text):
            snapshot["chunks"] = held_chunks + chunks
    return snapshot


def _joined(chunks: list[Any]) -> str:
    return "".join(c for c in chunks if isinstance(c, str))


def _workflow_text(workflow: Mapping[str, Any]) -> str:
    """The answer a ``workflow_block`` holds: the first step item's ``text_payload``, its ``text`` or its
    chunks joined, whichever is longer (henrique-coder's ``_extract_workflow_text``)."""
    steps = workflow.get("steps")
    for step in steps if isinstance(steps, list) else []:
        items = step.get("items") if isinstance(step, Mapping) else None
        for item in items if isinstance(items, list) else []:
            payload = item.get("payload") if isinstance(item, Mapping) else None
            text_payload = payload.get("text_payload") if isinstance(payload, Mapping) else None
            if isinstance(text_payload, Mapping):
                return _markdown_text(
                    {"answer": text_payload.get("text"), "chunks": text_payload.get("chunks")}
                )
    return ""


def _append_chunk(document: Any, operation: Mapping[str, Any]) -> str | None:
    """Apply ``operation`` if it adds a text chunk at the end of ``chunks``: that chunk, else ``None``.

    Nearly every message is one such patch: appending it (a str needs no copy) costs far less
    than building, copying and resolving a JSON patch for it.
    """
    value = operation.get("value")
    if operation.get("op") != "add" or not isinstance(value, str) or not isinstance(document, dict):
        return None
    chunks = document.get("chunks")
    if not isinstance(chunks, list) or operation.get("path") not in ("/chunks/-", f"/chunks/{len(chunks)}"):
        return None
    chunks.append(value)
    return value


def _apply_patch(document: Any, operation: Mapping[str, Any]) -> Any:
    """Apply one JSON patch operation; an inapplicable one is skipped, except text chunks, appended."""
    try:
        # A copy: the patched document must not share lists with the caller's message.
        return jsonpatch.JsonPatch([copy.deepcopy(dict(operation))]).apply(document, in_place=True)
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException, TypeError, ValueError):
        pass
    # A chunk added past the end (a patch we missed): keep the text rather than lose it.
    path, value = operation.get("path"), operation.get("value")
    chunk = isinstance(path, str) and path.startswith("/chunks/") and isinstance(value, str)
    if chunk and isinstance(document, dict):
        chunks = document.setdefault("chunks", [])
        if isinstance(chunks, list):
            chunks.append(value)
    return document


def _goals_text(goals: object) -> str:
    if not isinstance(goals, list):
        return ""
    parts: list[str] = []
    for goal in goals:
        if isinstance(goal, str):
            parts.append(goal)
        elif isinstance(goal, Mapping):
            for key in ("description", "text", "title"):
                if isinstance(goal.get(key), str):
                    parts.append(goal[key])
                    break
            else:
                chunks = goal.get("chunks")
                if isinstance(chunks, list):
                    parts.append("".join(c for c in chunks if isinstance(c, str)))
    return "\n".join(part for part in parts if part)


def _images_of(items: object) -> list[dict[str, Any]]:
    """A ``media_block``'s image items in ChatPerplexity's ``images`` shape: ``image_url``, ``origin_url``
    (the page it is on), ``width`` and ``height`` when sent."""
    if not isinstance(items, list):
        return []
    images: list[dict[str, Any]] = []
    for item in items:
        if not isinstance(item, Mapping) or item.get("medium", "image") != "image":
            continue
        image = item.get("image") or item.get("url")
        if not isinstance(image, str) or not image:
            continue
        entry: dict[str, Any] = {"image_url": image}
        origin = item.get("url") if item.get("image") else None
        if isinstance(origin, str) and origin:
            entry["origin_url"] = origin
        for key in ("width", "height"):
            if isinstance(item.get(key), int):
                entry[key] = item[key]
        images.append(entry)
    return images


def _citations_of(results: object) -> list[Citation]:
    if not isinstance(results, list):
        return []
    citations: list[Citation] = []
    for result in results:
        if isinstance(result, str) and result:
            citations.append(result)
        elif isinstance(result, Mapping) and isinstance(result.get("url"), str) and result["url"]:
            citations.append(_citation_of(result))
    return citations


def _citation_of(result: Mapping[str, Any]) -> Citation:
    """A web result as a Labs source: ``url``, ``title`` (its ``title``, else its ``name``), every other field.

    Empty fields (``None``, ``""``) count as not sent, so a result with nothing but its URL stays a
    bare URL, as Labs sends one. ``name`` is kept apart only when it is not what became ``title``.
    """
    sent = {
        str(key): copy.deepcopy(value) for key, value in result.items() if value is not None and value != ""
    }
    citation: dict[str, Any] = {"url": sent.pop("url")}
    titles = [sent.get(key) for key in ("title", "name")]
    title = next((t for t in titles if isinstance(t, str)), None)
    if title is not None:
        citation["title"] = title
        sent.pop("title", None)
        if sent.get("name") == title:
            del sent["name"]
    citation.update(sent)
    return citation if len(citation) > 1 else citation["url"]


def _final_step(steps: list[Any]) -> Any:
    """The answer of a step list (``step_type: FINAL``), its ``answer`` itself JSON, with earlier sources."""
    found: dict[str, Any] = {}
    for step in steps:
        if not isinstance(step, Mapping) or not isinstance(step.get("content"), Mapping):
            continue
        content = step["content"]
        if isinstance(content.get("web_results"), list):
            found["web_results"] = content["web_results"]
        if step.get("step_type") == "FINAL":
            answer = content.get("answer")
            if isinstance(answer, str):
                try:
                    decoded = orjson.loads(answer)
                except orjson.JSONDecodeError:
                    decoded = {"answer": answer}
                answer = decoded if isinstance(decoded, Mapping) else {"answer": answer}
            if isinstance(answer, Mapping):
                found.update(answer)
    return found
