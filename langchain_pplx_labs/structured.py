"""Structured output over prompted JSON or prompted tool calls, with clear parse errors."""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any, Literal

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import BaseGenerationOutputParser, BaseOutputParser
from langchain_core.outputs import ChatGeneration, Generation
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ValidationError
from pydantic.v1 import ValidationError as ValidationErrorV1

from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.tools import find_json, schema_errors, strip_reasoning

Method = Literal["function_calling", "json_mode", "json_schema"]
SchemaSpec = dict[str, Any] | type
_EXCERPT = 200


def _is_pydantic(schema: Any) -> bool:
    return isinstance(schema, type) and is_basemodel_subclass(schema)


def _excerpt(text: str) -> str:
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def _validate(value: Any, schema: SchemaSpec | None, answer: str) -> Any:
    """Validate parsed JSON against a pydantic model or a JSON Schema."""
    if schema is None:
        return value
    if _is_pydantic(schema):
        return _validate_model(value, schema, answer)  # type: ignore[arg-type]
    problems = schema_errors(value, convert_to_json_schema(schema), "answer")
    if problems:
        raise OutputParserException(
            "The answer's JSON does not match the schema: " + "; ".join(problems), llm_output=answer
        )
    return value


def _validate_model(value: Any, model: type[Any], answer: str) -> Any:
    try:
        if issubclass(model, BaseModel):
            return model.model_validate(value)
        return model.parse_obj(value)  # a pydantic.v1 model
    except ValidationError as exc:
        problems: object = exc.errors(include_url=False)
    except ValidationErrorV1 as exc:
        problems = exc.errors()
    raise OutputParserException(
        f"The answer's JSON does not fit {model.__name__}: {problems}", llm_output=answer
    )


class JsonAnswerParser(BaseOutputParser[Any]):
    """Find the JSON object in an answer (fences, prose and ``<think>`` allowed) and validate it."""

    target: Any = None

    def parse(self, text: str) -> Any:
        answer = strip_reasoning(text)
        found = find_json(answer)
        if found is None:
            raise OutputParserException(
                f"Expected a JSON object in the answer, found none. Answer starts: {_excerpt(answer)!r}",
                llm_output=text,
            )
        return _validate(found[0], self.target, text)

    @property
    def _type(self) -> str:
        return "perplexity_labs_json"


class ToolAnswerParser(BaseGenerationOutputParser[Any]):
    """Take the arguments of the call to ``tool_name`` from an AI message."""

    tool_name: str
    target: Any = None

    def parse_result(self, result: list[Generation], *, partial: bool = False) -> Any:
        generation = result[0]
        if not isinstance(generation, ChatGeneration) or not isinstance(generation.message, AIMessage):
            raise OutputParserException("Structured output needs a chat answer (an AIMessage)")
        message = generation.message
        for call in message.tool_calls:
            if call["name"] == self.tool_name:
                return _validate(call["args"], self.target, json.dumps(call["args"]))
        for bad in message.invalid_tool_calls:
            raise OutputParserException(
                f"The model's call to {bad.get('name') or self.tool_name!r} is invalid: {bad.get('error')}",
                llm_output=str(bad.get("args")),
            )
        raise OutputParserException(
            f"The model did not call {self.tool_name!r}. Answer starts: {_excerpt(message.text)!r}",
            llm_output=message.text,
        )


def structured_output(
    model: Any,
    schema: SchemaSpec | None,
    *,
    method: Method = "function_calling",
    include_raw: bool = False,
) -> Runnable[LanguageModelInput, Any]:
    """Build the runnable behind ``ChatPerplexityLabs.with_structured_output``."""
    if schema is None and method != "json_mode":
        raise PerplexityLabsInputError(f"with_structured_output(method={method!r}) needs a schema")
    trace = {"schema": convert_to_json_schema(schema) if schema is not None else None, "method": method}
    if method == "function_calling":
        assert schema is not None
        name = convert_to_openai_tool(schema)["function"]["name"]
        llm: Runnable[LanguageModelInput, Any] = model.bind_tools(
            [schema], tool_choice=name, ls_structured_output_format=trace
        )
        parser: Runnable[Any, Any] = ToolAnswerParser(tool_name=name, target=schema)
    elif method in ("json_mode", "json_schema"):
        response_format: dict[str, Any] = {"type": "json_object"}
        if schema is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {"name": _schema_name(schema), "schema": convert_to_json_schema(schema)},
            }
        llm = model.bind(response_format=response_format, ls_structured_output_format=trace)
        parser = JsonAnswerParser(target=schema)
    else:
        raise PerplexityLabsInputError(
            f"Unknown structured output method {method!r}; use 'function_calling', 'json_mode' or 'json_schema'"
        )
    if not include_raw:
        return llm | parser
    parse_raw = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    no_parse = RunnablePassthrough.assign(parsed=lambda _: None)
    with_fallback = parse_raw.with_fallbacks([no_parse], exception_key="parsing_error")
    return RunnableMap(raw=llm) | with_fallback


def _schema_name(schema: SchemaSpec) -> str:
    json_schema = convert_to_json_schema(schema)
    return str(json_schema.get("title") or getattr(schema, "__name__", "answer"))
