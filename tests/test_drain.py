"""Answers the caller stopped reading: drained in the background, then the socket is reused (or closed)."""

from __future__ import annotations

import asyncio
import dataclasses
import textwrap
import time
from collections.abc import Callable

import pytest
from devmode import run_clean_under_dev_mode

from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs import pool as pool_module
from langchain_pplx_labs.emulator import LabsEmulator
from langchain_pplx_labs.emulator.script import LabsRequest, Scenario
from langchain_pplx_labs.pool import ConnectionPool

LONG = "alpha " * 60  # 60 frames of 6 characters, paced: still streaming when the caller leaves
SHORT = "The second question's own answer."


@pytest.fixture(autouse=True)
def _fresh_fallback_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other tests refuse WebSocket on the shared emulator; its URL must not stay "polling only" here.
    monkeypatch.setattr(pool_module, "_POLLING_ONLY", pool_module.FallbackMemory())
    monkeypatch.setattr(pool_module, "_NO_PIPELINING", pool_module.FallbackMemory())


def _two_answers(long: Scenario) -> Callable[[LabsRequest], Scenario]:
    """``long`` for the question "long", the short answer for any other."""

    def responder(request: LabsRequest) -> Scenario:
        return long if request.question == "long" else Scenario(answer=SHORT, citations=[])

    return responder


def _chat(base_url: str, **fields: object) -> ChatPerplexityLabs:
    options: dict[str, object] = {
        "model": "sonar",
        "timeout": 20,
        "first_token_timeout": 5,
        "idle_timeout": 5,
        "max_retries": 0,
        # One socket: the next question must wait for the drain, and gets the drained socket.
        "max_connections": 1,
    }
    options.update(fields)
    return ChatPerplexityLabs(transport="labs", base_url=base_url, **options)


async def _pool(chat: ChatPerplexityLabs) -> ConnectionPool:
    return await chat._client().pool()


async def _abandon_at_first_token(chat: ChatPerplexityLabs, question: str = "long") -> str:
    stream = chat.astream(question)
    first = await anext(stream)
    await stream.aclose()  # what ``break`` does, once the loop finalises the generator
    return str(first.content)


@pytest.fixture
def patient_questions(monkeypatch: pytest.MonkeyPatch) -> None:
    """A question kept waiting by a drain waits 30 s, not 1 s, before it ends the drain.

    For the tests whose subject is a drain that finishes and hands over its socket: on a loaded
    machine the rest of an answer can take longer than the 1 s a question waits by default.
    """
    monkeypatch.setattr(pool_module, "DRAIN_YIELD_SECONDS", 30.0)


async def _await_until(condition: Callable[[], bool], what: str, deadline: float = 10.0) -> None:
    # A bounded wait for something that happens in the background, not a timing assert.
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            pytest.fail(f"gave up waiting for {what}")
        await asyncio.sleep(0.01)


@pytest.mark.usefixtures("patient_questions")
async def test_next_question_gets_the_drained_socket_and_no_stray_text(
    base_url: str, emulator: LabsEmulator
) -> None:
    # Unpaced: when the caller leaves, frames of the abandoned answer are already on their way.
    emulator.script(_two_answers(Scenario(answer="alpha " * 400, chunk_size=6, citations=[])))
    async with _chat(base_url) as chat:
        assert await _abandon_at_first_token(chat) == "alpha "
        pool = await _pool(chat)
        assert pool.draining_count == 1  # the abandoned answer is still streaming
        message = await chat.ainvoke("next")
        assert message.content == SHORT
        assert pool.drains_completed == 1
    assert emulator.connections == 1
    assert [r["messages"][-1]["content"] for r in emulator.requests] == ["long", "next"]


async def test_a_break_in_async_for_keeps_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, delay=0.005, citations=[])))
    async with _chat(base_url, max_connections=4) as chat:
        pool = await _pool(chat)
        for n in range(1, 4):
            async for chunk in chat.astream("long"):
                assert chunk.content == "alpha "
                break
            # The loop finalises the generator soon after the break; the drain then ends the answer.
            await _await_until(lambda done=n: pool.drains_completed == done, "the drain")
            assert pool.idle_count == 1
        assert (await chat.ainvoke("next")).content == SHORT
    assert emulator.connections == 1


@pytest.mark.usefixtures("patient_questions")
async def test_a_matched_stop_sequence_reuses_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    answer = "one two STOP " + "tail " * 60
    emulator.script(_two_answers(Scenario(answer=answer, chunk_size=5, delay=0.003, citations=[])))
    async with _chat(base_url, stop=["STOP"]) as chat:
        cut = await chat.ainvoke("long")
        assert cut.content == "one two "
        # No stop sequence in the short answer: it arrives whole, with none of the tail in it.
        assert (await chat.ainvoke("next")).content == SHORT
        assert (await _pool(chat)).drains_completed == 1
    assert emulator.connections == 1


@pytest.mark.usefixtures("patient_questions")
async def test_a_cancelled_question_is_drained_and_its_socket_reused(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, delay=0.003, citations=[])))
    async with _chat(base_url) as chat:
        first = asyncio.Event()

        async def consume() -> None:
            async for _ in chat.astream("long"):
                first.set()

        task = asyncio.create_task(consume())
        await asyncio.wait_for(first.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await chat.ainvoke("next")).content == SHORT
        assert (await _pool(chat)).drains_completed == 1
    assert emulator.connections == 1


def test_a_break_in_a_sync_stream_keeps_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, delay=0.005, citations=[])))
    with _chat(base_url) as chat:
        for chunk in chat.stream("long"):
            assert chunk.content == "alpha "
            break
        assert chat.invoke("next").content == SHORT
    assert emulator.connections == 1


async def test_a_stalled_drain_closes_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    # Two frames, then silence: the drain gives up after idle_timeout and closes the socket.
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, stall_after=2, citations=[])))
    async with _chat(base_url, idle_timeout=0.3) as chat:
        await _abandon_at_first_token(chat)
        assert (await chat.ainvoke("next")).content == SHORT
        pool = await _pool(chat)
        assert pool.drains_completed == 0
        assert pool.connections_opened == 2
    assert emulator.connections == 2


async def test_a_drain_past_its_time_limit_closes_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    # Frames keep coming (never idle), but the answer outlasts drain_timeout.
    slow = Scenario(answer="beta " * 100, chunk_size=5, delay=0.05, citations=[])
    emulator.script(_two_answers(slow))
    async with _chat(base_url, drain_timeout=0.3) as chat:
        await _abandon_at_first_token(chat)
        assert (await chat.ainvoke("next")).content == SHORT
        assert (await _pool(chat)).drains_completed == 0
    assert emulator.connections == 2


async def test_a_question_kept_waiting_by_a_long_drain_ends_it(base_url: str, emulator: LabsEmulator) -> None:
    # max_connections=1 and an abandoned answer that would stream for 10 s: the next question
    # waits about a cold connect's worth (DRAIN_YIELD_SECONDS), then the drain gives way.
    slow = Scenario(answer="beta " * 200, chunk_size=5, delay=0.05, citations=[])
    emulator.script(_two_answers(slow))
    async with _chat(base_url, idle_timeout=30) as chat:
        await _abandon_at_first_token(chat)
        assert (await chat.ainvoke("next")).content == SHORT
        pool = await _pool(chat)
        assert pool.drains_completed == 0
        assert pool.connections_opened == 2
    assert [r["messages"][-1]["content"] for r in emulator.requests] == ["long", "next"]


async def test_drain_timeout_zero_closes_an_abandoned_socket_at_once(
    base_url: str, emulator: LabsEmulator
) -> None:
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, delay=0.01, citations=[])))
    async with _chat(base_url, drain_timeout=0) as chat:
        await _abandon_at_first_token(chat)
        pool = await _pool(chat)
        assert pool.draining_count == 0
        assert (await chat.ainvoke("next")).content == SHORT
    assert emulator.connections == 2


async def test_a_drain_past_its_size_limit_closes_the_socket(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(_two_answers(Scenario(answer=LONG, chunk_size=6, delay=0.005, citations=[])))
    async with _chat(base_url) as chat:
        client = chat._client()  # before its first pool: the pool takes these settings
        client.pool_settings = dataclasses.replace(client.pool_settings, drain_max_chars=100)
        await _abandon_at_first_token(chat)
        assert (await chat.ainvoke("next")).content == SHORT
        assert (await _pool(chat)).drains_completed == 0
    assert emulator.connections == 2


def test_negative_drain_timeout_is_refused(base_url: str) -> None:
    with pytest.raises(ValueError, match="zero or more"):
        ChatPerplexityLabs(base_url=base_url, drain_timeout=-1)


_STALLED_DRAIN_SCRIPT = textwrap.dedent(
    """
    import asyncio, gc, sys
    from langchain_pplx_labs import ChatPerplexityLabs

    async def abandon(chat, question):
        stream = chat.astream(question)
        await anext(stream)
        await stream.aclose()

    async def main():
        chat = ChatPerplexityLabs(
            transport="labs", base_url=sys.argv[1], model="sonar", idle_timeout=0.3, first_token_timeout=5, max_retries=0
        )
        await abandon(chat, "stalls")
        pool = await chat._client().pool()
        print("draining", pool.draining_count)
        for _ in range(500):
            if not pool.draining_count:
                break
            await asyncio.sleep(0.01)
        print("after-stall", pool.draining_count, pool.idle_count, pool.drains_completed)
        # A second abandoned answer, its drain cut short by closing the model.
        chat.idle_timeout = 30.0
        await abandon(chat, "closed mid-drain")
        pool = await chat._client().pool()
        print("draining-at-close", pool.draining_count)
        await chat.aclose()
        others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        print("after-close", pool.draining_count, pool.idle_count, len(others))

    asyncio.run(main())

    # A drain still running when asyncio.run ends: the loop's shutdown must end it cleanly too.
    async def left_draining():
        chat = ChatPerplexityLabs(transport="labs", base_url=sys.argv[1], model="sonar", idle_timeout=30, max_retries=0)
        await abandon(chat, "left draining")
        print("draining-at-exit", (await chat._client().pool()).draining_count)

    asyncio.run(left_draining())
    gc.collect()
    """
)


@pytest.mark.system  # a -X dev child: its exit is part of the subject
def test_stalled_and_closed_drains_leak_nothing_under_dev_mode(base_url: str, emulator: LabsEmulator) -> None:
    emulator.script(answer="gamma " * 50, chunk_size=6, stall_after=2, citations=[])
    stdout = run_clean_under_dev_mode(_STALLED_DRAIN_SCRIPT, base_url)
    lines = stdout.splitlines()
    assert lines == [
        "draining 1",
        "after-stall 0 0 0",  # the stalled drain closed its socket; nothing pooled
        "draining-at-close 1",
        "after-close 0 0 0",  # the close cancelled the drain: no task left behind
        "draining-at-exit 1",
    ], stdout
    end = time.monotonic() + 10
    while emulator.open_sockets and time.monotonic() < end:
        time.sleep(0.02)
    assert emulator.open_sockets == 0
    assert emulator.connections == 3


@pytest.mark.usefixtures("patient_questions")
async def test_an_abandoned_answer_over_polling_is_drained_too(base_url: str, emulator: LabsEmulator) -> None:
    emulator.refuse_websocket = True  # the polling fallback: frames come through python-socketio's client
    emulator.script(_two_answers(Scenario(answer="alpha " * 100, chunk_size=6, delay=0.002, citations=[])))
    async with _chat(base_url) as chat:
        assert await _abandon_at_first_token(chat) == "alpha "
        assert (await chat.ainvoke("next")).content == SHORT
        pool = await _pool(chat)
        assert pool.drains_completed == 1
        assert pool.connections_opened == 1
    assert emulator.handshakes["polling"] == 1
