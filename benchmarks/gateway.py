"""The gateway: time to first byte through it vs the model directly (same run), and 200 concurrent streams."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time

import aiohttp

from benchmarks._common import Row, emulator_behind_proxy, percentile, print_table
from langchain_pplx_labs import ChatPerplexityLabs

MODEL = "sonar"  # no think section: the first chunk is answer text on both paths


def _body(question: str) -> dict[str, object]:
    return {"model": MODEL, "stream": True, "messages": [{"role": "user", "content": question}]}


async def direct_ttfb(chat: ChatPerplexityLabs, question: str) -> float:
    started = time.perf_counter()
    ttfb = 0.0
    async for chunk in chat.astream(question):
        if chunk.content and not ttfb:
            ttfb = time.perf_counter() - started
    return ttfb


async def gateway_ttfb(session: aiohttp.ClientSession, url: str, question: str) -> tuple[float, bool]:
    """Time to the first SSE event, and whether the stream ended cleanly with ``[DONE]``."""
    started = time.perf_counter()
    ttfb = 0.0
    done = False
    async with session.post(url, json=_body(question)) as response:
        if response.status != 200:
            return 0.0, False
        async for line in response.content:
            if not ttfb and line.startswith(b"data: "):
                ttfb = time.perf_counter() - started
            if line.startswith(b'data: {"error"'):
                return ttfb, False
            done = done or line == b"data: [DONE]\n"
    return ttfb, done


def start_gateway(base_url: str, max_connections: int) -> tuple[subprocess.Popen[str], str]:
    """``pplx-labs gateway`` in its own process, as deployed: its root URL is its first line."""
    command = ["gateway", "--transport", "labs", "--port", "0", "--base-url", base_url]
    command += ["--max-connections", str(max_connections)]
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_pplx_labs.cli", *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    return process, process.stdout.readline().strip()


async def _ttfb(base_url: str, root: str, count: int) -> tuple[list[float], list[float]]:
    url = root + "/v1/chat/completions"
    direct: list[float] = []
    through: list[float] = []
    async with (
        ChatPerplexityLabs(transport="labs", base_url=base_url, model=MODEL) as chat,
        aiohttp.ClientSession() as session,
    ):
        # One untimed answer each: both sides then ask on a warm pooled socket.
        await direct_ttfb(chat, "warm-up")
        await gateway_ttfb(session, url, "warm-up")
        for n in range(count):  # interleaved, so a noisy moment hits both sides alike
            direct.append(await direct_ttfb(chat, f"question {n}"))
            through.append((await gateway_ttfb(session, url, f"question {n}"))[0])
    return direct, through


async def _concurrent(root: str, streams: int) -> tuple[list[float], int]:
    url = root + "/v1/chat/completions"
    # limit=0: aiohttp's default of 100 connections per session would queue half of them.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        results = await asyncio.gather(
            *(gateway_ttfb(session, url, f"concurrent {n}") for n in range(streams)), return_exceptions=True
        )
    ok = [r[0] for r in results if isinstance(r, tuple) and r[1]]
    return ok, streams - len(ok)


async def _concurrent_direct(base_url: str, streams: int) -> tuple[list[float], int]:
    """The same load on one model instance in this process, for comparison."""
    async with ChatPerplexityLabs(
        transport="labs", base_url=base_url, model=MODEL, max_connections=streams
    ) as chat:
        await asyncio.gather(*(direct_ttfb(chat, f"warm-up {n}") for n in range(streams)))
        results = await asyncio.gather(
            *(direct_ttfb(chat, f"concurrent {n}") for n in range(streams)), return_exceptions=True
        )
    ok = [r for r in results if isinstance(r, float)]
    return ok, streams - len(ok)


def run(quick: bool, rtt: float) -> None:
    count, streams = (8, 50) if quick else (40, 200)
    with emulator_behind_proxy(rtt) as (_, url):
        process, root = start_gateway(url, max_connections=streams)
        try:
            direct, through = asyncio.run(_ttfb(url, root, count))
            cold, cold_errors = asyncio.run(_concurrent(root, streams))
            warm, warm_errors = asyncio.run(_concurrent(root, streams))
            alone, alone_errors = asyncio.run(_concurrent_direct(url, streams))
        finally:
            process.terminate()
            process.wait(timeout=15)
            assert process.stdout is not None
            process.stdout.close()
    baseline = Row("model directly", direct).median
    overhead = [g - d for g, d in zip(through, direct, strict=True)]
    print_table(
        f"Time to first byte through the gateway at {rtt * 1000:.0f} ms RTT (target: overhead <= 5 ms at the median)",
        [
            Row("ChatPerplexityLabs.astream, directly", direct, baseline=baseline),
            Row("through the gateway (SSE over loopback, own process)", through, baseline=baseline),
            Row("overhead, paired (gateway - direct)", overhead),
        ],
    )
    print(f"\noverhead median {statistics.median(overhead) * 1000:.2f} ms")
    runs = (
        ("gateway, cold pool", cold, cold_errors),
        ("gateway, warm pool", warm, warm_errors),
        ("model directly, warm pool, in this process", alone, alone_errors),
    )
    reference = Row("", alone).median if alone else None
    rows = [Row(f"TTFB, {name}", samples, baseline=reference) for name, samples, _ in runs if samples]
    print_table(f"{streams} concurrent streamed requests, {rtt * 1000:.0f} ms RTT", rows)
    for name, samples, errors in runs:
        p50 = percentile(samples, 50) if samples else 0.0
        p99 = percentile(samples, 99) if samples else 0.0
        print(f"\n{name}: errors {errors}/{streams}; TTFB p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")


if __name__ == "__main__":
    run("--quick" in sys.argv, 0.050)
