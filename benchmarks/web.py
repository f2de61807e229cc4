"""The web transport against the public web-app client's flow: TTFT cold and warm, answer time, CPU, concurrency."""

from __future__ import annotations

import asyncio
import functools
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.messages import HumanMessage

from benchmarks._common import Row, percentile, print_table
from benchmarks._emulator_process import emulator_process
from benchmarks.web_reference_client import web_reference_ask
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread
from langchain_pplx_labs.events import TextDelta
from langchain_pplx_labs.messages import to_payload

MODEL = "turbo"  # the web app's anonymous model: no plan, so the first text is answer text for both clients
# Paced as the corpus cassettes are where nothing else is recorded (recording/build_corpus.py):
# 50 ms before the first frame, 10 ms between frames; a 480-character answer in 20 frames.
PACED: dict[str, Any] = {
    "answer": "Paris is the capital of France. " * 15,
    "chunk_size": 24,
    "delay": 0.01,
    "first_delay": 0.05,
}
FRAMES = 100  # frames per answer in the CPU rows, whatever its size
CPU_SIZES = {"10 KB": 10_000, "100 KB": 100_000}
# Longer than aiohttp's default keep-alive (15 s), shorter than the pool's idle timeout (60 s).
IDLE_SECONDS = 20.0

Timing = tuple[float, float]  # (time to first token, time to the answer's end)


def _model(base_url: str, max_connections: int = 16) -> ChatPerplexityLabs:
    return ChatPerplexityLabs(
        transport="web", base_url=base_url, model=MODEL, max_connections=max_connections
    )


async def _ours(chat: ChatPerplexityLabs, question: str) -> Timing:
    started = time.perf_counter()
    ttft = 0.0
    text = ""
    async for chunk in chat.astream(question):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - started
        text += str(chunk.content)
    total = time.perf_counter() - started
    assert text == PACED["answer"], text[:80]  # the same whole answer as the baseline's
    return ttft, total


async def _baseline(base_url: str, question: str) -> Timing:
    answer = await web_reference_ask(base_url, question, MODEL)
    assert answer.text == PACED["answer"], answer.text[:80]
    return answer.ttft, answer.total


async def _cold(base_url: str, question: str) -> Timing:
    async with _model(base_url) as chat:
        return await _ours(chat, question)


async def _latency(base_url: str, rounds: int) -> dict[str, list[Timing]]:
    """Interleaved rounds of baseline, cold (a new model) and warm (one model kept) questions."""
    timings: dict[str, list[Timing]] = {"baseline": [], "cold": [], "warm": []}
    async with _model(base_url) as warm:
        # Untimed first: first-use costs of the process (lazy imports, caches) are nobody's TTFT.
        await _baseline(base_url, "untimed")
        await _cold(base_url, "untimed")
        await _ours(warm, "untimed")
        for n in range(rounds):
            timings["baseline"].append(await _baseline(base_url, f"question {n}"))
            timings["cold"].append(await _cold(base_url, f"question {n}"))
            timings["warm"].append(await _ours(warm, f"question {n}"))
    return timings


async def _after_idle(base_url: str, samples: int) -> list[float]:
    """TTFT of a question asked ``IDLE_SECONDS`` after the last one on the same model."""
    ttfts: list[float] = []
    async with _model(base_url) as chat:
        await _ours(chat, "untimed")
        for n in range(samples):
            await asyncio.sleep(IDLE_SECONDS)
            ttfts.append((await _ours(chat, f"after idle {n}"))[0])
    return ttfts


@dataclass
class Burst:
    """What ``count`` concurrent questions gave, over several rounds."""

    ttfts: list[float] = field(default_factory=list)
    errors: int = 0
    asked: int = 0
    cpu: list[float] = field(default_factory=list)  # this thread's CPU per question, per round
    p50s: list[float] = field(default_factory=list)  # each round's median TTFT


async def _burst(found: Burst, ask: Callable[[int], Awaitable[Timing]], count: int) -> None:
    cpu = time.thread_time()  # the emulator and proxy run in another process: this is the client's
    results = await asyncio.gather(*(ask(n) for n in range(count)), return_exceptions=True)
    found.cpu.append((time.thread_time() - cpu) / count)
    ttfts = [result[0] for result in results if isinstance(result, tuple)]
    found.ttfts += ttfts
    found.errors += count - len(ttfts)
    found.asked += count
    if ttfts:
        found.p50s.append(percentile(ttfts, 50))


async def _concurrent(base_url: str, count: int, rounds: int) -> dict[str, Burst]:
    """Rounds of ``count`` concurrent questions: the baseline's, then ours on a new model, cold then warm."""
    found = {"baseline": Burst(), "cold": Burst(), "warm": Burst()}
    for _ in range(rounds):
        await _burst(found["baseline"], lambda n: _baseline(base_url, f"concurrent {n}"), count)
        async with _model(base_url, max_connections=count) as chat:
            await _burst(found["cold"], lambda n: _ours(chat, f"concurrent {n}"), count)
            await _burst(found["warm"], lambda n: _ours(chat, f"concurrent again {n}"), count)
    return found


def _lorem(size: int) -> str:
    words = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
    return " ".join(words[i % len(words)] for i in range(size // 5 + 1))[:size]


async def _cpu(base_url: str, size: int, reps: int) -> dict[str, list[float]]:
    """Client-thread CPU per answer (the emulator runs in another thread), interleaved."""

    async def baseline() -> None:
        answer = await web_reference_ask(base_url, "long answer", MODEL)
        assert len(answer.text) == size, (len(answer.text), size)

    async def client() -> None:
        # The package's client alone: the answer's events off the wire, no LangChain layer.
        payload = to_payload([HumanMessage("long answer")], chat.model, protocol=chat.protocol)
        received = 0
        async for event in chat._client().stream(payload):
            if isinstance(event, TextDelta):
                received += len(event.text)
        assert received == size, (received, size)

    async def astream() -> None:
        received = 0
        async for chunk in chat.astream("long answer"):
            received += len(chunk.content)
        assert received == size, (received, size)

    async def timed(ask: Callable[[], Awaitable[None]]) -> float:
        started = time.thread_time()
        await ask()
        return time.thread_time() - started

    samples: dict[str, list[float]] = {"baseline": [], "client": [], "astream": []}
    asks = {"baseline": baseline, "client": client, "astream": astream}
    async with _model(base_url) as chat:
        for ask in asks.values():
            await ask()  # untimed: first-use costs are not per-answer CPU
        for _ in range(reps):
            for name, ask in asks.items():
                samples[name].append(await timed(ask))
    return samples


def _latency_tables(rtt: float, rounds: int, concurrent: int, bursts: int, idle_samples: int) -> None:
    ms = f"{rtt * 1000:.0f} ms RTT"
    # Emulator and proxy in a process of their own: in ours they would take the GIL at the client's socket calls.
    with emulator_process(scenario=PACED, rtt=rtt) as url:
        timings = asyncio.run(_latency(url, rounds))
        concurrency = asyncio.run(_concurrent(url, concurrent, bursts))
        idle = asyncio.run(_after_idle(url, idle_samples)) if idle_samples else []
    labels = {
        "baseline": "baseline (new session + session check per question)",
        "cold": "ours, cold (first question of a new model)",
        "warm": "ours, warm (later questions, pooled connection)",
    }
    reference = Row("", [ttft for ttft, _ in timings["baseline"]]).median
    rows = [
        Row(f"TTFT, {labels[name]}", [t for t, _ in found], baseline=reference)
        for name, found in timings.items()
    ]
    if idle:
        rows.append(Row(f"TTFT, ours, warm after {IDLE_SECONDS:.0f} s idle", idle, baseline=reference))
    print_table(f"Web transport: time to first token at {ms} (lower is better)", rows)
    reference = Row("", [total for _, total in timings["baseline"]]).median
    print_table(
        f"Web transport: whole-answer time at {ms}, {len(PACED['answer'])} characters in 20 frames 10 ms apart",
        [
            Row(labels[name], [total for _, total in found], baseline=reference)
            for name, found in timings.items()
        ],
    )
    reference = statistics.median(concurrency["baseline"].p50s) if concurrency["baseline"].p50s else 0.0
    rows = []
    notes = []
    names = {
        "baseline": "baseline, a session each",
        "cold": "ours, one model, cold pool",
        "warm": "ours, same model, warm",
    }
    for name, found in concurrency.items():
        if not found.ttfts:
            notes.append(f"{names[name]}: errors {found.errors}/{found.asked}")
            continue
        rows.append(Row(f"TTFT, {names[name]}", found.ttfts, baseline=reference or None))
        p50, p99 = percentile(found.ttfts, 50), percentile(found.ttfts, 99)
        per_round = ", ".join(f"{value * 1000:.0f}" for value in found.p50s)
        cpu = statistics.median(found.cpu) * 1000
        notes.append(
            f"{names[name]}: errors {found.errors}/{found.asked}; TTFT p50 {p50 * 1000:.1f} ms, "
            f"p99 {p99 * 1000:.1f} ms (p99/p50 {p99 / p50:.2f}); p50 per round {per_round} ms; "
            f"client CPU {cpu:.2f} ms per question"
        )
    print_table(f"Web transport: {concurrent} concurrent questions at {ms} (rounds: {bursts})", rows)
    print("\n" + "\n\n".join(notes))


def _cpu_table(reps: int) -> None:
    rows: list[Row] = []
    with EmulatorThread() as thread:
        for label, size in CPU_SIZES.items():
            answer = _lorem(size)
            thread.call(
                functools.partial(
                    thread.emulator.script, answer=answer, chunk_size=max(1, size // FRAMES), citations=[]
                )
            )
            samples = asyncio.run(_cpu(thread.base_url, size, reps))
            reference = Row("", samples["baseline"]).median
            rows.append(Row(f"baseline, {label}", samples["baseline"], baseline=reference))
            rows.append(Row(f"ours, Client.stream, {label}", samples["client"], baseline=reference))
            rows.append(
                Row(f"ours, ChatPerplexityLabs.astream, {label}", samples["astream"], baseline=reference)
            )
    print_table(
        f"Web transport: client-thread CPU per answer, {FRAMES} SSE messages, 0 RTT (lower is better)", rows
    )


def run(quick: bool, rtt: float) -> None:
    rounds, concurrent, bursts, idle_samples, reps = (5, 20, 1, 0, 1) if quick else (30, 100, 5, 3, 11)
    _latency_tables(rtt, rounds, concurrent, bursts, idle_samples)
    _cpu_table(reps)
