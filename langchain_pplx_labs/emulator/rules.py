"""A rule-table responder: answer with tool calls, JSON or prose depending on the request."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from langchain_pplx_labs.emulator.script import LabsRequest, Responder, Scenario, Step, default_responder
from langchain_pplx_labs.tools import JSON_INSTRUCTION, PLAIN_JSON_INSTRUCTION, TOOLS_HEADER

# How messages.py renders a ToolMessage as a user turn.
_TOOL_RESULT = re.compile(r"^Result of tool call (\S+)(?: \(([^)]*)\))?:\n(.*)\Z", re.S)
_JSON_MARKERS = (JSON_INSTRUCTION.split("{", 1)[0], PLAIN_JSON_INSTRUCTION)

Answer = str | Scenario | Callable[[LabsRequest], "str | Scenario"]
"""What a rule answers: text, a scenario, or a function of the request giving either."""

__all__ = [
    "Answer",
    "Rule",
    "RuleTable",
    "example_value",
    "offered_tools",
    "question",
    "schema_follower",
    "system_text",
    "tool_call_answer",
    "tool_results",
    "wants_json",
]


def system_text(request: LabsRequest) -> str:
    """All system turns joined."""
    return "\n".join(str(m.get("content", "")) for m in request.messages if m.get("role") == "system")


def offered_tools(request: LabsRequest) -> list[str]:
    """Names of the tools the system instruction describes."""
    return [str(spec.get("name")) for spec in _offered_specs(request)]


def wants_json(request: LabsRequest) -> bool:
    """Whether the request asks for a bare JSON answer (structured output)."""
    system = system_text(request)
    return any(marker in system for marker in _JSON_MARKERS)


def question(request: LabsRequest) -> str:
    """The last user turn that is not a tool result."""
    for message in reversed(request.messages):
        content = str(message.get("content", ""))
        if message.get("role") == "user" and not _TOOL_RESULT.match(content):
            return content
    return ""


def tool_results(request: LabsRequest) -> dict[str, str]:
    """Tool results since the last question, by tool name (the latest wins)."""
    results: dict[str, str] = {}
    for message in reversed(request.messages):
        content = str(message.get("content", ""))
        if message.get("role") != "user":
            continue
        match = _TOOL_RESULT.match(content)
        if match is None:
            break
        results.setdefault(match.group(2) or match.group(1), match.group(3))
    return results


def tool_call_answer(*calls: tuple[str, dict[str, Any]], prose: str = "") -> str:
    """An answer in the documented call format, optionally after some prose."""
    body = json.dumps({"tool_calls": [{"name": name, "arguments": args} for name, args in calls]})
    return f"{prose}\n{body}" if prose else body


@dataclass(frozen=True)
class Rule:
    """Answer with ``answer`` when every condition that is set matches."""

    answer: Answer
    question: str | None = None
    """Regex searched in the last real question."""
    system: str | None = None
    """Regex searched in the system turns."""
    tools: tuple[str, ...] = ()
    """Tools that must be offered."""
    after: tuple[str, ...] = ()
    """Tools whose results must already be in the conversation."""
    before: tuple[str, ...] = ()
    """Tools whose results must not be in the conversation yet."""
    json_answer: bool | None = None
    """Whether the request must (``True``) or must not (``False``) ask for JSON."""

    def matches(self, request: LabsRequest) -> bool:
        """Whether every condition that is set holds for ``request``."""
        results = tool_results(request)
        checks = (
            self.question is None or re.search(self.question, question(request), re.I) is not None,
            self.system is None or re.search(self.system, system_text(request), re.I) is not None,
            set(self.tools) <= set(offered_tools(request)),
            all(name in results for name in self.after),
            not any(name in results for name in self.before),
            self.json_answer is None or self.json_answer == wants_json(request),
        )
        return all(checks)

    def reply(self, request: LabsRequest) -> Scenario:
        """The scenario answering ``request`` (text answers carry no sources)."""
        answer = self.answer(request) if callable(self.answer) else self.answer
        # Tool calls and JSON carry no sources; reasoning models still think first.
        return answer if isinstance(answer, Scenario) else Scenario(answer=answer, citations=[])


class RuleTable:
    """A responder: the first matching rule answers, else ``fallback``."""

    def __init__(self, rules: Sequence[Rule], fallback: Responder = default_responder) -> None:
        self.rules = list(rules)
        self.fallback = fallback
        self.matched: list[int | None] = []
        """Index of the rule that answered each request (``None``: the fallback)."""

    def __call__(self, request: LabsRequest) -> Scenario | Sequence[Step]:
        for index, rule in enumerate(self.rules):
            if rule.matches(request):
                self.matched.append(index)
                return rule.reply(request)
        self.matched.append(None)
        return self.fallback(request)


# -- a model that follows whatever schema it is given ------------------------------------------

_FORCED = re.compile(r"You must call the tool '([^']+)' now\.")
_QUOTED = re.compile(r"""['"“‘]([^'"”’]+)['"”’]""")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def schema_follower(request: LabsRequest) -> Scenario | Sequence[Step]:
    """Answer like an obliging model: JSON fitting the asked schema, a call to an offered tool
    (arguments made from numbers and quoted text in the question), or prose after tool results."""
    asked = question(request)
    if wants_json(request):
        return Scenario(answer=json.dumps(example_value(_asked_schema(request), asked)), citations=[])
    results = tool_results(request)
    tools = _offered_specs(request)
    if tools and not results:
        forced = _FORCED.search(system_text(request))
        spec = next((t for t in tools if forced and t["name"] == forced.group(1)), tools[0])
        args = example_value(spec.get("parameters") or {}, asked)
        return Scenario(answer=tool_call_answer((spec["name"], args)), citations=[])
    if results:
        summary = "; ".join(f"{name} returned {value}" for name, value in results.items())
        return Scenario(answer=f"The tools answered: {summary}.", citations=[])
    return default_responder(request)


def example_value(schema: dict[str, Any], text: str) -> Any:
    """A value fitting ``schema``, taking numbers and quoted strings from ``text`` where it can."""
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_value(schema[key][0], text)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    kind = kind[0] if isinstance(kind, list) else kind
    if kind == "object":
        properties: dict[str, Any] = schema.get("properties") or {}
        return {name: example_value(sub, text) for name, sub in properties.items()}
    if kind in ("integer", "number"):
        number = _NUMBER.search(text)
        value = float(number.group(0)) if number else 1
        return int(value) if kind == "integer" else value
    if kind == "boolean":
        return True
    if kind == "array":
        return [example_value(schema.get("items") or {}, text)]
    if kind == "null":
        return None
    quoted = _QUOTED.search(text)
    return quoted.group(1) if quoted else text.strip()[:60] or "example"


def _offered_specs(request: LabsRequest) -> list[dict[str, Any]]:
    parts = system_text(request).split(TOOLS_HEADER, 1)
    specs: list[dict[str, Any]] = []
    for line in parts[1].splitlines()[1:] if len(parts) == 2 else []:
        if not line.startswith("{"):
            break
        specs.append(json.loads(line))
    return specs


def _asked_schema(request: LabsRequest) -> dict[str, Any]:
    prefix = JSON_INSTRUCTION.split("{", 1)[0]
    system = system_text(request)
    if prefix not in system:
        return {"type": "object", "properties": {"answer": {"type": "string"}}}
    schema, _ = json.JSONDecoder().raw_decode(system.split(prefix, 1)[1].lstrip())
    return dict(schema)
