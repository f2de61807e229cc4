"""The web app's live model list: read from ``/rest/models/config`` once, its fallback, the tier check, the CLI and ``/v1/models``."""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest
from clirun import run_cli
from pydantic import ValidationError
from test_gateway import gateway_for, sdk_for
from test_profile import declared

from langchain_pplx_labs import ChatPerplexityLabs, PerplexityLabsInputError, PerplexityLabsModelAccessError
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.web.models import WebModel, parse_models_config

# The emulator's picker (emulator/web.py MODELS_CONFIG_BODY), written out: what a live read must give.
LIVE = ("turbo", "experimental", "claude45sonnet", "claude45sonnetthinking", "pplx_reasoning")
SIGNED_IN = "__Secure-next-auth.session-token=emulator-test-token"
MODELS_CONFIG = "/rest/models/config"


def web_model(emulator: LabsEmulator, **fields: object) -> ChatPerplexityLabs:
    options: dict[str, object] = {"transport": "web", "base_url": emulator.base_url, "max_retries": 0}
    return ChatPerplexityLabs(**{**options, **fields})


# -- the list --------------------------------------------------------------------------------


async def test_the_list_is_read_live_as_typed_rows(emulator: LabsEmulator) -> None:
    async with web_model(emulator) as llm:
        models = await llm.alist_models()
    assert (models.source, models.reason) == ("live", "")
    assert models.identifiers == LIVE
    assert models.get("turbo") == WebModel(
        identifier="turbo",
        label="Best",
        mode="copilot",
        provider="perplexity",
        subscription_tier=None,
        is_default=True,
        reasoning=False,
    )
    thinking = models.get("claude45sonnetthinking")
    assert thinking is not None
    assert (thinking.label, thinking.provider, thinking.subscription_tier) == (
        "Claude Sonnet 4.5 Thinking",
        "anthropic",
        "pro",
    )
    assert thinking.reasoning
    assert not thinking.is_default
    assert models.get("pplx_pro") is None  # described in ``models`` but in no picker row


async def test_the_list_is_read_once_per_pool(emulator: LabsEmulator) -> None:
    async with web_model(emulator) as llm:
        first, second = await asyncio.gather(llm.alist_models(), llm.alist_models())
        await llm.alist_models()
        with pytest.raises(PerplexityLabsModelAccessError):  # judged on the list read, not a new read
            await llm.ainvoke("Capital of France?", model="claude45sonnet")
    assert first is second
    assert emulator.web.calls[MODELS_CONFIG] == 1


def test_the_sync_list_reads_the_same(emulator: LabsEmulator) -> None:
    with web_model(emulator) as llm:
        assert llm.list_models().identifiers == LIVE
        assert llm.list_models().source == "live"
    assert emulator.web.calls[MODELS_CONFIG] == 1


async def test_a_known_name_never_waits_on_the_list(emulator: LabsEmulator) -> None:
    async with web_model(emulator, model="turbo") as llm:
        await llm.ainvoke("Capital of France?")
        await llm.ainvoke("Capital of France?", model="auto")
    assert emulator.web.calls[MODELS_CONFIG] == 0
    assert emulator.web.asks == 2


async def test_a_name_outside_the_record_reads_the_list_once_and_is_sent(emulator: LabsEmulator) -> None:
    async with web_model(emulator, model="gpt56_terra") as llm:
        first = await llm.ainvoke("Capital of France?")
        await llm.ainvoke("Capital of France?")
    assert first.content
    assert emulator.web.calls[MODELS_CONFIG] == 1
    assert [body["params"]["model_preference"] for body in emulator.web.bodies] == ["gpt56_terra"] * 2


@pytest.mark.parametrize("status", [500, 404])
async def test_a_failed_list_falls_back_to_the_records_and_says_why(
    emulator: LabsEmulator, status: int
) -> None:
    emulator.web.models_config_status = status
    async with web_model(emulator) as llm:
        models = await llm.alist_models()
        answer = await llm.ainvoke("Capital of France?", model="claude45sonnetthinking")
        again = await llm.alist_models()
    assert models.source == "fallback"
    assert f"/rest/models/config answered HTTP {status}" in models.reason
    assert models.identifiers[:3] == ("auto", "turbo", "pplx_pro")
    pro = models.get("pplx_pro")
    assert pro is not None
    assert pro.subscription_tier == "pro"
    assert answer.content  # the record's tiers refuse nothing: the web app decides
    assert again is models
    assert emulator.web.calls[MODELS_CONFIG] == 1


async def test_a_blocked_list_falls_back_without_breaking(emulator: LabsEmulator) -> None:
    emulator.blocked = True
    async with web_model(emulator) as llm:
        models = await llm.alist_models()
    assert models.source == "fallback"
    assert "HTTP 403" in models.reason
    assert "gpt5" in models.identifiers


async def test_a_list_that_never_comes_falls_back_within_the_connect_timeout() -> None:
    from aiohttp import web

    gate = asyncio.Event()

    async def silent(request: web.Request) -> web.Response:
        await gate.wait()
        return web.json_response({})

    app = web.Application()
    app.router.add_get(MODELS_CONFIG, silent)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with ChatPerplexityLabs(
            transport="web", base_url=f"http://127.0.0.1:{port}", connect_timeout=0.3, impersonate=None
        ) as llm:
            models = await llm.alist_models()
    finally:
        gate.set()
        await runner.cleanup()
    assert models.source == "fallback"
    assert "within the connect timeout (0.3 s)" in models.reason


def test_malformed_rows_are_skipped_and_agent_rows_left_out() -> None:
    payload = {
        "models": {"a": {"label": "A", "mode": "copilot", "provider": "x"}, "b": "not a dict"},
        "config": [
            "not a row",
            {"label": "Agent", "non_reasoning_model": "comet_max"},
            {"label": "A", "non_reasoning_model": "a", "reasoning_model": "b", "subscription_tier": "max"},
            {"label": "Again", "non_reasoning_model": "a"},
            {"label": "Nameless", "non_reasoning_model": ""},
        ],
    }
    rows = parse_models_config(payload)
    assert [(row.identifier, row.label, row.subscription_tier, row.reasoning) for row in rows] == [
        ("a", "A", "max", False),
        ("b", "A", "max", True),
    ]
    assert parse_models_config([]) == ()
    assert parse_models_config({"config": "no"}) == ()


def test_a_labs_model_has_no_list_to_read() -> None:
    llm = ChatPerplexityLabs(transport="labs", base_url="http://127.0.0.1:9")
    with pytest.raises(PerplexityLabsInputError, match=r"transport='web'.*r1-1776"):
        llm.list_models()


# -- who may ask what -----------------------------------------------------------------------


async def test_a_paid_model_fails_before_the_ask_on_an_anonymous_session(emulator: LabsEmulator) -> None:
    async with web_model(emulator, model="claude45sonnetthinking") as llm:
        with pytest.raises(PerplexityLabsModelAccessError) as caught:
            await llm.ainvoke("Capital of France?")
        # The session stays warm for a model it may ask.
        answer = await llm.ainvoke("Capital of France?", model="turbo")
    error = caught.value
    assert (error.model, error.required_tier, error.session_tier) == ("claude45sonnetthinking", "pro", None)
    assert error.usable == ("auto", "turbo")
    assert error.param == "model"
    assert "this session is anonymous" in str(error)
    assert "sign in (cookies=" in str(error)
    assert "auto, turbo" in str(error)
    assert emulator.web.asks == 1  # only turbo's question was sent
    assert emulator.web.session_checks == 1
    assert answer.content


async def test_once_read_the_list_judges_known_names_too(emulator: LabsEmulator) -> None:
    async with web_model(emulator, model="sonar") as llm:  # the web's "experimental", pro in the list
        await llm.alist_models()
        with pytest.raises(
            PerplexityLabsModelAccessError, match=r"'sonar' \('experimental' on the web app\)"
        ):
            await llm.ainvoke("Capital of France?")
    assert emulator.web.asks == 0


async def test_a_signed_in_session_asks_the_paid_model(emulator: LabsEmulator) -> None:
    async with web_model(emulator, model="claude45sonnetthinking", cookies=SIGNED_IN) as llm:
        answer = await llm.ainvoke("Capital of France?")
    assert answer.content
    assert emulator.web.bodies[-1]["params"]["model_preference"] == "claude45sonnetthinking"
    assert emulator.web.calls[MODELS_CONFIG] == 1


def test_tiers_rank_none_pro_max() -> None:
    from langchain_pplx_labs.web.models import may_ask

    assert may_ask(None, signed_in=False, tier=None)
    assert not may_ask("pro", signed_in=False, tier=None)
    assert may_ask("pro", signed_in=True, tier="pro")
    assert not may_ask("pro", signed_in=True, tier="none")
    assert not may_ask("max", signed_in=True, tier="pro")
    assert may_ask("max", signed_in=True, tier="max")
    assert may_ask("pro", signed_in=True, tier="education_pro")
    assert may_ask("pro", signed_in=True, tier=None)  # a tier the session does not say: the web app decides
    assert may_ask("enterprise", signed_in=True, tier="pro")  # a tier we cannot rank: the web app decides


# -- names and the profile ------------------------------------------------------------------


def test_the_paid_apis_name_warns_naming_the_web_models() -> None:
    with pytest.warns(
        UserWarning, match=r"model='sonar-pro' is a name of Labs.*auto, turbo, pplx_pro"
    ) as seen:
        ChatPerplexityLabs(transport="web", model="sonar-pro", base_url="http://127.0.0.1:9")
    assert len(seen) == 1
    assert seen[0].filename == __file__  # pointed at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ChatPerplexityLabs(transport="labs", model="sonar-pro", base_url="http://127.0.0.1:9")
        ChatPerplexityLabs(transport="web", model="turbo", base_url="http://127.0.0.1:9")


def test_a_bad_web_model_name_lists_the_web_models() -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(transport="web", model="no spaces!", base_url="http://127.0.0.1:9")
    assert "Invalid web model name 'no spaces!'" in str(caught.value)
    assert "known web models: auto, turbo, pplx_pro" in str(caught.value)
    assert "r1-1776" not in str(caught.value)
    llm = ChatPerplexityLabs(transport="web", base_url="http://127.0.0.1:9")
    with pytest.raises(PerplexityLabsInputError) as called:
        llm.invoke("Hi", model="no spaces!")
    assert called.value.param == "model"
    assert "known web models: auto" in str(called.value)


async def test_the_profile_follows_the_live_list(emulator: LabsEmulator) -> None:
    # The keys the installed langchain-core's ModelProfile declares (1.1.0 has no "name": left out there).
    async with web_model(emulator, model="claude45sonnet") as llm:
        assert llm.profile is not None
        assert llm.profile["reasoning_output"] is False
        assert declared({"name": "claude45sonnet"}).items() <= llm.profile.items()
        async with web_model(emulator, model="claude45sonnetthinking") as thinker:
            await thinker.alist_models()
            assert thinker.profile is not None
            assert thinker.profile["reasoning_output"] is True
            assert declared({"name": "claude45sonnetthinking"}).items() <= thinker.profile.items()
    given = web_model(emulator, model="pplx_reasoning", profile={"reasoning_output": False})
    async with given:
        await given.alist_models()
    assert given.profile == {"reasoning_output": False}  # a profile the user gave is kept


# -- the CLI and the gateway ----------------------------------------------------------------


def test_the_cli_prints_one_model_a_line(emulator: LabsEmulator) -> None:
    result = run_cli("models", "--base-url", emulator.base_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["IDENTIFIER", "LABEL", "PROVIDER", "MODE", "TIER", "REASONING", "DEFAULT"]
    assert [line.split()[0] for line in lines[1:]] == list(LIVE)
    assert lines[1].split() == ["turbo", "Best", "perplexity", "copilot", "-", "no", "yes"]
    assert result.stderr == ""


def test_the_cli_json_says_which_list(emulator: LabsEmulator) -> None:
    emulator.web.models_config_status = 500
    result = run_cli("models", "--base-url", emulator.base_url, "--json")
    assert result.returncode == 0, result.stderr
    listed = json.loads(result.stdout)
    assert listed["source"] == "fallback"
    assert "HTTP 500" in listed["reason"]
    assert listed["models"][1] == {
        "identifier": "turbo",
        "label": "turbo",
        "mode": "",
        "provider": "perplexity",
        "subscription_tier": None,
        "is_default": False,
        "reasoning": False,
    }
    table = run_cli("models", "--base-url", emulator.base_url)
    assert table.stderr.startswith("pplx-labs: note: the web app's list was not read (")


def test_the_cli_reads_its_own_emulator_and_refuses_a_bad_flag() -> None:
    result = run_cli("models", "--emulator", "--json")
    assert result.returncode == 0, result.stderr
    assert [row["identifier"] for row in json.loads(result.stdout)["models"]] == list(LIVE)
    bad = run_cli("models", "--emulator", "--base-url", "http://127.0.0.1:9")
    assert bad.returncode == 2
    assert bad.stderr.startswith("pplx-labs: error: ")
    assert len(bad.stderr.splitlines()) == 1


def test_the_gateways_models_are_the_live_list(emulator: LabsEmulator) -> None:
    with gateway_for(emulator, model_options={"transport": "web"}) as running, sdk_for(running.root) as sdk:
        listed = list(sdk.models.list())
        listed_again = list(sdk.models.list())
    assert [model.id for model in listed] == list(LIVE)
    assert {model.owned_by for model in listed} == {"perplexity"}
    assert listed_again == listed
    assert emulator.web.calls[MODELS_CONFIG] == 1


def test_the_gateways_bad_model_name_names_the_param(emulator: LabsEmulator) -> None:
    import openai

    with (
        gateway_for(emulator, model_options={"transport": "web"}) as running,
        sdk_for(running.root) as sdk,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        sdk.chat.completions.create(model="no spaces!", messages=[{"role": "user", "content": "Hi"}])
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["param"] == "model"
    assert "known web models: auto, turbo" in body["message"]
