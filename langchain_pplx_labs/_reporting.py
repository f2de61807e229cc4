"""Chunk streams as LangChain's callbacks see them: each token reported, v1 citation spans on the closing chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._content_blocks import annotate_last_chunk


class AnswerNotes:
    """Keeps a stream's text; for ``output_version="v1"``, annotates the closing chunk with all of it (pure)."""

    __slots__ = ("_parts", "_v1")

    def __init__(self, output_version: str | None) -> None:
        self._parts: list[str] = []
        self._v1 = output_version == "v1"

    def note(self, chunk: ChatGenerationChunk) -> None:
        self._parts.append(chunk.text)
        # Join only at the closing chunk: joining per chunk would make long answers quadratic.
        if self._v1 and getattr(chunk.message, "chunk_position", None) == "last":
            annotate_last_chunk(chunk.message, "".join(self._parts))


def nothing_to_report(run_manager: object, output_version: str | None) -> bool:
    """No callbacks and no v1 spans: the stream can go to LangChain as it is, one generator level less per chunk."""
    return run_manager is None and output_version != "v1"


async def areported(
    chunks: AsyncIterator[ChatGenerationChunk],
    run_manager: AsyncCallbackManagerForLLMRun | None,
    output_version: str | None,
) -> AsyncIterator[ChatGenerationChunk]:
    """``chunks`` with each token sent to ``run_manager`` and, for v1, the closing chunk annotated."""
    notes = AnswerNotes(output_version)
    async for chunk in chunks:
        notes.note(chunk)
        if run_manager is not None:
            await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk


def reported(
    chunks: Iterator[ChatGenerationChunk],
    run_manager: CallbackManagerForLLMRun | None,
    output_version: str | None,
) -> Iterator[ChatGenerationChunk]:
    """The sync ``areported``."""
    notes = AnswerNotes(output_version)
    for chunk in chunks:
        notes.note(chunk)
        if run_manager is not None:
            run_manager.on_llm_new_token(chunk.text, chunk=chunk)
        yield chunk
