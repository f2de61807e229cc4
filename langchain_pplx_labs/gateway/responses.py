"""The model's message chunks as chat-completions chunks and completions, with Perplexity's sources."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from langchain_core.messages import AIMessageChunk

from langchain_pplx_labs.gateway.budget import OutputBudget
from langchain_pplx_labs.protocol import THINK_CLOSE, THINK_OPEN
from langchain_pplx_labs.tools import unquoted

ReasoningMode = Literal["separate", "inline", "drop"]


@dataclass
class Ending:
    """What the chunk that ends the answer carries besides text."""

    finish_reason: str = "stop"
    citations: list[str] = field(default_factory=list)
    search_results: list[dict[str, Any]] | None = None
    images: list[dict[str, Any]] | None = None
    """``[{image_url, origin_url, width, height}]`` as Perplexity's API returns them (the web app sends them)."""
    related_questions: list[str] | None = None
    usage: dict[str, int] | None = None

    def sources(self) -> dict[str, Any]:
        """Top-level fields as Perplexity's API sends them: ``citations`` always, the rest when the answer had them."""
        fields: dict[str, Any] = {"citations": self.citations}
        for name in ("search_results", "images", "related_questions"):
            value = getattr(self, name)
            if value is not None:
                fields[name] = value
        return fields


class Translator:
    """Turns the model's ``AIMessageChunk`` stream into chat-completions deltas.

    Reasoning goes to ``reasoning_content`` (``separate``), stays in ``content`` between
    ``<think>`` tags as Perplexity's API sends it (``inline``), or is left out (``drop``).
    """

    def __init__(
        self, model: str, reasoning: ReasoningMode = "separate", *, max_tokens: int | None = None
    ) -> None:
        self.model = model
        self.reasoning = reasoning
        self.budget = OutputBudget(max_tokens)
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.ending: Ending | None = None
        self._thinking = False
        self._wrote_text = False
        self._tool_calls = 0

    def delta(self, message: AIMessageChunk) -> dict[str, Any]:
        """The delta for one model chunk (empty when it adds nothing); notes the ending on the last one."""
        delta: dict[str, Any] = {}
        content = self._reasoning(message.additional_kwargs.get("reasoning_content"), delta)
        text = self.budget.take(message.content if isinstance(message.content, str) else "")
        last = message.chunk_position == "last" or self.budget.spent
        if self._thinking and (text or last):
            content += THINK_CLOSE + ("\n\n" if text else "")
            self._thinking = False
        content += text
        if content:
            delta["content"] = content
            self._wrote_text = True
        if self.budget.spent:
            self._cut()
        elif last:
            self._end(message, delta)
        return delta

    @property
    def cut(self) -> bool:
        """The client's output limit was reached: the answer ends here, without its sources (they come last)."""
        return self.budget.spent

    def _cut(self) -> None:
        self.ending = Ending(finish_reason="length")

    def _reasoning(self, reasoning: Any, delta: dict[str, Any]) -> str:
        if not isinstance(reasoning, str) or not reasoning or self.reasoning == "drop":
            return ""
        if self.reasoning == "separate":
            delta["reasoning_content"] = reasoning
            return ""
        opening = "" if self._thinking else THINK_OPEN
        self._thinking = True
        return opening + reasoning

    def _end(self, message: AIMessageChunk, delta: dict[str, Any]) -> None:
        calls = self._calls(message, delta)
        if calls:
            delta["tool_calls"] = calls
        metadata = message.response_metadata
        citations = message.additional_kwargs.get("citations") or metadata.get("citations") or []
        usage = message.usage_metadata
        self.ending = Ending(
            finish_reason="tool_calls" if calls else "stop",
            citations=list(citations),
            search_results=metadata.get("search_results"),
            images=metadata.get("images"),
            related_questions=metadata.get("related_questions"),
            usage=None
            if usage is None
            else {
                "prompt_tokens": usage["input_tokens"],
                "completion_tokens": usage["output_tokens"],
                "total_tokens": usage["total_tokens"],
            },
        )

    def _calls(self, message: AIMessageChunk, delta: dict[str, Any]) -> list[dict[str, Any]]:
        calls = []
        for chunk in message.tool_call_chunks:
            name, args = chunk.get("name"), chunk.get("args") or ""
            if not name:
                # A call without a name cannot be an OpenAI tool call: its text stays in the answer,
                # on a line of its own (the parser took the whitespace that separated it).
                shown = delta.get("content", "")
                gap = "\n" if shown or self._wrote_text else ""
                delta["content"] = shown + gap + str(unquoted(args))
                continue
            # Invalid calls keep their raw arguments; the client's own parser reports them.
            arguments = unquoted(args)
            calls.append(
                {
                    "index": self._tool_calls,
                    "id": chunk.get("id"),
                    "type": "function",
                    "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else ""},
                }
            )
            self._tool_calls += 1
        return calls

    def chunk(self, delta: dict[str, Any], *, first: bool = False, sources: bool = False) -> dict[str, Any]:
        """A ``chat.completion.chunk``; the one that ends the answer has the finish reason and sources."""
        if first:
            delta = {"role": "assistant", **delta}
        ending = self.ending if sources else None
        body: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": ending.finish_reason if ending else None}
            ],
        }
        if ending is not None:
            body.update(ending.sources())
        return body

    def usage_chunk(self) -> dict[str, Any]:
        """The chunk ``stream_options.include_usage`` asks for: no choices, the usage, the sources."""
        ending = self.ending or Ending()
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": ending.usage,
            **ending.sources(),
        }


class Completion:
    """Deltas added up into one ``chat.completion``."""

    def __init__(self, translator: Translator) -> None:
        self.translator = translator
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[dict[str, Any]] = []

    def add(self, delta: dict[str, Any]) -> None:
        self._content.append(delta.get("content", ""))
        self._reasoning.append(delta.get("reasoning_content", ""))
        self._calls.extend(
            {k: v for k, v in call.items() if k != "index"} for call in delta.get("tool_calls", ())
        )

    def body(self) -> dict[str, Any]:
        translator = self.translator
        ending = translator.ending or Ending()
        content = "".join(self._content)
        message: dict[str, Any] = {"role": "assistant", "content": content or (None if self._calls else "")}
        reasoning = "".join(self._reasoning)
        if reasoning:
            message["reasoning_content"] = reasoning
        if self._calls:
            message["tool_calls"] = self._calls
        return {
            "id": translator.id,
            "object": "chat.completion",
            "created": translator.created,
            "model": translator.model,
            "choices": [{"index": 0, "message": message, "finish_reason": ending.finish_reason}],
            "usage": ending.usage,
            **ending.sources(),
        }
