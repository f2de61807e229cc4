"""LangChain layer overhead: astream of ChatPerplexityLabs vs the raw client, on the same warm socket."""

from __future__ import annotations

import asyncio
import time

from langchain_core.messages import HumanMessage

from benchmarks._common import Row, print_table
from langchain_pplx_labs import ChatPerplexityLabs
from langchain_pplx_labs.emulator import EmulatorThread
from langchain_pplx_labs.protocol import StreamDecoder

MODEL = "sonar"


async def _raw(chat: ChatPerplexityLabs) -> float:
    # What the client alone does: frames off the socket and the delta decoding.
    payload = chat._payload([HumanMessage("overhead")])
    decoder = StreamDecoder(MODEL)
    started = time.perf_counter()
    async for frame in chat._labs_client().stream(payload):
        decoder.feed(frame)
    return time.perf_counter() - started


async def _astream(chat: ChatPerplexityLabs) -> float:
    started = time.perf_counter()
    async for _ in chat.astream("overhead"):
        pass
    return time.perf_counter() - started


async def _measure(base_url: str, reps: int) -> tuple[list[float], list[float]]:
    async with ChatPerplexityLabs(base_url=base_url, model=MODEL, max_connections=1) as chat:
        await chat.awarmup()  # max_connections=1: both paths use the one warm socket
        raw, wrapped = [], []
        for _ in range(reps):  # interleaved, so machine noise hits both alike
            raw.append(await _raw(chat))
            wrapped.append(await _astream(chat))
        assert (await chat._labs_client().pool()).connections_opened == 1
    return raw, wrapped


def run(quick: bool, rtt: float) -> None:
    del rtt  # local socket: the difference is CPU in our layers, not the network
    reps = 20 if quick else 200
    with EmulatorThread() as thread:
        thread.call(lambda: thread.emulator.script(answer="word " * 400, chunk_size=40, citations=[]))
        raw, wrapped = asyncio.run(_measure(thread.base_url, reps))
    reference = Row("", raw).median
    print_table(
        "LangChain layer overhead, 2 KB answer in 50 frames (target <= 1.15x of the raw client)",
        [
            Row("raw LabsClient.stream + decoder", raw, baseline=reference),
            Row("ChatPerplexityLabs.astream", wrapped, baseline=reference),
        ],
    )
