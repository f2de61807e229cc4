"""ChatPerplexityLabs as an agent backend: LangGraph's create_react_agent and langchain's create_agent.

The emulator plays the model with a rule table that reads the tool results it was sent, so the
final answer is right only if both tool results really travelled back through the socket.
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator, LabsRequest
from langchain_pplx_labs.emulator.rules import Rule, RuleTable, question, tool_call_answer, tool_results

QUESTION = "What is the temperature in Reykjavik, in Fahrenheit?"


@tool
def get_temperature(city: str) -> str:
    """Current temperature of a city in degrees Celsius."""
    return f"{len(city) * 1.5:g}"  # deterministic, but not something the emulator could guess


@tool
def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert degrees Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:g}"


def _city(request: LabsRequest) -> str:
    match = re.search(r"in ([A-Z][a-z]+)", question(request))
    return match.group(1) if match else "Paris"


def agent_rules() -> RuleTable:
    """Step 1: look the temperature up; step 2: convert it; step 3: answer with the result."""
    return RuleTable(
        [
            Rule(
                tools=("get_temperature", "celsius_to_fahrenheit"),
                before=("get_temperature",),
                answer=lambda r: tool_call_answer(
                    ("get_temperature", {"city": _city(r)}), prose="Looking it up."
                ),
            ),
            Rule(
                after=("get_temperature",),
                before=("celsius_to_fahrenheit",),
                answer=lambda r: tool_call_answer(
                    ("celsius_to_fahrenheit", {"celsius": float(tool_results(r)["get_temperature"])})
                ),
            ),
            Rule(
                after=("celsius_to_fahrenheit",),
                answer=lambda r: f"It is {tool_results(r)['celsius_to_fahrenheit']}°F in {_city(r)}.",
            ),
        ]
    )


def assert_history(messages: list[BaseMessage]) -> None:
    """Question, call, result, call, result, answer: with the real tool outputs."""
    assert [type(m) for m in messages] == [
        HumanMessage,
        AIMessage,
        ToolMessage,
        AIMessage,
        ToolMessage,
        AIMessage,
    ]
    _, first, first_result, second, second_result, final = messages
    assert isinstance(first, AIMessage)
    assert isinstance(second, AIMessage)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("get_temperature", {"city": "Reykjavik"})]
    assert first.content == "Looking it up."
    assert first_result.content == "13.5"
    assert isinstance(first_result, ToolMessage)
    assert first_result.tool_call_id == first.tool_calls[0]["id"]
    assert [(c["name"], c["args"]) for c in second.tool_calls] == [
        ("celsius_to_fahrenheit", {"celsius": 13.5})
    ]
    assert second_result.content == "56.3"
    assert final.content == "It is 56.3°F in Reykjavik."
    assert final.tool_calls == []


def test_langgraph_create_react_agent_runs_two_tools(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    from langgraph.prebuilt import create_react_agent

    rules = agent_rules()
    emulator.script(rules)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # superseded by create_agent, still supported
        agent = create_react_agent(model, [get_temperature, celsius_to_fahrenheit])
    result: dict[str, Any] = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert_history(result["messages"])
    assert rules.matched == [0, 1, 2]


async def test_langchain_create_agent_runs_two_tools_async(
    amodel: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    agents = pytest.importorskip("langchain.agents")
    rules = agent_rules()
    emulator.script(rules)
    agent = agents.create_agent(
        amodel, tools=[get_temperature, celsius_to_fahrenheit], system_prompt="Be exact."
    )
    result = await agent.ainvoke({"messages": [HumanMessage(QUESTION)]})
    assert_history(result["messages"])
    assert rules.matched == [0, 1, 2]
    # Our system prompt and the tool instruction share one system turn.
    system = emulator.requests[-1]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be exact.\n\n")


def test_agent_stream_shows_each_step(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    from langchain.agents import create_agent

    emulator.script(agent_rules())
    agent = create_agent(model, tools=[get_temperature, celsius_to_fahrenheit])
    steps = [
        message
        for update in agent.stream({"messages": [HumanMessage(QUESTION)]}, stream_mode="updates")
        for node in update.values()
        for message in (node or {}).get("messages", [])
    ]
    assert_history([HumanMessage(QUESTION), *steps])


# -- the same runs replayed from cassettes ---------------------------------------------------
# Recorded from the rule-table emulator below with `pytest tests/test_agent.py --record-mode=once`;
# re-record from the live site with `--record-mode=all --pplx-labs-record-url https://...`.


@pytest.fixture(scope="module")
def _scripted_upstream() -> Any:
    from langchain_pplx_labs.emulator import EmulatorThread

    with EmulatorThread(LabsEmulator(agent_rules())) as thread:
        yield thread


@pytest.fixture
def pplx_labs_upstream(_scripted_upstream: Any) -> str:
    """Record agent cassettes from the rule-table emulator (the plugin's default upstream is plain)."""
    _scripted_upstream.call(lambda: _scripted_upstream.emulator.script(agent_rules()))
    return str(_scripted_upstream.base_url)


def test_create_react_agent_from_cassette(pplx_labs_cassette: ChatPerplexityLabs) -> None:
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        agent = create_react_agent(pplx_labs_cassette, [get_temperature, celsius_to_fahrenheit])
    assert_history(agent.invoke({"messages": [HumanMessage(QUESTION)]})["messages"])


async def test_create_agent_from_cassette(applx_labs_cassette: ChatPerplexityLabs) -> None:
    from langchain.agents import create_agent

    agent = create_agent(applx_labs_cassette, tools=[get_temperature, celsius_to_fahrenheit])
    assert_history((await agent.ainvoke({"messages": [HumanMessage(QUESTION)]}))["messages"])
