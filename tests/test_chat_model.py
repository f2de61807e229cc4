"""ChatPerplexityLabs through a real socket against the emulator: every call style, sources, reasoning."""

from __future__ import annotations

import asyncio
import gc
import time
import types
import warnings
from collections.abc import Iterable
from functools import reduce
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessageChunk, HumanMessage, SystemMessage
from pydantic import ValidationError

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs._sync import background_loop
from langchain_pplx_labs.emulator import LabsEmulator, LabsRequest, Scenario
from langchain_pplx_labs.errors import PerplexityLabsInputError

ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
THINKING = "The user asks about France; check both sources."

# Models these tests build themselves speak Labs (the environment says so); test_web_reruns.py runs
# many of them again with the environment saying web.
pytestmark = pytest.mark.usefixtures("over_labs")


THREAD_KEYS = frozenset({"backend_uuid", "read_write_token", "thread_url_slug", "thread_digest"})


def same_answer_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """``response_metadata`` without the web thread's ids, which every answer has its own of."""
    return {key: value for key, value in metadata.items() if key not in THREAD_KEYS}


def added(chunks: Iterable[BaseMessageChunk]) -> BaseMessageChunk:
    return reduce(lambda a, b: a + b, chunks)


def test_invoke_returns_answer_citations_and_metadata(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=7, reasoning="")
    message = model.invoke([SystemMessage("Be brief."), HumanMessage("What is the capital of France?")])
    assert isinstance(message, AIMessage)
    assert message.content == ANSWER
    assert message.response_metadata["citations"] == CITATIONS
    assert message.additional_kwargs["citations"] == CITATIONS
    assert message.response_metadata["model_name"] == "r1-1776"
    assert message.response_metadata["finish_reason"] == "stop"
    assert "search_results" not in message.response_metadata
    assert emulator.requests[-1]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]


async def test_ainvoke_sends_model_and_returns_answer(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS)
    async with ChatPerplexityLabs(model="sonar-pro", base_url=base_url, max_retries=0) as chat:
        message = await chat.ainvoke("What is the capital of France?")
    assert message.content == ANSWER
    assert message.response_metadata["model_name"] == "sonar-pro"
    assert emulator.requests[-1]["model"] == "sonar-pro"


def test_stream_yields_several_chunks_that_add_up_to_invoke(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=5, reasoning=THINKING)
    chunks = list(model.stream("What is the capital of France?"))
    invoked = model.invoke("What is the capital of France?")
    assert sum(1 for c in chunks if c.content) > 5
    streamed = added(chunks)
    assert streamed.content == invoked.content == ANSWER
    assert streamed.additional_kwargs == invoked.additional_kwargs
    assert streamed.additional_kwargs["reasoning_content"] == THINKING
    assert streamed.response_metadata["citations"] == invoked.response_metadata["citations"] == CITATIONS
    assert streamed.response_metadata["model_name"] == invoked.response_metadata["model_name"]
    assert streamed.response_metadata["finish_reason"] == invoked.response_metadata["finish_reason"] == "stop"
    assert same_answer_metadata(streamed.response_metadata) == same_answer_metadata(invoked.response_metadata)
    assert isinstance(streamed, AIMessageChunk)
    assert streamed.usage_metadata == invoked.usage_metadata


async def test_astream_chunks_add_up_to_ainvoke(amodel: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=6)
    chunks = [chunk async for chunk in amodel.astream("Capital of France?")]
    invoked = await amodel.ainvoke("Capital of France?")
    streamed = added(chunks)
    assert len(chunks) > 3
    assert streamed.content == invoked.content == ANSWER
    assert streamed.additional_kwargs == invoked.additional_kwargs
    assert same_answer_metadata(streamed.response_metadata) == same_answer_metadata(invoked.response_metadata)


def _echo(request: LabsRequest) -> Scenario:
    return Scenario(
        answer=f"You said: {request.question}", citations=[f"https://example.org/{request.question}"]
    )


def test_batch_keeps_order_and_answers_each_question(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(_echo)
    questions = ["alpha", "beta", "gamma", "delta"]
    answers = model.batch(questions)
    assert [a.content for a in answers] == [f"You said: {q}" for q in questions]
    assert [a.response_metadata["citations"] for a in answers] == [
        [f"https://example.org/{q}"] for q in questions
    ]


async def test_abatch_keeps_order_and_answers_each_question(
    amodel: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(_echo)
    questions = ["one", "two", "three"]
    answers = await amodel.abatch(questions)
    assert [a.content for a in answers] == [f"You said: {q}" for q in questions]
    assert len(emulator.requests) == 3


def test_source_objects_fill_search_results_and_citation_urls(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    sources = [
        {"url": "https://a.example/1", "title": "First"},
        {"url": "https://b.example/2", "title": "Second", "snippet": "extra field kept"},
    ]
    emulator.script(answer="Cited [1][2].", citations=sources)
    message = model.invoke("Q?")
    assert message.response_metadata["citations"] == ["https://a.example/1", "https://b.example/2"]
    assert message.additional_kwargs["citations"] == ["https://a.example/1", "https://b.example/2"]
    assert message.response_metadata["search_results"] == sources


@pytest.mark.parametrize("name", ["r1-1776", "sonar-reasoning", "sonar-reasoning-pro"])
async def test_reasoning_models_split_thinking_from_answer(
    name: str, base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, reasoning=THINKING, citations=CITATIONS, chunk_size=4)
    async with ChatPerplexityLabs(model=name, base_url=base_url, max_retries=0) as chat:
        message = await chat.ainvoke("Capital of France?")
        chunks = [chunk async for chunk in chat.astream("Capital of France?")]
    assert message.content == ANSWER
    assert message.additional_kwargs["reasoning_content"] == THINKING
    assert "think>" not in str(message.content)
    streamed = added(chunks)
    assert streamed.content == ANSWER
    assert streamed.additional_kwargs["reasoning_content"] == THINKING


async def test_reasoning_false_drops_thinking(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, reasoning=THINKING, citations=CITATIONS, chunk_size=4)
    async with ChatPerplexityLabs(model="sonar-reasoning-pro", base_url=base_url, reasoning=False) as chat:
        message = await chat.ainvoke("Capital of France?")
    assert message.content == ANSWER
    assert "reasoning_content" not in message.additional_kwargs
    assert message.additional_kwargs["citations"] == CITATIONS


def test_sync_invoke_inside_a_running_event_loop(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS)

    async def notebook_cell() -> AIMessage:
        asyncio.get_running_loop()  # as in Jupyter: a loop is running while sync code calls invoke
        return model.invoke("Capital of France?")

    message = asyncio.run(notebook_cell())
    assert message.content == ANSWER
    assert message.response_metadata["citations"] == CITATIONS


async def test_sync_invoke_and_stream_from_async_test(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=10)
    assert model.invoke("Q").content == ANSWER
    assert "".join(str(c.content) for c in model.stream("Q")) == ANSWER


def test_field_aliases_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    chat = ChatPerplexityLabs(model_name="sonar", request_timeout=12.5, base_url="http://127.0.0.1:9/")
    assert chat.model == "sonar"
    assert chat.timeout == 12.5
    assert chat.base_url == "http://127.0.0.1:9"
    # The model a transport asks when none is named: the web (the default) has its own.
    monkeypatch.delenv("PPLX_LABS_TRANSPORT")
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9").model == "auto"
    assert ChatPerplexityLabs(transport="labs", base_url="http://127.0.0.1:9").model == "r1-1776"


def test_base_url_from_environment(monkeypatch: pytest.MonkeyPatch, emulator: LabsEmulator) -> None:
    monkeypatch.setenv("PPLX_LABS_BASE_URL", emulator.base_url)
    emulator.script(answer="From the env URL.")
    with ChatPerplexityLabs(max_retries=0) as chat:
        assert chat.base_url == emulator.base_url
        assert chat.invoke("Q").content == "From the env URL."
    monkeypatch.delenv("PPLX_LABS_BASE_URL")
    assert ChatPerplexityLabs().base_url == "https://www.perplexity.ai"


def test_chunk_types_are_ai_message_chunks(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="Short.", citations=[])
    chunks = list(model.stream("Q"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert added(chunks).response_metadata["citations"] == []


def test_unknown_events_between_frames_are_ignored(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=CITATIONS, chunk_size=9, extra_events=True, reasoning="x")
    message = model.invoke("Q")
    assert message.content == ANSWER
    assert message.response_metadata["citations"] == CITATIONS


async def test_falls_back_to_polling_when_websocket_is_refused() -> None:
    # Its own emulator (own base URL): the pool remembers polling-only servers for the whole process.
    async with LabsEmulator(refuse_websocket=True) as server:
        server.script(answer=ANSWER, citations=CITATIONS)
        async with ChatPerplexityLabs(model="sonar", base_url=server.base_url, max_retries=1) as chat:
            first = await chat.ainvoke("Q")
            second = await chat.ainvoke("Q again")
    assert first.content == second.content == ANSWER
    assert first.response_metadata["citations"] == CITATIONS
    assert server.handshakes["polling"] >= 1
    assert len(server.requests) == 2


def test_r1_1776_answer_without_think_close_still_ends_up_in_content(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    # r1-1776 starts inside a think section, so its text streams as reasoning; if the section
    # never closes, the final chunk repeats it as the answer. invoke equals the summed stream.
    emulator.script(answer=ANSWER, reasoning="", chunk_size=8)
    message = model.invoke("Q")
    assert message.content == ANSWER
    assert message.additional_kwargs["reasoning_content"] == ANSWER
    chunks = list(model.stream("Q"))
    assert "".join(str(c.content) for c in chunks) == ANSWER
    assert "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks) == ANSWER
    answers = [n for n, c in enumerate(chunks) if c.content]
    reasoning = [n for n, c in enumerate(chunks) if c.additional_kwargs.get("reasoning_content")]
    assert len(answers) == 1  # the whole answer at once, at the end
    assert answers[0] > reasoning[-1]


def test_r1_1776_reasoning_chunks_come_before_the_think_section_closes(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, reasoning="Weigh the sources. Then answer.", chunk_size=8)
    kinds = [
        "reasoning" if c.additional_kwargs.get("reasoning_content") else "text" if c.content else "empty"
        for c in model.stream("Q")
    ]
    first_text = kinds.index("text")
    assert kinds[:first_text].count("reasoning") >= 3  # 31 characters in 8-character frames
    assert "reasoning" not in kinds[first_text:]


# -- constructor checks and client lifetime ----------------------------------------------------


def test_unknown_constructor_argument_warns_naming_it() -> None:
    with pytest.warns(UserWarning, match="unknown parameter 'modl'") as caught:
        chat = ChatPerplexityLabs(modl="sonar-pro", base_url="http://127.0.0.1:9")
    assert caught[0].filename == __file__  # the warning points at the caller's line
    assert chat.model == "r1-1776"


def test_known_and_documented_arguments_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chat = ChatPerplexityLabs(
            model_name="sonar",
            request_timeout=30,
            stop_sequences=["x"],
            temperature=0.2,  # accepted and ignored: Labs has no temperature
            max_tokens=100,
            streaming=True,
            tags=["t"],
            base_url="http://127.0.0.1:9",
        )
    assert (chat.model, chat.timeout, chat.stop) == ("sonar", 30, ["x"])


def _input_error(caught: pytest.ExceptionInfo[ValidationError]) -> PerplexityLabsInputError:
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, PerplexityLabsInputError)
    return error


@pytest.mark.parametrize(
    "proxy",
    ["localhost:8080", "ftp://127.0.0.1:1", "http://proxy.example", "https://127.0.0.1:3128", "socks5://"],
)
def test_invalid_proxies_are_refused_at_construction(proxy: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:9", proxy=proxy)
    assert "Invalid proxy" in str(_input_error(caught))


@pytest.mark.parametrize(
    "proxy", ["http://127.0.0.1:3128", "socks5://user:pw@127.0.0.1:1080", "socks4://h:1"]
)
def test_valid_proxies_are_kept(proxy: str) -> None:
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9", proxy=proxy).proxy == proxy


@pytest.mark.parametrize(
    "field",
    [
        {"timeout": 0},
        {"timeout": -1},
        {"connect_timeout": 0},
        {"handshake_timeout": -2},
        {"first_token_timeout": 0},
        {"idle_timeout": -5},
        {"pool_idle_timeout": -1},
        {"max_retries": -1},
    ],
    ids=str,
)
def test_non_positive_timeouts_and_negative_retries_are_refused(field: dict[str, float]) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:9", **field)
    assert "Invalid" in str(_input_error(caught))


def test_unbounded_and_zero_idle_pool_are_allowed() -> None:
    chat = ChatPerplexityLabs(
        base_url="http://127.0.0.1:9", timeout=None, idle_timeout=None, pool_idle_timeout=0
    )
    assert (chat.timeout, chat.idle_timeout, chat.pool_idle_timeout) == (None, None, 0)


def test_close_also_closes_the_client_a_setting_change_replaced(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER)
    chat = ChatPerplexityLabs(base_url=base_url, model="sonar", max_retries=0)
    chat.invoke("one")
    replaced = chat._current_client  # held, so only close() (not the garbage collector) can close it
    chat.timeout = 120  # part of the client key: the next call builds a new client
    chat.invoke("two")
    assert chat._current_client is not replaced
    chat.close()
    deadline = time.monotonic() + 2
    while emulator.open_sockets and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator.open_sockets == 0


async def test_aclose_also_closes_replaced_clients(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER)
    chat = ChatPerplexityLabs(base_url=base_url, model="sonar", max_retries=0)
    await chat.ainvoke("one")
    replaced = chat._current_client  # held, so only aclose() (not the garbage collector) can close it
    chat.max_retries = 1
    await chat.ainvoke("two")
    assert chat._current_client is not replaced
    await chat.aclose()
    for _ in range(100):
        if not emulator.open_sockets:
            break
        await asyncio.sleep(0.02)
    assert emulator.open_sockets == 0


async def _collect_garbage() -> None:
    gc.collect()


def test_half_read_stream_collected_on_the_sync_loop_does_not_block_it(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=3)
    holder = types.SimpleNamespace()
    holder.self = holder  # a cycle: only the garbage collector frees the half-read stream
    holder.stream = model.stream("Q")
    next(holder.stream)
    gc.disable()
    try:
        del holder
        # Collected on the loop thread, the stream's finaliser must not wait for that same loop.
        asyncio.run_coroutine_threadsafe(_collect_garbage(), background_loop()).result(timeout=5)
    finally:
        gc.enable()
    assert model.invoke("Q").content == ANSWER


@pytest.mark.parametrize(
    "asked",
    ["", "   ", [SystemMessage("Be brief.")], [HumanMessage(content=[])]],
    ids=["empty", "blank", "only-system", "no-parts"],
)
def test_a_question_with_no_text_is_refused_before_anything_is_sent(
    model: ChatPerplexityLabs, emulator: LabsEmulator, asked: Any
) -> None:
    # Issue 31: these went out and were answered; the CLI and the docs refuse them, so the model does too.
    with pytest.raises(PerplexityLabsInputError, match=r"no question|has no text"):
        model.invoke(asked)
    with pytest.raises(PerplexityLabsInputError, match=r"no question|has no text"):
        list(model.stream(asked))
    assert emulator.requests == []
