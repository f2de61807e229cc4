"""Many concurrent streams through one model instance: errors, TTFT spread and peak RSS."""

from __future__ import annotations

import asyncio
import resource
import time

from benchmarks._common import Row, emulator_behind_proxy, percentile, print_table
from langchain_pplx_labs import ChatPerplexityLabs


async def _one(chat: ChatPerplexityLabs, n: int) -> float:
    started = time.perf_counter()
    ttft = 0.0
    async for chunk in chat.astream(f"concurrent question {n}"):
        if chunk.content and not ttft:
            ttft = time.perf_counter() - started
    return ttft


async def _measure(base_url: str, streams: int) -> tuple[list[float], int]:
    async with ChatPerplexityLabs(base_url=base_url, model="sonar", max_connections=streams) as chat:
        results = await asyncio.gather(*(_one(chat, n) for n in range(streams)), return_exceptions=True)
    ttfts = [r for r in results if isinstance(r, float)]
    return ttfts, len(results) - len(ttfts)


def run(quick: bool, rtt: float) -> None:
    streams = 50 if quick else 200
    with emulator_behind_proxy(rtt) as (_, url):
        ttfts, errors = asyncio.run(_measure(url, streams))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print_table(
        f"{streams} concurrent streams through one model, cold pool, {rtt * 1000:.0f} ms RTT",
        [Row("TTFT", ttfts)] if ttfts else [],
    )
    p50 = percentile(ttfts, 50) if ttfts else 0.0
    p99 = percentile(ttfts, 99) if ttfts else 0.0
    ratio = p99 / p50 if p50 else float("nan")
    print(
        f"\nerrors: {errors}/{streams}; TTFT p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms "
        f"(p99/p50 {ratio:.2f}, target < 3); peak RSS of the benchmark process "
        f"(emulator and proxy included) {rss_mb:.0f} MB"
    )
