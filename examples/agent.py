"""A tool-using agent (langchain's create_agent) with ChatPerplexityLabs as its model."""

import re

from _offline import labs_server, parse_args
from langchain.agents import create_agent
from langchain_core.tools import tool

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator.rules import Rule, RuleTable, tool_call_answer, tool_results


@tool
def get_temperature(city: str) -> str:
    """Current temperature of a city in degrees Celsius."""
    return {"Paris": "21", "Oslo": "9"}.get(city, "15")


@tool
def celsius_to_fahrenheit(celsius: float) -> str:
    """Convert degrees Celsius to Fahrenheit."""
    return f"{celsius * 9 / 5 + 32:g}"


# Offline, the emulator plays a model that calls both tools in turn (a live model decides by itself).
OFFLINE_MODEL = RuleTable(
    [
        Rule(
            before=("get_temperature",),
            tools=("get_temperature",),
            answer=tool_call_answer(("get_temperature", {"city": "Oslo"})),
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
            answer=lambda r: f"It is {tool_results(r)['celsius_to_fahrenheit']}°F in Oslo right now.",
        ),
    ]
)

args = parse_args(__doc__)
with (
    labs_server(args.base_url, OFFLINE_MODEL) as url,
    ChatPerplexityLabs(model=args.model, base_url=url) as llm,
):
    agent = create_agent(llm, tools=[get_temperature, celsius_to_fahrenheit])
    result = agent.invoke({"messages": [("human", "How warm is it in Oslo, in Fahrenheit?")]})
for message in result["messages"]:
    calls = ", ".join(f"{c['name']}({c['args']})" for c in getattr(message, "tool_calls", []))
    text = re.sub(r"\s+", " ", str(message.content)).strip()
    print(f"{message.type:>5}: {text}{'  -> ' + calls if calls else ''}")
