"""One answer's events as LangChain chunks: cut at stop sequences, failures keeping the partial answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any, cast

from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._chunks import AnswerChunks, estimate_tokens
from langchain_pplx_labs._stop import StopScanner, apply_stop
from langchain_pplx_labs.client import Client
from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.events import ReasoningDelta, StreamEvent

logger = logging.getLogger(__name__)


async def answer_chunks(
    open_client: Callable[[], Client],
    payload: Mapping[str, Any],
    *,
    keep_reasoning: bool,
    stops: tuple[str, ...],
    usage: bool,
    turns: list[Any] | None = None,
) -> AsyncIterator[ChatGenerationChunk]:
    """Ask ``payload`` on the client ``open_client`` returns, and yield its answer's chunks.

    The client is opened at the first ``__anext__``, so a sync caller's question takes it on
    the background loop, as every other does. ``usage``: the last chunk carries token usage.
    ``turns``: the conversation asked, digested into the closing chunk (see :class:`AnswerChunks`).
    """
    input_tokens = estimate_tokens(sum(len(m["content"]) for m in payload["messages"])) if usage else None
    chunks = AnswerChunks(payload["model"], input_tokens, turns)
    scanner = StopScanner(stops)
    logger.debug("query: model=%s, %d messages", chunks.model, len(payload["messages"]))
    try:
        # stream() is an async generator; closing it on an early stop releases the connection now.
        stream = cast("AsyncGenerator[StreamEvent, None]", open_client().stream(payload))
        async with aclosing(stream) as events:
            async for event in events:
                if not keep_reasoning and isinstance(event, ReasoningDelta):
                    continue
                if not scanner.stops:
                    yield chunks.of(event)
                    continue
                for out in apply_stop(event, scanner):
                    yield chunks.of(out)
                if scanner.stopped:
                    # Leaving the stream hands the connection back: a Labs socket is drained in
                    # the background before reuse, a web answer is cut off.
                    logger.debug("answer cut at a stop sequence")
                    return
    except PerplexityLabsError as exc:
        exc.partial_content = exc.partial_content or chunks.answer_so_far
        raise
    logger.debug("answer finished: model=%s, %d chars", chunks.model, chunks.answer_chars)
