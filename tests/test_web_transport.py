"""The web transport's own behaviour: the ``transport`` field, what the wire sends, its warm connection, no leaks."""

from __future__ import annotations

import asyncio
import json
import pickle
import re
import textwrap
from collections.abc import AsyncIterator
from typing import Any, get_type_hints

import aiohttp
import pytest
from aiohttp import web
from devmode import run_clean_under_dev_mode
from langchain_core.language_models.model_profile import ModelProfile
from langchain_core.load import dumpd, dumps, load
from pydantic import ValidationError
from webfake import FakeWebApp, answer_message, forever, serving, streaming

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.errors import PerplexityLabsInputError
from langchain_pplx_labs.settings import BROWSER_USER_AGENT
from langchain_pplx_labs.transports import aiohttp as aiohttp_transport
from langchain_pplx_labs.transports.aiohttp import connector_keepalive_timeout

# These tests ask Labs names over the web on purpose (what code written for Labs does); the warning that
# names the web models is tested in test_models_list.py.
pytestmark = pytest.mark.filterwarnings("ignore:model=.* is a name of Labs:UserWarning")


ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."
THINKING = "The user asks about France; check both sources."
CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]


# -- the field -------------------------------------------------------------------------------


def test_transport_defaults_to_web_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPLX_LABS_TRANSPORT", raising=False)
    web = ChatPerplexityLabs(base_url="http://127.0.0.1:9")
    assert web.transport == "web"
    assert web.model == "auto"
    assert web._settings()[0].service == "web"
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "labs")
    labs = ChatPerplexityLabs(base_url="http://127.0.0.1:9")
    assert labs.transport == "labs"
    assert labs.model == "r1-1776"
    assert labs._settings()[0].service == "labs"
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "web")
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9").transport == "web"


def test_web_without_a_model_asks_the_webs_default_and_a_named_model_is_kept() -> None:
    assert ChatPerplexityLabs(transport="web", base_url="http://127.0.0.1:9").model == "auto"
    named = ChatPerplexityLabs(transport="web", model="sonar", base_url="http://127.0.0.1:9")
    assert named.model == "sonar"
    assert ChatPerplexityLabs(
        transport="web", model_name="sonar-pro", base_url="http://127.0.0.1:9"
    ).model == ("sonar-pro")


@pytest.mark.parametrize("value", ["websocket", "Web", ""])
def test_unknown_transport_is_an_input_error_naming_the_choices(value: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(transport=value, base_url="http://127.0.0.1:9")
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, PerplexityLabsInputError)
    assert f"Invalid transport {value!r}" in str(error)
    assert "'labs' or 'web'" in str(error)


def test_transport_is_an_identifying_param_and_keys_the_client() -> None:
    labs = ChatPerplexityLabs(model="sonar", base_url="http://127.0.0.1:9", transport="labs")
    web = ChatPerplexityLabs(model="sonar", base_url="http://127.0.0.1:9", transport="web")
    assert labs._identifying_params["transport"] == "labs"
    assert web._identifying_params["transport"] == "web"
    assert labs._settings()[0] != web._settings()[0]  # separate pools: a Labs socket never answers web


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_dumpd_load_and_pickle_keep_the_transport_and_the_web_model() -> None:
    chat = ChatPerplexityLabs(transport="web", base_url="http://127.0.0.1:9")
    data = dumpd(chat)
    assert data["kwargs"]["transport"] == "web"
    loaded = load(
        json.loads(dumps(chat)),
        valid_namespaces=["langchain_pplx_labs"],
        allowed_objects=[ChatPerplexityLabs],
    )
    assert isinstance(loaded, ChatPerplexityLabs)
    assert (loaded.transport, loaded.model) == ("web", "auto")
    clone = pickle.loads(pickle.dumps(chat))
    assert (clone.transport, clone.model) == ("web", "auto")


def _reloaded(chat: ChatPerplexityLabs) -> ChatPerplexityLabs:
    loaded = load(
        json.loads(dumps(chat)),
        valid_namespaces=["langchain_pplx_labs"],
        allowed_objects=[ChatPerplexityLabs],
    )
    assert isinstance(loaded, ChatPerplexityLabs)
    return loaded


def test_the_unnamed_model_is_the_transports_in_profile_tracing_and_a_dump_loaded_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PPLX_LABS_TRANSPORT", raising=False)
    web = ChatPerplexityLabs(base_url="http://127.0.0.1:9")
    labs = ChatPerplexityLabs(transport="labs", base_url="http://127.0.0.1:9")
    # The profile is made for the model asked, not for Labs' default (auto is no Labs model).
    assert web.profile is not None
    assert labs.profile is not None
    # langchain-core before ModelProfile had "name" (our lowest) drops that key from every profile.
    named = "name" in get_type_hints(ModelProfile)
    assert (web.profile.get("name"), web.profile["reasoning_output"]) == (None, False)
    assert (labs.profile.get("name"), labs.profile["reasoning_output"]) == (
        "r1-1776" if named else None,
        True,
    )
    assert web._identifying_params["model"] == "auto"
    assert web._get_ls_params()["ls_model_name"] == "auto"
    assert labs._get_ls_params()["ls_model_name"] == "r1-1776"
    # A dump names its transport and model: loaded where the environment says the other, it stays.
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "labs")
    assert (_reloaded(web).transport, _reloaded(web).model) == ("web", "auto")
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "web")
    assert (_reloaded(labs).transport, _reloaded(labs).model) == ("labs", "r1-1776")


# -- the voice: impersonate --------------------------------------------------------------------


def test_impersonate_defaults_to_chrome_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PPLX_LABS_IMPERSONATE", raising=False)
    chat = ChatPerplexityLabs(base_url="http://127.0.0.1:9")
    assert chat.impersonate == "chrome"
    assert chat._settings()[1].impersonate == "chrome"
    assert chat._identifying_params["impersonate"] == "chrome"
    monkeypatch.setenv("PPLX_LABS_IMPERSONATE", "chrome152")
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9").impersonate == "chrome152"
    monkeypatch.setenv("PPLX_LABS_IMPERSONATE", "none")
    assert ChatPerplexityLabs(base_url="http://127.0.0.1:9").impersonate is None


@pytest.mark.parametrize("value", [None, "none", "None"])
def test_impersonate_none_is_plain_aiohttp(value: str | None) -> None:
    chat = ChatPerplexityLabs(base_url="http://127.0.0.1:9", impersonate=value)
    assert chat.impersonate is None
    assert chat._settings()[1].impersonate is None


@pytest.mark.parametrize("value", ["chrome999", "Chrome", ""])
def test_an_unknown_browser_is_an_input_error_naming_curl_cffis_targets(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:9", impersonate=value)
    error = caught.value.errors()[0]["ctx"]["error"]
    assert isinstance(error, PerplexityLabsInputError)
    assert f"Invalid impersonate {value!r}" in str(error)
    assert "chrome152" in str(error)
    assert "safari" in str(error)
    assert "'none' for plain aiohttp" in str(error)
    monkeypatch.setenv("PPLX_LABS_IMPERSONATE", value)  # the environment's is refused, not ignored
    with pytest.raises(ValidationError, match="Invalid impersonate"):
        ChatPerplexityLabs(base_url="http://127.0.0.1:9")


def test_impersonate_keys_the_client_and_survives_dumpd_and_pickle() -> None:
    chrome = ChatPerplexityLabs(base_url="http://127.0.0.1:9", impersonate="chrome152")
    plain = chrome.model_copy(update={"impersonate": None})
    assert chrome._client() is not plain._client()
    loaded = load(
        dumpd(chrome), valid_namespaces=["langchain_pplx_labs"], allowed_objects=[ChatPerplexityLabs]
    )
    assert loaded.impersonate == "chrome152"
    assert pickle.loads(pickle.dumps(chrome)).impersonate == "chrome152"


def test_labs_dials_with_aiohttp_whatever_the_browser() -> None:
    chat = ChatPerplexityLabs(base_url="http://127.0.0.1:9", transport="labs", impersonate="chrome")
    assert chat._settings()[1].impersonate == "chrome"  # carried, and read only by the web's transport


# -- what the wire sends, and its warm connection (against a hand-written web app) ---------------


@pytest.fixture
async def fake_web() -> AsyncIterator[FakeWebApp]:
    async with serving() as fake:
        fake.ask = streaming(
            [answer_message("Paris"), answer_message("Paris [1].", final=True, sources=CITATIONS)]
        )
        yield fake


async def test_asks_carry_the_webs_origin_a_browser_agent_and_the_cookies(fake_web: FakeWebApp) -> None:
    async with ChatPerplexityLabs(
        transport="web", base_url=fake_web.base_url, cookies="pplx.visitor=v1", max_retries=0
    ) as chat:
        message = await chat.ainvoke("Capital of France?")
    assert message.content == "Paris [1]."
    assert message.response_metadata["citations"] == CITATIONS
    session, ask = fake_web.seen
    assert (session.path, ask.path) == ("/api/auth/session", "/rest/sse/perplexity_ask")
    for request in (session, ask):
        assert request.headers["Cookie"] == "pplx.visitor=v1"
        assert request.headers["User-Agent"].startswith("Mozilla/5.0")
    assert ask.headers["Origin"] == "https://www.perplexity.ai"  # the web's, not the Labs playground's
    assert ask.headers["Referer"] == "https://www.perplexity.ai/"
    assert ask.headers["Accept"] == "text/event-stream"
    assert ask.headers["x-request-id"] == ask.body["params"]["frontend_uuid"]
    assert ask.body["query_str"] == "Capital of France?"
    assert ask.body["params"]["model_preference"] == "turbo"  # "auto", anonymous


@pytest.mark.parametrize("impersonate", ["chrome", None])
async def test_every_request_carries_the_webs_origin_referer_and_app_headers(
    fake_web: FakeWebApp, impersonate: str | None
) -> None:
    async with ChatPerplexityLabs(
        transport="web", base_url=fake_web.base_url, max_retries=0, impersonate=impersonate
    ) as chat:
        await chat.ainvoke("Q")
    assert [request.path for request in fake_web.seen] == ["/api/auth/session", "/rest/sse/perplexity_ask"]
    for request in fake_web.seen:  # the session check too, not the Labs playground's (issue #31, item 3)
        assert request.headers.getall("Origin") == ["https://www.perplexity.ai"]
        assert request.headers.getall("Referer") == ["https://www.perplexity.ai/"]
        # perplexity-web-mcp PR #15 (2026-07-21): "to avoid Cloudflare 403"
        assert request.headers["x-app-apiclient"] == "default"
        assert request.headers["x-app-apiversion"] == "2.18"


async def test_impersonating_sends_one_browsers_agent_and_hints_and_a_fetchs_metadata(
    fake_web: FakeWebApp,
) -> None:
    async with ChatPerplexityLabs(
        transport="web",
        base_url=fake_web.base_url,
        max_retries=0,
        default_headers={"User-Agent": "MyBot/1.0"},  # never sent over the browser's: they would disagree
    ) as chat:
        await chat.ainvoke("Q")
    session, ask = fake_web.seen
    for request in (session, ask):
        headers = request.headers
        [agent] = headers.getall("User-Agent")
        major = re.search(r"Chrome/(\d+)\.", agent)
        assert major is not None, agent
        assert f'"Chromium";v="{major.group(1)}"' in headers["sec-ch-ua"]  # one browser says both
        assert "sec-ch-ua-platform" in headers
        assert (headers["sec-fetch-site"], headers["sec-fetch-mode"], headers["sec-fetch-dest"]) == (
            "same-origin",
            "cors",
            "empty",
        )
        for navigation in ("upgrade-insecure-requests", "sec-fetch-user"):
            assert navigation not in headers
        assert "Upgrade" not in headers  # no h2c upgrade in the clear: HTTP/1.1, as a browser
    assert session.headers["Accept"] == "application/json"
    assert "Cache-Control" not in session.headers  # curl's navigation max-age=0 is not a fetch's
    assert ask.headers["Accept"] == "text/event-stream"
    assert ask.headers["Cache-Control"] == "no-cache"  # the web app's own


async def test_plain_aiohttp_sends_the_models_agent_and_no_hints(fake_web: FakeWebApp) -> None:
    async with ChatPerplexityLabs(
        transport="web", base_url=fake_web.base_url, max_retries=0, impersonate=None
    ) as chat:
        await chat.ainvoke("Q")
    for request in fake_web.seen:
        assert request.headers.getall("User-Agent") == [BROWSER_USER_AGENT]
        assert "sec-ch-ua" not in request.headers


async def test_an_origin_the_user_sets_replaces_the_webs(fake_web: FakeWebApp) -> None:
    async with ChatPerplexityLabs(
        transport="web",
        base_url=fake_web.base_url,
        default_headers={"Origin": "https://labs.example.org"},
        max_retries=0,
    ) as chat:
        await chat.ainvoke("Q")
    assert fake_web.seen[-1].headers["Origin"] == "https://labs.example.org"


async def test_a_signed_in_session_asks_as_the_user(fake_web: FakeWebApp) -> None:
    async def signed_in(request: web.Request) -> web.StreamResponse:
        return web.json_response({"user": {"id": "user-42", "name": "Ada"}})

    fake_web.session = signed_in
    async with ChatPerplexityLabs(transport="web", base_url=fake_web.base_url, max_retries=0) as chat:
        await chat.ainvoke("Q")
    params = fake_web.seen[-1].body["params"]
    assert params["model_preference"] == "pplx_pro"  # "auto", signed in
    assert params["mode"] == "copilot"


async def test_questions_reuse_one_warm_connection_and_one_session_check(fake_web: FakeWebApp) -> None:
    async with ChatPerplexityLabs(transport="web", base_url=fake_web.base_url, max_retries=0) as chat:
        answers = [(await chat.ainvoke(q)).content for q in ("one", "two", "three")]
        pool = await chat._client().pool()
        assert pool.connections_opened == 1
    assert answers == ["Paris [1]."] * 3
    assert fake_web.hits == {"session": 1, "ask": 3}
    assert len({request.client_port for request in fake_web.seen}) == 1  # one TCP connection for all four


class _QuickKeepaliveConnector(aiohttp.TCPConnector):
    """aiohttp's connector with a 0.3 s default keep-alive in place of its 15 s."""

    def __init__(self, *args: Any, keepalive_timeout: float = 0.3, **kwargs: Any) -> None:
        super().__init__(*args, keepalive_timeout=keepalive_timeout, **kwargs)


async def test_a_connection_idle_past_aiohttps_keepalive_is_still_warm_within_the_pools_idle_timeout(
    fake_web: FakeWebApp, monkeypatch: pytest.MonkeyPatch
) -> None:
    # aiohttp drops an idle keep-alive connection after its own keep-alive timeout (15 s), while the
    # pool keeps an idle web connection longer: the second question would silently pay a new TCP (and
    # TLS) connect. Here aiohttp's default and floor are 0.3 s and the pool keeps idle connections 5 s,
    # so an idle second shows aiohttp's own timer firing without a 16 s wait.
    monkeypatch.setattr(aiohttp, "TCPConnector", _QuickKeepaliveConnector)
    monkeypatch.setattr(aiohttp_transport, "AIOHTTP_KEEPALIVE_SECONDS", 0.3)
    async with ChatPerplexityLabs(
        transport="web",
        base_url=fake_web.base_url,
        max_retries=0,
        pool_idle_timeout=5,
        impersonate=None,  # aiohttp's own keep-alive timer is the subject (curl keeps one MAXAGE_CONN long)
    ) as chat:
        await chat.ainvoke("before")
        await asyncio.sleep(1.0)
        await chat.ainvoke("after")
        assert (await chat._client().pool()).connections_opened == 1
    assert fake_web.hits == {"session": 1, "ask": 2}
    assert len({request.client_port for request in fake_web.seen}) == 1  # the same TCP connection


def test_the_connectors_keepalive_follows_the_pools_idle_timeout() -> None:
    assert connector_keepalive_timeout(60.0) == 60.0
    assert connector_keepalive_timeout(300.0) == 300.0
    assert connector_keepalive_timeout(5.0) == 15.0  # aiohttp's own, the floor
    assert connector_keepalive_timeout(None) == 86_400.0  # the pool never expires them: a day for aiohttp


async def test_an_abandoned_answer_is_cut_off_and_its_connection_asks_again_at_once(
    fake_web: FakeWebApp,
) -> None:
    slow = streaming([answer_message("Paris"), answer_message("Paris is")], then=forever)
    fake_web.ask = slow
    async with ChatPerplexityLabs(transport="web", base_url=fake_web.base_url, max_retries=0) as chat:
        stream = chat.astream("Q")
        first = await anext(stream)
        await stream.aclose()
        pool = await chat._client().pool()
        assert (pool.draining_count, pool.idle_count) == (0, 1)  # nothing to drain: the response was closed
        fake_web.ask = streaming([answer_message("Lyon.", final=True)])
        message = await chat.ainvoke("Q again")
        assert pool.connections_opened == 1
    assert first.content == "Paris"
    assert message.content == "Lyon."
    assert fake_web.hits == {"session": 1, "ask": 2}


# -- through the emulator's SSE endpoint --------------------------------------------------------


# Frames of 1 to 8 characters: shorter than "<think>" too, so the emulator sees the tag arrive in pieces.
@pytest.mark.parametrize("chunk_size", range(1, 9))
@pytest.mark.parametrize("name", ["r1-1776", "sonar-reasoning", "sonar-reasoning-pro"])
@pytest.mark.parametrize("keep", [True, False], ids=["reasoning", "no-reasoning"])
async def test_the_web_apps_plan_is_reasoning_and_its_answer_the_content(
    name: str, keep: bool, chunk_size: int, base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, reasoning=THINKING, citations=CITATIONS, chunk_size=chunk_size)
    async with ChatPerplexityLabs(
        transport="web", model=name, base_url=base_url, reasoning=None if keep else False, max_retries=0
    ) as chat:
        message = await chat.ainvoke("Capital of France?")
        chunks = [chunk async for chunk in chat.astream("Capital of France?")]
    assert message.content == ANSWER
    assert "".join(str(c.content) for c in chunks) == ANSWER
    streamed_reasoning = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    if keep:
        assert message.additional_kwargs["reasoning_content"] == THINKING
        assert streamed_reasoning == THINKING
    else:
        assert "reasoning_content" not in message.additional_kwargs
        assert streamed_reasoning == ""
    assert message.response_metadata["citations"] == CITATIONS
    assert emulator.web.asks == 2


async def test_every_field_of_a_source_reaches_search_results_over_the_web(
    base_url: str, emulator: LabsEmulator
) -> None:
    sources = [
        {"url": "https://a.example/1", "title": "First", "snippet": "One.", "date": "2025-03-04"},
        {
            "url": "https://b.example/2",
            "title": "Second",
            "name": "b.example",
            "timestamp": "2026-01-01T00:00:00Z",
        },
        {"url": "https://c.example/3", "snippet": "Untitled."},
    ]
    emulator.script(answer="Cited [1][2][3].", citations=sources)
    async with ChatPerplexityLabs(transport="web", model="sonar", base_url=base_url, max_retries=0) as chat:
        message = await chat.ainvoke("Q?")
        streamed = [chunk async for chunk in chat.astream("Q?")]
    assert message.response_metadata["citations"] == [
        "https://a.example/1",
        "https://b.example/2",
        "https://c.example/3",
    ]
    assert message.response_metadata["search_results"] == [
        {"url": "https://a.example/1", "title": "First", "snippet": "One.", "date": "2025-03-04"},
        {
            "url": "https://b.example/2",
            "title": "Second",
            "name": "b.example",
            "timestamp": "2026-01-01T00:00:00Z",
        },
        {"url": "https://c.example/3", "snippet": "Untitled."},
    ]
    last = [c for c in streamed if c.response_metadata.get("search_results")][-1]
    assert last.response_metadata["search_results"] == message.response_metadata["search_results"]


_LEAK_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys
    from langchain_pplx_labs import ChatPerplexityLabs

    URL = sys.argv[1]

    def chat(**kwargs):
        return ChatPerplexityLabs(transport="web", base_url=URL, model="sonar", max_retries=0, **kwargs)

    async def main():
        async with chat() as model:
            print("invoke", (await model.ainvoke("one")).content[:5])
            stream = model.astream("two")
            await anext(stream)
            await stream.aclose()  # abandoned mid-answer: its response is closed
            task = asyncio.ensure_future(model.ainvoke("three"))
            await asyncio.sleep(0.05)
            task.cancel()  # cancelled mid-answer
            try:
                await task
            except asyncio.CancelledError:
                pass
            print("after-cancel", (await model.ainvoke("four")).content[:5])
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        print("tasks-left", len(others))

    asyncio.run(main())

    async def left_open():
        model = chat()
        await model.ainvoke("five")  # never closed: the loop's shutdown closes its pool
        print("left-open")

    asyncio.run(left_open())

    model = chat()
    print("sync", model.invoke("six").content[:5])
    for _ in model.stream("seven"):
        break
    model.close()
    gc.collect()
    """
)


@pytest.mark.system  # a -X dev child: its exit is part of the subject
def test_web_answers_abandoned_cancelled_or_left_open_leak_nothing_under_dev_mode(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer="Alpha beta gamma delta epsilon. " * 8, chunk_size=6, delay=0.01, citations=[])
    stdout = run_clean_under_dev_mode(_LEAK_SCRIPT, base_url)
    assert stdout.split("\n") == [
        "invoke Alpha",
        "after-cancel Alpha",
        "tasks-left 0",
        "left-open",
        "sync Alpha",
        "",
    ]
    assert sum(emulator.handshakes.values()) == 0
    assert emulator.web.asks == 7


def test_an_unknown_transport_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPLX_LABS_TRANSPORT", "sse")
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url="http://127.0.0.1:9")
    assert "Invalid transport 'sse'" in str(caught.value)
