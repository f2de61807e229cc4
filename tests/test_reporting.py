"""Chunk streams reported to LangChain: each token to the run's callbacks, v1 spans on the closing chunk."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._chunks import text_chunk
from langchain_pplx_labs._reporting import AnswerNotes, areported, nothing_to_report, reported

PARIS = "https://en.wikipedia.org/wiki/Paris"


def _closing(*citations: str) -> ChatGenerationChunk:
    return ChatGenerationChunk(
        message=AIMessageChunk(
            content="",
            additional_kwargs={"citations": list(citations)},
            response_metadata={"model_provider": "perplexity_labs", "citations": list(citations)},
            chunk_position="last",
        )
    )


def _answer() -> list[ChatGenerationChunk]:
    return [text_chunk("The capital is "), text_chunk("Paris [1]."), _closing(PARIS)]


class Tokens:
    """A stand-in run manager that records the tokens it is given, and the chunks with them."""

    def __init__(self) -> None:
        self.tokens: list[tuple[str, ChatGenerationChunk]] = []

    def on_llm_new_token(self, token: str, *, chunk: ChatGenerationChunk, **_: Any) -> None:
        self.tokens.append((token, chunk))


class AsyncTokens(Tokens):
    async def on_llm_new_token(self, token: str, *, chunk: ChatGenerationChunk, **_: Any) -> None:  # type: ignore[override]
        self.tokens.append((token, chunk))


async def _aiter(chunks: list[ChatGenerationChunk]) -> AsyncIterator[ChatGenerationChunk]:
    for chunk in chunks:
        yield chunk


def test_notes_annotate_the_v1_closing_chunk_over_the_whole_answer() -> None:
    notes = AnswerNotes("v1")
    chunks = _answer()
    for chunk in chunks:
        notes.note(chunk)
    assert chunks[-1].message.content == [
        {
            "type": "text",
            "text": "",
            "annotations": [
                {"type": "citation", "url": PARIS, "start_index": 21, "end_index": 24, "cited_text": "[1]"}
            ],
        }
    ]


def test_notes_leave_other_output_versions_alone() -> None:
    for version in ("v0", None):
        notes = AnswerNotes(version)
        chunks = _answer()
        for chunk in chunks:
            notes.note(chunk)
        assert chunks[-1].message.content == ""


def test_nothing_to_report_only_without_callbacks_and_without_v1() -> None:
    assert nothing_to_report(None, "v0")
    assert nothing_to_report(None, None)
    assert not nothing_to_report(None, "v1")
    assert not nothing_to_report(Tokens(), "v0")


def test_reported_sends_each_token_with_its_chunk_and_yields_them_unchanged() -> None:
    manager = Tokens()
    chunks = _answer()
    out = list(reported(iter(chunks), cast("CallbackManagerForLLMRun", manager), "v0"))
    assert out == chunks
    assert [token for token, _ in manager.tokens] == ["The capital is ", "Paris [1].", ""]
    assert [chunk for _, chunk in manager.tokens] == chunks


def test_reported_without_a_run_manager_still_annotates_v1() -> None:
    out = list(reported(iter(_answer()), None, "v1"))
    content = out[-1].message.content
    assert isinstance(content, list)
    assert content[0]["annotations"][0]["url"] == PARIS  # type: ignore[index]


async def test_areported_matches_reported() -> None:
    manager = AsyncTokens()
    chunks = _answer()
    out = [c async for c in areported(_aiter(chunks), cast("AsyncCallbackManagerForLLMRun", manager), "v1")]
    assert out == chunks
    assert [token for token, _ in manager.tokens] == ["The capital is ", "Paris [1].", ""]
    content = out[-1].message.content
    assert isinstance(content, list)
    # "The capital is Paris " is 21 characters: the marker starts there.
    assert content[0]["annotations"][0]["start_index"] == 21  # type: ignore[index]
