"""Prompted tool calling: describe tools in a system instruction and parse the model's calls (pure, no I/O).

Labs has no native tool calling, so tools travel as text. The model is asked to answer a
tool call with exactly one JSON object::

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

Parsing tolerates code fences, prose around the object and ``<think>`` sections. Each call is
checked against its tool's JSON Schema; calls that fail go to ``invalid_tool_calls``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    InvalidToolCall,
    SystemMessage,
    ToolCall,
    ToolCallChunk,
)
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.json import parse_partial_json

from langchain_pplx_labs.errors import PerplexityLabsInputError

TOOLS_HEADER = (
    "You can call these tools (each line is one tool as JSON, with a JSON Schema for its arguments):"
)
CALL_FORMAT = '{"tool_calls": [{"name": "<tool name>", "arguments": {<arguments>}}]}'
TOOL_CALLS_KEY = "tool_calls"
ChoiceSpec = str | dict[str, Any] | bool | None

_THINK = re.compile(r"<think>.*?</think>|^.*?</think>", re.S)
_FENCE = re.compile(r"```[a-zA-Z]*[ \t]*\n?(.*?)```", re.S)
_FENCE_OPEN = re.compile(r"```[a-zA-Z]*[ \t]*\n?\s*")
# Characters after which streamed text may be the start of a tool call, so it is held back.
_CALL_START = ("{", "`")
_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
    "null": type(None),
}


# -- describing tools -------------------------------------------------------------------------


def convert_tools(tools: Sequence[Any], *, strict: bool | None = None) -> list[dict[str, Any]]:
    """OpenAI-format function specs for BaseTools, functions, pydantic models, TypedDicts or dicts."""
    return [_function_spec(tool, strict) for tool in tools]


def _function_spec(tool: Any, strict: bool | None) -> dict[str, Any]:
    try:
        spec = convert_to_openai_tool(tool, strict=strict)
    except (ValueError, TypeError) as exc:
        raise PerplexityLabsInputError(f"Cannot describe tool {tool!r}: {exc}") from exc
    function = spec.get("function")
    if spec.get("type") != "function" or not isinstance(function, dict) or not function.get("name"):
        # Built-in provider tools ({"type": "web_search_preview"}, ...) have nothing Labs can run.
        raise PerplexityLabsInputError(
            f"Tool {tool!r} is not a function tool; Perplexity Labs can only be given function "
            f"tools (BaseTool, function, pydantic model, TypedDict or OpenAI function dict)"
        )
    return spec


# Anthropic-style ``{"type": ...}`` choices mapped to the OpenAI-style names.
_CHOICE_TYPES = {"any": "required", "auto": "auto", "none": "none"}


def tool_choice_name(tool_choice: ChoiceSpec, tools: Sequence[dict[str, Any]]) -> str:
    """Normalise ``tool_choice`` to ``auto``, ``required``, ``none`` or a tool name."""
    names = [spec["function"]["name"] for spec in tools]
    choice = _choice_key(tool_choice)
    if choice == "auto" or choice == "none":
        return choice
    if not names:
        raise PerplexityLabsInputError(f"tool_choice {tool_choice!r} needs at least one bound tool")
    if choice is not None and (choice == "required" or choice in names):
        return choice
    raise PerplexityLabsInputError(
        f"tool_choice {tool_choice!r} is not 'auto', 'any', 'required', 'none' or a bound tool name {names}"
    )


def _choice_key(tool_choice: ChoiceSpec) -> str | None:
    """``auto``, ``required``, ``none``, a name to look up, or ``None`` if unrecognised."""
    if tool_choice is None or tool_choice is False:
        return "auto"
    if tool_choice is True or tool_choice in ("any", "required"):
        return "required"
    if isinstance(tool_choice, str):
        return tool_choice
    if isinstance(tool_choice, dict):
        kind = tool_choice.get("type")
        if isinstance(kind, str) and kind in _CHOICE_TYPES:
            return _CHOICE_TYPES[kind]
        function = tool_choice.get("function")
        name = function.get("name") if isinstance(function, dict) else tool_choice.get("name")
        return name if isinstance(name, str) else None
    return None


def tool_instruction(tools: Sequence[dict[str, Any]], choice: str) -> str:
    """The system instruction that describes ``tools`` and the call format."""
    lines = [TOOLS_HEADER]
    for spec in tools:
        function = spec["function"]
        described = {
            "name": function["name"],
            "description": function.get("description", ""),
            "parameters": function.get("parameters", {}),
        }
        lines.append(json.dumps(described, ensure_ascii=False))
    lines += [
        "",
        "To call tools, answer with only this JSON object (no other text):",
        CALL_FORMAT,
        "Tool results come back in user messages starting with 'Result of tool call'.",
        "When you have what you need, answer the user in plain prose, without JSON.",
    ]
    if choice == "required":
        lines.append("You must call at least one tool now.")
    elif choice != "auto":
        lines.append(f"You must call the tool {choice!r} now.")
    return "\n".join(lines)


# -- parsing answers -------------------------------------------------------------------------


@dataclass
class ParsedAnswer:
    """An answer split into prose and tool calls."""

    content: str
    tool_calls: list[ToolCall] = field(default_factory=list)
    invalid_tool_calls: list[InvalidToolCall] = field(default_factory=list)

    def chunks(self) -> list[ToolCallChunk]:
        """``tool_call_chunks`` that add up to the same valid and invalid calls."""
        chunks = [
            ToolCallChunk(
                name=c["name"], args=json.dumps(c["args"]), id=c["id"], index=i, type="tool_call_chunk"
            )
            for i, c in enumerate(self.tool_calls)
        ]
        offset = len(chunks)
        for i, bad in enumerate(self.invalid_tool_calls):
            chunks.append(
                ToolCallChunk(
                    name=bad["name"], args=bad["args"], id=bad["id"], index=offset + i, type="tool_call_chunk"
                )
            )
        return chunks


def strip_reasoning(text: str) -> str:
    """Drop ``<think>`` sections (and a leading section whose opening tag is missing)."""
    return _THINK.sub("", text)


def find_json(
    text: str, *, want_key: str | None = None, objects_only: bool = True
) -> tuple[Any, int, int] | None:
    """The first JSON object (or array) in ``text``, with ``want_key`` if given, and its span.

    Arrays are skipped by default because ``[1]`` is also a citation marker.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[{\[]" if not objects_only else r"{", text):
        try:
            value, end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if want_key is None or (isinstance(value, dict) and want_key in value):
            return value, match.start(), end
    return None


def parse_tool_calls(text: str, tools: Sequence[dict[str, Any]], *, seed: str = "") -> ParsedAnswer:
    """Split an answer into prose and calls; ``seed`` makes call ids deterministic."""
    answer = strip_reasoning(text)
    found = find_json(answer, want_key=TOOL_CALLS_KEY) or _single_call(answer)
    if found is None:
        if f'"{TOOL_CALLS_KEY}"' in answer:
            return _unparseable(answer, seed)
        return ParsedAnswer(content=answer.strip())
    value, start, end = found
    prose = _cut(answer, start, end)
    raw_calls = value.get(TOOL_CALLS_KEY, [value])
    if not isinstance(raw_calls, list):
        raw_calls = [raw_calls]
    parsed = ParsedAnswer(content=prose)
    specs = {spec["function"]["name"]: spec["function"] for spec in tools}
    for index, raw in enumerate(raw_calls):
        call_id = _call_id(seed, answer, index)
        _add_call(parsed, raw, specs, call_id)
    return parsed


def _single_call(answer: str) -> tuple[Any, int, int] | None:
    found = find_json(answer, want_key="name")
    if found and isinstance(found[0], dict) and ("arguments" in found[0] or "args" in found[0]):
        return found
    return None


def _unparseable(answer: str, seed: str) -> ParsedAnswer:
    start = answer.find("{")
    raw = answer[start:].strip() if start >= 0 else answer
    bad = InvalidToolCall(
        type="invalid_tool_call",
        name=None,
        args=_quoted(raw),
        id=_call_id(seed, answer, 0),
        error="The answer mentions tool_calls but holds no well-formed JSON object",
    )
    return ParsedAnswer(content=answer[:start].strip() if start >= 0 else "", invalid_tool_calls=[bad])


def _cut(answer: str, start: int, end: int) -> str:
    """The prose around a JSON span, dropping the code fence it sits in."""
    for fence in _FENCE.finditer(answer):
        if fence.start() <= start and end <= fence.end():
            start, end = fence.start(), fence.end()
            break
    return (answer[:start].rstrip() + "\n" + answer[end:].lstrip()).strip()


def _add_call(parsed: ParsedAnswer, raw: Any, specs: dict[str, dict[str, Any]], call_id: str) -> None:
    name = raw.get("name") if isinstance(raw, dict) else None
    args = _arguments(raw)
    error = _call_error(name, args, specs)
    if error is None and isinstance(name, str) and isinstance(args, dict):
        parsed.tool_calls.append(ToolCall(name=name, args=args, id=call_id, type="tool_call"))
        return
    shown = args if args is not None else raw
    parsed.invalid_tool_calls.append(
        InvalidToolCall(
            type="invalid_tool_call",
            name=name if isinstance(name, str) else None,
            args=_quoted(json.dumps(shown, ensure_ascii=False)),
            id=call_id,
            error=error,
        )
    )


def _arguments(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return None
    args = raw.get("arguments", raw.get("args", raw.get("parameters", {})))
    if isinstance(args, str):
        # OpenAI-style arguments arrive as a JSON string.
        try:
            return json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return args
    return args


def _call_error(name: Any, args: Any, specs: dict[str, dict[str, Any]]) -> str | None:
    if not isinstance(name, str) or not name:
        return "Tool call has no 'name' string"
    if name not in specs:
        return f"Unknown tool {name!r}; bound tools are {sorted(specs)}"
    if not isinstance(args, dict):
        return f"Arguments of {name!r} must be a JSON object, got {type(args).__name__}"
    problems = schema_errors(args, specs[name].get("parameters") or {}, "arguments")
    return f"Arguments of {name!r} do not match its schema: " + "; ".join(problems) if problems else None


def schema_errors(value: Any, schema: dict[str, Any], where: str) -> list[str]:
    """A small JSON Schema check: types, required and unknown keys, enums, nested items."""
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        results = [schema_errors(value, option, where) for option in options]
        return [] if any(not r for r in results) else results[0]
    errors: list[str] = []
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind] if kind else []
    if kinds and not any(_is_type(value, k) for k in kinds):
        return [f"{where} should be {'/'.join(kinds)}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where} should be one of {schema['enum']}")
    if isinstance(value, dict):
        errors += _object_errors(value, schema, where)
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def _object_errors(value: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    properties: dict[str, Any] = schema.get("properties") or {}
    errors = [
        f"{where} misses required key {key!r}" for key in schema.get("required", []) if key not in value
    ]
    for key, item in value.items():
        if key in properties:
            errors += schema_errors(item, properties[key], f"{where}.{key}")
        elif schema.get("additionalProperties") is False:
            errors.append(f"{where} has unknown key {key!r}")
    return errors


def _is_type(value: Any, kind: str) -> bool:
    if kind in ("integer", "number") and isinstance(value, bool):
        return False
    if kind == "integer" and isinstance(value, float):
        return value.is_integer()
    expected = _JSON_TYPES.get(kind)
    return expected is None or isinstance(value, expected)


def _quoted(raw: str) -> str:
    """Raw text that stays invalid when LangChain re-parses chunk args (it repairs partial JSON)."""
    try:
        repaired = parse_partial_json(raw)
    except ValueError:
        return raw
    return json.dumps(raw, ensure_ascii=False) if isinstance(repaired, dict) else raw


def _call_id(seed: str, answer: str, index: int) -> str:
    digest = hashlib.sha256(f"{seed}\x00{answer}\x00{index}".encode()).hexdigest()
    return f"call_{digest[:24]}"


# -- streaming --------------------------------------------------------------------------------


class ToolCallStream:
    """Pass prose through as it streams, hold back anything that may be a tool call.

    Text from a ``{`` or a backtick on is held only while it can still open a call: a
    ``{"`` (a JSON object with a key) or a code fence whose body starts with ``{``. Inline
    code or braces in prose are released as soon as the next characters show they are
    not a call. Trailing whitespace is held too, so a call's message content is its prose
    without the newline that separated it from the JSON.
    """

    def __init__(self, tools: Sequence[dict[str, Any]], *, seed: str = "") -> None:
        self._tools = tools
        self._seed = seed
        self._sent: list[str] = []
        self._space = ""
        self._undecided = ""
        self._held: list[str] = []

    def feed(self, text: str) -> str:
        """Text that can be shown now: prose up to a possible tool call."""
        if self._held:
            self._held.append(text)
            return ""
        pending = self._space + self._undecided + text
        self._space = self._undecided = ""
        position = 0
        while (cut := _next_call_start(pending, position)) >= 0:
            verdict = _opens_call(pending[cut:])
            if verdict is False:
                position = cut + 1
                continue
            if verdict:
                self._held.append(pending[cut:])
            else:
                self._undecided = pending[cut:]
            pending = pending[:cut]
            break
        shown = pending.rstrip()
        self._space = pending[len(shown) :]
        self._sent.append(shown)
        return shown

    def finish(self) -> ParsedAnswer:
        """Parse the held text; ``content`` is the prose the stream still owes."""
        sent, held = "".join(self._sent), self._undecided + "".join(self._held)
        if not held:
            return ParsedAnswer(content=self._space)
        parsed = parse_tool_calls(held, self._tools, seed=self._seed + sent)
        if not parsed.tool_calls and not parsed.invalid_tool_calls:
            parsed.content = self._space + held
        elif parsed.content and sent:
            parsed.content = self._space + parsed.content
        return parsed


def _next_call_start(text: str, position: int) -> int:
    found = [i for i in (text.find(c, position) for c in _CALL_START) if i >= 0]
    return min(found, default=-1)


def _opens_call(text: str) -> bool | None:
    """Whether ``text`` (starting at ``{`` or a backtick) opens a tool call; ``None``: too early to tell."""
    if text[0] == "{":
        rest = text[1:].lstrip()
        return rest[0] == '"' if rest else None
    if not text.startswith("```"):
        return None if text == "`" * len(text) else False
    opening = _FENCE_OPEN.match(text)
    body = text[opening.end() :] if opening else ""
    return body[0] == "{" if body else None


def error_map(parsed: ParsedAnswer) -> dict[str, str]:
    """Errors of invalid calls by id, for ``response_metadata`` (chunk addition drops them)."""
    return {str(bad["id"]): str(bad["error"]) for bad in parsed.invalid_tool_calls if bad.get("error")}


# -- wiring into the chat model ---------------------------------------------------------------

JSON_INSTRUCTION = (
    "Answer with only one JSON value (no prose, no code fence) that matches this JSON Schema:\n{schema}"
)
PLAIN_JSON_INSTRUCTION = "Answer with only one JSON object (no prose, no code fence)."
ERRORS_KEY = "invalid_tool_call_errors"


def prepare_request(
    messages: Sequence[BaseMessage], kwargs: dict[str, Any]
) -> tuple[list[BaseMessage], list[dict[str, Any]] | None]:
    """Add the tool and response-format instructions; return the tools whose calls to parse."""
    prepared = list(messages)
    # bind(tools=...) passes tools unconverted, unlike bind_tools.
    tools = convert_tools(kwargs.get("tools") or [])
    choice = tool_choice_name(kwargs.get("tool_choice"), tools)
    if tools and choice != "none":
        prepared = add_instruction(prepared, tool_instruction(tools, choice))
    instruction = format_instruction(kwargs.get("response_format"))
    if instruction is not None:
        prepared = add_instruction(prepared, instruction)
    return prepared, tools if tools and choice != "none" else None


def format_instruction(response_format: Any) -> str | None:
    """The instruction for an OpenAI-style ``response_format``, a pydantic model or a TypedDict."""
    if response_format is None:
        return None
    if isinstance(response_format, type):
        return _schema_instruction(response_format)
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return PLAIN_JSON_INSTRUCTION
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        return PLAIN_JSON_INSTRUCTION if schema is None else _schema_instruction(schema)
    raise PerplexityLabsInputError(
        f"Unsupported response_format {response_format!r}: use {{'type': 'text'}}, "
        f"{{'type': 'json_object'}}, {{'type': 'json_schema', ...}}, a pydantic model or a TypedDict"
    )


def _schema_instruction(schema: dict[str, Any] | type) -> str:
    try:
        # A dict is already a JSON Schema (OpenAI's json_schema.schema) and may lack a title.
        json_schema = schema if isinstance(schema, dict) else convert_to_json_schema(schema)
    except (ValueError, TypeError) as exc:
        raise PerplexityLabsInputError(f"Cannot turn response_format {schema!r} into a JSON Schema") from exc
    return JSON_INSTRUCTION.format(schema=json.dumps(json_schema, ensure_ascii=False))


def add_instruction(messages: Sequence[BaseMessage], instruction: str) -> list[BaseMessage]:
    """Append ``instruction`` to a leading text system message, or prepend a new one."""
    turns = list(messages)
    if turns and isinstance(turns[0], SystemMessage) and isinstance(turns[0].content, str):
        turns[0] = SystemMessage(content=f"{turns[0].content}\n\n{instruction}")
        return turns
    return [SystemMessage(content=instruction), *turns]


def request_seed(messages: Sequence[BaseMessage]) -> str:
    """A stable seed for call ids: the conversation text."""
    return "\n".join(f"{m.type}:{m.content}" for m in messages)


async def parse_tool_stream(
    chunks: AsyncIterator[ChatGenerationChunk], tools: Sequence[dict[str, Any]], *, seed: str
) -> AsyncIterator[ChatGenerationChunk]:
    """Hold back possible tool-call text and attach the parsed calls to the last chunk."""
    stream = ToolCallStream(tools, seed=seed)
    async for chunk in chunks:
        message = chunk.message
        if not isinstance(message, AIMessageChunk) or not isinstance(message.content, str):
            yield chunk
            continue
        if message.chunk_position == "last":
            shown = stream.feed(message.content)
            yield _with_calls(chunk, message, stream.finish(), shown)
            continue
        shown = stream.feed(message.content) if message.content else ""
        if shown or not message.content:
            yield ChatGenerationChunk(message=message.model_copy(update={"content": shown}))


def _with_calls(
    chunk: ChatGenerationChunk, message: AIMessageChunk, parsed: ParsedAnswer, shown: str
) -> ChatGenerationChunk:
    metadata = dict(message.response_metadata)
    errors = error_map(parsed)
    if errors:
        metadata[ERRORS_KEY] = errors
    if parsed.tool_calls:
        metadata["finish_reason"] = "tool_calls"
    final = AIMessageChunk(
        content=shown + parsed.content,
        additional_kwargs=message.additional_kwargs,
        response_metadata=metadata,
        usage_metadata=message.usage_metadata,
        tool_call_chunks=parsed.chunks(),
        chunk_position="last",
        id=message.id,
    )
    return ChatGenerationChunk(message=final, generation_info=chunk.generation_info)


def restore_errors(result: ChatResult) -> ChatResult:
    """Put the errors and raw args of invalid calls back on a whole (non-chunk) answer.

    Adding chunks drops the errors, and chunk args are quoted (see ``_quoted``); both are
    fixed by call id, in ``invalid_tool_calls`` and in v1 ``invalid_tool_call`` content blocks.
    """
    for generation in result.generations:
        message = generation.message
        errors = message.response_metadata.get(ERRORS_KEY)
        if not isinstance(message, AIMessage) or not isinstance(errors, dict):
            continue
        blocks = (
            [b for b in message.content if isinstance(b, dict)] if isinstance(message.content, list) else []
        )
        calls: list[Any] = [*message.invalid_tool_calls, *blocks]
        for bad in calls:
            if bad.get("type") in (None, "invalid_tool_call") and str(bad.get("id")) in errors:
                bad["error"] = errors[str(bad.get("id"))]
                bad["args"] = unquoted(bad.get("args"))
    return result


def unquoted(args: Any) -> Any:
    """The raw args ``_quoted`` wrapped in a JSON string; anything else as given."""
    if not isinstance(args, str):
        return args
    try:
        inner = json.loads(args)
    except ValueError:
        return args
    return inner if isinstance(inner, str) and _quoted(inner) != inner else args
