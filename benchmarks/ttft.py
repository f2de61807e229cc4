"""Time to first token at the configured RTT: reference flow vs cold (new process) vs warm (pooled)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

from benchmarks._common import Row, print_table
from benchmarks._emulator_process import emulator_process
from benchmarks.reference_client import reference_ask
from langchain_pplx_labs import ChatPerplexityLabs

MODEL = "sonar"  # no think section: the first chunk is answer text for every client


async def first_token(chat: ChatPerplexityLabs, question: str) -> float:
    started = time.perf_counter()
    ttft = 0.0
    async for chunk in chat.astream(question):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - started
    return ttft


def cold_child(base_url: str, profile: str | None = None) -> None:
    """Run in a new process: time the very first question (imports done, nothing warm).

    Prints ``ttft cpu warm_cpu``: the first question's time to first token, the client CPU
    (``time.process_time``: this process holds only the client) from the call to its first
    token, and the same CPU for a second question on the warm socket.
    """

    async def once() -> tuple[float, float, float]:
        async with ChatPerplexityLabs(transport="labs", base_url=base_url, model=MODEL) as chat:
            cpu = time.process_time()
            ttft = await first_token(chat, "cold question")
            cpu = time.process_time() - cpu
            # The second question: what a question costs once nothing is left to warm up.
            warm_cpu = time.process_time()
            stream = cast("AsyncGenerator[Any, None]", chat.astream("warm question"))
            async for chunk in stream:
                if chunk.content:
                    warm_cpu = time.process_time() - warm_cpu
                    break
            await stream.aclose()
            return ttft, cpu, warm_cpu

    if profile:
        import cProfile

        with cProfile.Profile() as profiler:
            result = asyncio.run(once())
        profiler.dump_stats(profile)
    else:
        result = asyncio.run(once())
    print(*result)


def cold_samples(base_url: str, count: int) -> tuple[list[float], list[float], list[float]]:
    """(TTFT, first-question CPU, second-question CPU) of ``count`` fresh processes."""
    ttfts: list[float] = []
    cpus: list[float] = []
    warm_cpus: list[float] = []
    for _ in range(count):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.ttft", "--cold-child", base_url],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        ttft, cpu, warm_cpu = (float(field) for field in out.stdout.strip().splitlines()[-1].split())
        ttfts.append(ttft)
        cpus.append(cpu)
        warm_cpus.append(warm_cpu)
    return ttfts, cpus, warm_cpus


async def baseline_and_warm(base_url: str, count: int) -> tuple[list[float], list[float]]:
    baseline = [(await reference_ask(base_url, f"question {n}", MODEL)).ttft for n in range(count)]
    async with ChatPerplexityLabs(transport="labs", base_url=base_url, model=MODEL) as chat:
        await chat.awarmup()
        warm = [await first_token(chat, f"question {n}") for n in range(count)]
    return baseline, warm


def run(quick: bool, rtt: float) -> None:
    count, cold_count = (6, 2) if quick else (40, 10)
    # The emulator and proxy in a process of their own: in ours they would take the GIL at every
    # socket call of the baseline and warm questions (the cold children never shared it).
    with emulator_process(rtt=rtt) as url:
        baseline, warm = asyncio.run(baseline_and_warm(url, count))
        cold, _, _ = cold_samples(url, cold_count)
    reference = Row("baseline (reference flow)", baseline).median
    print_table(
        f"TTFT at {rtt * 1000:.0f} ms RTT (lower is better; target cold <= 0.45x, warm <= 0.2x)",
        [
            Row("baseline (reference flow)", baseline, baseline=reference),
            Row("cold (new process, first question)", cold, baseline=reference),
            Row("warm (pooled socket)", warm, baseline=reference),
        ],
    )
    # Client CPU at 0 RTT: straight to the emulator, in its own process; each child holds only a client.
    with emulator_process() as url:
        _, first_cpu, second_cpu = cold_samples(url, max(cold_count, 5))
    reference = Row("", second_cpu).median
    print_table(
        "Client CPU (process_time) from the call to the first token, fresh process, 0 RTT "
        "(target first question <= 15 ms)",
        [
            Row("second question (warm socket), same processes", second_cpu, baseline=reference),
            Row("first question of the process", first_cpu, baseline=reference),
        ],
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--cold-child"]:
    # --cold-child URL [PROFILE_FILE]: a cProfile of the whole question goes to PROFILE_FILE.
    cold_child(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
