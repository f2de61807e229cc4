"""How a web answer's bytes and client CPU grow with its length: 50k / 100k / 200k characters from the emulator."""

# ``python -m benchmarks.web_growth [--quick] [--reps N] [--stream FORM]``, or ``python -m benchmarks --only
# web_growth``. The emulator runs in a process of its own (``_emulator_process.py``; one per size) at no delay,
# scripted with an answer of each size in 24-character frames (the emulator's default, as ``pplx-labs serve``
# sends them); ``ChatPerplexityLabs(transport="web")`` streams it. Bytes and SSE messages are counted at the
# client, as its ``SSEParser`` reads them; client CPU is the asking thread's (``time.thread_time``). Once per
# stream form the client asks for (its ``protocol.web_params``: the request chooses the form the emulator
# serves); ``--quick`` measures the schematized one only, once
# (the ``text`` form repeats the whole answer in every message: a minute per 200k-character answer).

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks._common import percentile
from benchmarks._emulator_process import emulator_process
from langchain_pplx_labs import ChatPerplexityLabs, LabsProtocol
from langchain_pplx_labs.web import session as web_session
from langchain_pplx_labs.web.sse import SSEMessage, SSEParser

MODEL = "turbo"  # no plan: every character is answer text
SIZES = (50_000, 100_000, 200_000)
CHUNK = 24  # characters per emulator frame (Scenario's default)
STREAMS = ("schematized", "text")  # the stream forms an ask can choose (web_evidence.text_form)
FORM_PARAMS: dict[str, dict[str, Any]] = {
    "schematized": {},  # the client's own ask: blocks with diff_block patches
    "text": {"use_schematized_api": False, "send_back_text_in_streaming_api": True},
}
TARGET = 2.3  # the most either figure may grow per doubling of the answer (issue 26)


class CountingParser(SSEParser):
    """The wire's SSE parser, counting what it reads: bytes and messages."""

    read_bytes = 0
    messages = 0

    def feed(self, chunk: bytes) -> list[SSEMessage]:
        CountingParser.read_bytes += len(chunk)
        found = super().feed(chunk)
        CountingParser.messages += len(found)
        return found

    def close(self) -> list[SSEMessage]:
        found = super().close()
        CountingParser.messages += len(found)
        return found


@dataclass
class Sample:
    """What the asks of one answer size gave."""

    cpu: list[float] = field(default_factory=list)
    collector: list[float] = field(default_factory=list)  # of ``cpu``, the garbage collector's passes
    wall: list[float] = field(default_factory=list)
    read_bytes: int = 0
    messages: int = 0


def _answer(size: int) -> str:
    words = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit")
    return " ".join(words[i % len(words)] for i in range(size // 5 + 1))[:size]


async def _ask(chat: ChatPerplexityLabs, size: int, found: Sample) -> None:
    CountingParser.read_bytes = CountingParser.messages = 0
    received = 0
    # Untimed: the collector's debt from the answer before (a longer one, every round) would land in this
    # one: without it a 50k answer measured dearer than a 100k one. Each pays for what its own chunks cost.
    gc.collect()
    started, cpu, collected = time.perf_counter(), time.thread_time(), COLLECTOR.total
    async for chunk in chat.astream("a long answer"):
        received += len(chunk.content)
    found.cpu.append(time.thread_time() - cpu)
    found.collector.append(COLLECTOR.total - collected)
    found.wall.append(time.perf_counter() - started)
    assert received == size, (received, size)
    found.read_bytes, found.messages = CountingParser.read_bytes, CountingParser.messages


async def _measure(urls: dict[int, str], reps: int, stream: str) -> dict[int, Sample]:
    """``reps`` rounds over the sizes, interleaved, a warm model per size's emulator."""
    found = {size: Sample() for size in urls}
    chats = {size: _model(url, stream) for size, url in urls.items()}
    try:
        for size, chat in chats.items():
            await _ask(chat, size, Sample())  # untimed: first-use costs are not per-answer CPU
        for _ in range(reps):
            for size, chat in chats.items():
                await _ask(chat, size, found[size])
    finally:
        for chat in chats.values():
            await chat.aclose()
    return found


class CollectorTime:
    """The asking thread's CPU in the garbage collector's passes, summed (a ``gc.callbacks`` entry)."""

    def __init__(self) -> None:
        self.total = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.thread_time()
        else:
            self.total += time.thread_time() - self._started


COLLECTOR = CollectorTime()


def _model(base_url: str, stream: str) -> ChatPerplexityLabs:
    # Generous deadlines: a quadratic stream of 200k characters takes many seconds.
    return ChatPerplexityLabs(
        transport="web",
        base_url=base_url,
        model=MODEL,
        timeout=600.0,
        idle_timeout=600.0,
        protocol=LabsProtocol(web_params=FORM_PARAMS[stream]),
    )


def _measure_stream(stream: str, reps: int) -> dict[int, Sample]:
    """One emulator process per size (each scripted with its answer), all serving ``stream``."""
    with contextlib.ExitStack() as stack:
        urls = {
            size: stack.enter_context(
                emulator_process(
                    scenario={"answer": _answer(size), "chunk_size": CHUNK, "citations": []},
                )
            )
            for size in SIZES
        }
        return asyncio.run(_measure(urls, reps, stream))


def _growth(values: list[float], index: int) -> str:
    if index == 0:
        return "-"
    ratio = values[index] / values[index - 1]
    return f"{ratio:.2f}x{'' if ratio <= TARGET else ' (over)'}"


def _table(stream: str, found: dict[int, Sample]) -> None:
    reps = len(found[SIZES[0]].cpu)
    print(
        f"\n## Web answer growth, `{stream}` stream, no delay, {CHUNK}-character frames (asks per size: {reps})\n"
    )
    print(
        "| answer | SSE messages | bytes read | bytes / message | bytes growth | client CPU median (p95) "
        "| CPU growth | of it the collector, median | CPU growth without it | wall median |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    sent = [float(found[size].read_bytes) for size in SIZES]
    cpu = [statistics.median(found[size].cpu) for size in SIZES]
    # Per ask, then the median: the collector's full passes come every few answers, not in each.
    own = [
        statistics.median(c - g for c, g in zip(found[s].cpu, found[s].collector, strict=True)) for s in SIZES
    ]
    for index, size in enumerate(SIZES):
        sample = found[size]
        print(
            f"| {size // 1000}k | {sample.messages:,} | {sample.read_bytes / 1e6:.2f} MB "
            f"| {sample.read_bytes / max(1, sample.messages):,.0f} B | {_growth(sent, index)} "
            f"| {cpu[index] * 1000:.0f} ms ({percentile(sample.cpu, 95) * 1000:.0f} ms) "
            f"| {_growth(cpu, index)} | {statistics.median(sample.collector) * 1000:.0f} ms "
            f"| {_growth(own, index)} | {statistics.median(sample.wall) * 1000:.0f} ms |"
        )


def run(quick: bool, rtt: float = 0.0, reps: int | None = None, streams: Sequence[str] = STREAMS) -> None:
    """Print one table per stream form. ``rtt`` is ignored: growth is measured at 0 RTT."""
    del rtt
    setattr(web_session, "SSEParser", CountingParser)  # noqa: B010  # the session's parser, counting
    if COLLECTOR not in gc.callbacks:
        gc.callbacks.append(COLLECTOR)
    for stream in streams[:1] if quick else streams:
        _table(stream, _measure_stream(stream, reps or (1 if quick else 5)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.web_growth", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one ask per size")
    parser.add_argument("--reps", type=int, default=None, help="asks per size (default 5)")
    parser.add_argument("--stream", choices=STREAMS, action="append", help="only this stream form")
    args = parser.parse_args(argv)
    run(args.quick, reps=args.reps, streams=args.stream or STREAMS)


if __name__ == "__main__":
    main()
