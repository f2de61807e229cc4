"""An answer's events become the LangChain chunks users see: text, reasoning, and the closing chunk (pure)."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessageChunk

from langchain_pplx_labs._chunks import (
    AnswerChunks,
    closing_message,
    estimate_tokens,
    reasoning_chunk,
    response_metadata,
    text_chunk,
    usage_metadata,
)
from langchain_pplx_labs.events import Finished, ReasoningDelta, Source, TextDelta

PARIS = Source(url="https://en.wikipedia.org/wiki/Paris", title="Paris - Wikipedia")
LOUVRE = Source(url="https://www.louvre.fr")


def _finished(
    *sources: Source, rich: bool = False, tokens: int | None = 7, elapsed: float | None = None
) -> Finished:
    return Finished(sources=sources, rich_sources=rich, tokens_streamed=tokens, elapsed_time=elapsed)


def _chunks_that_answered(text: str, input_tokens: int | None, model: str = "sonar") -> AnswerChunks:
    chunks = AnswerChunks(model, input_tokens)
    chunks.of(TextDelta(text))
    return chunks


@pytest.mark.parametrize(
    ("chars", "tokens"), [(0, 0), (1, 1), (3, 1), (4, 1), (5, 2), (8, 2), (9, 3), (400, 100), (401, 101)]
)
def test_estimate_tokens_counts_one_per_four_characters_begun(chars: int, tokens: int) -> None:
    assert estimate_tokens(chars) == tokens


def test_text_chunk_carries_the_text_and_the_provider() -> None:
    chunk = text_chunk("Paris [1].")
    assert chunk.text == "Paris [1]."
    assert chunk.message.content == "Paris [1]."
    assert chunk.message.response_metadata == {"model_provider": "perplexity_labs"}
    assert chunk.message.additional_kwargs == {}


def test_reasoning_chunk_has_no_content_and_the_thinking_aside() -> None:
    chunk = reasoning_chunk("The user asks about France.")
    assert chunk.text == ""
    assert chunk.message.content == ""
    assert chunk.message.additional_kwargs == {"reasoning_content": "The user asks about France."}
    assert chunk.message.response_metadata == {"model_provider": "perplexity_labs"}


def test_response_metadata_of_bare_urls_lists_citations_only() -> None:
    assert response_metadata(_finished(PARIS, LOUVRE), "sonar-pro") == {
        "model_name": "sonar-pro",
        "model_provider": "perplexity_labs",
        "finish_reason": "stop",
        "citations": ["https://en.wikipedia.org/wiki/Paris", "https://www.louvre.fr"],
    }


def test_response_metadata_of_rich_sources_adds_search_results_and_elapsed_time() -> None:
    metadata = response_metadata(_finished(PARIS, LOUVRE, rich=True, elapsed=0.25), "sonar")
    assert metadata["search_results"] == [
        {"url": "https://en.wikipedia.org/wiki/Paris", "title": "Paris - Wikipedia"},
        {"url": "https://www.louvre.fr"},  # no title sent: none invented
    ]
    assert metadata["elapsed_time"] == 0.25
    assert list(metadata) == [
        "model_name",
        "model_provider",
        "finish_reason",
        "citations",
        "search_results",
        "elapsed_time",
    ]


def test_usage_metadata_adds_up_the_total() -> None:
    assert usage_metadata(19, 30) == {"input_tokens": 19, "output_tokens": 30, "total_tokens": 49}


def test_closing_message_takes_output_tokens_from_the_server() -> None:
    message = closing_message(_finished(PARIS, tokens=30), "sonar", 400, 19)
    assert message.content == ""
    assert message.chunk_position == "last"
    assert message.usage_metadata == {"input_tokens": 19, "output_tokens": 30, "total_tokens": 49}
    assert message.additional_kwargs == {"citations": ["https://en.wikipedia.org/wiki/Paris"]}
    assert message.response_metadata["citations"] == ["https://en.wikipedia.org/wiki/Paris"]


def test_closing_message_estimates_output_tokens_when_the_server_sent_none() -> None:
    message = closing_message(_finished(tokens=None), "sonar", len("Paris is the capital."), 5)
    # "Paris is the capital." is 21 characters: 6 tokens begun.
    assert message.usage_metadata == {"input_tokens": 5, "output_tokens": 6, "total_tokens": 11}


def test_closing_message_without_input_tokens_has_no_usage() -> None:
    message = closing_message(_finished(PARIS), "sonar", 6, None)
    assert message.usage_metadata is None


def test_closing_message_citations_are_copies_not_shared_lists() -> None:
    message = closing_message(_finished(PARIS), "sonar", 6, None)
    message.additional_kwargs["citations"].append("https://example.com")
    assert message.response_metadata["citations"] == ["https://en.wikipedia.org/wiki/Paris"]


def test_answer_chunks_turn_each_event_into_its_chunk() -> None:
    chunks = AnswerChunks("sonar-pro", 3)
    assert chunks.of(TextDelta("Paris.")).text == "Paris."
    thinking = chunks.of(ReasoningDelta("hmm"))
    assert thinking.message.additional_kwargs == {"reasoning_content": "hmm"}
    assert chunks.answer_so_far == "Paris."  # reasoning is not the answer
    closing = chunks.of(_finished(tokens=2))
    assert isinstance(closing.message, AIMessageChunk)
    assert closing.message.chunk_position == "last"
    assert closing.message.response_metadata["model_name"] == "sonar-pro"
    assert closing.message.usage_metadata == {"input_tokens": 3, "output_tokens": 2, "total_tokens": 5}


def test_chunks_add_up_to_the_whole_message() -> None:
    answer = _chunks_that_answered("Paris [1].", 4)
    chunks = [text_chunk("Paris "), text_chunk("[1]."), answer.of(_finished(PARIS, tokens=3))]
    full = chunks[0].message + chunks[1].message + chunks[2].message
    assert full.content == "Paris [1]."
    assert full.response_metadata["citations"] == ["https://en.wikipedia.org/wiki/Paris"]
    assert full.usage_metadata == {"input_tokens": 4, "output_tokens": 3, "total_tokens": 7}
