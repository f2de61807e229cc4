"""Hypothesis fuzzing of the pure layers: frame parser, packet decoder, stream decoder, message mapper."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage

from langchain_pplx_labs._json import OrjsonPacket
from langchain_pplx_labs.errors import PerplexityLabsInputError, PerplexityLabsProtocolError
from langchain_pplx_labs.events import Finished, ReasoningDelta, TextDelta
from langchain_pplx_labs.labs import packets
from langchain_pplx_labs.labs.frames import StreamDecoder, parse_frame
from langchain_pplx_labs.messages import to_turns
from langchain_pplx_labs.protocol import THINK_CLOSE, THINK_OPEN, build_payload

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
frame_keys = st.sampled_from(
    ["output", "citations", "final", "status", "text", "elapsed_time", "tokens_streamed", "chunks", "url"]
)
frame_like = st.dictionaries(frame_keys, json_values, max_size=7)

# Text made of the pieces that make the decoder work hard: tags, tag fragments, spaces, markers.
tricky_text = st.lists(
    st.sampled_from([THINK_OPEN, THINK_CLOSE, "<", "</", "<think", "/think>", ">", " ", "\n", "[1]", "é"])
    | st.text(max_size=6),
    max_size=12,
).map("".join)


@FUZZ
@given(json_values | frame_like)
def test_parse_frame_raises_only_protocol_errors(data: Any) -> None:
    try:
        frame = parse_frame(data)
    except PerplexityLabsProtocolError:
        return
    assert isinstance(frame.output, str)
    assert isinstance(frame.final, bool)
    assert all(isinstance(c, str) or c.url for c in frame.citations)


@FUZZ
@given(st.text(max_size=60) | st.binary(max_size=60).map(lambda b: b.decode("latin-1")))
def test_packet_decoder_raises_only_what_the_client_turns_into_protocol_errors(raw: str) -> None:
    # polling._LabsSocketIO catches exactly these and reports a protocol error;
    # anything else would escape python-socketio's reader task and hang the query.
    try:
        decoded = OrjsonPacket(encoded_packet=raw)
    except packets.DECODE_ERRORS:
        return  # what the client reports as a protocol error
    # Anything not raised is decoded: a packet of a type Socket.IO has, its namespace a string.
    assert isinstance(decoded.packet_type, int)
    assert decoded.namespace is None or isinstance(decoded.namespace, str)


engineio_messages = (
    st.sampled_from(
        ["0", "1", "2", "3", "4", "5", "6", "40", "41", "42", "43", "44", "45", "42[", "4/x,"]
    ).flatmap(lambda prefix: st.text(max_size=40).map(lambda rest: prefix + rest))
    | st.builds(lambda value: "42" + json.dumps(value), json_values)  # json: also integers orjson refuses
    | st.text(max_size=40)
)


@FUZZ
@given(engineio_messages)
def test_direct_websocket_decoder_raises_only_decode_errors(raw: str) -> None:
    # websocket.WebSocketWire reports exactly these as a protocol error; anything else
    # would end its reader and turn a bad packet into a lost connection.
    try:
        kind, data = packets.decode(raw)
    except packets.DECODE_ERRORS:
        return
    if kind == "event":
        assert isinstance(data, list)
        assert isinstance(data[0], str)


def _chunked(output: str, cuts: list[int]) -> list[str]:
    points = sorted({min(c, len(output)) for c in cuts})
    return [output[:p] for p in points if p < len(output)]


def _decode(model: str, prefixes: list[str], output: str) -> tuple[str, str, int]:
    decoder = StreamDecoder(model)
    events = []
    for prefix in prefixes:
        events += decoder.feed(parse_frame({"output": prefix, "final": False}))
    events += decoder.feed(parse_frame({"output": output, "final": True}))
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert all(e.text for e in events if isinstance(e, TextDelta | ReasoningDelta)), "empty delta"
    assert decoder.answer_so_far == text
    return text, reasoning, sum(isinstance(e, Finished) for e in events)


@FUZZ
@given(
    reasoning=tricky_text,
    answer=tricky_text,
    lead=st.sampled_from(["", " ", "\n"]),
    cuts=st.lists(st.integers(min_value=0, max_value=80), max_size=15),
)
def test_decoder_splits_explicit_think_sections(
    reasoning: str, answer: str, lead: str, cuts: list[int]
) -> None:
    assume(THINK_CLOSE not in reasoning)
    output = f"{lead}{THINK_OPEN}{reasoning}{THINK_CLOSE}{answer}"
    for model in ("sonar-reasoning", "sonar-pro"):
        text, thought, finished = _decode(model, _chunked(output, cuts), output)
        assert text == answer.lstrip()
        assert thought == reasoning.lstrip()  # the decoder trims leading space of each section
        assert finished == 1


@FUZZ
@given(reasoning=tricky_text, answer=tricky_text, cuts=st.lists(st.integers(0, 80), max_size=15))
def test_decoder_handles_implicit_think_of_r1(reasoning: str, answer: str, cuts: list[int]) -> None:
    assume(THINK_CLOSE not in reasoning)
    assume(not reasoning.lstrip().startswith(THINK_OPEN))  # a stray opening tag is dropped
    output = f"{reasoning}{THINK_CLOSE}{answer}"
    text, thought, finished = _decode("r1-1776", _chunked(output, cuts), output)
    assert text == answer.lstrip()
    assert thought == reasoning.lstrip()
    assert finished == 1


@FUZZ
@given(answer=tricky_text, cuts=st.lists(st.integers(0, 80), max_size=15))
def test_decoder_passes_plain_answers_through_unchanged(answer: str, cuts: list[int]) -> None:
    assume(not answer.lstrip().startswith(THINK_OPEN))
    text, thought, finished = _decode("sonar-pro", _chunked(answer, cuts), answer)
    assert text == answer.lstrip()
    assert thought == ""
    assert finished == 1


@FUZZ
@given(output=tricky_text, cuts=st.lists(st.integers(0, 80), max_size=15))
def test_decoder_never_duplicates_on_repeated_or_shrinking_frames(output: str, cuts: list[int]) -> None:
    assume(not output.lstrip().startswith(THINK_OPEN))
    prefixes = _chunked(output, cuts)
    jittered = [p for prefix in prefixes for p in (prefix, prefix[: len(prefix) // 2], prefix)]
    text, _, _ = _decode("sonar", jittered, output)
    assert text == output.lstrip()


text_parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "input_text"]), "text": st.text(max_size=10)}
)
odd_parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["image_url", "image", "audio", "file", "video"]), "data": st.text(max_size=5)}
)
contents = st.text(max_size=30) | st.lists(st.text(max_size=10) | text_parts | odd_parts, max_size=4)


@st.composite
def conversations(draw: st.DrawFn) -> list[BaseMessage]:
    kinds = draw(st.lists(st.sampled_from(["system", "human", "ai", "tool"]), max_size=6))
    built: list[BaseMessage] = []
    for kind in kinds:
        content: Any = draw(contents)
        if kind == "system":
            built.append(SystemMessage(content=content))
        elif kind == "human":
            built.append(HumanMessage(content=content))
        elif kind == "ai":
            built.append(AIMessage(content=content))
        else:
            built.append(ToolMessage(content=content, tool_call_id="call_1"))
    return built


def _has_non_text_part(messages: list[BaseMessage]) -> bool:
    return any(
        isinstance(part, dict) and part.get("type") not in ("text", "input_text")
        for message in messages
        if isinstance(message.content, list)
        for part in message.content
    )


@FUZZ
@given(conversations())
def test_message_mapper_gives_text_turns_or_a_typed_error(messages: list[BaseMessage]) -> None:
    refused = _has_non_text_part(messages) or not messages
    if refused:
        with pytest.raises(PerplexityLabsInputError):
            build_payload("sonar-pro", to_turns(messages))
        return
    turns = to_turns(messages)
    payload = build_payload("sonar-pro", turns, max_input_chars=10_000)
    roles = [turn["role"] for turn in payload["messages"]]
    assert set(roles) <= {"system", "user", "assistant"}
    assert all(isinstance(turn["content"], str) for turn in payload["messages"])
    assert not any(a == b == "assistant" for a, b in itertools.pairwise(roles))
    assert len(turns) == len(messages)
