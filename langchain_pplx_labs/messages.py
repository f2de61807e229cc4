"""Map LangChain messages to Labs chat turns (pure, no I/O)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_pplx_labs.attachments import (
    ATTACHMENT_PART_TYPES,
    MAX_ATTACHMENTS,
    Attachment,
    attachment_from_part,
)
from langchain_pplx_labs.errors import PerplexityLabsAttachmentError, PerplexityLabsInputError
from langchain_pplx_labs.protocol import DEFAULT_PROTOCOL, LabsMessage, LabsProtocol, Role, build_payload

_TEXT_PART_TYPES = frozenset({"text", "input_text", "output_text"})
# Parts that carry no text the model needs to see again (e.g. our own reasoning blocks), so
# a v1 answer can be sent back as history. Tool-call parts (Anthropic ``tool_use``, v1
# ``tool_call``/``invalid_tool_call``) are rendered from ``tool_calls``/``invalid_tool_calls``.
_SKIPPED_PART_TYPES = frozenset(
    {
        "reasoning",
        "thinking",
        "tool_use",
        "tool_call",
        "tool_call_chunk",
        "invalid_tool_call",
        "server_tool_call",
        "server_tool_call_chunk",
        "server_tool_result",
        "non_standard",
    }
)
_CHAT_ROLES: dict[str, Role] = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
}


def to_turns(
    messages: Sequence[BaseMessage], *, first_index: int = 0, attachments: list[Attachment] | None = None
) -> list[LabsMessage]:
    """Convert a LangChain conversation to Labs turns, raising on unsupported content.

    ``first_index`` numbers the messages in errors (-1 when an instruction was prepended). The
    human messages' images and files are not text: each is checked and added to ``attachments``.
    """
    collected: list[Attachment] = [] if attachments is None else attachments
    return [
        to_labs_message(message, index, attachments=collected)
        for index, message in enumerate(messages, start=first_index)
    ]


def to_payload(
    messages: Sequence[BaseMessage],
    model: str,
    *,
    protocol: LabsProtocol = DEFAULT_PROTOCOL,
    max_input_chars: int | None = None,
    first_index: int = 0,
) -> dict[str, Any]:
    """The question payload for a LangChain conversation, exactly as ``ChatPerplexityLabs`` sends it.

    A conversation that asks nothing (no human, tool or function message, or a last human message
    without text) is refused here, before anything is sent: the service would answer a blank.
    The human messages' images and files go as the payload's ``attachments`` (:class:`Attachment`),
    uploaded with the question (the web transport; Labs refuses them).
    """
    attachments: list[Attachment] = []
    turns = to_turns(messages, first_index=first_index, attachments=attachments)
    _check_question(messages, turns, first_index)
    payload = build_payload(model, turns, protocol=protocol, max_input_chars=max_input_chars)
    if len(attachments) > MAX_ATTACHMENTS:
        raise PerplexityLabsAttachmentError(
            f"The conversation attaches {len(attachments)} files; a question takes at most {MAX_ATTACHMENTS}"
        )
    if attachments:
        payload["attachments"] = attachments
    return payload


def _check_question(messages: Sequence[BaseMessage], turns: list[LabsMessage], first_index: int) -> None:
    """Raise unless the conversation's last asking message (human, tool or function) has text."""
    if not messages:
        return  # build_payload names that one
    asking = [index for index, message in enumerate(messages) if turns[index]["role"] == "user"]
    if not asking:
        kinds = sorted({message.type for message in messages}) or ["none"]
        raise PerplexityLabsInputError(
            f"The conversation has no question: it needs a human message with text, and has only "
            f"{', '.join(kinds)} messages"
        )
    last = asking[-1]
    if isinstance(messages[last], HumanMessage | ChatMessage) and not turns[last]["content"].strip():
        raise PerplexityLabsInputError(
            f"Message {last + first_index} ({messages[last].type}) is the question and has no text "
            "(it is empty or only whitespace)"
        )


def to_labs_message(
    message: BaseMessage, index: int = 0, *, attachments: list[Attachment] | None = None
) -> LabsMessage:
    """Convert one message; ``index`` only sharpens error messages.

    A human message's images and files are checked and added to ``attachments`` (a new list when
    ``None``); any other message's are refused.
    """
    role = _role_of(message, index)
    kept = ([] if attachments is None else attachments) if isinstance(message, HumanMessage) else None
    text = content_text(message.content, where=f"message {index} ({message.type})", attachments=kept)
    if isinstance(message, AIMessage) and (message.tool_calls or message.invalid_tool_calls):
        text = _with_tool_calls(text, message)
    if isinstance(message, ToolMessage):
        text = (
            f"Result of tool call {message.tool_call_id}"
            + (f" ({message.name})" if message.name else "")
            + f":\n{text}"
        )
    elif isinstance(message, FunctionMessage):
        text = f"Result of function {message.name}:\n{text}"
    return {"role": role, "content": text}


def _role_of(message: BaseMessage, index: int) -> Role:
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, HumanMessage | ToolMessage | FunctionMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, ChatMessage) and message.role.lower() in _CHAT_ROLES:
        return _CHAT_ROLES[message.role.lower()]
    detail = f" with role {message.role!r}" if isinstance(message, ChatMessage) else ""
    raise PerplexityLabsInputError(
        f"Message {index} is a {type(message).__name__}{detail}, which Perplexity Labs "
        f"cannot take; use system, human, ai or tool messages"
    )


def content_text(
    content: str | list[str | dict[Any, Any]], *, where: str, attachments: list[Attachment] | None = None
) -> str:
    """Join the text parts of message content; raise naming any non-text part.

    With ``attachments``, image and file parts are taken as files (checked, then added to it) instead.
    """
    if isinstance(content, str):
        return content
    pieces: list[str] = []
    for number, part in enumerate(content):
        if isinstance(part, str):
            pieces.append(part)
            continue
        kind = part.get("type") if isinstance(part, dict) else type(part).__name__
        if kind in _TEXT_PART_TYPES and isinstance(part.get("text"), str):
            pieces.append(part["text"])
        elif kind in _SKIPPED_PART_TYPES:
            continue
        elif attachments is not None and kind in ATTACHMENT_PART_TYPES:
            attachments.append(attachment_from_part(part, where=f"{where}: content part {number}"))
        else:
            problem = (
                "only a human message attaches images and files"
                if kind in ATTACHMENT_PART_TYPES
                else "Perplexity takes text, and images and files in human messages (no audio or video)"
            )
            raise PerplexityLabsInputError(f"{where}: content part {number} has type {kind!r}; {problem}")
    return "\n".join(pieces)


def _with_tool_calls(text: str, message: AIMessage) -> str:
    calls = [
        {"id": call.get("id"), "name": call["name"], "arguments": call["args"]} for call in message.tool_calls
    ]
    # Invalid calls go back as written, so the model sees what it got wrong.
    calls += [
        {"id": bad.get("id"), "name": bad.get("name"), "arguments": _decoded(bad.get("args"))}
        for bad in message.invalid_tool_calls
    ]
    rendered = json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return f"{text}\n{rendered}" if text else rendered


def _decoded(args: Any) -> Any:
    """Raw call args as JSON if they parse (twice for quoted chunk args), else the string itself."""
    for _ in range(2):
        if not isinstance(args, str):
            break
        try:
            args = json.loads(args)
        except ValueError:
            break
    return args


THREAD_DIGEST = "thread_digest"
"""``response_metadata`` key of an answer's digest of its whole conversation (*ours*): a history whose
turns hash the same comes from that thread, unedited."""


def conversation_digest(turns: Sequence[LabsMessage]) -> str:
    """A digest of ``turns`` (roles and texts), to tell a thread's own history from an edited one."""
    text = json.dumps([[turn["role"], turn["content"]] for turn in turns], ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def follow_up(messages: Sequence[BaseMessage]) -> dict[str, str] | None:
    """The web thread ``messages`` continue, or ``None`` when the history is not one thread's.

    A follow-up is a human question right after an AI answer whose ``response_metadata`` has the
    thread's ids (``backend_uuid``, ``read_write_token``) and the digest of the conversation it
    answered plus itself: an edited, foreign or re-prompted history hashes differently.
    """
    if len(messages) < 2 or not isinstance(messages[-1], HumanMessage):
        return None
    answer = messages[-2]
    if not isinstance(answer, AIMessage):
        return None
    meta = answer.response_metadata
    backend_uuid, token, digest = (meta.get(k) for k in ("backend_uuid", "read_write_token", THREAD_DIGEST))
    if not (isinstance(backend_uuid, str) and isinstance(token, str) and isinstance(digest, str)):
        return None
    try:
        turns = to_turns(messages[:-1])
    except PerplexityLabsInputError:
        return None
    if conversation_digest(turns) != digest:
        return None
    thread = {"last_backend_uuid": backend_uuid, "read_write_token": token}
    if isinstance(meta.get("thread_url_slug"), str):
        thread["thread_url_slug"] = meta["thread_url_slug"]
    return thread
