"""``POST /v1/messages`` through the unmodified anthropic SDK and langchain-anthropic, against the emulator."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

anthropic = pytest.importorskip("anthropic")

from test_gateway import PARIS, PARIS_SOURCES, QUESTION, GatewayThread, gateway_for  # noqa: E402

from langchain_pplx_labs.emulator import LabsEmulator  # noqa: E402
from langchain_pplx_labs.emulator.rules import tool_call_answer  # noqa: E402

pytestmark = pytest.mark.usefixtures("over_labs")


def sdk_for(root: str, **options: Any) -> Any:
    """The anthropic SDK pointed at the gateway: any key, no retries unless ``options`` say."""
    return anthropic.Anthropic(base_url=root, **{"api_key": "unused", "max_retries": 0, **options})


@pytest.fixture
def gateway(emulator: LabsEmulator) -> Iterator[GatewayThread]:
    with gateway_for(emulator) as running:
        yield running


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[Any]:
    with sdk_for(gateway.root) as sdk:
        yield sdk


def ask(client: Any, content: Any = QUESTION, **kwargs: Any) -> Any:
    return client.messages.create(
        model="sonar", max_tokens=1024, messages=[{"role": "user", "content": content}], **kwargs
    )


def test_create_has_text_citations_usage_and_end_turn(client: Any) -> None:
    message = ask(client)
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == "sonar"
    [block] = message.content
    assert block.type == "text"
    assert block.text == PARIS
    assert [c.url for c in block.citations] == PARIS_SOURCES
    first, second = block.citations
    assert first.type == "web_search_result_location"
    assert first.cited_text == "The capital of France is Paris"
    assert second.cited_text.startswith("It has been the seat")
    assert first.encrypted_index
    assert second.encrypted_index != first.encrypted_index
    assert message.stop_reason == "end_turn"
    assert message.stop_sequence is None
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0


def test_titles_come_with_rich_sources(client: Any, emulator: LabsEmulator) -> None:
    emulator.script(
        answer="Paris [1].",
        citations=[{"url": "https://a.example/paris", "title": "Paris - A"}, "https://b.example/"],
    )
    [block] = ask(client).content
    assert [(c.url, c.title, c.cited_text) for c in block.citations] == [
        ("https://a.example/paris", "Paris - A", "Paris"),
        ("https://b.example/", None, ""),  # a source the text never marks: kept, citing nothing
    ]


def test_stream_has_the_messages_event_sequence_and_the_same_message(
    client: Any, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, chunk_size=7)
    with client.messages.stream(
        model="sonar", max_tokens=1024, messages=[{"role": "user", "content": QUESTION}]
    ) as stream:
        events = list(stream)
        message = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    texts = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert len(texts) > 1
    assert "".join(texts) == PARIS
    assert [c.url for c in message.content[0].citations] == PARIS_SOURCES
    assert message.content[0].text == PARIS
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_system_prompt_and_turns_reach_the_model(client: Any, emulator: LabsEmulator) -> None:
    client.messages.create(
        model="sonar",
        max_tokens=100,
        system=[{"type": "text", "text": "Cite."}, {"type": "text", "text": "Be brief."}],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "part"}],
            },
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert emulator.requests[-1]["messages"] == [
        {"role": "system", "content": "Cite.\nBe brief."},
        {"role": "user", "content": "first\npart"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": QUESTION},
    ]
    ask(client, system="Answer in French.")
    assert emulator.requests[-1]["messages"][0] == {"role": "system", "content": "Answer in French."}


def test_stop_sequence_is_reported(client: Any) -> None:
    message = ask(client, stop_sequences=["France", "Paris"])
    assert message.content[0].text == "The capital of "
    assert message.stop_reason == "stop_sequence"
    assert message.stop_sequence == "France"
    with client.messages.stream(
        model="sonar",
        max_tokens=100,
        messages=[{"role": "user", "content": QUESTION}],
        stop_sequences=["Paris"],
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[0].text == "The capital of France is "
    assert (streamed.stop_reason, streamed.stop_sequence) == ("stop_sequence", "Paris")


WEATHER = {
    "name": "get_weather",
    "description": "Current weather for a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.mark.parametrize("streamed", [False, True])
def test_prompted_tools_as_tool_use_blocks(client: Any, emulator: LabsEmulator, streamed: bool) -> None:
    emulator.script(answer=tool_call_answer(("get_weather", {"city": "Rome"})), citations=[], chunk_size=8)
    request: dict[str, Any] = {
        "model": "sonar",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Rome?"}],
        "tools": [WEATHER],
    }
    if streamed:
        with client.messages.stream(**request) as stream:
            message = stream.get_final_message()
    else:
        message = client.messages.create(**request)
    [call] = message.content
    assert (call.type, call.name, call.input) == ("tool_use", "get_weather", {"city": "Rome"})
    assert message.stop_reason == "tool_use"
    emulator.script(answer="Sunny in Rome.", citations=[])
    follow = client.messages.create(
        model="sonar",
        max_tokens=100,
        tools=[WEATHER],
        messages=[
            {"role": "user", "content": "Rome?"},
            {"role": "assistant", "content": [call.model_dump(include={"type", "id", "name", "input"})]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}],
            },
        ],
    )
    assert follow.content[0].text == "Sunny in Rome."
    assert follow.stop_reason == "end_turn"
    assert "sunny" in str(emulator.requests[-1]["messages"])


def test_errors_in_anthropic_shape(client: Any, gateway: GatewayThread, emulator: LabsEmulator) -> None:
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="sonar", max_tokens=10, messages=[{"role": "assistant", "content": "hi"}]
        )
    assert bad.value.status_code == 400
    assert bad.value.body["type"] == "error"
    assert bad.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError) as image:
        ask(client, [{"type": "image", "source": {"type": "url", "url": "https://a.example/x.png"}}])
    assert "image" in image.value.body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as system:
        client.messages.create(
            model="sonar",
            max_tokens=10,
            system=[{"type": "image", "source": {"type": "url", "url": "https://a.example/x.png"}}],
            messages=[{"role": "user", "content": "hi"}],
        )
    assert system.value.body["error"]["message"] == "system.0: only text blocks are supported here"
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.messages.count_tokens(model="sonar", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["error"]["type"] == "not_found_error"
    emulator.script(fail="model overloaded, try later")
    with pytest.raises(anthropic.InternalServerError) as failed:
        ask(client)
    assert failed.value.status_code == 502
    assert failed.value.body["error"]["type"] == "api_error"
    assert "model overloaded, try later" in failed.value.body["error"]["message"]


def test_failure_mid_stream_ends_with_an_error_event(client: Any, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=5, fail_after=3, fail="socket went away")
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        client.messages.stream(
            model="sonar", max_tokens=100, messages=[{"role": "user", "content": QUESTION}]
        ) as stream,
    ):
        list(stream)
    assert "socket went away" in str(failed.value)


def test_the_gateway_key_as_x_api_key_or_bearer(emulator: LabsEmulator) -> None:
    secret = "s3cret-gateway-key"
    with gateway_for(emulator, api_key=secret) as running:
        with (
            sdk_for(running.root, api_key="sk-wrong") as wrong,
            pytest.raises(anthropic.AuthenticationError) as denied,
        ):
            ask(wrong)
        assert denied.value.status_code == 401
        assert denied.value.body["error"]["type"] == "authentication_error"
        assert secret not in str(denied.value.body)
        with (
            sdk_for(running.root, api_key=None, auth_token="nope") as wrong_bearer,
            pytest.raises(anthropic.AuthenticationError),
        ):
            ask(wrong_bearer)
        with sdk_for(running.root, api_key=secret) as right:
            assert ask(right).content[0].text == PARIS
        with sdk_for(running.root, api_key=None, auth_token=secret) as bearer:
            assert ask(bearer).content[0].text == PARIS


async def test_raw_stream_is_the_messages_wire_format(gateway: GatewayThread) -> None:
    body = {
        "model": "sonar",
        "max_tokens": 10,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(gateway.root + "/v1/messages", json=body) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        text = await response.text()
    names = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-4:] == ["content_block_delta", "content_block_stop", "message_delta", "message_stop"]


def test_chat_anthropic_invokes_streams_and_reads_citations(gateway: GatewayThread) -> None:
    langchain_anthropic = pytest.importorskip("langchain_anthropic")
    chat = langchain_anthropic.ChatAnthropic(
        model="sonar", base_url=gateway.root, api_key="unused", max_retries=0, max_tokens=1024
    )
    reply = chat.invoke(QUESTION)
    assert reply.text == PARIS
    [block] = reply.content
    assert [c["url"] for c in block["citations"]] == PARIS_SOURCES
    assert reply.usage_metadata["output_tokens"] > 0
    assert reply.response_metadata["stop_reason"] == "end_turn"
    chunks = list(chat.stream(QUESTION))
    assert "".join(chunk.text for chunk in chunks) == PARIS


async def test_body_too_large_is_413_request_too_large(emulator: LabsEmulator) -> None:
    body = {"model": "sonar", "max_tokens": 10, "messages": [{"role": "user", "content": "x" * 20_000}]}
    with gateway_for(emulator, max_body_bytes=10_000) as running:
        async with (
            aiohttp.ClientSession() as session,
            session.post(running.root + "/v1/messages", json=body) as response,
        ):
            assert response.status == 413
            assert await response.json() == {
                "type": "error",
                "error": {
                    "type": "request_too_large",
                    "message": "The request body is larger than 10000 bytes",
                },
            }


async def test_busy_pool_is_529_overloaded(emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=10, delay=0.3)
    request: Any = {"model": "sonar", "max_tokens": 1024, "messages": [{"role": "user", "content": QUESTION}]}
    with gateway_for(emulator, max_connections=1, queue_timeout=0.3) as running:
        async with anthropic.AsyncAnthropic(base_url=running.root, api_key="x", max_retries=0) as sdk:
            async with sdk.messages.stream(**request) as holding:
                await anext(aiter(holding))  # the only socket is busy with this answer
                with pytest.raises(anthropic.APIStatusError) as busy:
                    await sdk.messages.create(**request)
            assert busy.value.status_code == 529
            assert busy.value.body["error"]["type"] == "overloaded_error"
            # Once the first stream let go, the socket serves again.
            assert (await sdk.messages.create(**request)).content[0].text == PARIS
