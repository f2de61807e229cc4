"""Stamped text chunks are indistinguishable from validated ones, and fall back when they would not be."""

from __future__ import annotations

from typing import Any, Self

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_core.load import dumpd
from langchain_core.messages import AIMessageChunk
from langchain_core.outputs import ChatGenerationChunk
from pydantic import BaseModel, model_validator

from langchain_pplx_labs import ChatPerplexityLabs, _text_chunks
from langchain_pplx_labs._content_blocks import PROVIDER
from langchain_pplx_labs._text_chunks import Blueprint, TextChunks, same_model, validated_text_chunk
from langchain_pplx_labs.emulator import LabsEmulator

METADATA = {"model_provider": PROVIDER}


def _assert_identical(stamped: ChatGenerationChunk, validated: ChatGenerationChunk) -> None:
    assert same_model(stamped, validated)
    assert same_model(stamped.message, validated.message)
    assert stamped.model_dump() == validated.model_dump()
    assert dumpd(stamped.message) == dumpd(validated.message)


def test_installed_langchain_core_gets_stamped_chunks() -> None:
    # If a langchain-core upgrade makes stamping differ from validation, users silently get the
    # validated path; this test is what tells us.
    assert TextChunks(METADATA).stamping


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_stamped_chunk_equals_the_validated_one(text: str) -> None:
    _assert_identical(TextChunks(METADATA).make(text), validated_text_chunk(text, METADATA))


def test_each_chunk_has_its_own_containers() -> None:
    chunks = TextChunks(METADATA)
    first, second = chunks.make("a"), chunks.make("b")
    first.message.additional_kwargs["citations"] = ["https://x"]
    first.message.response_metadata["finish_reason"] = "stop"
    first.message.tool_calls.append({"name": "t", "args": {}, "id": "1", "type": "tool_call"})
    first.message.tool_call_chunks.append({"name": "t", "args": "", "id": "1", "index": 0})
    first.message.invalid_tool_calls.append(
        {"name": "t", "args": "", "id": "2", "error": "bad", "type": "invalid_tool_call"}
    )
    _assert_identical(second, validated_text_chunk("b", METADATA))
    _assert_identical(chunks.make("c"), validated_text_chunk("c", METADATA))


def test_assignments_to_one_chunk_never_reach_the_next() -> None:
    chunks = TextChunks(METADATA)
    first = chunks.make("a")
    first.message.id = "lc_run-1"  # marks "id" as set
    first.message.provider_note = "x"  # type: ignore[attr-defined]  # extra="allow": kept as an extra
    second = chunks.make("b")
    assert "id" not in second.message.model_fields_set
    assert second.message.__pydantic_extra__ == {}
    _assert_identical(second, validated_text_chunk("b", METADATA))


def test_the_chat_model_streams_stamped_chunks(
    model: ChatPerplexityLabs, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps: list[str] = []
    original = Blueprint.stamp

    def counting(self: Blueprint[Any], changes: dict[str, Any]) -> Any:
        made = original(self, changes)
        stamps.append(type(made).__name__)
        return made

    monkeypatch.setattr(Blueprint, "stamp", counting)
    emulator.script(answer="one two three four", chunk_size=5, citations=[])
    texts = [chunk.content for chunk in model.stream("Q") if chunk.content]
    assert "".join(map(str, texts)) == "one two three four"
    assert stamps.count("AIMessageChunk") == stamps.count("ChatGenerationChunk") == len(texts)


def test_langchain_core_updates_mark_the_same_fields_as_set() -> None:
    # BaseChatModel.astream assigns id and response_metadata on every chunk it is given.
    stamped, validated = TextChunks(METADATA).make("x"), validated_text_chunk("x", METADATA)
    for chunk in (stamped, validated):
        chunk.message.id = "lc_run-1"
        chunk.message.response_metadata = {"model_provider": "perplexity", "extra": 1}
    _assert_identical(stamped, validated)


def test_stamped_chunks_merge_like_validated_ones() -> None:
    texts = ["Hel", "lo ", "", "wörld"]
    chunks = TextChunks(METADATA)
    stamped = [chunks.make(text) for text in texts]
    validated = [validated_text_chunk(text, METADATA) for text in texts]
    merged_stamped = stamped[0] + stamped[1:]
    merged_validated = validated[0] + validated[1:]
    assert merged_stamped.text == "Hello wörld"
    _assert_identical(merged_stamped, merged_validated)


class _NamedAfterContent(AIMessageChunk):
    """A message class whose validation derives a field from the text, as a future version might."""

    @model_validator(mode="after")
    def _name_from_content(self) -> Self:
        self.name = str(self.content)[:3] or None
        return self


def test_falls_back_to_validation_when_stamping_would_differ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_text_chunks, "AIMessageChunk", _NamedAfterContent)
    chunks = TextChunks(METADATA)
    assert not chunks.stamping
    made = chunks.make("hello")
    assert made.message.name == "hel"
    _assert_identical(made, validated_text_chunk("hello", METADATA))


class _Nested(BaseModel):
    plain: list[str] = []
    nested: dict[str, list[str]] = {}
    inner: _Inner | None = None


class _Inner(BaseModel):
    value: int = 0


_Nested.model_rebuild()


@pytest.mark.parametrize(
    ("template", "replaced", "shares_nothing"),
    [
        (_Nested(plain=["a"]), (), True),
        (_Nested(nested={"k": ["v"]}), (), False),  # the inner list would be shared
        (_Nested(inner=_Inner()), (), False),  # so would the inner model
        (_Nested(inner=_Inner()), ("inner",), True),  # unless every stamp replaces it
    ],
)
def test_blueprint_knows_when_its_copies_would_share_state(
    template: _Nested, replaced: tuple[str, ...], shares_nothing: bool
) -> None:
    assert Blueprint(template, replaced).copies_share_nothing is shares_nothing


def test_blueprint_stamps_copies_that_do_not_share_state() -> None:
    blueprint = Blueprint(_Nested(plain=["a"]))
    first: Any = blueprint.stamp({})
    first.plain.append("b")
    second = blueprint.stamp({"nested": {"k": []}})
    assert second.plain == ["a"]
    assert second.nested == {"k": []}
    assert second.model_fields_set == {"plain"}
