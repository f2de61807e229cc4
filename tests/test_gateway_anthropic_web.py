"""``POST /v1/messages`` over ``transport="web"``: the Anthropic door's tests, rerun against the emulator's SSE endpoint."""

from __future__ import annotations

import pytest

pytest.importorskip("anthropic")

# Rerun here, where the gateway's model asks the web app (it reads PPLX_LABS_TRANSPORT).
from test_gateway_anthropic import (  # noqa: F401
    client,
    gateway,
    test_chat_anthropic_invokes_streams_and_reads_citations,
    test_create_has_text_citations_usage_and_end_turn,
    test_errors_in_anthropic_shape,
    test_failure_mid_stream_ends_with_an_error_event,
    test_prompted_tools_as_tool_use_blocks,
    test_stop_sequence_is_reported,
    test_stream_has_the_messages_event_sequence_and_the_same_message,
    test_system_prompt_and_turns_reach_the_model,
    test_titles_come_with_rich_sources,
)

# The gateway's model asks over the web; afterwards, nothing went over Socket.IO.
pytestmark = pytest.mark.usefixtures("over_the_web")
