"""The pure protocol layer: payloads, frame parsing, deltas from cumulative frames and the think split."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from langchain_pplx_labs.errors import (
    PerplexityLabsInputError,
    PerplexityLabsProtocolError,
    PerplexityLabsServerError,
)
from langchain_pplx_labs.events import Finished, ReasoningDelta, Source, StreamEvent, TextDelta
from langchain_pplx_labs.labs.frames import ProgressFrame, StreamDecoder, parse_frame
from langchain_pplx_labs.protocol import LabsMessage, build_payload, is_progress_event, progress_event


def frame(output: str, *, final: bool = False, citations: Sequence[object] = ()) -> ProgressFrame:
    return parse_frame({"output": output, "final": final, "citations": list(citations), "status": "pending"})


def decode(model: str, outputs: Sequence[str], *, keep_reasoning: bool = True) -> list[StreamEvent]:
    """Feed cumulative outputs; the last one is the final frame."""
    decoder = StreamDecoder(model, keep_reasoning=keep_reasoning)
    events: list[StreamEvent] = []
    for index, output in enumerate(outputs):
        events.extend(decoder.feed(frame(output, final=index == len(outputs) - 1)))
    return events


def text_of(events: Sequence[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def reasoning_of(events: Sequence[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, ReasoningDelta))


def prefixes(text: str, size: int) -> list[str]:
    return [text[:end] for end in range(size, len(text), size)] + [text]


# -- payloads ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"},
            {"role": "user", "content": "And now?"},
        ],
    ],
    ids=["user", "system+user", "user+assistant+user"],
)
def test_payload_carries_model_version_source_and_messages_as_given(messages: list[LabsMessage]) -> None:
    payload = build_payload("sonar-pro", messages)
    assert payload == {"version": "2.18", "source": "default", "model": "sonar-pro", "messages": messages}
    assert payload["messages"] is not messages  # the caller's list is never shared


def test_payload_merges_back_to_back_assistant_turns() -> None:
    payload = build_payload(
        "sonar",
        [
            {"role": "user", "content": "Q"},
            {"role": "assistant", "content": "part one"},
            {"role": "assistant", "content": "part two"},
        ],
    )
    assert payload["messages"] == [
        {"role": "user", "content": "Q"},
        {"role": "assistant", "content": "part one\n\npart two"},
    ]


def test_payload_rejects_empty_conversation_bad_model_and_oversize_input() -> None:
    with pytest.raises(PerplexityLabsInputError, match="empty conversation"):
        build_payload("sonar", [])
    with pytest.raises(PerplexityLabsInputError, match="Invalid Labs model name"):
        build_payload("sonar pro; drop", [{"role": "user", "content": "x"}])
    with pytest.raises(PerplexityLabsInputError, match="11 characters, over the max_input_chars limit of 10"):
        build_payload("sonar", [{"role": "user", "content": "x" * 11}], max_input_chars=10)


def test_progress_event_names() -> None:
    assert progress_event("sonar-pro") == "sonar-pro_query_progress"
    assert is_progress_event("r1-1776_query_progress")
    assert not is_progress_event("query_status")


# -- frame parsing ----------------------------------------------------------------------


def test_parse_frame_reads_observed_shape_and_keeps_unknown_fields() -> None:
    parsed = parse_frame(
        {
            "output": "The capital of France is Par",
            "citations": [],
            "chunks": [],
            "final": False,
            "elapsed_time": 0.41,
            "tokens_streamed": 7,
            "status": "pending",
        }
    )
    assert parsed.output == "The capital of France is Par"
    assert parsed.final is False
    assert parsed.tokens_streamed == 7
    assert parsed.elapsed_time == pytest.approx(0.41)
    assert parsed.model_extra == {"chunks": []}


def test_parse_frame_accepts_url_strings_and_source_objects() -> None:
    parsed = parse_frame(
        {
            "output": "x",
            "final": True,
            "citations": ["https://a.example", {"url": "https://b.example", "title": "B"}],
        }
    )
    assert parsed.citations[0] == "https://a.example"
    assert parsed.citations[1] == Source(url="https://b.example", title="B")


def test_parse_failed_frame_keeps_server_text() -> None:
    parsed = parse_frame({"status": "failed", "text": "Error in processing query"})
    assert parsed.failed
    assert parsed.text == "Error in processing query"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ("<html>Just a moment...</html>", "<html>Just a moment"),
        ([1, 2, 3], "[1, 2, 3]"),
        ({"output": 42, "citations": "nope"}, "'output': 42"),
        ({"output": "ok", "final": "maybe"}, "'final': 'maybe'"),
    ],
    ids=["string", "list", "wrong-types", "bad-final"],
)
def test_bad_frames_raise_protocol_error_with_excerpt(data: object, needle: str) -> None:
    with pytest.raises(PerplexityLabsProtocolError) as caught:
        parse_frame(data)
    assert needle in caught.value.excerpt
    assert needle in str(caught.value)


def test_protocol_error_excerpt_is_short_for_huge_frames() -> None:
    with pytest.raises(PerplexityLabsProtocolError) as caught:
        parse_frame({"output": ["x" * 10_000]})
    assert 0 < len(caught.value.excerpt) <= 121
    assert caught.value.excerpt.startswith("{'output': ['xxx")


# -- deltas from cumulative output ------------------------------------------------------


def test_deltas_are_the_new_suffix_of_each_cumulative_frame() -> None:
    decoder = StreamDecoder("sonar-pro")
    first = decoder.feed(frame("The capital"))
    second = decoder.feed(frame("The capital of France"))
    assert first == [TextDelta("The capital")]
    assert second == [TextDelta(" of France")]


def test_repeated_frame_emits_nothing_new() -> None:
    decoder = StreamDecoder("sonar")
    decoder.feed(frame("Paris is"))
    assert decoder.feed(frame("Paris is")) == []
    assert decoder.feed(frame("Paris is the capital")) == [TextDelta(" the capital")]


def test_shortened_frame_never_duplicates_or_removes_text() -> None:
    events = decode("sonar", ["Paris is the", "Paris is", "Paris is the capital", "Paris is the capital."])
    assert text_of(events) == "Paris is the capital."


def test_frames_summed_equal_final_output_for_any_chunking() -> None:
    answer = "Socket.IO is built on Engine.IO [1]. It falls back to polling [2]."
    for size in (1, 3, 7, len(answer)):
        assert text_of(decode("sonar-pro", prefixes(answer, size))) == answer


def test_final_frame_gives_sources_and_counters() -> None:
    decoder = StreamDecoder("sonar-pro")
    decoder.feed(frame("Paris [1]"))
    final = parse_frame(
        {
            "output": "Paris [1]",
            "final": True,
            "citations": ["https://en.wikipedia.org/wiki/Paris"],
            "tokens_streamed": 3,
            "elapsed_time": 1.5,
        }
    )
    events = decoder.feed(final)
    assert events == [
        Finished(
            sources=(Source(url="https://en.wikipedia.org/wiki/Paris"),),
            rich_sources=False,
            tokens_streamed=3,
            elapsed_time=1.5,
        )
    ]
    assert decoder.finished
    assert decoder.feed(frame("Paris [1] more", final=True)) == []  # nothing after the end


def test_source_objects_mark_rich_sources() -> None:
    decoder = StreamDecoder("sonar")
    events = decoder.feed(frame("x", final=True, citations=[{"url": "https://a.example", "title": "A"}]))
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.rich_sources
    assert finished.sources == (Source(url="https://a.example", title="A"),)


def test_failed_frame_raises_server_error_with_verbatim_text_and_partial_answer() -> None:
    decoder = StreamDecoder("sonar-reasoning-pro")
    decoder.feed(frame("<think>hmm</think>Partial ans"))
    with pytest.raises(PerplexityLabsServerError) as caught:
        decoder.feed(parse_frame({"status": "failed", "text": "Error in processing query"}))
    assert caught.value.server_message == "Error in processing query"
    assert "Error in processing query" in str(caught.value)
    assert caught.value.partial_content == "Partial ans"


# -- <think> reasoning split ------------------------------------------------------------


@pytest.mark.parametrize("model", ["sonar-reasoning", "sonar-reasoning-pro"])
def test_think_section_goes_to_reasoning_for_models_with_opening_tag(model: str) -> None:
    output = "<think>Check the sources first.</think>\n\nParis [1]."
    for size in (1, 2, 5, len(output)):
        events = decode(model, prefixes(output, size))
        assert reasoning_of(events) == "Check the sources first."
        assert text_of(events) == "Paris [1]."


def test_r1_1776_output_without_opening_tag_is_split() -> None:
    output = "The user wants the capital.</think>\n\nParis [1]."
    for size in (1, 4, 9, len(output)):
        events = decode("r1-1776", prefixes(output, size))
        assert reasoning_of(events) == "The user wants the capital."
        assert text_of(events) == "Paris [1]."


def test_tags_split_across_frames_never_leak_into_text() -> None:
    frames = [
        "<th",
        "<think>Reason",
        "<think>Reasoning</th",
        "<think>Reasoning</think>",
        "<think>Reasoning</think>Answer",
    ]
    events = decode("sonar-reasoning", frames)
    assert reasoning_of(events) == "Reasoning"
    assert text_of(events) == "Answer"
    assert all("<" not in e.text for e in events if isinstance(e, TextDelta | ReasoningDelta))


def test_reasoning_is_dropped_when_not_kept_but_answer_is_intact() -> None:
    events = decode(
        "sonar-reasoning-pro", ["<think>secret", "<think>secret</think>Answer"], keep_reasoning=False
    )
    assert reasoning_of(events) == ""
    assert text_of(events) == "Answer"


def test_non_reasoning_model_keeps_text_that_merely_mentions_think() -> None:
    events = decode("sonar-pro", ["Tags like <b> are", "Tags like <b> are HTML."])
    assert text_of(events) == "Tags like <b> are HTML."
    assert reasoning_of(events) == ""


def test_r1_1776_reasoning_streams_before_its_think_section_closes() -> None:
    decoder = StreamDecoder("r1-1776")
    assert decoder.feed(frame("")) == []
    assert reasoning_of(decoder.feed(frame("The user"))) == "The user"
    # A possible start of </think> is held back until the next frame tells.
    assert reasoning_of(decoder.feed(frame("The user wants</thi"))) == " wants"
    events = decoder.feed(frame("The user wants</think>\n\nParis", final=True))
    assert reasoning_of(events) == ""
    assert text_of(events) == "Paris"


def test_r1_1776_stray_opening_tag_is_not_reasoning_text() -> None:
    for size in (1, 3, 50):
        events = decode("r1-1776", prefixes("<think>Hmm.</think>Paris", size))
        assert reasoning_of(events) == "Hmm."
        assert text_of(events) == "Paris"


@pytest.mark.parametrize(("model", "lead"), [("r1-1776", ""), ("sonar-reasoning", "<think>")])
def test_rewritten_output_never_splits_the_think_close_tag(model: str, lead: str) -> None:
    # The rewrite starts before what was emitted; the cut at the emitted length falls inside </think>.
    events = decode(model, [f"{lead}Thinking about it", f"{lead}Thinking, short.</think>Answer"])
    assert reasoning_of(events) == "Thinking about it"
    assert text_of(events) == "Answer"


@pytest.mark.parametrize(("model", "lead"), [("r1-1776", ""), ("sonar-reasoning", "<think>")])
def test_rewrite_drops_a_held_back_partial_tag_the_server_no_longer_sends(model: str, lead: str) -> None:
    events = decode(model, [f"{lead}Paris", f"{lead}Paris </thin", f"{lead}Paris."])
    assert reasoning_of(events).strip() == "Paris"
    assert all("<" not in e.text for e in events if isinstance(e, TextDelta | ReasoningDelta))


def test_r1_1776_without_any_think_close_gives_its_output_as_the_answer_too() -> None:
    # Streamed as reasoning while it came (r1-1776 starts inside a think section); when the
    # section never closes, the text was the answer after all and is repeated as such.
    events = decode("r1-1776", ["Plain", "Plain answer."])
    assert reasoning_of(events) == "Plain answer."
    assert text_of(events) == "Plain answer."
    assert text_of(decode("r1-1776", ["Plain", "Plain answer."], keep_reasoning=False)) == "Plain answer."
