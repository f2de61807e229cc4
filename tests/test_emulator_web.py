"""The emulator's web-app endpoint, through a real aiohttp client on a real port: the evidence's shapes come back."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
import pytest

from langchain_pplx_labs import LabsProtocol
from langchain_pplx_labs.emulator import LabsEmulator, Scenario
from langchain_pplx_labs.emulator.web import WebVariant, split_reasoning
from langchain_pplx_labs.errors import PerplexityLabsRateLimitError, PerplexityLabsServerError
from langchain_pplx_labs.events import Finished, ReasoningDelta, StreamEvent, TextDelta
from langchain_pplx_labs.protocol import LabsMessage
from langchain_pplx_labs.web.codec import WebDecoder, web_headers, web_request_body
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser

ANSWER = "Paris is the capital of France [1]."
URLS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
COOKIE = {"__Secure-next-auth.session-token": "emulator-test-token"}


def _emulator(scenario: Scenario, **options: Any) -> LabsEmulator:
    return LabsEmulator(lambda _request: scenario, **options)


def _body(model: str = "sonar", messages: list[LabsMessage] | None = None, **options: Any) -> dict[str, Any]:
    payload = {"model": model, "messages": messages or [{"role": "user", "content": "Capital of France?"}]}
    return web_request_body(
        payload, frontend_uuid="f-1", visitor_id="v-1", frontend_context_uuid="c-1", **options
    )


async def _ask(
    base_url: str, body: Any, *, cookies: dict[str, str] | None = None, path: str = "/rest/sse/perplexity_ask"
) -> tuple[aiohttp.ClientResponse, bytes, list[SSEMessage]]:
    async with aiohttp.ClientSession(cookies=cookies) as session:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        async with session.post(base_url + path, data=data, headers=web_headers(LabsProtocol())) as response:
            raw = await response.read()
    parser = SSEParser()
    return response, raw, parser.feed(raw) + parser.close()


def _fold(messages: list[SSEMessage]) -> dict[str, Any]:
    """What the client's codec reads from ``messages``: the answer (and plan, if any), sources, the end."""
    answer = WebDecoder()
    events: list[StreamEvent] = []
    try:
        for message in messages:
            if message.event == "message":
                events += answer.feed(orjson.loads(message.data))
    except PerplexityLabsServerError as exc:
        failed = {"status": "failed", "text": exc.server_message}
        return failed | (
            {"error_code": exc.error_code} if isinstance(exc, PerplexityLabsRateLimitError) else {}
        )
    read: dict[str, Any] = {"output": "".join(e.text for e in events if isinstance(e, TextDelta))}
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    if reasoning:
        read["reasoning"] = reasoning
    ends = [e for e in events if isinstance(e, Finished)]
    read["citations"] = (
        [s.model_dump(exclude_none=True) if ends[0].rich_sources else s.url for s in ends[0].sources]
        if ends
        else []
    )
    read["final"] = bool(ends)
    return read


async def test_default_stream_is_schematized_with_final_sse_message_and_end_of_stream() -> None:
    async with _emulator(Scenario(answer=ANSWER, citations=URLS, chunk_size=10)) as emulator:
        response, raw, messages = await _ask(emulator.base_url, _body())
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert b"\r\n\r\n" in raw
    assert [m.event for m in messages] == ["message"] * 4 + ["end_of_stream"]
    first, *_, last = [orjson.loads(m.data) for m in messages[:-1]]
    assert first["blocks"] == [
        {
            "intended_usage": "ask_text",
            "diff_block": {
                "field": "markdown_block",
                "patches": [
                    {
                        "op": "replace",
                        "path": "",
                        "value": {
                            "progress": "IN_PROGRESS",
                            "chunks": ["Paris is t"],
                            "chunk_starting_offset": 0,
                        },
                    }
                ],
            },
        }
    ]
    assert (first["status"], first["final_sse_message"], first["display_model"], first["mode"]) == (
        "PENDING",
        False,
        "experimental",
        "CONCISE",
    )
    assert first["frontend_context_uuid"] == "c-1"
    assert (last["status"], last["text_completed"], last["final_sse_message"]) == ("COMPLETED", True, True)
    assert last["blocks"][0]["diff_block"]["patches"][-2:] == [
        {"op": "replace", "path": "/progress", "value": "DONE"},
        {"op": "add", "path": "/answer", "value": ANSWER},
    ]
    assert last["blocks"][1] == {
        "intended_usage": "web_results",
        "web_result_block": {
            "progress": "DONE",
            "web_results": [
                {"name": "", "url": URLS[0], "snippet": ""},
                {"name": "", "url": URLS[1], "snippet": ""},
            ],
        },
    }
    assert _fold(messages) == {"output": ANSWER, "citations": URLS, "final": True}
    assert emulator.requests[-1] == {
        "version": "2.18",
        "source": "default",
        "model": "sonar",
        "messages": [{"role": "user", "content": "Capital of France?"}],
    }
    assert emulator.web.asks == 1
    assert emulator.web.headers[-1]["x-perplexity-request-reason"] == "perplexity-query-state-provider"


async def test_reasoning_arrives_as_plan_goals_before_the_answer() -> None:
    scenario = Scenario(answer="Paris.", reasoning="Recall the capital.", chunk_size=6)
    async with _emulator(scenario) as emulator:
        _, _, messages = await _ask(emulator.base_url, _body(model="r1-1776"))
    assert emulator.requests[-1]["model"] == "r1-1776"  # the web's "r1" maps back
    first = orjson.loads(messages[0].data)
    assert first["display_model"] == "r1"
    assert first["blocks"] == [
        {
            "intended_usage": "pro_search_steps",
            "diff_block": {
                "field": "plan_block",
                "patches": [
                    {"op": "replace", "path": "", "value": {"progress": "IN_PROGRESS", "goals": []}},
                    {"op": "add", "path": "/goals/0", "value": "Recall"},
                ],
            },
        }
    ]
    assert _fold(messages) == {
        "output": "Paris.",
        "reasoning": "Recall the capital.",
        "citations": _fold(messages)["citations"],
        "final": True,
    }


async def test_titled_citations_keep_their_titles_and_sources_mode_block_variant() -> None:
    variant = WebVariant(sources="sources_mode_block")
    async with _emulator(
        Scenario(answer="A", citations=URLS, citation_titles=True), web_variant=variant
    ) as emulator:
        _, _, messages = await _ask(emulator.base_url, _body())
    last = orjson.loads(messages[-2].data)
    assert last["blocks"][-1]["intended_usage"] == "sources_answer_mode"
    assert _fold(messages)["citations"] == [
        {"url": URLS[0], "title": "Paris"},
        {"url": URLS[1], "title": "Paris"},
    ]


async def test_older_text_stream_with_final_true_and_lf_lines() -> None:
    variant = WebVariant(stream="text", final_marker="final", end_of_stream=False, newline="\n")
    async with _emulator(
        Scenario(answer=ANSWER, citations=URLS[:1], chunk_size=20), web_variant=variant
    ) as emulator:
        _, raw, messages = await _ask(emulator.base_url, _body())
    assert b"\r" not in raw
    assert [m.event for m in messages] == ["message", "message"]
    first, last = (orjson.loads(m.data) for m in messages)
    assert orjson.loads(first["text"]) == {"answer": ANSWER[:20], "chunks": [ANSWER[:20]], "web_results": []}
    assert first["final"] is False
    assert "status" not in first
    assert orjson.loads(last["text"]) == {
        "answer": ANSWER,
        "chunks": [ANSWER[:20], ANSWER[20:]],
        "web_results": [{"name": "", "url": URLS[0], "snippet": ""}],
    }
    assert last["final"] is True
    assert _fold(messages) == {
        "output": ANSWER,
        "citations": URLS[:1],
        "final": True,
    }


LONG = "".join(f"word{n} " for n in range(400))  # 3,090 characters: 129 frames of 24


async def test_schematized_messages_carry_only_the_new_text_and_the_text_stream_repeats_it() -> None:
    # Bytes linear in the answer where the web app appends; cumulative where the service repeats.
    async with _emulator(Scenario(answer=LONG, citations=[], chunk_size=24)) as emulator:
        _, schematized, blocks = await _ask(emulator.base_url, _body("turbo"))
        emulator.web.variant = WebVariant(stream="text")
        _, text, texts = await _ask(emulator.base_url, _body("turbo"))
    patches = [
        patch
        for m in blocks[:-1]
        for block in orjson.loads(m.data)["blocks"]
        for patch in block["diff_block"]["patches"]
    ]
    added = [p["value"] for p in patches if p["op"] == "add" and p["path"].startswith("/chunks/")]
    assert [p["path"] for p in patches[1:4]] == ["/chunks/1", "/chunks/2", "/chunks/3"]
    assert patches[0]["value"]["chunks"][0] + "".join(added) == LONG
    assert max(len(m.data) for m in blocks[:-2]) < 800  # every message but the last: one 24-character piece
    answers = [orjson.loads(orjson.loads(m.data)["text"])["answer"] for m in texts[:-1]]
    assert answers[:3] == [LONG[:24], LONG[:48], LONG[:72]]  # the whole answer so far, every time
    assert len(schematized) < 150_000 < len(text)


async def test_status_only_marker_needs_the_end_of_the_stream() -> None:
    variant = WebVariant(final_marker="status", comments=True)
    async with _emulator(Scenario(answer="Done."), web_variant=variant) as emulator:
        _, raw, messages = await _ask(emulator.base_url, _body())
    assert b": keep-alive\r\n" in raw
    datas = [orjson.loads(m.data) for m in messages if m.event == "message"]
    assert all("final_sse_message" not in d for d in datas)
    assert datas[-1]["status"] == "COMPLETED"
    answer = WebDecoder()
    events = [event for d in datas for event in answer.feed(d)]
    assert events == [TextDelta("Done.")]  # no end yet
    assert messages[-1].event == "end_of_stream"
    (end,) = answer.finish()
    assert isinstance(end, Finished)
    # the emulator's made-up sources for a question about France
    assert [source.url for source in end.sources] == URLS


async def test_failure_is_the_web_apps_failed_message() -> None:
    async with _emulator(
        Scenario(answer=ANSWER, fail="Error in processing query.", fail_after=1, chunk_size=5)
    ) as emulator:
        _, _, messages = await _ask(emulator.base_url, _body())
    assert [m.event for m in messages] == ["message", "message", "end_of_stream"]
    assert orjson.loads(messages[1].data) == {"status": "failed", "text": "Error in processing query."}
    assert _fold(messages) == {"status": "failed", "text": "Error in processing query."}


async def test_anonymous_rate_limit_variant_and_a_signed_in_ask() -> None:
    variant = WebVariant(anonymous="rate_limited")
    async with _emulator(Scenario(answer="Hi."), web_variant=variant) as emulator:
        _, _, anonymous = await _ask(emulator.base_url, _body(model="auto"))
        _, _, signed_in = await _ask(emulator.base_url, _body(model="auto", signed_in=True), cookies=COOKIE)
    assert orjson.loads(anonymous[0].data) == {
        "status": "failed",
        "error_code": "FREE_TIER_RATE_LIMITED",
        "experience": "upgrade",
        "final_sse_message": True,
    }
    assert _fold(anonymous) == {
        "status": "failed",
        "text": "FREE_TIER_RATE_LIMITED",
        "error_code": "FREE_TIER_RATE_LIMITED",
    }
    assert _fold(signed_in)["output"] == "Hi."
    assert orjson.loads(signed_in[0].data)["display_model"] == "pplx_pro"
    assert [r["model"] for r in emulator.requests] == ["turbo", "pplx_pro"]


async def test_session_check_is_empty_anonymous_and_names_a_user_with_a_cookie() -> None:
    async with LabsEmulator() as emulator, aiohttp.ClientSession() as session:
        async with session.get(emulator.base_url + "/api/auth/session") as response:
            assert response.status == 200
            assert await response.json() == {}
        ids = []
        for _ in range(2):
            async with session.get(emulator.base_url + "/api/auth/session", cookies=COOKIE) as response:
                session_data = await response.json()
                assert set(session_data) == {"user", "expires"}
                ids.append(session_data["user"]["id"])
        assert ids[0] == ids[1]
        assert ids[0].startswith("emulator-user-")
        assert emulator.web.session_checks == 3


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "body is a JSON list"),
        (b'{"params": {}}', "no query_str"),
        (b'{"query_str": "hi", "params": []}', "no params object"),
    ],
)
async def test_a_body_the_emulator_cannot_read_gets_a_400_naming_it(body: bytes, problem: str) -> None:
    async with LabsEmulator() as emulator:
        response, raw, _ = await _ask(emulator.base_url, body)
    assert response.status == 400
    error = orjson.loads(raw)
    assert error["error"] == "bad_request"
    assert problem in error["message"]
    assert emulator.web.asks == 0


async def test_blocked_server_answers_both_web_paths_with_the_cloudflare_page() -> None:
    async with LabsEmulator(blocked=True) as emulator, aiohttp.ClientSession() as session:
        async with session.post(emulator.base_url + "/rest/sse/perplexity_ask", json=_body()) as response:
            assert response.status == 403
            assert response.content_type == "text/html"
            assert "Just a moment" in await response.text()
        async with session.get(emulator.base_url + "/api/auth/session") as response:
            assert response.status == 403


async def test_a_moved_web_path_is_served_and_the_old_one_is_not() -> None:
    protocol = LabsProtocol(web_path="/rest/sse/ask_v2", web_session_path="/api/v2/session")
    async with _emulator(Scenario(answer="Moved."), protocol=protocol) as emulator:
        response, _, messages = await _ask(emulator.base_url, _body(), path="/rest/sse/ask_v2")
        old, _, _ = await _ask(emulator.base_url, _body())
    assert response.status == 200
    assert _fold(messages)["output"] == "Moved."
    assert old.status == 404


async def test_a_conversation_reaches_the_responder_as_the_same_turns() -> None:
    messages: list[LabsMessage] = [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "[User]\nAnd Italy?"},
    ]
    async with LabsEmulator(lambda request: Scenario(answer=request.messages[-1]["content"])) as emulator:
        _, _, sse = await _ask(emulator.base_url, _body(messages=messages))
    assert emulator.requests[-1]["messages"] == messages
    assert _fold(sse)["output"] == "[User]\nAnd Italy?"


async def test_unknown_events_and_raw_garbage_are_sent_as_the_scenario_says() -> None:
    async with _emulator(Scenario(answer="abcdef", chunk_size=3, extra_events=True)) as emulator:
        _, _, messages = await _ask(emulator.base_url, _body())
    assert "query_status" in [m.event for m in messages]
    assert orjson.loads(next(m.data for m in messages if m.event == "query_status")) == {
        "status": "pending",
        "index": 0,
    }
    async with _emulator(Scenario(answer="abcdef", chunk_size=3, garbage_after=1)) as emulator:
        _, _, messages = await _ask_until_stalled(emulator)
    assert messages[-1].data.endswith("{not json")


async def _ask_until_stalled(
    emulator: LabsEmulator,
) -> tuple[aiohttp.ClientResponse, bytes, list[SSEMessage]]:
    """Read until the stream stalls (a scenario fault goes silent), then let the client go."""
    parser = SSEParser()
    messages: list[SSEMessage] = []
    raw = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + "/rest/sse/perplexity_ask", json=_body()) as response,
    ):
        while True:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), 0.5)
            except TimeoutError:
                break
            if not chunk:
                break
            raw += chunk
            messages += parser.feed(chunk)
    return response, raw, messages


async def test_a_client_leaving_a_stalled_answer_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with _emulator(Scenario(answer="abcdefghij", chunk_size=3, stall_after=1)) as emulator:
        _, _, messages = await _ask_until_stalled(emulator)
        assert _fold(messages) == {"output": "abc", "citations": [], "final": False}
        await asyncio.sleep(0.2)  # the handler sees the client gone at its next look
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_dropped_answer_ends_the_body_early_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with (
        _emulator(Scenario(answer="abcdefghij", chunk_size=3, drop_after=2)) as emulator,
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + "/rest/sse/perplexity_ask", json=_body()) as response,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_stopping_the_emulator_ends_a_stalled_answer() -> None:
    emulator = _emulator(Scenario(answer="abc", chunk_size=1, stall_after=0))
    await emulator.start()
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + "/rest/sse/perplexity_ask", json=_body()) as response,
    ):
        assert response.status == 200
        await asyncio.wait_for(emulator.stop(), 5)
        # The stalled answer ends with the server: the client reads an empty, finished body.
        assert await asyncio.wait_for(response.read(), 5) == b""


@pytest.mark.parametrize(
    ("output", "model", "final", "expected"),
    [
        ("plain answer", "sonar", False, ("", "plain answer")),
        ("<think>plan</think>\n\nanswer", "sonar", True, ("plan", "answer")),
        ("<think>plan</th", "sonar-reasoning", False, ("plan", "")),
        ("implicit plan", "r1-1776", False, ("implicit plan", "")),
        ("implicit plan</think>ans", "r1-1776", False, ("implicit plan", "ans")),
        ("never closed", "r1-1776", True, ("", "never closed")),
        # A frame shorter than "<think>" may still open a think section: nothing is said yet.
        ("<thi", "sonar-reasoning", False, ("", "")),
        ("  <", "sonar", False, ("", "")),
        ("<thi", "sonar", True, ("", "<thi")),
        ("<b>bold", "sonar", False, ("", "<b>bold")),
    ],
)
def test_split_reasoning_reads_output_as_the_stream_decoder_does(
    output: str, model: str, final: bool, expected: tuple[str, str]
) -> None:
    assert split_reasoning(output, model, final=final) == expected


async def test_the_variant_can_change_while_serving_and_reset_restores_the_first() -> None:
    first = WebVariant(newline="\n")
    async with _emulator(Scenario(answer="Hi."), web_variant=first) as emulator:
        emulator.web.variant = WebVariant(stream="text")
        _, _, messages = await _ask(emulator.base_url, _body())
        assert "text" in orjson.loads(messages[0].data)
        emulator.reset()
        assert emulator.web.variant == first
        assert emulator.web.asks == 0
        assert emulator.requests == []
