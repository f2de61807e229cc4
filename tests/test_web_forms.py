"""Our client reads every form of the web app's stream: whatever the form, the same answer.

Properties over the forms the record shows (``docs/web_transport.md``): blocks with ``diff_block`` patches
or whole snapshots, a ``workflow_block``, the ``text`` form's step list beside snapshots, either source
block or both, CRLF or LF, with or without ``event:`` lines, split anywhere. The streams are the
emulator's renderer's (itself judged by literal shapes in ``test_emulator_web.py``), framed here; the
record's own fixtures are read literally below.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator.script import Emit, LabsRequest, Scenario
from langchain_pplx_labs.emulator.web import WebRenderer, WebVariant
from langchain_pplx_labs.errors import PerplexityLabsRateLimitError, PerplexityLabsServerError
from langchain_pplx_labs.events import Finished, ReasoningDelta, StreamEvent, TextDelta
from langchain_pplx_labs.web.codec import WebDecoder, message_json
from langchain_pplx_labs.web.sse import SSEParser

FORMS: dict[str, dict[str, Any]] = {
    "diff": {"use_schematized_api": True, "supported_block_use_cases": ["answer_modes", "diff_blocks"]},
    "snapshot": {"use_schematized_api": True, "send_back_text_in_streaming_api": False},
    "text": {"use_schematized_api": False, "send_back_text_in_streaming_api": True},
    "plain": {},  # neither flag: helallao's ask
}
VARIANTS = [
    WebVariant(),
    WebVariant(sources="web_result_block"),
    WebVariant(sources="sources_mode_block", final_marker="status"),
    WebVariant(answer_block="workflow_block", final_marker="final"),
    WebVariant(end_of_stream=False),
]


def _stream(
    scenario: Scenario, model: str, form: str, variant: WebVariant, *, newline: str, event_lines: bool
) -> bytes:
    body = {"query_str": "Capital of France?", "params": {"model_preference": model, **FORMS[form]}}
    payload = {"model": model, "messages": [{"role": "user", "content": "Capital of France?"}]}
    request = LabsRequest(payload, web_body=body)
    renderer = WebRenderer(variant, request, body["params"])
    out = []
    for step in scenario.steps(request):
        assert isinstance(step, Emit)
        for message in renderer.render(step.data):
            head = f"event: message{newline}" if event_lines else ""
            out.append(f"{head}data: {json.dumps(message)}{newline}{newline}")
    if variant.end_of_stream:
        out.append(f"event: end_of_stream{newline}data: {{}}{newline}{newline}")
    return "".join(out).encode()


def _read(raw: bytes, cuts: list[int]) -> dict[str, Any]:
    parser, decoder = SSEParser(), WebDecoder()
    events: list[StreamEvent] = []
    pieces = [raw[a:b] for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)]
    messages = [m for piece in pieces for m in parser.feed(piece)] + parser.close()
    for message in messages:
        data = message_json(message)
        events += decoder.feed(data) if data is not None else decoder.finish()
    events += decoder.finish()
    ends = [e for e in events if isinstance(e, Finished)]
    assert len(ends) == 1  # sources once, with the end
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    return {
        "answer": "".join(deltas),
        "reasoning": "".join(e.text for e in events if isinstance(e, ReasoningDelta)),
        "sources": ends[0].sources,
        "deltas": len(deltas),
    }


words = st.text(st.characters(codec="utf-8", exclude_characters="<\r"), min_size=1, max_size=60)
sources = st.lists(
    st.one_of(
        st.sampled_from(["https://a.example/1", "https://b.example/2", "https://c.example/3"]),
        st.builds(lambda n: {"url": f"https://d.example/{n}", "title": f"Page {n}"}, st.integers(0, 9)),
    ),
    max_size=3,
    unique_by=lambda c: c if isinstance(c, str) else c["url"],
)


@settings(max_examples=60, deadline=None)
@given(
    answer=words.filter(lambda s: s.strip()),
    reasoning=words.filter(lambda s: s.strip() and "</think>" not in s),
    citations=sources,
    chunk=st.integers(1, 25),
    model=st.sampled_from(["turbo", "pplx_reasoning", "claude45sonnetthinking"]),
    form=st.sampled_from(sorted(FORMS)),
    variant=st.sampled_from(VARIANTS),
    newline=st.sampled_from(["\r\n", "\n"]),
    event_lines=st.booleans(),
    cuts=st.lists(st.integers(0, 4000), max_size=6),
)
def test_every_form_gives_the_same_answer_reasoning_and_sources(
    answer: str,
    reasoning: str,
    citations: list[Any],
    chunk: int,
    model: str,
    form: str,
    variant: WebVariant,
    newline: str,
    event_lines: bool,
    cuts: list[int],
) -> None:
    scenario = Scenario(answer=answer, reasoning=reasoning, citations=citations, chunk_size=chunk)
    reference = _stream(scenario, model, "diff", WebVariant(), newline="\r\n", event_lines=True)
    raw = _stream(scenario, model, form, variant, newline=newline, event_lines=event_lines)
    expected = _read(reference, [])
    read = _read(raw, sorted(c for c in cuts if c < len(raw)))
    assert read["answer"] == expected["answer"] == answer.lstrip()
    assert read["reasoning"] == expected["reasoning"]
    assert expected["reasoning"] == (reasoning.lstrip() if model != "turbo" else "")
    assert read["sources"] == expected["sources"]
    assert [s.url for s in read["sources"]] == [c if isinstance(c, str) else c["url"] for c in citations]


def test_a_chunk_appended_is_its_own_delta_in_every_form() -> None:
    scenario = Scenario(answer="abcdefghij", citations=[], chunk_size=3)
    for form in FORMS:
        raw = _stream(scenario, "turbo", form, WebVariant(), newline="\r\n", event_lines=True)
        assert _read(raw, [])["deltas"] == 4, form


# -- the record's own fixtures, read literally ------------------------------------------------------------


def _feed(*messages: dict[str, Any]) -> tuple[str, list[StreamEvent]]:
    decoder = WebDecoder()
    events = [event for message in messages for event in decoder.feed(message)] + decoder.finish()
    return "".join(e.text for e in events if isinstance(e, TextDelta)), events


def test_henrique_coders_workflow_block_and_its_diff_without_a_usage() -> None:
    # perplexity-webui-scraper tests/test_parser.py at 0ff78647: the diff names no intended_usage.
    initial = {
        "blocks": [
            {
                "intended_usage": "workflow_root",
                "workflow_block": {
                    "status": "WORKFLOW_EXECUTING_STEPS",
                    "steps": [
                        {
                            "items": [
                                {
                                    "payload": {
                                        "text_payload": {
                                            "text": "",
                                            "chunks": ["Pong! How can I help you to"],
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        ],
        "text_completed": False,
        "final_sse_message": False,
    }
    update = {
        "blocks": [
            {
                "diff_block": {
                    "field": "workflow_block",
                    "patches": [
                        {"op": "replace", "path": "/status", "value": "WORKFLOW_COMPLETED"},
                        {
                            "op": "replace",
                            "path": "/steps/0/items/0/payload/text_payload/text",
                            "value": "Pong! How can I help you today?",
                        },
                        {
                            "op": "add",
                            "path": "/steps/0/items/0/payload/text_payload/chunks/1",
                            "value": "day?",
                        },
                    ],
                }
            }
        ],
        "text_completed": True,
        "final_sse_message": True,
    }
    text, _ = _feed(initial, update)
    assert text == "Pong! How can I help you today?"


def test_henrique_coders_markdown_snapshots_and_web_results() -> None:
    first = {
        "blocks": [
            {
                "web_result_block": {
                    "progress": "IN_PROGRESS",
                    "web_results": [{"name": "Example", "url": "https://example.com", "snippet": "Source"}],
                }
            },
            {"markdown_block": {"progress": "IN_PROGRESS", "chunks": ["P"], "chunk_starting_offset": 0}},
        ]
    }
    last = {
        "blocks": [
            {
                "markdown_block": {
                    "progress": "DONE",
                    "chunks": ["P", "ONG."],
                    "chunk_starting_offset": 0,
                    "answer": "PONG.",
                }
            }
        ],
        "text_completed": True,
        "final": True,
    }
    text, events = _feed(first, last)
    assert text == "PONG."
    assert [e.text for e in events if isinstance(e, TextDelta)] == ["P", "ONG."]
    (end,) = [e for e in events if isinstance(e, Finished)]
    assert end.sources[0].model_dump(exclude_none=True) == {
        "url": "https://example.com",
        "title": "Example",
        "snippet": "Source",
    }


def test_snapshots_with_an_offset_and_without_one() -> None:
    # An offset places the chunks (henrique-coder's reader); without one, chunks that do not continue the
    # text are new ones (perplexity-web-mcp-cli's tests: "blocks only chunks accumulate across frames").
    offset = [
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "markdown_block": {"chunks": ["An", "swer"], "chunk_starting_offset": 0},
                }
            ]
        },
        {
            "blocks": [
                {
                    "intended_usage": "ask_text",
                    "markdown_block": {"chunks": [" text"], "chunk_starting_offset": 2},
                }
            ]
        },
    ]
    assert _feed(*offset)[0] == "Answer text"
    appended = [
        {"blocks": [{"intended_usage": "ask_text", "markdown_block": {"chunks": ["Answer"]}}]},
        {"final": True, "blocks": [{"intended_usage": "ask_text", "markdown_block": {"chunks": [" text"]}}]},
    ]
    assert _feed(*appended)[0] == "Answer text"


def test_perplexity_notebooklms_step_list_with_json_in_json() -> None:
    inner = {
        "answer": "Final answer",
        "web_results": [{"name": "R", "url": "https://r.example", "snippet": "s"}],
    }
    steps = [
        {
            "step_type": "SEARCH_RESULTS",
            "content": {"web_results": [{"name": "Q", "url": "https://q.example"}]},
        },
        {"step_type": "FINAL", "content": {"answer": json.dumps(inner)}},
    ]
    text, events = _feed({"text": json.dumps(steps), "final": True})
    assert text == "Final answer"
    (end,) = [e for e in events if isinstance(e, Finished)]
    assert [s.url for s in end.sources] == ["https://r.example"]


def test_a_text_form_message_without_final_gives_its_search_results_at_the_end() -> None:
    steps = [
        {
            "step_type": "SEARCH_RESULTS",
            "content": {"web_results": [{"name": "Q", "url": "https://q.example"}]},
        }
    ]
    markdown = {"intended_usage": "ask_text", "markdown_block": {"progress": "IN_PROGRESS", "chunks": ["Hi"]}}
    text, events = _feed({"text": json.dumps(steps), "blocks": [markdown]})
    assert text == "Hi"
    assert [s.url for s in events[-1].sources] == ["https://q.example"]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            {
                "error_code": "FREE_TIER_RATE_LIMITED",
                "experience": "upgrade",
                "status": "failed",
                "final_sse_message": True,
            },
            PerplexityLabsRateLimitError,
        ),
        ({"status": "failed", "text": "Error in processing query."}, PerplexityLabsServerError),
    ],
)
def test_failed_messages_of_the_record_raise(message: dict[str, Any], kind: type[Exception]) -> None:
    with pytest.raises(kind):
        WebDecoder().feed(message)


# -- a cassette per form, written by hand from the record (cassettes/test_web_forms/, provenance public-report)


def test_public_markdown_snapshots(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("Ping?")
    assert message.content == "PONG."
    assert message.response_metadata["search_results"] == [
        {"url": "https://example.com", "title": "Example", "snippet": "Source"}
    ]


def test_public_workflow_block(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    chunks = [str(chunk.content) for chunk in pplx_labs_cassette.stream("Ping?")]
    assert "".join(chunks) == "Pong! How can I help you today?"


def test_public_text_steps(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    message = pplx_labs_cassette.invoke("Final?")
    assert message.content == "Final answer"
    assert message.response_metadata["citations"] == ["u"]
    assert message.response_metadata["search_results"] == [{"url": "u", "title": "R", "snippet": "s"}]
