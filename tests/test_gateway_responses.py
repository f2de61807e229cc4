"""The gateway's translation of model chunks into chat-completions deltas, on literal chunks."""

from __future__ import annotations

from langchain_core.messages import AIMessageChunk

from langchain_pplx_labs.gateway.responses import Translator


def _content(translator: Translator, *chunks: AIMessageChunk) -> str:
    return "".join(str(translator.delta(chunk).get("content", "")) for chunk in chunks)


def test_inline_reasoning_closes_its_think_tag_when_the_last_chunk_has_no_text() -> None:
    translator = Translator("sonar", reasoning="inline")
    content = _content(
        translator,
        AIMessageChunk(content="", additional_kwargs={"reasoning_content": "Thinking."}),
        AIMessageChunk(content="", chunk_position="last"),
    )
    assert content == "<think>Thinking.</think>"
    assert translator.ending is not None
    assert translator.ending.finish_reason == "stop"


def test_inline_reasoning_closes_its_think_tag_before_the_answer() -> None:
    translator = Translator("sonar", reasoning="inline")
    content = _content(
        translator,
        AIMessageChunk(content="", additional_kwargs={"reasoning_content": "Thinking."}),
        AIMessageChunk(content="Paris."),
        AIMessageChunk(content="", chunk_position="last"),
    )
    assert content == "<think>Thinking.</think>\n\nParis."
