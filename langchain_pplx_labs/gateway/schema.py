"""Chat-completions requests: validation naming the field at fault, and the LangChain messages they carry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Literal, Protocol

from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    FunctionMessage,
    HumanMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolMessage,
)
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError

from langchain_pplx_labs.gateway.errors import GatewayError, invalid, is_type_name

TEXT_PARTS = frozenset({"text", "input_text", "output_text"})
"""Part types that are text, in chat completions and the Responses API alike."""
# OpenAI's image and file parts, passed on as the client sent them: the model uploads them (web, signed in)
# or refuses them in its own words (labs, anonymous, a link, a size).
_ATTACHMENT_PARTS = frozenset({"image_url", "file"})


class _Open(BaseModel):
    # Clients send fields Labs has no use for (temperature, user, seed, search filters...):
    # accepted and ignored, and never passed on (they cannot reach the upstream).
    model_config = ConfigDict(extra="allow")


class ContentPart(_Open):
    type: str
    text: str | None = None


class FunctionCall(_Open):
    name: str
    arguments: str = ""


class ToolCallIn(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class MessageIn(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None
    tool_call_id: str | None = None


class StreamOptions(_Open):
    include_usage: StrictBool = False


class FunctionSpec(_Open):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ToolSpec(_Open):
    type: Literal["function"]
    function: FunctionSpec


class ChatRequest(_Open):
    """The fields of an OpenAI / Perplexity chat-completions request the gateway acts on."""

    model: str = Field(min_length=1)
    messages: list[MessageIn] = Field(min_length=1)
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    tools: list[ToolSpec] | None = None
    tool_choice: str | dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    n: int | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)

    @property
    def output_limit(self) -> int | None:
        """The answer's most tokens: ``max_completion_tokens``, or the older ``max_tokens``."""
        return self.max_completion_tokens or self.max_tokens

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    def stop_list(self) -> list[str] | None:
        return [self.stop] if isinstance(self.stop, str) else self.stop

    def model_kwargs(self) -> dict[str, Any]:
        """What goes to ``ChatPerplexityLabs.astream``: only these, so a request cannot pick the upstream."""
        kwargs: dict[str, Any] = {"model": self.model}
        if self.tools:
            kwargs["tools"] = [tool.model_dump(exclude_none=True) for tool in self.tools]
            kwargs["tool_choice"] = self.tool_choice
        if self.response_format is not None:
            kwargs["response_format"] = self.response_format
        return kwargs


def parse_request(body: bytes, *, max_messages: int) -> ChatRequest:
    """Validate a request body, raising a 400 that names the first field at fault."""
    try:
        request = ChatRequest.model_validate_json(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None
    if len(request.messages) > max_messages:
        raise invalid(
            f"Too many messages: {len(request.messages)}, this gateway takes at most {max_messages}",
            "messages",
        )
    _check_question(request.messages)
    if request.n not in (None, 1):
        raise invalid("Only n=1 is supported: Labs gives one answer per question", "n")
    if request.tool_choice is not None and not request.tools and request.tool_choice not in ("none", "auto"):
        raise invalid("tool_choice needs tools", "tool_choice")
    return request


def _check_question(messages: list[MessageIn]) -> None:
    """A 400 when the conversation asks nothing: no user message, or a last one without text.

    Labs answers the last user message (or the tool results after it); sent blank, it would answer
    a question nobody asked. A part that is not text counts as content here: ``to_langchain`` names it.
    """
    asking = [index for index, message in enumerate(messages) if message.role in ("user", "tool", "function")]
    if not asking:
        roles = " and ".join(dict.fromkeys(message.role for message in messages))
        raise invalid(
            f"messages has no question: it needs a user message with text, and has only {roles} messages",
            "messages",
            code="missing_question",
        )
    last = asking[-1]
    if messages[last].role == "user" and _is_blank(messages[last].content):
        raise invalid(
            f"messages[{last}] is the question and has no text (it is empty or only whitespace)",
            "messages",
            code="empty_question",
        )


def _is_blank(content: str | list[ContentPart] | None) -> bool:
    if content is None:
        return True
    if isinstance(content, str):
        return not content.strip()
    return all(part.type in TEXT_PARTS and not (part.text or "").strip() for part in content)


def _validation_error(exc: ValidationError) -> GatewayError:
    error = exc.errors()[0]
    if error["type"] in ("json_invalid", "json_type"):
        return invalid(f"The request body is not valid JSON: {error['msg']}", code="invalid_json")
    param = _param(error["loc"])
    if not param:
        return invalid("The request body must be a JSON object", code="invalid_json")
    if error["type"] == "missing":
        return invalid(f"Missing required field {param!r}", param, code="missing_field")
    return invalid(f"Invalid field {param!r}: {error['msg']}", param)


def _param(loc: tuple[int | str, ...]) -> str:
    # pydantic puts union member names (``str``, ``list[ContentPart]``) into the path; they are not fields.
    parts = [part for part in loc if isinstance(part, int) or not is_type_name(part)]
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


class TextPart(Protocol):
    """A content part or block of any door's request: its ``type`` and, for text, its ``text``."""

    @property
    def type(self) -> str: ...

    @property
    def text(self) -> str | None: ...


def joined_text(content: str | Sequence[TextPart], where: str, *, kinds: frozenset[str], noun: str) -> str:
    """``content`` as one text: a string as it is, or its parts of ``kinds`` joined by newlines; any other
    part is a 400 naming it (``where``) and saying that only ``noun`` are supported there."""
    if isinstance(content, str):
        return content
    texts = []
    for number, part in enumerate(content):
        if part.type not in kinds:
            raise invalid(f"{where}.{number}: only {noun} are supported here", f"{where}.{number}.type")
        texts.append(part.text or "")
    return "\n".join(texts)


def to_langchain(request: ChatRequest) -> list[BaseMessage]:
    """The conversation as LangChain messages, for the package's own message mapping."""
    names: dict[str, str] = {}
    messages: list[BaseMessage] = []
    for index, message in enumerate(request.messages):
        if message.role == "user":
            messages.append(HumanMessage(content=_user_content(message, index)))
            continue
        content = _content(message, index)
        if message.role in ("system", "developer"):
            messages.append(SystemMessage(content=content))
        elif message.role == "assistant":
            messages.append(_assistant(message, content, names))
        elif message.role == "tool":
            if not message.tool_call_id:
                raise invalid("A tool message needs its tool_call_id", f"messages[{index}].tool_call_id")
            # OpenAI tool results carry no name; the call they answer has it, and the model shows it.
            name = message.name or names.get(message.tool_call_id)
            messages.append(ToolMessage(content=content, tool_call_id=message.tool_call_id, name=name))
        else:
            messages.append(FunctionMessage(content=content, name=message.name or "function"))
    return messages


def _content(message: MessageIn, index: int) -> str:
    text, attachments = _parts(message, index)
    if attachments:
        raise invalid(
            f"messages[{index}] is a {message.role} message with {attachments[0]['type']!r} parts; "
            "images and files go in user messages",
            f"messages[{index}].content",
            code="unsupported_content",
        )
    return text


def _user_content(message: MessageIn, index: int) -> str | list[str | dict[str, Any]]:
    """A user message's text, or its text and its image and file parts as LangChain content blocks."""
    text, attachments = _parts(message, index)
    return [{"type": "text", "text": text}, *attachments] if attachments else text


def _parts(message: MessageIn, index: int) -> tuple[str, list[dict[str, Any]]]:
    if message.content is None:
        return "", []
    if isinstance(message.content, str):
        return message.content, []
    texts: list[str] = []
    attachments: list[dict[str, Any]] = []
    for number, part in enumerate(message.content):
        if part.type in TEXT_PARTS and part.text is not None:
            texts.append(part.text)
        elif part.type in _ATTACHMENT_PARTS:
            attachments.append(part.model_dump(exclude_none=True))
        else:
            raise invalid(
                f"messages[{index}].content[{number}] has type {part.type!r}; the gateway takes text parts, "
                "and image_url and file parts in user messages",
                f"messages[{index}].content[{number}].type",
                code="unsupported_content",
            )
    return "\n".join(texts), attachments


def _assistant(message: MessageIn, content: str, names: dict[str, str]) -> AIMessage:
    calls: list[ToolCall] = []
    bad: list[InvalidToolCall] = []
    for call in message.tool_calls or []:
        names[call.id] = call.function.name
        try:
            args = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
        except ValueError:
            args = None
        if isinstance(args, dict):
            calls.append(ToolCall(name=call.function.name, args=args, id=call.id, type="tool_call"))
        else:
            # Sent back as written, so the model sees what it got wrong.
            bad.append(
                InvalidToolCall(
                    name=call.function.name,
                    args=call.function.arguments,
                    id=call.id,
                    error="arguments are not a JSON object",
                    type="invalid_tool_call",
                )
            )
    return AIMessage(content=content, tool_calls=calls, invalid_tool_calls=bad)
