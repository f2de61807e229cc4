"""Web threads (a history's last answer continued as a follow-up) and ChatPerplexity's search names."""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.events import finished
from langchain_pplx_labs.recording.redact import Redactor
from langchain_pplx_labs.web.codec import WebDecoder, web_request_body

CITATIONS = ["https://en.wikipedia.org/wiki/Paris"]


def web_model(base_url: str, **fields: object) -> ChatPerplexityLabs:
    return ChatPerplexityLabs(
        transport="web", impersonate=None, base_url=base_url, timeout=20, max_retries=0, **fields
    )


@pytest.fixture
def fresh(base_url: str) -> Iterator[list[ChatPerplexityLabs]]:
    made: list[ChatPerplexityLabs] = []
    yield made
    for chat in made:
        chat.close()


def ask(fresh: list[ChatPerplexityLabs], base_url: str, history: list[object], **fields: object) -> AIMessage:
    chat = web_model(base_url, **fields)
    fresh.append(chat)  # a new instance for every turn: the history is all that is shared
    answer = chat.invoke(history)  # type: ignore[arg-type]
    assert isinstance(answer, AIMessage)
    return answer


def test_a_second_turn_from_a_fresh_model_is_a_follow_up_in_the_first_answers_thread(
    emulator: LabsEmulator, base_url: str, fresh: list[ChatPerplexityLabs]
) -> None:
    emulator.script(answer="Paris.", citations=CITATIONS)
    history: list[object] = [SystemMessage("Be brief."), HumanMessage("Capital of France?")]
    first = ask(fresh, base_url, history)
    ids = {k: first.response_metadata[k] for k in ("backend_uuid", "read_write_token", "thread_url_slug")}
    assert all(ids.values())
    assert first.response_metadata["related_questions"]
    assert first.response_metadata["images"][0]["origin_url"] == CITATIONS[0]

    emulator.script(answer="About 2 million.", citations=[])
    second = ask(fresh, base_url, [*history, first, HumanMessage("And its population?")])
    params = emulator.web.bodies[-1]["params"]
    assert emulator.web.bodies[-1]["query_str"] == "And its population?"
    assert params["query_source"] == "followup"
    assert params["last_backend_uuid"] == ids["backend_uuid"]
    assert params["read_write_token"] == ids["read_write_token"]
    # The emulator kept the conversation: the responder saw all of it.
    assert [m["content"] for m in emulator.requests[-1]["messages"]] == [
        "Be brief.",
        "Capital of France?",
        "Paris.",
        "And its population?",
    ]
    assert second.response_metadata["thread_url_slug"] == ids["thread_url_slug"]
    assert second.response_metadata["backend_uuid"] != ids["backend_uuid"]

    # A third turn continues from the second answer.
    ask(
        fresh,
        base_url,
        [*history, first, HumanMessage("And its population?"), second, HumanMessage("Mayor?")],
    )
    assert emulator.web.bodies[-1]["params"]["last_backend_uuid"] == second.response_metadata["backend_uuid"]


@pytest.mark.parametrize(
    "change", ["edited_answer", "system_prompt", "edited_question", "foreign", "turns_since"]
)
def test_a_history_not_from_one_thread_falls_back_to_the_transcript(
    emulator: LabsEmulator, base_url: str, fresh: list[ChatPerplexityLabs], change: str
) -> None:
    emulator.script(answer="Paris.", citations=[])
    history: list[object] = [SystemMessage("Be brief."), HumanMessage("Capital of France?")]
    first = ask(fresh, base_url, history)
    if change == "edited_answer":
        first = first.model_copy(update={"content": "Lyon."})
    elif change == "system_prompt":
        history[0] = SystemMessage("Be long.")
    elif change == "edited_question":
        history[1] = HumanMessage("Capital of Spain?")
    elif change == "foreign":
        first = AIMessage("Paris.")
    later: list[object] = [first, HumanMessage("And its population?")]
    if change == "turns_since":
        later = [first, HumanMessage("Why?"), AIMessage("Because."), HumanMessage("And its population?")]
    ask(fresh, base_url, [*history, *later])
    body = emulator.web.bodies[-1]
    assert "query_source" not in body["params"] or body["params"]["query_source"] != "followup"
    assert "last_backend_uuid" not in body["params"]
    assert body["query_str"].count("[User]") >= 2  # the transcript


def test_the_decoder_keeps_the_thread_ids_related_questions_and_images() -> None:
    decoder = WebDecoder()
    decoder.feed(
        {"backend_uuid": "b1", "read_write_token": "t1", "thread_url_slug": "s1", "status": "PENDING"}
    )
    decoder.feed(
        {
            "blocks": [
                {
                    "intended_usage": "media_items",
                    "media_block": {
                        "media_items": [
                            {
                                "medium": "image",
                                "image": "https://i.example/a.png",
                                "url": "https://example.org/a",
                                "width": 3,
                            }
                        ]
                    },
                }
            ]
        }
    )
    (end,) = decoder.feed({"related_query_items": [{"text": "Next?"}], "final_sse_message": True})
    assert end == finished(
        [],
        thread={"backend_uuid": "b1", "read_write_token": "t1", "thread_url_slug": "s1"},
        extras={
            "images": [
                {"image_url": "https://i.example/a.png", "origin_url": "https://example.org/a", "width": 3}
            ],
            "related_questions": ["Next?"],
        },
    )


def test_a_follow_up_body_and_the_token_redacted() -> None:
    payload = {
        "model": "auto",
        "messages": [{"role": "user", "content": "Next?"}],
        "thread": {"last_backend_uuid": "b1", "read_write_token": "t1"},
    }
    body = web_request_body(payload, frontend_uuid="f", visitor_id="v", frontend_context_uuid="c")
    assert body["query_str"] == "Next?"
    assert body["params"]["query_source"] == "followup"
    assert Redactor().for_web().redact_data(body)["params"]["read_write_token"] == "<redacted>"


def test_chat_perplexitys_names_reach_the_web_ask(
    emulator: LabsEmulator, base_url: str, fresh: list[ChatPerplexityLabs]
) -> None:
    emulator.script(answer="Ok.", citations=[])
    ask(fresh, base_url, [HumanMessage("Papers?")], search_mode="academic", search_recency_filter="week")
    params = emulator.web.bodies[-1]["params"]
    assert params["sources"] == ["scholar"]
    assert params["search_recency_filter"] == "week"
    assert params["is_incognito"] is True
    ask(fresh, base_url, [HumanMessage("Write.")], disable_search=True, incognito=False)
    params = emulator.web.bodies[-1]["params"]
    assert params["sources"] == []
    assert params["search_focus"] == "writing"
    assert params["is_incognito"] is False
    with pytest.raises(ValueError, match="search_mode"):
        ChatPerplexityLabs(search_mode="news")
    with pytest.raises(ValueError, match="search_recency_filter"):
        ChatPerplexityLabs(search_recency_filter="hour")


def test_a_chat_perplexity_call_site_moves_by_changing_the_class_name() -> None:
    # Not in the lowest session (langchain-perplexity needs a newer langchain-core than our floor).
    ChatPerplexity = pytest.importorskip("langchain_perplexity").ChatPerplexity

    fields = dict(
        model="sonar",
        temperature=0.2,
        search_mode="sec",
        search_recency_filter="month",
        disable_search=False,
        return_images=True,
        return_related_questions=True,
    )
    for name in fields:
        assert name in ChatPerplexity.model_fields or name in {"temperature"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        labs = ChatPerplexityLabs(**fields)  # type: ignore[arg-type]
    assert labs._web_params()["sources"] == ["edgar"]
