"""``POST /v1/responses`` over ``transport="web"``: the Responses door's tests, rerun against the emulator's SSE endpoint."""

from __future__ import annotations

import pytest

# Rerun here, where the gateway's model asks the web app (it reads PPLX_LABS_TRANSPORT).
from test_gateway_responses_api import (  # noqa: F401
    client,
    gateway,
    test_chat_openai_with_the_responses_api,
    test_create_has_text_annotations_with_spans_and_usage,
    test_errors_in_openai_shape,
    test_failure_mid_stream_raises,
    test_instructions_and_multi_turn_input_reach_the_model,
    test_prompted_tools_as_function_calls,
    test_stream_has_the_responses_event_sequence,
    test_titles_come_with_rich_sources,
)

# The gateway's model asks over the web; afterwards, nothing went over Socket.IO.
pytestmark = pytest.mark.usefixtures("over_the_web")
