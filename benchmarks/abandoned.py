"""Time to first token after abandoned answers: each question left at its first token, 0.4 s apart."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

from benchmarks._common import Row, print_table
from benchmarks._emulator_process import emulator_process
from benchmarks.reference_client import reference_ask
from langchain_pplx_labs import ChatPerplexityLabs

MODEL = "sonar"
QUESTIONS = 8
GAP = 0.4  # seconds between one abandoned question and the next
# 40 frames 5 ms apart: the answer is still streaming when its caller leaves at the first token.
ANSWER = "word " * 200
CHUNK = 25
PACING = 0.005


async def _abandoned_ttfts(base_url: str, drain_timeout: float) -> tuple[list[float], int]:
    """TTFT of each of ``QUESTIONS`` questions, each abandoned at its first token; sockets opened."""
    ttfts = []
    async with ChatPerplexityLabs(
        transport="labs", base_url=base_url, model=MODEL, drain_timeout=drain_timeout
    ) as chat:
        await chat.awarmup()
        for n in range(QUESTIONS):
            started = time.perf_counter()
            stream = cast("AsyncGenerator[Any, None]", chat.astream(f"abandoned question {n}"))
            async for chunk in stream:
                if chunk.content:
                    ttfts.append(time.perf_counter() - started)
                    break
            await stream.aclose()  # what the loop does for a ``break`` a little later
            await asyncio.sleep(GAP)
        opened = (await chat._client().pool()).connections_opened
    return ttfts, opened


async def _measure(base_url: str, rounds: int) -> tuple[list[float], list[float], list[float], int, int]:
    baseline: list[float] = []
    drained: list[float] = []
    closed: list[float] = []
    opened_drained = opened_closed = 0
    for _ in range(rounds):  # interleaved, so machine noise hits all three alike
        baseline += [(await reference_ask(base_url, f"question {n}", MODEL)).ttft for n in range(QUESTIONS)]
        samples, opened = await _abandoned_ttfts(base_url, drain_timeout=30.0)
        drained += samples
        opened_drained += opened
        samples, opened = await _abandoned_ttfts(base_url, drain_timeout=0.0)
        closed += samples
        opened_closed += opened
    return baseline, drained, closed, opened_drained, opened_closed


def run(quick: bool, rtt: float) -> None:
    rounds = 1 if quick else 3
    scenario = {"answer": ANSWER, "chunk_size": CHUNK, "delay": PACING, "citations": []}
    # The emulator and proxy in a process of their own, so they do not take the client's GIL.
    with emulator_process(scenario, rtt) as url:
        baseline, drained, closed, opened_drained, opened_closed = asyncio.run(_measure(url, rounds))
    reference = Row("", baseline).median
    print_table(
        f"TTFT of questions abandoned at their first token, {GAP} s apart, {rtt * 1000:.0f} ms RTT "
        "(target with drain <= 0.25x)",
        [
            Row("baseline (reference flow)", baseline, baseline=reference),
            Row("abandoned, socket drained and reused (default)", drained, baseline=reference),
            Row("abandoned, socket closed (drain_timeout=0)", closed, baseline=reference),
        ],
    )
    print(
        f"\nsockets opened for {rounds} x {QUESTIONS} abandoned questions: drained {opened_drained}, "
        f"closed {opened_closed}"
    )
