"""The Labs transport's model tests, rerun over ``transport="web"`` against the emulator's SSE endpoint.

The functions imported below are the Labs transport's own tests, collected again in this
module, where the ``model`` and ``amodel`` fixtures and ``PPLX_LABS_TRANSPORT`` say ``web``:
every model they use (the fixtures' and the ones they build) asks the emulator over its
Server-Sent Events endpoint, and must give the same answers, tool calls, parsed objects,
usage and sources.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

# Rerun here over the web transport (the fixtures below replace conftest's). Left out, because the web
# app does not work that way: r1-1776's unclosed think section (the web app streams its plan apart
# from the answer, so a bare answer is the answer).
from test_agent import (  # noqa: F401
    test_agent_stream_shows_each_step,
    test_langchain_create_agent_runs_two_tools_async,
    test_langgraph_create_react_agent_runs_two_tools,
)
from test_chat_model import (  # noqa: F401
    test_abatch_keeps_order_and_answers_each_question,
    test_ainvoke_sends_model_and_returns_answer,
    test_astream_chunks_add_up_to_ainvoke,
    test_batch_keeps_order_and_answers_each_question,
    test_chunk_types_are_ai_message_chunks,
    test_half_read_stream_collected_on_the_sync_loop_does_not_block_it,
    test_invoke_returns_answer_citations_and_metadata,
    test_r1_1776_reasoning_chunks_come_before_the_think_section_closes,
    test_reasoning_false_drops_thinking,
    test_reasoning_models_split_thinking_from_answer,
    test_source_objects_fill_search_results_and_citation_urls,
    test_stream_yields_several_chunks_that_add_up_to_invoke,
    test_sync_invoke_and_stream_from_async_test,
    test_sync_invoke_inside_a_running_event_loop,
)
from test_structured_output import (  # noqa: F401
    test_async_structured_output,
    test_each_schema_kind_and_method_parses,
    test_include_raw_with_a_broken_answer,
    test_include_raw_with_a_good_answer,
    test_json_mode_without_schema_returns_a_dict,
    test_typed_dict_answer_missing_a_key_is_reported,
    test_wrong_answer_raises_a_clear_output_parser_exception,
)
from test_tools import (  # noqa: F401
    test_anthropic_style_tool_choice_is_accepted,
    test_follow_tools_picks_the_fitting_tool_and_fills_arguments_from_the_question,
    test_invalid_call_keeps_error_and_raw_args_when_invoke_streams_internally,
    test_invalid_call_keeps_its_error_on_ainvoke_and_its_id_on_astream,
    test_invoke_and_stream_give_the_same_calls_and_content,
    test_schema_follower_calls_the_offered_tool_then_summarises,
    test_tool_choice_is_stated_in_the_instruction,
    test_tool_choice_none_sends_no_tools_and_parses_nothing,
    test_tool_results_go_back_to_labs_and_the_loop_continues,
    test_v1_stream_with_tools_and_citations_adds_up_to_invoke,
)

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator

# These tests ask Labs names over the web on purpose (what code written for Labs does); the warning that
# names the web models is tested in test_models_list.py.
pytestmark = pytest.mark.filterwarnings("ignore:model=.* is a name of Labs:UserWarning")


@pytest.fixture(autouse=True)
def _over_the_web(over_the_web: LabsEmulator) -> Iterator[None]:
    """Models the reused tests build themselves take the transport from the environment.

    Afterwards: every question went to the SSE endpoint (and, ``over_the_web`` checks, none over Socket.IO).
    """
    yield
    assert over_the_web.web.asks >= 1


def _web_model(base_url: str) -> ChatPerplexityLabs:
    # r1-1776 named explicitly: the reused tests expect the Labs default model's name and reasoning.
    return ChatPerplexityLabs(
        transport="web",
        model="r1-1776",
        base_url=base_url,
        timeout=20,
        first_token_timeout=5,
        idle_timeout=5,
        max_retries=1,
    )


@pytest.fixture
def model(base_url: str) -> Iterator[ChatPerplexityLabs]:
    chat = _web_model(base_url)
    yield chat
    chat.close()


@pytest.fixture
async def amodel(base_url: str) -> AsyncIterator[ChatPerplexityLabs]:
    chat = _web_model(base_url)
    yield chat
    await chat.aclose()
