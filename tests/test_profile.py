"""Model profiles: what each Labs model declares, and what langchain's agents make of it."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from pydantic import BaseModel

from langchain_pplx_labs import KNOWN_MODELS, ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator, LabsRequest
from langchain_pplx_labs.emulator.rules import offered_tools, schema_follower, wants_json

# These tests ask Labs names over the web on purpose (what code written for Labs does); the warning that
# names the web models is tested in test_models_list.py.
pytestmark = pytest.mark.filterwarnings("ignore:model=.* is a name of Labs:UserWarning")


def declared(profile: dict[str, Any]) -> dict[str, Any]:
    """``profile`` without the keys the installed langchain-core's ``ModelProfile`` does not know yet
    (1.1.0 lacks text_inputs, tool_call_streaming, name ...; the model leaves those out there)."""
    from typing import get_type_hints

    from langchain_core.language_models.model_profile import ModelProfile

    keys = get_type_hints(ModelProfile)
    return {key: value for key, value in profile.items() if key in keys}


# Every Labs model: text in, text out, nothing else; tools by prompting.
TEXT_ONLY_PROMPTED_TOOLS = {
    "text_inputs": True,
    "image_inputs": False,
    "image_url_inputs": False,
    "pdf_inputs": False,
    "audio_inputs": False,
    "video_inputs": False,
    "image_tool_message": False,
    "pdf_tool_message": False,
    "text_outputs": True,
    "image_outputs": False,
    "audio_outputs": False,
    "video_outputs": False,
    "tool_calling": True,
    "tool_choice": True,
    "tool_call_streaming": True,
    "structured_output": False,
    "attachment": False,
    "temperature": False,
}
# Default max_input_chars is 256 000 characters: 64 000 tokens at 4 characters per token,
# below every documented window, so it is what the client really lets through.
WRITTEN = {
    "r1-1776": {
        **TEXT_ONLY_PROMPTED_TOOLS,
        "name": "r1-1776",
        "reasoning_output": True,
        "max_input_tokens": 64000,
    },
    "sonar": {
        **TEXT_ONLY_PROMPTED_TOOLS,
        "name": "sonar",
        "reasoning_output": False,
        "max_input_tokens": 64000,
    },
    "sonar-pro": {
        **TEXT_ONLY_PROMPTED_TOOLS,
        "name": "sonar-pro",
        "reasoning_output": False,
        "max_input_tokens": 64000,
    },
    "sonar-reasoning": {
        **TEXT_ONLY_PROMPTED_TOOLS,
        "name": "sonar-reasoning",
        "reasoning_output": True,
        "max_input_tokens": 64000,
    },
    "sonar-reasoning-pro": {
        **TEXT_ONLY_PROMPTED_TOOLS,
        "name": "sonar-reasoning-pro",
        "reasoning_output": True,
        "max_input_tokens": 64000,
    },
}

EXPECTED = {name: declared(profile) for name, profile in WRITTEN.items()}


def test_every_known_model_has_its_profile() -> None:
    assert sorted(EXPECTED) == sorted(KNOWN_MODELS)
    for name, expected in EXPECTED.items():
        assert ChatPerplexityLabs(model=name).profile == expected, name


def test_unknown_model_gets_a_text_only_default_without_reasoning() -> None:
    profile = ChatPerplexityLabs(model="sonar-2027").profile
    assert profile == declared(
        {**TEXT_ONLY_PROMPTED_TOOLS, "reasoning_output": False, "max_input_tokens": 64000}
    )


@pytest.mark.parametrize(
    ("model", "max_input_chars", "tokens"),
    [
        ("sonar-pro", None, 200_000),  # no client bound: the documented window
        ("sonar", None, 128_000),
        ("r1-1776", None, 128_000),
        ("sonar-2027", None, 128_000),  # unknown: the smallest documented window
        ("sonar-pro", 40_000, 10_000),  # the client bound, in tokens at 4 characters each
        ("sonar-pro", 2_000_000, 200_000),  # a bound above the window: the window
    ],
)
def test_max_input_tokens_follows_max_input_chars(
    model: str, max_input_chars: int | None, tokens: int
) -> None:
    profile = ChatPerplexityLabs(model=model, max_input_chars=max_input_chars).profile
    assert profile is not None
    assert profile["max_input_tokens"] == tokens


def test_a_given_profile_replaces_the_default() -> None:
    model = ChatPerplexityLabs(model="sonar", profile={"max_input_tokens": 1000, "structured_output": True})
    assert model.profile == {"max_input_tokens": 1000, "structured_output": True}


def test_profile_is_not_serialized_and_survives_a_copy() -> None:
    from langchain_core.load import dumpd

    model = ChatPerplexityLabs(model="sonar-reasoning")
    assert "profile" not in dumpd(model)["kwargs"]
    assert model.model_copy().profile == EXPECTED["sonar-reasoning"]


class City(BaseModel):
    """Facts about a city."""

    name: str
    population: int


QUESTION = 'Give me facts about "Lyon", population 522250.'


def _agent_requests(emulator: LabsEmulator) -> list[LabsRequest]:
    return [LabsRequest(payload) for payload in emulator.requests]


def test_create_agent_structured_response_uses_tool_strategy(
    model: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    from langchain.agents import create_agent

    emulator.script(schema_follower)
    agent = create_agent(model, tools=[], response_format=City)
    result: dict[str, Any] = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert result["structured_response"] == City(name="Lyon", population=522250)
    # ToolStrategy: the schema went over as a tool to call (forced), not as a JSON answer format.
    [request] = _agent_requests(emulator)
    assert offered_tools(request) == ["City"]
    assert not wants_json(request)
    assert "You must call" in request.messages[0]["content"]


def test_structured_output_in_the_profile_switches_create_agent_to_provider_strategy(
    base_url: str, emulator: LabsEmulator
) -> None:
    from langchain.agents import create_agent

    emulator.script(schema_follower)
    profile = {**EXPECTED["sonar-pro"], "structured_output": True}
    with ChatPerplexityLabs(
        transport="labs", model="sonar-pro", base_url=base_url, profile=profile, max_retries=0
    ) as model:
        agent = create_agent(model, tools=[], response_format=City)
        result: dict[str, Any] = agent.invoke({"messages": [HumanMessage(QUESTION)]})
    assert result["structured_response"] == City(name="Lyon", population=522250)
    # ProviderStrategy: a response_format asking for bare JSON, no tool offered.
    [request] = _agent_requests(emulator)
    assert offered_tools(request) == []
    assert wants_json(request)


def test_summarization_middleware_reads_max_input_tokens(model: ChatPerplexityLabs) -> None:
    from langchain.agents.middleware import SummarizationMiddleware

    # Fractional triggers need the profile's max_input_tokens; langchain refuses them without one.
    SummarizationMiddleware(model, trigger=("fraction", 0.5))
    with pytest.raises(ValueError, match="profile"):
        SummarizationMiddleware(
            ChatPerplexityLabs(base_url=model.base_url, profile={}), trigger=("fraction", 0.5)
        )


def test_keys_an_older_langchain_core_lacks_are_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    # langchain-core 1.1.0's ModelProfile had no text_inputs, tool_call_streaming, name ...:
    # a profile holding them would make it warn on every construction.
    from langchain_core.language_models import model_profile
    from typing_extensions import TypedDict

    from langchain_pplx_labs._profiles import default_profile

    class OldModelProfile(TypedDict, total=False):
        max_input_tokens: int
        image_inputs: bool
        reasoning_output: bool
        tool_calling: bool

    monkeypatch.setattr(model_profile, "ModelProfile", OldModelProfile)
    assert default_profile("r1-1776", 256_000) == {
        "max_input_tokens": 64000,
        "image_inputs": False,
        "reasoning_output": True,
        "tool_calling": True,
    }


def test_configurable_model_gets_the_profile_of_the_model_it_switches_to() -> None:
    from langchain_core.runnables import ConfigurableField

    configurable = ChatPerplexityLabs(model="sonar").configurable_fields(model=ConfigurableField(id="model"))
    # What invoke(config={"configurable": {"model": ...}}) builds: a model from the default's fields.
    switched, _ = configurable._prepare({"configurable": {"model": "sonar-reasoning"}})
    assert isinstance(switched, ChatPerplexityLabs)
    assert switched.model == "sonar-reasoning"
    assert switched.profile == EXPECTED["sonar-reasoning"]


def test_a_default_profile_passed_on_is_made_afresh_but_a_given_one_is_kept() -> None:
    made_for_sonar = ChatPerplexityLabs(model="sonar").profile
    assert ChatPerplexityLabs(model="r1-1776", profile=made_for_sonar).profile == EXPECTED["r1-1776"]
    given = {"max_input_tokens": 7}
    assert ChatPerplexityLabs(model="r1-1776", profile=given).profile == given


def test_model_copy_with_another_model_describes_that_model() -> None:
    sonar = ChatPerplexityLabs(model="sonar")
    assert (
        sonar.model_copy(update={"model": "sonar-reasoning-pro"}).profile == EXPECTED["sonar-reasoning-pro"]
    )
    assert sonar.model_copy(update={"max_input_chars": 4000}).profile == {
        **EXPECTED["sonar"],
        "max_input_tokens": 1000,
    }
    given = ChatPerplexityLabs(model="sonar", profile={"max_input_tokens": 7})
    assert given.model_copy(update={"model": "r1-1776"}).profile == {"max_input_tokens": 7}
    assert sonar.model_copy().profile == EXPECTED["sonar"]
