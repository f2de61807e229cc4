"""Pure Labs protocol: request payloads, progress frames, deltas, reasoning and sources (no I/O)."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, ValidationError

from langchain_pplx_labs.errors import (
    PerplexityLabsInputError,
    PerplexityLabsProtocolError,
    PerplexityLabsServerError,
    excerpt_of,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://www.perplexity.ai"
LABS_ORIGIN = "https://labs.perplexity.ai"
SOCKETIO_PATH = "socket.io"
QUERY_EVENT = "perplexity_labs"
PROGRESS_SUFFIX = "_query_progress"
ANONYMOUS_AUTH: dict[str, str] = {"jwt": "anonymous-ask-user"}
PAYLOAD_VERSION = "2.18"
DEFAULT_MODEL = "r1-1776"
KNOWN_MODELS = ("r1-1776", "sonar-pro", "sonar", "sonar-reasoning", "sonar-reasoning-pro")
"""Labs models seen on the playground in 2025; other names are accepted too."""
REASONING_MODELS = frozenset({"r1-1776", "sonar-reasoning", "sonar-reasoning-pro"})
# These models start their output already inside a think section, without "<think>".
IMPLICIT_THINK_MODELS = frozenset({"r1-1776"})
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}")

Role = Literal["system", "user", "assistant"]


class LabsMessage(TypedDict):
    """One chat turn as the Labs payload carries it."""

    role: Role
    content: str


def validate_model_name(model: str) -> str:
    """Return ``model`` if it is a plausible Labs model name, else raise."""
    if not isinstance(model, str) or not _MODEL_NAME.fullmatch(model):
        raise PerplexityLabsInputError(
            f"Invalid Labs model name {model!r}: use letters, digits and . _ : / - "
            f"(known models: {', '.join(KNOWN_MODELS)})"
        )
    return model


def progress_event(model: str) -> str:
    """Name of the event the server streams answers for ``model`` on."""
    return model + PROGRESS_SUFFIX


def is_progress_event(event: str) -> bool:
    """True for ``<model>_query_progress`` event names."""
    return event.endswith(PROGRESS_SUFFIX)


def build_payload(
    model: str,
    messages: Sequence[LabsMessage],
    *,
    version: str = PAYLOAD_VERSION,
    source: str = "default",
    max_input_chars: int | None = None,
) -> dict[str, Any]:
    """Build the ``perplexity_labs`` event payload, checking it before it is sent."""
    validate_model_name(model)
    if not messages:
        raise PerplexityLabsInputError("Cannot send an empty conversation: give at least one message")
    merged = _merge_consecutive_assistant(messages)
    if max_input_chars is not None:
        size = sum(len(m["content"]) for m in merged)
        if size > max_input_chars:
            raise PerplexityLabsInputError(
                f"Conversation is {size} characters, over the max_input_chars limit of "
                f"{max_input_chars}; shorten it or raise the limit"
            )
    return {"version": version, "source": source, "model": model, "messages": merged}


def _merge_consecutive_assistant(messages: Sequence[LabsMessage]) -> list[LabsMessage]:
    """Join back-to-back assistant turns, which the playground does not accept."""
    merged: list[LabsMessage] = []
    for message in messages:
        if merged and message["role"] == "assistant" and merged[-1]["role"] == "assistant":
            previous = merged[-1]
            merged[-1] = {"role": "assistant", "content": previous["content"] + "\n\n" + message["content"]}
        else:
            merged.append({"role": message["role"], "content": message["content"]})
    return merged


class Source(BaseModel):
    """A cited source; the server sends bare URLs or objects with ``url``/``title``."""

    model_config = ConfigDict(extra="allow")

    url: str
    title: str | None = None


class ProgressFrame(BaseModel):
    """One ``<model>_query_progress`` frame; ``output`` is the whole answer so far."""

    model_config = ConfigDict(extra="allow")

    output: str = ""
    citations: list[str | Source] = []
    final: bool = False
    status: str | None = None
    text: str | None = None
    elapsed_time: float | None = None
    tokens_streamed: int | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"


def parse_frame(data: object) -> ProgressFrame:
    """Validate the data of a progress event, raising a protocol error on a bad shape."""
    if not isinstance(data, dict):
        raise PerplexityLabsProtocolError(
            f"Progress frame is a {type(data).__name__}, not a JSON object", excerpt=excerpt_of(data)
        )
    try:
        return ProgressFrame.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()[:3]
        )
        raise PerplexityLabsProtocolError(
            f"Malformed progress frame ({problems})", excerpt=excerpt_of(data)
        ) from None


@dataclass(frozen=True, slots=True)
class TextDelta:
    """New answer text."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """New text from the model's think section."""

    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The final frame: the sources and the server's counters."""

    sources: tuple[Source, ...]
    rich_sources: bool
    tokens_streamed: int | None
    elapsed_time: float | None


StreamEvent = TextDelta | ReasoningDelta | Finished

_START, _REASONING, _ANSWER = "start", "reasoning", "answer"


def _partial_tag_suffix(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that could begin ``tag``."""
    for size in range(min(len(tag) - 1, len(text)), 0, -1):
        if tag.startswith(text[-size:]):
            return size
    return 0


class StreamDecoder:
    """Turn cumulative progress frames into text, reasoning and final events.

    Each frame's ``output`` repeats the whole answer so far; the decoder keeps
    what it has classified and emits only the new part, so a frame that repeats
    or shrinks the output never duplicates text. ``<think>`` sections become
    :class:`ReasoningDelta` events, including for models that omit the opening tag.
    """

    def __init__(self, model: str, *, keep_reasoning: bool = True) -> None:
        self.model = model
        self.keep_reasoning = keep_reasoning
        self._implicit_think = model in IMPLICIT_THINK_MODELS
        self._mode = _START
        self._seen = ""
        self._pos = 0
        self._skip_space = True
        self._saw_close = False
        self._reasoning_parts: list[str] = []
        self._answer_parts: list[str] = []
        self._sources: tuple[Source, ...] = ()
        self._rich_sources = False
        self.finished = False

    @property
    def answer_so_far(self) -> str:
        return "".join(self._answer_parts)

    def feed(self, frame: ProgressFrame) -> list[StreamEvent]:
        """Consume one frame and return the events it produces."""
        if self.finished:
            return []
        if frame.failed:
            raise PerplexityLabsServerError(
                frame.text or "(the server gave no message)",
                model=self.model,
                partial_content=self.answer_so_far,
            )
        self._accept_output(frame.output)
        events = self._advance(final=frame.final)
        if frame.citations:
            self._sources, self._rich_sources = _normalise_sources(frame.citations)
        if frame.final:
            events.extend(self._finish(frame))
        return events

    def _accept_output(self, output: str) -> None:
        seen = self._seen
        if len(output) >= len(seen) and output.startswith(seen):
            self._seen = output
        elif seen.startswith(output):
            return  # a repeated or shortened frame: nothing new
        else:
            # The server rewrote text we already emitted: keep ours, take the rest from the new
            # output, and drop held-back text (a partial tag) that it no longer has.
            logger.debug("progress output diverged at %d chars; keeping emitted text", self._pos)
            self._seen = seen[: self._pos] + output[self._rewrite_start(output) :]

    def _rewrite_start(self, output: str) -> int:
        """Where the new output continues ours: at ``_pos``, or at a ``</think>`` the cut would split."""
        if self._mode == _REASONING:
            near = max(0, self._pos - len(THINK_CLOSE) + 1)
            tag_at = output.find(THINK_CLOSE, near, self._pos + len(THINK_CLOSE) - 1)
            if 0 <= tag_at < self._pos:
                return tag_at
        return self._pos

    def _advance(self, *, final: bool) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        while True:
            if self._mode == _START:
                if not self._classify_start(final):
                    return events
            elif self._mode == _REASONING:
                if not self._advance_reasoning(final, events):
                    return events
            else:
                self._emit(self._seen[self._pos :], events)
                self._pos = len(self._seen)
                return events

    def _classify_start(self, final: bool) -> bool:
        rest = self._seen[self._pos :]
        stripped = rest.lstrip()
        if stripped.startswith(THINK_OPEN):
            self._pos += len(rest) - len(stripped) + len(THINK_OPEN)
            self._mode = _REASONING
            return True
        if not final and THINK_OPEN.startswith(stripped):
            return False  # too short to tell whether a think section opens
        # r1-1776's output begins inside its think section, without the opening tag.
        self._mode = _REASONING if self._implicit_think else _ANSWER
        return True

    def _advance_reasoning(self, final: bool, events: list[StreamEvent]) -> bool:
        close_at = self._seen.find(THINK_CLOSE, self._pos)
        if close_at >= 0:
            self._emit(self._seen[self._pos : close_at], events)
            self._pos = close_at + len(THINK_CLOSE)
            self._mode = _ANSWER
            self._skip_space = True
            self._saw_close = True
            return True
        held = 0 if final else _partial_tag_suffix(self._seen, THINK_CLOSE)
        end = len(self._seen) - held
        if end > self._pos:
            self._emit(self._seen[self._pos : end], events)
            self._pos = end
        return False

    def _emit(self, text: str, events: list[StreamEvent]) -> None:
        if not text:
            return  # a repeated frame: an empty delta would be a spurious chunk
        if self._skip_space:
            text = text.lstrip()
            if not text:
                return
            self._skip_space = False
        if self._mode == _ANSWER:
            self._answer_parts.append(text)
            events.append(TextDelta(text))
        else:
            self._reasoning_parts.append(text)
            if self.keep_reasoning:
                events.append(ReasoningDelta(text))

    def _finish(self, frame: ProgressFrame) -> list[StreamEvent]:
        self.finished = True
        events: list[StreamEvent] = []
        if self._mode == _REASONING and not self._saw_close and self._implicit_think:
            # The model never closed the think section it was assumed to be in: what it wrote
            # was the answer after all. It was streamed as reasoning; the answer repeats it.
            self._mode = _ANSWER
            self._skip_space = True
            self._emit("".join(self._reasoning_parts), events)
        events.append(
            Finished(
                sources=self._sources,
                rich_sources=self._rich_sources,
                tokens_streamed=frame.tokens_streamed,
                elapsed_time=frame.elapsed_time,
            )
        )
        return events


def _normalise_sources(citations: Sequence[str | Source]) -> tuple[tuple[Source, ...], bool]:
    sources = tuple(Source(url=c) if isinstance(c, str) else c for c in citations)
    return sources, any(not isinstance(c, str) for c in citations)
