"""Structured output: a pydantic object from ChatPerplexityLabs, by JSON mode and by tool calling."""

import json

from _offline import labs_server, parse_args
from pydantic import BaseModel, Field

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator.rules import Rule, RuleTable, tool_call_answer


class City(BaseModel):
    """Facts about a city."""

    name: str
    country: str
    population: int = Field(description="Inhabitants of the city proper")


PARIS = {"name": "Paris", "country": "France", "population": 2102650}
# Offline, the emulator answers JSON requests with fenced JSON and tool requests with a call.
OFFLINE_MODEL = RuleTable(
    [
        Rule(json_answer=True, answer=f"Here you go:\n```json\n{json.dumps(PARIS)}\n```"),
        Rule(tools=("City",), answer=tool_call_answer(("City", PARIS))),
    ]
)

args = parse_args(__doc__)
with (
    labs_server(args.base_url, OFFLINE_MODEL) as url,
    ChatPerplexityLabs(model=args.model, base_url=url) as llm,
):
    for method in ("json_schema", "function_calling"):
        city = llm.with_structured_output(City, method=method).invoke("Give me facts about Paris.")
        print(f"{method}: {city!r}")
    raw = llm.with_structured_output(City, method="json_mode", include_raw=True).invoke("Facts about Paris?")
    print("include_raw:", sorted(raw), "parsing_error:", raw["parsing_error"])
