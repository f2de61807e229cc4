"""The gateway through real clients (openai SDK, raw HTTP) over real sockets, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp import web

from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator, Scenario
from langchain_pplx_labs.emulator.rules import Rule, RuleTable, tool_call_answer
from langchain_pplx_labs.gateway import GatewaySettings, create_app
from langchain_pplx_labs.protocol import KNOWN_MODELS

PARIS = (
    "The capital of France is Paris [1]. It has been the seat of the French government "
    "for most of the country's history [2]."
)
PARIS_SOURCES = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
QUESTION = "What is the capital of France?"
FAST = {"timeout": 20, "first_token_timeout": 5, "idle_timeout": 5, "max_retries": 0}

# The gateway's model speaks Labs here (test_gateway_web.py runs these tests again over the web).
pytestmark = pytest.mark.usefixtures("over_labs")


class GatewayThread:
    """The gateway app on a real loopback port, served from its own loop in a thread."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.root = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="gateway", daemon=True)
        self._runner: web.AppRunner | None = None

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.settings), handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        host, port = self._runner.addresses[0][:2]
        self.root = f"http://{host}:{port}"

    def __exit__(self, *exc_info: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def connections_left(self, patience: float = 5.0) -> int:
        """Client connections still open on the gateway, once those closing have had ``patience`` seconds."""

        async def count() -> int:
            assert self._runner is not None
            server = self._runner.server
            assert server is not None
            for _ in range(int(patience / 0.02)):
                if not server.connections:
                    break
                await asyncio.sleep(0.02)  # a closed client's connection ends on the server a moment later
            return len(server.connections)

        return asyncio.run_coroutine_threadsafe(count(), self._loop).result(timeout=patience + 5)

    async def _stop(self) -> None:
        assert self._runner is not None
        await self._runner.cleanup()
        leftovers = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)


def gateway_for(emulator: LabsEmulator, **overrides: Any) -> GatewayThread:
    options = {**FAST, **overrides.pop("model_options", {})}
    return GatewayThread(GatewaySettings(base_url=emulator.base_url, model_options=options, **overrides))


@pytest.fixture
def gateway(emulator: LabsEmulator) -> Iterator[GatewayThread]:
    with gateway_for(emulator) as running:
        yield running


def sdk_for(root: str, **options: Any) -> openai.OpenAI:
    """The unmodified openai SDK pointed at the gateway at ``root``: any key, no retries unless ``options`` say."""
    return openai.OpenAI(base_url=root + "/v1", **{"api_key": "unused", "max_retries": 0, **options})


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with sdk_for(gateway.root) as sdk:
        yield sdk


def ask(client: openai.OpenAI, model: str = "sonar", **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": QUESTION}], **kwargs
    )


# -- answers ------------------------------------------------------------------------------------


def test_sync_completion_has_answer_sources_and_usage(client: openai.OpenAI) -> None:
    completion = ask(client)
    choice = completion.choices[0]
    assert choice.message.content == PARIS
    assert choice.finish_reason == "stop"
    assert completion.object == "chat.completion"
    assert completion.model == "sonar"
    assert completion.model_extra["citations"] == PARIS_SOURCES
    assert "search_results" not in completion.model_extra  # bare URLs: no titles to report
    # tokens_streamed of the final frame; prompt estimated at 4 characters a token (30 chars -> 8).
    assert (completion.usage.completion_tokens, completion.usage.prompt_tokens) == (len(PARIS) // 4, 8)
    assert completion.usage.total_tokens == len(PARIS) // 4 + 8


def test_sync_stream_ends_with_sources_usage_and_done(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    chunks = list(ask(client, stream=True, stream_options={"include_usage": True}))
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == PARIS
    assert len(texts) >= 10  # streamed in pieces, not in one block
    assert chunks[0].choices[0].delta.role == "assistant"
    ending = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in ending] == ["stop"]
    # Labs sends its sources on the final frame: chunks before the ending have none.
    with_sources = [i for i, c in enumerate(chunks) if "citations" in (c.model_extra or {})]
    assert with_sources == list(range(chunks.index(ending[0]), len(chunks)))
    assert ending[0].model_extra["citations"] == PARIS_SOURCES
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == []
    assert usage_chunk.usage.completion_tokens == len(PARIS) // 4


async def test_async_client_completes_and_streams(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=12)
    async with openai.AsyncOpenAI(base_url=gateway.root + "/v1", api_key="unused", max_retries=0) as sdk:
        messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
        completion = await sdk.chat.completions.create(model="sonar-pro", messages=messages)
        assert completion.choices[0].message.content == PARIS
        stream = await sdk.chat.completions.create(model="sonar-pro", messages=messages, stream=True)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        assert "".join(parts) == PARIS
        assert stream.response.headers["content-type"] == "text/event-stream"
    assert emulator.requests[-1]["model"] == "sonar-pro"
    assert emulator.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": QUESTION},
    ]


def test_no_usage_chunk_without_include_usage(client: openai.OpenAI) -> None:
    chunks = list(ask(client, stream=True))
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


def test_rich_sources_become_search_results(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(
        answer="Paris [1].",
        citations=[{"url": "https://a.example/paris", "title": "Paris - A"}, "https://b.example/"],
    )
    completion = ask(client)
    assert completion.model_extra["citations"] == ["https://a.example/paris", "https://b.example/"]
    assert completion.model_extra["search_results"] == [
        {"url": "https://a.example/paris", "title": "Paris - A"},
        {"url": "https://b.example/"},
    ]


def test_reasoning_goes_to_reasoning_content(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, reasoning="Think of France.", chunk_size=5)
    completion = ask(client, model="sonar-reasoning")
    message = completion.choices[0].message
    assert message.content == PARIS
    assert message.model_extra["reasoning_content"] == "Think of France."
    chunks = list(ask(client, model="sonar-reasoning", stream=True))
    deltas = [c.choices[0].delta for c in chunks]
    assert "".join(d.model_extra.get("reasoning_content") or "" for d in deltas) == "Think of France."
    assert "".join(d.content or "" for d in deltas) == PARIS


def test_reasoning_inline_keeps_think_tags_in_content(emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, reasoning="Think of France.", chunk_size=5)
    with (
        gateway_for(emulator, reasoning="inline") as running,
        openai.OpenAI(base_url=running.root + "/v1", api_key="x", max_retries=0) as sdk,
    ):
        expected = f"<think>Think of France.</think>\n\n{PARIS}"
        completion = ask(sdk, model="sonar-reasoning")
        assert completion.choices[0].message.content == expected
        assert "reasoning_content" not in (completion.choices[0].message.model_extra or {})
        streamed = "".join(c.choices[0].delta.content or "" for c in ask(sdk, model="r1-1776", stream=True))
        assert streamed == expected


def test_stop_sequence_cuts_the_answer(client: openai.OpenAI) -> None:
    completion = ask(client, stop=["Paris"])
    assert completion.choices[0].message.content == "The capital of France is "
    assert completion.choices[0].finish_reason == "stop"


def test_text_parts_and_history_reach_labs(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    client.chat.completions.create(
        model="sonar",
        messages=[
            {"role": "developer", "content": "Cite."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "first"}, {"type": "text", "text": "part"}],
            },
            {"role": "assistant", "content": "earlier answer"},
            {"role": "user", "content": QUESTION},
        ],
    )
    assert emulator.requests[-1]["messages"] == [
        {"role": "system", "content": "Cite."},
        {"role": "user", "content": "first\npart"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": QUESTION},
    ]


def test_models_and_health(gateway: GatewayThread, client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == list(KNOWN_MODELS)
    assert _get(gateway.root + "/healthz") == (200, {"status": "ok"})


# -- tools and structured output ----------------------------------------------------------------

WEATHER_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def test_tool_call_and_result_round_trip(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    table = RuleTable(
        [
            Rule(
                tool_call_answer(("get_weather", {"city": "Paris"})),
                tools=("get_weather",),
                before=("get_weather",),
            ),
            Rule("It is sunny in Paris.", after=("get_weather",)),
        ]
    )
    emulator.script(table)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(model="sonar", messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert (call.type, call.function.name, json.loads(call.function.arguments)) == (
        "function",
        "get_weather",
        {"city": "Paris"},
    )
    assert call.id.startswith("call_")
    assert not choice.message.content
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
    ]
    final = client.chat.completions.create(model="sonar", messages=messages, tools=[WEATHER_TOOL])
    assert final.choices[0].message.content == "It is sunny in Paris."
    assert final.choices[0].finish_reason == "stop"
    # The result went back as the package renders tool results, named after the call it answers.
    assert emulator.requests[-1]["messages"][-1] == {
        "role": "user",
        "content": f"Result of tool call {call.id} (get_weather):\nsunny",
    }
    assert table.matched == [0, 1]


def test_streamed_tool_call(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=tool_call_answer(("get_weather", {"city": "Rome"})), citations=[], chunk_size=8)
    chunks = list(
        client.chat.completions.create(
            model="sonar", messages=[{"role": "user", "content": "Rome?"}], tools=[WEATHER_TOOL], stream=True
        )
    )
    calls = [call for c in chunks for call in (c.choices[0].delta.tool_calls or [])]
    assert [(c.index, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        (0, "get_weather", {"city": "Rome"})
    ]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)  # the JSON is not shown as text


def test_json_schema_response_format(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    from langchain_pplx_labs.emulator.rules import schema_follower

    emulator.script(schema_follower)
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "rank": {"type": "integer"}}}
    completion = client.chat.completions.create(
        model="sonar",
        messages=[{"role": "user", "content": "Which 'Paris' is number 1?"}],
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert json.loads(completion.choices[0].message.content) == {"city": "Paris", "rank": 1}


# -- errors -------------------------------------------------------------------------------------


def _post(url: str, body: bytes | dict[str, Any], headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        async with (
            aiohttp.ClientSession() as session,
            session.post(url, data=data, headers=headers) as response,
        ):
            return response.status, await response.json(content_type=None)

    return asyncio.run(go())


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    async def go() -> tuple[int, Any]:
        async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as response:
            return response.status, await response.json(content_type=None)

    return asyncio.run(go())


def _chat(**fields: Any) -> dict[str, Any]:
    return {"model": "sonar", "messages": [{"role": "user", "content": "hi"}], **fields}


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (b'{"model": "sonar", "messages": [', None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (b"", None, "not valid JSON"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "model", "Missing required field 'model'"),
        (_chat(messages=[]), "messages", "at least 1"),
        (_chat(messages=[{"role": "robot", "content": "hi"}]), "messages[0].role", "Input should be"),
        (
            _chat(
                messages=[
                    {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "x"}}]}
                ]
            ),
            "messages[0].content[0].type",
            "the gateway takes text parts, and image_url and file parts in user messages",
        ),
        (_chat(messages=[{"role": "user", "content": "a"}] * 513), "messages", "at most 512"),
        (_chat(n=2), "n", "n=1"),
        (_chat(stream="yes"), "stream", "boolean"),
        (
            _chat(tools=[{"type": "function", "function": {"name": ""}}]),
            "tools[0].function.name",
            "at least 1",
        ),
        (_chat(messages=[{"role": "tool", "content": "x"}]), "messages[0].tool_call_id", "tool_call_id"),
    ],
)
def test_malformed_requests_get_400_naming_the_field(
    gateway: GatewayThread, emulator: LabsEmulator, body: Any, param: str | None, words: str
) -> None:
    status, answer = _post(gateway.root + "/v1/chat/completions", body)
    assert status == 400
    assert answer["error"]["param"] == param
    assert answer["error"]["type"] == "invalid_request_error"
    assert words in answer["error"]["message"]
    assert emulator.requests == []  # refused before anything was sent


@pytest.mark.parametrize(
    ("messages", "words"),
    [
        pytest.param(
            [{"role": "user", "content": ""}], "messages[0] is the question and has no text", id="empty"
        ),
        pytest.param([{"role": "user", "content": " \n\t"}], "messages[0] is the question", id="whitespace"),
        pytest.param([{"role": "user", "content": []}], "messages[0] is the question", id="no-parts"),
        pytest.param(
            [{"role": "user", "content": [{"type": "text", "text": "  "}]}],
            "messages[0] is the question",
            id="blank-part",
        ),
        pytest.param(
            [{"role": "system", "content": "Be brief."}],
            "messages has no question: it needs a user message with text, and has only system messages",
            id="system-only",
        ),
        pytest.param(
            [{"role": "system", "content": "Be brief."}, {"role": "assistant", "content": "Hello."}],
            "has only system and assistant messages",
            id="no-user",
        ),
        pytest.param(
            [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "   "},
            ],
            "messages[2] is the question and has no text",
            id="blank-last-turn",
        ),
    ],
)
def test_a_request_without_a_question_is_400(
    client: openai.OpenAI, emulator: LabsEmulator, messages: Any, words: str
) -> None:
    # Issue #31: these were sent to Labs as they were, and answered with a 200.
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="sonar", messages=messages)
    assert refused.value.status_code == 400
    assert refused.value.body["type"] == "invalid_request_error"
    assert refused.value.body["param"] == "messages"
    assert words in refused.value.message
    assert emulator.requests == []  # refused before anything was sent


def test_a_question_may_come_before_the_last_message(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    # An assistant turn to continue, or tool results after the question, still carry one: they pass.
    prefilled = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert client.chat.completions.create(model="sonar", messages=prefilled).choices[0].message.content
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
    results: Any = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": ""},
    ]
    assert client.chat.completions.create(model="sonar", messages=results).choices[0].message.content
    assert len(emulator.requests) == 2


def test_bad_model_name_and_oversized_conversation_are_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="Invalid Labs model name"):
        ask(client, model="no spaces allowed")
    with pytest.raises(openai.BadRequestError, match="max_input_chars") as too_long:
        client.chat.completions.create(model="sonar", messages=[{"role": "user", "content": "x" * 300_000}])
    # Issue #31: "raise the limit" names how, for the gateway's operator.
    assert "raise the limit (pplx-labs gateway --max-input-chars)" in too_long.value.message


def test_body_over_the_limit_is_413(emulator: LabsEmulator) -> None:
    with gateway_for(emulator, max_body_bytes=10_000) as running:
        status, answer = _post(
            running.root + "/v1/chat/completions", _chat(messages=[{"role": "user", "content": "x" * 20_000}])
        )
    assert status == 413
    assert answer["error"]["code"] == "request_too_large"
    assert "10000 bytes" in answer["error"]["message"]


def test_api_key_is_required_when_set(emulator: LabsEmulator) -> None:
    secret = "sk-gateway-test-0123456789"
    with gateway_for(emulator, api_key=secret) as running:
        with openai.OpenAI(base_url=running.root + "/v1", api_key="sk-wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError) as refused:
                ask(wrong)
            assert refused.value.status_code == 401
            assert refused.value.body["code"] == "invalid_api_key"
            assert "sk-wrong" not in refused.value.response.text
        assert _post(running.root + "/v1/chat/completions", _chat())[0] == 401  # no header at all
        assert _get(running.root + "/v1/models")[0] == 401
        assert _get(running.root + "/healthz")[0] == 200  # for load balancers; says nothing
        with openai.OpenAI(base_url=running.root + "/v1", api_key=secret, max_retries=0) as right:
            assert ask(right).choices[0].message.content == PARIS


def test_labs_failure_is_502_with_its_text(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(fail="model overloaded, try later")
    with pytest.raises(openai.InternalServerError) as failed:
        ask(client)
    assert failed.value.status_code == 502
    assert failed.value.body["code"] == "labs_failed"
    assert "model overloaded, try later" in failed.value.body["message"]


def test_blocked_is_502(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.blocked = True
    with pytest.raises(openai.InternalServerError) as blocked:
        ask(client)
    assert blocked.value.status_code == 502
    assert blocked.value.body["code"] == "labs_blocked"


def test_timeout_is_504(emulator: LabsEmulator) -> None:
    emulator.script(first_delay=3.0)
    with (
        gateway_for(emulator, model_options={"first_token_timeout": 0.3}) as running,
        openai.OpenAI(base_url=running.root + "/v1", api_key="x", max_retries=0) as sdk,
        pytest.raises(openai.APIStatusError) as timed_out,
    ):
        ask(sdk)
    assert timed_out.value.status_code == 504
    assert timed_out.value.body["code"] == "labs_first_token_timeout"


async def test_busy_pool_is_503_after_the_queue_timeout(emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=10, delay=0.3)
    with gateway_for(emulator, max_connections=1, queue_timeout=0.3) as running:
        async with openai.AsyncOpenAI(base_url=running.root + "/v1", api_key="x", max_retries=0) as sdk:
            messages: Any = [{"role": "user", "content": QUESTION}]
            holding = await sdk.chat.completions.create(model="sonar", messages=messages, stream=True)
            await anext(aiter(holding))  # the only socket is busy with this answer
            with pytest.raises(openai.APIStatusError) as busy:
                await sdk.chat.completions.create(model="sonar", messages=messages)
            await holding.close()
            assert busy.value.status_code == 503
            assert busy.value.body["code"] == "overloaded"
            # Once the first stream let go, the socket serves again.
            assert (await sdk.chat.completions.create(model="sonar", messages=messages)).choices[
                0
            ].message.content == PARIS


def test_failure_mid_stream_ends_with_an_error_event(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, chunk_size=10, fail="lost the thread", fail_after=3)
    received: list[str] = []

    def read_all() -> None:
        received.extend(chunk.choices[0].delta.content or "" for chunk in ask(client, stream=True))

    with pytest.raises(openai.APIError, match="lost the thread"):
        read_all()
    assert "".join(received) == PARIS[:30]  # what came before the failure, then the error


def test_unknown_endpoint_answers_in_openai_shape(gateway: GatewayThread) -> None:
    status, answer = _get(gateway.root + "/v1/engines")
    assert status == 404
    assert answer["error"]["type"] == "invalid_request_error"


# -- security -----------------------------------------------------------------------------------


def test_request_cannot_choose_upstream_proxy_or_headers(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    with EmulatorThread() as elsewhere:
        completion = client.chat.completions.create(
            model="sonar",
            messages=[{"role": "user", "content": QUESTION}],
            extra_body={
                "base_url": elsewhere.base_url,
                "proxy": elsewhere.base_url,
                "default_headers": {"X-Injected": "1"},
                "cookies": "stolen=1",
            },
            extra_headers={"X-Injected": "1", "X-Forwarded-Host": "evil.example"},
        )
        assert completion.choices[0].message.content == PARIS
        assert elsewhere.emulator.requests == []
        assert elsewhere.emulator.connections == 0
    assert len(emulator.requests) == 1
    sent = {name.lower(): value for headers in emulator.handshake_headers for name, value in headers.items()}
    assert "x-injected" not in sent
    assert "stolen=1" not in sent.get("cookie", "")


def test_secrets_never_reach_responses_or_logs(
    emulator: LabsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    api_key, cookie = "sk-gateway-secret-42", "session=labs-cookie-secret"
    # A server that echoes the session back in its failure text: the gateway must not pass it on.
    emulator.script(fail=f"denied for {cookie}")
    caplog.set_level(logging.DEBUG)
    with (
        gateway_for(emulator, api_key=api_key, model_options={"cookies": cookie}) as running,
        openai.OpenAI(base_url=running.root + "/v1", api_key=api_key, max_retries=0) as sdk,
    ):
        with pytest.raises(openai.InternalServerError) as failed:
            ask(sdk)
        with (
            openai.OpenAI(base_url=running.root + "/v1", api_key="wrong", max_retries=0) as wrong,
            pytest.raises(openai.AuthenticationError) as refused,
        ):
            ask(wrong)
    texts = [failed.value.response.text, refused.value.response.text, caplog.text]
    assert "denied for ***" in failed.value.body["message"]
    assert all(api_key not in text and cookie not in text for text in texts)
    assert emulator.handshake_headers[-1]["Cookie"] == cookie  # it was used upstream all the same


# -- LangChain's own chat-completions clients, unmodified -----------------------------------------


def test_chat_openai_invokes_streams_and_calls_tools(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    # Our own HTTP client, closed below: ChatOpenAI's default one is cached for the process and never
    # closed, so its keep-alive socket would be reported unclosed at interpreter exit.
    with openai.DefaultHttpxClient() as http_client:
        llm = ChatOpenAI(
            model="sonar",
            base_url=gateway.root + "/v1",
            api_key="unused",
            max_retries=0,
            http_client=http_client,
        )
        message = llm.invoke(QUESTION)
        assert message.content == PARIS
        assert message.usage_metadata is not None
        assert (message.usage_metadata["input_tokens"], message.usage_metadata["output_tokens"]) == (
            8,
            len(PARIS) // 4,
        )
        chunks = list(llm.stream(QUESTION))
        merged = chunks[0]
        for chunk in chunks[1:]:
            merged += chunk
        assert isinstance(merged, AIMessageChunk)
        assert merged.content == PARIS
        assert len([c for c in chunks if c.content]) > 1

        emulator.script(
            RuleTable(
                [
                    Rule(tool_call_answer(("get_weather", {"city": "Oslo"})), before=("get_weather",)),
                    Rule("Snow in Oslo.", after=("get_weather",)),
                ]
            )
        )
        with_tools = llm.bind_tools([WEATHER_TOOL])
        asked = [HumanMessage("Weather in Oslo?")]
        call = with_tools.invoke(asked)
        assert [(c["name"], c["args"]) for c in call.tool_calls] == [("get_weather", {"city": "Oslo"})]
        answer = with_tools.invoke([*asked, call, ToolMessage("snow", tool_call_id=call.tool_calls[0]["id"])])
        assert answer.content == "Snow in Oslo."
    # The closed client took its keep-alive connection with it.
    assert gateway.connections_left() == 0


def test_chat_perplexity_fills_citations_on_invoke_and_stream(
    gateway: GatewayThread, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not installed in the `lowest` nox session (it needs a newer langchain-core than our floor).
    ChatPerplexity = pytest.importorskip("langchain_perplexity").ChatPerplexity

    # The Perplexity SDK reads its base URL from the environment; the client stays as shipped.
    monkeypatch.setenv("PERPLEXITY_BASE_URL", gateway.root)
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    llm = ChatPerplexity(model="sonar", api_key="unused", max_retries=0)
    message = llm.invoke(QUESTION)
    assert message.content == PARIS
    assert message.additional_kwargs["citations"] == PARIS_SOURCES
    chunks = list(llm.stream(QUESTION))
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.content == PARIS
    assert merged.additional_kwargs["citations"] == PARIS_SOURCES
    assert len([c for c in chunks if c.content]) > 1


def _events(url: str, body: dict[str, Any]) -> list[Any]:
    async def go() -> list[Any]:
        async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
            text = await response.text()
        return [
            json.loads(line[6:]) if line != "data: [DONE]" else "[DONE]"
            for line in text.split("\n\n")
            if line
        ]

    return asyncio.run(go())


def test_perplexity_path_holds_the_stream_until_sources_are_known(
    gateway: GatewayThread, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    events = _events(gateway.root + "/chat/completions", _chat(stream=True))
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert len(chunks) > 5
    assert all(
        chunk["citations"] == PARIS_SOURCES for chunk in chunks
    )  # the first one too, as Perplexity's API
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == PARIS
    live = _events(gateway.root + "/v1/chat/completions", _chat(stream=True))
    assert "citations" not in live[0]
    assert live[-2]["citations"] == PARIS_SOURCES


def test_perplexity_path_can_stream_live(emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    with gateway_for(emulator, perplexity_stream="live") as running:
        events = _events(running.root + "/chat/completions", _chat(stream=True))
    assert "citations" not in events[0]
    assert events[-2]["citations"] == PARIS_SOURCES


def test_a_bug_mid_stream_ends_with_an_internal_error_event(
    client: openai.OpenAI,
    gateway: GatewayThread,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from langchain_pplx_labs.gateway import responses

    original = responses.Translator.delta
    calls = {"n": 0}

    def failing(self: responses.Translator, message: Any) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("planted bug")
        return original(self, message)

    monkeypatch.setattr(responses.Translator, "delta", failing)
    with pytest.raises(openai.APIError, match="The gateway failed unexpectedly"):
        list(ask(client, stream=True))
    assert "planted bug" in caplog.text  # in the log, with its traceback
    calls["n"] = 2
    with pytest.raises(openai.InternalServerError) as before_streaming:
        ask(client)
    assert before_streaming.value.status_code == 500
    assert "planted bug" not in before_streaming.value.response.text


def test_calls_that_do_not_fit_are_passed_on_as_written(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer=tool_call_answer(("get_weather", {"town": "Oslo"})), citations=[])
    completion = client.chat.completions.create(
        model="sonar", messages=[{"role": "user", "content": "Oslo?"}], tools=[WEATHER_TOOL]
    )
    (call,) = completion.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_weather", {"town": "Oslo"})
    assert completion.choices[0].finish_reason == "tool_calls"
    broken = 'Let me check. {"tool_calls": [{"name": "get_weather", "arguments": {"city": '
    emulator.script(answer=broken, citations=[])
    completion = client.chat.completions.create(
        model="sonar", messages=[{"role": "user", "content": "Oslo again?"}], tools=[WEATHER_TOOL]
    )
    message = completion.choices[0].message
    assert message.tool_calls is None
    # Nameless and unparseable: kept as text, not dropped.
    assert message.content == broken.replace(". {", ".\n{").strip()
    streamed = client.chat.completions.create(
        model="sonar",
        messages=[{"role": "user", "content": "Oslo again?"}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == message.content
    assert completion.choices[0].finish_reason == "stop"


@contextlib.contextmanager
def left_mid_answer(emulator: LabsEmulator) -> Iterator[None]:
    """A gateway with one connection: a client leaves a slow stream after its first chunk, the next question is
    answered at once; yields with the gateway still running."""
    slow = Scenario(answer="tick " * 200, chunk_size=5, delay=0.1)  # about 20 s to play out
    emulator.script(lambda request: slow if "slow" in request.question else Scenario(answer="quick"))
    with (
        gateway_for(emulator, max_connections=1, queue_timeout=1.0) as running,
        sdk_for(running.root, timeout=10) as sdk,
    ):
        leaving = sdk.chat.completions.create(
            model="sonar", messages=[{"role": "user", "content": "slow one"}], stream=True
        )
        next(iter(leaving))
        leaving.close()  # gone mid-answer: over Socket.IO its socket is drained in the background
        answer = sdk.chat.completions.create(model="sonar", messages=[{"role": "user", "content": "next"}])
        assert answer.choices[0].message.content == "quick"
        yield


def test_a_drain_does_not_hold_up_the_next_request(emulator: LabsEmulator) -> None:
    with left_mid_answer(emulator):
        assert emulator.open_sockets == 2  # the drained one and the one that answered


def test_reasoning_drop_leaves_the_thinking_out(emulator: LabsEmulator) -> None:
    emulator.script(answer=PARIS, reasoning="Think of France.", chunk_size=5)
    with (
        gateway_for(emulator, reasoning="drop") as running,
        openai.OpenAI(base_url=running.root + "/v1", api_key="x", max_retries=0) as sdk,
    ):
        message = ask(sdk, model="sonar-reasoning").choices[0].message
        chunks = list(ask(sdk, model="sonar-reasoning", stream=True))
    assert message.content == PARIS
    assert "reasoning_content" not in (message.model_extra or {})
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == PARIS
    assert not any((c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks)


async def test_chat_perplexity_async_fills_citations(
    gateway: GatewayThread, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Not installed in the `lowest` nox session (it needs a newer langchain-core than our floor).
    ChatPerplexity = pytest.importorskip("langchain_perplexity").ChatPerplexity

    monkeypatch.setenv("PERPLEXITY_BASE_URL", gateway.root)
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    llm = ChatPerplexity(model="sonar", api_key="unused", max_retries=0)
    message = await llm.ainvoke(QUESTION)
    assert message.additional_kwargs["citations"] == PARIS_SOURCES
    merged: Any = None
    async for chunk in llm.astream(QUESTION):
        merged = chunk if merged is None else merged + chunk
    assert merged.content == PARIS
    assert merged.additional_kwargs["citations"] == PARIS_SOURCES
