"""One answer's frames as LangChain chunks: decoded, cut at stop sequences, failures keeping the partial answer."""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any, cast

from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._chunks import chunk_of, estimate_tokens
from langchain_pplx_labs._stop import StopScanner, apply_stop
from langchain_pplx_labs.client import LabsClient
from langchain_pplx_labs.errors import PerplexityLabsError
from langchain_pplx_labs.protocol import ProgressFrame, StreamDecoder

logger = logging.getLogger(__name__)


async def answer_chunks(
    open_client: Callable[[], LabsClient],
    payload: Mapping[str, Any],
    *,
    keep_reasoning: bool,
    stops: tuple[str, ...],
    usage: bool,
) -> AsyncIterator[ChatGenerationChunk]:
    """Ask ``payload`` on the client ``open_client`` returns, and yield its answer's chunks.

    The client is opened at the first ``__anext__``, so a sync caller's question takes it on
    the background loop, as every other does. ``usage``: the last chunk carries token usage.
    """
    decoder = StreamDecoder(payload["model"], keep_reasoning=keep_reasoning)
    scanner = StopScanner(stops)
    input_tokens = estimate_tokens(sum(len(m["content"]) for m in payload["messages"])) if usage else None
    logger.debug("Labs query: model=%s, %d messages", decoder.model, len(payload["messages"]))
    try:
        # stream() is an async generator; closing it on an early stop releases the socket now.
        stream = cast("AsyncGenerator[ProgressFrame, None]", open_client().stream(payload))
        async with aclosing(stream) as frames:
            async for frame in frames:
                for event in decoder.feed(frame):
                    if not scanner.stops:
                        yield chunk_of(event, decoder, input_tokens)
                        continue
                    for out in apply_stop(event, scanner):
                        yield chunk_of(out, decoder, input_tokens)
                    if scanner.stopped:
                        # Leaving the stream hands the socket to the pool, which reads the
                        # rest of the answer in the background before reusing it.
                        logger.debug("Labs answer cut at a stop sequence")
                        return
    except PerplexityLabsError as exc:
        exc.partial_content = exc.partial_content or decoder.answer_so_far
        raise
    logger.debug("Labs answer finished: model=%s, %d chars", decoder.model, len(decoder.answer_so_far))
