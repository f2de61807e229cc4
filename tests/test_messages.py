"""Mapping LangChain messages to Labs turns: roles, joined text parts, and clear errors for the rest."""

from __future__ import annotations

import pytest
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.messages import to_payload, to_turns


def test_system_human_ai_map_to_labs_roles() -> None:
    turns = to_turns(
        [
            SystemMessage("Be brief."),
            HumanMessage("Capital of France?"),
            AIMessage("Paris."),
            HumanMessage("Why?"),
        ]
    )
    assert turns == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Why?"},
    ]


def test_tool_message_becomes_user_text_naming_the_call() -> None:
    [turn] = to_turns([ToolMessage("42 degrees", tool_call_id="call_7", name="weather")])
    assert turn["role"] == "user"
    assert "call_7" in turn["content"]
    assert "weather" in turn["content"]
    assert turn["content"].endswith("42 degrees")


def test_ai_message_with_tool_calls_keeps_them_as_text() -> None:
    message = AIMessage("", tool_calls=[{"id": "c1", "name": "search", "args": {"q": "paris"}}])
    [turn] = to_turns([message])
    assert turn["role"] == "assistant"
    assert '"name": "search"' in turn["content"]
    assert '"q": "paris"' in turn["content"]


def test_chat_message_with_known_role_maps_and_unknown_role_raises() -> None:
    assert to_turns([ChatMessage(content="hi", role="User")]) == [{"role": "user", "content": "hi"}]
    with pytest.raises(PerplexityLabsInputError, match="role 'critic'"):
        to_turns([ChatMessage(content="hi", role="critic")])


def test_multi_part_string_content_is_joined() -> None:
    message = HumanMessage(
        content=[
            "First part.",
            {"type": "text", "text": "Second part."},
            {"type": "reasoning", "reasoning": "x"},
        ]
    )
    assert to_turns([message]) == [{"role": "user", "content": "First part.\nSecond part."}]


def test_audio_part_raises_value_error_naming_the_part_index_and_message() -> None:
    # Images and files in a human message are attachments (tests/test_attachments.py); audio is not.
    message = HumanMessage(
        content=[
            {"type": "text", "text": "What is in this recording?"},
            {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
        ]
    )
    with pytest.raises(ValueError, match="part 1") as caught:
        to_turns([SystemMessage("sys"), message])
    assert isinstance(caught.value, PerplexityLabsInputError)
    assert "message 1" in str(caught.value)
    assert "input_audio" in str(caught.value)


def test_v1_blocks_without_text_are_skipped_and_invalid_calls_rendered() -> None:
    bad = {"type": "invalid_tool_call", "id": "c1", "name": "search", "args": '{"q": 1}', "error": "q: str"}
    message = AIMessage(
        content=[
            {"type": "text", "text": "Checking."},
            bad,
            {"type": "server_tool_call", "id": "s1", "name": "web_search", "args": {}},
            {"type": "server_tool_result", "tool_call_id": "s1", "status": "success"},
            {"type": "non_standard", "value": {"x": 1}},
        ],
        invalid_tool_calls=[{k: v for k, v in bad.items() if k != "type"}],
    )
    [turn] = to_turns([message])
    assert turn == {
        "role": "assistant",
        "content": 'Checking.\n{"tool_calls": [{"id": "c1", "name": "search", "arguments": {"q": 1}}]}',
    }


def test_first_index_numbers_messages_in_errors() -> None:
    image = HumanMessage([{"type": "image_url", "image_url": {"url": "http://example.org/x.png"}}])
    with pytest.raises(PerplexityLabsInputError, match=r"^message 0 \(human\)"):
        to_turns([SystemMessage("instruction"), image], first_index=-1)


# -- a conversation must ask something (issue 31) ---------------------------------------------------


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        (
            [HumanMessage("")],
            "Message 0 (human) is the question and has no text (it is empty or only whitespace)",
        ),
        ([HumanMessage("  \n ")], "Message 0 (human) is the question and has no text"),
        ([HumanMessage(content=[])], "Message 0 (human) is the question and has no text"),
        ([HumanMessage("Hi"), AIMessage("Hello"), HumanMessage(" ")], "Message 2 (human) is the question"),
        (
            [SystemMessage("Be brief.")],
            "The conversation has no question: it needs a human message with text, and has only system messages",
        ),
        (
            [SystemMessage("x"), AIMessage("y")],
            "The conversation has no question: it needs a human message with text, and has only ai, system messages",
        ),
    ],
)
def test_a_conversation_without_a_question_is_refused_before_anything_is_sent(
    messages: list[BaseMessage], problem: str
) -> None:
    with pytest.raises(PerplexityLabsInputError) as caught:
        to_payload(messages, "sonar")
    assert str(caught.value).startswith(problem)


def test_questions_that_are_asked_pass() -> None:
    # A blank answer after the question, and an empty tool result (its turn names the call), still ask.
    assert to_payload([HumanMessage("Hi"), AIMessage("")], "sonar")["messages"][0]["content"] == "Hi"
    called = AIMessage("", tool_calls=[{"id": "c1", "name": "f", "args": {}}])
    payload = to_payload([HumanMessage("Use f"), called, ToolMessage("", tool_call_id="c1")], "sonar")
    assert payload["messages"][-1]["content"].startswith("Result of tool call c1")
    # An empty conversation keeps its own error.
    with pytest.raises(PerplexityLabsInputError, match="empty conversation"):
        to_payload([], "sonar")
