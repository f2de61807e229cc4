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
    "best_tool",
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
_QUOTED = re.compile(r"""(?<!\w)['"“‘]([^'"”’]+)['"”’](?!\w)""")
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*")
_NAME_PART = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
_STOPWORDS = frozenset(
    [
        "a",
        "about",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "could",
        "do",
        "does",
        "for",
        "from",
        "get",
        "give",
        "how",
        "i",
        "in",
        "into",
        "is",
        "it",
        "its",
        "me",
        "my",
        "now",
        "of",
        "on",
        "or",
        "please",
        "show",
        "some",
        "tell",
        "than",
        "that",
        "the",
        "their",
        "then",
        "this",
        "to",
        "tool",
        "use",
        "using",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
_PREPOSITIONS = frozenset(["about", "at", "for", "from", "in", "into", "near", "of", "on", "to"])


def schema_follower(request: LabsRequest) -> Scenario | Sequence[Step]:
    """Answer like an obliging model: JSON fitting the asked schema, a call to the offered tool that
    best fits the question (arguments taken from its words), or prose after tool results."""
    asked = question(request)
    if wants_json(request):
        return Scenario(answer=json.dumps(example_value(_asked_schema(request), asked)), citations=[])
    results = tool_results(request)
    tools = _offered_specs(request)
    if tools and not results:
        forced = _FORCED.search(system_text(request))
        spec = next((t for t in tools if forced and t["name"] == forced.group(1)), None)
        spec = spec or best_tool(tools, asked)
        args = example_value(spec.get("parameters") or {}, asked, avoid=_words(spec["name"]))
        return Scenario(answer=tool_call_answer((spec["name"], args)), citations=[])
    if results:
        summary = "; ".join(f"{name} returned {value}" for name, value in results.items())
        return Scenario(answer=f"The tools answered: {summary}.", citations=[])
    return default_responder(request)


def best_tool(tools: Sequence[dict[str, Any]], text: str) -> dict[str, Any]:
    """The tool whose name (counting most) or description shares the most words with ``text``; ties go
    to the first offered."""
    asked = _words(text)

    def score(spec: dict[str, Any]) -> int:
        named = 10 * (str(spec.get("name", "")) in text)
        return (
            named
            + 3 * len(asked & _words(str(spec.get("name", ""))))
            + len(asked & _words(str(spec.get("description", ""))))
        )

    return max(tools, key=score)  # max keeps the first of equals


def example_value(schema: dict[str, Any], text: str, *, avoid: frozenset[str] = frozenset()) -> Any:
    """A value fitting ``schema`` filled from ``text``: each string field takes the next quoted text or
    proper name (not one of the ``avoid`` words), each number the next number; optional fields keep
    their default."""
    return _Filler(text, avoid).value(schema)


class _Filler:
    """Hands out the question's quoted texts, names and numbers, one per field, in order."""

    def __init__(self, text: str, avoid: frozenset[str]) -> None:
        self.text = text
        self.avoid = avoid
        self.strings = [m.group(1) for m in _QUOTED.finditer(text)] + _proper_names(
            _QUOTED.sub(" ", text), avoid
        )
        self.numbers = [float(m.group(0)) for m in _NUMBER.finditer(_QUOTED.sub(" ", text))]
        self.used_strings = 0
        self.used_numbers = 0

    def value(self, schema: dict[str, Any]) -> Any:
        for key in ("anyOf", "oneOf"):
            if schema.get(key):
                return self.value(schema[key][0])
        if "enum" in schema:
            return next((v for v in schema["enum"] if str(v).lower() in self.text.lower()), schema["enum"][0])
        kind = schema.get("type", "object" if "properties" in schema else "string")
        kind = kind[0] if isinstance(kind, list) else kind
        if kind == "object":
            return self._object(schema)
        if kind in ("integer", "number"):
            value = self._next_number()
            return int(value) if kind == "integer" else value
        if kind == "boolean":
            return True
        if kind == "array":
            return [self.value(schema.get("items") or {})]
        if kind == "null":
            return None
        return self._next_string()

    def _object(self, schema: dict[str, Any]) -> dict[str, Any]:
        properties: dict[str, Any] = schema.get("properties") or {}
        required = schema.get("required")
        # Optional fields are left out, as a model not asked for them does; their defaults apply.
        return {
            name: self.value(sub) for name, sub in properties.items() if required is None or name in required
        }

    def _next_number(self) -> float:
        if not self.numbers:
            return 1
        number = self.numbers[min(self.used_numbers, len(self.numbers) - 1)]
        self.used_numbers += 1
        return number

    def _next_string(self) -> str:
        if self.used_strings < len(self.strings):
            self.used_strings += 1
            return self.strings[self.used_strings - 1]
        if self.strings:
            return self.strings[0]
        fallback = _after_last_preposition(self.text) or _opening_name(self.text, self.avoid)
        return fallback or self.text.strip()[:60] or "example"


def _stem(word: str) -> str:
    word = word.lower()
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> frozenset[str]:
    """Content words of ``text`` (snake_case and camelCase split, stop words dropped), lightly stemmed."""
    parts = (p for w in _WORD.findall(text) for p in (_NAME_PART.findall(w) or [w]))
    return frozenset(_stem(p) for p in parts if p.lower() not in _STOPWORDS)


def _proper_names(text: str, avoid: frozenset[str]) -> list[str]:
    """Capitalised words not opening a sentence (runs of them joined: "New York"), minus ``avoid`` words."""
    names: list[str] = []
    run: list[str] = []
    end = 0
    for match in _WORD.finditer(text):
        word, gap = match.group(0), text[end : match.start()]
        opens_sentence = not text[: match.start()].strip() or text[: match.start()].rstrip()[-1] in ".?!:;"
        name = (
            word[0].isupper()
            and not opens_sentence
            and word.lower() not in _STOPWORDS
            and _stem(word) not in avoid
        )
        if run and (not name or gap.strip()):
            names.append(" ".join(run))
            run = []
        if name:
            run.append(word)
        end = match.end()
    return [*names, " ".join(run)] if run else names


def _opening_name(text: str, avoid: frozenset[str]) -> str:
    """ "Paris weather?" -> "Paris": a capitalised first word that is no stop word or tool word."""
    first = _WORD.search(text)
    word = first.group(0) if first else ""
    usable = word[:1].isupper() and word.lower() not in _STOPWORDS and _stem(word) not in avoid
    return word if usable else ""


def _after_last_preposition(text: str) -> str:
    """ "Tell me a joke about cats" -> "cats": what follows the last preposition, up to punctuation."""
    words = _WORD.findall(text)
    for index in range(len(words) - 2, -1, -1):
        if words[index].lower() in _PREPOSITIONS:
            return " ".join(words[index + 1 :])
    return ""


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
