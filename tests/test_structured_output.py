"""with_structured_output for pydantic, TypedDict and JSON Schema, over every method, with broken answers."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from langchain_core.exceptions import OutputParserException
from langchain_core.messages import AIMessage
from pydantic import BaseModel
from typing_extensions import TypedDict

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.rules import Rule, RuleTable, offered_tools, tool_call_answer
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.tools import TOOLS_HEADER


class City(BaseModel):
    """A city and its country."""

    name: str
    country: str
    population: int


class CityDict(TypedDict):
    """A city and its country."""

    name: str
    country: str
    population: int


CITY_SCHEMA: dict[str, Any] = {
    "title": "City",
    "description": "A city and its country.",
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer"},
    },
    "required": ["name", "country", "population"],
}
PARIS = {"name": "Paris", "country": "France", "population": 2_100_000}
SCHEMAS = {"pydantic": City, "typeddict": CityDict, "json_schema": CITY_SCHEMA}


def city_rules(value: dict[str, Any]) -> RuleTable:
    """JSON when asked for JSON (wrapped in prose and a fence), a tool call when a tool is offered."""
    fenced = f"Here is the data:\n```json\n{json.dumps(value)}\n```\nHope that helps [1]."
    return RuleTable(
        [
            Rule(json_answer=True, answer=fenced),
            Rule(
                system=re.escape(TOOLS_HEADER),
                answer=lambda request: tool_call_answer((offered_tools(request)[0], value)),
            ),
            Rule(answer="I only answer in prose."),
        ]
    )


def expected(kind: str) -> Any:
    return City(**PARIS) if kind == "pydantic" else PARIS


@pytest.mark.parametrize("method", ["function_calling", "json_mode", "json_schema"])
@pytest.mark.parametrize("kind", list(SCHEMAS))
def test_each_schema_kind_and_method_parses(
    model: ChatPerplexityLabs, emulator: LabsEmulator, kind: str, method: str
) -> None:
    rules = city_rules(PARIS)
    emulator.script(rules)
    structured = model.with_structured_output(SCHEMAS[kind], method=method)  # type: ignore[arg-type]
    assert structured.invoke("Describe Paris") == expected(kind)
    # The default model reasons first: the think section must not confuse the parser.
    assert rules.matched == [0 if method != "function_calling" else 1]
    system = emulator.requests[-1]["messages"][0]["content"]
    assert '"population"' in system


async def test_async_structured_output(amodel: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(city_rules(PARIS))
    assert await amodel.with_structured_output(City).ainvoke("Describe Paris") == City(**PARIS)


def test_json_mode_without_schema_returns_a_dict(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(city_rules({"anything": [1, 2]}))
    assert model.with_structured_output(None, method="json_mode").invoke("Give JSON") == {"anything": [1, 2]}
    assert "Answer with only one JSON object" in emulator.requests[-1]["messages"][0]["content"]


@pytest.mark.parametrize("method", ["function_calling", "json_schema"])
def test_include_raw_with_a_broken_answer(
    model: ChatPerplexityLabs, emulator: LabsEmulator, method: str
) -> None:
    emulator.script(city_rules({"name": "Paris", "country": "France", "population": "lots"}))
    result = model.with_structured_output(City, method=method, include_raw=True).invoke("Describe Paris")  # type: ignore[arg-type]
    assert set(result) == {"raw", "parsed", "parsing_error"}
    assert isinstance(result["raw"], AIMessage)
    assert result["parsed"] is None
    assert isinstance(result["parsing_error"], OutputParserException)
    assert "population" in str(result["parsing_error"])


def test_include_raw_with_a_good_answer(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(city_rules(PARIS))
    result = model.with_structured_output(CITY_SCHEMA, include_raw=True).invoke("Describe Paris")
    assert result["parsed"] == PARIS
    assert result["parsing_error"] is None
    assert result["raw"].tool_calls[0]["args"] == PARIS


@pytest.mark.parametrize(
    ("answer", "method", "message"),
    [
        ("Paris is in France, population about two million.", "json_schema", "Expected a JSON object"),
        ('{"name": "Paris", "country": "France"}', "json_schema", "population"),
        ('{"name": "Paris", "country": "France"}', "json_mode", "population"),
        ("Paris is in France.", "function_calling", "did not call 'City'"),
    ],
    ids=["prose", "missing-field", "missing-field-json-mode", "no-call"],
)
def test_wrong_answer_raises_a_clear_output_parser_exception(
    model: ChatPerplexityLabs, emulator: LabsEmulator, answer: str, method: str, message: str
) -> None:
    emulator.script(answer=answer, citations=[])
    with pytest.raises(OutputParserException, match=message):
        model.with_structured_output(City, method=method).invoke("Describe Paris")  # type: ignore[arg-type]


def test_typed_dict_answer_missing_a_key_is_reported(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer='{"name": "Paris", "population": 1}', citations=[])
    with pytest.raises(OutputParserException, match="required key 'country'"):
        model.with_structured_output(CityDict, method="json_mode").invoke("Describe Paris")


def test_schema_is_required_except_for_json_mode(model: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsInputError, match="needs a schema"):
        model.with_structured_output(None, method="json_schema")
    with pytest.raises(PerplexityLabsInputError, match="Unknown structured output method"):
        model.with_structured_output(City, method="xml")  # type: ignore[arg-type]


# -- response_format passed directly ----------------------------------------------------------


def test_text_response_format_adds_no_instruction(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer="Paris.", citations=[])
    assert model.invoke("Capital?", response_format={"type": "text"}).content == "Paris."
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": "Capital?"}]


@pytest.mark.parametrize("schema", [City, CityDict], ids=["pydantic", "typeddict"])
def test_class_response_format_asks_for_its_json_schema(
    model: ChatPerplexityLabs, emulator: LabsEmulator, schema: type
) -> None:
    emulator.script(answer=json.dumps(PARIS), citations=[])
    model.invoke("Capital?", response_format=schema)
    system = emulator.requests[-1]["messages"][0]
    assert system["role"] == "system"
    assert '"population"' in system["content"]
    assert "JSON Schema" in system["content"]


@pytest.mark.parametrize("response_format", ["json", {"type": "xml"}, 42], ids=["str", "unknown-type", "int"])
def test_unsupported_response_format_is_an_input_error(
    model: ChatPerplexityLabs, emulator: LabsEmulator, response_format: Any
) -> None:
    with pytest.raises(PerplexityLabsInputError, match="Unsupported response_format"):
        model.invoke("Capital?", response_format=response_format)
    assert emulator.requests == []
