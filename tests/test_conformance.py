"""ChatPerplexityLabs behaves like a partner chat model wherever LangChain looks, over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import pickle
import socket
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.chat_history import InMemoryChatMessageHistory
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.load import dumpd, dumps, load
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.outputs import LLMResult
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import ConfigurableField
from langchain_core.runnables.history import RunnableWithMessageHistory

from langchain_pplx_labs import ChatPerplexityLabs, PerplexityLabsError, PerplexityLabsServerError
from langchain_pplx_labs._stop import StopScanner, normalise_stop
from langchain_pplx_labs.emulator import LabsEmulator, LabsRequest, Scenario
from langchain_pplx_labs.errors import PerplexityLabsInputError

ANSWER = "Paris is the capital [1]; Lyon is second [2] and Paris again [1]."
SOURCES = ["https://example.org/paris", "https://example.org/lyon"]


def _chat(base_url: str, **fields: Any) -> ChatPerplexityLabs:
    settings: dict[str, Any] = {"timeout": 20, "first_token_timeout": 5, "idle_timeout": 5, "max_retries": 1}
    return ChatPerplexityLabs(transport="labs", base_url=base_url, **{**settings, **fields})


def _final_tokens_streamed(emulator: LabsEmulator, scenario: Scenario) -> int:
    """What the emulator put in ``tokens_streamed`` on the final frame of the last request."""
    final = scenario.steps(LabsRequest(emulator.requests[-1]))[-1]
    return int(final.data["tokens_streamed"])  # type: ignore[union-attr]


# -- v1 content blocks -------------------------------------------------------------------------


def _citations(message: BaseMessage) -> list[dict[str, Any]]:
    text_blocks = [b for b in message.content_blocks if b["type"] == "text"]
    return [dict(a) for b in text_blocks for a in b.get("annotations", [])]


def test_default_output_is_a_plain_string(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES)
    message = model.invoke("capital?")
    assert message.content == ANSWER
    assert message.response_metadata["model_provider"] == "perplexity_labs"


def test_v1_text_block_carries_citation_spans(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES, chunk_size=7)
    with _chat(base_url, model="sonar-pro", output_version="v1") as chat:
        message = chat.invoke("capital?")
    assert isinstance(message.content, list)
    [block] = [b for b in message.content if isinstance(b, dict) and b["type"] == "text"]
    assert block["text"] == ANSWER
    spans = [(a["url"], ANSWER[a["start_index"] : a["end_index"]]) for a in block["annotations"]]
    assert spans == [(SOURCES[0], "[1]"), (SOURCES[1], "[2]"), (SOURCES[0], "[1]")]
    assert all(a["type"] == "citation" for a in block["annotations"])


def test_v1_reasoning_block_precedes_text(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="Forty-two [1].", reasoning="Let me think hard.", citations=SOURCES[:1])
    with _chat(base_url, model="sonar-reasoning", output_version="v1") as chat:
        message = chat.invoke("meaning of life?")
    types = [b["type"] for b in message.content_blocks]
    assert types == ["reasoning", "text"]
    assert message.content_blocks[0]["reasoning"] == "Let me think hard."  # type: ignore[typeddict-item]
    assert _citations(message) == [
        {"type": "citation", "url": SOURCES[0], "start_index": 10, "end_index": 13, "cited_text": "[1]"}
    ]


def test_default_message_content_blocks_also_cite(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=[{"url": SOURCES[0], "title": "Paris"}, SOURCES[1]])
    message = model.invoke("capital?")
    cites = _citations(message)
    assert [c["url"] for c in cites] == [SOURCES[0], SOURCES[1], SOURCES[0]]
    assert cites[0]["title"] == "Paris"


def test_marker_without_source_is_not_annotated(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="Only one source [1], not [7].", citations=SOURCES[:1])
    assert [c["cited_text"] for c in _citations(model.invoke("q"))] == ["[1]"]


async def test_v1_stream_chunks_are_blocks_and_sum_cites(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES, chunk_size=5)
    async with _chat(base_url, model="sonar-pro", output_version="v1") as chat:
        chunks = [chunk async for chunk in chat.astream("capital?")]
    assert all(isinstance(c.content, list) for c in chunks)
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    assert total.text == ANSWER
    assert [c["url"] for c in _citations(total)] == [SOURCES[0], SOURCES[1], SOURCES[0]]


# -- stop sequences ------------------------------------------------------------------------------


def test_stop_scanner_catches_a_sequence_split_across_deltas() -> None:
    scanner = StopScanner(["STOP"])
    emitted = [scanner.feed(part) for part in ("alpha S", "T", "OP beta")]
    assert "".join(emitted) == "alpha "
    assert scanner.stopped
    assert scanner.feed("more") == ""


def test_stop_scanner_releases_a_false_start_at_the_end() -> None:
    scanner = StopScanner(["STOP"])
    assert scanner.feed("abc ST") == "abc "
    assert scanner.flush() == "ST"
    assert not scanner.stopped


@given(
    text=st.text(alphabet="abSTOP ", max_size=40),
    stops=st.lists(st.text(alphabet="abSTOP", min_size=1, max_size=4), min_size=1, max_size=3),
    cuts=st.lists(st.integers(min_value=0, max_value=40), max_size=6),
)
def test_stop_scanner_matches_cutting_the_whole_text(text: str, stops: list[str], cuts: list[int]) -> None:
    points = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    scanner = StopScanner(stops)
    out = "".join(scanner.feed(text[a:b]) for a, b in itertools.pairwise(points))
    out += scanner.flush()
    # Oracle over the whole text: the occurrence that ends first wins, whatever the chunking.
    ends = [(i + len(s), i) for s in stops if (i := text.find(s)) >= 0]
    assert out == text[: min(ends)[1] if ends else len(text)]


def test_stop_that_completes_first_wins_like_a_model() -> None:
    # "c" is complete at the 3rd character, before "abcd" is: a model would stop there.
    for parts in (["abcd"], ["a", "b", "c", "d"]):
        scanner = StopScanner(["abcd", "c"])
        assert "".join(scanner.feed(part) for part in parts) == "ab"


def test_empty_stop_sequence_is_refused() -> None:
    with pytest.raises(PerplexityLabsInputError, match="stop sequence"):
        normalise_stop(["ok", ""])


def test_invoke_stop_truncates_split_sequence(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="alpha beta STOP gamma delta", chunk_size=3, citations=SOURCES)
    message = model.invoke("q", stop=["STOP"])
    assert message.content == "alpha beta "
    assert message.response_metadata["finish_reason"] == "stop"
    assert message.usage_metadata is not None
    # Estimated from the text kept, not from what the server streamed past the stop.
    assert message.usage_metadata["output_tokens"] == -(-len("alpha beta ") // 4)
    # The socket was dropped mid-answer; the next question still gets a whole answer.
    emulator.script(answer="second answer", citations=SOURCES)
    assert model.invoke("again").content == "second answer"


def test_bind_stop_and_field_stop_are_honoured(
    base_url: str, emulator: LabsEmulator, model: ChatPerplexityLabs
) -> None:
    emulator.script(answer="one, two, three", chunk_size=2)
    assert model.bind(stop=[", t"]).invoke("count").content == "one"
    with _chat(base_url, model="sonar-pro", stop=["three"]) as chat:
        assert chat.invoke("count").content == "one, two, "
        assert chat._get_ls_params()["ls_stop"] == ["three"]


async def test_astream_ends_at_stop_sequence(amodel: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="first part END second part", chunk_size=4)
    chunks = [chunk async for chunk in amodel.astream("q", stop=["END"])]
    assert "".join(c.text for c in chunks) == "first part "
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["finish_reason"] == "stop"


# -- usage ---------------------------------------------------------------------------------------


def test_invoke_usage_counts_streamed_tokens(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    scenario = Scenario(answer=ANSWER, citations=SOURCES)
    emulator.script(scenario)
    message = model.invoke("How big is Paris?")
    usage = message.usage_metadata
    assert usage is not None
    assert usage["output_tokens"] == _final_tokens_streamed(emulator, scenario)
    assert usage["input_tokens"] == -(-len("How big is Paris?") // 4)
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_stream_usage_only_on_last_chunk(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=6)
    chunks = list(model.stream("q"))
    with_usage = [i for i, c in enumerate(chunks) if c.usage_metadata]
    assert with_usage == [len(chunks) - 1]


def test_stream_usage_false_like_langchain_openai(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=6)
    with _chat(base_url, stream_usage=False) as chat:
        assert all(c.usage_metadata is None for c in chat.stream("q"))
        # As in langchain-openai, stream_usage only concerns streams: invoke still reports usage.
        assert chat.invoke("q").usage_metadata is not None
        streamed = list(chat.stream("q", stream_usage=True))
        assert streamed[-1].usage_metadata is not None


# -- callbacks and LangSmith ---------------------------------------------------------------------


class _Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []
        self.metadata: dict[str, Any] = {}
        self.results: list[LLMResult] = []

    def on_chat_model_start(
        self, serialized: dict[str, Any], messages: list[list[BaseMessage]], *, run_id: UUID, **kwargs: Any
    ) -> None:
        self.metadata = dict(kwargs.get("metadata") or {})

    def on_llm_new_token(self, token: str, **kwargs: Any) -> None:
        self.tokens.append(token)

    def on_llm_end(self, response: LLMResult, **kwargs: Any) -> None:
        self.results.append(response)


def test_new_token_fires_per_delta(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES, chunk_size=9)
    recorder = _Recorder()
    chunks = list(model.stream("q", config={"callbacks": [recorder]}))
    deltas = [c.text for c in chunks if c.text]
    assert len(deltas) > 3
    assert [t for t in recorder.tokens if t] == deltas
    assert "".join(recorder.tokens) == ANSWER


def test_streaming_invoke_fires_tokens(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=9)
    recorder = _Recorder()
    with _chat(base_url, streaming=True) as chat:
        message = chat.invoke("q", config={"callbacks": [recorder]})
    assert "".join(recorder.tokens) == message.content == ANSWER


def test_run_metadata_has_langsmith_params_and_sources(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES)
    recorder = _Recorder()
    model.invoke("q", stop=["zzz"], config={"callbacks": [recorder]})
    assert recorder.metadata["ls_provider"] == "perplexity_labs"
    assert recorder.metadata["ls_model_name"] == model.model
    assert recorder.metadata["ls_model_type"] == "chat"
    assert recorder.metadata["ls_stop"] == ["zzz"]
    assert "ls_temperature" not in recorder.metadata  # Labs has no temperature: nothing to report
    message = recorder.results[-1].generations[0][0].message  # type: ignore[attr-defined]
    assert message.response_metadata["citations"] == SOURCES
    assert model._llm_type == "perplexity-labs-chat"
    assert model._identifying_params["model"] == model.model


def test_per_call_model_override_reaches_the_wire(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    message = model.invoke("q", model="sonar")
    assert emulator.requests[-1]["model"] == "sonar"
    assert message.response_metadata["model_name"] == "sonar"
    assert model._get_ls_params(model="sonar")["ls_model_name"] == "sonar"


# -- serialization -------------------------------------------------------------------------------

_SECRET_HEADERS = {"Cookie": "pplx.session=SECRET-COOKIE-123", "Authorization": "Bearer SECRET-TOKEN-456"}


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_dumpd_keeps_cookies_secret_and_load_restores_them(base_url: str) -> None:
    chat = ChatPerplexityLabs(
        transport="labs", model="sonar", base_url=base_url, cookies="pplx.session=SECRET-COOKIE-123"
    )
    assert ChatPerplexityLabs.is_lc_serializable()
    text = dumps(chat)
    assert "SECRET-COOKIE-123" not in text
    data = dumpd(chat)
    assert data["id"] == ["langchain_pplx_labs", "chat_models", "ChatPerplexityLabs"]
    assert data["kwargs"]["cookies"] == {"lc": 1, "type": "secret", "id": ["PPLX_LABS_COOKIES"]}
    loaded = load(
        json.loads(text),
        secrets_map={"PPLX_LABS_COOKIES": "pplx.session=SECRET-COOKIE-123"},
        valid_namespaces=["langchain_pplx_labs"],
        allowed_objects=[ChatPerplexityLabs],
    )
    assert isinstance(loaded, ChatPerplexityLabs)
    assert loaded.model_dump() == chat.model_dump()
    assert loaded.cookies is not None
    assert loaded.cookies.get_secret_value() == "pplx.session=SECRET-COOKIE-123"


def test_cookies_field_is_sent_as_cookie_header(base_url: str, emulator: LabsEmulator) -> None:
    with _chat(base_url, cookies="pplx.session=abc") as chat:
        settings, _ = chat._settings()
        assert settings.header_dict["Cookie"] == "pplx.session=abc"
        assert "abc" not in repr(chat)


def test_dumps_never_holds_credential_headers_in_clear() -> None:
    chat = ChatPerplexityLabs(default_headers={**_SECRET_HEADERS, "X-Trace": "t"})
    text = dumps(chat)
    assert "SECRET-COOKIE-123" not in text
    assert "SECRET-TOKEN-456" not in text
    assert dumpd(chat)["kwargs"]["default_headers"]["X-Trace"] == "t"


def test_repr_hides_headers() -> None:
    chat = ChatPerplexityLabs(default_headers=_SECRET_HEADERS)
    assert "SECRET" not in repr(chat)
    assert "SECRET" not in str(chat)


def test_pickle_round_trip_of_a_used_model(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="before pickling")
    assert model.invoke("q").content == "before pickling"
    clone = pickle.loads(pickle.dumps(model))
    try:
        assert clone.model_dump() == model.model_dump()
        assert clone._current_client is None  # sockets are not pickled; the clone opens its own
        emulator.script(answer="after pickling")
        assert clone.invoke("q").content == "after pickling"
    finally:
        clone.close()


def test_model_copy_changes_the_model_on_the_wire(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    copy = model.model_copy(update={"model": "sonar-pro"})
    copy.invoke("q")
    assert emulator.requests[-1]["model"] == "sonar-pro"
    assert model.model != "sonar-pro"
    copy.close()


def test_deep_copy_of_a_used_model_opens_its_own_client(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    model.invoke("q")
    clone = model.model_copy(deep=True)
    try:
        assert clone._current_client is None
        emulator.script(answer="from the deep copy")
        assert clone.invoke("q").content == "from the deep copy"
        assert clone._current_client is not model._current_client
    finally:
        clone.close()


# -- composition ---------------------------------------------------------------------------------


def test_with_retry_recovers_from_a_failed_answer(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    calls: list[LabsRequest] = []

    def responder(request: LabsRequest) -> Scenario:
        calls.append(request)
        return Scenario(fail="overloaded") if len(calls) == 1 else Scenario(answer="second try")

    emulator.script(responder)
    retrying = model.with_retry(retry_if_exception_type=(PerplexityLabsServerError,), stop_after_attempt=2)
    assert retrying.invoke("q").content == "second try"
    assert len(calls) == 2


def test_with_fallbacks_from_failing_labs_to_fake_model(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(fail="Labs is down")
    chain = model.with_fallbacks(
        [FakeListChatModel(responses=["fallback answer"])], exceptions_to_handle=(PerplexityLabsError,)
    )
    assert chain.invoke("q").content == "fallback answer"
    assert len(emulator.requests) == 1


def test_with_fallbacks_from_unreachable_server(emulator: LabsEmulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with _chat(dead, max_retries=0, connect_timeout=3) as broken, _chat(emulator.base_url) as working:
        chain = broken.with_fallbacks([working], exceptions_to_handle=(PerplexityLabsError,))
        emulator.script(answer="from the second server")
        assert chain.invoke("q").content == "from the second server"


@pytest.mark.filterwarnings("ignore:.*deprecated:DeprecationWarning")
def test_message_history_sends_earlier_turns(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    history = InMemoryChatMessageHistory()
    chain = RunnableWithMessageHistory(model, lambda session_id: history)
    config: Any = {"configurable": {"session_id": "s1"}}
    emulator.script(answer="first answer")
    chain.invoke("first question", config=config)
    emulator.script(answer="second answer")
    assert chain.invoke("second question", config=config).content == "second answer"
    assert emulator.requests[-1]["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "first answer"},
        {"role": "user", "content": "second question"},
    ]
    assert len(history.messages) == 4


async def test_configurable_model_field(amodel: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    configurable = amodel.configurable_fields(model=ConfigurableField(id="labs_model"))
    chosen = configurable.with_config(configurable={"labs_model": "sonar-reasoning-pro"})
    message = await chosen.ainvoke("q")
    assert emulator.requests[-1]["model"] == "sonar-reasoning-pro"
    assert message.response_metadata["model_name"] == "sonar-reasoning-pro"


def test_init_chat_model_has_no_registry_entry() -> None:
    # langchain's init_chat_model only knows its built-in providers (no plugin entry points),
    # so third-party packages cannot register; "sonar..." names go to langchain-perplexity.
    from langchain.chat_models import init_chat_model

    with pytest.raises(ValueError, match="perplexity_labs"):
        init_chat_model("sonar", model_provider="perplexity_labs")


# -- drop-in swap --------------------------------------------------------------------------------


def _run_chain(chat: Any) -> tuple[str, list[str], list[str]]:
    prompt = ChatPromptTemplate.from_messages([("system", "Answer briefly."), ("human", "{question}")])
    chain = prompt | chat | StrOutputParser()
    return (
        chain.invoke({"question": "capital of France?"}),
        list(chain.stream({"question": "capital of France?"})),
        chain.batch([{"question": "a?"}, {"question": "b?"}]),
    )


def test_chain_output_shape_matches_fake_chat_model(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES, chunk_size=8)
    fake = FakeListChatModel(responses=[ANSWER] * 4)
    for invoked, streamed, batched in (_run_chain(model), _run_chain(fake)):
        assert isinstance(invoked, str)
        assert invoked == ANSWER
        assert all(isinstance(part, str) for part in streamed)
        assert len(streamed) > 1
        assert "".join(streamed) == ANSWER
        assert batched == [ANSWER, ANSWER]
    assert emulator.requests[-1]["messages"][0] == {"role": "system", "content": "Answer briefly."}


# -- logging -------------------------------------------------------------------------------------


def test_debug_logs_never_show_credentials(
    base_url: str, emulator: LabsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, so socketio/engineio/aiohttp are checked too
    emulator.script(answer="logged answer", extra_events=True)
    with _chat(base_url, default_headers=_SECRET_HEADERS, cookies="pplx.session=SECRET-FIELD-789") as chat:
        assert chat.invoke("q").content == "logged answer"
        chat.invoke("q", stop=["answer"])
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("langchain_pplx_labs")]
    assert any("opened a Labs socket" in m for m in messages)
    assert any(m.startswith("query: model=") for m in messages)
    assert any(m.startswith("answer finished: model=") for m in messages)
    assert any("stop sequence" in m for m in messages)
    assert "SECRET-COOKIE-123" not in caplog.text
    assert "SECRET-TOKEN-456" not in caplog.text
    assert "SECRET-FIELD-789" not in caplog.text


def test_v1_chunk_type_is_ai_message_chunk(model: ChatPerplexityLabs) -> None:
    chunks = list(model.stream("q"))
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert isinstance(model.invoke("q"), AIMessage)


@pytest.mark.parametrize("path", ["stream", "astream", "invoke", "ainvoke"])
async def test_new_token_fires_once_per_chunk_on_every_path(
    base_url: str, emulator: LabsEmulator, path: str
) -> None:
    emulator.script(answer=ANSWER, citations=SOURCES, chunk_size=9)
    recorder = _Recorder()
    config: Any = {"callbacks": [recorder]}
    async with _chat(base_url, streaming=True) as chat:
        expected = [c.text async for c in chat.astream("q")]
        if path == "stream":
            await asyncio.to_thread(lambda: list(chat.stream("q", config=config)))
        elif path == "astream":
            _ = [c async for c in chat.astream("q", config=config)]
        elif path == "invoke":
            await asyncio.to_thread(chat.invoke, "q", config)
        else:
            await chat.ainvoke("q", config=config)
        await asyncio.to_thread(chat.close)
    assert recorder.tokens == expected
    assert len(recorder.results) == 1
