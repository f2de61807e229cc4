"""Each failure surfaces as its own typed error through a real socket, with the detail a user needs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

import langchain_pplx_labs
from langchain_pplx_labs import (
    ChatPerplexityLabs,
    PerplexityLabsBlockedError,
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsInputError,
    PerplexityLabsProtocolError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.emulator import LabsEmulator

ANSWER = "Paris is the capital of France [1]. It hosts the government [2]."


@pytest.fixture
async def chat(base_url: str) -> AsyncIterator[ChatPerplexityLabs]:
    """No retries and short silences, so each fault shows up once and quickly."""
    model = ChatPerplexityLabs(
        transport="labs",
        model="sonar-pro",
        base_url=base_url,
        max_retries=0,
        first_token_timeout=0.5,
        idle_timeout=0.5,
        timeout=10,
    )
    yield model
    await model.aclose()


def test_every_error_is_exported_at_the_top_and_shares_one_base() -> None:
    names = [n for n in langchain_pplx_labs.__all__ if n.startswith("PerplexityLabs") and n.endswith("Error")]
    assert len(names) >= 8
    for name in names:
        assert issubclass(getattr(langchain_pplx_labs, name), PerplexityLabsError)
    assert issubclass(PerplexityLabsInputError, ValueError)
    assert issubclass(PerplexityLabsTimeoutError, TimeoutError)


async def test_failed_status_carries_server_text_verbatim(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, fail="Error in processing query", fail_after=0)
    with pytest.raises(PerplexityLabsServerError) as caught:
        await chat.ainvoke("Q")
    assert caught.value.server_message == "Error in processing query"
    assert "Error in processing query" in str(caught.value)
    assert caught.value.model == "sonar-pro"
    assert len(emulator.requests) == 1  # server failures are not retried by default


async def test_failed_status_mid_answer_keeps_partial_content(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=10, fail="Upstream model overloaded", fail_after=2)
    with pytest.raises(PerplexityLabsServerError, match="Upstream model overloaded") as caught:
        await chat.ainvoke("Q")
    assert caught.value.partial_content == ANSWER[:20]


async def test_cloudflare_403_is_reported_as_blocked(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.blocked = True
    with pytest.raises(PerplexityLabsBlockedError) as caught:
        await chat.ainvoke("Q")
    message = str(caught.value)
    assert "blocked" in message
    assert "Cloudflare" in message
    assert "403" in message
    assert caught.value.status == 403
    assert isinstance(caught.value, PerplexityLabsConnectionError)
    assert emulator.requests == []


async def test_silent_server_raises_first_token_timeout(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, stall_after=0)
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await chat.ainvoke("Q")
    assert caught.value.which == "first_token"
    assert "first_token timeout" in str(caught.value)
    assert caught.value.seconds == 0.5


async def test_server_silent_mid_answer_raises_idle_timeout_with_partial(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, stall_after=3)
    with pytest.raises(PerplexityLabsTimeoutError) as caught:
        await chat.ainvoke("Q")
    assert caught.value.which == "idle"
    assert caught.value.partial_content == ANSWER[:24]


async def test_total_timeout_is_named(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer=ANSWER, chunk_size=8, delay=0.2)
    async with ChatPerplexityLabs(
        transport="labs", model="sonar", base_url=base_url, max_retries=0, timeout=0.5
    ) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("Q")
    assert caught.value.which == "total"
    assert "total timeout" in str(caught.value)


async def test_disconnect_mid_stream_keeps_partial_content(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=10, drop_after=2)
    received: list[str] = []

    async def consume() -> None:
        async for chunk in chat.astream("Q"):
            received.append(str(chunk.content))

    with pytest.raises(PerplexityLabsDisconnectedError) as caught:
        await consume()
    assert "".join(received) == ANSWER[:20]
    assert caught.value.partial_content == ANSWER[:20]
    assert "closed the connection" in str(caught.value)


async def test_garbage_frame_raises_protocol_error_with_excerpt(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, chunk_size=10, garbage_after=1)
    with pytest.raises(PerplexityLabsProtocolError) as caught:
        await chat.ainvoke("Q")
    assert "{not json" in caught.value.excerpt
    assert "{not json" in str(caught.value)
    assert caught.value.partial_content == ANSWER[:10]


async def test_wrongly_typed_frame_raises_protocol_error_with_excerpt(
    chat: ChatPerplexityLabs, emulator: LabsEmulator
) -> None:
    emulator.script(answer=ANSWER, wrong_types_after=0)
    with pytest.raises(PerplexityLabsProtocolError) as caught:
        await chat.ainvoke("Q")
    assert "'output': 42" in caught.value.excerpt


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_unreachable_port_raises_connection_error() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    async with ChatPerplexityLabs(transport="labs", base_url=url, max_retries=0, connect_timeout=5) as chat:
        with pytest.raises(PerplexityLabsConnectionError) as caught:
            await chat.ainvoke("Q")
    assert not isinstance(caught.value, PerplexityLabsBlockedError)
    assert f"127.0.0.1:{url.rsplit(':', 1)[1]}" in str(caught.value)


def test_sync_invoke_raises_the_same_typed_error(model: ChatPerplexityLabs, emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    with pytest.raises(PerplexityLabsServerError, match="Error in processing query"):
        model.invoke("Q")


@pytest.mark.parametrize(
    "fault",
    [
        {"stall_after": 1},
        {"drop_after": 1},
        {"garbage_after": 1},
        {"fail": "Error in processing query", "fail_after": 1},
        {"delay": 0.3, "chunk_size": 4},
    ],
    ids=["idle-timeout", "disconnect", "garbage", "failed", "total-timeout"],
)
async def test_after_an_error_the_next_question_gets_its_own_answer(
    base_url: str, emulator: LabsEmulator, fault: dict[str, object]
) -> None:
    emulator.script(answer="Stale answer that must never reappear.", **fault)
    baseline = emulator.open_sockets
    async with ChatPerplexityLabs(
        transport="labs", model="sonar", base_url=base_url, max_retries=0, idle_timeout=0.5, timeout=1.0
    ) as chat:
        with pytest.raises(PerplexityLabsError):
            await chat.ainvoke("first")
        emulator.script(answer="Fresh answer.", citations=["https://fresh.example"])
        message = await chat.ainvoke("second")
    assert message.content == "Fresh answer."
    assert message.response_metadata["citations"] == ["https://fresh.example"]
    assert await sockets_settle(emulator, baseline), f"{emulator.open_sockets - baseline} socket(s) left open"


async def sockets_settle(emulator: LabsEmulator, baseline: int) -> bool:
    """Wait (bounded) for the server to see our sockets close; True once none of ours is left."""
    for _ in range(100):
        if emulator.open_sockets <= baseline:
            return True
        await asyncio.sleep(0.05)
    return False


async def test_handshake_timeout_is_named_when_the_server_never_speaks() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # the kernel completes TCP handshakes; nobody ever answers
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with ChatPerplexityLabs(
            transport="labs", base_url=url, max_retries=0, handshake_timeout=0.5
        ) as chat:
            with pytest.raises(PerplexityLabsTimeoutError) as caught:
                await chat.ainvoke("Q")
    assert caught.value.which == "handshake"


@pytest.fixture(params=["close", "text", "badopen"])
async def not_engineio_url(request: pytest.FixtureRequest, socketio_endpoint: Any) -> str:
    """A WebSocket endpoint whose first message is not an Engine.IO OPEN (or that closes at once)."""
    from aiohttp import web

    async def handler(http_request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(http_request)
        if request.param == "close":
            await ws.close()
        else:
            await ws.send_str("hello" if request.param == "text" else '0{"nosid": 1}')
            await ws.receive()  # until the client goes away
        return ws

    url: str = await socketio_endpoint(handler)
    return url


async def test_websocket_reply_that_is_not_engineio_is_a_connection_error(
    not_engineio_url: str, request: pytest.FixtureRequest
) -> None:
    url_kind = request.node.callspec.params["not_engineio_url"]
    from langchain_pplx_labs.labs.connection import LabsConnection
    from langchain_pplx_labs.labs.dial import LabsDialer
    from langchain_pplx_labs.settings import ConnectionSettings

    settings = ConnectionSettings(base_url=not_engineio_url)
    # The pool's dialer: its tracing is how open() finds the WebSocket engine.io dropped.
    async with contextlib.aclosing(LabsDialer()) as dialer:
        connection = LabsConnection(settings, dialer)
        expected = (
            r"closed the WebSocket before Engine\.IO's OPEN" if "close" in url_kind else r"not Engine\.IO"
        )
        with pytest.raises(PerplexityLabsConnectionError, match=expected):
            await connection.open("websocket")
        assert not connection.alive
    async with ChatPerplexityLabs(
        transport="labs", base_url=not_engineio_url, max_retries=0, connect_timeout=2
    ) as chat:
        with pytest.raises(PerplexityLabsConnectionError):  # after the polling fallback also failed
            await chat.ainvoke("Q")
