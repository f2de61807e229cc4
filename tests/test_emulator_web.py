"""The emulator's web-app side against the public record, through a real aiohttp client on a real port.

Requests are the record's own bodies (``webrecord``: gpt4free 8.8.6, perplexity-webui-scraper 1.2.1,
perplexity-notebooklm 0.5.0, helallao 1.0.5), and what comes back is judged by literal shapes and by
``webrecord.read_stream``, a strict reader written for these tests: never by our client's codec.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import orjson
import pytest
import webrecord

from langchain_pplx_labs import LabsProtocol
from langchain_pplx_labs.emulator import LabsEmulator, Scenario
from langchain_pplx_labs.emulator.web import WebVariant, split_reasoning, transcript_turns

ANSWER = "Paris is the capital of France [1]."
URLS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
COOKIE = {"__Secure-next-auth.session-token": "emulator-test-token"}
Frames = list[tuple[str, Any]]
ENVELOPE = {
    "backend_uuid",
    "context_uuid",
    "uuid",
    "frontend_context_uuid",
    "display_model",
    "mode",
    "read_write_token",
}
RESULTS = [{"name": "", "url": URLS[0], "snippet": ""}, {"name": "", "url": URLS[1], "snippet": ""}]
"""Bare-URL sources: nothing to name them by (titled ones are named: test_one_source_block_variants)."""


def _emulator(scenario: Scenario, **options: Any) -> LabsEmulator:
    return LabsEmulator(lambda _request: scenario, **options)


async def _ask(
    base_url: str,
    body: Any,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    path: str = webrecord.ASK,
) -> tuple[aiohttp.ClientResponse, bytes, Frames]:
    async with aiohttp.ClientSession(cookies=cookies) as session:
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        sent = webrecord.BROWSER_HEADERS | (headers or {})
        async with session.post(base_url + path, data=data, headers=sent) as response:
            raw = await response.read()
    return response, raw, webrecord.frames(raw)


def _messages(frames: Frames) -> list[dict[str, Any]]:
    """The ``message`` events' JSON, without the envelope every message repeats and the last one's
    related questions and images (test_web_threads reads those)."""
    messages = []
    for event, data in frames:
        if event != "message":
            continue
        kept = {
            key: value
            for key, value in data.items()
            if key not in ENVELOPE | {"thread_title", "thread_url_slug", "related_query_items"}
        }
        if isinstance(kept.get("blocks"), list):
            kept["blocks"] = [b for b in kept["blocks"] if b.get("intended_usage") != "media_items"]
        messages.append(kept)
    return messages


def _read(raw: bytes) -> dict[str, Any]:
    read = webrecord.read_stream(raw)
    return read["failed"] if read["failed"] is not None else {k: v for k, v in read.items() if k != "failed"}


# -- the forms, chosen by the request ---------------------------------------------------------------------


async def test_an_ask_listing_diff_blocks_gets_patches_each_chunk_at_its_index() -> None:
    async with _emulator(Scenario(answer=ANSWER, citations=URLS, chunk_size=10)) as emulator:
        response, raw, frames = await _ask(
            emulator.base_url, webrecord.diff_ask("Capital of France?", "experimental")
        )
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream; charset=utf-8"
    assert raw.startswith(b"event: message\r\ndata: {")
    assert raw.endswith(b"event: end_of_stream\r\ndata: {}\r\n\r\n")
    assert [event for event, _ in frames] == ["message"] * 4 + ["end_of_stream"]
    first = frames[0][1]
    assert first["display_model"] == "experimental"
    assert first["mode"] == "COPILOT"
    assert first["frontend_context_uuid"] == "c-1"
    assert _messages(frames) == [
        {
            "blocks": [
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
            ],
            "status": "PENDING",
            "text_completed": False,
            "final_sse_message": False,
        },
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "diff_block": {
                        "field": "markdown_block",
                        "patches": [{"op": "add", "path": "/chunks/1", "value": "he capital"}],
                    },
                }
            ],
            "status": "PENDING",
            "text_completed": False,
            "final_sse_message": False,
        },
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "diff_block": {
                        "field": "markdown_block",
                        "patches": [{"op": "add", "path": "/chunks/2", "value": " of France"}],
                    },
                }
            ],
            "status": "PENDING",
            "text_completed": False,
            "final_sse_message": False,
        },
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "diff_block": {
                        "field": "markdown_block",
                        "patches": [
                            {"op": "add", "path": "/chunks/3", "value": " [1]."},
                            {"op": "replace", "path": "/progress", "value": "DONE"},
                            {"op": "add", "path": "/answer", "value": ANSWER},
                        ],
                    },
                },
                {
                    "intended_usage": "web_results",
                    "web_result_block": {"progress": "DONE", "web_results": RESULTS},
                },
                {
                    "intended_usage": "sources_answer_mode",
                    "sources_mode_block": {"progress": "DONE", "web_results": RESULTS},
                },
            ],
            "status": "COMPLETED",
            "text_completed": True,
            "final_sse_message": True,
        },
    ]
    assert _read(raw) == {"answer": ANSWER, "plan": "", "sources": URLS, "final": True}
    assert emulator.requests[-1] == {
        "version": "2.18",
        "source": "default",
        "model": "sonar",  # the web's "experimental", mapped back
        "messages": [{"role": "user", "content": "Capital of France?"}],
    }
    assert emulator.web.asks == 1
    assert emulator.web.headers[-1]["x-perplexity-request-reason"] == "perplexity-query-state-provider"


LONG = "".join(f"word{n} " for n in range(400))  # 3,090 characters: 129 frames of 24


async def test_every_patch_applies_strictly_so_an_index_off_by_one_cannot_pass() -> None:
    # The strict reader refuses an index past the end and a wrong index garbles the text: either fails here.
    async with _emulator(Scenario(answer=LONG, citations=[], chunk_size=24)) as emulator:
        _, raw, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
    patches = [p for m in _messages(frames) for block in m["blocks"] for p in block["diff_block"]["patches"]]
    appended = [p["path"] for p in patches if p["path"].startswith("/chunks/")]
    assert appended == [f"/chunks/{n}" for n in range(1, 129)]
    assert _read(raw)["answer"] == LONG
    assert (
        max(len(json.dumps(m)) for m in _messages(frames)[:-1]) < 400
    )  # each message: one 24-character piece
    with pytest.raises(webrecord.PatchError):
        webrecord.apply_patch({"chunks": ["a"]}, {"op": "add", "path": "/chunks/2", "value": "b"})


async def test_an_ask_for_blocks_without_diff_blocks_gets_whole_snapshots() -> None:
    async with _emulator(Scenario(answer=ANSWER, citations=URLS[:1], chunk_size=20)) as emulator:
        _, raw, frames = await _ask(emulator.base_url, webrecord.block_ask("Capital of France?"))
    assert _messages(frames) == [
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "markdown_block": {
                        "progress": "IN_PROGRESS",
                        "chunks": [ANSWER[:20]],
                        "chunk_starting_offset": 0,
                    },
                }
            ],
            "status": "PENDING",
            "text_completed": False,
            "final_sse_message": False,
        },
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "markdown_block": {
                        "progress": "DONE",
                        "chunks": [ANSWER[:20], ANSWER[20:]],
                        "chunk_starting_offset": 0,
                        "answer": ANSWER,
                    },
                },
                {
                    "intended_usage": "web_results",
                    "web_result_block": {"progress": "DONE", "web_results": RESULTS[:1]},
                },
                {
                    "intended_usage": "sources_answer_mode",
                    "sources_mode_block": {"progress": "DONE", "web_results": RESULTS[:1]},
                },
            ],
            "status": "COMPLETED",
            "text_completed": True,
            "final_sse_message": True,
        },
    ]
    assert _read(raw) == {"answer": ANSWER, "plan": "", "sources": URLS[:1], "final": True}


def _steps(message: dict[str, Any]) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = json.loads(message["text"])
    return steps


async def test_an_ask_for_text_gets_a_step_list_in_every_message_and_final_json_in_json() -> None:
    async with _emulator(Scenario(answer=ANSWER, citations=URLS, chunk_size=20)) as emulator:
        _, raw, frames = await _ask(emulator.base_url, webrecord.text_ask("Capital of France?"))
    first, last = _messages(frames)
    assert _steps(first) == []
    assert first["blocks"] == [
        {
            "intended_usage": "ask_text",
            "markdown_block": {
                "progress": "IN_PROGRESS",
                "chunks": [ANSWER[:20]],
                "chunk_starting_offset": 0,
            },
        }
    ]
    search, final = _steps(last)
    assert search == {"step_type": "SEARCH_RESULTS", "content": {"web_results": RESULTS}}
    assert final["step_type"] == "FINAL"
    assert json.loads(final["content"]["answer"]) == {
        "answer": ANSWER,
        "web_results": RESULTS,
        "chunks": [ANSWER[:20], ANSWER[20:]],
    }
    assert last["final_sse_message"] is True
    assert _read(raw) == {"answer": ANSWER, "plan": "", "sources": URLS, "final": True}


async def test_an_ask_without_either_flag_gets_text_as_helallaos_client_splits_it() -> None:
    async with _emulator(Scenario(answer="Hi there.", citations=URLS[:1], chunk_size=4)) as emulator:
        _, raw, _ = await _ask(emulator.base_url, webrecord.plain_ask("Hi"))
    # helallao 1.0.5: split on CRLF CRLF, a message is "event: message\r\ndata: " and JSON whose text is JSON.
    pieces = [piece.decode() for piece in raw.split(b"\r\n\r\n") if piece]
    head = "event: message\r\ndata: "
    assert all(piece.startswith(head) for piece in pieces[:-1])
    assert pieces[-1].startswith("event: end_of_stream\r\n")
    texts = [json.loads(json.loads(piece[len(head) :])["text"]) for piece in pieces[:-1]]
    assert texts[0] == []
    assert [step["step_type"] for step in texts[-1]] == ["SEARCH_RESULTS", "FINAL"]
    assert json.loads(texts[-1][-1]["content"]["answer"])["answer"] == "Hi there."
    # perplexity-subscription-mcp 0.1.2 reads the answer of the same messages' ask_text markdown_block.
    blocks = json.loads(pieces[-2][len(head) :])["blocks"]
    assert blocks[0]["markdown_block"]["progress"] == "DONE"
    assert blocks[0]["markdown_block"]["answer"] == "Hi there."


@pytest.mark.parametrize(
    ("params", "form"),
    [
        ({"use_schematized_api": True, "send_back_text_in_streaming_api": False}, "diff"),
        ({"use_schematized_api": True, "send_back_text_in_streaming_api": True}, "text"),
        ({"use_schematized_api": False, "send_back_text_in_streaming_api": False}, "text"),
        ({"use_schematized_api": True, "supported_block_use_cases": ["answer_modes"]}, "snapshot"),
    ],
)
async def test_the_flags_choose_the_form(params: dict[str, Any], form: str) -> None:
    async with _emulator(Scenario(answer="Done.", citations=[])) as emulator:
        _, _, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q", **params))
    (message,) = _messages(frames)
    block = message["blocks"][0]
    seen = "text" if "text" in message else "diff" if "diff_block" in block else "snapshot"
    assert seen == form


@pytest.mark.parametrize("model", ["pplx_reasoning", "claude45sonnetthinking", "gpt5_thinking", "r1"])
@pytest.mark.parametrize("ask", [webrecord.diff_ask, webrecord.block_ask, webrecord.text_ask])
async def test_reasoning_models_stream_a_plan_before_the_answer(model: str, ask: Any) -> None:
    scenario = Scenario(answer="Paris.", reasoning="Recall the capital.", chunk_size=6, citations=[])
    async with _emulator(scenario) as emulator:
        _, raw, frames = await _ask(emulator.base_url, ask("Capital?", model))
    first = _messages(frames)[0]["blocks"][0]
    assert first["intended_usage"] == "pro_search_steps"
    assert _read(raw) == {"answer": "Paris.", "plan": "Recall the capital.", "sources": [], "final": True}


async def test_a_model_without_a_plan_streams_none() -> None:
    scenario = Scenario(answer="Paris.", reasoning="Recall the capital.", chunk_size=6, citations=[])
    async with _emulator(scenario) as emulator:
        _, raw, _ = await _ask(emulator.base_url, webrecord.diff_ask("Capital?", "turbo"))
    assert _read(raw)["plan"] == ""


async def test_the_plan_as_patches_grows_one_goal_then_is_done() -> None:
    scenario = Scenario(answer="Paris.", reasoning="Recall the capital.", chunk_size=6, citations=[])
    async with _emulator(scenario) as emulator:
        _, _, frames = await _ask(emulator.base_url, webrecord.diff_ask("Capital?", "r1"))
    assert emulator.requests[-1]["model"] == "r1-1776"  # the web's "r1" maps back
    plans = [b for m in _messages(frames) for b in m["blocks"] if b["intended_usage"] == "pro_search_steps"]
    assert plans[0] == {
        "intended_usage": "pro_search_steps",
        "diff_block": {
            "field": "plan_block",
            "patches": [
                {"op": "replace", "path": "", "value": {"progress": "IN_PROGRESS", "goals": []}},
                {"op": "add", "path": "/goals/0", "value": "Recall"},
            ],
        },
    }
    assert plans[-1]["diff_block"]["patches"] == [{"op": "replace", "path": "/progress", "value": "DONE"}]


# -- the variants: where the record disagrees -------------------------------------------------------------


async def test_the_workflow_variant_patches_a_workflow_block_as_henrique_coders_tests_show() -> None:
    variant = WebVariant(answer_block="workflow_block")
    async with _emulator(
        Scenario(answer="Pong! How can I help you today?", chunk_size=27), web_variant=variant
    ) as e:
        _, raw, frames = await _ask(e.base_url, webrecord.block_ask("Ping"))
    first, last = (m["blocks"][0] for m in _messages(frames))
    assert first == {
        "intended_usage": "workflow_root",
        "workflow_block": {
            "status": "WORKFLOW_EXECUTING_STEPS",
            "steps": [
                {
                    "items": [
                        {"payload": {"text_payload": {"text": "", "chunks": ["Pong! How can I help you to"]}}}
                    ]
                }
            ],
        },
    }
    assert last["diff_block"] == {
        "field": "workflow_block",
        "patches": [
            {"op": "add", "path": "/steps/0/items/0/payload/text_payload/chunks/1", "value": "day?"},
            {"op": "replace", "path": "/status", "value": "WORKFLOW_COMPLETED"},
            {
                "op": "replace",
                "path": "/steps/0/items/0/payload/text_payload/text",
                "value": "Pong! How can I help you today?",
            },
        ],
    }
    assert _read(raw)["answer"] == "Pong! How can I help you today?"


async def test_the_older_text_variant_repeats_the_whole_answer_with_final_true_and_lf_lines() -> None:
    variant = WebVariant(text="answer", final_marker="final", end_of_stream=False, newline="\n")
    async with _emulator(
        Scenario(answer=ANSWER, citations=URLS[:1], chunk_size=20), web_variant=variant
    ) as e:
        _, raw, frames = await _ask(e.base_url, webrecord.text_ask("Capital of France?"))
    assert b"\r" not in raw
    first, last = _messages(frames)
    assert first == {
        "text": json.dumps(
            {"answer": ANSWER[:20], "chunks": [ANSWER[:20]], "web_results": []}, separators=(",", ":")
        ),
        "blocks": [],
        "final": False,
    }
    assert json.loads(last["text"]) == {
        "answer": ANSWER,
        "chunks": [ANSWER[:20], ANSWER[20:]],
        "web_results": RESULTS[:1],
    }
    assert last["final"] is True
    assert _read(raw) == {"answer": ANSWER, "plan": "", "sources": URLS[:1], "final": True}


@pytest.mark.parametrize(
    ("sources", "usages"),
    [("web_result_block", ["web_results"]), ("sources_mode_block", ["sources_answer_mode"])],
)
async def test_one_source_block_variants(sources: Any, usages: list[str]) -> None:
    variant = WebVariant(sources=sources)
    async with _emulator(
        Scenario(answer="A", citations=URLS, citation_titles=True), web_variant=variant
    ) as e:
        _, raw, frames = await _ask(e.base_url, webrecord.diff_ask("Q"))
    blocks = _messages(frames)[-1]["blocks"]
    assert [b["intended_usage"] for b in blocks[1:] if b["intended_usage"] != "media_items"] == usages
    results = blocks[1][sources]["web_results"]
    assert results == [
        {"name": "Paris", "url": URLS[0], "snippet": ""},
        {"name": "Paris", "url": URLS[1], "snippet": ""},
    ]
    assert _read(raw)["sources"] == URLS


async def test_the_status_only_marker_and_keep_alive_comments() -> None:
    variant = WebVariant(final_marker="status", comments=True)
    async with _emulator(Scenario(answer="Done."), web_variant=variant) as emulator:
        _, raw, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
    assert raw.startswith(b": keep-alive\r\nevent: message\r\n")
    messages = _messages(frames)
    assert all("final_sse_message" not in m for m in messages)
    assert messages[-1]["status"] == "COMPLETED"
    assert frames[-1][0] == "end_of_stream"


async def test_failure_is_the_web_apps_failed_message() -> None:
    scenario = Scenario(answer=ANSWER, fail="Error in processing query.", fail_after=1, chunk_size=5)
    async with _emulator(scenario) as emulator:
        _, raw, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
    assert [event for event, _ in frames] == ["message", "message", "end_of_stream"]
    assert frames[1][1] == {"status": "failed", "text": "Error in processing query."}
    assert _read(raw) == {"status": "failed", "text": "Error in processing query."}


async def test_an_anonymous_ask_is_rate_limited_and_a_signed_in_one_answered() -> None:
    variant = WebVariant(anonymous="rate_limited")
    async with _emulator(Scenario(answer="Hi."), web_variant=variant) as emulator:
        _, _, anonymous = await _ask(emulator.base_url, webrecord.diff_ask("Hi", "turbo"))
        _, raw, _ = await _ask(emulator.base_url, webrecord.diff_ask("Hi", "pplx_pro"), cookies=COOKIE)
        _, bearer, _ = await _ask(
            emulator.base_url,
            webrecord.diff_ask("Hi"),
            headers={"Authorization": "Bearer emulator-test-token"},
        )
    # henrique-coder's tests/test_parser.py (0ff78647), word for word.
    assert anonymous[0][1] == {
        "status": "failed",
        "error_code": "FREE_TIER_RATE_LIMITED",
        "experience": "upgrade",
        "final_sse_message": True,
    }
    assert _read(raw)["answer"] == _read(bearer)["answer"] == "Hi."
    assert [r["model"] for r in emulator.requests] == ["turbo", "pplx_pro", "turbo"]


# -- the routes beside the ask ---------------------------------------------------------------------------


async def test_the_session_is_empty_anonymous_and_names_a_pro_user_with_a_cookie_or_a_bearer_token() -> None:
    async with LabsEmulator() as emulator, aiohttp.ClientSession() as session:
        async with session.get(emulator.base_url + "/api/auth/session") as response:
            assert response.status == 200
            assert await response.json() == {}
        async with session.get(emulator.base_url + "/api/auth/session", cookies=COOKIE) as response:
            by_cookie = await response.json()
        bearer = {"Authorization": "Bearer emulator-test-token"}
        async with session.get(emulator.base_url + "/api/auth/session", headers=bearer) as response:
            by_token = await response.json()
    assert by_cookie == by_token
    assert set(by_cookie) == {"user", "expires"}
    user = by_cookie["user"]
    assert user["id"].startswith("emulator-user-")
    assert {"name", "email"} <= set(user)
    # perplexity-webui-scraper 1.2.1 normalises these to the account's tier.
    assert (user["subscription_tier"], user["payment_tier"], user["subscription_status"]) == (
        "pro",
        "pro",
        "active",
    )
    assert emulator.web.session_checks == 3


async def test_the_routes_clients_call_beside_the_ask() -> None:
    async with (
        _emulator(Scenario(answer=ANSWER, citations=URLS)) as emulator,
        aiohttp.ClientSession() as session,
    ):
        base = emulator.base_url
        async with session.get(base + "/search/new", params={"q": "Capital of France?"}) as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "Capital of France?" in await response.text()
        async with session.get(base + "/rest/user/settings") as response:
            assert response.status == 401
        async with session.get(base + "/rest/user/settings", cookies=COOKIE) as response:
            settings = await response.json()
        assert (settings["subscription_tier"], settings["subscription_status"]) == ("pro", "active")
        assert {"default_model", "query_count", "connector_limits"} <= set(settings)
        async with session.get(base + "/rest/models/config") as response:
            config = await response.json()
        assert config["models"]["turbo"]["mode"] == "copilot"
        assert any(row.get("reasoning_model") == "pplx_reasoning" for row in config["config"])
        async with session.get(base + "/rest/rate-limit/all", cookies=COOKIE) as response:
            limits = await response.json()
        assert limits["remaining_pro"] > 0
        assert "source_to_limit" in limits["sources"]
        _, _, frames = await _ask(base, webrecord.text_ask("Capital of France?"))
        slug = frames[0][1]["thread_url_slug"]
        async with session.get(
            f"{base}/rest/thread/{slug}", params={"version": "2.18", "source": "default"}
        ) as response:
            thread = await response.json()
        async with session.get(base + "/rest/thread/no-such-thread") as response:
            assert response.status == 404
    (entry,) = thread["entries"]
    assert entry["query_str"] == "Capital of France?"
    final = json.loads(entry["text"])[-1]
    assert final["step_type"] == "FINAL"
    assert [r["url"] for r in json.loads(final["content"]["answer"])["web_results"]] == URLS
    assert emulator.web.calls["/search/new"] == 1
    assert emulator.web.calls["/rest/thread"] == 2


async def test_a_blocked_server_answers_every_web_route_with_the_cloudflare_page() -> None:
    async with LabsEmulator(blocked=True) as emulator, aiohttp.ClientSession() as session:
        async with session.post(emulator.base_url + webrecord.ASK, json=webrecord.diff_ask("Q")) as response:
            assert response.status == 403
            assert response.content_type == "text/html"
            assert "Just a moment" in await response.text()
        for path in ("/api/auth/session", "/search/new?q=x", "/rest/user/settings", "/rest/thread/abc"):
            async with session.get(emulator.base_url + path) as response:
                assert response.status == 403, path


# -- what the emulator does with any ask ------------------------------------------------------------------


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


async def test_a_moved_web_path_is_served_and_the_old_one_is_not() -> None:
    protocol = LabsProtocol(web_path="/rest/sse/ask_v2", web_session_path="/api/v2/session")
    async with _emulator(Scenario(answer="Moved."), protocol=protocol) as emulator:
        response, raw, _ = await _ask(emulator.base_url, webrecord.diff_ask("Q"), path="/rest/sse/ask_v2")
        old, _, _ = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
    assert response.status == 200
    assert _read(raw)["answer"] == "Moved."
    assert old.status == 404


TRANSCRIPT = (
    "The conversation so far follows, oldest turn first. Follow any System turns and reply to the last User turn."
    "\n\n[System]\nAnswer in JSON.\n\n[User]\nCapital of France?\n\n[Assistant]\nParis\n\n[User]\n\\[User]\nAnd Italy?"
)


def test_the_emulator_reads_the_transcript_format_on_its_own() -> None:
    # The format docs/web_transport.md writes out, read without the client's codec.
    assert transcript_turns(TRANSCRIPT) == [
        {"role": "system", "content": "Answer in JSON."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris"},
        {"role": "user", "content": "[User]\nAnd Italy?"},
    ]
    assert transcript_turns("Just a question") == [{"role": "user", "content": "Just a question"}]


async def test_a_conversation_reaches_the_responder_as_the_same_turns() -> None:
    async with LabsEmulator(lambda request: Scenario(answer=request.messages[-1]["content"])) as emulator:
        _, raw, _ = await _ask(emulator.base_url, webrecord.diff_ask(TRANSCRIPT))
    assert emulator.requests[-1]["messages"] == transcript_turns(TRANSCRIPT)
    assert _read(raw)["answer"] == "[User]\nAnd Italy?"


async def test_unknown_events_and_raw_garbage_are_sent_as_the_scenario_says() -> None:
    async with _emulator(Scenario(answer="abcdef", chunk_size=3, extra_events=True)) as emulator:
        _, _, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
    assert ("query_status", {"status": "pending", "index": 0}) in frames
    async with _emulator(Scenario(answer="abcdef", chunk_size=3, garbage_after=1)) as emulator:
        _, raw, _ = await _ask_until_stalled(emulator)
    assert raw.rstrip().endswith(b"{not json")


async def _ask_until_stalled(emulator: LabsEmulator) -> tuple[aiohttp.ClientResponse, bytes, Frames]:
    """Read until the stream stalls (a scenario fault goes silent), then let the client go."""
    raw = b""
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + webrecord.ASK, json=webrecord.diff_ask("Q")) as response,
    ):
        while True:
            try:
                chunk = await asyncio.wait_for(response.content.readany(), 0.5)
            except TimeoutError:
                break
            if not chunk:
                break
            raw += chunk
    return response, raw, webrecord.frames(raw)


async def test_a_client_leaving_a_stalled_answer_logs_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with _emulator(Scenario(answer="abcdefghij", chunk_size=3, stall_after=1)) as emulator:
        _, raw, _ = await _ask_until_stalled(emulator)
        assert _read(raw) == {"answer": "abc", "plan": "", "sources": [], "final": False}
        await asyncio.sleep(0.2)  # the handler sees the client gone at its next look
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_a_dropped_answer_ends_the_body_early_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="aiohttp")
    async with (
        _emulator(Scenario(answer="abcdefghij", chunk_size=3, drop_after=2)) as emulator,
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + webrecord.ASK, json=webrecord.diff_ask("Q")) as response,
    ):
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]


async def test_stopping_the_emulator_ends_a_stalled_answer() -> None:
    emulator = _emulator(Scenario(answer="abc", chunk_size=1, stall_after=0))
    await emulator.start()
    async with (
        aiohttp.ClientSession() as session,
        session.post(emulator.base_url + webrecord.ASK, json=webrecord.diff_ask("Q")) as response,
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
        emulator.web.variant = WebVariant(final_marker="final")
        _, _, frames = await _ask(emulator.base_url, webrecord.diff_ask("Q"))
        assert frames[0][1]["final"] is True
        emulator.reset()
        assert emulator.web.variant == first
        assert emulator.web.asks == 0
        assert emulator.web.threads == {}
        assert emulator.requests == []
