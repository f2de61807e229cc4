"""The gateway over the web: images and related questions beside the sources, and a client's second turn
continuing the first answer's web thread (#29), through the unmodified openai and anthropic SDKs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from test_gateway import PARIS, PARIS_SOURCES, QUESTION, GatewayThread, gateway_for, sdk_for

from langchain_pplx_labs.emulator import LabsEmulator

IMAGES = [{"image_url": url + "/image.png", "origin_url": url} for url in PARIS_SOURCES]
RELATED = [f"Tell me more about {QUESTION}", "What are the sources?"]


@pytest.fixture
def gateway(over_the_web: LabsEmulator) -> Iterator[GatewayThread]:
    # The gateway's model asks over the web; afterwards, nothing went over Socket.IO.
    with gateway_for(over_the_web) as running:
        yield running


@pytest.fixture
def client(gateway: GatewayThread) -> Iterator[openai.OpenAI]:
    with sdk_for(gateway.root) as sdk:
        yield sdk


def ask(client: openai.OpenAI, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.chat.completions.create(model="auto", messages=messages, **kwargs)  # type: ignore[arg-type]


# -- images and related questions -------------------------------------------------------------------


def test_completion_has_images_and_related_questions_beside_the_citations(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES)
    completion = ask(client, [{"role": "user", "content": QUESTION}])
    assert completion.choices[0].message.content == PARIS
    extra = completion.model_extra
    assert extra["citations"] == PARIS_SOURCES
    assert extra["images"] == IMAGES
    assert extra["related_questions"] == RELATED


def test_streamed_chunks_carry_them_from_the_chunk_that_ends_the_answer(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    chunks = list(
        ask(
            client,
            [{"role": "user", "content": QUESTION}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    ending = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(ending) == 1
    assert ending[0].model_extra["images"] == IMAGES
    assert ending[0].model_extra["related_questions"] == RELATED
    assert chunks[-1].usage is not None  # the usage chunk has them too
    assert chunks[-1].model_extra["related_questions"] == RELATED
    # Earlier chunks have none: they are not known before the end.
    assert "images" not in (chunks[0].model_extra or {})


def test_chat_perplexity_reads_images_and_related_questions(
    gateway: GatewayThread, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ChatPerplexity = pytest.importorskip("langchain_perplexity").ChatPerplexity
    monkeypatch.setenv("PERPLEXITY_BASE_URL", gateway.root)  # the Perplexity SDK reads its URL from here
    emulator.script(answer=PARIS, citations=PARIS_SOURCES, chunk_size=10)
    llm = ChatPerplexity(model="auto", api_key="unused", max_retries=0)
    message = llm.invoke(QUESTION)
    assert message.additional_kwargs["images"] == IMAGES
    assert message.additional_kwargs["related_questions"] == RELATED
    # Streamed on ROOT/chat/completions the answer is held until its sources are known, so the first
    # chunk (the only one ChatPerplexity reads them from) has them.
    first = next(iter(llm.stream(QUESTION)))
    assert first.additional_kwargs["related_questions"] == RELATED
    assert first.additional_kwargs["images"] == IMAGES


def test_a_labs_answer_has_neither(over_labs: LabsEmulator) -> None:
    emulator = over_labs
    emulator.script(answer=PARIS, citations=PARIS_SOURCES)
    with gateway_for(emulator) as running, sdk_for(running.root) as sdk:
        extra = ask(sdk, [{"role": "user", "content": QUESTION}]).model_extra
    assert extra["citations"] == PARIS_SOURCES
    assert "images" not in extra
    assert "related_questions" not in extra


# -- follow-ups ---------------------------------------------------------------------------------------


def _followed(emulator: LabsEmulator) -> dict[str, Any]:
    """The last ask's params, checked to be a follow-up. The emulator answers a follow-up only when its
    ``last_backend_uuid`` is an answer's it gave and its ``read_write_token`` that thread's (else a 400)."""
    params: dict[str, Any] = emulator.web.bodies[-1]["params"]
    assert params["query_source"] == "followup"
    return params


def test_a_second_turn_repeating_the_first_answer_is_a_follow_up_in_its_thread(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer="Paris.", citations=PARIS_SOURCES)
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    raw = client.chat.completions.with_raw_response.create(model="auto", messages=history)  # type: ignore[arg-type]
    first = raw.parse()
    assert emulator.web.bodies[-1]["params"]["query_source"] != "followup"

    emulator.script(answer="About 2 million.", citations=[])
    answer = {"role": "assistant", "content": first.choices[0].message.content}
    second = ask(client, [*history, answer, {"role": "user", "content": "And its population?"}])
    assert second.choices[0].message.content == "About 2 million."
    assert emulator.web.bodies[-1]["query_str"] == "And its population?"
    params = _followed(emulator)
    # The thread's ids stayed in the gateway: not in the answer the client got.
    assert params["read_write_token"] not in raw.text
    assert params["last_backend_uuid"] not in raw.text


def test_a_third_turn_continues_the_second(client: openai.OpenAI, emulator: LabsEmulator) -> None:
    history: list[dict[str, Any]] = []
    for question in ("One?", "Two?", "Three?"):
        emulator.script(answer=f"Answer to {question}", citations=[])
        history.append({"role": "user", "content": question})
        reply = ask(client, history).choices[0].message.content
        history.append({"role": "assistant", "content": reply})
    assert history[-1]["content"] == "Answer to Three?"
    assert emulator.web.bodies[-1]["query_str"] == "Three?"
    third = _followed(emulator)
    assert emulator.web.bodies[-2]["query_str"] == "Two?"
    second = emulator.web.bodies[-2]["params"]
    assert second["query_source"] == "followup"
    # The third follows the second answer, in the same thread (same token), not the first answer.
    assert third["last_backend_uuid"] != second["last_backend_uuid"]
    assert third["read_write_token"] == second["read_write_token"]


def test_an_edited_history_is_a_transcript_in_a_new_thread(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    emulator.script(answer="Paris.", citations=PARIS_SOURCES)
    history = [{"role": "user", "content": QUESTION}]
    ask(client, history)
    emulator.script(answer="Fine.", citations=[])
    edited = {"role": "assistant", "content": "Paris, of course."}  # not what the gateway answered
    ask(client, [*history, edited, {"role": "user", "content": "And its population?"}])
    body = emulator.web.bodies[-1]
    assert body["params"].get("query_source") != "followup"
    assert "last_backend_uuid" not in body["params"]
    assert "read_write_token" not in body["params"]
    assert "Paris, of course." in body["query_str"]
    assert "And its population?" in body["query_str"]


def test_anthropic_second_turn_is_a_follow_up_too(gateway: GatewayThread, emulator: LabsEmulator) -> None:
    anthropic = pytest.importorskip("anthropic")
    emulator.script(answer="Paris.", citations=[])
    with anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0) as sdk:
        history: list[dict[str, Any]] = [{"role": "user", "content": QUESTION}]
        first = sdk.messages.create(model="auto", max_tokens=1024, messages=history)  # type: ignore[arg-type]
        emulator.script(answer="About 2 million.", citations=[])
        history += [
            {"role": "assistant", "content": first.content},  # the blocks as they came back
            {"role": "user", "content": "And its population?"},
        ]
        sdk.messages.create(model="auto", max_tokens=1024, messages=history)  # type: ignore[arg-type]
    assert emulator.web.bodies[-1]["query_str"] == "And its population?"
    _followed(emulator)


def test_the_gateway_remembers_a_bounded_number_of_threads(over_the_web: LabsEmulator) -> None:
    emulator = over_the_web
    with gateway_for(emulator) as running, sdk_for(running.root) as sdk:
        gateway = _gateway_of(running)
        gateway.threads.max_threads = 2
        for question in ("One?", "Two?", "Three?"):
            emulator.script(answer=f"Answer to {question}", citations=[])
            ask(sdk, [{"role": "user", "content": question}])
        assert len(gateway.threads) == 2
        # The oldest was forgotten: its next turn is a transcript, the newest's a follow-up.
        for question, follows in (("One?", False), ("Three?", True)):
            emulator.script(answer="More.", citations=[])
            history = [
                {"role": "user", "content": question},
                {"role": "assistant", "content": f"Answer to {question}"},
                {"role": "user", "content": "More?"},
            ]
            ask(sdk, history)
            assert (emulator.web.bodies[-1]["params"].get("query_source") == "followup") is follows


def _gateway_of(running: GatewayThread) -> Any:
    from langchain_pplx_labs.gateway.app import GATEWAY

    assert running._runner is not None
    return running._runner.app[GATEWAY]


def test_no_thread_id_reaches_the_log(
    client: openai.OpenAI, emulator: LabsEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    emulator.script(answer="Paris.", citations=[])
    history = [{"role": "user", "content": QUESTION}]
    ask(client, history)
    ask(client, [*history, {"role": "assistant", "content": "Paris."}, {"role": "user", "content": "More?"}])
    token = _followed(emulator)["read_write_token"]
    assert token not in caplog.text


# -- images and files (#29's attachments through the gateway) ---------------------------------------

SIGNED_IN = "__Secure-next-auth.session-token=gateway-attach-token"
PNG = (
    b"\x89PNG\r\n\x1a\n" + b"\x00" * 24
)  # a PNG's signature and bytes: what arrives is compared byte for byte


def _image_question(url: str) -> list[dict[str, Any]]:
    parts = [
        {"type": "text", "text": "What is in this picture?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return [{"role": "user", "content": parts}]


def test_an_image_part_is_uploaded_and_named_in_the_ask(over_the_web: LabsEmulator) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with (
        gateway_for(over_the_web, model_options={"cookies": SIGNED_IN}) as running,
        sdk_for(running.root) as sdk,
    ):
        completion = ask(sdk, _image_question(data_url))
    assert completion.choices[0].message.content
    uploads = over_the_web.web.uploads
    assert [(stored.data, stored.content_type) for stored in uploads.stored.values()] == [(PNG, "image/png")]
    params = over_the_web.web.bodies[-1]["params"]
    assert params["attachments"] == [stored.url for stored in uploads.stored.values()]
    assert over_the_web.web.bodies[-1]["query_str"].endswith("What is in this picture?")


def test_an_image_an_anonymous_session_cannot_send_is_a_400_in_the_models_words(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, _image_question(data_url))
    assert (
        "and the web session is not signed in: the web app uploads files for signed-in accounts only"
        in str(caught.value)
    )
    assert (emulator.web.uploads.batches, emulator.web.asks) == (0, 0)


def test_an_image_in_an_assistant_message_is_a_400_naming_it(
    client: openai.OpenAI, emulator: LabsEmulator
) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    messages = [
        {"role": "user", "content": QUESTION},
        {"role": "assistant", "content": [image]},
        {"role": "user", "content": "And?"},
    ]
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, messages)
    assert "messages[1] is a assistant message with 'image_url' parts" in str(caught.value)
    assert emulator.web.asks == 0


# -- a model the session may not ask ----------------------------------------------------------------


def test_a_model_the_session_may_not_ask_is_openais_model_not_found(
    client: openai.OpenAI, gateway: GatewayThread, emulator: LabsEmulator
) -> None:
    assert "claude45sonnet" in [model.id for model in client.models.list()]  # the live list, now read
    with pytest.raises(openai.NotFoundError) as caught:
        ask_model(client, "claude45sonnet")
    error = caught.value.body
    assert isinstance(error, dict)
    assert (error["code"], error["param"]) == ("model_not_found", "model")
    assert "Model 'claude45sonnet' needs a signed-in session on the 'pro' tier" in error["message"]
    with (
        anthropic.Anthropic(base_url=gateway.root, api_key="unused", max_retries=0) as claude,
        pytest.raises(anthropic.NotFoundError) as refused,
    ):
        claude.messages.create(
            model="claude45sonnet", max_tokens=64, messages=[{"role": "user", "content": QUESTION}]
        )
    assert refused.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert emulator.web.asks == 0


def ask_model(client: openai.OpenAI, model: str) -> Any:
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": QUESTION}])
