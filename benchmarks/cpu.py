"""Client CPU time to stream long answers (10 KB / 100 KB / 1 MB), this package vs the reference flow."""

from __future__ import annotations

import asyncio
import functools
import time

from langchain_core.messages import HumanMessage

from benchmarks._common import Row, print_table
from benchmarks.reference_client import reference_ask
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread
from langchain_pplx_labs.events import TextDelta
from langchain_pplx_labs.messages import to_payload

FRAMES = 100  # cumulative frames per answer, whatever its size: wire bytes grow linearly with size
SIZES = {"10 KB": 10_000, "100 KB": 100_000, "1 MB": 1_000_000}


def _answer(size: int) -> str:
    words = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
    text = " ".join(words[i % len(words)] for i in range(size // 5 + 1))
    return text[:size]


async def _ours(chat: ChatPerplexityLabs, size: int) -> float:
    # thread_time: only this thread's loop (the emulator runs in another thread).
    started = time.thread_time()
    received = 0
    async for chunk in chat.astream("long answer"):
        received += len(chunk.content)
    assert received == size, (received, size)
    return time.thread_time() - started


async def _client(chat: ChatPerplexityLabs, size: int) -> float:
    # The package's client alone (the answer's events off the socket), no LangChain layer.
    payload = to_payload([HumanMessage("long answer")], chat.model, protocol=chat.protocol)
    started = time.thread_time()
    received = 0
    async for event in chat._client().stream(payload):
        if isinstance(event, TextDelta):
            received += len(event.text)
    assert received == size, (received, size)
    return time.thread_time() - started


async def _reference(base_url: str, size: int) -> float:
    started = time.thread_time()
    answer = await reference_ask(base_url, "long answer")
    assert len(answer.text) == size
    return time.thread_time() - started


async def _measure(base_url: str, size: int, reps: int) -> tuple[list[float], list[float], list[float]]:
    baseline: list[float] = []
    client: list[float] = []
    ours: list[float] = []
    async with ChatPerplexityLabs(transport="labs", base_url=base_url, model="sonar") as chat:
        await chat.awarmup()
        # One untimed answer each first: first-use costs (lazy imports, caches) are not per-answer
        # CPU, and --quick takes a single sample. Then interleaved, so machine noise hits all alike.
        await _reference(base_url, size)
        await _client(chat, size)
        await _ours(chat, size)
        for _ in range(reps):
            baseline.append(await _reference(base_url, size))
            client.append(await _client(chat, size))
            ours.append(await _ours(chat, size))
    return baseline, client, ours


def run(quick: bool, rtt: float) -> None:
    del rtt  # CPU, not latency: straight to the emulator
    reps = 1 if quick else 11
    rows: list[Row] = []
    with EmulatorThread() as thread:
        for label, size in SIZES.items():
            thread.call(
                functools.partial(
                    thread.emulator.script,
                    answer=_answer(size),
                    chunk_size=max(1, size // FRAMES),
                    citations=[],
                )
            )
            baseline, client, ours = asyncio.run(_measure(thread.base_url, size, reps))
            reference = Row("", baseline).median
            rows.append(Row(f"baseline, {label}", baseline, baseline=reference))
            rows.append(Row(f"ours, Client.stream, {label}", client, baseline=reference))
            rows.append(Row(f"ours, ChatPerplexityLabs.astream, {label}", ours, baseline=reference))
    print_table(f"CPU time to stream an answer ({FRAMES} cumulative frames; lower is better)", rows)
