"""Prompted tool calling: the parser on its own, then bind_tools through a real socket to the emulator."""

from __future__ import annotations

import asyncio
import json
import re
from functools import reduce
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator, LabsRequest
from langchain_pplx_labs.emulator.rules import offered_tools, tool_call_answer
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.tools import TOOLS_HEADER, ToolCallStream, convert_tools, parse_tool_calls


@tool
def get_weather(city: str, unit: str = "celsius") -> str:
    """Current weather for a city."""
    return f"18 degrees {unit} in {city}"


def lookup_population(city: str) -> int:
    """Population of a city."""
    return 2_100_000


class Translate(BaseModel):
    """Translate text to a language."""

    text: str
    language: str = Field(description="Target language")


class Distance(TypedDict):
    """Distance between two cities in km."""

    origin: str
    destination: str


CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate arithmetic.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}
SPECS = convert_tools([get_weather])
CALL = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}'

# Models these tests build themselves speak Labs (the environment says so); test_web_reruns.py runs
# many of them again with the environment saying web.
pytestmark = pytest.mark.usefixtures("over_labs")


# -- the parser ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "prose"),
    [
        (CALL, ""),
        (f"Let me check.\n```json\n{CALL}\n```", "Let me check."),
        (f"<think>I need {{weather}} data</think>Checking [1].\n{CALL}\nDone.", "Checking [1].\nDone."),
        ('{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}', ""),
    ],
    ids=["bare", "fenced-after-prose", "think-and-citation-marker", "single-call-string-args"],
)
def test_parser_finds_the_call_and_keeps_the_prose(answer: str, prose: str) -> None:
    parsed = parse_tool_calls(answer, SPECS, seed="s")
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == [("get_weather", {"city": "Paris"})]
    assert parsed.invalid_tool_calls == []
    assert parsed.content == prose


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (
            '{"tool_calls": [{"name": "get_wether", "arguments": {"city": "Paris"}}]}',
            "Unknown tool 'get_wether'",
        ),
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"town": "Paris"}}]}', "required key 'city'"),
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": 7}}]}', "city should be string"),
        ('{"tool_calls": [{"name": "get_weather", "arguments": [1, 2]}]}', "must be a JSON object"),
        ('{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Par', "no well-formed JSON"),
    ],
    ids=["unknown-tool", "missing-key", "wrong-type", "args-not-object", "truncated"],
)
def test_bad_calls_become_invalid_tool_calls_with_the_error(answer: str, error: str) -> None:
    parsed = parse_tool_calls(answer, SPECS, seed="s")
    assert parsed.tool_calls == []
    [bad] = parsed.invalid_tool_calls
    assert error in str(bad["error"])
    # Adding chunks re-parses args; an invalid call must stay invalid, never turn into a runnable one.
    summed = AIMessageChunk(content="", tool_call_chunks=parsed.chunks())
    assert summed.tool_calls == []
    assert [b["id"] for b in summed.invalid_tool_calls] == [bad["id"]]


def test_prose_with_braces_and_citation_markers_is_not_a_call() -> None:
    answer = "Use a dict like {a: 1} [1]; see [2]."
    parsed = parse_tool_calls(answer, SPECS)
    assert (parsed.content, parsed.tool_calls, parsed.invalid_tool_calls) == (answer, [], [])


def test_ids_are_deterministic_per_conversation_and_distinct_per_call() -> None:
    two = tool_call_answer(("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Rome"}))
    first = parse_tool_calls(two, SPECS, seed="conversation A")
    again = parse_tool_calls(two, SPECS, seed="conversation A")
    other = parse_tool_calls(two, SPECS, seed="conversation B")
    ids = [c["id"] for c in first.tool_calls]
    assert ids == [c["id"] for c in again.tool_calls]
    assert len(set(ids)) == 2
    assert set(ids).isdisjoint(c["id"] for c in other.tool_calls)


def test_stream_filter_shows_prose_early_and_holds_the_call() -> None:
    answer = f"Let me check the weather.\n```json\n{CALL}\n```"
    stream = ToolCallStream(SPECS)
    shown = [stream.feed(answer[i : i + 5]) for i in range(0, len(answer), 5)]
    assert "".join(shown) == "Let me check the weather."
    parsed = stream.finish()
    assert parsed.content == ""
    assert [c["args"] for c in parsed.tool_calls] == [{"city": "Paris"}]


@pytest.mark.parametrize(
    "answer",
    [
        "Run `pip install x` and use {a: 1} or {} as the config, then restart.\n",
        "A fence:\n```python\nprint({1: 2})\n```\nand more prose after it.",
    ],
    ids=["inline-code-and-braces", "code-fence"],
)
def test_stream_filter_releases_code_and_braces_that_cannot_be_a_call(answer: str) -> None:
    stream = ToolCallStream(SPECS)
    shown = [stream.feed(answer[i : i + 4]) for i in range(0, len(answer), 4)]
    parsed = stream.finish()
    # Streamed as it came, not held to the end; nothing lost or added, trailing newline included.
    assert "".join(shown) + parsed.content == answer
    assert len("".join(shown)) > len(answer) * 3 // 4
    assert (parsed.tool_calls, parsed.invalid_tool_calls) == ([], [])


def test_stream_filter_keeps_the_prose_between_inline_code_and_a_call() -> None:
    answer = f"Paris is `nice` [1].\n{CALL}"
    stream = ToolCallStream(SPECS)
    shown = "".join(stream.feed(answer[i : i + 5]) for i in range(0, len(answer), 5))
    parsed = stream.finish()
    assert shown + parsed.content == parse_tool_calls(answer, SPECS).content == "Paris is `nice` [1]."
    assert [c["args"] for c in parsed.tool_calls] == [{"city": "Paris"}]


# -- through the model -----------------------------------------------------------------------


def test_bind_tools_accepts_every_tool_kind_and_describes_them(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer="No tool needed.", citations=[])
    bound = model.bind_tools([get_weather, lookup_population, Translate, Distance, CALCULATOR])
    message = bound.invoke([SystemMessage("Be brief."), HumanMessage("Hi")])
    assert message.content == "No tool needed."
    assert message.tool_calls == []
    system = emulator.requests[-1]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("Be brief.\n\n" + TOOLS_HEADER)
    described = [json.loads(line) for line in system["content"].splitlines() if line.startswith('{"name"')]
    assert [d["name"] for d in described] == [
        "get_weather",
        "lookup_population",
        "Translate",
        "Distance",
        "calculator",
    ]
    assert described[2]["parameters"]["required"] == ["text", "language"]


def test_invoke_and_stream_give_the_same_calls_and_content(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    answer = "I'll look it up.\n" + tool_call_answer(
        ("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo", "unit": "fahrenheit"})
    )
    emulator.script(answer=answer, chunk_size=6, citations=[])
    bound = model.bind_tools([get_weather])
    invoked = bound.invoke("Weather in Paris and Oslo?")
    chunks = list(bound.stream("Weather in Paris and Oslo?"))
    summed = reduce(lambda a, b: a + b, chunks)
    assert isinstance(invoked, AIMessage)
    assert [(c["name"], c["args"]) for c in invoked.tool_calls] == [
        ("get_weather", {"city": "Paris"}),
        ("get_weather", {"city": "Oslo", "unit": "fahrenheit"}),
    ]
    assert summed.tool_calls == invoked.tool_calls
    assert summed.content == invoked.content == "I'll look it up."
    assert invoked.response_metadata["finish_reason"] == "tool_calls"
    # The prose streamed in several chunks before the call arrived on the last one.
    assert sum(1 for c in chunks if c.content) > 1
    assert chunks[-1].tool_call_chunks
    assert not any(c.tool_call_chunks for c in chunks[:-1])


@pytest.mark.parametrize("arguments", [{"city": "Paris"}, {"town": "Paris"}], ids=["valid", "invalid"])
def test_v1_stream_with_tools_and_citations_adds_up_to_invoke(
    base_url: str, emulator: LabsEmulator, arguments: dict[str, str]
) -> None:
    # The tool parser holds text back to the closing chunk, which also carries the citation spans.
    emulator.script(
        answer="Paris is `nice` [1].\n" + tool_call_answer(("get_weather", arguments)),
        chunk_size=5,
        citations=["https://weather.example/paris"],
    )
    with ChatPerplexityLabs(base_url=base_url, model="sonar", output_version="v1", max_retries=0) as chat:
        bound = chat.bind_tools([get_weather])
        invoked = bound.invoke("Weather in Paris?")
        summed = reduce(lambda a, b: a + b, list(bound.stream("Weather in Paris?")))

    def text_and_calls(message: Any) -> tuple[list[str], str, list[str]]:
        blocks = message.content
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        cited = [a["url"] for b in blocks if b["type"] == "text" for a in b.get("annotations", [])]
        return [b["type"] for b in blocks if b["type"] != "text"], text, cited

    assert text_and_calls(summed) == text_and_calls(invoked)
    calls, text, cited = text_and_calls(invoked)
    assert text == "Paris is `nice` [1]."
    assert cited == ["https://weather.example/paris"]
    assert calls == ["tool_call" if "city" in arguments else "invalid_tool_call"]


async def test_invalid_call_keeps_its_error_on_ainvoke_and_its_id_on_astream(
    amodel: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=tool_call_answer(("get_weather", {"town": "Paris"})), citations=[])
    bound = amodel.bind_tools([get_weather])
    invoked = await bound.ainvoke("Weather?")
    summed = reduce(lambda a, b: a + b, [c async for c in bound.astream("Weather?")])
    assert invoked.tool_calls == []
    assert summed.tool_calls == []
    [bad] = invoked.invalid_tool_calls
    assert bad["name"] == "get_weather"
    assert "required key 'city'" in str(bad["error"])
    assert [b["id"] for b in summed.invalid_tool_calls] == [bad["id"]]


@pytest.mark.parametrize(
    ("choice", "line"),
    [
        ("auto", None),
        ("any", "You must call at least one tool now."),
        ("required", "You must call at least one tool now."),
        ("get_weather", "You must call the tool 'get_weather' now."),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            "You must call the tool 'get_weather' now.",
        ),
    ],
)
def test_tool_choice_is_stated_in_the_instruction(
    model: ChatPerplexityLabs, emulator: LabsEmulator, choice: Any, line: str | None
) -> None:
    emulator.script(answer=CALL, citations=[])
    message = model.bind_tools([get_weather, Translate], tool_choice=choice).invoke("Weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    system = emulator.requests[-1]["messages"][0]["content"]
    assert system.splitlines()[-1] == line if line else "You must" not in system


def test_tool_choice_none_sends_no_tools_and_parses_nothing(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=CALL, citations=[])
    message = model.bind_tools([get_weather], tool_choice="none").invoke("Weather in Paris?")
    assert message.tool_calls == []
    assert message.invalid_tool_calls == []
    assert message.content == CALL
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": "Weather in Paris?"}]


def test_unknown_tool_choice_fails_at_bind_time(model: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsInputError, match="'get_time'"):
        model.bind_tools([get_weather], tool_choice="get_time")


def test_tool_results_go_back_to_labs_and_the_loop_continues(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=CALL, citations=[])
    bound = model.bind_tools([get_weather])
    question = HumanMessage("Weather in Paris?")
    first = bound.invoke([question])
    [call] = first.tool_calls
    result = ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"], name=call["name"])
    emulator.script(answer="It is 18 degrees in Paris.", citations=[])
    final = bound.invoke([question, first, result])
    assert final.content == "It is 18 degrees in Paris."
    assert final.tool_calls == []
    request = emulator.requests[-1]
    assert offered_tools(LabsRequest(request)) == ["get_weather"]
    assistant, tool_turn = request["messages"][-2:]
    assert assistant["role"] == "assistant"
    assert json.loads(assistant["content"])["tool_calls"][0] == {
        "id": call["id"],
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert tool_turn == {
        "role": "user",
        "content": f"Result of tool call {call['id']} (get_weather):\n18 degrees celsius in Paris",
    }


def test_schema_follower_calls_the_offered_tool_then_summarises(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    from langchain_pplx_labs.emulator.rules import schema_follower

    @tool
    def add_two(value: int) -> int:
        """Add two."""
        return value + 2

    emulator.script(schema_follower)
    bound = model.bind_tools([get_weather, add_two], tool_choice="add_two")
    first = bound.invoke("What is add_two of 40?")
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("add_two", {"value": 40})]
    result = ToolMessage(
        str(add_two.invoke(first.tool_calls[0]["args"])), tool_call_id=first.tool_calls[0]["id"]
    )
    final = bound.invoke([HumanMessage("What is add_two of 40?"), first, result])
    assert final.tool_calls == []
    assert "42" in final.text
    assert model.with_structured_output(Translate, method="json_schema").invoke(
        "Say 'hi' in French"
    ) == Translate(text="hi", language="French")


# -- invalid calls on every invoke path, tool_choice forms and tool kinds -------------------------

INVALID_CALL = tool_call_answer(("get_weather", {"town": "Paris"}))


async def _ainvoke_under_astream_events(chat: ChatPerplexityLabs) -> Any:
    """ainvoke inside a chain streamed with astream_events, as a LangGraph node is."""
    bound = chat.bind_tools([get_weather])

    async def node(question: str, config: RunnableConfig) -> Any:
        return await bound.ainvoke(question, config)

    chain = RunnableLambda(node)
    streamed = 0
    async for event in chain.astream_events("Weather?", version="v2"):
        streamed += event["event"] == "on_chat_model_stream"
        if event["event"] == "on_chain_end" and event["name"] == "node":
            assert streamed  # the event stream did make langchain-core stream the model
            return event["data"]["output"]
    raise AssertionError("the chain never ended")


@pytest.mark.parametrize("path", ["invoke", "ainvoke", "astream_events"])
async def test_invalid_call_keeps_error_and_raw_args_when_invoke_streams_internally(
    base_url: str, emulator: LabsEmulator, path: str
) -> None:
    # streaming=True and astream_events make langchain-core build the answer from _stream chunks.
    emulator.script(answer=INVALID_CALL, chunk_size=7, citations=[])
    # An explicit streaming=False would stop astream_events from streaming the model.
    fields: dict[str, Any] = {} if path == "astream_events" else {"streaming": True}
    async with ChatPerplexityLabs(base_url=base_url, model="sonar", **fields) as chat:
        if path == "invoke":
            message = await asyncio.to_thread(chat.bind_tools([get_weather]).invoke, "Weather?")
            await asyncio.to_thread(chat.close)
        elif path == "ainvoke":
            message = await chat.bind_tools([get_weather]).ainvoke("Weather?")
        else:
            message = await _ainvoke_under_astream_events(chat)
    [bad] = message.invalid_tool_calls
    assert "required key 'city'" in str(bad["error"])
    assert json.loads(str(bad["args"])) == {"town": "Paris"}


def test_invoke_gives_raw_args_of_invalid_calls_and_chunks_stay_invalid(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=INVALID_CALL, citations=[])
    bound = model.bind_tools([get_weather])
    [bad] = bound.invoke("Weather?").invalid_tool_calls
    assert bad["args"] == '{"town": "Paris"}'
    summed = reduce(lambda a, b: a + b, list(bound.stream("Weather?")))
    # Chunk args stay quoted so adding chunks can never repair them into a valid call.
    assert summed.tool_calls == []
    assert [b["id"] for b in summed.invalid_tool_calls] == [bad["id"]]


def test_v1_invoke_blocks_carry_the_error_and_raw_args(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=INVALID_CALL, citations=[])
    with ChatPerplexityLabs(base_url=base_url, model="sonar", output_version="v1", streaming=True) as chat:
        message = chat.bind_tools([get_weather]).invoke("Weather?")
    [block] = [b for b in message.content if isinstance(b, dict) and b["type"] == "invalid_tool_call"]
    assert "required key 'city'" in str(block["error"])
    assert block["args"] == '{"town": "Paris"}'


@pytest.mark.parametrize(
    ("choice", "line"),
    [
        ({"type": "any"}, "You must call at least one tool now."),
        ({"type": "tool", "name": "get_weather"}, "You must call the tool 'get_weather' now."),
        ({"type": "auto"}, None),
    ],
    ids=["any", "tool", "auto"],
)
def test_anthropic_style_tool_choice_is_accepted(
    model: ChatPerplexityLabs, emulator: LabsEmulator, choice: dict[str, str], line: str | None
) -> None:
    emulator.script(answer=CALL, citations=[])
    message = model.bind_tools([get_weather], tool_choice=choice).invoke("Weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    system = emulator.requests[-1]["messages"][0]["content"]
    assert system.splitlines()[-1] == line if line else "You must" not in system


def test_anthropic_tool_choice_none_sends_no_tools(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=CALL, citations=[])
    message = model.bind_tools([get_weather], tool_choice={"type": "none"}).invoke("Weather?")
    assert message.tool_calls == []
    assert emulator.requests[-1]["messages"] == [{"role": "user", "content": "Weather?"}]


def test_bad_tool_choice_error_shows_the_value_given(model: ChatPerplexityLabs) -> None:
    with pytest.raises(PerplexityLabsInputError, match=re.escape("{'type': 'tool', 'name': 'get_time'}")):
        model.bind_tools([get_weather], tool_choice={"type": "tool", "name": "get_time"})


@pytest.mark.parametrize("choice", ["any", "required", "get_weather", {"type": "any"}])
def test_tool_choice_without_tools_is_refused(model: ChatPerplexityLabs, choice: Any) -> None:
    with pytest.raises(PerplexityLabsInputError, match="needs at least one bound tool"):
        model.bind_tools([], tool_choice=choice)
    with pytest.raises(PerplexityLabsInputError, match="needs at least one bound tool"):
        model.invoke("Weather?", tool_choice=choice)


def test_raw_tools_passed_to_bind_are_converted(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(answer=CALL, citations=[])
    message = model.bind(tools=[get_weather]).invoke("Weather in Paris?")
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]


@pytest.mark.parametrize(
    ("spec", "error"),
    [({"type": "web_search_preview"}, "not a function tool"), ({"foo": "bar"}, "Cannot describe tool")],
    ids=["built-in", "not-a-tool"],
)
def test_non_function_tools_are_refused_clearly(
    model: ChatPerplexityLabs, emulator: LabsEmulator, spec: dict[str, str], error: str
) -> None:
    with pytest.raises(PerplexityLabsInputError, match=error):
        model.bind_tools([spec])
    with pytest.raises(PerplexityLabsInputError, match=error):
        model.bind(tools=[spec]).invoke("Weather?")
    assert emulator.requests == []


def test_content_errors_name_the_callers_message_index_with_tools_bound(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    image = HumanMessage([{"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}])
    with pytest.raises(PerplexityLabsInputError, match=r"^message 1 \(human\)"):
        model.bind_tools([get_weather]).invoke([HumanMessage("Look:"), image])


def test_v1_answer_with_an_invalid_call_can_go_back_as_history(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="Checking [1].\n" + INVALID_CALL, citations=["https://example.org/a"])
    with ChatPerplexityLabs(base_url=base_url, model="sonar", output_version="v1") as chat:
        bound = chat.bind_tools([get_weather])
        invoked = bound.invoke("Weather?")
        summed = reduce(lambda a, b: a + b, list(bound.stream("Weather?")))
        for answer in (invoked, summed):
            bound.invoke([HumanMessage("Weather?"), answer, HumanMessage("Try again.")])
            sent = emulator.requests[-1]["messages"][-2]
            assert sent["role"] == "assistant"
            assert sent["content"].startswith("Checking [1].\n")
            assert '"arguments": {"town": "Paris"}' in sent["content"]


# -- the follow-tools model picks the fitting tool and fills its arguments (issue 17, item 6) -----


@tool
def convert_currency(amount: float, source: str, target: str) -> str:
    """Convert an amount of money from one currency to another."""
    return f"{amount} {source} in {target}"


@pytest.mark.parametrize(
    ("question", "name", "args"),
    [
        ("Weather in Paris?", "get_weather", {"city": "Paris"}),
        ("What's the weather like in New York today?", "get_weather", {"city": "New York"}),
        ("Paris weather?", "get_weather", {"city": "Paris"}),
        ("How many people live in Lyon? Population please.", "lookup_population", {"city": "Lyon"}),
        ("What is the population of 'São Paulo'?", "lookup_population", {"city": "São Paulo"}),
        (
            "Convert 12.5 from EUR to USD",
            "convert_currency",
            {"amount": 12.5, "source": "EUR", "target": "USD"},
        ),
        ("Translate 'good night' to German", "Translate", {"text": "good night", "language": "German"}),
        (
            "How far is it from Paris to Berlin? Distance please.",
            "Distance",
            {"origin": "Paris", "destination": "Berlin"},
        ),
    ],
)
def test_follow_tools_picks_the_fitting_tool_and_fills_arguments_from_the_question(
    model: ChatPerplexityLabs, emulator: LabsEmulator, question: str, name: str, args: dict[str, Any]
) -> None:
    from langchain_pplx_labs.emulator.rules import schema_follower

    emulator.script(schema_follower)
    # The fitting tool is never the first offered, so "always the first tool" cannot pass.
    tools = [Translate, lookup_population, convert_currency, Distance, get_weather]
    tools.sort(key=lambda t: getattr(t, "name", getattr(t, "__name__", "")) == name)
    message = model.bind_tools(tools).invoke(question)
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [(name, args)]
