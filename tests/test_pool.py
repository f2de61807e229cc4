"""Warm pool behaviour, counted at the emulator: reuse, idle close, dead sockets, fallback, loops, limits."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs import pool as pool_module
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.script import LabsRequest, Scenario
from langchain_pplx_labs.errors import PerplexityLabsConnectionError, PerplexityLabsDisconnectedError
from langchain_pplx_labs.labs.connection import LabsConnection
from langchain_pplx_labs.settings import Transport

ANSWER = "Pooled sockets answer this one [1]."
GRACEFUL_WAIT = 1.5  # longer than a graceful close may take (GRACEFUL_CLOSE_SECONDS)


@pytest.fixture(autouse=True)
def _forget_polling_only_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tests refuse WebSocket on the shared emulator; its URL must not stay "polling only" here.
    monkeypatch.setattr(pool_module, "_POLLING_ONLY", pool_module.FallbackMemory())
    monkeypatch.setattr(pool_module, "_NO_PIPELINING", pool_module.FallbackMemory())


def _chat(base_url: str, **fields: object) -> ChatPerplexityLabs:
    options: dict[str, object] = {
        "timeout": 20,
        "first_token_timeout": 5,
        "idle_timeout": 5,
        "max_retries": 0,
    }
    options.update(fields)
    return ChatPerplexityLabs(transport="labs", base_url=base_url, **options)


def _wait_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    # A bounded wait for something the other side does asynchronously, not a timing assert.
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.01)


async def _await_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


def _drop_all_sockets(thread: EmulatorThread) -> set[str]:
    """Close every client socket from the server side, as a server dropping idle clients does.

    Returns their session ids: sessions other tests abandoned mid-handshake may linger on the
    shared emulator until its ping timeout, so waiting for an empty server would wait on them.
    """

    def schedule() -> set[str]:
        sockets = dict(thread.emulator.sio.eio.sockets)
        for socket in sockets.values():
            asyncio.get_running_loop().create_task(socket.close(wait=False, abort=False))
        return set(sockets)

    dropped: set[str] = thread.call(schedule)
    return dropped


def test_sequential_questions_share_one_connection(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER)
    with _chat(base_url) as chat:
        answers = [chat.invoke(f"question {n}").content for n in range(4)]
    assert answers == [ANSWER] * 4
    assert len(emulator.requests) == 4
    assert emulator.connections == 1
    assert sum(emulator.handshakes.values()) == 1


async def test_async_questions_share_one_connection(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER)
    async with _chat(base_url) as chat:
        for n in range(3):
            assert (await chat.ainvoke(f"question {n}")).content == ANSWER
    assert emulator.connections == 1
    assert emulator.handshakes["websocket"] == 1
    assert emulator.handshakes["polling"] == 0


async def test_idle_socket_closes_after_pool_idle_timeout(emulator: LabsEmulator, base_url: str) -> None:
    async with _chat(base_url, pool_idle_timeout=0.2) as chat:
        await chat.ainvoke("first")
        pool = await chat._client().pool()
        assert pool.idle_count == 1
        await _await_until(lambda: pool.idle_count == 0, "the idle socket to expire")
        await chat.ainvoke("second")
        assert pool.connections_opened == 2
    assert emulator.connections == 2


async def test_no_idle_timeout_keeps_the_socket(emulator: LabsEmulator, base_url: str) -> None:
    async with _chat(base_url, pool_idle_timeout=None) as chat:
        await chat.ainvoke("first")
        pool = await chat._client().pool()
        await asyncio.sleep(0.3)
        assert pool.idle_count == 1
        await chat.ainvoke("second")
    assert emulator.connections == 1


def test_socket_dropped_while_idle_is_replaced(
    emulator_thread: EmulatorThread, emulator: LabsEmulator, base_url: str
) -> None:
    emulator.script(answer=ANSWER)
    with _chat(base_url) as chat:
        chat.invoke("first")
        dropped = _drop_all_sockets(emulator_thread)
        _wait_until(lambda: dropped.isdisjoint(emulator.sio.eio.sockets), "the server to drop the socket")
        assert chat.invoke("second").content == ANSWER
    assert emulator.connections == 2


def test_pooled_socket_that_dies_before_the_first_token_is_retried_on_a_fresh_one(
    emulator: LabsEmulator, base_url: str
) -> None:
    # The second question lands on a warm socket that the server closes before answering:
    # it is asked again on a new socket even with max_retries=0, since nothing was streamed.
    calls: list[LabsRequest] = []

    def responder(request: LabsRequest) -> Scenario:
        calls.append(request)
        return Scenario(answer=ANSWER, drop_after=0 if len(calls) == 2 else None)

    emulator.script(responder)
    with _chat(base_url, max_retries=0) as chat:
        chat.invoke("first")
        assert chat.invoke("second").content == ANSWER
    assert [c.question for c in calls] == ["first", "second", "second"]
    assert emulator.connections == 2


def test_pooled_socket_that_dies_mid_answer_is_not_retried(emulator: LabsEmulator, base_url: str) -> None:
    calls: list[LabsRequest] = []

    def responder(request: LabsRequest) -> Scenario:
        calls.append(request)
        return Scenario(answer=ANSWER * 4, chunk_size=8, drop_after=2 if len(calls) == 2 else None)

    emulator.script(responder)
    with _chat(base_url, max_retries=2) as chat:
        chat.invoke("first")
        with pytest.raises(PerplexityLabsDisconnectedError):
            list(chat.stream("second"))
    assert len(calls) == 2


def test_refused_websocket_falls_back_to_polling_and_is_remembered(
    emulator: LabsEmulator, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attempts: list[str] = []
    real_open = LabsConnection.open

    async def recording_open(self: LabsConnection, transport: Transport, **options: bool) -> None:
        attempts.append(transport)
        await real_open(self, transport, **options)

    monkeypatch.setattr(LabsConnection, "open", recording_open)
    emulator.refuse_websocket = True
    emulator.script(answer=ANSWER)
    with _chat(base_url) as chat:
        assert chat.invoke("first").content == ANSWER
    assert attempts == ["websocket", "polling"]
    assert emulator.handshakes["polling"] == 1  # the emulator counts only handshakes it accepted
    assert emulator.handshakes["websocket"] == 0
    with _chat(base_url) as chat:  # a new pool for the same base URL skips the refused attempt
        assert chat.invoke("second").content == ANSWER
    assert attempts == ["websocket", "polling", "polling"]
    assert emulator.handshakes["polling"] == 2


def test_polling_fallback_is_forgotten_after_a_while(
    emulator: LabsEmulator, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A refusal that went away must not pin a long-running process to the slow handshake.
    monkeypatch.setattr(pool_module, "_POLLING_ONLY", pool_module.FallbackMemory(seconds=0.2))
    emulator.refuse_websocket = True
    emulator.script(answer=ANSWER)
    with _chat(base_url) as chat:
        assert chat.invoke("first").content == ANSWER
    assert base_url in pool_module._POLLING_ONLY
    emulator.refuse_websocket = False
    _wait_until(lambda: base_url not in pool_module._POLLING_ONLY, "the fallback to expire")
    with _chat(base_url) as chat:
        assert chat.invoke("second").content == ANSWER
    assert emulator.handshakes["websocket"] == 1
    assert emulator.handshakes["polling"] == 1


def test_pools_are_never_shared_across_event_loops(emulator: LabsEmulator, base_url: str) -> None:
    emulator.script(answer=ANSWER)
    with _chat(base_url) as chat:
        assert chat.invoke("sync, on the background loop").content == ANSWER
        for n in range(2):
            assert asyncio.run(chat.ainvoke(f"asyncio.run {n}")).content == ANSWER
        assert chat.invoke("sync again").content == ANSWER
    # background loop: 1 socket reused twice; each asyncio.run: its own socket, closed with its loop
    assert emulator.connections == 3
    assert len(emulator.requests) == 4


def test_max_connections_is_honoured(emulator: LabsEmulator, base_url: str) -> None:
    # Six overlapping questions through a pool of two: without the limit each would open a socket.
    emulator.script(answer=ANSWER, chunk_size=8, delay=0.01)

    async def ask_many(chat: ChatPerplexityLabs) -> list[str]:
        results = await asyncio.gather(*(chat.ainvoke(f"question {n}") for n in range(6)))
        return [str(r.content) for r in results]

    with _chat(base_url, max_connections=2) as chat:
        assert asyncio.run(ask_many(chat)) == [ANSWER] * 6
    assert len(emulator.requests) == 6
    assert emulator.connections == 2


def test_more_than_a_hundred_concurrent_sockets_open_without_waiting(
    emulator: LabsEmulator, base_url: str
) -> None:
    # aiohttp's connector caps a session at 100 connections by default; past that a socket
    # would wait for a free slot until the connect timeout, failing here (no retries).
    emulator.script(answer=ANSWER, chunk_size=8, delay=0.02)

    async def ask_many(chat: ChatPerplexityLabs) -> list[str]:
        results = await asyncio.gather(*(chat.ainvoke(f"question {n}") for n in range(110)))
        return [str(r.content) for r in results]

    with _chat(base_url, max_connections=110, connect_timeout=5) as chat:
        assert asyncio.run(ask_many(chat)) == [ANSWER] * 110
    assert emulator.connections == 110


def test_warmup_opens_a_socket_before_the_first_question(emulator: LabsEmulator, base_url: str) -> None:
    with _chat(base_url) as chat:
        chat.warmup()
        assert emulator.connections == 1
        assert emulator.requests == []
        chat.invoke("first")
    assert emulator.connections == 1
    assert len(emulator.requests) == 1


async def test_awarmup_opens_a_socket_before_the_first_question(
    emulator: LabsEmulator, base_url: str
) -> None:
    async with _chat(base_url) as chat:
        await chat.awarmup()
        assert emulator.connections == 1
        assert emulator.requests == []
        await chat.ainvoke("first")
    assert emulator.connections == 1


def _new_sockets(emulator: LabsEmulator, before: set[str]) -> set[str]:
    return set(emulator.sio.eio.sockets) - before


def test_close_and_context_manager_close_every_socket(emulator: LabsEmulator, base_url: str) -> None:
    before = set(emulator.sio.eio.sockets)
    chat = _chat(base_url)
    chat.invoke("first")
    assert len(_new_sockets(emulator, before)) == 1
    chat.close()
    _wait_until(lambda: not _new_sockets(emulator, before), "close() to close the socket")
    with _chat(base_url) as chat:
        chat.invoke("second")
        assert len(_new_sockets(emulator, before)) == 1
    _wait_until(lambda: not _new_sockets(emulator, before), "the context manager to close the socket")


async def test_aclose_closes_every_socket(emulator: LabsEmulator, base_url: str) -> None:
    before = set(emulator.sio.eio.sockets)
    emulator.script(answer=ANSWER, chunk_size=8, delay=0.01)
    async with _chat(base_url, max_connections=3) as chat:
        await asyncio.gather(*(chat.ainvoke(f"q{n}") for n in range(3)))
        assert len(_new_sockets(emulator, before)) == 3
    await _await_until(lambda: not _new_sockets(emulator, before), "aclose to close the sockets")


@pytest.mark.bench
@pytest.mark.system
@pytest.mark.timeout(300)  # about 60 s on an idle 2-core machine; several times that under load
def test_benchmarks_quick_mode_prints_a_table() -> None:
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick"],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for heading in ("TTFT", "CPU", "abandoned", "ChatOpenAI", "overhead", "concurrent", "Web transport"):
        assert heading in result.stdout
    assert "baseline" in result.stdout
    # The web transport's rows, against its own baseline; no question of the concurrent ones fails.
    assert "| TTFT, ours, warm (later questions, pooled connection) |" in result.stdout
    assert "ours, one model, cold pool: errors 0/20;" in result.stdout
    assert "ours, same model, warm: errors 0/20;" in result.stdout
    # CPU per web answer: this version and ChatOpenAI always; the older commit's row needs its history.
    assert "## CPU per web answer, 2,000 SSE messages" in result.stdout
    assert '| this version, ChatPerplexityLabs(transport="web").astream | 3 |' in result.stdout
    assert "| langchain-openai ChatOpenAI.astream, loopback OpenAI SSE server | 3 |" in result.stdout


def test_refused_connect_on_a_pipelined_socket_is_a_clear_error(
    emulator: LabsEmulator, base_url: str
) -> None:
    # The question rides behind CONNECT without waiting for its ack; a refused CONNECT must
    # still surface as a typed error naming the refusal, not as a hang or a timeout.
    with (
        _chat(base_url, max_retries=0, protocol=LabsProtocol(auth={})) as chat,
        pytest.raises(PerplexityLabsConnectionError, match="refused"),
    ):
        chat.invoke("first")
    assert emulator.connections == 0
    assert emulator.requests == []


def test_server_that_drops_a_pipelined_question_gets_it_again_unpipelined(
    emulator: LabsEmulator, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Node's Socket.IO server closes a connection whose EVENT beats the namespace connect.
    # Emulate that: a slow connect handler (so the client surely pipelines) and a server that
    # closes the socket on the first question; the client must re-ask once, unpipelined.
    sio = emulator.sio
    real_connect = sio.handlers["/"]["connect"]
    real_handle_event = sio._handle_event
    dropped: list[str] = []

    async def slow_connect(sid: str, environ: dict[str, object], auth: object = None) -> None:
        await asyncio.sleep(0.2)
        await real_connect(sid, environ, auth)

    async def drop_first_event(eio_sid: str, namespace: str, *args: object) -> None:
        if not dropped:
            dropped.append(eio_sid)
            await sio.eio.sockets[eio_sid].close(wait=False, abort=False)
            return
        await real_handle_event(eio_sid, namespace, *args)

    monkeypatch.setitem(sio.handlers["/"], "connect", slow_connect)
    monkeypatch.setattr(sio, "_handle_event", drop_first_event)
    emulator.script(answer=ANSWER)
    with _chat(base_url, max_retries=0) as chat:
        assert chat.invoke("first").content == ANSWER
        assert base_url in pool_module._NO_PIPELINING
    assert len(dropped) == 1
    assert emulator.connections == 2


@pytest.mark.parametrize("transport", ["websocket", "polling"])
async def test_aclose_during_connect_ends_the_question_at_once_and_leaves_nothing_open(
    emulator: LabsEmulator, base_url: str, transport: str
) -> None:
    # The in-flight question used to fail only after 10 s (RuntimeError: Session is closed),
    # and a new HTTP session was built on the closed pool that nobody closed.
    emulator.refuse_websocket = transport == "polling"
    baseline = emulator.open_sockets
    for delay in (0, 0.001, 0.002, 0.004, 0.008, 0.016):
        chat = _chat(base_url)
        pool = await chat._client().pool()  # the one the question will use
        task = asyncio.create_task(chat.ainvoke("hello"))
        await asyncio.sleep(delay)
        await chat.aclose()
        done, _ = await asyncio.wait([task], timeout=5)
        assert done, f"the question outlived aclose() by 5 s (delay {delay})"
        error = task.exception()
        # Closed mid-connect: PoolClosedError; mid-answer: the socket was dropped under it.
        assert error is None or isinstance(error, PerplexityLabsConnectionError), repr(error)
        assert pool._session is None
        with pytest.raises(pool_module.PoolClosedError):
            pool._http_session()
        await chat.aclose()  # a question that had not reached the pool yet made a new one
    await _await_until(lambda: emulator.open_sockets <= baseline, "the server to see every socket closed")


@pytest.mark.parametrize("transport", ["websocket", "polling"])
def test_sockets_left_in_the_pool_close_when_asyncio_run_ends(transport: str) -> None:
    # No aclose(): the pool closes when asyncio.run shuts the loop down, after asyncio has
    # cancelled engine.io's loops; a polling server must still be told (its own emulator,
    # so sessions it keeps cannot leak into other tests).
    with EmulatorThread(LabsEmulator(refuse_websocket=transport == "polling")) as thread:
        chat = _chat(thread.base_url, model="sonar", max_retries=0)

        async def three_questions() -> list[object]:
            return [
                m.content for m in await asyncio.gather(*(chat.ainvoke(f"question {n}") for n in range(3)))
            ]

        assert all(asyncio.run(three_questions()))  # three answers, over sockets left open in the pool
        _wait_until(lambda: thread.emulator.open_sockets == 0, "the server to see every socket closed", 5)
        assert thread.emulator.open_sockets == 0  # every socket closed, the server told, with no aclose()


def test_cancelled_aclose_still_closes_polling_sessions() -> None:
    # aclose() is shielded: a cancel must not close the HTTP session under goodbyes in flight.
    with EmulatorThread(LabsEmulator(refuse_websocket=True)) as thread:
        chat = _chat(thread.base_url, model="sonar", max_retries=0)

        async def warm_then_cancel_aclose() -> None:
            await asyncio.gather(*(chat.ainvoke(f"question {n}") for n in range(3)))
            closing = asyncio.create_task(chat.aclose())
            await asyncio.sleep(0)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            await asyncio.sleep(GRACEFUL_WAIT)

        asyncio.run(warm_then_cancel_aclose())
        _wait_until(lambda: thread.emulator.open_sockets == 0, "the server to see every socket closed", 5)
