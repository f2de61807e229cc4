"""``POST /v1/responses`` through the unmodified openai SDK and ``ChatOpenAI(use_responses_api=True)``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from test_gateway import PARIS, PARIS_SOURCES, QUESTION, GatewayThread, gateway_for, sdk_for

from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.rules import tool_call_answer

pytestmark = pytest.mark.usefixtures("over_labs")

EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.annotation.added",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


@pytest.fixture
def gateway(emulator: LabsEmulator) -> Iterator[GatewayThread]:
    with gateway_for(emulator) as running:
        yield running


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with sdk_for(gateway.root) as sdk:
        yield sdk


def spans(text: str, annotations: list[Any]) -> list[tuple[str, str]]:
    return [(text[a.start_index : a.end_index], a.url) for a in annotations]


def test_create_has_text_annotations_with_spans_and_usage(client: openai.OpenAI) -> None:
    response = client.responses.create(model="sonar", input=QUESTION)
    assert response.object == "response"
    assert response.status == "completed"
    assert response.model == "sonar"
    assert response.output_text == PARIS
    [item] = response.output
    assert item.type == "message"
    assert item.role == "assistant"
    [part] = item.content
    assert part.type == "output_text"
    assert all(a.type == "url_citation" for a in part.annotations)
    assert spans(part.text, part.annotations) == [("[1]", PARIS_SOURCES[0]), ("[2]", PARIS_SOURCES[1])]
    assert response.usage is not None
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens > 0
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens


def test_titles_come_with_rich_sources(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(
        answer="Paris [1].",
        citations=[{"url": "https://a.example/paris", "title": "Paris - A"}, "https://b.example/"],
    )
    [part] = client.responses.create(model="sonar", input=QUESTION).output[0].content  # type: ignore[union-attr]
    assert [(a.url, a.title, a.start_index, a.end_index) for a in part.annotations] == [  # type: ignore[union-attr]
        ("https://a.example/paris", "Paris - A", 6, 9)
    ]


def test_stream_has_the_responses_event_sequence(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=7)
    events = list(client.responses.create(model="sonar", input=QUESTION, stream=True))
    kinds = [event.type for event in events]
    collapsed = [kind for i, kind in enumerate(kinds) if i == 0 or kinds[i - 1] != kind]
    assert collapsed == EVENTS
    assert kinds.count("response.output_text.delta") > 1
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == PARIS
    done = events[-1]
    assert done.type == "response.completed"
    assert done.response.output_text == PARIS
    [part] = done.response.output[0].content  # type: ignore[union-attr]
    assert spans(PARIS, part.annotations) == [("[1]", PARIS_SOURCES[0]), ("[2]", PARIS_SOURCES[1])]  # type: ignore[union-attr]
    assert done.response.usage is not None
    assert done.response.usage.output_tokens > 0


def test_instructions_and_multi_turn_input_reach_the_model(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    client.responses.create(
        model="sonar",
        instructions="Be brief.",
        input=[
            {"role": "developer", "content": "Cite."},
            {"role": "user", "content": [{"type": "input_text", "text": "first"}]},
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "earlier answer", "annotations": []}],
            },
            {"role": "user", "content": QUESTION},
        ],
    )
    messages = emulator.requests[-1]["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief."}
    assert "Cite." in json.dumps(messages)
    assert messages[-3:] == [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": QUESTION},
    ]


def test_errors_in_openai_shape(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(
            model="sonar",
            input=[
                {"role": "user", "content": [{"type": "input_image", "image_url": "https://a.example/x"}]}
            ],
        )
    assert bad.value.status_code == 400
    assert bad.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert bad.value.body["param"] == "input.0.content.0.type"  # type: ignore[index]
    assert bad.value.body["message"] == "input.0.content.0: only text parts are supported here"  # type: ignore[index]
    emulator.script(fail="model overloaded, try later")
    with pytest.raises(openai.InternalServerError) as failed:
        client.responses.create(model="sonar", input=QUESTION)
    assert failed.value.status_code == 502
    assert "model overloaded, try later" in failed.value.message


def test_failure_mid_stream_raises(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=5, fail_after=3, fail="socket went away")
    with pytest.raises(openai.APIError) as failed:
        list(client.responses.create(model="sonar", input=QUESTION, stream=True))
    assert "socket went away" in str(failed.value)


@pytest.mark.parametrize("streamed", [False, True])
def test_prompted_tools_as_function_calls(
    client: openai.OpenAI, emulator: LabsEmulator, *, streamed: bool
) -> None:
    emulator.script(answer=tool_call_answer(("get_weather", {"city": "Rome"})), citations=[], chunk_size=8)
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    if streamed:
        events = list(
            client.responses.create(model="sonar", input="Weather in Rome?", tools=tools, stream=True)
        )
        response = events[-1].response  # type: ignore[union-attr]
    else:
        response = client.responses.create(model="sonar", input="Weather in Rome?", tools=tools)
    [call] = response.output
    assert call.type == "function_call"
    assert (call.name, json.loads(call.arguments)) == ("get_weather", {"city": "Rome"})
    emulator.script(answer="Sunny in Rome.", citations=[])
    follow = client.responses.create(
        model="sonar",
        tools=tools,
        input=[
            {"role": "user", "content": "Weather in Rome?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
        ],
    )
    assert follow.output_text == "Sunny in Rome."
    assert "sunny" in json.dumps(emulator.requests[-1]["messages"])


def test_chat_openai_with_the_responses_api(gateway: GatewayThread) -> None:
    from langchain_core.messages import AIMessageChunk
    from langchain_openai import ChatOpenAI

    with openai.DefaultHttpxClient() as http_client:
        llm = ChatOpenAI(
            model="sonar",
            base_url=gateway.root + "/v1",
            api_key="unused",  # type: ignore[arg-type]
            max_retries=0,
            http_client=http_client,
            use_responses_api=True,
        )
        message = llm.invoke(QUESTION)
        assert message.text == PARIS
        [block] = [b for b in message.content if isinstance(b, dict) and b.get("type") == "text"]
        assert spans(PARIS, [_Span(a) for a in block["annotations"]]) == [
            ("[1]", PARIS_SOURCES[0]),
            ("[2]", PARIS_SOURCES[1]),
        ]
        assert message.usage_metadata is not None
        assert message.usage_metadata["output_tokens"] > 0
        merged: Any = None
        for chunk in llm.stream(QUESTION):
            merged = chunk if merged is None else merged + chunk
        assert isinstance(merged, AIMessageChunk)
        assert merged.text == PARIS


class _Span:
    def __init__(self, annotation: dict[str, Any]) -> None:
        self.start_index = annotation["start_index"]
        self.end_index = annotation["end_index"]
        self.url = annotation["url"]
