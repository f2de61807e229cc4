"""The gateway over ``transport="web"``: the gateway's own tests, rerun against the emulator's SSE endpoint.

The functions imported below are collected again here, where ``PPLX_LABS_TRANSPORT=web``: the
gateway's model asks the web app's endpoint, and the unmodified openai SDK (and langchain-openai,
langchain-perplexity) must see the same completions, streams, tool calls and errors.
"""

from __future__ import annotations

from typing import Any

import pytest
from openai.types import Model

# Rerun here over the web transport (the gateway's model reads PPLX_LABS_TRANSPORT). Left out: the drain
# test (it counts Labs sockets; a web answer has no drain, see below).
from test_gateway import (  # noqa: F401
    PARIS,
    ask,
    client,
    gateway,
    gateway_for,
    left_mid_answer,
    sdk_for,
    test_async_client_completes_and_streams,
    test_blocked_is_502,
    test_chat_openai_invokes_streams_and_calls_tools,
    test_chat_perplexity_fills_citations_on_invoke_and_stream,
    test_failure_mid_stream_ends_with_an_error_event,
    test_json_schema_response_format,
    test_labs_failure_is_502_with_its_text,
    test_no_usage_chunk_without_include_usage,
    test_perplexity_path_holds_the_stream_until_sources_are_known,
    test_reasoning_drop_leaves_the_thinking_out,
    test_reasoning_goes_to_reasoning_content,
    test_reasoning_inline_keeps_think_tags_in_content,
    test_rich_sources_become_search_results,
    test_stop_sequence_cuts_the_answer,
    test_streamed_tool_call,
    test_sync_completion_has_answer_sources_and_usage,
    test_sync_stream_ends_with_sources_usage_and_done,
    test_text_parts_and_history_reach_labs,
    test_timeout_is_504,
    test_tool_call_and_result_round_trip,
)

from langchain_pplx_labs.emulator import LabsEmulator

# The gateway's model asks over the web; afterwards, nothing went over Socket.IO.
pytestmark = pytest.mark.usefixtures("over_the_web")


def _listed_models(emulator: LabsEmulator, **overrides: Any) -> list[Model]:
    """What the openai SDK's ``models.list()`` gives from a gateway made with ``overrides``."""
    with gateway_for(emulator, **overrides) as running, sdk_for(running.root) as sdk:
        return list(sdk.models.list())


def test_models_lists_the_web_transports_models(emulator: LabsEmulator) -> None:
    models = _listed_models(emulator)
    # The web app's live list (the emulator's /rest/models/config picker rows), read once.
    assert [m.id for m in models] == [
        "turbo",
        "experimental",
        "claude45sonnet",
        "claude45sonnetthinking",
        "pplx_reasoning",
    ]
    assert emulator.web.calls["/rest/models/config"] == 1
    assert {m.owned_by for m in models} == {"perplexity"}
    assert {m.object for m in models} == {"model"}


def test_a_gateway_told_labs_lists_the_labs_models(emulator: LabsEmulator) -> None:
    # The environment says web; the operator's transport option wins, and so does its model list.
    models = _listed_models(emulator, model_options={"transport": "labs"})
    assert [m.id for m in models] == [
        "r1-1776",
        "sonar-pro",
        "sonar",
        "sonar-reasoning",
        "sonar-reasoning-pro",
    ]
    assert {m.owned_by for m in models} == {"perplexity-labs"}


def test_a_client_that_leaves_mid_answer_frees_its_place_at_once(emulator: LabsEmulator) -> None:
    # left_mid_answer asserts the next question's answer ("quick") came within the gateway's 1 s queue
    # timeout, on its one connection: the leaver's place was freed at once.
    with left_mid_answer(emulator):  # over the web its response is closed, nothing is drained
        assert emulator.web.asks == 2
        assert emulator.web.session_checks == 1  # the one warm connection asked both
        assert emulator.open_sockets == 0  # and nothing went over Socket.IO to be drained
