"""``pplx-labs mcp``: the MCP SDK's own clients over stdio, streamable HTTP and in memory, against the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

# mcp 2 needs pydantic >= 2.12: outside `test`, so the lowest session keeps the package's own floor.
pytest.importorskip("mcp")

import httpx2  # mcp's HTTP client, there when mcp is
from clirun import command, run_cli
from mcp import ClientSession, StdioServerParameters
from mcp.client import Client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, TextContent

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.gateway.mcp import Asker, create_server

CITATIONS = ["https://en.wikipedia.org/wiki/Paris", "https://www.britannica.com/place/Paris"]
DEFAULT_ANSWER = (
    "The capital of France is Paris [1]. It has been the seat of the French government for most of "
    "the country's history [2]."
)
"""What the emulator answers "What is the capital of France?" when nothing is scripted."""


def _text(result: CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, TextContent))


def _environment() -> dict[str, str]:
    """This process's environment without ``PPLX_LABS_*``: the child's flags alone choose (and it reads no
    login session file, as conftest keeps this process from reading one)."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("PPLX_LABS_")}
    return {**kept, "PPLX_LABS_SESSION_FILE": ""}


def _stdio(*flags: str) -> StdioServerParameters:
    """``pplx-labs mcp FLAGS`` as the console script, for the SDK's stdio client to start."""
    program, *args = command("mcp", *flags)
    return StdioServerParameters(command=program, args=args, env=_environment())


# -- in memory: the SDK's Client on the server object, the model against the emulator -----------


@contextlib.asynccontextmanager
async def in_memory(base_url: str, transport: str = "web") -> AsyncIterator[Client]:
    """The SDK's in-memory ``Client`` on a server over one model (a context manager, not a fixture: the
    SDK's task group must close in the task that opened it)."""
    model = ChatPerplexityLabs(
        transport=transport, impersonate=None, base_url=base_url, max_retries=0, timeout=20
    )
    try:
        async with Client(create_server(Asker(model))) as client:
            yield client
    finally:
        await model.aclose()


async def test_a_follow_up_is_asked_in_the_thread_the_answer_returned(
    emulator: LabsEmulator, base_url: str
) -> None:
    async with in_memory(base_url) as web_client:
        emulator.script(answer="Paris.", citations=CITATIONS[:1])
        first = await web_client.call_tool("ask", {"question": "Capital of France?"})
        assert not first.is_error
        assert first.structured_content is not None
        thread_id = first.structured_content["thread_id"]
        assert isinstance(thread_id, str)

        emulator.script(answer="About 2 million.", citations=[])
        second = await web_client.call_tool(
            "ask", {"question": "And its population?", "continue_thread": thread_id}
        )
        assert second.structured_content is not None
        assert second.structured_content["answer"] == "About 2 million."
        body = emulator.web.bodies[-1]
        assert body["query_str"] == "And its population?"
        assert body["params"]["query_source"] == "followup"
        assert body["params"]["last_backend_uuid"] == thread_id
        assert [m["content"] for m in emulator.requests[-1]["messages"]] == [
            "Capital of France?",
            "Paris.",
            "And its population?",
        ]
        # The thread's write token went to the service, never to the client.
        token = body["params"]["read_write_token"]
        assert token
        assert token not in json.dumps(first.structured_content) + _text(first)


async def test_search_options_reach_the_ask(emulator: LabsEmulator, base_url: str) -> None:
    async with in_memory(base_url) as web_client:
        await web_client.call_tool(
            "ask",
            {"question": "Papers on Paris?", "search_mode": "academic", "search_recency_filter": "week"},
        )
        params = emulator.web.bodies[-1]["params"]
        assert params["sources"] == ["scholar"]
        assert params["search_recency_filter"] == "week"
        await web_client.call_tool("ask", {"question": "A poem on Paris?", "disable_search": True})
        params = emulator.web.bodies[-1]["params"]
        assert params["search_focus"] == "writing"
        assert params["sources"] == []
        assert params["search_recency_filter"] is None  # the earlier call's options stayed with it
        # Each call's copy of the model shared its one pool: one session, checked once, for both asks.
        assert emulator.web.session_checks == 1


async def test_the_model_argument_is_sent(emulator: LabsEmulator, base_url: str) -> None:
    async with in_memory(base_url) as web_client:
        result = await web_client.call_tool("ask", {"question": "Capital of France?", "model": "turbo"})
        assert result.structured_content is not None
        assert result.structured_content["model"] == "turbo"
        assert emulator.web.bodies[-1]["params"]["model_preference"] == "turbo"


async def test_list_models_is_the_web_apps_live_list(emulator: LabsEmulator, base_url: str) -> None:
    async with in_memory(base_url) as web_client:
        result = await web_client.call_tool("list_models", {})
    listed = result.structured_content
    assert listed is not None
    assert (listed["transport"], listed["source"], listed["default"]) == ("web", "live", "auto")
    assert [row["name"] for row in listed["models"]] == [
        "turbo",
        "experimental",
        "claude45sonnet",
        "claude45sonnetthinking",
        "pplx_reasoning",
    ]
    assert listed["models"][0] == {
        "name": "turbo",
        "label": "Best",
        "subscription_tier": None,
        "reasoning": False,
    }


async def test_a_model_beyond_the_sessions_tier_is_refused_in_the_packages_words(
    emulator: LabsEmulator, base_url: str
) -> None:
    async with in_memory(base_url) as web_client:
        result = await web_client.call_tool("ask", {"question": "Hi?", "model": "claude45sonnet"})
    assert result.is_error
    assert "Model 'claude45sonnet' needs a signed-in session on the 'pro' tier" in _text(result)
    assert emulator.web.asks == 0


@pytest.mark.parametrize(
    ("arguments", "words"),
    [
        ({"question": "   "}, "The question is empty"),
        (
            {"question": "Hi?", "model": "gpt-9"},
            "Unknown model 'gpt-9': use one of auto, turbo, experimental",
        ),
        ({"question": "Hi?", "continue_thread": "nope"}, "Unknown thread 'nope'"),
        ({"question": "Hi?", "search_mode": "images"}, "search_mode"),
        ({}, "question"),
    ],
)
async def test_bad_arguments_are_tool_errors_naming_the_problem(
    emulator: LabsEmulator, base_url: str, arguments: dict[str, Any], words: str
) -> None:
    async with in_memory(base_url) as web_client:
        result = await web_client.call_tool("ask", arguments)
        assert result.is_error
        assert words in _text(result)
        assert emulator.web.asks == 0


async def test_a_server_failure_is_a_tool_error_in_the_servers_words(
    emulator: LabsEmulator, base_url: str
) -> None:
    async with in_memory(base_url) as web_client:
        emulator.script(answer=DEFAULT_ANSWER, chunk_size=8, fail="Error in processing query", fail_after=2)
        result = await web_client.call_tool("ask", {"question": "Capital of France?"})
        assert result.is_error
        assert "Error in processing query" in _text(result)


async def test_labs_has_its_models_and_no_threads(base_url: str, emulator: LabsEmulator) -> None:
    async with in_memory(base_url, "labs") as client:
        models = await client.call_tool("list_models", {})
        assert models.structured_content is not None
        assert models.structured_content["transport"] == "labs"
        assert models.structured_content["default"] == "r1-1776"
        assert [row["name"] for row in models.structured_content["models"]] == [
            "r1-1776",
            "sonar-pro",
            "sonar",
            "sonar-reasoning",
            "sonar-reasoning-pro",
        ]
        emulator.script(answer="Paris.", citations=CITATIONS[:1])
        answer = await client.call_tool("ask", {"question": "Capital of France?", "model": "sonar"})
        assert answer.structured_content is not None
        assert answer.structured_content["answer"] == "Paris."
        assert answer.structured_content["citations"] == CITATIONS[:1]
        assert answer.structured_content["thread_id"] is None
        assert emulator.requests[-1]["model"] == "sonar"
        refused = await client.call_tool("ask", {"question": "More?", "continue_thread": "x"})
        assert refused.is_error
        assert "continue_thread needs the web transport" in _text(refused)


# -- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--http", "--host", "0.0.0.0"], "refusing to serve on 0.0.0.0 without --api-key"),
        (
            ["--http", "--host", "192.0.2.10", "--emulator"],
            "refusing to serve on 192.0.2.10 without --api-key",
        ),
        (["--host", "127.0.0.1"], "--host is for --http"),
        (["--api-key", "k"], "--api-key is for --http"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(argv: list[str], words: str) -> None:
    result = run_cli("mcp", *argv)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("pplx-labs: error: ")
    assert words in result.stderr


def test_a_key_from_the_environment_allows_a_wide_host() -> None:
    # The check passes; the bind then fails on an address this machine does not have, in one line.
    result = run_cli(
        "mcp",
        "--http",
        "--host",
        "192.0.2.10",
        "--emulator",
        env={"PPLX_LABS_MCP_API_KEY": "k", "PPLX_LABS_SESSION_FILE": ""},
    )
    assert result.returncode == 1
    assert result.stderr.startswith("pplx-labs: error: cannot serve on 192.0.2.10:8000: ")


# -- processes: the SDK's stdio and streamable-HTTP clients -----------------------------------------


@pytest.mark.system
async def test_stdio_lists_the_tools_and_answers_with_sources() -> None:
    async with stdio_client(_stdio("--emulator")) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        tools = {tool.name: tool for tool in (await session.list_tools()).tools}
        assert set(tools) == {"ask", "list_models"}
        output_schema = tools["ask"].output_schema
        assert output_schema is not None
        assert {"answer", "citations", "search_results", "thread_id"} <= set(output_schema["properties"])

        result = await session.call_tool("ask", {"question": "What is the capital of France?"})
        assert not result.is_error
        assert isinstance(result.content[0], TextContent)
        assert result.content[0].text == DEFAULT_ANSWER
        structured = result.structured_content
        assert structured is not None
        assert structured["answer"] == DEFAULT_ANSWER
        assert structured["citations"] == CITATIONS
        assert [source["url"] for source in structured["search_results"]] == CITATIONS
        assert f"[1] {CITATIONS[0]}" in _text(result)
        assert structured["thread_id"] in _text(result)

        empty = await session.call_tool("ask", {"question": ""})
        assert empty.is_error
        assert "The question is empty" in _text(empty)


@pytest.mark.system
async def test_stdio_follow_up_reaches_the_service_as_a_follow_up(
    emulator: LabsEmulator, base_url: str
) -> None:
    emulator.script(answer="Paris.", citations=CITATIONS[:1])
    params = _stdio("--base-url", base_url, "--impersonate", "none")
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        first = await session.call_tool("ask", {"question": "Capital of France?"})
        assert first.structured_content is not None
        assert first.structured_content["citations"] == CITATIONS[:1]
        thread_id = first.structured_content["thread_id"]
        emulator.script(answer="About 2 million.", citations=[])
        second = await session.call_tool(
            "ask", {"question": "And its population?", "continue_thread": thread_id}
        )
        assert second.structured_content is not None
        assert second.structured_content["answer"] == "About 2 million."
    assert emulator.web.asks == 2
    assert emulator.web.bodies[-1]["params"]["query_source"] == "followup"
    assert emulator.web.bodies[-1]["params"]["last_backend_uuid"] == thread_id
    assert emulator.web.bodies[0]["params"].get("query_source") != "followup"


async def _ask_over_http(url: str) -> tuple[CallToolResult, httpx2.Response]:
    """One ``ask`` through the SDK's streamable-HTTP client with the key, then a request without it."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer test-key"}) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("ask", {"question": "What is the capital of France?"})
    async with httpx2.AsyncClient() as http:
        refused = await http.post(url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    return result, refused


@pytest.mark.system
def test_streamable_http_with_a_key_then_ctrl_c_exits_130() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", "mcp", "--http", "--port", "0", "--emulator"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_environment(), "PPLX_LABS_MCP_API_KEY": "test-key"},
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/mcp")
        result, refused = asyncio.run(_ask_over_http(url))
        assert result.structured_content is not None
        assert result.structured_content["answer"] == DEFAULT_ANSWER
        assert result.structured_content["citations"] == CITATIONS
        assert refused.status_code == 401
        assert "Missing or incorrect API key" in refused.text
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)
        assert process.returncode == 130, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def _stdio_server() -> subprocess.Popen[str]:
    """``pplx-labs mcp --emulator`` over stdio, answered once so it is serving (initialize, then ping)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", "mcp", "--emulator"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    assert process.stdin is not None
    assert process.stdout is not None
    initialize = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    process.stdin.write(json.dumps(initialize) + "\n")
    process.stdin.flush()
    assert json.loads(process.stdout.readline())["id"] == 1  # it answers: the server is up
    return process


@pytest.mark.system
@pytest.mark.parametrize(("how", "code"), [("ctrl-c", 130), ("end of stdin", 0)])
def test_a_stdio_server_stops_on_ctrl_c_or_at_the_end_of_its_input(how: str, code: int) -> None:
    process = _stdio_server()
    try:
        if how == "ctrl-c":
            process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=15)  # closes its stdin: the end of its input
        assert process.returncode == code, stderr
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
