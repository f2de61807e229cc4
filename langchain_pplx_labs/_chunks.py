"""LangChain chunks from decoded Labs stream events: text, reasoning, and the closing chunk's sources and usage (pure)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessageChunk
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._blocks import PROVIDER
from langchain_pplx_labs._profiles import CHARS_PER_TOKEN
from langchain_pplx_labs._stamped import TextChunks
from langchain_pplx_labs.protocol import Finished, ReasoningDelta, StreamDecoder, StreamEvent, TextDelta

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
    return metadata


def usage_metadata(input_tokens: int, output_tokens: int) -> UsageMetadata:
    """Token usage with its total."""
    return UsageMetadata(
        input_tokens=input_tokens, output_tokens=output_tokens, total_tokens=input_tokens + output_tokens
    )


def closing_message(event: Finished, decoder: StreamDecoder, input_tokens: int | None) -> AIMessageChunk:
    """The last chunk's message: no text, the sources, and usage unless ``input_tokens`` is ``None``.

    Output tokens are the server's ``tokens_streamed``, or an estimate from the answer when it sent none.
    """
    metadata = response_metadata(event, decoder.model)
    usage = None
    if input_tokens is not None:
        output_tokens = event.tokens_streamed
        if output_tokens is None:
            output_tokens = estimate_tokens(len(decoder.answer_so_far))
        usage = usage_metadata(input_tokens, output_tokens)
    return AIMessageChunk(
        content="",
        additional_kwargs={"citations": list(metadata["citations"])},
        response_metadata=metadata,
        usage_metadata=usage,
        chunk_position="last",
    )


def chunk_of(event: StreamEvent, decoder: StreamDecoder, input_tokens: int | None) -> ChatGenerationChunk:
    """The chunk for one decoded event; ``decoder`` is the one that produced it."""
    if isinstance(event, TextDelta):
        return text_chunk(event.text)
    if isinstance(event, ReasoningDelta):
        return reasoning_chunk(event.text)
    return ChatGenerationChunk(message=closing_message(event, decoder, input_tokens))
