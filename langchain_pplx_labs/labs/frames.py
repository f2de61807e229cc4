"""Labs' progress frames (pure): their shape, a failed one as its error, and cumulative output → delta events."""

from __future__ import annotations

import logging

from pydantic import BaseModel, ConfigDict, ValidationError

from langchain_pplx_labs.errors import (
    PerplexityLabsProtocolError,
    PerplexityLabsRateLimitError,
    PerplexityLabsServerError,
    excerpt_of,
)
from langchain_pplx_labs.events import ReasoningDelta, Source, StreamEvent, TextDelta, finished
from langchain_pplx_labs.protocol import IMPLICIT_THINK_MODELS, THINK_CLOSE, THINK_OPEN

logger = logging.getLogger(__name__)


class ProgressFrame(BaseModel):
    """One ``<model>_query_progress`` frame; ``output`` is the whole answer so far."""

    model_config = ConfigDict(extra="allow")

    output: str = ""
    citations: list[str | Source] = []
    final: bool = False
    status: str | None = None
    text: str | None = None
    error_code: str | int | None = None
    """Why a failed frame failed, as a code (the main site sends ``FREE_TIER_RATE_LIMITED``)."""
    elapsed_time: float | None = None
    tokens_streamed: int | None = None

    @property
    def failed(self) -> bool:
        return self.status == "failed"

    @property
    def rate_limited(self) -> bool:
        """A failed frame whose ``error_code`` names a rate limit."""
        return self.failed and "RATE_LIMIT" in str(self.error_code or "").upper()


def failure_of(frame: ProgressFrame, *, model: str, partial_content: str = "") -> PerplexityLabsServerError:
    """The typed error for a ``status: failed`` frame, with the server's own text and ``error_code``.

    A rate limit (``error_code`` such as ``FREE_TIER_RATE_LIMITED``) is its own error, never retried.
    """
    if frame.rate_limited:
        return PerplexityLabsRateLimitError(
            frame.text or "", error_code=str(frame.error_code), model=model, partial_content=partial_content
        )
    text = frame.text or (f"error_code {frame.error_code}" if frame.error_code is not None else "")
    return PerplexityLabsServerError(
        text or "(the server gave no message)", model=model, partial_content=partial_content
    )


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
        self._citations: list[str | Source] = []
        self.finished = False

    @property
    def answer_so_far(self) -> str:
        return "".join(self._answer_parts)

    def feed(self, frame: ProgressFrame) -> list[StreamEvent]:
        """Consume one frame and return the events it produces."""
        if self.finished:
            return []
        if frame.failed:
            raise failure_of(frame, model=self.model, partial_content=self.answer_so_far)
        self._accept_output(frame.output)
        events = self._advance(final=frame.final)
        if frame.citations:
            self._citations = frame.citations  # a later frame may leave them out
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
            finished(self._citations, tokens_streamed=frame.tokens_streamed, elapsed_time=frame.elapsed_time)
        )
        return events
