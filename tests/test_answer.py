"""One answer's events become chunks: stop sequences cut them, and a failure keeps the partial answer (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from langchain_core.outputs import ChatGenerationChunk

from langchain_pplx_labs._answer import answer_chunks
from langchain_pplx_labs._stop import StopScanner, apply_stop
from langchain_pplx_labs.client import Client
from langchain_pplx_labs.errors import PerplexityLabsTimeoutError
from langchain_pplx_labs.events import Finished, ReasoningDelta, Source, StreamEvent, TextDelta
from langchain_pplx_labs.labs.frames import ProgressFrame, StreamDecoder

PAYLOAD = {"model": "sonar", "messages": [{"role": "user", "content": "What is the capital of France?"}]}
DONE = Finished(sources=(), rich_sources=False, tokens_streamed=9, elapsed_time=None)


# -- apply_stop ------------------------------------------------------------------------------------


def test_apply_stop_passes_text_before_any_stop() -> None:
    assert apply_stop(TextDelta("Paris is "), StopScanner(["\n\n"])) == [TextDelta("Paris is ")]


def test_apply_stop_holds_back_a_possible_start_and_ends_the_answer_at_the_stop() -> None:
    scanner = StopScanner(["END"])
    assert apply_stop(TextDelta("Paris E"), scanner) == [TextDelta("Paris ")]
    # The stop completes: the answer closes here with an estimated count, without sources.
    assert apply_stop(TextDelta("ND and more"), scanner) == [
        Finished(sources=(), rich_sources=False, tokens_streamed=2, elapsed_time=None)  # "Paris ": 2 tokens
    ]
    assert scanner.stopped


def test_apply_stop_cuts_inside_one_delta() -> None:
    scanner = StopScanner(["."])
    assert apply_stop(TextDelta("Paris. Lyon."), scanner) == [
        TextDelta("Paris"),
        Finished(sources=(), rich_sources=False, tokens_streamed=2, elapsed_time=None),
    ]


def test_apply_stop_releases_held_text_before_the_final_event() -> None:
    scanner = StopScanner(["END"])
    assert apply_stop(TextDelta("Paris E"), scanner) == [TextDelta("Paris ")]
    assert apply_stop(DONE, scanner) == [TextDelta("E"), DONE]


def test_apply_stop_leaves_reasoning_and_a_plain_final_alone() -> None:
    scanner = StopScanner(["Paris"])
    assert apply_stop(ReasoningDelta("Paris, surely"), scanner) == [ReasoningDelta("Paris, surely")]
    assert apply_stop(DONE, scanner) == [DONE]


# -- answer_chunks ---------------------------------------------------------------------------------


class FakeClient(Client):
    """A client whose stream plays the events of the given Labs frames (or raises after them); records what was asked."""

    def __init__(self, frames: list[ProgressFrame], error: Exception | None = None) -> None:
        self.frames = frames
        self.error = error
        self.asked: list[Mapping[str, Any]] = []
        self.closed_stream = False

    async def stream(self, payload: Mapping[str, Any]) -> AsyncIterator[StreamEvent]:
        self.asked.append(payload)
        decoder = StreamDecoder(payload["model"])
        try:
            for frame in self.frames:
                for event in decoder.feed(frame):
                    yield event
            if self.error is not None:
                raise self.error
        finally:
            self.closed_stream = True


FRAMES = [
    ProgressFrame(output="The capital"),
    ProgressFrame(output="The capital of France is Paris [1]."),
    ProgressFrame(
        output="The capital of France is Paris [1].",
        final=True,
        citations=["https://en.wikipedia.org/wiki/Paris"],
        tokens_streamed=9,
    ),
]


async def _collect(chunks: AsyncIterator[ChatGenerationChunk]) -> list[ChatGenerationChunk]:
    return [chunk async for chunk in chunks]


async def test_answer_chunks_streams_the_new_text_of_each_frame_then_the_closing_chunk() -> None:
    client = FakeClient(FRAMES)
    chunks = await _collect(answer_chunks(lambda: client, PAYLOAD, keep_reasoning=True, stops=(), usage=True))
    assert [chunk.text for chunk in chunks] == ["The capital", " of France is Paris [1].", ""]
    closing = chunks[-1].message
    assert closing.response_metadata["citations"] == ["https://en.wikipedia.org/wiki/Paris"]
    # "What is the capital of France?" is 30 characters: 8 tokens begun; 9 streamed.
    assert closing.usage_metadata == {"input_tokens": 8, "output_tokens": 9, "total_tokens": 17}
    assert client.asked == [PAYLOAD]
    assert client.closed_stream


async def test_answer_chunks_without_usage_leave_it_out() -> None:
    chunks = await _collect(
        answer_chunks(lambda: FakeClient(FRAMES), PAYLOAD, keep_reasoning=True, stops=(), usage=False)
    )
    assert chunks[-1].message.usage_metadata is None


async def test_answer_chunks_opens_the_client_only_when_read() -> None:
    opened: list[FakeClient] = []

    def open_client() -> FakeClient:
        opened.append(FakeClient(FRAMES))
        return opened[-1]

    chunks = answer_chunks(open_client, PAYLOAD, keep_reasoning=True, stops=(), usage=True)
    assert opened == []
    await _collect(chunks)
    assert len(opened) == 1


async def test_answer_chunks_stop_cuts_the_answer_and_closes_the_stream() -> None:
    client = FakeClient(FRAMES)
    chunks = await _collect(
        answer_chunks(lambda: client, PAYLOAD, keep_reasoning=True, stops=(" is",), usage=True)
    )
    assert [chunk.text for chunk in chunks] == ["The capital", " of France", ""]
    closing = chunks[-1].message
    assert closing.response_metadata["citations"] == []  # the final frame's sources never came
    # 21 characters emitted: 6 tokens begun.
    assert closing.usage_metadata == {"input_tokens": 8, "output_tokens": 6, "total_tokens": 14}
    assert client.closed_stream  # left early: the socket goes back to the pool now


async def test_answer_chunks_drop_reasoning_when_asked() -> None:
    frames = [ProgressFrame(output="<think>France... Paris.</think>Paris.", final=True)]
    kept = await _collect(
        answer_chunks(lambda: FakeClient(frames), PAYLOAD, keep_reasoning=True, stops=(), usage=False)
    )
    dropped = await _collect(
        answer_chunks(lambda: FakeClient(frames), PAYLOAD, keep_reasoning=False, stops=(), usage=False)
    )
    assert [c.message.additional_kwargs.get("reasoning_content") for c in kept] == [
        "France... Paris.",
        None,
        None,
    ]
    assert [c.text for c in dropped] == ["Paris.", ""]


async def test_answer_chunks_failure_keeps_the_text_streamed_before_it() -> None:
    client = FakeClient(FRAMES[:2], error=PerplexityLabsTimeoutError("idle", 30.0))
    seen: list[str] = []

    async def read() -> None:
        async for chunk in answer_chunks(lambda: client, PAYLOAD, keep_reasoning=True, stops=(), usage=True):
            seen.append(chunk.text)

    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await read()
    assert seen == ["The capital", " of France is Paris [1]."]
    assert caught.value.partial_content == "The capital of France is Paris [1]."


async def test_answer_chunks_rich_sources_reach_search_results() -> None:
    frames = [
        ProgressFrame(output="Paris [1].", final=True, citations=[Source(url="https://a.example", title="A")])
    ]
    chunks = await _collect(
        answer_chunks(lambda: FakeClient(frames), PAYLOAD, keep_reasoning=True, stops=(), usage=False)
    )
    assert chunks[-1].message.response_metadata["search_results"] == [
        {"url": "https://a.example", "title": "A"}
    ]
