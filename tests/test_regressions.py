"""Behaviours a planted bug once slipped past the whole suite: each test here fails on that bug."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import pytest
from langchain_core.tools import tool

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import Emit, LabsEmulator, Scenario, progress_frame
from langchain_pplx_labs.errors import PerplexityLabsTimeoutError
from langchain_pplx_labs.tools import convert_tools, parse_tool_calls

EVENT = "sonar-pro_query_progress"
SOURCES = ["https://example.org/early-1", "https://example.org/early-2"]


@pytest.fixture
def sonar(base_url: str) -> Iterator[ChatPerplexityLabs]:
    chat = ChatPerplexityLabs(
        transport="labs", model="sonar-pro", base_url=base_url, max_retries=0, idle_timeout=5
    )
    yield chat
    chat.close()


# -- sources sent before the final frame ---------------------------------------------------------


def _final_without_sources(kind: str) -> dict[str, Any]:
    frame = progress_frame("Paris is the capital [1][2].", elapsed=0.2, final=True)
    if kind == "absent":
        del frame["citations"]
    return frame


@pytest.mark.parametrize("final_sources", ["empty", "absent"])
def test_sources_on_an_earlier_frame_survive_a_final_frame_without_any(
    sonar: ChatPerplexityLabs, emulator: LabsEmulator, final_sources: str
) -> None:
    emulator.script(
        [
            Emit(EVENT, progress_frame("Paris is", elapsed=0.1, citations=SOURCES)),
            Emit(EVENT, _final_without_sources(final_sources)),
        ]
    )
    message = sonar.invoke("What is the capital of France?")
    assert message.content == "Paris is the capital [1][2]."
    assert message.response_metadata["citations"] == SOURCES
    streamed = list(sonar.stream("What is the capital of France?"))
    assert streamed[-1].response_metadata["citations"] == SOURCES


def test_later_sources_replace_earlier_ones(sonar: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(
        [
            Emit(EVENT, progress_frame("Paris", elapsed=0.1, citations=["https://example.org/draft"])),
            Emit(EVENT, progress_frame("Paris [1][2].", elapsed=0.2, citations=SOURCES, final=True)),
        ]
    )
    assert sonar.invoke("Capital?").response_metadata["citations"] == SOURCES


# -- the tool-argument validator ------------------------------------------------------------------


@tool
def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> str:
    """Current weather for a city."""
    return f"18 degrees {unit} in {city}"


def _call(args: str) -> str:
    return '{"tool_calls": [{"name": "get_weather", "arguments": ' + args + "}]}"


@pytest.mark.parametrize("strict", [None, True])
def test_an_argument_outside_its_enum_is_an_invalid_call(strict: bool | None) -> None:
    specs = convert_tools([get_weather], strict=strict)
    parsed = parse_tool_calls(_call('{"city": "Paris", "unit": "kelvin"}'), specs, seed="s")
    assert parsed.tool_calls == []
    [bad] = parsed.invalid_tool_calls
    assert bad["error"] == (
        "Arguments of 'get_weather' do not match its schema: "
        "arguments.unit should be one of ['celsius', 'fahrenheit']"
    )
    good = parse_tool_calls(_call('{"city": "Paris", "unit": "fahrenheit"}'), specs, seed="s")
    assert [c["args"] for c in good.tool_calls] == [{"city": "Paris", "unit": "fahrenheit"}]


CLOSED = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


def test_an_unknown_argument_of_a_closed_schema_is_an_invalid_call() -> None:
    specs = convert_tools([CLOSED])
    parsed = parse_tool_calls(_call('{"city": "Paris", "country": "FR"}'), specs, seed="s")
    assert parsed.tool_calls == []
    [bad] = parsed.invalid_tool_calls
    assert bad["error"] == (
        "Arguments of 'get_weather' do not match its schema: arguments has unknown key 'country'"
    )
    good = parse_tool_calls(_call('{"city": "Paris"}'), specs, seed="s")
    assert [c["args"] for c in good.tool_calls] == [{"city": "Paris"}]


def test_strict_tools_refuse_unknown_arguments_too() -> None:
    specs = convert_tools([get_weather], strict=True)
    parsed = parse_tool_calls(_call('{"city": "Paris", "unit": "celsius", "when": "now"}'), specs, seed="s")
    assert [bad["error"] for bad in parsed.invalid_tool_calls] == [
        "Arguments of 'get_weather' do not match its schema: arguments has unknown key 'when'"
    ]


# -- first_token_timeout on a pooled socket ---------------------------------------------------------


def test_first_token_timeout_fires_on_a_reused_pooled_socket(base_url: str, emulator: LabsEmulator) -> None:
    chat = ChatPerplexityLabs(
        transport="labs",
        model="sonar-pro",
        base_url=base_url,
        max_retries=0,
        first_token_timeout=0.5,
        timeout=30,
    )
    with chat:
        assert chat.invoke("Warm up.").content  # leaves one warm socket in the pool
        assert emulator.connections == 1
        # Without the first-token timer on the reused socket, this answer arrives after 3 s and succeeds.
        emulator.script(Scenario(answer="Too late.", first_delay=3))
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            chat.invoke("Are you there?")
    assert caught.value.which == "first_token"
    assert emulator.connections == 1  # the question went out on the pooled socket, not a fresh one
