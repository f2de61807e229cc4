"""Time to first token at the configured RTT: reference flow vs cold (new process) vs warm (pooled)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

from benchmarks._common import Row, emulator_behind_proxy, print_table
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


def cold_child(base_url: str) -> None:
    """Run in a new process: time the very first question (imports done, nothing warm)."""

    async def once() -> float:
        async with ChatPerplexityLabs(base_url=base_url, model=MODEL) as chat:
            return await first_token(chat, "cold question")

    print(asyncio.run(once()))


def cold_samples(base_url: str, count: int) -> list[float]:
    samples = []
    for _ in range(count):
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.ttft", "--cold-child", base_url],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return samples


async def baseline_and_warm(base_url: str, count: int) -> tuple[list[float], list[float]]:
    baseline = [(await reference_ask(base_url, f"question {n}", MODEL)).ttft for n in range(count)]
    async with ChatPerplexityLabs(base_url=base_url, model=MODEL) as chat:
        await chat.awarmup()
        warm = [await first_token(chat, f"question {n}") for n in range(count)]
    return baseline, warm


def run(quick: bool, rtt: float) -> None:
    count, cold_count = (6, 2) if quick else (40, 10)
    with emulator_behind_proxy(rtt) as (_, url):
        baseline, warm = asyncio.run(baseline_and_warm(url, count))
        cold = cold_samples(url, cold_count)
    reference = Row("baseline (reference flow)", baseline).median
    print_table(
        f"TTFT at {rtt * 1000:.0f} ms RTT (lower is better; target cold <= 0.5x, warm <= 0.2x)",
        [
            Row("baseline (reference flow)", baseline, baseline=reference),
            Row("cold (new process, first question)", cold, baseline=reference),
            Row("warm (pooled socket)", warm, baseline=reference),
        ],
    )


if __name__ == "__main__" and sys.argv[1:2] == ["--cold-child"]:
    cold_child(sys.argv[2])
