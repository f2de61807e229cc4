"""LangChain layer overhead: astream of ChatPerplexityLabs vs the raw client, on the same warm socket."""

from __future__ import annotations

import asyncio
import statistics
import time

from langchain_core.messages import HumanMessage

from benchmarks._common import Row, print_table
from benchmarks._emulator_process import emulator_process
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.messages import to_payload

MODEL = "sonar"
TARGET = 1.15

Sample = tuple[float, float]  # (wall seconds, this thread's CPU seconds)


async def _raw(chat: ChatPerplexityLabs) -> Sample:
    # What the client alone does: the answer's events off the socket (frames decoded into deltas).
    payload = to_payload([HumanMessage("overhead")], chat.model, protocol=chat.protocol)
    wall, cpu = time.perf_counter(), time.thread_time()
    async for _ in chat._client().stream(payload):
        pass
    return time.perf_counter() - wall, time.thread_time() - cpu


async def _astream(chat: ChatPerplexityLabs) -> Sample:
    wall, cpu = time.perf_counter(), time.thread_time()
    async for _ in chat.astream("overhead"):
        pass
    return time.perf_counter() - wall, time.thread_time() - cpu


async def _measure(base_url: str, reps: int) -> tuple[list[Sample], list[Sample]]:
    async with ChatPerplexityLabs(
        transport="labs", base_url=base_url, model=MODEL, max_connections=1
    ) as chat:
        await chat.awarmup()  # max_connections=1: both paths use the one warm socket
        await _raw(chat)  # untimed, each: first-use costs are not per-answer overhead
        await _astream(chat)
        raw, wrapped = [], []
        for _ in range(reps):  # interleaved, so machine noise hits both alike
            raw.append(await _raw(chat))
            wrapped.append(await _astream(chat))
        assert (await chat._client().pool()).connections_opened == 1
    return raw, wrapped


def _ratio(wrapped: list[Sample], raw: list[Sample], field: int) -> float:
    return statistics.median(s[field] for s in wrapped) / statistics.median(s[field] for s in raw)


def _spread(name: str, ratios: list[float]) -> str:
    above = sum(ratio > TARGET for ratio in ratios)
    return (
        f"{name}: median {statistics.median(ratios):.2f}x, min {min(ratios):.2f}x, max {max(ratios):.2f}x, "
        f"above {TARGET}x in {above} of {len(ratios)} runs ({', '.join(f'{r:.2f}' for r in ratios)})"
    )


def run(quick: bool, rtt: float) -> None:
    del rtt  # local socket: the difference is CPU in our layers, not the network
    # Several runs, each on a new model and socket: one run's ratio moves with the machine's
    # load, so the median of the runs and their spread tell noise from a regression.
    runs, reps = (3, 20) if quick else (9, 60)
    raw: list[Sample] = []
    wrapped: list[Sample] = []
    wall_ratios: list[float] = []
    cpu_ratios: list[float] = []
    # The emulator in a process of its own: in ours it would take the GIL at every socket call.
    with emulator_process({"answer": "word " * 400, "chunk_size": 40, "citations": []}) as url:
        for _ in range(runs):
            run_raw, run_wrapped = asyncio.run(_measure(url, reps))
            raw += run_raw
            wrapped += run_wrapped
            wall_ratios.append(_ratio(run_wrapped, run_raw, 0))
            cpu_ratios.append(_ratio(run_wrapped, run_raw, 1))
    wall_reference = Row("", [s[0] for s in raw]).median
    cpu_reference = Row("", [s[1] for s in raw]).median
    print_table(
        f"LangChain layer overhead, 2 KB answer in 50 frames, {runs} runs x {reps} "
        f"(target <= {TARGET}x of the raw client)",
        [
            Row("raw Client.stream (decoded events), wall", [s[0] for s in raw], baseline=wall_reference),
            Row("ChatPerplexityLabs.astream, wall", [s[0] for s in wrapped], baseline=wall_reference),
            Row(
                "raw Client.stream (decoded events), client-thread CPU",
                [s[1] for s in raw],
                baseline=cpu_reference,
            ),
            Row(
                "ChatPerplexityLabs.astream, client-thread CPU",
                [s[1] for s in wrapped],
                baseline=cpu_reference,
            ),
        ],
    )
    print(f"\nastream / raw per run, {_spread('wall', wall_ratios)}")
    print(f"astream / raw per run, {_spread('client-thread CPU', cpu_ratios)}")
