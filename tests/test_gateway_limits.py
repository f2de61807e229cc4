"""Output limits, thinking and reasoning items, and ``previous_response_id`` on the gateway's three doors,
through the unmodified openai and anthropic SDKs, over the web (the live path)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from test_gateway import PARIS, PARIS_SOURCES, QUESTION, GatewayThread, gateway_for, sdk_for

from langchain_pplx_labs.emulator import LabsEmulator

THINKING = "Think of France."


@pytest.fixture
def gateway(over_the_web: LabsEmulator) -> Iterator[GatewayThread]:
    # The gateway's model asks over the web; afterwards, nothing went over Socket.IO.
    with gateway_for(over_the_web) as running:
        yield running


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with sdk_for(gateway.root) as sdk:
        yield sdk


@pytest.fixture
def claude(gateway: GatewayThread) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0) as sdk:
        yield sdk


QUESTION_MESSAGES: Any = [{"role": "user", "content": QUESTION}]


# -- chat completions -------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_chat_completion_stops_at_the_limit_with_finish_reason_length(
    client: openai.OpenAI, emulator: LabsEmulator, field: str
) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=7)
    completion = client.chat.completions.create(model="auto", messages=QUESTION_MESSAGES, **{field: 5})
    assert completion.choices[0].message.content == PARIS[:20]  # 5 tokens of 4 characters
    assert completion.choices[0].finish_reason == "length"
    assert completion.model_extra["citations"] == []  # cut before the end, where the sources come


def test_streamed_chat_completion_stops_at_the_limit(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=7)
    chunks = list(
        client.chat.completions.create(model="auto", messages=QUESTION_MESSAGES, max_tokens=5, stream=True)
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PARIS[:20]
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]


def test_a_limit_the_answer_fits_changes_nothing(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES)
    completion = client.chat.completions.create(
        model="auto", messages=QUESTION_MESSAGES, max_tokens=len(PARIS) // 4 + 1
    )
    assert completion.choices[0].message.content == PARIS
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model_extra["citations"] == PARIS_SOURCES


def test_a_limit_below_one_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="max_tokens") as bad:
        client.chat.completions.create(model="auto", messages=QUESTION_MESSAGES, max_tokens=0)
    assert bad.value.param == "max_tokens"


def test_chat_openai_sees_the_cut(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    emulator.script(answer=PARIS, citations=PARIS_SOURCES)
    chat = langchain_openai.ChatOpenAI(
        model="auto", base_url=gateway.root + "/v1", api_key="unused", max_tokens=3
    )
    reply = chat.invoke(QUESTION)
    assert reply.content == PARIS[:12]
    assert reply.response_metadata["finish_reason"] == "length"


# -- Anthropic Messages -------------------------------------------------------------------------------


def test_messages_stop_at_max_tokens(claude: anthropic.Anthropic, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=7)
    message = claude.messages.create(model="auto", max_tokens=5, messages=QUESTION_MESSAGES)
    assert message.stop_reason == "max_tokens"
    [block] = message.content
    assert block.type == "text"
    assert block.text == PARIS[:20]
    assert message.usage.output_tokens == 5
    with claude.messages.stream(model="auto", max_tokens=5, messages=QUESTION_MESSAGES) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "max_tokens"
    assert streamed.content[0].text == PARIS[:20]  # type: ignore[union-attr]


def test_thinking_blocks_come_when_the_request_enables_thinking(
    claude: anthropic.Anthropic, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, reasoning=THINKING, citations=PARIS_SOURCES, chunk_size=5)
    thinking: Any = {"type": "enabled", "budget_tokens": 1024}
    message = claude.messages.create(
        model="pplx_reasoning", max_tokens=2048, thinking=thinking, messages=QUESTION_MESSAGES
    )
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == THINKING  # type: ignore[union-attr]
    assert message.content[0].signature  # type: ignore[union-attr]
    assert message.content[1].text == PARIS  # type: ignore[union-attr]
    with claude.messages.stream(
        model="pplx_reasoning", max_tokens=2048, thinking=thinking, messages=QUESTION_MESSAGES
    ) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_message()
    assert "thinking" in kinds  # the SDK's own event for a thinking_delta
    assert "signature" in kinds
    assert [block.type for block in streamed.content] == ["thinking", "text"]
    assert streamed.content[0].thinking == THINKING  # type: ignore[union-attr]
    # Without thinking enabled, the thinking is left out.
    plain = claude.messages.create(model="pplx_reasoning", max_tokens=2048, messages=QUESTION_MESSAGES)
    assert [block.type for block in plain.content] == ["text"]


def test_chat_anthropic_reads_the_thinking(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    emulator.script(answer=PARIS, reasoning=THINKING, citations=PARIS_SOURCES)
    chat = langchain_anthropic.ChatAnthropic(
        model="pplx_reasoning",
        base_url=gateway.root,
        api_key="unused",
        max_tokens=2048,
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    reply = chat.invoke(QUESTION)
    assert [block["type"] for block in reply.content] == ["thinking", "text"]  # type: ignore[index]
    assert reply.content[0]["thinking"] == THINKING  # type: ignore[index]
    assert reply.text == PARIS


# -- Responses ----------------------------------------------------------------------------------------


def test_responses_stop_at_max_output_tokens_as_incomplete(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=7)
    response = client.responses.create(model="auto", input=QUESTION, max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == PARIS[:20]
    assert response.max_output_tokens == 5
    events = list(client.responses.create(model="auto", input=QUESTION, max_output_tokens=5, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output_text == PARIS[:20]  # type: ignore[union-attr]


def test_reasoning_item_with_its_summary_when_asked(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, reasoning=THINKING, citations=PARIS_SOURCES, chunk_size=5)
    response = client.responses.create(model="pplx_reasoning", input=QUESTION, reasoning={"summary": "auto"})
    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert [(part.type, part.text) for part in reasoning.summary] == [("summary_text", THINKING)]  # type: ignore[union-attr]
    assert response.output_text == PARIS
    events = list(
        client.responses.create(
            model="pplx_reasoning", input=QUESTION, reasoning={"summary": "auto"}, stream=True
        )
    )
    kinds = [event.type for event in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
    ]
    done = kinds.index("response.reasoning_summary_text.done")
    assert kinds[done : done + 3] == [
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
    ]
    assert kinds.index("response.output_text.delta") > done  # the answer comes after its reasoning
    deltas = [e.delta for e in events if e.type == "response.reasoning_summary_text.delta"]  # type: ignore[union-attr]
    assert "".join(deltas) == THINKING
    assert [e.sequence_number for e in events] == list(range(len(events)))
    # Not asked for: no reasoning item.
    plain = client.responses.create(model="pplx_reasoning", input=QUESTION)
    assert [item.type for item in plain.output] == ["message"]


def test_previous_response_id_continues_the_conversation_in_its_thread(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer="Paris.", citations=PARIS_SOURCES)
    first = client.responses.create(model="auto", instructions="Be brief.", input=QUESTION)
    emulator.script(answer="About 2 million.", citations=[])
    second = client.responses.create(
        model="auto", instructions="Be brief.", input="And its population?", previous_response_id=first.id
    )
    assert second.output_text == "About 2 million."
    assert second.previous_response_id == first.id
    body = emulator.web.bodies[-1]
    assert body["query_str"] == "And its population?"  # the rest is in the web thread
    # The emulator answers a follow-up only with an answer's id and its thread's token (else a 400).
    assert body["params"]["query_source"] == "followup"
    # A third turn continues the second, in the same thread.
    emulator.script(answer="Île-de-France.", citations=[])
    third = client.responses.create(
        model="auto", instructions="Be brief.", input="Its region?", previous_response_id=second.id
    )
    assert third.output_text == "Île-de-France."
    latest = emulator.web.bodies[-1]
    assert latest["query_str"] == "Its region?"
    assert latest["params"]["query_source"] == "followup"
    assert latest["params"]["read_write_token"] == body["params"]["read_write_token"]
    assert latest["params"]["last_backend_uuid"] != body["params"]["last_backend_uuid"]


def test_previous_response_id_over_labs_sends_the_whole_conversation(over_labs: LabsEmulator) -> None:
    emulator = over_labs
    with gateway_for(emulator) as running, sdk_for(running.root) as sdk:
        emulator.script(answer="Paris.", citations=[])
        first = sdk.responses.create(model="sonar", input=QUESTION)
        emulator.script(answer="About 2 million.", citations=[])
        sdk.responses.create(model="sonar", input="And its population?", previous_response_id=first.id)
    messages = emulator.requests[-1]["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [
        ("user", QUESTION),
        ("assistant", "Paris."),
        ("user", "And its population?"),
    ]


def test_an_unknown_or_unstored_previous_response_is_400(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    with pytest.raises(openai.BadRequestError, match="not found") as unknown:
        client.responses.create(model="auto", input="Hi?", previous_response_id="resp_nothing")
    assert unknown.value.code == "previous_response_not_found"
    assert unknown.value.param == "previous_response_id"
    unstored = client.responses.create(model="auto", input=QUESTION, store=False)
    with pytest.raises(openai.BadRequestError, match="not found"):
        client.responses.create(model="auto", input="Hi?", previous_response_id=unstored.id)


def test_chat_openai_with_previous_response_ids(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    chat = langchain_openai.ChatOpenAI(
        model="auto",
        base_url=gateway.root + "/v1",
        api_key="unused",
        use_responses_api=True,
        use_previous_response_id=True,
    )
    emulator.script(answer="Paris.", citations=[])
    first = chat.invoke(QUESTION)
    emulator.script(answer="About 2 million.", citations=[])
    second = chat.invoke([("human", QUESTION), first, ("human", "And its population?")])
    assert second.text == "About 2 million."
    assert emulator.web.bodies[-1]["query_str"] == "And its population?"
    assert emulator.web.bodies[-1]["params"]["query_source"] == "followup"


def test_stored_responses_are_bounded_by_count_and_by_characters() -> None:
    from langchain_pplx_labs.gateway.stored_responses import StoredResponses

    stored = StoredResponses(max_responses=2, max_chars=100)
    for name in ("a", "b", "c"):
        stored.put(name, [{"role": "user", "content": name * 10}])
    assert len(stored) == 2
    assert stored.get("a") is None  # the oldest went
    assert stored.get("b") == [{"role": "user", "content": "b" * 10}]
    stored.put("d", [{"role": "user", "content": "d" * 95}])  # with b and c it would pass 100 characters
    assert stored.get("b") is None
    assert stored.get("c") is None
    assert stored.get("d") is not None
    stored.put("e", [{"role": "user", "content": "e" * 101}])  # larger than the whole store: not kept
    assert stored.get("e") is None
    assert stored.get("d") is not None


def test_previous_response_id_carries_a_function_call_to_its_output(over_labs: LabsEmulator) -> None:
    from langchain_pplx_labs.emulator.rules import tool_call_answer

    emulator = over_labs
    tools: Any = [
        {
            "type": "function",
            "name": "get_weather",
            "description": "Weather for a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        }
    ]
    with gateway_for(emulator) as running, sdk_for(running.root) as sdk:
        emulator.script(answer=tool_call_answer(("get_weather", {"city": "Rome"})), citations=[])
        first = sdk.responses.create(model="sonar", input="Weather in Rome?", tools=tools)
        [call] = first.output
        assert call.type == "function_call"
        emulator.script(answer="Sunny in Rome.", citations=[])
        output: Any = [{"type": "function_call_output", "call_id": call.call_id, "output": "sunny"}]
        later = sdk.responses.create(model="sonar", input=output, tools=tools, previous_response_id=first.id)
    assert later.output_text == "Sunny in Rome."
    messages = emulator.requests[-1]["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "user",
    ]  # tools' instruction first
    assert messages[1]["content"] == "Weather in Rome?"  # the stored turn
    assert call.call_id in messages[2]["content"]  # the stored call, as the model shows it
    assert "get_weather" in messages[2]["content"]
    assert messages[3]["content"] == f"Result of tool call {call.call_id} (get_weather):\nsunny"
