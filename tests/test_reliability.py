"""Faults end in typed errors: timeouts, retries before the first token, partial text, cancellation, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import devmode
import pytest
from langchain_core.messages import AIMessage, HumanMessage
from pydantic import ValidationError

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs import pool as pool_module
from langchain_pplx_labs.emulator import EmulatorThread, LabsEmulator
from langchain_pplx_labs.emulator.script import Drop, Emit, LabsRequest, Scenario, Step, progress_frame
from langchain_pplx_labs.errors import (
    PerplexityLabsConnectionError,
    PerplexityLabsDisconnectedError,
    PerplexityLabsError,
    PerplexityLabsInputError,
    PerplexityLabsServerError,
    PerplexityLabsTimeoutError,
)
from langchain_pplx_labs.labs.connection import LabsConnection
from langchain_pplx_labs.protocol import progress_event


def _model(base_url: str, **overrides: Any) -> ChatPerplexityLabs:
    settings: dict[str, Any] = {
        "base_url": base_url,
        "model": "sonar-pro",
        "timeout": 20,
        "connect_timeout": 5,
        "first_token_timeout": 5,
        "idle_timeout": 5,
        "max_retries": 0,
    }
    settings.update(overrides)
    return ChatPerplexityLabs(transport="labs", **settings)


async def _collect(chat: ChatPerplexityLabs, received: list[str]) -> None:
    """Stream an answer into ``received``, as a caller printing tokens would."""
    async for chunk in chat.astream("hello"):
        received.append(str(chunk.content))


@pytest.fixture
async def mute_server() -> AsyncIterator[str]:
    """Accepts connections and reads the HTTP upgrade request, then never answers it."""
    held: list[asyncio.StreamWriter] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        while await reader.read(4096):
            pass

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    for writer in held:
        writer.close()
    server.close()
    await server.wait_closed()


# -- timeouts ------------------------------------------------------------------------------


async def test_blackhole_ends_in_connect_timeout(blackhole: str) -> None:
    async with _model(blackhole, connect_timeout=0.3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "connect"
    assert "connect timeout" in str(caught.value)


async def test_unanswered_handshake_ends_in_handshake_timeout(mute_server: str) -> None:
    # Connected at once, then the upgrade request is never answered: the handshake budget fires.
    async with _model(mute_server, connect_timeout=5, handshake_timeout=0.3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "handshake"
    assert "handshake timeout" in str(caught.value)


async def test_silent_server_ends_in_first_token_timeout(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)
    async with _model(base_url, first_token_timeout=0.3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "first_token"
    assert caught.value.partial_content == ""
    assert len(emulator.requests) == 1


async def test_stall_mid_answer_ends_in_idle_timeout_with_partial_text(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(answer="abcdefghij" * 5, chunk_size=10, stall_after=2)
    received: list[str] = []
    async with _model(base_url, idle_timeout=0.3) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await _collect(chat, received)
    assert caught.value.which == "idle"
    assert "".join(received) == "abcdefghij" * 2
    assert caught.value.partial_content == "".join(received)


async def test_slow_answer_ends_in_total_timeout(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="x" * 200, chunk_size=5, delay=0.1)
    async with _model(base_url, timeout=0.5, idle_timeout=5) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "total"
    assert caught.value.partial_content.startswith("xxxxx")


def test_sync_invoke_raises_the_same_typed_timeout(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=1, chunk_size=4, answer="one two three")
    with _model(base_url, idle_timeout=0.3) as chat, pytest.raises(PerplexityLabsTimeoutError) as caught:
        chat.invoke("hello")
    assert caught.value.which == "idle"
    assert caught.value.partial_content == "one "


# -- retries -------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _tcp_relay(
    base_url: str, *, slam_first: int = 0, dark: asyncio.Event | None = None
) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP relay in front of the emulator: slams the first ``seen[1]`` connections shut, and
    swallows every byte both ways once ``dark`` is set. Yields its URL and ``seen``:
    [connections so far, connections to slam] (tests may raise the second)."""
    port = int(base_url.rsplit(":", 1)[1])
    seen = [0, slam_first]
    pipes: set[asyncio.Task[None]] = set()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if dark is None or not dark.is_set():
                    writer.write(data)
                    await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        if seen[0] <= seen[1]:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            pipes.add(task)

    server = await asyncio.start_server(relay, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()
        for task in pipes:
            task.cancel()
        await asyncio.gather(*pipes, return_exceptions=True)
        await server.wait_closed()


@pytest.fixture
async def flaky_front(base_url: str) -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP relay to the emulator that slams the first two connections shut."""
    async with _tcp_relay(base_url, slam_first=2) as front:
        yield front


async def test_connect_failures_are_retried(
    flaky_front: tuple[str, list[int]], emulator: LabsEmulator
) -> None:
    url, seen = flaky_front
    emulator.script(answer="made it")
    async with _model(url, max_retries=3) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "made it"
    assert seen[0] > 2  # the two slammed connections were tried, then a good one
    assert len(emulator.requests) == 1


async def test_connect_failures_without_retries_raise_connection_error(
    flaky_front: tuple[str, list[int]], emulator: LabsEmulator
) -> None:
    url, seen = flaky_front
    seen[1] = 10**6
    async with _model(url, max_retries=0) as chat:
        with pytest.raises(PerplexityLabsConnectionError, match=re.escape("127.0.0.1")):
            await chat.ainvoke("hello")
    assert emulator.requests == []
    tried_without_retries = seen[0]
    seen[0] = 0
    async with _model(url, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsConnectionError):
            await chat.ainvoke("hello")
    assert seen[0] == 3 * tried_without_retries  # each retry repeats the whole connect


async def test_drop_before_first_token_is_retried_once_more(base_url: str, emulator: LabsEmulator) -> None:
    answers = iter([[Drop()], Scenario(answer="second time lucky")])

    def responder(request: LabsRequest) -> Scenario | list[Step]:
        return next(answers)

    emulator.script(responder)
    async with _model(base_url, max_retries=2) as chat:
        message = await chat.ainvoke("hello")
    assert message.content == "second time lucky"
    assert len(emulator.requests) == 2


async def test_server_failure_is_not_retried_by_default(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    async with _model(base_url, max_retries=3) as chat:
        with pytest.raises(PerplexityLabsServerError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.server_message == "Error in processing query"
    assert len(emulator.requests) == 1


async def test_server_failure_is_retried_when_asked(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(fail="Error in processing query")
    async with _model(base_url, max_retries=2, retry_server_failures=True) as chat:
        with pytest.raises(PerplexityLabsServerError):
            await chat.ainvoke("hello")
    assert len(emulator.requests) == 3


async def test_never_reasks_after_text_was_streamed(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="0123456789" * 4, chunk_size=10, drop_after=2)
    received: list[str] = []
    async with _model(base_url, max_retries=3) as chat:
        with pytest.raises(PerplexityLabsDisconnectedError) as caught:
            await _collect(chat, received)
    assert len(emulator.requests) == 1
    assert "".join(received) == "0123456789" * 2
    assert caught.value.partial_content == "".join(received)


async def test_failure_after_text_keeps_partial_content(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="abcd" * 10, chunk_size=4, fail="overloaded", fail_after=3)
    received: list[str] = []
    async with _model(base_url, max_retries=2, retry_server_failures=True) as chat:
        with pytest.raises(PerplexityLabsServerError) as caught:
            await _collect(chat, received)
    assert len(emulator.requests) == 1  # text was out: retry_server_failures must not re-ask
    assert caught.value.partial_content == "".join(received) == "abcd" * 3


# -- cancellation --------------------------------------------------------------------------


async def _consume(chat: ChatPerplexityLabs, first: asyncio.Event) -> None:
    async for _ in chat.astream("hello"):
        first.set()


def _fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_early_break_does_not_leak_sockets(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="word " * 200, chunk_size=5)
    # Abandoned answers are drained and their sockets kept (up to max_connections): two at most.
    async with _model(base_url, max_connections=2) as chat:
        async for _ in chat.astream("warm up"):
            break
        before = _fd_count()
        for _ in range(25):
            async for chunk in chat.astream("hello"):
                assert chunk.content == "word "
                break
        after = _fd_count()
        message = await chat.ainvoke("still works?")
    assert message.content == "word " * 200
    assert after - before <= 2
    assert emulator.open_sockets <= 2


async def test_cancelled_task_does_not_leak_sockets(
    base_url: str, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.script(answer="slow " * 100, chunk_size=5, delay=0.02)
    # Cancelled answers are drained and their sockets kept (up to max_connections): two at most.
    # From the third question on both slots are held by drains: it waits DRAIN_YIELD_SECONDS, then
    # ends the oldest drain. The same path at 0.1 s instead of 1 s each time.
    monkeypatch.setattr(pool_module, "DRAIN_YIELD_SECONDS", 0.1)
    async with _model(base_url, max_connections=2) as chat:
        await chat.ainvoke("warm up")
        before = _fd_count()
        for _ in range(10):
            first = asyncio.Event()
            task = asyncio.create_task(_consume(chat, first))
            await asyncio.wait_for(first.wait(), 5)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        after = _fd_count()
        emulator.script(answer="fine")
        message = await chat.ainvoke("still works?")
    assert message.content == "fine"
    assert after - before <= 2


# Two -X dev scenarios of this file, run in one child (see ``dev_mode_runs``): cancels and breaks
# on a slow answer, and cancels landing at every moment of a connect over polling.
_DEV_MODE_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, os, sys
    from langchain_pplx_labs import ChatPerplexityLabs
    from langchain_pplx_labs import pool as pool_module

    def fds():
        return len(os.listdir("/proc/self/fd"))

    async def cancel_and_break():
        chat = ChatPerplexityLabs(transport="labs", base_url=SLOW_URL, model="sonar", first_token_timeout=5, idle_timeout=5, max_retries=0, max_connections=2)
        async for _ in chat.astream("warm up"):
            break
        start = fds()
        for _ in range(15):
            async for _ in chat.astream("break early"):
                break
            task = asyncio.create_task(chat.ainvoke("cancel me"))
            await asyncio.sleep(0.05)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        gc.collect()
        print("fd-growth", fds() - start)
        await chat.aclose()

    def cancellation():
        # Both slots soon held by drains of abandoned answers: each question waits DRAIN_YIELD_SECONDS,
        # then ends the oldest drain. The path is the same at 0.1 s as at 1 s, and ten times shorter.
        pool_module.DRAIN_YIELD_SECONDS = 0.1
        try:
            asyncio.run(cancel_and_break())
            chat = ChatPerplexityLabs(transport="labs", base_url=SLOW_URL, model="sonar", first_token_timeout=5, idle_timeout=5)
            for _ in range(5):
                for _ in chat.stream("sync break"):
                    break
            chat.close()
            gc.collect()
        finally:
            pool_module.DRAIN_YIELD_SECONDS = 1.0

    async def cancel_connects():
        chat = ChatPerplexityLabs(transport="labs", base_url=POLLING_URL, model="sonar", max_retries=0, pool_idle_timeout=None)
        await chat.ainvoke("warm up")
        pool = await chat._current_client.pool()
        for i in range(30):
            # A cancel after the question went out leaves a drain that pools its socket when it ends:
            # wait for it, so that socket is closed here and not forgotten by the clear() below.
            while pool.draining_count:
                await asyncio.sleep(0.01)
            await asyncio.gather(*(c.close() for c, _ in pool._idle))
            pool._idle.clear()
            task = asyncio.create_task(chat.ainvoke("cancel me while connecting"))
            await asyncio.sleep(0.0005 * i)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while pool.draining_count:  # a cancel after the question went out leaves a drain, then a pooled socket
            await asyncio.sleep(0.01)
        await asyncio.gather(*(c.close() for c, _ in pool._idle))  # the last one may have finished
        pool._idle.clear()
        await asyncio.sleep(0.5)
        loops = [t for t in asyncio.all_tasks() if "_read_loop" in repr(t) or "_write_loop" in repr(t)]
        print("engineio-loops", len(loops))
        await chat.aclose()
        gc.collect()

    SCENARIOS = {
        "cancellation": cancellation,
        "cancelled-connects-over-polling": lambda: asyncio.run(cancel_connects()),
    }
    """
)


@dataclasses.dataclass(frozen=True)
class DevModeRuns:
    """The batch's scenarios, and the polling emulator whose sessions the connect scenario opened."""

    scenarios: dict[str, devmode.Scenario]
    polling: LabsEmulator
    polling_baseline: int


@pytest.fixture(scope="module")
def dev_mode_runs() -> Iterator[DevModeRuns]:
    """One ``-X dev -W error`` child for both scenarios, each against an emulator of its own."""
    # Its own polling emulator: a session cancelled before the handshake ends lingers until the
    # server's ping timeout, which must not leak into tests on the shared one.
    with EmulatorThread() as slow, EmulatorThread(LabsEmulator(refuse_websocket=True)) as polling:
        slow.emulator.script(answer="tick " * 100, chunk_size=5, delay=0.01)
        script = f"SLOW_URL = {slow.base_url!r}\nPOLLING_URL = {polling.base_url!r}\n" + _DEV_MODE_SCRIPT
        baseline = polling.emulator.open_sockets
        scenarios = devmode.run_scenarios_under_dev_mode(
            script, ["cancellation", "cancelled-connects-over-polling"]
        )
        yield DevModeRuns(scenarios, polling.emulator, baseline)


@pytest.mark.system
def test_cancellation_is_clean_under_dev_mode_and_warnings_as_errors(dev_mode_runs: DevModeRuns) -> None:
    stdout = dev_mode_runs.scenarios["cancellation"].assert_clean()
    growth = int(stdout.split("fd-growth")[1].split()[0])
    assert growth <= 2, stdout


# -- bad input -----------------------------------------------------------------------------


async def test_too_large_conversation_fails_before_sending(base_url: str, emulator: LabsEmulator) -> None:
    async with _model(base_url, max_input_chars=100) as chat:
        with pytest.raises(PerplexityLabsInputError, match="max_input_chars"):
            await chat.ainvoke("x" * 101)
    assert emulator.requests == []
    assert sum(emulator.handshakes.values()) == 0


async def test_empty_conversation_is_refused(base_url: str, emulator: LabsEmulator) -> None:
    async with _model(base_url) as chat:
        with pytest.raises(PerplexityLabsInputError, match="empty conversation"):
            await chat.ainvoke([])
    assert emulator.requests == []


async def test_image_part_is_refused_naming_it(base_url: str, emulator: LabsEmulator) -> None:
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    message = HumanMessage(content=[{"type": "text", "text": "what is this?"}, image])
    async with _model(base_url) as chat:
        with pytest.raises(PerplexityLabsInputError, match="image_url"):
            await chat.ainvoke([message])
    assert emulator.requests == []


@pytest.mark.parametrize("name", ["sonar pro", "sonar\n", "", "r1;rm -rf", "a" * 300, "ünïcode"])
def test_invalid_model_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(model=name)
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], PerplexityLabsInputError)
    assert "Invalid web model name" in str(caught.value)  # the default transport's (issue #31)
    assert "known web models: auto" in str(caught.value)


@pytest.mark.parametrize("url", ["", "nonsense", "ftp://example.org", "http://", "file:///etc/passwd"])
def test_invalid_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ChatPerplexityLabs(base_url=url)
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], PerplexityLabsInputError)
    assert "Invalid base_url" in str(caught.value)


async def test_unreachable_port_is_a_connection_error(emulator: LabsEmulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with _model(f"http://127.0.0.1:{port}") as chat:
        with pytest.raises(PerplexityLabsConnectionError, match=re.escape("127.0.0.1")):
            await chat.ainvoke("hello")


# -- server-side garbage -------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [{"garbage_after": 1}, {"wrong_types_after": 1}, {"binary_after": 1}], ids=str
)
async def test_garbage_frames_are_protocol_errors(
    base_url: str, emulator: LabsEmulator, fault: dict[str, int]
) -> None:
    emulator.script(answer="abcdefgh" * 4, chunk_size=8, **fault)
    async with _model(base_url, idle_timeout=3) as chat:
        with pytest.raises(PerplexityLabsError) as caught:
            await chat.ainvoke("hello")
    assert type(caught.value).__name__ == "PerplexityLabsProtocolError", caught.value
    assert caught.value.partial_content == "abcdefgh"


async def test_unknown_events_are_ignored(base_url: str, emulator: LabsEmulator) -> None:
    event = progress_event("sonar-pro")
    emulator.script(
        [
            Emit("whatever_else", {"output": 1}),
            Emit(event, progress_frame("Hel", elapsed=0.1)),
            Emit("query_status", ["unexpected", 2]),
            Emit(event, progress_frame("Hello", elapsed=0.2, final=True)),
        ]
    )
    async with _model(base_url) as chat:
        message = await chat.ainvoke([HumanMessage("hi"), AIMessage("hey"), HumanMessage("again")])
    assert message.content == "Hello"


async def test_blocked_server_is_a_blocked_error_not_retried(base_url: str, emulator: LabsEmulator) -> None:
    emulator.blocked = True
    async with _model(base_url, max_retries=3) as chat:
        with pytest.raises(PerplexityLabsConnectionError, match="Cloudflare") as caught:
            await chat.ainvoke("hello")
    assert type(caught.value).__name__ == "PerplexityLabsBlockedError"
    assert getattr(caught.value, "status", None) == 403


@pytest.fixture
def faulty_serve() -> Iterator[str]:
    """``pplx-labs serve`` in a subprocess with fault flags, as a user would run it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", "serve", "--chunk-size", "4", "--drop-after", "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    yield url
    process.terminate()
    process.wait(timeout=10)
    process.stdout.close()


@pytest.mark.system
async def test_serve_fault_flags_reach_the_scenario(faulty_serve: str) -> None:
    received: list[str] = []
    async with _model(faulty_serve, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsDisconnectedError) as caught:
            await _collect(chat, received)
    assert len("".join(received)) == 8  # two frames of four characters, then the drop
    assert caught.value.partial_content == "".join(received)


async def test_emulator_keeps_only_the_latest_questions(
    base_url: str, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ``serve`` runs for days: what it keeps per question must stay bounded.
    from langchain_pplx_labs.emulator import server

    monkeypatch.setattr(server, "MAX_RECORDED_REQUESTS", 3)
    async with _model(base_url) as chat:
        for number in range(5):
            await chat.ainvoke(f"question {number}")
    assert [request["messages"][-1]["content"] for request in emulator.requests] == [
        "question 2",
        "question 3",
        "question 4",
    ]


# -- transport: closing, cancelled connects, budgets -------------------------------------------


@pytest.fixture
async def dark_relay(base_url: str) -> AsyncIterator[tuple[str, asyncio.Event]]:
    """A TCP relay to the emulator whose network goes dark (bytes swallowed both ways) once set."""
    dark = asyncio.Event()
    async with _tcp_relay(base_url, dark=dark) as (url, _):
        yield url, dark


async def test_timeout_on_a_dead_network_is_not_delayed_by_closing_the_socket(
    dark_relay: tuple[str, asyncio.Event], emulator: LabsEmulator
) -> None:
    # A graceful close would wait for a close reply that never comes (connect + handshake,
    # 15 s here) before the idle timeout reached us: the socket must be dropped instead.
    url, dark = dark_relay
    emulator.script(answer="word " * 400, chunk_size=5, delay=0.05)
    loop = asyncio.get_running_loop()
    went_dark: list[float] = []

    async def go_dark_after_the_first_chunk(chat: ChatPerplexityLabs) -> None:
        async for _ in chat.astream("hello"):
            if not dark.is_set():
                dark.set()
                went_dark.append(loop.time())

    async with _model(url, idle_timeout=0.5, handshake_timeout=10) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await go_dark_after_the_first_chunk(chat)
        waited = loop.time() - went_dark[0]
    assert caught.value.which == "idle"
    assert waited < 8, f"the idle timeout (0.5 s) reached us {waited:.1f}s after the network went dark"


@pytest.mark.system
def test_cancelled_connects_leave_no_socket_open_over_polling(dev_mode_runs: DevModeRuns) -> None:
    # A cancel mid-connect left a half-open socket in no pool list (and, over polling, a
    # session the server kept): every one must be closed, and told so, at once.
    stdout = dev_mode_runs.scenarios["cancelled-connects-over-polling"].assert_clean()
    assert "engineio-loops 0" in stdout, stdout
    emulator, baseline = dev_mode_runs.polling, dev_mode_runs.polling_baseline
    # The server counts sessions until it sees them end (its ping timeout is 45 s).
    for _ in range(100):
        if emulator.open_sockets <= baseline:
            break
        time.sleep(0.05)
    assert emulator.open_sockets <= baseline, f"{emulator.open_sockets - baseline} session(s) left open"


async def test_cancel_while_closing_is_not_swallowed(
    base_url: str, emulator: LabsEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.script(answer="alpha beta STOP gamma " * 20, chunk_size=5, delay=0.01)
    target: list[asyncio.Task[str]] = []
    original = LabsConnection._shutdown

    async def cancel_then_shutdown(self: LabsConnection, graceful: bool) -> None:
        # Stands in for any cancel (a timeout, a TaskGroup sibling, Ctrl-C) landing mid-close.
        if target:
            target[0].cancel()
        await original(self, graceful)

    async def consumer(chat: ChatPerplexityLabs) -> str:
        async for _ in chat.astream("hello", stop=["STOP"]):
            pass
        await asyncio.sleep(1)
        return "kept running after cancel()"

    # drain_timeout=0: the stop sequence closes the socket (a drained one would be kept, not closed).
    async with _model(base_url, drain_timeout=0) as chat:
        monkeypatch.setattr(LabsConnection, "_shutdown", cancel_then_shutdown)
        target.append(asyncio.create_task(consumer(chat)))
        with pytest.raises(asyncio.CancelledError):
            await target[0]
        monkeypatch.undo()


async def test_total_timeout_covers_retries(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(stall_after=0)
    async with _model(base_url, timeout=1.0, first_token_timeout=None, max_retries=2) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "total"
    assert len(emulator.requests) == 1  # no budget left to ask again


class _NoAckEmulator(LabsEmulator):
    """Opens Engine.IO sessions but never acknowledges the Socket.IO CONNECT."""

    async def _on_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> None:
        await asyncio.sleep(3600)


@pytest.fixture
def no_ack_url() -> Iterator[str]:
    with EmulatorThread(_NoAckEmulator()) as thread:
        yield thread.base_url


async def test_unacknowledged_connect_is_a_handshake_timeout(no_ack_url: str) -> None:
    # The question is pipelined behind CONNECT; while the ack is missing the wait is the handshake.
    async with _model(no_ack_url, handshake_timeout=0.3, first_token_timeout=30) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "handshake"


async def test_handshake_budget_starts_once_tcp_is_connected(mute_server: str) -> None:
    # Connected at once: the handshake limit alone applies, not connect + handshake (30.3 s).
    loop = asyncio.get_running_loop()
    async with _model(mute_server, connect_timeout=30, handshake_timeout=0.3) as chat:
        started = loop.time()
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
        waited = loop.time() - started
    assert caught.value.which == "handshake"
    assert waited < 10, f"a 0.3 s handshake timeout fired after {waited:.1f}s"


@pytest.mark.parametrize("transport", ["websocket", "polling"])
@pytest.mark.parametrize("scheme", ["socks5", "http"])
async def test_a_proxy_that_never_answers_is_a_connect_timeout(
    mute_server: str, base_url: str, scheme: str, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy handshake is part of connecting. Over polling, engine.io replaces aiohttp's
    # sock_connect limit with its own request timeout, so only our budget can tell the two apart.
    remembered = pool_module.FallbackMemory()
    if transport == "polling":
        remembered.add(base_url)
    monkeypatch.setattr(pool_module, "_POLLING_ONLY", remembered)
    proxy = mute_server.replace("http", scheme, 1)
    async with _model(base_url, proxy=proxy, connect_timeout=0.5, handshake_timeout=5, max_retries=0) as chat:
        with pytest.raises(PerplexityLabsTimeoutError) as caught:
            await chat.ainvoke("hello")
    assert caught.value.which == "connect"
