"""The direct WebSocket keeps its socket alive: pings answered while idle, while a slow caller
reads, and a server that stops pinging is noticed. Real emulator, real sockets, short pings."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.labs.connection import LabsConnection
from langchain_pplx_labs.labs.dial import LabsDialer
from langchain_pplx_labs.labs.websocket import WebSocketWire
from langchain_pplx_labs.settings import ConnectionSettings

# A client that stops answering is dropped 1.5 s after its last pong (python-engineio's
# server truncates the interval to whole seconds in its OPEN packet).
PING_INTERVAL, PING_TIMEOUT = 1.0, 0.5
SILENCE = PING_INTERVAL + PING_TIMEOUT
ANSWER = "one two three four five six seven eight nine ten"


@pytest.fixture(scope="module")
def fast_pings() -> Iterator[EmulatorThread]:
    with EmulatorThread(LabsEmulator(ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT)) as thread:
        yield thread


@pytest.fixture
def emulator(fast_pings: EmulatorThread) -> LabsEmulator:
    emulator = fast_pings.emulator
    fast_pings.call(emulator.reset)
    emulator.script(answer=ANSWER, chunk_size=10)
    return emulator


def _chat(emulator: LabsEmulator) -> ChatPerplexityLabs:
    return ChatPerplexityLabs(
        transport="labs", base_url=emulator.base_url, max_retries=0, idle_timeout=5, timeout=20
    )


async def test_idle_pooled_socket_answers_pings(emulator: LabsEmulator) -> None:
    async with _chat(emulator) as chat:
        assert (await chat.ainvoke("first")).content == ANSWER
        await asyncio.sleep(2 * SILENCE)  # only pongs keep it open this long
        assert (await chat.ainvoke("second")).content == ANSWER
    assert emulator.connections == 1


async def test_a_caller_that_stops_reading_mid_answer_keeps_its_socket(emulator: LabsEmulator) -> None:
    # While a query streams, its own task reads the socket; a caller busy for longer than the
    # server's ping timeout must not lose the socket (and with it the rest of the answer).
    async with _chat(emulator) as chat:
        parts = []
        async for chunk in chat.astream("slow reader"):
            if not parts:
                await asyncio.sleep(2 * SILENCE)
            parts.append(chunk.text)
        assert "".join(parts) == ANSWER
        assert (await chat.ainvoke("again")).content == ANSWER
    assert emulator.connections == 1


@pytest.fixture
async def stops_pinging(socketio_endpoint: Any) -> str:
    """An Engine.IO server that opens, acknowledges CONNECT, and then never pings."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(
            '0{"sid":"s","upgrades":[],"pingInterval":100,"pingTimeout":100,"maxPayload":1000000}'
        )
        await ws.receive()  # our CONNECT
        await ws.send_str('40{"sid":"n"}')
        async for _ in ws:  # silent from here on, but keeps the TCP connection open
            pass
        return ws

    url: str = await socketio_endpoint(handler)
    return url


async def test_a_server_that_stops_pinging_is_dropped(stops_pinging: str) -> None:
    settings = ConnectionSettings(base_url=stops_pinging)
    async with contextlib.aclosing(LabsDialer()) as dialer:
        connection = LabsConnection(settings, dialer)
        await connection.open("websocket", pipelined=False)
        assert connection.alive
        give_up = time.monotonic() + 5  # a bounded wait for the watchdog, not a timing assert
        while connection.alive:
            if time.monotonic() > give_up:
                pytest.fail("a socket without pings for pingInterval + pingTimeout must be dropped")
            await asyncio.sleep(0.02)
        await connection.close()


class _ReasonRecorder(LabsEmulator):
    """Records why the server saw each socket go."""

    def __init__(self) -> None:
        super().__init__()
        self.reasons: list[object] = []

    async def _on_disconnect(self, sid: str, reason: object = None) -> None:
        self.reasons.append(reason)
        await super()._on_disconnect(sid, reason)


def test_a_clean_close_says_goodbye() -> None:
    with EmulatorThread(_ReasonRecorder()) as thread:
        emulator = thread.emulator
        assert isinstance(emulator, _ReasonRecorder)
        emulator.script(answer=ANSWER)
        with ChatPerplexityLabs(transport="labs", base_url=thread.base_url, max_retries=0) as chat:
            assert chat.invoke("clean").content == ANSWER
        give_up = time.monotonic() + 5
        while not emulator.reasons and time.monotonic() < give_up:
            time.sleep(0.02)
    # A goodbye (Socket.IO DISCONNECT) reached the server before the socket closed.
    assert [str(reason) for reason in emulator.reasons] == ["client disconnect"]


async def test_keepalive_firing_while_a_query_takes_over_the_socket_starts_no_second_reader(
    emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The keepalive timer of the previous query may fire just as the next one pauses the
    # background reader: it must see the socket held, or two tasks would read it at once.
    pause = WebSocketWire._pause_reader

    async def pause_as_the_timer_fires(self: WebSocketWire) -> None:
        asyncio.get_running_loop().call_soon(self._keep_alive, self._reads)
        await pause(self)

    monkeypatch.setattr(WebSocketWire, "_pause_reader", pause_as_the_timer_fires)
    async with _chat(emulator) as chat:
        for question in ("one", "two", "three"):
            assert (await chat.ainvoke(question)).content == ANSWER
    assert emulator.connections == 1
