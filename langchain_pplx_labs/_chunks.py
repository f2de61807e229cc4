"""LangChain chunks from an answer's events: text, reasoning, and the closing chunk's sources and usage (pure)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._content_blocks import PROVIDER
from langchain_pplx_labs._profiles import CHARS_PER_TOKEN
from langchain_pplx_labs._text_chunks import TextChunks
from langchain_pplx_labs.events import Finished, ReasoningDelta, StreamEvent, TextDelta
from langchain_pplx_labs.messages import THREAD_DIGEST, conversation_digest

# One chunk per frame is the hot path: validating each one cost more than the rest of the layer.
text_chunk = TextChunks({"model_provider": PROVIDER}).make


def estimate_tokens(chars: int) -> int:
    """Tokens in ``chars`` characters of text, as Labs counts none: one per ``CHARS_PER_TOKEN`` begun."""
    return max(1, -(-chars // CHARS_PER_TOKEN)) if chars else 0


def reasoning_chunk(text: str) -> ChatGenerationChunk:
    """A chunk of the model's thinking: no content, the text in ``additional_kwargs["reasoning_content"]``."""
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            additional_kwargs={"reasoning_content": text},
            response_metadata={"model_provider": PROVIDER},
        )
    )


def response_metadata(event: Finished, model: str) -> dict[str, Any]:
    """The closing chunk's metadata: model, provider, finish reason, citations, and sources and timing when sent."""
    metadata: dict[str, Any] = {
        "model_name": model,
        "model_provider": PROVIDER,
        "finish_reason": "stop",
        "citations": [source.url for source in event.sources],
    }
    if event.rich_sources:
        metadata["search_results"] = [source.model_dump(exclude_none=True) for source in event.sources]
    if event.elapsed_time is not None:
        metadata["elapsed_time"] = event.elapsed_time
    if event.extras:
        metadata.update(event.extras)
    if event.thread:
        metadata.update(event.thread)
    return metadata


def usage_metadata(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """Token usage with its total."""
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )


def closing_message(
    event: Finished, model: str, answer_chars: int, input_tokens: int | None
) -> AIMessageChunk:
    """The last chunk's message: no text, the sources, and usage unless ``input_tokens`` is ``None``.

    Output tokens are the server's ``tokens_streamed``, or an estimate from the answer's
    ``answer_chars`` when it sent none.
    """
    metadata = response_metadata(event, model)
    usage = None
    if input_tokens is not None:
        output_tokens = event.tokens_streamed
        if output_tokens is None:
            output_tokens = estimate_tokens(answer_chars)
        usage = usage_metadata(input_tokens, output_tokens)
    return AIMessageChunk(
        content="",
        additional_kwargs={"citations": list(metadata["citations"])},
        response_metadata=metadata,
        usage_metadata=usage,
        chunk_position="last",
    )


class AnswerChunks:
    """One answer's chunks, event by event: it keeps the text so far for usage and partial answers.

    ``turns``: the conversation asked (web), whose digest with the answer the closing chunk carries when it
    has thread ids (:func:`~langchain_pplx_labs.messages.follow_up` checks it against the history given back).
    """

    def __init__(self, model: str, input_tokens: int | None, turns: list[Any] | None = None) -> None:
        self.model = model
        self.input_tokens = input_tokens
        self.turns = turns
        self._text: list[str] = []
        self.answer_chars = 0

    @property
    def answer_so_far(self) -> str:
        return "".join(self._text)

    def of(self, event: StreamEvent) -> ChatGenerationChunk:
        """The chunk for one event."""
        if isinstance(event, TextDelta):
            self._text.append(event.text)
            self.answer_chars += len(event.text)
            return text_chunk(event.text)
        if isinstance(event, ReasoningDelta):
            return reasoning_chunk(event.text)
        message = closing_message(event, self.model, self.answer_chars, self.input_tokens)
        metadata = message.response_metadata
        if self.turns is not None and "backend_uuid" in metadata:
            answered = [*self.turns, {"role": "assistant", "content": self.answer_so_far}]
            metadata[THREAD_DIGEST] = conversation_digest(answered)
        return ChatGenerationChunk(message=message)
